"""Validation collects every problem: spec, tier, cluster limits, modules and venv, site config.

The cluster facts here are plain records in the shape :mod:`hpcplat.submission.facts` stores
(what the sandbox's ``sacctmgr`` reports, with limits added); the sandbox tests
(tests/integration/test_submit_limits.py) check the same against the real Slurm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hpcplat.errors import UsageError
from hpcplat.provenance.lmod import find_lmod_init
from hpcplat.siteconfig import SiteConfig, Tier, from_data
from hpcplat.spec import JobSpec, Resources, SpecError
from hpcplat.spec.model import Environment
from hpcplat.submission.facts import AssociationFacts, ClusterFacts, PartitionFacts, QosFacts
from hpcplat.submission.placement import place
from hpcplat.submission.validate import (
    cluster_problems,
    environment_findings,
    limit_findings,
    parse_tres,
    refusal,
)

SITE = SiteConfig(
    default_account="vision",
    default_tier="normal",
    tiers={"normal": Tier("normal", "gpu", "normal"), "urgent": Tier("urgent", "gpu", "urgent")},
)
GPU = PartitionFacts(
    name="gpu",
    default=True,
    state="UP",
    max_time_minutes=1440,
    allowed_qos=(),
    node_count=4,
    max_gpus_per_node=4,
    max_cpus_per_node=16,
    max_memory_mb=64000,
)


def facts(
    *,
    qos: tuple[QosFacts, ...] = (QosFacts("normal", None), QosFacts("urgent", None)),
    user_limits: dict[str, object] | None = None,
    enforced: bool = True,
) -> ClusterFacts:
    mine = ("normal", "urgent")
    return ClusterFacts(
        user="ana",
        partitions=(GPU,),
        qos=qos,
        associations=(
            AssociationFacts("nlp", mine, user="ana", **(user_limits or {})),  # type: ignore[arg-type]
            AssociationFacts("vision", mine, user="ana"),
        ),
        accounts=(
            AssociationFacts("nlp", ("normal",), parent="root", grp_tres="gres/gpu=8"),
            AssociationFacts("vision", ("normal",), parent="root"),
            AssociationFacts("root", ("normal",), grp_tres="cpu=40"),
        ),
        limits_enforced=enforced,
    )


def job(nodes: int = 1, gpus: int = 0, **changes: object) -> JobSpec:
    resources = Resources(nodes=nodes, gpus_per_node=gpus, **changes)  # type: ignore[arg-type]
    return JobSpec(command=("true",), name="t", account="nlp", resources=resources)


def limits(spec: JobSpec, cluster: ClusterFacts) -> list[str]:
    return [f.message for f in limit_findings(spec, place(spec, SITE), cluster)]


# -- quotas and limits ---------------------------------------------------------------------------


def test_parse_tres_reads_sacctmgr_limits() -> None:
    assert parse_tres("cpu=64,gres/gpu=8,mem=100G,node=2") == {
        "cpu": 64,
        "gres/gpu": 8,
        "mem": 102400,
        "node": 2,
    }
    assert parse_tres("") == {}
    assert parse_tres("billing=x,gres/gpu:a100=2") == {"gres/gpu:a100": 2}


def test_a_job_over_the_team_gpu_quota_names_the_limit_and_who_sets_it() -> None:
    (problem,) = limits(job(nodes=3, gpus=4), facts())
    assert problem == (
        "account 'nlp' may use at most 8 GPUs at once (GrpTRES gres/gpu=8 on account nlp's association, "
        "set by the Slurm admin with sacctmgr); this job asks for 12 (3 nodes x 4)"
    )
    assert limits(job(nodes=2, gpus=4), facts()) == []


def test_a_quota_of_a_parent_account_holds_too() -> None:
    (problem,) = limits(job(nodes=3, tasks_per_node=16), facts())
    assert problem.startswith("account 'root' (which account 'nlp' is part of) may use at most 40 CPUs")
    assert "this job asks for 48 (3 nodes x 16)" in problem


def test_per_job_and_per_node_maximums_the_first_holder_decides() -> None:
    qos = (QosFacts("normal", None, max_tres="gres/gpu=16", max_tres_per_node="gres/gpu=2"),)
    # The QOS allows 16 GPUs per job: the user association's 4 does not apply (Slurm's order).
    found = limits(job(nodes=2, gpus=3), facts(qos=qos, user_limits={"max_tres": "gres/gpu=4"}))
    assert found == [
        "tier 'normal' (QOS 'normal') allows one job at most 2 GPUs per node (MaxTRESPerNode gres/gpu=2 "
        "on QOS normal, set by the Slurm admin with sacctmgr); this job asks for 3"
    ]
    plain = facts(user_limits={"max_tres": "gres/gpu=4"})
    (problem,) = limits(job(nodes=2, gpus=3), plain)
    assert "user 'ana' in account 'nlp' allows one job at most 4 GPUs (MaxTRES gres/gpu=4" in problem


def test_per_user_quota_of_a_qos_and_an_association_max_wall() -> None:
    qos = (QosFacts("normal", None, max_tres_per_user="gres/gpu=2"),)
    found = limits(job(gpus=3, time_limit_min=120), facts(qos=qos, user_limits={"max_wall_minutes": 60}))
    assert len(found) == 2
    assert found[0].startswith("tier 'normal' (QOS 'normal') lets one user hold at most 2 GPUs at once")
    assert found[1].startswith(
        "time limit 02:00:00 is over the maximum of 01:00:00 for a job of user 'ana' in account 'nlp'"
    )


def test_limits_are_not_judged_when_slurm_does_not_enforce_them() -> None:
    assert limits(job(nodes=3, gpus=4), facts(enforced=False)) == []


# -- collecting ------------------------------------------------------------------------------------


def test_an_unknown_tier_is_collected_and_the_rest_still_checked() -> None:
    spec = JobSpec(
        command=("true",), name="t", tier="gold", account="nlp", resources=Resources(nodes=3, gpus_per_node=4)
    )
    placing: list[str] = []
    placement = place(spec, SITE, placing)
    assert placing and placing[0].startswith("unknown tier 'gold'; allowed tiers: normal, urgent")
    assert placement.tier is None and placement.account == "nlp"
    assert any("GrpTRES gres/gpu=8" in p for p in cluster_problems(spec, placement, facts()))
    with pytest.raises(UsageError, match="unknown tier 'gold'"):
        place(spec, SITE)


def test_cluster_problems_are_all_listed() -> None:
    spec = JobSpec(
        command=("true",),
        account="nlp",
        resources=Resources(nodes=5, gpus_per_node=8, memory_mb=128000, time_limit_min=2000),
    )
    problems = cluster_problems(spec, place(spec, SITE), facts())
    assert len(problems) == 5, problems
    error = refusal(spec, problems)
    assert str(error).startswith("cannot submit 'true', 5 problems:\n  - 8 GPUs per node")
    assert error.exit_code == 2


def test_an_invalid_spec_keeps_the_rest_for_the_other_checks() -> None:
    data = {
        "command": "python train.py",
        "tier": "gold",
        "account": "nlp",
        "resources": {"nodes": 0, "time": "soon", "memory": "lots", "gpus_per_node": 4, "colour": 1},
    }
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict(data)
    fields = sorted(p.field for p in caught.value.problems)
    assert fields == ["resources.colour", "resources.memory", "resources.nodes", "resources.time"]
    partial = caught.value.partial
    assert partial is not None
    assert (partial.tier, partial.account, partial.command) == ("gold", "nlp", ("python", "train.py"))
    assert partial.resources == Resources(gpus_per_node=4)


def test_a_spec_without_a_command_still_has_a_partial_spec() -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict({"tier": "gold", "environment": {"venv": "a", "conda": "b"}})
    partial = caught.value.partial
    assert partial is not None and partial.tier == "gold" and partial.environment.conda is None


def test_every_site_configuration_problem_is_reported_at_once() -> None:
    data = {
        "defaults": {"account": 3, "tier": ["x"]},
        "tiers": {"x": {"qos": 1, "colour": "red"}, "y": "z"},
        "submission": {"cache_seconds": "soon"},
    }
    with pytest.raises(UsageError) as caught:
        from_data(data, sources=("site.toml",))
    message = caught.value.message
    assert message.startswith("site configuration, 6 problems:")
    for part in (
        "defaults.account must be a str, got 3",
        "defaults.tier must be a str",
        "unknown key(s) in [tiers.x]: colour",
        "tiers.x.qos must be a str, got 1",
        "[tiers.y] must be a table",
        "submission.cache_seconds must be a int",
    ):
        assert part in message
    assert caught.value.hint == "fix it in site.toml"


# -- modules and the virtual environment -------------------------------------------------------


def with_env(**env: object) -> JobSpec:
    return JobSpec(command=("true",), environment=Environment(**env), workdir="/")  # type: ignore[arg-type]


def test_a_missing_venv_is_refused_and_an_unmounted_one_warned(tmp_path: Path) -> None:
    real = Path(sys.prefix)
    assert environment_findings(with_env(venv=str(real)), SITE) == ([], [])
    problems, warnings = environment_findings(with_env(venv=str(tmp_path / "no" / "venv")), SITE)
    assert [p.message for p in problems] == [
        f"--venv {tmp_path}/no/venv: no virtual environment at {tmp_path}/no/venv (nothing there; "
        f"{tmp_path} exists); create it with `python3 -m venv {tmp_path}/no/venv` or fix the path"
    ]
    assert warnings == []
    (problem,), _ = environment_findings(with_env(venv=str(tmp_path)), SITE)
    assert "is not a virtual environment (it has no bin/activate)" in problem.message
    problems, warnings = environment_findings(with_env(venv="/hpcplat-not-mounted-here/venvs/torch"), SITE)
    assert problems == []
    assert warnings == [
        "cannot check the virtual environment /hpcplat-not-mounted-here/venvs/torch: "
        "/hpcplat-not-mounted-here does not exist on this machine; it must exist on the compute nodes"
    ]


def test_a_relative_venv_is_looked_for_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "activate").write_text("")
    spec = JobSpec(command=("true",), environment=Environment(venv="env"), workdir=str(tmp_path))
    assert environment_findings(spec, SITE) == ([], [])


@pytest.fixture
def module_tree(tmp_path: Path) -> Path:
    if find_lmod_init() is None:
        pytest.skip("Lmod is not installed (Debian package lmod)")
    tree = tmp_path / "modulefiles"
    (tree / "gcc").mkdir(parents=True)
    (tree / "gcc" / "12.2.lua").write_text('whatis("gcc")\n')
    return tree


def test_modules_are_checked_with_the_real_lmod(module_tree: Path) -> None:
    spec = with_env(modules=("gcc/12.2", "cuda/99.9"))
    problems, warnings = environment_findings(spec, SITE, environ={"MODULEPATH": str(module_tree)})
    assert warnings == []
    (problem,) = problems
    assert problem.message.startswith("module 'cuda/99.9' does not exist (Lmod `module is-avail`")
    assert "`module spider cuda` lists the versions there are" in problem.message
    assert problem.fields == frozenset({"environment.modules[1]"})


def test_modules_cannot_be_checked_without_a_modulepath() -> None:
    problems, warnings = environment_findings(with_env(modules=("gcc/12.2",)), SITE, environ={})
    assert problems == []
    (warning,) = warnings
    assert warning.startswith("cannot check the modules gcc/12.2:")
