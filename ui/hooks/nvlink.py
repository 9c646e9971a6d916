"""NVLink page hooks: rounds, collective time and utilisation against the baselines, fabric, rounds, RL, classifier.

The fabric is drawn in layers (GPUs at the bottom grouped by host, then NICs, NVSwitch/PCIe switches, InfiniBand
switches on top); each link is coloured by the larger planned utilisation of its two directions
(``result.link_utilisation``: busy time over the rounds' ideal time, so 1.0 is a link as busy as the busiest GPU must be
and anything above 1 is a link setting the pace).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from qflow.core.commands import format_value
from ui.charts import styled
from ui.plan_view import key_figures, show_charts

_LAYER = {"gpu": 0.0, "nic": 1.0, "cpu": 1.0, "pcie_switch": 1.5, "nvswitch": 2.0, "switch": 2.0, "ib_switch": 3.0}
_SYMBOL = {"gpu": "square", "nvswitch": "diamond", "nic": "circle", "ib_switch": "triangle-up", "switch": "diamond",
           "pcie_switch": "diamond-open", "cpu": "hexagon"}
_JOB_COLOURS = ("#1f5fbf", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
#: Utilisation buckets (upper edges) and their colours: idle grey through green, amber, red (over 1: overloaded).
_BUCKETS = ((0.0, "#d9d9d9", "idle"), (0.25, "#a1d99b", "<= 0.25"), (0.5, "#41ab5d", "<= 0.5"), (0.75, "#fdae61", "<= 0.75"),
            (1.0 + 1e-9, "#f46d43", "<= 1"), (float("inf"), "#a50026", "> 1 (overloaded)"))


def _positions(nodes: list[list[Any]]) -> dict[str, tuple[float, float]]:
    """x spread evenly per layer (GPUs in host order), y by node kind; the topo-text mesh puts NICs beside GPUs."""
    layers: dict[float, list[str]] = {}
    for node_id, kind, _host in sorted(nodes, key=lambda n: (_LAYER.get(n[1], 1.0), str(n[2]), str(n[0]))):
        layers.setdefault(_LAYER.get(kind, 1.0), []).append(node_id)
    pos = {}
    for y, ids in layers.items():
        for i, node_id in enumerate(ids):
            pos[node_id] = ((i + 0.5) / len(ids), y)
    return pos


def _link_utilisation(plan: dict[str, Any]) -> dict[frozenset[str], float]:
    util: dict[frozenset[str], float] = {}
    for row in plan["result"]["link_utilisation"]:
        key = frozenset((row["source"], row["target"]))
        util[key] = max(util.get(key, 0.0), row["utilisation"])
    return util


def fabric_figure(plan: dict[str, Any]) -> go.Figure:
    """The fabric with every link coloured by its planned utilisation (one trace per utilisation bucket)."""
    graph = plan["result"]["fabric"]["graph"]
    pos = _positions(graph["nodes"])
    util = _link_utilisation(plan)
    buckets: list[tuple[list[float | None], list[float | None]]] = [([], []) for _ in _BUCKETS]
    for u, v, _bw in graph["links"]:
        value = util.get(frozenset((u, v)), 0.0)
        index = 0 if value <= 0 else next(i for i, (edge, _, _) in enumerate(_BUCKETS) if i > 0 and value <= edge)
        xs, ys = buckets[index]
        xs += [pos[u][0], pos[v][0], None]
        ys += [pos[u][1], pos[v][1], None]
    fig = go.Figure()
    for (xs, ys), (_, colour, label) in zip(buckets, _BUCKETS, strict=True):
        if xs:
            fig.add_scattergl(x=xs, y=ys, mode="lines", line={"color": colour, "width": 1 if label == "idle" else 1.6},
                              name=f"links {label}", hoverinfo="skip")
    placed = {g: job for job, gpus in plan["result"]["placement"].items() for g in gpus}
    kinds = sorted({n[1] for n in graph["nodes"]}, key=lambda k: _LAYER.get(k, 1.0))
    for kind in kinds:
        members = [n for n in graph["nodes"] if n[1] == kind]
        groups = [(kind, members, "#777")]
        if kind == "gpu":  # one trace per job, so the legend says where each job sits
            jobs = list(plan["result"]["placement"])
            groups = [(f"GPUs of {job}", [n for n in members if placed.get(n[0]) == job], _JOB_COLOURS[i % len(_JOB_COLOURS)])
                      for i, job in enumerate(jobs)]
            groups.append(("GPUs (free)", [n for n in members if n[0] not in placed], "#ffffff"))
        for name, nodes, colour in groups:
            if not nodes:
                continue
            fig.add_scatter(
                x=[pos[n[0]][0] for n in nodes], y=[pos[n[0]][1] for n in nodes], mode="markers", name=name,
                marker={"symbol": _SYMBOL.get(kind, "circle"), "size": 9 if kind == "gpu" else 11,
                        "line": {"width": 1, "color": "#333"}, "color": colour},
                text=[f"{n[0]} ({n[2]})" + (f"<br>job {placed[n[0]]}" if n[0] in placed else "") for n in nodes],
                hovertemplate="%{text}<extra></extra>",
            )
    worst = plan["metrics"]["max_link_utilisation"]
    return styled(fig, f"Fabric: links by planned utilisation (max {worst:.2f})", height=520, xaxis={"visible": False},
                  yaxis={"visible": False, "range": [-0.4, max(p[1] for p in pos.values()) + 0.4]})


def rounds_timeline_figure(plan: dict[str, Any]) -> go.Figure:
    """Rounds as a timeline: each job runs its rounds back to back (ms); round ``r`` of every job contends with the others'."""
    result = plan["result"]
    fig = go.Figure()
    for index, (job, rounds) in enumerate(result["rounds"].items()):
        times = result["round_times_s"][job]
        if not rounds:
            continue
        starts = [sum(times[:r]) for r in range(len(rounds))]
        fig.add_bar(
            y=[job] * len(rounds), x=[t * 1e3 for t in times], base=[t * 1e3 for t in starts],
            orientation="h", name=job, marker={"color": _JOB_COLOURS[index % len(_JOB_COLOURS)], "line": {"width": 0.5, "color": "white"}},
            customdata=[[r, len(transfers), sum(t["bytes"] for t in transfers) / 1e6] for r, transfers in enumerate(rounds)],
            hovertemplate="round %{customdata[0]}: %{customdata[1]} transfers, %{customdata[2]:.1f} MB<extra>%{y}</extra>",
        )
    m = plan["metrics"]
    return styled(fig, f"Transfer rounds: {m['rounds']} (lower bound {m['rounds_lower_bound']}), "
                       f"{m['estimated_collective_time_s'] * 1e3:.2f} ms estimated", "time (ms, alpha-beta estimate)", "job",
                  barmode="overlay", showlegend=False)


