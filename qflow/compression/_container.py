"""The ``.qfz`` container: magic, version, a checksummed JSON header, checksummed binary blocks.

Layout of version 4, written (all integers little endian)::

    offset 0   4 bytes   magic  b"QFZ\\x89"
           4   u16       format version (4)
           6   u64       header length H, bytes (as stored)
          14   32 bytes  sha256 of the H stored header bytes
          46   ...       blocks, back to back, at the offsets the header lists (from offset 46)
    end - H    H bytes   header: compact UTF-8 JSON, zstd-compressed

The header comes last so a checkpoint is written as it is encoded, one block
after another, without holding the container in memory; the prefix is
rewritten once the header is known. Version 3 (still read) is the same
with a sha256 of each block instead of its CRC-32. Versions 1 and 2 (still
read) put the header right after the prefix, blocks after it: version 1 with
a plain JSON header, version 2 with a zstd-compressed one; their tensor
records decode as before.

Block checksums are zlib's CRC-32 of the stored bytes (about 4 GB/s a core,
where sha256 runs at 1.7): they catch corruption and a changed block. Against
someone who rewrites a file on purpose no checksum stored in the file helps
(its header can be rewritten to match, sha256 or not); the plan records the
sha256 of the whole container and of each tensor's original bytes for that.

The header holds ``tensors`` (per tensor: name, dtype, shape, scheme, scales,
zero points, retained-index info, the sha256 of the original bytes, and the
names of its blocks), ``blocks`` (per block: name, offset, stored length,
codec, length after unpacking, CRC-32 of the stored bytes), ``steps`` and,
for checkpoints read from files, ``layout`` (the files, their safetensors
headers and the sharded index). Reading checks the magic, the version, the
header checksum, every block's bounds, and every size the header declares
(a block's unpacked length, a tensor's shape) against the header's own
totals and :mod:`qflow.core.limits` before anything is allocated; block
checksums are checked on opening (``verify=True``) or as each block is read.
A truncated, forged or tampered file is refused with an
:class:`~qflow.core.errors.InputError` naming the block or tensor.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import mmap
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from qflow.compression._dtypes import dtype_info
from qflow.compression._lossless import Packed, PlaneReader, unpack
from qflow.core.errors import InputError
from qflow.core.limits import check_limit

__all__ = ["FORMAT", "MAGIC", "READABLE_VERSIONS", "VERSION", "Block", "Container", "ContainerWriter",
           "read_container", "tensor_nbytes", "write_container"]

MAGIC = b"QFZ\x89"
#: Version written: 4 = blocks first, zstd-compressed JSON header last, CRC-32 block checksums.
VERSION = 4
#: Versions read: 1 = plain JSON header first, 2 = zstd header first, 3 = zstd header last (sha256 block
#: checksums), 4 = as 3 with CRC-32 block checksums.
READABLE_VERSIONS = (1, 2, 3, 4)
#: zstd level of the header (level 19 saves ~1 % more of a few-KB header but costs ~2 ms, as much as a small
#: checkpoint's whole compress).
HEADER_LEVEL = 9
#: Largest decompressed header accepted, bytes (a forged header cannot make the reader allocate more).
MAX_HEADER_BYTES = 256 << 20
FORMAT = "qflow.qfz"
CODECS = ("raw", "zstd")
#: A non-lossless tensor's block may unpack to at most this many bytes per value, plus :data:`BLOCK_SLACK`
#: (codes are at most 2 bytes a value, scales two float64 per channel, the mask 1 bit a value).
BYTES_PER_VALUE = 16
BLOCK_SLACK = 1 << 20
_PREFIX = struct.Struct("<4sHQ32s")


@dataclass(frozen=True)
class Block:
    """One named binary block to write."""

    name: str
    packed: Packed


class ContainerWriter:
    """Write a version-4 container to ``sink`` block by block; :meth:`finish` adds the header.

    ``sink`` must be seekable (a file or ``io.BytesIO``): the prefix is
    rewritten at the end with the header's length and checksum.
    """

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._base = sink.tell()
        self._table: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self._offset = 0
        sink.write(b"\0" * _PREFIX.size)

    def add(self, block: Block) -> None:
        """Append one block (names must be unique)."""
        if block.name in self._names:
            raise ValueError(f"ContainerWriter: block name {block.name!r} used twice")
        self._names.add(block.name)
        payload = block.packed.payload
        self._table.append({"name": block.name, "offset": self._offset, "length": len(payload),
                            "codec": block.packed.codec, "raw_length": block.packed.raw_length,
                            "level": block.packed.level,
                            "crc32": zlib.crc32(payload) if block.packed.crc32 is None else block.packed.crc32})
        self._sink.write(payload)
        self._offset += len(payload)

    def finish(self, header: dict[str, Any]) -> int:
        """Write ``header`` (the block table is added here) and the prefix; returns the container's bytes."""
        text = json.dumps({"format": FORMAT, "version": VERSION, **header, "blocks": self._table},
                          separators=(",", ":"), allow_nan=False).encode()
        text = zstandard.ZstdCompressor(level=HEADER_LEVEL).compress(text)
        self._sink.write(text)
        end = self._sink.tell()
        self._sink.seek(self._base)
        self._sink.write(_PREFIX.pack(MAGIC, VERSION, len(text), hashlib.sha256(text).digest()))
        self._sink.seek(end)
        return end - self._base


