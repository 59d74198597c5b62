"""orbax reads and writes s3:// checkpoints through tensorstore's own s3 driver.

orbax 0.12 builds the tensorstore specs of its arrays for gs:// and for files only: an s3:// path
is normalised to `s3:/` and taken for a relative file path. `install()` teaches the three small
functions that build those specs about s3://, so arrays go to the bucket as they go to gs://: each
process writes its own shards and process 0 merges their indexes. Everything else orbax writes
(directories, JSON, the commit marker) goes through epath, which reaches s3 through s3fs.
`orbax_path` installs it when a path is in s3, so only runs in s3 depend on those internals.

tensorstore takes no endpoint from the environment, so the spec carries the standard variables, as
botocore reads them: `AWS_ENDPOINT_URL_S3` or else `AWS_ENDPOINT_URL`, and `AWS_REGION` or else
`AWS_DEFAULT_REGION`. Credentials come from tensorstore's AWS chain (the environment first).

Orbax renames a finished checkpoint into place on a filesystem; object stores have no rename, so a
checkpoint in s3:// is finished once orbax's `commit_success.txt` is written, as in gs://
(`TEMPORARY_PATH`).
"""

from __future__ import annotations

import os
from urllib import parse

import orbax.checkpoint as ocp

from vlguard_jax import storage
from vlguard_jax.errors import InputError

TEMPORARY_PATH = ocp.path.atomicity.CommitFileTemporaryPath  # what orbax itself uses for gs://
_PATCHED = "_vlguard_s3"


def is_s3(path) -> bool:
    return str(path).startswith("s3://")


def orbax_path(path) -> str:
    """`path` as orbax takes it: a local one absolute, a remote one as it is; orbax is taught
    s3:// first when the path is there."""
    if is_s3(path):
        install()
    return storage.absolute(path)


def kvstore(url: str) -> dict:
    """tensorstore's spec of the s3 key-value store at `url` (s3://bucket/key/prefix)."""
    parts = parse.urlparse(url)
    if not parts.netloc:
        raise InputError(f"{url}: an s3 path needs a bucket: s3://BUCKET/...")
    spec = {"driver": "s3", "bucket": parts.netloc, "path": parts.path.lstrip("/")}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        spec["endpoint"] = endpoint
    if region:
        spec["aws_region"] = region
    return spec


def install() -> None:
    """Make orbax build s3 specs for s3:// paths (idempotent; other paths are untouched)."""
    try:  # orbax's internals, imported here so that only runs in s3 depend on them
        from orbax.checkpoint._src.path import gcs_utils
        from orbax.checkpoint._src.serialization import tensorstore_utils

        if getattr(tensorstore_utils, _PATCHED, False):
            return
        normalize, use_native = tensorstore_utils._normalize_path, tensorstore_utils._use_gcs_driver
        gcs_kvstore = gcs_utils.get_kvstore_for_gcs
    except (ImportError, AttributeError) as e:  # a later orbax that builds its specs differently
        raise RuntimeError(
            f"orbax {getattr(ocp, '__version__', '')} cannot be taught s3:// paths ({e}); use gs:// or a filesystem"
        ) from None

    def _normalize(path: str) -> str:
        # os.path.normpath would turn s3:// into s3:/; normalise the key only.
        return "s3://" + normalize(path[len("s3://") :]).lstrip("/") if is_s3(path) else normalize(path)

    tensorstore_utils._normalize_path = _normalize
    tensorstore_utils._use_gcs_driver = lambda directory: is_s3(directory) or use_native(directory)
    gcs_utils.get_kvstore_for_gcs = lambda path: kvstore(path) if is_s3(path) else gcs_kvstore(path)
    setattr(tensorstore_utils, _PATCHED, True)
