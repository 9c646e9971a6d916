"""Plotly figures of an nvlink plan: pure functions, plan dict in, Figure out (no Streamlit here).

The fabric is drawn in layers (GPUs at the bottom grouped by host, then NICs,
NVSwitch/PCIe switches, InfiniBand switches on top); each link is coloured by
the larger planned utilisation of its two directions (``result.link_utilisation``:
busy time over the rounds' ideal time, so 1.0 is a link as busy as the
busiest GPU must be and anything above 1 is a link setting the pace).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from ui.charts import LAYOUT as _LAYOUT

__all__ = ["confusion_figure", "fabric_figure", "rl_reward_figure", "rounds_timeline_figure"]

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
    fig.update_layout(title=f"Fabric: links by planned utilisation (max {worst:.2f})", height=520,
                      xaxis={"visible": False}, yaxis={"visible": False, "range": [-0.4, max(pos.values(), key=lambda p: p[1])[1] + 0.4]},
                      **_LAYOUT)
    return fig


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
    fig.update_layout(title=f"Transfer rounds: {m['rounds']} (lower bound {m['rounds_lower_bound']}), "
                      f"{m['estimated_collective_time_s'] * 1e3:.2f} ms estimated", barmode="overlay",
                      xaxis_title="time (ms, alpha-beta estimate)", yaxis_title="job", showlegend=False, **_LAYOUT)
    return fig


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
    fig.update_layout(title=f"RL path planner: {rl['agents']} agents", xaxis_title="episode",
                      yaxis_title="achieved / uncontended bandwidth", yaxis_range=[0, 1.05], **_LAYOUT)
    return fig


def confusion_figure(plan: dict[str, Any]) -> go.Figure:
    """The contention classifier's confusion matrix on its held-out logs."""
    c = plan["result"]["classifier"]
    labels = c["labels"]
    fig = go.Figure(go.Heatmap(z=c["confusion_matrix"], x=[f"predicted {x}" for x in labels], y=[f"actual {y}" for y in labels],
                               colorscale="Blues", texttemplate="%{z}", showscale=False,
                               hovertemplate="%{y}, %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=f"Contention classifier: held-out accuracy {c['held_out_accuracy']:.3f} "
                      f"(majority class {c['majority_class_accuracy']:.3f}, {c['n_test']} runs)", **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig
