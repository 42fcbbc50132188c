"""hpcplat node agent: GPU telemetry attributed to Slurm jobs, idle reclaim, orphan cleanup,
health checks that drain nodes, and a Prometheus endpoint.

The package is kept light on purpose: it imports the standard library, ``hpcplat.runner``,
``hpcplat.errors`` and ``hpcplat.slurm`` on its sampling path, never an ORM. The catalog is written
from a short-lived subprocess (:mod:`node_agent.reporter`).
"""

__all__ = ["AGENT_NAME", "DRAIN_REASON_PREFIX"]

AGENT_NAME = "hpcplat-node-agent"
DRAIN_REASON_PREFIX = "hpcplat-agent:"
"""Every drain the agent makes starts with this; it resumes only nodes whose reason does."""
