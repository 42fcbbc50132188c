"""The sandbox's marked lines in /etc/hosts (tested on a copy in tmp_path)."""

from __future__ import annotations

from pathlib import Path

from hpcplat.sandbox import hosts

BASE = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"


def test_adds_marked_lines_and_keeps_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(BASE)
    assert hosts.update("hpcsb", [("127.0.1.1", "n1"), ("127.0.1.2", "n2")], path) is True
    lines = path.read_text().splitlines()
    assert lines[:2] == BASE.splitlines()
    assert lines[2:] == [
        "127.0.1.1\tn1\t# hpcplat-sandbox:hpcsb",
        "127.0.1.2\tn2\t# hpcplat-sandbox:hpcsb",
    ]


def test_is_idempotent_and_replaces_only_its_own_sandbox(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(BASE)
    hosts.update("hpcsb", [("127.0.1.1", "n1")], path)
    hosts.update("hpcsbt", [("127.0.2.1", "t1")], path)
    before = path.read_text()
    assert hosts.update("hpcsb", [("127.0.1.1", "n1")], path) is False
    assert path.read_text() == before
    hosts.update("hpcsb", [], path)  # what `down` does
    assert path.read_text() == BASE + "127.0.2.1\tt1\t# hpcplat-sandbox:hpcsbt\n"


def test_a_sandbox_name_that_prefixes_another_does_not_touch_it(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(BASE)
    hosts.update("hpcsbt", [("127.0.2.1", "t1")], path)
    hosts.update("hpcsb", [], path)
    assert "t1" in path.read_text()


def test_leaves_no_temporary_file_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(BASE)
    path.chmod(0o644)
    hosts.update("hpcsb", [("127.0.1.1", "n1")], path)
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]
    assert path.stat().st_mode & 0o777 == 0o644
