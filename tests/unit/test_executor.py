"""hpcplat.Executor without a cluster: parameters, the job spec it builds, pickling errors."""

from __future__ import annotations

import operator
import sys
import threading
from pathlib import Path

import pytest

import hpcplat
from hpcplat.errors import UsageError
from hpcplat.executor import Executor, Parameters, pickle_submission
from hpcplat.siteconfig import from_data
from hpcplat.slurm.state import JobState

CONFIG = from_data(
    {
        "defaults": {"account": "vision", "tier": "normal", "partition": "gpu"},
        "tiers": {
            "urgent": {"partition": "gpu", "qos": "urgent", "preemptible": False},
            "normal": {"partition": "gpu", "qos": "normal", "preemptible": False},
            "preemptible": {"partition": "gpu", "qos": "preemptible", "preemptible": True},
        },
    }
)


def executor(tmp_path: Path, **kwargs: object) -> Executor:
    return Executor(tmp_path / "logs", cluster="slurm", config=CONFIG, **kwargs)  # type: ignore[arg-type]


def test_the_one_line_switch_names_exist() -> None:
    assert hpcplat.AutoExecutor is hpcplat.Executor


def test_submitit_names_map_onto_the_job_spec(tmp_path: Path) -> None:
    ex = executor(tmp_path)
    ex.update_parameters(
        name="train",
        timeout_min=90,
        mem_gb=1.5,
        nodes=2,
        tasks_per_node=4,
        cpus_per_task=3,
        gpus_per_node=4,
        slurm_partition="debug",
        tier="preemptible",
        account="nlp",
        slurm_array_parallelism=8,
        max_requeues=5,
    )
    spec = ex.job_spec(operator.add)
    r = spec.resources
    assert (r.nodes, r.tasks_per_node, r.cpus_per_task, r.gpus_per_node) == (2, 4, 3, 4)
    assert (r.memory_mb, r.time_limit_min) == (1536, 90)
    assert (spec.name, spec.tier, spec.account, spec.partition, spec.max_requeues) == (
        "train",
        "preemptible",
        "nlp",
        "debug",
        5,
    )
    assert spec.command == (sys.executable, "-u", "-m", "submitit.core._submit", str(tmp_path / "logs"))
    assert spec.environment.vars["SUBMITIT_EXECUTOR"] == "slurm"
    assert spec.environment.vars["SUBMITIT_PREEMPT_SIGNAL"] == "USR1"
    assert spec.params["function"] == "_operator.add"
    assert "executor" in spec.tags


def test_defaults_follow_submitit(tmp_path: Path) -> None:
    spec = executor(tmp_path).job_spec(operator.add)
    assert spec.resources.time_limit_min == 5 and spec.resources.nodes == 1
    assert spec.name == "add" and spec.tier is None


def test_slurm_spelled_options_and_additional_parameters(tmp_path: Path) -> None:
    ex = executor(tmp_path)
    ex.update_parameters(
        slurm_mem="2G",
        slurm_gres="gpu:2",
        slurm_time="1:30:00",
        slurm_additional_parameters={"dependency": "afterok:11:12", "account": "vision", "requeue": True},
    )
    spec = ex.job_spec(operator.add)
    assert (spec.resources.memory_mb, spec.resources.gpus_per_node, spec.resources.time_limit_min) == (
        2048,
        2,
        90,
    )
    assert spec.depends_on == ("11", "12") and spec.account == "vision"


def test_slurm_qos_selects_the_tier_that_uses_it(tmp_path: Path) -> None:
    ex = executor(tmp_path, slurm_qos="urgent")
    assert ex.job_spec(operator.add).tier == "urgent"
    with pytest.raises(UsageError, match="no tier uses QOS 'gold'"):
        executor(tmp_path, slurm_qos="gold").job_spec(operator.add)
    with pytest.raises(UsageError, match="contradicts tier='normal'"):
        executor(tmp_path, slurm_qos="urgent", tier="normal").job_spec(operator.add)


def test_unknown_and_unsupported_parameters_list_what_is_valid(tmp_path: Path) -> None:
    ex = executor(tmp_path)
    with pytest.raises(UsageError) as caught:
        ex.update_parameters(gpus=2, slurm_exclude="n1", timeout_min="soon")
    text = str(caught.value)
    assert "gpus: unknown parameter" in text
    assert "slurm_exclude: not supported" in text
    assert "timeout_min: expected int" in text
    assert "gpus_per_node" in (caught.value.hint or "")
    with pytest.raises(UsageError, match="constraint"):
        ex.update_parameters(slurm_additional_parameters={"constraint": "a100"})
    with pytest.raises(UsageError, match="only afterok"):
        ex.update_parameters(slurm_dependency="afterany:3")


def test_other_clusters_settings_are_ignored_on_slurm() -> None:
    params = Parameters()
    params.update({"local_num_threads": 4, "debug_foo": 1, "timeout_min": 3})
    assert params.values == {"timeout_min": 3}


def test_an_unpicklable_argument_is_named_before_anything_is_submitted(tmp_path: Path) -> None:
    ex = executor(tmp_path)  # no client: any attempt to reach Slurm would fail differently
    lock = threading.Lock()
    with pytest.raises(UsageError) as caught:
        ex.submit(operator.add, 1, lock)
    assert "positional argument 1" in str(caught.value) and "_thread.lock" in str(caught.value)
    assert "nothing was submitted" in (caught.value.hint or "")
    assert not (tmp_path / "logs").exists()


def test_an_unpicklable_callable_is_named(tmp_path: Path) -> None:
    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self) -> int:
            return 1

    with pytest.raises(UsageError, match=r"the callable .*Holder"):
        executor(tmp_path).map_array(Holder(), [1, 2])
    ex = executor(tmp_path)
    with pytest.raises(UsageError, match="cannot be pickled"), ex.batch():
        ex.submit(operator.add, 1, 2)
        ex.submit(Holder())  # the whole batch is refused at the end of the block


def test_pickle_submission_round_trips_closures() -> None:
    from submitit.core.utils import DelayedSubmission

    offset = 10
    blob = pickle_submission(DelayedSubmission(lambda x: x + offset, 5))
    import pickle

    assert pickle.loads(blob).result() == 15


def test_debug_cluster_runs_through_submitit_itself(tmp_path: Path) -> None:
    ex = Executor(tmp_path / "logs", cluster="debug")
    ex.update_parameters(timeout_min=1, tier="urgent")  # hpcplat settings are ignored there
    job = ex.submit(operator.mul, 6, 7)
    assert job.result() == 42
    jobs = ex.map_array(operator.add, [1, 2], [10, 20])
    assert [j.result() for j in jobs] == [11, 22]


def test_unknown_cluster(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown cluster 'k8s'"):
        Executor(tmp_path, cluster="k8s")


def test_job_status_is_the_enum() -> None:
    assert JobState("PREEMPTED").is_active  # what Job.status returns while a preempted job waits
