"""Site configuration: merge order, tiers, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcplat.errors import UsageError
from hpcplat.siteconfig import DEFAULT_MAX_REQUEUES, DEFAULT_WARN_SECONDS, from_data, load

SYSTEM = """\
[cluster]
name = "big"
[defaults]
account = "ops"
tier = "normal"
[catalog]
url = "postgresql://catalog/hpcplat"
[tiers.normal]
partition = "gpu"
qos = "normal"
[tiers.preemptible]
partition = "gpu"
qos = "low"
preemptible = true
warn_seconds = 300
[node_agent]
interval_s = 30
"""

USER = """\
[defaults]
account = "vision"
[submission]
job_root = "/scratch/me/jobs"
"""

NAMED = """\
[tiers.preemptible]
qos = "scavenger"
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "system.toml").write_text(SYSTEM)
    (tmp_path / "xdg" / "hpcplat").mkdir(parents=True)
    (tmp_path / "xdg" / "hpcplat" / "hpcplat.toml").write_text(USER)
    (tmp_path / "named.toml").write_text(NAMED)
    return {
        "HPCPLAT_SYSTEM_CONFIG": str(tmp_path / "system.toml"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "HPCPLAT_CONFIG": str(tmp_path / "named.toml"),
        "HOME": str(tmp_path),
    }


def test_merge_order_system_user_named(files: dict[str, str]) -> None:
    config = load(files)
    assert config.cluster_name == "big"
    assert config.default_account == "vision"  # user over system
    assert config.job_root == "/scratch/me/jobs"
    low = config.tiers["preemptible"]
    assert low.qos == "scavenger"  # named file over system, key by key
    assert low.partition == "gpu" and low.preemptible and low.warn_seconds == 300
    assert config.section("node_agent") == {"interval_s": 30}
    assert config.sources == (
        files["HPCPLAT_SYSTEM_CONFIG"],
        str(Path(files["XDG_CONFIG_HOME"]) / "hpcplat" / "hpcplat.toml"),
        files["HPCPLAT_CONFIG"],
    )


def test_environment_overrides_win(files: dict[str, str]) -> None:
    env = {
        **files,
        "HPCPLAT_ACCOUNT": "nlp",
        "HPCPLAT_TIER": "preemptible",
        "HPCPLAT_CATALOG_URL": "sqlite:////x.db",
    }
    config = load(env)
    assert (config.default_account, config.default_tier, config.catalog_url) == (
        "nlp",
        "preemptible",
        "sqlite:////x.db",
    )
    assert config.sources[-1] == "env"


def test_no_files_gives_defaults(tmp_path: Path) -> None:
    config = load({"HPCPLAT_SYSTEM_CONFIG": str(tmp_path / "none.toml"), "HOME": str(tmp_path)})
    assert config.tiers == {} and config.sources == ()
    assert config.warn_seconds == DEFAULT_WARN_SECONDS and config.max_requeues == DEFAULT_MAX_REQUEUES
    assert config.tier(None) is None


def test_unknown_tier_lists_the_allowed_ones(files: dict[str, str]) -> None:
    config = load(files)
    with pytest.raises(
        UsageError, match=r"unknown tier 'gold'; allowed tiers: normal, preemptible"
    ) as caught:
        config.tier("gold")
    assert caught.value.exit_code == 2
    assert config.tier(None) is not None and config.tier(None).name == "normal"  # type: ignore[union-attr]


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\$HPCPLAT_CONFIG names .*nope\.toml, which does not exist"):
        load(
            {
                "HPCPLAT_SYSTEM_CONFIG": str(tmp_path / "x"),
                "HOME": str(tmp_path),
                "HPCPLAT_CONFIG": str(tmp_path / "nope.toml"),
            }
        )


def test_malformed_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults\naccount = 1\n")
    with pytest.raises(UsageError, match=r"malformed site configuration .*bad\.toml: .*line 1"):
        load({"HPCPLAT_SYSTEM_CONFIG": str(bad), "HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"defaults": {"account": 3}}, r"defaults\.account must be a str"),
        ({"tiers": {"x": {"preemptible": "yes"}}}, r"tiers\.x\.preemptible must be a bool"),
        ({"tiers": {"x": {"warn_seconds": True}}}, r"tiers\.x\.warn_seconds must be a int"),
        ({"tiers": {"x": {"qos": "a", "colour": 1}}}, r"unknown key\(s\) in \[tiers\.x\]: colour"),
        ({"submission": {"job_root": "a\nb"}}, "control characters"),
        ({"tiers": "x"}, r"\[tiers\] must be a table"),
    ],
)
def test_wrong_types_are_clear(data: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        from_data(data)
