"""Unit tests of the node agent's decisions: attribution, idle reclaim, orphans, health.

The inputs are the agent's own records (what the GPU backend, Slurm and /proc reported), built
directly; the policies are pure functions of them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from hpcplat.slurm.state import JobState, NodeState, NodeStatus
from node_agent.attribution import Holding, attribute
from node_agent.config import AgentConfig, HealthPolicy, IdlePolicy, OrphanPolicy, SiteCheck, from_mapping
from node_agent.gpu.backend import BackendUnavailable, GpuEvent, GpuInfo, GpuSample, NodeReading, ProcessOnGpu
from node_agent.policy.health import CheckResult, HealthMonitor, NodeStep
from node_agent.policy.idle import IdleReclaim, IdleStep
from node_agent.policy.orphans import Daemons, OrphanReaper
from node_agent.policy.site_checks import run_check
from node_agent.procs import ProcEnv, ProcInfo, ProcSnapshot
from node_agent.slurm_view import JobDetail, NodeJobs, NodeView

NODE = "n1"


def job(
    job_id: str = "10", *, gpus: tuple[int, ...] = (0,), requeue: bool = True, **changes: object
) -> JobDetail:
    base = JobDetail(
        job_id=job_id,
        name="train",
        user="alice",
        uid=1000,
        state=JobState.RUNNING,
        partition="gpu",
        qos="normal",
        account="vision",
        nodes=(NODE,),
        num_nodes=1,
        requeue=requeue,
        batch=True,
        restarts=0,
        start_time="2026-01-01T00:00:00",
        stdout_path="",
        comment="hpcplat:r-1",
        gpus_by_node={NODE: gpus} if gpus else {},
        gpu_count=len(gpus),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def jobs(*items: JobDetail) -> NodeJobs:
    return NodeJobs(node=NODE, polled_at=0.0, jobs={j.job_id: j for j in items})


def proc(
    pid: int, job_id: str | None, node: str | None = NODE, *, readable: bool = True, comm: str = "python"
) -> ProcInfo:
    return ProcInfo(pid, 1, pid * 10, 1000, comm, "S", 0, 1000, ProcEnv(job_id, node, None, readable))


def procs(*items: ProcInfo, counted: dict[int, str] | None = None) -> ProcSnapshot:
    """The processes, with Slurm's count of them: ``counted``, by default the job each one's
    environment claims on this node (honest processes)."""
    if counted is None:
        counted = {p.pid: p.env.job_id for p in items if p.env.job_id is not None and p.env.node == NODE}
    return ProcSnapshot(at=0.0, procs={p.pid: p for p in items}, slurm_jobs=counted)


def reading(*utils: float | None, pids: dict[int, list[int]] | None = None) -> NodeReading:
    gpus = tuple(GpuInfo(uuid=f"GPU-{i}", index=i, name="A100") for i in range(len(utils)))
    samples = tuple(
        GpuSample(f"GPU-{i}", i, 0.0, u, processes=tuple(ProcessOnGpu(p) for p in (pids or {}).get(i, [])))
        for i, u in enumerate(utils)
    )
    return NodeReading(at=0.0, backend="test", gpus=gpus, samples=samples)


# --- attribution -------------------------------------------------------------------------------


def test_gpu_held_by_the_gres_owner_with_its_processes() -> None:
    result = attribute(
        reading(50, 0, pids={0: [101]}), jobs(job("10", gpus=(0,))), procs(proc(101, "10")), NODE
    )
    assert result[0].holding is Holding.HELD and result[0].job_id == "10"
    assert result[1].holding is Holding.FREE


def test_no_attribution_without_slurm() -> None:
    result = attribute(reading(0), None, procs(proc(101, "10")), NODE)
    assert result[0].holding is Holding.UNCERTAIN and result[0].job_id is None


def test_a_job_that_ended_between_samples_is_not_attributed() -> None:
    # Slurm's last answer still lists job 10, but none of its processes is left on the node.
    result = attribute(reading(0), jobs(job("10")), procs(proc(101, "10", node="n2")), NODE)
    assert result[0].holding is Holding.UNCERTAIN
    assert "no process" in result[0].reason


def test_another_jobs_process_on_the_gpu_makes_it_uncertain() -> None:
    state = jobs(job("10", gpus=(0,)), job("11", gpus=(1,)))
    result = attribute(reading(90, 0, pids={0: [201]}), state, procs(proc(101, "10"), proc(201, "11")), NODE)
    assert result[0].holding is Holding.UNCERTAIN
    assert "job 11" in result[0].reason


def test_unreadable_process_makes_it_uncertain() -> None:
    result = attribute(
        reading(0, pids={0: [301]}),
        jobs(job("10")),
        procs(proc(101, "10"), proc(301, None, readable=False)),
        NODE,
    )
    assert result[0].holding is Holding.UNCERTAIN


def test_gpu_used_outside_an_allocation_is_uncertain_not_free() -> None:
    result = attribute(
        reading(0, 70, pids={1: [101]}), jobs(job("10", gpus=(0,))), procs(proc(101, "10")), NODE
    )
    assert result[1].holding is Holding.UNCERTAIN


def test_a_process_claiming_another_job_is_attributed_to_the_job_slurm_counts_it_in() -> None:
    # Job 10's process (Slurm counts it in job 10) exports job 11's id and runs on job 10's GPU.
    state = jobs(job("10", gpus=(0,)), job("11", gpus=(1,)))
    liar = proc(101, "11")
    result = attribute(
        reading(0, 90, pids={0: [101], 1: [201]}),
        state,
        procs(liar, proc(201, "11"), counted={101: "10", 201: "11"}),
        NODE,
    )
    assert result[0].holding is Holding.HELD and result[0].job_id == "10"
    assert result[1].holding is Holding.HELD and result[1].job_id == "11"
    # the claim alone gives a job nothing: job 12's GPU with only a liar claiming 12 is not held
    alone = attribute(
        reading(0, pids={0: [301]}), jobs(job("12", gpus=(0,))), procs(proc(301, "12"), counted={}), NODE
    )
    assert alone[0].holding is Holding.UNCERTAIN and "no process" in alone[0].reason
    unknown = attribute(reading(0), jobs(job("10")), replace(procs(proc(101, "10")), slurm_jobs=None), NODE)
    assert unknown[0].holding is Holding.UNCERTAIN


def test_stray_process_of_a_finished_job_is_reported() -> None:
    result = attribute(reading(0, pids={0: [401]}), jobs(), procs(proc(401, "9")), NODE)
    assert result[0].holding is Holding.FREE
    assert result[0].stray_pids == (401,)


def test_mig_slice_attributed_only_by_its_processes() -> None:
    parent = GpuInfo(uuid="GPU-0", index=0, name="A100")
    slice_ = GpuInfo(uuid="MIG-a", index=-1, name="MIG 1g.10gb", parent_uuid="GPU-0")
    sample = GpuSample("MIG-a", -1, 0.0, None, processes=(ProcessOnGpu(101),))
    mig = NodeReading(at=0.0, backend="test", gpus=(parent, slice_), samples=(sample,))
    held = attribute(mig, jobs(job("10", gpus=(0,))), procs(proc(101, "10")), NODE)
    assert held[1].holding is Holding.HELD and held[1].job_id == "10"
    empty = NodeReading(at=0.0, backend="test", gpus=(slice_,), samples=(replace(sample, processes=()),))
    assert attribute(empty, jobs(job("10")), procs(proc(101, "10")), NODE)[0].holding is Holding.UNCERTAIN


# --- idle reclaim ------------------------------------------------------------------------------


def idle_config(**changes: object) -> AgentConfig:
    policy = IdlePolicy(warn_after_s=(2.0, 4.0), act_after_s=6.0, requeue_grace_s=3.0)
    return AgentConfig(interval_s=1.0, idle=replace(policy, **changes))  # type: ignore[arg-type]


def run_clock(
    policy: IdleReclaim, j: JobDetail, utils: list[float] | None, until: int
) -> list[tuple[int, IdleStep]]:
    steps = []
    for t in range(until + 1):
        for decision in policy.observe(float(t), j, utils):
            steps.append((t, decision.step))
    return steps


def test_idle_requeueable_job_is_warned_signalled_then_requeued() -> None:
    steps = run_clock(IdleReclaim(idle_config()), job(requeue=True), [0.0, 0.0], 12)
    assert steps == [(2, IdleStep.WARN), (4, IdleStep.WARN), (6, IdleStep.SIGNAL), (9, IdleStep.REQUEUE)]


def test_idle_job_that_cannot_be_requeued_is_cancelled_after_the_warnings() -> None:
    steps = run_clock(IdleReclaim(idle_config()), job(requeue=False), [0.0], 12)
    assert steps == [(2, IdleStep.WARN), (4, IdleStep.WARN), (6, IdleStep.CANCEL)]


def test_any_non_zero_sample_restarts_the_clock() -> None:
    policy = IdleReclaim(idle_config())
    j = job()
    seen = []
    for t in range(20):
        utils = [0.0, 3.0] if t in (5, 10) else [0.0, 0.0]
        seen += [(t, d.step) for d in policy.observe(float(t), j, utils)]
    # the clock starts again at the first zero sample after t=10: warnings at 13 and 15, act at 17
    assert seen[-3:] == [(13, IdleStep.WARN), (15, IdleStep.WARN), (17, IdleStep.SIGNAL)]
    assert [s for _, s in seen].count(IdleStep.SIGNAL) == 1


def test_a_busy_job_is_never_touched() -> None:
    assert run_clock(IdleReclaim(idle_config()), job(), [1.0], 30) == []


def test_unknown_cycles_never_count_as_idle() -> None:
    policy = IdleReclaim(idle_config())
    j = job()
    steps = []
    for t in range(30):
        utils = [0.0] if t % 5 == 0 else None  # a sample every 5 s: gaps over max_gap (3 s)
        steps += policy.observe(float(t), j, utils)
    assert steps == []


@pytest.mark.parametrize(
    ("changes", "policy_changes", "why"),
    [
        ({"batch": False}, {}, "interactive"),
        ({"name": "interactive"}, {}, "interactive"),
        ({"num_nodes": 2}, {}, "multi-node"),
        ({}, {"enabled": False}, "off"),
        ({"name": "other"}, {"only_job_names": ("na-*",)}, "roll-out"),
    ],
)
def test_exempt_jobs(changes: dict[str, object], policy_changes: dict[str, object], why: str) -> None:
    policy = IdleReclaim(idle_config(**policy_changes))
    j = replace(job(), **changes)  # type: ignore[arg-type]
    assert why in (policy.exemption(j) or "")
    assert run_clock(policy, j, [0.0], 20) == []


def test_partition_override_and_dry_run() -> None:
    config = from_mapping(
        {
            "node_agent": {
                "interval_s": 1,
                "idle": {"warn_after_s": [], "act_after_s": 2},
                "partitions": {"debug": {"idle": {"act_after_s": 4, "warn_after_s": [], "dry_run": True}}},
            }
        }
    )
    policy = IdleReclaim(config)
    steps = []
    for t in range(6):
        steps += [
            (t, d.step, d.dry_run)
            for d in policy.observe(float(t), job(partition="debug", requeue=False), [0.0])
        ]
    assert steps == [(4, IdleStep.CANCEL, True)]


def test_a_new_run_of_a_requeued_job_starts_afresh() -> None:
    policy = IdleReclaim(idle_config())
    first = job()
    run_clock(policy, first, [0.0], 12)
    second = job(start_time="2026-01-01T01:00:00")
    policy.forget({(second.job_id, second.start_time)})
    assert run_clock(policy, second, [0.0], 3) == [(2, IdleStep.WARN)]


# --- orphans -----------------------------------------------------------------------------------


USER_PROCESS = ("/usr/bin/python3.11", (1000, 1000, 1000, 1000))
SLURMSTEPD = ("/usr/sbin/slurmstepd", (0, 0, 0, 0))


def daemons(identities: dict[int, tuple[str, tuple[int, ...]]] | None = None) -> Daemons:
    """Daemon recognition over made-up processes: each is a user's python unless listed."""
    known = identities or {}
    return Daemons(
        frozenset({"/usr/sbin/slurmd", "/usr/sbin/slurmstepd"}),
        frozenset({0}),
        identity=lambda pid: known.get(pid, USER_PROCESS),
    )


