"""Interactive views for the notebooks: ipywidgets controls around figures built by `riser_lite.teach.viz`.

A view has ``.figure`` (the `go.Figure` it shows now), ``.widget`` (controls, HTML panes and, live, the
``ipywidgets.Output`` area ``.output``) and ``show()``; a cell ending in a view displays it. Live, a redraw
puts the figure in the Output area as display data (plotly's JSON, and HTML loading plotly.js from its CDN
for Colab), not as a plotly ``FigureWidget``: that ships a ~5 MB bundle per figure, which a slow front end
abandons, leaving the figure empty. Static (no widget front end, ``RISER_LITE_STATIC=1`` or
``static=True``): a plain ``go.Figure``, shown when asked (``show()``, or ``finish()`` after training).
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence

import plotly.graph_objects as go

from riser_lite.teach import viz
from riser_lite.teach.notebook import widgets_available

STATIC_ENV = "RISER_LITE_STATIC"
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def use_static(static: bool | None = None) -> bool:
    """Whether views fall back to static figures: `static` if given, else `STATIC_ENV`, else no front end."""
    if static is not None:
        return bool(static)
    if os.environ.get(STATIC_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return not widgets_available()


def figure_output(fig: go.Figure) -> dict:
    """`fig` as one nbformat display_data output for an Output area: plotly's JSON and CDN-loading HTML."""
    data = {PLOTLY_MIMETYPE: json.loads(fig.to_json()),
            "text/html": fig.to_html(full_html=False, include_plotlyjs="cdn")}
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _display(*objects) -> None:
    from IPython.display import display

    display(*objects)


class FigureView:
    """Base of the views: a figure, optional controls and HTML panes, live or static."""

    def __init__(self, static: bool | None = None):
        import ipywidgets as w

        self.static = use_static(static)
        self.figure = go.Figure()
        self.output = None if self.static else w.Output()  # live mode: where the figure is drawn
        self.controls: list = []  # ipywidgets controls, shown above the panes
        self.panes: list = []  # ipywidgets.HTML panes, shown between the controls and the figure
        self._w = w
        self._container = None

    def draw(self, fig: go.Figure) -> None:
        """Show a viz builder's figure: `.figure` and, live, the Output area (an empty figure clears it)."""
        self.figure = fig
        if self.output is None:
            return
        # The area keeps the figure's height while the browser swaps the plots, so the page does not jump.
        height = fig.layout.height if fig.data else None
        self.output.layout.min_height = f"{int(height)}px" if height else None
        self.output.outputs = (figure_output(fig),) if fig.data else ()

    def _html_pane(self, value: str = "") -> object:
        pane = self._w.HTML(value=value)
        self.panes.append(pane)
        return pane

    @property
    def widget(self):
        """The ipywidgets container (in static mode it holds controls and panes, not the figure)."""
        if self._container is None:
            children = [*self.controls, *self.panes] + ([] if self.output is None else [self.output])
            self._container = self._w.VBox(children)
        return self._container

    def show(self) -> None:
        """Display the view: the live widget, or (static mode) the HTML panes and a snapshot of the figure."""
        if not self.static:
            _display(self.widget)
            return
        from IPython.display import HTML

        for pane in self.panes:
            if pane.value:
                _display(HTML(pane.value))
        if self.figure.data:
            _display(go.Figure(self.figure))

    def _ipython_display_(self) -> None:
        self.show()


