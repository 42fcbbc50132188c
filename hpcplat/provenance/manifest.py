"""Dataset manifests: every file's path, size and sha256, and one content hash over them.

The content hash depends on relative paths, sizes and contents only (not on mtimes or the
location), so the same data copied elsewhere has the same hash. Mtimes are kept in the manifest to
make :func:`verify_manifest` cheap: only files whose size or mtime changed are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcplat.errors import UsageError

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    mtime_ns: int = 0


@dataclass(frozen=True)
class Manifest:
    files: tuple[FileEntry, ...]

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for entry in self.files:
            digest.update(f"{entry.path}\0{entry.size}\0{entry.sha256}\n".encode())
        return digest.hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files)

    def to_json(self) -> str:
        rows = [[e.path, e.size, e.sha256, e.mtime_ns] for e in self.files]
        return json.dumps({"version": 1, "files": rows}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        return cls(tuple(FileEntry(str(p), int(s), str(h), int(m)) for p, s, h, m in data["files"]))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(relative path, absolute path) of every regular file under ``root``, sorted; symlinks to
    files are followed, symlinked directories are not (no cycles)."""
    if root.is_file():
        return [(root.name, root)]
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_file():
                found.append((full.relative_to(root).as_posix(), full))
    found.sort()
    return found


def build_manifest(location: str | Path) -> Manifest:
    """Hash every file under ``location`` (a file or a directory)."""
    root = Path(location)
    if not root.exists():
        raise UsageError(f"dataset path {root} does not exist", hint="give the path of a file or a directory")
    entries = []
    for rel, full in _walk(root):
        stat = full.stat()
        entries.append(FileEntry(rel, stat.st_size, sha256_file(full), stat.st_mtime_ns))
    if not entries:
        raise UsageError(
            f"dataset path {root} holds no files", hint="register a directory that contains the data"
        )
    return Manifest(tuple(entries))


def verify_manifest(manifest: Manifest, location: str | Path) -> list[str]:
    """What changed at ``location`` since ``manifest`` was made, one line per file (empty: same).

    Files whose size and mtime are unchanged are trusted; others are hashed again.
    """
    root = Path(location)
    if not root.exists():
        return [f"{root} no longer exists"]
    recorded = {e.path: e for e in manifest.files}
    current = dict(_walk(root))
    problems: list[str] = []
    for rel in sorted(recorded.keys() - current.keys()):
        problems.append(f"removed: {rel}")
    for rel in sorted(current.keys() - recorded.keys()):
        problems.append(f"added: {rel}")
    for rel in sorted(recorded.keys() & current.keys()):
        entry = recorded[rel]
        stat = current[rel].stat()
        if stat.st_size != entry.size:
            problems.append(f"changed: {rel} (size {entry.size} -> {stat.st_size})")
        elif stat.st_mtime_ns != entry.mtime_ns and sha256_file(current[rel]) != entry.sha256:
            problems.append(f"changed: {rel} (content differs)")
    return problems
