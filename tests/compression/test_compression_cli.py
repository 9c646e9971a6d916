"""The acceptance CLI: compress -> decompress round trip, exit 2 on a damaged container or a pickle-bearing .pt."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from compression_helpers import CHECKPOINT, ROOT, load_checkpoint
from safetensors.numpy import load_file

from qflow.cli import main
from qflow.compression._container import read_container


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "qflow", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_round_trip_exactly_as_documented(tmp_path: Path) -> None:
    (tmp_path / "ckpt.safetensors").write_bytes(CHECKPOINT.read_bytes())
    first = run_cli("compress", "--input", "ckpt.safetensors", "--out", "model.qfz", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_cli("decompress", "--input", "model.qfz", "--out", "restored.safetensors", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "model.qfz").read_bytes()[:4] == b"QFZ\x89"
    plan = json.loads((tmp_path / "model.qfz.plan.json").read_text())
    assert plan["module"] == "compress" and plan["result"]["container"]["written_to"].endswith("model.qfz")
    original, restored = load_checkpoint(), load_file(str(tmp_path / "restored.safetensors"))
    assert set(restored) == set(original)
    for name, x in original.items():
        assert restored[name].dtype == x.dtype and restored[name].shape == x.shape
        assert np.linalg.norm(restored[name] - x) <= 0.01 * np.linalg.norm(x)
    assert json.loads((tmp_path / "restored.safetensors.plan.json").read_text())["module"] == "decompress"
    assert "ratio" in first.stdout and "restored" in second.stdout


def test_lossless_cli_round_trip_is_bit_exact_and_npz_output(tmp_path: Path) -> None:
    model, restored = tmp_path / "m.qfz", tmp_path / "r.npz"
    assert main(["compress", "--input", str(CHECKPOINT), "--out", str(model), "--lossless"]) == 0
    assert main(["decompress", "--input", str(model), "--out", str(restored), "--reference", str(CHECKPOINT)]) == 0
    with np.load(restored, allow_pickle=False) as npz:
        for name, x in load_checkpoint().items():
            assert npz[name].tobytes() == x.tobytes()
    plan = json.loads((tmp_path / "r.npz.plan.json").read_text())
    assert plan["metrics"]["max_abs_error"] == 0 and plan["result"]["reference_given"]


def test_out_json_puts_the_container_beside_the_plan(tmp_path: Path) -> None:
    assert main(["compress", "--input", str(CHECKPOINT), "--out", str(tmp_path / "plan.json")]) == 0
    assert (tmp_path / "plan.qfz").read_bytes()[:4] == b"QFZ\x89"
    assert json.loads((tmp_path / "plan.json").read_text())["module"] == "compress"


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_damaged_container_exits_2_naming_the_block(tmp_path: Path, capsys, damage: str) -> None:
    model = tmp_path / "model.qfz"
    assert main(["compress", "--input", str(CHECKPOINT), "--out", str(model)]) == 0
    data = bytearray(model.read_bytes())
    last_block = read_container(bytes(data)).header["blocks"][-1]
    assert last_block["length"] > 100
    if damage == "truncate":  # the header is last: a truncated file fails its header checksum
        data = data[: len(data) - 100]
        last_block = {"name": "header"}
    else:
        data[46 + last_block["offset"] + last_block["length"] // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["decompress", "--input", str(model), "--out", str(tmp_path / "r.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    problem = "checksum mismatch"
    assert err[0].startswith(f"error: model.qfz: block '{last_block['name']}': " + problem)
    assert not (tmp_path / "r.safetensors").exists()


class _Exploit:
    """Unpickling this would run code: write a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_pickle_bearing_pt_is_refused_and_never_executed(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(3), "payload": _Exploit(str(marker))}, evil)
    result = run_cli("compress", "--input", str(evil), "--out", str(tmp_path / "evil.qfz"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: evil.pt: (file): not a weights-only torch file")
    assert not marker.exists()
    assert not (tmp_path / "evil.qfz").exists()
    with pytest.raises(Exception):  # noqa: B017 - the file really would execute code if unpickled
        pickle.loads(b"not a pickle")
