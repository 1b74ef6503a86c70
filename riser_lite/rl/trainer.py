"""The RL trainer: GRPO, ReRe-style and RISER, one loop readable top to bottom.

Each step (``train_rl``'s loop, numbered as below):

1. draw P training examples and render their prompts (from every training user, or with
   ``RLConfig.prompt_users = "heldout"`` only from those the SFT start held out: `prompt_examples`);
2. roll out a group of candidate items per prompt with the current policy (no gradient);
3. reward them (once per step);
4. group-relative advantages, and which groups are learnable (once per step);
5. route learnable groups to GRPO and, for RISER, non-learnable no-hit groups to preference pairs, and lay
   both out as one table of sequences (`rl.batch.build_step_batch`);
6. μ inner epochs, each one AdamW step on L = L_GRPO + λ·L_pair over the step (`rl.batch.minibatch_loss`);
7. one JSON record to ``<out>/metrics.jsonl``: the losses' own info names, averaged over the updates,
   beside the rollout statistics (every key is documented in `rl.config.METRICS`).

Steps 1-5 are `collect_step`, 6 is `update_policy`, 7 is `step_record`.

Algorithms (``RLConfig.algo``) are presets of the same switches; the rollouts and the reward follow the
algo, every other switch can be flipped on its own:

===========  ==============  ======  ============  =============  ======================
algo         rollouts        reward  pairs         token weights  draws per prompt
===========  ==============  ======  ============  =============  ======================
``grpo``     sample (G=16)   hit     no            uniform        16
``rere``     beam (G=16)     rank    no            uniform        16 (beams)
``riser``    dedup (8 of 16) hit     SimPO, λ = 1  certainty d    16
===========  ==============  ======  ============  =============  ======================

**Policy [choice].** ``RLConfig.policy = "constrained"`` (default) trains the policy that is sampled:
log-probs renormalised over the tokens the item trie allows (`model.forward`), the policy evaluation ranks
by too. ``"raw"`` trains the full-vocabulary softmax while sampling under the trie; pushing a wrong title
down can then move mass onto tokens the trie never allows (the ``valid_mass`` column shows it).

**Rollout budget [choice].** ``rollouts_used`` counts generated candidates: P × draws per step (G, or m
for RISER's dedup). The presets draw 16 per prompt, so at equal steps every algorithm had the same budget.

**Clipping [choice].** Token-level PPO clipping (ε_low = ε_high = 0.2) acts only from the second update on
the same rollouts, so μ (``inner_epochs``) defaults to 2. The model stays in eval mode (no dropout), so the
first ratio is exactly 1 up to float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from riser_lite import distributed
from riser_lite.data.holdout import split_rl_holdout
from riser_lite.data.types import DataError
from riser_lite.eval.evaluate import EvalConfig, evaluate
from riser_lite.eval.metrics import mean_dict
from riser_lite.items.catalog import ItemSpace
from riser_lite.rl.advantages import group_advantages, learnable_groups
from riser_lite.rl.batch import StepBatch, add_reference, build_step_batch, optimizer_step
from riser_lite.rl.config import EVAL_KS, LORA_ALPHA, LORA_R, RLConfig
from riser_lite.rl.pairs import PreferencePair, route_groups
from riser_lite.rl.rewards import compute_rewards, rollout_stats
from riser_lite.rl.rollout import Groups, concat_groups, encode_example_prompts, rollout
from riser_lite.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    Checkpoint,
    MetricsLog,
    RunError,
    check_checkpoint_step,
    check_finite,
    check_rl_output,
    clear_checkpoints,
    lineage_of,
    load_checkpoint,
    load_parameters,
    load_run,
    load_run_dataset,
    read_config,
    read_metrics,
    save_checkpoint,
    save_run,
    trainable_parameters,
    truncate_metrics,
    update_config,
    writer_lock,
)

STAGE = "rl"

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

def step_seed(*keys: int) -> int:
    """A 63-bit seed derived from (run seed, step, purpose): every step's randomness is independent of
    how the run got there, which makes resuming exact without saving RNG states."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


