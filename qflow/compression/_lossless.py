"""Lossless packing: byte planes and zstd; for floats, the exponent split from sign and mantissa.

Float weights barely compress as they are: the exponent carries about 2.6
bits of information in its 8 (bf16/fp32), but it straddles two bytes, next
to near-random mantissa bits. :func:`float_planes` rotates each value's bits
left by one (the sign moves to the lowest bit, as ZipNN does), so the top
byte holds the exponent alone (bf16, fp32; the top 8 exponent bits of
fp64; exponent and top mantissa bits of fp16), then splits byte planes. The
exponent plane is entropy-coded by zstd with parameters that make it almost
pure Huffman (:data:`ENTROPY_PARAMS`: long minimum match, fast strategy),
close to the plane's entropy and faster than zstd's default levels; the
mantissa planes are compressed where a sample says zstd shrinks them, else
stored as they are. Each plane is its own block, so each gets its own
decision and checksum. The decoder is plain zstd, so no new codec is needed.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

__all__ = ["CHUNK_BYTES", "ENTROPY_PARAMS", "TRIAL_LEVELS", "Packed", "PlaneReader", "ValueReader", "choose_level",
           "float_plane_packs", "float_plane_packs_from", "float_planes", "join_float_chunks", "join_float_planes",
           "join_planes", "pack", "pack_entropy", "pack_plane", "packed", "split_planes", "step_buffer", "unpack",
           "unsigned_dtype"]

#: zstd levels tried on a sample; the highest one that still pays is used.
TRIAL_LEVELS = (1, 3, 9)
#: Sample size of the level trial, bytes.
TRIAL_BYTES = 1 << 20
#: A higher level must shrink the sample by at least this much more to be chosen.
LEVEL_GAIN = 0.01
#: Output at or above this share of the input is "incompressible": stored as is.
INCOMPRESSIBLE = 0.98
#: zstd parameters for an exponent plane: matches of 7+ bytes only, looked up in a 64-entry table (matches are
#: rare in exponents), so the plane is coded almost entirely by zstd's literal Huffman coder. Measured on
#: all-MiniLM-L6-v2's weights in bf16: 2.65 bits per exponent (its entropy: 2.66) at ~740 MB/s of exponents
#: per core, where level 1 gives 2.91 bits at ~330 MB/s and level 3 3.29 bits.
ENTROPY_PARAMS = zstandard.ZstdCompressionParameters(window_log=17, min_match=7, strategy=zstandard.STRATEGY_FAST,
                                                     hash_log=6, chain_log=6, search_log=1)
#: Sample of a mantissa plane zstd is tried on before the whole plane is compressed, bytes.
PLANE_TRIAL_BYTES = 256 << 10
#: Bytes of a float plane's first step tried first: at or above :data:`CLEARLY_INCOMPRESSIBLE` of its size the
#: plane is stored as is at once; below it the whole first step decides (fp32's low mantissa planes shrink
#: by only 2-4 %, too little for a small sample to tell).
QUICK_TRIAL_BYTES = 64 << 10
CLEARLY_INCOMPRESSIBLE = 0.995


@dataclass(frozen=True)
class Packed:
    """One packed block: its codec (``zstd`` or ``raw``), payload, the length before packing, the zstd level,
    and the payload's CRC-32 (computed by the worker that packed it, so the writer need not)."""

    codec: str
    payload: bytes | memoryview
    raw_length: int
    level: int | None
    crc32: int | None = None


def packed(codec: str, payload: bytes | memoryview, raw_length: int, level: int | None) -> Packed:
    """A :class:`Packed` with its payload's CRC-32 (zlib's, about 4 GB/s a core)."""
    return Packed(codec, payload, raw_length, level, zlib.crc32(payload))


def _sample(data: bytes | memoryview) -> bytes:
    view = memoryview(data)
    if len(view) <= TRIAL_BYTES:
        return bytes(view)
    step = len(view) // 4  # four pieces across the input, not just its start
    piece = TRIAL_BYTES // 4
    return b"".join(bytes(view[i * step: i * step + piece]) for i in range(4))


