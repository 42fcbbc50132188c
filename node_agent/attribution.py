"""Which Slurm job holds each GPU, keyed by GPU UUID; never a guess.

The holder of a GPU comes from Slurm's GRES allocation (``IDX`` in ``scontrol show job -d``) and
is checked against the processes running on the GPU. A GPU is attributed to job J only when:

1. Slurm answered this cycle's poll (or a recent one) and exactly one job holds the GPU's index;
2. J still has a process on this node, as Slurm counts them (the job's cgroup or
   ``scontrol listpids``, see :mod:`node_agent.membership`): a job that ended between two samples
   is dropped, not sampled as idle;
3. no process of another running job is on the GPU, and every process's environment was readable.

A process belongs to the job Slurm counts it in, never to the one its ``SLURM_JOB_ID`` claims (a
user can export any job's id); a process on a GPU that Slurm counts in no running job is a stray.

Anything else is ``UNCERTAIN`` with the reason; the policies never act on it. MIG slices (index -1)
have no GRES index the agent can map with certainty, so they are attributed only when every
process on the slice belongs to the same job holding GPUs on this node.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node_agent.gpu.backend import GpuInfo, GpuSample, NodeReading
from node_agent.procs import ProcSnapshot
from node_agent.slurm_view import JobDetail, NodeJobs


class Holding(enum.Enum):
    HELD = "held"
    """Held by ``job``, with certainty."""
    FREE = "free"
    """No job holds it."""
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class GpuAttribution:
    gpu: GpuInfo
    sample: GpuSample | None
    holding: Holding
    job: JobDetail | None = None
    reason: str = ""
    stray_pids: tuple[int, ...] = ()
    """Processes on the GPU that belong to no running job of this node (orphan candidates)."""

    @property
    def job_id(self) -> str | None:
        return self.job.job_id if self.job is not None and self.holding is Holding.HELD else None


def _process_jobs(
    sample: GpuSample | None, procs: ProcSnapshot, running: set[str]
) -> tuple[set[str], list[int], bool]:
    """(jobs of the processes on the GPU, stray pids, every environment readable)."""
    jobs: set[str] = set()
    stray: list[int] = []
    readable = True
    for proc_on_gpu in sample.processes if sample is not None else ():
        info = procs.get(proc_on_gpu.pid)
        if info is None:
            continue  # exited since the GPU was read
        if not info.env.readable:
            readable = False
            continue
        job = procs.job_of(info.pid)
        if job is not None and job in running:
            jobs.add(job)
        else:
            stray.append(info.pid)
    return jobs, stray, readable


def attribute(
    reading: NodeReading, jobs: NodeJobs | None, procs: ProcSnapshot, node: str
) -> list[GpuAttribution]:
    """Attribute every GPU of ``reading``; see the module documentation for the rules."""
    out: list[GpuAttribution] = []
    running = jobs.ids if jobs is not None else set()
    holders = jobs.holders() if jobs is not None else {}
    alive = procs.jobs()
    for gpu in reading.gpus:
        sample = reading.sample_of(gpu.uuid)
        proc_jobs, stray, readable = _process_jobs(sample, procs, running)
        strays = tuple(stray)
        if jobs is None:
            out.append(
                GpuAttribution(gpu, sample, Holding.UNCERTAIN, reason="Slurm did not answer", stray_pids=())
            )
            continue
        if procs.slurm_jobs is None:
            out.append(
                GpuAttribution(
                    gpu, sample, Holding.UNCERTAIN, reason="Slurm's count of the node's processes is unknown"
                )
            )
            continue
        if not readable:
            out.append(
                GpuAttribution(
                    gpu, sample, Holding.UNCERTAIN, reason="a process on the GPU could not be read"
                )
            )
            continue
        if gpu.index < 0:
            out.append(
                _attribute_slice(gpu, sample, jobs=jobs, proc_jobs=proc_jobs, strays=strays, alive=alive)
            )
            continue
        holder_ids = [job_id for index, job_id in holders.items() if index == gpu.index]
        if not holder_ids:
            if jobs.any_unknown_gpus():
                out.append(
                    GpuAttribution(
                        gpu,
                        sample,
                        Holding.UNCERTAIN,
                        reason="a job on the node has GPUs Slurm did not index",
                    )
                )
            elif proc_jobs:
                names = ", ".join(sorted(proc_jobs))
                out.append(
                    GpuAttribution(
                        gpu, sample, Holding.UNCERTAIN, reason=f"used outside its allocation by job {names}"
                    )
                )
            else:
                out.append(GpuAttribution(gpu, sample, Holding.FREE, stray_pids=strays))
            continue
        job = jobs.jobs[holder_ids[0]]
        if job.job_id not in alive:
            out.append(
                GpuAttribution(
                    gpu,
                    sample,
                    Holding.UNCERTAIN,
                    job=job,
                    reason="the job has no process on the node",
                    stray_pids=strays,
                )
            )
            continue
        others = proc_jobs - {job.job_id}
        if others:
            out.append(
                GpuAttribution(
                    gpu,
                    sample,
                    Holding.UNCERTAIN,
                    job=job,
                    reason=f"processes of job {', '.join(sorted(others))} run on job {job.job_id}'s GPU",
                    stray_pids=strays,
                )
            )
            continue
        out.append(GpuAttribution(gpu, sample, Holding.HELD, job=job, stray_pids=strays))
    return out


def _attribute_slice(
    gpu: GpuInfo,
    sample: GpuSample | None,
    *,
    jobs: NodeJobs,
    proc_jobs: set[str],
    strays: tuple[int, ...],
    alive: set[str],
) -> GpuAttribution:
    if len(proc_jobs) == 1:
        job = jobs.jobs[next(iter(proc_jobs))]
        if job.job_id in alive and job.gpus_by_node.get(jobs.node):
            return GpuAttribution(gpu, sample, Holding.HELD, job=job, stray_pids=strays)
    if not proc_jobs:
        return GpuAttribution(
            gpu,
            sample,
            Holding.UNCERTAIN,
            reason="MIG slice without processes: holder unknown",
            stray_pids=strays,
        )
    return GpuAttribution(
        gpu, sample, Holding.UNCERTAIN, reason="MIG slice shared by several jobs", stray_pids=strays
    )


def by_job(attributions: list[GpuAttribution]) -> dict[str, list[GpuAttribution]]:
    """Attributions grouped by the job holding them (held GPUs only)."""
    grouped: dict[str, list[GpuAttribution]] = {}
    for item in attributions:
        if item.job_id is not None:
            grouped.setdefault(item.job_id, []).append(item)
    return grouped
