"""The contract every module's config and plan keeps (STYLE.md, "one contract test").

The modules and their config classes come from the registry
(:func:`qflow.core.commands.available_commands`); a module is planned on small
inputs from :data:`SMALL_INPUTS` when it has an entry there, else on its
bundled samples.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at
import numpy as np
import pandas as pd
import pytest

from qflow.attention import plan_attention
from qflow.compression import compress_tensors, plan_compress, plan_decompress
from qflow.core.commands import ModuleCommand, available_commands
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.plan import PLAN_SCHEMA, Plan
from qflow.energy import EnergyInputs, parse_jobs, parse_telemetry, parse_topology, plan_energy
from qflow.hpo import plan_hpo
from qflow.nvlink import plan_nvlink
from qflow.routing import plan_routing

ROOT = Path(__file__).resolve().parents[2]


def routing_inputs() -> tuple[Any, ...]:
    rng = np.random.default_rng(0)
    tokens = pd.DataFrame(rng.dirichlet(np.ones(3), size=12), columns=["score_0", "score_1", "score_2"])
    tokens.insert(0, "token_id", [f"t{i}" for i in range(12)])
    tokens.insert(1, "source", ["n0", "n1"] * 6)
    graph = {"nodes": [{"id": "n0"}, {"id": "n1"}],
             "experts": [{"id": "e0", "node": "n0"}, {"id": "e1", "node": "n0"}, {"id": "e2", "node": "n1"}]}
    return tokens, graph


def attention_inputs() -> tuple[Any, ...]:
    embeddings = np.random.default_rng(0).normal(size=(48, 16)).astype(np.float32)
    return embeddings, None  # no layer weights


def hpo_inputs() -> tuple[Any, ...]:
    space = {"x": {"kind": "float", "low": 0, "high": 1}, "y": {"kind": "categorical", "choices": ["a", "b"]}}
    return space, None  # no history


def nvlink_inputs() -> tuple[Any, ...]:
    fabric = {"nodes": [{"id": f"g{i}", "kind": "gpu"} for i in range(4)] + [{"id": "sw", "kind": "nvswitch"}],
              "links": [{"source": f"g{i}", "target": "sw", "bandwidth_gbps": 400} for i in range(4)]}
    return fabric, {"jobs": [{"id": "a", "ranks": 4, "pattern": "all_to_all", "bytes": 1e6}]}


def energy_inputs() -> tuple[Any, ...]:
    topology = parse_topology({"nodes": [{"id": "n0", "gpus": 2, "min_clock_mhz": 500, "max_clock_mhz": 1500,
                                          "gpu_power_limit_w": 400}]})
    stamps = pd.date_range("2026-01-01", periods=12, freq="h", tz="UTC")
    telemetry = parse_telemetry(pd.DataFrame({"timestamp": stamps, "node": "n0", "gpu": "g0",
                                              "power_w": np.linspace(100, 300, 12)}), topology)
    jobs = parse_jobs({"jobs": [{"id": "a", "duration": 2, "power_w": 300},
                                {"id": "b", "duration": 1, "power_w": 200, "deps": ["a"]}]}, topology)
    return (EnergyInputs(telemetry, topology, jobs),)


def compress_inputs() -> tuple[Any, ...]:
    rng = np.random.default_rng(0)
    return ({"layer.weight": rng.normal(size=(16, 32)).astype(np.float32), "layer.bias": np.zeros(16, np.float32)},)


def decompress_inputs() -> tuple[Any, ...]:
    return (compress_tensors(*compress_inputs()).container,)


#: Small valid inputs and the planner per registry entry (a module without an entry here is planned on its samples).
SMALL_INPUTS: dict[str, tuple[Callable[..., Plan], Callable[[], tuple[Any, ...]]]] = {
    "routing": (plan_routing, routing_inputs),
    "energy": (plan_energy, energy_inputs),
    "hpo": (plan_hpo, hpo_inputs),
    "attention": (plan_attention, attention_inputs),
    "nvlink": (plan_nvlink, nvlink_inputs),
    "compress": (plan_compress, compress_inputs),
    "decompress": (plan_decompress, decompress_inputs),
}


@dataclass(frozen=True)
class Module:
    """One registry entry as the contract sees it: ``plan(config mapping) -> Plan``."""

    name: str
    config: type[QflowConfig]
    plan: Callable[[Mapping[str, Any]], Plan]


def contract_module(command: ModuleCommand) -> Module:
    """The command's planner on its small inputs, else ``command.run`` on its bundled samples."""
    if command.name in SMALL_INPUTS:
        planner, inputs = SMALL_INPUTS[command.name]
        return Module(command.name, command.config_cls, lambda config: planner(*inputs(), config))
    files = {spec.name: None if spec.sample is None else ROOT / spec.sample for spec in command.input_specs}
    return Module(command.name, command.config_cls,
                  lambda config: command.run(files, command.config_cls.from_mapping(config), None))


MODULES = [pytest.param(contract_module(command), id=command.name) for command in available_commands()]
CONFIGS = [pytest.param(command.config_cls, id=command.name) for command in available_commands()]


def test_the_registry_is_what_is_tested() -> None:
    """Every module with small inputs here is registered (a renamed command must not silently drop out)."""
    assert set(SMALL_INPUTS) <= {command.name for command in available_commands()}


def numeric_fields(config: type[QflowConfig]) -> list[str]:
    return [name for name, f in config.model_fields.items() if f.annotation in (int, float)]


