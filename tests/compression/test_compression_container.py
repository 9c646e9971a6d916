"""The .qfz container: every block checksummed; truncation and tampering are refused naming the block."""

from __future__ import annotations

import hashlib
import json
import struct

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
    _, version, header_len, _ = struct.unpack_from("<4sHQ32s", data)
    start = 46 + header_len
    text = data[46:start]
    return start, json.loads(zstandard.ZstdDecompressor().decompress(text) if version >= 2 else text)


def _with_header(data: bytes, version: int, text: bytes) -> bytes:
    """``data`` with its header replaced by ``text`` (stored as given) under ``version``, checksum recomputed."""
    start, _ = _layout(data)
    return struct.pack("<4sHQ32s", MAGIC, version, len(text), hashlib.sha256(text).digest()) + text + data[start:]


def test_header_describes_every_tensor(container: bytes) -> None:
    assert container[:4] == MAGIC
    _, header = _layout(container)
    assert header["format"] == "qflow.qfz" and header["version"] == VERSION == 2
    assert struct.unpack_from("<4sHQ32s", container)[1] == 2
    by_name = {t["name"]: t for t in header["tensors"]}
    w = by_name["fc.weight"]
    assert w["dtype"] == "float32" and w["shape"] == [32, 48] and w["scheme"] == "quant" and len(w["sha256"]) == 64
    assert w["quant"]["bits"] == 8 and w["quant"]["channels"] == 32
    assert w["quant"]["granularity"]["chosen"] == "per channel" and "fc.weight/scales" in w["blocks"]
    assert w["sparse"]["retained"] == 32 * 48 - int(0.3 * 32 * 48)
    assert by_name["steps"]["scheme"] == "lossless"
    assert all(len(b["sha256"]) == 64 for b in header["blocks"])


def test_every_truncation_is_refused_naming_a_block(container: bytes) -> None:
    start, header = _layout(container)
    last = header["blocks"][-1]
    cuts = [3, 20, 60, start - 1, start + last["offset"] + 1, len(container) - 1]
    for cut in cuts:
        with pytest.raises(InputError, match=r"model\.qfz: block '[^']+': truncated") as info:
            read_container(container[:cut], "model.qfz")
        assert info.value.field.startswith("block '")
    with pytest.raises(InputError, match=rf"block '{last['name']}': truncated"):
        read_container(container[: len(container) - 1], "model.qfz")


def test_a_flipped_byte_in_any_block_names_that_block(container: bytes) -> None:
    start, header = _layout(container)
    for block in header["blocks"]:
        tampered = bytearray(container)
        tampered[start + block["offset"] + block["length"] // 2] ^= 0x40
        with pytest.raises(InputError, match=rf"block '{block['name']}': checksum mismatch"):
            decompress_container(bytes(tampered), source="model.qfz")


def test_a_tampered_header_is_refused(container: bytes) -> None:
    tampered = bytearray(container)
    tampered[60] ^= 0x01
    with pytest.raises(InputError, match=r"block 'header': checksum mismatch"):
        read_container(bytes(tampered))


def test_not_a_container() -> None:
    with pytest.raises(InputError, match=r"not a \.qfz container"):
        read_container(b"PK\x03\x04" + b"\x00" * 100, "x.qfz")
    with pytest.raises(InputError, match="trailing bytes"):
        data = compress_tensors({"a": np.arange(100.0)}).container
        read_container(data + b"extra")


def test_version_1_plain_json_header_is_still_read(container: bytes) -> None:
    _, header = _layout(container)
    header["version"] = 1
    old = _with_header(container, 1, json.dumps(header, separators=(",", ":")).encode())
    restored = decompress_container(old, source="old.qfz").arrays
    assert restored.keys() == decompress_container(container).arrays.keys()
    for name, x in decompress_container(container).arrays.items():
        assert restored[name].tobytes() == x.tobytes()


def test_unknown_version_and_bad_compressed_header_are_refused(container: bytes) -> None:
    _, header = _layout(container)
    text = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    with pytest.raises(InputError, match=r"model\.qfz: block 'prefix': unsupported container version.*1 or 2"):
        read_container(_with_header(container, 3, text), "model.qfz")
    with pytest.raises(InputError, match=r"block 'header': cannot be unpacked"):
        read_container(_with_header(container, 2, b"not zstd at all"), "model.qfz")


def test_compressed_header_is_much_smaller_than_its_json(container: bytes) -> None:
    start, header = _layout(container)
    assert start - 46 < 0.6 * len(json.dumps(header, separators=(",", ":")))