def rl_reward_figure(plan: dict[str, Any]) -> go.Figure:
    """Mean reward per Q-learning episode against static shortest-path routing (1.0 = every flow at its uncontended rate)."""
    rl = plan["result"]["rl"]
    episodes = list(range(1, len(rl["reward_curve"]) + 1))
    fig = go.Figure()
    fig.add_scatter(x=episodes, y=rl["reward_curve"], mode="lines", name="Q-learning (mean reward)", line={"color": "#1f5fbf"})
    fig.add_scatter(x=[episodes[0], episodes[-1]], y=[rl["shortest_path_reward"]] * 2, mode="lines", name="shortest path",
                    line={"color": "#e8a33d", "dash": "dash"})
    fig.add_scatter(x=[episodes[-1]], y=[rl["final_reward"]], mode="markers", name="greedy policy",
                    marker={"color": "#1f5fbf", "size": 10, "symbol": "star"})
    return styled(fig, f"RL path planner: {rl['agents']} agents", "episode", "achieved / uncontended bandwidth",
                  yaxis_range=[0, 1.05])


def confusion_figure(plan: dict[str, Any]) -> go.Figure:
    """The contention classifier's confusion matrix on its held-out logs."""
    c = plan["result"]["classifier"]
    labels = c["labels"]
    fig = go.Figure(go.Heatmap(z=c["confusion_matrix"], x=[f"predicted {x}" for x in labels], y=[f"actual {y}" for y in labels],
                               colorscale="Blues", texttemplate="%{z}", showscale=False,
                               hovertemplate="%{y}, %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return styled(fig, f"Contention classifier: held-out accuracy {c['held_out_accuracy']:.3f} "
                       f"(majority class {c['majority_class_accuracy']:.3f}, {c['n_test']} runs)")


#: What the page says where the classifier's held-out accuracy does not beat always answering the majority class.
NO_CALL = "no call (classifier does not beat the majority class)"


def _scaled(value: float | None, scale: float) -> str:
    return format_value(None if value is None else value * scale)


def _row(method: str, values: dict[str, Any], rounds: Any) -> dict[str, Any]:
    """One row of the placement table (GB and ms, missing figures left out)."""
    row: dict[str, Any] = {"method": method}
    for key, column, scale in (("cut_cost_s", "cut_cost_s", 1), ("cross_node_bytes", "cross_node_GB", 1e-9),
                               ("cross_switch_bytes", "cross_switch_GB", 1e-9),
                               ("max_link_utilisation", "max_link_utilisation", 1),
                               ("estimated_collective_time_s", "collective_time_ms", 1e3)):
        if values.get(key) is not None:
            row[column] = values[key] * scale
    return {**row, "rounds": rounds}


def summary(plan: dict[str, Any]) -> None:
    """Rounds against the bound, collective time, utilisation, cross-node bytes; the baselines and the placement."""
    m, b, r = plan["metrics"], plan["baselines"], plan["result"]
    key_figures(("rounds / lower bound", f"{m['rounds']} / {m['rounds_lower_bound']}",
                 "Largest number of rounds of any job vs the largest port degree (no schedule can use fewer)"),
                ("collective time (ms)", _scaled(m["estimated_collective_time_s"], 1e3),
                 "Alpha-beta estimate: round r of every job together, summed over the rounds"),
                ("max link utilisation", _scaled(m["max_link_utilisation"], 1),
                 "Busy time over the rounds' ideal time; above 1 a link, not the GPUs, sets the pace"),
                ("cross-node GB", _scaled(m["cross_node_bytes"], 1e-9)))
    fab = r["fabric"]
    st.caption(f"Fabric `{fab['name']}` ({fab['format']}): {fab['nodes_by_kind']}, {fab['links']} links, {fab['hosts']} hosts. "
               f"Routing: `{m['routing_policy']}`.")
    g, sp = b["greedy_colouring"], b["shortest_path"]
    rows = [_row("plan", m, m["rounds"]), *(_row(f"{name} placement", b[name], m["rounds"]) for name in ("round_robin", "random")),
            _row("greedy colouring", {"estimated_collective_time_s": g["estimated_collective_time_s"]}, g["rounds"]),
            _row("shortest-path routing", {k: sp[k] for k in ("max_link_utilisation", "estimated_collective_time_s")}, m["rounds"])]
    st.dataframe(rows, hide_index=True, key="nvlink_baselines_table")
    st.dataframe([{"job": job, "ranks": len(gpus), "rounds": m["rounds_per_job"][job],
                   "lower bound": m["rounds_lower_bound_per_job"][job], "GPUs (rank order)": ", ".join(gpus)}
                  for job, gpus in r["placement"].items()], hide_index=True, key="nvlink_placement_table")


def charts(run: Any) -> None:
    """Fabric by utilisation, rounds timeline, RL reward curve and the classifier's confusion matrix."""
    plan, result = run.plan, run.plan["result"]
    show_charts("nvlink", {"fabric": fabric_figure(plan), "rounds": rounds_timeline_figure(plan)})
    left, right = st.columns(2)
    if "rl" in result:
        left.plotly_chart(rl_reward_figure(plan), key="nvlink_rl_chart")
    else:
        left.caption("RL planner off.")
    if "classifier" in result:
        right.plotly_chart(confusion_figure(plan), key="nvlink_confusion_chart")
        calls = {None: NO_CALL, True: "congested", False: "not congested"}  # None: the plan does not trust it
        right.caption("Classifier's call: " + ", ".join(f"{k}: {calls[v['congested']]}"
                                                        for k, v in result["classifier"]["predictions"].items()) + ".")
    else:
        right.caption("Classifier off (or its logs held one class only).")
    if result.get("learned_components"):
        st.subheader("Learned components against their trivial baselines")
        st.dataframe(result["learned_components"], hide_index=True, key="nvlink_learned_table")
