"""Site health checks: executables from the configuration, run periodically off the sampling path.

A check passes when it exits 0. Otherwise its output (stdout, else stderr; first line, trimmed) is
the reason the node is unhealthy; a check past its timeout, or missing, fails too.
"""

from __future__ import annotations

import logging
import threading
import time

from hpcplat.errors import CommandError, CommandNotFound, CommandTimeout
from hpcplat.runner import Runner, run
from node_agent.config import SiteCheck
from node_agent.policy.health import CheckResult

log = logging.getLogger(__name__)

MAX_OUTPUT = 120


def _summary(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= MAX_OUTPUT else first[: MAX_OUTPUT - 3] + "..."


def run_check(check: SiteCheck, *, runner: Runner = run) -> CheckResult:
    try:
        result = runner([check.path, *check.args], timeout=check.timeout_s, check=False)
    except CommandTimeout:
        return CheckResult(check.name, False, f"no answer within {check.timeout_s:g} s", time.time())
    except CommandNotFound:
        return CheckResult(check.name, False, f"{check.path} not found", time.time())
    except CommandError as exc:
        return CheckResult(check.name, False, _summary(exc.message), time.time())
    except OSError as exc:
        return CheckResult(check.name, False, f"{check.path} cannot be run: {exc.strerror}", time.time())
    if result.returncode == 0:
        return CheckResult(check.name, True, "", time.time())
    output = _summary(result.stdout) or _summary(result.stderr) or "(no output)"
    return CheckResult(check.name, False, f"exit {result.returncode}: {output}", time.time())


class SiteChecks:
    """Runs every check each ``interval_s`` in a background thread; :meth:`results` is the latest."""

    def __init__(self, checks: tuple[SiteCheck, ...], interval_s: float, *, runner: Runner = run) -> None:
        self.checks = checks
        self.interval_s = interval_s
        self._run = runner
        self._results: dict[str, CheckResult] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[CheckResult]:
        results = [run_check(c, runner=self._run) for c in self.checks]
        with self._lock:
            for result in results:
                previous = self._results.get(result.name)
                if previous is None or previous.ok != result.ok:
                    level = logging.INFO if result.ok else logging.WARNING
                    log.log(level, "site check %s: %s", result.name, "ok" if result.ok else result.output)
                self._results[result.name] = result
        return results

    def results(self) -> list[CheckResult]:
        with self._lock:
            return list(self._results.values())

    def start(self) -> None:
        if not self.checks or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="site-checks", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
