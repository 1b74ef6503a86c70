"""Figure builders: the traces hold exactly the data given (or hand-computed from it)."""

import math

import pytest
import torch

from riser_lite.data.types import Example, RecDataset
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.tokenizer import train_tokenizer
from riser_lite.teach import viz


@pytest.fixture(scope="module")
def dataset():
    catalog = {1: "Alpha Star", 2: "Beta Star", 3: "Gamma Moon", 4: "Delta Moon"}
    train = [Example("u1", (2,), 1), Example("u1", (2, 1), 1), Example("u2", (1,), 2),
             Example("u2", (1, 2), 1), Example("u3", (4, 1, 2), 3)]
    valid = [Example("u1", (2, 1, 1), 3)]
    return RecDataset("toy", catalog, {"train": train, "valid": valid, "test": []})


@pytest.fixture(scope="module")
def space(dataset):
    return ItemSpace(dataset.catalog, train_tokenizer(dataset.catalog.values(), vocab_size=300))


def test_popularity_long_tail_ranks_target_counts(dataset):
    fig = viz.popularity_long_tail(dataset)
    (trace,) = fig.data
    assert list(trace.x) == [1, 2, 3]
    assert list(trace.y) == [3, 1, 1]  # item 1 three times; items 2 and 3 once (ties by item id)
    assert list(trace.hovertext) == ["Alpha Star", "Beta Star", "Gamma Moon"]
    assert fig.layout.yaxis.type == "log"
    assert "1 of 4 items never occur" in fig.layout.title.text


def test_history_length_histogram_shares_per_split(dataset):
    fig = viz.history_length_histogram(dataset)
    assert [t.name for t in fig.data] == ["train", "valid"]  # the empty test split draws nothing
    train = fig.data[0]
    assert list(train.x) == [1, 2, 3]
    assert list(train.y) == pytest.approx([2 / 5, 2 / 5, 1 / 5])  # lengths 1, 2, 1, 2, 3
    assert list(train.customdata) == [2, 2, 1]
    assert list(fig.data[1].x) == [3] and list(fig.data[1].y) == [1.0]


def test_title_token_lengths(space):
    real = viz.title_token_lengths(space).data[0]
    expected = sorted({len(ids) for ids in space.response_ids.values()})
    assert list(real.x) == expected and sum(real.y) == len(space)


def test_branching_profile_by_hand():
    flags = {1: [True, False, False], 2: [True, True, False, False], 3: [True, True]}
    s = viz.branching_summary(flags)
    assert s["branching"] == [3, 2, 0, 0] and s["forced"] == [0, 1, 2, 1]
    assert s["branching_fraction"] == pytest.approx(5 / 9)
    fig = viz.branching_profile(flags)
    branching, forced, tokens, decisions = fig.data
    assert list(branching.y) == pytest.approx([1, 2 / 3, 0, 0])
    assert list(forced.y) == pytest.approx([0, 1 / 3, 1, 1])
    assert list(forced.base) == pytest.approx(list(branching.y))  # stacked on top of the decisions
    assert dict(zip(tokens.x, tokens.y, strict=True)) == {2: 1, 3: 1, 4: 1}
    assert dict(zip(decisions.x, decisions.y, strict=True)) == {1: 1, 2: 2}
    assert "55.6%" in fig.layout.title.text


def test_branching_profile_agrees_with_item_space(space):
    s = viz.branching_summary(space.branching)
    profile = space.branching_profile()
    assert s["branching_fraction"] == pytest.approx(profile["branching_fraction"])
    assert sum(s["tokens_per_item"]) / len(space) == pytest.approx(profile["tokens_per_item"])
    assert len(viz.branching_profile(space).data) == 4


def test_loss_curve_train_and_validation():
    records = [{"step": 1, "epoch": 0, "loss": 3.0}, {"step": 2, "epoch": 0, "loss": 2.0, "val_loss": 2.5},
               {"step": 3, "epoch": 1, "loss": 1.5},
               {"event": "valid", "step": 4, "epoch": 1, "valid_loss": 2.0}]  # the SFT trainer's name
    train, val = viz.loss_curve(records).data
    assert list(train.x) == [1, 2, 3] and list(train.y) == [3.0, 2.0, 1.5]
    assert list(val.x) == [2, 4] and list(val.y) == [2.5, 2.0]
    assert list(val.hovertext) == ["epoch 0", "epoch 1"]


