"""Experiments: GRPO, ReRe-style, RISER and RISER's ablations over several seeds, with paired tests.

    riser-lite compare --quick                       # 3 variants x 2 seeds, short runs
    riser-lite compare --variants grpo riser --seeds 0 1 2 --rl-steps 30 --out runs/compare

Every variant starts from the same SFT run (trained with the SFTConfig defaults if ``--sft-run`` does not
hold one) and draws the same number of candidates per prompt for the same prompts per step and steps, so
all variants spend the same rollout budget. Each (variant, seed) is trained into ``<out>/<variant>/seed<k>``
and evaluated on the same first test users with trie-constrained beam search (ranked by the constrained
policy, `EvalConfig.policy`); its evaluation is saved beside the run (``eval_compare.json``, with per-user
ranks), and a later compare with the same settings reuses it without retraining, so an interrupted
comparison loses at most the run it was in (which resumes from its last checkpoint).

Statistics, per metric column (HR@K, NDCG@K and, on synthetic data, their expected values under the true
next-item distributions, far less noisy than one drawn target per user; and what a hit reward optimises,
the acceptance of the constrained policy's one sampled or greedy recommendation, see
`riser_lite.eval.evaluate`):

- value: the mean over seeds; interval: a percentile bootstrap over test users of the per-user metric
  averaged over seeds (how much the seed-averaged score would move on other users). Seed-to-seed training
  noise is reported separately as ``seed_sd``, the standard deviation of the per-seed values.
- paired tests against GRPO and against SFT (an ablation also against full RISER): per user, the
  seed-averaged metric difference (variant minus baseline) on the same users; its mean, a paired-bootstrap
  interval, and a two-sided sign-flip permutation p-value (exact enumeration for up to
  log2(num_permutations) users).

``compare.json`` in ``out`` holds everything (JSON, no pickle); `format_table` and `markdown_table` print it.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from riser_lite.eval.metrics import mean_dict, metric_columns, paired_test, summarize_values
from riser_lite.runs import RunError

# What each variant is: RLConfig fields on top of the defaults. An ablation is the RISER preset with one
# part switched off; `rl_config` then makes every variant draw the same `draws_per_prompt` per prompt.
VARIANTS: dict[str, dict] = {
    "grpo": {"algo": "grpo"},  # sampled groups, hit reward, no pairs, uniform token weights
    "rere": {"algo": "rere"},  # beam-search groups, hit + rank-penalty reward (ReRe-style)
    "riser": {"algo": "riser"},  # oversample + dedup, SimPO pairs, certainty weights, clipping
    "riser-no-pairs": {"algo": "riser", "use_pairs": False},  # no-hit groups give no gradient again
    "riser-no-dedup": {"algo": "riser", "use_dedup": False},  # all draws kept, duplicates included
    "riser-no-certainty": {"algo": "riser", "use_certainty_weights": False},  # every token weighs 1
    "riser-no-clip": {"algo": "riser", "use_clipping": False},  # plain ratio x A surrogate
    # The same three trained on the raw full-vocabulary policy (sampled under the trie all the same).
    "grpo-raw": {"algo": "grpo", "policy": "raw"},
    "rere-raw": {"algo": "rere", "policy": "raw"},
    "riser-raw": {"algo": "riser", "policy": "raw"},
    # No RL: the SFT loss on the very prompts an RL run draws, for as many optimizer steps (`continue_sft`).
    "sft-continued": {},
}
SFT_CONTINUED = "sft-continued"
DEFAULT_VARIANTS = ("grpo", "rere", "riser", "riser-no-pairs", "riser-no-dedup", "riser-no-certainty",
                    "riser-no-clip")  # what `compare` runs unless told otherwise
LABELS = {"sft": "SFT", "grpo": "GRPO", "rere": "ReRe-style", "riser": "RISER",
          "riser-no-pairs": "RISER w/o pairs", "riser-no-dedup": "RISER w/o dedup",
          "riser-no-certainty": "RISER w/o certainty", "riser-no-clip": "RISER w/o clipping",
          "grpo-raw": "GRPO (raw policy)", "rere-raw": "ReRe-style (raw policy)",
          "riser-raw": "RISER (raw policy)", SFT_CONTINUED: "SFT continued (same prompts and updates)",
          "popularity": "popularity", "prompt_oracle": "prompt oracle (window only)",
          "oracle": "oracle (true distribution)"}
REFERENCES = ("popularity", "prompt_oracle", "oracle")  # reference rankers of the SFT evaluation shown
EVAL_FILE = "eval_compare.json"  # per run folder: evaluation + per-user ranks + the settings it belongs to
RESULTS_FILE = "compare.json"


def eval_file(split: str) -> str:
    """A run's evaluation file for `split`: EVAL_FILE for test, ``eval_compare_<split>.json`` otherwise."""
    return EVAL_FILE if split == "test" else f"eval_compare_{split}.json"


