"""The rules of `fleet check`, on facts as the probe script prints them (no machines needed)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hpcplat.errors import UsageError
from hpcplat.fleet.check import (
    FleetReport,
    Health,
    HostReport,
    SlurmView,
    evaluate,
    facts_script,
    gpus_in_metrics,
    parse_facts,
)
from hpcplat.fleet.inventory import Host
from hpcplat.fleet.ops import logs_script, slurm_nodes
from hpcplat.runner import run
from hpcplat.slurm.models import NodeInfo
from hpcplat.slurm.state import parse_node_state

COMPUTE = Host("gpu01", frozenset({"compute"}), {"gpu_count": 4, "slurm_node_name": "n1"})
CONTROLLER = Host("ctl1", frozenset({"controller", "dbd"}), {})

METRICS = """\
# HELP hpcplat_gpu_utilization_percent GPU utilization
# TYPE hpcplat_gpu_utilization_percent gauge
hpcplat_gpu_utilization_percent{gpu="0",uuid="GPU-a"} 0.0
hpcplat_gpu_utilization_percent{gpu="1",uuid="GPU-b"} 97.0
hpcplat_gpu_memory_used_mb{gpu="0",uuid="GPU-a"} 10.0
hpcplat_gpu_memory_used_mb{gpu="1",uuid="GPU-b"} 12.0
hpcplat_gpu_memory_used_mb{gpu="2",uuid="GPU-c"} 12.0
hpcplat_gpu_memory_used_mb{gpu="3",uuid="GPU-d"} 12.0
process_cpu_seconds_total 1.5
"""


def facts_text(
    *, agent: bool = True, slurmd: bool = True, metrics: str | None = METRICS, free_kib: int = 500
) -> str:
    lines = [
        "proc.munged=1",
        f"proc.slurmd={int(slurmd)}",
        f"proc.node_agent={int(agent)}",
        "load=0.50",
        "cpus=4",
        f"disk=1000 {free_kib} /",
        "--- hpcplat metrics begin ---",
    ]
    lines += [metrics] if metrics is not None else ["metrics.error=unreachable"]
    lines += ["", "--- hpcplat metrics end ---"]
    return "\n".join(lines)


def node(state: str = "IDLE", gpus: int = 4, reason: str = "") -> NodeInfo:
    return NodeInfo(
        name="n1", status=parse_node_state(state), cpus=4, memory_mb=4000, gpus=gpus, reason=reason
    )


def by_name(probes: list) -> dict:  # type: ignore[type-arg]
    return {p.name: p for p in probes}


def test_healthy_compute_host() -> None:
    probes = by_name(evaluate(COMPUTE, parse_facts(facts_text()), 0.01, SlurmView(nodes={"n1": node()})))
    assert {n: p.health for n, p in probes.items()} == {
        "munged": Health.OK,
        "slurmd": Health.OK,
        "node_agent": Health.OK,
        "slurm": Health.OK,
        "gpus": Health.OK,
        "disk": Health.OK,
        "clock": Health.OK,
        "load": Health.OK,
    }
    assert probes["gpus"].value == 4
    assert probes["disk"].value == 50.0


def test_daemons_down_and_lost_gpu_fail() -> None:
    lost = "\n".join(line for line in METRICS.splitlines() if 'gpu="3"' not in line)
    probes = by_name(
        evaluate(
            COMPUTE,
            parse_facts(facts_text(agent=False, slurmd=False, metrics=lost)),
            0.0,
            SlurmView(nodes={"n1": node()}),
        )
    )
    assert probes["slurmd"].health is Health.FAIL and "slurmd is not running" in probes["slurmd"].detail
    assert probes["node_agent"].health is Health.FAIL
    assert probes["gpus"].health is Health.FAIL
    assert "sees 3 GPU(s), the inventory says gpu_count=4" in probes["gpus"].detail


def test_slurm_views() -> None:
    facts = parse_facts(facts_text())
    drained = by_name(
        evaluate(COMPUTE, facts, 0.0, SlurmView(nodes={"n1": node("IDLE+DRAIN", reason="disk")}))
    )
    assert drained["slurm"].health is Health.WARN and "(disk)" in drained["slurm"].detail
    assert "fleet resume gpu01" in drained["slurm"].detail
    down = by_name(evaluate(COMPUTE, facts, 0.0, SlurmView(nodes={"n1": node("DOWN*")})))
    assert down["slurm"].health is Health.FAIL
    missing = by_name(evaluate(COMPUTE, facts, 0.0, SlurmView(nodes={})))
    assert "Slurm has no node 'n1'" in missing["slurm"].detail
    fewer = by_name(evaluate(COMPUTE, facts, 0.0, SlurmView(nodes={"n1": node(gpus=2)})))
    assert fewer["slurm"].health is Health.WARN and "Slurm has 2 GPU(s)" in fewer["slurm"].detail
    skipped = by_name(evaluate(COMPUTE, facts, 0.0, SlurmView(error="Slurm not reachable: x")))
    assert skipped["slurm"].health is Health.SKIP


def test_disk_clock_load_thresholds() -> None:
    facts = parse_facts(facts_text(free_kib=20))
    probes = by_name(evaluate(COMPUTE, facts, 45.0, SlurmView(error="off")))
    assert probes["disk"].health is Health.FAIL
    assert probes["clock"].health is Health.FAIL and "NTP" in probes["clock"].detail
    warn = by_name(
        evaluate(
            COMPUTE,
            parse_facts(facts_text(free_kib=70).replace("load=0.50", "load=9.0")),
            -1.0,
            SlurmView(error="off"),
        )
    )
    assert warn["disk"].health is Health.WARN
    assert warn["clock"].health is Health.WARN and "-1.000 s" in warn["clock"].detail
    assert warn["load"].health is Health.WARN


def test_agent_metrics_unreachable_is_a_warning_not_a_guess() -> None:
    probes = by_name(evaluate(COMPUTE, parse_facts(facts_text(metrics=None)), 0.0, SlurmView(error="off")))
    assert probes["gpus"].health is Health.WARN
    assert "not readable (unreachable)" in probes["gpus"].detail


def test_controller_gets_its_own_daemons() -> None:
    text = "proc.munged=1\nproc.slurmctld=0\nproc.slurmdbd=1\nload=0.1\ncpus=2\ndisk=100 90 /\n"
    probes = by_name(evaluate(CONTROLLER, parse_facts(text), 0.0, SlurmView(error="off")))
    assert set(probes) == {"munged", "slurmctld", "slurmdbd", "disk", "clock", "load"}
    assert probes["slurmctld"].health is Health.FAIL
    assert "pgrep -x slurmd >" not in facts_script(CONTROLLER)


def test_gpu_count_from_metrics() -> None:
    assert gpus_in_metrics(METRICS) == 4
    assert gpus_in_metrics("hpcplat_node_gpus 8\n") == 8
    assert (
        gpus_in_metrics(
            'node_load1 0.5\nfoo_gpu_temp{minor_number="0"} 40\nfoo_gpu_temp{minor_number="5"} 41\n'
        )
        == 2
    )
    assert gpus_in_metrics("process_cpu_seconds_total 3\n") is None


def test_report_health_and_exit_rule() -> None:
    ok = HostReport("a", "1", ("compute",), ())
    facts = parse_facts(facts_text())
    warn = HostReport("b", "2", ("compute",), tuple(evaluate(COMPUTE, facts, 2.0, SlurmView(error="off"))))
    assert warn.health is Health.WARN
    report = FleetReport((ok, warn), slurm="off")
    assert report.healthy() and not report.healthy(strict=True)
    assert report.to_dict()["hosts"][1]["probes"]["clock"]["health"] == "warn"


def test_agent_pattern_never_matches_the_probe_script_itself() -> None:
    script = facts_script(COMPUTE)
    assert "hpcplat-node-agent" not in script  # the pgrep -f pattern is written as [h]pcplat-node-agent


def test_drain_only_compute_hosts_and_logs_script_quotes_paths() -> None:
    assert slurm_nodes([COMPUTE]) == [(COMPUTE, "n1")]
    with pytest.raises(UsageError, match="not in the compute group"):
        slurm_nodes([CONTROLLER])
    host = Host("g", frozenset({"compute"}), {"node_agent_log": "/var/log/a b;$(x).log"})
    assert "'/var/log/a b;$(x).log'" in logs_script(host, lines=5, which=["agent"])


# --- hosts that cannot be reached: one line each, the real cause, no traceback ---------------------


@pytest.fixture
def closing_listener() -> Iterator[int]:
    """A port that accepts TCP connections and closes them at once (no SSH banner)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield int(server.getsockname()[1])


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def test_unreachable_hosts_get_one_line_each_with_the_real_cause(
    tmp_path: Path, closing_listener: int, silent_listener: int
) -> None:
    refused_port = closed_port()
    hosts = {
        "refused": {"ansible_host": "127.0.0.1", "ansible_port": refused_port},
        "closing": {"ansible_host": "127.0.0.1", "ansible_port": closing_listener},
        "silent": {"ansible_host": "127.0.0.1", "ansible_port": silent_listener},
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "controller": {"hosts": {"refused": hosts["refused"]}},
                        "compute": {"hosts": {"closing": hosts["closing"], "silent": hosts["silent"]}},
                    }
                }
            }
        )
    )
    argv = [sys.executable, "-m", "hpcplat", "fleet", "-i", str(inventory)]
    argv += ["--known-hosts", str(tmp_path / "known_hosts"), "--no-agent", "--connect-timeout", "1.5"]
    started = time.monotonic()
    result = run([*argv, "check", "--no-slurm"], timeout=60, check=False)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "paramiko" not in output, output
    problems = [line for line in output.splitlines() if line.startswith(("refused:", "closing:", "silent:"))]
    assert len(problems) == 3, output  # one line per host
    by_host = {line.split(":", 1)[0]: line for line in problems}
    assert f"refused: ssh: connection refused at 127.0.0.1:{refused_port}" in by_host["refused"]
    # closed at once: said so, not reported as a timeout it never waited for
    assert "closed the connection during the SSH handshake" in by_host["closing"]
    assert "did not finish" not in by_host["closing"]
    assert "did not finish within 1.5 s" in by_host["silent"]
    assert took < 30