def _run(n, lf, gpf, **extra):
    return [{"step": i, "rollouts_used": 16 * (i + 1), "learnable_fraction": lf,
             "gradient_prompt_fraction": gpf, **extra} for i in range(n)]


def test_sample_efficiency_lines_per_run():
    fig = viz.sample_efficiency({"grpo": _run(3, 0.25, 0.25), "riser": _run(2, 0.25, 1.0)})
    assert [t.name for t in fig.data] == ["grpo: prompts with a gradient", "riser: prompts with a gradient",
                                         "grpo: learnable groups", "riser: learnable groups"]
    assert list(fig.data[0].x) == [16, 32, 48] and list(fig.data[1].y) == [1.0, 1.0]
    assert fig.data[0].line.color == fig.data[2].line.color != fig.data[1].line.color
    assert fig.layout.xaxis.title.text == viz.ROLLOUTS_LABEL


def test_sample_efficiency_falls_back_to_step():
    records = _run(2, 0.5, 0.5)
    del records[1]["rollouts_used"]
    fig = viz.sample_efficiency({"run": records})
    assert list(fig.data[0].x) == [0, 1] and fig.layout.xaxis.title.text == "step"


def test_reward_variance_two_panels():
    fig = viz.reward_variance({"a": _run(2, 0, 0, reward_mean=0.1, reward_var=0.09)})
    mean, var = fig.data
    assert (mean.yaxis, var.yaxis) == ("y", "y2")
    assert list(mean.y) == [0.1, 0.1] and list(var.y) == [0.09, 0.09]
    assert [t.showlegend for t in fig.data] == [True, False]


def test_training_dashboard_leaves_missing_panels_empty():
    runs = {"grpo": _run(3, 0.2, 0.2, reward_mean=0.1), "riser": _run(3, 0.2, 1.0, **{"grpo/kl": 0.01})}
    runs["riser"][2]["val_ndcg@10"] = 0.3
    fig = viz.training_dashboard(runs)
    by_axis = {}
    for t in fig.data:
        by_axis.setdefault(t.xaxis, []).append(t)
    # panels: 1 sample efficiency, 2 reward, 3 clip, 4 KL, 5 valid mass + entropy, 6 NDCG, 7 grad norm
    assert len(by_axis["x"]) == 4 and len(by_axis["x2"]) == 1 and len(by_axis["x4"]) == 1
    assert "x3" not in by_axis and "x5" not in by_axis and "x7" not in by_axis
    (ndcg,) = by_axis["x6"]
    assert list(ndcg.x) == [48] and list(ndcg.y) == [0.3]
    assert sorted(t.name for t in fig.data if t.showlegend) == ["grpo", "riser"]  # one entry per run
    assert len(fig.layout.annotations) == len(viz.DASHBOARD_PANELS)


def test_group_bars_values_colours_duplicates():
    fig = viz.group_bars(torch.tensor([5, 6, 7]), ["A", "A", "B"], torch.tensor([0.5, 0.25, 0.125]),
                         torch.tensor([1.0, 0.0, 0.0]), [2, 1, 1])
    (bar,) = fig.data
    assert list(bar.x) == [0.5, 0.25, 0.125]
    assert list(bar.y) == ["A", "A (2)", "B"]  # repeated titles kept apart
    assert list(bar.marker.color) == [viz.HIT_COLOR, viz.MISS_COLOR, viz.MISS_COLOR]
    assert list(bar.text) == ["r=1 ×2", "r=0", "r=0"] and list(bar.customdata) == [5, 6, 7]
    with pytest.raises(ValueError, match="one entry per item"):
        viz.group_bars([1, 2], ["a"], [0.5, 0.5], [0, 0])


def test_learnable_fraction_grid_lines_and_heatmap():
    results = [{"group_size": g, "temperature": t, "learnable_fraction": g * t / 100}
               for g in (8, 2, 4) for t in (1.0, 0.5) if not (g == 8 and t == 0.5)]
    lines = viz.learnable_fraction_grid(results)
    assert [t.name for t in lines.data] == ["T=0.5", "T=1"]
    assert list(lines.data[0].x) == [2, 4] and list(lines.data[0].y) == pytest.approx([0.01, 0.02])
    assert list(lines.data[1].x) == [2, 4, 8] and list(lines.data[1].y) == pytest.approx([0.02, 0.04, 0.08])
    (heat,) = viz.learnable_fraction_grid(results, kind="heatmap").data
    assert list(heat.x) == ["2", "4", "8"] and list(heat.y) == ["0.5", "1"]
    assert heat.z[1] == pytest.approx((0.02, 0.04, 0.08)) and math.isnan(heat.z[0][2])
    with pytest.raises(ValueError, match="kind"):
        viz.learnable_fraction_grid(results, kind="pie")


