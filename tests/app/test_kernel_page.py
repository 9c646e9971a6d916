"""The quantum kernel page under AppTest: Run on the sample features, the alignment figures and the heatmap."""

from __future__ import annotations

from page_helpers import chart_specs, click_run, open_page


def test_run_on_the_sample_draws_the_matrix_and_both_alignments() -> None:
    at = open_page("kernel")
    click_run(at, "kernel")
    assert not at.exception and not at.error
    plan = at.session_state["kernel_run"].plan
    assert plan["module"] == "kernel" and len(plan["result"]["matrix"]) == 48
    labels = [m.label for m in at.metric]
    assert "alignment (quantum)" in labels and "alignment (RBF)" in labels
    specs = chart_specs(at)
    assert specs and specs[0]["data"][0]["type"] == "heatmap"
