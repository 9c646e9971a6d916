"""The ``.qfz`` container: magic, version, a checksummed JSON header, checksummed binary blocks.

Layout (all integers little endian)::

    offset 0   4 bytes   magic  b"QFZ\\x89"
           4   u16       format version (2; version 1 files are still read)
           6   u64       header length H, bytes (as stored)
          14   32 bytes  sha256 of the H stored header bytes
          46   H bytes   header: compact UTF-8 JSON, zstd-compressed (version 2) or plain (version 1)
      46 + H   ...       blocks, back to back, at the offsets the header lists

Version 2 differs from version 1 in the zstd-compressed header (on a small
checkpoint the JSON -- sha256 digests, scales, the config -- was a tenth of
the file; zstd shrinks it about 3x) and in what tensor records may hold
(``granularity``; float16 scale blocks marked by ``scale_dtype`` and
``scale_exponents``); version 1 records lack both and decode as before.

The header holds ``tensors`` (per tensor: name, dtype, shape, scheme, scales,
zero points, retained-index info, the sha256 of the original bytes, and the
names of its blocks), ``blocks`` (per block: name, offset from the end of the
header, stored length, codec, length after unpacking, sha256 of the stored
bytes) and ``steps`` (what the compressor did, in order). Reading checks the
magic, the version, the header checksum and then every block's bounds and
checksum before anything is decoded, so a truncated or tampered file is
refused with an :class:`~qflow.core.errors.InputError` naming the block.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from qflow.compression._lossless import Packed, unpack
from qflow.core.errors import InputError

__all__ = ["FORMAT", "MAGIC", "READABLE_VERSIONS", "VERSION", "Block", "Container", "read_container",
           "write_container"]

MAGIC = b"QFZ\x89"
#: Version written: 2 = zstd-compressed JSON header.
VERSION = 2
#: Versions read: 1 = plain JSON header (same layout otherwise).
READABLE_VERSIONS = (1, 2)
#: zstd level of the header (level 19 saves ~1 % more of a few-KB header but costs ~2 ms, as much as a small
#: checkpoint's whole compress).
HEADER_LEVEL = 9
#: Largest decompressed header accepted, bytes (a forged header cannot make the reader allocate more).
MAX_HEADER_BYTES = 256 << 20
FORMAT = "qflow.qfz"
_PREFIX = struct.Struct("<4sHQ32s")


@dataclass(frozen=True)
class Block:
    """One named binary block to write."""

    name: str
    packed: Packed


def write_container(header: dict[str, Any], blocks: Sequence[Block]) -> bytes:
    """Serialise ``header`` (without ``blocks``; the block table is added here) and ``blocks``."""
    table, offset = [], 0
    for block in blocks:
        payload = block.packed.payload
        table.append({"name": block.name, "offset": offset, "length": len(payload), "codec": block.packed.codec,
                      "raw_length": block.packed.raw_length, "level": block.packed.level,
                      "sha256": hashlib.sha256(payload).hexdigest()})
        offset += len(payload)
    names = [b["name"] for b in table]
    if len(set(names)) != len(names):
        raise ValueError("write_container: block names must be unique")
    text = json.dumps({"format": FORMAT, "version": VERSION, **header, "blocks": table},
                      separators=(",", ":"), allow_nan=False).encode()
    text = zstandard.ZstdCompressor(level=HEADER_LEVEL).compress(text)
    prefix = _PREFIX.pack(MAGIC, VERSION, len(text), hashlib.sha256(text).digest())
    return b"".join([prefix, text, *(block.packed.payload for block in blocks)])


class Container:
    """A verified container: the header and lazily unpacked blocks."""

    def __init__(self, header: dict[str, Any], data: memoryview, start: int, source: str) -> None:
        self.header = header
        self.source = source
        self._data = data
        self._start = start
        self._blocks = {b["name"]: b for b in header["blocks"]}

    @property
    def stored_bytes(self) -> int:
        return len(self._data)

    def block(self, name: str) -> bytes:
        """The unpacked bytes of block ``name`` (checksums were checked on opening)."""
        entry = self._blocks.get(name)
        if entry is None:
            raise InputError(self.source, f"block '{name}'", "missing block", "a block the header lists")
        lo = self._start + entry["offset"]
        payload = bytes(self._data[lo: lo + entry["length"]])
        try:
            data = unpack(entry["codec"], payload, entry["raw_length"])
        except Exception as exc:  # zstd errors: corrupt frame despite a matching checksum (forged header)
            raise InputError(self.source, f"block '{name}'", "cannot be unpacked", f"a valid {entry['codec']} block",
                             str(exc)) from None
        if len(data) != entry["raw_length"]:
            raise InputError(self.source, f"block '{name}'", "wrong unpacked length", str(entry["raw_length"]), len(data))
        return data


def _fail(source: str, block: str, problem: str, expected: str | None = None, received: object = None) -> InputError:
    return InputError(source, f"block '{block}'", problem, expected, received)


def read_container(data: bytes | memoryview, source: str = "container.qfz") -> Container:
    """Open and verify a container.

    Raises
    ------
    InputError
        Not a container, unknown version, truncated, or a checksum that does
        not match; the field names the block (``block 'fc1.weight/codes'``,
        ``block 'header'``).
    """
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        if bytes(view[:4]) != MAGIC[: len(view[:4])]:
            raise _fail(source, "prefix", "not a .qfz container", "magic bytes QFZ\\x89", bytes(view[:4]))
        raise _fail(source, "prefix", "truncated", f"at least {_PREFIX.size} bytes", f"{len(view)} bytes")
    magic, version, header_len, header_sha = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise _fail(source, "prefix", "not a .qfz container", "magic bytes QFZ\\x89", magic)
    if version not in READABLE_VERSIONS:
        raise _fail(source, "prefix", "unsupported container version",
                    " or ".join(map(str, READABLE_VERSIONS)), version)
    start = _PREFIX.size + header_len
    if start > len(view):
        raise _fail(source, "header", "truncated", f"{header_len} header bytes", f"{len(view) - _PREFIX.size} bytes")
    text = bytes(view[_PREFIX.size: start])
    if hashlib.sha256(text).digest() != header_sha:
        raise _fail(source, "header", "checksum mismatch (tampered or corrupted)", f"sha256 {header_sha.hex()[:16]}",
                    hashlib.sha256(text).hexdigest()[:16])
    if version >= 2:
        try:
            size = zstandard.frame_content_size(text)
            if size > MAX_HEADER_BYTES:
                raise zstandard.ZstdError(f"header of {size} bytes declared, at most {MAX_HEADER_BYTES} accepted")
            text = zstandard.ZstdDecompressor().decompress(text, max_output_size=MAX_HEADER_BYTES)
        except zstandard.ZstdError as exc:
            raise _fail(source, "header", "cannot be unpacked", "a zstd-compressed JSON header", str(exc)) from None
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise _fail(source, "header", "invalid JSON", "a JSON header", str(exc)) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("blocks"), list):
        raise _fail(source, "header", "not a qflow.qfz header", "format qflow.qfz with a block table")
    for entry in header["blocks"]:
        lo = start + int(entry["offset"])
        hi = lo + int(entry["length"])
        if hi > len(view):
            raise _fail(source, entry["name"], "truncated", f"bytes {lo}..{hi} of the file", f"a file of {len(view)} bytes")
        digest = hashlib.sha256(view[lo:hi]).hexdigest()
        if digest != entry["sha256"]:
            raise _fail(source, entry["name"], "checksum mismatch (tampered or corrupted)",
                        f"sha256 {entry['sha256'][:16]}", digest[:16])
    end = start + sum(int(b["length"]) for b in header["blocks"])
    if end != len(view):
        raise _fail(source, "trailer", "unexpected trailing bytes", f"{end} bytes in all", f"{len(view)} bytes")
    return Container(header, view, start, source)
