"""The Attention page under Streamlit's AppTest: widgets, Run on the sample, every chart, downloads, input errors."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pytest
from page_helpers import chart_titles, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.attention import AttentionConfig
from ui.widgets import field_bounds


@pytest.fixture
def at() -> AppTest:
    return open_page("attention")


def test_widgets_are_the_config_fields_with_their_bounds(at: AppTest) -> None:
    assert [t.label for t in at.toggle] == AttentionConfig.toggles()
    numbers = {n.label: n for n in at.number_input}
    assert set(numbers) == set(AttentionConfig.model_fields) - set(AttentionConfig.toggles())
    for name, widget in numbers.items():
        info = AttentionConfig.model_fields[name]
        assert widget.value == info.default and widget.max == field_bounds(info)["le"], name
    captions = " ".join(c.value for c in at.caption)
    assert "using the sample `sample_data/attention/embeddings.npy`" in captions
    assert "Press **Run**" in at.info[0].value


def test_run_on_the_sample_with_every_toggle(at: AppTest) -> None:
    settings: dict[str, Any] = {"qaoa_queries": 1, "qaoa_steps": 5, "max_qubits": 9, "train_steps": 10, "top_k": 16}
    for name in AttentionConfig.toggles():
        at.toggle(key=f"attention_{name}").set_value(True)
    for name, value in settings.items():
        at.number_input(key=f"attention_{name}").set_value(value)
    click_run(at, "attention")
    titles = chart_titles(at)
    assert titles[0].startswith("Attention map") and titles[1] == "Relative error vs dense attention"
    assert "Singular values per head (W_O W_V with bias)" in titles
    assert "Contrastive training loss" in titles and titles[-1].startswith("QPE position recovery")
    assert not at.error
    path = next(m.value for m in at.markdown if m.value.startswith("**Path requested:**"))
    assert path.startswith("**Path requested:** `topk_bounds+qaoa+qpe+infonce+svd_prune`")
    # 256 keys in 8 blocks: the top-k bounds prune too little and the plan says it scored densely; QAOA with
    # 5 steps may miss its window, and then it is not on the path that ran.
    ran = path.split("**Path ran:** ")[1].strip("`")
    assert ran.startswith("topk_dense+") and {"qpe", "infonce", "svd_prune"} <= set(ran.split("+"))
    rows = at.dataframe[0].value.to_dict("records")
    assert [r["method"] for r in rows] == [f"plan ({ran})", "dense", "random_k"]
    assert rows[0]["relative_error"] < rows[2]["relative_error"]
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download attention.embeddings.npy", "Download pruned_model.safetensors", "Download pruned_config.json",
                      "Download plan JSON"]  # the pruner ran: its checkpoint is offered
    assert at.metric[4].value == "2 of 4"


def test_bad_upload_shows_the_loaders_message(at: AppTest) -> None:
    x = np.ones((8, 4), dtype=np.float32)
    x[1, 1] = np.inf
    buffer = io.BytesIO()
    np.save(buffer, x)
    upload(at, "attention", "embeddings", "broken.npy", buffer.getvalue())  # weights (optional) are then left out
    at.number_input(key="attention_top_k").set_value(4)
    click_run(at, "attention")
    assert at.error[0].value.startswith("broken.npy: embeddings[1, 1]: not a finite number")
    assert not at.get("plotly_chart")


def test_the_pruned_checkpoint_is_offered_when_the_pruner_ran(at: AppTest) -> None:
    from safetensors.numpy import load

    at.toggle(key="attention_svd_pruner").set_value(True)
    click_run(at, "attention")
    assert not at.error
    run = at.session_state["attention_run"]
    pruned = run.plan["result"]["pruned_checkpoint"]
    files = dict(run.artifacts)
    assert [d.label for d in at.get("download_button")][-3:] == [
        "Download pruned_model.safetensors", "Download pruned_config.json", "Download plan JSON"]
    model, config = files["pruned_model.safetensors"], json.loads(files["pruned_config.json"])
    assert hashlib.sha256(model).hexdigest() == pruned["sha256"] and len(model) == pruned["bytes"]
    assert config == pruned["config"] and config["pruned_heads"]
    state = load(model)
    assert {name: list(state[name].shape) for name in pruned["shapes"]} == pruned["shapes"]


def test_no_pruned_checkpoint_without_the_pruner(at: AppTest) -> None:
    click_run(at, "attention")
    assert "pruned_checkpoint" not in at.session_state["attention_run"].plan["result"]
    assert not any("pruned_" in d.label for d in at.get("download_button"))
