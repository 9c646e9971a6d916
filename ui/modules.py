"""The engine modules the console lists.

:data:`PLANNED_PAGES` describes every module's page; :data:`MODULE_PAGES`
keeps those whose page script exists, so a module appears (in the
navigation and on Home) exactly when its page lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModulePage", "MODULE_PAGES", "PLANNED_PAGES"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModulePage:
    """One module's page."""

    name: str  #: engine module name, also the page's URL path
    title: str
    path: str  #: page script, relative to the repository root (where app.py is)
    icon: str
    summary: str  #: one sentence for the Home page


PLANNED_PAGES: tuple[ModulePage, ...] = (
    ModulePage(
        name="routing",
        title="Routing",
        path="pages/routing.py",
        icon=":material/alt_route:",
        summary="Assign the tokens of one MoE layer step to experts under capacity, close to their expert's node, "
        "and compare with hash routing, top-1 gating and greedy balancing on the same input.",
    ),
    ModulePage(
        name="energy",
        title="Energy",
        path="pages/energy.py",
        icon=":material/bolt:",
        summary="Predict per-node power from telemetry, schedule dependent jobs under a power budget and cap "
        "clocks, against ASAP and per-node scheduling and the lower bound on peak power.",
    ),
    ModulePage(
        name="compress",
        title="Compress",
        path="pages/compress.py",
        icon=":material/compress:",
        summary="Shrink checkpoints, gradients and activations into a checksummed container: per-channel "
        "quantization, pruning, entropy packing, or bit-exact lossless mode, against fp16 and zstd.",
    ),
    ModulePage(
        name="decompress",
        title="Decompress",
        path="pages/decompress.py",
        icon=":material/expand:",
        summary="Restore tensors from a container, verifying every block's checksum, with optional "
        "refinement steps measured against the plain inverse.",
    ),
    ModulePage(
        name="hpo",
        title="HPO",
        path="pages/hpo.py",
        icon=":material/tune:",
        summary="Recommend hyperparameters from a search space and past trials: Gaussian-process expected "
        "improvement, a VQC optimizer and a hybrid, measured against random search and Optuna's TPE.",
    ),
    ModulePage(
        name="nvlink",
        title="NVLink",
        path="pages/nvlink.py",
        icon=":material/lan:",
        summary="Place jobs' ranks on an NVLink/NVSwitch fabric, schedule transfers in conflict-free rounds and "
        "route flows, against round-robin placement, greedy colouring and shortest paths.",
    ),
    ModulePage(
        name="attention",
        title="Attention",
        path="pages/attention.py",
        icon=":material/center_focus_strong:",
        summary="Sparse top-k attention against dense attention, QPE position encoding, a contrastive trainer "
        "and SVD head pruning on uploaded embeddings and weights.",
    ),
)

#: The pages that exist, in listing order.
MODULE_PAGES: tuple[ModulePage, ...] = tuple(page for page in PLANNED_PAGES if (_REPO_ROOT / page.path).is_file())
