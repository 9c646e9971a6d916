"""Telemetry as clusters export it, mapped onto qflow's columns.

Formats (``telemetry_format``; ``auto`` detects them from the content):

* ``qflow``: CSV or JSON records with ``timestamp, node, gpu, power_w, ...``;
* ``prometheus_json``: the JSON answer of Prometheus ``/api/v1/query_range``
  (``resultType: matrix``) over dcgm-exporter metrics;
* ``prometheus_text``: text exposition scrapes of dcgm-exporter
  (``NAME{labels} value timestamp_ms``; a timestamp on every sample);
* ``nvidia_smi``: ``nvidia-smi --query-gpu=timestamp,index,power.draw,...
  --format=csv[,nounits]`` logs (repeated header lines of appended logs are skipped);
* ``dcgmi_dmon``: ``dcgmi dmon -e 155,203,100,150`` output (it prints no
  times: ``telemetry_interval_s`` and ``telemetry_start_s`` place the samples).

A per-node log (nvidia-smi, dmon) without a node column takes its node from
its file name (``node3.csv``), else from the ``telemetry_node`` option of
:func:`~qflow.energy.load_energy_inputs` (not a config field: the console's
settings form has no text fields), else the topology's only node.

DCGM fields map by name and unit (:data:`DCGM_FIELDS`); ``Hostname`` (else
``instance`` without its port) is the node and ``gpu`` the GPU. DCGM's blank
sentinels (``9223372036854775794`` = not supported, and the others of
:data:`DCGM_BLANKS`), ``N/A`` and blanks are missing values. Power comes from
``DCGM_FI_DEV_POWER_USAGE`` or, without it, from the
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` counter (mJ) differenced over time.
Hand-written parsers: none of these formats has a reader among qflow's
dependencies (``prometheus_client``, which has a text-format parser, is not
one), and the DCGM mapping, the sentinels and the per-series ordering checks
with line numbers would be ours either way.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InputError
from qflow.core.io import RawInput

__all__ = ["DCGM_BLANKS", "DCGM_FIELDS", "detect_format", "read_telemetry"]

#: DCGM field name -> (qflow column, unit as exported, factor to qflow's unit).
DCGM_FIELDS: dict[str, tuple[str, str, float]] = {
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", "W", 1.0),
    "DCGM_FI_DEV_GPU_UTIL": ("utilization", "%", 0.01),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", "MHz", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_c", "C", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_mj", "mJ", 1.0),
}
#: ``dcgmi dmon`` column tags -> DCGM field names (field ids 155, 203, 100, 150, 156).
DMON_TAGS = {"POWER": "DCGM_FI_DEV_POWER_USAGE", "GPUTL": "DCGM_FI_DEV_GPU_UTIL", "SMCLK": "DCGM_FI_DEV_SM_CLOCK",
             "TMPTR": "DCGM_FI_DEV_GPU_TEMP", "TOTEC": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"}
#: Units dmon's second header line may print per tag (upper-cased).
DMON_UNITS = {"POWER": {"W"}, "GPUTL": {"%"}, "SMCLK": {"MHZ"}, "TMPTR": {"C"}, "TOTEC": {"MJ"}}
#: nvidia-smi query names -> (qflow column, unit in its header, factor).
SMI_FIELDS: dict[str, tuple[str, str, float]] = {
    "power.draw": ("power_w", "W", 1.0), "power.draw.instant": ("power_w", "W", 1.0), "power.draw.average": ("power_w", "W", 1.0),
    "utilization.gpu": ("utilization", "%", 0.01), "clocks.sm": ("sm_clock_mhz", "MHz", 1.0),
    "clocks.current.sm": ("sm_clock_mhz", "MHz", 1.0), "temperature.gpu": ("temperature_c", "", 1.0),
}
#: DCGM's blank values (int64, int32 and fp64 "blank", "not found", "not supported", "not permissioned"): missing, not numbers.
DCGM_BLANKS = frozenset(
    [9223372036854775792 + k for k in range(4)] + [2147483632 + k for k in range(4)] + [140737488355328.0 + k for k in range(4)]
)
MISSING_TEXT = {"", "n/a", "[n/a]", "[not supported]", "not supported", "nan", "[unknown error]", "[gpu is lost]"}
UNIT_ALIASES = {"C": {"C", "°C", "CELSIUS"}, "%": {"%", "PERCENT"}, "W": {"W", "WATTS"}, "MHz": {"MHZ"}, "mJ": {"MJ"}}
#: Ignored metric names listed in the plan at most, and their length.
MAX_IGNORED_LISTED, MAX_NAME_CHARS = 20, 120
#: Latest sample time accepted, unix seconds (pandas' nanosecond times end in 2262).
MAX_UNIX_S = 9.0e9
NODE_COLUMNS = ("node", "hostname", "host", "instance")
COLUMNS_OUT = ("timestamp", "node", "gpu", "power_w", "utilization", "sm_clock_mhz", "temperature_c")

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(?:\s+(\S+))?\s*$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def detect_format(raw: RawInput) -> str:
    """The telemetry format of ``raw`` from its first bytes (see the module docstring)."""
    head = raw.data.lstrip()[:4096].decode("utf-8", "replace")
    if head[:1] in "[{":
        return "prometheus_json" if '"resultType"' in raw.data[:1_000_000].decode("utf-8", "replace") else "qflow"
    first = next((line.strip() for line in head.splitlines() if line.strip()), "")
    if first.startswith("#Entity"):
        return "dcgmi_dmon"
    if first.startswith("# HELP") or first.startswith("# TYPE") or re.match(r"^DCGM_FI_\w+(\{|\s)", first):
        return "prometheus_text"
    if "power.draw" in first:
        return "nvidia_smi"
    return "qflow"


def _value(text: str) -> float:
    """A sample value as float; NaN for DCGM blanks, ``N/A`` and blanks."""
    if text.strip().lower() in MISSING_TEXT:
        return float("nan")
    x = float(text)
    if not np.isfinite(x):
        raise ValueError(f"not finite: {text}")  # the callers name the file, series and line
    return float("nan") if x in DCGM_BLANKS or x >= 9.2e18 else x


def _node_of(labels: Mapping[str, str]) -> str | None:
    if labels.get("Hostname"):
        return labels["Hostname"]
    instance = labels.get("instance")
    return instance.rsplit(":", 1)[0] if instance else None


def _series_name(metric: str, labels: Mapping[str, str]) -> str:
    keep = {k: labels[k] for k in ("Hostname", "instance", "gpu") if k in labels}
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in keep.items()) + "}"


class _Samples:
    """Long-format samples ``(series, time s, node, gpu, field, value)`` gathered from Prometheus data."""

    def __init__(self, source: str, nodes: set[str]) -> None:
        self.source, self.nodes = source, nodes
        self.rows: list[tuple[str, float, str, str, str, float]] = []
        self.skipped: dict[str, int] = {}
        self.last_time: dict[str, tuple[float, str]] = {}

    def add(self, metric: str, labels: Mapping[str, str], stamp: float, value: float, where: str) -> None:
        if metric not in DCGM_FIELDS:
            self.skipped[metric] = self.skipped.get(metric, 0) + 1
            return
        series = _series_name(metric, labels)
        node = _node_of(labels)
        if node is None:
            raise InputError(self.source, f"{series} ({where})", "no node label", "a Hostname or instance label")
        if node not in self.nodes:
            raise InputError(self.source, f"{series} ({where})", "host not in the topology", "node ids from the topology", node)
        if "gpu" not in labels:
            raise InputError(self.source, f"{series} ({where})", "no gpu label", 'a gpu label (gpu="0")')
        if not 0 <= stamp <= MAX_UNIX_S:
            raise InputError(self.source, f"{series} ({where})", "time out of range", "unix seconds between 1970 and 2255", stamp)
        previous = self.last_time.get(series)
        if previous is not None and stamp < previous[0]:
            raise InputError(self.source, f"{series} ({where})", "timestamps go backwards",
                             f"times that never decrease within a series (previous {previous[1]})", stamp)
        self.last_time[series] = (stamp, where)
        self.rows.append((series, stamp, node, labels["gpu"], metric, value))

    def frame(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        long = pd.DataFrame(self.rows, columns=["series", "time_s", "node", "gpu", "field", "value"])
        frame, info = _wide(long, self.source, self.skipped)
        info["mapping"].update({"Hostname (else instance without its port)": "node", "gpu": "gpu", "sample time (s)": "timestamp (UTC)"})
        return frame, info


def _wide(long: pd.DataFrame, source: str, skipped: Mapping[str, int]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Pivot long DCGM samples to qflow's columns; energy counters become power when no power series exists."""
    fields = sorted(set(long["field"])) if len(long) else []
    if "DCGM_FI_DEV_POWER_USAGE" not in fields and "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" not in fields:
        found = ", ".join(fields + sorted(skipped)) or "no samples"
        raise InputError(source, "(series)", "no power series", "DCGM_FI_DEV_POWER_USAGE (W) or DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ)",
                         found)
    notes: list[str] = []
    if "DCGM_FI_DEV_POWER_USAGE" not in fields:
        long = _energy_to_power(long)
        notes.append("power_w from DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION: mJ difference / seconds / 1000 (first sample of each "
                     "series and counter resets are missing)")
    elif "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in fields:
        notes.append("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION ignored: DCGM_FI_DEV_POWER_USAGE is present")
    long = long[long["field"] != "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
    long = long.assign(column=long["field"].map(lambda f: DCGM_FIELDS[f][0]),
                       value=long["value"] * long["field"].map(lambda f: DCGM_FIELDS[f][2]))
    wide = long.pivot_table(index=["time_s", "node", "gpu"], columns="column", values="value", aggfunc="last", dropna=False)
    wide = wide.reset_index()
    mapping = {f: f"{DCGM_FIELDS[f][0]} ({DCGM_FIELDS[f][1]}" + (" -> 0..1)" if f == "DCGM_FI_DEV_GPU_UTIL" else ")") for f in fields}
    # Metric names come from the file: only the first few are carried into the plan, the rest counted.
    ignored = dict(sorted(skipped.items())[:MAX_IGNORED_LISTED])
    extra = {"ignored_metrics": {k[:MAX_NAME_CHARS]: v for k, v in ignored.items()},
             "ignored_metrics_not_listed": max(0, len(skipped) - MAX_IGNORED_LISTED)}
    return _finish(wide, mapping, notes, extra, source)


def _energy_to_power(long: pd.DataFrame) -> pd.DataFrame:
    energy = long[long["field"] == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].sort_values(["series", "time_s"], kind="stable")
    de = energy.groupby("series")["value"].diff()
    dt = energy.groupby("series")["time_s"].diff()
    power = (de / dt / 1000.0).where((de >= 0) & (dt > 0))
    derived = energy.assign(field="DCGM_FI_DEV_POWER_USAGE", value=power.to_numpy())
    return pd.concat([long, derived], ignore_index=True)


def _finish(wide: pd.DataFrame, mapping: dict[str, str], notes: list[str], extra: dict[str, Any],
            source: str = "telemetry") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Drop rows without power, convert seconds to UTC times, keep qflow's columns."""
    if "power_w" not in wide:
        wide["power_w"] = np.nan
    missing = wide["power_w"].isna()
    out = wide[~missing].copy()
    if "time_s" in out:
        late = out["time_s"] > MAX_UNIX_S
        if late.any():
            raise InputError(source, "timestamp", "time out of range", "times before 2255 (start + samples x interval)",
                             float(out["time_s"][late].iloc[0]))
        out["timestamp"] = pd.to_datetime(out.pop("time_s"), unit="s", utc=True)
    out = out[[c for c in COLUMNS_OUT if c in out.columns]].reset_index(drop=True)
    info = {"mapping": mapping, "rows": int(len(out)), "rows_without_power_dropped": int(missing.sum()),
            "missing_values": "DCGM blank sentinels (9223372036854775794 = not supported, ...), N/A and blanks", "notes": notes, **extra}
    return out, info


def _text(raw: RawInput) -> str:
    try:
        return raw.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(raw.name, "(file)", "not UTF-8 text", "a UTF-8 text file", f"byte {exc.start}") from None


def read_prometheus_json(raw: RawInput, nodes: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A ``/api/v1/query_range`` answer (or a JSON list of them) -> qflow columns and the mapping used."""
    try:
        data = json.loads(_text(raw))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(raw.name, "(file)", "invalid JSON", "a Prometheus query_range answer", str(exc)[:80]) from None
    answers = data if isinstance(data, list) else [data]
    samples = _Samples(raw.name, nodes)
    for a, answer in enumerate(answers):
        where = f"[{a}]" if isinstance(data, list) else ""
        result = answer.get("data", {}).get("result") if isinstance(answer, Mapping) and isinstance(answer.get("data"), Mapping) else None
        if not isinstance(result, list) or answer["data"].get("resultType") != "matrix":
            raise InputError(raw.name, f"{where}data.result", "not a range-query answer", 'resultType "matrix" with a result list',
                             answer.get("status") if isinstance(answer, Mapping) else type(answer).__name__)
        for s, series in enumerate(result):
            metric = series.get("metric", {}) if isinstance(series, Mapping) else None
            values = series.get("values") if isinstance(series, Mapping) else None
            if not isinstance(metric, Mapping) or not isinstance(values, list):
                raise InputError(raw.name, f"{where}data.result[{s}]", "wrong shape", "an object with metric and values", series)
            name = str(metric.get("__name__", ""))
            if not name:
                raise InputError(raw.name, f"{where}data.result[{s}].metric", "no __name__ label",
                                 "raw dcgm-exporter series (query by metric name, without aggregation)")
            labels = {str(k): str(v) for k, v in metric.items()}
            for i, point in enumerate(values):
                if not isinstance(point, list) or len(point) != 2:
                    raise InputError(raw.name, f"{where}data.result[{s}].values[{i}]", "wrong shape", "[unix seconds, \"value\"]", point)
                try:
                    stamp, value = float(point[0]), _value(str(point[1]))
                except ValueError:
                    raise InputError(raw.name, f"{where}data.result[{s}].values[{i}]", "not a number", "[unix seconds, \"value\"]",
                                     point) from None
                samples.add(name, labels, stamp, value, f"values[{i}]")
    frame, info = samples.frame()
    return frame, {"format": "prometheus_json", **info}


def read_prometheus_text(raw: RawInput, nodes: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Text exposition scrapes with a millisecond timestamp on every sample -> qflow columns and the mapping used."""
    samples = _Samples(raw.name, nodes)
    for number, line in enumerate(_text(raw).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "HELP" and parts[2] in DCGM_FIELDS:
                _check_unit(raw.name, parts[2], parts[3], number)
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise InputError(raw.name, f"line {number}", "not a sample", "NAME{label=\"value\",...} VALUE TIMESTAMP_MS", line)
        name, _, label_text, value_text, stamp_text = match.groups()
        if stamp_text is None:
            if name in DCGM_FIELDS:
                raise InputError(raw.name, f"line {number}", "sample without a timestamp",
                                 "a millisecond timestamp after each value (scrapes saved without one cannot be placed in time)", line)
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(label_text or "")}
        try:
            value, stamp = _value(value_text), float(stamp_text) / 1000.0
        except ValueError:
            raise InputError(raw.name, f"line {number}", "not a number", "a numeric value and timestamp", line) from None
        samples.add(name, labels, stamp, value, f"line {number}")
    frame, info = samples.frame()
    return frame, {"format": "prometheus_text", **info}


def _check_unit(source: str, metric: str, text: str, line: int) -> None:
    """A HELP text saying "(in X)" with a unit other than DCGM's: mixed units, refused."""
    found = re.search(r"\(in ([^)]+)\)", text)
    if found is None:
        return
    unit = found.group(1).strip().upper()
    expected = DCGM_FIELDS[metric][1]
    if unit not in UNIT_ALIASES.get(expected, {expected.upper()}):
        raise InputError(source, f"{metric} (line {line})", "unit mismatch", f"{expected}, as dcgm-exporter writes it", found.group(1))


def _pick_node(raw: RawInput, nodes: set[str], configured: str) -> tuple[str, str]:
    """The node of a per-node log: the file stem when it is a node id, else the config, else the topology's only node."""
    stem = Path(raw.name).stem
    if stem in nodes:
        return stem, "the file name"
    if configured:
        if configured not in nodes:
            raise InputError("telemetry_options", "telemetry_node", "host not in the topology", "a node id from the topology", configured)
        return configured, "the telemetry_node option"
    if len(nodes) == 1:
        return next(iter(nodes)), "the topology's only node"
    raise InputError(raw.name, "node", "no node for this log", "a node/hostname column or a file named after its node (node3.csv)",
                     stem)


def read_nvidia_smi(raw: RawInput, nodes: set[str], options: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``nvidia-smi --query-gpu=... --format=csv[,nounits]`` -> qflow columns (times taken as UTC)."""
    try:
        table = pd.read_csv(io.BytesIO(raw.data), dtype=str, skipinitialspace=True, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InputError(raw.name, "(file)", "invalid CSV", "nvidia-smi --format=csv output", str(exc).splitlines()[0][:80]) from None
    header = [str(c).strip() for c in table.columns]
    table.columns = header
    table = table[table[header[0]].str.strip() != header[0]].reset_index(drop=True)  # header lines of appended logs
    columns: dict[str, str] = {}
    mapping: dict[str, str] = {}
    for name in header:
        m = re.match(r"^([\w.]+)\s*(?:\[(.+)\])?$", name)
        key, unit = (m.group(1), m.group(2) or "") if m else (name, "")
        if key in SMI_FIELDS and SMI_FIELDS[key][0] not in columns.values():
            column, expected, _ = SMI_FIELDS[key]
            if unit and expected and unit != expected:
                raise InputError(raw.name, name, "unit mismatch", f"[{expected}] as nvidia-smi writes it", unit)
            columns[name] = column
            mapping[name] = column + (" (% -> 0..1)" if column == "utilization" else "")
    if "power_w" not in columns.values():
        raise InputError(raw.name, "(header)", "no power column", "power.draw [W] in the --query-gpu list", ", ".join(header[:8]))
    for needed in ("timestamp", "index"):
        if needed not in header:
            raise InputError(raw.name, "(header)", f"no {needed} column", f"{needed} in the --query-gpu list", ", ".join(header[:8]))
    node_column = next((c for c in header if c.lower() in NODE_COLUMNS), None)
    out = pd.DataFrame({"gpu": table["index"].str.strip()})
    if node_column:
        out["node"] = table[node_column].str.strip()
        mapping[node_column] = "node"
        unknown = sorted(set(out["node"]) - nodes)
        if unknown:
            row = int(np.flatnonzero((~out["node"].isin(nodes)).to_numpy())[0])
            raise InputError(raw.name, f"{node_column}[row {row}]", "host not in the topology", "node ids from the topology", unknown[0])
    else:
        out["node"], why = _pick_node(raw, nodes, str(options.get("telemetry_node", "")))
        mapping["(node)"] = f"{out['node'].iloc[0] if len(out) else ''} from {why}"
    stamps = pd.to_datetime(table["timestamp"].str.strip(), format="%Y/%m/%d %H:%M:%S.%f", errors="coerce", utc=True)
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise InputError(raw.name, f"timestamp[row {row}]", "not an nvidia-smi timestamp", "YYYY/MM/DD HH:MM:SS.fff",
                         table["timestamp"].iloc[row])
    out["timestamp"] = stamps
    for name, column in columns.items():
        out[column] = _smi_values(table[name], raw.name, name, SMI_FIELDS[re.match(r"^([\w.]+)", name).group(1)])
    _check_order(out, raw.name)
    mapping["timestamp"] = "timestamp (nvidia-smi local time, taken as UTC)"
    mapping["index"] = "gpu"
    frame, info = _finish(out, mapping, [], {}, raw.name)
    return frame, {"format": "nvidia_smi", **info}


def _smi_values(column: pd.Series, source: str, name: str, spec: tuple[str, str, float]) -> np.ndarray:
    """Numbers of one nvidia-smi column; a unit suffix other than the header's is a mixed-units error naming the row."""
    _, unit, factor = spec
    out = np.full(len(column), np.nan)
    for row, text in enumerate(column.to_numpy()):
        text = str(text).strip()
        if text.lower() in MISSING_TEXT:
            continue
        number, _, suffix = text.partition(" ")
        if suffix and suffix.strip() != unit:
            raise InputError(source, f"{name}[row {row}]", "mixed units", f"values in {unit or 'the header unit'}", text)
        try:
            value = _value(number)
        except ValueError:
            raise InputError(source, f"{name}[row {row}]", "not a number", "a number", text) from None
        out[row] = value * factor
    return out


def _check_order(frame: pd.DataFrame, source: str) -> None:
    """Times must not go backwards within one (node, gpu) series, in file order."""
    stamps = frame["timestamp"].to_numpy()
    keys = frame["node"].astype(str) + "/" + frame["gpu"].astype(str)
    previous = frame.assign(_t=stamps).groupby(keys.to_numpy())["_t"].shift(1)
    back = (previous.notna() & (frame["timestamp"] < previous)).to_numpy()
    if back.any():
        row = int(np.flatnonzero(back)[0])
        raise InputError(source, f"timestamp[row {row}] (series {keys.iloc[row]})", "timestamps go backwards",
                         f"times that never decrease within a series (previous {previous.iloc[row]})", str(frame["timestamp"].iloc[row]))


def read_dcgmi_dmon(raw: RawInput, nodes: set[str], options: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``dcgmi dmon`` output -> qflow columns; sample k of each GPU is at ``telemetry_start_s + k * telemetry_interval_s``."""
    interval = float(options.get("telemetry_interval_s") or 0.0)
    if interval <= 0:
        raise InputError("config", "telemetry_interval_s", "needed for dcgmi dmon output (it prints no times)",
                         "the --delay of the dmon run in seconds (> 0)", interval)
    start = pd.Timestamp(float(options.get("telemetry_start_s") or 0.0), unit="s", tz="UTC")
    node, why = _pick_node(raw, nodes, str(options.get("telemetry_node", "")))
    tags: list[str] = []
    rows: list[dict[str, Any]] = []
    count: dict[str, int] = {}
    for number, line in enumerate(_text(raw).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "#Entity":
            tags = parts[1:]
            if "POWER" not in tags and "TOTEC" not in tags:
                raise InputError(raw.name, f"line {number}", "no power series", "a POWER (field 155) or TOTEC (156) column",
                                 " ".join(tags))
            continue
        if parts[0] == "ID":
            for tag, unit in zip(tags, parts[1:], strict=False):
                if tag in DMON_UNITS and unit.upper() not in DMON_UNITS[tag]:
                    raise InputError(raw.name, f"{tag} (line {number})", "mixed units", f"{'/'.join(DMON_UNITS[tag])}", unit)
            continue
        if not tags:
            raise InputError(raw.name, f"line {number}", "data before the #Entity header", "dcgmi dmon output", line.strip())
        if len(parts) != len(tags) + 2:
            raise InputError(raw.name, f"line {number}", "wrong number of columns", f"an entity and {len(tags)} values", line.strip())
        entity = f"{parts[0]} {parts[1]}"
        k = count.get(entity, 0)
        count[entity] = k + 1
        row: dict[str, Any] = {"time_s": start.timestamp() + k * interval, "node": node, "gpu": parts[1]}
        for tag, text in zip(tags, parts[2:], strict=True):
            if tag not in DMON_TAGS:
                continue
            try:
                row[DMON_TAGS[tag]] = _value(text)
            except ValueError:
                raise InputError(raw.name, f"{tag} (line {number})", "not a number", "a number or N/A", text) from None
        rows.append(row)
    if not rows:
        raise InputError(raw.name, "(rows)", "no samples", "GPU rows under an #Entity header")
    wide = pd.DataFrame(rows)
    fields = [f for f in DCGM_FIELDS if f in wide]
    long = wide.melt(id_vars=["time_s", "node", "gpu"], value_vars=fields, var_name="field", value_name="value")
    long["series"] = long["field"] + "/" + long["gpu"]
    frame, info = _wide(long, raw.name, {})
    info["mapping"] = {tag: f"{DMON_TAGS[tag]} -> {info['mapping'].get(DMON_TAGS[tag], '')}" for tag in tags if tag in DMON_TAGS}
    info["mapping"]["(node)"] = f"{node} from {why}"
    info["mapping"]["(time)"] = f"{start.isoformat()} + sample index x {interval:g} s (dmon prints no times)"
    return frame, {"format": "dcgmi_dmon", **info}


def read_telemetry(raw: RawInput, nodes: set[str], options: Mapping[str, Any]) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """Read one telemetry file in the configured or detected format.

    Returns ``(frame, info)``; ``frame`` is None for the ``qflow`` format
    (the caller reads it as a table), else a frame in qflow's columns.
    ``info`` holds ``format``, ``detected`` and the ``mapping`` of source
    fields to qflow columns.
    """
    wanted = str(options.get("telemetry_format") or "auto")
    fmt = detect_format(raw) if wanted == "auto" else wanted
    detected = wanted == "auto"
    if fmt == "qflow":
        return None, {"format": "qflow", "detected": detected, "mapping": "qflow columns, as named in the file"}
    readers = {"prometheus_json": lambda: read_prometheus_json(raw, nodes), "prometheus_text": lambda: read_prometheus_text(raw, nodes),
               "nvidia_smi": lambda: read_nvidia_smi(raw, nodes, options), "dcgmi_dmon": lambda: read_dcgmi_dmon(raw, nodes, options)}
    frame, info = readers[fmt]()
    if frame.empty:
        raise InputError(raw.name, "power_w", "no power samples", "at least one non-missing power value")
    return frame, {**info, "detected": detected}
