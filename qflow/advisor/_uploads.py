"""``plan_advice`` on uploaded bytes (the API's multipart form, the console's inputs)."""

from __future__ import annotations

from collections.abc import Mapping

from qflow.advisor._engine import plan_advice
from qflow.core.commands import Progress, load_command
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.core.uploads import Upload, written_uploads

__all__ = ["advise_on_uploads"]


def advise_on_uploads(command_name: str, uploads: Mapping[str, Upload | None], config: QflowConfig,
                      goal: str = "balanced", budget_s: float = 60.0, progress: Progress | None = None) -> Plan:
    """:func:`plan_advice` on ``uploads`` ({input name: (file name, bytes) or None}).

    The files are written as :func:`qflow.core.uploads.written_uploads` writes
    every upload: under their own names, in a private folder removed afterwards.
    """
    with written_uploads(load_command(command_name), uploads) as files:
        return plan_advice(command_name, files, config, goal=goal, budget_s=budget_s, progress=progress)