def write_container(header: dict[str, Any], blocks: Sequence[Block]) -> bytes:
    """Serialise ``header`` (without ``blocks``; the block table is added here) and ``blocks`` to bytes."""
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer)
    for block in blocks:
        writer.add(block)
    writer.finish(header)
    return buffer.getvalue()


def tensor_nbytes(record: dict[str, Any]) -> int:
    """Bytes of the tensor a header record describes (its shape times its dtype's width)."""
    return math.prod(record["shape"]) * dtype_info(record["dtype"]).numpy.itemsize


class Container:
    """A verified container: the header and lazily unpacked (and, unless verified on opening, checked) blocks."""

    def __init__(self, header: dict[str, Any], data: memoryview, start: int, source: str, verified: bool,
                 mapped: mmap.mmap | None = None) -> None:
        self.header = header
        self.source = source
        self._data = data
        self._mapped = mapped
        self._start = start
        self._verified = verified
        self._blocks = {b["name"]: b for b in header["blocks"]}

    @property
    def stored_bytes(self) -> int:
        return len(self._data)

    def _payload(self, name: str, check: bool = True) -> tuple[dict[str, Any], int, memoryview]:
        """Block ``name``'s table entry, offset and stored bytes, checksum checked (unless verified on opening,
        or ``check`` is False: the caller checks it) and a zstd frame's declared size checked against the header."""
        entry = self._blocks.get(name)
        if entry is None:
            raise InputError(self.source, f"block '{name}'", "missing block", "a block the header lists")
        lo = self._start + entry["offset"]
        payload = self._data[lo: lo + entry["length"]]
        if check and not self._verified:
            _check_digest(self.source, entry, payload)
        if entry["codec"] == "zstd":
            declared = zstandard.frame_content_size(payload) if len(payload) >= 4 else -1
            # zstandard ignores max_output_size when the frame declares its size: check it first
            if declared > entry["raw_length"]:
                raise _fail(self.source, name, "frame declares more than the header", f"{entry['raw_length']} bytes",
                            f"{declared} bytes")
        return entry, lo, payload

    def block(self, name: str) -> bytes:
        """The unpacked bytes of block ``name``; its declared sizes were checked on opening."""
        entry, lo, payload = self._payload(name)
        try:
            data = unpack(entry["codec"], payload, entry["raw_length"])
        except zstandard.ZstdError as exc:  # corrupt frame despite a matching checksum (forged header)
            raise _fail(self.source, name, "cannot be unpacked", f"a valid {entry['codec']} block", str(exc)) from None
        if len(data) != entry["raw_length"]:
            raise _fail(self.source, name, "wrong unpacked length", str(entry["raw_length"]), len(data))
        self._release(lo, entry["length"])
        return data

    def reader(self, name: str, buffer_bytes: int, slot: int = 0) -> PlaneReader:
        """Block ``name`` unpacked a step of up to ``buffer_bytes`` at a time (checked as :meth:`block` is) into
        this thread's step buffer ``slot``; a damaged frame is an :class:`InputError` naming the block."""
        entry, lo, payload = self._payload(name, check=False)

        def fail(problem: str, detail: str) -> InputError:
            if not self._verified:  # a damaged block is reported as such, as when it is checked up front
                _check_digest(self.source, entry, payload)
            return _fail(self.source, name, problem, f"a valid {entry['codec']} block of {entry['raw_length']} bytes",
                         detail)

        def release(start: int, end: int) -> None:
            self._release(lo + start, end - start)

        if not self._verified:
            if not len(payload):
                _check_digest(self.source, entry, payload)
            else:
                release = _CheckedRelease(self.source, entry, payload, release)
        return PlaneReader(entry["codec"], payload, entry["raw_length"], buffer_bytes, fail, release, slot)

    def _release(self, offset: int, length: int) -> None:
        """Drop a memory-mapped file's pages once read (they would otherwise stay resident for the whole run; a
        page read again is read from the file again)."""
        if self._mapped is None or length < mmap.PAGESIZE or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (offset + length) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            self._mapped.madvise(mmap.MADV_DONTNEED, start, end - start)