def reaper(
    identities: dict[int, tuple[str, tuple[int, ...]]] | None = None, **changes: object
) -> OrphanReaper:
    policy = replace(OrphanPolicy(grace_s=5.0), **changes)  # type: ignore[arg-type]
    return OrphanReaper(policy, NODE, self_pid=99999, daemons=daemons(identities))


def test_leftover_of_a_finished_job_is_due_after_the_grace_period_twice_seen() -> None:
    r = reaper()
    state = procs(proc(500, "7"), proc(501, "10"), proc(502, "7", node="n2"), proc(503, None))
    due, _ = r.scan(0.0, jobs(job("10")), state, set())
    assert due == []
    due, _ = r.scan(3.0, jobs(job("10")), state, set())
    assert due == []
    due, _ = r.scan(5.0, jobs(job("10")), state, set())
    assert [c.pid for c in due] == [500]  # not the running job's, not n2's, not a job-less one
    assert "job 7" in due[0].reason


def test_a_process_on_a_gpu_without_any_job_is_only_reported() -> None:
    r = reaper()
    state = procs(proc(600, None, node=None, comm="nvidia-smi"))
    due, reports = r.scan(0.0, jobs(), state, {600})
    assert due == [] and [c.pid for c in reports] == [600]
    due, reports = r.scan(10.0, jobs(), state, {600})
    assert due == [] and reports == []  # reported once
    r2 = reaper(kill_unattributed=True)
    r2.scan(0.0, jobs(), state, {600})
    assert [c.pid for c in r2.scan(10.0, jobs(), state, {600})[0]] == [600]


