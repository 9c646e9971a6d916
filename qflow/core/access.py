"""Who may reach the servers: loopback by default, a bearer token beyond it, the Host and Origin allow-lists.

Shared by the API (:mod:`qflow.api`), the console's login (:mod:`ui.auth`)
and the CLI that starts both. Every setting comes from the environment and is
parsed strictly: :func:`validate_server_environment` raises an
:class:`~qflow.core.errors.InputError` naming the first malformed variable, so
``qflow serve`` and ``qflow app`` refuse to start on one (one line, exit 2).

Variables
---------
``QFLOW_API_TOKEN`` / ``QFLOW_API_TOKEN_FILE``
    The bearer token (at least :data:`MIN_TOKEN_CHARS` characters), or a file
    holding it. Required to listen beyond loopback; once set, every API
    request but ``/v1/health`` must carry ``Authorization: Bearer <token>``
    and the console asks for it.
``QFLOW_ALLOWED_HOSTS``
    Comma-separated host names the API answers to (the ``Host`` header, port
    left out); default :data:`LOOPBACK_NAMES`. Refusing the others stops DNS
    rebinding.
``QFLOW_ALLOWED_ORIGINS``
    Comma-separated ``scheme://host[:port]`` origins whose browser pages may
    call the API besides the API's own; default none.
``QFLOW_MAX_CONCURRENT_RUNS`` / ``QFLOW_MAX_QUEUED_RUNS``
    Engine runs the API does at once (default 2) and requests it lets wait
    for a free slot (default 4); past both, a 429.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from qflow.core.errors import InputError
from qflow.core.limits import validate_environment

__all__ = [
    "LOOPBACK_NAMES",
    "MIN_TOKEN_CHARS",
    "allowed_hosts",
    "allowed_origins",
    "configured_token",
    "host_of",
    "is_loopback",
    "run_slots",
    "token_matches",
    "validate_server_environment",
]

#: Host names that mean "this machine only".
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: Shortest token accepted (a guessable token is no protection).
MIN_TOKEN_CHARS = 16
#: (variable, default, smallest allowed) of the API's run slots.
_SLOT_SETTINGS = {"running": ("QFLOW_MAX_CONCURRENT_RUNS", 2, 1), "queued": ("QFLOW_MAX_QUEUED_RUNS", 4, 0)}


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) can only be reached from this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host name of a ``Host`` header value, lower case, without port or IPv6 brackets.

    >>> host_of("Example.com:8000"), host_of("[::1]:8000"), host_of("127.0.0.1")
    ('example.com', '::1', '127.0.0.1')
    """
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def configured_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from ``QFLOW_API_TOKEN`` or the file ``QFLOW_API_TOKEN_FILE`` names; ``None`` when neither is set.

    A token shorter than :data:`MIN_TOKEN_CHARS`, both variables at once, or a
    file that cannot be read is an :class:`InputError` naming the variable.
    """
    env = _env(environ)
    text, file_name = env.get("QFLOW_API_TOKEN"), env.get("QFLOW_API_TOKEN_FILE")
    if text and file_name:
        raise InputError("QFLOW_API_TOKEN_FILE", "(environment)", "set together with QFLOW_API_TOKEN",
                         "only one of the two", file_name)
    variable = "QFLOW_API_TOKEN"
    if file_name:
        variable = "QFLOW_API_TOKEN_FILE"
        try:
            text = Path(file_name).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(variable, "(environment)", "token file cannot be read", "a readable text file",
                             f"{file_name} ({type(exc).__name__})") from None
    if not text:
        return None
    if len(text) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in text):
        raise InputError(variable, "(environment)", "not a usable token",
                         f"at least {MIN_TOKEN_CHARS} characters without spaces", f"{len(text)} characters")
    return text


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _names(variable: str, environ: Mapping[str, str] | None) -> list[str] | None:
    text = _env(environ).get(variable)
    if text is None or not text.strip():
        return None
    names = [name.strip() for name in text.split(",")]
    if any(not name or any(ch.isspace() for ch in name) for name in names):
        raise InputError(variable, "(environment)", "malformed list", "comma-separated names without spaces", text)
    return names


def allowed_hosts(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Host names the API answers to (``QFLOW_ALLOWED_HOSTS``, default :data:`LOOPBACK_NAMES`); ``*`` allows any."""
    names = _names("QFLOW_ALLOWED_HOSTS", environ)
    return LOOPBACK_NAMES if names is None else tuple(host_of(name) if name != "*" else name for name in names)


def allowed_origins(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Extra browser origins allowed to call the API (``QFLOW_ALLOWED_ORIGINS``), as ``scheme://host[:port]``."""
    names = _names("QFLOW_ALLOWED_ORIGINS", environ) or []
    for name in names:
        parts = urlsplit(name)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise InputError("QFLOW_ALLOWED_ORIGINS", "(environment)", "not an origin",
                             "scheme://host[:port], e.g. https://console.example.com", name)
    return tuple(name.rstrip("/").lower() for name in names)


def run_slots(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(runs at once, runs allowed to wait)`` from ``QFLOW_MAX_CONCURRENT_RUNS`` and ``QFLOW_MAX_QUEUED_RUNS``.

    >>> run_slots({}), run_slots({"QFLOW_MAX_CONCURRENT_RUNS": "1", "QFLOW_MAX_QUEUED_RUNS": "0"})
    ((2, 4), (1, 0))
    """
    env = _env(environ)
    values = []
    for variable, default, smallest in _SLOT_SETTINGS.values():
        text = env.get(variable, "").strip()
        if not text:
            values.append(default)
            continue
        if not text.isdigit() or int(text) < smallest or int(text) > 10_000:
            raise InputError(variable, "(environment)", "not a usable count",
                             f"a whole number from {smallest} to 10000", text)
        values.append(int(text))
    return values[0], values[1]


def validate_server_environment(environ: Mapping[str, str] | None = None) -> None:
    """Parse every variable the servers read (limits, token, hosts, origins, slots); the first malformed one raises."""
    validate_environment(environ)
    configured_token(environ)
    allowed_hosts(environ)
    allowed_origins(environ)
    run_slots(environ)
