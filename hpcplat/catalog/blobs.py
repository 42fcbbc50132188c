"""Content-addressed text: stored once under its sha256, whatever the number of runs using it."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from hpcplat.catalog.types import UtcDateTime, utcnow

_PUT = sa.text(
    "INSERT INTO blob (sha256, size, text, created) VALUES (:sha256, :size, :text, :created) "
    "ON CONFLICT (sha256) DO NOTHING"
).bindparams(sa.bindparam("created", type_=UtcDateTime))
_GET = sa.text("SELECT text FROM blob WHERE sha256 = :sha256")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def put_blob(conn: Connection | Session, text: str) -> str:
    sha = sha256_text(text)
    conn.execute(_PUT, {"sha256": sha, "size": len(text.encode()), "text": text, "created": utcnow()})
    return sha


def get_blob(conn: Connection | Session, sha256: str | None) -> str:
    if not sha256:
        return ""
    row = conn.execute(_GET, {"sha256": sha256}).first()
    return "" if row is None else str(row[0])
