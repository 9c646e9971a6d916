"""Input validation of plan_routing: every bad input is an InputError naming its field."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from qflow.core.errors import InputError
from qflow.routing import RoutingConfig, parse_model_graph, plan_routing

GRAPH = {
    "nodes": [{"id": "n0", "gpus": ["g0", "g1"]}, {"id": "n1", "gpus": ["g2"]}],
    "experts": [{"id": "e0", "node": "n0"}, {"id": "e1", "node": "n0"}, {"id": "e2", "node": "n1"}],
}


def good_tokens(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=n)
    frame = pd.DataFrame(p, columns=["score_0", "score_1", "score_2"])
    frame.insert(0, "token_id", [f"t{i}" for i in range(n)])
    frame.insert(1, "source", ["n0", "n1", "g2", "g0", "n0", "n1"][:n])
    frame.insert(2, "complexity", [1.0] * n)
    return frame


def raises_for(tokens, graph=GRAPH, config=None, *, field: str, source: str = "tokens") -> InputError:
    with pytest.raises(InputError) as info:
        plan_routing(tokens, graph, config)
    err = info.value
    assert err.source == source
    assert err.field == field
    assert str(err).startswith(f"{source}: {field}: ")
    assert "expected" in str(err)
    return err


def test_good_input_plans():
    plan = plan_routing(good_tokens(), GRAPH, {"capacity_factor": 2.0})
    assert set(plan.result["assignments"]) == {f"t{i}" for i in range(6)}


class TestTokenColumns:
    def test_missing_token_id_column(self):
        tokens = good_tokens().rename(columns={"token_id": "id"})
        err = raises_for(tokens, field="token_id")
        assert "missing column" in str(err)

    def test_duplicate_token_id_names_the_row(self):
        tokens = good_tokens()
        tokens.loc[4, "token_id"] = "t1"
        err = raises_for(tokens, field="token_id[row 4]")
        assert "duplicate token id" in str(err) and "t1" in str(err)

    def test_empty_token_id(self):
        tokens = good_tokens()
        tokens.loc[2, "token_id"] = None
        raises_for(tokens, field="token_id[row 2]")

    def test_no_rows(self):
        with pytest.raises(InputError, match=r"tokens: \(rows\): no tokens"):
            plan_routing(good_tokens().iloc[:0], GRAPH)

    def test_not_a_table(self):
        with pytest.raises(InputError, match=r"tokens: \(top level\): wrong type.*DataFrame"):
            plan_routing("t0,t1", GRAPH)

    @pytest.mark.parametrize("bad", [0, -1.5])
    def test_non_positive_complexity(self, bad):
        tokens = good_tokens()
        tokens.loc[3, "complexity"] = bad
        err = raises_for(tokens, field="complexity[row 3]")
        assert "not positive" in str(err) and "positive" in err.expected

    @pytest.mark.parametrize("bad", [1e308, 1e7, 1e-300])
    def test_absurd_complexity(self, bad):
        """Two tokens of 1e308 would sum to inf (and crash the exact LP); 1e-300 vanishes in float32."""
        tokens = good_tokens()
        tokens.loc[3, "complexity"] = bad
        tokens.loc[4, "complexity"] = bad
        err = raises_for(tokens, field="complexity[row 3]")
        assert "out of range" in str(err) and "1e+06" in err.expected

    @pytest.mark.parametrize("column", ["complexity", "score_1"])
    def test_integer_beyond_float_range_in_a_column(self, column):
        tokens = good_tokens().astype({column: object})
        tokens.loc[2, column] = 10**5000
        err = raises_for(tokens, field=f"{column}[row 2]")
        assert "5000 digits" in str(err) and len(str(err)) < 300

    def test_integer_beyond_float_range_in_a_scores_list(self):
        records = [{"token_id": f"t{i}", "scores": [0.2, 0.3, 10**5000 if i == 1 else 0.5]} for i in range(3)]
        err = raises_for(records, field="scores[row 1]")
        assert "beyond float range" in str(err)

    def test_huge_integer_capacity_is_not_printed(self):
        graph = {"nodes": GRAPH["nodes"], "experts": [*GRAPH["experts"][:2], {"id": "e2", "node": "n1", "capacity": 10**5000}]}
        err = raises_for(good_tokens(), graph, field="experts[2].capacity", source="model_graph")
        assert len(str(err)) < 300 and "5000 digits" in str(err)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, "heavy"])
    def test_non_finite_complexity(self, bad):
        tokens = good_tokens().astype({"complexity": object})
        tokens.loc[1, "complexity"] = bad
        err = raises_for(tokens, field="complexity[row 1]")
        assert "not a finite number" in str(err)

    @pytest.mark.parametrize("bad", ["maybe", 2])
    def test_bad_padding_value(self, bad):
        tokens = good_tokens().assign(padding=[False] * 6).astype({"padding": object})
        tokens.loc[5, "padding"] = bad
        err = raises_for(tokens, field="padding[row 5]")
        assert "not a boolean" in str(err) and "true/false" in str(err)

    def test_padding_accepts_text_booleans(self):
        tokens = good_tokens().assign(padding=["yes", "no", "", "false", "1", "0"])
        plan = plan_routing(tokens, GRAPH, {"capacity_factor": 2.0})
        assert plan.result["padding_token_ids"] == ["t0", "t4"]


class TestScores:
    def test_missing_score_column(self):
        tokens = good_tokens().drop(columns=["score_2"])
        err = raises_for(tokens, field="score_*")
        assert "wrong number of score columns" in str(err)
        assert "score_0..score_2 for 3 experts" in str(err) and "missing score_2" in str(err)

    def test_extra_score_column(self):
        tokens = good_tokens().assign(score_3=0.0)
        err = raises_for(tokens, field="score_*")
        assert "got 4 columns" in str(err)

    def test_score_columns_and_scores_list_together(self):
        tokens = good_tokens().assign(scores=[[0.2, 0.3, 0.5]] * 6)
        raises_for(tokens, field="scores")

    def test_scores_list_of_wrong_length(self):
        tokens = good_tokens().drop(columns=["score_0", "score_1", "score_2"])
        tokens["scores"] = [[0.2, 0.3, 0.5]] * 6
        tokens.at[2, "scores"] = [0.5, 0.5]
        err = raises_for(tokens, field="scores[row 2]")
        assert "wrong length" in str(err) and "a list of 3 numbers" in str(err)

    def test_scores_text_not_json(self):
        tokens = good_tokens().drop(columns=["score_0", "score_1", "score_2"])
        tokens["scores"] = ["[0.2, 0.3, 0.5]"] * 6
        tokens.at[0, "scores"] = "0.2;0.3;0.5"
        raises_for(tokens, field="scores[row 0]")

    def test_non_finite_score(self):
        tokens = good_tokens()
        tokens.loc[4, "score_1"] = np.nan
        raises_for(tokens, field="score_1[row 4]")

    def test_scores_as_json_text_are_accepted(self):
        tokens = good_tokens().drop(columns=["score_0", "score_1", "score_2"])
        tokens["scores"] = ["[0.7, 0.2, 0.1]"] * 6
        plan = plan_routing(tokens, GRAPH, {"capacity_factor": 3.0, "locality_weight": 0.0})
        assert plan.result["score_kind"] == "probabilities"
        assert set(plan.result["assignments"].values()) == {"e0"}


class TestSourcesAndHints:
    def test_unknown_source_node(self):
        tokens = good_tokens()
        tokens.loc[2, "source"] = "n9"
        err = raises_for(tokens, field="source[row 2]")
        assert "unknown node or GPU" in str(err) and "n9" in str(err)

    def test_gpu_ids_resolve_to_their_node(self):
        tokens = good_tokens().assign(source=["g0", "g1", "g2", "n0", "n1", None])
        plan = plan_routing(tokens, GRAPH, {"capacity_factor": 2.0})
        traffic_from = [sum(row) for row in plan.result["node_traffic_tokens"]]
        assert traffic_from == [3, 2]  # g0, g1, n0 on n0; g2, n1 on n1; the None source is not counted

    def test_unknown_hint(self):
        tokens = good_tokens().assign(hint=["", "e1", "e7", None, "", ""])
        err = raises_for(tokens, field="hint[row 2]")
        assert "unknown expert" in str(err) and "e7" in str(err)

    def test_hint_steers_a_token(self):
        tokens = good_tokens().assign(score_0=1 / 3, score_1=1 / 3, score_2=1 / 3, source=None)
        tokens["hint"] = ["e2", "e0", "e1", "e2", "e0", "e1"]
        plan = plan_routing(tokens, GRAPH, {"capacity_factor": 3.0, "hint_bonus": 0.5})
        assert list(plan.result["assignments"].values()) == ["e2", "e0", "e1", "e2", "e0", "e1"]


class TestModelGraph:
    def test_graph_without_experts(self):
        graph = {"nodes": [{"id": "n0"}]}
        err = raises_for(good_tokens(), graph, field="experts", source="model_graph")
        assert "missing field" in str(err)

    def test_empty_expert_list(self):
        raises_for(good_tokens(), {"nodes": [{"id": "n0"}], "experts": []}, field="experts", source="model_graph")

    def test_expert_on_unknown_node(self):
        graph = {"nodes": GRAPH["nodes"], "experts": [*GRAPH["experts"][:2], {"id": "e2", "node": "n5"}]}
        err = raises_for(good_tokens(), graph, field="experts[2].node", source="model_graph")
        assert "unknown node" in str(err) and "n5" in str(err)

    def test_expert_without_node(self):
        graph = {"nodes": GRAPH["nodes"], "experts": [{"id": "e0"}]}
        raises_for(good_tokens(), graph, field="experts[0].node", source="model_graph")

    def test_duplicate_expert_id(self):
        graph = {"nodes": GRAPH["nodes"], "experts": [{"id": "e0", "node": "n0"}, {"id": "e0", "node": "n1"}]}
        raises_for(good_tokens(), graph, field="experts[1].id", source="model_graph")

    @pytest.mark.parametrize("cap", [0, -3, "lots", math.inf])
    def test_bad_expert_capacity(self, cap):
        graph = {"nodes": GRAPH["nodes"], "experts": [*GRAPH["experts"][:2], {"id": "e2", "node": "n1", "capacity": cap}]}
        raises_for(good_tokens(), graph, field="experts[2].capacity", source="model_graph")

    @pytest.mark.parametrize(
        ("link", "field"),
        [
            ({"source": "n0", "target": "nX"}, "links[0].target"),
            ({"source": "n0", "target": "n1", "bandwidth_gbps": 0}, "links[0].bandwidth_gbps"),
            ({"source": "n0", "target": "n1", "bandwidth_gbps": "fast"}, "links[0].bandwidth_gbps"),
            # Ratios of bandwidths become distances: a vanishing one would make them infinite.
            ({"source": "n0", "target": "n1", "bandwidth_gbps": 1e-300}, "links[0].bandwidth_gbps"),
            ({"source": "n0", "target": "n1", "bandwidth_gbps": 1e300}, "links[0].bandwidth_gbps"),
        ],
    )
    def test_bad_link(self, link, field):
        graph = {**GRAPH, "links": [link]}
        raises_for(good_tokens(), graph, field=field, source="model_graph")

    def test_node_link_graph_is_accepted(self):
        import networkx as nx

        g = nx.Graph()
        g.add_node("n0")
        g.add_node("n1")
        g.add_edge("n0", "n1", bandwidth_gbps=100.0)
        for k, node in enumerate(["n0", "n0", "n1"]):
            g.add_node(f"e{k}", kind="expert")
            g.add_edge(f"e{k}", node)
        parsed = parse_model_graph(g)
        assert parsed.expert_ids == ["e0", "e1", "e2"]
        assert [parsed.node_ids[i] for i in parsed.expert_node] == ["n0", "n0", "n1"]

    def test_expert_capacity_limit_caps_capacity(self):
        graph = {"nodes": GRAPH["nodes"], "experts": [*GRAPH["experts"][:2], {"id": "e2", "node": "n1", "capacity": 1}]}
        plan = plan_routing(good_tokens(), graph, {"capacity_factor": 2.0})
        assert plan.result["expert_capacity"] == {"e0": 4.0, "e1": 4.0, "e2": 1.0}


class TestConfigValues:
    @pytest.mark.parametrize("bad", [0, -1, -0.5, "big", None, [1.25]])
    def test_bad_capacity_factor_via_from_mapping(self, bad):
        with pytest.raises(InputError, match=r"^routing\.yaml: config\.capacity_factor: ") as info:
            RoutingConfig.from_mapping({"capacity_factor": bad}, "routing.yaml")
        assert info.value.field == "config.capacity_factor"
        assert info.value.expected

    @pytest.mark.parametrize("bad", [0, -2.0, "x"])
    def test_bad_capacity_factor_via_plan_routing(self, bad):
        with pytest.raises(InputError, match=r"config: config\.capacity_factor: invalid value; expected a number") as info:
            plan_routing(good_tokens(), GRAPH, {"capacity_factor": bad})
        assert info.value.field == "config.capacity_factor"

    def test_out_of_range_message_states_bound_and_value(self):
        with pytest.raises(InputError, match=r"expected a number > 0(\.0)?, got -1$"):
            RoutingConfig.from_mapping({"capacity_factor": -1})
        with pytest.raises(InputError, match=r"expected a number <= 64(\.0)?, got 65$"):
            RoutingConfig.from_mapping({"capacity_factor": 65})

    def test_unknown_config_field(self):
        with pytest.raises(InputError, match=r"config\.capacity_factr: unknown field") as info:
            plan_routing(good_tokens(), GRAPH, {"capacity_factr": 1.0})
        assert info.value.expected == "one of the documented fields"

    def test_config_not_a_mapping(self):
        with pytest.raises(InputError, match=r"config: config: not a mapping"):
            RoutingConfig.from_mapping([("capacity_factor", 1.0)])

    def test_assignment_is_validated(self):
        config = RoutingConfig()
        with pytest.raises(ValueError, match="capacity_factor"):
            config.capacity_factor = 0

    def test_with_updates_validates(self):
        config = RoutingConfig(capacity_factor=1.5)
        assert config.with_updates(qaoa=True).capacity_factor == 1.5
        with pytest.raises(InputError, match=r"config\.qaoa_layers"):
            config.with_updates(qaoa_layers=0)

    def test_input_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            RoutingConfig.from_mapping({"seed": -1})


class TestValidInputsAccepted:
    """Well-formed inputs that must plan, not raise."""

    def test_numeric_node_ids_with_a_missing_source(self):
        from qflow.routing import load_routing_inputs

        csv = b"token_id,source,score_0,score_1\na,0,0.5,0.5\nb,,0.2,0.8\nc,1,0.9,0.1\n"
        graph = b'{"nodes": [{"id": 0}, {"id": 1}], "experts": [{"id": "e0", "node": 0}, {"id": "e1", "node": 1}]}'
        frame, graph_data, _ = load_routing_inputs(csv, graph)
        plan = plan_routing(frame, graph_data, {"capacity_factor": 2.0, "locality_weight": 1.0})
        assert plan.result["assignments"] == {"a": "e0", "b": "e1", "c": "e1"}

    def test_numeric_expert_ids_with_a_missing_hint(self):
        graph = {"experts": [{"id": 10, "node": "n"}, {"id": 20, "node": "n"}]}
        tokens = pd.DataFrame({"token_id": ["a", "b", "c"], "hint": [20, None, 10]})
        plan = plan_routing(tokens, graph, {"capacity_factor": 3.0})
        assert plan.result["assignments"]["a"] == "20" and plan.result["assignments"]["c"] == "10"

    def test_all_padding(self):
        tokens = good_tokens().assign(padding=True)
        with pytest.raises(InputError, match=r"^tokens: padding: every token is padding; expected at least one token to route$"):
            plan_routing(tokens, GRAPH)
