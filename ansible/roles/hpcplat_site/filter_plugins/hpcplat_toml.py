"""A filter that writes nested mappings as TOML tables (for the extra sections of the site file).

A small, complete writer for what the site file holds (tables, strings, integers, floats,
booleans, arrays), so the controller's Python needs no TOML package besides ansible-core. It
follows TOML 1.0: strings are basic strings with every control character escaped and other
characters written as UTF-8 (an emoji stays one character, never a surrogate pair); keys that
are not bare (``A-Za-z0-9_-``) are quoted, so a key with a dot or a space stays one key.
Infinity and NaN are refused: no setting of the site file means "forever" or "not a number".
"""

from __future__ import annotations

import math
import re
from typing import Any

from ansible.errors import AnsibleFilterError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(path: str, text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04X}")
        elif "\ud800" <= ch <= "\udfff":
            raise AnsibleFilterError(
                f"{path}: {text!r} holds a lone surrogate ({ch!r}), which is not a character "
                "TOML can write; fix the text's encoding (it must be valid UTF-8)"
            )
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(path: str, key: Any) -> str:
    if not isinstance(key, str):
        raise AnsibleFilterError(f"{path}: keys must be strings, got {type(key).__name__} {key!r}; quote it")
    return key if _BARE_KEY.fullmatch(key) else _string(path, key)


def _value(path: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise AnsibleFilterError(f"{path}: {value} is out of range (TOML integers are 64-bit)")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnsibleFilterError(
                f"{path}: {value!r} is not a value the site file accepts; give a finite number"
            )
        return repr(value)
    if isinstance(value, str):
        return _string(path, value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(f"{path}[{i}]", v) for i, v in enumerate(value)) + "]"
    raise AnsibleFilterError(f"{path}: cannot write {type(value).__name__} {value!r} as a TOML value")


def _tables(sections: dict[Any, Any], keys: list[str], path: str) -> list[str]:
    out: list[str] = []
    for name, table in sections.items():
        where = f"{path}.{name}" if path else str(name)
        header = [*keys, _key(where, name)]
        if not isinstance(table, dict):
            raise AnsibleFilterError(f"[{where}] must be a mapping, got {table!r}")
        out.append(f"\n[{'.'.join(header)}]")
        out.extend(
            f"{_key(f'{where}.{k}', k)} = {_value(f'{where}.{k}', v)}"
            for k, v in table.items()
            if not isinstance(v, dict) and v is not None
        )
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        out.extend(_tables(nested, header, where))
    return out


def hpcplat_toml_tables(sections: Any) -> str:
    """``{"a": {"k": 1, "b": {"x": "y"}}}`` -> ``[a]\\nk = 1\\n\\n[a.b]\\nx = "y"\\n``."""
    if not isinstance(sections, dict):
        raise AnsibleFilterError(f"sections must be a mapping of tables, got {sections!r}")
    return "\n".join(_tables(sections, [], ""))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"hpcplat_toml_tables": hpcplat_toml_tables}
