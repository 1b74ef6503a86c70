"""A stability map: `compare` over learning rates, with validation curves and rollouts-to-target.

    riser-lite compare --sft-run runs/sft --variants grpo grpo-raw riser riser-raw --lrs 1e-4 3e-4 1e-3 \\
        --seeds 0 1 2 --rl-steps 150 --rl-eval-every 25 --out runs/sweep

Each learning rate is one `riser-lite compare` into ``<out>/lr<lr>`` (same SFT start, same prompts and
rollout budget for every variant; resumable: finished runs are reused, an interrupted one resumes from its
last checkpoint). ``<out>/sweep.json`` then holds, per (variant, lr):

- the final test metrics (mean over seeds) and the paired test against SFT;
- **collapse**: the expected NDCG@10 (synthetic data; NDCG@10 otherwise) below ``collapse_ratio`` (0.8) of
  SFT's on the same users;
- validation curves against rollouts spent (``val_*`` records of the runs, mean over seeds);
- **rollouts-to-target**: the rollouts after which the validation curve of ``target_metric`` first reaches
  SFT's validation value + ``target_gain`` (None if never), and the ratio RISER / GRPO of those.

**Choose on validation, report on test once.** With ``--eval-split valid`` every run is evaluated on the
validation users instead (``sweep_valid.json``; runs trained before are reused, only evaluated). Then

    riser-lite choose runs/sweep runs/sweep-lam0.3 ...

applies one rule, fixed before looking at test, to every variant: among its settings (lr, lambda, beta)
whose validation list quality (expected NDCG@10) stays within ``tolerance`` (0.01) of SFT's, take the one
whose own recommendation is accepted most often (expected acceptance of one sampled item, what a hit
reward optimises); if no setting keeps the list, take the best list quality and say so. Only the chosen
setting is then run with more seeds and evaluated on test.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from riser_lite.experiments.compare import CompareConfig, mean_records, run_compare

SWEEP_FILE = "sweep.json"


def sweep_file(split: str) -> str:
    """The sweep's summary for `split`: SWEEP_FILE for test, ``sweep_<split>.json`` otherwise."""
    return SWEEP_FILE if split == "test" else f"sweep_{split}.json"


def lr_folder(out: Path, lr: float) -> Path:
    # repr, not ":g": two different rates never share a folder (":g" prints 1e-4 and 1.000001e-4 alike)
    return out / f"lr{lr!r}"


def run_sweep(config: CompareConfig, lrs: tuple[float, ...], out: str | Path, *, collapse_ratio: float = 0.8,
              target_metric: str = "val_expected_hr@1", target_gain: float = 0.01, log=print) -> dict:
    """`run_compare` at each learning rate, then the map; writes and returns ``out/sweep.json``'s dict."""
    from riser_lite.runs import claim_outputs

    out = claim_outputs(out, "sweep", [sweep_file(config.eval_split), *(lr_folder(Path(), lr).name
                                                                         for lr in lrs)])
    per_lr = {}
    for lr in lrs:
        log(f"--- lr {lr:g}")
        per_lr[lr] = run_compare(dataclasses.replace(config, rl_lr=lr), lr_folder(out, lr), log=log)
    start = sft_validation(config)
    sweep = summarize(per_lr, start, collapse_ratio, target_metric, target_gain)
    path = out / sweep_file(config.eval_split)
    path.write_text(json.dumps(sweep, indent=1), encoding="utf-8")
    log(f"wrote {path}")
    return sweep


def _quality_column(results: dict) -> str:
    k = results["config"]["table_k"]
    expected = f"expected_ndcg@{k}"
    return expected if expected in results["models"]["sft"]["metrics"] else f"ndcg@{k}"


def sft_validation(config: CompareConfig) -> dict[str, float]:
    """SFT's validation metrics, computed as the RL runs compute theirs (where every curve starts)."""
    from riser_lite.data import load_dataset
    from riser_lite.experiments.compare import load_sft, rl_config
    from riser_lite.items.catalog import ItemSpace
    from riser_lite.rl.trainer import validation_metrics

    sft, spec = load_sft(config)
    dataset = load_dataset(spec["source"], spec.get("path"), seed=spec.get("seed", 0),
                           max_history=spec.get("max_history", 10))
    return validation_metrics(sft.model, sft.tokenizer, dataset, ItemSpace(dataset.catalog, sft.tokenizer),
                     rl_config(config.variants[0], config, config.seeds[0]))


