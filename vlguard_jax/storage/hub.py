"""The Hugging Face Hub as a source, through huggingface_hub, so that its cache, `HF_HOME`,
`HF_TOKEN`, `HF_HUB_OFFLINE` and `HF_ENDPOINT` apply as everywhere else:

- model sources named by id, `org/name` or `org/name@REVISION`, beside local folders; a file in a
  repo as `org/name[@REVISION]/PATH`. Only what a converter reads is fetched: configs, tokenizer
  and preprocessor files, and the weights, safetensors where the repo has them, else `.bin`;
- `hf://datasets/ORG/NAME[@REVISION]/PATH` data paths, through huggingface_hub's fsspec file
  system (the layer that serves gs:// and s3://), read-only: a file is fetched whole into the
  Hub cache when first opened (resumed after an interruption, and locked per file, so the
  processes of a host fetch it once), and listings come from the cached snapshot when offline.

A local path always wins: a folder that exists is never taken for an id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import fsspec
import huggingface_hub
from huggingface_hub import constants, errors
from huggingface_hub.hf_file_system import HfFileSystem
from tqdm.auto import tqdm

from vlguard_jax.errors import InputError, MissingFileError

PREFIX = "hf://"
_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w.-]+))?(?:/(?P<path>[^@]+))?")
# Everything a converter reads beside the weights (configs, tokenizers, preprocessors).
SIDE_FILES = ("*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken")
WEIGHTS = (("*.safetensors",), ("*.bin", "*.pth"))  # the first kind the repo has is fetched


def is_hub_id(text) -> bool:
    """`org/name[@REV][/PATH]` that is not an existing local path."""
    text = str(text)
    if "://" in text or text.startswith((".", "/", "~")) or os.path.exists(text):
        return False
    return _ID.fullmatch(text) is not None


def split_id(text: str) -> tuple[str, str | None, str]:
    """(repo id, revision or None, path in the repo or "")."""
    m = _ID.fullmatch(text)
    if m is None:
        raise InputError(f"{text}: not a Hugging Face Hub id (org/name, org/name@REVISION)")
    return m["repo"], m["rev"], m["path"] or ""


def timeout_s() -> float:
    """How long a Hub call waits for the endpoint before it is called unreachable
    ($VLGUARD_HUB_TIMEOUT, seconds): huggingface_hub's own client waits forever."""
    return float(os.environ.get("VLGUARD_HUB_TIMEOUT") or 60)


def _bound(request) -> None:
    """A request event hook: a request sent with no timeout (huggingface_hub passes timeout=None
    to its API calls) waits timeout_s() at most for each connect, read and write."""
    limits = request.extensions.get("timeout") or {}
    if all(v is None for v in limits.values()):
        t = timeout_s()
        request.extensions["timeout"] = {"connect": t, "read": t, "write": t, "pool": t}


def bounded() -> None:
    """huggingface_hub's shared HTTP client, with `_bound` among its request hooks."""
    session = huggingface_hub.get_session()
    hooks = dict(session.event_hooks)
    if _bound not in hooks.get("request", []):
        hooks["request"] = [*hooks.get("request", []), _bound]
        session.event_hooks = hooks


@contextlib.contextmanager
def explained(source: str, flag: str, local: bool = True) -> Iterator[None]:
    """huggingface_hub's errors for `source` as one line naming it and what to do; `local`: the
    source could have been a local path (a model source shaped like an id), which it is not."""
    where = f"{flag} {source}" if flag else source
    absent = f"{where}: no such local path, and as a Hub id" if local else where  # where no repo was found
    bounded()
    try:
        yield
    except errors.GatedRepoError:
        raise InputError(
            f"{where}: a gated repo: accept its licence on the Hub's page for it, then log in "
            "(hf auth login) or set HF_TOKEN"
        ) from None
    except errors.RevisionNotFoundError:
        raise InputError(f"{where}: no such revision in the repo (a branch, tag or commit after @)") from None
    except errors.RepositoryNotFoundError:
        raise InputError(
            f"{absent}: no Hub repo of that id that you can read (a private repo needs hf auth login or HF_TOKEN)"
        ) from None
    except errors.LocalEntryNotFoundError:
        offline = constants.HF_HUB_OFFLINE
        raise InputError(
            f"{absent}: not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
            + (
                ", and HF_HUB_OFFLINE is set: unset it to download, or fetch it once on a machine online"
                if offline
                else f", and the Hub at {constants.ENDPOINT} cannot be reached (each try waits up to {timeout_s():g} s, "
                "VLGUARD_HUB_TIMEOUT): check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only what is cached"
            )
        ) from None
    except errors.EntryNotFoundError:
        raise MissingFileError(f"{where}: no such file in the repo") from None
    except errors.HfHubHTTPError as e:
        raise InputError(f"{where}: the Hub answered {' '.join(str(e).split())[:300]}") from None
    except Exception as e:
        if not _unreachable(e):
            raise
        raise InputError(
            f"{absent}: cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}; waited up to "
            f"{timeout_s():g} s, VLGUARD_HUB_TIMEOUT): check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 "
            "to use only what is cached"
        ) from None


