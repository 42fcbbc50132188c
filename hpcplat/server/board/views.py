"""The board's routes: server-rendered pages under ``/board/``, the series endpoint, login.

Every page sits one level under ``/board/`` and every link is relative (``runs``, ``run?id=``,
``static/...``), so the board works unchanged behind a reverse proxy under any path prefix (Open
OnDemand style). Handlers are plain functions (FastAPI's thread pool): the catalog and Slurm
calls block.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from hpcplat.catalog import queries
from hpcplat.catalog.enums import RunStatus
from hpcplat.catalog.models import Run
from hpcplat.catalog.service import Catalog
from hpcplat.errors import HpcplatError, UsageError
from hpcplat.server.api import caller
from hpcplat.server.board import data
from hpcplat.server.board.auth import COOKIE, SESSION_TTL_S, Sessions
from hpcplat.server.identity import Identity
from hpcplat.server.policy import Policy

HERE = Path(__file__).parent
router = APIRouter(prefix="/board")
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
CLUSTER_CACHE_S = 5.0
MAX_COMPARE = 10


class NotLoggedIn(Exception):
    """No valid board session (answered with a 401 page)."""


class BoardState:
    """What the board keeps in the server's memory: sessions and a short cache of the cluster."""

    def __init__(self) -> None:
        self.sessions = Sessions()
        self._lock = threading.Lock()
        self._cluster: tuple[float, data.ClusterView] | None = None
        self._slurm: Any = None

    def slurm(self) -> Any:
        if self._slurm is None:
            from hpcplat.slurm.client import get_client

            self._slurm = get_client()
        return self._slurm

    def cluster(self) -> data.ClusterView:
        with self._lock:
            if self._cluster is None or time.monotonic() - self._cluster[0] > CLUSTER_CACHE_S:
                self._cluster = (time.monotonic(), data.cluster_view(self.slurm()))
            return self._cluster[1]


def _board(request: Request) -> BoardState:
    board: BoardState = request.app.state.board
    return board


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def _policy(request: Request) -> Policy:
    policy: Policy = request.app.state.policy
    return policy


def viewer(request: Request) -> Identity:
    """The identity of the browser's board session, or :class:`NotLoggedIn` (401)."""
    who = _board(request).sessions.identity(request.cookies.get(COOKIE))
    if who is None:
        raise NotLoggedIn
    return who


