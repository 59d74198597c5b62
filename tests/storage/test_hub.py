"""Hugging Face Hub ids and hf:// paths, against a stand-in for the Hub on 127.0.0.1
(tests/hub_stub.py) reached through `HF_ENDPOINT`, with the Hub cache under the test's `HF_HOME`:

- `hf-to-flax --src org/tiny` converts what the local folder converts, fetching only the files it
  reads (safetensors, not the `.bin` beside them), and so do `assemble` from three ids and the
  MiniGPT-v2 converter from an id and two files in a repo;
- a training run reads `hf://datasets/org/vlguard-tiny/train.json` and its images;
- a gated repo, an unknown revision, an unknown repo and an unreachable Hub each give one line;
- with `HF_HUB_OFFLINE=1` and a warm cache the same commands run with the stand-in gone;
- the network guard (tests/emulators.py) refuses anything outside 127.0.0.0/8 all along.

huggingface_hub reads its variables when imported, so `hub_env` sets them and reloads its
`constants`, as a new process would read them.
"""

import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import jax
import numpy as np
import pytest

from tests import emulators, tiny
from tests.conversion.test_roundtrip import original_without_tower
from tests.hub_stub import HubStub, Repo, folder
from tests.minigptv2_reference import write_parts
from tests.train import common
from vlguard_jax import storage
from vlguard_jax.checkpoints.loading import load_model
from vlguard_jax.conversion import flax_to_hf, minigptv2
from vlguard_jax.conversion import llava_assemble as assemble
from vlguard_jax.conversion.__main__ import main as convert_cli
from vlguard_jax.errors import InputError
from vlguard_jax.evaluate.safety import safety_sets
from vlguard_jax.train.loop import run as train

DATA = "hf://datasets/org/vlguard-tiny"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    ns = common.setup(tmp)  # a tiny LLaVA (llava-hf folder and its conversion) and the sample data
    parts = tiny.llava_parts(tmp / "parts")
    mg = write_parts(tmp / "minigptv2")
    (tmp / "original").mkdir()
    original, tower = original_without_tower(ns, tmp / "original")  # its config names tower tiny/clip
    images = {f"images/{k}": v for k, v in folder(ns.sample["images"]).items()}
    archive = io.BytesIO()  # the images again, zipped under train/ as VLGuard ships its own
    with zipfile.ZipFile(archive, "w") as z:
        for k, v in folder(ns.sample["images"]).items():
            z.writestr(f"train/{k}", v)
    repos = {
        ("model", "org/tiny"): Repo({**folder(ns.hf_dir), "pytorch_model.bin": b"never read"}, tags=("v1",)),
        ("model", "org/llava-original"): Repo(folder(original)),
        ("model", "tiny/clip"): Repo(folder(tower)),
        ("model", "org/vicuna"): Repo(folder(parts.llm_dir)),
        ("model", "org/clip"): Repo(folder(parts.clip_dir)),
        ("model", "org/projector"): Repo({"mm_projector.bin": parts.proj_file.read_bytes(), "config.json": b"{}"}),
        ("model", "org/llama-2-chat"): Repo(folder(mg.llm)),
        ("model", "org/minigptv2"): Repo(
            {"eva_vit_g.pth": mg.eva.read_bytes(), "stage3/minigptv2_checkpoint.pth": mg.ckpt.read_bytes()}
        ),
        ("model", "org/gated"): Repo(folder(ns.hf_dir), gated=True),
        ("dataset", "org/vlguard-tiny"): Repo(
            {
                "train.json": ns.sample["train"].read_bytes(),
                "test.json": ns.sample["test"].read_bytes(),
                "helpful.json": ns.sample["helpful"].read_bytes(),
                "train.zip": archive.getvalue(),
                **images,
            }
        ),
    }
    stub = HubStub(repos)
    guard_log = tmp / "refused.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NET_GUARD_LOG", str(guard_log))
        exec(emulators.GUARD, {})  # no connection leaves 127.0.0.0/8
        yield ns, parts, mg, stub, tmp
        assert not guard_log.exists(), guard_log.read_text()
    stub.close()


