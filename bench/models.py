"""Trained-model reuse: a plan given ``--model`` against the same plan training its learned part, on the samples.

For each trainable part (``qflow train KIND``) the model is trained once on
the module's sample inputs, then the module's plan runs twice in this
process with the same config: training inside the plan, and reusing the
saved model (the faster of two runs of each). Printed: the whole plan's
wall time, the learned stage's time (training in the plan / reusing), and
the quality figure the learned part feeds (it must be the same).

Usage: PYTHONPATH=. python bench/models.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from qflow.core.commands import load_command
from qflow.core.models import load_trainer

ROOT = Path(__file__).resolve().parents[1]

#: kind -> (command, config, stage timed, metric compared); the config turns the learned part on.
CASES = {
    "power-model": ("energy", {"gnn_prediction": True}, "predict", lambda p: p.metrics["prediction_mae_w"]["gnn"]),
    "contention-classifier": ("nvlink", {"classifier": True, "rl_planner": False}, "classifier",
                              lambda p: p.result["classifier"]["predictions"]["plan"]["score"]),
    "denoiser": ("compress", {"denoiser": True}, "denoiser", lambda p: p.metrics["relative_l2_error"]),
    "contrastive": ("attention", {"contrastive_trainer": True}, "train", lambda p: p.metrics["infonce_final"]),
}


def main() -> None:
    print(f"{'kind':<23}{'train s':>9}{'plan s (trains)':>17}{'plan s (--model)':>18}{'stage s':>16}{'figure (trains / --model)':>42}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (name, settings, stage, figure) in CASES.items():
            command, trainer = load_command(name), load_trainer(kind)
            files = {k: ROOT / v for k, v in command.sample_inputs.items()}
            config = command.config_cls.from_mapping(settings, "bench")
            start = time.perf_counter()
            path = Path(tmp) / f"{kind}.safetensors"
            trainer.train({k: files.get(k) for k in (*trainer.inputs, *trainer.optional_inputs)}, config).save(path, kind)
            train_s = time.perf_counter() - start
            plans, seconds = [None, None], [float("inf")] * 2
            for _ in range(2):  # the faster of two runs each, so one-time imports and warm-up count for neither
                for i, model in enumerate((None, path)):
                    start = time.perf_counter()
                    plans[i] = command.run({**files, "model": model}, config, None)
                    seconds[i] = min(seconds[i], time.perf_counter() - start)
            a, b = (figure(p) for p in plans)
            stages = f"{plans[0].timings_s.get(stage, 0):.2f}/{plans[1].timings_s.get(stage, 0):.3f}"
            same = "same" if a == b else f"differs by {abs(a - b):.3g}"
            print(f"{kind:<23}{train_s:>9.2f}{seconds[0]:>17.2f}{seconds[1]:>18.2f}{stages:>16}   {a:.6g} / {b:.6g} ({same})")


if __name__ == "__main__":
    main()
