"""A test-only objective that takes real time, importable by Dask workers (the checkout is on their PYTHONPATH)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from qflow.hpo._objectives import Objective, evaluate_one

#: Seconds each trial sleeps: long enough to kill its worker while it runs.
TRIAL_S = 0.5


def slow_evaluate(objective: Objective, config: Mapping[str, Any], trial: int) -> float:
    """The objective's value, after :data:`TRIAL_S` seconds."""
    time.sleep(TRIAL_S)
    return evaluate_one(objective, config, trial)
