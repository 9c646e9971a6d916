"""Compress and decompress on a Dask cluster: a task per shard (or group of tensors), files on a shared path.

Compress: each task reopens the checkpoint at its absolute path (so the
workers must see it on a shared filesystem, at the same path), encodes its
tensors with the same per-tensor function as a local run
(:func:`qflow.compression._plan._encode_one`, same seeds) and returns the
encoded blocks; this process writes them into the container in tensor
order. The container is therefore the same bytes as a local run's.

Decompress to files: this process writes each output file's header and
sizes the file; each task reopens the container, decodes its tensors and
writes them at their offsets in the file. The files are the same bytes as a
local restore's.

Tasks that were running on a worker that dies are rerun elsewhere by Dask;
the plan lists the worker that finished each task. A
:class:`~qflow.core.errors.QflowError` raised on a worker comes back as
the same one-line error.
"""

from __future__ import annotations

import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qflow.compression._checkpoint import Checkpoint, TensorRef
from qflow.compression._stream import sized_files, tensor_offsets, write_index
from qflow.core.cluster import dask_client, tagged_call, worker_addresses
from qflow.core.errors import InfeasibleError, InputError, QflowError, QuantumUnavailableError

__all__ = ["GROUP_BYTES", "cluster_decode_files", "cluster_encoded", "cluster_plan", "cluster_unsupported",
           "tensor_groups"]

#: A task holds one shard, or consecutive tensors of one shard up to about this many bytes when it is larger.
GROUP_BYTES = 256 << 20
_ERRORS = {cls.__name__: cls for cls in (InputError, InfeasibleError, QuantumUnavailableError)}


def tensor_groups(files: Sequence[str], sizes: Sequence[int], limit: int | None = None) -> list[list[int]]:
    """Indices of consecutive tensors per task: a new task at each file change or past ``limit`` bytes
    (default :data:`GROUP_BYTES`).

    >>> tensor_groups(["a", "a", "b"], [10, 10, 10], limit=100)
    [[0, 1], [2]]
    >>> tensor_groups(["a", "a", "a"], [60, 60, 60], limit=100)
    [[0, 1], [2]]
    """
    limit = limit or GROUP_BYTES
    groups: list[list[int]] = []
    size = 0
    for i, (file, nbytes) in enumerate(zip(files, sizes, strict=True)):
        if not groups or file != files[groups[-1][-1]] or size >= limit:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += nbytes
    return groups


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a worker; a qflow error travels back as plain fields (its constructor does not unpickle)."""
    try:
        return ("ok", fn(*args))
    except QflowError as exc:
        return ("error", (type(exc).__name__, exc.source, exc.field, exc.problem, exc.expected, exc.received))


def _unwrap(outcome: tuple[str, Any]) -> Any:
    kind, value = outcome
    if kind == "error":
        name, *fields = value
        raise _ERRORS.get(name, InputError)(*fields)
    return value


def _visible(paths: list[str]) -> list[str]:
    """The paths this worker cannot see."""
    return [p for p in paths if not os.path.exists(p)]


def _check_workers(client: Any, paths: list[str], source: str) -> list[str]:
    """The workers' addresses, after checking each sees every path (one-line :class:`InputError` otherwise)."""
    workers = worker_addresses(client)
    if not workers:
        raise InputError(source, "dask_scheduler", "no workers connected to the scheduler", "at least one dask worker",
                         0)
    missing = {w: m for w, m in client.run(_visible, paths).items() if m}
    if missing:
        worker, lost = next(iter(sorted(missing.items())))
        raise InputError(source, "dask_scheduler", f"path not visible to worker {worker}",
                         "the input and output on a filesystem every worker shares, at the same path", lost[0])
    return workers