class _CheckedRelease:
    """A block's checksum computed over its stored bytes as a :class:`PlaneReader` consumes them, front to back,
    before each range is released: every page is read once and dropped, instead of the whole block being read
    (and made resident) up front. Compared once the last byte is consumed, i.e. by the reader's ``close`` at
    the latest: a damaged block fails before its tensor is returned or its restore completes."""

    def __init__(self, source: str, entry: dict[str, Any], payload: memoryview,
                 release: Callable[[int, int], None]) -> None:
        self._source, self._entry, self._payload, self._release = source, entry, payload, release
        self._crc = 0
        self._sha = None if "crc32" in entry else hashlib.sha256()

    def __call__(self, start: int, end: int) -> None:
        piece = self._payload[start:end]
        if self._sha is None:
            self._crc = zlib.crc32(piece, self._crc)
        else:
            self._sha.update(piece)
        self._release(start, end)
        if end == len(self._payload):
            self._compare()

    def _compare(self) -> None:
        entry = self._entry
        if self._sha is None and self._crc != entry["crc32"]:
            raise _fail(self._source, entry["name"], "checksum mismatch (tampered or corrupted)",
                        f"crc32 {entry['crc32']:08x}", f"{self._crc:08x}")
        if self._sha is not None and self._sha.hexdigest() != entry["sha256"]:
            raise _fail(self._source, entry["name"], "checksum mismatch (tampered or corrupted)",
                        f"sha256 {entry['sha256'][:16]}", self._sha.hexdigest()[:16])


def _fail(source: str, block: str, problem: str, expected: str | None = None, received: object = None) -> InputError:
    return InputError(source, f"block '{block}'", problem, expected, received)


def _check_digest(source: str, entry: dict[str, Any], payload: memoryview) -> None:
    """The block's CRC-32 (version 4) or sha256 (versions 1-3) against the stored bytes."""
    if "crc32" in entry:
        crc = zlib.crc32(payload)
        if crc != entry["crc32"]:
            raise _fail(source, entry["name"], "checksum mismatch (tampered or corrupted)", f"crc32 {entry['crc32']:08x}",
                        f"{crc:08x}")
        return
    digest = hashlib.sha256(payload).hexdigest()
    if digest != entry["sha256"]:
        raise _fail(source, entry["name"], "checksum mismatch (tampered or corrupted)",
                    f"sha256 {entry['sha256'][:16]}", digest[:16])


