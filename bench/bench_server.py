"""Following a run through the hpcplat server vs each client asking Slurm, on the sandbox.

    .venv/bin/python bench/bench_server.py [--clients 100] [--rounds 3] [--json FILE]

One job is submitted with ``hpcplat submit`` (a run in the sandbox's catalog, followed by the
sandbox server's live loop) and cancelled at the end. Then, for the same number of status queries:

1. **baseline**: ``--clients`` concurrent clients each run ``squeue --jobs=J`` and ``sacct -j J``
   (what a client following a job without the server does), ``--rounds`` times;
2. **server**: the same clients each ask ``GET /api/v1/runs/RUN`` over TCP with a munge credential
   (as a user on another host would), ``--rounds`` times;
3. **idle**: nobody asks anything, for as long as phase 2 took (the live loop's own cost).

slurmctld RPCs (``sdiag``) and slurmdbd RPCs (``sacctmgr show stats``) are reset before and read
after each phase, as in ``bench_submit.py``; the sandbox is shared, so other activity can add RPCs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_submit import read_rpc, reset_rpc

from hpcplat.runner import run
from hpcplat.server.client import Client

ROOT = Path(__file__).resolve().parent.parent


def sandbox_env() -> dict[str, str]:
    text = run([str(ROOT / ".venv/bin/hpcplat"), "sandbox", "env"], timeout=60).stdout
    env = dict(os.environ)
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'\"")
    env.pop("HPCPLAT_CATALOG_URL", None)
    return env


def phase(env: Mapping[str, str], clients: int, rounds: int, ask: Callable[[], None]) -> dict[str, Any]:
    reset_rpc(env)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(ask) for _ in range(clients * rounds)]:
            future.result()
    wall = time.perf_counter() - started
    ctld, dbd = read_rpc(env)
    return {
        "queries": clients * rounds,
        "seconds": round(wall, 3),
        "queries_per_s": round(clients * rounds / wall, 1),
        "slurmctld_rpcs": sum(ctld.values()),
        "slurmdbd_rpcs": sum(dbd.values()),
        "slurmctld": ctld,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    env = sandbox_env()
    hpcplat = str(ROOT / ".venv/bin/hpcplat")
    out = run(
        [hpcplat, "submit", "--json", "--name", "bench-server", "--time", "10", "--", "sleep", "300"],
        timeout=120,
        env=env,
    ).stdout
    job = json.loads(out.strip().splitlines()[-1])
    job_id, run_id = job["job_id"], job["run_id"]
    try:
        import tomllib

        section = tomllib.loads(Path(env["HPCPLAT_CONFIG"]).read_text())["server"]
        client = Client(
            url=f"http://{section.get('host', '127.0.0.1')}:{section['port']}",
            munge_socket=section.get("munge_socket"),
        )
        time.sleep(3)  # the live loop has seen the job

        def slurm() -> None:
            run(["squeue", "--noheader", f"--jobs={job_id}"], timeout=60, env=env)
            run(["sacct", "--noheader", "-X", "-j", job_id], timeout=60, env=env)

        def server() -> None:
            client.get(f"/api/v1/runs/{run_id}")

        base = phase(env, args.clients, args.rounds, slurm)
        srv = phase(env, args.clients, args.rounds, server)
        reset_rpc(env)
        time.sleep(srv["seconds"])
        ctld, dbd = read_rpc(env)
        idle = {
            "seconds": srv["seconds"],
            "slurmctld_rpcs": sum(ctld.values()),
            "slurmdbd_rpcs": sum(dbd.values()),
        }
    finally:
        run(["scancel", job_id], env=env, timeout=60, check=False)
    figures = {"clients": args.clients, "rounds": args.rounds, "baseline": base, "server": srv, "idle": idle}
    slurm_base = base["slurmctld_rpcs"] + base["slurmdbd_rpcs"]
    slurm_srv = srv["slurmctld_rpcs"] + srv["slurmdbd_rpcs"]
    print(f"{args.clients} clients x {args.rounds} status queries of one run ({base['queries']} queries)")
    print(
        f"  baseline (squeue + sacct each): {slurm_base:5d} Slurm RPCs  {base['seconds']:7.2f} s  "
        f"{base['queries_per_s']:8.1f} queries/s"
    )
    print(
        f"  through the server:             {slurm_srv:5d} Slurm RPCs  {srv['seconds']:7.2f} s  "
        f"{srv['queries_per_s']:8.1f} queries/s"
    )
    print(f"  idle for as long (live loop):   {idle['slurmctld_rpcs'] + idle['slurmdbd_rpcs']:5d} Slurm RPCs")
    print(
        f"  Slurm RPCs: {slurm_base / max(1, slurm_srv):.0f}x fewer through the server; "
        f"queries/s: {srv['queries_per_s'] / base['queries_per_s']:.1f}x the baseline"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