def cluster_plan(address: str, workers: list[str], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan's ``result.cluster``: scheduler, the workers seen at the start, and each task's worker."""
    return {"scheduler": address, "workers": workers, "tasks": tasks,
            "workers_used": sorted({t["worker"] for t in tasks})}


def _in_order(client: Any, calls: Iterator[tuple[Any, ...]], window: int) -> Iterator[tuple[Any, str]]:
    """Submit ``(fn, *args)`` calls, at most ``window`` in flight; yield ``(value, worker)`` in submission order."""
    pending: deque[Any] = deque()
    try:
        for fn, *args in calls:
            pending.append(tagged_call(client, _guarded, fn, *args))
            if len(pending) >= window:
                outcome, worker = pending.popleft().result()
                yield _unwrap(outcome), worker
        while pending:
            outcome, worker = pending.popleft().result()
            yield _unwrap(outcome), worker
    finally:
        if pending:
            client.cancel(list(pending))


def _encode_group(path: str, names: list[tuple[int, str]], ctx: Any) -> list[Any]:
    """Reopen the checkpoint and encode tensors ``(index, name)`` on this worker, as a local run would."""
    from qflow.compression._checkpoint import open_checkpoint
    from qflow.compression._plan import _encode_one

    checkpoint = open_checkpoint(path)
    refs = {r.name: r for r in checkpoint.tensors} if checkpoint is not None else {}
    missing = next((name for _, name in names if name not in refs), None)
    if missing is not None:
        raise InputError(Path(path).name, missing, "tensor missing on the worker's copy of the checkpoint",
                         "the same checkpoint at the same path on every worker")
    return [_encode_one((i, refs[name]), ctx) for i, name in names]


def cluster_unsupported(tensors: Any, vqc: bool) -> str | None:
    """Why a compress cannot run on the cluster (None when it can)."""
    if vqc:
        return "the VQC autoencoder shares one circuit time budget across tensors: encoded in this process"
    if not isinstance(tensors, Checkpoint) or tensors.path is None:
        return "in-memory or uploaded tensors have no path the workers could read: encoded in this process"
    return None


def cluster_encoded(address: str, checkpoint: Checkpoint, refs: list[TensorRef], ctx: Any, source: str,
                    record: dict[str, Any]) -> Iterator[Any]:
    """Encoded tensors (``_Encoded``) in checkpoint order, each group encoded as a task on the cluster.

    ``record`` receives ``result.cluster`` (see :func:`cluster_plan`) once every task has finished.
    """
    groups = tensor_groups([r.file for r in refs], [r.nbytes for r in refs])
    path = str(checkpoint.path)
    with dask_client(address, source=source) as client:
        workers = _check_workers(client, [path], source)
        calls = ((_encode_group, path, [(i, refs[i].name) for i in group], ctx) for group in groups)
        tasks = []
        for group, (outs, worker) in zip(groups, _in_order(client, calls, 2 * len(workers)), strict=True):
            tasks.append({"task": len(tasks), "shard": refs[group[0]].file or source, "tensors": len(group),
                          "first_tensor": refs[group[0]].name, "bytes": sum(refs[i].nbytes for i in group),
                          "worker": worker})
            yield from outs
    record.update(cluster_plan(address, workers, tasks))


def _write_group(container: str, source: str, target: str, items: list[tuple[str, int]]) -> float:
    """Decode tensors ``(name, offset)`` of the container and write each at its offset in ``target``; CPU seconds."""
    import time

    from qflow.compression._container import read_container
    from qflow.compression._plan import write_decoded

    start = time.thread_time()
    with open(container, "rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    opened = read_container(data, source, verify=False)
    records = {r["name"]: r for r in opened.header["tensors"]}
    fd = os.open(target, os.O_WRONLY)
    try:
        for name, offset in items:
            write_decoded(records[name], opened, source, fd, offset)
    finally:
        os.close(fd)
    return time.thread_time() - start


def _file_tasks(outputs: list[tuple[Path, bytes, list[str]]], sizes: dict[str, int]
                ) -> list[tuple[str, list[tuple[str, int]]]]:
    """``(file, [(tensor, byte offset)])`` per task: consecutive tensors of one output file (:func:`tensor_groups`)."""
    offsets = {(str(path), name): offset for path, name, offset in tensor_offsets(outputs, sizes)}
    tasks = []
    for path, _, names in outputs:
        for group in tensor_groups([str(path)] * len(names), [sizes[n] for n in names]):
            tasks.append((str(path), [(names[i], offsets[str(path), names[i]]) for i in group]))
    return tasks


def cluster_decode_files(address: str, container: Path, source: str, records: dict[str, dict[str, Any]],
                         outputs: list[tuple[Path, bytes, list[str]]], layout: dict[str, Any] | None,
                         folder: Path | None, cpu: list[float], progress: Callable[[float, str], None]
                         ) -> tuple[list[str], dict[str, Any]]:
    """Restore ``outputs`` with the cluster's workers; returns the paths written and ``result.cluster``.

    Files written so far are removed when a task fails (no half-restored checkpoint is left).
    """
    from qflow.compression._container import tensor_nbytes

    sizes = {name: tensor_nbytes(r) for name, r in records.items()}
    tasks = _file_tasks(outputs, sizes)
    written: list[str] = []
    with dask_client(address, source=source) as client:
        try:
            sized_files(outputs, sizes, written)
            workers = _check_workers(client, [str(container.resolve()), *sorted({str(Path(w).resolve()) for w in written})],
                                     source)
            calls = ((_write_group, str(container.resolve()), source, str(Path(t).resolve()), items)
                     for t, items in tasks)
            done = []
            for (target, items), (seconds, worker) in zip(tasks, _in_order(client, calls, 2 * len(workers)), strict=True):
                cpu.append(seconds)
                done.append({"task": len(done), "file": Path(target).name, "tensors": len(items),
                             "first_tensor": items[0][0], "bytes": sum(sizes[n] for n, _ in items), "worker": worker})
                progress(0.05 + 0.9 * len(done) / max(len(tasks), 1), f"restored {len(done)} of {len(tasks)} groups")
        except BaseException:
            for path in written:
                Path(path).unlink(missing_ok=True)
            raise
    write_index(folder, layout, written)
    return written, cluster_plan(address, workers, done)

