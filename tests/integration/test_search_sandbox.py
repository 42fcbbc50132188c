"""Searches on the sandbox: Optuna's TPE and ASHA with every trial a Slurm job, a driver killed and
resumed, pruned trials signalled and cancelled, a requeued trial that is not a failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hpcplat.catalog import Catalog
from hpcplat.siteconfig import SiteConfig
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.spec import JobSpec, Resources
from hpcplat.submission.objective import Objective
from hpcplat.submission.search import Driver, Method, Search, create, open_study
from hpcplat.submission.sweep import parse_distribution
from tests.fixtures.submission import invoke, write_site_file

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(240)]

# loss = (x - 3)^2 + a learning curve that falls with the steps, plus a little noise.
TRIAL = """
import json, os, random, signal, time
from hpcplat import track
signal.signal(signal.SIGUSR1, lambda *_: track.flush())  # the checkpoint signal: save, go on
x = float(json.loads(os.environ["HPCPLAT_PARAMS"])["x"])
rng = random.Random(int(x * 1000))
for step in range({steps}):
    track.log_metric(step=step, loss=(x - 3) ** 2 + 4.0 / (step + 1) + rng.gauss(0, 0.01))
    track.flush()
    time.sleep({sleep})
"""


def _search(tmp_path: Path, method: Method, *, steps: int, sleep: float = 0.3, **kw: object) -> Search:
    script = tmp_path / "trial.py"
    script.write_text(TRIAL.format(steps=steps, sleep=sleep))
    job = JobSpec(
        command=(sys.executable, str(script)),
        name=f"hpo-{uuid.uuid4().hex[:6]}",
        resources=Resources(time_limit_min=5),
        workdir=str(tmp_path),
    )
    return Search(
        job=job,
        parameters={"x": parse_distribution("x", {"distribution": "uniform", "min": -10, "max": 10})},
        method=method,
        objective=Objective.parse("loss:min:final"),
        **kw,  # type: ignore[arg-type]
    )


def _trials(directory: str, search: Search) -> list[object]:
    return list(open_study(directory, search).get_trials(deepcopy=False))


def test_tpe_driver_killed_and_resumed_repeats_nothing(
    env: dict[str, str], client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    search = _search(
        tmp_path, Method.TPE, steps=4, sleep=0.2, max_trials=12, max_concurrent=4, startup_trials=4
    )
    record = create(search, client=client, config=config, catalog=catalog)
    site = write_site_file(env, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcplat", "sweep", "drive", record.directory, "--poll", "0.5"],
        env={**os.environ, **env, "HPCPLAT_CONFIG": str(site)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            submitted = [t for t in _trials(record.directory, search) if "job_id" in t.user_attrs]  # type: ignore[attr-defined]
            if len(submitted) >= 6:
                break
            time.sleep(0.3)
        assert proc.poll() is None, "the driver still runs when it is killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    ranking = Driver(record, client, config, catalog, poll_s=0.5).run()

    trials = _trials(record.directory, search)
    counted = [t for t in trials if not t.user_attrs.get("not_submitted")]  # type: ignore[attr-defined]
    assert len(counted) == 12
    assert {t.state.name for t in counted} == {"COMPLETE"}  # type: ignore[attr-defined]
    run_ids = [t.user_attrs["run_id"] for t in counted]  # type: ignore[attr-defined]
    assert len(set(run_ids)) == 12
    # Nothing was submitted twice: exactly one catalog run per trial.
    assert len(catalog.list_runs(tag=f"sweep:{record.sweep_id}", limit=None)) == 12
    best = ranking.best
    assert best is not None and best.value is not None
    assert abs(float(best.params["x"]) - 3) < 2.0
    values = sorted(t.value for t in ranking.trials if t.value is not None)
    assert best.value <= values[len(values) // 2]


def test_asha_prunes_and_cancels_and_results_show_savings(
    env: dict[str, str], client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    search = _search(
        tmp_path,
        Method.ASHA,
        steps=12,
        max_trials=10,
        max_concurrent=4,
        startup_trials=3,
        min_steps=1,
        max_steps=12,
        reduction_factor=3,
        prune_grace_s=1.0,
    )
    record = create(search, client=client, config=config, catalog=catalog)
    ranking = Driver(record, client, config, catalog, poll_s=0.5).run()
    pruned = [t for t in ranking.trials if t.state == "PRUNED"]
    assert pruned, [(t.number, t.state, t.value) for t in ranking.trials]
    assert ranking.count("FAIL") == 0
    history = {j.job_id: j for j in client.history([t.job_id for t in pruned])}
    for t in pruned:
        assert history[t.job_id].state is JobState.CANCELLED
        assert int(t.note.split("at step ")[1].split(":")[0]) < 11, t.note
        reasons = [e.reason for e in catalog.details(t.run_id).events]
        assert any(r.startswith("pruned by asha") for r in reasons), reasons
        assert any("cancelled: pruned" in r for r in reasons), reasons

    site = write_site_file(env, tmp_path)
    result = invoke(["sweep", "results", record.sweep_id, "--json"], env={**env, "HPCPLAT_CONFIG": str(site)})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["pruned"] == len(pruned)
    assert data["trial_hours_saved"] > 0
    assert data["best"]["state"] == "COMPLETE"
    table = invoke(["sweep", "results", record.sweep_id], env={**env, "HPCPLAT_CONFIG": str(site)})
    assert "pruned" in table.output and "best: trial" in table.output


def test_requeued_trial_is_followed_not_failed(
    client: CliBackend, config: SiteConfig, catalog: Catalog, tmp_path: Path
) -> None:
    search = _search(tmp_path, Method.RANDOM, steps=6, sleep=0.5, max_trials=2, max_concurrent=2)
    record = create(search, client=client, config=config, catalog=catalog)
    driver = Driver(record, client, config, catalog, poll_s=0.5)
    requeued = ""
    deadline = time.monotonic() + 120
    while driver.cycle() and time.monotonic() < deadline:
        if not requeued:
            first = driver.study.get_trials(deepcopy=False)[0]
            job = first.user_attrs.get("job_id")
            if job and [j for j in client.jobs([job]) if j.state is JobState.RUNNING]:
                client.requeue([job])
                requeued = job
        time.sleep(0.5)
    assert requeued
    ranking = driver.ranking()
    assert [t.state for t in ranking.trials] == ["COMPLETE", "COMPLETE"]
    assert ranking.count("FAIL") == 0