def _header_text(view: memoryview, source: str) -> tuple[int, bytes, int, int]:
    """(version, stored header bytes, start of the blocks, end of the blocks) after the prefix checks."""
    if len(view) < _PREFIX.size:
        if bytes(view[:4]) != MAGIC[: len(view[:4])]:
            raise _fail(source, "prefix", "not a .qfz container", "magic bytes QFZ\\x89", bytes(view[:4]))
        raise _fail(source, "prefix", "truncated", f"at least {_PREFIX.size} bytes", f"{len(view)} bytes")
    magic, version, header_len, header_sha = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise _fail(source, "prefix", "not a .qfz container", "magic bytes QFZ\\x89", magic)
    if version not in READABLE_VERSIONS:
        raise _fail(source, "prefix", "unsupported container version", " or ".join(map(str, READABLE_VERSIONS)),
                    version)
    if _PREFIX.size + header_len > len(view):
        raise _fail(source, "header", "truncated", f"{header_len} header bytes", f"{len(view) - _PREFIX.size} bytes")
    if version >= 3:
        lo, start, end = len(view) - header_len, _PREFIX.size, len(view) - header_len
    else:
        lo, start, end = _PREFIX.size, _PREFIX.size + header_len, len(view)
    text = bytes(view[lo: lo + header_len])
    if hashlib.sha256(text).digest() != header_sha:
        raise _fail(source, "header", "checksum mismatch (tampered or corrupted)", f"sha256 {header_sha.hex()[:16]}",
                    hashlib.sha256(text).hexdigest()[:16])
    return version, text, start, end


