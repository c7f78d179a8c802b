"""Fail in seconds, naming the address, when a Ray cluster cannot be reached.

``ray.init(address="host:port")`` retries a GCS that is not there for as long as it is asked to
(``ray.address=127.0.0.1:1`` hung a curation with no message), and ``ray job submit`` retries a
dashboard the same way. A TCP connection to the address, with a timeout, tells a typo or a
stopped cluster apart from a slow one before either starts.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from sent.errors import SentError

CONNECT_TIMEOUT_S = 10.0
_DEFAULT_PORTS = {"ray": 10001, "http": 8265, "https": 443, "": 6379}
_SEARCHED = ("auto", "local")  # Ray finds (or starts) the cluster itself: nothing to check


class RayAddressError(SentError, ConnectionError):
    """A Ray address that cannot be connected to (the message names it and the setting)."""


def host_and_port(address: str) -> tuple[str, int]:
    """``host:port``, ``ray://host:port`` or ``http://host:port`` -> ``(host, port)``."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        raise RayAddressError(f"Ray address {address!r} has no valid port") from None
    return parts.hostname or "localhost", port or _DEFAULT_PORTS.get(parts.scheme, 6379)


def check_ray_address(address: str, setting: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Connect to ``address`` once; a `RayAddressError` naming ``setting`` when nothing answers."""
    if address in _SEARCHED:
        return
    host, port = host_and_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayAddressError(
            f"the Ray cluster at {setting}={address} cannot be reached ({host}:{port}: {reason}); start it "
            f"(`ray start --head`), correct {setting}, or unset it to run on a local Ray"
        ) from None
