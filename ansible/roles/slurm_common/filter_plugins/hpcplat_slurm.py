"""Filters of the Slurm roles: the node list, the Slurm files' parameter lines, restart decisions.

Kept in Python (and tested: tests/unit/test_fleet_ansible_roles.py) rather than in Jinja, so a
missing or unstorable value is an error naming the host or the key and what to set.

Every Slurm file the roles write (slurm.conf, gres.conf, cgroup.conf, slurmdbd.conf) holds the
role's production defaults merged with the site's own mapping (``slurm_conf``, ``gres_conf``,
``cgroup_conf``, ``slurmdbd_conf``): ``hpcplat_slurm_params`` writes that mapping as ``Key=Value``
lines. ``hpcplat_slurm_change`` compares the file before and after a run and says what Slurm needs
for the change to take effect (``scontrol reconfigure``, or restarts).
"""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError


def _int(host: str, name: str, value: Any, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AnsibleFilterError(f"{host}: {name} must be a whole number >= 0, got {value!r}; {hint}")
    return value


def hpcplat_slurm_nodes(hosts: list[str], hostvars: Any, slurmd_port: int) -> list[dict[str, Any]]:
    """The Slurm node of each compute host, with the values the templates need."""
    nodes = []
    for host in hosts:
        hv = hostvars[host]
        missing = [k for k in ("cpus", "memory_mb") if k not in hv]
        if missing:
            raise AnsibleFilterError(
                f"{host}: set {' and '.join(missing)} in the inventory (the values `slurmd -C` prints on "
                "the machine: CPUs= and RealMemory=)"
            )
        gpus = _int(host, "gpu_count", hv.get("gpu_count", 0), "set it to the number of GPUs")
        files = hv.get("gpu_devices")
        if files is None:
            files = [f"/dev/nvidia{i}" for i in range(gpus)]
        if len(files) != gpus:
            raise AnsibleFilterError(
                f"{host}: gpu_count is {gpus} but gpu_devices lists {len(files)} device(s); make them agree"
            )
        nodes.append(
            {
                "name": str(hv.get("slurm_node_name", host)),
                "addr": str(hv.get("ansible_host", host)),
                "port": _int(host, "slurmd_port", hv.get("slurmd_port", slurmd_port), "a TCP port"),
                "cpus": _int(host, "cpus", hv["cpus"], "see `slurmd -C`"),
                "memory_mb": _int(host, "memory_mb", hv["memory_mb"], "see `slurmd -C`"),
                "gpus": gpus,
                "gpu_files": [str(f) for f in files],
            }
        )
    return nodes


_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*")

# Parameters whose change `scontrol reconfigure` does not apply: slurmctld must be restarted, then
# every slurmd (man scontrol, "reconfigure"; plugin types are loaded once at start).
_RESTART_KEYS = frozenset(
    k.lower()
    for k in (
        "AuthType", "AuthInfo", "AuthAltTypes", "CredType", "ControlMachine", "SlurmctldHost",
        "SlurmctldAddr", "SlurmctldPort", "SlurmdPort", "SlurmUser", "SlurmdUser", "PluginDir",
        "StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmdPidFile", "GresTypes",
        "SlurmctldParameters", "SlurmdParameters", "TaskPluginParam", "CommunicationParameters",
    )
)
_RESTART_SUFFIXES = ("type", "plugin", "plugins")


def _value(file: str, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, (list, tuple)):
        text = ",".join(_value(file, key, v) for v in value)
    elif isinstance(value, (int, float, str)):
        text = str(value)
    else:
        raise AnsibleFilterError(f"{file}: {key} must be a string, number or list, got {value!r}")
    if any(c in "#\"'\\" or c.isspace() or not c.isprintable() for c in text):
        shown = "(hidden)" if "pass" in key.lower() else repr(text)
        raise AnsibleFilterError(
            f"{file}: the value of {key} {shown} cannot be stored: Slurm reads '#' as the start of a "
            "comment and ends a value at a blank; quotes, backslashes and control characters are not "
            "kept either; choose a value without them"
            + (" (a database password: generate one from letters and digits)" if "pass" in key.lower() else "")
        )
    return text


def hpcplat_slurm_params(params: Any, file: str = "slurm.conf") -> str:
    """``{"ClusterName": "c", "SchedulerParameters": ["a", "b"], "Gone": None}`` -> ``ClusterName=c\nSchedulerParameters=a,b``.

    ``None`` drops a key (a site removes a default that way); a list is joined with commas; true
    and false become YES and NO. Keys are written in the mapping's order.
    """
    if not isinstance(params, dict):
        raise AnsibleFilterError(f"{file}: the settings must be a mapping of Slurm parameters, got {params!r}")
    lines = []
    for key, value in params.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise AnsibleFilterError(
                f"{file}: {key!r} is not a Slurm parameter name (letters and digits, as in the Slurm "
                "manual: SchedulerParameters, MailProg...)"
            )
        if value is None:
            continue
        lines.append(f"{key}={_value(file, key, value)}")
    return "\n".join(lines)


def _parse(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Global ``key -> value`` (lower-case keys) and ``NodeName -> its whole line``."""
    params: dict[str, str] = {}
    nodes: dict[str, str] = {}
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lower()
        if key == "nodename":
            nodes[value.split()[0] if value.split() else ""] = " ".join(line.split())
        elif key in ("partitionname", "name"):
            params[f"{key}:{value.split()[0] if value.split() else ''}"] = " ".join(line.split())
        else:
            params[key] = value.strip()
    return params, nodes


def _restart_key(key: str) -> bool:
    return key in _RESTART_KEYS or key.endswith(_RESTART_SUFFIXES)


def hpcplat_slurm_change(old: Any, new: str, node: str = "") -> dict[str, Any]:
    """What a change of slurm.conf from ``old`` to ``new`` needs, as Slurm documents it.

    Returns ``{"ctld": "none"|"reconfigure"|"restart", "slurmd": bool, "why": [...]}``: slurmctld
    is restarted when a node line, GresTypes or a plugin type changed (reconfigure cannot apply
    those), reconfigured for any other change; ``slurmd`` is true when this host's slurmd (node
    ``node``) must be restarted: its own node line, or a parameter every slurmd reads at start. An
    ``old`` of None or "" is a first install: the daemons start with the new file, nothing to do.
    """
    if not old:
        return {"ctld": "none", "slurmd": False, "why": []}
    before, nodes_before = _parse(old)
    after, nodes_after = _parse(new)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    changed_nodes = sorted(n for n in nodes_before.keys() | nodes_after.keys() if nodes_before.get(n) != nodes_after.get(n))
    restart_keys = [k for k in changed if _restart_key(k)]
    why = [f"{k} changed" for k in changed] + [f"node {n} changed" for n in changed_nodes]
    if restart_keys or changed_nodes:
        ctld = "restart"
    elif changed:
        ctld = "reconfigure"
    else:
        ctld = "none"
    slurmd = bool(restart_keys) or (bool(node) and node in changed_nodes)
    return {"ctld": ctld, "slurmd": slurmd, "why": why}


def hpcplat_gres_change(old: Any, new: str, node: str) -> bool:
    """Whether ``node``'s slurmd must be restarted for a change of gres.conf (its lines or global ones)."""
    if not old:
        return False

    def mine(text: str) -> list[str]:
        out = []
        for raw in text.splitlines():
            line = " ".join(raw.split("#", 1)[0].split())
            if not line:
                continue
            names = [w.partition("=")[2] for w in line.split() if w.lower().startswith("nodename=")]
            if not names or node in names:
                out.append(line)
        return out

    return mine(str(old)) != mine(new)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "hpcplat_slurm_nodes": hpcplat_slurm_nodes,
            "hpcplat_slurm_params": hpcplat_slurm_params,
            "hpcplat_slurm_change": hpcplat_slurm_change,
            "hpcplat_gres_change": hpcplat_gres_change,
        }
