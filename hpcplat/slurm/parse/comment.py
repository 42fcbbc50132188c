"""The Slurm comment that ties a job to its run: ``--comment=hpcplat:<run id>``."""

from __future__ import annotations

COMMENT_PREFIX = "hpcplat:"


def run_comment(run_id: str) -> str:
    """The ``--comment`` value of a job hpcplat submits for ``run_id``."""
    return f"{COMMENT_PREFIX}{run_id}"


def run_id_from_comment(comment: str | None) -> str | None:
    """The run id of a job's comment (as squeue, sacct or ``scontrol show job`` print it, surrounding
    blanks ignored); ``None`` for a job hpcplat did not submit or an empty run id."""
    text = (comment or "").strip()
    if not text.startswith(COMMENT_PREFIX):
        return None
    return text[len(COMMENT_PREFIX) :] or None
