"""Choose on validation, report on test once: each variant's setting picked by a rule fixed in advance.

    python -m riser_lab.choose runs/grid runs/grid-lam0.3 [--out choice.json]

Reads validation sweeps (`riser_lab.sweep` with ``--eval-split valid``) and applies one rule to every variant:
among its settings (lr, lambda, beta) whose validation list quality (expected NDCG@10) stays within
``tolerance`` (0.01) of SFT's, take the one whose own recommendation is accepted most often (expected
acceptance of one sampled item, what a hit reward optimises); if no setting keeps the list, take the best
list quality and say so. Only the chosen setting is then run with more seeds and evaluated on test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from riser_lab.sweep import sweep_file


def _reward_column(metrics: dict) -> str:
    """The acceptance of the sampled recommendation: exact on synthetic data, else the realised rate."""
    from riser_lab.compare import acceptance_keys

    return acceptance_keys("expected_sampled_hit" in metrics)[0]


def choose_settings(sweeps: list[dict], tolerance: float = 0.01) -> dict[str, dict]:
    """Per variant, the setting the validation rule picks (module docstring) among the cells of `sweeps`.

    Returns {variant: {"cell": the chosen cell, "kept_list": bool, "candidates": number of settings}}.
    """
    cells = [c for sweep in sweeps for c in sweep["cells"]]
    if any(c.get("split") != "valid" for c in cells):
        raise ValueError("choose reads validation sweeps (python -m riser_lab.sweep ... --eval-split valid); "
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
        raise DataError("expected a JSON object with a list 'cells' (a file of `python -m riser_lab.sweep`)",
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


def _choose(args) -> int:
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
            raise DataError(f"{path}: no validation sweep here; run `python -m riser_lab.sweep ... "
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


def main(argv: list[str] | None = None) -> int:
    from riser_lab.command import run

    parser = argparse.ArgumentParser(prog="python -m riser_lab.choose", description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep folders (holding sweep_valid.json) or such files")
    parser.add_argument("--out", type=str, default=None,  # a file: not the folder rule of other --out options
                        help="also write the choice as JSON to this file (new, or an earlier choice)")
    return run(parser, _choose, argv)


if __name__ == "__main__":
    raise SystemExit(main())
