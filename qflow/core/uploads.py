"""Run a module's command on uploaded bytes (the API's multipart files, the Compare page's inputs).

:class:`~qflow.core.commands.ModuleCommand` runs on file paths, as the CLI
does, so uploads are written to a private temporary folder under their own
base names first: the loaders pick the format by suffix and name the file in
their messages, so an upload called ``tokens.csv`` gives the same message as
``--tokens tokens.csv`` on the command line.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from qflow.core.commands import ModuleCommand
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan

__all__ = ["Upload", "run_on_uploads", "safe_file_name"]

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
        files: dict[str, Path | None] = {}
        for index, input_name in enumerate((*command.inputs, *command.optional_inputs)):
            upload = uploads.get(input_name)
            if upload is None:
                files[input_name] = None
                continue
            file_name, data = upload
            folder = Path(tmp) / str(index)  # one folder per input: two uploads may share a name
            folder.mkdir()
            path = folder / safe_file_name(file_name, input_name)
            path.write_bytes(data)
            files[input_name] = path
        return command.run(files, config, None)
