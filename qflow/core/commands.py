"""How front ends (CLI, API) drive a module: one :class:`ModuleCommand` each.

Every module package that works has a ``_command.py`` defining
``COMMANDS`` (one per entry point: compression has two); the front ends find
them by looking for that file in the packages of :data:`MODULE_PACKAGES`, so
adding a module touches nothing outside its own package.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qflow.core.config import QflowConfig
from qflow.core.plan import Plan

__all__ = ["MODULE_PACKAGES", "ModuleCommand", "available_commands", "format_value", "load_command"]

#: Engine packages in the order front ends list them (those present and working).
MODULE_PACKAGES: tuple[str, ...] = ("routing", "energy", "compression", "hpo", "nvlink", "attention")


@dataclass(frozen=True)
class ModuleCommand:
    """One module as the front ends see it.

    Attributes
    ----------
    name : str
        Module name (CLI subcommand, URL segment).
    help : str
        One line for ``--help``.
    config_cls : type of QflowConfig
        Its fields are the CLI flags and the API's config form.
    inputs : tuple of str
        Required engine input names, in order (``--tokens``, ``--model-graph``).
    input_help : dict
        Help text per input name.
    run : callable
        ``run(files, config, out) -> Plan``; ``files`` maps every input name
        to a path, or to ``None`` for an optional input not given; ``out`` is
        where the plan JSON will be written (``None`` for stdout), so a module
        whose results are too large for JSON (arrays) writes them beside it.
    summarize : callable
        ``summarize(plan) -> list of lines`` for the CLI's human summary.
    optional_inputs : tuple of str
        Input names that may be left out.
    sample_inputs : dict
        Input name -> bundled sample file, relative to the repository root
        (what the app uses by default; the API and CLI tests run on them).
    plan_path : callable, optional
        ``plan_path(out) -> path`` where the CLI writes the plan JSON for
        ``--out out``; ``None`` means ``out`` itself. Modules whose ``--out``
        names an artifact (compress: ``model.qfz``) put the plan beside it.
    """

    name: str
    help: str
    config_cls: type[QflowConfig]
    inputs: tuple[str, ...]
    input_help: dict[str, str]
    run: Callable[[dict[str, Path | None], QflowConfig, Path | None], Plan]
    summarize: Callable[[Plan], list[str]]
    optional_inputs: tuple[str, ...] = field(default=())
    sample_inputs: dict[str, str] = field(default_factory=dict)
    plan_path: Callable[[Path], Path] | None = None


def available_commands() -> list[ModuleCommand]:
    """Every command of every package that has a ``_command`` module, in listing order."""
    commands: list[ModuleCommand] = []
    for package in MODULE_PACKAGES:
        if importlib.util.find_spec(f"qflow.{package}") is None:
            continue
        if importlib.util.find_spec(f"qflow.{package}._command") is not None:
            commands.extend(importlib.import_module(f"qflow.{package}._command").COMMANDS)
    return commands


def load_command(name: str) -> ModuleCommand:
    """The command called ``name`` (``routing``, ``compress``, ...)."""
    for command in available_commands():
        if command.name == name:
            return command
    raise KeyError(name)


def format_value(value: object, digits: int = 4) -> str:
    """A figure for a summary line: ``-`` for missing, floats to ``digits`` significant digits.

    >>> format_value(None), format_value(0.123456), format_value(7)
    ('-', '0.1235', '7')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
