"""The sbatch script of a job spec: golden files and the Slurm options that matter.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/test_render.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hpcplat import siteconfig
from hpcplat.siteconfig import SiteConfig, from_data
from hpcplat.spec import DatasetRef, Environment, JobSpec, Resources
from hpcplat.submission.render import ArrayPart, render, sbatch_arg

GOLDEN = Path(__file__).parents[1] / "golden" / "submission"
PYTHON = "/opt/hpcplat/bin/python"
RUN_ID = "0b1b3683-26b6-40e5-8f20-30775a843a16"


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden files do not depend on who runs the tests: the submitting user is alice."""
    monkeypatch.setattr(siteconfig, "current_user", lambda: "alice")


def site(**submission: object) -> SiteConfig:
    return from_data(
        {
            "cluster": {"name": "hpcsb"},
            "defaults": {"account": "vision", "tier": "normal", "partition": "gpu"},
            "catalog": {"url": "sqlite:////shared/catalog.db"},
            "tiers": {
                "urgent": {"partition": "gpu", "qos": "urgent"},
                "normal": {"partition": "gpu", "qos": "normal"},
                "preemptible": {"partition": "gpu", "qos": "preemptible", "preemptible": True},
            },
            "submission": {"job_root": "/shared/jobs", **submission},
        }
    )


CASES: dict[str, tuple[JobSpec, ArrayPart | None]] = {
    "single": (
        JobSpec(command=("python", "train.py", "--lr", "0.1"), resources=Resources(gpus_per_node=1)),
        None,
    ),
    "ddp-preemptible": (
        JobSpec(
            command=("python", "ddp.py", "--epochs", "3"),
            name="ddp digits",
            resources=Resources(
                nodes=2, tasks_per_node=2, gpus_per_node=2, cpus_per_task=2, memory_mb=8192, time_limit_min=90
            ),
            tier="preemptible",
            environment=Environment(
                modules=("cuda/12.1", "gcc/12"), venv="/opt/venvs/torch", vars={"OMP_NUM_THREADS": "2"}
            ),
            datasets=(DatasetRef("digits", "2"),),
            params={"lr": 0.05, "seed": 1},
            workdir="/home/u/project",
            max_requeues=4,
            depends_on=("41",),
        ),
        None,
    ),
    "container-conda": (
        JobSpec(
            command=("python", "eval.py"),
            tier="urgent",
            environment=Environment(
                conda="torch-2.3", container="/images/torch.sif", container_binds=("/data",)
            ),
            checkpoint_dir="/scratch/ckpt",
            resources=Resources(gpus_per_node=4),
        ),
        None,
    ),
    "array": (
        JobSpec(
            command=("python", "train.py", "--lr", "{lr}"),
            name="lr-sweep",
            resources=Resources(gpus_per_node=1),
        ),
        ArrayPart(
            sweep_dir="/shared/jobs/sweeps/lr-sweep-1",
            offset=1001,
            size=499,
            max_concurrent=8,
            per_point_argv=True,
            after_any="77",
        ),
    ),
}


def rendered(case: str) -> str:
    spec, array = CASES[case]
    datasets = {"digits@2": "/data/digits"} if spec.datasets else None
    run_id = "sweep:lr-sweep-1" if array else RUN_ID
    return render(spec, site(), run_id=run_id, python=PYTHON, datasets=datasets, array=array)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = rendered(case)
    path = GOLDEN / f"{case}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; if the change is intended, run with UPDATE_GOLDEN=1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bash_accepts_the_script(case: str) -> None:
    result = subprocess.run(
        check=False, args=["bash", "-n"], input=rendered(case), capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr


def directives(text: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in text.splitlines() if line.startswith("#SBATCH ")]


def test_contract_env_vars_and_comment() -> None:
    text = rendered("single")
    for var in (
        "HPCPLAT_RUN_ID",
        "HPCPLAT_CATALOG_URL",
        "HPCPLAT_JOB_DIR",
        "HPCPLAT_CHECKPOINT_DIR",
        "HPCPLAT_MAX_REQUEUES",
        "HPCPLAT_TIER",
    ):
        assert f"export {var}=" in text
    assert f"--comment=hpcplat:{RUN_ID}" in directives(text)
    assert "--qos=normal" in directives(text) and "--account=vision" in directives(text)
    assert f"{PYTHON} -m hpcplat.launch --" in text
    assert "srun --kill-on-bad-exit=1" in text


def test_preemptible_tier_requeues_and_warns() -> None:
    opts = directives(rendered("ddp-preemptible"))
    assert {"--requeue", "--signal=USR1@90", "--open-mode=append", "--qos=preemptible"} <= set(opts)
    assert "--dependency=afterok:41" in opts
    normal = directives(rendered("single"))
    assert not any(o.startswith(("--requeue", "--signal")) for o in normal)


def test_warning_time_is_configurable() -> None:
    spec = CASES["ddp-preemptible"][0]
    assert "--signal=USR1@300" in directives(render(spec, site(warn_seconds=300), run_id="r", python=PYTHON))
    assert "--signal=USR1@45" in directives(
        render(spec.replace(signal_warn_s=45), site(), run_id="r", python=PYTHON)
    )


def test_environment_pieces() -> None:
    text = rendered("ddp-preemptible")
    assert "module load cuda/12.1" in text and "source /opt/venvs/torch/bin/activate" in text
    assert "export HPCPLAT_DATASET_DIGITS=/data/digits" in text
    assert "export HPCPLAT_MAX_REQUEUES=4" in text
    container = rendered("container-conda")
    assert "conda activate torch-2.3" in container
    assert (
        '"$HPCPLAT_CONTAINER_RUNTIME" exec --nv' in container
        and "--bind /data /images/torch.sif" in container
    )
    assert "export HPCPLAT_CHECKPOINT_DIR=/scratch/ckpt" in container


def test_array_part() -> None:
    opts = directives(rendered("array"))
    assert "--array=0-498%8" in opts
    assert "--dependency=afterany:77" in opts
    assert "--output=/shared/jobs/alice/%A_%a.out" in opts
    assert "$(( SLURM_ARRAY_TASK_ID + 1001 ))" in rendered("array")


def test_sbatch_arg_refuses_newlines() -> None:
    assert sbatch_arg("gpu") == "gpu"
    assert sbatch_arg("my job #1") == '"my job #1"'
    assert sbatch_arg('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(ValueError, match="control characters"):
        sbatch_arg("x\n#SBATCH --uid=0")
