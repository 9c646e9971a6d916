"""Loaders: files in, plain validated data out, one error type on failure.

Every loader accepts a path, raw ``bytes``, or a file-like object with
``.name`` and ``.read()``/``.getvalue()`` (a Streamlit upload). Sizes are
checked before parsing; nothing is ever unpickled (JSON, YAML ``safe_load``,
CSV only). A failure raises :class:`~qflow.core.errors.InputError` naming the
file, the field and what was expected.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import networkx as nx
import numpy as np
import pandas as pd
import yaml

from qflow.core.errors import InputError
from qflow.core.plan import InputDigest, digest_bytes

__all__ = [
    "MAX_INPUT_BYTES",
    "RawInput",
    "read_input",
    "load_table",
    "load_mapping",
    "parse_mapping",
    "load_graph",
    "digest_frame",
    "digest_mapping",
]

#: Largest accepted input file, bytes. ``QFLOW_MAX_INPUT_MB`` overrides.
MAX_INPUT_BYTES = int(float(os.environ.get("QFLOW_MAX_INPUT_MB", "1024")) * 2**20)

Source = str | os.PathLike[str] | bytes | IO[bytes] | IO[str]


@dataclass(frozen=True)
class RawInput:
    """The bytes of one input and the name to use in messages."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()

    def digest(self, input_name: str, rows: int | None = None, shape: list[int] | None = None) -> InputDigest:
        return InputDigest(name=input_name, sha256=digest_bytes(self.data), rows=rows, shape=shape, source=self.name)


def read_input(source: Source, name: str | None = None, max_bytes: int | None = None) -> RawInput:
    """Read ``source`` into memory, refusing anything over ``max_bytes``.

    Parameters
    ----------
    source : path, bytes or file-like
        Where the input comes from.
    name : str, optional
        Name used in error messages; defaults to the file name.
    max_bytes : int, optional
        Size limit; defaults to :data:`MAX_INPUT_BYTES`.
    """
    limit = MAX_INPUT_BYTES if max_bytes is None else max_bytes
    if isinstance(source, bytes):
        label = name or "<bytes>"
        data = source
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        label = name or path.name
        if not path.is_file():
            raise InputError(label, "(file)", "file not found", "an existing file", str(path))
        size = path.stat().st_size
        if size > limit:
            raise InputError(label, "(file)", "file too large", f"at most {limit} bytes", f"{size} bytes")
        data = path.read_bytes()
    elif hasattr(source, "getvalue") or hasattr(source, "read"):
        label = name or Path(str(getattr(source, "name", "<upload>"))).name
        data = source.getvalue() if hasattr(source, "getvalue") else source.read(limit + 1)
        if isinstance(data, str):
            data = data.encode()
    else:
        raise InputError(name or "<input>", "(file)", "unsupported input", "a path, bytes or a file object", type(source).__name__)
    if len(data) > limit:
        raise InputError(label, "(file)", "file too large", f"at most {limit} bytes", f"{len(data)} bytes")
    if not data.strip():
        raise InputError(label, "(file)", "file is empty", "a non-empty file")
    return RawInput(label, data)


def _decode(raw: RawInput) -> str:
    try:
        return raw.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(raw.name, "(file)", "not UTF-8 text", "a UTF-8 text file", f"byte {exc.start}") from None


def _parse_json(raw: RawInput) -> Any:
    try:
        return json.loads(_decode(raw))
    except json.JSONDecodeError as exc:
        raise InputError(raw.name, f"(line {exc.lineno})", f"invalid JSON ({exc.msg})", "a JSON document") from None
    except RecursionError:
        raise InputError(raw.name, "(file)", "JSON nested too deeply", "a JSON document") from None


def _parse_yaml(raw: RawInput) -> Any:
    try:
        return yaml.safe_load(_decode(raw))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"(line {mark.line + 1})" if mark is not None else "(file)"
        raise InputError(raw.name, where, "invalid YAML", "a YAML document", getattr(exc, "problem", None)) from None


def load_mapping(source: Source, name: str | None = None) -> dict[str, Any]:
    """Load a JSON or YAML file whose top level is a mapping.

    YAML is read with ``yaml.safe_load`` (no arbitrary objects). The format is
    chosen by suffix (``.yaml``/``.yml`` vs anything else as JSON).
    """
    return parse_mapping(read_input(source, name))


def parse_mapping(raw: RawInput) -> dict[str, Any]:
    """Parse already-read bytes as a JSON or YAML mapping (see :func:`load_mapping`)."""
    data = _parse_yaml(raw) if raw.suffix in {".yaml", ".yml"} else _parse_json(raw)
    if not isinstance(data, dict):
        raise InputError(raw.name, "(top level)", "wrong type", "a mapping (JSON object)", type(data).__name__)
    return data


