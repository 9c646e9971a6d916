"""Files an API run produced besides its plan (a ``.qfz`` container, restored tensors, updated embeddings).

Kept beside the run history: ``<folder of runs.db>/artifacts/<run uid>/<name>``
(``$QFLOW_HOME/artifacts/<run uid>/`` for the default store), where the uid is
the random UUID stored with the run (:attr:`qflow.core.runs.RunSummary.uid`),
never its integer id: ids restart when ``runs.db`` is replaced, uids never
repeat, so old files cannot appear under a new run. The folder of a run is
created only when the run wrote files. Names are the file names the command
wrote, passed through :func:`~qflow.core.uploads.safe_file_name`; a file is
served only if its name is in the run's listing, so no name a client sends can
reach outside that folder, and neither a run folder nor a file that is a
symbolic link is ever listed or served.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "w").mkdir(); _ = (root / "w" / "model.qfz").write_bytes(b"QFZ")
>>> store = ArtifactStore(root / "artifacts")
>>> uid = "0f" * 16
>>> store.keep(uid, [root / "w" / "model.qfz"])
['model.qfz']
>>> [(a.name, a.bytes) for a in store.list(uid)], store.path(uid, "../model.qfz"), store.list("1a" * 16)
([('model.qfz', 3)], None, [])
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qflow.core.uploads import safe_file_name

__all__ = ["Artifact", "ArtifactStore", "media_type"]

_HASH_CHUNK = 1 << 20
#: A run uid as :mod:`qflow.core.runs` writes it (``uuid4().hex``).
_UID = re.compile(r"[0-9a-f]{32}")

#: Media types by suffix (anything else is application/octet-stream).
_MEDIA_TYPES = {
    ".json": "application/json",
    ".csv": "text/csv",
    ".npz": "application/zip",
    ".zip": "application/zip",
}


def media_type(name: str) -> str:
    """The media type to serve ``name`` with.

    >>> media_type("model.qfz"), media_type("restored.npz")
    ('application/octet-stream', 'application/zip')
    """
    return _MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


@dataclass(frozen=True)
class Artifact:
    """One kept file: ``name``, size in ``bytes``, hex ``sha256`` of its content."""

    name: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """The ``artifacts`` folder: one sub-folder per run (named by its uid) that produced files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, run_uid: str) -> Path:
        """The run's folder (it may not exist); :class:`ValueError` for anything but a 32-hex-digit uid."""
        if not isinstance(run_uid, str) or not _UID.fullmatch(run_uid):
            raise ValueError(f"not a run uid: {run_uid!r}")
        return self.root / run_uid

    def keep(self, run_uid: str, files: Iterable[Path]) -> list[str]:
        """Move ``files`` (regular files) into the run's folder; returns their kept names, sorted.

        Nothing is created when ``files`` is empty. A file of the same name
        already kept for this run (the same plan stored again) is replaced.
        """
        files = [f for f in files if f.is_file() and not f.is_symlink()]
        if not files:
            return []
        target = self.folder(run_uid)
        target.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            raise ValueError(f"artifact folder of run {run_uid} is a symbolic link; refusing to write through it")
        names = []
        for index, source in enumerate(files):
            name = safe_file_name(source.name, f"artifact{index}")
            # Copy to a temporary name in the target folder, then rename: a reader never sees half a file.
            handle, staging = tempfile.mkstemp(prefix=".incoming-", dir=target)
            os.close(handle)
            shutil.move(str(source), staging)
            os.replace(staging, target / name)
            names.append(name)
        return sorted(names)

    def _names(self, run_uid: str) -> list[str]:
        """Regular files directly in the run's real (not symlinked) folder, with names as :meth:`keep` writes them."""
        folder = self.folder(run_uid)
        if folder.is_symlink() or not folder.is_dir():
            return []
        return sorted(entry.name for entry in folder.iterdir()
                      if not entry.name.startswith(".") and not entry.is_symlink() and entry.is_file()
                      and safe_file_name(entry.name, "") == entry.name)

    def list(self, run_uid: str) -> list[Artifact]:
        """The run's kept files (empty when it kept none)."""
        folder = self.folder(run_uid)
        return [Artifact(name, (folder / name).stat().st_size, _sha256(folder / name)) for name in self._names(run_uid)]

    def path(self, run_uid: str, name: str) -> Path | None:
        """The kept file called exactly ``name`` (one of :meth:`list`'s names), else ``None``."""
        if name not in self._names(run_uid):
            return None
        return self.folder(run_uid) / name