def test_unique_items_comparison_distribution_and_means():
    fig = viz.unique_items_comparison({"sample": torch.tensor([1, 2, 2, 4]), "dedup": [4, 4]}, group_size=4)
    sample, dedup = fig.data
    assert list(sample.x) == [1, 2, 4] and list(sample.y) == pytest.approx([0.25, 0.5, 0.25])
    assert sample.name == "sample (mean 2.25)" and list(dedup.y) == [1.0]
    assert fig.layout.shapes[0].x0 == 4  # the G reference line


def test_summary_bars_error_bars():
    def summary(value, lo, hi):
        return {"value": value, "lo": lo, "hi": hi}

    fig = viz.summary_bars({"SFT": {"HR@10": summary(0.2, 0.1, 0.25), "NDCG@10": summary(0.1, 0.1, 0.1)},
                            "RISER": {"NDCG@10": summary(0.3, 0.2, 0.5), "HR@10": summary(0.4, 0.3, 0.45)}},
                           metrics=("HR@10", "NDCG@10"))
    sft, riser = fig.data
    assert list(sft.x) == ["HR@10", "NDCG@10"] and list(riser.x) == ["HR@10", "NDCG@10"]
    assert list(riser.y) == [0.4, 0.3]
    assert list(sft.error_y.array) == pytest.approx([0.05, 0.0])
    assert list(sft.error_y.arrayminus) == pytest.approx([0.1, 0.0])
    assert list(riser.error_y.array) == pytest.approx([0.05, 0.2])


def test_pair_margins_and_selection():
    rows = [{"margin": 0.5}, {"chosen_score": -2.0, "rejected_score": -1.5}, {"margin": -0.1}]
    (bar,) = viz.pair_margins(rows, selected=2).data
    assert list(bar.y) == pytest.approx([0.5, -0.5, -0.1])
    assert list(bar.marker.color) == [viz.HIT_COLOR, viz.MISS_COLOR, "#000000"]


def test_token_ratios_and_html():
    fig = viz.token_ratios(["a", "\n"], torch.tensor([1.0, 1.5]), [False, True], eps_low=0.1, eps_high=0.3)
    assert list(fig.data[0].y) == [1.0, 1.5]
    assert list(fig.data[0].marker.color) == [viz.color(0), viz.MISS_COLOR]
    assert (fig.layout.shapes[0].y0, fig.layout.shapes[0].y1) == (0.9, 1.3)
    assert list(fig.layout.xaxis.ticktext) == ["a", "\\n"]
    html = viz.token_spans_html(["<b>", " ", "x"], [True, False, True], [1.0, 0.2, 1.0], None, [0, 1, 0])
    assert html.count("riser-token") == 3 and "&lt;b&gt;" in html and "<b>" not in html
    assert html.count(viz.DECISION_COLOR) == 2 and html.count(viz.FORCED_COLOR) == 1
    assert html.count("border-bottom") == 1 and "␣" in html
    with pytest.raises(ValueError, match="one entry per token"):
        viz.token_spans_html(["a", "b"], [True])


def test_token_strings_decode_each_id(space):
    ids = space.response_ids[1]
    pieces = viz.token_strings(space.tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces[:-1]) == "Alpha Star\n"


def test_one_colour_per_model_in_every_figure():
    assert viz.model_color("SFT") == viz.model_color("sft") == viz.model_color("SFT (exp)")
    assert viz.model_color("RISER w/o pairs") == viz.model_color("riser-no-pairs")
    assert viz.model_color("riser-no-clip") != viz.model_color("riser-no-pairs")
    assert viz.model_color("oracle (true distribution)") == viz.model_color("oracle")
    assert viz.model_color("something new", 2) == viz.PALETTE[2]
    # The same model keeps its colour whatever the order or company of the other models.
    bars = viz.summary_bars({"popularity": {"hr@10": {"value": 0.1, "lo": 0.1, "hi": 0.1}},
                             "SFT": {"hr@10": {"value": 0.2, "lo": 0.2, "hi": 0.2}}})
    lines = viz.sample_efficiency({"GRPO": [{"step": 0, "gradient_prompt_fraction": 0.3}],
                                   "sft": [{"step": 0, "gradient_prompt_fraction": 0.5}]})
    colours = {t.name: t.marker.color for t in bars.data} | {t.name.split(":")[0]: t.line.color
                                                            for t in lines.data}
    assert colours["SFT"] == colours["sft"] == "#000000" and colours["GRPO"] == viz.MODEL_COLORS["grpo"]


