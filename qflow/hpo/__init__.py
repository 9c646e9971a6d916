"""HPO: recommend hyperparameters from a search space and past trials.

One entry point, :func:`plan_hpo`; :func:`load_hpo_inputs` reads the files.
Proposers: GP expected improvement (``_classical``), a VQC surrogate
(``_quantum``) and a hybrid of the two; baselines random search and Optuna TPE.
"""

from qflow.hpo._objectives import branin, hartmann6
from qflow.hpo._plan import load_hpo_inputs, plan_hpo
from qflow.hpo._schemas import HpoConfig, Space, parse_history, parse_space

__all__ = ["HpoConfig", "Space", "branin", "hartmann6", "load_hpo_inputs", "parse_history", "parse_space", "plan_hpo"]
