"""Filters of the Slurm roles: the node list both slurm.conf and gres.conf are rendered from.

Kept in Python (and tested: tests/integration/test_ansible_roles.py) rather than in Jinja, so a
missing value is an error naming the host and the variable to set.
"""

from __future__ import annotations

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


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"hpcplat_slurm_nodes": hpcplat_slurm_nodes}