class LiveCurve(FigureView):
    """A figure redrawn from metric records as training runs; pass it (or `.update`) as the step callback.

    builder: a viz builder taking the records (default `viz.loss_curve`). Redraws come at most every
    `min_interval_s`, and at least (last redraw's cost) / `max_overhead` apart, so live plotting takes at
    most about that share of the training time (None: no such bound). Static: `finish()` draws once.
    """

    def __init__(self, builder: Callable = viz.loss_curve, records: Sequence[Mapping] | None = None, *,
                 min_interval_s: float = 1.0, max_overhead: float | None = 0.1, static: bool | None = None):
        super().__init__(static)
        if max_overhead is not None and not 0 < max_overhead <= 1:
            raise ValueError(f"max_overhead must be in (0, 1] or None, got {max_overhead}")
        self.builder = builder
        self.records: list[dict] = [dict(r) for r in records or []]
        self.min_interval_s = float(min_interval_s)
        self.max_overhead = max_overhead
        self._last_draw = -float("inf")
        self._draw_cost = 0.0  # seconds the last redraw took
        self.draws = 0  # how many times the figure was rebuilt (visible cost of live plotting)
        if self._has_records():
            self.flush()

    def _build(self) -> go.Figure:
        return self.builder(self.records)

    def _store(self, record: Mapping, run: str | None) -> None:
        self.records.append(dict(record))

    def update(self, record: Mapping, run: str | None = None) -> None:
        """Add one metric record; redraw if live and `min_interval_s` has passed since the last redraw."""
        if not isinstance(record, Mapping):
            raise TypeError(f"update expects a metrics record (a dict), got {type(record).__name__}")
        self._store(record, run)
        wait = self.min_interval_s
        if self.max_overhead is not None:
            wait = max(wait, self._draw_cost / self.max_overhead)
        if not self.static and time.monotonic() - self._last_draw >= wait:
            self.flush()

    __call__ = update

    def flush(self) -> None:
        """Redraw now from every record so far."""
        start = time.monotonic()
        self.draw(self._build())
        self._last_draw = time.monotonic()
        self._draw_cost = self._last_draw - start
        self.draws += 1

    def finish(self) -> None:
        """End of training: draw the final state (whatever the throttle skipped); static, display it."""
        self.flush()
        if self.static:
            self.show()

    def show(self) -> None:
        if self.static and not self.figure.data:
            if self._has_records():
                self.flush()
            else:
                print("(static plots: the figure is shown when training ends, by finish())")
                return
        super().show()

    def _has_records(self) -> bool:
        return bool(self.records)


class TrainingDashboard(LiveCurve):
    """RL dashboard over several runs (`viz.training_dashboard` by default; any builder taking
    records_by_run works, e.g. `viz.sample_efficiency`). `update(record, run=...)` adds to a run;
    `callback_for(run)` gives a one-argument callback for a trainer."""

    def __init__(self, records_by_run: Mapping[str, Sequence[Mapping]] | None = None, *,
                 builder: Callable = viz.training_dashboard, run: str = "run", min_interval_s: float = 1.0,
                 max_overhead: float | None = 0.1, static: bool | None = None):
        self.records_by_run: dict[str, list[dict]] = {
            name: [dict(r) for r in recs] for name, recs in (records_by_run or {}).items()}
        self.run = run  # the run that `update(record)` adds to when no run is named
        super().__init__(builder, None, min_interval_s=min_interval_s, max_overhead=max_overhead,
                         static=static)

    def _build(self) -> go.Figure:
        return self.builder(self.records_by_run)

    def _store(self, record: Mapping, run: str | None) -> None:
        self.records_by_run.setdefault(run or self.run, []).append(dict(record))

    def _has_records(self) -> bool:
        return any(self.records_by_run.values())

    def callback_for(self, run: str) -> Callable[[Mapping], None]:
        """A per-step callback that files records under `run`."""
        return lambda record: self.update(record, run=run)


class _Browser(FigureView):
    """A view of one of `count` things (users, pairs), chosen with a slider or `select(index)`."""

    def __init__(self, count: int, label: str, static: bool | None):
        super().__init__(static)
        self.count, self.label = count, label
        self.slider = self._w.IntSlider(value=0, min=0, max=count - 1, description=label,
                                        continuous_update=False)
        self.slider.observe(lambda change: self.select(change["new"]), names="value")
        self.controls.append(self.slider)
        self.index = -1

    def select(self, index: int) -> None:
        """Show thing `index` (the slider calls this; so can code)."""
        index = int(index)
        if not 0 <= index < self.count:
            raise IndexError(f"{self.label} index {index} outside 0..{self.count - 1}")
        self.index = index
        if self.slider.value != index:
            self.slider.value = index  # the slider's observer calls select again, which shows it
            return
        self._show(index)

    def _show(self, index: int) -> None:
        raise NotImplementedError


ROLLOUT_KEYS = ("history", "target", "items", "titles", "probs", "rewards")