def _parse_header(version: int, text: bytes, source: str) -> dict[str, Any]:
    if version >= 2:
        try:
            size = zstandard.frame_content_size(text)
            if size > MAX_HEADER_BYTES or size < 0:
                raise zstandard.ZstdError(f"header of {size} bytes declared, 0..{MAX_HEADER_BYTES} accepted")
            text = zstandard.ZstdDecompressor().decompress(text, max_output_size=MAX_HEADER_BYTES)
        except zstandard.ZstdError as exc:
            raise _fail(source, "header", "cannot be unpacked", "a zstd-compressed JSON header", str(exc)) from None
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise _fail(source, "header", "invalid JSON", "a JSON header", str(exc)) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("blocks"), list):
        raise _fail(source, "header", "not a qflow.qfz header", "format qflow.qfz with a block table")
    return header


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_blocks(header: dict[str, Any], source: str, start: int, end: int) -> None:
    """Every block entry well formed, inside the file, and declaring an unpacked size under the limit."""
    position = start
    for entry in header["blocks"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise _fail(source, "header", "malformed block entry", "name, offset, length, codec, raw_length, crc32",
                        str(entry)[:80])
        checksum = (_is_count(entry.get("crc32")) and entry["crc32"] < 2**32) if "crc32" in entry \
            else isinstance(entry.get("sha256"), str)
        if not all(_is_count(entry.get(k)) for k in ("offset", "length", "raw_length")) \
                or entry.get("codec") not in CODECS or not checksum:
            raise _fail(source, name, "malformed block entry",
                        "non-negative integer offset, length, raw_length; codec raw or zstd; crc32 or sha256",
                        str(entry)[:120])
        lo, hi = start + entry["offset"], start + entry["offset"] + entry["length"]
        if hi > end:
            raise _fail(source, name, "truncated", f"bytes {lo}..{hi} of the file", f"blocks ending at {end}")
        if lo != position:
            raise _fail(source, name, "blocks out of order or overlapping", f"offset {position - start}",
                        entry["offset"])
        position = hi
        if entry["codec"] == "raw" and entry["raw_length"] != entry["length"]:
            raise _fail(source, name, "raw block with a different unpacked length", str(entry["length"]),
                        entry["raw_length"])
        check_limit(entry["raw_length"], "decoded_bytes", source, f"block '{name}'")
    if position != end:
        raise _fail(source, "trailer", "unexpected trailing bytes", f"{position} bytes of blocks", f"{end} bytes")


def _record_blocks(record: dict[str, Any]) -> Any:
    """The block names of a tensor record (lossless records list theirs under ``lossless``)."""
    if record.get("scheme") == "lossless" and isinstance(record.get("lossless"), dict):
        return record["lossless"].get("blocks")
    return record.get("blocks")


def _check_quant_counts(record: dict[str, Any], source: str, field: str) -> None:
    """A ``quant`` record's channel and code counts within its shape (they size arrays on decoding)."""
    quant = record.get("quant")
    if record.get("scheme") != "quant":
        return
    values = math.prod(record["shape"])
    counts = quant.get("counts") if isinstance(quant, dict) else None
    channels = quant.get("channels") if isinstance(quant, dict) else None
    if not _is_count(channels) or channels > max(values, 1) or not isinstance(counts, dict) \
            or not all(_is_count(c) and c <= values for c in counts.values()) \
            or quant.get("bits") not in (4, 8) or quant.get("hi_bits") not in (8, 16):
        raise InputError(source, field, "malformed quant record",
                         f"bits 4 or 8, at most {values} channels and codes", str(quant)[:120])


def _check_tensors(header: dict[str, Any], source: str) -> None:
    """Every tensor record's dtype known, shape under the limit, and its blocks' unpacked sizes consistent with it."""
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        raise _fail(source, "header", "no tensor list", "a list of tensor records")
    blocks = {b["name"]: b for b in header["blocks"]}
    for record in tensors:
        name = record.get("name") if isinstance(record, dict) else None
        field = f"tensor '{name}'"
        if not isinstance(name, str) or not isinstance(record.get("shape"), list) \
                or not all(_is_count(n) for n in record["shape"]) or not isinstance(_record_blocks(record), list):
            raise InputError(source, field, "malformed tensor record", "name, dtype, shape (integers >= 0), blocks",
                             str(record)[:120])
        if dtype_info(str(record.get("dtype"))) is None:
            raise InputError(source, field, "unknown dtype", "a dtype qflow writes", record.get("dtype"))
        nbytes = tensor_nbytes(record)
        check_limit(nbytes, "decoded_bytes", source, f"{field} shape {record['shape']}")
        _check_quant_counts(record, source, field)
        names = _record_blocks(record)
        missing = [b for b in names if b not in blocks]
        if missing:
            raise InputError(source, f"block '{missing[0]}'", "missing block", f"a block the header lists ({field})")
        declared = sum(blocks[b]["raw_length"] for b in names)
        lossless = record.get("scheme") == "lossless"
        bound = nbytes if lossless else BYTES_PER_VALUE * math.prod(record["shape"]) + BLOCK_SLACK * len(names)
        if (lossless and declared != nbytes) or declared > bound:
            raise InputError(source, field, "blocks declare a size the shape does not hold",
                             f"{'exactly' if lossless else 'at most'} {bound} bytes for shape {record['shape']} "
                             f"{record['dtype']}", f"{declared} bytes")


def read_container(data: bytes | memoryview, source: str = "container.qfz", verify: bool = True) -> Container:
    """Open and check a container (``data`` may be a memory map).

    ``verify=False`` defers each block's checksum to its first read (the
    streaming decompressor reads each block once, in parallel).

    Raises
    ------
    InputError
        Not a container, unknown version, truncated, a checksum that does not
        match, a malformed header, or a declared size over a limit or
        inconsistent with the header's shapes; the field names the block
        (``block 'fc1.weight/codes'``, ``block 'header'``) or the tensor.
    """
    view = memoryview(data).cast("B") if memoryview(data).format != "B" else memoryview(data)
    version, text, start, end = _header_text(view, source)
    header = _parse_header(version, text, source)
    _check_blocks(header, source, start, end)
    _check_tensors(header, source)
    if verify:
        for entry in header["blocks"]:
            lo = start + entry["offset"]
            _check_digest(source, entry, view[lo: lo + entry["length"]])
    return Container(header, view, start, source, verify, data if isinstance(data, mmap.mmap) else None)
