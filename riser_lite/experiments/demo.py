"""The demo: the whole pipeline end to end, GRPO vs ReRe-style vs RISER, in one command.

    riser-lite demo            # bundled synthetic data, tiny backbone (about 10 minutes on a 2-core CPU)
    riser-lite demo --quick    # smaller everything (about 2 minutes)
    riser-lite demo --data lastfm --path ../shared/data/lastfm

Stages: load the data → SFT (one run, the start and reference of every RL algorithm) → RL with each
algorithm from that same SFT model under the same rollout budget (every algorithm draws the same number of
candidates per prompt for the same prompts per step and steps) → evaluate the SFT model and each RL model
on the test split (trie-constrained beam search ranked by the constrained policy, HR@K / NDCG@K with
bootstrap intervals, the acceptance of each model's one recommendation, popularity and, on synthetic data,
the prompt oracle and the oracle on the same examples) → a results table on the console, ``results.json``
and a self-contained ``report.html`` in the output folder.

The output folder holds one run folder per stage (``sft/``, ``grpo/``, ``rere/``, ``riser/``), so each model
can be evaluated again with ``riser-lite evaluate --run <out>/riser``. Running the demo again with the same
settings reuses finished runs (an interrupted one resumes); another ``--out`` starts over.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from riser_lite.eval.metrics import mean_of
from riser_lite.experiments.report import acceptance_columns, ranked_entries
from riser_lite.rl.config import ALGOS
from riser_lite.runs import auto_threads, resolve_threads

LABELS = {"sft": "SFT", "grpo": "GRPO", "rere": "ReRe-style", "riser": "RISER"}
RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"


@dataclass
class DemoConfig:
    """Sizes of the demo. `DemoConfig()` is the default run; `DemoConfig.quick()` the --quick one."""

    data: str = "synthetic"  # dataset source for `riser_lite.data.load_dataset`
    path: str | None = None  # dataset folder (None: the source's default; synthetic: the bundled data)
    data_seed: int = 0  # seed of the synthetic generator (0 = the bundled dataset)
    seed: int = 0  # seeds the backbone initialisation, SFT, RL and the bootstrap intervals
    preset: str = "tiny"  # backbone preset (riser_lite.model.backbone.PRESETS)
    sft_epochs: int = 6  # SFT epochs (early stopping may end sooner)
    sft_lr: float = 5e-3  # SFT peak learning rate (the same recipe as SFTConfig's defaults)
    sft_max_valid: int | None = None  # validation examples for SFT early stopping (None: the whole split)
    algos: tuple[str, ...] = ALGOS  # RL algorithms to compare, each from the same SFT model
    rl_steps: int = 30  # RL steps per algorithm
    prompts_per_step: int = 16  # training prompts per RL step
    draws_per_prompt: int = 16  # candidates generated per prompt: the rollout budget, equal for every algo
    # RL learning rate: 3e-4 moves the policy visibly within the demo's 30 steps (token entropy, the
    # acceptance of the sampled recommendation); at 1e-4, which a validation choice prefers for 150-step
    # runs (docs/results/synthetic_rl.md), 30 steps barely move it
    rl_lr: float = 3e-4
    rl_eval_every: int = 10  # validation HR/NDCG during RL every this many steps (0: never)
    rl_eval_examples: int = 50  # validation examples of those checks
    eval_examples: int | None = None  # test examples of the final evaluation (None: the whole split)
    num_beams: int = 20  # beams of the evaluation protocol (>= the largest K)
    ks: tuple[int, ...] = (1, 5, 10, 20)  # cut-offs of HR@K / NDCG@K
    table_ks: tuple[int, ...] = (10,)  # cut-offs shown in the console table (the report shows 5, 10, 20)
    # torch threads while the demo runs: fixed by default, since float sums (hence the numbers) depend on
    # the thread count; "auto" (or 0): chosen per stage by the machine's load (`runs.auto_threads`),
    # faster, but then the same seed can give other numbers on a busier machine.
    threads: int | str = 1
    progress: bool = True  # progress bars

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """The --quick sizes: a short SFT, a few RL steps, a test subset (about 2 minutes on 2 cores)."""
        base = dict(sft_epochs=2, rl_steps=8, prompts_per_step=8, rl_eval_every=4, rl_eval_examples=30,
                    eval_examples=100)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        from riser_lite.model.backbone import PRESETS

        unknown = [a for a in self.algos if a not in ALGOS]
        if unknown or not self.algos:
            raise ValueError(f"algos must be a non-empty subset of {ALGOS}, got {self.algos!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown backbone preset {self.preset!r}; expected one of {sorted(PRESETS)}")
        if self.num_beams < max(self.ks):
            raise ValueError(f"num_beams ({self.num_beams}) must be >= the largest K ({max(self.ks)})")
        if self.draws_per_prompt < 2:
            raise ValueError(f"draws_per_prompt must be >= 2 (RISER keeps half of them), got "
                             f"{self.draws_per_prompt}")
        if not set(self.table_ks) <= set(self.ks):
            raise ValueError(f"table_ks {self.table_ks} must be among ks {self.ks}")
        resolve_threads(self.threads)


class StageTimer:
    """Wall time, process CPU time and torch thread count of named stages, in the order they ran.

    threads: called at the start of each stage with this process's load in the previous stage (CPU seconds
        per wall second, 0 at first); returns the torch thread count to use (None: leave it alone).
    On a busy machine the wall time grows with the load; the CPU time (all threads of this process) is
    close to what the stage takes on an idle machine with that many threads.
    """

    @classmethod
    def setting_threads(cls, threads: int | str | None) -> StageTimer:
        """A timer that sets torch's threads at each stage: a fixed count, or ("auto" / 0) `auto_threads`
        with as many threads as torch has now on an idle machine (see `runs.resolve_threads`)."""
        import torch

        idle, fixed = torch.get_num_threads(), resolve_threads(threads)
        return cls((lambda own: auto_threads(idle, own)) if fixed == "auto" else (lambda own: fixed))

    def __init__(self, threads: Callable[[float], int] | None = None):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.threads: dict[str, int] = {}
        self._choose_threads = threads
        self._own_load = 0.0

    @contextlib.contextmanager
    def __call__(self, name: str):
        import torch

        if self._choose_threads is not None:
            torch.set_num_threads(self._choose_threads(self._own_load))
        self.threads[name] = torch.get_num_threads()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            self.seconds[name] = self.seconds.get(name, 0.0) + wall
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + used
            self._own_load = used / wall if wall > 0 else 0.0


# ---------------------------------------------------------------------------------------------- stages


def rl_config(algo: str, config: DemoConfig):
    """The algorithm's preset with the demo's sizes, drawing exactly `draws_per_prompt` per prompt."""
    from riser_lite.rl.config import RLConfig, same_budget

    base = RLConfig(algo=algo, steps=config.rl_steps, prompts_per_step=config.prompts_per_step,
                    lr=config.rl_lr, eval_every=config.rl_eval_every, eval_examples=config.rl_eval_examples,
                    seed=config.seed)
    return same_budget(base, config.draws_per_prompt)


def rl_summary(records: list[dict]) -> dict:
    """What a run's metric records say about its sample efficiency (means over steps)."""
    last = records[-1] if records else {}
    means = {key: mean_of(records, key) for key in (
        "gradient_prompt_fraction", "learnable_fraction", "unique_items_per_group", "hit_rate", "reward_var",
        "grpo/clip_frac_low", "grpo/clip_frac_high", "entropy", "valid_mass")}
    return {
        "steps": int(last.get("step", 0)), "rollouts_used": int(last.get("rollouts_used", 0)), **means,
        "converted_groups": int(sum(r.get("converted_groups", 0) for r in records)),
        "pairs": int(sum(r.get("pairs", 0) for r in records)),
        "train_time_s": float(last.get("time_s", 0.0)),
        **{k: v for k, v in last.items() if k.startswith("val_")},
    }


