"""Secrets kept out of everything hpcplat records, prints or logs (standard library only).

Two kinds of secret are recognised:

* **Credentials inside URLs** (:func:`redact_url`, :func:`redact_text`). In ``scheme://USERINFO@host``
  the userinfo ends at the LAST ``@`` of the URL, so a password holding ``@``, ``/``, ``?`` or ``#``
  (``postgresql://u:p@ss@host/db``) is hidden whole. ``user:password`` keeps the user and hides the
  password; a lone user name is hidden, since that is how tokens are given
  (``https://ghp_xxx@github.com/org/repo`` → ``https://<redacted>@github.com/org/repo``). Query
  parameters whose names look secret (``?password=…``, ``&access_token=…``) are hidden too. A URL
  with an ``@`` in its path loses more than its credentials (``https://<redacted>@…``): a redaction
  errs on the side of hiding.
* **Environment variables whose names look secret** (:func:`is_secret_name`): the name, split at
  ``_`` (and ``-``, ``.``), has a word in :data:`SECRET_WORDS`, or a word ending in one of
  :data:`SECRET_SUFFIXES` (``GHTOKEN``, ``APIKEY``). ``WANDB_API_KEY``, ``HF_TOKEN``,
  ``AWS_SECRET_ACCESS_KEY``, ``PGPASSWORD``, ``GOOGLE_APPLICATION_CREDENTIALS`` look secret;
  ``TOKENIZERS_PARALLELISM`` and ``NCCL_DEBUG`` do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "<redacted>"
"""What stands in place of a secret."""

SECRET_WORDS = frozenset(
    {
        "TOKEN",
        "TOKENS",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWORDS",
        "PASSWD",
        "PASS",
        "PASSPHRASE",
        "KEY",
        "KEYS",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "CREDS",
        "PRIVATE",
        "AUTH",
        "AUTHORIZATION",
        "COOKIE",
        "SESSION",
        "SIGNATURE",
    }
)
"""A name with one of these words (between ``_``) looks secret."""
SECRET_SUFFIXES = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "KEY")
"""A word ending like this looks secret too (``PGPASSWORD``, ``GHTOKEN``, ``APIKEY``)."""

_WORD_SPLIT = re.compile(r"[_.\-]+")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>\S*)")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable (or query parameter) named ``name`` looks like it holds a
    secret (see the module docstring)."""
    words = [w for w in _WORD_SPLIT.split(name.upper()) if w]
    return any(w in SECRET_WORDS or w.endswith(SECRET_SUFFIXES) for w in words)


def _redact_rest(rest: str) -> str:
    """The part of a URL after ``://`` with its credentials hidden."""
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        # user:password keeps the user; a lone user name may be a token and is hidden
        named = colon and user and "/" not in user
        return (f"{user}:{REDACTED}@" if named else f"{REDACTED}@") + _redact_query(rest)
    return _redact_query(rest)


def _redact_query(text: str) -> str:
    if "?" not in text:
        return text
    path, _, query = text.partition("?")

    def hide(m: re.Match[str]) -> str:
        if is_secret_name(m.group("name")):
            return f"{m.group('lead')}{m.group('name')}={REDACTED}"
        return m.group(0)

    return path + _QUERY_PARAM.sub(hide, "?" + query)


def redact_url(url: str) -> str:
    """``url`` with the credentials it holds hidden; text that is not a ``scheme://`` URL is
    returned as it is (see :func:`redact_text` for URLs inside a message)."""
    m = _URL.match(url)
    if m is None or m.end() != len(url):
        return redact_text(url)
    return f"{m.group('scheme')}://{_redact_rest(m.group('rest'))}"


def redact_text(text: str) -> str:
    """``text`` (a message, a command line, a log line) with the credentials of every URL in it
    hidden. A URL ends at white space."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: f"{m.group('scheme')}://{_redact_rest(m.group('rest'))}", text)


def strip_credentials(url: str) -> str:
    """``url`` without its credentials, still usable: ``postgresql://u:p@host/db`` →
    ``postgresql://u@host/db`` (the client then finds the password itself: ``~/.pgpass``, peer
    authentication), a lone user name (a token) and secret query parameters removed. Text that is
    not one ``scheme://`` URL is returned as it is."""
    m = _URL.match(url)
    if m is None or m.end() != len(url):
        return url
    rest = m.group("rest")
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        keep = f"{user}@" if colon and user and "/" not in user else ""
        rest = keep + rest[at + 1 :]
    if "?" in rest:
        path, _, query = rest.partition("?")
        kept = [p for p in re.split(r"[&;]", query) if p and not is_secret_name(p.partition("=")[0])]
        rest = path + ("?" + "&".join(kept) if kept else "")
    return f"{m.group('scheme')}://{rest}"


def has_credentials(url: str) -> bool:
    """Whether ``url`` holds anything :func:`redact_url` would hide."""
    return redact_url(url) != url


def redact_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables with the values of secret-looking names replaced, and the credentials of URLs
    in the others hidden."""
    return {k: REDACTED if is_secret_name(k) else redact_text(v) for k, v in environ.items()}


__all__ = [
    "REDACTED",
    "SECRET_SUFFIXES",
    "SECRET_WORDS",
    "has_credentials",
    "is_secret_name",
    "redact_env",
    "redact_text",
    "redact_url",
    "strip_credentials",
]
