"""Ask the live cluster what :mod:`hpcplat.doctor.checks` judges. Read-only: nothing is submitted,
changed or created. Every program runs through :mod:`hpcplat.runner` with a deadline; a program
that fails or does not answer becomes a ``missing`` item naming it, never a traceback."""

from __future__ import annotations

import email.utils
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hpcplat.doctor.checks import (
    CLOCK_SKEW_TOLERANCE_S,
    QOS_FORMAT,
    SINFO_FORMAT,
    Check,
    NodeRow,
    Status,
    config_checks,
    gpu_nodes,
    job_root,
    parse_config,
    parse_qos,
    parse_sinfo_nodes,
    tier_qos,
)
from hpcplat.errors import CommandError, CommandNotFound, CommandTimeout, SlurmError
from hpcplat.runner import Runner, run
from hpcplat.siteconfig import SiteConfig, current_user

DEFAULT_TIMEOUT_S = 15.0
AGENT_TIMEOUT_S = 3.0
DEFAULT_METRICS_PORT = 9810
"""The node agent's default (``node_agent.config.AgentConfig.metrics_port``)."""


@dataclass
class Probe:
    site: SiteConfig
    runner: Runner = run
    env: Mapping[str, str] | None = None
    timeout: float = DEFAULT_TIMEOUT_S

    def call(self, argv: Sequence[str], *, input: str | None = None) -> str:
        return self.runner(argv, timeout=self.timeout, input=input, env=self.env, error=SlurmError).stdout


def _failed(name: str, title: str, argv: str, exc: CommandError, fix: str) -> Check:
    if isinstance(exc, CommandNotFound):
        found = f"{argv}: command not found"
    elif isinstance(exc, CommandTimeout):
        found = f"{argv}: no answer in time"
    else:
        found = f"{argv} failed: {(exc.stderr or exc.stdout).strip()[:200] or exc.returncode}"
    return Check(name, title, Status.MISSING, found, fix=fix, why="every other check needs it")


def slurm_checks(probe: Probe) -> tuple[list[Check], list[NodeRow], dict[str, str]]:
    """Checks over ``scontrol show config``, ``sacctmgr show qos`` and ``sinfo``."""
    checks: list[Check] = []
    cfg: dict[str, str] = {}
    try:
        cfg = parse_config(probe.call(["scontrol", "show", "config"]))
        checks += config_checks(cfg, probe.site)
    except CommandError as exc:
        fix = "run doctor on a login node with Slurm's commands and SLURM_CONF; is slurmctld up?"
        checks.append(_failed("slurmctld", "Slurm controller", "scontrol show config", exc, fix))
        return checks, [], cfg
    try:
        qos = parse_qos(probe.call(["sacctmgr", "--noheader", "--parsable2", "show", "qos", QOS_FORMAT]))
        checks += tier_qos(qos, cfg, probe.site)
    except CommandError as exc:
        checks.append(_failed("tier-qos", "tiers' QOS", "sacctmgr show qos", exc, "is slurmdbd up?"))
    nodes: list[NodeRow] = []
    try:
        nodes = parse_sinfo_nodes(probe.call(["sinfo", "--noheader", "--Node", "--format", SINFO_FORMAT]))
        checks.append(gpu_nodes(nodes))
    except CommandError as exc:
        checks.append(_failed("gpu-gres", "GPU GRES on nodes", "sinfo", exc, "is slurmctld up?"))
    return checks, nodes, cfg


def job_root_check(site: SiteConfig) -> Check:
    root = site.shared_job_root()
    user = current_user()
    try:
        st = os.stat(root)
    except OSError:
        st = None
    try:
        user_st = os.stat(root / user, follow_symlinks=False)
    except OSError:
        user_st = None
    writable = st is not None and os.access(root, os.W_OK | os.X_OK)
    return job_root(site, st, user_st, user=user, uid=os.geteuid(), writable=writable)


def server_check(site: SiteConfig) -> Check:
    from hpcplat.server.client import Client, ServerError

    section = site.section("server")
    name, title = "server", "hpcplat server"
    if not section:
        return Check(name, title, Status.SKIPPED, "the site file has no [server] section")
    try:
        answer = Client.from_section(section, timeout=DEFAULT_TIMEOUT_S).whoami()
    except ServerError as exc:
        where = section.get("socket") or f"{section.get('host') or '127.0.0.1'}:{section.get('port')}"
        if exc.status in (401, 403):
            return Check(
                name,
                title,
                Status.MISSING,
                f"identity check refused: {exc.detail}",
                fix="the server and this node must share the munge key (/etc/munge/munge.key) and the "
                "server's [server] munge_socket must be its munged's",
                why="the server knows users only by their munge credentials",
            )
        return Check(
            name,
            title,
            Status.MISSING,
            f"not reachable at {where}: {exc}",
            fix="start the server (`hpcplat server`, see docs/server.md) and check [server] in the site file",
            why="runs, metrics and the board go through the server",
        )
    via = answer.get("via", "?")
    return Check(name, title, Status.OK, f"answers; you are {answer.get('user')} (via {via})")