def _eval_entry(name: str, result, train_seconds: float | None) -> dict:
    return {"label": LABELS.get(name, name), "metrics": result.summaries, "expected": result.expected,
            "acceptance": result.acceptance, "expected_acceptance": result.expected_acceptance,
            "valid_rate": result.valid_rate, "coverage": result.coverage, "eval_seconds": result.seconds,
            "train_seconds": train_seconds}


def _baseline_entries(result) -> dict:
    out = {}
    for name, label in (("popularity", "popularity"), ("prompt_oracle", "prompt oracle (window only)"),
                        ("oracle", "oracle (true distribution)")):
        base = result.baselines.get(name)
        if base:
            out[name] = {"label": label, "metrics": base["summaries"], "expected": base.get("expected"),
                         "expected_acceptance": base.get("expected_acceptance")}
    return out


@contextlib.contextmanager
def _overwrite_hint():
    """A stage refusing a folder that holds a run of other settings: say how to start over."""
    from riser_lite.data.types import DataError

    try:
        yield
    except DataError:
        raise
    except ValueError as err:
        if "folder" not in str(err):
            raise
        from riser_lite.runs import RunError

        raise RunError(f"{err} (riser-lite demo: use another --out to start over)") from err


def clear_outputs(out: Path) -> None:
    """Remove what the demo wrote in `out` (the entries its manifest lists), nothing else.

    A run folder there that also holds other files is refused (`RunError`, naming them): the demo never
    deletes a file it did not write.
    """
    from riser_lite.runs import (
        RunError,
        check_outputs,
        clear_run_folder,
        owned_entries,
        remove_owned_folder,
    )

    check_outputs(out)  # refuses a folder that is not the package's before anything is removed
    for name in owned_entries(out):
        left = remove_owned_folder(out / name) if (out / name).is_dir() else []
        if left:
            raise RunError(f"{out / name} holds files the demo did not write ({', '.join(left[:5])}); move "
                           "them or choose another --out")
    clear_run_folder(out)


