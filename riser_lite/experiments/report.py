"""Self-contained HTML: the demo's report, results tables, and the "what does the model recommend" table.

`build_report` turns the demo's results dict (see `experiments.demo`) and the runs' metric records into one
HTML page that opens offline: plotly's JavaScript is inlined once, with the first figure, and every later
figure reuses it. Tables are plain HTML with the interval of every metric next to its value.

`recommendations_html` shows, for a few users, their history, the true next item and the model's top
items (hits highlighted); notebooks display it, the report embeds it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence

from riser_lite.teach import viz

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.riser { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
table.riser th, table.riser td { border: 1px solid #ddd; padding: 4px 8px; text-align: right;
                                 vertical-align: top; }
table.riser th { background: #f4f4f4; } table.riser td.name, table.riser th.name { text-align: left; }
table.riser tr.reference td { color: #666; font-style: italic; }
.ci { color: #888; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


def _esc(value) -> str:
    return html.escape(str(value))


# Inline styles, so fragments look the same in a notebook (no stylesheet) and in the report.
HIT_STYLE = "background:#d8f3e6;font-weight:600"
NOTE_STYLE = "color:#888;font-size:0.85em"


def fmt_interval(summary: Mapping | None, digits: int = 3) -> str:
    """'0.123 [0.100, 0.150]' as HTML (interval greyed), or '-' when there is no value."""
    if not summary or summary.get("value") is None:
        return "-"
    value = f"{summary['value']:.{digits}f}"
    if summary.get("lo") is None or summary.get("hi") is None:
        return value
    interval = f"[{summary['lo']:.{digits}f}, {summary['hi']:.{digits}f}]"
    return f"{value} <span class='ci' style='{NOTE_STYLE}'>{interval}</span>"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, name_columns: int = 1,
               row_classes: Sequence[str] | None = None) -> str:
    """An HTML table. Cells are inserted as given (escape text yourself); the first `name_columns` columns
    are left-aligned."""
    def cell(tag: str, i: int, content: str) -> str:
        attrs = " class='name' style='text-align:left'" if i < name_columns else ""
        return f"<{tag}{attrs}>{content}</{tag}>"

    head = "".join(cell("th", i, _esc(h)) for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f" class='{row_classes[r]}'" if row_classes and row_classes[r] else ""
        body.append(f"<tr{cls}>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    return f"<table class='riser'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def recommendations_html(dataset, examples: Sequence, top_items: Sequence[Sequence[int]], k: int = 5,
                         max_history: int = 5) -> str:
    """For each example: its newest history titles, the true next item, and the model's top-k titles.

    examples: `Example`s; top_items: the model's ranked item ids per example (e.g. `EvalResult.top_items`).
    The target is highlighted where the model found it.
    """
    if len(examples) != len(top_items):
        raise ValueError(f"got {len(examples)} examples but {len(top_items)} ranked lists")
    catalog = dataset.catalog
    rows = []
    for ex, items in zip(examples, top_items, strict=True):
        shown = ex.history[-max_history:]
        history = "<br>".join(_esc(catalog[i]) for i in shown)
        if len(ex.history) > len(shown):
            older = len(ex.history) - len(shown)
            history = f"<span style='{NOTE_STYLE}'>({older} older)</span><br>{history}"
        recs = []
        for rank, item in enumerate(items[:k]):
            title = f"{rank + 1}. {_esc(catalog.get(item, item))}"
            hit = item == ex.target
            recs.append(f"<span class='hit' style='{HIT_STYLE}'>{title}</span>" if hit else title)
        rows.append([_esc(ex.user), history, _esc(catalog[ex.target]), "<br>".join(recs) or "-"])
    return html_table(["user", "history (oldest first)", "true next item", f"model's top {k}"], rows,
                      name_columns=4)


# ------------------------------------------------------------------------------------------------ tables


REFERENCES = ("popularity", "prompt_oracle", "oracle")  # reference rankers, not trained models


def ranked_entries(results: Mapping) -> list[tuple[str, Mapping]]:
    """(name, entry) of the popularity floor, the models, then the prompt oracle and the oracle ceiling
    (those present)."""
    base = results.get("baselines") or {}
    rows = [("popularity", base.get("popularity")), *results["models"].items(),
            ("prompt_oracle", base.get("prompt_oracle")), ("oracle", base.get("oracle"))]
    return [(name, entry) for name, entry in rows if entry]


def acceptance_columns(results: Mapping) -> list[tuple[str, str, str]]:
    """(header, entry key, metric) of the acceptance columns of a demo results dict: on synthetic data the
    exact expected acceptance of the constrained policy's sampled and greedy item, else its sampled hit
    rate (none if the models were evaluated without acceptance)."""
    entries = list(results["models"].values())
    if any(e.get("expected_acceptance") for e in entries):
        return [("E[accept] sampled", "expected_acceptance", "sampled_hit"),
                ("E[accept] greedy", "expected_acceptance", "greedy_hit")]
    if any(e.get("acceptance") for e in entries):
        return [("sampled hit", "acceptance", "sampled_hit")]
    return []


def results_rows(results: Mapping, ks: Sequence[int] = (10,), expected_k: int = 10
                 ) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, row classes) of the main results table of a demo results dict.

    With an oracle (synthetic data) a column E[HR@expected_k] shows each ranking's expected hit rate under
    the true next-item distributions: the same lists scored without the noise of one drawn target each.
    The acceptance columns (`acceptance_columns`) show what a hit reward scores: one recommendation.
    """
    expected = any(e.get("expected") for e in results["models"].values())
    accept = acceptance_columns(results)
    header = ["model"] + [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")]
    header += [f"E[HR@{expected_k}]"] if expected else []
    header += [title for title, _, _ in accept]
    header += ["prompts with a gradient", "unique items / group", "rollouts", "train s", "eval s"]
    rows, classes = [], []
    for name, entry in ranked_entries(results):
        metrics = entry["metrics"]
        rl = entry.get("rl") or {}
        row = [_esc(entry.get("label", name))]
        row += [fmt_interval(metrics.get(f"{m}@{k}")) for k in ks for m in ("hr", "ndcg")]
        if expected:
            row.append(fmt_interval((entry.get("expected") or {}).get(f"hr@{expected_k}")))
        row += [fmt_interval((entry.get(key) or {}).get(metric)) for _, key, metric in accept]
        row += [_fmt(rl.get("gradient_prompt_fraction")), _fmt(rl.get("unique_items_per_group"), 2),
                _fmt(rl.get("rollouts_used")), _fmt(entry.get("train_seconds"), 1),
                _fmt(entry.get("eval_seconds"), 1)]
        rows.append(row)
        classes.append("reference" if name in REFERENCES else "")
    return header, rows, classes


def _stage_table(stages: Mapping[str, float], cpu: Mapping[str, float] | None = None) -> str:
    cpu = cpu or {}
    total = sum(stages.values())
    rows = [[_esc(name), f"{seconds:.1f}", _fmt(cpu.get(name), 1), f"{seconds / total:.0%}" if total else "-"]
            for name, seconds in stages.items()]
    rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", _fmt(sum(cpu.values()) if cpu else None, 1), ""])
    return html_table(["stage", "wall s", "CPU s (this process)", "share of wall"], rows)


# ------------------------------------------------------------------------------------------------ report


def _intro(results: Mapping) -> str:
    data, budget = results.get("dataset", {}), results.get("budget", {})

    def get(mapping, key):
        return _esc(mapping.get(key, "?"))

    return (f"<p class='note'>{get(data, 'items')} items; {get(data, 'train')} train, {get(data, 'test')} "
            f"test examples. Backbone preset <b>{get(results.get('config', {}), 'preset')}</b>. Every RL "
            f"algorithm starts from the same SFT model and draws {get(budget, 'draws_per_prompt')} "
            f"candidates per prompt for {get(budget, 'prompts_per_step')} prompts per step over "
            f"{get(budget, 'steps')} steps ({get(budget, 'rollouts')} rollouts each).</p>")


def _results_note(results: Mapping) -> str:
    ev = results.get("eval", {})
    return (f"<p class='note'>{_esc(ev.get('protocol', 'beam'))} protocol on "
            f"{_esc(ev.get('num_examples', '?'))} {_esc(ev.get('split', 'test'))} examples (trie-constrained "
            f"beam search, {_esc(ev.get('num_beams', '?'))} beams); grey brackets: "
            f"{_esc(ev.get('level', 95))}% bootstrap intervals over examples. "
            "<i>Prompts with a gradient</i>: mean share of RL prompts whose group was learnable (reward "
            "variance &gt; 0) or converted into preference pairs. <i>Train s</i>: the SFT stage for SFT, "
            "each RL stage (after the shared SFT) for the RL models. Popularity and the oracle (synthetic "
            "data only: it ranks by the true next-item distribution) are reference rankers, not trained "
            f"models{_reference_note(results)}.</p>")


def _reference_note(results: Mapping) -> str:
    """What the prompt oracle and the acceptance columns mean, for the tables that have them."""
    note = ""
    if (results.get("baselines") or {}).get("prompt_oracle"):
        note += ("; the prompt oracle ranks by the next-item distribution given only the history window the "
                 "prompt shows (the generator's own model, the user's taste integrated out): the ceiling a "
                 "prompt allows")
    titles = [title for title, _, _ in acceptance_columns(results)]
    if "sampled hit" in titles:
        note += ("; <i>sampled hit</i>: the share of users whose one item sampled from the trie-constrained "
                 "policy is the target (what a hit reward scores)")
    elif titles:
        note += ("; <i>E[accept]</i>: the probability that the model's one recommendation is the next item, "
                 "for an item sampled from the trie-constrained policy and for its most probable item (what "
                 "a hit reward optimises)")
    return note


def figure_html(figures: Sequence) -> list[str]:
    """Each figure as an HTML fragment; plotly.js is inlined with the first one only."""
    return [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                        config={"displaylogo": False, "responsive": True})
            for i, fig in enumerate(figures)]


