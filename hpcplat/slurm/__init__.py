"""Access to Slurm: job states, the domain records, and a client with interchangeable backends."""

from hpcplat.slurm.client import SlurmClient, get_client
from hpcplat.slurm.models import (
    Association,
    JobInfo,
    NodeInfo,
    PartitionInfo,
    QosInfo,
    SubmitResult,
    UsageRecord,
)
from hpcplat.slurm.state import JobId, JobState, NodeState, parse_job_id, parse_job_state

__all__ = [
    "Association",
    "JobId",
    "JobInfo",
    "JobState",
    "NodeInfo",
    "NodeState",
    "PartitionInfo",
    "QosInfo",
    "SlurmClient",
    "SubmitResult",
    "UsageRecord",
    "get_client",
    "parse_job_id",
    "parse_job_state",
]