def demo_outputs(config: DemoConfig) -> list[str]:
    """What `run_demo` writes in its folder: a run folder per model, the results and the report."""
    return ["sft", *config.algos, RESULTS_FILE, REPORT_FILE]


def prepare_data(config: DemoConfig):
    """(data spec, RecDataset): the spec is what run folders record so later commands can rebuild the data."""
    from riser_lite.data import load_dataset
    from riser_lite.runs import dataset_spec

    spec = dataset_spec(config.data, config.path, config.data_seed)
    dataset = load_dataset(spec["source"], spec["path"], seed=spec["seed"], max_history=spec["max_history"])
    return spec, dataset


def train_sft_stage(config: DemoConfig, spec: dict, out: Path):
    """The SFT run folder ``out/sft`` (trained, resumed or reused), loaded as a `riser_lite.runs.Run`."""
    from riser_lite.runs import load_run
    from riser_lite.sft import SFTConfig, run_sft

    sft_config = SFTConfig(epochs=config.sft_epochs, lr=config.sft_lr, max_valid=config.sft_max_valid,
                           progress=config.progress)
    with _overwrite_hint():
        path = run_sft(spec, preset=config.preset, config=sft_config, out=out / "sft", seed=config.seed,
                       data_seed=config.data_seed)
    return load_run(path)


def train_rl_stage(algo: str, config: DemoConfig, sft, dataset, spec: dict, out: Path):
    """RL with one algorithm from a copy of the SFT model, into ``out/<algo>``. Returns the `RLResult`."""
    from tqdm.auto import tqdm

    from riser_lite.rl.trainer import train_rl
    from riser_lite.runs import update_config

    rl = rl_config(algo, config)
    bar = tqdm(total=rl.steps, desc=f"RL {LABELS[algo]}", disable=not config.progress, dynamic_ncols=True)

    def step(record: dict) -> None:
        bar.update(1)
        bar.set_postfix(grad=f"{record['gradient_prompt_fraction']:.2f}", hit=f"{record['hit_rate']:.3f}")

    try:
        with _overwrite_hint():
            result = train_rl((copy.deepcopy(sft.model), sft.tokenizer, dataset), rl, out=out / algo,
                              on_step=step)
    finally:
        bar.close()
    # Record how to rebuild the data, so that `riser-lite evaluate --run <out>/<algo>` works on the folder.
    update_config(out / algo, data=spec, start_run=str(sft.path), backbone=sft.config.get("backbone"))
    return result


def run_demo(config: DemoConfig | None = None, out: str | Path = "runs/demo", *, overwrite: bool = False,
             log=print) -> dict:
    """Run every stage and write ``results.json`` and ``report.html`` into `out`. Returns the results dict.

    results: {"config", "dataset", "budget", "eval", "models": {"sft" | algo: {"label", "metrics":
    {"hr@K": {"value", "lo", "hi", "n"}, "ndcg@K": ...}, "expected" (synthetic data), "acceptance",
    "expected_acceptance" (synthetic data): {"sampled_hit", "greedy_hit"}, "valid_rate", "coverage",
    "eval_seconds", "train_seconds", "rl" (RL models: `rl_summary`)}}, "baselines": {"popularity",
    "prompt_oracle" and "oracle" (synthetic data)}, "sft" (its summary), "stages" / "stages_cpu": {stage:
    seconds}, "threads": {stage: torch threads}, "total_seconds"}. torch uses `config.threads` threads
    ("auto": chosen by `auto_threads` at the start of each stage) and gets its own setting back afterwards.
    """
    import torch

    from riser_lite import runs

    config = config or DemoConfig()
    config.validate()
    out = Path(out)
    if overwrite:
        clear_outputs(out)
    runs.check_outputs(out, "demo", demo_outputs(config))  # claimed once the data has loaded
    previous = torch.get_num_threads()
    try:
        return _run_stages(config, out, log, StageTimer.setting_threads(config.threads))
    finally:
        torch.set_num_threads(previous)


