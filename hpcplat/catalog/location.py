"""Which catalog database to use (pure stdlib).

In order: an explicit URL (``--catalog``), ``$HPCPLAT_CATALOG_URL`` (every hpcplat job exports it),
``[catalog] url`` of the site configuration named by ``$HPCPLAT_CONFIG``, else a SQLite file in the
user's data directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from hpcplat.errors import UsageError


def default_sqlite_url(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{(base / 'hpcplat' / 'catalog.db').resolve()}"


def catalog_url(explicit: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if explicit:
        return explicit
    if env.get("HPCPLAT_CATALOG_URL"):
        return env["HPCPLAT_CATALOG_URL"]
    config = env.get("HPCPLAT_CONFIG")
    if config:
        try:
            with open(config, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise UsageError(
                f"HPCPLAT_CONFIG names {config}, which does not exist",
                hint="point HPCPLAT_CONFIG at the site configuration file, or unset it",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(
                f"{config} is not valid TOML: {exc}", hint="fix the site configuration"
            ) from None
        url = data.get("catalog", {}).get("url")
        if isinstance(url, str) and url:
            return url
    return default_sqlite_url(env)