def test_summary_bars_reads_evaluation_summaries():
    summaries = {"SFT": {"hr@10": {"value": 0.3, "lo": 0.2, "hi": 0.45, "n": 9},
                         "ndcg@10": {"value": 0.2, "lo": 0.1, "hi": 0.3, "n": 9}, "hr@5": {"value": 1}}}
    fig = viz.summary_bars(summaries)
    (bar,) = fig.data
    assert list(bar.x) == ["hr@10", "ndcg@10"] and list(bar.y) == [0.3, 0.2]
    assert list(bar.error_y.array) == pytest.approx([0.15, 0.1]) and list(bar.error_y.arrayminus) == \
        pytest.approx([0.1, 0.1])


def test_rounded_table_rounds_and_has_a_caption():
    table = viz.rounded_table([{"update": 1, "KL": -1e-9, "clipped": 0.123456}], "Per update", digits=3)
    assert table.frame.to_dict("records") == [{"update": 1, "KL": 0.0, "clipped": 0.123}]
    assert "-0.000" not in table._repr_html_() and "<figcaption><b>Per update</b>" in table._repr_html_()
    assert repr(table).splitlines()[0] == "Per update" and "0.123" in repr(table)
    counts = viz.rounded_table([{"item": 147, "share": 0.5}, {"item": 3, "share": 0.25}], "Counts")
    assert str(counts.frame["item"].dtype).startswith("int") and "<td>147</td>" in counts._repr_html_()
    assert "<td>0.500</td>" in counts._repr_html_()


def test_learnable_fraction_grid_marks_the_selected_point():
    results = [{"group_size": g, "temperature": t, "learnable_fraction": g * t / 32}
               for g in (2, 8) for t in (0.5, 1.0)]
    lines = viz.learnable_fraction_grid(results, selected=(8, 0.5))
    assert lines.data[-1].name == "selected: G=8, T=0.5" and list(lines.data[-1].y) == [0.125]
    heat = viz.learnable_fraction_grid(results, kind="heatmap", selected=(8, 1.0))
    (box,) = heat.layout.shapes
    assert (box.x0, box.x1, box.y0, box.y1) == (0.5, 1.5, 0.5, 1.5)  # column G=8, row T=1.0
    assert len(viz.learnable_fraction_grid(results).data) == 2  # nothing selected, nothing marked


def test_trie_depths_from_spaces_and_profiles(space):
    profile = [{"depth": 0, "nodes": 1, "branching_nodes": 1, "mean_children": 4.0},
               {"depth": 1, "nodes": 4, "branching_nodes": 1, "mean_children": 1.25}]
    fig = viz.trie_depths({"codes": profile, "titles": space})
    factor, decisions, title_factor, title_decisions = fig.data
    assert list(factor.x) == [0, 1] and list(factor.y) == [4.0, 1.25] and list(decisions.y) == [1, 1]
    expected = space.trie.depth_profile()
    assert list(title_factor.y) == [p["mean_children"] for p in expected]
    assert list(title_decisions.y) == [p["branching_nodes"] for p in expected]
    assert title_factor.line.color == title_decisions.line.color != factor.line.color
    assert fig.layout.yaxis.type == "log"


def test_loss_curves_one_colour_per_run():
    runs = {"titles": [{"step": 1, "loss": 3.0}, {"event": "valid", "step": 2, "valid_loss": 2.5}],
            "semantic IDs": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "val_loss": 1.5}]}
    train_a, valid_a, train_b, valid_b = viz.loss_curves(runs).data
    assert list(train_a.y) == [3.0] and list(valid_a.x) == [2] and list(valid_a.y) == [2.5]
    assert list(train_b.y) == [2.0, 1.0] and list(valid_b.y) == [1.5]
    assert train_a.line.color == valid_a.line.color != train_b.line.color == valid_b.line.color
    assert valid_a.line.dash == "dash" and train_a.name == "titles: train"