def test_protected_processes_are_never_candidates() -> None:
    r = reaper({700: SLURMSTEPD})
    slurmstepd = proc(700, "7", comm="slurmstepd")
    zombie = replace(proc(701, "7"), state="Z")
    r.scan(0.0, jobs(), procs(slurmstepd, zombie), set())
    assert r.scan(10.0, jobs(), procs(slurmstepd, zombie), set())[0] == []


def test_a_daemons_name_protects_nothing_its_binary_and_uid_do() -> None:
    # comm "slurmd", but a user's python; the real slurmstepd binary, but run by a user; a root
    # process from a binary that is no daemon's: all three are candidates.
    r = reaper(
        {711: ("/usr/sbin/slurmstepd", (1000, 1000, 1000, 1000)), 712: ("/home/alice/slurmd", (0, 0, 0, 0))}
    )
    fakes = procs(
        proc(710, "7", comm="slurmd"), proc(711, "7", comm="slurmstepd"), proc(712, "7", comm="slurmd")
    )
    r.scan(0.0, jobs(), fakes, set())
    assert sorted(c.pid for c in r.scan(10.0, jobs(), fakes, set())[0]) == [710, 711, 712]


def test_slurms_count_overrides_the_environment_for_orphans() -> None:
    r = reaper()
    # 720 claims finished job 7 but Slurm counts it in running job 10: not an orphan.
    # 721 claims running job 10 but Slurm does not count it: not job 10's; on a GPU, unattributed.
    # 722 claims nothing, Slurm counts it in job 7 that is not running here: job 7's orphan.
    state = procs(proc(720, "7"), proc(721, "10"), proc(722, None), counted={720: "10", 722: "7"})
    _, reports = r.scan(0.0, jobs(job("10")), state, {721})
    due, _ = r.scan(10.0, jobs(job("10")), state, {721})
    assert [c.pid for c in due] == [722] and due[0].job_id == "7"
    assert [(c.pid, c.job_id) for c in reports] == [(721, None)]
    # without Slurm's count nothing is decided
    unknown = replace(state, slurm_jobs=None)
    assert reaper().scan(0.0, jobs(job("10")), unknown, {721}) == ([], [])


