"""Resource limits every loader and front end checks before work starts.

Each limit has a name, a documented default and an environment variable
that overrides it. Limits are read when checked (not at import), so a test or
a server can change them through the environment; a malformed value is an
:class:`~qflow.core.errors.InputError` naming the variable, and
:func:`validate_environment` lets a server refuse to start on one.

A size an input *declares* (a tensor shape in a header, a zip member's
uncompressed size, a block's raw length) is checked with :func:`check_limit`
before anything of that size is allocated; going over raises
:class:`LimitExceededError`, which the API answers with a 413 and the CLI
with exit 2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from qflow.core.errors import InputError

__all__ = ["Limit", "LIMITS", "LimitExceededError", "limit_value", "check_limit", "max_workers", "validate_environment"]

MIB = 2**20


@dataclass(frozen=True)
class Limit:
    """One limit: its variable, its default and what it bounds.

    Attributes
    ----------
    env : str
        Environment variable overriding the default.
    default : float
        Default in ``unit``.
    unit : str
        ``"MiB"`` or ``"KiB"`` (converted to bytes by :func:`limit_value`),
        ``"s"`` or ``"count"``.
    bounds : str
        What the limit applies to, for messages and the README.
    """

    env: str
    default: float
    unit: str
    bounds: str

    @property
    def scale(self) -> int:
        return {"MiB": MIB, "KiB": 1024}.get(self.unit, 1)


#: Every limit by name. The README's "Security and limits" table lists these.
LIMITS: dict[str, Limit] = {
    "input_bytes": Limit("QFLOW_MAX_INPUT_MB", 1024, "MiB", "one input file read into memory"),
    "upload_bytes": Limit("QFLOW_MAX_UPLOAD_MB", 200, "MiB", "one HTTP request body"),
    "decoded_bytes": Limit(
        "QFLOW_MAX_DECODED_MB", 2048, "MiB", "bytes one input may expand to (tensors, archive members, container blocks)"
    ),
    "archive_members": Limit("QFLOW_MAX_ARCHIVE_MEMBERS", 10_000, "count", "members of one .npz or zip archive"),
    "archive_ratio": Limit(
        "QFLOW_MAX_ARCHIVE_RATIO", 200, "count", "unpacked / packed size of one archive member over 1 MiB unpacked (zip bombs)"
    ),
    "yaml_aliases": Limit(
        "QFLOW_MAX_YAML_ALIASES", 10_000, "count", "nodes one YAML document gains by alias references (*name), expanded"
    ),
    "carried_field_bytes": Limit("QFLOW_MAX_CARRIED_FIELD_KB", 64, "KiB", "one free-form input field copied into a plan, as JSON"),
    "request_seconds": Limit("QFLOW_REQUEST_TIME_BUDGET_S", 300, "s", "wall time of one API request's engine work"),
    "energy_job_slots": Limit(
        "QFLOW_MAX_ENERGY_JOB_SLOTS", 10_000_000, "count", "energy jobs x schedule slots (the sum of their durations) of one plan"
    ),
    "attention_cells": Limit(
        "QFLOW_MAX_ATTENTION_CELLS", 2**35, "count",
        "query-key scores times width one attention plan computes (n_queries * n_keys * (d + d_v))"),
    "worker_processes": Limit("QFLOW_MAX_WORKERS", 0, "count", "worker processes one run may start (0 = the machine's cores)"),
    "kernel_rows": Limit("QFLOW_MAX_KERNEL_ROWS", 2000, "count",
                         "rows of one kernel request (one circuit per row, rows^2 overlaps)"),
    "kernel_features": Limit("QFLOW_MAX_KERNEL_FEATURES", 16, "count",
                             "feature columns of one kernel request (one qubit each; 2^features amplitudes per row)"),
    "fabric_gpus": Limit("QFLOW_MAX_FABRIC_GPUS", 256, "count", "GPUs of one nvlink fabric (path work grows as GPUs^2 to GPUs^3)"),
}


class LimitExceededError(InputError):
    """An input declares or needs more than a limit allows (HTTP 413, exit 2)."""

    def __init__(self, source: str, field: str, limit_name: str, declared: float) -> None:
        spec = LIMITS[limit_name]
        allowed = limit_value(limit_name)
        self.limit_name = limit_name
        self.limit = allowed
        self.declared = declared
        super().__init__(
            source,
            field,
            f"over the {limit_name} limit ({spec.bounds}; set {spec.env} to change it)",
            f"at most {_describe(allowed, spec)}",
            _describe(declared, spec),
        )


def _describe(value: float, spec: Limit) -> str:
    if spec.unit in ("MiB", "KiB"):
        return f"{value:,.0f} bytes"
    if spec.unit == "s":
        return f"{value:g} s"
    return f"{value:,.0f}"


def _parse(name: str, spec: Limit, environ: Mapping[str, str]) -> float:
    text = environ.get(spec.env)
    if text is None or text.strip() == "":
        return spec.default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(spec.env, "(environment)", "not a usable number", f"a number >= 0 in {spec.unit}", text)
    return value


def limit_value(name: str, environ: Mapping[str, str] | None = None) -> float:
    """The limit called ``name`` in base units (bytes for ``MiB`` limits).

    >>> limit_value("archive_members", {"QFLOW_MAX_ARCHIVE_MEMBERS": "12"})
    12.0
    >>> limit_value("upload_bytes", {}) == 200 * 2**20
    True
    """
    spec = LIMITS[name]
    return _parse(name, spec, os.environ if environ is None else environ) * spec.scale


def check_limit(declared: float, name: str, source: str, field: str) -> None:
    """Raise :class:`LimitExceededError` when ``declared`` is over limit ``name``.

    Call it with the size an input declares, before allocating it.

    >>> check_limit(10, "archive_members", "a.npz", "(members)")
    """
    if declared > limit_value(name):
        raise LimitExceededError(source, field, name, declared)


def validate_environment(environ: Mapping[str, str] | None = None) -> None:
    """Parse every limit's variable; the first malformed one raises :class:`InputError`."""
    for name in LIMITS:
        limit_value(name, environ)


def max_workers(requested: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Worker processes a run may start: ``requested`` capped at the cores and ``QFLOW_MAX_WORKERS``.

    ``requested`` of ``None``, 0 or a negative number (joblib's ``-1``) means
    "as many as allowed". Always at least 1.

    >>> max_workers(64, {"QFLOW_MAX_WORKERS": "1"})
    1
    >>> max_workers(1)
    1
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    configured = int(limit_value("worker_processes", environ))
    cap = min(cores, configured) if configured > 0 else cores
    wanted = cap if requested is None or requested <= 0 else requested
    return max(1, min(wanted, cap))
