"""The web board (``/board/``): runs, a run's curves and story, comparisons and the cluster, in
the browser; login with a one-time link from ``hpcplat board``. See ``docs/board.md``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hpcplat.server.board.views import HERE, BoardState, NotLoggedIn, not_logged_in, router


def mount(app: FastAPI) -> None:
    """Add the board's routes, its static files and its session table to the server's app."""
    app.state.board = BoardState()
    app.include_router(router)
    app.mount("/board/static", StaticFiles(directory=HERE / "static"), name="board-static")
    app.add_exception_handler(NotLoggedIn, not_logged_in)
