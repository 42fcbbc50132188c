"""In-job tracking (hpcplat.track) against real catalog databases."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcplat import track
from hpcplat.catalog import Catalog, RunIntent, spool


@pytest.fixture(autouse=True)
def _clean_tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "HPCPLAT_RUN_ID",
        "HPCPLAT_CATALOG_URL",
        "HPCPLAT_JOB_DIR",
        "RANK",
        "SLURM_PROCID",
        "SLURM_RESTART_COUNT",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    if track._tracker is not None:
        track._tracker.close()
    track._tracker = None


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog.open(catalog_url) as cat:
        yield cat


def _run(catalog: Catalog) -> str:
    return catalog.record_intent(RunIntent(name="t", owner="alice", team="vision"))


def _points(catalog: Catalog) -> int:
    with catalog.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM metric_point").scalar_one())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10**400, "metric 'loss': int cannot be a single float"),
        ("0.5", r"metric 'loss': '0.5' is not a number \(str\)"),
        (True, r"metric 'loss': True is not a number \(bool\)"),
        (None, "metric 'loss': None is not a number"),
        ([1.0], r"metric 'loss': \[1.0\] is not a number \(list\)"),
    ],
)
def test_bad_values_are_refused_at_log_time(value: object, message: str, catalog: Catalog) -> None:
    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url)
    with pytest.raises(ValueError, match=message):
        track.log_metric(step=1, acc=0.5, loss=value)
    track.flush()
    assert _points(catalog) == 0  # nothing of a refused call is recorded


def test_numbers_of_other_types_are_accepted(catalog: Catalog) -> None:
    np = pytest.importorskip("numpy")
    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url)
    track.log_metric(step=np.int64(3), a=1, b=np.float32(0.25), c=np.float64(2.5))
    track.flush()
    assert catalog.metric_series(run_id, "b") == [(3, 0.25)]
    assert catalog.metric_series(run_id, "a") == [(3, 1.0)]
    with pytest.raises(TypeError):
        track.log_metric(step=1.5, a=1.0)  # type: ignore[arg-type]


def test_batches_reach_the_database(catalog: Catalog) -> None:
    run_id = _run(catalog)
    tracker = track.init(run_id=run_id, url=catalog.url, flush_every=1000, flush_interval_s=0.2)
    for step in range(2500):
        track.log_metric(step=step, loss=1.0 / (step + 1), acc=step / 2500)
    deadline = time.monotonic() + 60
    while _points(catalog) < 5000 and time.monotonic() < deadline:  # the background thread flushes
        time.sleep(0.05)
    assert _points(catalog) == 5000
    assert tracker.points_written == 5000 and tracker.points_spooled == 0
    assert catalog.metric_series(run_id, "loss")[-1] == (2499, 1.0 / 2500)


def test_requeued_attempt_relogging_adds_nothing_twice(catalog: Catalog) -> None:
    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url, attempt=0)
    for step in range(100):
        track.log_metric(step=step, loss=float(step))
    track.flush()
    # preempted after step 99, resumed from the checkpoint of step 50
    track.init(run_id=run_id, url=catalog.url, attempt=1)
    for step in range(50, 150):
        track.log_metric(step=step, loss=-1.0)
    track.flush()
    series = dict(catalog.metric_series(run_id, "loss"))
    assert len(series) == 150 and _points(catalog) == 150
    assert series[60] == 60.0 and series[120] == -1.0


def test_unreachable_database_spools_and_nothing_is_lost(catalog: Catalog, tmp_path: Path) -> None:
    run_id = _run(catalog)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    tracker = track.init(
        run_id=run_id,
        url=f"postgresql://x@127.0.0.1:{dead_port}/db",
        job_dir=str(tmp_path),
        flush_interval_s=3600,
    )
    track.log_params(lr=0.1)
    for step in range(300):
        track.log_metric(step=step, loss=float(step))
    track.flush()
    for step in range(300, 400):
        track.log_metric(step=step, loss=float(step))
    track.flush()
    assert tracker.points_spooled == 400 and tracker.points_written == 0
    files = list((tmp_path / "spool").glob("*.jsonl"))
    assert len(files) == 1
    assert catalog.ingest_spool(files[0]) == 400
    assert catalog.ingest_spool(files[0]) == 0
    assert _points(catalog) == 400
    assert catalog.details(run_id).params == {"lr": 0.1}


def test_only_rank_zero_records_unless_asked(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _run(catalog)
    monkeypatch.setenv("SLURM_PROCID", "3")
    tracker = track.init(run_id=run_id, url=catalog.url)
    track.log_metric(step=0, loss=1.0)
    track.flush()
    assert not tracker.enabled and _points(catalog) == 0
    with pytest.raises(ValueError, match="not a number"):  # values are still checked
        track.log_metric(step=0, loss="nan")
    track.init(run_id=run_id, url=catalog.url, all_ranks=True)
    track.log_metric(step=0, loss=1.0)
    track.flush()
    assert _points(catalog) == 1


def test_without_a_run_tracking_is_off(caplog: pytest.LogCaptureFixture) -> None:
    track.log_metric(step=0, loss=1.0)
    assert "HPCPLAT_RUN_ID is not set" in caplog.text
    assert track.run_id() is None


def test_artifacts(catalog: Catalog, tmp_path: Path) -> None:
    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url, attempt=2)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"weights")
    track.log_artifact(ckpt, kind="checkpoint")
    track.log_artifact(ckpt, kind="checkpoint")  # same content: one record
    with pytest.raises(ValueError, match="unknown artifact kind 'weights'"):
        track.log_artifact(ckpt, kind="weights")
    track.flush()
    artifacts = catalog.details(run_id).artifacts
    assert [(a.kind.value, a.size, a.attempt) for a in artifacts] == [("CHECKPOINT", 7, 2)]
    assert artifacts[0].sha256 == hashlib.sha256(b"weights").hexdigest()
    assert artifacts[0].path == str(ckpt.resolve())


def _script(body: str) -> str:
    return textwrap.dedent(body)


def test_flushed_at_exit_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Catalog.open(url) as catalog:
        run_id = _run(catalog)
    env = {**os.environ, "HPCPLAT_RUN_ID": run_id, "HPCPLAT_CATALOG_URL": url, "SLURM_RESTART_COUNT": "1"}
    code = _script(
        """
        from hpcplat import track
        track.log_params(lr=0.5, layers=[1, 2])
        for step in range(1000):
            track.log_metric(step=step, loss=1.0 / (step + 1))
        # no flush: the atexit hook writes what is left
        """
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    with Catalog.open(url) as catalog:
        details = catalog.details(run_id)
    assert details.params == {"lr": 0.5, "layers": [1, 2]}
    assert [(m.name, m.count, m.step) for m in details.metrics] == [("loss", 1000, 999)]


def test_flushed_on_the_checkpoint_signal(tmp_path: Path) -> None:
    pytest.importorskip("hpcplat.checkpoint")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Catalog.open(url) as catalog:
        run_id = _run(catalog)
    env = {**os.environ, "HPCPLAT_RUN_ID": run_id, "HPCPLAT_CATALOG_URL": url}
    code = _script(
        """
        import os, sqlite3, sys
        from hpcplat import checkpoint, track
        track.init(flush_interval_s=3600)
        for step in range(10):
            track.log_metric(step=step, loss=1.0)
        checkpoint.run_signal_callbacks()   # what the training loop runs at the step after SIGUSR1
        db = sys.argv[1]
        print(sqlite3.connect(db).execute("SELECT COUNT(*) FROM metric_point").fetchone()[0])
        sys.stdout.flush()
        os._exit(0)                         # no atexit: only the signal callback can have written
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c.db")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10"


