"""Experiments: GRPO, ReRe-style, RISER and RISER's ablations over several seeds, with paired tests.

    riser-lite compare --quick                       # 3 variants x 2 seeds, short runs
    riser-lite compare --variants grpo riser --seeds 0 1 2 --rl-steps 30 --out runs/compare

Every variant starts from the same SFT run (trained first if ``--sft-run`` holds none) and draws the same
number of candidates per prompt for the same prompts per step and steps: the same rollout budget. Each
(variant, seed) is trained into ``<out>/<variant>/seed<k>`` and evaluated on the same first users with
trie-constrained beam search; the evaluation is saved beside the run (``eval_compare.json``, with per-user
ranks), so a later compare with the same settings reuses it, and an interrupted one loses at most the run
it was in (which resumes from its last checkpoint).

Statistics, per metric column (HR@K, NDCG@K, the acceptance of the policy's one recommendation and, on
synthetic data, their expected values under the true next-item distributions):

- value: the mean over seeds; interval: a percentile bootstrap over users of the seed-averaged per-user
  metric; ``seed_sd``: the standard deviation of the per-seed values (training noise).
- paired tests against GRPO and SFT (an ablation also against full RISER): per user, the seed-averaged
  difference; its mean, a paired-bootstrap interval and a sign-flip permutation p-value.

``compare.json`` in ``out`` holds everything (JSON, no pickle); `format_table` prints it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from riser_lite.eval.metrics import mean_dict, mean_of, metric_columns, paired_test, summarize_values
from riser_lite.rl.config import RLConfig
from riser_lite.runs import DEFAULT_THREADS, RunError, json_round_trip

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


def for_split(name: str, split: str) -> str:
    """EVAL_FILE or RESULTS_FILE as named for `split`: itself for test, ``<stem>_<split>.json`` otherwise."""
    return name if split == "test" else name.replace(".json", f"_{split}.json")


@dataclass
class CompareConfig:
    """Sizes of a comparison: `CompareConfig()` the full one, `.quick()` a short one, `.demo()` the demo's."""

    data: str = "synthetic"  # dataset source for `riser_lite.data.load_dataset`
    path: str | None = None  # dataset folder (None: the SFT run's, else the source's default)
    sft_run: str = "runs/sft"  # SFT run every variant starts from (trained here if missing)
    preset: str = "tiny"  # backbone preset of that SFT run when it is trained here
    sft_epochs: int | None = None  # epochs of that SFT run when it is trained here (None: SFTConfig's)
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
    eval_split: str = "test"  # split of the final evaluation ("valid" to choose settings)
    eval_examples: int | None = None  # first N users of that split (None: all); the same for every run
    num_beams: int = 20  # beams of the evaluation protocol (>= the largest K)
    ks: tuple[int, ...] = (1, 5, 10, 20)  # cut-offs of HR@K / NDCG@K
    table_k: int = 10  # K of the table and of the paired tests
    alpha: float = 0.05  # intervals cover 1 - alpha
    num_bootstrap: int = 2000  # bootstrap resamples of the users
    num_permutations: int = 10000  # random sign flips of the permutation test (exact when 2^n is fewer)
    # torch threads: fixed by default, since float sums (hence the numbers) depend on the thread count;
    # "auto" (or 0): chosen per stage by the machine's load, faster, but the numbers may then vary
    threads: int | str = 1
    progress: bool = True  # progress bars

    @classmethod
    def quick(cls, **overrides) -> CompareConfig:
        """Three variants, two seeds, short runs on 100 test users."""
        base = dict(variants=("grpo", "rere", "riser"), seeds=(0, 1), rl_steps=8, prompts_per_step=8,
                    eval_examples=100)
        return cls(**{**base, **overrides})

    @classmethod
    def demo(cls, quick: bool = False, **overrides) -> CompareConfig:
        """`riser-lite demo`: GRPO, ReRe-style and RISER, one seed, every test user, validation curves.

        RL learning rate 3e-4: it moves the policy visibly within 30 steps (token entropy, the acceptance
        of the sampled recommendation); 1e-4, which a validation choice prefers for 150-step runs
        (docs/results/synthetic_rl.md), barely moves it in 30. quick: a 2-epoch SFT, 8 RL steps of 8
        prompts, 100 test users (about 2 minutes on 2 cores).
        """
        base = dict(variants=("grpo", "rere", "riser"), seeds=(0,), rl_lr=3e-4, rl_eval_every=10)
        if quick:
            base.update(sft_epochs=2, rl_steps=8, prompts_per_step=8, rl_eval_every=4, rl_eval_examples=30,
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
        resolve_threads(self.threads)


def same_budget(config: RLConfig, draws_per_prompt: int) -> RLConfig:
    """A copy of ``config`` drawing exactly ``draws_per_prompt`` candidates per prompt (dedup mode keeps
    half of them, as the RISER preset does; other modes keep them all)."""
    if config.use_dedup:
        return replace(config, oversample=draws_per_prompt, group_size=max(1, draws_per_prompt // 2))
    return replace(config, group_size=draws_per_prompt)


def rl_config(variant: str, config: CompareConfig, seed: int):
    """The variant's RLConfig with the comparison's sizes, drawing exactly `draws_per_prompt` per prompt."""

    overrides = VARIANTS[variant] if variant != SFT_CONTINUED else {"algo": "grpo"}  # its prompts and updates
    extra = {}
    if config.lambda_pair is not None and RLConfig(**overrides).use_pairs:
        extra["lambda_pair"] = config.lambda_pair
    if config.beta_kl is not None and variant != SFT_CONTINUED:
        extra["beta_kl"] = config.beta_kl
    base = RLConfig(**overrides, **extra, steps=config.rl_steps, prompts_per_step=config.prompts_per_step,
                    prompt_users=config.prompt_users, lr=config.rl_lr, eval_every=config.rl_eval_every,
                    eval_examples=config.rl_eval_examples, seed=seed)
    return same_budget(base, config.draws_per_prompt)


def auto_threads(idle_threads: int, own_load: float = 0.0) -> int:
    """`idle_threads` on an idle machine, 1 when other processes keep the cores busy. `own_load` (this
    process's CPU seconds per wall second in its last stage) is not counted as others' load.

    [choice] Measured on 2 cores with the tiny backbone: idle, 2 threads make an SFT step 1.9x faster than
    1; under a load average of ~8, 4x slower.
    """
    try:
        load = os.getloadavg()[0]  # 1-minute load average (Unix)
    except (AttributeError, OSError):
        return idle_threads
    return 1 if load - own_load > (os.cpu_count() or 1) - 0.5 else idle_threads


def resolve_threads(threads: int | str | None) -> int | str:
    """An int >= 1, or "auto" (`auto_threads`, chosen per stage). None means `DEFAULT_THREADS` (the same
    seed gives the same numbers whatever the load); 0 means "auto"."""
    if threads is None:
        return DEFAULT_THREADS
    if threads in ("auto", 0) and not isinstance(threads, bool):
        return "auto"
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, 0 or 'auto', got {threads!r}")
    return threads


class StageTimer:
    """Wall time, process CPU time and torch thread count of named stages, in the order they ran.

    threads: a fixed count, or "auto" (0): `auto_threads` at the start of each stage, given this
    process's own load in the previous one. The CPU time is close to what a stage takes on an idle machine.
    """

    def __init__(self, threads: int | str):
        idle, fixed = torch.get_num_threads(), resolve_threads(threads)
        self._choose = (lambda own: auto_threads(idle, own)) if fixed == "auto" else (lambda own: fixed)
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.threads: dict[str, int] = {}
        self._own_load = 0.0

    @contextlib.contextmanager
    def __call__(self, name: str):
        torch.set_num_threads(self._choose(self._own_load))
        self.threads[name] = torch.get_num_threads()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            self.seconds[name] = self.seconds.get(name, 0.0) + wall
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + used
            self._own_load = used / wall if wall > 0 else 0.0

    @classmethod
    @contextlib.contextmanager
    def setting_threads(cls, threads: int | str):
        """A timer for one command; torch gets its own thread count back afterwards."""
        previous = torch.get_num_threads()
        try:
            yield cls(threads)
        finally:
            torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------- statistics


def rl_summary(records: list[dict]) -> dict:
    """What a run's RL metric records say about its sample efficiency (means over steps)."""
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


def user_columns(evaluation: dict, ks, distributions=None) -> dict[str, np.ndarray]:
    """Per-user metric columns of an evaluation dict, each [N]: hr@K, ndcg@K, the acceptance values it
    recorded and, given the users' true next-item distributions, expected_hr@K and expected_ndcg@K."""
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


def acceptance_keys(synthetic: bool) -> tuple[str, ...]:
    """The acceptance columns tested and shown: the exact expectations on synthetic data, else the realised
    sampled hit rate (greedy_hit realised equals HR@1 of the exact ranking, so it adds nothing there)."""
    return ("expected_sampled_hit", "expected_greedy_hit") if synthetic else ("sampled_hit",)


def aggregate(config: CompareConfig, sft_eval: dict, runs: dict, distributions=None) -> dict:
    """The "models" section of the results: SFT and every variant, seeds combined, paired tests.

    runs: {(variant, seed): {"run", "reused", "metrics", "rl" (`rl_summary`), "ranks", "top_items"}}.
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


# ---------------------------------------------------------------------------------------------- stages


def train_sft(config: CompareConfig) -> Path:
    """Train, resume or reuse `config.sft_run` with these settings (a run of other settings is refused)."""
    from riser_lab.sid import SIDConfig, build_semantic_ids
    from riser_lite.runs import dataset_spec, load_spec_dataset
    from riser_lite.sft import SFTConfig, run_sft

    epochs = {} if config.sft_epochs is None else {"epochs": config.sft_epochs}
    spec, items = dataset_spec(config.data, config.path), config.items or "title"
    sid_config = SIDConfig(seed=config.seed)
    sids = None if items == "title" else build_semantic_ids(load_spec_dataset(spec), sid_config)
    return run_sft(spec, preset=config.preset, config=SFTConfig(**epochs, progress=config.progress),
                   out=config.sft_run, seed=config.seed, items=items, sids=sids)


def load_sft(config: CompareConfig):
    """(Run, data spec) of `config.sft_run`, trained first (`train_sft`) if it holds no finished run."""
    from riser_lite.runs import load_run, read_json
    from riser_lite.sft import STAGE

    folder = Path(config.sft_run)
    saved = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    if STAGE not in saved.get("results", {}):
        train_sft(config)
    run = load_run(folder)
    recorded = run.config.get("data") or {}
    same_path = config.path is None or (recorded.get("path") is not None
                                        and Path(recorded["path"]).resolve() == Path(config.path).resolve())
    if recorded.get("source") != config.data or not same_path or recorded.get("seed", 0) != 0:
        raise RunError(f"SFT run {folder} was trained on data {recorded}, not on {config.data!r} at "
                       f"{config.path!r}; pass the matching --data/--path or another --sft-run")
    form = (recorded.get("items") or {}).get("form", "title")
    if config.items is not None and config.items != form:
        raise RunError(f"SFT run {folder} writes items as {form!r}, not {config.items!r}; pass --items "
                       f"{form} or another --sft-run")
    return run, recorded


def _fingerprint(sft) -> dict:
    """What identifies the SFT model a run started from (a retrained SFT run makes old RL runs stale)."""
    return json_round_trip({key: sft.config.get(key) for key in ("backbone", "data", "seed", "results")})


def _saved_evaluation(folder: Path, meta: dict) -> tuple[dict | None, bool]:
    """(the evaluation saved in `folder` with exactly these settings, split included, or None; whether the
    run of these settings finished there). A folder holding a run of other settings is refused (it would be
    resumed or reused wrongly). An evaluation of any split is written only after training, so one from the
    same start and RL config means a new split needs an evaluation, not a new run."""
    from riser_lite.runs import read_json

    recorded = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    if (recorded.get("rl") not in (None, meta["rl"])
            or (recorded.get("compare") or {}).get("start") not in (None, meta["start"])):
        raise RunError(f"{folder} holds an RL run of other settings or from another SFT model; "
                       "use another --out or delete that folder")
    saved = [read_json(path) for path in sorted(folder.glob("eval_compare*.json"))]
    same_run = [s for s in saved if s.get("start") == meta["start"] and s.get("rl") == meta["rl"]]
    same = next((s for s in same_run if s.get("config") == meta["config"]), None)
    return same, bool(same_run) and (folder / "model").is_dir()


def _evaluate(model, tokenizer, dataset, space, eval_config, meta: dict, folder: Path) -> dict:
    from riser_lite.eval.evaluate import evaluate
    from riser_lite.runs import own_entry, write_json

    result = evaluate(model, tokenizer, dataset, space, eval_config)
    users = [ex.user for ex in dataset.splits[eval_config.split][: result.num_examples]]
    saved = {**meta, "users": users, **result.to_dict()}
    write_json(own_entry(folder, for_split(EVAL_FILE, eval_config.split)), saved)
    return saved


def train_and_evaluate(variant: str, seed: int, config: CompareConfig, sft, dataset, spec: dict, space,
                       eval_config, out: Path) -> tuple[dict, list[dict], bool]:
    """(evaluation, metric records, reused) of one (variant, seed) run in ``out/<variant>/seed<seed>``."""
    from tqdm.auto import tqdm

    from riser_lite.rl.trainer import train_rl
    from riser_lite.runs import load_run, own_entry, read_metrics, update_config

    folder = own_entry(out / variant, f"seed{seed}", "compare")
    rl, start = rl_config(variant, config, seed), _fingerprint(sft)
    meta = {"start": start, "rl": json_round_trip(asdict(rl)), "config": json_round_trip(asdict(eval_config))}
    saved, finished = _saved_evaluation(folder, meta)
    if saved is None and finished:  # trained before, evaluated now on another split
        saved = _evaluate(load_run(folder).model, sft.tokenizer, dataset, space, eval_config, meta, folder)
    if saved is not None:
        return saved, read_metrics(folder, stage="rl"), True
    update_config(folder, compare={"variant": variant, "start": start})
    bar = tqdm(total=rl.steps, desc=f"RL {variant} seed {seed}", disable=not config.progress, leave=False,
               dynamic_ncols=True)
    start_config = {**sft.config, "start_run": str(sft.path)}  # where prompt_users="heldout" reads the split
    try:
        if variant == SFT_CONTINUED:
            model, records = continue_sft(copy.deepcopy(sft.model), sft.tokenizer, dataset, rl, folder,
                                          on_step=lambda record: bar.update(1), start_config=start_config)
        else:
            start_model = (copy.deepcopy(sft.model), sft.tokenizer, dataset, start_config)
            result = train_rl(start_model, rl, out=folder, on_step=lambda record: bar.update(1))
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
    (the same (seed, step) draw as `rl.trainer.train_rl`, ``rl.prompt_users`` included: the held-out users
    are read from `start_config`, the SFT run's config), for as many AdamW steps (μ per step, lr ``rl.lr``).

    Returns (model, records); records carry step, loss and time_s and go to ``folder/metrics.jsonl``.
    """
    from riser_lite.rl.trainer import prompt_examples, step_seed
    from riser_lite.runs import METRICS_FILE, MetricsLog, save_run, trainable_parameters
    from riser_lite.sft import collate, encode_examples, sft_step

    train = prompt_examples(dataset, start_config or {}, rl.prompt_users)
    pad = int(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=rl.lr, weight_decay=0.0)
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
    "rl" (mean over seeds of `rl_summary`), "seeds": {seed: {"run", "metrics", "rl", "ranks", "reused"}}}},
    "baselines": {"popularity", "prompt_oracle" and "oracle" (synthetic)}, "stages", "stages_cpu",
    "threads", "total_seconds"}. Columns: hr@K, ndcg@K, sampled_hit, greedy_hit and, on synthetic data,
    expected_hr@K, expected_ndcg@K, expected_sampled_hit, expected_greedy_hit.
    """
    from riser_lite.runs import check_outputs, claim_outputs, write_json

    config = config or CompareConfig()
    config.validate()
    results_file = for_split(RESULTS_FILE, config.eval_split)
    # checked now, claimed once the SFT run is loaded (a refused start leaves no folder behind)
    out = check_outputs(out, "compare", [results_file, "sft", *config.variants])
    start = time.perf_counter()
    with StageTimer.setting_threads(config.threads) as timer:
        with timer("sft"):
            sft, spec = load_sft(config)
        claim_outputs(out, "compare", [results_file, "sft", *config.variants])
        results = compare_from(sft, spec, config, out, log, timer, start)
    write_json(out / results_file, results)
    log(f"wrote {out / results_file}")
    return results


def compare_from(sft, spec: dict, config: CompareConfig, out: Path, log, timer: StageTimer,
                 start: float) -> dict:
    """Every (variant, seed) from the loaded SFT run, into the claimed folder `out`: the results dict."""
    from riser_lite.eval.evaluate import EvalConfig
    from riser_lite.items.catalog import ItemSpace
    from riser_lite.runs import load_run_dataset

    with timer("data"):
        dataset = load_run_dataset(sft)  # items in the SFT run's form (semantic IDs: its very codes)
    space = ItemSpace(dataset.catalog, sft.tokenizer)
    eval_config = EvalConfig(split=config.eval_split, protocol="beam", num_beams=config.num_beams,
                             ks=config.ks, max_examples=config.eval_examples,
                             num_bootstrap=config.num_bootstrap, alpha=config.alpha, seed=config.seed,
                             acceptance=True)
    with timer("eval sft"):
        meta = {"start": _fingerprint(sft), "rl": None, "config": json_round_trip(asdict(eval_config))}
        sft_eval = (_saved_evaluation(out / "sft", meta)[0]
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
            k, fraction = config.table_k, runs[variant, seed]["rl"]["gradient_prompt_fraction"]
            log(f"{variant} seed {seed}{' (reused)' if reused else ''}: "
                f"HR@{k} {runs[variant, seed]['metrics'][f'hr@{k}']:.3f}"
                + (f", prompts with a gradient {fraction:.2f}" if fraction is not None else ""))
    oracle = getattr(dataset, "oracle", None)
    distributions = oracle[config.eval_split][: sft_eval["num_examples"]] if oracle else None
    models = aggregate(config, sft_eval, runs, distributions)
    models["sft"].update(run=str(sft.path), ranks=sft_eval["ranks"])
    return _results(config, spec, dataset, sft_eval, models, timer, start)


def _results(config, spec, dataset, sft_eval: dict, models: dict, timer: StageTimer, start: float) -> dict:
    baselines = {name: _baseline_entry(name, entry) for name, entry in sft_eval["baselines"].items()
                 if name in REFERENCES}
    return json_round_trip({
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
        "stages_cpu": dict(timer.cpu_seconds), "threads": dict(timer.threads),
        "total_seconds": time.perf_counter() - start,
    })


def _baseline_entry(name: str, evaluated: dict) -> dict:
    """A reference ranker's row: its expected HR/NDCG and the oracles' acceptance (their sampled or most
    probable item) go into its metrics under the models' column names."""
    expected = {**(evaluated.get("expected") or {}), **(evaluated.get("expected_acceptance") or {})}
    return {"label": LABELS[name],
            "metrics": {**evaluated["summaries"], **{f"expected_{k}": v for k, v in expected.items()}}}


