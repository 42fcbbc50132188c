"""``hpcplat doctor``: what hpcplat relies on in a live cluster, checked without changing anything.

:mod:`hpcplat.doctor.checks` parses what Slurm prints and judges it (pure functions over text and
the site file); :mod:`hpcplat.doctor.probe` asks the live cluster (every program through
:mod:`hpcplat.runner`, with a deadline) and returns the checklist. See ``docs/deploy.md``.
"""

from __future__ import annotations

from hpcplat.doctor.checks import Check, Status, exit_code, overall
from hpcplat.doctor.probe import diagnose

__all__ = ["Check", "Status", "diagnose", "exit_code", "overall"]