def choose_level(data: bytes | memoryview) -> tuple[int, dict[int, float]]:
    """The zstd level for ``data``, from compressing a <= 1 MiB sample at :data:`TRIAL_LEVELS`.

    Returns the level and the sample's compressed/raw ratio at each level tried.
    A level is taken only when it shrinks the sample by :data:`LEVEL_GAIN` more
    than the level below it.
    """
    sample = _sample(data)
    if not sample:
        return TRIAL_LEVELS[0], {}
    ratios = {lv: len(zstandard.ZstdCompressor(level=lv).compress(sample)) / len(sample) for lv in TRIAL_LEVELS}
    best = TRIAL_LEVELS[0]
    for lv in TRIAL_LEVELS[1:]:
        if ratios[lv] < ratios[best] - LEVEL_GAIN:
            best = lv
    return best, ratios


def pack(data: bytes | memoryview, level: int | None = None) -> Packed:
    """zstd-compress ``data`` (level by :func:`choose_level` when not given); stored raw when it would not shrink."""
    raw_length = len(memoryview(data))
    if raw_length == 0:
        return Packed("raw", b"", 0, None)
    if level is None:
        level, ratios = choose_level(data)
        if ratios and ratios[level] >= INCOMPRESSIBLE:
            return packed("raw", _read_only(data), raw_length, None)
    # no zstd worker threads: tensors are compressed in parallel by the caller's own threads
    payload = zstandard.ZstdCompressor(level=level).compress(data)
    if len(payload) >= INCOMPRESSIBLE * raw_length:
        return packed("raw", _read_only(data), raw_length, None)
    return packed("zstd", payload, raw_length, level)


def pack_entropy(data: bytes | memoryview) -> Packed:
    """zstd with :data:`ENTROPY_PARAMS` (an exponent plane, fp8 bytes); stored raw when it would not shrink."""
    raw_length = len(memoryview(data))
    if raw_length == 0:
        return Packed("raw", b"", 0, None)
    payload = zstandard.ZstdCompressor(compression_params=ENTROPY_PARAMS).compress(data)
    if len(payload) >= INCOMPRESSIBLE * raw_length:
        return packed("raw", _read_only(data), raw_length, None)
    return packed("zstd", payload, raw_length, 1)


def pack_plane(data: bytes | memoryview) -> Packed:
    """A mantissa plane: entropy-coded like the exponent where a :data:`PLANE_TRIAL_BYTES` sample shrinks, else raw.

    Mantissa planes are near random; what they give (the top mantissa bits
    are not uniform) is the literal coder's, so the same fast parameters
    apply, and the sample keeps the cost of finding out small.
    """
    view = memoryview(data)
    if len(view) == 0:
        return Packed("raw", b"", 0, None)
    sample = bytes(view[: PLANE_TRIAL_BYTES])
    compressor = zstandard.ZstdCompressor(compression_params=ENTROPY_PARAMS)
    if len(compressor.compress(sample)) >= INCOMPRESSIBLE * len(sample):
        return packed("raw", view.toreadonly(), len(view), None)  # the plane's own buffer: no copy
    return pack_entropy(view)


def _read_only(data: bytes | memoryview | np.ndarray) -> bytes | memoryview:
    """``data`` itself as a read-only buffer (a raw block keeps its source's memory instead of a copy)."""
    return data if isinstance(data, bytes) else memoryview(data).cast("B").toreadonly()


def unpack(codec: str, payload: bytes | memoryview, raw_length: int) -> bytes:
    """Inverse of :func:`pack` (and of :func:`float_plane_packs`, whose zstd blocks are several frames)."""
    if codec == "raw":
        return bytes(payload)
    data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_length)
    if len(data) < raw_length and zstandard.frame_content_size(payload) == len(data):  # more frames follow
        reader = PlaneReader(codec, payload, raw_length, raw_length, lambda problem, detail: zstandard.ZstdError(
            f"{problem}: {detail}"))
        data = reader.read(raw_length).tobytes()
        reader.close()
    return data


def split_planes(x: np.ndarray) -> list[bytes]:
    """Byte planes of ``x`` (little endian): plane ``i`` holds byte ``i`` of every element, in element order."""
    flat = np.ascontiguousarray(x).ravel()
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    width = flat.dtype.itemsize
    if width == 1:
        return [flat.view(np.uint8).tobytes()]
    planes = flat.view(np.uint8).reshape(-1, width).T.copy()  # one transposed copy: much faster than per column
    return [plane.tobytes() for plane in planes]


