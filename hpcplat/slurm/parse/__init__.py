"""One parser per Slurm text format: host lists, ``scontrol show job``, GPU indices, the run comment.

Standard library only (and the ground floor): code inside jobs and the node agent import this, so
it stays cheap to import on a compute node. Backends, the agent and the in-job code parse Slurm's
output through here and nowhere else.
"""

from hpcplat.slurm.parse.comment import COMMENT_PREFIX, run_comment, run_id_from_comment
from hpcplat.slurm.parse.gres import gpu_indices, gres_gpu_count, parse_gpu_indices, tres_gpu_count
from hpcplat.slurm.parse.hostlist import MAX_HOSTS, expand_hostlist
from hpcplat.slurm.parse.scontrol import LINE_END_FIELDS, parse_show_job, parse_show_jobs

__all__ = [
    "COMMENT_PREFIX",
    "LINE_END_FIELDS",
    "MAX_HOSTS",
    "expand_hostlist",
    "gpu_indices",
    "gres_gpu_count",
    "parse_gpu_indices",
    "parse_show_job",
    "parse_show_jobs",
    "run_comment",
    "run_id_from_comment",
    "tres_gpu_count",
]
