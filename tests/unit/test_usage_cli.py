"""``hpcplat usage`` period parsing."""

from __future__ import annotations

from datetime import datetime

import pytest

from hpcplat.cli.usage import parse_since
from hpcplat.errors import UsageError

NOW = datetime(2026, 11, 23, 12, 0, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12h", datetime(2026, 11, 23, 0, 0, 0)),
        ("7d", datetime(2026, 11, 16, 12, 0, 0)),
        ("2w", datetime(2026, 11, 9, 12, 0, 0)),
        ("2026-11-01", datetime(2026, 11, 1)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("bad", ["", "7x", "yesterday", "d7"])
def test_parse_since_rejects_garbage_with_the_forms_allowed(bad: str) -> None:
    with pytest.raises(UsageError, match="12h, 7d, 2w"):
        parse_since(bad, now=NOW)
