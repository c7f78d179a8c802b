"""Credentials out of everything a run logs or stores.

A tracking URI such as ``https://user:token@mlflow.example.com`` or a data URI with a signed query
(``...?X-Amz-Signature=...``) must reach the client that connects with it, and nothing else: not
MLflow params, not ``run.json``, not manifests, not log lines. `redact_uri` keeps the scheme,
host, path and harmless query keys and masks the rest; `redact` applies it to every URI-like
string of a nested record. For MLflow servers, prefer ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``) over credentials in the URI.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_KEY_RE = re.compile(r"token|secret|passw|pwd|key|sig|auth|credential|session", re.IGNORECASE)
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def redact_uri(uri: str) -> str:
    """``uri`` with its user information and secret-looking query values masked."""
    if not isinstance(uri, str) or not _URI_RE.match(uri):
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_KEY_RE.search(k) for k, _ in pairs):
        query = urlencode([(k, MASK if _SECRET_KEY_RE.search(k) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # nothing to mask: the URI as written (urlunsplit would respell sqlite:////abs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URI_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:)\]]")
"""A URI inside prose: up to white space or quotes, less the punctuation that ends a sentence."""


def redact_text(text: str) -> str:
    """``text`` (a message, an error) with every URI in it passed through `redact_uri`."""
    return _URI_IN_TEXT_RE.sub(lambda m: redact_uri(m.group()), text)


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``http://user:pw@host/x`` -> ``("http://host/x", {MLFLOW_TRACKING_USERNAME: user,
    MLFLOW_TRACKING_PASSWORD: pw})``: the same server for an MLflow client, with the credentials
    in variables that a child process gets through its environment, never its command line (which
    a job's log, its Hydra config and the process table all show)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, {}
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    env = {"MLFLOW_TRACKING_USERNAME": unquote(user)}
    if password:
        env["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), env


def redact(obj: Any) -> Any:
    """``obj`` (dicts, lists, strings) with every URI in it passed through `redact_uri`."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj
