"""Node health: a broken GPU or a failing site check drains the node; recovery resumes it.

Unhealthy when any of: fewer GPUs than expected (Slurm's GPU count for the node, or
``expected_gpus``), a GPU lost, the driver gone, more uncorrected ECC errors than allowed, a
critical XID event (sticky until the agent restarts: these need a GPU reset or a reboot), a
temperature over the limit, or a failing site check. Unknown is not unhealthy: with the NVML
library missing, or Slurm not answering, nothing is decided.

The agent drains with a reason starting ``hpcplat-agent:`` and resumes only nodes whose drain
reason starts with it, after ``resume_after_s`` of good health. A node an administrator drained
(any other reason) is never resumed, and never re-drained over the administrator's reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from node_agent import DRAIN_REASON_PREFIX
from node_agent.config import HealthPolicy
from node_agent.gpu.backend import BackendUnavailable, NodeReading
from node_agent.slurm_view import NodeView

MAX_REASON = 200


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    output: str
    at: float


@dataclass(frozen=True)
class Verdict:
    known: bool
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.known and not self.problems


class NodeStep(enum.Enum):
    DRAIN = "drain"
    RESUME = "resume"


@dataclass(frozen=True)
class NodeDecision:
    step: NodeStep
    reason: str
    dry_run: bool


def drain_reason(problems: tuple[str, ...]) -> str:
    text = f"{DRAIN_REASON_PREFIX} " + "; ".join(problems)
    text = " ".join(text.split())  # one line: Slurm shows it in sinfo -R
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


_UNKNOWN_REASONS = {BackendUnavailable.LIBRARY_MISSING, BackendUnavailable.OTHER}


@dataclass
class HealthMonitor:
    policy: HealthPolicy
    dry_run: bool = False
    _xids: dict[str, set[int]] = field(default_factory=dict)
    _healthy_since: float | None = None

    def verdict(self, reading: NodeReading, expected_gpus: int | None, checks: list[CheckResult]) -> Verdict:
        problems: list[str] = []
        for event in reading.events:
            if event.kind == "xid" and event.code in self.policy.critical_xids:
                self._xids.setdefault(event.uuid, set()).add(event.code)
            elif event.kind == "ecc_double_bit":
                self._xids.setdefault(event.uuid, set()).add(-1)
        expected = self.policy.expected_gpus if self.policy.expected_gpus is not None else expected_gpus
        known = True
        if reading.unavailable is not None:
            if reading.unavailable in _UNKNOWN_REASONS or not expected:
                known = False
            else:
                problems.append(f"GPUs unavailable ({reading.unavailable.value}): {reading.detail}")
        else:
            whole = [g for g in reading.gpus if g.parent_uuid is None]
            if expected is not None and len(whole) < expected:
                missing = f" (missing: {', '.join(reading.missing)})" if reading.missing else ""
                problems.append(f"GPU missing: {len(whole)} of {expected} present{missing}")
            elif reading.missing:
                problems.append(f"GPU missing: {', '.join(reading.missing)}")
        for sample in reading.samples:
            if sample.lost:
                problems.append(f"GPU {sample.uuid} lost")
                continue
            if (
                sample.ecc_uncorrected is not None
                and sample.ecc_uncorrected > self.policy.max_uncorrected_ecc
            ):
                problems.append(f"GPU {sample.uuid}: {sample.ecc_uncorrected} uncorrected ECC errors")
            if sample.temperature_c is not None and sample.temperature_c > self.policy.max_temperature_c:
                problems.append(
                    f"GPU {sample.uuid}: {sample.temperature_c:.0f} C "
                    f"over {self.policy.max_temperature_c:.0f} C"
                )
        for uuid, codes in sorted(self._xids.items()):
            names = ", ".join("double-bit ECC" if c < 0 else f"XID {c}" for c in sorted(codes))
            problems.append(f"GPU {uuid}: {names} (needs a GPU reset or reboot)")
        for check in checks:
            if not check.ok:
                problems.append(f"site check {check.name} failed: {check.output}")
        return Verdict(known=known or bool(problems), problems=tuple(problems))

    def decide(self, at: float, verdict: Verdict, node: NodeView) -> NodeDecision | None:
        """Drain, resume or nothing, given the verdict and what Slurm says of the node."""
        if not self.policy.enabled:
            return None
        if verdict.problems:
            self._healthy_since = None
            if node.drained or not self.policy.drain:
                return None  # already drained (by us or an administrator): leave the reason alone
            return NodeDecision(NodeStep.DRAIN, drain_reason(verdict.problems), self.dry_run)
        if not verdict.healthy:
            self._healthy_since = None
            return None
        if self._healthy_since is None:
            self._healthy_since = at
        if (
            self.policy.resume
            and node.drained_by_agent
            and at - self._healthy_since >= self.policy.resume_after_s
        ):
            return NodeDecision(
                NodeStep.RESUME,
                f"healthy again for {at - self._healthy_since:.0f} s (was: {node.reason})",
                self.dry_run,
            )
        return None
