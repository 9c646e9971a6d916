"""``qflow train denoiser``: the compress plan's per-tensor denoisers, trained once and reused.

Trained as a compress plan trains them (``denoiser`` on, same bits,
granularity, seed and steps: the trainer runs the plan and keeps the
weights). The model holds one float32 vector of the residual conv net's
parameters per tensor, named after the tensor; a later compress plan (of
the same checkpoint or a fine-tuned one with the same tensor names) applies
them instead of training, trains only the tensors the model lacks, and keeps
a denoiser only where it lowers that tensor's error, as always.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qflow.compression._schemas import CompressConfig
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.models import ModelArtifact, TrainedModel, Trainer, check_spec, digest_list

__all__ = ["TRAINERS", "denoiser_parameters", "loaded_denoisers", "train_denoisers"]

KIND = "denoiser"
ARCH = "residual conv1d k5 x16, 0.5 tanh output (steps)"


def denoiser_parameters() -> int:
    """Parameters of one denoiser (the length of each stored vector)."""
    from qflow.compression._denoise import ResidualDenoiser

    return sum(p.numel() for p in ResidualDenoiser().parameters())


def train_denoisers(files: dict[str, Path | None], config: QflowConfig) -> TrainedModel:
    """Run the compress plan with the denoiser on and keep every tensor's trained weights."""
    from qflow.compression._plan import compress_tensors, load_checkpoint_input

    assert isinstance(config, CompressConfig)
    config = config.model_copy(update={"denoiser": True})
    checkpoint, digest = load_checkpoint_input(files["input"])
    run = compress_tensors(checkpoint, config, source=digest.source or "input", digests=[digest])
    if not run.denoisers:
        raise InputError(digest.source or "input", "(tensors)", "no tensor could be denoised",
                         "float tensors stored quantized (not lossless)")
    rows = {r["tensor"]: r for r in run.plan.result.get("denoiser") or []}
    metrics = {"tensors": len(run.denoisers), "lowered_error_on": sum(1 for r in rows.values() if r.get("used")),
               "relative_l2_before_after": {k: [r.get("relative_l2_before"), r.get("relative_l2_after")] for k, r in rows.items()}}
    tensors = {name: np.frombuffer(w, dtype="<f4").copy() for name, w in run.denoisers.items()}
    return TrainedModel(tensors=tensors, spec={"arch": ARCH, "parameters": denoiser_parameters(), "bits": config.bits},
                        metrics=metrics, inputs=digest_list([digest]), config=config.model_dump())


def loaded_denoisers(model: ModelArtifact) -> dict[str, bytes]:
    """Tensor name -> denoiser weights (the bytes the container stores), each checked for length and dtype."""
    n = denoiser_parameters()
    check_spec(model, {"arch": ARCH, "parameters": n})
    out = {}
    for name, vector in model.tensors.items():
        if vector.dtype != np.dtype("<f4") or vector.shape != (n,):
            raise InputError(model.source, f"model.tensors.{name}", "not a denoiser's parameters", f"float32 of shape ({n},)",
                             f"{vector.dtype} {list(vector.shape)}")
        out[name] = vector.astype("<f4").tobytes()
    return out


TRAINERS = (Trainer(
    name=KIND,
    help="train the compress plan's per-tensor denoisers on a checkpoint",
    config_cls=CompressConfig,
    inputs=("input",),
    input_help={"input": "the compress plan's checkpoint (.safetensors, sharded index or folder, .pt/.bin, .npz/.npy/.csv)"},
    train=train_denoisers,
),)
