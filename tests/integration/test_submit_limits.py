"""Requests that could never start, and requests with many mistakes, against the real sandbox.

The sandbox's team ``nlp`` has a GPU quota of 8 (``GrpTRES gres/gpu=8`` on its account
association, ``AccountingStorageEnforce=...,limits``): a job asking for 12 would wait forever
(``AssocGrpGRES``). Modules are checked with the real Lmod against a module tree made here.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hpcplat.catalog import Catalog
from hpcplat.errors import UsageError
from hpcplat.provenance.lmod import find_lmod_init
from hpcplat.sandbox import Sandbox
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.spec import JobSpec, Resources
from hpcplat.spec.model import Environment
from hpcplat.submission import facts
from hpcplat.submission.service import dry_run, submit
from tests.fixtures.submission import invoke, write_site_file

pytestmark = pytest.mark.sandbox

QUOTA_MESSAGE = (
    "account 'nlp' may use at most 8 GPUs at once (GrpTRES gres/gpu=8 on account nlp's association, "
    "set by the Slurm admin with sacctmgr); this job asks for 12 (3 nodes x 4)"
)


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    facts.forget()
    return dict(sandbox.env())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def refused(spec: JobSpec, client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path) -> str:
    with pytest.raises(UsageError) as caught:
        submit(spec, client=client, config=config, catalog=catalog, cwd=str(tmp_path))
    assert caught.value.exit_code == 2
    assert catalog.list_runs(limit=None) == []
    assert not [j for j in client.jobs(None) if j.name == spec.name]
    return caught.value.message


def test_a_job_over_the_team_gpu_quota_is_refused_with_the_limit(
    client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    spec = JobSpec(
        command=("sleep", "1"),
        name=unique("quota"),
        account="nlp",
        resources=Resources(nodes=3, gpus_per_node=4, time_limit_min=5),
    )
    message = refused(spec, client, config, catalog, tmp_path)
    assert message == f"cannot submit {spec.name!r}: {QUOTA_MESSAGE}"
    # The quota itself is allowed, and other teams have none.
    for account, nodes in (("nlp", 2), ("vision", 3)):
        allowed = spec.replace(account=account, resources=Resources(nodes=nodes, gpus_per_node=4))
        assert "#SBATCH" in dry_run(allowed, client=client, config=config, cwd=str(tmp_path))


def test_a_missing_module_and_venv_are_refused_together(
    client: CliBackend,
    config: SiteConfig,
    catalog: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if find_lmod_init() is None:
        pytest.skip("Lmod is not installed (Debian package lmod)")
    tree = tmp_path / "modulefiles"
    (tree / "gcc").mkdir(parents=True)
    (tree / "gcc" / "12.2.lua").write_text('whatis("gcc")\n')
    monkeypatch.setenv("MODULEPATH", str(tree))
    spec = JobSpec(
        command=("true",),
        name=unique("env"),
        resources=Resources(time_limit_min=5),
        environment=Environment(modules=("gcc/12.2", "cuda/99.9"), venv=str(tmp_path / "venvs" / "torch")),
    )
    message = refused(spec, client, config, catalog, tmp_path)
    assert message.startswith(f"cannot submit {spec.name!r}, 2 problems:")
    assert "module 'cuda/99.9' does not exist" in message and "gcc/12.2" not in message
    assert f"no virtual environment at {tmp_path}/venvs/torch" in message


@pytest.fixture
def cli_env(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    env = dict(sandbox.env())
    env["HPCPLAT_CONFIG"] = str(write_site_file(env, tmp_path))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return env


def no_runs(tmp_path: Path) -> bool:
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        return list(catalog.list_runs(limit=None)) == []


def test_every_mistake_on_the_command_line_is_reported_at_once(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    name = unique("many")
    args = ["--tier", "gold", "--time", "bad", "--nodes", "0", "--mem", "nonsense", "-A", "unknown"]
    result = invoke(["submit", "--name", name, *args, "--", "sleep", "1"], env=cli_env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0] == f"error: cannot submit {name!r}, 5 problems:"
    text = result.output
    for part in (
        "--time: not a time limit: 'bad'",
        "--nodes: must be at least 1, got 0",
        "--mem: not a memory size: 'nonsense'",
        "unknown tier 'gold'; allowed tiers: normal, preemptible, urgent",
        "cannot charge account 'unknown'",
    ):
        assert part in text
    assert no_runs(tmp_path)
    assert "nothing was submitted" in text


def test_every_mistake_in_a_spec_file_is_reported_with_the_cluster_ones(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    spec_file = tmp_path / "train.yaml"
    spec_file.write_text(
        "command: sleep 1\ntier: gold\naccount: nlp\nresources:\n  nodes: 3\n  gpus_per_node: 4\n  mem: 4G\n"
    )
    result = invoke(["submit", "-f", str(spec_file)], env=cli_env)
    assert result.exit_code == 2, result.output
    text = result.output
    assert text.startswith("error: cannot submit 'sleep', 3 problems:")
    assert f"{spec_file}:7: resources.mem: unknown field; did you mean 'memory'?" in text
    assert "unknown tier 'gold'" in text
    assert QUOTA_MESSAGE in text
    assert no_runs(tmp_path)


def test_no_validate_stays_offline_for_an_invalid_request(cli_env: dict[str, str]) -> None:
    result = invoke(
        ["submit", "--dry-run", "--no-validate", "--tier", "gold", "-N", "0", "--", "true"], env=cli_env
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid job request: --nodes: must be at least 1, got 0")
