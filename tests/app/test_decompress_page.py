"""The Decompress page under Streamlit's AppTest: Run on the sample container, errors vs reference, tampering."""

from __future__ import annotations

from pathlib import Path

import pytest
from page_helpers import chart_titles, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.compression import DecompressConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "compression" / "checkpoint.qfz"


@pytest.fixture
def at() -> AppTest:
    return open_page("decompress")


def test_widgets_are_the_config_fields(at: AppTest) -> None:
    assert [t.label for t in at.toggle] == DecompressConfig.toggles()
    assert {n.label for n in at.number_input} == \
        set(DecompressConfig.model_fields) - set(DecompressConfig.toggles()) - {"dask_scheduler"}
    assert at.text_input(key="decompress_dask_scheduler").value == ""
    assert "using the sample `sample_data/compression/checkpoint.qfz`" in " ".join(c.value for c in at.caption)


def test_plain_run_on_the_sample_container_against_the_reference(at: AppTest) -> None:
    at.selectbox(key="decompress_format").set_value("npz")
    click_run(at, "decompress")
    assert not at.error
    titles = chart_titles(at)
    assert titles == ["Relative error vs the reference per tensor"]
    assert at.metric[0].value == "6"
    assert float(at.metric[2].value) < 0.01
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download checkpoint_restored.npz", "Download plan JSON"]


def test_hhl_on_a_classical_container_falls_back_with_a_reason(at: AppTest) -> None:
    at.toggle(key="decompress_hhl").set_value(True)
    click_run(at, "decompress")
    assert not at.error
    warnings = " ".join(w.value for w in at.warning)
    assert "`hhl` fell back to `plain`" in warnings and "compressed classically" in warnings


def test_tampered_container_names_the_block(at: AppTest) -> None:
    data = bytearray(SAMPLE.read_bytes())
    data[-10] ^= 0xFF
    upload(at, "decompress", "input", "model.qfz", bytes(data))
    click_run(at, "decompress")
    assert at.error[0].value.startswith("model.qfz: block '")
    assert "checksum mismatch" in at.error[0].value


@pytest.mark.parametrize("output_format", ["safetensors", "npz"])
def test_restored_bf16_tensors_download(at: AppTest, tmp_path: Path, output_format: str) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load, save_file

    from qflow.compression import CompressConfig
    from qflow.core.commands import load_command
    from qflow.core.uploads import run_command

    original = {"w": torch.randn(64, 32, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)}
    save_file(original, tmp_path / "bf.safetensors")
    packed = run_command(load_command("compress"), {"input": tmp_path / "bf.safetensors"}, CompressConfig(), tmp_path / "bf.qfz")
    upload(at, "decompress", "input", "bf.qfz", (tmp_path / "bf.qfz").read_bytes())
    at.selectbox(key="decompress_format").set_value(output_format)
    click_run(at, "decompress")
    if output_format == "npz":  # .npz has no bf16: refused in one line, nothing offered
        assert "expected a .safetensors output for bf16" in at.error[0].value and not at.get("download_button")
        return
    assert not at.error
    (name, data), = at.session_state["decompress_run"].artifacts
    assert name == f"bf_restored.{output_format}" and f"Download {name}" in [d.label for d in at.get("download_button")]
    restored = load(data)["w"]
    error = (restored.float() - original["w"].float()).norm() / original["w"].float().norm()
    assert restored.dtype == torch.bfloat16 and restored.shape == original["w"].shape
    assert 0 < float(error) <= 1.01 * packed.metrics["relative_l2_error"] + 1e-3  # lossy, within the plan's own error
