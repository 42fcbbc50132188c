"""Where every file of a sandbox lives, all under its state directory.

The one exception is MariaDB's socket, which must sit under ``/run/mysqld`` (a socket elsewhere
fails to bind on this machine kind); its name carries the sandbox name and a hash of the state
directory so two sandboxes never share one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

MYSQLD_RUN_DIR = Path("/run/mysqld")


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    name: str

    # configuration
    @property
    def etc_dir(self) -> Path:
        return self.state_dir / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc_dir / "slurm.conf"

    @property
    def gres_conf(self) -> Path:
        return self.etc_dir / "gres.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
        return self.etc_dir / "slurmdbd.conf"

    @property
    def mariadb_cnf(self) -> Path:
        return self.etc_dir / "mariadb.cnf"

    @property
    def db_password_file(self) -> Path:
        return self.etc_dir / "db.password"

    @property
    def config_json(self) -> Path:
        """The :class:`SandboxConfig` the sandbox was brought up with."""
        return self.state_dir / "sandbox.json"

    @property
    def site_config(self) -> Path:
        return self.state_dir / "hpcplat.toml"

    @property
    def catalog_db(self) -> Path:
        return self.state_dir / "catalog.db"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lock"

    # munge
    @property
    def munge_dir(self) -> Path:
        return self.state_dir / "munge"

    @property
    def munge_key(self) -> Path:
        return self.state_dir / "munge-key" / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def munge_seed(self) -> Path:
        return self.munge_dir / "munged.seed"

    @property
    def server_socket(self) -> Path:
        """The hpcplat server's Unix socket."""
        return self.run_dir / "server.sock"

    # logs, pid files, spool
    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def ctld_state_dir(self) -> Path:
        return self.spool_dir / "ctld"

    def slurmd_spool(self, node: str) -> Path:
        return self.spool_dir / node

    # database
    @property
    def mariadb_datadir(self) -> Path:
        return self.state_dir / "mariadb"

    @property
    def mariadb_socket(self) -> Path:
        digest = hashlib.sha1(str(self.state_dir).encode(), usedforsecurity=False).hexdigest()[:8]
        return MYSQLD_RUN_DIR / f"hpcplat-{self.name}-{digest}.sock"

    # emulated GPUs
    @property
    def gpu_dir(self) -> Path:
        return self.state_dir / "gpu"

    def gpu_device(self, node: str, index: int) -> Path:
        return self.gpu_dir / f"{node}gpu{index}"

    def directories(self, nodes: list[str]) -> list[Path]:
        """Every directory the sandbox needs, parents first."""
        dirs = [
            self.state_dir,
            self.etc_dir,
            self.munge_dir,
            self.munge_key.parent,
            self.log_dir,
            self.run_dir,
            self.spool_dir,
            self.ctld_state_dir,
            self.gpu_dir,
        ]
        dirs.extend(self.slurmd_spool(node) for node in nodes)
        return dirs