def test_an_orphan_that_disappears_is_forgotten() -> None:
    r = reaper()
    r.scan(0.0, jobs(), procs(proc(800, "7")), set())
    r.scan(1.0, jobs(), procs(), set())
    assert r.scan(6.0, jobs(), procs(proc(800, "7")), set())[0] == []  # its clock started again


# --- health ------------------------------------------------------------------------------------


def node_view(state: str = "IDLE", reason: str = "") -> NodeView:
    flags = frozenset({"DRAIN"}) if "DRAIN" in state else frozenset()
    base = NodeState.DRAINED if "DRAIN" in state else NodeState.IDLE
    return NodeView(NODE, NodeStatus(base, flags), reason, 4)


def test_healthy_node_is_left_alone() -> None:
    monitor = HealthMonitor(HealthPolicy())
    verdict = monitor.verdict(reading(0, 0, 0, 0), 4, [])
    assert verdict.healthy
    assert monitor.decide(0.0, verdict, node_view()) is None


def test_missing_gpu_drains_with_the_agent_prefix() -> None:
    monitor = HealthMonitor(HealthPolicy())
    verdict = monitor.verdict(replace(reading(0, 0, 0), missing=("/dev/x3",)), 4, [])
    decision = monitor.decide(0.0, verdict, node_view())
    assert decision is not None and decision.step is NodeStep.DRAIN
    assert decision.reason.startswith("hpcplat-agent: GPU missing: 3 of 4 present")