class RolloutInspector(_Browser):
    """Browse rollout groups user by user (the figure: `viz.group_bars`).

    groups_provider: a sequence of group dicts, or a callable ``user index -> group dict`` (then give
    `num_users`); each group is fetched once. A group dict holds history (titles, oldest first), target
    (title), items [G], titles [G], probs [G] (under the policy), rewards [G], and optionally duplicates [G]
    (times sampled), tokens ([G] lists of token strings), branching ([G] lists of flags), user (a label).
    """

    def __init__(self, groups_provider: Callable[[int], Mapping] | Sequence[Mapping],
                 num_users: int | None = None, *, static: bool | None = None):
        if callable(groups_provider):
            self._provider = groups_provider
        else:
            groups = list(groups_provider)
            self._provider = groups.__getitem__
            num_users = len(groups) if num_users is None else num_users
        if num_users is None or num_users < 1:
            raise ValueError("RolloutInspector needs num_users >= 1 when groups_provider is a callable")
        self.num_users = int(num_users)
        self._cache: dict[int, Mapping] = {}
        super().__init__(self.num_users, "user", static)
        self.context = self._html_pane()
        self.tokens = self._html_pane()
        self.select(0)

    @classmethod
    def from_groups(cls, groups, rewards, examples: Sequence, dataset, space, tokenizer,
                    num_users: int | None = None, *, static: bool | None = None) -> RolloutInspector:
        """An inspector over `rollout_examples`' groups ([P, G] items, item_prob, duplicate_counts), their
        rewards [P, G] and the P examples; the first `num_users` (None: all) are shown."""
        def group(p: int) -> dict:
            example, items = examples[p], groups.items[p].tolist()
            return {
                "user": f"user {example.user}",
                "history": [dataset.catalog[i] for i in example.history[-dataset.max_history:]],
                "target": dataset.catalog[example.target],
                "items": items,
                "titles": [space.titles[i] for i in items],
                "probs": groups.item_prob[p].tolist(),
                "rewards": rewards[p].tolist(),
                "duplicates": groups.duplicate_counts[p].tolist(),
                "tokens": [viz.token_strings(tokenizer, space.response_ids[i]) for i in items],
                "branching": [space.branching[i] for i in items],
            }

        count = len(examples) if num_users is None else min(int(num_users), len(examples))
        return cls(group, num_users=count, static=static)

    def group(self, index: int) -> Mapping:
        if not 0 <= index < self.num_users:
            raise IndexError(f"user index {index} outside 0..{self.num_users - 1}")
        if index not in self._cache:
            group = self._provider(index)
            missing = [k for k in ROLLOUT_KEYS if k not in group]
            if missing:
                raise KeyError(f"group {index} lacks {missing}; a group dict needs {list(ROLLOUT_KEYS)}")
            self._cache[index] = group
        return self._cache[index]

    def _show(self, index: int) -> None:
        g = self.group(index)
        self.draw(viz.group_bars(g["items"], g["titles"], g["probs"], g["rewards"], g.get("duplicates")))
        label = html.escape(str(g.get("user", f"user {index}")))
        history = "".join(f"<li>{html.escape(t)}</li>" for t in g["history"])
        self.context.value = (f"<b>{label}</b>: history (oldest first)<ol>{history}</ol>"
                              f"<b>target:</b> {html.escape(g['target'])}")
        rewards = g["rewards"].tolist() if hasattr(g["rewards"], "tolist") else list(g["rewards"])
        tokens, flags = g.get("tokens"), g.get("branching")
        rows = []
        for i, title in enumerate(g["titles"]):
            body = (viz.token_spans_html(tokens[i], flags[i] if flags is not None else None)
                    if tokens is not None else html.escape(title))
            rows.append(f"<div>r={float(rewards[i]):g} {body}</div>")
        legend = "<b>items, tokens coloured: decision (orange) / forced (grey)</b>" if tokens else ""
        self.tokens.value = legend + "".join(rows)