@contextlib.contextmanager
def hub_env(endpoint: str, home: Path, offline: bool = False):
    """The variables a user sets, read as a new process reads them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ENDPOINT", endpoint)
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        mp.setenv("VLGUARD_CACHE", str(home / "vlguard"))
        mp.delenv("HF_TOKEN", raising=False)
        importlib.reload(huggingface_hub.constants)
        storage.paths._CHECKED.clear()
        try:
            yield
        finally:
            storage.paths._CHECKED.clear()
    importlib.reload(huggingface_hub.constants)


def same_params(a, b) -> None:
    x, y = load_model(a, dtype=jax.numpy.float32), load_model(b, dtype=jax.numpy.float32)
    assert x.tokenizer("a cat").input_ids == y.tokenizer("a cat").input_ids
    for p, q in zip(jax.tree.leaves(x.params), jax.tree.leaves(y.params), strict=True):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


def one_error_line(argv, capsys) -> str:
    capsys.readouterr()
    assert convert_cli(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def training_config(ns, workdir, checkpoint):
    return common.config(
        SimpleNamespace(flax_dir=checkpoint, sample=ns.sample),
        workdir,
        total_steps=2,
        **{
            "data.vlguard": f"{DATA}/train.json",
            "data.llava": f"{DATA}/helpful.json",
            "data.vlguard_images": f"{DATA}/train.zip",  # fetched once and unpacked
            "data.llava_images": f"{DATA}/images",
        },
    )


def test_ids_and_hf_paths_are_told_from_local_paths(tmp_path, monkeypatch):
    """A folder that exists is never an id; an id is org/name with an optional @REVISION and a
    path in the repo; hf:// paths name the repo type, and what is not a repo is refused."""
    from vlguard_jax.storage import hub

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "llava").mkdir(parents=True)
    assert not hub.is_hub_id("checkpoints/llava")  # exists here
    assert hub.is_hub_id("checkpoints/other")  # does not: an id (its error says both)
    for local in ("./org/name", "/org/name", "~/org/name", "gpt2", "gs://b/x", "hf://org/name"):
        assert not hub.is_hub_id(local), local
    assert hub.split_id("liuhaotian/llava-v1.5-7b") == ("liuhaotian/llava-v1.5-7b", None, "")
    assert hub.split_id("org/m@v1.0/sub/eva_vit_g.pth") == ("org/m", "v1.0", "sub/eva_vit_g.pth")
    assert hub.parse("hf://datasets/ys-zong/VLGuard@main/train.json") == hub.HubPath(
        "dataset", "ys-zong/VLGuard", "main", "train.json"
    )
    assert hub.parse("hf://org/model@refs%2Fpr%2F1/config.json").revision == "refs/pr/1"
    assert hub.parse("hf://org/model").type == "model"
    for bad in ("hf://datasets/org", "hf://buckets/org/b/x", "hf://org"):
        with pytest.raises(InputError, match="not an hf:// path of a repo"):
            hub.parse(bad)


def test_a_zip_image_root_is_unpacked_once_at_its_one_folder(tmp_path, monkeypatch):
    """VLGuard ships its images as train.zip holding train/...: the root is that folder, unpacked
    once into the host's cache; a root that is no archive is left as it is."""
    monkeypatch.setenv("VLGUARD_CACHE", str(tmp_path / "cache"))
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as z:
        z.writestr("train/bad_ads/a.png", b"a")
        z.writestr("train/hatefulMemes/b.png", b"b")
    root = storage.unpacked(tmp_path / "train.zip")
    assert root.name == "train" and (root / "hatefulMemes" / "b.png").read_bytes() == b"b"
    (root / "bad_ads" / "a.png").write_bytes(b"changed")
    assert storage.unpacked(tmp_path / "train.zip") == root  # not unpacked again
    assert (root / "bad_ads" / "a.png").read_bytes() == b"changed"
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as z:
        z.writestr("a.png", b"a")
        z.writestr("b.png", b"b")
    assert sorted(p.name for p in storage.unpacked(tmp_path / "flat.zip").iterdir()) == ["a.png", "b.png"]
    assert storage.unpacked(tmp_path / "images") == tmp_path / "images"
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"broken.zip: not a zip archive"):
        storage.unpacked(tmp_path / "broken.zip")


