"""Config forms from a module's pydantic config class: its fields are the widgets, with the CLI flags' names, defaults,
bounds and help read from ``model_fields`` (booleans: toggles, numbers: bounded inputs)."""

from __future__ import annotations

import math
import typing
from collections.abc import Iterator
from typing import Any

import streamlit as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["config_form", "field_bounds", "field_table", "ordered_fields", "toggle_row"]


def field_bounds(info: FieldInfo) -> dict[str, float]:
    """The ``ge``/``gt``/``le``/``lt`` constraints declared on a field.

    >>> from pydantic import Field
    >>> field_bounds(Field(1, ge=0, lt=5))
    {'ge': 0, 'lt': 5}
    """
    return {name: getattr(constraint, name) for constraint in info.metadata for name in ("ge", "gt", "le", "lt")
            if getattr(constraint, name, None) is not None}


def ordered_fields(config_cls: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    """The module's own fields first, then those inherited from the base config (``seed``)."""
    inherited = {name for base in config_cls.__mro__[1:] if isinstance(base, type) and issubclass(base, BaseModel)
                 for name in base.model_fields}
    fields = config_cls.model_fields
    yield from ((name, info) for name, info in fields.items() if name not in inherited)
    yield from ((name, info) for name, info in fields.items() if name in inherited)


def _float_step(default: float) -> float:
    """A step a tenth of the default's order of magnitude (0.05 for 0.1..10, 1 above), so small defaults such as a learning
    rate of 1e-3 stay reachable."""
    if default == 0 or 0.1 <= abs(default) < 10:
        return 0.05
    if abs(default) >= 10:
        return 1.0
    return 10.0 ** (math.floor(math.log10(abs(default))) - 1)


def _number_input(name: str, info: FieldInfo, key: str) -> int | float:
    """A number input bounded like the field.

    An exclusive lower bound (``gt``) becomes the next allowed step above it, because ``st.number_input`` only has
    inclusive bounds; the engine still validates, so a bound stated here can only be tighter, never looser.
    """
    bounds = field_bounds(info)
    is_int = info.annotation is int
    step: int | float = 1 if is_int else _float_step(float(info.default))
    low = bounds.get("ge", bounds["gt"] + step if "gt" in bounds else None)
    high = bounds.get("le", bounds["lt"] - step if "lt" in bounds else None)
    cast = int if is_int else float
    return st.number_input(name, min_value=None if low is None else cast(low), max_value=None if high is None else cast(high),
                           value=cast(info.default), step=step, format=None if is_int else "%g", key=key,
                           help=info.description)


def toggle_row(toggles: list[tuple[str, FieldInfo]], key_prefix: str) -> dict[str, bool]:
    """One toggle per boolean field on one row (keys ``f"{key_prefix}_{field}"``); ``{field: value}``."""
    values = {}
    for column, (name, info) in zip(st.columns(max(len(toggles), 1)), toggles, strict=False):
        values[name] = column.toggle(name, value=bool(info.default), key=f"{key_prefix}_{name}", help=info.description)
    return values


def config_form(config_cls: type[BaseModel], key_prefix: str, columns: int = 5) -> dict[str, Any]:
    """Draw one widget per config field and return ``{field: value}``.

    Toggles first on one row, then choices, then text fields (a scheduler
    address, a storage URL; empty means unset), then number inputs in a grid;
    widget keys are ``f"{key_prefix}_{field}"``. A field type it does not know is a ``TypeError``.
    """
    kinds: dict[Any, list[tuple[str, FieldInfo]]] = {bool: [], typing.Literal: [], str: [], int: []}
    for name, info in ordered_fields(config_cls):
        kind = int if info.annotation is float else typing.get_origin(info.annotation) or info.annotation
        if kind not in kinds:
            raise TypeError(f"config_form: field {name!r} has unsupported type {info.annotation!r}")
        kinds[kind].append((name, info))
    toggles, choices, texts, numbers = kinds.values()
    values = toggle_row(toggles, key_prefix)
    for name, info in choices:
        options = list(typing.get_args(info.annotation))
        values[name] = st.selectbox(name, options, index=options.index(info.default), key=f"{key_prefix}_{name}",
                                    help=info.description)
    for name, info in texts:
        max_chars = next((m.max_length for m in info.metadata if getattr(m, "max_length", None) is not None), None)
        values[name] = st.text_input(name, value=str(info.default), max_chars=max_chars,
                                     key=f"{key_prefix}_{name}", help=info.description).strip()
    grid = st.columns(columns)
    for index, (name, info) in enumerate(numbers):
        with grid[index % columns]:
            values[name] = _number_input(name, info, f"{key_prefix}_{name}")
    return values


def field_table(config_cls: type[BaseModel]) -> list[dict[str, str]]:
    """One row per field: name, type, default, allowed range and description (for the About page)."""
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    rows = []
    for name, info in ordered_fields(config_cls):
        bounds = field_bounds(info)
        annotation = info.annotation
        rows.append({
            "field": name, "type": getattr(annotation, "__name__", str(annotation)), "default": str(info.default),
            "allowed": ", ".join(f"{words[k]} {v}" for k, v in bounds.items()) or ("true / false" if annotation is bool else ""),
            "description": info.description or "",
        })
    return rows
