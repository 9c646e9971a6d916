"""Compression's seed-quantum features against their classical counterparts, measured in the same run.

1. QFT frequency decoding (decompress ``qft``) against the plain inverse on
   the same container: the sample checkpoint at 8 and 4 bits and two
   synthetic tensors (a smooth random walk, white noise), each compressed
   with ``error_probe`` values. Per case: the relative L2 error against the
   original (the reference) of the plain decode and of the plan, the
   tensors the decoder was kept on, the container bytes with and without the
   probe, and the decode time against the plain decode's.

Usage: PYTHONPATH=. python bench/compression_quantum.py [--probe 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._plan import load_checkpoint_input

ROOT = Path(__file__).resolve().parents[1]


def _cases() -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    checkpoint, _ = load_checkpoint_input(ROOT / "sample_data/compression/checkpoint.safetensors")
    arrays = {ref.name: ref.load() for ref in checkpoint.tensors} if hasattr(checkpoint, "tensors") else checkpoint
    rng = np.random.default_rng(0)
    smooth = {"walk": (np.cumsum(rng.normal(size=65536)) * 0.01).astype(np.float32).reshape(256, 256)}
    white = {"white": rng.normal(size=(256, 256)).astype(np.float32)}
    return {"checkpoint 8-bit": (arrays, {"bits": 8}), "checkpoint 4-bit": (arrays, {"bits": 4}),
            "walk 4-bit": (smooth, {"bits": 4, "per_channel": False}), "white 8-bit": (white, {"bits": 8})}


def qft_section(probe: int) -> None:
    print(f"== QFT frequency decoding vs the plain inverse (error_probe {probe}; error against the original) ==")
    print(f"{'case':<18}{'plain_err':>11}{'qft_err':>11}{'change':>11}{'kept_on':>9}{'bytes':>9}{'probe_bytes':>12}"
          f"{'time_x':>8}")
    for name, (arrays, config) in _cases().items():
        bare = compress_tensors(arrays, config).container
        run = compress_tensors(arrays, {**config, "error_probe": probe})
        started = time.perf_counter()
        plain = decompress_container(run.container, reference=arrays)
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        qft = decompress_container(run.container, {"qft": True}, reference=arrays)
        qft_s = time.perf_counter() - started
        info = qft.plan.result["enhancements"].get("qft", {})
        kept = f"{len(info.get('applied', []))}/{len(info.get('tensors', []))}"
        p, q = plain.plan.metrics["relative_l2_error"], qft.plan.metrics["relative_l2_error"]
        print(f"{name:<18}{p:>11.6f}{q:>11.6f}{q - p:>+11.2e}{kept:>9}{len(bare):>9}{len(run.container) - len(bare):>12}"
              f"{qft_s / plain_s:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", type=int, default=512)
    args = parser.parse_args()
    qft_section(args.probe)


if __name__ == "__main__":
    main()
