"""Self-contained HTML: the demo's report, results tables, and the "what does the model recommend" table.

`build_report` turns the demo's results (`compare.run_compare`'s dict) and the runs' metric records into one
HTML page that opens offline: plotly's JavaScript is inlined once, with the first figure, and every later
figure reuses it. Tables are plain HTML with the interval of every metric next to its value.

`recommendations_html` shows, for a few users, their history, the true next item and the model's top
items (hits highlighted); notebooks display it, the report embeds it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence

from riser_lab.compare import metric_bars, table_rows
from riser_lite.teach import viz

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.riser { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
table.riser th, table.riser td { border: 1px solid #ddd; padding: 4px 8px; text-align: right;
                                 vertical-align: top; }
table.riser th { background: #f4f4f4; }
table.riser tr.reference td { color: #666; font-style: italic; }
.note { color: #555; font-size: 0.9em; }
"""


def _esc(value) -> str:
    return html.escape(str(value))


# Inline styles, so fragments look the same in a notebook (no stylesheet) and in the report.
HIT_STYLE = "background:#d8f3e6;font-weight:600"
NOTE_STYLE = "color:#888;font-size:0.85em"


def fmt_interval(summary: Mapping | None) -> str:
    """'0.123 [0.100, 0.150]' as HTML (interval greyed), or '-' when there is no value."""
    if not summary or summary.get("value") is None:
        return "-"
    value = f"{summary['value']:.3f}"
    if summary.get("lo") is None or summary.get("hi") is None:
        return value
    return f"{value} <span style='{NOTE_STYLE}'>[{summary['lo']:.3f}, {summary['hi']:.3f}]</span>"


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


def results_table(results: Mapping) -> str:
    """The results table of `compare.table_rows` as HTML: intervals greyed, reference rankers in italics."""
    header, rows = table_rows(results, cell=fmt_interval)
    references = [""] * len(results["models"]) + ["reference"] * len(results["baselines"])
    return html_table(header, [[_esc(row[0]), *row[1:]] for row in rows], row_classes=references)


def _stage_table(stages: Mapping[str, float], cpu: Mapping[str, float] | None = None) -> str:
    cpu = cpu or {}
    total = sum(stages.values())
    rows = [[_esc(name), f"{seconds:.1f}", f"{cpu[name]:.1f}" if name in cpu else "-",
             f"{seconds / total:.0%}" if total else "-"] for name, seconds in stages.items()]
    rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", f"{sum(cpu.values()):.1f}" if cpu else "-", ""])
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
            "<i>Grad-prompts</i>: mean share of RL prompts whose group was learnable (reward variance "
            "&gt; 0) or converted into preference pairs; <i>Δ</i>: paired difference to GRPO on the same "
            "users (sign-flip p-value). Popularity and the oracle (synthetic data only: it ranks by the "
            "true next-item distribution) are reference rankers, not trained "
            f"models{_reference_note(results)}.</p>")


def _reference_note(results: Mapping) -> str:
    """What the prompt oracle and the acceptance columns mean, for the tables that have them."""
    note = ""
    if (results.get("baselines") or {}).get("prompt_oracle"):
        note += ("; the prompt oracle ranks by the next-item distribution given only the history window the "
                 "prompt shows (the generator's own model, the user's taste integrated out): the ceiling a "
                 "prompt allows")
    metrics = results["models"]["sft"]["metrics"]
    if "expected_sampled_hit" in metrics:
        note += ("; <i>E[accept]</i>: the probability that the model's one recommendation is the next item, "
                 "for an item sampled from the trie-constrained policy and for its most probable item (what "
                 "a hit reward optimises)")
    elif "sampled_hit" in metrics:
        note += ("; <i>sampled hit</i>: the share of users whose one item sampled from the trie-constrained "
                 "policy is the target (what a hit reward scores)")
    return note


def figure_html(figures: Sequence) -> list[str]:
    """Each figure as an HTML fragment; plotly.js is inlined with the first one only."""
    return [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                        config={"displaylogo": False, "responsive": True})
            for i, fig in enumerate(figures)]


def build_report(results: Mapping, rl_records: Mapping[str, Sequence[Mapping]],
                 sft_records: Sequence[Mapping] = (), recommendations: str | None = None,
                 recommender: str = "RISER") -> str:
    """The demo's self-contained HTML report.

    results: the demo's results (as written to results.json); rl_records: run label -> RL metric records;
    sft_records: SFT metric records (train and valid events); recommendations: an HTML fragment from
    `recommendations_html`, shown last, as the recommendations of `recommender`.
    """
    sections = [("Ranking metrics", metric_bars(results))]
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
        results_table(results),
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
