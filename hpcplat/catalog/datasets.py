"""Dataset versions: registration (manifest + content hash), resolution, and group access."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from hpcplat.catalog.blobs import get_blob, put_blob
from hpcplat.catalog.models import Dataset, DatasetVersion, DatasetVersionPublic
from hpcplat.errors import UsageError
from hpcplat.provenance.manifest import Manifest, build_manifest, verify_manifest

LATEST = ("", "latest")


def parse_ref(text: str) -> tuple[str, str]:
    """``name@3`` → (``name``, ``3``); ``name`` → (``name``, ``latest``)."""
    name, _, version = text.partition("@")
    if not name:
        raise UsageError(
            f"not a dataset reference: {text!r}", hint="write NAME or NAME@VERSION, e.g. digits@2"
        )
    return name, version or "latest"


def user_groups(user: str) -> set[str]:
    """Names of the Unix groups ``user`` belongs to (primary and supplementary)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return set()
    names: set[str] = set()
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return names


def check_groups(groups: list[str]) -> list[str]:
    cleaned = sorted({g.strip() for g in groups if g.strip()})
    for name in cleaned:
        try:
            grp.getgrnam(name)
        except KeyError:
            raise UsageError(
                f"unknown Unix group {name!r}",
                hint="give existing group names (see `getent group`), comma-separated",
            ) from None
    return cleaned


def latest_version(session: Session, name: str) -> DatasetVersion | None:
    stmt = (
        select(DatasetVersion)
        .where(DatasetVersion.dataset == name)
        .order_by(sa.desc(col(DatasetVersion.version)))
    )
    return session.exec(stmt.limit(1)).first()


def register(
    session: Session,
    name: str,
    location: str | Path,
    *,
    manifest: Manifest,
    groups: list[str],
    owner: str,
) -> tuple[DatasetVersionPublic, bool]:
    """Record a new version unless the latest one has the same content, location and groups."""
    where = str(Path(location).resolve())
    allowed = check_groups(groups)
    if session.get(Dataset, name) is None:
        session.add(Dataset(name=name, owner=owner))
        session.flush()
    latest = latest_version(session, name)
    if (
        latest is not None
        and latest.content_hash == manifest.content_hash
        and latest.location == where
        and sorted(latest.allowed_groups) == allowed
    ):
        return DatasetVersionPublic.model_validate(latest), False
    version = DatasetVersion(
        dataset=name,
        version=(latest.version + 1) if latest is not None else 1,
        location=where,
        content_hash=manifest.content_hash,
        file_count=len(manifest.files),
        total_bytes=manifest.total_bytes,
        allowed_groups=allowed,
        registered_by=owner,
        manifest_sha256=put_blob(session, manifest.to_json()),
    )
    session.add(version)
    session.flush()
    return DatasetVersionPublic.model_validate(version), True


def build(location: str | Path) -> Manifest:
    return build_manifest(location)


def find(session: Session, name: str, version: str) -> DatasetVersion:
    if version in LATEST:
        found = latest_version(session, name)
    else:
        try:
            number = int(version)
        except ValueError:
            raise UsageError(
                f"dataset version must be a number or 'latest', not {version!r}", hint=f"e.g. {name}@1"
            ) from None
        stmt = select(DatasetVersion).where(DatasetVersion.dataset == name, DatasetVersion.version == number)
        found = session.exec(stmt).first()
    if found is not None:
        return found
    versions = session.exec(
        select(DatasetVersion.version)
        .where(DatasetVersion.dataset == name)
        .order_by(col(DatasetVersion.version))
    ).all()
    if not versions:
        names = session.exec(select(Dataset.name).order_by(Dataset.name)).all()
        known = ", ".join(names) if names else "none yet"
        raise UsageError(
            f"no dataset named {name!r} (registered: {known})",
            hint=f"register it with `hpcplat data register {name} PATH`",
        )
    raise UsageError(
        f"dataset {name!r} has no version {version} (versions: {', '.join(str(v) for v in versions)})",
        hint=f"use {name}@{versions[-1]} or {name}@latest",
    )


def check_access(version: DatasetVersion | DatasetVersionPublic, user: str) -> None:
    if not version.allowed_groups:
        return
    if user_groups(user) & set(version.allowed_groups):
        return
    raise UsageError(
        f"user {user!r} may not use dataset {version.dataset}@{version.version}: it is restricted to "
        f"members of {', '.join(version.allowed_groups)}",
        hint="ask the dataset's owner to add you to one of these groups, or use another dataset",
    )


def manifest_of(session: Session, version: DatasetVersion) -> Manifest:
    return Manifest.from_json(get_blob(session, version.manifest_sha256))


def verify(session: Session, version: DatasetVersion) -> None:
    problems = verify_manifest(manifest_of(session, version), version.location)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UsageError(
            f"dataset {version.dataset}@{version.version} at {version.location} changed since it was "
            f"registered: {shown}",
            hint=f"register the new contents as a new version: `hpcplat data register {version.dataset} "
            f"{version.location}`",
        )