def _run_stages(config: DemoConfig, out: Path, log, timer: StageTimer) -> dict:
    from tqdm.auto import tqdm

    from riser_lite import runs
    from riser_lite.eval.evaluate import EvalConfig, evaluate
    from riser_lite.experiments import report
    from riser_lite.items.catalog import ItemSpace

    total_start = time.perf_counter()

    with timer("data"):
        spec, dataset = prepare_data(config)
    runs.claim_outputs(out, "demo", demo_outputs(config))
    log(f"data: {dataset.name}, {len(dataset.catalog)} items, "
        + ", ".join(f"{len(rows)} {split}" for split, rows in dataset.splits.items()))

    with timer("sft"):
        sft = train_sft_stage(config, spec, out)
    sft_summary = sft.config.get("results", {}).get("sft", {})
    log(f"sft: {sft_summary.get('steps')} steps, "
        f"best validation loss {sft_summary.get('best_valid_loss', float('nan')):.4f}")

    models, records = {"sft": sft.model}, {}
    for algo in config.algos:
        with timer(f"rl {algo}"):
            result = train_rl_stage(algo, config, sft, dataset, spec, out)
        models[algo], records[algo] = result.model, result.records
        summary = rl_summary(result.records)
        log(f"rl {algo}: {summary['rollouts_used']} rollouts, prompts with a gradient "
            f"{summary['gradient_prompt_fraction']:.2f}, unique items per group "
            f"{summary['unique_items_per_group']:.2f}")

    # Every model on the same test examples; popularity and the oracle once, with the SFT model.
    space = ItemSpace(dataset.catalog, sft.tokenizer)
    eval_config = EvalConfig(split="test", protocol="beam", num_beams=config.num_beams, ks=config.ks,
                             max_examples=config.eval_examples, seed=config.seed, acceptance=True)
    entries, evaluated = {}, {}
    for name, model in tqdm(models.items(), desc="evaluate", disable=not config.progress, dynamic_ncols=True):
        with timer(f"eval {name}"):
            evaluated[name] = evaluate(model, sft.tokenizer, dataset, space,
                                       replace(eval_config, baselines=name == "sft"))
        train_stage = "sft" if name == "sft" else f"rl {name}"
        entries[name] = _eval_entry(name, evaluated[name], timer.seconds[train_stage])
        if name in records:
            entries[name]["rl"] = rl_summary(records[name])

    first = evaluated["sft"]
    results = {
        "config": asdict(config),
        "dataset": {"name": dataset.name, "source": spec["source"], "items": len(dataset.catalog),
                    **{split: len(rows) for split, rows in dataset.splits.items()}},
        "budget": {"steps": config.rl_steps, "prompts_per_step": config.prompts_per_step,
                   "draws_per_prompt": config.draws_per_prompt,
                   "rollouts": config.rl_steps * config.prompts_per_step * config.draws_per_prompt},
        "eval": {"split": "test", "protocol": "beam", "num_beams": config.num_beams,
                 "num_examples": first.num_examples, "level": round(100 * (1 - eval_config.alpha))},
        "models": entries, "baselines": _baseline_entries(first), "sft": sft_summary,
        "stages": dict(timer.seconds), "stages_cpu": dict(timer.cpu_seconds), "threads": dict(timer.threads),
        "total_seconds": time.perf_counter() - total_start,
    }
    runs.write_json(out / RESULTS_FILE, results)

    shown, last = min(8, first.num_examples), config.algos[-1]
    recommendations = report.recommendations_html(dataset, dataset.splits["test"][:shown],
                                                  evaluated[last].top_items[:shown])
    page = report.build_report(results, {LABELS[a]: r for a, r in records.items()},
                               runs.read_metrics(sft.path, stage="sft"), recommendations,
                               recommender=LABELS[last])
    runs.atomic_write_text(out / REPORT_FILE, page)
    log(format_results(results))
    log(f"wrote {out / RESULTS_FILE} and {out / REPORT_FILE}")
    return results


