"""The one inventory of the site's machines: an Ansible YAML inventory, read by hpcplat too.

Ansible provisions the machines from it (``ansible-playbook -i hosts.yml ansible/site.yml``) and
``hpcplat fleet`` reaches them with it, so a machine is described once. The loader reads the
subset of the Ansible YAML inventory format that sites use (groups with ``hosts``, ``vars`` and
``children``, numeric host ranges such as ``gpu[01:08]``) and merges variables the way Ansible does:
``all`` first, then groups from the outermost to the innermost (by name within one depth), then
the host's own variables.

Every problem is reported at once, each naming the host or group and the fix: a host given twice
with different values, a required group missing, a variable renamed since an older release, a
value of the wrong type.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcplat.errors import UsageError

REQUIRED_GROUPS = ("controller", "compute")
"""Groups every site has: the Slurm controller and the GPU machines."""

KNOWN_GROUPS = ("controller", "dbd", "compute", "login")


@dataclass(frozen=True)
class RenamedVar:
    old: str
    new: str
    since: str


RENAMED_VARS: dict[str, RenamedVar] = {
    r.old: r
    for r in (
        RenamedVar("gpus", "gpu_count", "0.1"),
        RenamedVar("num_gpus", "gpu_count", "0.1"),
        RenamedVar("slurm_nodename", "slurm_node_name", "0.1"),
        RenamedVar("agent_log", "node_agent_log", "0.1"),
        RenamedVar("agent_port", "node_agent_port", "0.1"),
        RenamedVar("slurmd_logfile", "slurmd_log", "0.1"),
    )
}
"""Variables renamed since an older hpcplat release. The Ansible roles check the same table
(``ansible/group_vars/all/hpcplat.yml``: ``hpcplat_renamed_vars``); a test keeps them equal."""

HOST_DEFAULTS: dict[str, Any] = {
    "ansible_port": 22,
    "ansible_user": "root",
    "gpu_count": 0,
    "node_agent_port": 9810,
    "node_agent_log": "/var/log/hpcplat/node-agent.log",
    "slurmd_log": "/var/log/slurm/slurmd.log",
}
"""Defaults for the variables hpcplat reads; the roles use the same values."""

_RANGE = re.compile(r"\[(\d+):(\d+)(?::(\d+))?\]")
_GROUP_KEYS = frozenset({"hosts", "vars", "children"})


class InventoryError(UsageError):
    """The inventory cannot be used; ``problems`` lists every one found, each with its fix."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        shown = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"inventory {path} has {len(problems)} problem(s):\n{shown}",
            hint="fix the inventory, then check it with `ansible-inventory -i INVENTORY --graph`",
        )
        self.path = str(path)
        self.problems = list(problems)


@dataclass(frozen=True)
class Host:
    """One machine: its inventory name, how to reach it, its groups and merged variables."""

    name: str
    groups: frozenset[str]
    vars: Mapping[str, Any] = field(default_factory=dict)

    def _get(self, key: str) -> Any:
        return self.vars.get(key, HOST_DEFAULTS.get(key))

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int:
        return int(self._get("ansible_port"))

    @property
    def user(self) -> str:
        return str(self._get("ansible_user"))

    @property
    def key_file(self) -> str | None:
        value = self.vars.get("ansible_ssh_private_key_file")
        return str(value) if value else None

    @property
    def gpu_count(self) -> int:
        return int(self._get("gpu_count"))

    @property
    def slurm_node_name(self) -> str:
        return str(self.vars.get("slurm_node_name", self.name))

    @property
    def node_agent_port(self) -> int:
        return int(self._get("node_agent_port"))

    @property
    def node_agent_log(self) -> str:
        return str(self._get("node_agent_log"))

    @property
    def slurmd_log(self) -> str:
        return str(self._get("slurmd_log"))

    def in_group(self, group: str) -> bool:
        return group in self.groups


@dataclass(frozen=True)
class Inventory:
    path: str
    hosts: Mapping[str, Host]
    groups: Mapping[str, tuple[str, ...]]
    """Group name -> its hosts (including those of child groups), in inventory order."""

    def select(self, targets: Iterable[str]) -> list[Host]:
        """Hosts named by ``targets`` (host names, group names or ``all``), in order, once each.

        An unknown name is a :class:`UsageError` listing close matches and the groups.
        """
        chosen: dict[str, Host] = {}
        unknown: list[str] = []
        for target in targets:
            if target == "all":
                names: Sequence[str] = list(self.hosts)
            elif target in self.hosts:
                names = [target]
            elif target in self.groups:
                names = self.groups[target]
            else:
                unknown.append(target)
                continue
            for name in names:
                chosen.setdefault(name, self.hosts[name])
        if unknown:
            candidates = [*self.hosts, *self.groups, "all"]
            parts = []
            for name in unknown:
                close = difflib.get_close_matches(name, candidates, n=3)
                suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
                parts.append(f"{name!r}{suggestion}")
            groups = ", ".join(sorted(g for g in self.groups if g != "all"))
            raise UsageError(
                f"unknown host or group {', '.join(parts)} in inventory {self.path}",
                hint=f"groups: {groups}; hosts: {_short_list(self.hosts)}; "
                "add the machine to the inventory first",
            )
        return list(chosen.values())