def zipped(path, files: dict) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_a_zip_root_is_known_by_its_archive_not_by_the_path_typed(tmp_path, monkeypatch):
    """`cd A; --images imgs.zip` then `cd B; --images imgs.zip` read each its own archive, and an
    archive replaced at the same path is unpacked anew; the token store's key follows it."""
    monkeypatch.setenv("VLGUARD_CACHE", str(tmp_path / "cache"))
    for d, data in (("A", b"from A"), ("B", b"from B")):
        (tmp_path / d).mkdir()
        zipped(tmp_path / d / "imgs.zip", {"imgs/x.png": data})
    monkeypatch.chdir(tmp_path / "A")
    a = storage.unpacked("imgs.zip")
    key_a = storage.root_identity("imgs.zip")
    monkeypatch.chdir(tmp_path / "B")
    assert (storage.unpacked("imgs.zip") / "x.png").read_bytes() == b"from B"
    assert storage.root_identity("imgs.zip") != key_a and (a / "x.png").read_bytes() == b"from A"
    before = storage.root_identity("imgs.zip")
    zipped(tmp_path / "B" / "imgs.zip", {"imgs/x.png": b"replaced, and longer"})
    assert storage.root_identity("imgs.zip") != before
    assert (storage.unpacked("imgs.zip") / "x.png").read_bytes() == b"replaced, and longer"
    assert storage.root_identity(tmp_path / "folder") == str(tmp_path / "folder")  # a folder: as given


