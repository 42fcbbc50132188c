"""GPU-hour accounting per team comes from Slurm's own accounting (slurmdbd)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from hpcplat.cli.main import cli
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.accounting import gpu_usage
from hpcplat.slurm.cli_backend import CliBackend

pytestmark = pytest.mark.sandbox


def test_a_gpu_job_is_charged_to_its_team(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    client = CliBackend(env=sandbox.env())
    since = datetime.now() - timedelta(seconds=5)
    job = client.submit(
        "#!/bin/bash\nsleep 3\n",
        args=["--account=nlp", "--gres=gpu:2", "--output=/dev/null", "--job-name=usage-probe"],
    ).job_id
    deadline = time.monotonic() + 90
    report = gpu_usage(client, since=since, accounts=["nlp"])
    while time.monotonic() < deadline:
        done = [j for j in client.history([job]) if j.state.is_terminal and j.elapsed_s]
        if done:
            report = gpu_usage(client, since=since, accounts=["nlp"])
            if report.rows:
                break
        time.sleep(1)
    else:
        client.cancel([job])
        raise AssertionError(f"job {job} did not finish within 90 s")
    row = next(r for r in report.rows if r.account == "nlp")
    assert row.jobs >= 1
    # 2 GPUs for at least 3 s, at most a few more: charged to nlp, in GPU-hours.
    assert 2 * 3 / 3600 <= row.gpu_hours <= 2 * 60 / 3600
    assert report.quotas["nlp"] == "gres/gpu=8"

    result = CliRunner().invoke(cli, ["usage", "--since", "1h", "-A", "nlp", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["total_gpu_hours"] >= row.gpu_hours
    assert payload["quotas"]["nlp"] == "gres/gpu=8"