def _load_start(start, allow_rl_start: bool = False):
    """(model, tokenizer, dataset, run config or {}, lineage or None) of `train_rl`'s ``start``.

    A run folder's lineage (`riser_lite.runs.lineage_of`, which refuses an RL start unless allowed) is
    what the output folder records, and what a resume must match.
    """
    if isinstance(start, tuple):
        model, tokenizer, dataset, *config = start
        return model, tokenizer, dataset, dict(config[0]) if config else {}, None
    run = start if hasattr(start, "model") else load_run(start)
    lineage = lineage_of(run, allow_rl_start)
    return (run.model, run.tokenizer, load_run_dataset(run), {**run.config, "start_run": str(run.path)},
            lineage)


def prompt_examples(dataset, start_config: dict, prompt_users: str = "all") -> list:
    """The training examples RL draws its prompts from (`RLConfig.prompt_users`): all of them, or
    ("heldout") those of the users the SFT start held out, rebuilt by
    `riser_lite.data.holdout.split_rl_holdout` from the fraction and seed its config records under
    "rl_holdout". `RunError` if the start held out nobody or its split no longer matches its data."""
    train = dataset.splits["train"]
    if prompt_users == "all":
        return train
    where = start_config.get("start_run") or "the start model (give its run's config as the 4th element)"
    recorded = start_config.get("rl_holdout") or {}
    if not recorded.get("users_held_out"):
        raise RunError(f"prompt_users='heldout' (--prompt-users heldout) needs an SFT start trained with "
                       f"rl_holdout > 0 (--rl-holdout); {where} held out no training users")
    split = split_rl_holdout(train, recorded["fraction"], recorded["seed"])
    if split.record() != recorded:
        raise RunError(f"prompt_users='heldout': {where} records the held-out split {recorded}, but its "
                       f"training data now gives {split.record()}; the data changed since SFT")
    return split.held_out


def validation_metrics(model, tokenizer, dataset, item_space, config: RLConfig) -> dict[str, float]:
    """The periodic validation of a run ("val_*" keys; "val_expected_*" on synthetic data)."""
    eval_config = EvalConfig(split="valid", protocol="beam", ks=EVAL_KS,
                             num_beams=max(EVAL_KS), max_examples=config.eval_examples,
                             num_bootstrap=100, baselines=False, seed=config.seed)
    result = evaluate(model, tokenizer, dataset, item_space, eval_config)
    out = {f"val_{key}": value for key, value in result.metrics.items()}
    if result.expected:  # synthetic data: the same lists scored under the true next-item distributions
        out.update({f"val_expected_{key}": s["value"] for key, s in result.expected.items()})
    return out


# ----------------------------------------------------------------------------------------------- one step

@dataclass
class StepData:
    """Everything one RL step collected before its updates (also what the pair notebook inspects)."""

    examples: list  # the P training examples (riser_lite.data.types.Example)
    prompts: list[str]  # their prompt texts
    targets: Tensor  # [P] long target item ids
    groups: Groups  # the rollouts
    rewards: Tensor  # [P, G] float
    advantages: Tensor  # [P, G] float group-relative advantages (0 in non-learnable groups)
    learnable: Tensor  # [P] bool: reward variance > 0
    pairs: list[PreferencePair]  # preference pairs from non-learnable no-hit groups (empty without use_pairs)
    pair_info: dict  # counts from convert_groups_to_pairs (groups_converted = 0 without use_pairs)
    batch: StepBatch  # the sequence table the losses read


def collect_step(model, item_space, examples, catalog, max_history: int, config: RLConfig,
                 seed: int) -> StepData:
    """Steps 1-5: prompts, rollouts with the current policy (no grad), rewards, advantages, routing.

    catalog: item id -> title used in prompts (the dataset's, as SFT and evaluation use it);
    config: the run's ``RLConfig``; seed: the rollout seed.
    """
    # 1. Prompts from the one template, exactly as in SFT and evaluation.
    prompts, prompt_ids, prompt_mask, targets = encode_example_prompts(item_space.tokenizer, examples,
                                                                       catalog, max_history)
    # 2. A group of candidate items per prompt, under the trie.
    rank, world = distributed.rank_and_world()
    if world == 1:
        groups = rollout(model, item_space, prompt_ids, prompt_mask, config.rollout_config(seed))
    else:  # DDP: this process rolls out its share of the prompts, then every process holds all P groups
        mine = distributed.share(range(len(prompts)), rank, world)
        own = rollout(model, item_space, prompt_ids[mine], prompt_mask[mine],
                      config.rollout_config(step_seed(seed, rank)))
        groups = concat_groups(distributed.gather_by_index([(rank, own)]), item_space.tokenizer.pad_token_id)
    # 3. Rewards.
    rewards = compute_rewards(groups, targets, config.reward)
    # 4. Group-relative advantages; non-learnable groups (all rewards equal) get A = 0.
    learnable = learnable_groups(rewards)
    advantages, _ = group_advantages(rewards, learnable=learnable)
    # 5. Learnable groups -> GRPO; with pairs, non-learnable no-hit groups -> preference pairs.
    route = route_groups(groups.items, targets, rewards, learnable, use_pairs=config.use_pairs)
    batch = build_step_batch(groups, advantages, route, item_space, policy=config.policy,
                             certainty_d=config.certainty_d if config.use_certainty_weights else None)
    return StepData(examples=list(examples), prompts=prompts, targets=targets, groups=groups, rewards=rewards,
                    advantages=advantages, learnable=learnable, pairs=route.pairs, pair_info=route.info,
                    batch=batch)


