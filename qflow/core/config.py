"""Config base class: pydantic fields are the page toggles and CLI flags.

Every module's config subclasses :class:`QflowConfig`. Allowed values live
only in the field declarations (``Field(ge=, le=, description=)``,
``Literal``), so the page, the CLI, the API, the docs and the contract test
all read from one table -- scikit-learn's ``_parameter_constraints`` habit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qflow.core.errors import InputError

__all__ = ["QflowConfig", "config_from_mapping", "input_error_from_validation"]


def _expected_from(error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    kind = error.get("type", "")
    if kind == "finite_number":
        return "a finite number"
    bounds = []
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            bounds.append(f"{word} {ctx[key]}")
    if bounds:
        return "a number " + " and ".join(bounds)
    if "expected" in ctx:
        return str(ctx["expected"])
    if kind.startswith("bool"):
        return "true or false"
    if kind.startswith("int"):
        return "an integer"
    if kind.startswith("float"):
        return "a number"
    if kind == "extra_forbidden":
        return "one of the documented fields"
    if kind == "missing":
        return "a value"
    return error.get("msg", "a valid value")


def input_error_from_validation(
    exc: ValidationError, source: str, prefix: str = "config"
) -> InputError:
    """Turn pydantic's first error into an :class:`InputError`.

    The message names ``source``, the dotted field path, what was expected and
    what was received, e.g. ``routing.yaml: config.capacity_factor: value out
    of range; expected a number > 0, got -1``.
    """
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    field = f"{prefix}.{loc}" if loc else prefix
    problem = "unknown field" if first.get("type") == "extra_forbidden" else "invalid value"
    if first.get("type") == "missing":
        problem = "missing field"
    received = _printable(first.get("input")) if first.get("type") != "missing" else None
    return InputError(source, field, problem, _expected_from(first), received)


def _printable(value: Any) -> Any:
    """``value``, or a description of it where Python cannot print it (an int over the digit limit).

    >>> _printable(10**5000)
    'an integer of about 5001 digits'
    """
    if isinstance(value, int) and value.bit_length() > 14_000:  # 14,000 bits is ~4,214 digits, under the 4,300 limit
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return value


class QflowConfig(BaseModel):
    """Base for module configs: strict names, bounded values, a seed.

    Unknown fields are refused (a typo in a YAML file must not be silently
    ignored), non-finite floats are refused, and assignments are validated too.
    """

    # allow_inf_nan=False: no setting means anything at inf or NaN, and such a
    # value would reach arithmetic downstream (a time budget of inf never ends).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random seed; same input, config and seed give the same plan.")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, source: str = "config") -> Self:
        """Validate a plain mapping (parsed YAML/JSON, CLI ``--set``, form data).

        Raises
        ------
        InputError
            Naming ``source`` and the offending field.
        """
        return config_from_mapping(cls, data, source)

    def with_updates(self, source: str = "config", **changes: Any) -> Self:
        """A validated copy with ``changes`` applied."""
        merged = {**self.model_dump(), **changes}
        return config_from_mapping(type(self), merged, source)

    @classmethod
    def toggles(cls) -> list[str]:
        """Names of the boolean fields (the page's switches, ``--x/--no-x``)."""
        return [name for name, f in cls.model_fields.items() if f.annotation is bool]


def config_from_mapping(cls: type[QflowConfig], data: Mapping[str, Any] | None, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(source, "config", "not a mapping", "a mapping of field: value", type(data).__name__)
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise input_error_from_validation(exc, source) from None
