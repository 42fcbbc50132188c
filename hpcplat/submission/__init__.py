"""Submission: validate a job spec against the live cluster, record it, render it, submit it.

``submit`` and friends are imported lazily so that importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hpcplat.submission.service import Submission, SubmissionError, dry_run, submit

__all__ = ["Submission", "SubmissionError", "dry_run", "submit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hpcplat.submission import service

        return getattr(service, name)
    raise AttributeError(f"module 'hpcplat.submission' has no attribute {name!r}")