def test_importing_track_is_cheap() -> None:
    code = (
        "import sys; from hpcplat import track; print('sqlalchemy' in sys.modules, 'sqlmodel' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False False"


def test_a_refused_write_is_spooled_not_lost(catalog: Catalog, tmp_path: Path) -> None:
    """The catalog answers but refuses (here: the run is unknown to it): points go to the spool."""
    tracker = track.init(run_id="0" * 36, url=catalog.url, job_dir=str(tmp_path))
    track.log_metric(step=0, loss=1.0)
    track.flush()
    assert tracker.points_spooled == 1 and tracker.points_written == 0
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("in_job", [True, False], ids=["job-dir", "home-cache"])
def test_spool_files_are_private_to_their_owner(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_job: bool
) -> None:
    """Metrics spooled on a shared node are readable by their owner only, whatever the umask."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    old_umask = os.umask(0o022)
    try:
        job_dir = tmp_path / "job" if in_job else None
        tracker = track.init(run_id="0" * 36, url=catalog.url, job_dir=str(job_dir) if job_dir else None)
        track.log_metric(step=0, loss=1.0)
        track.flush()
        assert tracker.points_spooled == 1
        base = job_dir if job_dir else tmp_path / "home" / ".cache" / "hpcplat"
        (spooled,) = (base / "spool").glob("*.jsonl")
        spool.write_offset(spooled, 1)  # what ingestion keeps next to the spool
    finally:
        os.umask(old_umask)
    assert _mode(spooled) == 0o600 and _mode(spool.offset_path(spooled)) == 0o600
    created = [base / "spool", base] if in_job else [base / "spool", base, base.parent, base.parent.parent]
    assert [oct(_mode(d)) for d in created] == [oct(0o700)] * len(created)


def test_points_logged_before_a_checkpoint_survive_a_kill_right_after_it(
    catalog: Catalog, catalog_url: str, tmp_path: Path
) -> None:
    """A resumed attempt starts after the checkpoint: what was logged before it must be durable."""
    run_id = _run(catalog)
    script = textwrap.dedent(
        f"""
        import os, signal
        from hpcplat import track
        from hpcplat.checkpoint import Checkpointer
        track.init(run_id={run_id!r}, url={catalog_url!r}, job_dir={str(tmp_path)!r},
                   flush_interval_s=3600, flush_every=10**6)
        for s in range(3):
            track.log_metric(step=s, loss=1.0 / (s + 1))
        cp = Checkpointer({str(tmp_path / "ck")!r}, rank=0, world_size=1, handle_signals=False)
        cp.save({{"step": 2}}, 2)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -9, proc.stderr
    assert _points(catalog) == 3


def test_nan_and_infinities_are_recorded(catalog: Catalog, tmp_path: Path) -> None:
    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url)
    track.log_metric(step=0, loss=1.0)
    track.log_metric(step=1, loss=float("inf"), acc=float("-inf"))
    track.log_metric(step=2, loss=float("nan"))
    track.flush()
    loss = catalog.metric_series(run_id, "loss")
    assert loss[:2] == [(0, 1.0), (1, float("inf"))] and loss[2][0] == 2 and loss[2][1] != loss[2][1]
    assert catalog.metric_series(run_id, "acc") == [(1, float("-inf"))]
    # and through the spool
    spooled = tmp_path / "s.jsonl"
    spool.append(spooled, [{"t": "m", "r": run_id, "a": 0, "pts": [[3, "loss", float("nan"), 1.0]]}])
    assert catalog.ingest_spool(spooled) == 1
    assert len(catalog.metric_series(run_id, "loss")) == 4


