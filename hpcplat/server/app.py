"""The server process: settings from the site file, the ASGI app, and serving it with uvicorn.

Only this process opens the catalog (the ``[catalog] url`` of the site file, or
``$HPCPLAT_CATALOG_URL`` in the server's own environment); clients get answers, never the URL.
It listens on a Unix socket (peer credentials accepted) and/or on ``host:port`` (munge only),
as ``[server]`` says::

    [server]
    socket = "/run/hpcplat/server.sock"   # optional; mode 0666: identity comes from the kernel
    host = "127.0.0.1"                     # optional (default 127.0.0.1), with port
    port = 17003                           # optional
    munge_socket = "/run/munge/munge.socket.2"   # optional: munged's socket (munge's default)
    admins = ["root"]                      # users who may do all
    reconcile_interval_s = 2.0             # the live reconcile loop, when installed

If ``hpcplat.server.live`` is installed, its ``LiveReconciler`` runs in a background thread for
the server's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from hpcplat.errors import HpcplatError, UsageError
from hpcplat.server.api import PEER_KEY, PREFIX, router
from hpcplat.server.identity import AuthError, AuthUnavailable, MungeVerifier
from hpcplat.server.policy import Policy
from hpcplat.siteconfig import SiteConfig

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_INTERVAL_S = 2.0
SERVER_KEYS = ("socket", "host", "port", "munge_socket", "admins", "reconcile_interval_s")


@dataclass(frozen=True)
class ServerSettings:
    catalog_url: str | None
    socket: Path | None = None
    host: str = DEFAULT_HOST
    port: int | None = None
    munge_socket: str | None = None
    admins: frozenset[str] = frozenset()
    reconcile_interval_s: float = DEFAULT_INTERVAL_S

    @classmethod
    def from_site(cls, site: SiteConfig) -> ServerSettings:
        """``[server]`` of the site configuration; :class:`UsageError` naming every wrong key."""
        section = site.section("server")
        where = ", ".join(site.sources) or "the site configuration"
        problems = [f"unknown key server.{k}" for k in sorted(set(section) - set(SERVER_KEYS))]
        sock, host, munge = (
            section.get("socket"),
            section.get("host", DEFAULT_HOST),
            section.get("munge_socket"),
        )
        port, admins = section.get("port"), section.get("admins", [])
        interval = section.get("reconcile_interval_s", DEFAULT_INTERVAL_S)
        for key, value in (("socket", sock), ("host", host), ("munge_socket", munge)):
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"server.{key} must be a non-empty string, got {value!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            problems.append(f"server.port must be a port number (1-65535), got {port!r}")
        if not isinstance(admins, list) or not all(isinstance(a, str) for a in admins):
            problems.append(f"server.admins must be a list of user names, got {admins!r}")
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            problems.append(f"server.reconcile_interval_s must be a positive number, got {interval!r}")
        if sock is None and port is None and not problems:
            problems.append("[server] has neither socket nor port: the server would listen nowhere")
        if problems:
            raise UsageError(
                "site configuration: " + "; ".join(problems),
                hint=f"fix [server] in {where} (keys: {', '.join(SERVER_KEYS)})",
            )
        return cls(
            catalog_url=site.catalog_url,
            socket=Path(sock) if isinstance(sock, str) else None,
            host=str(host),
            port=port if isinstance(port, int) else None,
            munge_socket=munge if isinstance(munge, str) else None,
            admins=frozenset(admins if isinstance(admins, list) else []),
            reconcile_interval_s=float(interval),
        )


def create_app(settings: ServerSettings, *, verifier: MungeVerifier | None = None) -> FastAPI:
    """The ASGI app; its lifespan opens the catalog and runs the live loop when installed."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from hpcplat.catalog.service import Catalog
        from hpcplat.catalog.store import Store

        store = Store.open(settings.catalog_url)
        app.state.catalog = Catalog(store.engine, store.url)
        with _live_loop(store, settings.reconcile_interval_s):
            try:
                yield
            finally:
                store.close()

    app = FastAPI(
        title="hpcplat",
        version="1",
        lifespan=lifespan,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.policy = Policy(admins=settings.admins)
    app.state.verifier = verifier or MungeVerifier(socket=settings.munge_socket)
    app.include_router(router)
    from hpcplat.server.board import mount as mount_board

    mount_board(app)  # the web board under /board/ (docs/board.md)

    @app.exception_handler(AuthError)
    async def unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Munge"})

    @app.exception_handler(AuthUnavailable)
    async def unavailable(request: Request, exc: AuthUnavailable) -> JSONResponse:
        log.error("%s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    return app


@contextlib.contextmanager
def _live_loop(store: Any, interval_s: float) -> Iterator[None]:
    """The live reconcile loop (``hpcplat.server.live``) in a thread, when that module exists."""
    if importlib.util.find_spec("hpcplat.server.live") is None:
        log.info("hpcplat.server.live is not installed: no live reconcile loop")
        yield
        return
    live = importlib.import_module("hpcplat.server.live")
    from hpcplat.slurm.client import get_client

    reconciler = live.LiveReconciler(store, get_client(), interval_s=interval_s)
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(stop,), name="live-reconcile", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=max(10.0, 2 * interval_s))


# -- peer credentials ---------------------------------------------------------------------------

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PeerCredProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that puts a Unix socket client's kernel credentials
    (``SO_PEERCRED``: pid, uid, gid) into each request's ``scope["extensions"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        peer = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        inner = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), PEER_KEY: peer}}
            await inner(scope, receive, send)

        self.app = with_peer


# -- serving ------------------------------------------------------------------------------------


def bind_sockets(settings: ServerSettings) -> list[socket.socket]:
    """The listening sockets; :class:`UsageError` when an address is taken."""
    sockets: list[socket.socket] = []
    if settings.socket is not None:
        sockets.append(_unix_socket(settings.socket))
    if settings.port is not None:
        try:
            sockets.append(socket.create_server((settings.host, settings.port), reuse_port=False))
        except OSError as exc:
            for s in sockets:
                s.close()
            raise UsageError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
                hint="stop what holds the port or set another [server] port",
            ) from None
    return sockets


def _unix_socket(path: Path) -> socket.socket:
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            if not path.is_socket():
                raise UsageError(
                    f"{path} exists and is not a socket", hint="remove it or choose another"
                ) from None
            path.unlink()  # a stale socket of a server that died
        else:
            raise UsageError(f"a server already answers on {path}", hint="stop it first")
        finally:
            probe.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    path.chmod(0o666)  # anyone may connect: who they are comes from the kernel or munge
    sock.listen(128)
    return sock


def _stopped(signum: int, frame: object) -> None:
    log.info("stopped by signal %d", signum)


def serve(settings: ServerSettings, *, pid_file: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers); the pid file names this process meanwhile."""
    import uvicorn

    sockets = bind_sockets(settings)
    config = uvicorn.Config(
        create_app(settings),
        http=PeerCredProtocol,
        lifespan="on",
        log_level="info",
        access_log=True,
        timeout_graceful_shutdown=10,
    )
    if pid_file is not None:
        from hpcplat.files import atomic_write

        atomic_write(pid_file, f"{os.getpid()}\n", mode=0o644)
    server = uvicorn.Server(config)
    # uvicorn raises the signal that stopped it again once it has shut down; with these handlers
    # that ends here, so the socket and pid file below are removed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    try:
        server.run(sockets=sockets)
    finally:
        if settings.socket is not None:
            settings.socket.unlink(missing_ok=True)
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    if not server.started:
        raise HpcplatError("the server did not start (see the messages above)")