def update_policy(model, optimizer, params: dict, batch: StepBatch, config: RLConfig, seed: int) -> dict:
    """Step 6: μ inner epochs of clipped updates on the same rollouts (one full-batch update each).

    Returns the losses' info averaged over the updates (entropy and valid mass from the first epoch, whose
    log-probs are those of the policy that drew the rollouts).
    """
    infos = []
    order_gen = torch.Generator().manual_seed(seed)
    for epoch in range(config.inner_epochs):
        # the prompts in a seeded order (the order rows are summed in, so the numbers replay exactly)
        order = torch.randperm(config.prompts_per_step, generator=order_gen)
        infos.append(optimizer_step(model, optimizer, list(params.values()), batch.subset(order), config,
                                    with_entropy=epoch == 0))
    return mean_dict(infos)


def step_record(step: int, config: RLConfig, data: StepData, update: dict, rollouts_used: int) -> dict:
    """Step 7: the step's metrics record (rollout statistics, then the updates' mean loss info)."""
    stats = rollout_stats(data.groups, data.targets, rewards=data.rewards)
    converted = int(data.pair_info["groups_converted"])
    return {
        "stage": STAGE, "step": step, "algo": config.algo, "policy": config.policy,
        "rollouts_used": int(rollouts_used), "learnable_fraction": float(data.learnable.float().mean()),
        "converted_groups": converted, "pairs": len(data.pairs),
        "gradient_prompt_fraction": (int(data.learnable.sum()) + converted) / config.prompts_per_step,
        **{k: stats[k] for k in ("unique_items_per_group", "hit_rate", "reward_mean", "reward_var",
                                 "duplicate_rate", "valid_rate", "group_prob_mass")},
        **update,
    }


# ----------------------------------------------------------------------------------------------- training