def load_table(
    source: Source, name: str | None = None, records_key: str | None = None, text_columns: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, RawInput]:
    """Load a CSV file or a JSON list of records into a DataFrame.

    Parameters
    ----------
    source : path, bytes or file-like
    name : str, optional
        Name used in error messages.
    records_key : str, optional
        For JSON, a top-level key that may hold the list
        (``{"tokens": [...]}``).
    text_columns : tuple of str
        CSV columns read as text, never as numbers: identifiers such as
        ``007`` keep their leading zeros.

    Returns
    -------
    frame : DataFrame
        One row per record; columns as in the file.
    raw : RawInput
        The bytes it came from (for the plan's input digest).
    """
    raw = read_input(source, name)
    head = raw.data.lstrip()[:1]
    if raw.suffix == ".json" or head in (b"[", b"{"):
        data = _parse_json(raw)
        if isinstance(data, dict) and records_key and records_key in data:
            data = data[records_key]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(raw.name, records_key or "(top level)", "wrong shape", "a JSON list of objects", type(data).__name__)
        frame = pd.DataFrame.from_records(data)
    else:
        try:
            frame = pd.read_csv(io.BytesIO(raw.data), skipinitialspace=True, dtype=dict.fromkeys(text_columns, str))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(raw.name, "(file)", "invalid CSV", "comma-separated rows under a header line", first) from None
        frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise InputError(raw.name, "(rows)", "no rows", "at least one row")
    return frame, raw


def load_graph(source: Source, name: str | None = None) -> tuple[nx.Graph, RawInput]:
    """Load a NetworkX node-link JSON file (``links`` or ``edges`` key)."""
    raw = read_input(source, name)
    data = _parse_json(raw)
    return graph_from_node_link(data, raw.name), raw


def graph_from_node_link(data: Any, source: str) -> nx.Graph:
    """Build a graph from node-link data, with a clear error on bad shape."""
    if not isinstance(data, Mapping) or "nodes" not in data:
        raise InputError(source, "nodes", "not node-link data", "an object with 'nodes' and 'links'")
    edges_key = "links" if "links" in data else "edges"
    if not isinstance(data["nodes"], list) or not all(isinstance(n, Mapping) and "id" in n for n in data["nodes"]):
        raise InputError(source, "nodes", "wrong shape", "a list of objects each with an 'id'")
    try:
        return nx.node_link_graph(dict(data), edges=edges_key)
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise InputError(source, edges_key, "invalid node-link data", "links with 'source' and 'target'", str(exc)) from None


def digest_frame(frame: pd.DataFrame, name: str, source: str | None = None) -> InputDigest:
    """Digest of a DataFrame given directly (no file bytes to hash).

    Columns are hashed by position (duplicate names are allowed), each with
    its dtype: numeric and boolean columns by their raw bytes, object columns
    of equal-length numeric sequences (a ``scores`` column) by the bytes of
    the stacked float64 matrix, anything else by pandas' per-value hash of its
    text form. Printing number arrays as text (the simple way) cost 19 of
    22.6 s of a 50k-token routing call; bytes cost milliseconds.
    """
    hasher = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    for position in range(frame.shape[1]):
        values = frame.iloc[:, position]
        hasher.update(f"\x1e{position}:{values.dtype}".encode())
        hasher.update(_column_bytes(values))
    return InputDigest(name=name, sha256=hasher.hexdigest(), rows=len(frame), shape=list(frame.shape), source=source)


def _column_bytes(values: pd.Series) -> bytes | memoryview:
    """Canonical bytes of one column (see :func:`digest_frame`)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biufcmM":
        return memoryview(np.ascontiguousarray(values.to_numpy())).cast("B")
    if pd.api.types.is_object_dtype(values.dtype):
        items = values.tolist()
        if items and all(isinstance(v, (list, tuple, np.ndarray)) for v in items):
            try:
                block = np.asarray(items, dtype=np.float64)
            except (TypeError, ValueError):  # ragged or not numbers: text form below
                block = None
            if block is not None and block.ndim == 2:
                return f"seq{block.shape}".encode() + block.tobytes()
        if all(isinstance(v, str) for v in items):  # ids: hashed as they are, no factorising of unique values
            return pd.util.hash_array(values.to_numpy(dtype=object), categorize=False).tobytes()
        return pd.util.hash_array(values.astype(str).to_numpy(dtype=object), categorize=False).tobytes()
    return pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes()


def digest_mapping(data: Any, name: str, source: str | None = None) -> InputDigest:
    """Digest of JSON-able data in canonical form (sorted keys)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return InputDigest(name=name, sha256=digest_bytes(text.encode()), source=source)
