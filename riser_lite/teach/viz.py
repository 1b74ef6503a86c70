"""Plotly figure builders: data in, `go.Figure` out, no state and no display (the widgets compose them).

Inputs are the package's objects (`RecDataset`, `ItemSpace`), plain lists and dicts, tensors, or the metric
records the trainers write to ``metrics.jsonl``; a key missing from a record leaves that point, line or
panel out. One template, palette and colour per model everywhere, so figures of different notebooks compare.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DECISION_COLOR = "#E69F00"  # a token chosen where the item trie branches (a real decision)
FORCED_COLOR = "#B0B0B0"  # a token forced by the trie (one valid continuation)
HIT_COLOR = "#009E73"  # reward > 0
MISS_COLOR = "#D55E00"  # reward <= 0
TEMPLATE = "plotly_white"
ROLLOUTS_LABEL = "rollouts generated"


# One colour per model in every figure of every notebook (keys: lower-case model names and labels).
MODEL_COLORS = {
    "sft": "#000000", "popularity": "#B0B0B0", "oracle": "#56B4E9", "sasrec": "#F0E442",
    "grpo": "#D55E00", "rere": "#E69F00", "rere-style": "#E69F00", "riser": "#0072B2",
    "simpo": "#0072B2", "dpo": "#CC79A7",
}
ABLATION_COLORS = ("#009E73", "#CC79A7", "#882255", "#44AA99")  # RISER's ablations, in order of appearance


def color(i: int) -> str:
    """The i-th palette colour (cycles)."""
    return PALETTE[i % len(PALETTE)]


def model_color(name: str, fallback: int = 0) -> str:
    """The colour of a model in every figure: "SFT", "sft" and "SFT (exp)" share one; ablations such as
    "RISER w/o pairs" take the ablation colours; unknown names the palette's `fallback`-th colour."""
    key = name.lower().split(" (")[0].strip()
    if key in MODEL_COLORS:
        return MODEL_COLORS[key]
    if key.startswith(("riser-no-", "riser w/o")):
        suffix = key.removeprefix("riser-no-").removeprefix("riser w/o ")
        order = ("pairs", "dedup", "certainty", "clip")
        index = next((i for i, part in enumerate(order) if suffix.startswith(part)), fallback)
        return ABLATION_COLORS[index % len(ABLATION_COLORS)]
    return color(fallback)


class RoundedTable:
    """A captioned table with its numbers rounded (`frame`, a DataFrame; −1e-9 shows as 0): HTML in a
    notebook, text elsewhere."""

    def __init__(self, rows: Sequence[Mapping], caption: str, digits: int = 3):
        import pandas as pd

        self.caption, self.digits = caption, digits
        frame = pd.DataFrame(list(rows))
        floats = frame.select_dtypes("float").columns  # counts stay integers (no "147.000")
        frame[floats] = frame[floats].round(digits) + 0.0  # + 0.0 turns -0.0 into 0.0
        self.frame = frame

    def _repr_html_(self) -> str:
        body = self.frame.to_html(index=False, float_format=lambda x: f"{x:.{self.digits}f}", border=0)
        return f"<figure><figcaption><b>{html.escape(self.caption)}</b></figcaption>{body}</figure>"

    def __repr__(self) -> str:
        return f"{self.caption}\n{self.frame.to_string(index=False)}"


def rounded_table(rows: Sequence[Mapping], caption: str, digits: int = 3) -> RoundedTable:
    """rows (one dict per row, the same keys) as a `RoundedTable`. Explain every column once beside it."""
    return RoundedTable(rows, caption, digits)


def _tolist(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _finish(fig: go.Figure, title: str, xlabel: str | None = None, ylabel: str | None = None,
            height: int = 380) -> go.Figure:
    fig.update_layout(title=title, template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=60, b=50))
    if xlabel is not None:
        fig.update_xaxes(title_text=xlabel)
    if ylabel is not None:
        fig.update_yaxes(title_text=ylabel)
    return fig


