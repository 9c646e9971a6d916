"""The Compress page under Streamlit's AppTest: widgets, Run on the sample, charts, downloads, input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from page_helpers import chart_titles, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.compression import CompressConfig
from ui.widgets import field_bounds

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def at() -> AppTest:
    return open_page("compress")


def test_widgets_are_the_config_fields_with_their_bounds(at: AppTest) -> None:
    assert [t.label for t in at.toggle] == CompressConfig.toggles()
    numbers = {n.label: n for n in at.number_input}
    assert set(numbers) == set(CompressConfig.model_fields) - set(CompressConfig.toggles()) - {"dask_scheduler"}
    assert at.text_input(key="compress_dask_scheduler").value == ""  # a text field: empty = this machine
    for name, widget in numbers.items():
        info = CompressConfig.model_fields[name]
        assert widget.value == info.default and widget.max == field_bounds(info)["le"], name
    assert "using the sample `sample_data/compression/checkpoint.safetensors`" in " ".join(c.value for c in at.caption)
    assert "Press **Run**" in at.info[0].value
    assert "compress_data_file" not in at.session_state  # no data folder picker without QFLOW_DATA_DIR


def test_run_on_the_sample_with_pruning_and_denoiser(at: AppTest) -> None:
    at.toggle(key="compress_denoiser").set_value(True)
    at.number_input(key="compress_bits").set_value(4)
    at.number_input(key="compress_target_sparsity").set_value(0.2)
    at.number_input(key="compress_denoiser_steps").set_value(40)
    click_run(at, "compress")
    assert not at.error
    titles = chart_titles(at)
    assert titles[0].startswith("Compression ratio vs relative error per tensor")
    assert titles[1].startswith("Values of 2.weight") and titles[2].startswith("Absolute error map of 2.weight")
    path = next(m.value for m in at.markdown if m.value.startswith("**Path requested:**"))
    assert "`quant4+prune+denoiser`" in path
    rows = at.dataframe[0].value.to_dict("records")
    assert [r["method"] for r in rows][1:] == ["fp16_cast", "zstd_raw", "int8_plain"]
    assert rows[0]["compression_ratio"] > rows[3]["compression_ratio"] > rows[1]["compression_ratio"]
    assert [b.label for b in at.get("download_button")] == ["Download checkpoint.qfz", "Download plan JSON"]


def test_pickle_upload_shows_the_loaders_message(at: AppTest) -> None:
    upload(at, "compress", "input", "evil.pt", b"\x80\x04\x95not really a torch file")
    click_run(at, "compress")
    assert at.error[0].value.startswith("evil.pt: (file): not a weights-only torch file")
    assert not at.get("plotly_chart")


def test_a_checkpoint_from_the_server_data_folder_is_compressed_in_place(tmp_path, monkeypatch) -> None:
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    checkpoint = data / "models" / "big.safetensors"
    checkpoint.write_bytes((ROOT / "sample_data" / "compression" / "checkpoint.safetensors").read_bytes())
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(checkpoint.read_bytes())
    (data / "escape.safetensors").symlink_to(outside)
    (data / "notes.txt").write_text("not a checkpoint")
    monkeypatch.setenv("QFLOW_DATA_DIR", str(data))
    at = open_page("compress")
    picker = at.selectbox(key="compress_data_file")
    assert picker.options[1:] == ["models/big.safetensors"]  # no symlink out of the folder, no other suffix
    picker.set_value("models/big.safetensors").run()
    click_run(at, "compress")
    assert not at.error
    container = data / "models" / "big.qfz"
    assert container.is_file() and outside.with_suffix(".qfz").exists() is False
    assert "Download big.qfz" in [d.label for d in at.get("download_button")]
    assert at.session_state["compress_run"].artifacts == [("big.qfz", container.read_bytes())]
    assert at.session_state["compress_run"].plan["metrics"]["original_bytes"] > 0
