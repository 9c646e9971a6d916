"""Trained models in the console: Home lists them; a module page offers its own under the model input and the plan says it reused one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from page_helpers import click_run, open_page
from streamlit.testing.v1 import AppTest

from qflow.core.models import save_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    folder = tmp_path / "models"
    folder.mkdir()
    d = 64  # the attention sample's width
    save_model(folder / "ct.safetensors", "contrastive", {"w_q": np.eye(d, dtype=np.float32), "w_k": np.eye(d, dtype=np.float32)},
               config={}, inputs=[], metrics={"infonce_final": 1.0}, spec={"width": d})
    return folder


def test_home_lists_the_trained_models(home) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    frames = [df.value for df in at.dataframe]
    assert any("kind" in f.columns and list(f["kind"]) == ["contrastive"] for f in frames)


def test_the_attention_page_offers_its_model_and_the_plan_reuses_it(home) -> None:
    at = open_page("attention")
    pick = at.selectbox(key="attention_model_pick")
    assert pick.options[0].startswith("none") and any(o.startswith("ct.safetensors") for o in pick.options)
    pick.set_value(pick.options[1]).run()
    at.toggle(key="attention_contrastive_trainer").set_value(True).run()
    click_run(at, "attention")
    assert not at.error
    plan = at.session_state["attention_run"].plan
    assert plan["result"]["training"]["trained_model"]["trained"] == "no, loaded"
    assert "model" in [i["name"] for i in plan["inputs"]]


def test_an_energy_page_without_models_says_the_plan_trains_its_own(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    at = open_page("energy")
    assert any("No trained model" in c.value for c in at.caption)
    assert not [s for s in at.selectbox if s.key == "energy_model_pick"]