def _series(records: Sequence[Mapping], x_key: str, y_key: str) -> tuple[list, list]:
    """(x, y) of the records that have both keys with a value."""
    pairs = [(r[x_key], r[y_key]) for r in records if r.get(x_key) is not None and r.get(y_key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _x_key(records_by_run: Mapping[str, Sequence[Mapping]], y_keys: Sequence[str]) -> str:
    """`rollouts_used` when every record carrying a plotted key has it, else `step`."""
    rows = [r for recs in records_by_run.values() for r in recs if any(r.get(k) is not None for k in y_keys)]
    return "rollouts_used" if rows and all(r.get("rollouts_used") is not None for r in rows) else "step"


def _axis_label(key: str) -> str:
    return ROLLOUTS_LABEL if key == "rollouts_used" else key.replace("_", " ")


# ----------------------------------------------------------------------------------------------- data


def popularity_long_tail(dataset, split: str = "train") -> go.Figure:
    """Item rank (most popular first) vs interaction count (each example's target), log y. Items that
    never occur are counted in the title, not plotted."""
    counts = Counter(example.target for example in dataset.splits[split])
    ranked = sorted(((c, item) for item, c in counts.items()), key=lambda p: (-p[0], p[1]))
    fig = go.Figure(go.Scatter(
        x=list(range(1, len(ranked) + 1)), y=[c for c, _ in ranked], mode="lines", line=dict(color=color(0)),
        name="interactions", hovertext=[dataset.catalog.get(item, str(item)) for _, item in ranked],
    ))
    fig.update_yaxes(type="log")
    never = len(dataset.catalog) - len(ranked)
    title = f"Popularity long tail ({dataset.name}, {split})"
    if never > 0:
        title += f": {never} of {len(dataset.catalog)} items never occur"
    return _finish(fig, title, "item rank (most popular first)", "interactions (log)")


def history_length_histogram(dataset, splits: Sequence[str] = ("train", "valid", "test")) -> go.Figure:
    """Share of each split's examples per history length (one bar trace per non-empty split)."""
    fig = go.Figure()
    for i, split in enumerate(splits):
        lengths = [len(example.history) for example in dataset.splits.get(split, [])]
        if not lengths:
            continue
        counts = sorted(Counter(lengths).items())
        fig.add_bar(x=[k for k, _ in counts], y=[c / len(lengths) for _, c in counts], name=split,
                    marker_color=color(i), customdata=[c for _, c in counts],
                    hovertemplate="length %{x}: %{customdata} examples (%{y:.1%})<extra></extra>")
    fig.update_layout(barmode="group")
    return _finish(fig, "History lengths", "history length (items)", "share of examples")


def title_token_lengths(space) -> go.Figure:
    """Histogram of an `ItemSpace`'s response lengths in tokens (title + newline + EOS)."""
    counts = sorted(Counter(len(ids) for ids in space.response_ids.values()).items())
    fig = go.Figure(go.Bar(x=[k for k, _ in counts], y=[c for _, c in counts], marker_color=color(0),
                           name="items"))
    return _finish(fig, "Response length per item", "tokens (title + newline + EOS)", "items")


def branching_summary(branching: Mapping[int, Sequence[bool]]) -> dict:
    """item -> one flag per response token (True where the trie branches) -> lists positions,
    branching[pos], forced[pos], tokens_per_item, decisions_per_item, and the float branching_fraction."""
    flags = [list(map(bool, _tolist(f))) for f in branching.values()]
    length = max((len(f) for f in flags), default=0)
    decisions = [sum(f[p] for f in flags if p < len(f)) for p in range(length)]
    present = [sum(1 for f in flags if p < len(f)) for p in range(length)]
    total = sum(present)
    return {
        "positions": list(range(length)),
        "branching": decisions,
        "forced": [n - d for n, d in zip(present, decisions, strict=True)],
        "tokens_per_item": [len(f) for f in flags],
        "decisions_per_item": [sum(f) for f in flags],
        "branching_fraction": sum(decisions) / total if total else 0.0,
    }


def branching_profile(item_space) -> go.Figure:
    """Which response tokens are real decisions, for an `ItemSpace` or its item -> flags mapping. Left: the
    stacked share of branching and forced tokens per position (over the items that reach it); right: the
    distributions of tokens and of decisions per item."""
    s = branching_summary(getattr(item_space, "branching", item_space))
    present = [b + f for b, f in zip(s["branching"], s["forced"], strict=True)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("share of tokens per position", "per item"))
    share = {key: [v / n for v, n in zip(s[key], present, strict=True)] for key in ("branching", "forced")}
    for key, name, col in (("branching", "branching (decision)", DECISION_COLOR),
                           ("forced", "forced", FORCED_COLOR)):
        # Stacked by hand (forced on top of branching) so the right panel can stay grouped.
        base = share["branching"] if key == "forced" else None
        fig.add_bar(x=s["positions"], y=share[key], base=base, name=name, marker_color=col, offsetgroup="pos",
                    customdata=s[key], row=1, col=1, hovertemplate="position %{x}: %{customdata} tokens")
    for key, name, col in (("tokens_per_item", "tokens per item", color(0)),
                           ("decisions_per_item", "decisions per item", DECISION_COLOR)):
        counts = sorted(Counter(s[key]).items())
        fig.add_bar(x=[k for k, _ in counts], y=[c for _, c in counts], name=name, marker_color=col,
                    row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="token position", row=1, col=1)
    fig.update_yaxes(title_text="share of tokens", row=1, col=1)
    fig.update_xaxes(title_text="count", row=1, col=2)
    fig.update_yaxes(title_text="items", row=1, col=2)
    title = f"Trie branching profile: {s['branching_fraction']:.1%} of response tokens are decisions"
    return _finish(fig, title)


def trie_depths(spaces: Mapping[str, object]) -> go.Figure:
    """How the item trie branches per representation (e.g. titles vs semantic IDs); spaces: name -> an
    `ItemSpace` or its trie's `depth_profile()`. Left: mean valid continuations per node at each depth (log
    axis); right: the nodes at each depth where the next token is a decision (>= 2 children)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("branching factor per depth",
                                                        "decision nodes per depth"))
    for i, (name, space) in enumerate(spaces.items()):
        profile = space.trie.depth_profile() if hasattr(space, "trie") else list(space)
        depths = [p["depth"] for p in profile]
        line = dict(color=color(i))
        fig.add_scatter(x=depths, y=[p["mean_children"] for p in profile], mode="lines+markers", name=name,
                        legendgroup=name, line=line, row=1, col=1,
                        customdata=[p["nodes"] for p in profile],
                        hovertemplate=f"{name}<br>depth %{{x}}: %{{y:.3g}} continuations per node "
                                      "(%{customdata} nodes)<extra></extra>")
        fig.add_scatter(x=depths, y=[p["branching_nodes"] for p in profile], mode="lines+markers", name=name,
                        legendgroup=name, showlegend=False, line=line, row=1, col=2,
                        hovertemplate=f"{name}<br>depth %{{x}}: %{{y}} decision nodes<extra></extra>")
    fig.update_yaxes(type="log", title_text="continuations per node", row=1, col=1)
    fig.update_yaxes(title_text="nodes with >= 2 continuations", row=1, col=2)
    fig.update_xaxes(title_text="depth (tokens already written)")
    return _finish(fig, "How the item trie branches")


# ------------------------------------------------------------------------------------------- training


VAL_LOSS_KEYS = ("val_loss", "valid_loss")  # the validation loss, under either name
LOSS_LABEL = "loss (nats per response token)"


def _add_loss_lines(fig: go.Figure, records: Sequence[Mapping], names: tuple[str, str],
                    lines: tuple[dict, dict], group: str | None = None) -> None:
    """The training loss per step and the validation loss (`val_loss` or `valid_loss`), hover: the epoch."""
    x, y = _series(records, "step", "loss")
    fig.add_scatter(x=x, y=y, mode="lines", name=names[0], legendgroup=group, line=lines[0])
    valid = [(r, next(r[k] for k in VAL_LOSS_KEYS if r.get(k) is not None)) for r in records
             if r.get("step") is not None and any(r.get(k) is not None for k in VAL_LOSS_KEYS)]
    fig.add_scatter(x=[r["step"] for r, _ in valid], y=[v for _, v in valid], mode="lines+markers",
                    name=names[1], legendgroup=group, line=lines[1],
                    hovertext=[f"epoch {r.get('epoch', '?')}" for r, _ in valid])


def loss_curve(records: Sequence[Mapping]) -> go.Figure:
    """SFT: training loss per step and validation loss against the step."""
    fig = go.Figure()
    lines = (dict(color=color(0)), dict(color=color(1)))
    _add_loss_lines(fig, records, ("train loss", "validation loss"), lines)
    return _finish(fig, "SFT loss", "step", LOSS_LABEL)


def loss_curves(records_by_run: Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """SFT of several runs: training loss (solid) and validation loss (dashed) per step, one colour a run."""
    fig = go.Figure()
    for i, (run, records) in enumerate(records_by_run.items()):
        line = dict(color=model_color(run, i))
        lines = (line, dict(**line, dash="dash"))
        _add_loss_lines(fig, records, (f"{run}: train", f"{run}: validation"), lines, group=run)
    return _finish(fig, "SFT loss", "step", LOSS_LABEL)


def _add_run_lines(fig: go.Figure, records_by_run: Mapping[str, Sequence[Mapping]], y_key: str, x_key: str,
                   *, dash: str = "solid", row: int | None = None, col: int | None = None,
                   label: str | None = None, legend_runs: set | None = None) -> None:
    """One line per run for `y_key`, a run keeping its colour across keys and panels. With `legend_runs`
    the legend has one entry per run (the set records which runs have theirs); else one per line."""
    for i, (run, records) in enumerate(records_by_run.items()):
        x, y = _series(records, x_key, y_key)
        if not x:
            continue
        kw = dict(row=row, col=col) if row is not None else {}
        show = legend_runs is None or run not in legend_runs
        if legend_runs is not None:
            legend_runs.add(run)
        name = run if legend_runs is not None else f"{run}: {label or y_key}"
        fig.add_scatter(x=x, y=y, mode="lines", name=name, legendgroup=run, showlegend=show,
                        line=dict(color=model_color(run, i), dash=dash),
                        hovertemplate=f"{run}<br>{label or y_key} = %{{y:.4g}}<extra></extra>", **kw)


def sample_efficiency(records_by_run: Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """Share of prompts that give a gradient (solid) and of learnable groups (dashed) vs rollouts used."""
    keys = ("gradient_prompt_fraction", "learnable_fraction")
    x_key = _x_key(records_by_run, keys)
    fig = go.Figure()
    _add_run_lines(fig, records_by_run, keys[0], x_key, label="prompts with a gradient")
    _add_run_lines(fig, records_by_run, keys[1], x_key, dash="dash", label="learnable groups")
    fig.update_yaxes(range=[0, 1.05])
    return _finish(fig, "Sample efficiency", _axis_label(x_key), "fraction of prompts")


def reward_variance(records_by_run: Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """Mean reward (top) and reward variance within groups (bottom), per run."""
    x_key = _x_key(records_by_run, ("reward_mean", "reward_var"))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("reward mean", "reward variance"))
    runs: set = set()
    _add_run_lines(fig, records_by_run, "reward_mean", x_key, row=1, col=1, label="reward mean",
                   legend_runs=runs)
    _add_run_lines(fig, records_by_run, "reward_var", x_key, row=2, col=1, label="reward variance",
                   legend_runs=runs)
    fig.update_xaxes(title_text=_axis_label(x_key), row=2, col=1)
    return _finish(fig, "Reward mean and variance", height=520)


# (panel title, [(key, line dash, label)]) in the dashboard's reading order; titles name the line styles.
DASHBOARD_PANELS = (
    ("with gradient (solid), learnable (dash)",
     [("gradient_prompt_fraction", "solid", "prompts with a gradient"),
      ("learnable_fraction", "dash", "learnable groups")]),
    ("reward mean (solid), variance (dot)",
     [("reward_mean", "solid", "reward mean"), ("reward_var", "dot", "reward variance")]),
    ("clipped tokens: low (solid), high (dash)",
     [("grpo/clip_frac_low", "solid", "clipped low"), ("grpo/clip_frac_high", "dash", "clipped high")]),
    ("KL: to reference (solid), to old (dash)",
     [("grpo/kl", "solid", "KL to reference"), ("grpo/approx_kl", "dash", "KL to old policy")]),
    ("raw mass on valid tokens (solid), entropy (dash)",
     [("valid_mass", "solid", "valid mass"), ("entropy", "dash", "entropy")]),
    ("validation NDCG@10", [("val_ndcg@10", "solid", "val NDCG@10")]),
    ("gradient norm", [("grad_norm", "solid", "gradient norm")]),
)
DASHBOARD_COLUMNS = 2  # two columns stay readable in a notebook's default figure width


def training_dashboard(records_by_run: Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """RL dashboard: a panel per `DASHBOARD_PANELS` entry against rollouts used (or step); a run keeps its
    colour (one legend entry), line styles tell a panel's keys apart, a key no record has leaves it empty."""
    all_keys = [k for _, keys in DASHBOARD_PANELS for k, _, _ in keys]
    x_key = _x_key(records_by_run, all_keys)
    rows = -(-len(DASHBOARD_PANELS) // DASHBOARD_COLUMNS)
    fig = make_subplots(rows=rows, cols=DASHBOARD_COLUMNS, subplot_titles=[t for t, _ in DASHBOARD_PANELS],
                        horizontal_spacing=0.1, vertical_spacing=0.1)
    fig.update_annotations(font_size=12)  # the subplot titles
    runs: set = set()
    for p, (_, keys) in enumerate(DASHBOARD_PANELS):
        row, col = p // DASHBOARD_COLUMNS + 1, p % DASHBOARD_COLUMNS + 1
        for key, dash, label in keys:
            _add_run_lines(fig, records_by_run, key, x_key, dash=dash, row=row, col=col, label=label,
                           legend_runs=runs)
    fig.update_xaxes(title_text=_axis_label(x_key), row=rows)
    _finish(fig, "Training dashboard", height=250 * rows + 120)
    fig.update_layout(legend=dict(orientation="h", x=0, y=1.05, yanchor="bottom", xanchor="left"),
                      margin=dict(t=110), title_y=0.98)
    return fig


# ------------------------------------------------------------------------------------------- rollouts


def group_bars(items, titles: Sequence[str], probs, rewards, duplicate_counts=None) -> go.Figure:
    """One group, top down: each item's probability under the policy, coloured by reward, with its
    duplicates. items [G] ids, titles [G] str, probs [G], rewards [G], duplicate_counts [G] int (optional)."""
    items, probs, rewards = _tolist(items), _tolist(probs), _tolist(rewards)
    dups = _tolist(duplicate_counts) if duplicate_counts is not None else [1] * len(items)
    if not len(items) == len(titles) == len(probs) == len(rewards) == len(dups):
        lengths = [len(items), len(titles), len(probs), len(rewards), len(dups)]
        raise ValueError(f"group_bars: items, titles, probs, rewards, duplicate_counts must have one entry "
                         f"per item; got lengths {lengths}")
    seen: Counter = Counter()
    labels = []
    for t in titles:  # a category axis merges equal labels: keep repeated titles apart
        seen[t] += 1
        labels.append(t if seen[t] == 1 else f"{t} ({seen[t]})")
    fig = go.Figure(go.Bar(
        x=probs, y=labels, orientation="h", name="items",
        marker_color=[HIT_COLOR if r > 0 else MISS_COLOR for r in rewards],
        text=[f"r={r:g}" + (f" ×{d}" if d > 1 else "") for r, d in zip(rewards, dups, strict=True)],
        textposition="auto", customdata=items, hovertemplate="item %{customdata}: p=%{x:.3g}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _finish(fig, "One group: policy probability, reward (green = hit), duplicates (×n)",
                   "probability under the policy", None, height=max(260, 40 + 28 * len(items)))


def learnable_fraction_grid(results: Sequence[Mapping], kind: str = "lines",
                            selected: tuple[int, float] | None = None) -> go.Figure:
    """Learnable fraction of groups against group size G and temperature; results: dicts with group_size,
    temperature, learnable_fraction. kind "lines" (a line per temperature) or "heatmap" (G by temperature);
    selected: the (G, T) to mark (a ring on the lines, a box on the heatmap), e.g. a slider's."""
    if kind not in ("lines", "heatmap"):
        raise ValueError(f"kind must be 'lines' or 'heatmap', got {kind!r}")
    sizes = sorted({int(r["group_size"]) for r in results})
    temps = sorted({float(r["temperature"]) for r in results})
    value = {(int(r["group_size"]), float(r["temperature"])): float(r["learnable_fraction"]) for r in results}
    fig = go.Figure()
    if kind == "lines":
        for i, t in enumerate(temps):
            gs = [g for g in sizes if (g, t) in value]
            fig.add_scatter(x=gs, y=[value[g, t] for g in gs], mode="lines+markers", name=f"T={t:g}",
                            line=dict(color=color(i)))
        if selected is not None and tuple(selected) in value:
            g, t = int(selected[0]), float(selected[1])
            fig.add_scatter(x=[g], y=[value[g, t]], mode="markers", name=f"selected: G={g}, T={t:g}",
                            marker=dict(size=18, symbol="circle-open", line=dict(width=3, color="#000000")))
        fig.update_yaxes(range=[0, 1.05])
        return _finish(fig, "Learnable groups under plain GRPO", "group size G", "learnable fraction")
    z = [[value.get((g, t), math.nan) for g in sizes] for t in temps]
    fig.add_heatmap(x=[str(g) for g in sizes], y=[f"{t:g}" for t in temps], z=z, zmin=0, zmax=1,
                    colorscale="Viridis", colorbar=dict(title="learnable"), texttemplate="%{z:.2f}")
    if selected is not None and tuple(selected) in value:
        column, row = sizes.index(int(selected[0])), temps.index(float(selected[1]))
        fig.add_shape(type="rect", xref="x", yref="y", x0=column - 0.5, x1=column + 0.5, y0=row - 0.5,
                      y1=row + 0.5, line=dict(color="#FFFFFF", width=4))
    return _finish(fig, "Learnable groups under plain GRPO", "group size G", "temperature")


def unique_items_comparison(stats_by_mode: Mapping[str, object], group_size: int | None = None) -> go.Figure:
    """Distinct items per group under each rollout mode (e.g. sampling vs oversample + de-duplicate).

    stats_by_mode: mode -> per-group distinct-item counts: grouped bars of the share of groups with each
    count, the legend gives the mean. group_size: a reference line at G (the most a group can hold).
    """
    fig = go.Figure()
    for i, (mode, values) in enumerate(stats_by_mode.items()):
        values = [int(v) for v in _tolist(values)]
        if not values:
            continue
        counts = sorted(Counter(values).items())
        fig.add_bar(x=[k for k, _ in counts], y=[c / len(values) for _, c in counts], marker_color=color(i),
                    name=f"{mode} (mean {sum(values) / len(values):.2f})")
    if group_size:
        fig.add_vline(x=group_size, line_dash="dot", annotation_text=f"G={group_size}")
    fig.update_layout(barmode="group")
    return _finish(fig, "Distinct items per group", "distinct items in the group", "share of groups")


# ----------------------------------------------------------------------------------------- evaluation


def summary_bars(summaries_by_model: Mapping[str, Mapping[str, Mapping]],
                 metrics: Sequence[str] = ("hr@10", "ndcg@10")) -> go.Figure:
    """Grouped bars, a trace per model, x = metric, whiskers = the interval; summaries_by_model: model ->
    metric -> {"value", "lo", "hi", ...} (what `evaluate(...).summaries`, the baselines' ``summaries`` and
    compare.json's ``metrics`` hold). A metric a model lacks is left out of its trace."""
    fig = go.Figure()
    for i, (model, summaries) in enumerate(summaries_by_model.items()):
        shown = [m for m in metrics if m in summaries]
        value, lo, hi = ([float(summaries[m][key]) for m in shown] for key in ("value", "lo", "hi"))
        above = [h - v for h, v in zip(hi, value, strict=True)]
        below = [v - low for v, low in zip(value, lo, strict=True)]
        fig.add_bar(x=shown, y=value, name=model, marker_color=model_color(model, i),
                    error_y=dict(type="data", symmetric=False, array=above, arrayminus=below))
    fig.update_layout(barmode="group")
    return _finish(fig, "Ranking metrics (bars: mean; whiskers: interval)", "metric", "value")


def pair_margins(pairs_table: Sequence[Mapping], selected: int | None = None) -> go.Figure:
    """Score margin s(chosen) − s(rejected) per preference pair, the selected one in black; rows hold
    `margin`, or `chosen_score` and `rejected_score` (neither: 0)."""
    margins = [float(r["margin"]) if r.get("margin") is not None else
               float(r.get("chosen_score", 0.0)) - float(r.get("rejected_score", 0.0)) for r in pairs_table]
    colors = [HIT_COLOR if m > 0 else MISS_COLOR for m in margins]
    if selected is not None and 0 <= selected < len(colors):
        colors[selected] = "#000000"
    fig = go.Figure(go.Bar(x=list(range(len(margins))), y=margins, marker_color=colors, name="margin"))
    fig.update_xaxes(type="category")  # pair numbers, never fractional ticks
    return _finish(fig, "Pair margins (green: chosen already preferred; black: selected)", "pair",
                   "s(chosen) - s(rejected)")


def token_ratios(tokens: Sequence[str], ratios, clipped=None, eps_low: float = 0.2,
                 eps_high: float = 0.2) -> go.Figure:
    """Per-token probability ratio pi_theta / pi_old, the clip band, and which tokens were clipped."""
    ratios = [float(r) for r in _tolist(ratios)]
    clip = [bool(c) for c in _tolist(clipped)] if clipped is not None else [False] * len(ratios)
    fig = go.Figure(go.Bar(x=list(range(len(ratios))), y=ratios, name="ratio",
                           marker_color=[MISS_COLOR if c else color(0) for c in clip],
                           hovertext=list(tokens)))
    fig.add_hrect(y0=1 - eps_low, y1=1 + eps_high, fillcolor=HIT_COLOR, opacity=0.12, line_width=0)
    fig.update_xaxes(tickvals=list(range(len(tokens))), ticktext=[visible_token(t) for t in tokens])
    return _finish(fig, "Token ratios (band: unclipped region; red: clipped)", "token", "ratio")


def visible_token(token: str) -> str:
    """A token as text a reader can see: newlines and tabs escaped, a space-only token shown as '␣'."""
    shown = token.replace("\n", "\\n").replace("\t", "\\t")
    return shown if shown.strip() else shown.replace(" ", "␣")


def token_strings(tokenizer, ids) -> list[str]:
    """Each token id decoded on its own (so byte-level markers like 'Ġ' become real spaces)."""
    return [tokenizer.decode([int(i)]) for i in _tolist(ids)]


def token_spans_html(tokens: Sequence[str], branching=None, weights=None, ratios=None, clipped=None) -> str:
    """HTML of tokens coloured by branching (orange: decision, grey: forced), weight (opacity), and
    clipping (red underline); hovering a token shows its weight and ratio."""
    n = len(tokens)
    flags = [bool(b) for b in _tolist(branching)] if branching is not None else [None] * n
    w = [float(x) for x in _tolist(weights)] if weights is not None else [None] * n
    r = [float(x) for x in _tolist(ratios)] if ratios is not None else [None] * n
    c = [bool(x) for x in _tolist(clipped)] if clipped is not None else [False] * n
    if not n == len(flags) == len(w) == len(r) == len(c):
        raise ValueError("token_spans_html: branching, weights, ratios, clipped need one entry per token")
    spans = []
    for tok, flag, weight, ratio, clip in zip(tokens, flags, w, r, c, strict=True):
        bg = DECISION_COLOR if flag else FORCED_COLOR if flag is not None else "#DDDDDD"
        opacity = 0.35 + 0.65 * min(max(weight, 0.0), 1.0) if weight is not None else 1.0
        tip = [("decision" if flag else "forced") if flag is not None else ""]
        tip += [f"w={weight:.2f}"] if weight is not None else []
        tip += [f"ratio={ratio:.3f}"] if ratio is not None else []
        style = (f"background:{bg};opacity:{opacity:.2f};padding:1px 3px;margin:1px;border-radius:3px;"
                 "font-family:monospace;white-space:pre")
        if clip:
            style += f";border-bottom:3px solid {MISS_COLOR}"
        text = html.escape(visible_token(tok))
        spans.append(f'<span class="riser-token" title="{html.escape(" ".join(t for t in tip if t))}" '
                     f'style="{style}">{text}</span>')
    return "".join(spans)