def test_zip_roots_that_cannot_be_unpacked_are_one_line_each(tmp_path, monkeypatch):
    monkeypatch.setenv("VLGUARD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "folder.zip").mkdir()
    with pytest.raises(InputError, match=r"folder.zip: a folder named like an archive"):
        storage.unpacked(tmp_path / "folder.zip")
    with pytest.raises(InputError, match=r"missing.zip: no such zip archive"):
        storage.unpacked(tmp_path / "missing.zip")
    zipped(tmp_path / "clash.zip", {"a": b"a file", "a/b.png": b"under the file's name"})
    with pytest.raises(InputError, match=r"clash.zip: member 'a/b.png' cannot be unpacked"):
        storage.unpacked(tmp_path / "clash.zip")
    zipped(tmp_path / "big.zip", {"x.png": b"0" * 1000})
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(InputError, match=r"big.zip: unpacks to 0.0 GiB, more than the 0.0 GiB free in the cache"):
        storage.unpacked(tmp_path / "big.zip")
    assert not list((tmp_path / "cache").rglob(".unpacking-*"))  # nothing half-unpacked is left


def test_a_killed_unpack_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("VLGUARD_CACHE", str(tmp_path / "cache"))
    zipped(tmp_path / "imgs.zip", {"imgs/x.png": b"x"})
    cache = storage.local_cache(storage.root_identity(tmp_path / "imgs.zip"), "unpacked")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (cache / f".unpacking-{dead.pid}-abc").mkdir()  # a killed process's work folder
    (cache / f".unpacking-{os.getpid()}-live").mkdir()  # one still running (this process)
    assert (storage.unpacked(tmp_path / "imgs.zip") / "x.png").read_bytes() == b"x"
    assert sorted(p.name for p in cache.glob(".unpacking-*")) == [f".unpacking-{os.getpid()}-live"]


@pytest.mark.slow
def test_commands_take_hub_ids_and_hf_paths_online_then_offline(env, tmp_path, capsys):
    ns, parts, mg, stub, _ = env
    home = tmp_path / "hf_home"
    with hub_env(stub.url, home):
        # hf-to-flax: the id converts as the folder does; only the safetensors weights are fetched.
        assert (
            convert_cli(["hf-to-flax", "--src", "org/tiny@v1", "--dst", str(tmp_path / "a"), "--dtype", "float32"]) == 0
        )
        same_params(tmp_path / "a", ns.flax_dir)
        assert "model:org/tiny/model.safetensors" in stub.downloads
        assert "model:org/tiny/pytorch_model.bin" not in stub.downloads
        assert "Fetching" in capsys.readouterr().err  # huggingface_hub's progress bar
        origin = {"id": "org/tiny", "revision": stub.repos["model", "org/tiny"].sha("org/tiny")}
        assert json.loads((tmp_path / "a" / "hub_source.json").read_text()) == origin
        # An original-LLaVA checkpoint without its tower: the tower its config names is fetched.
        assert (
            convert_cli(
                ["hf-to-flax", "--src", "org/llava-original", "--dst", str(tmp_path / "o"), "--dtype", "float32"]
            )
            == 0
        )
        same_params(tmp_path / "o", ns.flax_dir)
        assert "model:tiny/clip/model.safetensors" in stub.downloads
        # assemble from three ids (the projector found in its repo), as from the three folders.
        assemble.assemble("org/vicuna", "org/clip", "org/projector", tmp_path / "b", "float32")
        assemble.assemble(parts.llm_dir, parts.clip_dir, parts.proj_file, tmp_path / "b_local", "float32")
        same_params(tmp_path / "b", tmp_path / "b_local")
        # MiniGPT-v2: the LLM by id, the tower and the stage-3 checkpoint as files in a repo.
        log = lambda _: None  # noqa: E731
        minigptv2.convert(
            "org/llama-2-chat",
            "org/minigptv2",  # a bare repo id: its eva_vit_g.pth
            "org/minigptv2/stage3/minigptv2_checkpoint.pth",
            tmp_path / "c",
            "float32",
            log=log,
        )
        minigptv2.convert(mg.llm, mg.eva, mg.ckpt, tmp_path / "c_local", "float32", log=log)
        same_params(tmp_path / "c", tmp_path / "c_local")

        # Each failure is one line naming the id and what to do.
        line = one_error_line(["hf-to-flax", "--src", "org/gated", "--dst", str(tmp_path / "x")], capsys)
        assert "--src org/gated: a gated repo: accept its licence" in line and "HF_TOKEN" in line
        line = one_error_line(["hf-to-flax", "--src", "org/tiny@v9", "--dst", str(tmp_path / "x")], capsys)
        assert "--src org/tiny@v9: no such revision" in line
        line = one_error_line(["assemble", "--llm", "org/nope", "--vision-tower", "org/clip", "--projector",
                               "org/projector", "--dst", str(tmp_path / "x")], capsys)  # fmt: skip
        assert "--llm org/nope: no such local path, and as a Hub id: no Hub repo of that id" in line
        assert not (tmp_path / "x").exists()

        # Training reads the records and images from the dataset repo: VLGuard's from the archive,
        # the helpful ones file by file.
        out = train(training_config(ns, tmp_path / "run", tmp_path / "a"), log_fn=print)
        assert out["step"] == 2 and np.isfinite(out["loss"])
        assert "vlguard: 64 (safe 32, unsafe 32)" in capsys.readouterr().out  # no sample dropped
        assert stub.downloads["dataset:org/vlguard-tiny/train.json"] == 1
        assert stub.downloads["dataset:org/vlguard-tiny/train.zip"] == 1
        # Readers of local files (CSV readers, the suite's data root) get the cached copy: a folder
        # whole, or one file.
        copy = Path(storage.fetched(f"{DATA}/images"))
        assert sorted(folder(copy)) == sorted(folder(ns.sample["images"]))
        assert Path(storage.fetched(f"{DATA}/test.json")).read_bytes() == ns.sample["test"].read_bytes()
        # Evaluation files: the test meta as an hf:// path.
        _, items = safety_sets.load("vlguard", subset="unsafes", meta=f"{DATA}/test.json")
        assert len(items) == 32
        with pytest.raises(InputError, match=rf"--meta {DATA}/images: a folder, not a file"):
            safety_sets.load("vlguard", subset="unsafes", meta=f"{DATA}/images")  # named as typed
        # Its PEFT adapter names the base by repo and commit, which peft loads from anywhere.
        flax_to_hf.export(tmp_path / "run", tmp_path / "peft", lora="peft")
        adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
        assert (adapter["base_model_name_or_path"], adapter["revision"]) == (origin["id"], origin["revision"])
        # Outputs never go to the Hub.
        with pytest.raises(InputError, match=r"hf://datasets/org/vlguard-tiny/out: hf:// paths are read-only"):
            storage.as_path(f"{DATA}/out").mkdir()

    # Offline, from the warm cache, with the stand-in unreachable: the same commands.
    with hub_env("http://127.0.0.1:9", home, offline=True):
        assert (
            convert_cli(["hf-to-flax", "--src", "org/tiny@v1", "--dst", str(tmp_path / "a2"), "--dtype", "float32"])
            == 0
        )
        same_params(tmp_path / "a2", ns.flax_dir)
        assemble.assemble("org/vicuna", "org/clip", "org/projector", tmp_path / "b2", "float32")
        out = train(training_config(ns, tmp_path / "run2", tmp_path / "a2"), log_fn=print)
        printed = capsys.readouterr().out
        assert out["step"] == 2 and "vlguard: 64 (safe 32, unsafe 32)" in printed
        assert sorted(folder(Path(storage.fetched(f"{DATA}/images")))) == sorted(folder(ns.sample["images"]))
        line = one_error_line(["hf-to-flax", "--src", "org/other", "--dst", str(tmp_path / "x")], capsys)
        assert "--src org/other: no such local path, and as a Hub id: not in the Hugging Face cache" in line
        assert "HF_HUB_OFFLINE is set" in line
    # Online but with no Hub to reach and nothing cached: one line, not a traceback.
    with hub_env("http://127.0.0.1:9", tmp_path / "empty_home"):
        line = one_error_line(["hf-to-flax", "--src", "org/tiny", "--dst", str(tmp_path / "x")], capsys)
        assert "--src org/tiny: no such local path, and as a Hub id: not in the Hugging Face cache" in line
        assert "cannot be reached" in line


def test_an_endpoint_that_never_answers_is_one_line_in_bounded_time(tmp_path, capsys, monkeypatch):
    """A Hub that accepts connections and never answers: huggingface_hub's client would wait
    forever; every Hub call waits VLGUARD_HUB_TIMEOUT, then one line names the endpoint."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepted by the kernel, never answered
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setenv("VLGUARD_HUB_TIMEOUT", "1")
    try:
        with hub_env(url, tmp_path / "home"):
            t0 = time.monotonic()
            line = one_error_line(["hf-to-flax", "--src", "org/tiny", "--dst", str(tmp_path / "x")], capsys)
            took = time.monotonic() - t0
    finally:
        silent.close()
    assert f"the Hub at {url} cannot be reached" in line, line
    assert took < 60, f"waited {took:.0f} s"


@pytest.mark.slow
def test_processes_on_one_host_fetch_a_file_once(env, tmp_path):
    """Two processes opening the same hf:// file at once share the cache: one download (the
    Hub cache locks each file), both read it whole."""
    import subprocess
    import sys

    ns, _, _, stub, tmp = env
    code = f"from vlguard_jax import storage; print(len(storage.as_path('{DATA}/train.json').read_bytes()))"
    child_env = dict(
        os.environ,
        HF_ENDPOINT=stub.url,
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="0",
        PYTHONPATH=os.pathsep.join([str(emulators.guard_dir(tmp)), str(Path(__file__).parents[2])]),
    )
    before = stub.downloads["dataset:org/vlguard-tiny/train.json"]
    stub.delay = 1.0  # each download takes a second: the two overlap
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", code], env=child_env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        stub.delay = 0.0
    size = len(ns.sample["train"].read_bytes())
    assert [int(o.strip()) for o in outs] == [size, size]
    assert stub.downloads["dataset:org/vlguard-tiny/train.json"] == before + 1


@pytest.mark.slow
def test_an_interrupted_download_resumes_where_it_stopped(env, tmp_path, monkeypatch):
    """The connection drops halfway through an image: huggingface_hub asks for the rest (a Range
    from the last whole chunk it wrote), and the reader gets the whole file."""
    ns, _, _, stub, _ = env
    name = sorted(folder(ns.sample["images"]))[0]
    key = f"dataset:org/vlguard-tiny/images/{name}"
    whole = (ns.sample["images"] / name).read_bytes()
    stub.cut_once.add(key)
    with hub_env(stub.url, tmp_path / "hf_home"):
        # Chunks of 10 MB would hold a whole image; a smaller one shows the resume on a small file.
        monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64)
        got = storage.as_path(f"{DATA}/images/{name}").read_bytes()
    assert got == whole
    [(file, start)] = stub.ranges
    assert file == key and 0 < start <= len(whole) // 2 and start % 64 == 0
