"""The hpcplat server as users meet it: ``hpcplat server`` started as a command, real munge
credentials, real Unix users (tests/fixtures/users.py) talking to it with the system's Python.

The sandbox's munged listens under its state directory, which other users cannot enter when it
lives under /root (0700). Other hosts of a cluster run their own munged with the cluster's key;
the ``login_munged`` fixture does the same: a second munged with a copy of the sandbox's key and
its socket in a directory everyone may enter (0755; the socket itself is 0777, as munged makes
it). Credentials it makes carry the caller's real uid and are decoded by the sandbox's munged,
which the server asks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcplat.catalog.intent import RunIntent
from hpcplat.catalog.service import Catalog
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from hpcplat.server.client import Client, ServerError, munge_credential, request_payload
from tests.fixtures.users import UnixUser

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
HPCPLAT = Path(sys.executable).parent / "hpcplat"
START_DEADLINE_S = 90.0
GROUP = "hpcplat-medteam"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    dir: Path
    socket: Path
    port: int
    munge_socket: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **options: object) -> Client:
        return Client(url=self.url, munge_socket=self.munge_socket, **options)  # type: ignore[arg-type]


@contextmanager
def running_server(catalog_url: str, munge_socket: str, *, admins: tuple[str, ...] = ()) -> Iterator[Server]:
    """``hpcplat server`` as a command, with its own site file, socket and port."""
    where = Path(tempfile.mkdtemp(prefix="hpcplat-server-"))
    where.chmod(0o755)  # other users reach the Unix socket
    port = _free_port()
    site = where / "hpcplat.toml"
    site.write_text(
        f"[catalog]\nurl = {json.dumps(catalog_url)}\n\n[server]\n"
        f"socket = {json.dumps(str(where / 'server.sock'))}\nport = {port}\n"
        f"munge_socket = {json.dumps(munge_socket)}\nadmins = {json.dumps(list(admins))}\n"
    )
    env = {**os.environ, "HPCPLAT_CONFIG": str(site)}
    env.pop("HPCPLAT_CATALOG_URL", None)
    log = (where / "server.log").open("wb")
    proc = subprocess.Popen([str(HPCPLAT), "server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(where, where / "server.sock", port, munge_socket, proc)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hpcplat server exited: {(where / 'server.log').read_text()}")
            try:
                Client(socket=str(server.socket), use_munge=False).whoami()
                break
            except ServerError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"server not up in {START_DEADLINE_S} s: {(where / 'server.log').read_text()}"
                    )
                time.sleep(0.3)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def login_munged(sandbox: Sandbox) -> Iterator[str]:
    """A second munged with the sandbox's key, reachable by every user; yields its socket."""
    where = Path(tempfile.mkdtemp(prefix="hpcplat-munge-"))
    where.chmod(0o755)
    private = where / "key"
    private.mkdir(mode=0o700)
    key = private / "munge.key"
    shutil.copyfile(sandbox.layout.munge_key, key)
    key.chmod(0o600)
    sock = where / "munge.socket"
    pid_file = private / "munged.pid"
    run(
        [
            "munged",
            "--force",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={pid_file}",
            f"--log-file={private / 'munged.log'}",
            f"--seed-file={private / 'munged.seed'}",
        ],
        timeout=30,
    )
    try:
        deadline = time.monotonic() + 30
        while run(["munge", f"--socket={sock}", "-n"], timeout=10, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the login munged did not answer"
            time.sleep(0.2)
        yield str(sock)
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        shutil.rmtree(where, ignore_errors=True)


@dataclass
class World:
    server: Server
    dataset: str
    run_id: str
    data_dir: Path
    client_py: Path
    login_munge: str
    """The munged other users reach (``login_munged``)."""


def _seed(url: str, users: dict[str, UnixUser], data_dir: Path) -> tuple[str, str]:
    """Alice's restricted dataset and a run of hers, written as the admin would."""
    subprocess.run(["groupadd", "-f", GROUP], check=True, timeout=30)
    subprocess.run(["usermod", "-aG", GROUP, users["alice"].name], check=True, timeout=30)
    (data_dir / "scan.txt").write_text("private\n")
    name = f"medical-{uuid.uuid4().hex[:8]}"
    with Catalog.open(url) as catalog:
        catalog.register_dataset(name, data_dir, groups=[GROUP], owner=users["alice"].name)
        run_id = catalog.record_intent(RunIntent(name="alice-train", owner=users["alice"].name, team="nlp"))
        catalog.confirm_submission(run_id, "999999")
    return name, run_id


@pytest.fixture(scope="module")
def world(
    sandbox: Sandbox,
    login_munged: str,
    unix_users: dict[str, UnixUser],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    base = tmp_path_factory.mktemp("server")
    url = f"sqlite:///{base / 'catalog.db'}"
    data_dir = base / "data"
    data_dir.mkdir()
    dataset, run_id = _seed(url, unix_users, data_dir)
    with running_server(url, str(sandbox.layout.munge_socket), admins=("root",)) as server:
        # Users run the client with the system's Python from a place they can read.
        client_py = server.dir / "client.py"
        shutil.copyfile(REPO / "hpcplat" / "server" / "client.py", client_py)
        client_py.chmod(0o644)
        yield World(server, dataset, run_id, data_dir, client_py, login_munged)


def as_user(
    world: World, user: UnixUser, *args: str, claim: str | None = None, unix: bool = False
) -> tuple[int, dict[str, object] | list[object] | str]:
    """``client.py`` run by ``user`` (runuser: real uid) with /usr/bin/python3; ``claim`` sets
    USER and LOGNAME to another name, which must change nothing."""
    where = ["--socket", str(world.server.socket), "--no-munge"] if unix else ["--url", world.server.url]
    env = ["env", f"USER={claim}", f"LOGNAME={claim}"] if claim else []
    result = user.run(
        [
            *env,
            "/usr/bin/python3",
            str(world.client_py),
            *where,
            "--munge-socket",
            world.login_munge,
            *args,
        ]
    )
    if result.returncode == 0:
        return 200, json.loads(result.stdout)
    return (
        int(result.stderr.split("server answered ")[1][:3]) if "server answered" in result.stderr else -1
    ), (result.stderr)


def _manifest_body(world: World, groups: list[str]) -> str:
    from hpcplat.provenance.manifest import build_manifest

    manifest = build_manifest(world.data_dir)
    files = [[e.path, e.size, e.sha256, e.mtime_ns] for e in manifest.files]
    return json.dumps({"location": str(world.data_dir), "groups": groups, "files": files})


def _points(world: World) -> int:
    with Catalog.open(f"sqlite:///{world.data_dir.parent / 'catalog.db'}") as catalog:
        return sum(m.count for m in catalog.details(world.run_id).metrics)


# -- authentication -----------------------------------------------------------------------------


def test_without_a_valid_credential_the_answer_is_401_and_nothing_changes(world: World) -> None:
    target = f"/api/v1/runs/{world.run_id}/metrics"
    body = {"points": [{"step": 1, "name": "loss", "value": 0.5, "time": 1.0}]}
    before = _points(world)

    with pytest.raises(ServerError) as none:
        world.server.client(use_munge=False).post(target, body)
    assert none.value.status == 401

    forged = "MUNGE:" + "QUJD" * 40 + ":"
    with pytest.raises(ServerError, match="refused") as bad:
        world.server.client(credential=lambda payload: forged).post(target, body)
    assert bad.value.status == 401

    # A real credential, made for another request (whoami), spent on a write.
    for_whoami = munge_credential(
        request_payload("GET", "/api/v1/whoami", b""), socket_path=world.server.munge_socket
    )
    with pytest.raises(ServerError, match="another request") as other:
        world.server.client(credential=lambda payload: for_whoami).post(target, body)
    assert other.value.status == 401

    # The same credential twice: the first use works, the replay is refused.
    fresh = munge_credential(
        request_payload("GET", "/api/v1/whoami", b""), socket_path=world.server.munge_socket
    )
    replaying = world.server.client(credential=lambda payload: fresh)
    assert replaying.whoami()["user"] == "root"
    with pytest.raises(ServerError, match="replayed") as replay:
        replaying.whoami()
    assert replay.value.status == 401

    # Expired: a one-second credential used three seconds later.
    payload = request_payload("GET", "/api/v1/whoami", b"")
    short = run(["munge", f"--socket={world.server.munge_socket}", "--ttl=1"], input=payload, timeout=10)
    time.sleep(3)
    with pytest.raises(ServerError, match="expired") as expired:
        world.server.client(credential=lambda p: short.stdout.strip()).whoami()
    assert expired.value.status == 401

    assert _points(world) == before


def test_the_openapi_schema_is_published_and_runs_page(world: World) -> None:
    client = world.server.client()
    schema = client.get("/api/v1/openapi.json")
    assert {"/api/v1/runs", "/api/v1/runs/{ref}", "/api/v1/datasets/{name}/versions"} <= set(schema["paths"])
    page = client.get("/api/v1/runs?limit=1")
    assert [r["id"] for r in page["runs"]] == [world.run_id] and page["next_offset"] is None
    status = client.get(f"/api/v1/runs/{world.run_id[:8]}")
    assert status["run"]["status"] == "QUEUED" and [a["job_id"] for a in status["attempts"]] == ["999999"]
    events = client.get(f"/api/v1/runs/{world.run_id}/events")
    assert [e["kind"] for e in events] == ["SUBMITTED"]
    with pytest.raises(ServerError) as missing:
        client.get("/api/v1/runs/ffffffff")
    assert missing.value.status == 404


# -- authorization with real Unix users ---------------------------------------------------------


def test_mallory_cannot_touch_alices_dataset_or_run_even_claiming_to_be_alice(
    world: World, unix_users: dict[str, UnixUser]
) -> None:
    alice, mallory = unix_users["alice"], unix_users["mallory"]
    before = _points(world)
    for claim in (alice.name, "root"):
        status, me = as_user(world, mallory, "whoami", claim=claim)
        assert status == 200, me
        assert isinstance(me, dict) and me["user"] == mallory.name and me["via"] == "munge"
        assert as_user(world, mallory, "get", f"/api/v1/datasets/{world.dataset}", claim=claim)[0] == 403
        status, listed = as_user(world, mallory, "get", "/api/v1/datasets", claim=claim)
        assert status == 200 and world.dataset not in json.dumps(listed)
        assert (
            as_user(
                world,
                mallory,
                "post",
                f"/api/v1/datasets/{world.dataset}/versions",
                _manifest_body(world, []),
                claim=claim,
            )[0]
            == 403
        )
        metrics = json.dumps({"points": [{"step": 5, "name": "loss", "value": 9.0, "time": 1.0}]})
        assert (
            as_user(world, mallory, "post", f"/api/v1/runs/{world.run_id}/metrics", metrics, claim=claim)[0]
            == 403
        )
    # On the Unix socket the kernel's peer credentials say who it is.
    status, me = as_user(world, mallory, "whoami", claim=alice.name, unix=True)
    assert status == 200 and isinstance(me, dict) and (me["user"], me["via"]) == (mallory.name, "peer")
    assert as_user(world, mallory, "get", f"/api/v1/datasets/{world.dataset}", unix=True)[0] == 403
    assert _points(world) == before

    # Alice can do all of it.
    status, shown = as_user(world, alice, "get", f"/api/v1/datasets/{world.dataset}")
    assert status == 200 and isinstance(shown, dict) and shown["owner"] == alice.name
    (world.data_dir / "more.txt").write_text("more\n")
    status, added = as_user(
        world, alice, "post", f"/api/v1/datasets/{world.dataset}/versions", _manifest_body(world, [GROUP])
    )
    assert status == 200 and isinstance(added, dict), added
    assert (
        added["created"]
        and added["version"]["version"] == 2
        and added["version"]["registered_by"] == alice.name
    )
    metrics = json.dumps(
        {"points": [{"step": s, "name": "loss", "value": 1.0 / s, "time": 1.0} for s in (1, 2)]}
    )
    status, ingested = as_user(world, alice, "post", f"/api/v1/runs/{world.run_id}/metrics", metrics)
    assert status == 200 and ingested == {"inserted": 2}
    assert _points(world) == before + 2


# -- the sandbox runs the server ----------------------------------------------------------------


def test_sandbox_up_runs_the_server_and_whoami_uses_it(sandbox: Sandbox) -> None:
    server = next(d for d in sandbox.status().daemons if d.name == "server")
    assert server.alive and server.port == sandbox.config.server_port
    env = {**sandbox.env(), "HOME": os.environ.get("HOME", "/root")}
    result = run([str(HPCPLAT), "whoami", "--json"], timeout=60, env=env)
    assert json.loads(result.stdout)["uid"] == os.geteuid()


@pytest.mark.postgres
def test_the_server_serves_a_postgresql_catalog(
    sandbox: Sandbox, request: pytest.FixtureRequest, unix_users: dict[str, UnixUser], tmp_path: Path
) -> None:
    server_fixture = request.getfixturevalue("postgres_server")
    url = server_fixture.create_database(template=request.getfixturevalue("_postgres_catalog_template"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dataset, run_id = _seed(url, unix_users, data_dir)
    with running_server(url, str(sandbox.layout.munge_socket)) as server:
        client = server.client()
        assert client.get(f"/api/v1/runs/{run_id}")["run"]["owner"] == unix_users["alice"].name
        with pytest.raises(ServerError) as refused:  # root is no admin here, nor in the group
            client.get(f"/api/v1/datasets/{dataset}")
        assert refused.value.status == 403
        with pytest.raises(ServerError) as write:
            client.post(
                f"/api/v1/runs/{run_id}/metrics",
                {"points": [{"step": 1, "name": "x", "value": 1, "time": 0}]},
            )
        assert write.value.status == 403
