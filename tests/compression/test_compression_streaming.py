"""Bounded memory on big checkpoints: lossless float tensors are encoded from their file a step at a time, and
restores are decoded a step at a time into the output files."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from qflow.compression import _plan as plan_module
from qflow.compression import compress_tensors, decompress_container
from qflow.compression._checkpoint import open_checkpoint
from qflow.compression._container import read_container
from qflow.compression._lossless import CHUNK_BYTES
from qflow.compression._plan import _Context, _encode_one, decompress_to_files
from qflow.compression._schemas import CompressConfig
from qflow.compression._stream import merged_safetensors_header
from qflow.core.errors import InputError


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    records = [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in tensors.items()]
    head = merged_safetensors_header(records, {"format": "pt"})
    with path.open("wb") as handle:
        handle.write(len(head).to_bytes(8, "little") + head)
        for a in tensors.values():
            handle.write(np.ascontiguousarray(a).view(np.uint8).tobytes())


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w.bf16": (rng.standard_normal((1024, 640)) * 0.02).astype(ml_dtypes.bfloat16),  # 1.25 MB: sampled
            "w.fp32": (rng.standard_normal((96, 160)) * 0.05).astype(np.float32),  # 60 KB: float layout, no sample
            "w.fp16": (rng.standard_normal((3, 5)) * 0.05).astype(np.float16),  # tiny: one block, loaded
            "steps": np.arange(4096, dtype=np.int64)}


def test_lossless_float_tensors_are_encoded_from_the_file_without_loading_them(tmp_path: Path) -> None:
    weights = _weights()
    _write_safetensors(tmp_path / "model.safetensors", weights)
    refs = {r.name: r for r in open_checkpoint(tmp_path / "model.safetensors").tensors}
    ctx = _Context(CompressConfig(lossless=True), None, "model.safetensors", "w.bf16")

    def never(*_: object) -> np.ndarray:
        raise AssertionError("a float tensor of a file was loaded whole")

    for i, name in enumerate(["w.bf16", "w.fp32"]):
        streamed = _encode_one((i, dataclasses.replace(refs[name], loader=never)), ctx)
        loaded = _encode_one((i, dataclasses.replace(refs[name], span=None)), ctx)  # the in-memory path
        assert streamed.enc.record == loaded.enc.record  # same layout, blocks, codecs and sha256
        assert [bytes(b.packed.payload) for b in streamed.enc.blocks] == [bytes(b.packed.payload)
                                                                         for b in loaded.enc.blocks]
        assert streamed.row == loaded.row and streamed.sums == loaded.sums
    preview = _encode_one((0, refs["w.bf16"]), ctx).preview
    expected = plan_module._preview({"w.bf16": weights["w.bf16"]}, {"w.bf16": weights["w.bf16"]})
    assert preview == expected


def test_streamed_checkpoint_restores_bit_exact(tmp_path: Path) -> None:
    weights = _weights(1)
    _write_safetensors(tmp_path / "model.safetensors", weights)
    run = compress_tensors(open_checkpoint(tmp_path / "model.safetensors"), {"lossless": True, "n_workers": 2})
    assert [t["layout"] for t in run.plan.result["tensors"]][:2] == ["float", "float"]
    restored = decompress_container(run.container).arrays  # checks each tensor's sha256 too
    for name, x in weights.items():
        assert restored[name].dtype == x.dtype and restored[name].tobytes() == x.tobytes()
    decompress_to_files(run.container, tmp_path / "back", {"n_workers": 2})
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_a_nan_read_a_step_at_a_time_is_named_by_its_index_in_the_tensor(tmp_path: Path) -> None:
    weights = _weights()
    weights["w.bf16"][1000, 7] = np.nan
    _write_safetensors(tmp_path / "model.safetensors", weights)
    with pytest.raises(InputError, match=r"w\.bf16\[1000, 7\]: not a finite number"):
        compress_tensors(open_checkpoint(tmp_path / "model.safetensors"), {"lossless": True})


def test_a_nan_past_the_first_step_is_named_by_its_index_in_the_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2048, 1024)) * 0.02).astype(ml_dtypes.bfloat16)  # 4 MB: two steps of 2 MB
    x[1500, 3] = np.inf
    _write_safetensors(tmp_path / "big.safetensors", {"big": x})
    with pytest.raises(InputError, match=r"big\[1500, 3\]: not a finite number"):
        compress_tensors(open_checkpoint(tmp_path / "big.safetensors"), {"lossless": True})


def test_restoring_to_files_holds_a_step_not_the_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8192, 1024)) * 0.02).astype(ml_dtypes.bfloat16)  # 16 MB: eight steps
    _write_safetensors(tmp_path / "big.safetensors", {"big": x})
    container = compress_tensors(open_checkpoint(tmp_path / "big.safetensors"), {"lossless": True}).container
    tracemalloc.start()
    try:
        decompress_to_files(container, tmp_path / "back.safetensors", {"n_workers": 1})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "back.safetensors").read_bytes() == (tmp_path / "big.safetensors").read_bytes()
    # this thread's step buffers (two planes read, values joined): a few steps, whatever the tensor's size
    assert peak < 4 * CHUNK_BYTES < x.nbytes, f"{peak} bytes traced restoring a {x.nbytes}-byte tensor"


@pytest.mark.parametrize("block", ["w.bf16/plane0", "w.bf16/plane1"])  # stored as is; entropy-coded
def test_a_damaged_block_read_a_step_at_a_time_fails_and_removes_the_files_written(tmp_path: Path, block: str) -> None:
    weights = _weights(4)
    _write_safetensors(tmp_path / "model.safetensors", weights)
    container = bytearray(compress_tensors(open_checkpoint(tmp_path / "model.safetensors"),
                                           {"lossless": True}).container)
    opened = read_container(bytes(container), verify=False)
    entry = next(b for b in opened.header["blocks"] if b["name"] == block)
    assert entry["codec"] == ("raw" if block.endswith("0") else "zstd")
    container[46 + entry["offset"] + entry["length"] // 2] ^= 0x5A  # 46: the prefix before the blocks
    with pytest.raises(InputError, match=f"block '{block}'.*checksum mismatch"):
        decompress_to_files(bytes(container), tmp_path / "back", {"n_workers": 2})
    assert not list((tmp_path / "back").glob("*"))
    with pytest.raises(InputError, match=f"block '{block}'.*checksum mismatch"):
        decompress_container(bytes(container), {"n_workers": 1})