def train_rl(start, config: RLConfig | None = None, out: str | Path | None = None,
             on_step: Callable[[dict], None] | None = None, resume: bool = True,
             allow_rl_start: bool = False) -> RLResult:
    """Train a policy with GRPO / ReRe / RISER from an SFT model; `RLResult`.

    start: an SFT run folder (or `riser_lite.runs.Run`), or a tuple (model, tokenizer, dataset) whose model
    is trained in place, optionally with the config.json dict of the model's run as a 4th element (where
    ``prompt_users="heldout"`` reads the held-out users). config: default the RISER preset. out: run folder
    for metrics, checkpoints and the final model (None: nothing on disk). on_step: called with each step's
    record. resume: continue from the newest checkpoint in ``out`` of the same config and start.
    allow_rl_start: accept an RL run folder as the start (and frozen reference).
    """
    config = config or RLConfig()
    model, tokenizer, dataset, start_config, lineage = _load_start(start, allow_rl_start)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()  # eval mode throughout: no dropout, so rollout and training log-probs agree
    item_space = ItemSpace(dataset.catalog, tokenizer)
    train = prompt_examples(dataset, start_config, config.prompt_users)  # what step 1 draws from
    if len(train) < config.prompts_per_step:
        which = "held-out train examples" if config.prompt_users == "heldout" else "train examples"
        raise DataError(f"prompts_per_step={config.prompts_per_step} exceeds the {len(train)} {which} "
                        f"of {dataset.name!r}")

    model, reference, params, optimizer = _policy_and_reference(model, config)
    # DDP: rollouts are split across processes (collect_step); every process then updates on the whole
    # gathered step, because the step's loss is not a sum over prompts (each branch is a mean over its own
    # sequences or pairs). Gradients are averaged so that the replicas stay identical. The model is never
    # wrapped: rollouts use it directly, and the frozen reference only scores.
    rank, world = distributed.rank_and_world()
    if config.prompts_per_step < world:
        raise ValueError(f"prompts_per_step={config.prompts_per_step} is less than the {world} processes")
    step_optimizer = optimizer if world == 1 else distributed.GradientAveraging(optimizer)
    main = distributed.is_main()  # DDP: only the main process writes

    out = Path(out) if out is not None else None
    lock = contextlib.ExitStack()  # one writer at a time (`riser_lite.runs.writer_lock`)
    if out is not None:
        check_rl_output(out, lineage, resume)  # every process, before the lock creates the folder
        distributed.barrier()  # DDP: no process reads the folder while the main one starts writing it
        if main:
            lock.enter_context(writer_lock(out))
    with lock:
        step0, rollouts_used, elapsed0, records = 0, 0, 0.0, []
        if out is not None:  # resume from the folder's newest checkpoint, if any
            step0, rollouts_used, elapsed0, records = _open_run_folder(out, config, lineage, resume, params,
                                                                       optimizer, start_config)
        log = MetricsLog(out / METRICS_FILE) if out is not None and main else None
        t_start = time.perf_counter() - elapsed0

        for step in range(step0 + 1, config.steps + 1):
            t_step = time.perf_counter()
            # 1-5. P training examples drawn afresh from (seed, step); rollouts, rewards, advantages, routing.
            rng = np.random.default_rng(step_seed(config.seed, step, 0))
            examples = [train[i] for i in rng.choice(len(train), config.prompts_per_step, replace=False)]
            data = _collect(model, item_space, examples, dataset, config, step, out)
            rollouts_used += data.groups.num_prompts * data.groups.num_samples_drawn
            t_rollout = time.perf_counter() - t_step
            # 6. The updates (the frozen reference scores the table once first, when one is used).
            t_update = time.perf_counter()
            if reference is not None:
                add_reference(data.batch, reference)
            update = update_policy(model, step_optimizer, params, data.batch, config,
                                   seed=step_seed(config.seed, step, 2))
            _check_update(update, params, step, out)  # a diverged update is never saved
            t_update = time.perf_counter() - t_update
            # 7. The record (with periodic validation), the log, a checkpoint now and then.
            record = step_record(step, config, data, update, rollouts_used)
            record["lr"] = optimizer.param_groups[0]["lr"]
            t_eval = time.perf_counter()
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                record.update(validation_metrics(model, tokenizer, dataset, item_space, config))
            record.update(rollout_time_s=t_rollout, update_time_s=t_update,
                          eval_time_s=time.perf_counter() - t_eval)
            record["step_time_s"] = time.perf_counter() - t_step
            record["time_s"] = time.perf_counter() - t_start
            records.append(record)
            if log is not None:
                log.write(record)
                if step % checkpoint_every(config.steps) == 0 or step == config.steps:
                    _save(out, model, tokenizer, optimizer, params, config, step, rollouts_used,
                          record["time_s"])
            if on_step is not None:
                on_step(record)
        if log is not None:
            log.close()
    distributed.barrier()  # DDP: the run folder is complete when any process returns
    return RLResult(model=model, tokenizer=tokenizer, item_space=item_space, records=records, out=out,
                    reference=reference)


def _policy_and_reference(model, config: RLConfig):
    """(policy, frozen reference or None, trainable parameters, AdamW): the reference is a copy of the
    starting (SFT) weights, taken before LoRA adapters (if any) are added to the policy."""
    reference = None
    if config.needs_reference():
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    if config.lora:
        from riser_lite.model.backbone import add_lora

        model = add_lora(model, r=LORA_R, alpha=LORA_ALPHA, seed=step_seed(config.seed, 0, 3)).eval()
    params = trainable_parameters(model)
    return model, reference, params, torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=0.0)


