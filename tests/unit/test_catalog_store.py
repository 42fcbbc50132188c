"""The catalog service on real SQLite and real PostgreSQL (``catalog_url`` runs each test on both)."""

from __future__ import annotations

import getpass
import grp
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from hpcplat.catalog import Catalog, EventKind, GpuUsageCreate, RunIntent, RunStatus
from hpcplat.catalog import spool as spool_format
from hpcplat.errors import CatalogError, UsageError


def _count(catalog: Catalog, table: str) -> int:
    with catalog.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def _intent(**overrides: object) -> RunIntent:
    base: dict[str, object] = {
        "name": "resnet",
        "owner": getpass.getuser(),
        "team": "vision",
        "tier": "normal",
        "tags": ["baseline", "a_b"],
        "spec": {"command": ["python", "train.py"], "gpus": 2},
        "params": {"lr": 0.1, "layers": [64, 128], "opt": "sgd"},
        "sbatch_script": "#!/bin/bash\n#SBATCH --gres=gpu:2\nsrun python train.py\n",
        "slurm_request": {"partition": "gpu", "qos": "normal", "gres": "gpu:2"},
        "provenance": {
            "code": {
                "vcs": "git",
                "root": "/src/proj",
                "repo": "git@example.org:proj.git",
                "commit": "a" * 40,
                "branch": "main",
                "dirty": True,
                "diff": "diff --git a/x b/x\n",
                "untracked": ["notes.txt"],
            },
            "env": {
                "python_version": "3.11.7",
                "modules": ["gcc/12", "cuda/12.2"],
                "packages": {"torch": "2.3.0", "numpy": "1.26.4"},
                "env_vars": {"SLURM_JOB_ID": "1"},
                "cuda_version": "12.2",
            },
        },
    }
    base.update(overrides)
    return RunIntent(**base)  # type: ignore[arg-type]


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog.open(catalog_url) as cat:
        yield cat


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    root = tmp_path / "digits"
    (root / "train").mkdir(parents=True)
    (root / "train" / "x.bin").write_bytes(b"\x00\x01" * 100)
    (root / "labels.csv").write_text("0\n1\n")
    return root


# -- capture at submit ----------------------------------------------------------------------------


def test_record_intent_writes_run_and_provenance_in_one_go(catalog: Catalog, dataset_dir: Path) -> None:
    catalog.register_dataset("digits", dataset_dir)
    run_id = catalog.record_intent(_intent(datasets=[("digits", "latest")]))
    details = catalog.details(run_id)
    assert details.run.status is RunStatus.SUBMITTING
    assert details.run.tags == ["baseline", "a_b"]
    assert details.run.spec == {"command": ["python", "train.py"], "gpus": 2}
    assert details.params == {"lr": 0.1, "layers": [64, 128], "opt": "sgd"}
    assert (
        details.code is not None
        and details.code.commit == "a" * 40
        and details.code.diff == "diff --git a/x b/x\n"
    )
    assert details.env is not None and details.env.packages == {"torch": "2.3.0", "numpy": "1.26.4"}
    assert details.env.modules == ["gcc/12", "cuda/12.2"]
    assert [d.ref for d in details.datasets] == ["digits@1"]
    assert catalog.sbatch_script(run_id).startswith("#!/bin/bash")
    assert details.attempts == []


def test_record_intent_keeps_the_run_id_the_submitter_chose(catalog: Catalog) -> None:
    """The submission service picks the id first, so the recorded script is the submitted one."""
    chosen = "5f0c3a52-9d1e-4c8b-a6f2-0123456789ab"
    script = f"#!/bin/bash\nexport HPCPLAT_RUN_ID={chosen}\n"
    assert catalog.record_intent(_intent(run_id=chosen, sbatch_script=script)) == chosen
    assert catalog.sbatch_script(chosen) == script
    assert catalog.record_intent(_intent()) != chosen  # none chosen: a new one


def test_blobs_are_stored_once(catalog: Catalog) -> None:
    catalog.record_intent(_intent())
    catalog.record_intent(_intent())
    # script, diff and package list: three blobs shared by both runs
    assert _count(catalog, "blob") == 3


