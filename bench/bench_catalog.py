"""Catalog benchmarks: metric ingest (SQLite, PostgreSQL, MLflow), the cost of one log_metric call,
``hpcplat runs`` over 10,000 runs, and the import cost of commands that need no catalog.

    .venv/bin/python bench/bench_catalog.py [--points 200000] [--quick]

Every figure and ratio printed is measured in the same run on the same machine. PostgreSQL: set
HPCPLAT_BENCH_PG_URL, else a throwaway server is started with the test fixture's helper (Debian
postgresql-15 binaries); MLflow (the ``bench`` extra) is skipped, saying so, when not installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpcplat.catalog import Catalog, RunIntent, ingest  # noqa: E402

results: dict[str, float] = {}


def report(key: str, value: float, unit: str, note: str = "") -> None:
    results[key] = value
    print(f"  {key:<44} {value:>14,.1f} {unit}{'  ' + note if note else ''}")


def best_of(repeat: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(repeat))


# -- ingest ---------------------------------------------------------------------------------------


def ingest_rate(url: str, points: int, batch: int) -> float:
    import sqlalchemy as sa

    with Catalog.open(url) as catalog:
        run_id = catalog.record_intent(RunIntent(name="bench", owner="bench", team="bench"))
        now = time.time()
        rows = [(0, step, "loss", 1.0 / (step + 1), now) for step in range(points)]
        started = time.perf_counter()
        for i in range(0, points, batch):
            with catalog.engine.begin() as conn:
                ingest.insert_points(conn, run_id, rows[i : i + batch])
        elapsed = time.perf_counter() - started
        with catalog.engine.connect() as conn:
            query = sa.text("SELECT COUNT(*) FROM metric_point WHERE run_id = :r")
            stored = conn.execute(query, {"r": run_id}).scalar_one()
        assert stored == points, (stored, points)
    return points / elapsed


@contextmanager
def postgres_url() -> Iterator[str | None]:
    given = os.environ.get("HPCPLAT_BENCH_PG_URL")
    if given:
        yield given
        return
    try:
        from tests.fixtures.postgres import PG_BIN, PostgresServer, _free_port
    except ImportError as exc:
        print(f"  PostgreSQL: skipped ({exc})")
        yield None
        return
    if not (PG_BIN / "initdb").exists():
        print(f"  PostgreSQL: skipped (no server binaries in {PG_BIN}; set HPCPLAT_BENCH_PG_URL)")
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="hpcplat-bench-pg-"))
    server = PostgresServer(directory, _free_port(), "postgres" if os.geteuid() == 0 else None)
    try:
        server.start()
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def mlflow_rates(tmp: Path, per_call: int, batched: int) -> None:
    try:
        import mlflow
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
    except ImportError:
        print("  MLflow: not installed (pip install 'hpcplat[bench]'): baseline skipped")
        return
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x keeps the file store behind this
    for store, uri in (("file", (tmp / "mlruns").as_uri()), ("sqlite", f"sqlite:///{tmp / 'mlflow.db'}")):
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment(f"bench-{uuid.uuid4().hex[:8]}")
        run = client.create_run(exp)
        rid = run.info.run_id
        n = per_call if store == "file" else max(per_call // 10, 200)
        started = time.perf_counter()
        for step in range(n):
            client.log_metric(rid, "loss", 1.0 / (step + 1), step=step)
        report(f"mlflow {store} log_metric", n / (time.perf_counter() - started), "points/s", f"({n} calls)")
        now = int(time.time() * 1000)
        started = time.perf_counter()
        for i in range(0, batched, 1000):
            client.log_batch(rid, metrics=[Metric("acc", 0.5, now, s) for s in range(i, i + 1000)])
        report(f"mlflow {store} log_batch(1000)", batched / (time.perf_counter() - started), "points/s")
    del mlflow


# -- log_metric call cost --------------------------------------------------------------------------


def log_metric_call(calls: int) -> None:
    """The call alone: the flush thread idle (a real loop logs far fewer points than this one)."""
    from hpcplat import track

    tracker = track.Tracker("0" * 36, None, flush_every=10**12, flush_interval_s=1e9)
    tracker._thread = threading.current_thread()  # no background thread: measure the call only
    track._tracker = tracker
    log_metric = track.log_metric
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for step in range(calls):
            log_metric(step=step, loss=0.5)
        samples.append((time.perf_counter() - started) / calls)
        tracker._points.clear()
    report(
        "track.log_metric(step, loss=x), call only",
        min(samples) * 1e9,
        "ns/call",
        f"(median {statistics.median(samples) * 1e9:,.0f})",
    )
    track._tracker = None


def log_metric_cost(url: str, calls: int) -> None:
    """Amortized: the calls plus the background thread writing every point to SQLite (GIL shared)."""
    from hpcplat import track

    with Catalog.open(url) as catalog:
        run_id = catalog.record_intent(RunIntent(name="bench", owner="bench", team="bench"))
    tracker = track.init(run_id=run_id, url=url)
    log_metric = track.log_metric
    for step in range(1000):  # warm up, start the flush thread
        log_metric(step=step, loss=0.5)
    track.flush()
    samples = []
    for r in range(5):
        base = (r + 1) * 10_000_000
        started = time.perf_counter()
        for step in range(base, base + calls):
            log_metric(step=step, loss=0.5)
        samples.append((time.perf_counter() - started) / calls)
    report(
        "track.log_metric, 1 value, with DB writes",
        min(samples) * 1e9,
        "ns/call",
        f"(median {statistics.median(samples) * 1e9:,.0f})",
    )
    samples = []
    for r in range(3):
        base = (r + 10) * 10_000_000
        started = time.perf_counter()
        for step in range(base, base + calls):
            log_metric(step=step, loss=0.5, acc=0.9, lr=1e-3)
        samples.append((time.perf_counter() - started) / calls)
    report("track.log_metric, 3 values, with DB writes", min(samples) * 1e9, "ns/call")
    tracker.close()
    print(f"  (all {tracker.points_written:,} points reached the database; {tracker.points_spooled} spooled)")
    track._tracker = None


# -- hpcplat runs over 10,000 runs -----------------------------------------------------------------


def fill_runs(url: str, count: int) -> None:
    import sqlalchemy as sa

    from hpcplat.catalog.models import Attempt, Run
    from hpcplat.catalog.types import utcnow

    with Catalog.open(url) as catalog, catalog.engine.begin() as conn:
        now = utcnow()
        runs = [
            {
                "id": str(uuid.uuid4()),
                "name": f"sweep-{i % 97}",
                "owner": f"user{i % 40}",
                "team": ("vision", "nlp", "speech")[i % 3],
                "tier": "normal",
                "tags": ["sweep", f"lr{i % 5}"],
                "spec": {"command": ["python", "train.py", f"--seed={i}"]},
                "status": ("COMPLETED", "RUNNING", "FAILED", "QUEUED")[i % 4],
                "status_reason": "",
                "created": now,
                "updated": now,
                "slurm_request": {"partition": "gpu"},
            }
            for i in range(count)
        ]
        conn.execute(sa.insert(Run.__table__), runs)  # type: ignore[attr-defined]
        conn.execute(
            sa.insert(Attempt.__table__),  # type: ignore[attr-defined]
            [
                {
                    "run_id": r["id"],
                    "job_id": str(1000 + i),
                    "restart": 0,
                    "nodes": "n1",
                    "state": "COMPLETED",
                    "reason": "",
                }
                for i, r in enumerate(runs)
            ],
        )


_SCRIPT = Path(sys.executable).with_name("hpcplat")
HPCPLAT = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from hpcplat.cli.main import main; main()"]
)


def cli_ms(args: list[str], env: dict[str, str], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([*HPCPLAT, *args], env=env, check=True, capture_output=True, timeout=120)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000, help="points ingested per engine")
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the catalog for `hpcplat runs`")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    args = parser.parse_args()
    points = 20_000 if args.quick else args.points
    tmp = Path(tempfile.mkdtemp(prefix="hpcplat-bench-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
        print("metric ingest (INSERT ... ON CONFLICT DO NOTHING, executemany, one transaction per batch)")
        for batch in (1000, 5000):

            def sqlite_rate(size: int = batch) -> float:
                return ingest_rate(f"sqlite:///{tmp / f'i{size}-{uuid.uuid4().hex[:6]}.db'}", points, size)

            report(f"sqlite batched x{batch}", best_of(2, sqlite_rate), "points/s")
        with postgres_url() as pg:
            if pg is not None:
                from hpcplat.catalog import schema
                from hpcplat.catalog.engine import make_engine

                engine = make_engine(pg)
                schema.upgrade(engine)
                engine.dispose()
                report("postgres batched x1000", ingest_rate(pg, points, 1000), "points/s")
                report("postgres batched x5000", ingest_rate(pg, points, 5000), "points/s")
        mlflow_rates(tmp, per_call=2000 if args.quick else 5000, batched=10_000 if args.quick else 50_000)

        print("cost of one log_metric call inside a training loop (queue append; flushed by a thread)")
        log_metric_call(100_000 if args.quick else 1_000_000)
        log_metric_cost(f"sqlite:///{tmp / 'track.db'}", 100_000 if args.quick else 1_000_000)

        print(f"`hpcplat runs` over a catalog of {args.runs:,} runs (subprocess wall time, median of 5)")
        url = f"sqlite:///{tmp / 'runs.db'}"
        fill_runs(url, args.runs)
        env = {**os.environ, "HPCPLAT_CATALOG_URL": url}
        report("hpcplat --help", cli_ms(["--help"], env), "ms")
        report("hpcplat runs (newest 50)", cli_ms(["runs"], env), "ms")
        report(
            "hpcplat runs --team nlp --status running",
            cli_ms(["runs", "--team", "nlp", "--status", "running"], env),
            "ms",
        )
        report(
            f"hpcplat runs --limit {args.runs} --json",
            cli_ms(["runs", "--limit", str(args.runs), "--json"], env),
            "ms",
        )

        code = (
            "import sys; from hpcplat.cli.main import main\n"
            "try:\n main(['--help'])\nexcept SystemExit:\n pass\n"
            "print('sqlalchemy' in sys.modules)"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()[-1]
        print(f"  `hpcplat --help` imports SQLAlchemy: {loaded}")

        print("ratios (same run)")
        sqlite = results.get("sqlite batched x1000", 0.0)
        for key in (
            "mlflow file log_metric",
            "mlflow sqlite log_metric",
            "mlflow file log_batch(1000)",
            "mlflow sqlite log_batch(1000)",
        ):
            if key in results:
                print(f"  sqlite batched x1000 / {key:<32} {sqlite / results[key]:>10,.1f}x")
        if "postgres batched x1000" in results:
            ratio = sqlite / results["postgres batched x1000"]
            print(f"  {'sqlite / postgres (batched x1000)':<51} {ratio:>10,.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
