"""Secret environment variables through the real CLI and the sandbox (issue 11, item 6): the job
gets the values; the catalog (spec, script), `run show --script`/`--json`, the dry run and the
script Slurm keeps never hold them."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from hpcplat.catalog import Catalog
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from tests.fixtures.submission import invoke, write_site_file

pytestmark = pytest.mark.sandbox

WANDB = "wb-9f8e7d6c5b4a"
OWN = "own-1a2b3c4d5e"


def test_secret_values_reach_the_job_and_nothing_else(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = dict(sandbox.env())
    env["HPCPLAT_CONFIG"] = str(write_site_file(env, tmp_path))
    env.pop("HPCPLAT_CATALOG_URL", None)
    out = tmp_path / "seen.txt"
    program = f'printf "%s %s\\n" "$WANDB_API_KEY" "$OWN_VALUE" > {out}; sleep 1'
    flags = ["--env", f"WANDB_API_KEY={WANDB}", "--secret-env", f"OWN_VALUE={OWN}", "--time", "2"]

    dry = invoke(["submit", "--dry-run", *flags, "--", "bash", "-c", program], env=env)
    assert dry.exit_code == 0, dry.output
    assert WANDB not in dry.output and OWN not in dry.output

    result = invoke(["submit", "--json", *flags, "--", "bash", "-c", program], env=env)
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.output)
    run_id, job_id = submitted["run_id"], submitted["job_id"]
    client = CliBackend(env=env)
    try:
        # The script Slurm keeps (what `scontrol write batch_script` shows its owner) has no value.
        kept = run(["scontrol", "write", "batch_script", job_id, "-"], timeout=30, env=env).stdout
        assert "source " in kept and WANDB not in kept and OWN not in kept
        final = Watcher(client, min_interval=0.5, max_interval=2).wait([job_id], timeout=120)
        info = final[job_id]
        assert info is not None and info.state is JobState.COMPLETED
    finally:
        client.cancel([job_id])
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.read_text().split() == [WANDB, OWN]  # the job got both

    for args in (["run", "show", run_id, "--script"], ["run", "show", run_id, "--json"]):
        shown = invoke(args, env=env)
        assert shown.exit_code == 0, shown.output
        assert WANDB not in shown.output and OWN not in shown.output
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        record = catalog.run(run_id)
        assert record.spec["environment"]["secret_env"] == {"OWN_VALUE": None, "WANDB_API_KEY": None}
        assert WANDB not in json.dumps(record.spec) and WANDB not in (catalog.sbatch_script(run_id) or "")
    database = (tmp_path / "catalog.db").read_bytes()
    assert WANDB.encode() not in database and OWN.encode() not in database
    [secrets_file] = (tmp_path / "jobs").glob("*/secrets/*.env")
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700
    assert secrets_file.stat().st_uid == os.geteuid()


def test_a_rerun_takes_secret_values_from_the_environment_or_says_which_are_missing(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcplat.errors import UsageError
    from hpcplat.spec import JobSpec
    from hpcplat.submission import secrets

    recorded = JobSpec.from_dict({"command": ["true"], "environment": {"secret_env": {"HF_TOKEN": None}}})
    with pytest.raises(UsageError, match="HF_TOKEN"):
        secrets.resolve(recorded, {})
    assert secrets.resolve(recorded, {"HF_TOKEN": "x"}).environment.secrets == {"HF_TOKEN": "x"}