def munge_check(probe: Probe, cfg: Mapping[str, str]) -> Check:
    """``munge -n | unmunge`` on the socket Slurm uses (``AuthInfo socket=``), else the site's."""
    socket = ""
    for part in cfg.get("AuthInfo", "").split(","):
        if part.strip().startswith("socket="):
            socket = part.strip().removeprefix("socket=")
    if not socket:
        socket = str(probe.site.section("server").get("munge_socket") or "")
    extra = [f"--socket={socket}"] if socket else []
    try:
        credential = probe.call(["munge", "-n", *extra])
        probe.call(["unmunge", *extra], input=credential)
    except CommandError as exc:
        return _failed(
            "munge",
            "munge",
            "munge -n | unmunge",
            exc,
            "start munged on this node (`systemctl start munge`) with the cluster's /etc/munge/munge.key",
        )
    return Check(
        "munge", "munge", Status.OK, "munge -n | unmunge succeeds" + (f" ({socket})" if socket else "")
    )


@dataclass(frozen=True)
class AgentAnswer:
    node: str
    url: str
    ok: bool
    skew_s: float | None
    error: str = ""


def _ask_agent(node: NodeRow, port: int) -> AgentAnswer:
    host = node.address or node.name
    url = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    sent = time.time()
    try:
        with urllib.request.urlopen(url, timeout=AGENT_TIMEOUT_S) as response:  # noqa: S310 (http only)
            body = response.read(1 << 20).decode(errors="replace")
            date = response.headers.get("Date")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return AgentAnswer(node.name, url, False, None, str(getattr(exc, "reason", exc)))
    received = time.time()
    if "hpcplat_" not in body:
        return AgentAnswer(node.name, url, False, None, "answers, but not with hpcplat's metrics")
    skew = None
    if date:
        try:
            skew = email.utils.parsedate_to_datetime(date).timestamp() - (sent + received) / 2
        except (TypeError, ValueError):
            skew = None
    return AgentAnswer(node.name, url, True, skew)


def agent_checks(site: SiteConfig, nodes: Sequence[NodeRow]) -> list[Check]:
    """The node agent's /metrics on each node, and the clock skew its ``Date`` headers show."""
    section = site.section("node_agent")
    port = section.get("metrics_port", DEFAULT_METRICS_PORT)
    no_skew = (
        "Slurm reports no node's current time (scontrol show node gives BootTime and LastBusyTime only) "
        "and doctor starts no job to ask; it reads the node agents' clocks, and none answered"
    )
    if not nodes:
        return [
            Check("node-agent", "node agents", Status.SKIPPED, "no nodes listed"),
            Check("clock-skew", "clock skew", Status.SKIPPED, no_skew),
        ]
    if not isinstance(port, int) or isinstance(port, bool) or port == 0:
        off = Check(
            "node-agent",
            "node agents",
            Status.DEGRADED,
            "[node_agent] metrics_port is 0: the agents' /metrics is off, doctor cannot see them",
            fix="[node_agent] metrics_port = 9810 and metrics_address = the node's address, in the site file",
            why="the agents return idle or broken GPUs and report usage; /metrics shows they run",
        )
        return [off, Check("clock-skew", "clock skew", Status.SKIPPED, no_skew)]
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        answers = list(pool.map(lambda n: _ask_agent(n, port), nodes))
    silent = [a for a in answers if not a.ok]
    if silent:
        shown = ", ".join(f"{a.node} ({a.error})" for a in silent[:5]) + (" ..." if len(silent) > 5 else "")
        agents = Check(
            "node-agent",
            "node agents",
            Status.DEGRADED,
            f"{len(answers) - len(silent)}/{len(answers)} answer on :{port}/metrics; silent: {shown}",
            fix="run hpcplat-node-agent on every node (`systemctl enable --now hpcplat-node-agent`) with "
            "[node_agent] metrics_address = the node's address (the default listens on loopback only)",
            why="the agents give idle or broken GPUs back and report usage; unwatched nodes keep idle GPUs",
        )
    else:
        agents = Check(
            "node-agent", "node agents", Status.OK, f"all {len(answers)} answer on :{port}/metrics"
        )
    return [agents, _skew([a for a in answers if a.skew_s is not None], no_skew)]


def _skew(answers: Sequence[AgentAnswer], no_skew: str) -> Check:
    if not answers:
        return Check("clock-skew", "clock skew", Status.SKIPPED, no_skew)
    worst = max(answers, key=lambda a: abs(a.skew_s or 0.0))
    spread = max(a.skew_s or 0.0 for a in answers) - min(a.skew_s or 0.0 for a in answers)
    detail = (
        f"{len(answers)} nodes against this one: at most {abs(worst.skew_s or 0.0):.1f} s ({worst.node}), "
        f"spread {spread:.1f} s (1 s resolution)"
    )
    if abs(worst.skew_s or 0.0) <= CLOCK_SKEW_TOLERANCE_S and spread <= CLOCK_SKEW_TOLERANCE_S:
        return Check("clock-skew", "clock skew", Status.OK, detail)
    return Check(
        "clock-skew",
        "clock skew",
        Status.DEGRADED,
        detail,
        fix="synchronise every node's clock (chrony or ntpd; `chronyc tracking` shows the offset)",
        why="munge refuses credentials past their lifetime, and times of runs, metrics and logs from "
        "different nodes stop lining up",
    )


def diagnose(
    site: SiteConfig,
    *,
    runner: Runner = run,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Check]:
    """The whole checklist, in a fixed order. Changes nothing."""
    probe = Probe(site=site, runner=runner, env=env, timeout=timeout)
    checks, nodes, cfg = slurm_checks(probe)
    checks.append(job_root_check(site))
    checks.append(server_check(site))
    checks.append(munge_check(probe, cfg))
    checks += agent_checks(site, nodes)
    return checks


__all__ = ["DEFAULT_TIMEOUT_S", "Probe", "agent_checks", "diagnose"]