# huggingface_hub's HTTP client is httpx (or httpx2, or requests in older versions): its network
# errors by name, so that any of them is one line.
_NETWORK = frozenset({"NetworkError", "TimeoutException", "TransportError", "ConnectionError", "ConnectTimeout"})


# Not in the repo (offline, "not cached" is another error, which must not be taken for this one).
_NOT_IN_REPO = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)


def _unreachable(e: BaseException) -> bool:
    return any(c.__name__ in _NETWORK for c in type(e).__mro__)


def model_dir(source, flag: str = "") -> Path:
    """A local folder for a model source: the folder itself, or the snapshot of hub id `source`
    holding the side files and one kind of weights. `flag` names the option in errors."""
    if not is_hub_id(source):
        return Path(source)
    repo, rev, path = split_id(str(source))
    if path:
        raise InputError(f"{flag} {source}: names a file in a repo; give the repo (org/name[@REVISION])")
    with explained(str(source), flag):
        folder = None
        for weights in WEIGHTS:
            folder = Path(huggingface_hub.snapshot_download(repo, revision=rev, allow_patterns=[*SIDE_FILES, *weights]))
            if any(folder.rglob(w) for w in weights):
                break
    assert folder is not None
    return folder


def provenance(source, folder: Path) -> dict | None:
    """{"id", "revision"} of hub id `source` fetched as `folder` (a snapshot, named by its
    commit); None for a local source."""
    if not is_hub_id(source):
        return None
    return {"id": split_id(str(source))[0], "revision": folder.name}


def model_file(source, flag: str = "", default_names: tuple[str, ...] = ()) -> Path:
    """A local file for a file source: the path itself, `org/name[@REV]/PATH` fetched, or for a
    bare repo id the first of `default_names` the repo holds."""
    if not is_hub_id(source):
        return Path(source)
    repo, rev, path = split_id(str(source))
    with explained(str(source), flag):
        if path:
            return Path(huggingface_hub.hf_hub_download(repo, path, revision=rev))
        for name in default_names:
            with contextlib.suppress(_NOT_IN_REPO):
                return Path(huggingface_hub.hf_hub_download(repo, name, revision=rev))
    names = " or ".join(default_names) or "a file"
    raise MissingFileError(f"{flag} {source}: the repo holds no {names}; name the file as {source}/PATH")


# hf:// paths -------------------------------------------------------------------------------------


def is_hub_path(path) -> bool:
    return str(path).startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class HubPath:
    """An hf:// path's parts: `hf://[datasets/|spaces/]ORG/NAME[@REVISION][/PATH]`."""

    type: str  # "model", "dataset" or "space"
    id: str
    revision: str | None
    path_in_repo: str


_URI = re.compile(
    r"hf://(?:(?P<kind>datasets|spaces|models)/)?(?P<id>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.*))?"
)


def parse(path) -> HubPath:
    """The parts of an hf:// path; anything else is an error naming it."""
    m = _URI.fullmatch(str(path).rstrip("/"))
    if m is None or m["id"].split("/")[0] in ("buckets", "datasets", "spaces", "models"):
        raise InputError(f"{path}: not an hf:// path of a repo; write hf://datasets/ORG/NAME[@REVISION]/PATH")
    kind = (m["kind"] or "models")[:-1]
    rev = urllib.parse.unquote(m["rev"]) if m["rev"] else None
    return HubPath(kind, m["id"], rev, m["path"] or "")


def check_repo(path) -> None:
    """Before a process first reads an hf:// path: the repo and revision can be read (or, offline,
    are cached). Each failure is one line naming the path."""
    uri = parse(path)
    with explained(str(path), "", local=False):
        if constants.HF_HUB_OFFLINE:
            _snapshot(uri)
        else:
            huggingface_hub.HfApi().repo_info(uri.id, revision=uri.revision, repo_type=uri.type)


