"""Sample data: a small MLP trained here on scikit-learn's digits, its gradients, and its container.

Writes ``checkpoint.safetensors`` (a 64-256-128-10 ReLU MLP trained with
Adam on the 8x8 digits images, fixed seed, one thread: the same bytes on
every machine), ``gradient_shard.npz`` (the loss gradients of every
parameter on one held-out batch) and ``checkpoint.qfz`` (the checkpoint
compressed by this module with the default config).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qflow.core.threads import one_torch_thread

__all__ = ["LAYERS", "train_mlp", "write_sample"]

LAYERS = (64, 256, 128, 10)
STEPS, BATCH = 300, 128


def _model() -> torch.nn.Sequential:
    a, b, c, d = LAYERS
    return torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Linear(b, c), torch.nn.ReLU(),
                               torch.nn.Linear(c, d))


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te)


def train_mlp(seed: int = 0, steps: int = STEPS) -> tuple[torch.nn.Sequential, float, dict[str, np.ndarray]]:
    """Train the MLP; returns the model, its held-out accuracy, and the gradients on one held-out batch."""
    with one_torch_thread():
        torch.manual_seed(seed)
        x_tr, y_tr, x_te, y_te = _data(seed)
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, x_tr.shape[0], (BATCH,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accuracy = float((model(x_te).argmax(1) == y_te).float().mean())
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x_te[:BATCH]), y_te[:BATCH]).backward()
        grads = {f"grad.{name}": p.grad.detach().numpy().astype(np.float32).copy() for name, p in model.named_parameters()}
    return model, accuracy, grads


def write_sample(directory: str | Path, seed: int = 0) -> list[Path]:
    """Train, then write ``checkpoint.safetensors``, ``gradient_shard.npz`` and ``checkpoint.qfz``."""
    from qflow.compression._plan import compress_tensors
    from qflow.core.tensors import npz_bytes, safetensors_bytes

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model, accuracy, grads = train_mlp(seed)
    state = {name: p.detach().numpy().astype(np.float32).copy() for name, p in model.state_dict().items()}
    ckpt, grad_path, qfz = out / "checkpoint.safetensors", out / "gradient_shard.npz", out / "checkpoint.qfz"
    # one metadata key: safetensors writes its metadata map in hash order, so several keys change the bytes per run
    about = f"{'-'.join(map(str, LAYERS))} ReLU MLP, sklearn digits, seed {seed}, held-out accuracy {accuracy:.4f}"
    ckpt.write_bytes(safetensors_bytes(state, {"about": about}))
    grad_path.write_bytes(npz_bytes(grads))
    ordered = dict(sorted(state.items()))  # the order the loader gives, so the CLI writes the same bytes
    qfz.write_bytes(compress_tensors(ordered, {"seed": seed}, source=ckpt.name).container)
    return [ckpt, grad_path, qfz]
