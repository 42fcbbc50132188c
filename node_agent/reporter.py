"""GPU usage down-sampled into per-job, per-GPU windows, and the trip to the catalog.

On the sampling path (:class:`UsageWindows`): each attributed sample is added to the window of its
(job, GPU); a window closes after ``report_window_s`` or when the job leaves the GPU, and becomes
one spool line. A window covers ``start`` (one interval before its first sample) to its last
sample, so ``end - start`` is the GPU time it stands for; ``busy_samples`` counts samples above 0 %.

Off the sampling path (:class:`CatalogFlusher`): every ``flush_interval_s`` a background thread
rotates the spool and runs ``python -m node_agent.reporter`` as a subprocess, which imports the
catalog (SQLModel, SQLAlchemy), calls ``Catalog.add_gpu_usage`` and ``Catalog.add_event`` and
deletes what it sent. The agent process never imports an ORM, its memory stays small, and a
catalog that is down only leaves files in the spool (sent when it is back; windows are
idempotent in the catalog, keyed by job, node, GPU and start).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpcplat.errors import CommandError
from hpcplat.files import atomic_write
from hpcplat.runner import Runner, run
from node_agent.attribution import GpuAttribution
from node_agent.spool import Spool, read_records

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 120.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class _Window:
    job_id: str
    run_id: str | None
    uuid: str
    start: float
    last: float
    samples: int = 0
    busy: int = 0
    util_sum: float = 0.0
    max_mem_mb: float = 0.0

    def record(self, node: str) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "node": node,
            "gpu_uuid": self.uuid,
            "start": _iso(self.start),
            "end": _iso(self.last),
            "samples": self.samples,
            "busy_samples": self.busy,
            "mean_util": round(self.util_sum / self.samples, 2) if self.samples else 0.0,
            "max_mem_mb": round(self.max_mem_mb, 1),
        }


class UsageWindows:
    def __init__(self, node: str, spool: Spool | None, *, window_s: float, interval_s: float) -> None:
        self.node = node
        self.spool = spool
        self.window_s = window_s
        self.interval_s = interval_s
        self._open: dict[tuple[str, str], _Window] = {}
        self.closed = 0

    def observe(self, attributions: list[GpuAttribution]) -> None:
        seen: set[tuple[str, str]] = set()
        for item in attributions:
            sample = item.sample
            job_id = item.job_id
            if job_id is None or sample is None or sample.utilization_pct is None or item.job is None:
                continue
            key = (job_id, item.gpu.uuid)
            seen.add(key)
            window = self._open.get(key)
            if window is None:
                window = _Window(
                    job_id, item.job.run_id, item.gpu.uuid, sample.at - self.interval_s, sample.at
                )
                self._open[key] = window
            window.samples += 1
            window.busy += 1 if sample.utilization_pct > 0 else 0
            window.util_sum += sample.utilization_pct
            window.max_mem_mb = max(window.max_mem_mb, sample.memory_used_mb or 0.0)
            window.last = sample.at
            if window.last - window.start >= self.window_s:
                self._close(key)
        for key in [k for k in self._open if k not in seen]:
            self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        window = self._open.pop(key)
        self.closed += 1
        if self.spool is not None and window.samples:
            self.spool.append("usage", window.record(self.node))

    def close_all(self) -> None:
        for key in list(self._open):
            self._close(key)


class CatalogFlusher:
    """Sends the spool to the catalog from a subprocess, every ``interval_s``, in a thread."""

    def __init__(
        self, spool: Spool, catalog_url: str | None, interval_s: float, *, runner: Runner = run
    ) -> None:
        self.spool = spool
        self.catalog_url = catalog_url
        self.interval_s = interval_s
        self._run = runner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.flushes = 0

    def flush(self) -> bool:
        self.spool.rotate()
        if not self.catalog_url:
            return False
        if not self.spool.ready():
            return True
        argv = [
            sys.executable,
            "-m",
            "node_agent.reporter",
            "--spool",
            str(self.spool.dir),
            "--catalog",
            self.catalog_url,
        ]
        try:
            result = self._run(argv, timeout=FLUSH_TIMEOUT_S, check=False)
        except CommandError as exc:
            ok, detail = False, exc.message
        else:
            ok, detail = result.returncode == 0, (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        self.flushes += 1
        if not ok and not self._failing:
            log.error(
                "catalog unreachable (%s); usage and events stay in %s until it is back",
                detail,
                self.spool.dir,
            )
        elif ok and self._failing:
            log.warning("catalog reachable again: spool sent")
        self._failing = not ok
        return ok

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="catalog-flush", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=FLUSH_TIMEOUT_S + 5)


# --- the subprocess ----------------------------------------------------------------------------


def send(spool_dir: Path, catalog_url: str) -> tuple[int, int]:
    """Send every ready spool file to the catalog; returns (usage windows, events) sent."""
    from hpcplat.catalog import Catalog
    from hpcplat.catalog.models import GpuUsageCreate

    windows = events = 0
    catalog = Catalog.open(catalog_url)
    try:
        for path in Spool(spool_dir).ready():
            records = read_records(path)
            usage = [
                GpuUsageCreate(
                    job_id=r["job_id"],
                    node=r["node"],
                    gpu_uuid=r["gpu_uuid"],
                    start=datetime.fromisoformat(r["start"]),
                    end=datetime.fromisoformat(r["end"]),
                    samples=r["samples"],
                    busy_samples=r["busy_samples"],
                    mean_util=r["mean_util"],
                    max_mem_mb=r["max_mem_mb"],
                )
                for r in records
                if r.get("type") == "usage"
            ]
            catalog.add_gpu_usage(usage)
            windows += len(usage)
            pending = [r for r in records if r.get("type") == "event"]
            try:
                while pending:
                    r = pending[0]
                    prefix = "[dry-run] " if r.get("dry_run") else ""
                    catalog.add_event(
                        kind=r["kind"],
                        reason=f"{prefix}{r['action']}: {r['reason']}",
                        job_id=r.get("job_id"),
                        source=f"hpcplat-node-agent@{r.get('node', '')}",
                        at=datetime.fromtimestamp(float(r["at"]), UTC),
                    )
                    pending.pop(0)
                    events += 1
            finally:
                if pending:  # keep only what was not sent (usage windows are idempotent anyway)
                    _rewrite(path, pending)
            path.unlink()
    finally:
        catalog.close()
    return windows, events


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, text, mode=path.stat().st_mode & 0o777)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node_agent.reporter", description=send.__doc__)
    parser.add_argument("--spool", required=True, type=Path)
    parser.add_argument("--catalog", required=True)
    args = parser.parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from hpcplat.errors import HpcplatError

    try:
        windows, events = send(args.spool, args.catalog)
    except HpcplatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"error: catalog database: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"sent {windows} GPU usage window(s) and {events} event(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
