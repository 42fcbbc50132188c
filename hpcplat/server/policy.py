"""Who may do what, decided on the server from real uids and Unix groups (never from the client).

Default site policy:

- everyone reads runs, except a run that used a restricted dataset: only its owner, members of
  the dataset's groups and admins read it;
- only a run's owner writes to it (metrics);
- a dataset whose latest version lists groups is readable only by their members and its owner;
- a new dataset version is added only by the dataset's owner or members of its groups;
- the site's ``admins`` (``[server] admins``: user names) may do all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hpcplat.server.identity import Identity


@dataclass(frozen=True)
class Policy:
    admins: frozenset[str] = frozenset()

    def is_admin(self, who: Identity) -> bool:
        return who.user in self.admins

    def can_read_dataset(self, who: Identity, *, owner: str, groups: Iterable[str]) -> bool:
        allowed = set(groups)
        return not allowed or who.user == owner or bool(who.groups & allowed) or self.is_admin(who)

    def can_add_version(self, who: Identity, *, owner: str | None, groups: Iterable[str]) -> bool:
        """``owner`` None: a new dataset, which anyone may create (and then owns)."""
        if owner is None or who.user == owner or self.is_admin(who):
            return True
        return bool(who.groups & set(groups))

    def can_read_run(self, who: Identity, *, owner: str, dataset_groups: Iterable[Iterable[str]]) -> bool:
        """``dataset_groups``: the allowed groups of each dataset version the run used."""
        if who.user == owner or self.is_admin(who):
            return True
        return all(not set(g) or bool(who.groups & set(g)) for g in dataset_groups)

    def can_write_run(self, who: Identity, *, owner: str) -> bool:
        return who.user == owner or self.is_admin(who)
