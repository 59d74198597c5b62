"""orbax's array specs for s3:// paths (storage.orbax_s3): tensorstore's s3 driver, pointed at the
endpoint and region of the standard variables; gs:// and local paths keep orbax's own specs.
(Writing and reading through them, by several processes, is in test_storage.py.)"""

import pytest
from orbax.checkpoint._src.serialization import tensorstore_utils

from vlguard_jax.storage import orbax_s3


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    orbax_s3.install()


def base_of(spec: dict) -> dict:
    """The kvstore under orbax's OCDBT layer (possibly a stack whose first layer is the data)."""
    base = spec["base"]
    return base["layers"][0]["base"] if base.get("driver") == "kvstack" else base


def test_an_s3_path_is_tensorstores_s3_store_at_the_standard_endpoint(aws):
    assert orbax_s3.kvstore("s3://bkt/runs/a//checkpoints/2/state") == {
        "driver": "s3",
        "bucket": "bkt",
        "path": "runs/a//checkpoints/2/state",
        "endpoint": "http://127.0.0.1:9",
        "aws_region": "eu-west-3",
    }
    spec = tensorstore_utils.build_kvstore_tspec("s3://bkt/runs/a//checkpoints/2/state", "params.w")
    assert spec["driver"] == "ocdbt" and spec["path"] == "params.w"
    base = base_of(spec)
    assert (base["driver"], base["bucket"], base["endpoint"]) == ("s3", "bkt", "http://127.0.0.1:9")
    assert base["path"].rstrip("/") == "runs/a/checkpoints/2/state"  # normalised, scheme kept apart
    flat = tensorstore_utils.build_kvstore_tspec("s3://bkt/x/state", "w", use_ocdbt=False)
    assert (flat["driver"], flat["bucket"], flat["path"]) == ("s3", "bkt", "x/state/w")


def test_without_the_variables_the_spec_names_no_endpoint(monkeypatch):
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    assert orbax_s3.kvstore("s3://bkt/a") == {"driver": "s3", "bucket": "bkt", "path": "a"}
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    assert orbax_s3.kvstore("s3://bkt/a")["aws_region"] == "us-east-2"
    with pytest.raises(ValueError, match="s3:///a: an s3 path needs a bucket"):
        orbax_s3.kvstore("s3:///a")


def test_the_s3_endpoint_variable_comes_before_the_general_one(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")
    assert orbax_s3.kvstore("s3://bkt/a")["endpoint"] == "http://127.0.0.1:10"


def test_gs_and_local_paths_keep_orbaxs_specs(aws, tmp_path):
    orbax_s3.install()  # twice: idempotent
    gs = base_of(tensorstore_utils.build_kvstore_tspec("gs://bkt/x/state", "w"))
    assert gs["driver"] == "gcs" and gs["bucket"] == "bkt"
    local = base_of(tensorstore_utils.build_kvstore_tspec(str(tmp_path / "state"), "w"))
    assert local["driver"] == "file" and local["path"].rstrip("/") == str(tmp_path / "state")
    with pytest.raises(ValueError, match="absolute"):
        tensorstore_utils.build_kvstore_tspec("relative/state", "w")


def test_an_orbax_without_these_internals_is_named_when_s3_is_used(monkeypatch, tmp_path):
    monkeypatch.delattr(tensorstore_utils, "_vlguard_s3", raising=False)  # as if never installed
    monkeypatch.delattr(tensorstore_utils, "_normalize_path")
    assert orbax_s3.orbax_path(tmp_path) == str(tmp_path)  # local paths need nothing of it
    with pytest.raises(RuntimeError, match=r"orbax .* cannot be taught s3:// paths .*_normalize_path"):
        orbax_s3.orbax_path("s3://bkt/run/checkpoints")
