"""A bucket is checked before its first use: with no credentials, or a missing bucket, a command
says so in one line, in seconds, naming what to set; no bucket is ever created. The clients are
kept away from every metadata server here: discovery is off and the metadata hosts are a closed
loopback port."""

import time

import pytest

from vlguard_jax import storage
from vlguard_jax.evaluate.__main__ import main
from vlguard_jax.storage import paths

pytest.importorskip("botocore")
pytest.importorskip("google.auth")


@pytest.fixture()
def no_credentials(tmp_path, monkeypatch):
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setattr(paths, "_CHECKED", set())


@pytest.mark.parametrize(
    "url,line",
    [
        ("s3://bkt/out", "error: s3://bkt/out: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("gs://bkt/out", "error: gs://bkt/out: no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS"),
    ],
)
def test_no_credentials_is_one_line_in_seconds(no_credentials, tmp_path, capsys, url, line):
    t0 = time.monotonic()
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--benchmark", "xstest", "--data", "x.csv", "--out", url]
    assert main(args) == 1
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err


def test_an_unreachable_store_is_one_line_naming_it(no_credentials, monkeypatch, capsys):
    from tests.emulators import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(storage.StorageError, match=r"s3://bkt/x: cannot reach s3://bkt \(EndpointConnectionError"):
        storage.as_path("s3://bkt/x")
