"""The catalog: every run's code, environment, datasets, params, metrics, artifacts and events.

``from hpcplat.catalog import Catalog`` imports SQLModel only when ``Catalog`` is first used;
:class:`RunIntent` and the enums are plain stdlib and cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpcplat.catalog.enums import ArtifactKind, EventKind, RunStatus
from hpcplat.catalog.intent import RunIntent

if TYPE_CHECKING:  # pragma: no cover
    from hpcplat.catalog.models import (
        DatasetVersionPublic,
        GpuUsage,
        GpuUsageCreate,
        RunPublic,
    )
    from hpcplat.catalog.reconcile import ReconcileReport
    from hpcplat.catalog.service import Catalog

_LAZY = {
    "Catalog": "hpcplat.catalog.service",
    "GpuUsage": "hpcplat.catalog.models",
    "GpuUsageCreate": "hpcplat.catalog.models",
    "DatasetVersionPublic": "hpcplat.catalog.models",
    "RunPublic": "hpcplat.catalog.models",
    "ReconcileReport": "hpcplat.catalog.reconcile",
}

__all__ = [
    "ArtifactKind",
    "Catalog",
    "DatasetVersionPublic",
    "EventKind",
    "GpuUsage",
    "GpuUsageCreate",
    "ReconcileReport",
    "RunIntent",
    "RunPublic",
    "RunStatus",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcplat.catalog' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
