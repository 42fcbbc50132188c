"""Submission benchmarks on the sandbox: hpcplat vs raw sbatch, and hpcplat vs submitit.

    .venv/bin/python bench/bench_submit.py [--jobs 40] [--points 1000] [--cycles 5] [--json FILE]

1. **Submit latency**: one job through ``hpcplat.submission.submit`` (validate with cached cluster
   facts, provenance capture, render, catalog intent, sbatch, catalog confirm) vs ``sbatch`` of the
   same script, both timed from inside one Python process (so Python start-up is excluded; it is
   reported separately, with the ``hpcplat submit`` and ``sbatch`` command lines end to end).
2. **1,000-point sweep**: ``submit_sweep`` (job arrays, one catalog run per point) vs 1,000 ``sbatch``
   calls, and one raw ``sbatch --array`` for reference.
3. **Status cycles while following 1,000 jobs**: slurmctld RPCs (``sdiag``, reset between phases)
   and slurmdbd RPCs (``sacctmgr show stats``) per cycle, hpcplat's shared watcher vs submitit's
   ``SlurmInfoWatcher``, following the same 1,000 held jobs.

Every job is submitted held (``--hold``) and cancelled at the end. The sandbox is shared: other
activity can add RPCs, so each RPC figure is the minimum over repetitions, next to an idle baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpcplat.catalog import Catalog  # noqa: E402
from hpcplat.runner import run  # noqa: E402
from hpcplat.sandbox import Sandbox  # noqa: E402
from hpcplat.siteconfig import SiteConfig, load  # noqa: E402
from hpcplat.slurm.cli_backend import CliBackend  # noqa: E402
from hpcplat.slurm.models import SubmitResult  # noqa: E402
from hpcplat.slurm.watcher import Watcher  # noqa: E402
from hpcplat.spec import JobSpec, Resources  # noqa: E402
from hpcplat.submission import service  # noqa: E402
from hpcplat.submission.render import render  # noqa: E402
from hpcplat.submission.sweep import Sweep, parse_distribution, submit_sweep  # noqa: E402


class HeldClient(CliBackend):
    """The real CLI backend, submitting every job held so that nothing runs."""

    def submit(self, script: str, *, args: Sequence[str] = (), **kw: Any) -> SubmitResult:
        return super().submit(script, args=["--hold", *args], **kw)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def sbatch_raw(script: str, env: Mapping[str, str], args: Sequence[str] = ()) -> str:
    result = run(["sbatch", "--parsable", "--hold", *args], input=script, timeout=60, env=env)
    return result.stdout.strip().split(";")[0]


def cancel_all(client: CliBackend, ids: Sequence[str]) -> None:
    for start in range(0, len(ids), 500):
        client.cancel(list(ids[start : start + 500]))


# -- RPC counters --------------------------------------------------------------------------------

_RPC_LINE = re.compile(r"^\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)")


def _rpc_section(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    section = text.split("Remote Procedure Call statistics by message type", 1)
    if len(section) < 2:
        return counts
    for line in section[1].splitlines()[1:]:
        match = _RPC_LINE.match(line)
        if match is None:
            if line.strip().startswith("Remote Procedure Call statistics by user"):
                break
            continue
        counts[match.group(1)] = int(match.group(2))
    return counts


def reset_rpc(env: Mapping[str, str]) -> None:
    run(["sdiag", "--reset"], timeout=30, env=env)
    run(["sacctmgr", "-i", "clear", "stats"], timeout=30, env=env)


def read_rpc(env: Mapping[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    ctld = _rpc_section(run(["sdiag"], timeout=30, env=env).stdout)
    dbd = _rpc_section(run(["sacctmgr", "show", "stats"], timeout=30, env=env).stdout)
    # The readers' own RPCs (sdiag's REQUEST_STATS_INFO, sacctmgr's DBD_GET_STATS) are not the load.
    ctld.pop("REQUEST_STATS_INFO", None)
    dbd.pop("DBD_GET_STATS", None)
    dbd.pop("DBD_CLEAR_STATS", None)
    return ctld, dbd


def rpc_per_cycle(
    env: Mapping[str, str], cycle: Callable[[], None], cycles: int, reps: int
) -> dict[str, Any]:
    """Minimum over ``reps`` of (slurmctld RPCs, slurmdbd RPCs) per cycle, with a breakdown."""
    best: dict[str, Any] | None = None
    for _ in range(reps):
        reset_rpc(env)
        started = time.perf_counter()
        for _ in range(cycles):
            cycle()
        wall = (time.perf_counter() - started) / cycles
        ctld, dbd = read_rpc(env)
        total = sum(ctld.values()) + sum(dbd.values())
        item = {
            "slurmctld_per_cycle": sum(ctld.values()) / cycles,
            "slurmdbd_per_cycle": sum(dbd.values()) / cycles,
            "wall_per_cycle_s": wall,
            "slurmctld_types": {k: v / cycles for k, v in sorted(ctld.items())},
            "slurmdbd_types": {k: v / cycles for k, v in sorted(dbd.items())},
            "_total": total,
        }
        if best is None or total < best["_total"]:
            best = item
    assert best is not None
    best.pop("_total")
    return best


# -- phases --------------------------------------------------------------------------------------


def phase_submit(
    env: dict[str, str], config: SiteConfig, catalog: Catalog, jobs: int, cwd: str
) -> tuple[dict[str, Any], list[str]]:
    client = HeldClient(env=env)
    spec = JobSpec(
        command=("python3", "train.py", "--lr", "0.1"),
        name="bench-submit",
        resources=Resources(time_limit_min=5),
        params={"lr": 0.1},
    )
    ids: list[str] = []
    # Warm up both paths (cluster facts cached, catalog open, template compiled).
    warm = service.submit(spec, client=client, config=config, catalog=catalog, cwd=cwd)
    ids.append(warm.job_id)
    script = warm.script
    ids.append(sbatch_raw(script, env))
    raw: list[float] = []
    hp: list[float] = []
    bare: list[float] = []
    untracked = replace(config, catalog_url=None)
    ids.append(service.submit(spec, client=client, config=untracked, cwd=cwd).job_id)
    for _ in range(jobs):  # interleaved, so drift on the shared machine hits all alike
        t, job = timed(lambda: sbatch_raw(script, env))
        raw.append(t)
        ids.append(job)
        t, sub = timed(lambda: service.submit(spec, client=client, config=config, catalog=catalog, cwd=cwd))
        hp.append(t)
        ids.append(sub.job_id)
        t, sub = timed(lambda: service.submit(spec, client=client, config=untracked, cwd=cwd))
        bare.append(t)
        ids.append(sub.job_id)

    # Where hpcplat's time goes (each step alone, same inputs).
    checked = service.check(service.resolve_workdir(spec, cwd), client=client, config=config)
    steps: dict[str, list[float]] = {"validate": [], "provenance": [], "render": [], "catalog": []}
    for _ in range(max(5, jobs // 4)):
        steps["validate"].append(timed(lambda: service.check(spec, client=client, config=config))[0])
        steps["provenance"].append(timed(lambda: service.capture_provenance(cwd))[0])
        steps["render"].append(
            timed(lambda: render(checked.spec, config, run_id="x", placement=checked.placement))[0]
        )

        def catalog_round() -> None:
            intent = service.make_intent(checked, config, script=script, provenance={})
            run_id = catalog.record_intent(intent)
            catalog.abandon_intent(run_id, "benchmark")

        steps["catalog"].append(timed(catalog_round)[0])

    # Command lines end to end (Python start-up included), and Python start-up alone.
    py = sys.executable
    hpcplat_bin = str(Path(py).with_name("hpcplat"))
    hold = sbatch_raw(script, env)
    ids.append(hold)
    cli_env = {**os.environ, **env}
    cli_env["HPCPLAT_CATALOG_URL"] = str(config.catalog_url)
    startup = {
        "python -c pass": [],
        "python -S -c pass": [],
        "python -c 'import hpcplat.cli.main'": [],
        "hpcplat --help": [],
    }
    cli_hp: list[float] = []
    cli_raw: list[float] = []
    for _ in range(8):
        startup["python -c pass"].append(timed(lambda: subprocess.run([py, "-c", "pass"], check=True))[0])
        startup["python -S -c pass"].append(
            timed(lambda: subprocess.run([py, "-S", "-c", "pass"], check=True))[0]
        )
        startup["python -c 'import hpcplat.cli.main'"].append(
            timed(lambda: subprocess.run([py, "-c", "import hpcplat.cli.main"], check=True))[0]
        )
        startup["hpcplat --help"].append(
            timed(lambda: subprocess.run([hpcplat_bin, "--help"], check=True, capture_output=True))[0]
        )
        t, out = timed(
            lambda: subprocess.run(
                [
                    hpcplat_bin,
                    "submit",
                    "--json",
                    "--after",
                    hold,
                    "--time",
                    "5",
                    "--name",
                    "bench-cli",
                    "--",
                    "python3",
                    "train.py",
                ],
                check=True,
                capture_output=True,
                text=True,
                env=cli_env,
                cwd=cwd,
            )
        )
        cli_hp.append(t)
        ids.append(json.loads(out.stdout)["job_id"])
        t, out = timed(
            lambda: subprocess.run(
                ["sbatch", "--parsable", f"--dependency=afterok:{hold}"],
                input=script,
                check=True,
                capture_output=True,
                text=True,
                env=cli_env,
            )
        )
        cli_raw.append(t)
        ids.append(out.stdout.strip())
    result = {
        "jobs": jobs,
        "raw_sbatch_median_s": median(raw),
        "hpcplat_submit_median_s": median(hp),
        "ratio_hpcplat_over_sbatch": median(hp) / median(raw),
        "hpcplat_untracked_median_s": median(bare),
        "ratio_untracked_over_sbatch": median(bare) / median(raw),
        "raw_sbatch_p90_s": statistics.quantiles(raw, n=10)[-1],
        "hpcplat_submit_p90_s": statistics.quantiles(hp, n=10)[-1],
        "steps_median_s": {k: median(v) for k, v in steps.items()},
        "cli_hpcplat_submit_median_s": median(cli_hp),
        "cli_sbatch_median_s": median(cli_raw),
        "python_startup_median_s": {k: median(v) for k, v in startup.items()},
    }
    return result, ids


def phase_sweep(
    env: dict[str, str], config: SiteConfig, catalog: Catalog, points: int, cwd: str
) -> tuple[dict[str, Any], list[str], list[str]]:
    client = HeldClient(env=env)
    job = JobSpec(
        command=("python3", "train.py", "--lr", "{lr}"),
        name="bench-sweep",
        resources=Resources(time_limit_min=5),
    )
    sweep = Sweep(
        job=job,
        parameters={"lr": parse_distribution("lr", [i / points for i in range(points)])},
        max_concurrent=50,
    )
    script = render(job, config, run_id="bench", python=sys.executable)
    t_raw_loop, raw_ids = timed(lambda: [sbatch_raw(script, env) for _ in range(points)])
    t_raw_array, array_id = timed(lambda: sbatch_raw(script, env, [f"--array=0-{points - 1}%50"]))
    t_tracked, rec = timed(
        lambda: submit_sweep(sweep, client=client, config=config, catalog=catalog, cwd=cwd)
    )
    t_untracked, rec2 = timed(
        lambda: submit_sweep(sweep, client=client, config=replace(config, catalog_url=None), cwd=cwd)
    )
    arrays = [a.job_id for a in rec.arrays] + [a.job_id for a in rec2.arrays] + [array_id]
    result = {
        "points": points,
        "sbatch_calls_s": t_raw_loop,
        "one_raw_sbatch_array_s": t_raw_array,
        "hpcplat_sweep_with_catalog_s": t_tracked,
        "hpcplat_sweep_without_catalog_s": t_untracked,
        "hpcplat_sweep_arrays": len(rec.arrays),
        "speedup_untracked_vs_sbatch_calls": t_raw_loop / t_untracked,
        "speedup_tracked_vs_sbatch_calls": t_raw_loop / t_tracked,
    }
    return result, raw_ids, arrays


def phase_follow(env: dict[str, str], ids: list[str], cycles: int, reps: int) -> dict[str, Any]:
    client = CliBackend(env=env)
    watcher = Watcher(client)
    watcher.follow(ids)
    hp = rpc_per_cycle(env, lambda: watcher.refresh(force=True), cycles, reps)
    assert watcher.info(ids[0]) is not None

    from submitit.slurm.slurm import SlurmInfoWatcher

    sw = SlurmInfoWatcher(delay_s=60)
    for job_id in ids:
        sw.register_job(job_id)

    def submitit_cycle() -> None:
        sw.update()  # one sacct for every registered job (what each of its cycles runs)
        for job_id in ids:
            sw.get_state(job_id, mode="cache")

    sm = rpc_per_cycle(env, submitit_cycle, cycles, reps)
    idle = rpc_per_cycle(env, lambda: time.sleep(hp["wall_per_cycle_s"]), cycles, reps)
    return {"jobs_followed": len(ids), "cycles": cycles, "hpcplat": hp, "submitit": sm, "idle_baseline": idle}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=40, help="submissions timed per path")
    parser.add_argument("--points", type=int, default=1000, help="sweep points / jobs followed")
    parser.add_argument("--cycles", type=int, default=5, help="status cycles per RPC measurement")
    parser.add_argument(
        "--reps", type=int, default=3, help="repetitions of each RPC measurement (minimum kept)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sandbox = Sandbox.default()
    env = dict(sandbox.env())
    os.environ.update(env)  # submitit runs sacct with this process's environment
    work = tempfile.mkdtemp(prefix="hpcplat-bench-")
    os.environ["XDG_CACHE_HOME"] = os.path.join(work, "cache")
    config = replace(load(env), catalog_url=f"sqlite:///{work}/catalog.db", job_root=f"{work}/jobs")
    client = CliBackend(env=env)
    figures: dict[str, Any] = {"slurm": client.config().get("SLURM_VERSION", "?"), "cpus": os.cpu_count()}
    to_cancel: list[str] = []
    try:
        with Catalog.open(config.catalog_url) as catalog:
            print("1/3 submit latency ...", file=sys.stderr)
            figures["submit"], ids = phase_submit(env, config, catalog, args.jobs, str(ROOT))
            to_cancel += ids
            print("2/3 sweep ...", file=sys.stderr)
            figures["sweep"], raw_ids, arrays = phase_sweep(env, config, catalog, args.points, work)
            to_cancel += raw_ids + arrays
            print("3/3 status cycles ...", file=sys.stderr)
            figures["follow"] = phase_follow(env, raw_ids, args.cycles, args.reps)
    finally:
        cancel_all(client, to_cancel)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def report(f: dict[str, Any]) -> None:
    s, w, fo = f["submit"], f["sweep"], f["follow"]
    print(f"Slurm {f['slurm']}, {f['cpus']} CPUs (shared machine)\n")
    print(f"Submit one job ({s['jobs']} each, interleaved, in-process: Python start-up excluded)")
    print(f"  raw sbatch            median {ms(s['raw_sbatch_median_s'])}  p90 {ms(s['raw_sbatch_p90_s'])}")
    print(
        f"  hpcplat submit()      median {ms(s['hpcplat_submit_median_s'])}  "
        f"p90 {ms(s['hpcplat_submit_p90_s'])}"
    )
    print(
        f"  ratio                 {s['ratio_hpcplat_over_sbatch']:.2f}x (with provenance and catalog writes)"
    )
    print(
        f"  without a catalog     median {ms(s['hpcplat_untracked_median_s'])}  "
        f"ratio {s['ratio_untracked_over_sbatch']:.2f}x (validate + render + sbatch)"
    )
    print("  hpcplat steps alone:  " + ", ".join(f"{k} {ms(v)}" for k, v in s["steps_median_s"].items()))
    print(
        f"  command lines:        hpcplat submit {ms(s['cli_hpcplat_submit_median_s'])}, "
        f"sbatch {ms(s['cli_sbatch_median_s'])}"
    )
    print(
        "  Python start-up:      "
        + ", ".join(f"{k} {ms(v)}" for k, v in s["python_startup_median_s"].items())
    )
    print(f"\n{w['points']}-point sweep")
    print(f"  {w['points']} sbatch calls        {w['sbatch_calls_s']:.2f} s")
    print(f"  one raw sbatch --array  {ms(w['one_raw_sbatch_array_s'])}")
    print(
        f"  hpcplat sweep, no catalog      {w['hpcplat_sweep_without_catalog_s']:.2f} s "
        f"({w['speedup_untracked_vs_sbatch_calls']:.1f}x faster than sbatch calls)"
    )
    print(
        f"  hpcplat sweep, {w['points']} catalog runs {w['hpcplat_sweep_with_catalog_s']:.2f} s "
        f"({w['speedup_tracked_vs_sbatch_calls']:.1f}x)"
    )
    print(f"\nFollowing {fo['jobs_followed']} jobs, per status cycle (min of repetitions)")
    for name in ("hpcplat", "submitit", "idle_baseline"):
        r = fo[name]
        print(
            f"  {name:14} slurmctld {r['slurmctld_per_cycle']:6.1f} RPC  "
            f"slurmdbd {r['slurmdbd_per_cycle']:6.1f} RPC  wall {ms(r['wall_per_cycle_s'])}"
        )
        print(f"  {'':14} ctld {r['slurmctld_types']}  dbd {r['slurmdbd_types']}")


if __name__ == "__main__":
    sys.exit(main())
