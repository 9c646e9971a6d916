"""Telemetry as clusters export it: Prometheus (JSON and text), nvidia-smi CSV, dcgmi dmon; bad input named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from energy_helpers import SAMPLES, chain_jobs, topology_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qflow.core.errors import InputError
from qflow.core.io import RawInput
from qflow.energy import load_energy_inputs, plan_energy
from qflow.energy._telemetry import detect_format, read_telemetry

NOT_SUPPORTED = "9223372036854775794"
T0 = 1_763_596_800  # 2025-11-20T00:00:00Z


def _files(tmp_path: Path, telemetry_name: str, telemetry: str | bytes) -> tuple[Path, Path, Path]:
    tel = tmp_path / telemetry_name
    tel.write_bytes(telemetry if isinstance(telemetry, bytes) else telemetry.encode())
    topo = tmp_path / "topology.json"
    topo.write_text(json.dumps(topology_dict()))
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"jobs": chain_jobs()}))
    return tel, topo, jobs


def _range_answer(series: list[tuple[str, dict, list]]) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": name, **labels}, "values": values} for name, labels, values in series]}})


def _dcgm_labels(node: str, gpu: int) -> dict:
    return {"gpu": str(gpu), "UUID": f"GPU-{gpu}", "device": f"nvidia{gpu}", "modelName": "NVIDIA H100 80GB HBM3",
            "Hostname": node, "instance": f"{node}:9400", "job": "dcgm-exporter"}


def _prometheus_json(steps: int = 6) -> str:
    series = []
    for node in ("n0", "n1"):
        for gpu in range(2):
            t = [T0 + 1800 * k for k in range(steps)]
            power = [[s, f"{100 + 10 * k + gpu}"] for k, s in enumerate(t)]
            if node == "n1" and gpu == 1:
                power[2][1] = NOT_SUPPORTED  # "not supported": a missing value, never 9.2e18 W
            clock = [[s, NOT_SUPPORTED if k == 1 else "1500"] for k, s in enumerate(t)]
            util = [[s, "87"] for s in t]
            series += [("DCGM_FI_DEV_POWER_USAGE", _dcgm_labels(node, gpu), power), ("DCGM_FI_DEV_SM_CLOCK", _dcgm_labels(node, gpu), clock),
                       ("DCGM_FI_DEV_GPU_UTIL", _dcgm_labels(node, gpu), util),
                       ("DCGM_FI_DEV_FB_USED", _dcgm_labels(node, gpu), [[s, "1000"] for s in t])]
    return _range_answer(series)


def test_a_prometheus_range_query_maps_dcgm_names_units_hosts_and_sentinels(tmp_path: Path) -> None:
    inputs, digests = load_energy_inputs(*_files(tmp_path, "prom.json", _prometheus_json()))
    tel, info = inputs.telemetry, inputs.telemetry_info
    assert info["format"] == "prometheus_json" and info["detected"]
    assert info["mapping"]["DCGM_FI_DEV_POWER_USAGE"].startswith("power_w (W)") and info["mapping"]["gpu"] == "gpu"
    assert info["ignored_metrics"] == {"DCGM_FI_DEV_FB_USED": 24} and info["ignored_metrics_not_listed"] == 0
    assert len(tel) == 4 * 6 - 1 and info["rows_without_power_dropped"] == 1  # the not-supported power sample
    assert tel["power_w"].max() < 200 and set(tel["node"]) == {"n0", "n1"} and set(tel["gpu"]) == {"0", "1"}
    assert tel["utilization"].max() == pytest.approx(0.87)  # percent -> 0..1
    assert tel["sm_clock_mhz"].isna().sum() == 4 and tel["sm_clock_mhz"].max() == 1500  # sentinel clocks are missing
    first = tel[(tel.node == "n0") & (tel.gpu == "1")].iloc[0]
    assert first["timestamp"].isoformat() == "2025-11-20T00:00:00+00:00" and first["power_w"] == 101
    assert digests[0].source == "prom.json"


def _exposition(energy_only: bool = False) -> str:
    lines = ["# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).", "# TYPE DCGM_FI_DEV_SM_CLOCK gauge",
             "# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).",
             "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter"]
    for k in range(5):
        ms = (T0 + 30 * k) * 1000
        for node in ("n0", "n1"):
            labels = f'gpu="0",UUID="GPU-1",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="{node}"'
            if not energy_only:
                lines.append(f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} {250 + k} {ms}")
            lines.append(f"DCGM_FI_DEV_SM_CLOCK{{{labels}}} 1980 {ms}")
            lines.append(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} {1_000_000 + 30 * 300_000 * k} {ms}")
    return "\n".join(lines) + "\n"


def test_text_scrapes_turn_the_energy_counter_into_power_when_no_power_series_exists(tmp_path: Path) -> None:
    inputs, _ = load_energy_inputs(*_files(tmp_path, "scrape.prom", _exposition(energy_only=True)))
    info, tel = inputs.telemetry_info, inputs.telemetry
    assert info["format"] == "prometheus_text" and "TOTAL_ENERGY_CONSUMPTION" in info["notes"][0]
    # 9,000,000 mJ per 30 s = 300 W; the first sample of each series has no previous one
    assert len(tel) == 2 * 4 and np.allclose(tel["power_w"], 300.0) and info["rows_without_power_dropped"] == 2
    with_power, _ = load_energy_inputs(*_files(tmp_path, "scrape2.prom", _exposition()))
    assert sorted(with_power.telemetry["power_w"].unique().tolist()) == [250, 251, 252, 253, 254]
    assert "ignored" in with_power.telemetry_info["notes"][0]


@pytest.mark.parametrize(("name", "text", "field", "problem"), [
    ("a.json", _range_answer([("DCGM_FI_DEV_GPU_UTIL", _dcgm_labels("n0", 0), [[T0, "5"], [T0 + 1, "6"], [T0 + 2, "7"]])]),
     "(series)", "no power series"),
    ("b.json", _range_answer([("DCGM_FI_DEV_POWER_USAGE", _dcgm_labels("n0", 0), [[T0, "5"], [T0 + 60, "6"], [T0 + 30, "7"]])]),
     'DCGM_FI_DEV_POWER_USAGE{Hostname="n0",instance="n0:9400",gpu="0"} (values[2])', "timestamps go backwards"),
    ("c.json", _range_answer([("DCGM_FI_DEV_POWER_USAGE", _dcgm_labels("gpu-host-9", 0), [[T0, "5"]])]),
     'DCGM_FI_DEV_POWER_USAGE{Hostname="gpu-host-9",instance="gpu-host-9:9400",gpu="0"} (values[0])', "host not in the topology"),
    ("d.prom", "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in mW).\nDCGM_FI_DEV_POWER_USAGE{gpu=\"0\",Hostname=\"n0\"} 5 1\n",
     "DCGM_FI_DEV_POWER_USAGE (line 1)", "unit mismatch"),
    ("e.prom", "DCGM_FI_DEV_POWER_USAGE{gpu=\"0\",Hostname=\"n0\"} 5\n", "line 1", "sample without a timestamp"),
])
def test_bad_prometheus_input_names_file_series_and_expectation(tmp_path: Path, name: str, text: str, field: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        load_energy_inputs(*_files(tmp_path, name, text))
    assert err.value.source == name and err.value.field == field and problem in str(err.value)
    assert len(str(err.value).splitlines()) == 1


SMI_HEADER = "timestamp, index, power.draw [W], utilization.gpu [%], clocks.sm [MHz], temperature.gpu"


def _smi(units: bool, rows: int = 4, gpus: int = 2) -> str:
    lines = [SMI_HEADER]
    for k in range(rows):
        for g in range(gpus):
            stamp = f"2026/11/20 00:{k:02d}:00.000"
            clock = "[N/A]" if (k, g) == (1, 1) else ("1980 MHz" if units else "1980")
            lines.append(f"{stamp}, {g}, {300.5 + k:.2f}{' W' if units else ''}, {90}{' %' if units else ''}, {clock}, 61")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("units", [True, False])
def test_nvidia_smi_logs_with_and_without_units_and_the_node_from_the_file_name(tmp_path: Path, units: bool) -> None:
    inputs, _ = load_energy_inputs(*_files(tmp_path, "n1.csv", _smi(units)))
    tel, info = inputs.telemetry, inputs.telemetry_info
    assert info["format"] == "nvidia_smi" and info["mapping"]["power.draw [W]"] == "power_w"
    assert info["mapping"]["(node)"] == "n1 from the file name" and set(tel["node"]) == {"n1"}
    assert len(tel) == 8 and tel["power_w"].tolist()[:2] == [300.5, 300.5] and tel["utilization"].max() == pytest.approx(0.9)
    assert tel["sm_clock_mhz"].isna().sum() == 1  # [N/A]


def test_several_nvidia_smi_files_one_per_node_and_the_node_from_config(tmp_path: Path) -> None:
    a, topo, jobs = _files(tmp_path, "n0.csv", _smi(True))
    b = tmp_path / "log-b.csv"
    b.write_text(_smi(False) + SMI_HEADER + "\n2026/11/20 00:09:00.000, 0, 310 W, 90 %, 1980 MHz, 61\n")  # appended log
    inputs, _ = load_energy_inputs([a, b], topo, jobs, telemetry_options={"telemetry_node": "n1"})
    tel = inputs.telemetry
    assert sorted(set(tel["node"])) == ["n0", "n1"] and len(tel) == 8 + 9
    assert [f["mapping"]["(node)"] for f in inputs.telemetry_info["files"]] == ["n0 from the file name", "n1 from the telemetry_node option"]
    assert inputs.telemetry_info["format"] == "nvidia_smi" and tel[tel.node == "n1"]["power_w"].max() == 310


@pytest.mark.parametrize(("edit", "field", "problem"), [
    (lambda t: t.replace("302.50 W", "0.3025 kW", 1), "power.draw [W][row 4]", "mixed units"),
    (lambda t: t.replace("2026/11/20 00:03:00.000, 1", "2026/11/20 00:00:30.000, 1", 1), "timestamp[row 7] (series n0/1)",
     "timestamps go backwards"),
    (lambda t: t.replace("power.draw [W]", "power.draw [mW]", 1), "power.draw [mW]", "unit mismatch"),
])
def test_bad_nvidia_smi_logs_name_the_row(tmp_path: Path, edit, field: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        load_energy_inputs(*_files(tmp_path, "n0.csv", edit(_smi(True))))
    assert err.value.field == field and problem in str(err.value)


def test_an_nvidia_smi_log_with_no_way_to_know_its_node_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no node for this log"):
        load_energy_inputs(*_files(tmp_path, "gpu-log.csv", _smi(True)))


DMON = """#Entity   POWER  GPUTL  SMCLK  TMPTR
ID        W      %      MHZ    C
GPU 0     250.1  90     1980   60
GPU 1     N/A    88     1980   61
GPU 0     251.1  90     1965   60
GPU 1     252.0  88     1980   61
#Entity   POWER  GPUTL  SMCLK  TMPTR
ID        W      %      MHZ    C
GPU 0     253.1  90     1980   60
GPU 1     254.0  88     1980   61
"""


def test_dcgmi_dmon_output_is_placed_in_time_by_the_configured_interval(tmp_path: Path) -> None:
    files = _files(tmp_path, "n0.txt", DMON)
    options = {"telemetry_interval_s": 60, "telemetry_start_s": 1_795_161_600}  # 2026-11-20T08:00:00Z
    inputs, _ = load_energy_inputs(*files, telemetry_options=options)
    tel, info = inputs.telemetry, inputs.telemetry_info
    assert info["format"] == "dcgmi_dmon" and info["mapping"]["POWER"].startswith("DCGM_FI_DEV_POWER_USAGE -> power_w")
    assert len(tel) == 5 and info["rows_without_power_dropped"] == 1
    last = tel.iloc[-1]
    assert (last["gpu"], last["power_w"], last["timestamp"].isoformat()) == ("1", 254.0, "2026-11-20T08:02:00+00:00")
    with pytest.raises(InputError, match="telemetry_interval_s"):
        load_energy_inputs(*files)
    with pytest.raises(InputError, match=r"SMCLK \(line 2\): mixed units"):
        load_energy_inputs(*_files(tmp_path, "n0.txt", DMON.replace("MHZ", "GHZ", 1)), telemetry_options=options)


def test_detection_and_the_bundled_dcgm_sample_gives_the_same_frame_and_plan_as_the_csv() -> None:
    csv_inputs, _ = load_energy_inputs(SAMPLES / "telemetry.csv", SAMPLES / "topology.json", SAMPLES / "jobs.json")
    dcgm_inputs, _ = load_energy_inputs(SAMPLES / "telemetry_dcgm.json", SAMPLES / "topology.json", SAMPLES / "jobs.json")
    a, b = csv_inputs.telemetry, dcgm_inputs.telemetry
    assert len(a) == len(b) and np.allclose(a["power_w"], b["power_w"]) and np.allclose(a["sm_clock_mhz"], b["sm_clock_mhz"])
    assert (a["timestamp"] == b["timestamp"]).all() and (a["node"] == b["node"]).all()
    plan = plan_energy(dcgm_inputs, {"gnn_steps": 10, "makespan_iterations": 2})
    assert plan.result["telemetry_format"]["format"] == "prometheus_json"
    assert plan.result["telemetry_format"]["mapping"]["DCGM_FI_DEV_POWER_USAGE"] == "power_w (W)"
    assert detect_format(RawInput("x", b"timestamp,node,gpu,power_w\n")) == "qflow"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 4), edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(
    [b"9223372036854775794", b"inf", b"nan", b"-1", b"1e400", b",", b'"', b"{", b"\n", b" ", b"GPU 0", b"#Entity", b""])), min_size=1, max_size=5))
def test_damaged_exports_are_read_or_refused_with_an_input_error_never_a_crash(which: int, edits) -> None:
    data = bytearray([_prometheus_json(3), _exposition(), _smi(True), _smi(False), DMON][which].encode())
    for where, text in edits:
        i = int(where * (len(data) - 1))
        data[i:i + (3 if not text else 0)] = text
    try:
        frame, _ = read_telemetry(RawInput("n0.txt", bytes(data)), {"n0", "n1"}, {"telemetry_interval_s": 60})
    except InputError:
        return
    assert frame is None or np.isfinite(frame["power_w"]).all()


def test_metric_names_carried_into_the_plan_are_bounded(tmp_path: Path) -> None:
    series = [(f"OTHER_METRIC_{k:05d}_" + "x" * 300, _dcgm_labels("n0", 0), [[T0, "1"]]) for k in range(500)]
    series += [("DCGM_FI_DEV_POWER_USAGE", _dcgm_labels("n0", 0), [[T0 + 60 * k, "100"] for k in range(4)])]
    inputs, _ = load_energy_inputs(*_files(tmp_path, "many.json", _range_answer(series)))
    info = inputs.telemetry_info
    assert len(info["ignored_metrics"]) == 20 and info["ignored_metrics_not_listed"] == 480
    assert max(len(k) for k in info["ignored_metrics"]) <= 120 and len(json.dumps(info)) < 5000