def build_report(results: Mapping, rl_records: Mapping[str, Sequence[Mapping]],
                 sft_records: Sequence[Mapping] = (), recommendations: str | None = None,
                 recommender: str = "RISER", ks: Sequence[int] = (5, 10, 20)) -> str:
    """The demo's self-contained HTML report.

    results: the demo's results dict (as written to results.json); rl_records: run label -> RL metric
    records; sft_records: SFT metric records (train and valid events); recommendations: an HTML fragment
    from `recommendations_html`, shown last, as the recommendations of `recommender`; ks: the cut-offs
    of the results table and the bars.
    """
    ks = [k for k in ks if any(f"hr@{k}" in e["metrics"] for e in results["models"].values())]
    header, rows, classes = results_rows(results, ks)
    shown = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks]
    bars = {entry.get("label", name): {key: (s["value"], s["lo"], s["hi"]) for key in shown
                                       for s in [entry["metrics"].get(key)] if s}
            for name, entry in ranked_entries(results)}
    sections = [("Ranking metrics", viz.metrics_bars(bars))]
    if rl_records:
        sections += [("Training dashboard", viz.training_dashboard(rl_records)),
                     ("Sample efficiency", viz.sample_efficiency(rl_records)),
                     ("Reward mean and variance", viz.reward_variance(rl_records))]
    if sft_records:
        sections.append(("SFT loss", viz.loss_curve(sft_records)))
    fragments = figure_html([fig for _, fig in sections])

    name = _esc(results.get("dataset", {}).get("name", "?"))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>riser-lite demo: {name}</title><style>{STYLE}</style></head><body>",
        f"<h1>riser-lite demo: GRPO, ReRe-style and RISER on {name}</h1>",
        _intro(results), "<h2>Results</h2>", _results_note(results),
        html_table(header, rows, row_classes=classes),
    ]
    if results.get("stages"):
        parts += ["<h2>Time per stage</h2>", _stage_table(results["stages"], results.get("stages_cpu"))]
    for (title, _), fragment in zip(sections, fragments, strict=True):
        parts += [f"<h2>{_esc(title)}</h2>", fragment]
    if recommendations:
        parts += [f"<h2>What the {_esc(recommender)} model recommends</h2>", recommendations]
    parts += ["<h2>Configuration</h2>",
              f"<pre>{_esc(json.dumps(results.get('config', {}), indent=2))}</pre>", "</body></html>"]
    return "\n".join(parts)
