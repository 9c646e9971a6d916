"""The module registry: one :class:`ModuleCommand` per entry point, read by every front end.

Every module package that works has a ``_command.py`` defining
``COMMANDS`` (one per entry point: compression has two); the front ends find
them by looking for that file in the packages of :data:`MODULE_PACKAGES`, so
adding a module touches nothing outside its own package. The CLI, the HTTP
API, the console (navigation, Home, About, the module page, Compare) and the
contract tests all iterate :func:`available_commands`; nothing else lists
modules. The console's per-module charts live in ``ui/hooks/<name>.py``,
looked up by :attr:`ModuleCommand.name` (the engine never imports Streamlit).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qflow.core.config import QflowConfig
from qflow.core.plan import Plan

__all__ = ["MODULE_PACKAGES", "InputSpec", "ModuleCommand", "Progress", "available_commands", "format_value",
           "load_command"]

#: Engine packages in the order front ends list them (those present and working).
MODULE_PACKAGES: tuple[str, ...] = ("routing", "energy", "compression", "hpo", "nvlink", "attention", "kernel")

#: ``progress(fraction in 0..1, message)``: what an engine reports between stages.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class InputSpec:
    """One input file of a command, as a front end asks for it.

    Attributes
    ----------
    name : str
        Engine input name (``--tokens``, the API's form field).
    help : str
        What the file holds.
    types : tuple of str
        Accepted file suffixes without the dot (empty: any).
    optional : bool
        Whether the command runs without it.
    sample : str or None
        Bundled sample file, relative to the repository root.
    """

    name: str
    help: str
    types: tuple[str, ...]
    optional: bool
    sample: str | None

    @property
    def label(self) -> str:
        """``tokens (csv, json)``, ``logs (csv, optional)``."""
        words = [*self.types, *(["optional"] if self.optional else [])]
        return f"{self.name} ({', '.join(words)})" if words else self.name


@dataclass(frozen=True)
class ModuleCommand:
    """One module as the front ends see it.

    Attributes
    ----------
    name : str
        Module name (CLI subcommand, URL segment, console page).
    help : str
        One line for ``--help``.
    title, icon : str
        The console's page title and Material icon (``:material/hub:``).
    summary : str
        One sentence for Home and the page's caption (``help`` when empty).
    input_types : dict
        Input name -> accepted file suffixes (no dot) for uploaders.
    sample_sets : dict
        Named alternatives to ``sample_inputs`` (label -> {input: path}); the
        first is the default. Empty: ``{"sample": sample_inputs}``.
    config_cls : type of QflowConfig
        Its fields are the CLI flags and the API's config form.
    inputs : tuple of str
        Required engine input names, in order (``--tokens``, ``--model-graph``).
    input_help : dict
        Help text per input name.
    run : callable
        ``run(files, config, out, progress=None) -> Plan``; ``files`` maps
        every input name to a path, or to ``None`` for an optional input not
        given; ``out`` is where the plan JSON will be written (``None`` for
        stdout), so a module whose results are too large for JSON (arrays)
        writes them beside it; ``progress`` (:data:`Progress`) receives the
        engine's reports (the console's progress bar; raising there stops it).
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
    run: Callable[..., Plan]
    summarize: Callable[[Plan], list[str]]
    optional_inputs: tuple[str, ...] = field(default=())
    sample_inputs: dict[str, str] = field(default_factory=dict)
    plan_path: Callable[[Path], Path] | None = None
    title: str = ""
    icon: str = ":material/extension:"
    summary: str = ""
    input_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sample_sets: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def page_title(self) -> str:
        """``title``, else the capitalised name."""
        return self.title or self.name.capitalize()

    @property
    def description(self) -> str:
        """``summary``, else ``help``."""
        return self.summary or self.help

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        """Required inputs, then optional ones, each with its help, types and sample."""
        return tuple(
            InputSpec(name, self.input_help.get(name, ""), tuple(self.input_types.get(name, ())),
                      name in self.optional_inputs, self.sample_inputs.get(name))
            for name in (*self.inputs, *self.optional_inputs)
        )

    @property
    def samples(self) -> dict[str, dict[str, str]]:
        """``sample_sets``, else ``{"sample": sample_inputs}``."""
        return dict(self.sample_sets) or {"sample": dict(self.sample_inputs)}


def _iter_commands() -> Iterator[ModuleCommand]:
    """The commands package by package, importing each ``_command`` module only when reached."""
    for package in MODULE_PACKAGES:
        if importlib.util.find_spec(f"qflow.{package}") is None:
            continue
        if importlib.util.find_spec(f"qflow.{package}._command") is not None:
            yield from importlib.import_module(f"qflow.{package}._command").COMMANDS


def available_commands() -> list[ModuleCommand]:
    """Every command of every package that has a ``_command`` module, in listing order."""
    return list(_iter_commands())


def load_command(name: str) -> ModuleCommand:
    """The command called ``name`` (``routing``, ``compress``, ...).

    Stops at the package that defines it, so the packages listed after it are not imported.
    """
    for command in _iter_commands():
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
