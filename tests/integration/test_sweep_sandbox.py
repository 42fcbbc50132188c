"""Sweeps on the sandbox: job arrays, per-point runs in the catalog, results collected per point."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat.catalog import Catalog
from hpcplat.sandbox import Sandbox
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from hpcplat.spec import JobSpec, Resources
from hpcplat.submission import facts
from hpcplat.submission.sweep import (
    SearchMethod,
    Sweep,
    SweepRecord,
    collect,
    parse_distribution,
    submit_sweep,
)
from tests.fixtures.submission import sandbox_config

pytestmark = pytest.mark.sandbox

POINT = (
    "import json, os, sys; p = json.loads(os.environ['HPCPLAT_PARAMS']); "
    "json.dump({'loss': p['lr'] * p['bs'], 'arg': sys.argv[1], 'run': os.environ['HPCPLAT_RUN_ID']}, "
    "open(os.environ['HPCPLAT_RESULT_FILE'], 'w'))"
)


class SmallArrays(CliBackend):
    """The sandbox as a cluster with MaxArraySize=3, to exercise splitting."""

    def config(self) -> dict[str, str]:
        return {**super().config(), "MaxArraySize": "3"}


@pytest.fixture
def setup(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SiteConfig, Catalog]]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    facts.forget()
    config = sandbox_config(sandbox.env(), tmp_path)
    with Catalog.open(config.catalog_url) as catalog:
        yield config, catalog


def test_grid_sweep_split_into_chained_arrays(setup: tuple[SiteConfig, Catalog], sandbox: Sandbox) -> None:
    config, catalog = setup
    client = SmallArrays(env=sandbox.env())
    job = JobSpec(
        command=("python3", "-c", POINT, "lr={lr} it's"),
        name=f"sw-{uuid.uuid4().hex[:6]}",
        resources=Resources(time_limit_min=5),
    )
    sweep = Sweep(
        job=job,
        parameters={"lr": parse_distribution("lr", [0.5, 0.25]), "bs": parse_distribution("bs", [1, 2, 4])},
        max_concurrent=2,
    )
    record = submit_sweep(sweep, client=client, config=config, catalog=catalog)
    assert [(a.offset, a.size) for a in record.arrays] == [(0, 3), (3, 3)]
    second = client.jobs([record.arrays[1].job_id])
    assert second, "the second array is queued"
    results = collect(
        record, watcher=Watcher(client, min_interval=0.5, max_interval=2), wait=True, timeout=180
    )
    assert [r.state for r in results] == [JobState.COMPLETED] * 6
    for r in results:
        assert r.result is not None
        assert r.result["loss"] == r.params["lr"] * r.params["bs"]  # type: ignore[operator]
        assert r.result["arg"] == f"lr={r.params['lr']} it's"
        assert r.result["run"] == r.run_id
        assert [a.job_id for a in catalog.details(r.run_id).attempts] == [r.job_id]
    again = SweepRecord.load(record.directory)
    assert again.run_ids == record.run_ids and again.arrays == record.arrays


def test_random_sweep_one_array_with_concurrency_limit(
    setup: tuple[SiteConfig, Catalog], sandbox: Sandbox
) -> None:
    config, catalog = setup
    client = CliBackend(env=sandbox.env())
    job = JobSpec(command=("true",), name=f"rs-{uuid.uuid4().hex[:6]}", resources=Resources(time_limit_min=5))
    sweep = Sweep(
        job=job,
        parameters={"lr": parse_distribution("lr", {"distribution": "loguniform", "min": 1e-4, "max": 1e-1})},
        method=SearchMethod.RANDOM,
        samples=5,
        seed=1,
        max_concurrent=2,
    )
    record = submit_sweep(sweep, client=client, config=config, catalog=catalog)
    assert len(record.arrays) == 1
    script = catalog.sbatch_script(record.run_ids[0])
    assert "#SBATCH --array=0-4%2" in script
    results = collect(
        record, watcher=Watcher(client, min_interval=0.5, max_interval=2), wait=True, timeout=180
    )
    assert {r.state for r in results} == {JobState.COMPLETED}
    assert [r.params for r in results] == sweep.points()