Viewer = Annotated[Identity, Depends(viewer)]
BoardDep = Annotated[BoardState, Depends(_board)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
PolicyDep = Annotated[Policy, Depends(_policy)]


def page(name: str, who: Identity | None, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(who=who, **context)
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def not_logged_in(request: Request, exc: Exception) -> Response:
    return page("login_needed.html", None, status=401, message="You are not logged in to the board.")


# -- login --------------------------------------------------------------------------------------


class Link(BaseModel):
    path: str
    """Relative to the server's base URL: ``board/login?token=...``."""
    expires_in_s: int


@router.post("/api/links")
def mint_link(request: Request, who: Annotated[Identity, Depends(caller)]) -> Link:
    """A one-time login link for the caller's verified identity (munge or the socket's peer)."""
    from hpcplat.server.board.auth import TOKEN_TTL_S

    token = _board(request).sessions.mint_token(who)
    return Link(path="board/login?" + urlencode({"token": token}), expires_in_s=int(TOKEN_TTL_S))


@router.get("/login")
def login(board: BoardDep, token: str = "") -> Response:
    session = board.sessions.redeem(token) if token else None
    if session is None:
        return page(
            "login_needed.html",
            None,
            status=401,
            message="This login link is not valid: it was used already, has expired, or was never made.",
        )
    response = RedirectResponse("runs", status_code=303)  # relative: works under any prefix
    # No Path: the browser scopes the cookie to this page's directory (…/board), prefix included.
    response.set_cookie(
        COOKIE, session, max_age=int(SESSION_TTL_S), path=None, httponly=True, samesite="strict"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/logout")
def logout(request: Request, board: BoardDep) -> Response:
    sid = request.cookies.get(COOKIE)
    if sid:
        board.sessions.end(sid)
    response = page("login_needed.html", None, message="You are logged out.")
    response.delete_cookie(COOKIE, path=None)  # type: ignore[arg-type]
    return response


@router.get("", include_in_schema=False)
def board_root() -> Response:
    return RedirectResponse("board/runs", status_code=307)


@router.get("/", include_in_schema=False)
def board_index() -> Response:
    return RedirectResponse("runs", status_code=307)


# -- runs ---------------------------------------------------------------------------------------


@router.get("/runs")
def runs_page(
    *,
    who: Viewer,
    catalog: CatalogDep,
    policy: PolicyDep,
    user: str = "",
    status: str = "",
    tag: str = "",
    name: str = "",
    sort: str = "created",
    order: str = "desc",
    limit: int = Query(default=50, ge=1, le=max(data.PAGE_SIZES)),
    offset: int = Query(default=0, ge=0),
) -> Response:
    if sort not in data.SORTS:
        raise HTTPException(400, f"unknown sort {sort!r}; use one of: {', '.join(data.SORTS)}")
    flt = data.RunFilter(user, status, tag, name, sort, order != "asc", limit, offset)
    try:
        rows, more = data.list_runs(catalog.store, policy, who, flt)
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from None
    base = {"user": user, "status": status, "tag": tag, "name": name, "sort": sort, "order": order}
    base["limit"] = str(limit)

    def link(**changes: Any) -> str:
        return "runs?" + urlencode({k: v for k, v in {**base, **changes}.items() if v not in ("", None)})

    return page(
        "runs.html",
        who,
        rows=rows,
        flt=flt,
        statuses=[s.value.lower() for s in RunStatus],
        sorts=list(data.SORTS),
        page_sizes=data.PAGE_SIZES,
        prev_link=link(offset=max(offset - limit, 0)) if offset else None,
        next_link=link(offset=offset + limit) if more else None,
        sort_link=lambda key: link(sort=key, order="asc" if sort == key and order != "asc" else "desc"),
    )


def _readable(catalog: Catalog, policy: Policy, who: Identity, ref: str) -> str:
    try:
        run_id = catalog.resolve_run_id(ref)
    except UsageError as exc:
        raise HTTPException(404 if exc.message.startswith("no run") else 400, exc.message) from None
    with catalog.store.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        owner = run.owner
        groups = [v.allowed_groups for v in queries.datasets_of(s, run_id)]
    if not policy.can_read_run(who, owner=owner, dataset_groups=groups):
        raise HTTPException(403, f"run {run_id} used a restricted dataset; {who.user} is not in its groups")
    return run_id


@router.get("/run")
def run_page(
    who: Viewer, board: BoardDep, catalog: CatalogDep, policy: PolicyDep, id: str = Query(min_length=1)
) -> Response:
    run_id = _readable(catalog, policy, who, id)
    details = queries.run_details(catalog.store, run_id)
    log_text, log_note = "", ""
    job_id = details.attempts[-1].job_id if details.attempts else None
    if not policy.can_write_run(who, owner=details.run.owner):
        log_note = "the log is shown to the run's owner and admins only"
    elif job_id:
        try:
            log_text, log_note = data.log_tail(board.slurm(), job_id, details.run.owner)
        except HpcplatError as exc:
            log_note = f"cannot ask Slurm for the log: {exc.message}"
    else:
        log_note = "no job yet"
    return page(
        "run.html",
        who,
        d=details,
        code=details.code,
        env=details.env,
        log_text=log_text,
        log_note=log_note,
        live=not details.run.status.is_terminal,
    )


@router.get("/series")
def metric_series(
    *,
    who: Viewer,
    catalog: CatalogDep,
    policy: PolicyDep,
    run: str = Query(min_length=1),
    metric: str = Query(min_length=1),
    points: int = Query(default=data.MAX_POINTS, ge=3, le=20_000),
) -> JSONResponse:
    """One metric of one run, downsampled on the server (LTTB) to at most ``points`` points."""
    run_id = _readable(catalog, policy, who, run)
    return JSONResponse(
        {"run": run_id, **data.series(catalog.store, run_id, metric, points)},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/compare")
def compare_page(
    who: Viewer,
    catalog: CatalogDep,
    policy: PolicyDep,
    run: Annotated[list[str], Query()],
    metric: str = "",
) -> Response:
    if not 1 <= len(run) <= MAX_COMPARE:
        raise HTTPException(400, f"compare 1 to {MAX_COMPARE} runs (run=ID&run=ID...)")
    ids = list(dict.fromkeys(_readable(catalog, policy, who, r) for r in run))
    comparison = queries.compare(catalog.store, ids)
    keys = {row.key for row in comparison.rows if row.section == "metrics"}
    metrics = sorted(keys - _step_keys(comparison))
    chosen = metric if metric in metrics else (metrics[0] if metrics else "")
    return page(
        "compare.html",
        who,
        c=comparison,
        ids=ids,
        metrics=metrics,
        metric=chosen,
        runs_query=urlencode([("run", i) for i in ids]),
    )


def _step_keys(comparison: queries.Comparison) -> set[str]:
    return {r.key for r in comparison.rows if r.section == "metrics" and r.key.endswith(" (last step)")}


@router.get("/cluster")
def cluster_page(who: Viewer, board: BoardDep) -> Response:
    try:
        view = board.cluster()
    except HpcplatError as exc:
        return page("cluster.html", who, view=None, error=exc.message, status=503)
    return page("cluster.html", who, view=view, error="")
