"""Render the sandbox's configuration files from ONE context dict of plain values.

The templates (``templates/*.j2``) take only strings, numbers, booleans, lists and mappings, so
the same files can be rendered by Ansible. jinja2 is imported only when rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcplat import files
from hpcplat.sandbox.accounts import TIERS
from hpcplat.sandbox.config import SandboxConfig
from hpcplat.sandbox.layout import Layout

TEMPLATE_DIR = Path(__file__).parent / "templates"

DB_USER = "slurm"
DB_NAME = "slurm_acct_db"
LOCAL_ADDR = "127.0.0.1"
# Job credential lifetime; Slurm also holds a requeued job back this long (default 120 s).
CRED_EXPIRE_S = 20


@dataclass(frozen=True)
class RenderedFile:
    path: Path
    text: str
    mode: int


def build_context(
    config: SandboxConfig, layout: Layout, *, control_host: str, db_password: str
) -> dict[str, Any]:
    """Every value the templates use, as plain data."""
    nodes = []
    for i, name in enumerate(config.node_names, start=1):
        nodes.append(
            {
                "name": name,
                "addr": config.node_addr(i),
                "port": config.slurmd_port(i),
                "cpus": config.cpus_per_node,
                "memory_mb": config.memory_mb,
                "gpu_files": [str(layout.gpu_device(name, g)) for g in range(config.gpus_per_node)],
            }
        )
    return {
        "cluster_name": config.name,
        "control_host": control_host,
        "control_addr": LOCAL_ADDR,
        "slurmctld_port": config.slurmctld_port,
        "slurmdbd_host": LOCAL_ADDR,
        "slurmdbd_port": config.slurmdbd_port,
        "slurm_user": "root",
        "munge_socket": str(layout.munge_socket),
        "cred_expire_s": CRED_EXPIRE_S,
        "state_save_location": str(layout.ctld_state_dir),
        "slurmd_spool_dir": str(layout.spool_dir / "%n"),
        "slurmctld_pid_file": str(layout.pid_file("slurmctld")),
        "slurmd_pid_file": str(layout.pid_file("slurmd-%n")),
        "slurmctld_log_file": str(layout.log_file("slurmctld")),
        "slurmd_log_file": str(layout.log_file("slurmd-%n")),
        "slurmdbd_pid_file": str(layout.pid_file("slurmdbd")),
        "slurmdbd_log_file": str(layout.log_file("slurmdbd")),
        "gpus_per_node": config.gpus_per_node,
        "nodes": nodes,
        "partitions": [
            {"name": "gpu", "default": True, "max_time": "1-00:00:00"},
            {"name": "debug", "default": False, "max_time": "00:30:00"},
        ],
        "db_host": LOCAL_ADDR,
        "db_port": config.mariadb_port,
        "db_user": DB_USER,
        "db_password": db_password,
        "db_name": DB_NAME,
        "mariadb_datadir": str(layout.mariadb_datadir),
        "mariadb_socket": str(layout.mariadb_socket),
        "mariadb_pid_file": str(layout.pid_file("mariadb")),
        "mariadb_log_file": str(layout.log_file("mariadb")),
        "catalog_url": f"sqlite:///{layout.catalog_db}",
        "server_socket": str(layout.server_socket),
        "server_port": config.server_port,
        "job_root": str(layout.state_dir / "jobs"),
        "default_account": "vision",
        "default_tier": "normal",
        "default_partition": "gpu",
        "tiers": [
            {"name": tier.name, "partition": "gpu", "qos": tier.name, "preemptible": tier.preemptible}
            for tier in TIERS
        ],
    }


def render_template(name: str, context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  (configuration files, not HTML)
    )
    return env.get_template(name).render(**context)


def render_all(layout: Layout, context: dict[str, Any]) -> list[RenderedFile]:
    """The configuration files of a sandbox, with their paths and modes."""
    targets = [
        ("slurm.conf.j2", layout.slurm_conf, 0o644),
        ("gres.conf.j2", layout.gres_conf, 0o644),
        ("slurmdbd.conf.j2", layout.slurmdbd_conf, 0o600),
        ("mariadb.cnf.j2", layout.mariadb_cnf, 0o600),
        ("hpcplat.toml.j2", layout.site_config, 0o644),
    ]
    return [RenderedFile(path, render_template(name, context), mode) for name, path, mode in targets]


def write_atomic(path: Path, text: str, mode: int) -> bool:
    """Write ``text`` to ``path`` with ``mode`` (:func:`hpcplat.files.atomic_write`); False when it
    was already so."""
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
        return False
    files.atomic_write(path, text, mode=mode)
    return True