# ---------------------------------------------------------------------------------------------- output


ACCEPTANCE_HEADERS = {"expected_sampled_hit": "E[accept] sampled", "expected_greedy_hit": "E[accept] greedy",
                      "sampled_hit": "sampled hit"}


def text_cell(summary: dict | None) -> str:
    """'value ±seed sd [lo, hi]' (the sd with several seeds only), or '-'."""
    if not summary:
        return "-"
    sd = f" ±{summary['seed_sd']:.3f}" if len(summary.get("per_seed", ())) > 1 else ""
    return f"{summary['value']:.3f}{sd} [{summary['lo']:.3f}, {summary['hi']:.3f}]"


def table_rows(results: dict, cell=text_cell) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the results table: the models, then the reference rankers. `cell` formats a metric
    summary; E[HR@K] (expected under the true next-item distributions) shows on synthetic data only."""
    k = results["config"]["table_k"]

    def delta(entry, metric):
        test = (entry.get("paired") or {}).get("grpo", {}).get(f"{metric}@{k}")
        return "-" if test is None else f"{test['diff']:+.3f} (p={test['p_value']:.2f})"

    def number(value):
        return "-" if value is None else f"{value:.2f}"

    sft = results["models"]["sft"]["metrics"]
    synthetic = f"expected_hr@{k}" in sft
    expected = [f"expected_hr@{k}"] if synthetic else []
    accept = [key for key in acceptance_keys(synthetic) if key in sft]
    shown = [f"hr@{k}", f"ndcg@{k}", *expected, *accept]
    header = ["model", f"HR@{k}", f"NDCG@{k}", *(f"E[HR@{k}]" for _ in expected),
              *(ACCEPTANCE_HEADERS[key] for key in accept),
              f"ΔHR@{k} vs GRPO", f"ΔNDCG@{k} vs GRPO", "grad-prompts", "uniq/group"]
    rows = []
    for entry in [*results["models"].values(), *results["baselines"].values()]:
        rl = entry.get("rl") or {}
        rows.append([entry["label"], *(cell(entry["metrics"].get(key)) for key in shown),
                     delta(entry, "hr"), delta(entry, "ndcg"), number(rl.get("gradient_prompt_fraction")),
                     number(rl.get("unique_items_per_group"))])
    return header, rows


def format_table(results: dict) -> str:
    """The results as a plain-text table (one row per model and reference ranker)."""
    header, rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    ev = results["eval"]
    lines.append(f"mean over seeds {ev['seeds']} ±sd over seeds [{ev['level']}% bootstrap over the same "
                 f"{ev['num_examples']} {ev['split']} users]; Δ: paired difference (sign-flip p-value); "
                 f"{results['budget']['rollouts']} rollouts per run")
    return "\n".join(lines)


def metric_bars(results: dict):
    """Bars of HR/NDCG at table_k per model and reference ranker, whiskers = the bootstrap interval."""
    from riser_lite.teach import viz

    k = results["config"]["table_k"]
    entries = [*results["models"].values(), *results["baselines"].values()]
    return viz.summary_bars({e["label"]: e["metrics"] for e in entries}, (f"hr@{k}", f"ndcg@{k}"))


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


def model_records(results: dict) -> dict[str, list[dict]]:
    """Each trained model's RL metric records, mean over its seeds, by label."""
    from riser_lite.runs import read_metrics

    return {entry["label"]: mean_records([read_metrics(run["run"], stage="rl")
                                          for run in entry["seeds"].values()])
            for entry in results["models"].values() if "seeds" in entry}


def sample_efficiency(results: dict):
    """Prompts with a gradient (and learnable groups) against rollouts used, per variant (seed means)."""
    from riser_lite.teach import viz

    return viz.sample_efficiency(model_records(results))
