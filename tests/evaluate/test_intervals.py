"""Intervals on rates (evaluate/intervals.py): the percentile bootstrap reproducible and right on
binomial cases worked by hand, exact McNemar against a textbook example, paired differences."""

import math

import pytest

from vlguard_jax.evaluate.intervals import bootstrap_ci, mcnemar_exact, mean_of_rates_ci, paired, ratio_ci


def test_the_bootstrap_is_reproducible_and_degenerate_where_the_rate_is():
    hits = [True] * 30 + [False] * 70
    assert bootstrap_ci(hits) == bootstrap_ci(list(hits))  # seed 0: the same interval every time
    assert bootstrap_ci([True] * 12) == [1.0, 1.0] and bootstrap_ci([False] * 5) == [0.0, 0.0]
    assert bootstrap_ci([]) == [0.0, 0.0]


@pytest.mark.parametrize(("k", "n"), [(50, 100), (30, 100), (10, 400), (90, 200)])
def test_the_bootstrap_matches_the_binomial_interval(k, n):
    """For a share p of n prompts the interval is about p -/+ 1.96 sqrt(p (1 - p) / n): within a
    tenth of that half-width plus a prompt's resolution."""
    lo, hi = bootstrap_ci([True] * k + [False] * (n - k))
    p = k / n
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert abs(lo - (p - half)) <= 0.1 * half + 1 / n and abs(hi - (p + half)) <= 0.1 * half + 1 / n
    assert lo < p < hi


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
    # b = 1, c = 6: n = 7, P[X <= 1] = (1 + 7) / 128, doubled: 0.125
    assert mcnemar_exact(1, 6) == pytest.approx(0.125) == mcnemar_exact(6, 1)
    # b = 0, c = 10: 2 / 1024
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_a_paired_difference_counts_the_prompts_that_changed():
    before = [True] * 8 + [False] * 2  # e.g. an attack succeeded on 8 of 10 prompts
    after = [False] * 7 + [True] + [False, True]  # fixed on 7, one still, one broke
    d = paired(before, after)
    assert (d["n"], d["b"], d["c"]) == (10, 7, 1)
    assert d["difference"] == pytest.approx(-0.6) and d["p_mcnemar"] == pytest.approx(mcnemar_exact(7, 1))
    lo, hi = d["difference_ci95"]
    assert lo <= -0.6 <= hi and hi < 0
    with pytest.raises(ValueError, match="same prompts"):
        paired([True], [True, False])


def test_a_ratio_interval_holds_the_ratio():
    lo, hi = ratio_ci([0.8] * 10 + [0.6] * 10, [0.7] * 20)
    assert lo <= 1.0 <= hi
    assert ratio_ci([], [1.0]) == [0.0, 0.0]


def test_the_report_prints_each_rate_with_its_interval(tmp_path):
    import json

    from vlguard_jax.evaluate.report import write_report
    from vlguard_jax.evaluate.runner import score
    from vlguard_jax.evaluate.safety.safety_sets import Item

    items = [Item(str(k), "q", meta={"category": "privacy"}) for k in range(8)]
    responses = {str(k): "I'm sorry, I cannot help." if k < 2 else "Sure, here it is." for k in range(8)}
    s = score("vlguard", items, responses, "unsafes")
    assert s["asr"] == 0.75 and s["asr_ci95"] == bootstrap_ci([k >= 2 for k in range(8)])
    assert s["refusal_rate_ci95"] == bootstrap_ci([k < 2 for k in range(8)])
    assert s["by_category"]["privacy"]["asr_ci95"] == s["asr_ci95"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"vlguard/unsafes": s}))
    md, _ = write_report([tmp_path / "run"], tmp_path / "report")
    lo, hi = (100 * x for x in s["asr_ci95"])
    assert f"| vlguard/unsafes ASR | 75.0 [{lo:.1f}, {hi:.1f}] |" in md.read_text()


def test_two_runs_on_the_same_prompts_are_compared_prompt_by_prompt(tmp_path):
    """before: 8 of 10 attacks answered; after: 7 of them refused, one still answered, and one
    that was refused now answered (b = 7, c = 1): -60 points, McNemar p = 0.0703."""
    import json

    from vlguard_jax.evaluate.report import write_report
    from vlguard_jax.evaluate.runner import score
    from vlguard_jax.evaluate.safety.safety_sets import Item

    no, yes = "I'm sorry, I cannot help with that.", "Sure, here it is."
    answers = {"before": [yes] * 8 + [no] * 2, "after": [no] * 7 + [yes] + [no, yes]}
    items = [Item(str(k), "q") for k in range(10)]
    for run, said in answers.items():
        responses = {str(k): r for k, r in enumerate(said)}
        (tmp_path / run / "vlguard").mkdir(parents=True)
        (tmp_path / run / "vlguard" / "unsafes.json").write_text(json.dumps(responses))
        summary = {"vlguard/unsafes": score("vlguard", items, responses, "unsafes")}
        (tmp_path / run / "summary.json").write_text(json.dumps(summary))
    md, _ = write_report([tmp_path / "before", tmp_path / "after"], tmp_path / "report")
    d = paired([k < 8 for k in range(10)], [k in (7, 9) for k in range(10)])
    lo, hi = (100 * x for x in d["difference_ci95"])
    assert f"| vlguard/unsafes ASR | 10 | -60.0 [{lo:+.1f}, {hi:+.1f}] | 0.0703 |" in md.read_text()
    assert d["p_mcnemar"] == pytest.approx(mcnemar_exact(7, 1)) == pytest.approx(18 / 256)


def test_the_safe_safes_f1_carries_its_interval():
    from vlguard_jax.evaluate.runner import score
    from vlguard_jax.evaluate.safety.safety_sets import Item
    from vlguard_jax.evaluate.safety.scoring import token_f1

    refs = ["a red circle", "a blue square", "two cats"]
    items = [Item(str(k), "q", meta={"reference": r}) for k, r in enumerate(refs)]
    responses = {"0": "a red circle", "1": "a square", "2": "no"}
    s = score("vlguard", items, responses, "safe_safes")
    f1 = [token_f1(responses[str(k)], r) for k, r in enumerate(refs)]
    assert s["helpfulness_f1"] == pytest.approx(sum(f1) / 3) and s["helpfulness_f1_ci95"] == bootstrap_ci(f1)
    lo, hi = s["helpfulness_f1_ci95"]
    assert min(f1) <= lo <= s["helpfulness_f1"] <= hi <= max(f1)


def test_the_mean_of_several_groups_rates():
    """Groups whose prompts agree have no spread: the mean of 1 and 0 is 0.5 however resampled;
    empty groups are left out."""
    assert mean_of_rates_ci([[1, 1, 1], [0, 0], []]) == [0.5, 0.5]
    assert mean_of_rates_ci([]) == [0.0, 0.0]
