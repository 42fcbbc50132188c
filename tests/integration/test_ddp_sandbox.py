"""Multi-node jobs on the real sandbox: srun + hpcplat.launch give every task its rank."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat.errors import HpcplatError
from hpcplat.launch import expand_nodelist, master_port
from hpcplat.sandbox import Sandbox
from hpcplat.slurm.cli_backend import CliBackend
from hpcplat.slurm.state import JobState
from hpcplat.slurm.watcher import Watcher
from hpcplat.spec import JobSpec, Resources
from hpcplat.submission import facts
from hpcplat.submission.service import submit
from tests.fixtures.submission import sandbox_config

pytestmark = pytest.mark.sandbox

DUMP = (
    "import json, os, sys\n"
    "names = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'NODE_RANK', 'MASTER_ADDR',"
    " 'MASTER_PORT', 'SLURMD_NODENAME', 'SLURM_JOB_NODELIST']\n"
    "values = {n: os.environ.get(n) for n in names}\n"
    "json.dump(values, open(os.path.join(sys.argv[1], 'rank-' + values['RANK'] + '.json'), 'w'))\n"
)


@pytest.fixture
def client(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliBackend]:
    env = dict(sandbox.env())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    facts.forget()
    backend = CliBackend(env=env)
    submitted: list[str] = []
    backend.submitted = submitted  # type: ignore[attr-defined]
    yield backend
    if submitted:
        try:
            backend.cancel(submitted)
        except HpcplatError as exc:
            print(f"teardown cancel: {exc}")


def test_two_nodes_two_tasks_each_get_rank_world_size_and_master(
    client: CliBackend, sandbox: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "ranks"
    out.mkdir()
    spec = JobSpec(
        command=[sys.executable, "-c", DUMP, str(out)],
        name="ddp-env",
        resources=Resources(nodes=2, tasks_per_node=2, time_limit_min=5),
        tier="normal",
    )
    job = submit(spec, client=client, config=sandbox_config(dict(sandbox.env()), tmp_path))
    client.submitted.append(job.job_id)  # type: ignore[attr-defined]
    assert "srun --kill-on-bad-exit=1" in job.script and "-m hpcplat.launch --" in job.script
    record = Watcher(client).wait([job.job_id], timeout=240)[job.job_id]
    assert record is not None and record.state is JobState.COMPLETED, Path(job.output_path).read_text()

    tasks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(4)]
    nodes = expand_nodelist(tasks[0]["SLURM_JOB_NODELIST"])
    assert len(nodes) == 2
    assert {t["WORLD_SIZE"] for t in tasks} == {"4"}
    assert {t["LOCAL_WORLD_SIZE"] for t in tasks} == {"2"}
    by_node: dict[str, list[str]] = {}
    for t in tasks:
        by_node.setdefault(t["SLURMD_NODENAME"], []).append(t["LOCAL_RANK"])
        assert t["NODE_RANK"] == str(nodes.index(t["SLURMD_NODENAME"]))
    assert sorted(by_node) == sorted(nodes)
    assert all(sorted(ranks) == ["0", "1"] for ranks in by_node.values())
    # Every task agrees on the rendezvous: the job's first host and a port derived from the job id.
    assert {t["MASTER_ADDR"] for t in tasks} == {nodes[0]} == {tasks[0]["SLURMD_NODENAME"]}
    assert {t["MASTER_PORT"] for t in tasks} == {str(master_port(job.job_id))}
