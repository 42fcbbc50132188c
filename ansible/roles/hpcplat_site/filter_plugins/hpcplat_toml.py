"""A filter that writes nested mappings as TOML tables (for the extra sections of the site file)."""

from __future__ import annotations

import json
from typing import Any

from ansible.errors import AnsibleFilterError


def _value(path: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(path, v) for v in value) + "]"
    raise AnsibleFilterError(f"{path}: cannot write {type(value).__name__} {value!r} as a TOML value")


def hpcplat_toml_tables(sections: Any, prefix: str = "") -> str:
    """``{"a": {"k": 1, "b": {"x": "y"}}}`` -> ``[a]\\nk = 1\\n\\n[a.b]\\nx = "y"\\n``."""
    if not isinstance(sections, dict):
        raise AnsibleFilterError(f"sections must be a mapping of tables, got {sections!r}")
    out: list[str] = []
    for name, table in sections.items():
        path = f"{prefix}{name}"
        if not isinstance(table, dict):
            raise AnsibleFilterError(f"[{path}] must be a mapping, got {table!r}")
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
        out.append(f"\n[{path}]")
        out.extend(f"{k} = {_value(f'{path}.{k}', v)}" for k, v in scalars.items())
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        if nested:
            out.append(hpcplat_toml_tables(nested, prefix=f"{path}."))
    return "\n".join(out)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"hpcplat_toml_tables": hpcplat_toml_tables}
