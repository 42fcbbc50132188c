"""The sandbox service: bring a real Slurm cluster up on this machine, report on it, stop it.

Start order: munged, MariaDB, slurmdbd (then QOS/accounts with sacctmgr), slurmctld, one slurmd
per node, then the hpcplat server (``hpcplat server``: the catalog's API, see docs/server.md).
Every daemon is its own, under the state directory; nothing of the host's own Slurm,
munge or MariaDB set-up is used or touched, apart from the sandbox's marked lines in /etc/hosts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path

from hpcplat.errors import CommandError, SandboxError
from hpcplat.runner import run
from hpcplat.sandbox import accounts, daemons, database, gpus, hosts, lock, packages, ports, render
from hpcplat.sandbox.config import SandboxConfig
from hpcplat.sandbox.daemons import Daemon, Ownership
from hpcplat.sandbox.layout import MYSQLD_RUN_DIR, Layout
from hpcplat.sandbox.processes import all_pids, inspect
from hpcplat.sandbox.status import DaemonStatus, NodeReport, SandboxStatus

log = logging.getLogger(__name__)

NODES_DEADLINE_S = 30.0
QUERY_TIMEOUT_S = 10.0
JOBS_GONE_DEADLINE_S = 15.0


class Sandbox:
    """A Slurm cluster on this machine, described by a :class:`SandboxConfig`."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.layout = Layout(self.config.state_dir, self.config.name)

    @classmethod
    def default(cls) -> Sandbox:
        """4 nodes x 4 GPUs in ``$HPCPLAT_SANDBOX_DIR`` (or ``~/.local/state/hpcplat/sandbox``)."""
        return cls(SandboxConfig())

    @classmethod
    def at(cls, state_dir: Path | None = None) -> Sandbox:
        """The sandbox last brought up in ``state_dir`` (its saved config), else the default one."""
        probe = SandboxConfig() if state_dir is None else SandboxConfig(state_dir=state_dir)
        saved = Layout(probe.state_dir, probe.name).config_json
        if saved.exists():
            return cls(SandboxConfig.from_dict(json.loads(saved.read_text())))
        return cls(probe)

    def __repr__(self) -> str:
        return f"Sandbox(name={self.config.name!r}, state_dir={str(self.config.state_dir)!r})"

    # -- what callers use -------------------------------------------------------------------------

    @property
    def site_config_path(self) -> Path:
        return self.layout.site_config

    def env(self) -> dict[str, str]:
        """Environment for Slurm commands and hpcplat against this sandbox."""
        return {
            "SLURM_CONF": str(self.layout.slurm_conf),
            "HPCPLAT_CONFIG": str(self.layout.site_config),
            "HPCPLAT_SANDBOX_DIR": str(self.config.state_dir),
            "PATH": os.environ.get("PATH", os.defpath),
        }

    def gpu_device_paths(self, node: str) -> list[Path]:
        """The emulated GPU device files of ``node``, in GPU index order."""
        self.config.node_index(node)
        return [self.layout.gpu_device(node, g) for g in range(self.config.gpus_per_node)]

    # -- daemons ----------------------------------------------------------------------------------

    def daemons(self) -> list[Daemon]:
        """Every daemon of the sandbox, in start order."""
        lay, cfg = self.layout, self.config
        marker = str(cfg.state_dir)
        slurm_env = {"SLURM_CONF": str(lay.slurm_conf)}
        result = [
            Daemon(
                name="munged",
                program="munged",
                argv=(
                    _program("munged"),
                    "--force",
                    f"--socket={lay.munge_socket}",
                    f"--key-file={lay.munge_key}",
                    f"--pid-file={lay.pid_file('munged')}",
                    f"--log-file={lay.log_file('munged')}",
                    f"--seed-file={lay.munge_seed}",
                ),
                pid_file=lay.pid_file("munged"),
                log_file=lay.log_file("munged"),
                marker=marker,
            ),
            Daemon(
                name="mariadb",
                program="mariadbd",
                argv=(_program("mariadbd"), f"--defaults-file={lay.mariadb_cnf}"),
                pid_file=lay.pid_file("mariadb"),
                log_file=lay.log_file("mariadb"),
                marker=marker,
                port=cfg.mariadb_port,
                launcher=(_program("setsid"), "--fork"),
            ),
            Daemon(
                name="slurmdbd",
                program="slurmdbd",
                argv=(_program("slurmdbd"),),
                pid_file=lay.pid_file("slurmdbd"),
                log_file=lay.log_file("slurmdbd"),
                marker=marker,
                env=slurm_env,
                port=cfg.slurmdbd_port,
            ),
            Daemon(
                name="slurmctld",
                program="slurmctld",
                argv=(_program("slurmctld"), "-f", str(lay.slurm_conf)),
                pid_file=lay.pid_file("slurmctld"),
                log_file=lay.log_file("slurmctld"),
                marker=marker,
                env=slurm_env,
                port=cfg.slurmctld_port,
            ),
        ]
        for i, node in enumerate(cfg.node_names, start=1):
            result.append(
                Daemon(
                    name=f"slurmd-{node}",
                    program="slurmd",
                    argv=(_program("slurmd"), "-f", str(lay.slurm_conf), "-N", node),
                    pid_file=lay.pid_file(f"slurmd-{node}"),
                    log_file=lay.log_file(f"slurmd-{node}"),
                    marker=marker,
                    env=slurm_env,
                    port=cfg.slurmd_port(i),
                )
            )
        result.append(
            Daemon(
                name="server",
                program=os.path.basename(sys.executable),
                argv=(
                    sys.executable,
                    "-m",
                    "hpcplat",
                    "server",
                    f"--pid-file={lay.pid_file('server')}",
                    f"--log-file={lay.log_file('server')}",
                ),
                pid_file=lay.pid_file("server"),
                log_file=lay.log_file("server"),
                marker=marker,
                # The server reads the catalog URL from the sandbox's site file, not the caller's.
                env={**slurm_env, "HPCPLAT_CONFIG": str(lay.site_config), "HPCPLAT_CATALOG_URL": ""},
                port=cfg.server_port,
                launcher=(_program("setsid"), "--fork"),
            )
        )
        return result

    # -- up ---------------------------------------------------------------------------------------

    def up(self) -> SandboxStatus:
        """Bring the sandbox up (or find it up); returns once every node's slurmd has registered."""
        started_at = time.monotonic()
        self.config.validate()
        packages.ensure_installed()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with lock.held(self.layout.lock_file):
            running = self._check_existing()
            everything = self.daemons()
            if len(running) == len(everything):
                status = self.status()
                if status.running:
                    log.info("sandbox %s is already up", self.config.name)
                    self._warn_config_drift()
                    self._update_hosts()
                    return _with(status, took_s=time.monotonic() - started_at, started=False)
            self._check_ports(running)
            self._prepare()
            started: list[Daemon] = []
            try:
                for daemon in everything:
                    if daemon.name in running:
                        continue
                    started.append(daemon)  # first: a failed start may leave it running
                    self._start(daemon)
                self._ensure_accounts()
                self._wait_nodes()
            except BaseException:
                log.warning("bring-up failed; stopping %s", [d.name for d in started])
                self._stop_daemons(started)
                if not running:
                    hosts.update(self._hosts_id, [])
                raise
            status = self.status()
            return _with(status, took_s=time.monotonic() - started_at, started=True)

    def _check_existing(self) -> set[str]:
        """Names of our daemons already running; stale pid files removed; foreign ones refused."""
        running: set[str] = set()
        for daemon in self.daemons():
            owned, pid = daemon.ownership()
            if owned is Ownership.OURS:
                running.add(daemon.name)
            elif owned is Ownership.FOREIGN:
                info = inspect(pid) if pid is not None else None
                raise SandboxError(
                    f"pid file {daemon.pid_file} names pid {pid}, a {daemon.program} that is not "
                    f"this sandbox's: {info.command_line if info else '?'}",
                    hint="another sandbox runs with this state directory's files; stop it with "
                    "`hpcplat sandbox down` in its own environment, or choose another "
                    "HPCPLAT_SANDBOX_DIR",
                )
            elif pid is not None:
                log.info("removing stale pid file %s (pid %d is gone)", daemon.pid_file, pid)
                daemon.pid_file.unlink(missing_ok=True)
        if running and self.layout.config_json.exists():
            saved = SandboxConfig.from_dict(json.loads(self.layout.config_json.read_text()))
            if saved != self.config:
                raise SandboxError(
                    f"sandbox {saved.name!r} in {self.config.state_dir} is running with another "
                    f"configuration ({saved.nodes} nodes x {saved.gpus_per_node} GPUs, port base "
                    f"{saved.port_base})",
                    hint="run `hpcplat sandbox down` first, then `up` with the new settings",
                )
        return running

    def _check_ports(self, running: set[str]) -> None:
        wanted = {d.port: d.name for d in self.daemons() if d.port is not None and d.name not in running}
        taken = ports.holders(sorted(wanted))
        if taken:
            first = taken[0]
            others = "".join(f"; port {h.port} by {h.describe()}" for h in taken[1:])
            raise SandboxError(
                f"port {first.port} (for {wanted[first.port]}) is in use by {first.describe()}{others}",
                hint="stop that process, or bring the sandbox up with another port base "
                "(`hpcplat sandbox up --port-base N`)",
            )

    def _upgrade_catalog(self) -> None:
        """The sandbox is the admin of its own catalog: one made by an older hpcplat is brought to
        this hpcplat's schema (``hpcplat db upgrade``) before the server opens it."""
        if not self.layout.catalog_db.exists():
            return  # a new catalog gets the schema on first use
        from hpcplat.catalog import schema

        engine = schema.open_engine(f"sqlite:///{self.layout.catalog_db}", check=False)
        try:
            before, after = schema.upgrade(engine)
        finally:
            engine.dispose()
        if before != after:
            log.info("sandbox catalog upgraded from schema revision %s to %s", before, after)

    def _prepare(self) -> None:
        """Directories, munge key, configuration files, GPU devices, /etc/hosts, the catalog's schema."""
        lay, cfg = self.layout, self.config
        for directory in lay.directories(cfg.node_names):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        lay.munge_key.parent.chmod(0o700)
        if not lay.munge_key.exists():
            run([_program("mungekey"), "-c", "-k", str(lay.munge_key)], timeout=30)
        lay.munge_key.chmod(0o600)
        if not lay.db_password_file.exists():
            render.write_atomic(lay.db_password_file, secrets.token_hex(16), 0o600)
        if not MYSQLD_RUN_DIR.is_dir():
            MYSQLD_RUN_DIR.mkdir(mode=0o755, parents=True)
        for rendered in self._render():
            render.write_atomic(rendered.path, rendered.text, rendered.mode)
        render.write_atomic(lay.config_json, json.dumps(cfg.to_dict(), indent=2) + "\n", 0o644)
        gpus.make_devices([lay.gpu_device(n, g) for n in cfg.node_names for g in range(cfg.gpus_per_node)])
        self._update_hosts()
        self._upgrade_catalog()

    def _render(self) -> list[render.RenderedFile]:
        lay = self.layout
        context = render.build_context(
            self.config,
            lay,
            control_host=socket.gethostname().split(".")[0],
            db_password=lay.db_password_file.read_text().strip(),
        )
        return render.render_all(lay, context)

    def _warn_config_drift(self) -> None:
        """Warn when the running daemons use files that differ from what this version renders."""
        changed = [
            str(f.path)
            for f in self._render()
            if not f.path.exists() or f.path.read_text(errors="replace") != f.text
        ]
        if changed:
            log.warning(
                "the running sandbox uses configuration files that differ from the current "
                "templates (%s); run `hpcplat sandbox down` and `up` to apply them",
                ", ".join(changed),
            )

    @property
    def _hosts_id(self) -> str:
        """How this sandbox's /etc/hosts lines are marked: its name and state directory."""
        return f"{self.config.name}:{self.config.state_dir}"

    def _update_hosts(self) -> None:
        cfg = self.config
        entries = [(cfg.node_addr(i), n) for i, n in enumerate(cfg.node_names, start=1)]
        if hosts.update(self._hosts_id, entries):
            log.info("updated %s for nodes %s", hosts.HOSTS, ", ".join(cfg.node_names))

    def _start(self, daemon: Daemon) -> None:
        lay = self.layout
        if daemon.name == "munged":
            daemons.start(daemon, ready=self._munge_answers)
        elif daemon.name == "mariadb":
            if not database.is_initialised(lay):
                database.initialise(lay)
            daemons.start(daemon, ready=lambda: database.answers(lay))
            database.ensure_user(
                lay,
                user=render.DB_USER,
                password=lay.db_password_file.read_text().strip(),
                database=render.DB_NAME,
            )
        elif daemon.name == "slurmdbd":
            dbd_port = self.config.slurmdbd_port
            daemons.start(daemon, ready=lambda: ports.is_listening(dbd_port))
            # slurmctld refuses to start for a cluster slurmdbd does not know.
            accounts.Accounts(self.config.name, self.env()).ensure_cluster()
        else:
            port = daemon.port
            assert port is not None
            daemons.start(daemon, ready=lambda: ports.is_listening(port))

    def _ensure_accounts(self) -> None:
        """QOS tiers, teams and quotas, once slurmctld has registered the gres/gpu TRES."""
        manager = accounts.Accounts(self.config.name, self.env())
        daemons.wait_until(
            manager.gpu_tres_known,
            deadline_s=daemons.START_DEADLINE_S,
            on_timeout=lambda: daemons.failure(
                next(d for d in self.daemons() if d.name == "slurmctld"),
                "did not register the gres/gpu TRES with slurmdbd",
            ),
        )
        manager.ensure_all()

    def _munge_answers(self) -> bool:
        if not self.layout.munge_socket.exists():
            return False
        result = run(["munge", "-S", str(self.layout.munge_socket), "-n"], timeout=10, check=False)
        return result.returncode == 0

    def _wait_nodes(self) -> None:
        def usable() -> bool:
            return all(node.responding for node in self.nodes())

        def timeout() -> SandboxError:
            bad = [n for n in self.nodes() if not n.responding]
            lines = [f"{n.name}: {n.state}" for n in bad]
            tails = "".join(
                f"\n--- last lines of {self.layout.log_file('slurmd-' + n.name)} ---\n"
                f"{daemons.log_tail(self.layout.log_file('slurmd-' + n.name), 10)}"
                for n in bad[:2]
            )
            return SandboxError(
                f"nodes not usable after {NODES_DEADLINE_S:g} s: {', '.join(lines)}{tails}",
                hint=f"read the slurmd and slurmctld logs in {self.layout.log_dir}",
            )

        daemons.wait_until(usable, deadline_s=NODES_DEADLINE_S, on_timeout=timeout)

    # -- status -----------------------------------------------------------------------------------

    def nodes(self) -> list[NodeReport]:
        """Each node with its Slurm state (``unknown`` when slurmctld does not answer)."""
        states: dict[str, str] = {}
        try:
            result = run(
                ["sinfo", "-h", "-N", "-o", "%N %T"], timeout=QUERY_TIMEOUT_S, env=self.env(), check=False
            )
            if result.returncode == 0:
                for line in result.stdout.splitlines():
                    name, _, state = line.strip().partition(" ")
                    states[name] = state.strip()
        except CommandError as exc:
            log.info("sinfo did not answer: %s", exc)
        return [
            NodeReport(
                name, self.config.node_addr(i), self.config.slurmd_port(i), states.get(name, "unknown")
            )
            for i, name in enumerate(self.config.node_names, start=1)
        ]

    def status(self) -> SandboxStatus:
        reports = []
        for daemon in self.daemons():
            pid = daemon.running_pid()
            reports.append(DaemonStatus(daemon.name, pid, pid is not None, daemon.port, daemon.log_file))
        ctld_alive = any(d.alive for d in reports if d.name == "slurmctld")
        nodes = (
            self.nodes()
            if ctld_alive
            else [
                NodeReport(n, self.config.node_addr(i), self.config.slurmd_port(i), "unknown")
                for i, n in enumerate(self.config.node_names, start=1)
            ]
        )
        return SandboxStatus(self.config.name, self.config.state_dir, reports, nodes)

    # -- down -------------------------------------------------------------------------------------

    def down(self) -> list[int]:
        """Cancel every job, stop every daemon this sandbox started; returns the pids stopped."""
        if not self.config.state_dir.is_dir():
            return []
        with lock.held(self.layout.lock_file):
            everything = self.daemons()
            ctld = next(d for d in everything if d.name == "slurmctld")
            if ctld.running_pid() is not None:
                self._cancel_all_jobs()
            stopped = self._stop_daemons(everything)
            hosts.update(self._hosts_id, [])
            return stopped

    def _stop_daemons(self, started: list[Daemon]) -> list[int]:
        names = {d.name for d in started}
        stopped = daemons.stop([d for d in started if d.name == "server"])
        slurm = [d for d in started if d.program in ("slurmd", "slurmctld")]
        stopped += daemons.stop(slurm, extra_pids=self._job_processes() if slurm else [])
        for group in (("slurmdbd",), ("mariadb", "munged")):
            stopped += daemons.stop([d for d in started if d.name in group and d.name in names])
        return stopped

    def _cancel_all_jobs(self) -> None:
        env = self.env()
        try:
            listing = run(["squeue", "-h", "-o", "%A"], timeout=QUERY_TIMEOUT_S, env=env)
            ids = sorted({line.strip() for line in listing.stdout.splitlines() if line.strip()})
            if ids:
                run(["scancel", *ids], timeout=QUERY_TIMEOUT_S, env=env, check=False)
        except CommandError as exc:
            log.warning("could not cancel the sandbox's jobs: %s", exc)
            return
        if not ids:
            return
        deadline = time.monotonic() + JOBS_GONE_DEADLINE_S
        while self._job_processes() and time.monotonic() < deadline:
            time.sleep(0.2)

    def _job_processes(self) -> list[int]:
        """slurmstepd processes of this sandbox (by their SLURM_CONF) and everything under them."""
        conf = str(self.layout.slurm_conf)
        parents: dict[int, int] = {}
        steps: list[int] = []
        for pid in all_pids():
            info = inspect(pid)
            if info is None:
                continue
            parents[pid] = _ppid(pid)
            # slurmstepd rewrites its argv to "slurmstepd: [JOB.STEP]".
            if info.argv[0].startswith("slurmstepd") and info.environ.get("SLURM_CONF") == conf:
                steps.append(pid)
        found = set(steps)
        changed = True
        while changed:
            changed = False
            for pid, parent in parents.items():
                if parent in found and pid not in found:
                    found.add(pid)
                    changed = True
        return sorted(found)


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else 0


def _program(name: str) -> str:
    path = packages.find_program(name)
    return path or name


def _with(status: SandboxStatus, *, took_s: float, started: bool) -> SandboxStatus:
    return SandboxStatus(status.name, status.state_dir, status.daemons, status.nodes, took_s, started)
