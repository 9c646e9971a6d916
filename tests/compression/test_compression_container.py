"""The .qfz container: every block checksummed; truncation and tampering are refused naming the block."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np
import pytest
import zstandard

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._container import MAGIC, VERSION, read_container
from qflow.core.errors import InputError


@pytest.fixture(scope="module")
def container() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {"fc.weight": rng.normal(size=(32, 48)).astype(np.float32), "fc.bias": rng.normal(size=32).astype(np.float32),
              "steps": np.arange(10, dtype=np.int64)}
    # per channel as set (no error budget): the container then holds a scales block too
    return compress_tensors(arrays, {"target_sparsity": 0.3, "max_relative_error": 0}).container


def _layout(data: bytes) -> tuple[int, dict]:
    """(offset of the first block, header) of a version-3 or -4 container (header after the blocks)."""
    _, version, header_len, _ = struct.unpack_from("<4sHQ32s", data)
    assert version in (3, 4)
    text = data[len(data) - header_len:]
    return 46, json.loads(zstandard.ZstdDecompressor().decompress(text))


def _blocks(data: bytes) -> bytes:
    header_len = struct.unpack_from("<4sHQ32s", data)[2]
    return data[46: len(data) - header_len]


def _with_header(data: bytes, version: int, text: bytes) -> bytes:
    """``data``'s blocks under header ``text`` (stored as given) and ``version`` (1, 2: header first; 3, 4: last)."""
    prefix = struct.pack("<4sHQ32s", MAGIC, version, len(text), hashlib.sha256(text).digest())
    return prefix + _blocks(data) + text if version >= 3 else prefix + text + _blocks(data)


def test_header_describes_every_tensor(container: bytes) -> None:
    assert container[:4] == MAGIC
    _, header = _layout(container)
    assert header["format"] == "qflow.qfz" and header["version"] == VERSION == 4
    assert struct.unpack_from("<4sHQ32s", container)[1] == 4
    by_name = {t["name"]: t for t in header["tensors"]}
    w = by_name["fc.weight"]
    assert w["dtype"] == "float32" and w["shape"] == [32, 48] and w["scheme"] == "quant" and len(w["sha256"]) == 64
    assert w["quant"]["bits"] == 8 and w["quant"]["channels"] == 32
    assert w["quant"]["granularity"]["chosen"] == "per channel" and "fc.weight/scales" in w["blocks"]
    assert w["sparse"]["retained"] == 32 * 48 - int(0.3 * 32 * 48)
    assert by_name["steps"]["scheme"] == "lossless"
    start, _ = _layout(container)
    for b in header["blocks"]:  # CRC-32 of the stored bytes
        assert b["crc32"] == zlib.crc32(container[start + b["offset"]: start + b["offset"] + b["length"]])


def test_version_3_with_sha256_block_checksums_is_still_read_and_checked(container: bytes) -> None:
    start, header = _layout(container)
    header["version"] = 3
    for b in header["blocks"]:
        del b["crc32"]
        b["sha256"] = hashlib.sha256(container[start + b["offset"]: start + b["offset"] + b["length"]]).hexdigest()
    old = _with_header(container, 3, zstandard.ZstdCompressor().compress(json.dumps(header).encode()))
    restored = decompress_container(old, source="old.qfz").arrays
    for name, x in decompress_container(container).arrays.items():
        assert restored[name].tobytes() == x.tobytes()
    block = header["blocks"][-1]
    tampered = bytearray(old)
    tampered[start + block["offset"] + block["length"] // 2] ^= 0x40
    with pytest.raises(InputError, match=rf"block '{block['name']}': checksum mismatch .*expected sha256"):
        decompress_container(bytes(tampered), source="old.qfz")


def test_every_truncation_is_refused_naming_a_block(container: bytes) -> None:
    start, header = _layout(container)
    last = header["blocks"][-1]
    for cut in [3, 20]:
        with pytest.raises(InputError, match=r"model\.qfz: block 'prefix': truncated"):
            read_container(container[:cut], "model.qfz")
    # the header is last: any other cut loses its end (or all of it), which its checksum or length catches
    for cut in [60, start + last["offset"] + 1, len(container) - 1]:
        with pytest.raises(InputError, match=r"model\.qfz: block 'header': (truncated|checksum mismatch)") as info:
            read_container(container[:cut], "model.qfz")
        assert info.value.field == "block 'header'"


def test_a_flipped_byte_in_any_block_names_that_block(container: bytes) -> None:
    start, header = _layout(container)
    for block in header["blocks"]:
        tampered = bytearray(container)
        tampered[start + block["offset"] + block["length"] // 2] ^= 0x40
        with pytest.raises(InputError, match=rf"block '{block['name']}': checksum mismatch"):
            decompress_container(bytes(tampered), source="model.qfz")


def test_a_tampered_header_is_refused(container: bytes) -> None:
    tampered = bytearray(container)
    tampered[-10] ^= 0x01
    with pytest.raises(InputError, match=r"block 'header': checksum mismatch"):
        read_container(bytes(tampered))


def test_not_a_container() -> None:
    with pytest.raises(InputError, match=r"not a \.qfz container"):
        read_container(b"PK\x03\x04" + b"\x00" * 100, "x.qfz")
    with pytest.raises(InputError, match="block 'header': checksum mismatch"):  # the header is read from the end
        data = compress_tensors({"a": np.arange(100.0)}).container
        read_container(data + b"extra")


@pytest.mark.parametrize("version", [1, 2])
def test_versions_1_and_2_header_first_are_still_read(container: bytes, version: int) -> None:
    _, header = _layout(container)
    header["version"] = version
    text = json.dumps(header, separators=(",", ":")).encode()
    old = _with_header(container, version, text if version == 1 else zstandard.ZstdCompressor().compress(text))
    restored = decompress_container(old, source="old.qfz").arrays
    assert restored.keys() == decompress_container(container).arrays.keys()
    for name, x in decompress_container(container).arrays.items():
        assert restored[name].tobytes() == x.tobytes()


def test_unknown_version_and_bad_compressed_header_are_refused(container: bytes) -> None:
    _, header = _layout(container)
    text = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    with pytest.raises(InputError, match=r"model\.qfz: block 'prefix': unsupported container version.*1 or 2 or 3 or 4"):
        read_container(_with_header(container, 5, text), "model.qfz")
    with pytest.raises(InputError, match=r"block 'header': cannot be unpacked"):
        read_container(_with_header(container, 2, b"not zstd at all"), "model.qfz")


def test_compressed_header_is_much_smaller_than_its_json(container: bytes) -> None:
    _, header = _layout(container)
    header_len = struct.unpack_from("<4sHQ32s", container)[2]
    assert header_len < 0.6 * len(json.dumps(header, separators=(",", ":")))
