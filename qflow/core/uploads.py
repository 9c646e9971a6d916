"""Run a module's command on uploaded bytes (the API's multipart files, the Compare page's inputs).

:class:`~qflow.core.commands.ModuleCommand` runs on file paths, as the CLI
does, so uploads are written to a private temporary folder under their own
base names first: the loaders pick the format by suffix and name the file in
their messages, so an upload called ``tokens.csv`` gives the same message as
``--tokens tokens.csv`` on the command line.

The folders are named ``qflow-upload-<pid>-*`` after the process that made
them; :func:`sweep_stale_upload_folders` (run when the API and the console
start) removes those whose process is gone, so a ``kill -9`` leaves nothing
behind for long.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from qflow.core.commands import ModuleCommand, Progress
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan

__all__ = ["UPLOAD_PREFIX", "Upload", "run_command", "run_on_uploads", "run_on_uploads_keeping_artifacts",
           "safe_file_name", "sweep_stale_upload_folders", "written_uploads"]

#: Name prefix of every upload folder in the temporary directory.
UPLOAD_PREFIX = "qflow-upload-"
#: (file name as uploaded, bytes)
Upload = tuple[str, bytes]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_OWNED_FOLDER = re.compile(re.escape(UPLOAD_PREFIX) + r"(\d+)-")


def _upload_folder() -> tempfile.TemporaryDirectory[str]:
    """A private temporary folder named after this process (what the sweep reads to know its owner)."""
    return tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale_upload_folders(temp_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove upload folders left by processes that no longer run (killed mid-request); returns what was removed.

    Only this user's real folders named ``qflow-upload-<pid>-*`` whose
    ``<pid>`` is not a running process are removed; a folder of a live
    process, a symbolic link or someone else's folder is left alone.
    """
    root = Path(temp_dir if temp_dir is not None else tempfile.gettempdir())
    removed = []
    for entry in root.glob(f"{UPLOAD_PREFIX}*"):
        match = _OWNED_FOLDER.match(entry.name)
        try:
            info = entry.lstat()
        except OSError:
            continue
        if (match is None or entry.is_symlink() or not entry.is_dir() or info.st_uid != os.getuid()
                or _process_alive(int(match.group(1)))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def run_command(command: ModuleCommand, files: dict[str, Path | None], config: QflowConfig, out: Path | None,
                progress: Progress | None = None) -> Plan:
    """``command.run(files, config, out)``, passing ``progress`` to commands whose ``run`` takes it."""
    if progress is not None and "progress" in inspect.signature(command.run).parameters:
        return command.run(files, config, out, progress=progress)  # type: ignore[call-arg]
    return command.run(files, config, out)


def safe_file_name(name: str | None, fallback: str) -> str:
    """The base name of ``name`` with odd characters replaced, or ``fallback`` when nothing is left.

    >>> safe_file_name("../../etc/tokens.csv", "tokens"), safe_file_name("", "tokens"), safe_file_name("a b.json", "x")
    ('tokens.csv', 'tokens', 'a_b.json')
    """
    base = Path(str(name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).strip("._")[:120]
    return base or fallback


def run_on_uploads(command: ModuleCommand, uploads: Mapping[str, Upload | None], config: QflowConfig,
                   progress: Progress | None = None) -> Plan:
    """``command.run`` on ``uploads`` ({input name: (file name, bytes) or None}) with ``config``.

    Inputs missing from ``uploads`` are passed as ``None`` (the command
    decides whether that is allowed). Errors are the command's own
    (:class:`~qflow.core.errors.QflowError` for bad input).
    """
    with written_uploads(command, uploads) as files:
        return run_command(command, files, config, None, progress)


@contextmanager
def written_uploads(command: ModuleCommand, uploads: Mapping[str, Upload | None]) -> Iterator[dict[str, Path | None]]:
    """``{input name: path}`` of ``uploads`` written into a private upload folder, removed on exit.

    The files keep their own (sanitised) names, so the loaders' messages name
    the uploaded file; the folder's name carries this process's id, so the
    stale-folder sweep knows its owner.
    """
    with _upload_folder() as tmp:
        yield _write_uploads(command, uploads, Path(tmp))


def _write_uploads(command: ModuleCommand, uploads: Mapping[str, Upload | None], tmp: Path) -> dict[str, Path | None]:
    """Each upload written under ``tmp`` (one folder per input: two uploads may share a name)."""
    files: dict[str, Path | None] = {}
    for index, input_name in enumerate((*command.inputs, *command.optional_inputs)):
        upload = uploads.get(input_name)
        if upload is None:
            files[input_name] = None
            continue
        file_name, data = upload
        folder = tmp / str(index)
        folder.mkdir()
        path = folder / safe_file_name(file_name, input_name)
        path.write_bytes(data)
        files[input_name] = path
    return files


def _forget_paths(value: Any, folder: str) -> Any:
    """``value`` with every string naming a path inside ``folder`` replaced by ``None`` (recursively)."""
    if isinstance(value, dict):
        return {key: _forget_paths(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_forget_paths(item, folder) for item in value]
    if isinstance(value, str) and value.startswith(folder):
        return None
    return value


T = TypeVar("T")


def run_on_uploads_keeping_artifacts(
    command: ModuleCommand, uploads: Mapping[str, Upload | None], config: QflowConfig,
    keep: Callable[[Plan, list[Path]], T], out_name: str = "plan.json", progress: Progress | None = None,
) -> T:
    """:func:`run_on_uploads`, but the command may write artifacts; ``keep(plan, files)`` takes them.

    The command runs with ``out`` = ``<private folder>/<out_name>``, as the CLI
    does for ``--out plan.json``, so compress writes ``plan.qfz``, decompress
    ``plan.safetensors``, attention ``plan.embeddings.npy`` (``out_name``
    picks the names and, for decompress, the format). ``progress`` is passed
    to the command (see :class:`~qflow.core.commands.ModuleCommand`). ``files`` are the
    regular files the command wrote in that folder (sorted by name); ``keep``
    runs before the folder is removed, so it must move or copy what it wants.
    Paths into the private folder (``written_to``) are set to ``None`` in the
    plan, as for a run without ``out``: they would name a folder that is gone.
    """
    with _upload_folder() as tmp:
        files = _write_uploads(command, uploads, Path(tmp))
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        out = out_dir / safe_file_name(out_name, "plan.json")
        plan = run_command(command, files, config, out, progress)
        plan.result = _forget_paths(plan.result, str(out_dir) + os.sep)
        plan_file = command.plan_path(out) if command.plan_path is not None else out
        written = sorted(path for path in out_dir.iterdir()
                         if path != plan_file and path.is_file() and not path.is_symlink())
        return keep(plan, written)