def summarize(per_lr: dict[float, dict], start: dict[str, float], collapse_ratio: float, target_metric: str,
              target_gain: float) -> dict:
    """The map and curves from each learning rate's compare results (see the module docstring).

    start: the SFT model's validation metrics (`sft_validation`), the first point of every curve.
    """
    from riser_lite.runs import read_metrics

    cells, curves = [], {}
    for lr, results in per_lr.items():
        quality = _quality_column(results)
        sft_metrics = {name: s["value"] for name, s in results["models"]["sft"]["metrics"].items()}
        sft_quality = sft_metrics[quality]
        for variant, entry in results["models"].items():
            if variant == "sft":
                continue
            records = mean_records([read_metrics(seed["run"], stage="rl")
                                    for seed in entry["seeds"].values()])
            curve = [{"rollouts_used": 0, **start}] + [
                {k: r[k] for k in r if k == "rollouts_used" or k.startswith("val_")}
                for r in records if any(k.startswith("val_") for k in r)]
            curves[f"{variant}@{lr:g}"] = curve
            metrics = {name: s["value"] for name, s in entry["metrics"].items()}
            cells.append({
                "variant": variant, "lr": lr, "label": entry["label"], "metrics": metrics,
                "lambda_pair": results["config"].get("lambda_pair"),
                "beta_kl": results["config"].get("beta_kl"),
                "split": results["eval"]["split"], "sft_metrics": sft_metrics,
                "paired_vs_sft": (entry.get("paired") or {}).get("sft"),
                "quality": quality, "collapsed": metrics[quality] < collapse_ratio * sft_quality,
                "rollouts_to_target": _rollouts_to(curve, target_metric, start.get(target_metric),
                                                   target_gain),
            })
    return {"cells": cells, "curves": curves, "sft_validation": start, "collapse_ratio": collapse_ratio,
            "target_metric": target_metric, "target_gain": target_gain, "ratio_riser_grpo": _ratios(cells)}


def _rollouts_to(curve: list[dict], metric: str, start: float | None, gain: float) -> int | None:
    if start is None:
        return None
    for point in curve:
        if point.get(metric) is not None and point[metric] >= start + gain:
            return int(point["rollouts_used"])
    return None


def _ratios(cells: list[dict]) -> dict[str, float | None]:
    """RISER / GRPO rollouts-to-target at each learning rate where both reached the target."""
    by = {(c["variant"], c["lr"]): c["rollouts_to_target"] for c in cells}
    out = {}
    for (variant, lr), value in by.items():
        if variant == "riser":
            grpo = by.get(("grpo", lr))
            out[f"{lr:g}"] = value / grpo if value and grpo else None
    return out


def _reward_column(metrics: dict) -> str:
    """The acceptance of the sampled recommendation: exact on synthetic data, else the realised rate."""
    from riser_lite.experiments.compare import acceptance_keys

    return acceptance_keys("expected_sampled_hit" in metrics)[0]


def choose_settings(sweeps: list[dict], tolerance: float = 0.01) -> dict[str, dict]:
    """Per variant, the setting the validation rule picks (module docstring) among the cells of `sweeps`.

    Returns {variant: {"cell": the chosen cell, "kept_list": bool, "candidates": number of settings}}.
    """
    cells = [c for sweep in sweeps for c in sweep["cells"]]
    if any(c.get("split") != "valid" for c in cells):
        raise ValueError("choose reads validation sweeps (riser-lite compare --lrs ... --eval-split valid); "
                         "a test sweep would choose on the users it reports")
    chosen = {}
    for variant in dict.fromkeys(c["variant"] for c in cells):
        options = [c for c in cells if c["variant"] == variant]
        kept = [c for c in options
                if c["metrics"][c["quality"]] >= c["sft_metrics"][c["quality"]] - tolerance]
        if kept:
            best = max(kept, key=lambda c: c["metrics"][_reward_column(c["metrics"])])
        else:
            best = max(options, key=lambda c: c["metrics"][c["quality"]])
        chosen[variant] = {"cell": best, "kept_list": bool(kept), "candidates": len(options)}
    return chosen


def format_choice(chosen: dict[str, dict], tolerance: float = 0.01) -> str:
    """The chosen settings as text, with their validation quality and acceptance against SFT's."""
    lines = [f"{'variant':<18}{'lr':>8}{'lambda':>8}{'beta':>6}   list quality (SFT)    acceptance (SFT)"]
    for variant, choice in chosen.items():
        c = choice["cell"]
        q, r = c["quality"], _reward_column(c["metrics"])
        lam = "-" if c.get("lambda_pair") is None else f"{c['lambda_pair']:g}"
        beta = "-" if c.get("beta_kl") is None else f"{c['beta_kl']:g}"
        note = "" if choice["kept_list"] else f"  (no setting within {tolerance:g} of SFT's list)"
        lines.append(f"{variant:<18}{c['lr']:>8g}{lam:>8}{beta:>6}   "
                     f"{c['metrics'][q]:.4f} ({c['sft_metrics'][q]:.4f})       "
                     f"{c['metrics'][r]:.4f} ({c['sft_metrics'][r]:.4f}){note}")
    return "\n".join(lines)


