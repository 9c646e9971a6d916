"""Run a module's command on uploaded bytes (the API's multipart files, the Compare page's inputs).

:class:`~qflow.core.commands.ModuleCommand` runs on file paths, as the CLI
does, so uploads are written to a private temporary folder under their own
base names first: the loaders pick the format by suffix and name the file in
their messages, so an upload called ``tokens.csv`` gives the same message as
``--tokens tokens.csv`` on the command line.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from qflow.core.commands import ModuleCommand, Progress
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan

__all__ = ["Upload", "run_on_uploads", "run_on_uploads_keeping_artifacts", "safe_file_name"]

#: (file name as uploaded, bytes)
Upload = tuple[str, bytes]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_file_name(name: str | None, fallback: str) -> str:
    """The base name of ``name`` with odd characters replaced, or ``fallback`` when nothing is left.

    >>> safe_file_name("../../etc/tokens.csv", "tokens"), safe_file_name("", "tokens"), safe_file_name("a b.json", "x")
    ('tokens.csv', 'tokens', 'a_b.json')
    """
    base = Path(str(name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).strip("._")[:120]
    return base or fallback


def run_on_uploads(command: ModuleCommand, uploads: Mapping[str, Upload | None], config: QflowConfig) -> Plan:
    """``command.run`` on ``uploads`` ({input name: (file name, bytes) or None}) with ``config``.

    Inputs missing from ``uploads`` are passed as ``None`` (the command
    decides whether that is allowed). Errors are the command's own
    (:class:`~qflow.core.errors.QflowError` for bad input).
    """
    with tempfile.TemporaryDirectory(prefix="qflow-upload-") as tmp:
        return command.run(_write_uploads(command, uploads, Path(tmp)), config, None)


def _write_uploads(command: ModuleCommand, uploads: Mapping[str, Upload | None], tmp: Path) -> dict[str, Path | None]:
    """Each upload written under ``tmp`` (one folder per input: two uploads may share a name)."""
    files: dict[str, Path | None] = {}
    for index, input_name in enumerate((*command.inputs, *command.optional_inputs)):
        upload = uploads.get(input_name)
        if upload is None:
            files[input_name] = None
            continue
        file_name, data = upload
        folder = tmp / str(index)
        folder.mkdir()
        path = folder / safe_file_name(file_name, input_name)
        path.write_bytes(data)
        files[input_name] = path
    return files


def _forget_paths(value: Any, folder: str) -> Any:
    """``value`` with every string naming a path inside ``folder`` replaced by ``None`` (recursively)."""
    if isinstance(value, dict):
        return {key: _forget_paths(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_forget_paths(item, folder) for item in value]
    if isinstance(value, str) and value.startswith(folder):
        return None
    return value


T = TypeVar("T")


def run_on_uploads_keeping_artifacts(
    command: ModuleCommand, uploads: Mapping[str, Upload | None], config: QflowConfig,
    keep: Callable[[Plan, list[Path]], T], out_name: str = "plan.json", progress: Progress | None = None,
) -> T:
    """:func:`run_on_uploads`, but the command may write artifacts; ``keep(plan, files)`` takes them.

    The command runs with ``out`` = ``<private folder>/<out_name>``, as the CLI
    does for ``--out plan.json``, so compress writes ``plan.qfz``, decompress
    ``plan.safetensors``, attention ``plan.embeddings.npy`` (``out_name``
    picks the names and, for decompress, the format). ``progress`` is passed
    to the command (see :class:`~qflow.core.commands.ModuleCommand`). ``files`` are the
    regular files the command wrote in that folder (sorted by name); ``keep``
    runs before the folder is removed, so it must move or copy what it wants.
    Paths into the private folder (``written_to``) are set to ``None`` in the
    plan, as for a run without ``out``: they would name a folder that is gone.
    """
    with tempfile.TemporaryDirectory(prefix="qflow-upload-") as tmp:
        files = _write_uploads(command, uploads, Path(tmp))
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        out = out_dir / safe_file_name(out_name, "plan.json")
        plan = command.run(files, config, out, progress=progress)
        plan.result = _forget_paths(plan.result, str(out_dir) + os.sep)
        plan_file = command.plan_path(out) if command.plan_path is not None else out
        written = sorted(path for path in out_dir.iterdir()
                         if path != plan_file and path.is_file() and not path.is_symlink())
        return keep(plan, written)
