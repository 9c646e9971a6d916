"""One intra-op thread for torch work on small tensors.

Small models and small matrices (a GNN over 8 nodes, a 64x64 denoiser, an
auction over a few hundred tokens) gain nothing from splitting each op over
threads, and on a busy machine the OpenMP workers' spin-waits cost far more
than the op: measured here, 300 GNN steps took 0.3 s on one thread and 5 s
on two under load; routing 37 tokens took 0.3 s and 4.5 s. One thread also
makes float reductions, and so trained weights, identical on every machine.

torch's thread count is process-wide, and changing it while another thread
changes it too can deadlock OpenMP runtimes (pytorch/pytorch#75147), so every
change goes through one re-entrant lock, and each block restores what it
found.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["one_torch_thread"]

#: Serialises changes to torch's process-wide thread count (re-entrant: blocks may nest).
_THREAD_COUNT_LOCK = threading.RLock()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread, then restore the previous count.

    Concurrent blocks (two app sessions training at once) take turns.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with one_torch_thread():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    with _THREAD_COUNT_LOCK:
        previous = torch.get_num_threads()
        if previous != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if previous != 1:
                torch.set_num_threads(previous)
