"""Sample HPO inputs (fixed seed): a random-forest search space and earlier trials measured for real.

The history's objective is what the ``train`` objective measures with the
default config: 1 - mean 3-fold cross-validated accuracy of a random forest
on scikit-learn's breast-cancer data. One trial is still running (blank
objective) and one was run before the space was narrowed (``max_depth`` 24,
outside today's bounds): the plan reports it and does not use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qflow.hpo._objectives import Objective, _train_error, load_builtin_dataset
from qflow.hpo._schemas import parse_space

__all__ = ["SPACE_YAML", "write_sample"]

SPACE_YAML = """\
# Random forest on a tabular classification task (names are RandomForestClassifier arguments).
parameters:
  n_estimators: {kind: int, low: 10, high: 100}
  max_depth: {kind: int, low: 2, high: 16}
  min_samples_leaf: {kind: int, low: 1, high: 20}
  max_features: {kind: categorical, choices: [sqrt, log2]}
  criterion: {kind: categorical, choices: [gini, entropy]}
  max_samples: {kind: float, low: 0.3, high: 1.0}
  ccp_alpha: {kind: float, low: 1.0e-5, high: 0.05, log: true}
"""


def make_history(n: int = 10, seed: int = 0) -> pd.DataFrame:
    """``n`` measured trials, one pending and one outside the space, in the order they ran."""
    import yaml

    space = parse_space(yaml.safe_load(SPACE_YAML), "space.yaml")
    rng = np.random.default_rng(seed)
    X, y, task = load_builtin_dataset("breast_cancer")
    objective = Objective("train", seed=0, model="random_forest", cv_folds=3, task=task, X=X, y=y)
    # Rounded as a person would log them; every value stays inside the space.
    configs = [{k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in c.items()}
               for c in space.from_unit(space.sample_unit(rng, n + 2))]
    rows = []
    for config in configs[:n]:
        rows.append({**config, "objective": round(_train_error(objective, config), 6)})
    old = {**configs[n], "max_depth": 24}
    rows.insert(3, {**old, "objective": round(_train_error(objective, old), 6)})
    rows.append({**configs[n + 1], "objective": None})
    frame = pd.DataFrame(rows)
    frame.insert(0, "trial", range(1, len(frame) + 1))
    return frame


def write_sample(directory: str | Path, seed: int = 0) -> list[Path]:
    """Write ``space.yaml`` (7 parameters: ints, floats, one log-scale, categoricals) and ``history.csv``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    space_path, history_path = out / "space.yaml", out / "history.csv"
    space_path.write_text(SPACE_YAML)
    make_history(seed=seed).to_csv(history_path, index=False)
    return [space_path, history_path]