def test_confirm_then_abandon_is_refused(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    catalog.confirm_submission(run_id, "4242")
    catalog.confirm_submission(run_id, "4242")  # a retry adds nothing
    details = catalog.details(run_id)
    assert details.run.status is RunStatus.QUEUED
    assert [(a.job_id, a.restart) for a in details.attempts] == [("4242", 0)]
    assert EventKind.SUBMITTED in [e.kind for e in details.events]
    with pytest.raises(CatalogError, match="already has a Slurm job"):
        catalog.abandon_intent(run_id, "sbatch failed")
    assert catalog.run(run_id).status is RunStatus.QUEUED


def test_abandon_marks_not_submitted_with_reason(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    catalog.abandon_intent(run_id, "sbatch: error: invalid partition specified: gpux")
    run = catalog.run(run_id)
    assert run.status is RunStatus.NOT_SUBMITTED
    assert "invalid partition" in run.status_reason
    assert [e.kind for e in catalog.details(run_id).events] == [EventKind.SUBMIT_FAILED]


def test_intent_with_unknown_dataset_writes_nothing(catalog: Catalog, dataset_dir: Path) -> None:
    catalog.register_dataset("digits", dataset_dir)
    with pytest.raises(UsageError, match=r"dataset 'digits' has no version 9 \(versions: 1\)"):
        catalog.record_intent(_intent(datasets=[("digits", "9")]))
    with pytest.raises(UsageError, match="no dataset named 'imagenet'"):
        catalog.record_intent(_intent(datasets=[("imagenet", "latest")]))
    assert _count(catalog, "run") == 0
    assert _count(catalog, "code_snapshot") == 0


def test_dataset_restricted_to_groups(catalog: Catalog, dataset_dir: Path) -> None:
    me = getpass.getuser()
    my_group = grp.getgrgid(os.getgid()).gr_name
    other = next(g.gr_name for g in grp.getgrall() if g.gr_name != my_group and me not in g.gr_mem)
    catalog.register_dataset("secret", dataset_dir, groups=[other])
    with pytest.raises(UsageError, match=f"restricted to members of {other}"):
        catalog.record_intent(_intent(datasets=[("secret", "1")]))
    with pytest.raises(UsageError, match="may not use dataset secret@1"):
        catalog.resolve_dataset("secret", "1")
    assert _count(catalog, "run") == 0
    catalog.register_dataset("secret", dataset_dir, groups=[my_group, other])
    assert catalog.resolve_dataset("secret").version == 2
    run_id = catalog.record_intent(_intent(datasets=[("secret", "2")]))
    assert [d.ref for d in catalog.details(run_id).datasets] == ["secret@2"]
    with pytest.raises(UsageError, match="unknown Unix group"):
        catalog.register_dataset("secret", dataset_dir, groups=["no-such-group-hpcplat"])


def test_dataset_versions_and_changed_files(catalog: Catalog, dataset_dir: Path) -> None:
    first, created = catalog.register_dataset("digits", dataset_dir)
    assert created and first.version == 1 and first.file_count == 2
    again, created = catalog.register_dataset("digits", dataset_dir)
    assert not created and again.version == 1
    (dataset_dir / "labels.csv").write_text("0\n1\n2\n")
    with pytest.raises(UsageError, match=r"changed since it was registered: changed: labels.csv") as info:
        catalog.resolve_dataset("digits", "1")
    assert "hpcplat data register digits" in str(info.value)
    assert catalog.resolve_dataset("digits", "1", verify=False).version == 1
    second, created = catalog.register_dataset("digits", dataset_dir)
    assert created and second.version == 2 and second.content_hash != first.content_hash
    assert [v.version for v in catalog.dataset_versions("digits")] == [1, 2]
    assert [(v.dataset, v.version) for v in catalog.datasets()] == [("digits", 2)]


# -- metrics, params, spool -------------------------------------------------------------------------


def test_metrics_first_value_wins_and_never_duplicates(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    now = time.time()
    catalog.log_metrics(run_id, [(0, s, "loss", 1.0 / (s + 1), now) for s in range(100)])
    # a requeued attempt resumes from step 80 and logs steps 80..119 again
    catalog.log_metrics(run_id, [(1, s, "loss", 9.0, now) for s in range(80, 120)])
    series = catalog.metric_series(run_id, "loss")
    assert [s for s, _ in series] == list(range(120))
    assert series[90] == (90, 1.0 / 91)
    assert series[110] == (110, 9.0)
    assert _count(catalog, "metric_point") == 120


def test_params_upsert(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    catalog.log_params(run_id, {"lr": 0.01, "seed": 7, "note": {"a": [1, 2]}})
    assert catalog.details(run_id).params == {
        "lr": 0.01,
        "layers": [64, 128],
        "opt": "sgd",
        "seed": 7,
        "note": {"a": [1, 2]},
    }


def test_spool_ingest_is_idempotent_and_waits_for_whole_lines(catalog: Catalog, tmp_path: Path) -> None:
    run_id = catalog.record_intent(_intent())
    path = spool_format.spool_path(tmp_path, run_id)
    spool_format.append(
        path, [{"t": "m", "r": run_id, "a": 0, "pts": [[s, "loss", s * 0.5, 1.0] for s in range(50)]}]
    )
    spool_format.append(path, [{"t": "p", "r": run_id, "params": {"seed": 3}}])
    with path.open("ab") as handle:  # a torn line: the job died mid-write
        handle.write(b'{"t":"m","r":"' + run_id.encode() + b'","a":0,"pts":[[50,"loss",')
    assert catalog.ingest_spool(path) == 50
    assert catalog.ingest_spool(path) == 0
    assert _count(catalog, "metric_point") == 50
    with path.open("ab") as handle:  # the rest of the line arrives
        handle.write(b"25.0,1.0]]}\n")
    assert catalog.ingest_spool(path) == 1
    spool_format.write_offset(path, 0)  # even a full re-read adds nothing twice
    assert catalog.ingest_spool(path) == 51
    assert _count(catalog, "metric_point") == 51
    assert catalog.details(run_id).params["seed"] == 3


def test_spool_for_unknown_run_is_a_clear_error(catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    spool_format.append(path, [{"t": "m", "r": "0" * 36, "a": 0, "pts": [[1, "loss", 1.0, 1.0]]}])
    with pytest.raises(CatalogError, match="refers to a run this catalog does not have"):
        catalog.ingest_spool(path)


# -- events, GPU usage ------------------------------------------------------------------------------


def test_events_find_their_run_from_the_job_id(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    catalog.confirm_submission(run_id, "77")
    catalog.add_event(
        kind="idle_warning", reason="GPU 0 idle for 60 min", job_id="77", source="node-agent@n1"
    )
    catalog.add_event(kind=EventKind.NODE, reason="n3 drained: ECC errors", source="node-agent@n3")
    kinds = [(e.kind, e.source) for e in catalog.details(run_id).events]
    assert (EventKind.IDLE_WARNING, "node-agent@n1") in kinds
    assert _count(catalog, "event") == 3
    with pytest.raises(ValueError, match="unknown event kind 'bogus'"):
        catalog.add_event(kind="bogus", reason="x")


def test_gpu_usage_used_and_idle_hours(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    catalog.confirm_submission(run_id, "88")
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    windows = [
        GpuUsageCreate(
            job_id="88",
            node="n1",
            gpu_uuid=f"GPU-{i}",
            start=start,
            end=start + timedelta(hours=1),
            samples=120,
            busy_samples=busy,
            mean_util=50.0,
            max_mem_mb=1000.0,
        )
        for i, busy in enumerate((120, 0))
    ]
    catalog.add_gpu_usage(windows)
    # the agent sends the first window again with more samples: it replaces itself
    catalog.add_gpu_usage([windows[0].model_copy(update={"busy_samples": 60})])
    details = catalog.details(run_id)
    assert _count(catalog, "gpu_usage") == 2
    assert details.gpu_hours_used == pytest.approx(0.5)
    assert details.gpu_hours_idle == pytest.approx(1.5)


# -- queries ----------------------------------------------------------------------------------------


def test_list_runs_filters(catalog: Catalog) -> None:
    a = catalog.record_intent(_intent(name="a", owner="alice", team="vision", tags=["x_y"]))
    b = catalog.record_intent(_intent(name="b", owner="bob", team="nlp", tags=["xzy"]))
    c = catalog.record_intent(_intent(name="c", owner="alice", team="nlp", tags=[]))
    catalog.confirm_submission(b, "5")

    def ids(**filters: object) -> list[str]:
        return [r.id for r in catalog.list_runs(**filters)]

    assert ids() == [c, b, a]
    assert ids(user="alice") == [c, a]
    assert ids(team="nlp") == [c, b]
    assert ids(tag="x_y") == [a]  # "_" is not a wildcard
    assert ids(status="queued") == [b]
    assert ids(status="submitting,queued", limit=2) == [c, b]
    assert catalog.list_runs(status="queued")[0].job_id == "5"
    with pytest.raises(UsageError, match="unknown run status 'runing'"):
        catalog.list_runs(status="runing")


def test_run_reference_by_prefix(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    assert catalog.resolve_run_id(run_id[:6]) == run_id
    with pytest.raises(UsageError, match="no run"):
        catalog.resolve_run_id("ffffffff-nope")
    with pytest.raises(UsageError, match="too short"):
        catalog.resolve_run_id("ab")


@pytest.mark.parametrize("ref", ["%%%%", "____", "\\%%%", "____%"])
def test_run_reference_wildcards_are_literal(catalog: Catalog, ref: str) -> None:
    catalog.record_intent(_intent())
    with pytest.raises(UsageError, match="no run"):
        catalog.resolve_run_id(ref)


def test_events_job_id_wildcards_are_literal(catalog: Catalog) -> None:
    run_id = catalog.record_intent(_intent())
    catalog.confirm_submission(run_id, "4242_7")
    catalog.add_event(kind=EventKind.NODE, reason="x", job_id="4242_7", source="t")
    catalog.add_event(kind=EventKind.NODE, reason="x", job_id="%", source="t")
    catalog.add_event(kind=EventKind.NODE, reason="x", job_id="4%", source="t")
    assert len(catalog.details(run_id).events) == 2  # the submission and the one for 4242_7


def test_compare_marks_differences(catalog: Catalog) -> None:
    a = catalog.record_intent(_intent())
    other = _intent(params={"lr": 0.2, "layers": [64, 128], "opt": "sgd"})
    other.provenance["env"] = {**other.provenance["env"], "packages": {"torch": "2.4.0", "numpy": "1.26.4"}}
    b = catalog.record_intent(other)
    catalog.log_metrics(a, [(0, 10, "acc", 0.9, 1.0)])
    catalog.log_metrics(b, [(0, 10, "acc", 0.9, 1.0)])
    result = catalog.compare([a[:8], b[:8]])
    differing = {(r.section, r.key) for r in result.differences}
    assert ("params", "lr") in differing
    assert ("packages", "torch") in differing
    assert ("params", "opt") not in differing
    assert ("metrics", "acc") not in differing


# -- concurrency and opening ------------------------------------------------------------------------


def test_two_writers_at_once(catalog_url: str) -> None:
    """Writers in several threads, each with its own Catalog: no lost or half-written record."""
    setup = Catalog.open(catalog_url)
    run_id = setup.record_intent(_intent())
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            with Catalog.open(catalog_url) as cat:
                for i in range(10):
                    rid = cat.record_intent(_intent(name=f"w{worker}-{i}"))
                    cat.confirm_submission(rid, f"{worker}{i:03d}")
                    cat.log_metrics(
                        run_id, [(0, worker * 1000 + i * 10 + k, "loss", 1.0, 1.0) for k in range(10)]
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count(setup, "run") == 41
    assert _count(setup, "attempt") == 40
    assert _count(setup, "metric_point") == 400
    setup.close()


def test_new_sqlite_catalog_is_created_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'catalog.db'}"
    with Catalog.open(url) as catalog:
        assert catalog.list_runs() == []
    with sa.create_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_new_sqlite_catalog_is_private_to_its_owner(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    url = f"sqlite:///{tmp_path / 'shared' / 'mine' / 'deeper' / 'catalog.db'}"
    old_umask = os.umask(0o022)
    try:
        with Catalog.open(url) as catalog:
            catalog.record_intent(_intent())
            files = sorted((tmp_path / "shared" / "mine" / "deeper").iterdir())
            modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    finally:
        os.umask(old_umask)
    assert modes == {
        name: "0o600" for name in ("catalog.db", "catalog.db-shm", "catalog.db-wal", "catalog.db.lock")
    }
    for directory in ("shared/mine", "shared/mine/deeper"):
        assert oct((tmp_path / directory).stat().st_mode & 0o777) == "0o700", directory
    assert oct((tmp_path / "shared").stat().st_mode & 0o777) == "0o755"  # not created by hpcplat


@pytest.mark.postgres
def test_postgres_without_schema_says_to_upgrade(postgres_server: object) -> None:
    url = postgres_server.create_database()  # type: ignore[attr-defined]
    with pytest.raises(CatalogError, match=r"has no hpcplat schema\n  hint: run `hpcplat db upgrade`"):
        Catalog.open(url)


def test_old_schema_says_to_upgrade(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcplat.catalog import schema

    # this hpcplat pretends to know a newer revision than the database has
    newer = f"{int(schema.HEAD) + 1:04d}"
    monkeypatch.setattr(schema, "REVISIONS", (*schema.REVISIONS, newer))
    monkeypatch.setattr(schema, "HEAD", newer)
    expected = rf"old schema \(revision {schema.REVISIONS[-2]}; this hpcplat needs {newer}\)"
    with pytest.raises(CatalogError, match=expected) as info:
        Catalog.open(catalog_url)
    assert "hpcplat db upgrade" in str(info.value)


def test_schema_from_a_newer_hpcplat(catalog_url: str) -> None:
    engine = sa.create_engine(catalog_url.replace("postgresql+psycopg", "postgresql+psycopg"))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    engine.dispose()
    with pytest.raises(CatalogError, match="revision 0099, unknown to this hpcplat") as info:
        Catalog.open(catalog_url)
    assert "upgrade hpcplat" in str(info.value)


def test_tables_without_alembic_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE run (id TEXT)")
    engine.dispose()
    with pytest.raises(CatalogError, match="has no hpcplat schema"):
        Catalog.open(url)


def test_unreachable_server_is_a_clear_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on the port: refused at once
    url = f"postgresql://someone:s3cret@127.0.0.1:{port}/catalog"
    with pytest.raises(CatalogError, match="cannot reach the catalog database") as info:
        Catalog.open(url, connect_timeout_s=2)
    assert "s3cret" not in str(info.value)
    assert "is the server up" in str(info.value) or "server is up" in str(info.value)


def test_unsupported_url() -> None:
    with pytest.raises(UsageError, match="unsupported catalog URL"):
        Catalog.open("mysql://x@y/z")


def test_store_scopes_commit_roll_back_and_read(catalog_url: str) -> None:
    """The store's write scope is one transaction: committed at the end, gone on an error."""
    from hpcplat.catalog.models import Event
    from hpcplat.catalog.store import Store

    store = Store.open(catalog_url)
    try:
        with store.write() as s:
            s.add(Event(kind=EventKind.NOTE, reason="kept"))
        with pytest.raises(RuntimeError), store.write() as s:
            s.add(Event(kind=EventKind.NOTE, reason="rolled back"))
            s.flush()
            raise RuntimeError("stop")
        with store.write_conn() as conn:
            conn.exec_driver_sql(
                "INSERT INTO event (kind, reason, source, at) VALUES ('NOTE', 'core', '', '2024-01-01')"
            )
        with store.read_conn() as conn:
            reasons = [r[0] for r in conn.exec_driver_sql("SELECT reason FROM event ORDER BY id")]
        assert reasons == ["kept", "core"]
        with store.read() as s:
            assert s.get(Event, 1) is not None
    finally:
        store.close()


def test_store_write_refused_is_a_catalog_error(tmp_path: Path) -> None:
    from hpcplat.catalog.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with pytest.raises(CatalogError, match="the catalog refused a write") as info, store.write() as s:
            s.execute(sa.text("PRAGMA query_only=ON"))
            s.execute(sa.text("INSERT INTO param (run_id, name, value) VALUES ('r', 'n', '1')"))
        assert "nothing was written" in (info.value.hint or "")
    finally:
        store.close()
