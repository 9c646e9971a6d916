"""Compression's seed-quantum features against their classical counterparts, measured in the same run.

1. QFT frequency decoding (decompress ``qft``) against the plain inverse on
   the same container: the sample checkpoint at 8 and 4 bits and two
   synthetic tensors (a smooth random walk, white noise), each compressed
   with ``error_probe`` values. Per case: the relative L2 error against the
   original (the reference) of the plain decode and of the plan, the
   tensors the decoder was kept on, the container bytes with and without the
   probe, and the decode time against the plain decode's; then, on the
   container without a probe, the tensors the self-check kept the decoder on
   and how many of those the reference reverted (it made them worse).

2. VQC autoencoder qubit pruning (compress ``vqc_prune_variance``) against
   PCA with the same number of latent reals, on the same held-out blocks:
   three tensors of the sample checkpoint (0.bias, 2.bias, 4.weight) and a
   tensor whose 16-value blocks span 4 dimensions, default VQC settings (4
   qubits, 2 trash, 25 steps; time budget raised to 900 s). Per
   tensor: each latent qubit's <Z> variance over the training blocks, the
   qubits kept, the amplitudes stored against unpruned, the pruned VQC's and
   PCA's held-out relative error, and whether a VQC latent was stored.

Usage: PYTHONPATH=. python bench/compression_quantum.py [--probe 512] [--sections 1,2] [--threshold 0.05]
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
          f"{'time_x':>8}{'selfcheck_kept':>15}{'reverted':>9}")
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
        selfcheck = decompress_container(bare, {"qft": True}, reference=arrays).plan.result["enhancements"].get("qft", {})
        claimed = len(selfcheck.get("applied", [])) + len(selfcheck.get("reverted", []))
        print(f"{name:<18}{p:>11.6f}{q:>11.6f}{q - p:>+11.2e}{kept:>9}{len(bare):>9}{len(run.container) - len(bare):>12}"
              f"{qft_s / plain_s:>8.1f}{claimed:>15}{len(selfcheck.get('reverted', [])):>9}")


def pruning_section(threshold: float) -> None:
    print(f"== VQC latent qubit pruning (vqc_prune_variance {threshold:g}) vs PCA of the same latent size, held-out blocks ==")
    print(f"{'tensor':<16}{'z_variance':>18}{'kept':>7}{'amps':>6}{'vqc_err':>10}{'pca_err':>10}{'vqc_full_err':>13}"
          f"{'stored':>8}")
    arrays, _ = _cases()["checkpoint 8-bit"]
    rng = np.random.default_rng(0)
    low_rank = (rng.normal(size=(256, 4)) @ rng.normal(size=(4, 16))).astype(np.float32)
    picked = {"low_rank": low_rank, **{k: v for k, v in arrays.items() if k in ("0.bias", "2.bias", "4.weight")}}
    run = compress_tensors(picked, {"vqc_autoencoder": True, "vqc_prune_variance": threshold, "seed": 1,
                                    "quantum_time_budget_s": 900})
    for info in run.plan.result.get("autoencoder", []):
        p = info.get("pruning")
        if p is None:
            print(f"{info['tensor']:<16}  {info.get('reason', '')}")
            continue
        variances = ",".join(f"{v:.3f}" for v in p["z_variance"])
        print(f"{info['tensor']:<16}{variances:>18}{str(p['retained_qubits']):>7}"
              f"{str(p['amplitudes_stored']) + '/' + str(p['amplitudes_unpruned']):>6}{p['vqc_pruned_relative_error']:>10.4f}"
              f"{p['pca_same_size_relative_error']:>10.4f}{info['vqc_relative_error']:>13.4f}{str(p['stored']):>8}")
    print(f"  solver.ran: {run.plan.solver.ran}; fallbacks: {[f.reason[:90] for f in run.plan.solver.fallbacks]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--sections", default="1,2")
    args = parser.parse_args()
    sections = {int(s) for s in args.sections.split(",")}
    if 1 in sections:
        qft_section(args.probe)
    if 2 in sections:
        pruning_section(args.threshold)


if __name__ == "__main__":
    main()
