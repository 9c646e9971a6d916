"""The routing plan as a document: inputs and digests, config echo, determinism, round trip, front-end hooks."""

from __future__ import annotations

import hashlib
import json

import networkx as nx
import pytest
import yaml
from routing_helpers import make_graph, make_tokens

from qflow.core.errors import InputError
from qflow.core.plan import Plan
from qflow.routing import RoutingConfig, load_routing_inputs, plan_routing

QAOA_SMALL = {"qaoa": True, "hqc": True, "max_qubits": 6, "qaoa_steps": 8, "qaoa_blocks": 1}


def without_volatile(plan: Plan) -> dict:
    data = plan.to_dict()
    data.pop("created_at")
    data.pop("timings_s")
    return data


@pytest.fixture
def files(tmp_path):
    tokens = make_tokens(30, 4, seed=21, heavy=0.2, padding=0.1)
    graph = make_graph(2, 2, links=True)
    tokens_path, graph_path = tmp_path / "tokens.csv", tmp_path / "model_graph.json"
    tokens.to_csv(tokens_path, index=False)
    graph_path.write_text(json.dumps(graph))
    return tokens, graph, tokens_path, graph_path


class TestInputs:
    def test_file_digests_are_sha256_of_the_bytes(self, files):
        _, _, tokens_path, graph_path = files
        frame, graph, digests = load_routing_inputs(tokens_path, graph_path)
        assert [d.name for d in digests] == ["tokens", "model_graph"]
        assert digests[0].sha256 == hashlib.sha256(tokens_path.read_bytes()).hexdigest()
        assert digests[1].sha256 == hashlib.sha256(graph_path.read_bytes()).hexdigest()
        assert (digests[0].rows, digests[0].source, digests[1].source) == (30, "tokens.csv", "model_graph.json")
        plan = plan_routing(frame, graph, None, digests=digests)
        assert plan.inputs == digests

    def test_errors_name_the_file(self, files, tmp_path):
        tokens, _, _, graph_path = files
        bad = tmp_path / "bad_tokens.csv"
        tokens.assign(complexity=[1] * 29 + [-2]).to_csv(bad, index=False)
        frame, graph, digests = load_routing_inputs(bad, graph_path)
        with pytest.raises(InputError, match=r"^bad_tokens\.csv: complexity\[row 29\]: not positive"):
            plan_routing(frame, graph, None, digests=digests)

    def test_json_tokens_and_yaml_graph_give_the_same_plan(self, files, tmp_path):
        tokens, graph, tokens_path, graph_path = files
        (tmp_path / "tokens.json").write_text(json.dumps({"tokens": json.loads(tokens.to_json(orient="records"))}))
        (tmp_path / "graph.yaml").write_text(yaml.safe_dump(graph))
        plans = [plan_routing(*load_routing_inputs(t, g)[:2]) for t, g in
                 [(tokens_path, graph_path), (tmp_path / "tokens.json", tmp_path / "graph.yaml")]]
        assert plans[0].result == plans[1].result

    def test_node_link_graph_gives_the_same_plan(self, files):
        tokens, graph, _, _ = files
        g = nx.Graph()
        for node in graph["nodes"]:
            g.add_node(node["id"], gpus=node["gpus"])
        for link in graph["links"]:
            g.add_edge(link["source"], link["target"], bandwidth_gbps=link["bandwidth_gbps"])
        for expert in graph["experts"]:
            g.add_node(expert["id"], kind="expert")
            g.add_edge(expert["id"], expert["node"])
        native = plan_routing(tokens, graph)
        assert plan_routing(tokens, g).result["assignments"] == native.result["assignments"]
        assert plan_routing(tokens, nx.node_link_data(g, edges="links")).result["assignments"] == native.result["assignments"]

    def test_in_memory_digests_follow_the_content(self):
        tokens, graph = make_tokens(20, 4, seed=1), make_graph(2, 2)
        base = plan_routing(tokens, graph).inputs
        assert [d.name for d in base] == ["tokens", "model_graph"]
        assert all(len(d.sha256) == 64 for d in base) and base[0].rows == 20
        records = plan_routing(tokens.to_dict("records"), graph).inputs
        assert records[0].sha256 == base[0].sha256
        changed = plan_routing(tokens.assign(score_0=tokens["score_0"] * 0.5), graph).inputs
        assert changed[0].sha256 != base[0].sha256 and changed[1].sha256 == base[1].sha256
        regraphed = plan_routing(tokens, make_graph(2, 2, links=True)).inputs
        assert regraphed[0].sha256 == base[0].sha256 and regraphed[1].sha256 != base[1].sha256


