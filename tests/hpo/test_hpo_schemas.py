"""Space and history validation: malformed files are InputErrors naming the field; rows outside the space are reported."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hpo_helpers import MIXED_SPACE, mixed_history

from qflow.core.errors import InputError
from qflow.hpo import parse_history, parse_space, plan_hpo


def space_error(data, field: str) -> InputError:
    with pytest.raises(InputError) as info:
        parse_space(data, "space.yaml")
    assert info.value.source == "space.yaml" and info.value.field == field
    assert str(info.value).startswith(f"space.yaml: {field}: ") and "expected" in str(info.value)
    return info.value


class TestSpace:
    def test_lower_above_upper(self):
        err = space_error({"parameters": {"lr": {"kind": "float", "low": 0.5, "high": 0.1}}}, "parameters.lr.bounds")
        assert "low=0.5, high=0.1" in str(err)

    def test_unknown_kind(self):
        err = space_error({"parameters": {"lr": {"kind": "complex", "low": 0, "high": 1}}}, "parameters.lr.kind")
        assert "one of float, int, categorical" in str(err) and "complex" in str(err)

    def test_empty_categorical(self):
        space_error({"parameters": {"act": {"kind": "categorical", "choices": []}}}, "parameters.act.choices")

    def test_log_needs_positive_bounds_and_int_needs_integer_bounds(self):
        space_error({"p": {"kind": "float", "low": 0.0, "high": 1.0, "log": True}}, "parameters.p.low")
        space_error({"p": {"kind": "int", "low": 0.5, "high": 4}}, "parameters.p.low")

    def test_list_form_and_types(self):
        space = parse_space({"parameters": [{"name": "a", "kind": "int", "bounds": [1, 3]},
                                            {"name": "b", "kind": "categorical", "choices": [True, False]}]})
        assert [p.kind for p in space.params] == ["int", "categorical"]
        assert space.params[0].from_unit(0.74) == 2 and isinstance(space.params[0].from_unit(0.74), int)


class TestHistory:
    def test_unknown_column(self):
        frame = mixed_history(3).assign(batch_size=32)
        with pytest.raises(InputError, match=r"^history\.csv: batch_size: unknown column; expected the space's parameters"):
            parse_history(frame, parse_space(MIXED_SPACE), "history.csv")

    def test_non_numeric_objective_names_the_row(self):
        frame = mixed_history(4).astype({"objective": object})
        frame.loc[2, "objective"] = "diverged"
        with pytest.raises(InputError, match=r"^history\.csv: objective\[row 2\]: not a number.*got diverged"):
            parse_history(frame, parse_space(MIXED_SPACE), "history.csv")

    def test_missing_parameter_column(self):
        with pytest.raises(InputError, match=r"history: depth: missing column"):
            parse_history(mixed_history(3).drop(columns="depth"), parse_space(MIXED_SPACE))

    def test_rows_outside_the_space_are_rejected_and_blank_objective_is_pending(self):
        frame = mixed_history(5).astype({"objective": object, "depth": float})
        frame.loc[1, "depth"] = 40
        frame.loc[2, "act"] = "swish"
        frame.loc[3, "depth"] = 3.5
        frame.loc[4, "objective"] = None
        parsed = parse_history(frame, parse_space(MIXED_SPACE))
        assert [r["row"] for r in parsed.rejected] == [1, 2, 3]
        assert "depth=40" in parsed.rejected[0]["reason"] and "swish" in parsed.rejected[1]["reason"]
        assert "not an integer" in parsed.rejected[2]["reason"]
        assert len(parsed.configs) == 1 and len(parsed.pending) == 1
        assert parsed.values[0] == pytest.approx(frame.loc[0, "objective"])

    def test_plan_reports_rejected_rows_and_does_not_use_them(self):
        frame = mixed_history(8)
        frame.loc[0, "lr"] = 5.0  # outside [1e-4, 0.1]
        frame.loc[0, "objective"] = -100.0  # would be the best by far if it were used
        plan = plan_hpo(MIXED_SPACE, frame, {"suggest": 2})
        assert plan.result["history_rejected"][0]["row"] == 0
        assert plan.metrics["n_history_used"] == 7 and plan.metrics["n_history_rejected"] == 1
        assert plan.metrics["best_value"] > -100.0
        assert any("outside the space were not used" in d for d in plan.diagnostics)

    def test_csv_text_values_are_typed(self):
        frame = pd.DataFrame({"lr": ["0.01"], "depth": ["4"], "act": ["gelu"], "dropout": ["0.2"], "objective": ["1.5"]})
        parsed = parse_history(frame, parse_space(MIXED_SPACE))
        assert parsed.configs == [{"lr": 0.01, "depth": 4, "act": "gelu", "dropout": 0.2}]
        assert isinstance(parsed.configs[0]["depth"], int) and not math.isnan(parsed.values[0])
