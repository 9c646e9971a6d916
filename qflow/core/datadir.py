"""A server-side data folder (``QFLOW_DATA_DIR``): files too large to upload, picked by name.

The console lists the files under the folder and opens the one picked; a
name is always relative to the folder. Nothing outside it is listed or
opened: a name with ``..``, an absolute name, or a symlink (file or folder)
resolving outside the folder is refused with an
:class:`~qflow.core.errors.InputError`. Symlinks that stay inside are
followed once; loops are not (``os.walk`` does not follow folder links).
"""

from __future__ import annotations

import os
from pathlib import Path

from qflow.core.errors import InputError

__all__ = ["DATA_DIR_ENV", "data_dir", "list_data_files", "resolve_data_file"]

DATA_DIR_ENV = "QFLOW_DATA_DIR"
#: Most files one listing returns (a huge folder must not make the picker hang).
MAX_LISTED = 10_000


def data_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The configured data folder (``QFLOW_DATA_DIR``), or None when unset or empty.

    Raises
    ------
    InputError
        The variable names something that is not an existing folder.
    """
    value = (os.environ if environ is None else environ).get(DATA_DIR_ENV, "").strip()
    if not value:
        return None
    root = Path(value)
    if not root.is_dir():
        raise InputError(DATA_DIR_ENV, "(environment)", "not a folder", "an existing folder", value)
    return root


def _inside(root: Path, path: Path) -> bool:
    resolved_root = root.resolve()
    resolved = path.resolve()
    return resolved == resolved_root or resolved_root in resolved.parents


def list_data_files(root: str | os.PathLike[str], suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files under ``root`` as sorted names relative to it (``"ckpt/model.safetensors"``).

    ``suffixes`` (e.g. ``(".safetensors", ".json")``, case-insensitive)
    filters by name ending; empty keeps every file. Symlinks leading out of
    ``root`` and hidden entries (names starting with ``.``) are skipped; at
    most :data:`MAX_LISTED` names are returned.
    """
    base = Path(root)
    names: list[str] = []
    for folder, dirs, files in os.walk(base):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _inside(base, here / d))
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or not path.is_file() or not _inside(base, path):
                continue
            if suffixes and not name.lower().endswith(tuple(s.lower() for s in suffixes)):
                continue
            names.append(path.relative_to(base).as_posix())
            if len(names) >= MAX_LISTED:
                return sorted(names)
    return sorted(names)


def resolve_data_file(root: str | os.PathLike[str], name: str) -> Path:
    """The file (or folder, for a sharded checkpoint) ``name`` under ``root``; refused when it leaves ``root``.

    Raises
    ------
    InputError
        ``name`` absolute, holding ``..``, missing, or resolving outside ``root`` (symlink).
    """
    base = Path(root)
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise InputError(DATA_DIR_ENV, name or "(empty)", "not a name inside the data folder",
                         "a relative name without '..'", name)
    path = base / name
    if not path.exists():
        raise InputError(DATA_DIR_ENV, name, "not found in the data folder", "a name list_data_files returned", name)
    if not _inside(base, path):
        raise InputError(DATA_DIR_ENV, name, "leads outside the data folder (symlink)", "a file inside the folder",
                         name)
    return path