def local_copy(path) -> Path:
    """The Hub cache's copy of hf:// file or folder `path`, fetched (resumably) where missing: for
    readers that need a local file, such as CSV readers or the suite's data root."""
    uri, path = parse(str(path)), str(path)
    with explained(path, "", local=False):
        if constants.HF_HUB_OFFLINE:
            local = _snapshot(uri) / uri.path_in_repo
            if not local.exists():
                raise InputError(f"{path}: not in the Hugging Face cache, and HF_HUB_OFFLINE is set")
            return local
        if not uri.path_in_repo or fsspec.filesystem("hf").isdir(path):
            patterns = [f"{uri.path_in_repo}/**"] if uri.path_in_repo else None
            folder = huggingface_hub.snapshot_download(
                uri.id, repo_type=uri.type, revision=uri.revision, allow_patterns=patterns
            )
            return Path(folder) / uri.path_in_repo
        return Path(
            huggingface_hub.hf_hub_download(uri.id, uri.path_in_repo, repo_type=uri.type, revision=uri.revision)
        )


def _snapshot(uri: HubPath) -> Path:
    """The cached snapshot folder of a repo revision (offline)."""
    return Path(
        huggingface_hub.snapshot_download(
            uri.id, repo_type=uri.type, revision=uri.revision, local_files_only=True, allow_patterns=[]
        )
    )


class _Quiet(tqdm):
    """No bar per data file (thousands of images); model downloads keep theirs."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


class CachedHubFileSystem(HfFileSystem):
    """huggingface_hub's `hf://` file system, read-only, with files read from the Hub cache (see
    the module docstring). Registered as fsspec's `hf`, which etils epath uses."""

    def _open(self, path: str, mode: str = "rb", **kwargs) -> Any:  # type: ignore[override]
        if mode != "rb":
            self._write_refused(path)
        uri = parse(self._with_protocol(path))
        with explained(self._with_protocol(path), "", local=False):
            local = huggingface_hub.hf_hub_download(
                uri.id, uri.path_in_repo, repo_type=uri.type, revision=uri.revision, tqdm_class=_Quiet
            )
        return open(local, "rb")

    def _with_protocol(self, path: str) -> str:
        return path if path.startswith(PREFIX) else PREFIX + path

    def _name(self, path: str) -> str:
        """The path as fsspec names it here: without the protocol or a trailing slash."""
        return str(self._strip_protocol(path)).rstrip("/")

    def _local(self, path: str) -> Path:
        uri = parse(self._with_protocol(path))
        with explained(self._with_protocol(path), "", local=False):
            return _snapshot(uri) / uri.path_in_repo

    def info(self, path: str, refresh: bool = False, revision: str | None = None, **kwargs) -> dict[str, Any]:
        if not constants.HF_HUB_OFFLINE:
            return super().info(path, refresh=refresh, revision=revision, **kwargs)
        local = self._local(path)
        if not local.exists():
            raise FileNotFoundError(f"{self._with_protocol(path)}: not in the Hugging Face cache")
        kind = "directory" if local.is_dir() else "file"
        return {"name": self._name(path), "size": local.stat().st_size if kind == "file" else 0, "type": kind}

    def ls(
        self, path: str, detail: bool = True, refresh: bool = False, revision: str | None = None, **kwargs
    ) -> list[str | dict[str, Any]]:
        if not constants.HF_HUB_OFFLINE:
            return super().ls(path, detail=detail, refresh=refresh, revision=revision, **kwargs)
        base, local = self._name(path), self._local(path)
        out = [self.info(f"{base}/{child.name}") for child in sorted(local.iterdir())]
        return list(out) if detail else [o["name"] for o in out]

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        refresh: bool = False,
        revision: str | None = None,
        **kwargs,
    ) -> list[str] | dict[str, dict[str, Any]]:
        if not constants.HF_HUB_OFFLINE:
            return super().find(path, maxdepth, withdirs, detail, refresh, revision, **kwargs)
        base, local = self._name(path), self._local(path)
        names = sorted(f"{base}/{p.relative_to(local).as_posix()}" for p in local.rglob("*") if p.is_file())
        return {n: self.info(n) for n in names} if detail else names

    def exists(self, path, **kwargs) -> bool:
        if not constants.HF_HUB_OFFLINE:
            return super().exists(path, **kwargs)
        try:
            self.info(path)
            return True
        except (OSError, InputError):
            return False

    def _write_refused(self, path, *args, **kwargs) -> NoReturn:
        raise InputError(read_only(self._with_protocol(str(path))))

    mkdir = makedirs = rm = _rm = cp_file = put_file = pipe_file = mv = touch = _write_refused  # type: ignore[assignment]


def read_only(path: str) -> str:
    """The one line for an output named on the Hub."""
    return f"{path}: hf:// paths are read-only; write outputs to a local folder or a bucket"


fsspec.register_implementation("hf", CachedHubFileSystem, clobber=True)
