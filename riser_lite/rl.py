"""The RL trainer: GRPO, ReRe-style and RISER, one loop readable top to bottom.

Each step: draw P training examples, roll out a group of candidate items per prompt with the current
policy, reward them, compute group-relative advantages, send learnable groups to GRPO and (RISER) turn the
non-learnable ones into preference pairs, then take μ inner epochs × minibatches of AdamW steps on the
clipped token-level loss. One JSON record per step goes to ``<out>/metrics.jsonl``.

Algorithms (``RLConfig.algo``) are presets of the same switches; every switch can be flipped on its own:

===========  ==============  ======  ============  =============  ======================
algo         rollouts        reward  pairs         token weights  draws per prompt
===========  ==============  ======  ============  =============  ======================
``grpo``     sample (G=16)   hit     no            uniform        16
``rere``     beam (G=16)     rank    no            uniform        16 (beams)
``riser``    dedup (8 of 16) hit     SimPO, λ = 1  certainty d    16
===========  ==============  ======  ============  =============  ======================

**Rollout budget [choice].** ``rollouts_used`` counts candidates the model *generated*: P × draws per step,
where draws = G for sampling and beam search and m (the oversampled draws) for RISER's dedup mode. The
presets draw the same 16 candidates per prompt, so at equal steps every algorithm has had the same budget.

**Clipping [choice].** Token-level PPO clipping (ε_low = ε_high = 0.2) acts only from the second gradient
step on the same rollouts, so ``inner_epochs`` μ defaults to 2; ``use_clipping=False`` gives the plain
ratio·A surrogate. Dropout stays off during RL (the model is kept in eval mode) so that the first ratio is
exactly 1 up to float rounding.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from riser_lite.catalog import ItemSpace
from riser_lite.rl_batch import add_reference, collect_step, minibatch_loss
from riser_lite.rollout import RolloutConfig, rollout_stats
from riser_lite.runs import (
    METRICS_FILE,
    Checkpoint,
    MetricsLog,
    clear_checkpoints,
    load_checkpoint,
    load_run,
    read_metrics,
    save_checkpoint,
    save_run,
    truncate_metrics,
    update_config,
)

ALGOS = ("grpo", "rere", "riser")
STAGE = "rl"
# Per-algorithm values of the switches left at None in RLConfig.
ALGO_PRESETS: dict[str, dict] = {
    "grpo": {"group_size": 16, "rollout_mode": "sample", "use_dedup": False, "reward": "hit",
             "use_pairs": False, "use_certainty_weights": False},
    "rere": {"group_size": 16, "rollout_mode": "beam", "use_dedup": False, "reward": "rank",
             "use_pairs": False, "use_certainty_weights": False},
    "riser": {"group_size": 8, "rollout_mode": "sample", "use_dedup": True, "reward": "hit",
              "use_pairs": True, "use_certainty_weights": True},
}


@dataclass
class RLConfig:
    """Everything an RL run depends on. Fields left at None take the value of the ``algo`` preset."""

    algo: str = "riser"  # "grpo" | "rere" | "riser": which preset fills the None fields below
    steps: int = 40  # RL steps (each: one batch of rollouts, then mu x minibatches optimizer steps)
    prompts_per_step: int = 16  # P: training examples drawn per step
    group_size: int | None = None  # G: rollouts kept per prompt (preset: riser 8, grpo/rere 16)
    oversample: int | None = None  # m: draws per prompt in dedup mode (None = 2 G)
    rollout_mode: str | None = None  # "sample" | "beam" | "unconstrained" (dedup is use_dedup on "sample")
    temperature: float = 1.0  # sampling temperature of the rollouts (log-probs are always at temperature 1)
    top_k: int = 0  # sample among the k most likely valid tokens; 0 = all
    reward: str | None = None  # "hit" (RISER, GRPO) | "rank" (ReRe: hit + rank penalty on wrong beams)
    lr: float = 1e-4  # AdamW learning rate (constant)
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping by global norm (the pre-clip norm is logged)
    inner_epochs: int = 2  # mu: passes over each step's rollouts; clipping only acts from the second
    minibatches: int = 1  # optimizer steps per pass (prompts split into this many minibatches)
    eps_low: float = 0.2  # clip ratio below 1 - eps_low (for A < 0)
    eps_high: float = 0.2  # clip ratio above 1 + eps_high (for A > 0); DAPO's clip-higher uses 0.28
    aggregation: str = "seq_mean"  # "seq_mean" (each rollout counts once) | "token_mean" (DAPO)
    beta_kl: float = 0.0  # weight of the k3 KL to the frozen SFT reference; 0 = no reference forward
    log_kl_ref: bool = False  # build the reference anyway and log kl_ref even when beta_kl = 0
    certainty_d: float = 0.3  # weight of trie-forced tokens when use_certainty_weights (1.0 = off)
    pair_loss: str = "simpo"  # "simpo" (reference-free) | "dpo" (reference = the SFT model)
    simpo_beta: float = 2.0  # SimPO beta (scale of the score difference)
    simpo_gamma: float = 0.5  # SimPO target margin gamma
    dpo_beta: float = 0.1  # DPO beta
    lambda_pair: float = 1.0  # lambda: weight of the pair loss against the GRPO loss
    kl_cov: bool = False  # add the KL-Cov penalty on the highest-covariance tokens
    kl_cov_frac: float = 2e-4  # fraction of tokens KL-Cov penalises
    kl_cov_coef: float = 1.0  # KL-Cov coefficient
    use_pairs: bool | None = None  # RISER: non-learnable no-hit groups become preference pairs
    use_dedup: bool | None = None  # RISER: oversample m draws and keep distinct items (needs "sample")
    use_certainty_weights: bool | None = None  # RISER: forced tokens weigh certainty_d in both branches
    use_clipping: bool = True  # token-level ratio clipping; False = plain ratio x A surrogate
    eval_every: int = 20  # validation HR/NDCG every this many steps and at the end; 0 = never
    eval_examples: int = 100  # validation examples evaluated (the first ones of the split: cheap and fixed)
    eval_split: str = "valid"  # split used for the periodic validation
    eval_ks: tuple[int, ...] = (1, 5, 10, 20)  # cut-offs of HR@K / NDCG@K
    eval_protocol: str = "beam"  # "beam" (constrained beam search, max(eval_ks) beams) | "exact"
    checkpoint_every: int = 20  # save the model and resume state every this many steps (and at the end)
    seed: int = 0  # seeds prompt sampling, rollouts and minibatch order (everything is derived from it)
    lora: bool = False  # train LoRA adapters instead of all weights
    lora_r: int = 8  # LoRA rank
    lora_alpha: float = 16.0  # LoRA alpha
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", ...
    extra: dict = field(default_factory=dict)  # free-form notes stored with the run (e.g. experiment name)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        for key, value in ALGO_PRESETS[self.algo].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.eval_ks = tuple(int(k) for k in self.eval_ks)
        checks = [
            (self.rollout_mode in ("sample", "beam", "unconstrained"),
             f"rollout_mode must be 'sample', 'beam' or 'unconstrained', got {self.rollout_mode!r}"),
            (not self.use_dedup or self.rollout_mode == "sample",
             f"use_dedup needs rollout_mode 'sample', got {self.rollout_mode!r}"),
            (self.reward in ("hit", "rank"), f"reward must be 'hit' or 'rank', got {self.reward!r}"),
            (self.pair_loss in ("simpo", "dpo"),
             f"pair_loss must be 'simpo' or 'dpo', got {self.pair_loss!r}"),
            (self.aggregation in ("seq_mean", "token_mean"),
             f"aggregation must be 'seq_mean' or 'token_mean', got {self.aggregation!r}"),
            (self.steps >= 1 and self.prompts_per_step >= 1 and self.group_size >= 1,
             "steps, prompts_per_step and group_size must be >= 1"),
            (self.inner_epochs >= 1 and 1 <= self.minibatches <= self.prompts_per_step,
             "need inner_epochs >= 1 and 1 <= minibatches <= prompts_per_step"),
            (0.0 <= self.certainty_d <= 1.0, f"certainty_d must be in [0, 1], got {self.certainty_d}"),
            (self.beta_kl >= 0 and self.lr > 0, "need beta_kl >= 0 and lr > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, data: dict) -> RLConfig:
        """The config back from ``asdict`` / JSON (unknown keys are an error, naming them)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown RLConfig fields {unknown}")
        return cls(**data)

    def rollout_config(self, step_seed: int) -> RolloutConfig:
        mode = "dedup" if self.use_dedup else self.rollout_mode
        return RolloutConfig(mode=mode, group_size=self.group_size, oversample=self.oversample,
                             temperature=self.temperature, top_k=self.top_k, seed=step_seed)

    def draws_per_prompt(self) -> int:
        """Candidates generated per prompt: the rollout budget unit (see the module docstring)."""
        return self.rollout_config(0).draws()

    def needs_reference(self) -> bool:
        return self.beta_kl > 0 or self.log_kl_ref or (self.use_pairs and self.pair_loss == "dpo")


