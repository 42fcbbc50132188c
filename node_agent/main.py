"""``hpcplat-node-agent``: the command that runs the node agent (as root, one per compute node).

    hpcplat-node-agent [--config FILE] [--node NAME] [--backend nvml|emulated|auto]
                       [--dry-run] [--metrics-port N] [--once [--json]]

``--once`` reads the GPUs, attributes them and evaluates health, prints the result (``--json``:
as JSON) and exits; it never acts. Without it the agent loops until SIGTERM/SIGINT; SIGHUP (or a
change of the configuration file, checked every minute) reloads the configuration. A malformed
configuration at start makes ``--once`` exit 2, and the daemon run in observe-only mode (sampling
and metrics, no action) until the file is fixed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

from node_agent import AGENT_NAME
from node_agent.config import AgentConfig, BackendChoice, ConfigError, config_path, load

log = logging.getLogger(AGENT_NAME)

CONFIG_WATCH_S = 60.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=AGENT_NAME,
        description="hpcplat node agent: GPU telemetry per Slurm job, idle reclaim, orphan cleanup, health.",
    )
    parser.add_argument(
        "--config", help="site configuration TOML (default: $HPCPLAT_CONFIG; [node_agent] section)"
    )
    parser.add_argument("--node", help="this node's Slurm name (default: the short host name)")
    parser.add_argument(
        "--backend", choices=[b.value for b in BackendChoice], help="GPU backend (default: config, auto)"
    )
    parser.add_argument("--dry-run", action="store_true", help="decide and report, but take no action")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (0: off; default: config, 9810)")
    parser.add_argument("--spool-dir", help="spool directory (default: from the config)")
    parser.add_argument("--once", action="store_true", help="one observation, printed; takes no action")
    parser.add_argument("--json", action="store_true", help="with --once: print JSON")
    parser.add_argument("--log-level", default=os.environ.get("HPCPLAT_NODE_AGENT_LOG", "INFO"))
    return parser


def _apply_cli(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    if args.dry_run:
        config = replace(config, dry_run=True)
    if args.backend:
        config = replace(config, backend=BackendChoice(args.backend))
    if args.metrics_port is not None:
        config = replace(config, metrics_port=args.metrics_port)
    if args.spool_dir:
        config = replace(config, spool_dir=args.spool_dir)
    return config


def _once(config: AgentConfig, node: str, as_json: bool) -> int:
    from node_agent.agent import Agent

    agent = Agent(config, node, act=False, spool=False)
    agent.start(metrics_port=0, background=False)
    try:
        result = agent.cycle()
        if agent.backend is not None and agent.backend.emulated:
            time.sleep(1.0)  # emulated utilization is a CPU-time difference: it needs two reads
            result = agent.cycle()
        data = agent.describe(result)
    finally:
        agent.close()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(
        f"node {node}: backend {data['backend']}"
        + (f" unavailable ({data['backend_unavailable']})" if data["backend_unavailable"] else "")
    )
    for gpu in data["gpus"]:
        util = "?" if gpu["utilization_pct"] is None else f"{gpu['utilization_pct']:.0f}%"
        holder = f"job {gpu['job']} ({gpu['user']})" if gpu["job"] else gpu["holding"]
        print(
            f"  gpu {gpu['index']} {gpu['uuid']}: {util} {holder}"
            + (f" - {gpu['reason']}" if gpu["reason"] else "")
        )
    health = data["health"]
    state = "unknown" if not health["known"] else "healthy" if health["healthy"] else "UNHEALTHY"
    print(f"  health: {state}" + "".join(f"\n    - {p}" for p in health["problems"]))
    return 0


def _watch(
    path: Path | None, done: threading.Event, reload: threading.Event, stop_agent: Callable[[], None]
) -> None:
    """Ask for a reload when the configuration file changes (checked every minute)."""
    if path is None:
        return

    def mtime() -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    seen = mtime()
    while not done.wait(CONFIG_WATCH_S):
        current = mtime()
        if current != seen:
            reload.set()
            stop_agent()
            return


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    node = args.node or socket.gethostname().split(".")[0]
    path = config_path(args.config)
    try:
        config = load(path)
    except ConfigError as exc:
        if args.once:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        log.error("%s\nrunning OBSERVE-ONLY (sampling and metrics, no action) until the file is fixed", exc)
        config = AgentConfig(observe_only=True, source=str(path))
    config = _apply_cli(config, args)
    if args.once:
        return _once(config, node, args.json)
    return _daemon(config, node, path, args)


def _daemon(config: AgentConfig, node: str, path: Path | None, args: argparse.Namespace) -> int:
    from node_agent.agent import Agent

    stopping = threading.Event()
    reload = threading.Event()
    current: list[Agent] = []

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stopping.set()
        for agent in current:
            agent.stop()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload.set()
        for agent in current:
            agent.stop()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    while not stopping.is_set():
        agent = Agent(config, node)
        current[:] = [agent]
        done = threading.Event()
        threading.Thread(target=_watch, args=(path, done, reload, agent.stop), daemon=True).start()
        agent.start()
        try:
            agent.run()
        finally:
            done.set()
            agent.close()
        if stopping.is_set():
            break
        if reload.is_set():
            reload.clear()
            try:
                config = _apply_cli(load(path), args)
                log.warning("configuration reloaded from %s", config.source)
            except ConfigError as exc:
                log.error("%s\nkeeping the previous settings", exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