# ---------------------------------------------------------------------------------------------- output


def _cell(summary: dict | None) -> str:
    if not summary:
        return "-"
    return f"{summary['value']:.3f} [{summary['lo']:.3f}, {summary['hi']:.3f}]"


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_results(results: dict) -> str:
    """The console table: one row per model and reference ranker."""
    ks = results["config"].get("table_ks", [10])
    synthetic = any(entry.get("expected") for entry in results["models"].values())
    header = [f"{'model':<27}"] + [f"{name + '@' + str(k):<22}" for k in ks for name in ("HR", "NDCG")]
    if synthetic:
        header += [f"{'E[HR@' + str(k) + ']':>9}" for k in ks]
    accept = acceptance_columns(results)
    header += [f"{title:>17}" for title, _, _ in accept]
    header += [f"{'grad-prompts':>12}", f"{'uniq/group':>10}", f"{'rollouts':>8}", f"{'train s':>8}",
               f"{'eval s':>7}"]
    lines = [" ".join(header), "-" * len(" ".join(header))]
    for name, entry in ranked_entries(results):
        rl = entry.get("rl") or {}
        cells = [f"{entry.get('label', name):<27}"]
        cells += [f"{_cell(entry['metrics'].get(f'{m}@{k}')):<22}" for k in ks for m in ("hr", "ndcg")]
        if synthetic:
            cells += [f"{_number((entry.get('expected') or {}).get(f'hr@{k}', {}).get('value'), 3):>9}"
                      for k in ks]
        cells += [f"{_number(((entry.get(key) or {}).get(metric) or {}).get('value'), 3):>17}"
                  for _, key, metric in accept]
        cells += [f"{_number(rl.get('gradient_prompt_fraction')):>12}",
                  f"{_number(rl.get('unique_items_per_group')):>10}",
                  f"{_number(rl.get('rollouts_used')):>8}", f"{_number(entry.get('train_seconds'), 1):>8}",
                  f"{_number(entry.get('eval_seconds'), 1):>7}"]
        lines.append(" ".join(cells))
    ev = results["eval"]
    lines.append(f"{ev['protocol']} protocol ({ev['num_beams']} beams), {ev['num_examples']} {ev['split']} "
                 "examples; "
                 f"[{ev['level']}% bootstrap interval]"
                 + ("; E[HR@K]: expected HR@K under the true next-item distribution" if synthetic else "")
                 + ("; E[accept]: P(the constrained policy's sampled / greedy item is the next item)"
                    if synthetic and accept else ""))
    lines.append("stages: " + ", ".join(f"{name} {s:.1f} s" for name, s in results["stages"].items())
                 + f"; total {results['total_seconds']:.1f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI


def add_cli(subparsers) -> None:
    """`riser-lite demo`: the end-to-end comparison on the bundled data (or a real dataset)."""
    p = subparsers.add_parser(
        "demo", help="end to end: data, SFT, GRPO / ReRe-style / RISER, evaluation, HTML report",
        description="SFT, then GRPO, ReRe-style and RISER from the same SFT model under the same rollout "
                    "budget, evaluated on the test split; writes results.json and a self-contained "
                    "report.html to --out.")
    p.add_argument("--quick", action="store_true", help="smaller sizes (about 2 minutes on 2 cores)")
    p.add_argument("--data", default="synthetic",
                   choices=["synthetic", "lastfm", "amazon-csv", "amazon-raw", "native"])
    p.add_argument("--path", default=None, help="dataset folder (default: the source's default)")
    p.add_argument("--out", default="runs/demo",
                   help="output folder (run folders, results.json, report.html)")
    p.add_argument("--sft-epochs", type=int, default=None)
    p.set_defaults(func=_run_cli)


def config_from_args(args) -> DemoConfig:
    overrides = {"sft_epochs": args.sft_epochs} if args.sft_epochs is not None else {}
    overrides.update(data=args.data, path=args.path, progress=sys.stderr.isatty())  # bars on a terminal only
    return DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)


def _run_cli(args) -> int:
    from riser_lite.cli_args import checked

    config = config_from_args(args)
    checked(config.validate)  # sizes that do not fit together: one line, before anything runs
    run_demo(config, args.out)
    return 0