def format_map(sweep: dict) -> str:
    """The stability map as text: a row per variant, a column per learning rate (x marks a collapse)."""
    lrs = sorted({c["lr"] for c in sweep["cells"]})
    variants = list(dict.fromkeys(c["variant"] for c in sweep["cells"]))
    cell = {(c["variant"], c["lr"]): c for c in sweep["cells"]}
    width = max(len(v) for v in variants)
    lines = [" " * width + "".join(f"  lr {lr:<10g}" for lr in lrs)]
    for variant in variants:
        row = variant.ljust(width)
        for lr in lrs:
            c = cell.get((variant, lr))
            row += "  " + ("-".ljust(13) if c is None else
                           f"{c['metrics'][c['quality']]:.3f}{' x' if c['collapsed'] else '  '}".ljust(13))
        lines.append(row)
    lines.append(f"(value: {sweep['cells'][0]['quality']} on {sweep['cells'][0].get('split', 'test')}; "
                 f"x: collapsed, below "
                 f"{sweep['collapse_ratio']:.0%} of SFT's)")
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    """`riser-lite compare` (with --lrs: a sweep over learning rates) and `riser-lite choose`."""
    from riser_lite.experiments import compare

    p = subparsers.add_parser("compare", help="GRPO / ReRe-style / RISER and ablations over seeds (with "
                                              "--lrs: over learning rates too)",
                              description=compare.__doc__.splitlines()[0])
    compare.add_compare_arguments(p)
    p.add_argument("--lrs", nargs="+", type=float, default=None,
                   help="a sweep: one compare per RL learning rate into <out>/lr<lr>, then sweep.json "
                        "(stability map, validation curves, rollouts-to-target; see experiments/sweep.py)")
    p.set_defaults(func=_run_cli)
    c = subparsers.add_parser("choose", help="pick each variant's setting on validation sweeps",
                              description="Apply the validation rule of `riser-lite compare --lrs` to one or "
                                          "more sweep folders evaluated with --eval-split valid.")
    c.add_argument("sweeps", nargs="+", help="sweep folders (holding sweep_valid.json) or such files")
    c.add_argument("--out", type=str, default=None,  # a file: not the folder rule of other --out options
                   help="also write the choice as JSON to this file (new, or an earlier choice)")
    c.set_defaults(func=_choose_cli)


CELL_FIELDS = {"variant": str, "lr": (int, float), "split": str, "quality": str, "metrics": dict,
               "sft_metrics": dict}  # what `choose_settings` reads of each cell


def read_sweep(path: Path) -> dict:
    """A sweep file, every cell checked for what `choose_settings` reads (`DataError` naming file, cell and
    field)."""
    from riser_lite.data.types import DataError
    from riser_lite.runs import RunError, read_json

    try:
        sweep = read_json(path)
    except RunError as err:
        raise DataError(str(err)) from None
    cells = sweep.get("cells") if isinstance(sweep, dict) else None
    if not isinstance(cells, list):
        raise DataError("expected a JSON object with a list 'cells' (a file of `riser-lite compare --lrs`)",
                        path=path)
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            raise DataError(f"cell {number} is a {type(cell).__name__}; expected an object", path=path)
        for name, kind in CELL_FIELDS.items():
            if not isinstance(cell.get(name), kind) or isinstance(cell.get(name), bool):
                raise DataError(f"cell {number}: missing or not a {getattr(kind, '__name__', 'number')}",
                                path=path, field=name)
        columns = (cell["quality"], _reward_column(cell["metrics"]))  # the list quality, the acceptance
        for name, column in ((n, c) for n in ("metrics", "sft_metrics") for c in columns):
            value = cell[name].get(column)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DataError(f"cell {number}: no number for column {column!r}", path=path, field=name)
    return sweep


def _is_choice(path: Path) -> bool:
    """True for a file an earlier `choose --out` wrote ({variant: {"cell", "kept_list", "candidates"}})."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and {"cell", "kept_list", "candidates"} <= set(v) for v in data.values())


def _choose_cli(args) -> int:
    from riser_lite.data.types import DataError
    from riser_lite.runs import RunError, atomic_write_text

    out = Path(args.out) if args.out else None
    if out is not None and (out.is_dir() or (out.exists() and not _is_choice(out))):
        raise RunError(f"--out {out} exists and is not an earlier choice; name a new file so that none of "
                       "your files is overwritten")
    sweeps = []
    for name in args.sweeps:
        path = Path(name)
        path = path / sweep_file("valid") if path.is_dir() else path
        if not path.is_file():
            raise DataError(f"{path}: no validation sweep here; run `riser-lite compare --lrs ... "
                            "--eval-split valid`")
        sweeps.append(read_sweep(path))
    try:
        chosen = choose_settings(sweeps)
    except ValueError as err:  # test sweeps passed: the user's input, one clear line
        raise DataError(str(err)) from None
    print(format_choice(chosen))
    if out is not None:
        atomic_write_text(out, json.dumps(chosen, indent=1))
    return 0


def _run_cli(args) -> int:
    from riser_lite.experiments.compare import config_from_args, format_table

    def log(text):
        print(text, flush=True)

    if args.lrs:
        print(format_map(run_sweep(config_from_args(args), tuple(args.lrs), args.out, log=log)))
    else:
        print(format_table(run_compare(config_from_args(args), args.out, log=log)))
    return 0
