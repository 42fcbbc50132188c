"""Drift: how today's code, data, modules and packages differ from what a run recorded.

``hpcplat rerun`` refuses to submit when :func:`check_drift` finds a blocking difference (unless
``--allow-drift``). Checks: the commit is in the repository and the recorded diff applies to it
(checked against a temporary index, the user's checkout is not touched), the checkout itself is at
that commit with that diff, each dataset's content hash is unchanged, each Lmod module is
available, the Python version and package versions are equal.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcplat.errors import CommandError
from hpcplat.provenance.code import capture_code
from hpcplat.provenance.environment import installed_packages
from hpcplat.provenance.lmod import LmodUnavailable, module_availability
from hpcplat.provenance.manifest import Manifest, verify_manifest
from hpcplat.runner import Runner, run

GIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Difference:
    area: str
    """``code``, ``dataset``, ``module``, ``package`` or ``python``."""
    subject: str
    recorded: str
    current: str
    blocking: bool = True

    def __str__(self) -> str:
        mark = "" if self.blocking else " (warning)"
        return f"{self.area} {self.subject}: recorded {self.recorded}, now {self.current}{mark}"


@dataclass
class DriftReport:
    differences: list[Difference] = field(default_factory=list)

    @property
    def blocking(self) -> list[Difference]:
        return [d for d in self.differences if d.blocking]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def lines(self) -> list[str]:
        return [str(d) for d in self.differences]


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset version as the catalog recorded it (what the drift check needs)."""

    name: str
    version: int
    location: str
    content_hash: str
    manifest: Manifest


def check_code(code: Mapping[str, Any], *, repo: str | None = None, runner: Runner = run) -> list[Difference]:
    if code.get("vcs") != "git":
        why = code.get("reason") or "no git checkout"
        return [Difference("code", "repository", f"none ({why})", "cannot be checked", blocking=False)]
    commit = str(code.get("commit") or "")
    root = repo or str(code.get("root") or "")
    if not commit:
        return [
            Difference("code", "commit", "a repository without commits", "nothing to check", blocking=False)
        ]
    if not root or not Path(root).is_dir():
        return [Difference("code", "repository", root or "(unknown)", "missing on this machine")]
    short = commit[:12]
    found = runner(
        ["git", "-C", root, "cat-file", "-e", f"{commit}^{{commit}}"], timeout=GIT_TIMEOUT_S, check=False
    )
    if found.returncode != 0:
        return [Difference("code", "commit", short, f"not in {root} (rebased or never fetched?)")]
    diffs: list[Difference] = []
    diff = str(code.get("diff") or "")
    if code.get("diff_truncated"):
        diffs.append(Difference("code", "diff", "too large to record", "cannot be re-applied"))
    elif diff and not _diff_applies(root, commit, diff, runner):
        diffs.append(Difference("code", "diff", f"uncommitted changes on {short}", "no longer apply to it"))
    now = capture_code(root, runner=runner)
    if now.commit != commit:
        diffs.append(Difference("code", "checkout", f"at {short}", f"at {(now.commit or 'no commit')[:12]}"))
    elif now.diff != diff:
        diffs.append(
            Difference(
                "code", "checkout", "uncommitted diff as recorded" if diff else "clean", "has other changes"
            )
        )
    return diffs


def _diff_applies(root: str, commit: str, diff: str, runner: Runner) -> bool:
    """``git apply --check`` of ``diff`` against ``commit``'s tree in a throwaway index."""
    with tempfile.TemporaryDirectory(prefix="hpcplat-drift-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        try:
            runner(["git", "-C", root, "read-tree", commit], timeout=GIT_TIMEOUT_S, env=env)
        except CommandError:
            return False
        result = runner(
            ["git", "-C", root, "apply", "--cached", "--check", "--binary"],
            timeout=GIT_TIMEOUT_S,
            input=diff,
            env=env,
            check=False,
        )
        return result.returncode == 0


def check_datasets(datasets: Sequence[DatasetRecord]) -> list[Difference]:
    diffs: list[Difference] = []
    for ds in datasets:
        problems = verify_manifest(ds.manifest, ds.location)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            diffs.append(
                Difference("dataset", f"{ds.name}@{ds.version}", f"hash {ds.content_hash[:12]}", shown)
            )
    return diffs


def check_modules(
    modules: Sequence[str],
    *,
    modulepath: str | None = None,
    environ: Mapping[str, str] | None = None,
    runner: Runner = run,
) -> list[Difference]:
    if not modules:
        return []
    try:
        available = module_availability(modules, modulepath=modulepath, environ=environ, runner=runner)
    except LmodUnavailable as exc:
        return [Difference("module", ", ".join(modules), "loaded", exc.message)]
    return [Difference("module", m, "loaded", "not available") for m, ok in available.items() if not ok]


def check_packages(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[Difference]:
    diffs: list[Difference] = []
    for name in sorted(recorded):
        now = current.get(name)
        if now is None:
            diffs.append(Difference("package", name, recorded[name], "not installed"))
        elif now != recorded[name]:
            diffs.append(Difference("package", name, recorded[name], now))
    for name in sorted(current.keys() - recorded.keys()):
        diffs.append(Difference("package", name, "not installed", current[name], blocking=False))
    return diffs


def check_drift(
    provenance: Mapping[str, Any],
    *,
    datasets: Sequence[DatasetRecord] = (),
    repo: str | None = None,
    environ: Mapping[str, str] | None = None,
    modulepath: str | None = None,
    packages: Mapping[str, str] | None = None,
    python_version: str | None = None,
    runner: Runner = run,
) -> DriftReport:
    """Compare a run's recorded provenance (``{"code": ..., "env": ...}``) with this machine."""
    import platform

    report = DriftReport()
    code = provenance.get("code") or {}
    env = provenance.get("env") or {}
    report.differences += check_code(code, repo=repo, runner=runner)
    report.differences += check_datasets(datasets)
    report.differences += check_modules(
        list(env.get("modules") or []), modulepath=modulepath, environ=environ, runner=runner
    )
    recorded_py = str(env.get("python_version") or "")
    current_py = python_version or platform.python_version()
    if recorded_py and recorded_py != current_py:
        report.differences.append(Difference("python", "version", recorded_py, current_py))
    recorded_pkgs = env.get("packages") or {}
    if recorded_pkgs:
        current_pkgs = dict(packages) if packages is not None else installed_packages()
        report.differences += check_packages(recorded_pkgs, current_pkgs)
    return report
