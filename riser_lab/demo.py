"""The demo: the whole pipeline end to end, GRPO vs ReRe-style vs RISER, in one command.

    riser-lite demo            # bundled synthetic data, tiny backbone (about 10 minutes on a 2-core CPU)
    riser-lite demo --quick    # smaller everything (about 2 minutes)
    riser-lite demo --data lastfm --path ../shared/data/lastfm

A small case of `riser-lite compare` (`CompareConfig.demo`: three algorithms, one seed): its own SFT run
in ``<out>/sft``, then RL with each algorithm from that SFT model under the same rollout budget into
``<out>/<algo>/seed<k>``, every model evaluated on the test users with popularity and, on synthetic data,
the prompt oracle and the oracle. It prints the results table and writes ``results.json`` (the compare
results) and a self-contained ``report.html``. Running it again with the same settings reuses finished
runs (an interrupted one resumes); another ``--out`` starts over.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from riser_lab.compare import (
    EVAL_FILE,
    CompareConfig,
    StageTimer,
    compare_from,
    format_table,
    load_sft,
    model_records,
    train_sft,
)

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"


def clear_outputs(out: Path) -> None:
    """Remove what the demo wrote in `out` (the entries its manifest lists), nothing else.

    A run folder there that also holds other files is refused (`RunError`, naming them): the demo never
    deletes a file it did not write.
    """
    from riser_lite import runs

    runs.check_outputs(out)  # refuses a folder that is not the package's before anything is removed
    for name in runs.owned_entries(out):
        left = runs.remove_owned_folder(out / name) if (out / name).is_dir() else []
        if left:
            raise runs.RunError(f"{out / name} holds files the demo did not write ({', '.join(left[:5])}); "
                                "move them or choose another --out")
    runs.clear_run_folder(out)


def demo_outputs(config: CompareConfig) -> list[str]:
    """What `run_demo` writes in its folder: a run folder per model, the results and the report."""
    return ["sft", *config.variants, RESULTS_FILE, REPORT_FILE]


def run_demo(config: CompareConfig | None = None, out: str | Path = "runs/demo", *, overwrite: bool = False,
             log=print) -> dict:
    """Run every stage into `out` (its SFT run in ``out/sft``, whatever `config.sft_run` says), write
    ``results.json`` and ``report.html``, return the results (`run_compare`'s dict, with "sft": the SFT
    run's summary). torch uses `config.threads` threads and gets its own setting back afterwards."""
    from riser_lite import runs

    out = Path(out)
    config = replace(config or CompareConfig.demo(), sft_run=str(out / "sft"))
    config.validate()
    if overwrite:
        clear_outputs(out)
    runs.check_outputs(out, "demo", demo_outputs(config))  # claimed once the data has loaded
    with StageTimer.setting_threads(config.threads) as timer:
        return _run_stages(config, out, log, timer)


def _run_stages(config: CompareConfig, out: Path, log, timer: StageTimer) -> dict:
    from riser_lite import runs
    from riser_lite.data import DataError, load_dataset

    start = time.perf_counter()
    with timer("data"):
        dataset = load_dataset(config.data, config.path)
    runs.claim_outputs(out, "demo", demo_outputs(config))
    log(f"data: {dataset.name}, {len(dataset.catalog)} items, "
        + ", ".join(f"{len(rows)} {split}" for split, rows in dataset.splits.items()))
    with timer("sft"):
        try:
            train_sft(config)
            sft, spec = load_sft(config)
        except ValueError as err:  # its SFT folder holds a run of other settings: say how to start over
            if isinstance(err, DataError) or "folder" not in str(err):
                raise
            raise runs.RunError(f"{err} (riser-lite demo: use another --out to start over)") from err
    summary = sft.config.get("results", {}).get("sft", {})
    log(f"sft: {summary.get('steps')} steps, "
        f"best validation loss {summary.get('best_valid_loss', float('nan')):.4f}")
    results = {**compare_from(sft, spec, config, out, log, timer, start), "sft": summary}
    runs.write_json(out / RESULTS_FILE, results)
    runs.atomic_write_text(out / REPORT_FILE, _report(results, dataset))
    log(format_table(results))
    log("stages: " + ", ".join(f"{name} {s:.1f} s" for name, s in results["stages"].items())
        + f"; total {results['total_seconds']:.1f} s")
    log(f"wrote {out / RESULTS_FILE} and {out / REPORT_FILE}")
    return results


def _report(results: dict, dataset) -> str:
    """The HTML report, with what the last algorithm recommends to the first test users."""
    from riser_lab import report
    from riser_lite.runs import read_json, read_metrics

    last = results["models"][results["config"]["variants"][-1]]
    top_items = read_json(Path(next(iter(last["seeds"].values()))["run"]) / EVAL_FILE)["top_items"]
    shown = min(8, len(top_items))
    recommendations = report.recommendations_html(dataset, dataset.splits["test"][:shown], top_items[:shown])
    return report.build_report(results, model_records(results),
                               read_metrics(results["models"]["sft"]["run"], stage="sft"), recommendations,
                               recommender=last["label"])
