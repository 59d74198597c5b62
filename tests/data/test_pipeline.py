"""The sample data, mixtures, the token store and the grain pipeline: determinism, exact resume,
per-process sharding, bucketing, modality grouping, and bad records."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import tiny
from vlguard_jax.data import mixture
from vlguard_jax.data.config import DataConfig
from vlguard_jax.data.images import ImageError
from vlguard_jax.data.pipeline import Layout, dataset, epoch_order, prepare, steps_for
from vlguard_jax.data.records import RecordError, load_vlguard
from vlguard_jax.data.sample import write_sample
from vlguard_jax.data.tokenization import IGNORE, TokenizationError
from vlguard_jax.families import family_of
from vlguard_jax.models.llava_config import LlavaConfig


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


@pytest.fixture(scope="module")
def model_cfg(tok):
    return LlavaConfig.from_hf(tiny.hf_config(tok).to_dict())


def data_cfg(sample, **kw) -> DataConfig:
    return DataConfig(
        **dict(
            recipe="posthoc",
            vlguard=str(sample["train"]),
            vlguard_images=str(sample["images"]),
            llava=str(sample["helpful"]),
            llava_images=str(sample["images"]),
            helpful_samples=40,
            helpful_seed=0,
            max_length=160,
            template="vicuna_v1",
            pad_image=True,
            on_bad_record="raise",
        )
        | kw
    )


def collect(it, n):
    out = []
    for _ in range(n):
        out.append({k: v.copy() for k, v in next(it).items()})
    return out


def test_sample_data_is_valid_and_disjoint(sample):
    train, test = load_vlguard(sample["train"]), load_vlguard(sample["test"])
    assert (len(train), len(test)) == (64, 64)
    for split in (train, test):
        assert {r["harmful_category"] for r in split if not r["safe"]} == set(mixture_categories())
        assert sum(r["safe"] for r in split) == len(split) // 2
    instr = lambda rs: {v for r in rs for p in r["instr-resp"] for k, v in p.items() if k != "response"}
    assert not instr(train) & instr(test)
    assert not {r["image"] for r in train} & {r["image"] for r in test}
    for r in train + test:
        Image.open(sample["images"] / r["image"]).verify()
    helpful = json.loads(sample["helpful"].read_text())
    assert any("Sure, here is how" in r["conversations"][1]["value"] for r in helpful)
    assert any("image" not in r for r in helpful)


def mixture_categories():
    from vlguard_jax.data.records import VLGUARD_CATEGORIES

    return VLGUARD_CATEGORIES


def test_mixtures_and_composition(sample):
    post = mixture.build(data_cfg(sample))
    comp = post.composition()
    assert comp["vlguard"] == {"total": 64, "safe": 32, "unsafe": 32}
    assert comp["llava"]["total"] == 40
    again = mixture.build(data_cfg(sample))
    assert [r["id"] for r in again.records] == [r["id"] for r in post.records]
    other = mixture.build(data_cfg(sample, helpful_seed=1))
    assert [r["id"] for r in other.records] != [r["id"] for r in post.records]
    mixed = mixture.build(data_cfg(sample, recipe="mixed"))
    assert mixed.composition()["llava"]["total"] == 192
    assert "vlguard: 64 (safe 32, unsafe 32)" in mixed.describe()
    with pytest.raises(RecordError, match="asked for 500 helpfulness samples but the file has 192"):
        mixture.build(data_cfg(sample, helpful_samples=500))
    with pytest.raises(ValueError, match="data.recipe 'nope'"):
        mixture.build(data_cfg(sample, recipe="nope"))


def inputs_of(model_cfg):
    """What the data side takes of a model: its family says (`Family.model_inputs`)."""
    return family_of(model_cfg).model_inputs(model_cfg)


def make_rows(sample, tok, model_cfg, tmp, layout=None, **kw):
    layout = layout or Layout(global_batch=8, epochs=2, seed=3, max_length=160)
    return prepare(data_cfg(sample, **kw), tok, inputs_of(model_cfg), tmp, layout, log=lambda *_: None)


def test_rows_hold_the_tokenized_examples(sample, tok, model_cfg, tmp_path):
    rows = make_rows(sample, tok, model_cfg, tmp_path, Layout(global_batch=10, epochs=2, seed=3, max_length=160))
    store = rows.store
    assert len(store) == 104 and rows.steps == steps_for(104, rows.layout) == 21
    row = rows[0]
    i = rows.example_at(0)
    x, y = store.example(i)
    np.testing.assert_array_equal(row["input_ids"][: len(x)], x)
    np.testing.assert_array_equal(row["labels"][: len(y)], y)
    assert (row["labels"][len(y) :] == IGNORE).all() and row["input_ids"].shape == (160,)
    assert (x == model_cfg.image_token_index).sum() in (0, model_cfg.num_image_tokens)
    # Every example appears exactly once per epoch; the tail of the run is padding rows.
    seen = [rows.example_at(p) for p in range(rows.steps * 10)]
    assert sorted(seen[:104]) == list(range(104)) and sorted(seen[104:208]) == list(range(104))
    assert seen[:104] != seen[104:208] and seen[208:] == [-1, -1]
    assert (rows[len(rows) - 1]["labels"] == IGNORE).all()


def test_epochs_are_shuffled_differently_and_deterministically():
    lengths, img = np.arange(50), np.arange(50) % 3 > 0
    lay = Layout(global_batch=4, epochs=2, seed=0)
    a, b = epoch_order(lengths, img, lay, 0), epoch_order(lengths, img, lay, 1)
    assert sorted(a) == list(range(50)) and not (a == b).all()
    np.testing.assert_array_equal(a, epoch_order(lengths, img, lay, 0))


def test_group_by_modality_length():
    rng = np.random.default_rng(0)
    lengths, img = rng.integers(10, 100, 70), rng.random(70) < 0.6
    lay = Layout(global_batch=8, epochs=1, seed=0, group_by_modality=True)
    order = epoch_order(lengths, img, lay, 0)
    assert sorted(order) == list(range(70))
    leftovers = img.sum() % 8 + (~img).sum() % 8
    for start in range(0, len(order) - leftovers, 8):
        mega = order[start : start + 8]
        assert len(set(img[mega])) == 1, "a full megabatch mixes image and text-only samples"
        assert (np.diff(lengths[mega]) <= 0).all(), "a megabatch is sorted longest first"
    assert sorted(order[len(order) - leftovers :]) == list(order[len(order) - leftovers :])


def test_bucketed_batches_agree_across_processes(sample, tok, model_cfg, tmp_path):
    lays = [
        Layout(
            global_batch=8,
            epochs=1,
            seed=1,
            max_length=512,
            pad_to="bucket",
            bucket=32,
            group_by_modality=True,
            process_index=p,
            process_count=2,
        )
        for p in range(2)
    ]
    single = make_rows(
        sample, tok, model_cfg, tmp_path / "one", dataclasses.replace(lays[0], process_count=1), max_length=512
    )
    parts = [make_rows(sample, tok, model_cfg, tmp_path / "pod", lays[p], max_length=512) for p in range(2)]
    its = [iter(dataset(r)) for r in parts]
    for b in collect(iter(dataset(single)), 5):
        halves = [next(it) for it in its]
        assert b["input_ids"].shape[1] % 32 == 0 and b["input_ids"].shape[1] < 512
        for k in b:
            np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), b[k])
    assert len({b["input_ids"].shape[1] for b in collect(iter(dataset(single)), single.steps)}) > 1


def test_resume_continues_at_the_next_batch(sample, tok, model_cfg, tmp_path):
    rows = make_rows(sample, tok, model_cfg, tmp_path)
    it = iter(dataset(rows))
    first = collect(it, 3)
    state = it.get_state()
    expected = collect(it, 4)
    resumed = iter(dataset(make_rows(sample, tok, model_cfg, tmp_path)))
    resumed.set_state(json.loads(json.dumps(state)))
    for a, b in zip(expected, collect(resumed, 4)):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    again = collect(iter(dataset(rows)), 3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume(sample, tok, model_cfg, tmp_path):
    """mp_prefetch workers start by spawn: run in a subprocess with absl flags parsed."""
    rows = make_rows(sample, tok, model_cfg, tmp_path)
    serial = collect(iter(dataset(rows)), 6)
    np.savez(tmp_path / "serial.npz", *[b["input_ids"] for b in serial], *[b["pixel_values"] for b in serial])
    import pickle

    (tmp_path / "rows.pkl").write_bytes(pickle.dumps(rows))
    script = textwrap.dedent(f"""
        import json, pickle, sys
        import numpy as np
        from absl import flags
        from vlguard_jax.data.pipeline import dataset
        if __name__ == "__main__":
            flags.FLAGS(sys.argv[:1])
            rows = pickle.loads(open({str(tmp_path / "rows.pkl")!r}, "rb").read())
            ref = np.load({str(tmp_path / "serial.npz")!r})
            ref = [ref[f"arr_{{i}}"] for i in range(12)]
            it = iter(dataset(rows, workers=2))
            for i in range(3):
                b = next(it)
                assert (b["input_ids"] == ref[i]).all() and (b["pixel_values"] == ref[6 + i]).all(), i
            state = it.get_state()
            it2 = iter(dataset(rows, workers=2))
            it2.set_state(state)
            for i in range(3, 6):
                b = next(it2)
                assert (b["input_ids"] == ref[i]).all() and (b["pixel_values"] == ref[6 + i]).all(), i
            print("OK")
    """)
    (tmp_path / "w.py").write_text(script)
    repo = str(Path(__file__).parents[2])
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, str(tmp_path / "w.py")], capture_output=True, text=True, timeout=300, cwd=repo, env=env
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def broken_sample(sample, tmp_path):
    """A copy of the helpfulness file with one bad row of each kind, and a corrupt image."""
    # rows with an image: the test repairs a broken row by giving it row 0's image conversation
    rows = [r for r in json.loads(sample["helpful"].read_text()) if "image" in r][:30]
    rows[1]["conversations"] = []  # empty conversations
    rows[2]["conversations"][0]["value"] = 7  # wrong field type
    rows[4]["image"] = "helpful/does_not_exist.png"  # missing image
    rows[5]["image"] = "../../etc/passwd"  # escapes the root
    (sample["images"] / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rows[6]["image"] = "corrupt.png"  # corrupt image
    rows[7]["conversations"][0]["value"] += " ASSISTANT: sure"  # a role tag in user text
    rows[8]["conversations"].insert(1, {"from": "human", "value": "And?"})  # two user turns in a row
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(rows))
    return path, rows


def test_bad_records_raise_with_file_and_record(sample, tok, model_cfg, tmp_path):
    path, rows = broken_sample(sample, tmp_path)
    cfg = dict(recipe="llava", llava=str(path))
    with pytest.raises(RecordError, match=rf"broken.json: record '{rows[1]['id']}' \(#1\): 'conversations'"):
        make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)
    rows[1]["conversations"] = rows[0]["conversations"]
    rows[2]["conversations"] = rows[0]["conversations"][:1] + [{"from": "gpt", "value": 7}]
    path.write_text(json.dumps(rows))
    with pytest.raises(RecordError, match=rf"record '{rows[2]['id']}' \(#2\): conversations\[1\]"):
        make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)
    rows[2]["conversations"] = rows[0]["conversations"]
    path.write_text(json.dumps(rows))
    with pytest.raises(ImageError, match=rf"record '{rows[4]['id']}'.*does_not_exist.png: image file not found"):
        make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)
    rows[4]["image"] = rows[5]["image"] = rows[0]["image"]
    path.write_text(json.dumps(rows))
    with pytest.raises(
        TokenizationError,
        match=rf"broken.json: record '{rows[7]['id']}': exchange 0 "
        r"\(turns 0-1\): its text holds '</s>' or 'ASSISTANT:'",
    ):
        make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)
    rows[7]["conversations"] = rows[0]["conversations"]
    path.write_text(json.dumps(rows))
    with pytest.raises(TokenizationError, match=rf"record '{rows[8]['id']}': turn 1 is from 'human'"):
        make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)
    rows[8]["conversations"] = rows[0]["conversations"]
    path.write_text(json.dumps(rows))
    r = make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)
    with pytest.raises(ImageError, match=rf"record '{rows[6]['id']}'.*corrupt.png: cannot decode"):
        collect(iter(dataset(r)), r.steps)
    path.write_text('[{"id": 1,}]')
    with pytest.raises(RecordError, match="broken.json: invalid JSON at line 1 column 11"):
        make_rows(sample, tok, model_cfg, tmp_path / "w", **cfg)


def test_bad_records_skipped_counted_and_reported(sample, tok, model_cfg, tmp_path):
    path, rows = broken_sample(sample, tmp_path)
    logs = []
    lay = Layout(global_batch=5, epochs=1, seed=0, max_length=160)
    r = prepare(
        data_cfg(sample, recipe="llava", llava=str(path), on_bad_record="skip"),
        tok,
        inputs_of(model_cfg),
        tmp_path / "w",
        lay,
        log=logs.append,
    )
    report = tmp_path / "w" / "bad_records.jsonl"
    names = [json.loads(line)["record"] for line in report.read_text().splitlines()]
    assert len(names) == 6 and all(rows[i]["id"] in " ".join(names) for i in (1, 2, 4, 5, 7, 8))
    assert any("bad records skipped so far: 6" in line for line in logs), logs
    assert len(r.store) == 24
    # The corrupt image is met in the pipeline: a padding row and a report line, not a crash.
    batches = collect(iter(dataset(r)), r.steps)
    n_rows = sum(int((b["labels"] != IGNORE).any(axis=1).sum()) for b in batches)
    assert n_rows == 23
    assert any("corrupt.png: cannot decode" in json.loads(x)["reason"] for x in report.read_text().splitlines())
    assert len(r.bad.entries()) == 7


def test_more_epochs_share_the_store_and_keep_the_order(sample, tok, model_cfg, tmp_path):
    rows = make_rows(sample, tok, model_cfg, tmp_path)
    longer = rows.with_epochs(5)
    assert longer.store is rows.store and rows.layout.epochs == 2
    assert longer.steps == steps_for(len(rows.store), longer.layout) > rows.steps
    n = len(rows.store)
    assert [longer.example_at(p) for p in range(2 * n)] == [rows.example_at(p) for p in range(2 * n)]
    assert rows.example_at(2 * n) == -1 and sorted(longer.example_at(p) for p in range(2 * n, 3 * n)) == list(range(n))


def test_the_store_is_built_once_named_by_its_inputs_and_found_by_every_start(
    sample, tok, model_cfg, tmp_path, monkeypatch
):
    import shutil

    from vlguard_jax.data.llava_tokens import Encoder

    data = tmp_path / "train.json"
    shutil.copy(sample["train"], data)
    first, again = [], []
    lay = Layout(global_batch=8, epochs=1, seed=0, max_length=160)
    rows = prepare(
        data_cfg(sample, vlguard=str(data)), tok, inputs_of(model_cfg), tmp_path / "w", lay, log=first.append
    )
    monkeypatch.setattr(Encoder, "encode_many", lambda *a: pytest.fail("tokenized again"))
    found = prepare(
        data_cfg(sample, vlguard=str(data)), tok, inputs_of(model_cfg), tmp_path / "w", lay, log=again.append
    )
    assert found.store.path == rows.store.path and len(found.store) == len(rows.store) == 104
    assert any("found: not tokenizing again" in line for line in again)
    assert [x for x in again if "found" not in x] == first  # the same composition and drop lines
    # Another process of the pod, and a restart as another process index, find it too.
    other = prepare(
        data_cfg(sample, vlguard=str(data)),
        tok,
        inputs_of(model_cfg),
        tmp_path / "w",
        dataclasses.replace(lay, process_index=1, process_count=2),
        log=lambda *_: None,
    )
    assert other.store.path == rows.store.path
    monkeypatch.undo()
    # Any change in the inputs or the settings names another store.
    stores = lambda: sorted(p.name for p in (tmp_path / "w" / "data_store").iterdir())
    prepare(
        data_cfg(sample, vlguard=str(data), helpful_seed=1),
        tok,
        inputs_of(model_cfg),
        tmp_path / "w",
        lay,
        log=lambda *_: None,
    )
    data.write_text(json.dumps(json.loads(data.read_text())[:-1]))
    changed = prepare(
        data_cfg(sample, vlguard=str(data)), tok, inputs_of(model_cfg), tmp_path / "w", lay, log=lambda *_: None
    )
    assert len(stores()) == 3 and len(changed.store) < 104
    # A store left half-written (no meta.json) is rebuilt, never read.
    (changed.store.path / "meta.json").unlink()
    (changed.store.path / "ids.bin").write_bytes(b"\0")
    rebuilt = prepare(
        data_cfg(sample, vlguard=str(data)), tok, inputs_of(model_cfg), tmp_path / "w", lay, log=lambda *_: None
    )
    assert len(rebuilt.store) == len(changed.store) and len(stores()) == 3


def test_other_processes_wait_for_process_0s_store(sample, tok, model_cfg, tmp_path, monkeypatch):
    from vlguard_jax.data import pipeline

    monkeypatch.setattr(pipeline, "STORE_WAIT_S", 0)
    lay = Layout(global_batch=8, epochs=1, seed=0, max_length=160, process_index=1, process_count=2)
    logs = []
    with pytest.raises(
        TimeoutError,
        match=r"data_store/[0-9a-f]{16}: process 0 built no token store in 0 s; is the "
        "workdir on storage every process sees",
    ):
        prepare(data_cfg(sample), tok, inputs_of(model_cfg), tmp_path / "w", lay, log=logs.append)
    assert "waiting for process 0 to build the token store" in logs[0]


def test_the_training_set_is_llavas_every_image_tag_case_and_truncation(sample, tok, model_cfg, tmp_path):
    """LLaVA trains on every record of a mix but the ones preprocess_v1 masks: a literal `<image>`
    in a text-only record is text, an image record without a tag trains text-only, several tags
    collapse to one, and samples cut at max_length keep their first positions (image tokens and
    all), even with no supervised token left. Each case is counted in the data report."""
    from vlguard_jax.data.llava_tokens import Encoder, plain_tokenizer

    image = json.loads(sample["helpful"].read_text())[0]["image"]
    n_img = model_cfg.num_image_tokens

    def rec(rid, *texts, img=True):
        conv = [{"from": "human" if k % 2 == 0 else "gpt", "value": t} for k, t in enumerate(texts)]
        return {"id": rid, **({"image": image} if img else {}), "conversations": conv}

    filler = "The market opened early and the vendors set up their stalls. " * 12
    mix = [
        rec("normal", "<image>\nWhat is shown?", "A cat."),
        rec("text", "Tell a story.", "Once upon a time.", img=False),
        rec("literal", "What does <image> mean in HTML?", "It is a tag.", img=False),
        rec("untagged", "Describe it.", "A dog."),
        rec("two_in_one", "<image> look <image> here", "Yes."),
        rec("two_turns", "<image> first?", "One.", "<image> second?", "Two."),
        rec("masked", "Q</s>more", "A."),  # LLaVA's round split fails: it masks the sample
        rec("cut_image", filler, "Fine.", "<image>\nAnd now?", "Done."),
        rec("cut_all", "<image>\n" + filler + filler, "Too late."),
    ]
    image_id = model_cfg.image_token_index
    probe = Encoder(tok, image_id, n_img, max_length=10**6)
    lengths = {r["id"]: len(probe(r)["input_ids"]) for r in mix if r["id"] != "masked"}
    first_image = int(np.flatnonzero(probe(mix[7])["input_ids"] == image_id)[0])
    max_length = first_image + 2  # two of cut_image's image tokens fit
    assert max(v for k, v in lengths.items() if not k.startswith("cut")) <= max_length < lengths["cut_all"]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(mix))
    logs = []
    rows = prepare(
        data_cfg(sample, recipe="llava", llava=str(path), on_bad_record="skip", max_length=max_length),
        tok,
        inputs_of(model_cfg),
        tmp_path / "w",
        Layout(global_batch=4, epochs=1, seed=0, max_length=max_length),
        log=logs.append,
    )
    store = rows.store
    assert sorted(store.names) == sorted(r["id"] for r in mix if r["id"] != "masked")
    assert store.composition["llava"] == {
        "total": 8,
        "text_only": 3,
        "literal_image_tag": 1,
        "image_tag_missing": 1,
        "image_tags_collapsed": 2,
    }
    assert store.truncated == {"at max_length": 2, "image tokens cut": 1, "no supervised token left (no loss)": 1}
    assert any("truncated at max_length: 2" in line for line in logs), logs
    ex = {name: store.example(i) for i, name in enumerate(store.names)}
    runs = {name: int((ex[name][0] == image_id).sum()) for name in ex}
    assert runs == {
        "normal": n_img,
        "text": 0,
        "literal": 0,
        "untagged": 0,
        "two_in_one": n_img,
        "two_turns": n_img,
        "cut_image": 2,
        "cut_all": n_img,
    }
    # the literal tag is text, tokenized as the base LLM's tokenizer (no <image> token) does
    words = plain_tokenizer(tok)("What does <image> mean in HTML?").input_ids[1:]
    assert image_id not in words and len(words) > 7  # '<image>' as several ordinary tokens
    ids = ex["literal"][0].tolist()
    assert image_id not in ids and any(ids[i : i + len(words)] == words for i in range(len(ids)))
    assert store.has_image.tolist() == [name not in ("text", "literal", "untagged") for name in store.names]
    # cut samples: the first max_length positions; the one left without a reply costs no loss
    assert len(ex["cut_image"][0]) == len(ex["cut_all"][0]) == max_length
    assert (ex["cut_all"][1] == IGNORE).all() and (ex["cut_image"][1] != IGNORE).any()
    assert store.lengths[store.names.index("cut_image")] == max_length
    batches = collect(iter(dataset(rows)), rows.steps)
    assert sum(len(b["input_ids"]) for b in batches) == 8
    assert all(b["input_ids"].shape[1] <= max_length for b in batches)


def test_the_auto_template_is_the_familys_own_training_template(sample, tok, model_cfg, tmp_path):
    """data.template `auto` (the default) tokenizes by the checkpoint family's first training
    template: for a LLaVA, vicuna_v1, so the store it builds is the one vicuna_v1 names."""
    assert DataConfig().template == "auto" and inputs_of(model_cfg).template == "vicuna_v1"
    lay = Layout(global_batch=8, epochs=1, seed=3, max_length=160)
    auto = prepare(data_cfg(sample, template="auto"), tok, inputs_of(model_cfg), tmp_path, lay, log=lambda *_: None)
    logs = []
    named = prepare(data_cfg(sample, template="vicuna_v1"), tok, inputs_of(model_cfg), tmp_path, lay, log=logs.append)
    assert named.store.path == auto.store.path and any("found: not tokenizing again" in line for line in logs)


@dataclasses.dataclass(frozen=True)
class WidthTiles:
    """A pixel rule whose images differ in shape: one `size` px tile per `size` px of width."""

    size: int = 28
    varies = True

    def work(self, w, h, pad):
        return w * h, w * h

    def key(self, w, h, pad):
        return (-(-w // self.size),)


def test_the_store_records_each_images_own_token_count(tok, model_cfg, tmp_path):
    """Where a family's images differ in shape, the store reads each image's size from its header
    and gives the record the tokens of its shape class: ids and labels are tokenized with that many
    image tokens, and the store records and expands each example's own count."""
    from vlguard_jax.data.images import ImageInput
    from vlguard_jax.data.llava_tokens import Encoder
    from vlguard_jax.data.pipeline import ModelInputs

    sample = write_sample(tmp_path / "sample")
    images = sorted(Path(sample["images"]).rglob("*.png"))
    widths = {}
    for k, path in enumerate(images):  # two sizes: 4 tiles or 2
        w = 112 if k % 2 else 40
        Image.open(path).convert("RGB").resize((w, 84)).save(path)
        widths[path.relative_to(sample["images"]).as_posix()] = w
    inputs = ModelInputs(Encoder, model_cfg.image_token_index, ImageInput(WidthTiles(), 3, 2), "vicuna_v1")
    lay = Layout(global_batch=8, epochs=1, seed=3, max_length=160)
    rows = prepare(data_cfg(sample), tok, inputs, tmp_path / "w", lay, log=lambda *_: None)
    store = rows.store
    seen = set()
    for i in range(len(store)):
        x, _ = store.example(i)
        n = int((x == model_cfg.image_token_index).sum())
        if store.has_image[i]:
            want = 2 * -(-widths[store.images[i]] // 28)
            assert store.runs[i] == n == want, store.names[i]
            seen.add(want)
        else:
            assert n == 0
    assert seen == {4, 8}


def test_a_batch_holds_images_of_several_sizes_widened_to_its_largest(tmp_path):
    """Qwen2.5-VL's images differ in size: each batch's patches are padded to the bucket of its
    largest image (over the global batch), each row keeps its own grid and its own token count,
    and a row without an image takes a blank of that room."""
    from tests import tiny_qwen
    from vlguard_jax.families import load_config

    ns = tiny_qwen.build(tmp_path / "qwen")
    config = load_config(ns.flax_dir / "model_config.json")
    own = write_sample(tmp_path / "sample", n_train=8, n_test=2, n_helpful=8)
    for k, f in enumerate(sorted(own["images"].rglob("*.png"))):
        Image.open(f).convert("RGB").resize([(200, 60), (40, 90), (150, 150), (112, 84)][k % 4]).save(f)
    rows = prepare(
        data_cfg(own, template="auto", helpful_samples=6, max_length=512, pad_image=False),
        transformers_tokenizer(ns.hf_dir),
        inputs_of(config),
        tmp_path / "work",
        Layout(global_batch=4, epochs=1, seed=0, max_length=512),
        log=lambda *_: None,
    )
    rule = inputs_of(config).image.rule
    shapes = set()
    for step in range(rows.steps):
        batch = [rows[step * 4 + r] for r in range(4)]
        patches = {b["pixel_values"]["patches"].shape for b in batch}
        assert len(patches) == 1  # one room per batch
        room = patches.pop()[0]
        for b in batch:
            grid = tuple(b["pixel_values"]["grid"])
            tokens = int((b["input_ids"] == config.image_token_index).sum())
            assert tokens == grid[0] * grid[1] // 4  # its own image's tokens
            assert not b["pixel_values"]["patches"][grid[0] * grid[1] :].any()
            assert room >= rule.bucket(grid[0] * grid[1])
            shapes.add(grid)
    assert len(shapes) >= 3  # several image sizes (and the blank grid) went through


def transformers_tokenizer(path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(path)
