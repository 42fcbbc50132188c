"""Do one thing on many hosts at once; each host's failure is its own result, never the batch's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from hpcplat.errors import HpcplatError
from hpcplat.fleet.inventory import Host

T = TypeVar("T")

DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class HostOutcome(Generic[T]):
    host: Host
    value: T | None = None
    error: HpcplatError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def map_hosts(
    hosts: Sequence[Host], task: Callable[[Host], T], *, workers: int = DEFAULT_WORKERS
) -> list[HostOutcome[T]]:
    """Run ``task`` on every host in a thread pool; results come back in the hosts' order.

    ``task`` must bound its own time (the SSH layer gives every step a deadline), so a dead host
    costs its deadline and no more. An :class:`HpcplatError` becomes that host's outcome.
    """

    def one(host: Host) -> HostOutcome[T]:
        try:
            return HostOutcome(host, value=task(host))
        except HpcplatError as exc:
            return HostOutcome(host, error=exc)

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(hosts))), thread_name_prefix="fleet") as pool:
        return list(pool.map(one, hosts))