def test_the_board_series_shows_non_finite_points_as_gaps(catalog: Catalog) -> None:
    import json

    from hpcplat.server.board.data import series

    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url)
    for step, value in enumerate([1.0, float("nan"), 0.5, float("inf"), 0.25]):
        track.log_metric(step=step, loss=value)
    track.flush()
    data = series(catalog.store, run_id, "loss")
    assert data["steps"] == [0, 1, 2, 3, 4] and data["values"] == [1.0, None, 0.5, None, 0.25]
    assert data["nonfinite"] == [{"step": 1, "value": "NaN"}, {"step": 3, "value": "Infinity"}]
    json.dumps(data, allow_nan=False)  # what the server sends is valid JSON


def test_out_of_range_step_is_refused_at_the_call(catalog: Catalog) -> None:
    run_id = _run(catalog)
    track.init(run_id=run_id, url=catalog.url)
    track.log_metric(step=1, loss=0.5)
    with pytest.raises(ValueError, match="step 1180591620717411303424 is out of range"):
        track.log_metric(step=2**70, loss=1.0)
    track.flush()
    assert catalog.metric_series(run_id, "loss") == [(1, 0.5)]


def test_a_bad_spooled_point_is_skipped_and_never_blocks_the_file(
    catalog: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = _run(catalog)
    spooled = tmp_path / "s.jsonl"
    pts = [[1, "loss", 1.0, 1.0], [2**70, "loss", 2.0, 1.0], [3, "loss", "x", 1.0], [4, "loss", 4.0, 1.0]]
    spool.append(spooled, [{"t": "m", "r": run_id, "a": 0, "pts": pts}, {"t": "m", "r": run_id}])
    assert catalog.ingest_spool(spooled) == 2
    assert catalog.metric_series(run_id, "loss") == [(1, 1.0), (4, 4.0)]
    assert "step 1180591620717411303424 is not a 64-bit integer" in caplog.text
    spool.append(spooled, [{"t": "m", "r": run_id, "a": 0, "pts": [[5, "loss", 5.0, 1.0]]}])
    assert catalog.ingest_spool(spooled) == 1  # the file goes on


def test_a_failed_spool_write_keeps_the_batch_and_retries(
    catalog: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job_dir = tmp_path / "job"
    job_dir.write_text("")  # the spool directory cannot be created: like a full disk
    tracker = track.init(run_id="0" * 36, url=catalog.url, job_dir=str(job_dir))
    track.log_metric(step=0, loss=1.0)
    track.flush()
    assert tracker.points_spooled == 0 and len(tracker._points) == 1
    assert "keeping 1 points in memory" in caplog.text
    job_dir.unlink()
    job_dir.mkdir()
    track.log_metric(step=1, loss=2.0)
    track.flush()
    assert tracker.points_spooled == 2 and len(tracker._points) == 0
    (spooled,) = (job_dir / "spool").glob("*.jsonl")
    assert [p[0] for p in spool.read_records(spooled)[0][0]["pts"]] == [0, 1]


def test_pending_points_are_bounded(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(track, "MAX_PENDING_POINTS", 3)
    job_dir = tmp_path / "job"
    job_dir.write_text("")
    tracker = track.init(run_id="0" * 36, url=catalog.url, job_dir=str(job_dir))
    for step in range(5):
        track.log_metric(step=step, loss=1.0)
    track.flush()
    assert [p[0] for p in tracker._points] == [2, 3, 4] and tracker.points_dropped == 2
    assert "gave up on the 2 oldest points" in caplog.text


@pytest.mark.parametrize("before", ["default", "ignore", "handler"])
def test_flushed_on_sigterm_without_the_checkpoint_helper(tmp_path: Path, before: str) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Catalog.open(url) as catalog:
        run_id = _run(catalog)
    env = {**os.environ, "HPCPLAT_RUN_ID": run_id, "HPCPLAT_CATALOG_URL": url}
    setup = {
        "default": "",
        "ignore": "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "handler": "signal.signal(signal.SIGTERM, lambda *a: os._exit(7))",
    }[before]
    code = _script(
        f"""
        import os, signal
        {setup}
        from hpcplat import track
        track.init(flush_interval_s=3600, flush_every=10**6)
        for step in range(10):
            track.log_metric(step=step, loss=1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(0)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == {"default": -15, "ignore": 0, "handler": 7}[before], proc.stderr
    with Catalog.open(url) as catalog:
        assert len(catalog.metric_series(run_id, "loss")) == 10
