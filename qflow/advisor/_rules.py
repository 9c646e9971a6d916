"""The advisor's data: each module's primary metric, protected fields and rules.

A rule is ``{"row", "when", "settings", "expects"}``: ``row`` is the text of
the seed table (or of our own measurement) it encodes, ``when`` a predicate on
the input description (:func:`qflow.advisor._describe.describe`),
``settings`` the config overrides it proposes, ``expects`` the effect it
predicts: ``{"metric": name or "seconds", "better": "higher" | "lower"}``.
Rules choose how to solve, never what is solved: no rule may touch a field of
:data:`PROTECTED_FIELDS` (the objective and constraints), which
:func:`check_rules` enforces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PRIMARY_METRICS", "PROTECTED_FIELDS", "RULES", "Rule", "check_rules"]

Rule = dict[str, Any]
Description = Mapping[str, Any]

#: module -> (metric in ``plan.metrics``, "higher" or "lower"). Energy's and
#: hpo's depend on the config (objective, direction): see :func:`primary_metric`.
PRIMARY_METRICS: dict[str, tuple[str, str]] = {
    "routing": ("total_affinity", "higher"),
    "energy": ("makespan_slots", "lower"),  # objective min_peak: peak_power_w, lower
    "compress": ("compression_ratio", "higher"),  # the engine keeps the error within max_relative_error
    "hpo": ("best_value", "lower"),  # direction maximize: higher
    "nvlink": ("rounds", "lower"),
    "attention": ("relative_error", "lower"),
}

#: Fields that define the objective or its constraints: never set by a rule.
PROTECTED_FIELDS: dict[str, frozenset[str]] = {
    "routing": frozenset({"locality_weight", "hint_bonus", "capacity_factor", "top_k", "node_limit"}),
    "energy": frozenset({"power_budget_w", "objective", "horizon", "slot_hours", "max_slowdown", "telemetry_format",
                         "telemetry_interval_s", "telemetry_start_s"}),
    # lossless is bit-exact mode: it sets the error to zero, a different objective
    "compress": frozenset({"max_relative_error", "bits", "target_sparsity", "sensitive_fraction", "lossless"}),
    "hpo": frozenset({"objective", "direction", "n_trials", "model", "builtin_dataset", "cv_folds", "noise_std"}),
    "nvlink": frozenset({"full_duplex", "alpha_us"}),
    "attention": frozenset({"top_k", "heads", "kv_heads", "prune_threshold"}),
}


def primary_metric(module: str, config: Mapping[str, Any]) -> tuple[str, str]:
    """(metric, direction) of ``module`` under ``config`` (energy's objective, hpo's direction)."""
    if module == "energy" and config.get("objective") == "min_peak":
        return "peak_power_w", "lower"
    if module == "hpo":
        return "best_value", "higher" if config.get("direction") == "maximize" else "lower"
    return PRIMARY_METRICS[module]


def _on(*fields: str) -> Callable[[Description], bool]:
    """``when``: any of ``fields`` is on in the given config."""
    return lambda d: any(bool(d["config"].get(name)) for name in fields)


def _no_quantum(d: Description) -> bool:
    return not d["quantum_devices"]


SECONDS_LOWER = {"metric": "seconds", "better": "lower"}

#: module -> its rules, in the order they are tried.
RULES: dict[str, list[Rule]] = {
    "routing": [
        {"row": "<1k tokens, no quantum device, latency goal: deterministic fallback",
         "when": lambda d: d.get("tokens", 0) < 1000 and _no_quantum(d),
         "settings": {"deterministic_fallback": True, "qaoa": False, "hqc": False}, "expects": SECONDS_LOWER},
        {"row": "QAOA never moved a token on the samples: classical",
         "when": _on("qaoa", "hqc"), "settings": {"qaoa": False, "hqc": False}, "expects": SECONDS_LOWER},
        {"row": "baselines are reporting only (same routing): leave them out",
         "when": _on("baselines"), "settings": {"baselines": False}, "expects": SECONDS_LOWER},
    ],
    "energy": [
        {"row": "no quantum device: classical scheduling (QAOA off)",
         "when": lambda d: _no_quantum(d) and _on("qaoa_scheduling", "meta_learning")(d),
         "settings": {"qaoa_scheduling": False, "meta_learning": False}, "expects": SECONDS_LOWER},
        {"row": "CPU-only, latency goal: no GNN power predictor",
         "when": lambda d: not d["cuda"] and _on("gnn_prediction")(d),
         "settings": {"gnn_prediction": False}, "expects": SECONDS_LOWER},
    ],
    "compress": [
        {"row": "CPU-only environment: denoiser only",
         "when": lambda d: not d["cuda"],
         "settings": {"denoiser": True, "vqc_autoencoder": False, "dropout_simulator": False},
         "expects": SECONDS_LOWER},
    ],
    "hpo": [
        {"row": "no quantum device: GP surrogate only (VQC off)",
         "when": lambda d: _no_quantum(d) and _on("vqc_optimizer", "hybrid")(d),
         "settings": {"vqc_optimizer": False, "hybrid": False, "gp_surrogate": True}, "expects": SECONDS_LOWER},
        {"row": "baselines are reporting only (same suggestions): leave them out",
         "when": _on("baselines"), "settings": {"baselines": False}, "expects": SECONDS_LOWER},
    ],
    "nvlink": [
        {"row": "32+ GPUs: QAOA + RL planner",
         "when": lambda d: d.get("gpus", 0) >= 32 and bool(d["quantum_devices"]),
         "settings": {"qaoa_optimizer": True, "rl_planner": True},
         "expects": {"metric": "rounds", "better": "lower"}},
        {"row": "<32 GPUs: classical recolouring (QAOA and RL off)",
         "when": lambda d: d.get("gpus", 0) < 32 and _on("qaoa_optimizer", "rl_planner")(d),
         "settings": {"qaoa_optimizer": False, "rl_planner": False}, "expects": SECONDS_LOWER},
        {"row": "spectral partitioner: fewer rounds than Kernighan-Lin on large fabrics",
         "when": lambda d: d.get("gpus", 0) >= 32 and d["config"].get("partitioner") != "spectral",
         "settings": {"partitioner": "spectral"}, "expects": {"metric": "rounds", "better": "lower"}},
    ],
    "attention": [
        {"row": "no quantum device: classical top-k (QAOA and QPE off)",
         "when": lambda d: _no_quantum(d) and _on("qaoa_sparse", "qpe_positions")(d),
         "settings": {"qaoa_sparse": False, "qpe_positions": False}, "expects": SECONDS_LOWER},
        {"row": "contrastive trainer off: same attention, less time",
         "when": _on("contrastive_trainer"), "settings": {"contrastive_trainer": False}, "expects": SECONDS_LOWER},
    ],
}


def check_rules(module: str, rules: list[Rule]) -> None:
    """Raise ``ValueError`` when a rule sets a protected field of ``module`` (a bug in the rule table)."""
    protected = PROTECTED_FIELDS.get(module, frozenset())
    for rule in rules:
        touched = protected & set(rule["settings"])
        if touched:
            raise ValueError(f"advisor rule {rule['row']!r} of {module} sets protected fields {sorted(touched)}")
