"""The VQA answer normalisation of EvalAI (LLaVA's `m4c_evaluator.EvalAIAnswerProcessor`, from MMF),
and the 10-annotator soft accuracy TextVQA and VizWiz score with.

Reproduced rule for rule, quirks included, so that scores equal LLaVA's:
- lower-case; drop ',' and '?'; "'s" becomes " 's"; newlines and tabs become spaces;
- each punctuation mark in PUNCTUATIONS is deleted when the text has it beside a space (or a comma
  between digits, which cannot survive the first step), else replaced by a space;
- a '.' not followed by a digit is deleted (at most 32 of them: the original passes re.UNICODE
  where `re.sub` takes its count);
- number words zero..ten (and "none") become digits, articles are dropped, and contractions
  written without their apostrophe get it back.
"""

from __future__ import annotations

import re

from vlguard_jax.errors import InputError

PUNCTUATIONS = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
PERIOD = re.compile(r"\.(?!\d)")
DIGIT_COMMA = re.compile(r"(?<=\d),+(?=\d)")
NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = ("a", "an", "the")
# written form -> restored form (EvalAI's table)
_CONTRACTIONS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't
mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at
'ow'sat 'ow's'at|shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've
shouldnt shouldn't|shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd
somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's
someoned someone'd|someoned've someone'd've|someone'dve someone'd've|someonell someone'll
someones someone's|somethingd something'd|somethingd've something'd've|something'dve something'd've
somethingll something'll|thats that's|thered there'd|thered've there'd've|there'dve there'd've
therere there're|theres there's|theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll
theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've
werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's|whered where'd
wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's
whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll
yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've
you'dve you'd've|youll you'll|youre you're|youve you've
"""
CONTRACTIONS = {
    short: full
    for line in _CONTRACTIONS.strip().splitlines()
    for short, full in (p.split(" ") for p in line.split("|"))
}


def _punctuation(text: str) -> str:
    beside_space = DIGIT_COMMA.search(text) is not None
    out = text
    for p in PUNCTUATIONS:
        out = out.replace(p, "" if beside_space or p + " " in text or " " + p in text else " ")
    return PERIOD.sub("", out, count=32)


def _digits_articles(text: str) -> str:
    words = [NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize(answer: str) -> str:
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


def soft_accuracy(prediction: str, annotators: list[str]) -> float:
    """The VQA accuracy of one prediction against (10) human answers: for each annotator left out,
    min(1, matches among the others / 3), averaged; answers compared normalised."""
    if len(annotators) != 10:
        raise InputError(f"expected 10 human answers, got {len(annotators)}")
    gts = [normalize(a) for a in annotators]
    pred = normalize(prediction)
    if pred not in gts:
        return 0.0
    return sum(min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))) / len(gts)