def _collect(model, item_space, examples, dataset, config: RLConfig, step: int, out) -> StepData:
    """`collect_step` of one training step; exploded weights (NaN sampling probabilities) are a divergence."""
    try:
        return collect_step(model, item_space, examples, dataset.catalog, dataset.max_history, config,
                            seed=step_seed(config.seed, step, 1))
    except RuntimeError as err:  # torch.multinomial on the NaN probabilities of exploded weights
        if "probability tensor contains" not in str(err):
            raise
        check_finite(float("nan"), "policy's sampling distribution", STAGE, step, out)
        raise


def _check_update(update: dict, params: dict, step: int, out) -> None:
    """Stop on a diverged update before it is saved (the last checkpoint stays the one to resume from).
    The loss is the one before the update, so the updated weights are checked too."""
    check_finite(float(update["loss"]), "loss", STAGE, step, out)
    peak = torch.stack([p.detach().abs().max() for p in params.values()]).max()
    check_finite(float(peak), "largest weight magnitude", STAGE, step, out)


def _open_run_folder(out: Path, config: RLConfig, lineage, resume: bool, params: dict, optimizer,
                     start_config: dict) -> tuple[int, int, float, list[dict]]:
    """Create or resume the run folder (`train_rl` checked it). Loads the newest checkpoint's weights and
    AdamW state into ``params`` / ``optimizer``; returns (step done, rollouts used, elapsed seconds, records
    so far)."""
    main = distributed.is_main()  # DDP: only the main process writes (train_rl checked the folder)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            clear_checkpoints(out, STAGE)
    distributed.barrier()
    ckpt = load_checkpoint(out, STAGE)
    step0, rollouts_used, elapsed0 = 0, 0, 0.0
    if ckpt is not None:
        saved = ckpt.meta.get("config")
    else:  # a finished run whose resume state is gone: its model would be replaced without a word
        saved = read_config(out).get("rl") if resume and (out / CONFIG_FILE).exists() else None
    if isinstance(saved, dict) and saved != asdict(config):  # RLConfig's fields are all JSON scalars
        raise RunError(f"{out} holds an RL run of another config (algo {saved.get('algo')!r}), a different "
                       "RL config from this one; use another --out, or train_rl(..., resume=False) to "
                       "start over")
    check_checkpoint_step(ckpt, config.steps, out, STAGE)
    if ckpt is not None:
        load_parameters(params, ckpt.tensors["weights"])
        optimizer.load_state_dict(ckpt.objects["optimizer"])
        step0, rollouts_used, elapsed0 = ckpt.step, ckpt.meta["rollouts_used"], ckpt.meta["elapsed"]
    distributed.barrier()  # DDP: every process has read the checkpoint before main changes the folder
    if main:
        truncate_metrics(out / METRICS_FILE, STAGE, after_step=step0)  # steps after it are redone; it warns
        lineage_section = {} if lineage is None else {"lineage": lineage}
        # The SFT start's held-out users, so that an RL run started from this one can draw from them too.
        holdout = {"rl_holdout": start_config["rl_holdout"]} if start_config.get("rl_holdout") else {}
        update_config(out, data=start_config.get("data"), data_counts=start_config.get("data_counts"),
                      backbone=start_config.get("backbone"),
                      start_run=start_config.get("start_run"), rl=asdict(config), **lineage_section,
                      **holdout, runtime={"threads": torch.get_num_threads(), "torch": torch.__version__})
    distributed.barrier()
    return step0, rollouts_used, elapsed0, read_metrics(out, stage=STAGE)


def _save(out: Path, model, tokenizer, optimizer, params, config, step, rollouts_used, elapsed) -> None:
    """The model (merged if LoRA) for later stages, then the resume state (trainable weights + AdamW)."""
    save_run(out, model, tokenizer, {"rl_progress": {"step": step, "rollouts_used": rollouts_used}})
    meta = {"rollouts_used": int(rollouts_used), "elapsed": float(elapsed), "config": asdict(config)}
    weights = {name: p.detach().clone() for name, p in params.items()}
    save_checkpoint(out, STAGE, Checkpoint(step=step, tensors={"weights": weights},
                                           objects={"optimizer": optimizer.state_dict()}, meta=meta))


def checkpoint_every(steps: int) -> int:
    """Save about ten times per run (an interruption loses at most a tenth of it), at least every 20 steps.

    steps 8 -> 1, 40 -> 4, 200 -> 20, 1000 -> 20.
    """
    return max(1, min(20, -(-steps // 10)))
