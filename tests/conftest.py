import os

# Eight simulated CPU devices for the sharding tests; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No test reaches the Hugging Face Hub: ids that are no local folder fail at once, in this process
# and the commands it starts. The hub tests serve their own stand-in (tests/hub_stub.py).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Tests compile the same small programs many times (and in subprocesses): share the executables.
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(__import__("tempfile").gettempdir(), "vlguard-jax-test-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def qwen_tokenizer(tmp_path_factory):
    """Qwen2's real vocabulary as an HF tokenizer, built once per session (tests/qwen_vocab.py)."""
    import transformers

    from tests import qwen_vocab

    return transformers.AutoTokenizer.from_pretrained(qwen_vocab.build(tmp_path_factory.mktemp("qwen_vocab")))


@pytest.fixture(scope="session")
def shared_data():
    """The real data beside the checkout, or a skip saying why."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: real-data tests need ../shared beside the checkout")
    return root


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
# What Python, pip and pytest themselves leave in a checkout.
_OWN = ("__pycache__", ".pytest_cache", ".git", ".ruff_cache")


def repository_files() -> set[str]:
    """Every file and directory under the checkout, but those the tools themselves make."""
    out = set()
    for here, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _OWN and not d.endswith(".egg-info")]
        rel = os.path.relpath(here, REPO)
        out.update(os.path.normpath(os.path.join(rel, n)) for n in dirs + files)
    return out


@pytest.fixture(scope="module", autouse=True)
def leaves_no_file_in_the_repository(request):
    """Tests write only under their temporary directories: a test module that leaves a new file or
    directory in the checkout (a relative path, a bucket path taken for a local one) fails."""
    before = repository_files()
    yield
    new = sorted(repository_files() - before)
    assert not new, f"{request.module.__name__} left {new[:5]} in the repository; write under tmp_path"
