"""The agent's loop: read the GPUs, attribute them to jobs, report, apply the policies.

One cycle every ``interval_s``:

1. scan ``/proc`` (CPU ticks, RSS, the job each process's environment claims, its cgroup);
2. ask Slurm for the node's jobs when due (``slurm_poll_s``) or when the set of jobs claimed by
   processes on the node changed; a failure means "unknown", never "no jobs"; then apply Slurm's
   own count of each job's processes (:mod:`node_agent.membership`) and report false claims;
3. read the GPUs (the backend turns failures into data);
4. attribute each GPU to the job holding it, or mark it free or uncertain;
5. add the samples to the per-job usage windows (spooled for the catalog) and publish metrics;
6. idle reclaim, orphan cleanup (every ``orphans.scan_interval_s``) and health, each deciding from
   what was observed; the actuator checks once more with Slurm before any action.

Nothing on this path imports an ORM or waits for the catalog: the reporter sends the spool from a
subprocess in a background thread, and site checks run in their own thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpcplat.runner import Runner, run
from hpcplat.slurm.client import SlurmClient
from node_agent.actions import Actuator
from node_agent.attribution import GpuAttribution, Holding, attribute
from node_agent.config import AgentConfig, BackendChoice
from node_agent.events import AgentEvent, EventKind, EventRecorder, Owner
from node_agent.gpu.backend import GpuBackend, GpuBackendError, NodeReading, ReadHint
from node_agent.membership import Membership
from node_agent.metrics import GpuRow, MetricsServer, Snapshot, SnapshotCollector
from node_agent.policy.health import HealthMonitor, NodeDecision, Verdict
from node_agent.policy.idle import IdleReclaim, IdleStep
from node_agent.policy.orphans import OrphanReaper
from node_agent.policy.site_checks import SiteChecks
from node_agent.procs import ProcessTable, ProcSnapshot
from node_agent.reporter import CatalogFlusher, UsageWindows
from node_agent.slurm_view import JobDetail, NodeJobs, NodeView, SlurmView
from node_agent.spool import Spool

log = logging.getLogger(__name__)

BACKEND_RETRY_S = 300.0
MAX_BACKOFF_S = 120.0


@dataclass
class CycleResult:
    at: float
    reading: NodeReading
    jobs: NodeJobs | None
    attributions: list[GpuAttribution]
    verdict: Verdict | None
    node_view: NodeView | None
    events: list[AgentEvent] = field(default_factory=list)
    duration_s: float = 0.0


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        node: str,
        *,
        backend_choice: BackendChoice | None = None,
        client: SlurmClient | None = None,
        runner: Runner = run,
        slurm_env: Mapping[str, str] | None = None,
        act: bool = True,
        spool: bool = True,
    ) -> None:
        self.config = config
        self.node = node
        self.backend_choice = backend_choice or config.backend
        self.act = act and not config.observe_only
        self.procs = ProcessTable(node=node)
        self.view = SlurmView(node, runner=runner, timeout=config.slurm_timeout_s, env=slurm_env)
        self.membership = Membership(node, self.view)
        self._client = client
        self._runner = runner
        self.spool = Spool(os.path.join(config.spool_dir, node))
        spooled = self.spool if spool else None
        self.recorder = EventRecorder(node, spooled, notify_owner=config.notify_owner)
        self.usage = UsageWindows(
            node, spooled, window_s=config.report_window_s, interval_s=config.interval_s
        )
        self.spooling = spool
        self.flusher = CatalogFlusher(self.spool, config.catalog_url, config.flush_interval_s, runner=runner)
        self.idle = IdleReclaim(config)
        self.reaper = OrphanReaper(config.orphans, node)
        self.health = HealthMonitor(config.health, dry_run=config.dry_run)
        self.checks = SiteChecks(config.health.checks, config.health.check_interval_s, runner=runner)
        self.collector = SnapshotCollector()
        self.metrics: MetricsServer | None = None
        self._actuator: Actuator | None = None
        self.backend: GpuBackend | None = None
        self.backend_error: GpuBackendError | None = None
        self._backend_retry_at = 0.0
        self._jobs: NodeJobs | None = None
        self._jobs_local: set[str] | None = None
        self._poll_due = 0.0
        self._poll_failures = 0
        self._orphan_due = 0.0
        self._node_view: NodeView | None = None
        self._node_due = 0.0
        self._last_problems: tuple[str, ...] = ()
        self._last_dry_decision: NodeDecision | None = None
        self._stop = threading.Event()
        self.cycles = 0

    # --- set-up -------------------------------------------------------------------------------

    @property
    def client(self) -> SlurmClient:
        if self._client is None:
            from hpcplat.slurm.client import get_client

            self._client = get_client()
        return self._client

    @property
    def actuator(self) -> Actuator:
        if self._actuator is None:
            self._actuator = Actuator(
                self.node,
                self.view,
                self.client,
                self.recorder,
                procs=self.procs,
                runner=self._runner,
                timeout=self.config.slurm_timeout_s,
                kill_wait_s=self.config.orphans.kill_wait_s,
                daemons=self.reaper.daemons,
            )
        return self._actuator

    def start(self, *, metrics_port: int | None = None, background: bool = True) -> None:
        """Open the backend, the spool, the metrics endpoint and the background threads."""
        if self.spooling:
            try:
                self.spool.ensure()
            except OSError as exc:
                log.error(
                    "cannot create the spool %s (%s): usage and events are only logged", self.spool.dir, exc
                )
        self._open_backend()
        port = self.config.metrics_port if metrics_port is None else metrics_port
        if port:
            self.metrics = MetricsServer(
                self.collector,
                max_connections=self.config.metrics_max_connections,
                client_timeout_s=self.config.metrics_timeout_s,
            )
            try:
                bound = self.metrics.start(self.config.metrics_address, port)
                log.info("metrics on http://%s:%d/metrics", self.config.metrics_address, bound)
            except OSError as exc:
                log.error(
                    "cannot serve metrics on %s:%d: %s; running without",
                    self.config.metrics_address,
                    port,
                    exc,
                )
                self.metrics = None
        if background:
            self.checks.start()
            if self.spooling:
                self.flusher.start()
        else:
            self.checks.run_once()
        log.info(
            "node agent for %s: backend %s, every %g s%s%s",
            self.node,
            self.backend.name
            if self.backend
            else f"none ({self.backend_error.reason.value if self.backend_error else '?'})",
            self.config.interval_s,
            ", DRY RUN" if self.config.dry_run else "",
            ", observe only (configuration not usable)" if self.config.observe_only else "",
        )

    def _open_backend(self) -> None:
        from node_agent.gpu.choose import open_backend

        now = time.monotonic()
        if self.backend is not None or now < self._backend_retry_at:
            return
        try:
            self.backend = open_backend(self.backend_choice, self.node, self.config, self.procs)
            if self.backend_error is not None:
                log.warning("GPU backend %s works again", self.backend.name)
            self.backend_error = None
        except GpuBackendError as exc:
            if self.backend_error is None or self.backend_error.reason != exc.reason:
                log.error(
                    "no GPU backend (%s): %s; running on without GPU data, retrying every %g s",
                    exc.reason.value,
                    exc.detail,
                    BACKEND_RETRY_S,
                )
            self.backend_error = exc
            self._backend_retry_at = now + BACKEND_RETRY_S

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.usage.close_all()
        self.checks.stop()
        self.flusher.stop()
        if self.spooling:
            try:
                self.spool.rotate()
            except OSError as exc:
                log.error("spool rotation at exit failed: %s", exc)
        if self._actuator is not None:
            self._actuator.close()
        if self.metrics is not None:
            self.metrics.stop()
        if self.backend is not None:
            self.backend.close()

    # --- one cycle ----------------------------------------------------------------------------

    def _poll_slurm(self, procs: ProcSnapshot, force: bool) -> tuple[NodeJobs | None, bool]:
        """(the node's jobs or None, whether Slurm was asked this cycle)."""
        now = time.monotonic()
        local = procs.claimed_jobs(self.node)
        if self._poll_failures and now < self._poll_due:
            return None, False  # backing off after a failure
        changed = self._jobs_local is not None and local != self._jobs_local
        due = self._jobs is None or now >= self._poll_due or force or changed
        if not due:
            return self._jobs, False
        jobs = self.view.poll()
        self._jobs_local = local
        if jobs is None:
            self._poll_failures += 1
            backoff = min(self.config.interval_s * 2**self._poll_failures, MAX_BACKOFF_S)
            self._poll_due = now + backoff
            self._jobs = None
            return None, True
        self._poll_failures = 0
        self._poll_due = now + self.config.slurm_poll_s
        self._jobs = jobs
        return jobs, True

    def _read(self, jobs: NodeJobs | None, procs: ProcSnapshot, scan_files: bool) -> NodeReading:
        self._open_backend()
        now = time.time()
        if self.backend is None:
            error = self.backend_error
            return NodeReading(
                at=now,
                backend=self.backend_choice.value,
                unavailable=error.reason if error else None,
                detail=error.detail if error else "",
            )
        hint = ReadHint(holders=jobs.holders() if jobs else {}, procs=procs, scan_open_files=scan_files)
        try:
            return self.backend.read(hint)
        except GpuBackendError as exc:
            log.error(
                "GPU backend %s failed (%s): %s; reopening", self.backend.name, exc.reason.value, exc.detail
            )
            self.backend.close()
            self.backend = None
            self.backend_error = exc
            self._backend_retry_at = time.monotonic() + self.config.interval_s
            return NodeReading(
                at=now, backend=self.backend_choice.value, unavailable=exc.reason, detail=exc.detail
            )

    def owner(self, job: JobDetail, procs: ProcSnapshot) -> Owner:
        job_dir = next((p.env.job_dir for p in procs.of_job(job.job_id) if p.env.job_dir), "")
        return Owner(uid=job.uid, stdout_path=job.stdout_path, job_dir=job_dir or "")

    def _job_utils(self, job: JobDetail, attributions: list[GpuAttribution]) -> list[float] | None:
        """The job's GPU utilizations this cycle, or None unless every one of its GPUs is known."""
        indices = job.gpus_by_node.get(self.node, ())
        mine = [a for a in attributions if a.job is not None and a.job.job_id == job.job_id]
        if not indices or len(mine) != len(indices):
            return None
        utils: list[float] = []
        for item in mine:
            if item.holding is not Holding.HELD or item.sample is None or item.sample.utilization_pct is None:
                return None
            utils.append(item.sample.utilization_pct)
        return utils

    def _idle(
        self, at: float, jobs: NodeJobs, attributions: list[GpuAttribution], procs: ProcSnapshot
    ) -> None:
        for job in jobs.jobs.values():
            if not job.gpus_by_node.get(self.node):
                continue
            for decision in self.idle.observe(at, job, self._job_utils(job, attributions)):
                if not self.act:
                    continue
                done = self.actuator.idle(decision, self.owner(job, procs))
                if not done and decision.step is IdleStep.SIGNAL:
                    self.idle.undo_signal(job)
        self.idle.forget({(j.job_id, j.start_time) for j in jobs.jobs.values()})

    def _orphans(self, at: float, jobs: NodeJobs, reading: NodeReading, procs: ProcSnapshot) -> None:
        gpu_pids = {p.pid for s in reading.samples for p in s.processes}
        due, reports = self.reaper.scan(at, jobs, procs, gpu_pids)
        for candidate in reports:
            self.recorder.event(
                EventKind.POLICY, "unattributed_gpu_process", candidate.reason + " (reported, not killed)"
            )
        for candidate in due:
            if not self.actuator.orphan(candidate, dry_run=self.config.dry_run):
                self.reaper.forget(candidate)  # not certain after all: its grace period starts again

    def _health(self, reading: NodeReading) -> tuple[Verdict, NodeView | None]:
        now = time.monotonic()
        view = self._node_view
        expected = view.gpus if view is not None else None
        verdict = self.health.verdict(reading, expected, self.checks.results())
        changed = verdict.problems != self._last_problems
        self._last_problems = verdict.problems
        if now >= self._node_due or changed or view is None:
            view = self.view.node_view()
            self._node_view = view
            self._node_due = now + self.config.health.check_interval_s
            if view is not None and expected is None:
                verdict = self.health.verdict(reading, view.gpus, self.checks.results())
        if view is None or not self.act or not self.config.health.enabled:
            return verdict, view
        decision = self.health.decide(time.time(), verdict, view)
        if decision is not None and decision.dry_run:
            if decision == self._last_dry_decision:
                return verdict, view  # reported once, not every cycle
            self._last_dry_decision = decision
        if decision is not None and self.actuator.node_state(decision):
            self._node_due = 0.0  # look at the node again next cycle
        return verdict, view

    def cycle(self) -> CycleResult:
        started = time.monotonic()
        at = time.time()
        events_before = len(self.recorder.recent)
        procs = self.procs.scan()
        orphan_scan = self.config.orphans.enabled and started >= self._orphan_due
        jobs, fresh = self._poll_slurm(procs, force=orphan_scan)
        procs, mismatches = self.membership.apply(procs, jobs.ids if jobs else None, refresh=fresh)
        for mismatch in mismatches:
            self.recorder.event(EventKind.POLICY, "false_job_claim", mismatch.reason, job_id=mismatch.actual)
        reading = self._read(jobs, procs, orphan_scan)
        attributions = attribute(reading, jobs, procs, self.node)
        self.usage.observe(attributions)
        if jobs is not None:
            self._idle(at, jobs, attributions, procs)
        if orphan_scan and fresh and jobs is not None and procs.slurm_jobs is not None:
            self._orphan_due = started + self.config.orphans.scan_interval_s
            if self.act:
                self._orphans(at, jobs, reading, procs)
        if self._actuator is not None:
            self._actuator.finish_kills()
        verdict, view = self._health(reading)
        self.cycles += 1
        result = CycleResult(
            at=at,
            reading=reading,
            jobs=jobs,
            attributions=attributions,
            verdict=verdict,
            node_view=view,
            events=list(self.recorder.recent)[events_before:]
            if len(self.recorder.recent) > events_before
            else [],
            duration_s=time.monotonic() - started,
        )
        self.collector.publish(self.snapshot(result))
        return result

    def run(self, *, max_cycles: int | None = None) -> None:
        """Cycle every ``interval_s`` until :meth:`stop` (or ``max_cycles``)."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.cycle()
            except OSError as exc:
                log.error("cycle failed: %s", exc)
            if max_cycles is not None and self.cycles >= max_cycles:
                break
            next_at += self.config.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    # --- output -------------------------------------------------------------------------------

    def snapshot(self, result: CycleResult) -> Snapshot:
        rows = []
        for item in result.attributions:
            sample = item.sample
            job = item.job if item.holding is Holding.HELD else None
            rows.append(
                GpuRow(
                    index=item.gpu.index,
                    uuid=item.gpu.uuid,
                    job=job.job_id if job else "",
                    user=job.user if job else "",
                    holding=item.holding.value,
                    utilization_pct=sample.utilization_pct if sample else None,
                    memory_used_mb=sample.memory_used_mb if sample else None,
                    memory_total_mb=sample.memory_total_mb if sample else None,
                    temperature_c=sample.temperature_c if sample else None,
                    power_w=sample.power_w if sample else None,
                    ecc_uncorrected=sample.ecc_uncorrected if sample else None,
                    idle_for_s=self.idle.idle_for(job.job_id, job.start_time, result.at) if job else None,
                )
            )
        verdict = result.verdict
        return Snapshot(
            node=self.node,
            backend=result.reading.backend,
            backend_reason=result.reading.unavailable.value if result.reading.unavailable else "",
            at=result.at,
            gpus=tuple(rows),
            slurm_ok=result.jobs is not None,
            healthy=verdict.healthy if verdict is not None and verdict.known else None,
            problems=verdict.problems if verdict is not None else (),
            cycle_seconds=result.duration_s,
            actions=tuple((k, a, d, n) for (k, a, d), n in sorted(self.recorder.counts.items())),
        )

    def describe(self, result: CycleResult) -> dict[str, Any]:
        """The cycle as JSON-ready data (``--once --json``)."""
        gpus = []
        for item in result.attributions:
            sample = item.sample
            gpus.append(
                {
                    "index": item.gpu.index,
                    "uuid": item.gpu.uuid,
                    "name": item.gpu.name,
                    "pci_bus_id": item.gpu.pci_bus_id,
                    "emulated": item.gpu.emulated,
                    "holding": item.holding.value,
                    "job": item.job_id,
                    "user": item.job.user if item.job is not None and item.job_id else None,
                    "reason": item.reason or None,
                    "utilization_pct": sample.utilization_pct if sample else None,
                    "memory_used_mb": sample.memory_used_mb if sample else None,
                    "memory_total_mb": sample.memory_total_mb if sample else None,
                    "temperature_c": sample.temperature_c if sample else None,
                    "power_w": sample.power_w if sample else None,
                    "ecc_uncorrected": sample.ecc_uncorrected if sample else None,
                    "processes": [p.pid for p in sample.processes] if sample else [],
                    "lost": sample.lost if sample else False,
                }
            )
        jobs = []
        for job in result.jobs.jobs.values() if result.jobs else []:
            jobs.append(
                {
                    "job_id": job.job_id,
                    "user": job.user,
                    "name": job.name,
                    "partition": job.partition,
                    "qos": job.qos,
                    "tier": self.config.tier_of(job.qos) or None,
                    "gpus": list(job.gpus_by_node.get(self.node, ())),
                    "requeue": job.requeue,
                    "interactive": not job.batch,
                    "idle_exemption": self.idle.exemption(job),
                    "run_id": job.run_id,
                }
            )
        verdict = result.verdict
        return {
            "node": self.node,
            "pid": os.getpid(),
            "backend": result.reading.backend,
            "backend_unavailable": result.reading.unavailable.value if result.reading.unavailable else None,
            "backend_detail": result.reading.detail or None,
            "slurm_ok": result.jobs is not None,
            "gpus": gpus,
            "missing": list(result.reading.missing),
            "jobs": jobs,
            "health": {
                "known": verdict.known if verdict else False,
                "healthy": verdict.healthy if verdict else None,
                "problems": list(verdict.problems) if verdict else [],
                "node_state": result.node_view.status.state.value if result.node_view else None,
                "drain_reason": result.node_view.reason if result.node_view else None,
            },
            "events": [e.to_record() for e in result.events],
            "dry_run": self.config.dry_run,
            "observe_only": not self.act,
        }