def without_speeds(value: Any) -> Any:
    """``value`` without throughput figures (``compress_mb_per_s``...): measured, so they differ run to run."""
    if isinstance(value, dict):
        return {key: without_speeds(item) for key, item in value.items() if not key.endswith("_per_s")}
    if isinstance(value, list):
        return [without_speeds(item) for item in value]
    return value


def bounds(config: type[QflowConfig], name: str) -> tuple[Any, Any]:
    lower = upper = None
    for item in config.model_fields[name].metadata:
        if isinstance(item, at.Ge | at.Gt):
            lower = item
        if isinstance(item, at.Le | at.Lt):
            upper = item
    return lower, upper


def outside(config: type[QflowConfig], name: str) -> list[Any]:
    """Values just outside each bound of a numeric field."""
    lower, upper = bounds(config, name)
    step = 1 if config.model_fields[name].annotation is int else 1e-6
    values = []
    if isinstance(lower, at.Ge):
        values.append(lower.ge - step)
    elif isinstance(lower, at.Gt):
        values.append(lower.gt)
    if isinstance(upper, at.Le):
        values.append(upper.le + step)
    elif isinstance(upper, at.Lt):
        values.append(upper.lt)
    return values


@pytest.mark.parametrize("config", CONFIGS)
class TestConfigContract:
    def test_every_field_described(self, config):
        missing = [n for n, f in config.model_fields.items() if not (f.description or "").strip()]
        assert missing == []

    def test_numeric_fields_bounded_both_ways(self, config):
        assert numeric_fields(config)
        for name in numeric_fields(config):
            lower, upper = bounds(config, name)
            assert lower is not None and upper is not None, name

    def test_every_field_typed_simply(self, config):
        for name, f in config.model_fields.items():
            kind = typing.get_origin(f.annotation)
            assert f.annotation in (bool, int, float, str) or kind is typing.Literal, (name, f.annotation)
            assert not isinstance(f.annotation, types.UnionType), name

    def test_defaults_are_valid_and_round_trip(self, config):
        default = config()
        assert config.from_mapping(default.model_dump()) == default
        assert config.from_mapping(None) == default

    def test_out_of_bounds_rejected_naming_the_field(self, config):
        checked = 0
        for name in numeric_fields(config):
            for bad in outside(config, name):
                with pytest.raises(InputError, match=rf"^routing\.yaml: config\.{name}: invalid value; expected ") as info:
                    config.from_mapping({name: bad}, "routing.yaml")
                assert info.value.field == f"config.{name}"
                checked += 1
        assert checked >= 2 * len(numeric_fields(config)) - 1  # at most one open end

    def test_bounds_are_inclusive_where_declared(self, config):
        for name in numeric_fields(config):
            lower, upper = bounds(config, name)
            if isinstance(lower, at.Ge) and isinstance(upper, at.Le):
                assert getattr(config.from_mapping({name: lower.ge}), name) == lower.ge
                assert getattr(config.from_mapping({name: upper.le}), name) == upper.le

    def test_wrong_types_rejected(self, config):
        for name, f in config.model_fields.items():
            bad = "maybe" if f.annotation is bool else [1] if f.annotation in (int, float) else math.nan
            with pytest.raises(InputError, match=rf"config\.{name}: "):
                config.from_mapping({name: bad})

    def test_non_finite_rejected(self, config):
        for name in numeric_fields(config):
            for bad in (math.nan, math.inf):
                with pytest.raises(InputError, match=rf"config\.{name}: "):
                    config.from_mapping({name: bad})

    def test_unknown_field_rejected(self, config):
        with pytest.raises(InputError, match=r"^c\.yaml: config\.no_such_toggle: unknown field; expected one of the documented fields"):
            config.from_mapping({"no_such_toggle": True}, "c.yaml")

    def test_toggles_are_the_bool_fields(self, config):
        assert config.toggles() == [n for n, f in config.model_fields.items() if f.annotation is bool]

    def test_seed_field(self, config):
        assert config().seed == 0
        with pytest.raises(InputError, match=r"config\.seed"):
            config.from_mapping({"seed": -1})


@pytest.mark.parametrize("module", MODULES)
class TestPlanContract:
    def test_envelope(self, module):
        plan = module.plan({"seed": 3})
        data = plan.to_dict()
        assert data["schema"] == PLAN_SCHEMA and data["module"] == module.name
        assert {"inputs", "config", "solver", "result", "metrics", "baselines", "timings_s", "created_at"} <= set(data)
        assert all(len(d["sha256"]) == 64 for d in data["inputs"])
        assert data["solver"]["ran"] and data["solver"]["requested"]

    def test_json_round_trip(self, module):
        plan = module.plan({"seed": 3})
        assert Plan.from_json(plan.to_json()) == plan

    def test_config_echoed_with_defaults(self, module):
        plan = module.plan({"seed": 3})
        expected = module.config(seed=3).model_dump()
        assert plan.config == expected
        assert set(plan.config) == set(module.config.model_fields)

    def test_same_seed_same_plan(self, module):
        first, second = (without_speeds(module.plan({"seed": 5}).to_dict()) for _ in range(2))
        for volatile in ("created_at", "timings_s"):
            first.pop(volatile), second.pop(volatile)
        assert first == second

    def test_bad_config_value_names_field(self, module):
        with pytest.raises(InputError, match=r"config\.seed"):
            module.plan({"seed": -5})
