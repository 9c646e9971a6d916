"""HPO: recommend hyperparameters from a search space and past trials.

One entry point, :func:`plan_hpo`; :func:`load_hpo_inputs` reads the files.
Proposers: GP expected improvement (``_classical``), a VQC surrogate
(``_quantum``) and a hybrid of the two; baselines random search and Optuna TPE.
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use (the CLI lists every
#: module's command without importing any engine).
_EXPORTS = {
    "branin": "qflow.hpo._objectives",
    "hartmann6": "qflow.hpo._objectives",
    "load_hpo_inputs": "qflow.hpo._plan",
    "plan_hpo": "qflow.hpo._plan",
    "HpoConfig": "qflow.hpo._schemas",
    "Space": "qflow.hpo._schemas",
    "parse_history": "qflow.hpo._schemas",
    "parse_space": "qflow.hpo._schemas",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["HpoConfig", "Space", "branin", "hartmann6", "load_hpo_inputs", "parse_history", "parse_space", "plan_hpo"]
