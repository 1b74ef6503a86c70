"""The demo end to end on a small synthetic dataset, its report, and its configuration and CLI."""

import html
import json
import os
import re
from pathlib import Path

import pytest
import torch

from riser_lab import report
from riser_lab.cli import build_parser
from riser_lab.cli.experiments import demo_config_from_args
from riser_lab.compare import EVAL_FILE, CompareConfig, auto_threads, format_table
from riser_lab.demo import run_demo
from riser_lite.data import load_dataset
from riser_lite.rl.config import ALGOS


def small_config(path: Path, **overrides) -> CompareConfig:
    base = dict(data="synthetic", path=str(path), preset="micro", sft_epochs=2, rl_steps=3,
                prompts_per_step=4, draws_per_prompt=8, rl_eval_every=3, rl_eval_examples=5, eval_examples=20,
                progress=False)
    return CompareConfig.demo(**{**base, **overrides})


@pytest.fixture(scope="module")
def demo(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    logged: list[str] = []
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = run_demo(small_config(small_data, threads=1), out, log=logged.append)
        assert torch.get_num_threads() == 2  # the demo's thread setting does not leak into the caller
    finally:
        torch.set_num_threads(original)
    return out, results, logged


@pytest.mark.slow
def test_demo_results(demo):
    out, results, logged = demo
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    models = results["models"]
    assert list(models) == ["sft", *ALGOS]

    # The same rollout budget for every algorithm: 3 steps x 4 prompts x 8 candidates generated.
    budgets = {algo: models[algo]["rl"]["rollouts_used"] for algo in ALGOS}
    assert set(budgets.values()) == {3 * 4 * 8} == {results["budget"]["rollouts"]}
    # RISER turns no-hit groups into pairs: at least as many prompts give a gradient as under GRPO.
    fraction = {algo: models[algo]["rl"]["gradient_prompt_fraction"] for algo in ALGOS}
    assert 0.0 < fraction["riser"] <= 1.0 and fraction["riser"] >= fraction["grpo"]

    entries = [*models.values(), *results["baselines"].values()]
    assert set(results["baselines"]) == {"popularity", "prompt_oracle", "oracle"}
    for entry in entries:
        for name, s in entry["metrics"].items():
            assert 0.0 <= s["lo"] <= s["value"] <= s["hi"] <= 1.0, (entry["label"], name, s)
            assert s["n"] == 20
        for k in (1, 5, 10, 20):
            assert entry["metrics"][f"ndcg@{k}"]["value"] <= entry["metrics"][f"hr@{k}"]["value"]
    oracle = results["baselines"]["oracle"]["metrics"]
    for name in models:
        run = out / name / "seed0" if name in ALGOS else out / "sft"
        assert json.loads((run / EVAL_FILE).read_text())["valid_rate"] == 1.0  # every beam names a title
        metrics = models[name]["metrics"]
        # Expected HR under the true distributions: no ranking holds more probability than the oracle's.
        assert metrics["expected_hr@10"]["value"] <= oracle["expected_hr@10"]["value"] + 1e-12
        # One recommendation: no item holds more probability than the oracle's top one, for any user.
        ceiling = oracle["expected_hr@1"]["value"]
        assert 0.0 < metrics["expected_sampled_hit"]["value"] <= ceiling
        assert 0.0 <= metrics["expected_greedy_hit"]["value"] <= ceiling
        assert {"sampled_hit", "greedy_hit"} <= set(metrics)
    prompt = results["baselines"]["prompt_oracle"]["metrics"]["expected_hr@10"]["value"]
    assert prompt <= oracle["expected_hr@10"]["value"] + 1e-12

    stages = {"data", "sft", "eval sft", *(f"{a} seed0" for a in ALGOS)}
    assert stages <= set(results["stages"])
    assert set(results["threads"]) == set(results["stages"])
    assert set(results["threads"].values()) == {results["config"]["threads"]}  # a fixed count is kept
    assert all(seconds >= 0 for seconds in results["stages"].values())
    table = format_table(results)
    assert all(models[m]["label"] in table for m in models) and "oracle" in table
    assert "prompt oracle" in table and "E[accept] sampled" in table
    assert any(line.startswith("riser seed 0") for line in logged) and table in logged

    # Run folders later commands can read: `riser-lite evaluate --run <out>/riser/seed0` rebuilds the data.
    for algo in ALGOS:
        config = json.loads((out / algo / "seed0" / "config.json").read_text())
        assert config["data"]["path"] == results["config"]["path"] and config["rl"]["algo"] == algo
        assert (out / algo / "seed0" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_demo_report(demo):
    out, results, _ = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    figures = page.count('class="plotly-graph-div"')
    assert figures == 5  # metrics bars, dashboard, sample efficiency, reward variance, SFT loss
    assert page.count("Plotly.newPlot") == figures
    # plotly.js is inlined exactly once (no CDN: the file opens offline).
    assert len(re.findall(r"plotly\.js v\d", page)) == 1 and "<script src=" not in page
    for entry in results["models"].values():
        assert entry["label"] in page
    assert "What the RISER model recommends" in page
    assert "prompt oracle (window only)" in page and "E[accept] greedy" in page


@pytest.mark.slow
def test_demo_reuses_finished_runs(demo, small_data):
    out, first, _ = demo
    again = run_demo(small_config(small_data), out, log=lambda _: None)
    for name, entry in first["models"].items():
        assert again["models"][name]["metrics"] == entry["metrics"]  # same weights, same evaluation
    assert again["models"]["riser"]["rl"]["rollouts_used"] == first["models"]["riser"]["rl"]["rollouts_used"]
    # Other settings in the same folder: a clear error that says how to start over.
    with pytest.raises(ValueError, match="use another --out"):
        run_demo(small_config(small_data, sft_epochs=1), out, log=lambda _: None)


def test_the_demo_is_a_small_compare():
    config, quick = CompareConfig.demo(), CompareConfig.demo(quick=True)
    assert config.variants == quick.variants == tuple(ALGOS) and config.seeds == quick.seeds == (0,)
    assert (config.rl_steps, config.rl_lr, config.eval_examples, config.sft_epochs) == (30, 3e-4, None, None)
    assert (quick.sft_epochs, quick.rl_steps, quick.eval_examples) == (2, 8, 100)
    config.validate()
    quick.validate()


def test_cli_builds_the_config():
    parser = build_parser()
    args = parser.parse_args(["demo", "--quick", "--sft-epochs", "3"])
    config = demo_config_from_args(args)
    quick = CompareConfig.demo(quick=True)
    assert (config.sft_epochs, config.rl_steps) == (3, quick.rl_steps)
    assert config.eval_examples == quick.eval_examples
    assert args.out == "runs/demo"
    default = demo_config_from_args(parser.parse_args(["demo", "--data", "lastfm", "--path", "/x"]))
    assert (default.data, default.path, default.rl_steps) == ("lastfm", "/x", CompareConfig.demo().rl_steps)


def test_recommendations_table_marks_hits(small_data):
    dataset = load_dataset("synthetic", small_data)
    examples = dataset.splits["test"][:2]
    other = next(i for i in dataset.catalog if i != examples[0].target)
    page = report.recommendations_html(dataset, examples, [[other, examples[0].target], [other]], k=5)
    assert page.count("<tr>") == 3  # header and two users
    assert page.count("class='hit'") == 1
    assert html.escape(dataset.catalog[examples[1].target]) in page
    with pytest.raises(ValueError, match="ranked lists"):
        report.recommendations_html(dataset, examples, [[other]])


def test_interval_formatting():
    text = report.fmt_interval({"value": 0.25, "lo": 0.125, "hi": 0.5})
    assert text.startswith("0.250 <span") and text.endswith(">[0.125, 0.500]</span>")
    assert report.fmt_interval(None) == "-"


def test_report_without_oracle_or_rl_records():
    """Real data has no oracle: the report leaves out the expected-HR column and the oracle row."""
    def summary(value):
        return {"value": value, "lo": value / 2, "hi": min(1.0, 2 * value), "n": 10}

    metrics = {f"{m}@{k}": summary(0.1 * k / 20) for m in ("hr", "ndcg") for k in (5, 10, 20)}
    results = {"config": {"preset": "micro", "table_k": 10}, "dataset": {"name": "lastfm"},
               "models": {"sft": {"label": "SFT", "metrics": metrics}},
               "baselines": {"popularity": {"label": "popularity", "metrics": metrics}},
               "stages": {"data": 1.0, "sft": 3.0}}
    page = report.build_report(results, {}, [])
    assert page.count('class="plotly-graph-div"') == 1  # the metrics bars only
    assert "E[HR@" not in page and "oracle (true" not in page and "E[accept]" not in page
    assert "<td class='name' style='text-align:left'>popularity</td>" in page
    assert "75%" in page  # sft's share of the wall time


def test_auto_threads_uses_one_thread_on_a_busy_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0, 8.0, 8.0))
    assert auto_threads(2) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.5, 0.5))
    assert auto_threads(2) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 1.0, 0.5))
    assert auto_threads(2) == 1  # someone else keeps the cores busy
    assert auto_threads(2, own_load=1.9) == 2  # this process itself did, in its last stage

    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert auto_threads(2) == 2
