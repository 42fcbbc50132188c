"""Unit tests of the node agent's configuration, parsers, process table and GPU backends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hpcplat.slurm.parse import expand_hostlist
from hpcplat.slurm.state import JobState, NodeState
from node_agent.config import BackendChoice, ConfigError, IdlePolicy, OrphanPolicy, from_mapping, load
from node_agent.gpu.backend import BackendUnavailable, GpuBackendError, ReadHint
from node_agent.gpu.choose import open_backend
from node_agent.gpu.emulated import EmulatedBackend, parse_gres_conf
from node_agent.gpu.nvml import NvmlBackend, classify
from node_agent.policy.orphans import Daemons, OrphanReaper
from node_agent.procs import ProcessTable, identity, parse_cgroup, parse_environ, parse_stat
from node_agent.slurm_view import NodeJobs, parse_job_detail, parse_listpids, parse_node_line

# Recorded from Slurm 22.05.8 (the sandbox): `scontrol show job -d` of a running 2-GPU batch job
# whose name, output path and comment hold spaces and a '|'.
RUNNING_JOB = """JobId=84 JobName=my job | with spaces
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=1333 Nice=0 Account=vision QOS=normal
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   DerivedExitCode=0:0
   RunTime=00:00:01 TimeLimit=00:30:00 TimeMin=N/A
   SubmitTime=2026-11-23T17:15:34 EligibleTime=2026-11-23T17:15:34
   AccrueTime=2026-11-23T17:15:34
   StartTime=2026-11-23T17:15:34 EndTime=2026-11-23T17:45:34 Deadline=N/A
   PreemptEligibleTime=2026-11-23T17:15:34 PreemptTime=None
   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-23T17:15:34 Scheduler=Backfill
   Partition=debug AllocNode:Sid=localhost:5469
   ReqNodeList=(null) ExcNodeList=(null)
   NodeList=n1
   BatchHost=n1
   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=1,node=1,billing=1,gres/gpu=2
   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*
   JOB_GRES=gpu:2
     Nodes=n1 CPU_IDs=2 Mem=0 GRES=gpu:2(IDX:0-1)
   MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0
   Features=(null) DelayBoot=00:00:00
   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)
   Command=(null)
   WorkDir=/tmp
   Comment=hpcplat:r-abc123 
   StdErr=/tmp/na probe 84.out
   StdIn=/dev/null
   StdOut=/tmp/na probe 84.out
   Power=
   TresPerNode=gres:gpu:2
"""  # noqa: W291 - recorded as Slurm prints it

# Recorded: a 2-node job with one GPU on each node.
TWO_NODE_JOB = """JobId=86 JobName=wrap
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=1333 Nice=0 Account=vision QOS=normal
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   DerivedExitCode=0:0
   RunTime=00:00:00 TimeLimit=00:30:00 TimeMin=N/A
   SubmitTime=2026-11-23T17:15:37 EligibleTime=2026-11-23T17:15:37
   AccrueTime=2026-11-23T17:15:37
   StartTime=2026-11-23T17:15:38 EndTime=2026-11-23T17:45:38 Deadline=N/A
   PreemptEligibleTime=2026-11-23T17:15:38 PreemptTime=None
   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-23T17:15:38 Scheduler=Main
   Partition=debug AllocNode:Sid=localhost:5469
   ReqNodeList=(null) ExcNodeList=(null)
   NodeList=n[1-2]
   BatchHost=n1
   NumNodes=2 NumCPUs=2 NumTasks=2 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=2,node=2,billing=2,gres/gpu=2
   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*
   JOB_GRES=gpu:2
     Nodes=n1 CPU_IDs=2 Mem=0 GRES=gpu:1(IDX:0)
     Nodes=n2 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)
   MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0
   Features=(null) DelayBoot=00:00:00
   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)
   Command=(null)
   WorkDir=/tmp
   StdErr=/dev/null
   StdIn=/dev/null
   StdOut=/dev/null
   Power=
   TresPerNode=gres:gpu:1
