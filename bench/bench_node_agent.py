"""Node agent overhead on the sandbox: CPU (% of one core) and memory at 1 s and 10 s sampling.

One ``hpcplat-node-agent`` per sandbox node (n1..n4, emulated GPUs), started as real processes
with the sandbox's Slurm, while a sleeping job holds GPUs on every node. After a warm-up, the
agents' CPU time is read from ``/proc/<pid>/stat`` (utime+stime; the Slurm commands they run are
counted separately from cutime+cstime) over the measurement window, and their RSS from
``/proc/<pid>/status``. Aim: under 1 % of a core and 60 MB per node at 10 s.

    .venv/bin/python bench/bench_node_agent.py [--seconds-1s 30] [--seconds-10s 120]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpcplat.runner import run
from hpcplat.sandbox import Sandbox

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def measure(
    interval: int, seconds: float, warmup: float, nodes: list[str], env: dict[str, str], tmp: Path
) -> dict[str, dict[str, float]]:
    config = tmp / f"agent-{interval}.toml"
    config.write_text(
        Path(env["HPCPLAT_CONFIG"]).read_text()
        + f"\n[node_agent]\ninterval_s = {interval}\nflush_interval_s = 3600\n"
        + "[node_agent.idle]\nenabled = false\n[node_agent.orphans]\nenabled = true\n"
    )
    agent_bin = str(Path(sys.executable).parent / "hpcplat-node-agent")
    procs = {}
    for i, node in enumerate(nodes):
        procs[node] = subprocess.Popen(
            [
                agent_bin,
                "--node",
                node,
                "--config",
                str(config),
                "--metrics-port",
                str(19810 + i),
                "--spool-dir",
                str(tmp / f"spool-{interval}"),
                "--log-level",
                "WARNING",
            ],
            env={**os.environ, **env},
            stderr=subprocess.DEVNULL,
        )
    try:
        time.sleep(warmup)
        start = {n: cpu_ticks(p.pid) for n, p in procs.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        end = {n: cpu_ticks(p.pid) for n, p in procs.items()}
        result = {}
        for node, proc in procs.items():
            own = (end[node][0] - start[node][0]) / CLK_TCK / elapsed * 100.0
            children = (end[node][1] - start[node][1]) / CLK_TCK / elapsed * 100.0
            result[node] = {"cpu_pct": own, "cpu_with_slurm_pct": own + children, "rss_mb": rss_mb(proc.pid)}
        return result
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-1s", type=float, default=30.0)
    parser.add_argument("--seconds-10s", type=float, default=120.0)
    args = parser.parse_args()
    sandbox = Sandbox.default()
    sandbox.up()
    env = sandbox.env()
    nodes = [n.name for n in sandbox.nodes()]
    jobs = []
    for node in nodes:
        out = run(
            [
                "sbatch",
                "--parsable",
                "-J",
                "bench-node-agent",
                "-p",
                "debug",
                "-w",
                node,
                "--gres=gpu:2",
                "-t",
                "10",
                "-o",
                "/dev/null",
                "--wrap",
                "sleep 600",
            ],
            timeout=30,
            env=env,
        ).stdout
        jobs.append(out.strip().split(";")[0])
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            fast = measure(1, args.seconds_1s, 5.0, nodes, env, tmp)
            slow = measure(10, args.seconds_10s, 12.0, nodes, env, tmp)
    finally:
        run(["scancel", *jobs], timeout=30, env=env, check=False)

    print(f"node agent overhead, {len(nodes)} agents (one per sandbox node), {os.cpu_count()} cores")
    print(f"{'node':<6}{'interval':>9}{'CPU %':>9}{'+Slurm %':>10}{'RSS MB':>9}")
    for label, data in (("1 s", fast), ("10 s", slow)):
        for node, row in data.items():
            print(
                f"{node:<6}{label:>9}{row['cpu_pct']:>9.2f}{row['cpu_with_slurm_pct']:>10.2f}{row['rss_mb']:>9.1f}"
            )

    def mean(data: dict[str, dict[str, float]], key: str) -> float:
        return sum(r[key] for r in data.values()) / len(data)

    c1, c10 = mean(fast, "cpu_with_slurm_pct"), mean(slow, "cpu_with_slurm_pct")
    r10 = max(r["rss_mb"] for r in slow.values())
    print(
        f"mean CPU per node incl. Slurm commands: {c1:.2f}% at 1 s, {c10:.2f}% at 10 s "
        f"(ratio 1 s / 10 s: {c1 / c10 if c10 else float('inf'):.1f}x)"
    )
    print(
        f"at 10 s: {c10:.2f}% of a core = {c10 / 1.0:.2f}x the 1% aim; "
        f"max RSS {r10:.1f} MB = {r10 / 60.0:.2f}x the 60 MB aim"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
