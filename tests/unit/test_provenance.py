"""Provenance capture and drift checks with real git repositories and a real Lmod module tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hpcplat.provenance import capture, capture_code
from hpcplat.provenance.drift import DatasetRecord, check_code, check_drift, check_modules, check_packages
from hpcplat.provenance.environment import REDACTED, capture_environment, installed_packages, selected_env
from hpcplat.provenance.lmod import find_lmod_init, module_availability
from hpcplat.provenance.manifest import Manifest, build_manifest, verify_manifest
from hpcplat.runner import run

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def git(repo: Path, *args: str) -> str:
    return run(["git", "-C", str(repo), *args], timeout=30, env=GIT_ENV).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("lr = 0.1\nepochs = 3\n")
    (root / "data.bin").write_bytes(b"\x00\x01\x02")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    git(root, "remote", "add", "origin", "https://example.org/team/proj.git")
    return root


# -- code -------------------------------------------------------------------------------------------


def test_clean_checkout(repo: Path) -> None:
    state = capture_code(repo / ".")
    assert state.vcs == "git" and state.root == str(repo)
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert (state.branch, state.dirty, state.diff, state.repo) == (
        "main",
        False,
        "",
        "https://example.org/team/proj.git",
    )


def test_dirty_checkout_keeps_the_diff(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.2\nepochs = 3\n")
    (repo / "data.bin").write_bytes(b"\x00\xff")
    git(repo, "mv", "data.bin", "moved.bin")
    (repo / "notes.txt").write_text("untracked\n")
    state = capture_code(repo)
    assert state.dirty
    assert "-lr = 0.1\n+lr = 0.2" in state.diff
    assert "GIT binary patch" in state.diff or "Binary files" in state.diff
    assert state.untracked == ["notes.txt"]


def test_capture_from_a_subdirectory_is_the_whole_checkout(repo: Path) -> None:
    """The git calls run concurrently from the job's directory: the result is what the sequential
    calls at the top level give (commit, branch, dirty, full diff, untracked list from the root)."""
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    (sub / "model.py").write_text("x = 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second")
    (repo / "train.py").write_text("lr = 0.3\nepochs = 3\n")
    (sub / "model.py").write_text("x = 2\n")
    (repo / "notes.txt").write_text("untracked\n")
    (sub / "scratch.py").write_text("y = 0\n")
    state = capture_code(sub)
    assert state == capture_code(repo)
    assert (state.vcs, state.root, state.branch, state.dirty) == ("git", str(repo), "main", True)
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert state.repo == "https://example.org/team/proj.git"
    assert state.diff == git(repo, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
    assert "+lr = 0.3" in state.diff and "+x = 2" in state.diff
    assert sorted(state.untracked) == ["notes.txt", "src/deep/scratch.py"]
    assert not state.diff_truncated and state.reason == ""


def test_detached_head_and_no_commits(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    assert capture_code(repo).branch is None
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    state = capture_code(empty)
    assert state.vcs == "git" and state.commit is None


def test_not_a_checkout(tmp_path: Path) -> None:
    state = capture_code(tmp_path)
    assert state.vcs == "none" and "not in a git checkout" in state.reason


# -- environment ------------------------------------------------------------------------------------


def test_secrets_are_redacted() -> None:
    env = {
        "HPCPLAT_CATALOG_URL": "postgresql://cat:hunter2@db.example.org/catalog",
        "WANDB_API_KEY": "abc123",
        "HF_TOKEN": "hf_xyz",
        "NCCL_DEBUG": "INFO",
        "SLURM_JOB_ID": "42",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "zzz",
    }
    chosen = selected_env(env)
    assert chosen["HPCPLAT_CATALOG_URL"] == f"postgresql://cat:{REDACTED}@db.example.org/catalog"
    assert chosen["HF_TOKEN"] == REDACTED
    assert chosen["NCCL_DEBUG"] == "INFO" and chosen["SLURM_JOB_ID"] == "42"
    assert "HOME" not in chosen and "WANDB_API_KEY" not in chosen  # not a selected prefix
    assert "zzz" not in str(chosen) and "hunter2" not in str(chosen) and "abc123" not in str(chosen)


def test_environment_snapshot_fields() -> None:
    env = capture_environment(
        {"LOADEDMODULES": "gcc/12:cuda/12.2", "CUDA_VERSION": "12.2.1", "APPTAINER_CONTAINER": "/img/pt.sif"}
    )
    assert env["modules"] == ["gcc/12", "cuda/12.2"]
    assert env["cuda_version"] == "12.2.1" and env["container_image"] == "/img/pt.sif"
    assert env["packages"]["sqlalchemy"] and env["python_version"].count(".") == 2


def test_capture_is_json_and_lazy(repo: Path) -> None:
    import json
    import sys

    data = capture(repo)
    json.dumps(data)
    assert data["code"]["commit"] and data["env"]["packages"]
    assert "torch" not in sys.modules or data["env"]["torch_version"]


# -- Lmod -------------------------------------------------------------------------------------------


@pytest.fixture
def module_tree(tmp_path: Path) -> Path:
    if find_lmod_init() is None:
        pytest.skip("Lmod is not installed (Debian package lmod)")
    tree = tmp_path / "modulefiles"
    for name, version in (("gcc", "12.2"), ("cuda", "12.2"), ("nccl", "2.18")):
        (tree / name).mkdir(parents=True)
        (tree / name / f"{version}.lua").write_text(
            f'setenv("{name.upper()}_HOME", "/opt/{name}/{version}")\n'
        )
    return tree


def loaded_with_lmod(tree: Path, *modules: str) -> dict[str, str]:
    """The environment after ``module load`` in a real Lmod shell."""
    init = find_lmod_init()
    assert init is not None
    script = f'source "{init}" >/dev/null 2>&1; module use "{tree}"; module load "$@" || exit 9; env -0'
    out = run(["bash", "--noprofile", "--norc", "-c", script, "bash", *modules], timeout=60).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_modules_captured_from_a_real_lmod(module_tree: Path) -> None:
    environ = loaded_with_lmod(module_tree, "gcc/12.2", "cuda/12.2")
    env = capture_environment(environ, packages={})
    assert env["modules"] == ["gcc/12.2", "cuda/12.2"]
    assert env["modulepath"] == str(module_tree)
    assert env["env_vars"]["LOADEDMODULES"] == "gcc/12.2:cuda/12.2"


def test_module_availability_and_drift(module_tree: Path) -> None:
    available = module_availability(["gcc/12.2", "nccl/2.18", "gcc/13.1"], modulepath=str(module_tree))
    assert available == {"gcc/12.2": True, "nccl/2.18": True, "gcc/13.1": False}
    (module_tree / "nccl" / "2.18.lua").unlink()
    diffs = check_modules(["gcc/12.2", "nccl/2.18"], modulepath=str(module_tree))
    assert [str(d) for d in diffs] == ["module nccl/2.18: recorded loaded, now not available"]


# -- dataset manifests ------------------------------------------------------------------------------


def test_manifest_hash_depends_on_content_only(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "sub" / "x.txt").write_text("x")
    (a / "y.txt").write_text("yy")
    manifest = build_manifest(a)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert build_manifest(b).content_hash == manifest.content_hash
    assert [f.path for f in manifest.files] == ["sub/x.txt", "y.txt"]
    assert Manifest.from_json(manifest.to_json()) == manifest
    os.utime(a / "y.txt", (1, 1))  # touched, same bytes: not a change
    assert verify_manifest(manifest, a) == []
    (a / "y.txt").write_text("zz")
    (a / "sub" / "x.txt").unlink()
    (a / "new.txt").write_text("n")
    assert verify_manifest(manifest, a) == [
        "removed: sub/x.txt",
        "added: new.txt",
        "changed: y.txt (content differs)",
    ]


def test_single_file_dataset(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(b"abc")
    manifest = build_manifest(path)
    assert [(f.path, f.size) for f in manifest.files] == [("data.npz", 3)]


# -- drift ------------------------------------------------------------------------------------------


def test_unchanged_checkout_has_no_code_drift(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.3\nepochs = 3\n")
    recorded = capture_code(repo).to_dict()
    assert check_code(recorded) == []


def test_diff_that_no_longer_applies_and_moved_checkout(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.3\nepochs = 3\n")
    recorded = capture_code(repo).to_dict()
    git(repo, "commit", "-qam", "second")  # the checkout moved on
    diffs = [str(d) for d in check_code(recorded)]
    assert any(d.startswith("code checkout: recorded at ") for d in diffs)
    broken = {**recorded, "diff": recorded["diff"].replace("-lr = 0.1", "-lr = 0.7")}
    assert any("no longer apply" in str(d) for d in check_code(broken))


def test_commit_gone(repo: Path) -> None:
    recorded = capture_code(repo).to_dict()
    recorded["commit"] = "0123456789abcdef0123456789abcdef01234567"
    [difference] = check_code(recorded)
    assert difference.blocking and "not in" in difference.current


def test_package_and_dataset_drift(tmp_path: Path, repo: Path) -> None:
    data = tmp_path / "ds"
    data.mkdir()
    (data / "f").write_text("1")
    manifest = build_manifest(data)
    record = DatasetRecord("ds", 1, str(data), manifest.content_hash, manifest)
    provenance = {
        "code": capture_code(repo).to_dict(),
        "env": {"python_version": "3.0.1", "packages": {"torch": "2.3.0", "numpy": "1.26.4"}, "modules": []},
    }
    (data / "f").write_text("2")
    report = check_drift(
        provenance, datasets=[record], packages={"torch": "2.4.0", "numpy": "1.26.4", "extra": "1"}
    )
    lines = report.lines()
    assert "package torch: recorded 2.3.0, now 2.4.0" in lines
    assert "package extra: recorded not installed, now 1 (warning)" in lines
    assert any(line.startswith("python version: recorded 3.0.1") for line in lines)
    assert any(line.startswith("dataset ds@1:") and "changed: f" in line for line in lines)
    assert not report.ok


def test_current_environment_does_not_drift_from_itself(repo: Path) -> None:
    provenance = capture(repo)
    provenance["env"]["modules"] = []
    assert check_drift(provenance).ok
    assert check_packages(installed_packages(), installed_packages()) == []
