"""hpcplat.files: the one atomic write (temp file in the same directory, fsync, rename)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcplat.files import atomic_file, atomic_write


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_writes_text_as_utf8_and_bytes_as_they_are(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.txt", "héllo\n")
    atomic_write(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_private_by_default_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        atomic_write(tmp_path / "secret", "x")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "secret") == 0o600


def test_the_mode_given_is_exact_and_replaces_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "published"
    target.write_text("old")
    target.chmod(0o600)
    old = os.umask(0o077)
    try:
        atomic_write(target, "new", mode=0o644)
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert mode_of(target) == 0o644


def test_a_failure_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_temp_files_are_hidden_from_globs_of_the_target_kind(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    with atomic_file(target) as handle:
        handle.write(b"{}")
        assert list(tmp_path.glob("*.json")) == []  # only the hidden .run.json.*.tmp exists now
        assert len(list(tmp_path.iterdir())) == 1
    assert [p.name for p in tmp_path.glob("*.json")] == ["run.json"]
