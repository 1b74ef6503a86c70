"""Widgets without a front end: controls are moved in code and the figures must follow.

In live mode a view's figure is the display data of its ``ipywidgets.Output`` area, which is what the
browser receives; the tests read the traces from there.
"""

import json

import ipywidgets
import plotly.graph_objects as go
import pytest

from riser_lite.teach import viz, widgets


def drawn(view) -> list[dict]:
    """The traces the live view's Output area holds (what a front end draws); [] when it is empty."""
    outputs = view.output.outputs
    assert len(outputs) <= 1  # one figure, replaced on every redraw
    if not outputs:
        return []
    assert outputs[0]["output_type"] == "display_data"
    return outputs[0]["data"][widgets.PLOTLY_MIMETYPE]["data"]


@pytest.fixture
def displayed(monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "_display", lambda *objects: shown.extend(objects))
    return shown


def test_static_mode_decision(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    monkeypatch.setattr(widgets, "widgets_available", lambda: True)
    assert widgets.use_static() is False
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    assert widgets.use_static() is True
    assert widgets.use_static(static=False) is False  # an explicit choice wins
    monkeypatch.setenv(widgets.STATIC_ENV, "no")
    assert widgets.use_static() is False
    monkeypatch.delenv(widgets.STATIC_ENV)
    monkeypatch.setattr(widgets, "widgets_available", lambda: False)  # no kernel (as under pytest)
    assert widgets.use_static() is True
    assert widgets.use_static(static=False) is False


def test_figure_output_is_plain_display_data():
    fig = viz.loss_curve([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "val_loss": 1.75}])
    output = widgets.figure_output(fig)
    assert output["output_type"] == "display_data" and output["metadata"] == {}
    plotly_json = output["data"][widgets.PLOTLY_MIMETYPE]
    json.dumps(output)  # plain JSON all the way down: it travels as widget state
    assert [t["y"] for t in plotly_json["data"]] == [[2.0, 1.5], [1.75]]
    assert plotly_json["layout"]["title"]["text"] == "SFT loss" and plotly_json["layout"]["height"] == 380
    page = output["data"]["text/html"]  # for front ends without plotly's renderer (Colab)
    assert page.startswith("<div") and "cdn.plot.ly" in page and '"SFT loss"' in page


def test_no_figure_widget_is_created(monkeypatch):
    """Live views draw into Output areas: a plotly FigureWidget (an anywidget that ships plotly's 5 MB
    bundle per figure) must never be built."""
    monkeypatch.setattr(go, "FigureWidget", None)  # any use would fail
    curve = widgets.LiveCurve(records=[{"step": 0, "loss": 1.0}], min_interval_s=0.0, static=False)
    assert isinstance(curve.output, ipywidgets.Output) and curve.widget.children == (curve.output,)
    assert drawn(curve)[0]["y"] == [1.0]


def test_live_curve_redraws_its_output_area():
    curve = widgets.LiveCurve(min_interval_s=0.0, max_overhead=None, static=False)
    assert curve.widget.children == (curve.output,) and drawn(curve) == []  # nothing drawn yet, no axes
    curve({"step": 0, "loss": 3.0})
    output = curve.output
    for step, loss in enumerate([2.0, 1.0], start=1):
        curve({"step": step, "loss": loss})
    assert curve.output is output and curve.draws == 3  # one Output area, its content replaced
    assert drawn(curve)[0]["y"] == [3.0, 2.0, 1.0] and list(curve.figure.data[0].y) == [3.0, 2.0, 1.0]
    assert curve.output.layout.min_height == "380px"  # the figure's height: no jump while it is swapped
    curve.update({"step": 2, "val_loss": 1.5})
    assert [t["name"] for t in drawn(curve)] == ["train loss", "validation loss"]
    assert drawn(curve)[1]["y"] == [1.5]
    curve.finish()  # the final state, in the same area
    assert curve.draws == 5 and curve.widget.children == (output,) and drawn(curve)[0]["y"] == [3.0, 2.0, 1.0]
    with pytest.raises(TypeError, match="metrics record"):
        curve.update(3.0)


def test_live_curve_throttles_redraws():
    curve = widgets.LiveCurve(min_interval_s=3600.0, static=False)
    for step in range(50):
        curve.update({"step": step, "loss": 1.0 / (step + 1)})
    assert curve.draws == 1 and len(drawn(curve)[0]["y"]) == 1  # only the first record was drawn
    assert len(curve.records) == 50
    curve.flush()
    assert curve.draws == 2 and drawn(curve)[0]["y"] == [1.0 / (step + 1) for step in range(50)]


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
    assert curve.draws == 2 and len(drawn(curve)[0]["y"]) == 21
    with pytest.raises(ValueError, match="max_overhead"):
        widgets.LiveCurve(max_overhead=0.0, static=True)