def results_file(split: str) -> str:
    """The comparison's results for `split`: RESULTS_FILE for test, ``compare_<split>.json`` otherwise."""
    return RESULTS_FILE if split == "test" else f"compare_{split}.json"


@dataclass
class CompareConfig:
    """Sizes of a comparison. `CompareConfig()` is the full one; `CompareConfig.quick()` a short one."""

    data: str = "synthetic"  # dataset source for `riser_lite.data.load_dataset` (as in the demo)
    path: str | None = None  # dataset folder (None: the SFT run's, else the source's default)
    data_seed: int = 0  # seed of the synthetic generator (0 = the bundled dataset)
    sft_run: str = "runs/sft"  # SFT run every variant starts from (trained with SFTConfig() if missing)
    preset: str = "tiny"  # backbone preset of that SFT run when it has to be trained
    # how items are written ("title", "sid", "title+sid"): a new SFT run's form; an existing run must match
    # (None: a new run writes titles, an existing one keeps its own form)
    items: str | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS  # names of VARIANTS to train and compare
    seeds: tuple[int, ...] = (0, 1, 2)  # RL seeds: each variant is trained once per seed
    seed: int = 0  # seeds the SFT run (if trained), the bootstrap intervals and the permutation tests
    rl_steps: int = 30  # RL steps per run
    prompts_per_step: int = 16  # training prompts per RL step
    # RL prompts from "all" training users or only those the SFT run held out ("heldout": needs an SFT run
    # trained with rl_holdout > 0); the same for every variant, sft-continued included
    prompt_users: str = "all"
    draws_per_prompt: int = 16  # candidates generated per prompt: the rollout budget, equal for every variant
    rl_lr: float = 1e-4  # RL learning rate
    lambda_pair: float | None = None  # RISER's lambda (pair-loss weight), variants with pairs; None: default
    beta_kl: float | None = None  # weight of the KL to the SFT reference for every RL variant; None: default
    rl_eval_every: int = 0  # validation HR/NDCG during RL every this many steps (0: never; the test decides)
    rl_eval_examples: int = 50  # validation examples of those checks
    eval_split: str = "test"  # split of the final evaluation
    eval_examples: int | None = None  # first N users of that split (None: all); the same for every run
    num_beams: int = 20  # beams of the evaluation protocol (>= the largest K)
    ks: tuple[int, ...] = (1, 5, 10, 20)  # cut-offs of HR@K / NDCG@K
    table_k: int = 10  # K of the table and of the paired tests
    alpha: float = 0.05  # intervals cover 1 - alpha
    num_bootstrap: int = 2000  # bootstrap resamples of the users
    num_permutations: int = 10000  # random sign flips of the permutation test (exact when 2^n is fewer)
    threads: int | str = 1  # torch threads (1: same numbers whatever the load); "auto" or 0: by the load
    progress: bool = True  # progress bars

    @classmethod
    def quick(cls, **overrides) -> CompareConfig:
        """Three variants, two seeds, short runs on 100 test users."""
        base = dict(variants=("grpo", "rere", "riser"), seeds=(0, 1), rl_steps=8, prompts_per_step=8,
                    eval_examples=100)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        from riser_lite.data.types import SPLITS
        from riser_lite.items.represent import ITEM_FORMS
        from riser_lite.model.backbone import PRESETS
        from riser_lite.rl.config import PROMPT_USERS

        unknown = [v for v in self.variants if v not in VARIANTS]
        checks = [
            (self.variants and not unknown and len(set(self.variants)) == len(self.variants),
             f"variants must be distinct names among {list(VARIANTS)}, got {list(self.variants)}"),
            (self.seeds and len(set(self.seeds)) == len(self.seeds),
             f"seeds must be distinct and non-empty, got {list(self.seeds)}"),
            (self.preset in PRESETS, f"unknown preset {self.preset!r}; expected one of {sorted(PRESETS)}"),
            (self.items in (None, *ITEM_FORMS),
             f"items must be one of {list(ITEM_FORMS)}, got {self.items!r}"),
            (self.prompt_users in PROMPT_USERS,
             f"prompt_users must be one of {PROMPT_USERS}, got {self.prompt_users!r}"),
            (self.draws_per_prompt >= 2, f"draws_per_prompt must be >= 2, got {self.draws_per_prompt}"),
            (self.eval_split in SPLITS, f"eval_split must be one of {SPLITS}, got {self.eval_split!r}"),
            (self.num_beams >= max(self.ks), f"num_beams ({self.num_beams}) must be >= the largest K"),
            (self.table_k in self.ks, f"table_k ({self.table_k}) must be among ks {list(self.ks)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def rl_config(variant: str, config: CompareConfig, seed: int):
    """The variant's RLConfig with the comparison's sizes, drawing exactly `draws_per_prompt` per prompt."""
    from riser_lite.rl.config import RLConfig, same_budget

    overrides = VARIANTS[variant] if variant != SFT_CONTINUED else {"algo": "grpo"}  # its prompts and updates
    extra = {}
    if config.lambda_pair is not None and RLConfig(**overrides).use_pairs:
        extra["lambda_pair"] = config.lambda_pair
    if config.beta_kl is not None and variant != SFT_CONTINUED:
        extra["beta_kl"] = config.beta_kl
    base = RLConfig(**overrides, **extra, steps=config.rl_steps, prompts_per_step=config.prompts_per_step,
                    prompt_users=config.prompt_users,
                    lr=config.rl_lr, eval_every=config.rl_eval_every, eval_examples=config.rl_eval_examples,
                    seed=seed)
    return same_budget(base, config.draws_per_prompt)


# ---------------------------------------------------------------------------------------------- statistics


def user_columns(evaluation: dict, ks, distributions=None) -> dict[str, np.ndarray]:
    """Per-user metric columns of an evaluation dict: hr@K, ndcg@K, (given the true next-item
    distributions of its users) expected_hr@K, expected_ndcg@K, and the acceptance values the evaluation
    recorded (sampled_hit, greedy_hit and on synthetic data expected_sampled_hit, expected_greedy_hit).
    Each [N]."""
    columns = metric_columns(evaluation["ranks"], ks)
    if distributions is not None:
        from riser_lite.eval.baselines import expected_columns

        expected = expected_columns(evaluation["top_items"], distributions, ks)
        columns.update({f"expected_{name}": values for name, values in expected.items()})
    for name, values in (evaluation.get("acceptance_values") or {}).items():
        columns[name] = np.asarray(values, dtype=np.float64)
    return columns


def summarize_seeds(per_seed: list[dict[str, np.ndarray]], config: CompareConfig):
    """(summaries, seed-averaged columns): per column the mean over seeds, the bootstrap interval over users
    of the seed-averaged per-user values, the per-seed means and their standard deviation."""
    averaged = {name: np.mean([cols[name] for cols in per_seed], axis=0) for name in per_seed[0]}
    summaries = summarize_values(averaged, config.num_bootstrap, config.alpha, config.seed)
    for name, summary in summaries.items():
        values = [float(cols[name].mean()) for cols in per_seed]
        summary.update(per_seed=values, seed_sd=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    return summaries, averaged


# ---------------------------------------------------------------------------------------------- stages


def _json(value):
    return json.loads(json.dumps(value))


def load_sft(config: CompareConfig):
    """(Run, data spec) of `config.sft_run`, trained first with the SFTConfig defaults if it holds none."""
    from riser_lite.items.sid import SIDConfig
    from riser_lite.runs import dataset_spec, load_run, read_json
    from riser_lite.sft import STAGE, SFTConfig, run_sft

    spec = dataset_spec(config.data, config.path, config.data_seed)
    folder = Path(config.sft_run)
    saved = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    finished = STAGE in saved.get("results", {})
    if not finished:
        run_sft(spec, preset=config.preset, config=SFTConfig(progress=config.progress), out=folder,
                seed=config.seed, data_seed=config.data_seed, items=config.items or "title",
                sid_config=SIDConfig(seed=config.seed))
    run = load_run(folder)
    recorded = run.config.get("data") or {}
    same_path = config.path is None or (recorded.get("path") is not None
                                        and Path(recorded["path"]).resolve() == Path(config.path).resolve())
    if recorded.get("source") != config.data or not same_path or recorded.get("seed", 0) != config.data_seed:
        raise RunError(f"SFT run {folder} was trained on data {recorded}, not on {config.data!r} at "
                         f"{config.path!r}; pass the matching --data/--path or another --sft-run")
    form = (recorded.get("items") or {}).get("form", "title")
    if config.items is not None and config.items != form:
        raise RunError(f"SFT run {folder} writes items as {form!r}, not {config.items!r}; pass --items "
                         f"{form} or another --sft-run")
    return run, recorded


def _fingerprint(sft) -> dict:
    """What identifies the SFT model a run started from (a retrained SFT run makes old RL runs stale)."""
    return _json({key: sft.config.get(key) for key in ("backbone", "data", "seed", "results")})


def _same_rl(saved: dict | None, current: dict) -> bool:
    """The saved RL settings equal `current` (JSON-normalised, as both are stored)."""
    return saved is not None and saved == current


def _matches(saved: dict, meta: dict) -> bool:
    return all(_same_rl(saved.get(key), value) if key == "rl" and value is not None
               else saved.get(key) == value for key, value in meta.items())


def _cached(folder: Path, meta: dict) -> dict | None:
    """The saved evaluation in `folder` if it was made with exactly these settings (split included)."""
    path = folder / eval_file(meta["config"]["split"])
    if not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if _matches(saved, meta) else None


def _trained(folder: Path, meta: dict) -> bool:
    """True if `folder` holds the finished run of these settings: an evaluation of any split or protocol
    was saved from it (written only after training), so a new evaluation needs no retraining."""
    for path in sorted(folder.glob("eval_compare*.json")):
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("start") == meta["start"] and _same_rl(saved.get("rl"), meta["rl"]):
            return (folder / "model").is_dir()
    return False


def _check_folder(folder: Path, rl: dict, start: dict) -> None:
    """Refuse a run folder that holds a run of other settings (it would be resumed or reused wrongly)."""
    path = folder / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    if ((saved.get("rl") is not None and not _same_rl(saved["rl"], rl))
            or (saved.get("compare") or {}).get("start") not in (None, start)):
        raise RunError(f"{folder} holds an RL run of other settings or from another SFT model; "
                         "use another --out or delete that folder")


def _evaluate(model, tokenizer, dataset, space, eval_config, meta: dict, folder: Path) -> dict:
    from riser_lite.eval.evaluate import evaluate
    from riser_lite.runs import own_entry, write_json

    result = evaluate(model, tokenizer, dataset, space, eval_config)
    users = [ex.user for ex in dataset.splits[eval_config.split][: result.num_examples]]
    saved = {**meta, "users": users, **result.to_dict()}
    write_json(own_entry(folder, eval_file(eval_config.split)), saved)
    return saved


def train_and_evaluate(variant: str, seed: int, config: CompareConfig, sft, dataset, spec: dict, space,
                       eval_config, out: Path) -> tuple[dict, list[dict], bool]:
    """(evaluation, metric records, reused) of one (variant, seed) run in ``out/<variant>/seed<seed>``."""
    from tqdm.auto import tqdm

    from riser_lite.rl.trainer import train_rl
    from riser_lite.runs import own_entry, read_metrics, update_config

    folder = own_entry(out / variant, f"seed{seed}", "compare")
    rl, start = rl_config(variant, config, seed), _fingerprint(sft)
    meta = {"start": start, "rl": _json(asdict(rl)), "config": _json(asdict(eval_config))}
    _check_folder(folder, meta["rl"], start)
    saved = _cached(folder, meta)
    if saved is not None:
        return saved, read_metrics(folder, stage="rl"), True
    if _trained(folder, meta):  # trained before, evaluated now on another split or protocol
        from riser_lite.runs import load_run

        model = load_run(folder).model
        return (_evaluate(model, sft.tokenizer, dataset, space, eval_config, meta, folder),
                read_metrics(folder, stage="rl"), True)
    update_config(folder, compare={"variant": variant, "start": start})
    bar = tqdm(total=rl.steps, desc=f"RL {variant} seed {seed}", disable=not config.progress, leave=False,
               dynamic_ncols=True)
    start_config = {**sft.config, "start_run": str(sft.path)}  # where prompt_users="heldout" reads the split
    try:
        if variant == SFT_CONTINUED:
            model, records = continue_sft(copy.deepcopy(sft.model), sft.tokenizer, dataset, rl, folder,
                                          on_step=lambda record: bar.update(1), start_config=start_config)
        else:
            start = (copy.deepcopy(sft.model), sft.tokenizer, dataset, start_config)
            result = train_rl(start, rl, out=folder, on_step=lambda record: bar.update(1))
            model, records = result.model, result.records
    finally:
        bar.close()
    # Record how to rebuild the data, so that `riser-lite evaluate --run <folder>` works too.
    update_config(folder, data=spec, start_run=str(sft.path), backbone=sft.config.get("backbone"))
    evaluation = _evaluate(model, sft.tokenizer, dataset, space, eval_config, meta, folder)
    return evaluation, records, False


def continue_sft(model, tokenizer, dataset, rl, folder: Path, on_step=None,
                 start_config: dict | None = None) -> tuple[object, list[dict]]:
    """The fair "no RL" baseline: the SFT loss on exactly the prompts an RL run with config ``rl`` draws
    (the same (seed, step) draw from the same examples as `rl.trainer.train_rl`, ``rl.prompt_users``
    included: the held-out users are read from `start_config`, the SFT run's config), for as many AdamW
    steps (μ per step, lr ``rl.lr``, constant), so RL is compared with SFT given the same data and the same
    number of updates.

    Returns (model, records); records carry step, loss and time_s and go to ``folder/metrics.jsonl``.
    """
    from riser_lite.rl.trainer import prompt_examples, step_seed
    from riser_lite.runs import METRICS_FILE, MetricsLog, save_run, trainable_parameters
    from riser_lite.sft import collate, encode_examples, sft_step

    train = prompt_examples(dataset, start_config or {}, rl.prompt_users)
    pad = int(tokenizer.pad_token_id)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params.values(), lr=rl.lr, weight_decay=0.0)
    model.eval()  # no dropout, as in RL
    log, records, start = MetricsLog(folder / METRICS_FILE), [], time.perf_counter()
    try:
        for step in range(1, rl.steps + 1):
            rng = np.random.default_rng(step_seed(rl.seed, step, 0))
            examples = [train[i] for i in rng.choice(len(train), rl.prompts_per_step, replace=False)]
            batch = collate(encode_examples(examples, dataset.catalog, tokenizer, dataset.max_history), pad)
            losses = [sft_step(model, optimizer, batch) for _ in range(rl.inner_epochs)]
            record = {"stage": "rl", "step": step, "algo": SFT_CONTINUED, "rollouts_used": 0,
                      "loss": float(np.mean(losses)), "time_s": time.perf_counter() - start}
            log.write(record)
            records.append(record)
            if on_step is not None:
                on_step(record)
    finally:
        log.close()
    save_run(folder, model, tokenizer, {})
    return model, records


# ---------------------------------------------------------------------------------------------- driver


def run_compare(config: CompareConfig | None = None, out: str | Path = "runs/compare", *, log=print) -> dict:
    """Train and evaluate every (variant, seed), aggregate, write ``out/compare.json``; return its dict.

    results: {"config", "dataset", "budget", "eval": {"split", "num_examples", "users", "level", ...},
    "models": {"sft" | variant: {"label", "metrics": {column: {"value", "lo", "hi", "n", "per_seed",
    "seed_sd"}}, "paired": {"grpo" | "riser" | "sft": {column: {"diff", "lo", "hi", "p_value", "n"}}},
    "rl" (mean over seeds of `demo.rl_summary`), "seeds": {seed: {"run", "metrics", "rl", "ranks",
    "reused"}}}}, "baselines": {"popularity", "prompt_oracle" and "oracle" (synthetic)}, "stages",
    "total_seconds"}. Columns are hr@K, ndcg@K, sampled_hit, greedy_hit and, on synthetic data,
    expected_hr@K / expected_ndcg@K / expected_sampled_hit / expected_greedy_hit; paired tests use the HR
    and NDCG ones at K = table_k and the acceptance ones of `acceptance_keys`.
    """
    from riser_lite.experiments.demo import StageTimer

    config = config or CompareConfig()
    config.validate()
    from riser_lite.runs import check_outputs

    # checked now, claimed once the SFT run is loaded (a refused start leaves no folder behind)
    out = check_outputs(out, "compare", compare_outputs(config))
    previous = torch.get_num_threads()
    try:
        return _run(config, out, log, StageTimer.setting_threads(config.threads))
    finally:
        torch.set_num_threads(previous)


def _run(config: CompareConfig, out: Path, log, timer) -> dict:
    from riser_lite.data import load_dataset
    from riser_lite.eval.evaluate import EvalConfig
    from riser_lite.experiments.demo import rl_summary
    from riser_lite.items.catalog import ItemSpace
    from riser_lite.items.represent import apply_items
    from riser_lite.runs import claim_outputs, write_json

    total = time.perf_counter()
    with timer("sft"):
        sft, spec = load_sft(config)
    claim_outputs(out, "compare", compare_outputs(config))
    with timer("data"):
        dataset = load_dataset(spec["source"], spec.get("path"), seed=spec.get("seed", 0),
                               max_history=spec.get("max_history", 10))
        dataset = apply_items(dataset, spec.get("items"))  # semantic-ID runs: the SFT run's very codes
    space = ItemSpace(dataset.catalog, sft.tokenizer)
    eval_config = EvalConfig(split=config.eval_split, protocol="beam", num_beams=config.num_beams,
                             ks=config.ks, max_examples=config.eval_examples,
                             num_bootstrap=config.num_bootstrap, alpha=config.alpha, seed=config.seed,
                             acceptance=True)
    with timer("eval sft"):
        meta = {"start": _fingerprint(sft), "rl": None, "config": _json(asdict(eval_config))}
        sft_eval = (_cached(out / "sft", meta)
                    or _evaluate(sft.model, sft.tokenizer, dataset, space, eval_config, meta, out / "sft"))

    runs = {}
    for variant in config.variants:
        for seed in config.seeds:
            with timer(f"{variant} seed{seed}"):
                evaluation, records, reused = train_and_evaluate(variant, seed, config, sft, dataset, spec,
                                                                 space, eval_config, out)
            if evaluation["users"] != sft_eval["users"]:
                raise RuntimeError(f"{variant} seed {seed} was evaluated on other users than the SFT model")
            runs[variant, seed] = {"run": str(out / variant / f"seed{seed}"), "reused": reused,
                                   "metrics": {k: s["value"] for k, s in evaluation["summaries"].items()},
                                   "rl": rl_summary(records), "ranks": evaluation["ranks"],
                                   "top_items": evaluation["top_items"],
                                   "acceptance_values": evaluation.get("acceptance_values")}
            fraction = runs[variant, seed]["rl"]["gradient_prompt_fraction"]
            log(f"{variant} seed {seed}{' (reused)' if reused else ''}: HR@{config.table_k} "
                f"{runs[variant, seed]['metrics'][f'hr@{config.table_k}']:.3f}"
                + (f", prompts with a gradient {fraction:.2f}" if fraction is not None else ""))

    oracle = getattr(dataset, "oracle", None)
    distributions = oracle[config.eval_split][: sft_eval["num_examples"]] if oracle else None
    models = aggregate(config, sft_eval, runs, distributions)
    models["sft"].update(run=str(sft.path), ranks=sft_eval["ranks"])
    baselines = {name: _baseline_entry(name, entry) for name, entry in sft_eval["baselines"].items()
                 if name in REFERENCES}
    results = _json({
        "config": asdict(config),
        "dataset": {"name": dataset.name, "source": spec["source"], "items": len(dataset.catalog),
                    **{split: len(rows) for split, rows in dataset.splits.items()}},
        "budget": {"steps": config.rl_steps, "prompts_per_step": config.prompts_per_step,
                   "draws_per_prompt": config.draws_per_prompt,
                   "rollouts": config.rl_steps * config.prompts_per_step * config.draws_per_prompt},
        "eval": {"split": config.eval_split, "protocol": "beam", "num_beams": config.num_beams,
                 "num_examples": sft_eval["num_examples"], "users": sft_eval["users"],
                 "level": round(100 * (1 - config.alpha)), "seeds": list(config.seeds),
                 "interval": "percentile bootstrap over users of the seed-averaged per-user metric",
                 "paired": "per-user seed-averaged difference: bootstrap interval, sign-flip p-value"},
        "models": models, "baselines": baselines, "stages": dict(timer.seconds),
        "total_seconds": time.perf_counter() - total,
    })
    write_json(out / results_file(config.eval_split), results)
    log(f"wrote {out / results_file(config.eval_split)}")
    return results


def compare_outputs(config: CompareConfig) -> list[str]:
    """What `run_compare` writes in its folder: the results file and a folder per model."""
    return [results_file(config.eval_split), "sft", *config.variants]


def _baseline_entry(name: str, evaluated: dict) -> dict:
    """A reference ranker's row; the oracles' acceptance (their sampled or most probable item) goes into
    its metrics under the models' column names."""
    accept = {f"expected_{key}": value for key, value in (evaluated.get("expected_acceptance") or {}).items()}
    return {"label": LABELS[name], "metrics": {**evaluated["summaries"], **accept},
            "expected": evaluated["expected"]}


def aggregate(config: CompareConfig, sft_eval: dict, runs: dict, distributions=None) -> dict:
    """The "models" section of the results: SFT and every variant, seeds combined, paired tests.

    runs: {(variant, seed): {"run", "reused", "metrics", "rl" (`demo.rl_summary`), "ranks", "top_items"}}.
    """
    columns = {"sft": [user_columns(sft_eval, config.ks, distributions)]}
    for variant in config.variants:
        columns[variant] = [user_columns(runs[variant, s], config.ks, distributions) for s in config.seeds]
    averaged, models = {}, {}
    for name, per_seed in columns.items():
        summaries, averaged[name] = summarize_seeds(per_seed, config)
        models[name] = {"label": LABELS[name], "overrides": VARIANTS.get(name), "metrics": summaries}
    prefixes = ("", "expected_") if distributions is not None else ("",)
    tested = [f"{prefix}{m}@{config.table_k}" for prefix in prefixes for m in ("hr", "ndcg")]
    tested += [name for name in acceptance_keys(distributions is not None) if name in averaged["sft"]]
    stats = dict(num_bootstrap=config.num_bootstrap, num_permutations=config.num_permutations,
                 alpha=config.alpha, seed=config.seed)
    for variant in config.variants:
        # Against GRPO and SFT; an ablation also against full RISER (what removing its part costs).
        bases = ("grpo", "riser", "sft") if variant.startswith("riser-") else ("grpo", "sft")
        models[variant]["paired"] = {
            base: {col: paired_test(averaged[variant][col], averaged[base][col], **stats) for col in tested}
            for base in bases if base in averaged and base != variant}
        summaries = [runs[variant, s]["rl"] for s in config.seeds]
        models[variant]["rl"] = {key: float(np.mean([s[key] for s in summaries]))
                                 if all(isinstance(s.get(key), (int, float)) for s in summaries) else None
                                 for key in summaries[0]}
        models[variant]["seeds"] = {str(s): {k: v for k, v in runs[variant, s].items()
                                             if k not in ("top_items", "acceptance_values")}
                                    for s in config.seeds}
    return models


# ---------------------------------------------------------------------------------------------- output


def acceptance_keys(synthetic: bool) -> tuple[str, ...]:
    """The acceptance columns a table shows: the exact expectations on synthetic data, else the realised
    sampled hit rate (greedy_hit realised equals HR@1 of the exact ranking, so it adds nothing there)."""
    return ("expected_sampled_hit", "expected_greedy_hit") if synthetic else ("sampled_hit",)


ACCEPTANCE_HEADERS = {"expected_sampled_hit": "E[accept] sampled", "expected_greedy_hit": "E[accept] greedy",
                      "sampled_hit": "sampled hit"}


def _rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the results table: models first, then the reference rankers."""
    k = results["config"]["table_k"]

    def cell(s):
        if not s:
            return "-"
        sd = f" ±{s['seed_sd']:.3f}" if len(s.get("per_seed", ())) > 1 else ""  # several seeds: their sd
        return f"{s['value']:.3f}{sd} [{s['lo']:.3f}, {s['hi']:.3f}]"

    def delta(entry, metric):
        test = (entry.get("paired") or {}).get("grpo", {}).get(f"{metric}@{k}")
        return "-" if test is None else f"{test['diff']:+.3f} (p={test['p_value']:.2f})"

    def number(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    sft = results["models"]["sft"]["metrics"]
    accept = [key for key in acceptance_keys(f"expected_hr@{k}" in sft) if key in sft]
    header = ["model", f"HR@{k}", f"NDCG@{k}", *(ACCEPTANCE_HEADERS[key] for key in accept),
              f"ΔHR@{k} vs GRPO", f"ΔNDCG@{k} vs GRPO", "grad-prompts", "uniq/group"]
    rows = []
    for entry in [*results["models"].values(), *results["baselines"].values()]:
        rl = entry.get("rl") or {}
        metrics = entry["metrics"]
        rows.append([entry["label"], cell(metrics.get(f"hr@{k}")), cell(metrics.get(f"ndcg@{k}")),
                     *(cell(metrics.get(key)) for key in accept),
                     delta(entry, "hr"), delta(entry, "ndcg"), number(rl.get("gradient_prompt_fraction")),
                     number(rl.get("unique_items_per_group"))])
    return header, rows


def _footer(results: dict) -> str:
    ev = results["eval"]
    return (f"mean over seeds {ev['seeds']} ±sd over seeds [{ev['level']}% bootstrap over the same "
            f"{ev['num_examples']} {ev['split']} users]; Δ: paired difference (sign-flip p-value); "
            f"{results['budget']['rollouts']} rollouts per run")


def format_table(results: dict) -> str:
    """The results as a plain-text table (one row per model and reference ranker)."""
    header, rows = _rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([*lines, _footer(results)])


def markdown_table(results: dict) -> str:
    """The results as a Markdown table (as in docs/results)."""
    header, rows = _rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*lines, "", _footer(results)])


def metric_bars(results: dict, metrics=None):
    """Bars of HR/NDCG at table_k per model and reference ranker, whiskers = the bootstrap interval."""
    from riser_lite.teach import viz

    k = results["config"]["table_k"]
    metrics = metrics or (f"hr@{k}", f"ndcg@{k}")
    entries = [*results["models"].values(), *results["baselines"].values()]
    return viz.metrics_bars({e["label"]: {m: (e["metrics"][m]["value"], e["metrics"][m]["lo"],
                                              e["metrics"][m]["hi"]) for m in metrics} for e in entries})


def mean_records(runs: list[list[dict]]) -> list[dict]:
    """Step-wise mean of several runs' metric records (numeric keys present in every run at that step)."""
    steps = sorted(set.intersection(*({r["step"] for r in records} for records in runs)))
    by_step = [{r["step"]: r for r in records} for records in runs]
    out = []
    for step in steps:
        rows = [records[step] for records in by_step]
        numeric = [{k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                   for row in rows]
        common = set.intersection(*(set(row) for row in numeric))
        out.append({k: v for k, v in mean_dict(numeric).items() if k in common})
    return out


def sample_efficiency(results: dict):
    """Prompts with a gradient (and learnable groups) against rollouts used, per variant (seed means)."""
    from riser_lite.runs import read_metrics
    from riser_lite.teach import viz

    records = {entry["label"]: mean_records([read_metrics(run["run"], stage="rl")
                                             for run in entry["seeds"].values()])
               for entry in results["models"].values() if "seeds" in entry}
    return viz.sample_efficiency(records)


# ---------------------------------------------------------------------------------------------- CLI


def add_compare_arguments(p) -> None:
    """The options of `riser-lite compare` (registered by `riser_lite.experiments.sweep`, with --lrs)."""
    p.add_argument("--quick", action="store_true", help="3 variants, 2 seeds, 8 steps, 100 test users")
    p.add_argument("--data", default="synthetic",
                   choices=["synthetic", "lastfm", "amazon-csv", "amazon-raw", "native"])
    p.add_argument("--path", default=None, help="dataset folder (default: the source's default)")
    p.add_argument("--sft-run", default=None, help="SFT run to start from (trained if absent)")
    p.add_argument("--items", default=None, choices=["title", "sid", "title+sid"],
                   help="items as titles or semantic IDs: a new SFT run's form (default title); an existing "
                        "--sft-run must match it (default: the run's own)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None, metavar="NAME",
                   help=f"variants among {', '.join(VARIANTS)} (default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="RL seeds")
    p.add_argument("--rl-steps", type=int, default=None, help="RL steps per run")
    p.add_argument("--prompt-users", choices=["all", "heldout"], default=None,
                   help="RL prompts from all training users (default) or only those the SFT run held out "
                        "(heldout: the SFT run must be trained with --rl-holdout)")
    p.add_argument("--rl-lr", type=float, default=None, help="RL learning rate (default 1e-4)")
    p.add_argument("--rl-eval-every", type=int, default=None,
                   help="validate during RL every this many steps (validation curves; default: never)")
    p.add_argument("--rl-eval-examples", type=int, default=None, help="validation examples of those checks")
    p.add_argument("--lambda-pair", type=float, default=None,
                   help="RISER's lambda, the pair-loss weight, for the variants with pairs (default 1)")
    p.add_argument("--beta-kl", type=float, default=None,
                   help="weight of the KL to the SFT reference for every RL variant (default 0)")
    p.add_argument("--eval-split", default="test", choices=["valid", "test"],
                   help="split of the final evaluation: valid to choose settings, test to report once")
    p.add_argument("--out", default="runs/compare", help="output folder (run folders, compare.json)")


def config_from_args(args) -> CompareConfig:
    # Each of these options is named as its CompareConfig field.
    names = ("sft_run", "rl_steps", "rl_lr", "rl_eval_every", "rl_eval_examples", "lambda_pair", "beta_kl",
             "eval_split", "prompt_users", "items")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.variants:
        overrides["variants"] = tuple(dict.fromkeys(args.variants))
    if args.seeds:
        overrides["seeds"] = tuple(dict.fromkeys(args.seeds))
    overrides.update(data=args.data, path=args.path, progress=sys.stderr.isatty())  # bars on a terminal only
    return CompareConfig.quick(**overrides) if args.quick else CompareConfig(**overrides)
