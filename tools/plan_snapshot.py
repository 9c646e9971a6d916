"""Snapshot every module's plans on its bundled samples, or compare against a snapshot.

A refactor that should not change behaviour is checked by running this once
before and once after::

    python tools/plan_snapshot.py write /tmp/before
    python tools/plan_snapshot.py compare /tmp/before

Each plan is written without ``created_at``, ``timings_s`` and ``qflow_version``
(the fields that change from run to run), nor any measured speed or wall
time inside it (keys ending ``per_s``, ``_seconds``, ...); ``compare`` prints the first
differing path of every plan that changed and exits 1 if any did. Each sample
set runs with the default config and with the quantum toggles of
:data:`VARIANTS`, so the quantum paths are covered too.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's qflow, not an installed one

from qflow.core.commands import available_commands  # noqa: E402

#: Extra configs per command, beside the default one (the quantum paths, mostly).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "routing": [{"qaoa": True, "hqc": True}],
    "energy": [{"qaoa_scheduling": True}, {"qaoa_scheduling": True, "meta_learning": True}],
    "compress": [{"lossless": True}, {"vqc_autoencoder": True, "denoiser": True, "hhl": True, "qsvt": True}],
    "hpo": [{"objective": "branin", "n_trials": 12}, {"objective": "branin", "n_trials": 12, "vqc_optimizer": True}],
    "nvlink": [{"qaoa_optimizer": True, "quantum_kernel": True, "rl_planner": True}],
    "attention": [{"qaoa_sparse": True, "qpe_positions": True, "contrastive_trainer": True, "svd_pruner": True}],
}

_VOLATILE = ("created_at", "timings_s", "qflow_version")
#: Measured speeds and wall times inside results and baselines differ run to run too.
_TIMED = re.compile(r"(per_s|_seconds|^seconds|wall_s|elapsed_s|time_s_measured|training_time_s|train_time_s|fit_s)$")


def _drop_timed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_timed(v) for k, v in value.items() if not _TIMED.search(k)}
    if isinstance(value, list):
        return [_drop_timed(v) for v in value]
    return value


def _strip(plan: dict[str, Any]) -> dict[str, Any]:
    return _drop_timed({k: v for k, v in plan.items() if k not in _VOLATILE})


def _runs(work: Path):
    """Yield ``(key, plan dict)`` for every command, sample set and variant."""
    for command in available_commands():
        for label, files in command.samples.items():
            for index, overrides in enumerate([{}, *VARIANTS.get(command.name, [])]):
                fields = set(command.config_cls.model_fields)
                config = command.config_cls.from_mapping({k: v for k, v in overrides.items() if k in fields})
                key = f"{command.name}--{label}--{index}".replace(" ", "_").replace("/", "_")
                out = work / key / "plan.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                paths = {name: (Path(p) if p else None) for name, p in files.items()}
                paths.update({n: None for n in command.optional_inputs if n not in paths})
                plan = command.run(paths, config, out)
                yield key, _strip(plan.to_dict())


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'after' if k not in a else 'before'}"
            found = _first_difference(a[k], b[k], f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} -> {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {str(a)[:80]} -> {str(b)[:80]}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("write", "compare"):
        print(__doc__)
        return 2
    mode, folder = argv[0], Path(argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/qflow-plan-snapshot-work")  # one fixed place, so paths written into plans match
    changed = 0
    for key, plan in _runs(work):
        target = folder / f"{key}.json"
        if mode == "write":
            target.write_text(json.dumps(plan, indent=1, sort_keys=True))
            print(f"wrote {target}")
            continue
        before = json.loads(target.read_text()) if target.exists() else None
        diff = "no snapshot" if before is None else _first_difference(before, plan)
        print(f"{key}: {'same' if diff is None else 'CHANGED ' + diff}")
        changed += diff is not None
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