class SampleEfficiencyExplorer(FigureView):
    """How often plain GRPO groups are learnable, as the group size G and the temperature change.

    compute_fn(group_size, temperature) -> a dict of group statistics with ``learnable_fraction``. Each
    (G, T) is computed once; the figure (`viz.learnable_fraction_grid`) shows every point computed so far
    with the sliders' point ringed, and names it in the text pane.
    """

    def __init__(self, compute_fn: Callable[[int, float], Mapping],
                 group_sizes: Sequence[int] = (2, 4, 8, 16), temperatures: Sequence[float] = (0.5, 1.0, 1.5),
                 *, static: bool | None = None):
        super().__init__(static)
        self.compute_fn = compute_fn
        self.results: dict[tuple[int, float], dict] = {}
        self.g_slider = self._w.SelectionSlider(options=[int(g) for g in group_sizes], description="G",
                                                continuous_update=False)
        self.t_slider = self._w.SelectionSlider(options=[float(t) for t in temperatures],
                                                description="temperature", continuous_update=False)
        self._holding = False  # True while `set` moves both sliders: compute once, not per slider
        for s in (self.g_slider, self.t_slider):
            s.observe(lambda _change: None if self._holding else self._refresh(), names="value")
        self.controls += [self.g_slider, self.t_slider]
        self.summary = self._html_pane()
        self._refresh()

    def compute(self, group_size: int, temperature: float) -> dict:
        key = (int(group_size), float(temperature))
        if key not in self.results:
            out = self.compute_fn(*key)
            self.results[key] = {**out, "group_size": key[0], "temperature": key[1],
                                 "learnable_fraction": float(out["learnable_fraction"])}
        return self.results[key]

    def set(self, group_size: int, temperature: float) -> None:
        """Move both sliders (and recompute once)."""
        self._holding = True
        try:
            self.g_slider.value, self.t_slider.value = int(group_size), float(temperature)
        finally:
            self._holding = False
        self._refresh()

    def _refresh(self) -> None:
        current = self.compute(self.g_slider.value, self.t_slider.value)
        self.draw(viz.learnable_fraction_grid(list(self.results.values()),
                                              selected=(current["group_size"], current["temperature"])))
        self.summary.value = (f"G = {current['group_size']}, T = {current['temperature']:g}: "
                              f"<b>{current['learnable_fraction']:.1%}</b> of groups are learnable")


class PairExplorer(_Browser):
    """Browse preference pairs: prompt, chosen and rejected response, and every pair's margin.

    pairs_table: rows (dicts, or a `datasets.Dataset` as from `pairs.pairs_to_dataset`) with
    prompt, chosen, rejected and optionally margin or chosen_score/rejected_score, loss. The figure is
    `viz.pair_margins` with the selected pair highlighted.
    """

    def __init__(self, pairs_table, *, static: bool | None = None):
        is_dataset = hasattr(pairs_table, "to_list")
        self.rows = pairs_table.to_list() if is_dataset else [dict(row) for row in pairs_table]
        if not self.rows:
            raise ValueError("PairExplorer needs at least one pair")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in self.rows[0]]
        if missing:
            raise KeyError(f"pairs_table rows lack {missing}; expected prompt, chosen, rejected")
        super().__init__(len(self.rows), "pair", static)
        self.detail = self._html_pane()
        self.select(0)

    def _show(self, index: int) -> None:
        row = self.rows[index]
        self.draw(viz.pair_margins(self.rows, selected=index))
        keys = ("margin", "chosen_score", "rejected_score", "loss")
        numbers = ", ".join(f"{k} = {row[k]:.4g}" for k in keys if isinstance(row.get(k), (int, float)))
        pre = "<pre style='margin:0'>{}</pre>"
        self.detail.value = (f"<b>pair {index}</b> {numbers}<br><b>prompt</b>"
                             + pre.format(html.escape(str(row["prompt"])))
                             + f"<b style='color:{viz.HIT_COLOR}'>chosen</b>"
                             + pre.format(html.escape(str(row["chosen"])))
                             + f"<b style='color:{viz.MISS_COLOR}'>rejected</b>"
                             + pre.format(html.escape(str(row["rejected"]))))


class TokenView(FigureView):
    """One response's tokens: coloured by branching/weight, clipped tokens underlined (HTML), and the
    per-token ratio with its clip band (`viz.token_ratios`, when ratios are given).

    tokens: [L] str; weights, ratios: [L] float; clipped, branching: [L] bool (all optional but tokens).
    """

    def __init__(self, tokens: Sequence[str], weights=None, ratios=None, clipped=None, branching=None, *,
                 eps_low: float = 0.2, eps_high: float = 0.2, static: bool | None = None):
        super().__init__(static)
        self.eps_low, self.eps_high = eps_low, eps_high
        self.html = self._html_pane()
        self.update(tokens, weights, ratios, clipped, branching)

    def update(self, tokens: Sequence[str], weights=None, ratios=None, clipped=None, branching=None) -> None:
        """Show another response (or the same one after an update step)."""
        self.html.value = viz.token_spans_html(list(tokens), branching, weights, ratios, clipped)
        fig = (viz.token_ratios(list(tokens), ratios, clipped, self.eps_low, self.eps_high)
               if ratios is not None else go.Figure())
        self.draw(fig)
