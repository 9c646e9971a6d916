"""qflow train denoiser: a compress plan applying the saved denoisers gives the error training them gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qflow.cli import main
from qflow.core.models import load_model, save_model

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "compression" / "checkpoint.safetensors"


def test_loaded_denoisers_reproduce_the_trained_plan(tmp_path, capsys) -> None:
    model = tmp_path / "dn.safetensors"
    assert main(["train", "denoiser", "--input", str(SAMPLE), "--out", str(model), "--denoiser-steps", "20"]) == 0
    a, b = tmp_path / "a.qfz", tmp_path / "b.qfz"
    assert main(["compress", "--input", str(SAMPLE), "--denoiser", "--denoiser-steps", "20", "--out", str(a)]) == 0
    assert main(["compress", "--input", str(SAMPLE), "--denoiser", "--denoiser-steps", "20", "--model", str(model), "--out", str(b)]) == 0
    pa, pb = (json.loads(Path(str(p) + ".plan.json").read_text()) for p in (a, b))
    assert pb["metrics"]["relative_l2_error"] == pa["metrics"]["relative_l2_error"]
    assert a.read_bytes() == b.read_bytes() or pb["metrics"]["compression_ratio"] == pa["metrics"]["compression_ratio"]
    rows = pb["result"]["denoiser"]
    assert rows and all(r["trained"] == "no, loaded" for r in rows if "relative_l2_after" in r)
    assert pb["result"]["trained_model"]["tensors_loaded"] == len(load_model(model, "denoiser").tensors)


def test_a_denoiser_vector_of_the_wrong_length_is_refused(tmp_path, capsys) -> None:
    from qflow.compression._train import ARCH, denoiser_parameters

    bad = tmp_path / "bad.safetensors"
    save_model(bad, "denoiser", {"0.weight": np.zeros(7, np.float32)}, config={}, inputs=[], metrics={},
               spec={"arch": ARCH, "parameters": denoiser_parameters(), "bits": 8})
    assert main(["compress", "--input", str(SAMPLE), "--denoiser", "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.safetensors: model.tensors.0.weight: not a denoiser's parameters" in err[0]