class TestEnvelope:
    def test_schema_and_config_echo(self):
        given = {"capacity_factor": 1.5, "locality_weight": 0.4, "seed": 9}
        plan = plan_routing(make_tokens(20, 4, seed=2), make_graph(2, 2), given)
        assert plan.to_dict()["schema"] == "qflow.plan/v1" and plan.module == "routing"
        assert plan.config == RoutingConfig(**given).model_dump()
        assert plan.config["qaoa_layers"] == RoutingConfig.model_fields["qaoa_layers"].default

    def test_config_object_and_mapping_agree(self):
        tokens, graph = make_tokens(20, 4, seed=2), make_graph(2, 2)
        a = plan_routing(tokens, graph, RoutingConfig(capacity_factor=0.9))
        b = plan_routing(tokens, graph, {"capacity_factor": 0.9})
        assert without_volatile(a) == without_volatile(b)

    @pytest.mark.parametrize("extra", [{}, {"deterministic_fallback": True}, {"capacity_factor": 0.6}])
    def test_round_trip(self, extra):
        plan = plan_routing(make_tokens(40, 4, seed=3, heavy=0.3, padding=0.1), make_graph(2, 2, links=True), extra)
        again = Plan.from_json(plan.to_json())
        assert again == plan
        assert again.to_json() == plan.to_json()

    @pytest.mark.quantum
    def test_round_trip_and_determinism_with_qaoa(self):
        tokens, graph = make_tokens(24, 4, seed=2, skew=1.0), make_graph(2, 2)
        first = plan_routing(tokens, graph, {**QAOA_SMALL, "seed": 4})
        second = plan_routing(tokens, graph, {**QAOA_SMALL, "seed": 4})
        assert first.solver.quantum is not None
        assert Plan.from_json(first.to_json()) == first
        assert without_volatile(first) == without_volatile(second)

    @pytest.mark.parametrize("extra", [{}, {"deterministic_fallback": True}])
    def test_same_seed_same_plan(self, extra):
        tokens, graph = make_tokens(64, 8, 2, seed=4, heavy=0.2), make_graph(2, 4, links=True)
        plans = [plan_routing(tokens, graph, {"seed": 11, "capacity_factor": 1.0, **extra}) for _ in range(2)]
        assert without_volatile(plans[0]) == without_volatile(plans[1])
        assert set(plans[0].timings_s) >= {"validate", "route"}

    def test_baselines(self):
        tokens, graph = make_tokens(40, 4, seed=5, skew=2.0), make_graph(2, 2)
        plan = plan_routing(tokens, graph, {"capacity_factor": 1.0})
        assert set(plan.baselines) == {"hash", "top1_gating", "greedy_balanced"}
        for name, metrics in plan.baselines.items():
            assert metrics["tokens_routed"] + metrics["dropped_tokens"] == 40, name
        assert plan.baselines["top1_gating"]["capacity_violations"] == 0
        assert plan.baselines["top1_gating"]["dropped_tokens"] >= plan.metrics["dropped_tokens"]
        assert plan_routing(tokens, graph, {"baselines": False}).baselines == {}

    def test_result_maps(self):
        tokens, graph = make_tokens(30, 4, seed=6), make_graph(2, 2)
        plan = plan_routing(tokens.assign(source=[None] * 5 + list(tokens["source"][5:])), graph, {"capacity_factor": 2.0})
        result = plan.result
        assert result["expert_node"] == {"e0": "n0", "e1": "n0", "e2": "n1", "e3": "n1"}
        assert result["node_ids"] == ["n0", "n1"]
        assert sum(map(sum, result["node_traffic_tokens"])) == 25  # routed tokens with a known source
        assert any("5 tokens have no source" in note for note in plan.diagnostics)

    def test_exact_optimum_skipped_above_limit(self):
        plan = plan_routing(make_tokens(30, 4, seed=7), make_graph(2, 2), {"exact_max_tokens": 10})
        assert plan.metrics["affinity_gap_to_optimum"] is None and plan.metrics["optimum_kind"] is None
        assert any("exact optimum skipped: 30 tokens > exact_max_tokens=10" in note for note in plan.diagnostics)
        assert plan.metrics["objective_upper_bound"] >= plan.metrics["objective"] - 1e-6

    def test_progress_reports_until_done(self):
        seen = []
        plan_routing(make_tokens(20, 4, seed=8), make_graph(2, 2), None, progress=lambda f, m: seen.append((f, m)))
        fractions = [f for f, _ in seen]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert all(isinstance(m, str) and m for _, m in seen)


class TestTokenIdsKept:
    def test_csv_token_ids_as_written(self, tmp_path):
        path = tmp_path / "tokens.csv"
        path.write_text("token_id,score_0,score_1\n007,0.9,0.1\n010,0.1,0.9\n")
        graph = {"experts": [{"id": "e0", "node": "n"}, {"id": "e1", "node": "n"}]}
        frame, _, _ = load_routing_inputs(path, json.dumps(graph).encode())
        plan = plan_routing(frame, graph, {"capacity_factor": 2.0})
        assert plan.result["assignments"] == {"007": "e0", "010": "e1"}