"""

# Recorded: the first line of an array task.
ARRAY_FIRST_LINE = "JobId=46 ArrayJobId=42 ArrayTaskId=2 ArrayTaskThrottle=2 JobName=rec-array\n"


# --- configuration ----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_follow_real_sites() -> None:
    config = from_mapping({})
    assert config.interval_s == 10.0
    assert config.idle.warn_after_s == (3600.0, 6300.0)
    assert config.idle.act_after_s == 7200.0
    assert config.idle.exempt_interactive
    assert config.backend is BackendChoice.AUTO


def test_sandbox_site_config_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hpcplat.toml",
        """
        [catalog]
        url = "sqlite:////tmp/x.db"
        [tiers.preemptible]
        qos = "preemptible"
        preemptible = true
        [node_agent]
        interval_s = 2
        [node_agent.idle]
        warn_after_s = [5, 1]
        act_after_s = 8
        [node_agent.tiers.preemptible.idle]
        act_after_s = 3
        warn_after_s = []
        [node_agent.partitions.debug.idle]
        enabled = false
        """,
    )
    config = load(path)
    assert config.interval_s == 2.0
    assert config.catalog_url == "sqlite:////tmp/x.db"
    assert config.idle.warn_after_s == (1.0, 5.0)  # sorted
    assert config.idle_policy_for(qos="preemptible", partition="gpu").act_after_s == 3.0
    assert config.idle_policy_for(qos="normal", partition="gpu").act_after_s == 8.0
    # a partition override wins over the tier's
    assert config.idle_policy_for(qos="preemptible", partition="debug").enabled is False
    assert config.tier_of("preemptible") == "preemptible"


@pytest.mark.parametrize("value", [0, 0.5, 61, "10", True])
def test_interval_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"node_agent": {"interval_s": value}}, source="site.toml")
    message = str(info.value)
    assert "site.toml: node_agent.interval_s" in message
    assert "hint:" in message


def test_unknown_key_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"node_agent": {"idle": {"act_after": 5}}})
    assert "act_after" in str(info.value)
    assert "act_after_s" in str(info.value.hint)


def test_warnings_must_come_before_the_action() -> None:
    with pytest.raises(ConfigError, match="before"):
        from_mapping({"node_agent": {"idle": {"warn_after_s": [10], "act_after_s": 5}}})


def test_override_of_act_after_alone_moves_the_inherited_warnings(tmp_path: Path) -> None:
    # The override docs/node-agent.md shows: act_after_s alone, under the default warnings.
    path = write(
        tmp_path / "site.toml",
        """
        [tiers.preemptible]
        qos = "preemptible"
        [node_agent.tiers.preemptible.idle]
        act_after_s = 3600
        [node_agent.partitions.long.idle]
        act_after_s = 14400
        """,
    )
    config = load(path)
    preemptible = config.idle_policy_for(qos="preemptible", partition="gpu")
    assert preemptible.act_after_s == 3600.0
    assert preemptible.warn_after_s == (1800.0, 3150.0)  # 1/2 and 7/8 of act_after_s, as the defaults
    assert config.idle_policy_for(qos="normal", partition="long").warn_after_s == (7200.0, 12600.0)
    assert config.idle == IdlePolicy()
    # the same in [node_agent.idle], and a tier override inherits the moved warnings in turn
    config = from_mapping(
        {
            "node_agent": {
                "idle": {"act_after_s": 600},
                "tiers": {"preemptible": {"idle": {"act_after_s": 60}}},
            }
        }
    )
    assert config.idle.warn_after_s == (300.0, 525.0)
    assert config.idle_by_tier["preemptible"].warn_after_s == (30.0, 52.5)


def test_explicit_warnings_in_an_override_are_taken_as_written() -> None:
    tiers = {"preemptible": {"idle": {"act_after_s": 3600, "warn_after_s": [600]}}}
    config = from_mapping({"node_agent": {"tiers": tiers}})
    assert config.idle_by_tier["preemptible"].warn_after_s == (600.0,)
    bad = {"preemptible": {"idle": {"act_after_s": 3600, "warn_after_s": [3600]}}}
    with pytest.raises(ConfigError, match=r"node_agent\.tiers\.preemptible\.idle.*before"):
        from_mapping({"node_agent": {"tiers": bad}})
    # warn_after_s alone is checked against the inherited act_after_s
    with pytest.raises(ConfigError, match="before"):
        from_mapping({"node_agent": {"tiers": {"preemptible": {"idle": {"warn_after_s": [8000]}}}}})


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[node_agent\ninterval_s = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load(path)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert "HPCPLAT_CONFIG" in str(info.value.hint)


def test_site_checks_need_absolute_paths() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        from_mapping({"node_agent": {"health": {"checks": ["check.sh"]}}})
    config = from_mapping({"node_agent": {"health": {"checks": [{"path": "/bin/true", "timeout_s": 2}]}}})
    assert config.health.checks[0].name == "true"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "node_agent" / "node-agent.example.toml"
    config = load(example)
    assert config.idle == IdlePolicy()  # the example shows the defaults
    assert config.idle_policy_for(qos="preemptible", partition="gpu").act_after_s == 3600
    assert not config.idle_policy_for(qos="normal", partition="debug").enabled


# --- host lists, gres.conf, Slurm records ------------------------------------------------------


def test_hostlist_expansion() -> None:
    assert expand_hostlist("n[1-3],gpu7") == ["n1", "n2", "n3", "gpu7"]
    assert expand_hostlist("gpu[08-10]") == ["gpu08", "gpu09", "gpu10"]
    assert expand_hostlist("/dev/nvidia[0-1]") == ["/dev/nvidia0", "/dev/nvidia1"]
    assert expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    with pytest.raises(ValueError):
        expand_hostlist("n[1-")


def test_gres_conf_gives_each_node_its_files_in_index_order() -> None:
    text = """
    # Rendered by hpcplat sandbox; do not edit.
    AutoDetect=off
    NodeName=n1 Name=gpu File=/s/gpu/n1gpu0
    NodeName=n1 Name=gpu File=/s/gpu/n1gpu1
    NodeName=n2 Name=gpu File=/s/gpu/n2gpu[0-1]
    NodeName=n[3-4] name=gpu Type=a100 File=/dev/nvidia[0-3]
    NodeName=n1 Name=mps Count=100
    """
    assert parse_gres_conf(text, "n1") == ["/s/gpu/n1gpu0", "/s/gpu/n1gpu1"]
    assert parse_gres_conf(text, "n2") == ["/s/gpu/n2gpu0", "/s/gpu/n2gpu1"]
    assert parse_gres_conf(text, "n4") == [f"/dev/nvidia{i}" for i in range(4)]
    assert parse_gres_conf(text, "n9") == []


def test_recorded_job_detail_is_parsed() -> None:
    job = parse_job_detail(RUNNING_JOB)
    assert job.job_id == "84"
    assert job.name == "my job | with spaces"
    assert (job.user, job.uid) == ("root", 0)
    assert job.state is JobState.RUNNING
    assert job.requeue and job.batch
    assert job.partition == "debug" and job.qos == "normal"
    assert job.gpus_by_node == {"n1": (0, 1)}
    assert job.gpu_count == 2
    assert job.stdout_path == "/tmp/na probe 84.out"
    assert job.run_id == "r-abc123"
    assert not job.is_interactive(("interactive",))


def test_recorded_two_node_job_has_indices_per_node() -> None:
    job = parse_job_detail(TWO_NODE_JOB)
    assert job.nodes == ("n1", "n2")
    assert job.num_nodes == 2
    assert job.gpus_by_node == {"n1": (0,), "n2": (0,)}
    assert job.run_id is None


def test_array_task_first_line() -> None:
    job = parse_job_detail(ARRAY_FIRST_LINE + "   JobState=RUNNING Reason=None\n")
    assert job.job_id == "46"
    assert job.name == "rec-array"


def test_interactive_job_is_recognised() -> None:
    text = RUNNING_JOB.replace("BatchFlag=1", "BatchFlag=0")
    assert parse_job_detail(text).is_interactive(())


def test_node_line_with_an_agent_drain() -> None:
    line = (
        "NodeName=n4 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=4 CPUTot=4 Gres=gpu:4 "
        "NodeAddr=127.0.1.4 State=IDLE+DRAIN ThreadsPerCore=1 Partitions=gpu,debug "
        "Reason=hpcplat-agent: GPU missing: 3 of 4 present [root@2026-11-23T17:20:01]\n"
    )
    view = parse_node_line(line, "n4")
    assert view is not None
    assert view.status.state is NodeState.DRAINED
    assert view.reason == "hpcplat-agent: GPU missing: 3 of 4 present"
    assert view.drained_by_agent and view.gpus == 4
    admin = parse_node_line(line.replace("hpcplat-agent: GPU missing: 3 of 4 present", "disk swap"), "n4")
    assert admin is not None and admin.drained and not admin.drained_by_agent


# --- processes ---------------------------------------------------------------------------------


def test_stat_with_a_hostile_command_name() -> None:
    fields = " ".join(str(i) for i in range(3, 53))
    comm, state, ppid, cpu, start, rss = parse_stat(f"123 (a) b) (c) {fields}")
    assert comm == "a) b) (c"
    assert state == "3" and ppid == 4
    assert cpu == 14 + 15 and start == 22 and rss == 24


def test_environ_parsing_keeps_only_what_the_agent_needs() -> None:
    env = parse_environ(b"PATH=/bin\0SLURM_JOB_ID=42\0SLURMD_NODENAME=n3\0HPCPLAT_JOB_DIR=/d\0X=1=2\0")
    assert (env.job_id, env.node, env.job_dir, env.readable) == ("42", "n3", "/d", True)


def spawn(code: str, *, ready: bool = False, **env: str) -> subprocess.Popen[bytes]:
    """Starts ``code``; with ``ready``, returns only once the child's interpreter is up."""
    if not ready:
        return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env})
    proc = subprocess.Popen(
        [sys.executable, "-c", f"print('ready', flush=True)\n{code}"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def test_process_table_finds_a_jobs_processes() -> None:
    proc = spawn("import time; time.sleep(30)", SLURM_JOB_ID="999001", SLURMD_NODENAME="nx")
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            snapshot = ProcessTable().scan()
            mine = snapshot.claiming("999001", "nx")
            if mine:
                break
            time.sleep(0.05)
        assert [p.pid for p in mine] == [proc.pid]
        assert "999001" in snapshot.claimed_jobs("nx")
        assert "999001" not in snapshot.claimed_jobs("ny")
        # a claim is not membership: only Slurm's count makes a process a job's
        assert snapshot.of_job("999001") == [] and snapshot.jobs() == set()
        counted = replace(snapshot, slurm_jobs={proc.pid: "999001"})
        assert [p.pid for p in counted.of_job("999001")] == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


# --- GPU backends ------------------------------------------------------------------------------


def has_nvml_library() -> bool:
    return any(
        Path(d, "libnvidia-ml.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
    )


@pytest.mark.skipif(has_nvml_library(), reason="this machine has the NVIDIA library")
def test_nvml_without_the_library_is_library_missing() -> None:
    backend = NvmlBackend()
    with pytest.raises(GpuBackendError) as info:
        backend.open()
    assert info.value.reason is BackendUnavailable.LIBRARY_MISSING
    assert "libnvidia-ml.so.1" in info.value.detail


def test_nvml_error_codes_map_to_failure_modes() -> None:
    import pynvml

    cases = {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: BackendUnavailable.LIBRARY_MISSING,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED: BackendUnavailable.DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_GPU_IS_LOST: BackendUnavailable.GPU_LOST,
        pynvml.NVML_ERROR_NO_PERMISSION: BackendUnavailable.OTHER,
        pynvml.NVML_ERROR_UNKNOWN: BackendUnavailable.OTHER,
    }
    for code, reason in cases.items():
        assert classify(pynvml.NVMLError(code)) is reason


STUB_NVML = r"""
/* Stand-in for libnvidia-ml.so.1 on a machine without NVIDIA hardware: it answers nvmlInit the
   way the real library does when the kernel driver is not loaded (NVML_ERROR_DRIVER_NOT_LOADED = 9)
   or when there is no GPU (success, then a count of 0), chosen by NVML_STUB_MODE. */
#include <stdlib.h>
#include <string.h>
static int mode(void) { const char *m = getenv("NVML_STUB_MODE"); return m && !strcmp(m, "nogpu"); }
int nvmlInit_v2(void) { return mode() ? 0 : 9; }
int nvmlInit(void) { return nvmlInit_v2(); }
int nvmlInitWithFlags(unsigned int f) { (void)f; return nvmlInit_v2(); }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 0; return 0; }
int nvmlDeviceGetCount(unsigned int *n) { *n = 0; return 0; }
const char *nvmlErrorString(int r) { return r == 9 ? "Driver Not Loaded" : "Unknown Error"; }
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for the stub library")
@pytest.mark.parametrize(("mode", "reason"), [("driver", "driver_not_loaded"), ("nogpu", "no_gpus")])
def test_nvml_failure_modes_through_the_real_binding(tmp_path: Path, mode: str, reason: str) -> None:
    (tmp_path / "stub.c").write_text(STUB_NVML)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libnvidia-ml.so.1"), str(tmp_path / "stub.c")],
        check=True,
    )
    code = (
        "from node_agent.gpu.nvml import NvmlBackend\n"
        "from node_agent.gpu.backend import GpuBackendError\n"
        "try:\n    NvmlBackend().open()\nexcept GpuBackendError as e:\n    print(e.reason.value)\n"
    )
    env = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path), "NVML_STUB_MODE": mode}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == reason


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


def make_devices(directory: Path, node: str, count: int) -> list[str]:
    paths = []
    for i in range(count):
        path = directory / f"{node}gpu{i}"
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
        paths.append(str(path))
    return paths


@needs_root
def test_emulated_utilization_is_the_holding_jobs_cpu(tmp_path: Path) -> None:
    devices = make_devices(tmp_path, "nx", 3)
    # Each child says "ready" once its interpreter is up, so its start-up CPU falls before the
    # first read and the idle one uses no CPU at all between the two reads.
    busy = spawn("while True: pass", ready=True, SLURM_JOB_ID="999101", SLURMD_NODENAME="nx")
    idle = spawn("import time; time.sleep(60)", ready=True, SLURM_JOB_ID="999102", SLURMD_NODENAME="nx")
    try:
        table = ProcessTable()
        backend = EmulatedBackend("nx", devices=tuple(devices), procs=table)
        backend.open()
        holders = {0: "999101", 1: "999102"}
        # Slurm's count of the jobs' processes (the agent gets it from scontrol listpids)
        counted = {busy.pid: "999101", idle.pid: "999102"}
        first = backend.read(ReadHint(holders=holders, procs=replace(table.scan(), slurm_jobs=counted)))
        assert all(s.utilization_pct is None for s in first.samples)  # no previous read yet
        time.sleep(1.0)
        reading = backend.read(ReadHint(holders=holders, procs=replace(table.scan(), slurm_jobs=counted)))
        by_index = {s.index: s for s in reading.samples}
        assert by_index[0].utilization_pct is not None and by_index[0].utilization_pct >= 30
        assert by_index[1].utilization_pct == 0.0
        assert by_index[2].utilization_pct == 0.0  # held by no job
        assert by_index[1].memory_used_mb is not None and by_index[1].memory_used_mb > 1
        assert [g.uuid for g in reading.gpus] == ["EMU-nx-0", "EMU-nx-1", "EMU-nx-2"]
        assert all(g.emulated and g.name == "emulated-gpu" for g in reading.gpus)
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()


@needs_root
def test_emulated_missing_device_and_open_file_holders(tmp_path: Path) -> None:
    devices = make_devices(tmp_path, "nx", 2)
    holder = spawn(f"f = open({devices[1]!r}); import time; time.sleep(60)")
    try:
        backend = EmulatedBackend("nx", devices=tuple(devices))
        backend.open()
        os.unlink(devices[0])
        deadline = time.monotonic() + 5
        while True:
            reading = backend.read(ReadHint(scan_open_files=True))
            pids = [p.pid for s in reading.samples for p in s.processes]
            if pids or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reading.missing == (devices[0],)
        assert [g.index for g in reading.gpus] == [1]
        assert pids == [holder.pid]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


@needs_root
def test_auto_falls_back_to_emulation_only_outside_dev(tmp_path: Path) -> None:
    if has_nvml_library():
        pytest.skip("this machine has the NVIDIA library")
    devices = make_devices(tmp_path, "nx", 1)
    gres = tmp_path / "gres.conf"
    gres.write_text(f"NodeName=nx Name=gpu File={devices[0]}\nNodeName=ny Name=gpu File=/dev/nvidia0\n")
    config = from_mapping({"node_agent": {"emulated": {"gres_conf": str(gres)}}})
    backend = open_backend(BackendChoice.AUTO, "nx", config, ProcessTable())
    assert backend.name == "emulated"
    with pytest.raises(GpuBackendError) as info:
        open_backend(BackendChoice.AUTO, "ny", config, ProcessTable())
    assert info.value.reason is BackendUnavailable.LIBRARY_MISSING
    with pytest.raises(GpuBackendError) as info:
        open_backend(BackendChoice.EMULATED, "nz", config, ProcessTable())
    assert info.value.reason is BackendUnavailable.NO_GPUS


# --- Slurm's count of a job's processes; daemons ------------------------------------------------

LISTPIDS = """PID      JOBID    STEPID   LOCALID GLOBALID
7760     2        batch    0       0
7762     2        batch    -       -
11702    26       0        0       0
6968     1        extern   -       -
"""


def test_listpids_output_is_read_per_pid() -> None:
    assert parse_listpids(LISTPIDS) == {7760: "2", 7762: "2", 11702: "26", 6968: "1"}
    assert parse_listpids("PID      JOBID    STEPID   LOCALID GLOBALID\n") == {}


@pytest.mark.parametrize(
    ("text", "job"),
    [
        ("12:freezer:/slurm/uid_1000/job_42/step_0/task_0\n0::/\n", "42"),
        ("0::/system.slice/slurmstepd.scope/job_43/step_batch/user/task_0\n", "43"),
        ("0::/system.slice/n1_slurmstepd.scope/job_44/step_0/user/task_0\n", "44"),
        ("4:memory:/slurm_n1/uid_0/job_45/step_batch\n", "45"),
        ("0::/system.slice/n2_slurmstepd.scope/job_46/step_0\n", None),  # another node's slurmd
        # a user's own (delegated) cgroup can be named anything: not Slurm's
        ("0::/user.slice/user-1000.slice/user@1000.service/slurm/uid_1000/job_47\n", None),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("4:memory:/process_api/a0f0\n0::/\n", None),
    ],
)
def test_only_slurms_own_cgroups_name_a_job(text: str, job: str | None) -> None:
    assert parse_cgroup(text, "n1") == job


def slurm_named(tmp_path: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A copy of the python binary named ``slurmd``, and a python that renamed itself
    ``slurmstepd``: both say they belong to job 999201, which runs nowhere."""
    copy = tmp_path / "slurmd"
    shutil.copy2(os.path.realpath(sys.executable), copy)
    env = {**os.environ, "SLURM_JOB_ID": "999201", "SLURMD_NODENAME": "nx"}
    named = subprocess.Popen(
        [str(copy), "-S", "-c", "print('ready', flush=True); import time; time.sleep(60)"],
        env=env,
        stdout=subprocess.PIPE,
    )
    renamed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "open('/proc/self/comm', 'w').write('slurmstepd'); print('ready', flush=True)\n"
            "import time; time.sleep(60)",
        ],
        env=env,
        stdout=subprocess.PIPE,
    )
    for proc in (named, renamed):
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return named, renamed


def test_a_process_named_like_a_slurm_daemon_is_not_protected(tmp_path: Path) -> None:
    named, renamed = slurm_named(tmp_path)
    try:
        table = ProcessTable(node="nx")
        snapshot = replace(table.scan(), slurm_jobs={})  # Slurm counts them in no job
        assert snapshot.procs[named.pid].comm == "slurmd"
        assert snapshot.procs[renamed.pid].comm == "slurmstepd"
        reaper = OrphanReaper(OrphanPolicy(grace_s=0.0), "nx")
        none = NodeJobs(node="nx", polled_at=0.0)
        reaper.scan(0.0, none, snapshot, set())
        due, _ = reaper.scan(1.0, none, snapshot, set())
        assert {named.pid, renamed.pid} <= {c.pid for c in due}
        found = identity(named.pid)
        assert found is not None and found[0] == str(tmp_path / "slurmd")
        # what does protect: the binary and the uids (here: this python's, run by this user)
        mine = Daemons(frozenset({os.path.realpath(sys.executable)}), frozenset({os.getuid()}))
        assert mine.is_daemon(renamed.pid) and not mine.is_daemon(named.pid)
    finally:
        for proc in (named, renamed):
            proc.kill()
            proc.wait()


@pytest.mark.skipif(shutil.which("slurmd") is None or os.geteuid() != 0, reason="needs slurmd, as root")
def test_the_installed_slurm_binaries_are_daemons() -> None:
    found = Daemons()
    assert os.path.realpath(shutil.which("slurmd") or "") in found.binaries
    assert 0 in found.uids
