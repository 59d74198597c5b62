"""Paths that may be local or in object storage (`gs://bucket/...`, `s3://bucket/...`), or on the
Hugging Face Hub (`hf://datasets/ORG/NAME/...`, read-only: see `hub`).

Remote paths are etils `epath` paths (fsspec's gcsfs and s3fs underneath); orbax and tensorstore
read and write arrays there themselves. Object stores have no atomic rename, so a directory
written there is complete only once its marker `COMPLETE` exists: writers put it last, readers
require it (`is_complete`). A single object appears whole or not at all, so a one-file write
needs no marker.

Clients are pointed at an emulator or any compatible store by the standard variables:
`STORAGE_EMULATOR_HOST` (GCS; passed on to tensorstore as `TENSORSTORE_GCS_HTTP_URL`), and
`AWS_ENDPOINT_URL` with `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (S3).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import cast

import fsspec
import fsspec.config
from etils import epath

from vlguard_jax.errors import InputError, UserError, register_environment_errors
from vlguard_jax.storage import hub

REMOTE = ("gs://", "s3://", hub.PREFIX)
StrPath = str | os.PathLike
COMPLETE = "COMPLETE"


def configure() -> None:
    """Pass the standard endpoint variables on to every client (before any is created), and keep
    fsspec from caching listings: processes poll the bucket for what others write."""
    for protocol in ("gs", "s3"):
        fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        # An emulator takes no credentials: gcsfs must not look for any (google-auth would ask
        # the metadata server).
        fsspec.config.conf["gs"].setdefault("token", "anon")
        url = host if "://" in host else f"http://{host}"
        os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
        # gcsfs asks the control API for the bucket's layout over gRPC, which emulators lack.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


configure()


def is_remote(path) -> bool:
    return str(path).startswith(REMOTE)


def writable(path, flag: str = "") -> None:
    """Refuse an output on the Hub (hf:// is read-only here) before anything probes it: a probe
    would ask the Hub, and answer with its network or cache errors instead."""
    if str(path).startswith(hub.PREFIX):
        raise InputError(hub.read_only(f"{flag} {path}".strip()))


class StorageError(UserError):
    """A bucket that cannot be used: no credentials, unreachable, or missing."""


_CHECKED: set = set()  # buckets and Hub repos found usable by this process


def _check_repo(path) -> None:
    """hub.check_repo, once per repo and revision in this process."""
    uri = hub.parse(path)
    repo = f"{hub.PREFIX}{uri.type}s/{uri.id}@{uri.revision}"
    if repo not in _CHECKED:
        hub.check_repo(path)
        _CHECKED.add(repo)


def check_bucket(path) -> None:
    """Before a process first uses a bucket: its credentials are there (looked up as the clients
    look them up, in seconds) and the bucket exists. A missing bucket is never created: an error
    names it. Each failure is one line naming the variables to set."""
    scheme, rest = str(path).split("://", 1)
    bucket = f"{scheme}://{rest.split('/', 1)[0]}"
    if bucket in _CHECKED:
        return
    try:  # the [remote] extra's clients: local paths need none
        import botocore.exceptions
        import botocore.session
        import google.auth
        import google.auth.exceptions
    except ImportError:
        raise StorageError(f"{path}: bucket paths need the [remote] extra: pip install 'vlguard-jax[remote]'") from None
    client_errors = (OSError, botocore.exceptions.BotoCoreError, google.auth.exceptions.GoogleAuthError)
    register_environment_errors(*client_errors[1:])  # a store that fails mid-run: one line, not a bug
    if scheme == "s3" and botocore.session.get_session().get_credentials() is None:
        raise StorageError(
            f"{path}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "and AWS_ENDPOINT_URL for an S3-compatible store other than AWS"
        )
    if scheme == "gs" and not os.environ.get("STORAGE_EMULATOR_HOST"):
        try:
            google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError:
            raise StorageError(
                f"{path}: no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS (or run gcloud auth "
                "application-default login), or STORAGE_EMULATOR_HOST for an emulator"
            ) from None
    try:
        fsspec.filesystem(scheme).info(bucket.split("://", 1)[1])  # exists() would take an error for "no"
    except FileNotFoundError:
        raise StorageError(
            f"{path}: the bucket {bucket} does not exist; create it first (none is created for you)"
        ) from None
    except client_errors as e:
        raise StorageError(f"{path}: cannot reach {bucket} ({type(e).__name__}: {' '.join(str(e).split())})") from None
    _CHECKED.add(bucket)


def local(path) -> Path:
    """A local path, never a bucket path that a `pathlib.Path` has turned into a local one
    (`Path("s3://b/x")` is `s3:/b/x`, a directory `s3:` in the working directory): that is a bug in
    the caller, raised as one, before anything is written."""
    text = str(path)
    if text.startswith(REMOTE) or text.startswith(tuple(s[:-1] for s in REMOTE)):
        raise RuntimeError(f"{text}: a bucket path reached a local file operation")
    return Path(path)


def local_only(path, flag: str) -> Path:
    """The local path given for `flag`, or a one-line error for a bucket path: for outputs that are
    appended to as they grow, which objects in a bucket cannot be."""
    if is_remote(path):
        raise InputError(
            f"{flag} {path}: this output is written locally only (it is appended to as the run goes); "
            "write it to a local path and copy it to the bucket when the run is done"
        )
    return local(path)


def as_path(path) -> Path:
    """A `pathlib.Path` for a local path; for a remote one an `epath.Path`, which has the same
    methods (those this code uses), so both are typed as `Path`. Remove directories with `rmtree`
    below: pathlib has no method for it."""
    if is_remote(path):
        configure()
        (_check_repo if hub.is_hub_path(path) else check_bucket)(path)
        return cast(Path, epath.Path(str(path)))
    return local(path)


def fetched(path: StrPath) -> StrPath:
    """`path` for a reader that needs local files: an hf:// file or folder as its copy in the
    Hugging Face cache (fetched where missing); anything else as it is."""
    return hub.local_copy(path) if hub.is_hub_path(path) else path


def fetched_file(path: StrPath, flag: str) -> StrPath:
    """`fetched` for a file: a folder is refused naming the path as given (not its cache copy)."""
    local = fetched(path)
    if not is_remote(local) and Path(local).is_dir():
        raise InputError(f"{flag} {path}: a folder, not a file")
    return local


def _archive(root: StrPath) -> Path | None:
    """The local file behind a `.zip` image root (the Hub cache's copy for hf://), or None for a
    root that is no archive."""
    if not str(root).endswith(".zip") or is_remote(root) and not hub.is_hub_path(root):
        return None
    archive = Path(fetched(root))
    if archive.is_dir():
        raise InputError(
            f"{root}: a folder named like an archive; pass the folder of images without .zip, or a zip file"
        )
    if not archive.is_file():
        raise InputError(f"{root}: no such zip archive")
    return archive


def root_identity(root: StrPath) -> str:
    """What an image root's contents are known by: for an archive, the file itself (its resolved
    path, size and modification time; the Hub cache names a file by its content), else the root
    as given."""
    archive = _archive(root)
    if archive is None:
        return str(root)
    st = archive.resolve().stat()
    return f"{archive.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def unpacked(root: StrPath) -> StrPath:
    """An image root as the readers take it: a `.zip` archive (local or hf://, as VLGuard ships
    its images) unpacked once into this host's cache, keyed by the archive's identity (a changed
    or other archive at the same path is unpacked anew), rooted at its one top-level folder if
    all its members sit in one (`train.zip` holds `train/...`); any other root as it is."""
    archive = _archive(root)
    if archive is None:
        return root
    cache = local_cache(root_identity(root), "unpacked")
    done = cache / "files"  # renamed into place whole: it exists only complete
    if not done.is_dir():
        _unpack(root, archive, cache, done)
    tops = [p for p in done.iterdir() if not p.name.startswith("__MACOSX")]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else done


def _unpack(root: StrPath, archive: Path, cache: Path, done: Path) -> None:
    for stale in cache.glob(".unpacking-*"):  # left by a killed unpack: its process is gone
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".unpacking-{os.getpid()}-", dir=cache))
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            need, free = sum(m.file_size for m in members), shutil.disk_usage(cache).free
            if need > free:
                raise InputError(
                    f"{root}: unpacks to {need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free "
                    f"in the cache {cache} (set VLGUARD_CACHE to a larger disk)"
                )
            for m in members:
                try:
                    z.extract(m, work)  # zipfile drops absolute parts and ".." from member names
                except OSError as e:
                    raise InputError(f"{root}: member {m.filename!r} cannot be unpacked ({e.strerror or e})") from None
        os.replace(work, done)
    except zipfile.BadZipFile as e:
        raise InputError(f"{root}: not a zip archive ({e})") from None
    except OSError:
        if not done.is_dir():  # else another process on this host unpacked it first
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rmtree(path) -> None:
    """Remove a directory tree, local or remote."""
    if is_remote(path):
        epath.Path(str(path)).rmtree()
    else:
        shutil.rmtree(path)


def absolute(path) -> str:
    """The path as a string orbax accepts: remote paths as they are, local ones absolute."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


def is_complete(path) -> bool:
    """A directory is complete: locally, it exists (writers rename into place); remotely, its
    marker exists."""
    p = as_path(path)
    return (p / COMPLETE).exists() if is_remote(path) else p.is_dir()


def walk_files(root) -> list[tuple[str, Path]]:
    """(relative posix name, path) of every file under `root`, sorted by name parts."""
    remote = is_remote(root)
    root = as_path(root)
    if remote:
        fs, base = fsspec.core.url_to_fs(str(root))
        base = base.rstrip("/")
        rels = [f[len(base) :].strip("/") for f in fs.find(base)]  # names without the scheme
    else:
        rels = [
            os.path.relpath(os.path.join(here, n), root).replace(os.sep, "/")
            for here, _, names in os.walk(root)
            for n in names
        ]
    out = [(rel, root / rel) for rel in rels if rel]
    return sorted(out, key=lambda x: x[0].split("/"))


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file, local or remote either side, making `dst`'s parent directories."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as r, dst.open("wb") as w:
        shutil.copyfileobj(r, w, 8 << 20)


def upload_dir(src: Path, dst) -> None:
    """Copy a local directory to remote `dst`, the marker last. Whatever `dst` held is removed first,
    so a reader never sees old and new files mixed under a marker."""
    out = as_path(dst)
    if out.exists():
        rmtree(out)
    for rel, f in walk_files(src):
        copy_file(f, out / rel)
    (out / COMPLETE).write_text("")


def local_cache(path, kind: str) -> Path:
    """This host's local directory standing in for remote `path` (memory-mapped data, logs that
    are appended to): `$VLGUARD_CACHE` or ~/.cache/vlguard-jax, by a hash of the path."""
    root = Path(os.environ.get("VLGUARD_CACHE") or Path.home() / ".cache" / "vlguard-jax")
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    out = root / kind / key
    out.mkdir(parents=True, exist_ok=True)
    return out


class Mirror:
    """A local directory whose files are copied to remote `dst` by `sync()` (those changed since
    the last sync): for files a run appends to, which objects do not allow. `pull()` first brings
    back what an earlier run left there."""

    def __init__(self, dst, kind: str = "mirror"):
        self.dst = dst
        self.local = local_cache(dst, kind)
        shutil.rmtree(self.local)  # what an earlier run on this host left: `pull` brings the truth
        self.local.mkdir(parents=True)
        self._sent: dict = {}

    def pull(self, names=("",)) -> None:
        """Bring back these names under `dst` (files or directories; by default all of it)."""
        for name in names:
            src = as_path(self.dst) / name
            if src.exists():
                if src.is_dir():
                    for rel, f in walk_files(src):
                        copy_file(f, self.local / name / rel)  # name "" is the whole of dst
                else:
                    copy_file(src, self.local / name)
        self._sent = self._state()

    def _state(self) -> dict:
        return {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in self.local.rglob("*") if f.is_file()}

    def sync(self) -> None:
        now = self._state()
        for f, sig in now.items():
            if self._sent.get(f) != sig:
                copy_file(f, as_path(self.dst) / f.relative_to(self.local).as_posix())
        self._sent = now


@functools.cache
def mirror_for(workdir) -> Mirror:
    """The one Mirror of a remote workdir in this process (logs, bad-record lists); processes that
    share a host each have their own."""
    import jax

    return Mirror(str(workdir), f"workdir/process_{jax.process_index()}")


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
