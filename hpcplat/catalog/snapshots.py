"""A run's code and environment snapshots, as table rows, from the provenance captured for it
(:func:`hpcplat.provenance.capture`): the submit path and self-registration both write them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from hpcplat.catalog import ingest
from hpcplat.catalog.blobs import put_blob
from hpcplat.catalog.models import CodeSnapshot, EnvSnapshot


def provenance_rows(
    bind: Connection | Session, run_id: str, provenance: Mapping[str, Any]
) -> tuple[CodeSnapshot | None, EnvSnapshot | None]:
    """The snapshot rows of ``provenance`` (``None`` for a part not captured); the git diff and
    the package list are stored as blobs through ``bind``, in its transaction."""
    code_row = env_row = None
    code = dict(provenance.get("code") or {})
    if code:
        diff = str(code.pop("diff", "") or "")
        fields = {k: v for k, v in code.items() if k in CodeSnapshot.model_fields}
        code_row = CodeSnapshot(run_id=run_id, diff_sha256=put_blob(bind, diff) if diff else None, **fields)
    env = dict(provenance.get("env") or {})
    if env:
        packages = env.pop("packages", None) or {}
        fields = {k: v for k, v in env.items() if k in EnvSnapshot.model_fields}
        sha = put_blob(bind, ingest.dumps_sorted(packages)) if packages else None
        env_row = EnvSnapshot(run_id=run_id, packages_sha256=sha, **fields)
    return code_row, env_row


def add_provenance(s: Session, run_id: str, provenance: Mapping[str, Any]) -> None:
    """Add the snapshot rows of ``provenance`` to the session ``s``."""
    for row in provenance_rows(s, run_id, provenance):
        if row is not None:
            s.add(row)