def join_planes(planes: list[bytes], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`split_planes`."""
    dt = np.dtype(dtype).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    if dt.itemsize == 1:
        return np.frombuffer(planes[0], dtype=dt, count=count).reshape(shape).copy()
    stacked = np.empty((count, dt.itemsize), dtype=np.uint8)
    for i, plane in enumerate(planes):
        stacked[:, i] = np.frombuffer(plane, dtype=np.uint8, count=count)
    return stacked.view(dt).reshape(shape).astype(np.dtype(dtype).newbyteorder("="), copy=False)


def unsigned_dtype(itemsize: int) -> type:
    """The unsigned integer type of ``itemsize`` bytes."""
    return {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]


#: Bytes of values rotated and split (or joined) per step: the temporaries stay this small, and a step's
#: uint16/uint32 arrays stay cache-friendly (measured: ~5 GB/s a core for a bf16 split at 2 MB, ~3.5 at 8 MB).
CHUNK_BYTES = 2 << 20


_SCRATCH = threading.local()


def step_buffer(slot: str, count: int, dtype: type) -> np.ndarray:
    """``count`` values of this thread's reusable buffer ``slot`` (grown to at least :data:`CHUNK_BYTES`).

    Step buffers are kept per thread instead of allocated per tensor: the
    pipeline hands freed memory back to the OS after each tensor, and fresh
    pages cost a fault each on first touch (measured: a third of the encode
    time on all-MiniLM-L6-v2's bf16 tensors). A thread encodes or decodes one
    tensor at a time, so a slot is never used twice at once.
    """
    pool = _SCRATCH.__dict__.setdefault("buffers", {})
    nbytes = count * np.dtype(dtype).itemsize
    buffer = pool.get(slot)
    if buffer is None or buffer.size < nbytes:
        buffer = pool[slot] = np.empty(max(nbytes, CHUNK_BYTES), np.uint8)
    return buffer[:nbytes].view(dtype)


def _coder(slot: str) -> zstandard.ZstdCompressor | zstandard.ZstdDecompressor:
    """This thread's zstd compressor (``slot`` ``"compress"``, :data:`ENTROPY_PARAMS`) or the decompressor of
    reader slot ``slot``, kept like the step buffers (a context is a few hundred KB, as much as a small tensor's
    planes; a stream reader uses its decompressor's context, so readers read together need their own)."""
    coders = _SCRATCH.__dict__.setdefault("coders", {})
    if slot not in coders:
        coders[slot] = zstandard.ZstdCompressor(compression_params=ENTROPY_PARAMS) if slot == "compress" \
            else zstandard.ZstdDecompressor()
    return coders[slot]


def _rotate_left(part: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``out[:] = part`` rotated left by one bit (the sign to the lowest bit); ``scratch`` is clobbered."""
    np.left_shift(part, 1, out=out)
    np.right_shift(part, 8 * part.dtype.itemsize - 1, out=scratch)
    return np.bitwise_or(out, scratch, out=out)


def float_planes(x: np.ndarray) -> np.ndarray:
    """Byte planes of ``x``'s bits rotated left by one, shape ``(itemsize, size)`` uint8; the last plane is the top byte.

    The rotation moves the sign to the lowest bit, so the top byte is the
    exponent's top 8 bits (all of it for bf16 and fp32). Whole planes in
    memory: for samples; :func:`float_plane_packs` streams a tensor.
    """
    width = x.dtype.itemsize
    u = np.ascontiguousarray(x).reshape(-1).view(unsigned_dtype(width))
    planes = np.empty((width, u.size), dtype=np.uint8)
    rotated = _rotate_left(u, np.empty_like(u), np.empty_like(u))
    for i in range(width):
        np.copyto(planes[i], rotated >> (8 * i) if i else rotated, casting="unsafe")  # keeps the low byte
    return planes


#: ``read(first, n)``: values ``first:first + n`` of a tensor as unsigned integers of its width (a view, or a
#: step buffer valid until the next call); reads come in order, each at most :data:`CHUNK_BYTES`.
ValueReader = Callable[[int, int], np.ndarray]


def float_plane_packs(x: np.ndarray) -> list[Packed]:
    """:func:`float_planes` of ``x`` packed plane by plane, streamed in :data:`CHUNK_BYTES` steps (see
    :func:`float_plane_packs_from`)."""
    width = x.dtype.itemsize
    u = np.ascontiguousarray(x).reshape(-1).view(unsigned_dtype(width))
    return float_plane_packs_from(lambda lo, n: u[lo: lo + n], u.size, width)


def float_plane_packs_from(read: ValueReader, count: int, width: int) -> list[Packed]:
    """The packed planes of ``count`` values of ``width`` bytes, read a step at a time by ``read``.

    Each step of a plane is entropy-coded as its own zstd frame
    (:data:`ENTROPY_PARAMS`; the frames of a plane are one block, read back
    across frames) unless the plane's first step does not shrink below
    :data:`INCOMPRESSIBLE`: then the plane is stored as is (that step's
    frame is the only trial, and no sample is compressed twice). Memory
    holds the stored planes (raw planes in their own arrays, frames as they
    are made) and a few step-sized buffers: no tensor-sized plane array, no
    copy of a plane into ``bytes``, and, with ``read`` reading a file, not
    the tensor itself.
    """
    step = max(1, CHUNK_BYTES // width)
    kind = unsigned_dtype(width)
    rotated, shifted = step_buffer("rotated", min(step, count), kind), step_buffer("shifted", min(step, count), kind)
    scratch = step_buffer("plane", min(step, count), np.uint8)
    compressor = _coder("compress")
    raw: list[np.ndarray | None] = [None] * width
    frames = [_FrameBuffer(count, step) for _ in range(width)]
    for lo in range(0, count, step):
        part = read(lo, min(step, count - lo))
        r, s = rotated[: part.size], shifted[: part.size]
        _rotate_left(part, r, s)
        for i in range(width):
            plane = np.right_shift(r, 8 * i, out=s) if i else r
            if raw[i] is not None:
                np.copyto(raw[i][lo: lo + part.size], plane, casting="unsafe")  # keeps the low byte
                continue
            np.copyto(scratch[: part.size], plane, casting="unsafe")
            frame = None if lo == 0 and _clearly_random(compressor, scratch[: part.size]) \
                else compressor.compress(scratch[: part.size])
            if frame is None or (lo == 0 and len(frame) >= INCOMPRESSIBLE * part.size):  # stored as is
                raw[i] = np.empty(count, np.uint8)
                raw[i][: part.size] = scratch[: part.size]
            else:
                frames[i].append(frame)
    return [packed("raw", memoryview(raw[i]).toreadonly(), count, None) if raw[i] is not None
            else packed("zstd", frames[i].payload(), count, 1) for i in range(width)]


def _clearly_random(compressor: zstandard.ZstdCompressor, plane: np.ndarray) -> bool:
    """Whether the first :data:`QUICK_TRIAL_BYTES` of a step of a plane stay above :data:`CLEARLY_INCOMPRESSIBLE`
    (a bf16 sign+mantissa plane does: the whole step need not be tried)."""
    if plane.size <= 2 * QUICK_TRIAL_BYTES:
        return False
    return len(compressor.compress(plane[:QUICK_TRIAL_BYTES])) >= CLEARLY_INCOMPRESSIBLE * QUICK_TRIAL_BYTES


class _FrameBuffer:
    """zstd frames appended back to back into one array sized for the worst case (pages never written are
    never resident), so a plane's frames become one payload without joining them into a second copy."""

    def __init__(self, count: int, step: int) -> None:
        frames = -(-count // step) if count else 0
        # zstd's bound: input + input/256 + a frame header and block headers, per frame
        self._data = np.empty(count + (count >> 8) + 64 * (frames + 1) + 3 * (count >> 17), np.uint8)
        self._size = 0

    def append(self, frame: bytes) -> None:
        end = self._size + len(frame)
        self._data[self._size: end] = np.frombuffer(frame, np.uint8)
        self._size = end

    def payload(self) -> memoryview:
        return memoryview(self._data[: self._size]).toreadonly()


class PlaneReader:
    """One block's unpacked bytes read front to back, ``n`` at a time, without unpacking the block whole.

    A raw block is read as views of its payload; a zstd block through a
    streaming decoder into a buffer of up to ``buffer_bytes``, so a
    reader's memory is one step whatever the block's size (this thread's
    step buffer ``slot``: readers read together take different slots). ``fail(problem,
    detail)`` makes the exception raised for a damaged block (default
    ``ValueError``); ``release(start, end)`` is told, as the block is read,
    that its stored bytes ``start:end`` will not be read again (a memory-mapped
    file's pages can then be dropped), up to the payload's end when closed.
    """

    def __init__(self, codec: str, payload: bytes | memoryview, raw_length: int, buffer_bytes: int,
                 fail: Callable[[str, str], Exception] | None = None, release: Callable[[int, int], None] | None = None,
                 slot: int = 0) -> None:
        self._fail = fail or (lambda problem, detail: ValueError(f"{problem}: {detail}"))
        self._release_to = release or (lambda start, end: None)
        self._released = 0
        self._left = raw_length
        self._offset = 0
        self._payload = np.frombuffer(payload, dtype=np.uint8)
        if codec == "raw":
            self._stream = None
            if self._payload.size != raw_length:
                raise self._fail("wrong unpacked length", f"{self._payload.size} bytes, {raw_length} declared")
        else:
            self._source = _Consumed(self._payload)
            self._stream = _coder(f"read{slot}").stream_reader(self._source, read_size=1 << 18, read_across_frames=True)
            self._buffer = step_buffer(f"read{slot}", max(1, min(buffer_bytes, raw_length)), np.uint8)

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` bytes as a uint8 array (valid until the next read)."""
        if n > self._left:
            raise self._fail("wrong unpacked length", f"{n} more bytes asked, {self._left} left")
        self._left -= n
        if self._stream is None:
            self._release(self._offset)  # the previous step's bytes: the caller is done with them
            self._offset += n
            return self._payload[self._offset - n: self._offset]
        if n > self._buffer.size:
            self._buffer = np.empty(n, np.uint8)
        chunk = self._buffer[:n]
        view, got = memoryview(chunk), 0
        try:
            while got < n:
                more = self._stream.readinto(view[got:])
                if more == 0:
                    raise self._fail("wrong unpacked length", f"the frame ends {n - got} bytes early")
                got += more
        except zstandard.ZstdError as exc:
            raise self._fail("cannot be unpacked", str(exc)) from None
        self._release(self._source.position)  # what zstd has read it holds as its own copy
        return chunk

    def _release(self, end: int) -> None:
        if end > self._released:
            self._release_to(self._released, end)
            self._released = end

    def close(self) -> None:
        """Check the block was read exactly to its end (a zstd frame holding more is refused)."""
        if self._stream is not None:
            try:
                extra = self._stream.read(1)
            except zstandard.ZstdError as exc:
                raise self._fail("cannot be unpacked", str(exc)) from None
            self._stream.close()
            if extra or self._left:
                raise self._fail("wrong unpacked length", "the frame holds more than the header declares")
        self._release(self._payload.size)


class _Consumed:
    """A payload read front to back as ``bytes`` (zstd's stream reader pulls from it), with the position reached."""

    def __init__(self, payload: np.ndarray) -> None:
        self._payload = payload
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        end = self._payload.size if size < 0 else min(self._payload.size, self.position + size)
        data = self._payload[self.position: end].tobytes()
        self.position = end
        return data


def join_float_chunks(readers: Sequence[PlaneReader], dtype: np.dtype, count: int, out: np.ndarray | None = None
                      ) -> Iterator[tuple[int, np.ndarray]]:
    """Inverse of :func:`float_plane_packs`, a step at a time: ``(first value, values)`` as unsigned integers.

    ``readers`` give the planes in :func:`float_planes`' order. The values
    land in ``out[first:first + len]`` when ``out`` (unsigned, ``count``
    values) is given, else in a step-sized buffer valid until the next step.
    """
    width = np.dtype(dtype).itemsize
    step = max(1, CHUNK_BYTES // width)
    merged = step_buffer("merged", min(step, count), unsigned_dtype(width))
    shifted = step_buffer("shifted", min(step, count), unsigned_dtype(width))
    for lo in range(0, count, step):
        n = min(step, count - lo)
        m, s = merged[:n], shifted[:n]
        np.copyto(m, readers[0].read(n))
        for i in range(1, width):
            np.copyto(s, readers[i].read(n))
            np.left_shift(s, 8 * i, out=s)
            np.bitwise_or(m, s, out=m)
        target = out[lo: lo + n] if out is not None else s
        np.right_shift(m, 1, out=target)  # rotate right by one: the sign back to the top bit
        np.left_shift(m, 8 * width - 1, out=m)
        yield lo, np.bitwise_or(target, m, out=target)


def join_float_planes(planes: Sequence[bytes | memoryview], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`float_planes` (``planes`` in the same order, each whole in memory)."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(count, dtype=unsigned_dtype(dt.itemsize))
    readers = [PlaneReader("raw", plane, count, 0) for plane in planes]
    for _ in join_float_chunks(readers, dt, count, out):
        pass
    return out.view(dt).reshape(shape)
