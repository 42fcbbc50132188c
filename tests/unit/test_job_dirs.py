"""Job directories and checkpoints against a co-tenant, with real Unix users.

Job ids are sequential and a site's ``job_root`` may be shared by every user: a co-tenant
(``hpcplat-mallory``) who could create the next job's directory, or plant a checkpoint in a shared
checkpoint directory, would have the victim's job load it (a pickle runs code). The victim here is
the user running the tests.
"""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from hpcplat import checkpoint
from hpcplat.errors import HpcplatError, UsageError
from hpcplat.siteconfig import SiteConfig, current_user, from_data
from hpcplat.submission.service import ensure_job_root
from tests.fixtures.users import UnixUser


def config(root: Path) -> SiteConfig:
    return from_data({"submission": {"job_root": str(root)}})


def test_each_user_gets_a_private_root_nobody_else_can_write(
    shared_dir: Path, unix_users: dict[str, UnixUser]
) -> None:
    root = ensure_job_root(config(shared_dir))
    assert root == shared_dir / current_user()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    planted = unix_users["mallory"].run(["mkdir", str(root / "4242")])
    assert planted.returncode != 0 and "Permission denied" in planted.stderr
    assert not (root / "4242").exists()


def test_a_root_created_by_another_user_is_refused(shared_dir: Path, unix_users: dict[str, UnixUser]) -> None:
    mallory = unix_users["mallory"]
    assert mallory.run(["mkdir", "-m", "0777", str(shared_dir / current_user())]).returncode == 0
    with pytest.raises(UsageError, match="belongs to hpcplat-mallory") as caught:
        ensure_job_root(config(shared_dir))
    assert "never uses a directory someone else created" in str(caught.value)


def test_a_link_planted_as_the_root_is_refused(shared_dir: Path, unix_users: dict[str, UnixUser]) -> None:
    mallory = unix_users["mallory"]
    target = shared_dir / "mallorys"
    assert mallory.run(["mkdir", str(target)]).returncode == 0
    assert mallory.run(["ln", "-s", str(target), str(shared_dir / current_user())]).returncode == 0
    with pytest.raises(UsageError, match="not a directory"):
        ensure_job_root(config(shared_dir))


def test_an_own_root_left_open_is_made_private(shared_dir: Path) -> None:
    (shared_dir / current_user()).mkdir(mode=0o755)
    (shared_dir / current_user()).chmod(0o777)
    root = ensure_job_root(config(shared_dir))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


class _Planted:
    """Unpickling this runs code: it creates the file named."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_checkpoint_planted_by_another_user_is_never_loaded(
    shared_dir: Path, unix_users: dict[str, UnixUser]
) -> None:
    directory = shared_dir / "team-checkpoints"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    cp = checkpoint.Checkpointer(directory, rank=0, world_size=1, handle_signals=False, keep=None)
    saved = cp.save({"weights": [1, 2]}, 10, format="pickle")
    # The co-tenant swaps in their own shard (a pickle that runs code when loaded).
    evidence = shared_dir / "pwned"
    saved.shard.unlink()
    saved.shard.write_bytes(pickle.dumps(_Planted(str(evidence))))
    mallory = unix_users["mallory"]
    os.chown(saved.shard, mallory.uid, mallory.gid)
    with pytest.raises(HpcplatError, match="refusing to load checkpoint"):
        cp.load_latest()
    assert not evidence.exists()
    # The user's own files still load.
    os.chown(saved.shard, os.geteuid(), os.getegid())
    saved.shard.write_bytes(pickle.dumps({"weights": [1, 2]}))
    restored = cp.load_latest()
    assert restored is not None and restored.state == {"weights": [1, 2]}


def test_a_world_writable_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    cp = checkpoint.Checkpointer(tmp_path / "ck", rank=0, world_size=1, handle_signals=False, keep=None)
    saved = cp.save({"a": 1}, 1, format="pickle")
    saved.shard.chmod(0o666)
    with pytest.raises(HpcplatError, match="mode 666"):
        cp.load_latest()


def test_who_a_user_is_never_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from hpcplat.catalog import service as catalog_service
    from hpcplat.submission import facts
    from hpcplat.submission import service as submission_service

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "hpcplat-mallory-forged")
    real = pwd.getpwuid(os.geteuid()).pw_name
    assert current_user() == real
    assert submission_service.current_user() == real
    assert facts.current_user() == real
    assert catalog_service._whoami() == real
