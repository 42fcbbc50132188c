"""A real Slurm cluster on this machine: munge, MariaDB, slurmdbd, slurmctld and N slurmd nodes
with emulated GPUs, QOS tiers and team accounts, all under one state directory.

    from hpcplat.sandbox import Sandbox
    sb = Sandbox.default()
    sb.up()
    env = sb.env()   # SLURM_CONF, HPCPLAT_CONFIG, HPCPLAT_SANDBOX_DIR, PATH
"""

from hpcplat.sandbox.cluster import Sandbox
from hpcplat.sandbox.config import SandboxConfig
from hpcplat.sandbox.status import DaemonStatus, NodeReport, SandboxStatus

__all__ = ["DaemonStatus", "NodeReport", "Sandbox", "SandboxConfig", "SandboxStatus"]
