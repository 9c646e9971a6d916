"""``plan_advice`` on uploaded bytes (the API's multipart form, the console's inputs)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from qflow.advisor._engine import plan_advice
from qflow.core.commands import Progress, load_command
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.core.uploads import UPLOAD_PREFIX, Upload, safe_file_name

__all__ = ["advise_on_uploads"]


def advise_on_uploads(command_name: str, uploads: Mapping[str, Upload | None], config: QflowConfig,
                      goal: str = "balanced", budget_s: float = 60.0, progress: Progress | None = None) -> Plan:
    """:func:`plan_advice` on ``uploads`` ({input name: (file name, bytes) or None}).

    The files are written under their own (sanitised) names in a private
    ``qflow-upload-<pid>-*`` folder, one subfolder per input, as
    :func:`qflow.core.uploads.run_on_uploads` does, so the loaders' messages
    name the uploaded file and the stale-folder sweep knows the owner.
    """
    command = load_command(command_name)
    with tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-") as tmp:
        files: dict[str, Path | None] = {}
        for index, name in enumerate((*command.inputs, *command.optional_inputs)):
            upload = uploads.get(name)
            if upload is None:
                files[name] = None
                continue
            folder = Path(tmp) / str(index)
            folder.mkdir()
            files[name] = folder / safe_file_name(upload[0], name)
            files[name].write_bytes(upload[1])
        return plan_advice(command_name, files, config, goal=goal, budget_s=budget_s, progress=progress)