@pytest.mark.parametrize(
    ("sample_changes", "words"),
    [
        ({"ecc_uncorrected": 2}, "uncorrected ECC"),
        ({"temperature_c": 95.0}, "95 C over 90 C"),
        ({"lost": True}, "lost"),
    ],
)
def test_gpu_faults_are_problems(sample_changes: dict[str, object], words: str) -> None:
    base = reading(0)
    sample = replace(base.samples[0], **sample_changes)  # type: ignore[arg-type]
    verdict = HealthMonitor(HealthPolicy()).verdict(replace(base, samples=(sample,)), 1, [])
    assert not verdict.healthy and words in verdict.problems[0]


def test_critical_xid_is_sticky_and_others_ignored() -> None:
    monitor = HealthMonitor(HealthPolicy())
    events = (GpuEvent("GPU-0", "xid", 79, 0.0), GpuEvent("GPU-0", "xid", 13, 0.0))
    assert "XID 79" in monitor.verdict(replace(reading(0), events=events), 1, []).problems[0]
    later = monitor.verdict(reading(0), 1, [])
    assert later.problems == ("GPU GPU-0: XID 79 (needs a GPU reset or reboot)",)


def test_failing_site_check_and_driver_gone() -> None:
    monitor = HealthMonitor(HealthPolicy())
    check = CheckResult("ib.sh", False, "exit 1: port down", 0.0)
    assert "site check ib.sh failed: exit 1: port down" in monitor.verdict(reading(0), 1, [check]).problems
    gone = NodeReading(
        at=0.0, backend="nvml", unavailable=BackendUnavailable.DRIVER_NOT_LOADED, detail="modprobe"
    )
    assert not monitor.verdict(gone, 4, []).healthy
    missing_lib = replace(gone, unavailable=BackendUnavailable.LIBRARY_MISSING)
    unknown = monitor.verdict(missing_lib, 4, [])
    assert not unknown.known and not unknown.problems  # unknown is not unhealthy


def test_own_drain_resumed_after_recovery_never_an_admins() -> None:
    monitor = HealthMonitor(HealthPolicy(resume_after_s=10.0))
    healthy = monitor.verdict(reading(0), 1, [])
    ours = node_view("IDLE+DRAIN", "hpcplat-agent: GPU missing")
    assert monitor.decide(0.0, healthy, ours) is None  # not yet healthy for long enough
    decision = monitor.decide(10.0, healthy, ours)
    assert decision is not None and decision.step is NodeStep.RESUME
    admin = node_view("IDLE+DRAIN", "bad DIMM, ticket 42")
    assert monitor.decide(100.0, healthy, admin) is None
    sick = monitor.verdict(replace(reading(0), missing=("x",)), 2, [])
    assert monitor.decide(100.0, sick, admin) is None  # the administrator's reason is kept


# --- site checks (real executables) -----------------------------------------------------------


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_site_checks(tmp_path: Path) -> None:
    ok = run_check(SiteCheck(script(tmp_path / "ok.sh", "exit 0\n")))
    bad = run_check(SiteCheck(script(tmp_path / "bad.sh", "echo 'ib0: link down'\necho more\nexit 3\n")))
    slow = run_check(SiteCheck(script(tmp_path / "slow.sh", "sleep 5\n"), timeout_s=0.3))
    gone = run_check(SiteCheck(str(tmp_path / "absent.sh")))
    assert ok.ok
    assert not bad.ok and bad.output == "exit 3: ib0: link down"
    assert not slow.ok and "no answer within 0.3 s" in slow.output
    assert not gone.ok and "not found" in gone.output
    if os.geteuid() != 0:
        plain = tmp_path / "plain.sh"
        plain.write_text("exit 0\n")
        assert not run_check(SiteCheck(str(plain))).ok