def same_budget(config: RLConfig, draws_per_prompt: int) -> RLConfig:
    """A copy of ``config`` drawing exactly ``draws_per_prompt`` candidates per prompt (dedup mode keeps
    half of them, as the RISER preset does; other modes keep them all)."""
    if config.use_dedup:
        return RLConfig.from_dict({**asdict(config), "oversample": draws_per_prompt,
                                   "group_size": max(1, draws_per_prompt // 2)})
    return RLConfig.from_dict({**asdict(config), "group_size": draws_per_prompt})


@dataclass
class RLResult:
    """What `train_rl` returns."""

    model: object  # the trained policy (eval mode)
    tokenizer: object  # its tokenizer
    item_space: ItemSpace  # the catalogue's trie and response ids for that tokenizer
    records: list[dict]  # every metrics record of the run (including resumed steps)
    out: Path | None  # run folder
    reference: object | None  # the frozen SFT copy, when one was built


# ----------------------------------------------------------------------------------------------- helpers

def _seed_for(*keys: int) -> int:
    """A 63-bit seed derived from (run seed, step, purpose): every step's randomness is independent of
    how the run got there, which makes resuming exact without saving RNG states."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


def _load_start(start):
    """(model, tokenizer, dataset, run config or {}) from an SFT run folder, a Run, or a tuple."""
    if isinstance(start, tuple):
        model, tokenizer, dataset = start
        return model, tokenizer, dataset, {}
    from riser_lite.runs import load_run_dataset

    run = start if hasattr(start, "model") else load_run(start)
    return run.model, run.tokenizer, load_run_dataset(run), {**run.config, "start_run": str(run.path)}


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _validate(model, tokenizer, dataset, item_space, config: RLConfig) -> dict[str, float]:
    from riser_lite.evaluate import EvalConfig, evaluate

    eval_config = EvalConfig(split=config.eval_split, protocol=config.eval_protocol, ks=config.eval_ks,
                             num_beams=max(config.eval_ks), max_examples=config.eval_examples,
                             num_bootstrap=100, baselines=False, seed=config.seed)
    result = evaluate(model, tokenizer, dataset, item_space, eval_config)
    out = {f"val_{key}": value for key, value in result.metrics.items()}
    if result.expected:  # synthetic data: the same lists scored under the true next-item distributions
        out.update({f"val_expected_{key}": s["value"] for key, s in result.expected.items()})
    return out


def _mean_info(infos: list[dict]) -> dict[str, float | None]:
    keys = dict.fromkeys(k for info in infos for k in info)
    out = {}
    for key in keys:
        values = [info[key] for info in infos if info.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


# ----------------------------------------------------------------------------------------------- training

def train_rl(start, config: RLConfig | None = None, out: str | Path | None = None,
             on_step: Callable[[dict], None] | None = None, resume: bool = True) -> RLResult:
    """Train a policy with GRPO / ReRe / RISER from an SFT model.

    Args:
        start: an SFT run folder (or `riser_lite.runs.Run`), or a (model, tokenizer, dataset) tuple
            (the tuple's model is trained in place; the reference, when needed, is copied first).
        config: an `RLConfig` (default: RISER preset).
        out: run folder for metrics, checkpoints and the final model; None = keep nothing on disk.
        on_step: called with each step's metrics record (e.g. a live dashboard's update).
        resume: continue from the newest checkpoint in ``out`` if it has one with the same config.
    Returns:
        `RLResult` (the model stays in memory; ``out/model`` holds it too when ``out`` is given).
    """
    config = config or RLConfig()
    model, tokenizer, dataset, start_config = _load_start(start)
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()  # eval mode throughout: no dropout, so rollout and training log-probs agree
    item_space = ItemSpace(dataset.catalog, tokenizer)
    train = dataset.splits["train"]
    if len(train) < config.prompts_per_step:
        raise ValueError(f"prompts_per_step={config.prompts_per_step} exceeds the {len(train)} "
                         "train examples")

    reference = None
    if config.needs_reference():  # a frozen copy of the starting (SFT) weights
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    if config.lora:
        from riser_lite.backbone import add_lora

        model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha).eval()
    params = _trainable(model)
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay)

    step0, rollouts_used, elapsed0, records = 0, 0, 0.0, []
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            clear_checkpoints(out, STAGE)
        ckpt = load_checkpoint(out, STAGE)
        if ckpt is not None and ckpt.meta.get("config") != json.loads(json.dumps(asdict(config))):
            raise ValueError(f"{out} holds a checkpoint of a different RL config; use another folder or "
                             "resume=False to start over")
        if ckpt is not None:
            with torch.no_grad():
                for name, tensor in ckpt.tensors["weights"].items():
                    params[name].copy_(tensor)
            optimizer.load_state_dict(ckpt.objects["optimizer"])
            step0, rollouts_used, elapsed0 = ckpt.step, ckpt.meta["rollouts_used"], ckpt.meta["elapsed"]
        truncate_metrics(out / METRICS_FILE, STAGE, after_step=step0)  # steps after it are redone
        records = read_metrics(out, stage=STAGE)
        update_config(out, data=start_config.get("data"), backbone=start_config.get("backbone"),
                      start_run=start_config.get("start_run"), rl=asdict(config))
    log = MetricsLog(out / METRICS_FILE) if out is not None else None
    t_start = time.perf_counter() - elapsed0

    for step in range(step0 + 1, config.steps + 1):
        t_step = time.perf_counter()
        # 1. P training examples, drawn afresh each step from (seed, step); prompts from the one template
        # (riser_lite.prompts.example_prompt) with the dataset's titles, exactly as in SFT and evaluation.
        rng = np.random.default_rng(_seed_for(config.seed, step, 0))
        examples = [train[i] for i in rng.choice(len(train), config.prompts_per_step, replace=False)]
        data = collect_step(model, item_space, examples, dataset.catalog, dataset.max_history, config,
                            seed=_seed_for(config.seed, step, 1))
        # 2-3. happen inside: rollouts with the current policy (no grad), rewards, group-relative advantages,
        # then learnable groups -> GRPO and (RISER) non-learnable no-hit groups -> preference pairs.
        batch, groups = data.batch, data.groups
        rollouts_used += groups.num_prompts * groups.num_samples_drawn
        if reference is not None:
            add_reference(batch, reference)

        # 4. mu inner epochs x minibatches of clipped updates on the same rollouts.
        infos = []
        order_gen = torch.Generator().manual_seed(_seed_for(config.seed, step, 2))
        for epoch in range(config.inner_epochs):
            order = torch.randperm(config.prompts_per_step, generator=order_gen)
            for chunk in order.tensor_split(config.minibatches):
                loss, info = minibatch_loss(model, batch.subset(chunk), config, with_entropy=epoch == 0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params.values(), config.max_grad_norm)
                info["grad_norm"] = float(norm)  # before clipping
                optimizer.step()
                infos.append(info)
        update = _mean_info(infos)

        # 5. One metrics record per step.
        stats = rollout_stats(groups, data.targets, config.reward)
        converted = int(data.pair_info["groups_converted"])
        record = {
            "stage": STAGE, "step": step, "algo": config.algo, "rollouts_used": int(rollouts_used),
            "learnable_fraction": float(data.learnable.float().mean()), "converted_groups": converted,
            "pairs": len(data.pairs),
            "gradient_prompt_fraction": (int(data.learnable.sum()) + converted) / config.prompts_per_step,
            **{k: stats[k] for k in ("unique_items_per_group", "hit_rate", "reward_mean", "reward_var",
                                     "duplicate_rate", "valid_rate", "group_prob_mass")},
            **{k: update[k] for k in ("clip_frac_low", "clip_frac_high", "approx_kl_old", "kl_ref", "entropy",
                                      "grad_norm", "loss", "loss_grpo", "loss_pair", "pair_margin",
                                      "pair_accuracy")},
            "lr": optimizer.param_groups[0]["lr"],
        }
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
            record.update(_validate(model, tokenizer, dataset, item_space, config))
        record["step_time_s"] = time.perf_counter() - t_step
        record["time_s"] = time.perf_counter() - t_start
        records.append(record)
        if log is not None:
            log.write(record)
            if step % max(config.checkpoint_every, 1) == 0 or step == config.steps:
                _save(out, model, tokenizer, optimizer, params, config, step, rollouts_used, record["time_s"])
        if on_step is not None:
            on_step(record)
    if log is not None:
        log.close()
    return RLResult(model=model, tokenizer=tokenizer, item_space=item_space, records=records, out=out,
                    reference=reference)


def _save(out: Path, model, tokenizer, optimizer, params, config, step, rollouts_used, elapsed) -> None:
    """The model (merged if LoRA) for later stages, then the resume state (trainable weights + AdamW)."""
    save_run(out, model, tokenizer, {"rl_progress": {"step": step, "rollouts_used": rollouts_used}})
    meta = {"rollouts_used": int(rollouts_used), "elapsed": float(elapsed),
            "config": json.loads(json.dumps(asdict(config)))}
    weights = {name: p.detach().clone() for name, p in params.items()}
    save_checkpoint(out, STAGE, Checkpoint(step=step, tensors={"weights": weights},
                                           objects={"optimizer": optimizer.state_dict()}, meta=meta))


# ----------------------------------------------------------------------------------------------- CLI

def add_cli(subparsers) -> None:
    """`riser-lite rl`: RL from an SFT run."""
    p = subparsers.add_parser("rl", help="RL from an SFT run (GRPO, ReRe-style or RISER)")
    p.add_argument("--run", required=True, help="SFT run folder to start from (also the frozen reference)")
    p.add_argument("--out", required=True, help="run folder to write (resumed if it holds a checkpoint)")
    p.add_argument("--algo", choices=ALGOS, default="riser")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (P)")
    p.add_argument("--group-size", type=int, default=None, help="rollouts kept per prompt (G)")
    p.add_argument("--oversample", type=int, default=None, help="draws per prompt in dedup mode (m)")
    p.add_argument("--mu", type=int, default=None, help="inner epochs over each step's rollouts")
    p.add_argument("--minibatches", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--beta-kl", type=float, default=None)
    p.add_argument("--certainty-d", type=float, default=None)
    p.add_argument("--pair-loss", choices=("simpo", "dpo"), default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--no-pairs", action="store_true", help="ablation: no preference pairs")
    p.add_argument("--no-dedup", action="store_true", help="ablation: sample G with replacement")
    p.add_argument("--no-certainty", action="store_true", help="ablation: uniform token weights")
    p.add_argument("--no-clip", action="store_true", help="ablation: plain ratio x A surrogate")
    p.add_argument("--kl-cov", action="store_true", help="add the KL-Cov penalty")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON record per step and a JSON summary")
    p.set_defaults(func=_run_cli)


def config_from_args(args) -> RLConfig:
    """An RLConfig from parsed `riser-lite rl` arguments (unset options keep the algo preset)."""
    names = {"steps": "steps", "prompts": "prompts_per_step", "group_size": "group_size",
             "oversample": "oversample", "mu": "inner_epochs", "minibatches": "minibatches", "lr": "lr",
             "beta_kl": "beta_kl", "certainty_d": "certainty_d", "pair_loss": "pair_loss",
             "temperature": "temperature", "eval_every": "eval_every", "eval_examples": "eval_examples"}
    values = {name: getattr(args, arg) for arg, name in names.items() if getattr(args, arg) is not None}
    switches = {"use_pairs": args.no_pairs, "use_dedup": args.no_dedup,
                "use_certainty_weights": args.no_certainty, "use_clipping": args.no_clip}
    values.update({name: False for name, off in switches.items() if off})
    if args.no_dedup and args.algo == "riser" and "group_size" not in values:
        values["group_size"] = 16  # same budget: 16 draws, all kept
    return RLConfig(algo=args.algo, seed=args.seed, kl_cov=args.kl_cov, lora=args.lora, **values)


def _run_cli(args) -> int:
    config = config_from_args(args)

    def show(record: dict) -> None:
        if args.json:
            print(json.dumps(record), flush=True)
            return
        line = (f"step {record['step']:4d}  rollouts {record['rollouts_used']:6d}  "
                f"grad-prompts {record['gradient_prompt_fraction']:.2f}  hit {record['hit_rate']:.3f}  "
                f"loss {record['loss']:+.4f}  clip {record['clip_frac_low'] + record['clip_frac_high']:.3f}")
        if "val_hr@10" in record:
            line += f"  val HR@10 {record['val_hr@10']:.3f}  NDCG@10 {record['val_ndcg@10']:.3f}"
        print(line, flush=True)

    result = train_rl(args.run, config, args.out, on_step=show, resume=not args.no_resume)
    last = result.records[-1] if result.records else {}
    fractions = [r["gradient_prompt_fraction"] for r in result.records]
    summary = {"out": str(args.out), "algo": config.algo, "steps": last.get("step", 0),
               "rollouts_used": last.get("rollouts_used", 0),
               "gradient_prompt_fraction": float(np.mean(fractions)) if fractions else None,
               **{k: v for k, v in last.items() if k.startswith("val_")}}
    print(json.dumps(summary) if args.json else f"saved {args.out} ({summary['steps']} steps)")
    return 0
