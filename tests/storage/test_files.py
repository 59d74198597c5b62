"""Copies of complete directories to this host (storage.files.download_dir): several processes of one
host may copy the same directory at once, and the copy in place is never missing or partial.
The source here is a local directory with its marker; buckets are in test_storage.py."""

import pytest

from vlguard_jax import storage
from vlguard_jax.storage import files


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 100)
    (src / "sub" / "b.txt").write_text("b")
    (src / storage.COMPLETE).write_text("")
    return src


def listing(root):
    return sorted(rel for rel, _ in storage.walk_files(root))


def test_a_directory_without_its_marker_is_not_copied(source, tmp_path):
    (source / storage.COMPLETE).unlink()
    with pytest.raises(FileNotFoundError, match="src: not a complete directory"):
        files.download_dir(source, tmp_path / "dst")
    assert list(tmp_path.iterdir()) == [source]


def test_the_copy_has_every_file_but_the_marker(source, tmp_path):
    dst = files.download_dir(source, tmp_path / "cache" / "dst")
    assert listing(dst) == ["a.bin", "sub/b.txt"] and (dst / "sub" / "b.txt").read_text() == "b"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dst"]  # no temporary left


def test_a_copy_already_in_place_is_kept(source, tmp_path):
    dst = files.download_dir(source, tmp_path / "dst")
    (source / "a.bin").write_bytes(b"changed")  # not read again: the caller names dst by content
    files.download_dir(source, dst)
    assert (dst / "a.bin").read_bytes() == b"a" * 100


def test_of_two_concurrent_copies_the_first_to_finish_stays(source, tmp_path, monkeypatch):
    """Another process finishes its copy while this one is copying: this one drops its own."""
    dst = tmp_path / "dst"
    copy, raced = storage.copy_file, []

    def copy_while_another_finishes(src, to):
        if not raced:
            raced.append(True)
            files.download_dir(source, dst)  # the other process, done first
            (dst / "mark").write_text("first")
        copy(src, to)

    monkeypatch.setattr(storage, "copy_file", copy_while_another_finishes)
    assert files.download_dir(source, dst) == dst
    assert (dst / "mark").read_text() == "first" and listing(dst) == ["a.bin", "mark", "sub/b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]  # the loser's copy is gone
