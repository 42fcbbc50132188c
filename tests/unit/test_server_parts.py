"""The server's parts that need no daemon: policy, credential parsing, settings."""

from __future__ import annotations

import pytest

from hpcplat.errors import UsageError
from hpcplat.runner import CommandResult
from hpcplat.server.app import ServerSettings
from hpcplat.server.identity import AuthError, Identity, MungeVerifier, parse_authorization, request_payload
from hpcplat.server.policy import Policy
from hpcplat.siteconfig import from_data


def who(user: str, *groups: str) -> Identity:
    return Identity(1000, 1000, user, frozenset({user, *groups}), "munge")


def test_runs_are_read_by_all_and_written_by_the_owner() -> None:
    policy = Policy(admins=frozenset({"boss"}))
    assert policy.can_read_run(who("mallory"), owner="alice", dataset_groups=[[]])
    assert not policy.can_read_run(who("mallory"), owner="alice", dataset_groups=[["med"]])
    assert policy.can_read_run(who("bob", "med"), owner="alice", dataset_groups=[["med"]])
    assert policy.can_write_run(who("alice"), owner="alice")
    assert not policy.can_write_run(who("mallory", "alice"), owner="alice")
    assert policy.can_write_run(who("boss"), owner="alice")


def test_restricted_datasets_are_for_their_groups_and_owner() -> None:
    policy = Policy()
    assert policy.can_read_dataset(who("mallory"), owner="alice", groups=[])
    assert not policy.can_read_dataset(who("mallory"), owner="alice", groups=["med"])
    assert policy.can_read_dataset(who("alice"), owner="alice", groups=["med"])
    assert policy.can_add_version(who("bob", "med"), owner="alice", groups=["med"])
    assert not policy.can_add_version(who("mallory"), owner="alice", groups=[])
    assert policy.can_add_version(who("mallory"), owner=None, groups=[])


def test_a_credential_is_bound_to_method_path_and_body() -> None:
    base = request_payload("POST", "/api/v1/runs/x/metrics", b"{}")
    assert base != request_payload("GET", "/api/v1/runs/x/metrics", b"{}")
    assert base != request_payload("POST", "/api/v1/runs/y/metrics", b"{}")
    assert base != request_payload("POST", "/api/v1/runs/x/metrics", b"{ }")


@pytest.mark.parametrize("header", ["Bearer abc", "Munge", "Munge not-a-credential", "Munge MUNGE:a\n:"])
def test_malformed_authorization_is_refused(header: str) -> None:
    with pytest.raises(AuthError):
        parse_authorization(header)


def _unmunge(code: int, payload: str = "") -> MungeVerifier:
    out = f"STATUS: {code}\nUID: 1001\nGID: 1001\nLENGTH: {len(payload)}\n\n{payload}"

    def runner(argv: object, **kwargs: object) -> CommandResult:
        return CommandResult(("unmunge",), code, out, "", 0.0)

    return MungeVerifier(runner=runner)


def test_unmunge_refusals_are_401_and_the_payload_must_match() -> None:
    with pytest.raises(AuthError, match="replayed"):
        _unmunge(17).verify("MUNGE:x:", "p")
    with pytest.raises(AuthError, match="expired"):
        _unmunge(15).verify("MUNGE:x:", "p")
    with pytest.raises(AuthError, match="another request"):
        _unmunge(0, "other").verify("MUNGE:x:", "p")
    assert _unmunge(0, "p").verify("MUNGE:x:", "p").uid == 1001


def test_server_settings_come_from_the_site_file_and_bad_ones_are_named() -> None:
    site = from_data({"catalog": {"url": "sqlite:////x.db"}, "server": {"port": 17003, "admins": ["root"]}})
    settings = ServerSettings.from_site(site)
    assert (settings.port, settings.admins, settings.catalog_url) == (
        17003,
        frozenset({"root"}),
        "sqlite:////x.db",
    )
    with pytest.raises(UsageError, match="neither socket nor port"):
        ServerSettings.from_site(from_data({"server": {}}))
    with pytest.raises(
        UsageError, match=r"server\.port must be a port number.*unknown|unknown key server\.prot"
    ):
        ServerSettings.from_site(from_data({"server": {"prot": 1, "port": "x"}}))
