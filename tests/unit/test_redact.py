"""Secrets out of what hpcplat records and prints: URLs with credentials (hostile ones included),
secret-looking environment variables, and where they were seen leaking (issue 11, item 6)."""

from __future__ import annotations

import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hpcplat import siteconfig
from hpcplat.catalog.engine import dialect_of
from hpcplat.catalog.engine import redact_url as engine_redact_url
from hpcplat.provenance.code import capture_code
from hpcplat.redact import REDACTED, is_secret_name, redact_text, redact_url, strip_credentials
from hpcplat.siteconfig import from_data
from hpcplat.spec import Environment, JobSpec
from hpcplat.submission.render import render

# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "stripped"),
    [
        ("postgresql://u:p@ss@host/db", f"postgresql://u:{REDACTED}@host/db", "postgresql://u@host/db"),
        (
            "https://ghp_abcdef0123456789@github.com/org/repo.git",
            f"https://{REDACTED}@github.com/org/repo.git",
            "https://github.com/org/repo.git",
        ),
        (
            "postgresql+psycopg://cat:hunter2@db.example.org:5432/catalog",
            f"postgresql+psycopg://cat:{REDACTED}@db.example.org:5432/catalog",
            "postgresql+psycopg://cat@db.example.org:5432/catalog",
        ),
        ("postgresql://u:p/s?s#x@host/db", f"postgresql://u:{REDACTED}@host/db", "postgresql://u@host/db"),
        (
            "postgresql://u@host/db?sslmode=require&password=zz",
            f"postgresql://{REDACTED}@host/db?sslmode=require&password={REDACTED}",
            "postgresql://host/db?sslmode=require",
        ),
        (
            "https://github.com/org/repo.git",
            "https://github.com/org/repo.git",
            "https://github.com/org/repo.git",
        ),
        ("sqlite:////shared/catalog.db", "sqlite:////shared/catalog.db", "sqlite:////shared/catalog.db"),
    ],
)
def test_credentials_in_urls_are_hidden(url: str, shown: str, stripped: str) -> None:
    assert redact_url(url) == shown
    assert strip_credentials(url) == stripped
    assert engine_redact_url(url) == shown  # the catalog's messages use the same


def test_urls_inside_messages_are_redacted() -> None:
    text = "cannot reach 'postgresql://cat:p@ss word@db/c' nor https://tok@github.com/x (retrying)"
    out = redact_text(text)
    assert "p@ss" not in out and "tok@" not in out and "(retrying)" in out


_PASSWORD = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=6, max_size=40
).filter(lambda s: s.strip() == s)
_USER = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=20)
_HOST = st.from_regex(r"[a-z][a-z0-9\-]{0,20}(\.[a-z]{2,5}){0,2}(:[0-9]{2,5})?", fullmatch=True)
_PATH = st.from_regex(r"(/[A-Za-z0-9_.\-]{0,12}){0,3}", fullmatch=True)


@given(
    scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "https", "git+https", "ssh"]),
    user=_USER,
    password=_PASSWORD,
    host=_HOST,
    path=_PATH,
)
def test_no_password_survives_redaction(scheme: str, user: str, password: str, host: str, path: str) -> None:
    url = f"{scheme}://{user}:{password}@{host}{path}"
    assume(password not in f"error at {scheme}://{user}:{REDACTED}@{host}{path} now")
    for out in (redact_url(url), strip_credentials(url), redact_text(f"error at {url} now")):
        assert password not in out


@given(token=_PASSWORD.filter(lambda s: ":" not in s), host=_HOST, path=_PATH)
def test_no_token_given_as_user_name_survives(token: str, host: str, path: str) -> None:
    url = f"https://{token}@{host}{path}"
    assume(token not in f"https://{REDACTED}@{host}{path}")
    assert token not in redact_url(url)
    assert token not in strip_credentials(url)


# -- secret-looking names --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "WANDB_API_KEY",
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "PGPASSWORD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GH_AUTH",
        "MY_PRIVATE_THING",
        "DB_PASSWD",
        "OPENAI_APIKEY",
        "github_token",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "NCCL_DEBUG", "OMP_NUM_THREADS", "PATH", "LR"])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


# -- the leaks the issue shows -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(siteconfig, "current_user", lambda: "alice")


def _site(url: str) -> siteconfig.SiteConfig:
    return from_data(
        {
            "cluster": {"name": "hpcsb"},
            "defaults": {"account": "vision", "tier": "normal", "partition": "gpu"},
            "catalog": {"url": url},
            "tiers": {"normal": {"partition": "gpu", "qos": "normal"}},
            "submission": {"job_root": "/shared/jobs"},
        }
    )


def test_secret_env_is_neither_in_the_stored_spec_nor_in_the_script() -> None:
    spec = JobSpec(
        command=("python", "train.py"),
        environment=Environment(
            vars={"WANDB_API_KEY": "wb-s3cr3t", "NCCL_DEBUG": "INFO"}, secrets={"MY_PASS": "pw-s3cr3t"}
        ),
    )
    assert spec.environment.vars == {"NCCL_DEBUG": "INFO"}
    stored = spec.to_dict()
    assert "s3cr3t" not in str(stored)
    assert stored["environment"]["secret_env"] == {"MY_PASS": None, "WANDB_API_KEY": None}
    assert "s3cr3t" not in repr(spec)
    script = render(spec, _site("sqlite:////shared/catalog.db"), run_id="r1")
    assert "s3cr3t" not in script and "export NCCL_DEBUG=INFO" in script
    assert "source /shared/jobs/alice/secrets/r1.env" in script
    # A recorded spec names its secrets; the values come back only from whoever submits it again.
    again = JobSpec.from_dict(stored)
    assert again.environment.secrets == {"MY_PASS": None, "WANDB_API_KEY": None}
    # Overrides keep the values they do not replace.
    changed = spec.with_overrides({"name": "other"})
    assert changed.environment.secrets == {"WANDB_API_KEY": "wb-s3cr3t", "MY_PASS": "pw-s3cr3t"}


def test_the_catalog_password_is_not_exported_to_jobs() -> None:
    spec = JobSpec(command=("python", "train.py"))
    script = render(spec, _site("postgresql://cat:pw-s3cr3t@db.example.org/catalog"), run_id="r1")
    assert "s3cr3t" not in script
    assert "export HPCPLAT_CATALOG_URL=postgresql://cat@db.example.org/catalog" in script


def test_a_token_in_the_git_remote_is_not_recorded(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, timeout=20)

    git("init", "-q")
    git("remote", "add", "origin", "https://ghp_T0KEN0123456789@github.com/org/repo.git")
    state = capture_code(tmp_path)
    assert state.repo == f"https://{REDACTED}@github.com/org/repo.git"
    assert "T0KEN" not in str(state.to_dict())


def test_unsupported_url_message_hides_the_password() -> None:
    with pytest.raises(Exception, match="mysql") as caught:
        dialect_of("mysql://u:p@ss@host/db")
    assert "p@ss" not in str(caught.value) and "ss@host" not in str(caught.value)
