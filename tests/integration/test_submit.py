"""The submission service against the real sandbox and a real (private) SQLite catalog."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpcplat.catalog import Catalog
from hpcplat.errors import CatalogError, UsageError
from hpcplat.siteconfig import SiteConfig, current_user
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from hpcplat.spec import DatasetRef, JobSpec, Resources
from hpcplat.submission import facts, spool
from hpcplat.submission.service import SubmissionError, submit
from hpcplat.submission.validate import cluster_problems

pytestmark = pytest.mark.sandbox

DUMP_ENV = (
    "import json, os; "
    "json.dump({k: v for k, v in os.environ.items()"
    " if k.startswith(('HPCPLAT_', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'))},"
    " open(os.path.join(os.environ['HPCPLAT_JOB_DIR'], 'env.json'), 'w'))"
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(client: CliBackend, job_id: str, timeout: float = 120) -> JobState:
    final = Watcher(client, min_interval=0.5, max_interval=2).wait([job_id], timeout=timeout)
    info = final[job_id]
    assert info is not None
    return info.state


def test_submit_records_runs_and_exports_the_contract(
    client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    data = tmp_path / "digits-data"
    data.mkdir()
    (data / "x.txt").write_text("1\n")
    version, _ = catalog.register_dataset("digits", data)
    spec = JobSpec(
        command=("python3", "-c", DUMP_ENV),
        name=unique("env"),
        resources=Resources(time_limit_min=5),
        params={"lr": 0.1},
        datasets=(DatasetRef("digits", str(version.version)),),
        tags=("test",),
    )
    result = submit(spec, client=client, config=config, catalog=catalog, cwd=str(tmp_path))
    assert result.tracked and result.job_dir == f"{tmp_path}/jobs/{current_user()}/{result.job_id}"
    run = catalog.run(result.run_id)
    assert run.status.value in ("QUEUED", "RUNNING", "COMPLETED")
    assert run.spec["workdir"] == str(tmp_path)  # recorded absolute, for reruns
    assert JobSpec.from_dict(run.spec).command == spec.command
    assert [a.job_id for a in catalog.details(result.run_id).attempts] == [result.job_id]
    stored = catalog.sbatch_script(result.run_id)
    assert stored == result.script  # the script as submitted, with its run id
    assert wait_for(client, result.job_id) is JobState.COMPLETED
    dumped = json.loads((Path(result.job_dir) / "env.json").read_text())
    assert dumped["HPCPLAT_RUN_ID"] == result.run_id
    assert dumped["HPCPLAT_CATALOG_URL"] == config.catalog_url
    assert dumped["HPCPLAT_TIER"] == "normal" and dumped["HPCPLAT_MAX_REQUEUES"] == "3"
    assert dumped["HPCPLAT_CHECKPOINT_DIR"] == f"{result.job_dir}/checkpoints"
    assert json.loads(dumped["HPCPLAT_PARAMS"]) == {"lr": 0.1}
    assert dumped["HPCPLAT_DATASET_DIGITS"] == str(data.resolve())
    assert dumped["RANK"] == "0" and dumped["WORLD_SIZE"] == "1"
    (info,) = client.jobs([result.job_id])
    assert info.account == "vision" and info.qos == "normal"
    assert info.comment == f"hpcplat:{result.run_id}"


def test_the_job_shell_survives_the_checkpoint_signal_sent_to_the_whole_job(
    client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    """`scancel --signal=USR1 --full` (what the node agent sends) reaches the batch shell too: the
    shell must survive it so the program can save and finish on its own terms."""
    import time

    marker = tmp_path / "saved"
    program = f'trap "touch {marker}; exit 0" USR1; echo ready; sleep 120 & wait'
    spec = JobSpec(
        command=("bash", "-c", program), name=unique("usr1"), resources=Resources(time_limit_min=5)
    )
    result = submit(spec, client=client, config=config, catalog=catalog, cwd=str(tmp_path))
    output = Path(result.output_path)
    deadline = time.monotonic() + 60
    while not (output.exists() and "ready" in output.read_text()):
        assert time.monotonic() < deadline, "the job did not start within 60 s"
        time.sleep(0.3)
    client.signal(result.job_id, "USR1", full=True)
    assert wait_for(client, result.job_id) is JobState.COMPLETED, output.read_text()
    assert marker.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"resources": Resources(gpus_per_node=5)},
            "5 GPUs per node requested but the largest node of partition 'gpu' has 4",
        ),
        (
            {"partition": "debug", "resources": Resources(time_limit_min=120)},
            "over partition 'debug''s maximum of 00:30:00",
        ),
        ({"partition": "nosuch"}, "unknown partition 'nosuch'; partitions: debug, gpu"),
        ({"account": "physics"}, "cannot charge account 'physics'; your accounts: nlp, root, vision"),
        ({"resources": Resources(nodes=9)}, "9 nodes requested but partition 'gpu' has 4"),
        ({"resources": Resources(cpus_per_task=64)}, "64 CPUs per node requested"),
        ({"resources": Resources(memory_mb=10**6)}, "of memory per node requested"),
        ({"tier": "gold"}, "unknown tier 'gold'; allowed tiers: normal, preemptible, urgent"),
        ({"datasets": (DatasetRef("nosuchdata", "3"),)}, "dataset nosuchdata@3"),
    ],
)
def test_validation_refuses_and_records_nothing(
    changes: dict[str, object], message: str, client: CliBackend, config: SiteConfig, catalog: Catalog
) -> None:
    name = unique("bad")
    spec = JobSpec(command=("true",), name=name, **changes)  # type: ignore[arg-type]
    with pytest.raises(UsageError) as caught:
        submit(spec, client=client, config=config, catalog=catalog)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2
    assert catalog.list_runs(limit=None) == []
    assert not [j for j in client.jobs(None) if j.name == name]


def test_qos_not_allowed_for_the_account_names_the_allowed_ones(
    client: CliBackend, config: SiteConfig
) -> None:
    live = facts.cluster_facts(client, max_age_s=0)
    restricted = facts.ClusterFacts(
        user=live.user,
        partitions=live.partitions,
        qos=live.qos,
        associations=(facts.AssociationFacts("vision", ("normal",)),),
    )
    from hpcplat.submission.placement import place

    spec = JobSpec(command=("true",), tier="urgent")
    (problem,) = cluster_problems(spec, place(spec, config), restricted)
    assert problem == "account 'vision' may not use QOS 'urgent' (tier urgent); allowed QOS for it: normal"


def test_sbatch_refusal_marks_the_run_not_submitted(
    client: CliBackend, config: SiteConfig, catalog: Catalog
) -> None:
    spec = JobSpec(
        command=("true",), name=unique("dep"), depends_on=("0",)
    )  # Slurm: "Job dependency problem"
    with pytest.raises(SubmissionError, match=r"Slurm refused the job: .*[Dd]ependency") as caught:
        submit(spec, client=client, config=config, catalog=catalog)
    assert "marked NOT_SUBMITTED" in str(caught.value)
    (row,) = catalog.list_runs(limit=None)
    assert catalog.run(row.id).status.value == "NOT_SUBMITTED"
    assert "sbatch failed" in catalog.run(row.id).status_reason


class CatalogDownAfterSbatch(Catalog):
    def confirm_submission(self, run_id: str, job_id: str) -> None:
        raise CatalogError("the catalog went away (injected)")


class CannotCancel(CliBackend):
    """scancel really fails: it is pointed at a Slurm configuration that does not exist."""

    def cancel(self, job_ids: Sequence[str], **kw: object) -> None:
        CliBackend(env={**(self.env or {}), "SLURM_CONF": "/nonexistent/slurm.conf"}, timeout=10).cancel(
            job_ids
        )


def test_catalog_failure_after_sbatch_cancels_the_job(
    client: CliBackend, config: SiteConfig, catalog: Catalog
) -> None:
    broken = CatalogDownAfterSbatch(catalog.engine, catalog.url)
    spec = JobSpec(command=("sleep", "60"), name=unique("orphan"))
    with pytest.raises(
        SubmissionError,
        match=r"job (\d+) was queued but the catalog could not record it .*"
        r"the job was cancelled, nothing runs",
    ) as caught:
        submit(spec, client=client, config=config, catalog=broken)
    job_id = str(caught.value).split("job ", 1)[1].split(" ", 1)[0]
    assert wait_for(client, job_id, timeout=60) is JobState.CANCELLED


def test_cancel_failure_leaves_a_reconciliation_record(
    client: CliBackend, env: dict[str, str], config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    broken = CatalogDownAfterSbatch(catalog.engine, catalog.url)
    stubborn = CannotCancel(env=env)
    spec = JobSpec(command=("sleep", "60"), name=unique("untracked"))
    with pytest.raises(SubmissionError, match=r"cancelling it failed too .* `hpcplat reconcile`") as caught:
        submit(spec, client=stubborn, config=config, catalog=broken)
    ((path, record),) = spool.pending()
    assert path.parent == tmp_path / "spool"
    assert record.catalog_url == config.catalog_url and record.job_id in str(caught.value)
    client.cancel([record.job_id])
    assert wait_for(client, record.job_id, timeout=60) is JobState.CANCELLED


def test_without_a_catalog_the_job_is_submitted_untracked(client: CliBackend, config: SiteConfig) -> None:
    from dataclasses import replace

    result = submit(
        JobSpec(command=("true",), name=unique("untracked")),
        client=client,
        config=replace(config, catalog_url=None),
    )
    assert not result.tracked
    assert wait_for(client, result.job_id) is JobState.COMPLETED


def test_a_stale_cache_never_refuses_a_valid_job(
    client: CliBackend, config: SiteConfig, catalog: Catalog
) -> None:
    live = facts.cluster_facts(client, cluster=config.cluster_name, max_age_s=0)
    shrunk = facts.ClusterFacts(
        user=live.user,
        partitions=tuple(
            facts.PartitionFacts(**{**vars(p), "max_gpus_per_node": 1})
            for p in live.partitions  # type: ignore[arg-type]
        ),
        qos=live.qos,
        associations=live.associations,
        fetched_at=live.fetched_at,
    )
    key = facts._cache_key(config.cluster_name, live.user)
    facts._memory[key] = shrunk  # as if the nodes had 1 GPU when the cache was filled
    spec = JobSpec(
        command=("true",), name=unique("stale"), resources=Resources(gpus_per_node=2, time_limit_min=5)
    )
    result = submit(spec, client=client, config=config, catalog=catalog)
    assert wait_for(client, result.job_id) is JobState.COMPLETED
    assert facts._memory[key].partition("gpu").max_gpus_per_node == 4  # type: ignore[union-attr]