def test_static_curve_draws_once_at_the_end(displayed, capsys):
    curve = widgets.LiveCurve(min_interval_s=0.0, static=True)
    assert type(curve.figure) is go.Figure and curve.output is None and curve.widget.children == ()
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
    assert set(dash.records_by_run) == {"grpo", "riser"} and dash.widget.children == (dash.output,)
    names = [t["name"] for t in drawn(dash)]
    assert names.count("grpo") == 2 and names.count("riser") == 2
    riser_gradient = [t for t in drawn(dash) if t["name"] == "riser" and t["line"]["dash"] == "solid"][0]
    assert riser_gradient["x"] == [8, 16, 24] and riser_gradient["y"] == [1.0, 1.0, 1.0]
    dash.update({"step": 0, "rollouts_used": 8, "reward_mean": 0.5})  # the default run
    assert "run" in dash.records_by_run and any(t["name"] == "run" for t in drawn(dash))


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
    assert drawn(inspector)[0]["x"] == [0.5, 0.25] and "T0" in inspector.context.value
    assert "&lt;Old&gt;" in inspector.context.value
    assert inspector.tokens.value.count("riser-token") == 4
    inspector.slider.value = 2
    assert inspector.index == 2 and drawn(inspector)[0]["x"] == [0.7, 0.25]
    assert drawn(inspector)[0]["text"] == ["r=1", "r=0 ×3"]
    assert "T2" in inspector.context.value
    inspector.select(0)
    assert inspector.slider.value == 0 and calls == [0, 2]  # groups are fetched once
    inspector.show()
    assert displayed == [inspector.widget] and inspector.widget.children[-1] is inspector.output
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
    assert calls == [(2, 0.5)] and len(drawn(explorer)) == 2  # the line and the ring on its one point
    explorer.g_slider.value = 8
    assert calls[-1] == (8, 0.5) and drawn(explorer)[0]["x"] == [2, 8]
    assert drawn(explorer)[0]["y"] == pytest.approx([1 / 16, 4 / 16])
    explorer.set(2, 1.0)  # moves both sliders, computes only the new point
    assert calls[-1] == (2, 1.0) and len(calls) == 3
    assert [t["name"] for t in drawn(explorer)] == ["T=0.5", "T=1", "selected: G=2, T=1"]
    assert drawn(explorer)[-1]["x"] == [2] and drawn(explorer)[-1]["y"] == pytest.approx([2 / 16])
    assert "12.5%" in explorer.summary.value  # 2 * 1.0 / 16
    explorer.g_slider.value = 8
    assert drawn(explorer)[-1]["name"] == "selected: G=8, T=1"  # the ring follows the slider
    assert drawn(explorer)[-1]["y"] == pytest.approx([8 / 16])
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
    assert drawn(explorer)[0]["marker"]["color"][0] == "#000000"
    assert "p&lt;1&gt;" in explorer.detail.value
    explorer.slider.value = 1
    colors = drawn(explorer)[0]["marker"]["color"]
    assert colors == [viz.HIT_COLOR, "#000000"] and drawn(explorer)[0]["y"] == [0.4, -0.5]
    assert "C\n" in explorer.detail.value and "chosen_score = -1" in explorer.detail.value
    with pytest.raises(KeyError, match="rejected"):
        widgets.PairExplorer([{"prompt": "p", "chosen": "A"}], static=True)


def test_token_view_html_and_ratios():
    view = widgets.TokenView(["A", "b", "\n"], weights=[1.0, 0.1, 0.1], ratios=[1.0, 1.4, 0.9],
                             clipped=[False, True, False], branching=[True, False, False], static=False)
    assert view.html.value.count("riser-token") == 3 and view.html.value.count("border-bottom") == 1
    assert drawn(view)[0]["y"] == [1.0, 1.4, 0.9]
    assert view.output.layout.min_height == f"{view.figure.layout.height}px"
    view.update(["c"], branching=[True])  # no ratios: the area is cleared, not left with blank axes
    assert drawn(view) == [] and len(view.figure.data) == 0 and view.html.value.count("riser-token") == 1
    assert view.output.layout.min_height is None  # and takes no room


def test_rollout_inspector_from_groups_builds_each_users_group(displayed):
    from types import SimpleNamespace

    import torch

    groups = SimpleNamespace(items=torch.tensor([[1, 2], [2, 2]]), item_prob=torch.tensor([[0.5, 0.25],
                                                                                           [0.75, 0.75]]),
                             duplicate_counts=torch.tensor([[1, 1], [2, 2]]))
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    examples = [SimpleNamespace(user=7, history=[0, 1, 2], target=1), SimpleNamespace(user=8, history=[0],
                                                                                      target=0)]
    dataset = SimpleNamespace(catalog={0: "Zero", 1: "One", 2: "Two"}, max_history=2)
    space = SimpleNamespace(titles={1: "One", 2: "Two"}, response_ids={1: [11, 12], 2: [13]},
                            branching={1: [True, False], 2: [True]})
    tokenizer = SimpleNamespace(decode=lambda ids: f"<{ids[0]}>")
    inspector = widgets.RolloutInspector.from_groups(groups, rewards, examples, dataset, space, tokenizer,
                                                     num_users=5, static=False)
    assert inspector.num_users == 2  # at most the prompts there are
    first = inspector.group(0)
    assert first["user"] == "user 7" and first["history"] == ["One", "Two"] and first["target"] == "One"
    assert first["titles"] == ["One", "Two"] and first["probs"] == [0.5, 0.25] and first["rewards"] == [1, 0]
    assert first["tokens"] == [["<11>", "<12>"], ["<13>"]] and first["branching"] == [[True, False], [True]]
    assert inspector.group(1)["duplicates"] == [2, 2]