def _short_list(names: Iterable[str], limit: int = 12) -> str:
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping."""


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(
                f"{key!r} is given twice in the same mapping (lines {seen[key]} and {line}); "
                "a host or variable must appear once per group: merge the two entries"
            )
        seen[key] = line
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expand_host_pattern(name: str) -> list[str]:
    """``gpu[01:03]`` -> ``gpu01 gpu02 gpu03`` (Ansible's numeric ranges, zero padding kept)."""
    match = _RANGE.search(name)
    if match is None:
        return [name]
    start_text, end_text, step_text = match.groups()
    start, end, step = int(start_text), int(end_text), int(step_text or 1)
    width = len(start_text) if start_text.startswith("0") else 0
    prefix, suffix = name[: match.start()], name[match.end() :]
    out: list[str] = []
    for number in range(start, end + 1, max(step, 1)):
        out.extend(expand_host_pattern(f"{prefix}{number:0{width}d}{suffix}"))
    return out


@dataclass
class _Occurrence:
    group: str
    depth: int
    vars: dict[str, Any]


@dataclass
class _Builder:
    path: str
    problems: list[str] = field(default_factory=list)
    host_order: list[str] = field(default_factory=list)
    occurrences: dict[str, list[_Occurrence]] = field(default_factory=dict)
    group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_depth: dict[str, int] = field(default_factory=dict)
    group_hosts: dict[str, list[str]] = field(default_factory=dict)
    group_children: dict[str, list[str]] = field(default_factory=dict)

    def walk_group(self, name: str, body: Any, depth: int) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            self.problems.append(
                f"group {name!r}: expected a mapping with hosts/vars/children, got {type(body).__name__}"
            )
            return
        extra = sorted(set(body) - _GROUP_KEYS)
        if extra:
            self.problems.append(
                f"group {name!r}: unknown key(s) {', '.join(map(str, extra))}; a group holds only "
                "'hosts', 'vars' and 'children' (put host names under 'hosts:')"
            )
        self.group_depth[name] = max(depth, self.group_depth.get(name, 0))
        self.group_hosts.setdefault(name, [])
        self.group_children.setdefault(name, [])
        group_vars = body.get("vars") or {}
        if not isinstance(group_vars, dict):
            self.problems.append(f"group {name!r}: 'vars' must be a mapping")
            group_vars = {}
        self._check_renamed(f"group {name!r}", group_vars)
        self.group_vars.setdefault(name, {}).update(group_vars)
        hosts = body.get("hosts") or {}
        if isinstance(hosts, list):
            self.problems.append(
                f"group {name!r}: 'hosts' must be a mapping (`name:` per line, with its variables "
                "under it), not a list"
            )
            hosts = {}
        if not isinstance(hosts, dict):
            self.problems.append(f"group {name!r}: 'hosts' must be a mapping of host names")
            hosts = {}
        for pattern, host_vars in hosts.items():
            if host_vars is None:
                host_vars = {}
            if not isinstance(host_vars, dict):
                self.problems.append(
                    f"host {pattern!r} in group {name!r}: its variables must be a mapping, got {host_vars!r}"
                )
                continue
            for host in expand_host_pattern(str(pattern)):
                self._check_renamed(f"host {host!r}", host_vars)
                if host not in self.occurrences:
                    self.host_order.append(host)
                self.occurrences.setdefault(host, []).append(_Occurrence(name, depth, dict(host_vars)))
                self.group_hosts[name].append(host)
        children = body.get("children") or {}
        if not isinstance(children, dict):
            self.problems.append(f"group {name!r}: 'children' must be a mapping of group names")
            children = {}
        for child, child_body in children.items():
            self.group_children[name].append(str(child))
            self.walk_group(str(child), child_body, depth + 1)

    def _check_renamed(self, where: str, variables: Mapping[str, Any]) -> None:
        for key in variables:
            renamed = RENAMED_VARS.get(key)
            if renamed is not None:
                self.problems.append(
                    f"{where}: variable {renamed.old!r} was renamed in hpcplat {renamed.since}; "
                    f"rename {renamed.old} to {renamed.new}"
                )

    def members(self, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        if group in seen:
            self.problems.append(f"group {group!r} is its own descendant; remove the cycle in 'children'")
            return []
        out = list(self.group_hosts.get(group, []))
        for child in self.group_children.get(group, []):
            out.extend(self.members(child, seen | {group}))
        return list(dict.fromkeys(out))

    def host_vars(self, host: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for occ in self.occurrences[host]:
            for key, value in occ.vars.items():
                if key in merged and merged[key] != value:
                    self.problems.append(
                        f"host {host!r} is listed twice with different {key}: {merged[key]!r} "
                        f"(under {origin[key]!r}) and {value!r} (under {occ.group!r}); keep one "
                        "value: give host variables in one place only"
                    )
                    continue
                merged[key] = value
                origin[key] = occ.group
        return merged


def _check_host(host: Host) -> list[str]:
    problems: list[str] = []
    v = host.vars
    for key in ("gpu_count", "ansible_port", "node_agent_port"):
        if key in v and (isinstance(v[key], bool) or not isinstance(v[key], int) or v[key] < 0):
            problems.append(f"host {host.name!r}: {key} must be a whole number >= 0, got {v[key]!r}")
    if "ansible_port" in v and isinstance(v["ansible_port"], int) and not 0 < v["ansible_port"] < 65536:
        problems.append(f"host {host.name!r}: ansible_port {v['ansible_port']} is not a TCP port (1-65535)")
    devices = v.get("gpu_devices")
    if devices is not None:
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            problems.append(f"host {host.name!r}: gpu_devices must be a list of device paths")
        elif isinstance(v.get("gpu_count"), int) and len(devices) != v["gpu_count"]:
            problems.append(
                f"host {host.name!r}: gpu_count is {v['gpu_count']} but gpu_devices lists "
                f"{len(devices)} device(s); make them agree (or drop gpu_devices to use /dev/nvidiaN)"
            )
    return problems


def parse_inventory(data: Any, *, path: str = "<inventory>") -> Inventory:
    """Build and validate an :class:`Inventory` from the parsed YAML document."""
    if not isinstance(data, dict) or not data:
        raise InventoryError(path, ["the file must be a YAML mapping with an 'all:' group at the top"])
    builder = _Builder(path)
    for name, body in data.items():
        builder.walk_group(str(name), body, 0 if name == "all" else 1)
    group_members = {name: builder.members(name) for name in builder.group_depth}
    group_members["all"] = list(builder.host_order)

    ordered_groups = sorted(
        (g for g in builder.group_depth if g != "all"), key=lambda g: (builder.group_depth[g], g)
    )
    hosts: dict[str, Host] = {}
    for name in builder.host_order:
        in_groups = {g for g, members in group_members.items() if name in members and g != "all"}
        merged: dict[str, Any] = dict(builder.group_vars.get("all", {}))
        for group in ordered_groups:
            if group in in_groups:
                merged.update(builder.group_vars.get(group, {}))
        merged.update(builder.host_vars(name))
        hosts[name] = Host(name=name, groups=frozenset(in_groups), vars=merged)

    problems = builder.problems
    for group in REQUIRED_GROUPS:
        if not group_members.get(group):
            what = "is empty" if group in group_members else "is missing"
            problems.append(
                f"required group {group!r} {what}; add it under all.children with at least one host "
                f"(groups found: {', '.join(sorted(g for g in group_members if g != 'all')) or 'none'})"
            )
    by_address: dict[tuple[str, int], str] = {}
    for host in hosts.values():
        problems.extend(_check_host(host))
        try:
            where = (host.address, host.port)
        except (TypeError, ValueError):
            continue
        if where in by_address:
            problems.append(
                f"hosts {by_address[where]!r} and {host.name!r} both point at {where[0]}:{where[1]}; "
                "one machine is listed twice under two names: remove one, or give each its own "
                "ansible_host/ansible_port"
            )
        else:
            by_address[where] = host.name
    if problems:
        raise InventoryError(path, list(dict.fromkeys(problems)))
    return Inventory(path=path, hosts=hosts, groups={g: tuple(m) for g, m in group_members.items()})


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate the inventory at ``path`` (:class:`InventoryError` lists every problem)."""
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError as exc:
        raise UsageError(
            f"inventory {file} does not exist",
            hint="pass -i PATH or set HPCPLAT_INVENTORY; ansible/inventory/hosts.example.yml is a start",
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot read inventory {file}: {exc.strerror}") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise InventoryError(file, [str(exc)]) from exc
    except yaml.YAMLError as exc:
        raise InventoryError(file, [f"not valid YAML: {exc}"]) from exc
    return parse_inventory(data, path=str(file))
