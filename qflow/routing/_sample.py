"""Synthetic but realistic routing inputs (fixed seed): sample data and benchmarks.

Router logits follow what trained MoE routers show: a few experts are far
more popular than the rest (Zipf-like popularity), each token has its own
noisy preference (Gumbel noise on the logits), and tokens prefer experts
hosted near them a little (data and expert parallel groups co-locate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["make_model_graph", "make_tokens", "write_sample"]

NVLINK_GBPS = 14_400.0  # NVLink 5: 1.8 TB/s per GPU
ETHERNET_GBPS = 400.0


def make_model_graph(n_nodes: int = 8, experts_per_node: int = 8, gpus_per_node: int = 4, racks: int = 1) -> dict[str, Any]:
    """Experts spread over nodes; nodes in one rack share NVLink, racks share 400G.

    Returns the native model-graph mapping (see ``parse_model_graph``).
    """
    nodes = [{"id": f"node{i}", "rack": f"rack{i * racks // n_nodes}", "gpus": [f"node{i}-gpu{g}" for g in range(gpus_per_node)]}
             for i in range(n_nodes)]
    experts = [{"id": f"expert{e}", "node": f"node{e // experts_per_node}"} for e in range(n_nodes * experts_per_node)]
    links = []
    for i in range(n_nodes):
        for j in range(i + 1, n_nodes):
            same_rack = nodes[i]["rack"] == nodes[j]["rack"]
            links.append({"source": f"node{i}", "target": f"node{j}", "bandwidth_gbps": NVLINK_GBPS if same_rack else ETHERNET_GBPS})
    return {"nodes": nodes, "experts": experts, "links": links}


def make_tokens(
    n_tokens: int,
    n_experts: int = 64,
    n_nodes: int = 8,
    *,
    seed: int = 0,
    zipf: float = 1.1,
    heavy_fraction: float = 0.0,
    padding_fraction: float = 0.0,
    hint_fraction: float = 0.0,
    as_logits: bool = True,
) -> pd.DataFrame:
    """A token trace with skewed router scores.

    Parameters
    ----------
    n_tokens, n_experts, n_nodes : int
    seed : int
    zipf : float
        Popularity of expert rank ``r`` is proportional to ``r**-zipf``.
    heavy_fraction : float
        Share of tokens with complexity 2 (long sequences); the rest have 1.
    padding_fraction, hint_fraction : float
        Share of padding tokens / tokens carrying a preferred expert.
    as_logits : bool
        Scores as logits (else softmax probabilities).

    Returns
    -------
    DataFrame with ``token_id``, ``source``, ``complexity``, ``score_0..``,
    and optionally ``hint`` and ``padding``.
    """
    rng = np.random.default_rng(seed)
    popularity = -zipf * np.log(np.arange(1, n_experts + 1))
    rng.shuffle(popularity)
    source = rng.integers(0, n_nodes, n_tokens)
    experts_per_node = max(1, n_experts // n_nodes)
    near = (np.arange(n_experts)[None, :] // experts_per_node) == source[:, None]
    logits = (2.0 * popularity[None, :] + rng.gumbel(size=(n_tokens, n_experts)) + 0.5 * near).astype(np.float32)
    if not as_logits:
        logits = np.exp(logits - logits.max(axis=1, keepdims=True))
        logits /= logits.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(np.round(logits, 4), columns=[f"score_{e}" for e in range(n_experts)])
    frame.insert(0, "token_id", [f"tok{i:07d}" for i in range(n_tokens)])
    frame.insert(1, "source", [f"node{s}" for s in source])
    frame.insert(2, "complexity", np.where(rng.random(n_tokens) < heavy_fraction, 2, 1))
    if hint_fraction > 0:
        hints = np.where(rng.random(n_tokens) < hint_fraction, rng.integers(0, n_experts, n_tokens), -1)
        frame["hint"] = [f"expert{h}" if h >= 0 else "" for h in hints]
    if padding_fraction > 0:
        frame["padding"] = rng.random(n_tokens) < padding_fraction
    return frame


def write_sample(directory: str | Path, seed: int = 0) -> list[Path]:
    """Write ``tokens.csv`` (8192 tokens) and ``model_graph.json`` (64 experts, 8 nodes, 2 racks)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    graph = make_model_graph(n_nodes=8, experts_per_node=8, racks=2)
    tokens = make_tokens(8192, 64, 8, seed=seed, heavy_fraction=0.1, padding_fraction=0.03, hint_fraction=0.05)
    tokens_path, graph_path = out / "tokens.csv", out / "model_graph.json"
    tokens.to_csv(tokens_path, index=False)
    graph_path.write_text(json.dumps(graph, indent=1) + "\n")
    return [tokens_path, graph_path]


def write_expert_loads(directory: str | Path, layers: int = 4) -> Path:
    """Write ``expert_loads.csv`` (``layer, expert, load``): the placement sample.

    Layer ``i``'s load is the complexity-weighted top-1 count of a token
    trace made with ``seed=i`` (layer 0's trace has the router scores of the
    bundled ``tokens.csv``), i.e. what a serving engine's expert-load counters
    would show for these routers.
    """
    rows = []
    for layer in range(layers):
        tokens = make_tokens(8192, 64, 8, seed=layer, heavy_fraction=0.1)
        best = tokens[[f"score_{e}" for e in range(64)]].to_numpy().argmax(axis=1)
        load = np.bincount(best, weights=tokens["complexity"].to_numpy(dtype=float), minlength=64)
        rows += [{"layer": layer, "expert": f"expert{e}", "load": float(load[e])} for e in range(64)]
    path = Path(directory) / "expert_loads.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
