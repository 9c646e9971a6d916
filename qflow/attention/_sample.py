"""Sample data: a one-layer transformer trained here, on CPU, in a few seconds.

Task (synthetic, fixed seed): read a random token sequence and output, at
each position ``i``, the token seen ``LAG`` positions earlier. Only attention
can fetch it, so a trained head learns a sharp "look back LAG" pattern over
the learned position embeddings, while a group-lasso penalty on each head's
V rows and O columns (plus AdamW's weight decay) shrinks the heads the task
does not need: the pruner has real structure to find.

Writes ``embeddings.npy`` (the layer's input on one held-out sequence, (256,
64) float32) and ``attention_weights.safetensors`` (``{q,k,v,o}_proj.weight``
and ``.bias`` (64, 64)/(64,), ``n_heads`` = 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qflow.core.threads import one_torch_thread

__all__ = ["SEQ", "D_MODEL", "N_HEADS", "LAG", "TinyAttentionModel", "train_model", "write_sample"]

SEQ, D_MODEL, N_HEADS, VOCAB, LAG = 256, 64, 4, 16, 3
STEPS, BATCH = 250, 16
#: Weight of the group-lasso penalty on each head's V rows and O columns (heads the task needs survive it).
GROUP_LASSO = 0.007


class TinyAttentionModel(torch.nn.Module):
    """Token + position embeddings, one causal multi-head attention layer with a residual, a linear readout."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(VOCAB, D_MODEL)
        self.pos = torch.nn.Embedding(SEQ, D_MODEL)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (torch.nn.Linear(D_MODEL, D_MODEL) for _ in range(4))
        self.readout = torch.nn.Linear(D_MODEL, VOCAB)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, seq) token ids -> (batch, seq, d) layer inputs."""
        return self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        b, n, d = x.shape
        dh = d // N_HEADS
        q, k, v = (p(x).view(b, n, N_HEADS, dh).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d)
        return self.readout(x + self.o_proj(mixed))


def _head_norms(model: TinyAttentionModel) -> torch.Tensor:
    """Per head, ``||W_V,h||_F + ||W_O,h||_F``: the group lasso that drives unneeded heads to zero."""
    dh = D_MODEL // N_HEADS
    v = model.v_proj.weight.view(N_HEADS, dh, D_MODEL)
    o = model.o_proj.weight.view(D_MODEL, N_HEADS, dh).transpose(0, 1)
    return v.flatten(1).norm(dim=1) + o.flatten(1).norm(dim=1)


def _batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    return tokens, tokens.roll(LAG, dims=1)


def train_model(seed: int = 0, steps: int = STEPS) -> tuple[TinyAttentionModel, list[float]]:
    """Train on the lag-copy task; returns the model and its loss per step (positions >= LAG only)."""
    with one_torch_thread():  # one thread: the same bytes on every machine run
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = TinyAttentionModel()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.2)
        losses = []
        for _ in range(steps):
            tokens, target = _batch(gen)
            logits = model(tokens)
            loss = F.cross_entropy(logits[:, LAG:].reshape(-1, VOCAB), target[:, LAG:].reshape(-1))
            opt.zero_grad()
            (loss + GROUP_LASSO * _head_norms(model).sum()).backward()
            opt.step()
            losses.append(loss.item())
    return model, losses


def write_sample(directory: str | Path, seed: int = 0) -> list[Path]:
    """Train the model and write ``embeddings.npy`` and ``attention_weights.safetensors``."""
    from safetensors.numpy import save

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model, _ = train_model(seed)
    with torch.no_grad():
        tokens = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(seed + 1))
        x = model.embed(tokens)[0].numpy().astype(np.float32)
        weights = {f"{p}.{part}": getattr(getattr(model, p), part).detach().numpy().astype(np.float32).copy()
                   for p in ("q_proj", "k_proj", "v_proj", "o_proj") for part in ("weight", "bias")}
    weights["n_heads"] = np.array(N_HEADS, dtype=np.int64)
    emb_path, w_path = out / "embeddings.npy", out / "attention_weights.safetensors"
    np.save(emb_path, x, allow_pickle=False)
    # One metadata key: safetensors keeps metadata in a hash map, so two keys come out in either order
    # and the file's bytes would change from run to run.
    w_path.write_bytes(save(weights, metadata={"qflow_sample": f"lag-{LAG} copy task, seed {seed}"}))
    return [emb_path, w_path]
