"""Widgets without a front end: controls are moved in code and the figures must follow."""

import plotly.graph_objects as go
import pytest

from riser_lite import viz, widgets


@pytest.fixture
def displayed(monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "_display", lambda *objects: shown.extend(objects))
    return shown


def test_static_mode_decision(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    monkeypatch.setattr(widgets, "widgets_available", lambda: True)
    monkeypatch.setattr(widgets, "_figure_widget_works", lambda: True)
    assert widgets.use_static() is False
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    assert widgets.use_static() is True
    assert widgets.use_static(static=False) is False  # an explicit choice wins
    monkeypatch.delenv(widgets.STATIC_ENV)
    monkeypatch.setattr(widgets, "_figure_widget_works", lambda: False)  # e.g. plotly 6 without anywidget
    assert widgets.use_static() is True
    monkeypatch.setattr(widgets, "_figure_widget_works", lambda: True)
    monkeypatch.setattr(widgets, "widgets_available", lambda: False)  # no kernel (as under pytest)
    assert widgets.use_static() is True


def test_replace_figure_keeps_the_widget():
    fw = go.FigureWidget()
    fw.add_scatter(x=[0], y=[0])
    same = widgets.replace_figure(fw, viz.loss_curve([{"step": 1, "loss": 2.0}]))
    assert same is fw and len(fw.data) == 2 and list(fw.data[0].y) == [2.0]
    assert fw.layout.title.text == "SFT loss"


def test_live_curve_updates_in_place():
    curve = widgets.LiveCurve(min_interval_s=0.0, max_overhead=None, static=False)
    assert isinstance(curve.figure, go.FigureWidget) and curve.figure in curve.widget.children
    curve({"step": 0, "loss": 3.0})  # the first traces arrive: a new widget, built with them
    figure = curve.figure
    assert curve.widget.children == (figure,)
    for step, loss in enumerate([2.0, 1.0], start=1):
        curve({"step": step, "loss": loss})
    assert curve.figure is figure and curve.draws == 3  # same traces: updated in place
    assert list(curve.figure.data[0].y) == [3.0, 2.0, 1.0]
    curve.update({"step": 2, "val_loss": 1.5})
    assert curve.figure is figure and list(curve.figure.data[1].y) == [1.5]
    curve.finish()  # the final state as a fresh widget, in the container
    assert curve.figure is not figure and curve.widget.children == (curve.figure,)
    assert list(curve.figure.data[0].y) == [3.0, 2.0, 1.0]
    with pytest.raises(TypeError, match="metrics record"):
        curve.update(3.0)


def test_live_curve_throttles_redraws():
    curve = widgets.LiveCurve(min_interval_s=3600.0, static=False)
    for step in range(50):
        curve.update({"step": step, "loss": 1.0 / (step + 1)})
    assert curve.draws == 1 and len(curve.figure.data[0].y) == 1  # only the first record was drawn
    assert len(curve.records) == 50
    curve.flush()
    assert curve.draws == 2 and len(curve.figure.data[0].y) == 50


def test_live_curve_bounds_the_time_spent_plotting(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(widgets.time, "monotonic", lambda: clock[0])

    def slow_builder(records):  # every redraw costs 2 s of (fake) time
        clock[0] += 2.0
        return viz.loss_curve(records)

    curve = widgets.LiveCurve(slow_builder, min_interval_s=0.0, max_overhead=0.1, static=False)
    for step in range(30):  # one record per second
        clock[0] += 1.0
        curve.update({"step": step, "loss": 1.0})
    # step 0 is drawn at t=1 and the draw ends at t=3, so step k arrives at t=3+k; the next redraw waits
    # 2 s / 0.1 = 20 s after t=3: step 20 (21 records); the one after would need t >= 25 + 20
    assert curve.draws == 2 and len(curve.figure.data[0].y) == 21
    with pytest.raises(ValueError, match="max_overhead"):
        widgets.LiveCurve(max_overhead=0.0, static=True)


def test_static_curve_draws_once_at_the_end(displayed, capsys):
    curve = widgets.LiveCurve(min_interval_s=0.0, static=True)
    assert type(curve.figure) is go.Figure and curve.figure not in curve.widget.children
    curve.show()
    assert displayed == [] and "finish()" in capsys.readouterr().out
    for step in range(5):
        curve.update({"step": step, "loss": float(step)})
    assert curve.draws == 0 and not curve.figure.data
    curve.finish()
    assert curve.draws == 1 and len(displayed) == 1
    assert isinstance(displayed[0], go.Figure) and list(displayed[0].data[0].y) == [0, 1, 2, 3, 4]


def test_training_dashboard_runs_and_callbacks():
    dash = widgets.TrainingDashboard(min_interval_s=0.0, max_overhead=None, static=False)
    grpo, riser = dash.callback_for("grpo"), dash.callback_for("riser")
    for step in range(3):
        grpo({"step": step, "rollouts_used": 8 * (step + 1), "learnable_fraction": 0.25,
              "gradient_prompt_fraction": 0.25})
        riser({"step": step, "rollouts_used": 8 * (step + 1), "learnable_fraction": 0.25,
               "gradient_prompt_fraction": 1.0})
    assert set(dash.records_by_run) == {"grpo", "riser"} and dash.widget.children == (dash.figure,)
    names = [t.name for t in dash.figure.data]
    assert names.count("grpo") == 2 and names.count("riser") == 2
    riser_gradient = [t for t in dash.figure.data if t.name == "riser" and t.line.dash == "solid"][0]
    assert list(riser_gradient.x) == [8, 16, 24] and list(riser_gradient.y) == [1.0, 1.0, 1.0]
    dash.update({"step": 0, "rollouts_used": 8, "reward_mean": 0.5})  # the default run
    assert "run" in dash.records_by_run and any(t.name == "run" for t in dash.figure.data)


def test_dashboard_with_another_builder_and_initial_records():
    records = {"a": [{"step": 0, "reward_mean": 0.1, "reward_var": 0.09}]}
    dash = widgets.TrainingDashboard(records, builder=viz.reward_variance, static=True)
    assert dash.draws == 1 and list(dash.figure.data[0].y) == [0.1]


def _group(i):
    return {"history": [f"H{i}", "<Old>"], "target": f"T{i}", "items": [i, i + 1], "titles": [f"T{i}", "X"],
            "probs": [0.5 + i / 10, 0.25], "rewards": [1.0, 0.0], "duplicates": [1, 3],
            "tokens": [[f"T{i}", "\n"], ["X", "\n"]], "branching": [[True, False], [True, False]]}


def test_rollout_inspector_follows_the_slider(displayed):
    calls = []

    def provider(i):
        calls.append(i)
        return _group(i)

    inspector = widgets.RolloutInspector(provider, num_users=3, static=False)
    assert list(inspector.figure.data[0].x) == [0.5, 0.25] and "T0" in inspector.context.value
    assert "&lt;Old&gt;" in inspector.context.value
    assert inspector.tokens.value.count("riser-token") == 4
    inspector.slider.value = 2
    assert inspector.index == 2 and list(inspector.figure.data[0].x) == [0.7, 0.25]
    assert list(inspector.figure.data[0].text) == ["r=1", "r=0 ×3"]
    assert "T2" in inspector.context.value
    inspector.select(0)
    assert inspector.slider.value == 0 and calls == [0, 2]  # groups are fetched once
    inspector.show()
    assert displayed == [inspector.widget]
    with pytest.raises(IndexError):
        inspector.select(3)


def test_rollout_inspector_from_a_list_and_bad_groups(displayed):
    groups = [_group(0), {k: v for k, v in _group(1).items() if k not in ("tokens", "branching")}]
    inspector = widgets.RolloutInspector(groups, static=True)
    inspector.slider.value = 1
    assert "riser-token" not in inspector.tokens.value and "X" in inspector.tokens.value
    inspector.show()
    assert len(displayed) == 3 and isinstance(displayed[-1], go.Figure)  # two HTML panes, then the figure
    with pytest.raises(KeyError, match="probs"):
        widgets.RolloutInspector(lambda i: {"history": []}, num_users=1, static=True)
    with pytest.raises(ValueError, match="num_users"):
        widgets.RolloutInspector(lambda i: _group(i), static=True)


def test_sample_efficiency_explorer_computes_each_point_once():
    calls = []

    def compute(g, t):
        calls.append((g, t))
        return {"learnable_fraction": g * t / 16, "unique": g}

    explorer = widgets.SampleEfficiencyExplorer(compute, group_sizes=(2, 8), temperatures=(0.5, 1.0),
                                                static=False)
    assert calls == [(2, 0.5)] and len(explorer.figure.data) == 1
    explorer.g_slider.value = 8
    assert calls[-1] == (8, 0.5) and list(explorer.figure.data[0].x) == [2, 8]
    assert list(explorer.figure.data[0].y) == pytest.approx([1 / 16, 4 / 16])
    explorer.set(2, 1.0)  # moves both sliders, computes only the new point
    assert calls[-1] == (2, 1.0) and len(calls) == 3
    assert [t.name for t in explorer.figure.data] == ["T=0.5", "T=1"]
    assert "12.5%" in explorer.summary.value  # 2 * 1.0 / 16
    explorer.g_slider.value = 8
    explorer.g_slider.value = 2  # back to a computed point: no new call
    assert len(calls) == 4 and explorer.results[(2, 1.0)]["unique"] == 2


def test_pair_explorer_highlights_the_selected_pair():
    rows = [{"prompt": "p<1>", "chosen": "A\n", "rejected": "B\n", "margin": 0.4},
            {"prompt": "p2", "chosen": "A\n", "rejected": "C\n", "chosen_score": -1.0,
             "rejected_score": -0.5}]

    class FakeDataset:  # what `pairs.pairs_to_dataset` returns offers `to_list`
        def to_list(self):
            return rows

    explorer = widgets.PairExplorer(FakeDataset(), static=False)
    assert list(explorer.figure.data[0].marker.color)[0] == "#000000"
    assert "p&lt;1&gt;" in explorer.detail.value
    explorer.slider.value = 1
    colors = list(explorer.figure.data[0].marker.color)
    assert colors == [viz.HIT_COLOR, "#000000"] and list(explorer.figure.data[0].y) == [0.4, -0.5]
    assert "C\n" in explorer.detail.value and "chosen_score = -1" in explorer.detail.value
    with pytest.raises(KeyError, match="rejected"):
        widgets.PairExplorer([{"prompt": "p", "chosen": "A"}], static=True)


def test_token_view_html_and_ratios():
    view = widgets.TokenView(["A", "b", "\n"], weights=[1.0, 0.1, 0.1], ratios=[1.0, 1.4, 0.9],
                             clipped=[False, True, False], branching=[True, False, False], static=False)
    assert view.html.value.count("riser-token") == 3 and view.html.value.count("border-bottom") == 1
    assert list(view.figure.data[0].y) == [1.0, 1.4, 0.9]
    view.update(["c"], branching=[True])
    assert len(view.figure.data) == 0 and view.html.value.count("riser-token") == 1
