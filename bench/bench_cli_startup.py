"""Cold start of the ``hpcplat`` CLI versus bare Python and ``import click``, measured in one run.

Prints the median wall time of each over N runs and the ratios. Aim: ``hpcplat --help`` under
150 ms; heavy libraries (SQLAlchemy, torch, paramiko) must not be imported by it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
VENV_BIN = Path(sys.executable).parent


def median_ms(argv: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    py = sys.executable
    base = median_ms([py, "-c", "pass"])
    click_ms = median_ms([py, "-c", "import click"])
    helpv = median_ms([str(VENV_BIN / "hpcplat"), "--help"])
    sub = median_ms([str(VENV_BIN / "hpcplat"), "submit", "--help"])
    heavy = (
        subprocess.run(
            [
                py,
                "-c",
                "import sys; from hpcplat.cli.main import main\n"
                "try:\n main(['--help'])\nexcept SystemExit: pass\n"
                "heavy = ('sqlalchemy', 'sqlmodel', 'torch', 'paramiko', 'jinja2')\n"
                "print(sorted(m for m in heavy if m in sys.modules))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f"{'python -c pass':32s} {base:7.1f} ms")
    print(f"{'python -c import click':32s} {click_ms:7.1f} ms")
    print(f"{'hpcplat --help':32s} {helpv:7.1f} ms  ({helpv / base:.2f}x bare python, aim < 150 ms)")
    print(f"{'hpcplat submit --help':32s} {sub:7.1f} ms  ({sub / base:.2f}x bare python)")
    print(f"heavy modules imported by --help: {heavy}")


if __name__ == "__main__":
    main()
