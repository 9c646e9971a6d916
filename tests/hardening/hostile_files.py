"""Builders of hostile input files: zip/npz bombs, forged .npy and safetensors headers, YAML alias bombs.

Each builder writes the bytes an attacker would send, by hand where a library
would refuse to write them (a zip whose directory lies, a header that declares
petabytes). The bombs are real: :func:`npz_bomb` is a valid 1 MB archive
whose member inflates to 1 GiB with a correct CRC.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zlib

import numpy as np

GIB = 2**30
_PIECE = 2**24  # 16 MiB of zeros, deflated once and repeated


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """An .npy magic and header declaring ``shape`` of ``descr`` (no data follows)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_2_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _raw_deflate(data: bytes) -> bytes:
    """``data`` as a byte-aligned run of raw deflate blocks that refers to nothing before it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def zip_one_member(name: str, deflated: bytes, crc: int, unpacked_size: int) -> bytes:
    """A zip archive of one deflated member whose directory declares ``unpacked_size`` and ``crc``."""
    encoded = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(deflated), unpacked_size, len(encoded), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(deflated), unpacked_size,
                          len(encoded), 0, 0, 0, 0, 0, 0)
    offset = len(local) + len(encoded) + len(deflated)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(encoded), offset, 0)
    return local + encoded + deflated + central + encoded + end


@functools.cache
def _bomb_stream(unpacked: int) -> tuple[bytes, int]:
    """Raw deflate of an .npy (float64 zeros) of ``unpacked`` bytes in all, and the CRC-32 of those bytes."""
    header = npy_header(((unpacked - 128) // 8,))
    header += b" " * (128 - len(header)) if len(header) < 128 else b""
    header = header[:-1] + b"\n"  # numpy pads headers with spaces and ends them with a newline
    assert len(header) == 128
    zeros = bytes(_PIECE)
    first = header + zeros[: _PIECE - len(header)]
    pieces = unpacked // _PIECE
    stream = _raw_deflate(first) + _raw_deflate(zeros) * (pieces - 1) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = zlib.crc32(first)
    for _ in range(pieces - 1):
        crc = zlib.crc32(zeros, crc)
    return stream, crc


def npz_bomb(unpacked: int = GIB) -> bytes:
    """A valid .npz of about ``unpacked / 1000`` bytes whose one member inflates to ``unpacked`` bytes of zeros."""
    stream, crc = _bomb_stream(unpacked)
    return zip_one_member("w.npy", stream, crc, unpacked)


def npz_lying_directory(unpacked: int = GIB, declared: int = 2**19) -> bytes:
    """The bomb's stream under a directory that declares only ``declared`` bytes (with their true CRC)."""
    stream, _ = _bomb_stream(unpacked)
    head = zlib.decompressobj(-15).decompress(stream, declared)
    return zip_one_member("w.npy", stream, zlib.crc32(head), declared)


def npz_many_members(count: int = 50_000) -> bytes:
    """A zip whose central directory lists ``count`` members (all pointing at one tiny stored member)."""
    data = npy_header((0,))
    name = b"0.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(data), len(data), len(data), len(name), 0)
    body = local + name + data
    central = bytearray()
    for index in range(count):
        member = f"{index}.npy".encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, zlib.crc32(data), len(data),
                               len(data), len(member), 0, 0, 0, 0, 0, 0) + member
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count & 0xFFFF, count & 0xFFFF, len(central), len(body), 0)
    if count > 0xFFFF:  # the plain end record holds 16-bit counts: a zip64 end record and locator carry the real one
        zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(central), len(body))
        locator = struct.pack("<IIQI", 0x07064B50, 0, len(body) + len(central), 1)
        end = zip64_end + locator + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, len(central), len(body), 0)
    return body + bytes(central) + end


def safetensors_declaring(shape: list[int], dtype: str = "F32", data: bytes = b"") -> bytes:
    """A safetensors file whose header declares one tensor of ``shape`` followed by only ``data``."""
    size = int(np.prod(shape, dtype=object)) * 4
    header = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, size]}}).encode()
    return struct.pack("<Q", len(header)) + header + data


def safetensors_header_length(length: int) -> bytes:
    """A safetensors file that declares a header of ``length`` bytes and holds a few."""
    return struct.pack("<Q", length) + b'{"w": {}}'


def yaml_alias_bomb(levels: int = 9, fan: int = 9, key: str = "quantum_accelerators") -> str:
    """The "billion laughs": ``fan ** levels`` strings from about 2.6 KB of YAML anchors and aliases, under ``key``."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fan)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fan)}]")
    lines.append(f"{key}: [*l{levels - 1}]")
    return "\n".join(lines) + "\n"


def huge_integer(digits: int = 5000) -> str:
    """A decimal integer literal over Python's int-from-text limit (4,300 digits)."""
    return "9" * digits
