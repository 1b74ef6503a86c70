r"""Supervised fine-tuning: teach the model to write the next item's title after the prompt.

Each example is ``[prompt ids | response ids]`` (the template of `riser_lite.items.prompts`); the loss is the
mean negative log-likelihood of the response tokens only (labels are -100 on prompt and padding). The
fine-tuned model is where RL starts and its frozen reference.

- `loss_policy` [choice]: "raw" is the softmax over the whole vocabulary; "constrained" is the
  trie-constrained policy RL samples, $-\log \pi_c(y_t) = -(z_{y_t} - \log \sum_{v \in \mathcal{V}(n_t)}
  e^{z_v})$ over the tokens the item trie allows at node $n_t$ (a forced token costs 0).
- `select_on` [choice]: early stopping and the kept weights follow the validation loss, or a ranking metric
  of the validation users under the exact protocol of `riser_lite.eval.evaluate`.
- `targets = "items"` scores each history item in the prompt too (as SASRec trains), for small models
  trained from scratch; `rl_holdout` leaves a share of the training users to RL ([reported] protocol).

Batches are right-padded and bucketed by length; AdamW with warm-up and cosine decay, gradient clipping.
With an output folder, training writes `metrics.jsonl` and a resume checkpoint after each epoch; calling it
again continues to exactly the weights an uninterrupted run produces. Under `accelerate launch` or
`torchrun` each process takes a share of every step's batch (`riser_lite.distributed`); those lines are
marked `DDP:`.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from riser_lite import distributed, runs
from riser_lite.data.windows import cap_windows, thin_windows
from riser_lite.items.prompts import encode_prompt, encode_response, example_prompt, item_token_positions
from riser_lite.model.backbone import is_lora
from riser_lite.model.dropout import add_residual_dropout
from riser_lite.model.forward import policy_log_softmax, position_ids_from_mask, trie_nodes, valid_token_mask

IGNORE = -100  # label value cross-entropy skips (prompt and padding positions)
STAGE = "sft"
NOT_RECIPE = ("progress",)  # fields that do not change the result: a resume may differ in them
PRETRAINED_LR = {"full": 5e-5, "lora": 5e-4}  # CLI defaults for --model (SFTConfig.lr suits fresh models)
LOSS_POLICIES = ("raw", "constrained")
RANKING_METRIC = re.compile(r"(expected_)?(hr|ndcg)@([1-9][0-9]*)")  # what select_on may name
TARGETS = ("response", "items")
# Fixed settings the course never varies: AdamW decay on weight matrices, the share of steps
# warming up, the gradient-norm clip, and the examples per validation forward pass.
WEIGHT_DECAY, WARMUP_RATIO, GRAD_CLIP, EVAL_BATCH_SIZE = 0.01, 0.05, 1.0, 64


@dataclass
class SFTConfig:
    """Supervised fine-tuning settings (defaults: the `tiny` backbone on the synthetic data, 2-core CPU)."""

    epochs: int = 6  # passes over the training examples (early stopping may end sooner)
    batch_size: int = 32  # examples per optimizer step
    lr: float = 5e-3  # peak learning rate (tiny models from scratch like large ones; see PRETRAINED_LR)
    max_valid: int | None = None  # validate on at most this many validation examples (None: all)
    patience: int = 2  # stop after this many validations without improvement (0: never stop early)
    checkpoint_every: int = 0  # also save resume state every this many steps (0: at epoch ends only)
    progress: bool = True  # show a tqdm progress bar (main process only)
    mixed_precision: str = "no"  # "no", "bf16" (GPUs from Ampere on) or "fp16": autocast around the forward
    loss_policy: str = "raw"  # NLL under "raw" (whole-vocabulary softmax) or "constrained" (trie) policy
    # what early stopping and the kept weights follow: "loss" (lowest validation loss) or a ranking metric
    # of the validation users, highest best: "hr@K", "ndcg@K", on synthetic data "expected_hr@K" and
    # "expected_ndcg@K" (under the true next-item distributions)
    select_on: str = "loss"
    rl_holdout: float = 0.0  # share of training users kept out of SFT for RL prompts (0: SFT sees all)
    # what the NLL scores: "response" (the target item only, as LLM recommenders are tuned) or "items"
    # (also every history item in the prompt, each predicted from the items before it, as SASRec trains)
    targets: str = "response"
    window_stride: int = 1  # keep each user's newest window and every k-th before it (data/windows.py)
    max_train: int | None = None  # train on a seeded sample of at most this many windows (None: all)
    dropout: float = 0.0  # share of embeddings, attention and MLP outputs dropped in training (model/dropout)

    def recipe(self) -> dict:
        """The fields that determine the trained weights and records (what a resume must match)."""
        return {k: v for k, v in asdict(self).items() if k not in NOT_RECIPE}

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # NaN would train to NaN weights without a word
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name, allowed in (("mixed_precision", distributed.MIXED_PRECISION),
                              ("loss_policy", LOSS_POLICIES), ("targets", TARGETS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.select_on != "loss" and not RANKING_METRIC.fullmatch(str(self.select_on)):
            raise ValueError("select_on must be 'loss' or a ranking metric 'hr@K', 'ndcg@K', 'expected_hr@K' "
                             f"or 'expected_ndcg@K' (K >= 1, e.g. 'ndcg@10'), got {self.select_on!r}")
        for name in ("rl_holdout", "dropout"):  # shares: NaN fails too
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if self.targets == "items" and self.loss_policy != "raw":
            raise ValueError("targets='items' needs loss_policy='raw': the constrained policy is defined on "
                             "the response's path through the item trie, not on the prompt")
        if not (isinstance(self.window_stride, int) and self.window_stride >= 1):
            raise ValueError(f"window_stride must be an integer >= 1, got {self.window_stride!r}")
        if self.max_train is not None and not (isinstance(self.max_train, int) and self.max_train >= 1):
            raise ValueError(f"max_train must be an integer >= 1 or None (all windows), "
                             f"got {self.max_train!r}")


@dataclass
class SFTResult:
    """What `train_sft` returns. The model it was given now holds the best weights."""

    model: object  # the trained model (best validation weights restored)
    # what config.json records under "results" / "sft": best_valid_loss (of the kept weights), best_step,
    # steps, epochs_run, stopped_early (patience ran out), train_seconds and tokens_per_second (real tokens;
    # this call), loss_policy, select_on, best_valid_<select_on> (a ranking metric's value at best_step),
    # targets (if not "response"), windows (`ThinnedWindows.record`, if any were left out)
    summary: dict
    history: list[dict]  # validation records
    rl_holdout: dict | None  # the users held out for RL (`HoldoutSplit.record`); None: SFT saw all


# ------------------------------------------------------------------------------------------------ data


def encode_examples(examples, catalog, tokenizer, max_history: int) -> list[tuple[list[int], list[int]]]:
    """Pre-tokenise once: (prompt ids, response ids) per example, with the shared template."""
    responses = {item: encode_response(tokenizer, catalog[item]) for item in {ex.target for ex in examples}}
    return [(encode_prompt(tokenizer, example_prompt(ex, catalog, max_history)), responses[ex.target])
            for ex in examples]


def history_positions(examples, catalog, tokenizer, max_history: int) -> list[list[int]]:
    """Per example, the prompt positions of its history items' tokens (`SFTConfig.targets = "items"`)."""
    return [item_token_positions(tokenizer, [catalog[item] for item in ex.history[-max_history:]])
            if max_history > 0 else [] for ex in examples]


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int,
            prompt_targets: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Right-padded batch. Returns input_ids, attention_mask, labels: [B, T] long.

    labels equal input_ids on response tokens and IGNORE on prompt and padding tokens, except at the
    prompt positions `prompt_targets` lists per row (`history_positions`), which are scored too.
    """
    length = max(len(p) + len(r) for p, r in encoded)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (prompt, response) in enumerate(encoded):
        n = len(prompt) + len(response)
        input_ids[row, :n] = torch.tensor(prompt + response)
        labels[row, len(prompt):n] = torch.tensor(response)
        if prompt_targets is not None and prompt_targets[row]:
            scored = torch.tensor(prompt_targets[row])
            labels[row, scored] = input_ids[row, scored]
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def plan_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                 bucket_chunk: int = 64) -> list[list[int]]:
    """Example indices of each batch of an epoch; a pure function of (seed, epoch) so resuming replays it.

    The shuffled examples are cut into chunks of `bucket_chunk` batches, each chunk is sorted by length
    and cut into batches (little padding), and the batch order is shuffled.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_chunk
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(np.asarray(lengths)[part], kind="stable")]
        batches.extend(part[i:i + batch_size].tolist() for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


# ------------------------------------------------------------------------------------------------ loss


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    keep: torch.Tensor) -> torch.Tensor:
    """Logits at the positions where `keep` [B, T] is True: [N, V].

    The output head runs only on those positions (12 % faster steps here). Models whose head is more than a
    linear layer on the decoder's output (soft-capping, scaling), or that lack get_decoder, run whole.
    """
    positions = position_ids_from_mask(attention_mask)
    base = model.get_base_model() if is_lora(model) else model  # peft: adapters live inside the base
    decoder = getattr(base, "get_decoder", lambda: None)()
    head = base.get_output_embeddings()
    special_head = any(getattr(base.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
    if decoder is None or head is None or special_head:
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits[keep]
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                     use_cache=False).last_hidden_state
    return head(hidden[keep])


def response_valid_tokens(trie, labels: torch.Tensor, width: int) -> torch.Tensor:
    """Tokens the item trie allows before each response token: labels [B, T] -> [N, width] bool.

    Rows follow the response tokens in row-major order (as ``labels[labels != IGNORE]``).
    """
    scored = labels != IGNORE
    lengths = scored.sum(1)
    # Each row's response is one contiguous run of labels: pack it to the left, as trie_nodes expects.
    responses = torch.zeros(labels.shape[0], int(lengths.max()) if labels.numel() else 0, dtype=torch.long)
    packed = torch.arange(responses.shape[1])[None, :] < lengths[:, None].cpu()
    responses[packed] = labels[scored].cpu()
    nodes = trie_nodes(trie, responses)[packed]  # [N]
    if bool((nodes < 0).any()):
        raise ValueError("a response is not the token sequence of a catalogue title (it leaves the item "
                         "trie); loss_policy='constrained' needs every response to be an item")
    return valid_token_mask(trie, nodes, width)


def response_loss(model, batch: dict[str, torch.Tensor], reduction: str = "mean",
                  trie=None) -> tuple[torch.Tensor, int]:
    """NLL of the scored tokens of a collated batch. Returns (mean or summed loss, number of scored tokens).

    trie: None for the raw policy, or the `ItemTrie` for the constrained one. Not
    `policy_logp.response_logprobs`: SFT rows share no prompt, may score prompt positions, and one forward
    with the head on scored positions only is ~15 % faster.
    """
    targets = batch["labels"][:, 1:]  # the output at t predicts the token at t + 1
    keep = torch.nn.functional.pad(targets != IGNORE, (0, 1))  # [B, T]: inputs whose next token is scored
    logits = response_logits(model, batch["input_ids"], batch["attention_mask"], keep).float()
    if trie is None:
        loss = torch.nn.functional.cross_entropy(logits, targets[keep[:, :-1]], reduction="sum")
    else:
        valid = response_valid_tokens(trie, batch["labels"], logits.shape[-1]).to(logits.device)
        logp = policy_log_softmax(logits, valid)  # forbidden tokens get -inf, so no gradient
        loss = -logp.gather(-1, targets[keep[:, :-1]][:, None]).sum()
    count = int(keep.sum())
    return (loss / max(count, 1) if reduction == "mean" else loss), count


def sft_step(model, optimizer, batch: dict[str, torch.Tensor]) -> float:
    """One optimizer step on a batch's mean response NLL (raw policy, gradient norm clipped); returns the
    loss. The update of the "no RL" baseline `riser_lab.compare.continue_sft`."""
    loss, _ = response_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    optimizer.step()
    return loss.item()


class ResponseNLL(torch.nn.Module):
    """The summed NLL of a batch as one module: DDP synchronises gradients only for forward passes through
    its wrapper, and `response_logits` calls the decoder and the head separately."""

    def __init__(self, model, trie=None):
        super().__init__()
        self.model = model
        self.trie = trie  # None: raw policy; the ItemTrie: constrained policy

    def forward(self, input_ids, attention_mask, labels) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return response_loss(self.model, batch, reduction="sum", trie=self.trie)[0]


@torch.no_grad()
def validation_loss(model, encoded, pad_id: int, trie=None) -> float:
    """Mean NLL per response token over `encoded` (length-sorted batches; trie: as in `response_loss`).

    Under several processes each takes every P-th batch and the sums are added in the one-process order.
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    starts = range(0, len(order), EVAL_BATCH_SIZE)
    rank, world = distributed.rank_and_world()
    sums = []
    for b in distributed.my_batches(len(starts), rank, world):
        batch = collate([encoded[i] for i in order[starts[b]:starts[b] + EVAL_BATCH_SIZE]], pad_id)
        loss, n = response_loss(model, {k: v.to(device) for k, v in batch.items()}, "sum", trie)
        sums.append((b, (float(loss), n)))
    gathered = distributed.gather_by_index(sums)
    model.train(was_training)
    return sum(loss for loss, _ in gathered) / max(sum(n for _, n in gathered), 1)


@torch.no_grad()
def validation_ranking(model, tokenizer, dataset, item_space, config: SFTConfig) -> dict[str, float]:
    """{"valid_<select_on>": value} on the (first max_valid) validation users, by the exact protocol of
    `riser_lite.eval.evaluate` (every item ranked under the constrained policy)."""
    from riser_lite.eval.evaluate import EvalConfig, evaluate

    expected, _, k = RANKING_METRIC.fullmatch(config.select_on).groups()
    eval_config = EvalConfig(split="valid", protocol="exact", ks=(int(k),), batch_size=EVAL_BATCH_SIZE,
                             max_examples=config.max_valid, num_bootstrap=1, baselines=False,
                             seed=0)  # one resample: only means are read
    result = evaluate(model, tokenizer, dataset, item_space, eval_config)
    summaries = result.expected if expected else result.summaries
    return {f"valid_{config.select_on}": summaries[config.select_on.removeprefix("expected_")]["value"]}


# ------------------------------------------------------------------------------------------------ training


def check_sft_data(dataset, config: SFTConfig) -> None:
    """`DataError` unless SFT has training examples, validation examples for early stopping, and (for an
    expected_* metric) the valid split's true next-item distributions (synthetic data)."""
    from riser_lite.data.types import DataError

    for split, why in (("train", "to train on"), ("valid", "for early stopping")):
        if not dataset.splits[split]:
            raise DataError(f"dataset {dataset.name!r} has an empty {split} split; SFT needs examples {why}")
    name = config.select_on
    if name.startswith("expected_") and not (dataset.oracle or {}).get("valid"):
        raise DataError(f"select_on={name!r} needs the true next-item distributions of the valid "
                        f"split (synthetic data); dataset {dataset.name!r} has none: use "
                        f"{name.removeprefix('expected_')!r}")


def sft_holdout(dataset, config: SFTConfig, seed: int):
    """The training examples split by `config.rl_holdout` (`riser_lite.data.holdout.split_rl_holdout`,
    seeded by `seed`); SFT trains on `.kept`. `DataError` if no user is left to train on."""
    from riser_lite.data.holdout import split_rl_holdout
    from riser_lite.data.types import DataError

    split = split_rl_holdout(dataset.splits["train"], config.rl_holdout, seed)
    if not split.kept:
        raise DataError(f"rl_holdout={config.rl_holdout} holds out all {split.num_users} training users of "
                        f"dataset {dataset.name!r}; SFT needs some to train on (use a smaller rl_holdout)")
    return split


def step_share(train, batch: list[int], pad_id: int, rank: int, world: int,
               prompt_targets: list[list[int]] | None = None):
    """This process's share of one optimizer step's global batch.

    Returns (collated share: [b, T] tensors, scored tokens N of the whole batch, weight): the share's
    part of the global-batch mean NLL is weight * (summed NLL of the share) / N. The weight is 1, except
    for a process left without examples (a batch smaller than the process count): it gets the first
    example with weight 0, because DDP needs every process in every backward pass.
    """
    mine, weight = distributed.share(batch, rank, world), 1.0
    if not mine:
        mine, weight = batch[:1], 0.0
    count = sum(len(train[i][1]) for i in batch)
    if prompt_targets is not None:  # history items scored too (SFTConfig.targets = "items")
        count += sum(len(prompt_targets[i]) for i in batch)
    share_targets = None if prompt_targets is None else [prompt_targets[i] for i in mine]
    return collate([train[i] for i in mine], pad_id, share_targets), count, weight


def _make_optimizer(params: dict, config: SFTConfig, total_steps: int):
    """AdamW (no decay on norms and biases) and the warm-up + cosine decay, one scheduler step per step."""
    from transformers import get_scheduler

    decay = [p for p in params.values() if p.ndim >= 2]  # matrices and embeddings
    no_decay = [p for p in params.values() if p.ndim < 2]  # norms and biases
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=int(WARMUP_RATIO * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


@dataclass
class SFTData:
    """What SFT trains and validates on, tokenised once (`sft_data`)."""

    dataset: object  # the dataset (validation rankings read its valid split)
    train: list  # (prompt ids, response ids) per training window
    lengths: list[int]  # prompt + response tokens per training window (batches are planned on them)
    prompt_targets: list | None  # per window, the history positions scored too (targets="items"), else None
    valid: list  # (prompt ids, response ids) per validation example
    item_space: object | None  # the catalogue, built only when the trie or a ranking metric needs it
    holdout: object  # the users kept out for RL (`HoldoutSplit`)
    windows: object  # the training windows kept by window_stride (`ThinnedWindows`)


def sft_data(dataset, tokenizer, config: SFTConfig, seed: int = 0) -> SFTData:
    """Tokenise the training windows and the validation examples with the one prompt template."""
    max_history = dataset.max_history
    item_space = None  # it tokenises every title: built only when needed
    if config.loss_policy == "constrained" or config.select_on != "loss":
        from riser_lite.items.catalog import ItemSpace

        item_space = ItemSpace(dataset.catalog, tokenizer)
    holdout = sft_holdout(dataset, config, seed)
    windows = cap_windows(thin_windows(holdout.kept, config.window_stride), config.max_train, seed)
    train = encode_examples(windows.kept, dataset.catalog, tokenizer, max_history)
    prompt_targets = (history_positions(windows.kept, dataset.catalog, tokenizer, max_history)
                      if config.targets == "items" else None)
    valid = encode_examples(dataset.splits["valid"][: config.max_valid], dataset.catalog, tokenizer,
                            max_history)
    return SFTData(dataset=dataset, train=train, lengths=[len(p) + len(r) for p, r in train],
                   prompt_targets=prompt_targets, valid=valid, item_space=item_space, holdout=holdout,
                   windows=windows)


class Tracker:
    """The books of one SFT run: validation and the best weights, the records, resume checkpoints.

    ``state`` is what a checkpoint stores besides tensors: the step, the best validation loss (and
    select_on's value there), the step of the kept weights, validations without improvement, the history.
    """

    def __init__(self, model, tokenizer, data: SFTData, config: SFTConfig, seed: int, params: dict, device,
                 out: Path | None, resumable: bool, on_step: Callable[[dict], None] | None):
        self.model, self.tokenizer, self.data, self.config = model, tokenizer, data, config
        self.params, self.device, self.out, self.resumable = params, device, out, resumable
        self.on_step = on_step
        self.trie = data.item_space.trie if config.loss_policy == "constrained" else None  # None: raw policy
        self.state = {"step": 0, "best_loss": math.inf, "best_metric": -math.inf, "best_step": 0,
                      "bad_evals": 0, "stopped_early": False, "history": [],
                      "config": {"seed": seed, **config.recipe()}}
        self.best = {k: v.detach().clone() for k, v in params.items()}
        self.log: runs.MetricsLog | None = None

    def open(self, optimizer, scheduler, total_steps: int, accelerator) -> None:
        """Resume from the run folder's newest SFT checkpoint, if any (the recipe must match); open
        metrics.jsonl, its records after the checkpoint dropped (main process)."""
        ckpt = runs.load_checkpoint(self.out, STAGE) if self.resumable else None
        if ckpt is not None:
            if ckpt.meta.get("config") != self.state["config"]:
                raise runs.RunError(f"{self.out} holds an SFT checkpoint made with another config; use a new "
                                    f"folder or delete {self.out / runs.STATE_DIR / STAGE}")
            runs.check_checkpoint_step(ckpt, total_steps, self.out, STAGE)
            runs.load_parameters(self.params, ckpt.tensors["weights"])
            self.best = {k: v.to(self.device) for k, v in ckpt.tensors["best"].items()}
            optimizer.load_state_dict(ckpt.objects["optimizer"])
            scheduler.load_state_dict(ckpt.objects["scheduler"])
            torch.set_rng_state(ckpt.objects["rng"]["torch"])  # the generator dropout draws from
            self.state.update(ckpt.meta, step=ckpt.step)
        if self.out is not None:
            accelerator.wait_for_everyone()  # DDP: all have read the checkpoint before main rewrites it
            if accelerator.is_main_process:
                runs.truncate_metrics(self.out / runs.METRICS_FILE, STAGE, self.state["step"])
                self.log = runs.MetricsLog(self.out / runs.METRICS_FILE)

    def emit(self, record: dict) -> None:
        record = {"stage": STAGE, **record}
        if self.log is not None:
            self.log.write(record)
        if self.on_step is not None:
            self.on_step(record)

    def checkpoint(self, optimizer, scheduler) -> None:
        """Save the resume state (main process only: weights and optimizer state are the same in all)."""
        if self.resumable and distributed.is_main():
            runs.save_checkpoint(self.out, STAGE, runs.Checkpoint(
                step=self.state["step"], tensors={"weights": self.params, "best": self.best},
                objects={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": {"torch": torch.get_rng_state()}},
                meta={k: v for k, v in self.state.items() if k != "step"}))

    def validate(self, epoch: float) -> bool:
        """Validate, keep the best weights; True when patience has run out."""
        config, state = self.config, self.state
        loss = validation_loss(self.model, self.data.valid, int(self.tokenizer.pad_token_id), self.trie)
        runs.check_finite(loss, "validation loss", STAGE, state["step"], self.out if self.resumable else None)
        record = {"event": "valid", "step": state["step"], "epoch": round(epoch, 4), "valid_loss": loss}
        if config.select_on == "loss":
            improved = loss < state["best_loss"]
        else:  # a ranking metric: higher is better; ties keep the earlier weights
            record.update(validation_ranking(self.model, self.tokenizer, self.data.dataset,
                                             self.data.item_space, config))
            metric = record[f"valid_{config.select_on}"]
            improved = metric > state["best_metric"]
            if improved:
                state["best_metric"] = metric
        if improved:
            state.update(best_loss=loss, best_step=state["step"], bad_evals=0)
            self.best = {k: p.detach().clone() for k, p in self.params.items()}
        else:
            state["bad_evals"] += 1
        record["best"] = improved
        state["history"].append(record)
        self.emit(record)
        return config.patience > 0 and state["bad_evals"] >= config.patience


def train_sft(dataset, model, tokenizer, config: SFTConfig | None = None, out_dir: str | Path | None = None,
              on_step: Callable[[dict], None] | None = None, seed: int = 0) -> SFTResult:
    """Fine-tune `model` (plain or LoRA, trained in place; best weights restored) on `dataset`'s train split,
    validating on its valid split. Read top to bottom as nanoGPT's train.py: set-up, resume, the loop;
    `Tracker` keeps the books (validation, best weights, records, checkpoints).

    out_dir: run folder for metrics.jsonl, resume checkpoints and the final model (None: memory only); an
    SFT checkpoint there is resumed (same config; any process count). on_step: called in every process
    with each record: {"event": "train", "step", "epoch", "loss", "lr", "grad_norm", "tokens", ...} and
    {"event": "valid", "step", "epoch", "valid_loss", "valid_<metric>" per ranking metric, "best"}.
    seed: seeds the data order, the RL holdout, the max_train sample and all RNGs (torch, numpy, random).
    """
    from tqdm.auto import tqdm
    from transformers import set_seed

    config = config or SFTConfig()
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; riser_lite.model.backbone.load_pretrained adds one")
    check_sft_data(dataset, config)
    world = distributed.rank_and_world()[1]
    accelerator = distributed.make_accelerator(config.mixed_precision, -(-config.batch_size // world))
    device, rank, main = accelerator.device, accelerator.process_index, accelerator.is_main_process
    pad_id = int(tokenizer.pad_token_id)
    set_seed(seed)  # python's, numpy's and torch's global generators
    model.to(device)
    data = sft_data(dataset, tokenizer, config, seed)
    lengths = data.lengths
    steps_per_epoch = len(plan_batches(lengths, config.batch_size, seed, 0))
    total_steps = steps_per_epoch * config.epochs
    params = runs.trainable_parameters(model)
    optimizer, scheduler = _make_optimizer(params, config, total_steps)
    out = Path(out_dir) if out_dir is not None else None
    # DeepSpeed's engine owns the sharded optimizer state: no resume checkpoints there (docs/scale.md).
    resumable = out is not None and not distributed.uses_deepspeed(accelerator)
    books = Tracker(model, tokenizer, data, config, seed, params, device, out, resumable, on_step)
    state = books.state
    books.open(optimizer, scheduler, total_steps, accelerator)
    # DDP: wrap the loss module (gradients averaged across processes) and the optimizer; alone, neither is
    # wrapped. The scheduler stays ours: it steps once per global step at any process count.
    nll, step_optimizer = accelerator.prepare(ResponseNLL(model, books.trie), optimizer)

    model.train()
    dropout_hooks = add_residual_dropout(model, config.dropout)  # removed in `finally`: saved model is plain
    bar = tqdm(total=total_steps, initial=state["step"], desc="SFT", disable=not (config.progress and main),
               dynamic_ncols=True)
    train_seconds, train_tokens = 0.0, 0
    start_epoch, start_batch = divmod(state["step"], steps_per_epoch)
    try:
        for epoch in range(start_epoch, config.epochs):
            if state["stopped_early"]:
                break
            batches = plan_batches(lengths, config.batch_size, seed, epoch)
            for index in range(start_batch if epoch == start_epoch else 0, len(batches)):
                tic = time.perf_counter()
                # DDP: this process's share of the global batch, normalised by the global token count.
                batch, count, weight = step_share(data.train, batches[index], pad_id, rank, world,
                                                  data.prompt_targets)
                loss = nll(**{k: v.to(device) for k, v in batch.items()}) / count * weight
                step_optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss * world)  # DDP: the average over processes is the global mean
                grad_norm = accelerator.clip_grad_norm_(list(params.values()), GRAD_CLIP)
                step_optimizer.step()
                scheduler.step()
                state["step"] = step = state["step"] + 1
                tokens = sum(lengths[i] for i in batches[index])
                train_seconds, train_tokens = train_seconds + time.perf_counter() - tic, train_tokens + tokens
                batch_loss = accelerator.reduce(loss.detach(), "sum").item()  # DDP: the global-batch mean
                runs.check_finite(batch_loss, "training loss", STAGE, step, out if resumable else None)
                frac_epoch, end_of_epoch = epoch + (index + 1) / len(batches), index == len(batches) - 1
                books.emit({"event": "train", "step": step, "epoch": round(frac_epoch, 4), "loss": batch_loss,
                            "lr": scheduler.get_last_lr()[0],
                            "grad_norm": float("nan") if grad_norm is None else float(grad_norm),
                            "tokens": tokens, "response_tokens": count,  # all scored tokens
                            "time": round(train_seconds, 4)})
                bar.set_postfix(loss=f"{batch_loss:.3f}", valid=f"{state['best_loss']:.3f}")
                bar.update(1)
                if end_of_epoch:  # validation, hence early stopping, at epoch ends only
                    state["stopped_early"] = books.validate(frac_epoch)
                if end_of_epoch or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    books.checkpoint(optimizer, scheduler)
    finally:
        for hook in dropout_hooks:
            hook.remove()
        bar.close()
        if books.log is not None:
            books.log.close()
    return _finish(books, steps_per_epoch, train_seconds, train_tokens, accelerator)


def _finish(books: Tracker, steps_per_epoch: int, train_seconds: float, train_tokens: int,
            accelerator) -> SFTResult:
    """Restore the best weights, save the run (main process) and return the result."""
    config, state, data = books.config, books.state, books.data
    runs.load_parameters(books.params, books.best)
    summary = {"best_valid_loss": state["best_loss"], "best_step": state["best_step"], "steps": state["step"],
               "epochs_run": round(state["step"] / steps_per_epoch, 4),
               "stopped_early": state["stopped_early"], "train_seconds": round(train_seconds, 2),
               "tokens_per_second": round(train_tokens / train_seconds if train_seconds else 0.0, 1),
               "loss_policy": config.loss_policy, "select_on": config.select_on}
    if config.select_on != "loss":
        summary[f"best_valid_{config.select_on}"] = state["best_metric"]
    if config.targets != "response":
        summary["targets"] = config.targets
    if config.window_stride > 1 or data.windows.capped:
        summary["windows"] = data.windows.record()
    # The held-out split is recorded so that RL can rebuild it (RLConfig.prompt_users = "heldout").
    held = {"rl_holdout": data.holdout.record()} if config.rl_holdout else {}
    if books.out is not None and accelerator.is_main_process:
        runs.save_run(books.out, books.model, books.tokenizer, {"results": {STAGE: summary}, **held})
    accelerator.wait_for_everyone()
    return SFTResult(books.model, summary, list(state["history"]), held.get("rl_holdout"))


# ------------------------------------------------------------------------------------------------ one call


def run_sft(data="synthetic", *, path: str | Path | None = None, preset: str = "tiny",
            config: SFTConfig | None = None, out: str | Path = "runs/sft", seed: int = 0,
            model: str | None = None, lora: bool | dict | None = None, overwrite: bool = False,
            items: str = "title", sids=None,
            on_step: Callable[[dict], None] | None = None) -> Path:
    """Build (or load) a backbone, fine-tune it, and write a run folder. Returns the run folder.

    Args:
        data: a RecDataset, a source name for `riser_lite.data.load_dataset` ("synthetic", "lastfm", ...)
            or a spec dict from `riser_lite.runs.dataset_spec`.
        path: dataset folder for a source name (None: the source's default).
        preset: local backbone preset (ignored when `model` is given).
        out: run folder: new, empty, or the package's (an unfinished run with the same recipe resumes, a
            finished one is returned; another recipe needs `overwrite`, which removes only the entries the
            folder's manifest lists). Everything is checked before the folder is written.
        seed: seeds the weight initialisation and training.
        model: a pretrained backbone instead of a preset: "smollm2-135m", a HF folder or a hub id.
        lora: True (rank 8 on the attention projections) or a dict of `add_lora` arguments; None/False: full.
        items: "title", "sid" or "title+sid" (`riser_lite.items.represent`); the codes are recorded.
        sids: the `SemanticIds` of items "sid" / "title+sid" (`riser_lab.sid.build_semantic_ids` builds them
            from the training split), unless `data` is a spec that records its codes.
    """
    from riser_lite.items.represent import whole_tokens
    from riser_lite.model import backbone

    out = runs.check_outputs(out, "run")  # before anything is loaded or written
    config = config or SFTConfig()
    distributed.check_precision(config.mixed_precision)
    dataset, spec = _load_data(data, path, items, sids)
    lora_args = ({} if lora is True else dict(lora)) if lora else None
    if model is None:
        shape = backbone.get_preset(preset)
        backbone_spec = {"preset": preset, "config": asdict(shape)}
    else:  # a named backbone, a folder or a hub id: the run records which weights, by SHA-256
        from riser_lite.model.pretrained import resolve

        model, identity = resolve(model)
        backbone_spec = {"pretrained": identity["name"], "sha256": identity["sha256"]}
    recipe = {"seed": seed, "backbone": backbone_spec, "lora": lora_args, "data": spec,
              "sft": config.recipe()}
    check_sft_data(dataset, config)
    sft_holdout(dataset, config, seed)  # a split leaving nobody to train on fails before anything is written
    if (out / runs.CONFIG_FILE).exists() and not overwrite:
        existing = runs.read_config(out)
        differs = [k for k in recipe if existing.get(k) != runs.json_round_trip(recipe[k])]
        if differs:
            raise runs.RunError(f"{out} holds a run with a different {differs}; choose another folder "
                                "or overwrite it (--overwrite)")
        if STAGE in existing.get("results", {}) and (out / runs.MODEL_DIR).exists():
            return out  # already trained: the run folder is the artefact

    extra_tokens = whole_tokens(spec.get("items"))
    if model is None:
        net, tokenizer = backbone.build_backbone(dataset, shape, seed=seed, whole_tokens=extra_tokens)
    else:
        try:
            net, tokenizer = backbone.load_pretrained(model)
        except runs.LOAD_ERRORS as err:  # a wrong name or folder is the user's input: one line, no trace
            raise runs.RunError(f"--model {model} does not load as a Hugging Face causal LM "
                                f"({runs.brief(err)}); expected a hub name or a folder with config.json, "
                                "weights and tokenizer files") from None
        backbone.add_item_tokens(net, tokenizer, extra_tokens)
    check_special_tokens(dataset.catalog, tokenizer)
    if lora_args is not None:  # the item tokens' embedding rows train beside the adapters
        item_ids = tokenizer.convert_tokens_to_ids(extra_tokens) if model else []
        net = backbone.add_lora(net, **lora_args, trainable_tokens=item_ids, seed=seed)
    # One writer at a time: a second process on the same folder is refused before it changes anything.
    with runs.writer_lock(out) if distributed.is_main() else contextlib.nullcontext():
        if distributed.is_main():  # DDP: only the main process writes
            if overwrite:  # only now: a check that failed above leaves the old run untouched
                runs.clear_run_folder(out)
            runs.update_config(out, **recipe, data_counts=runs.data_counts(dataset),
                               parameters=backbone.count_parameters(net),
                               trainable_parameters=backbone.count_parameters(net, trainable_only=True),
                               runtime={"threads": torch.get_num_threads(), "torch": torch.__version__})
        distributed.barrier()
        train_sft(dataset, net, tokenizer, config, out_dir=out, on_step=on_step, seed=seed)
    return out


def _load_data(data, path, items: str, sids):
    """(dataset with items in their recorded form, data spec) of `run_sft`'s `data` argument. Semantic IDs
    are given as `sids` (or recorded in a spec)."""
    from riser_lite.data.types import RecDataset
    from riser_lite.items.represent import apply_items, items_spec

    if isinstance(data, RecDataset):
        dataset, spec = data, {"source": None, "name": data.name, "description": data.source}
    else:
        spec = dict(data) if isinstance(data, dict) else runs.dataset_spec(data, path)
        dataset = runs.load_spec_dataset(spec)
    if items != "title" and "items" not in spec:
        spec["items"] = items_spec(items, sids)
    return apply_items(dataset, spec.get("items")), spec


def check_special_tokens(catalog: dict, tokenizer) -> None:
    """Refuse item titles holding one of this tokenizer's special-token strings (`DataError`, counted):
    inside a title the tokenizer reads it as that control token (an EOS in mid-title ends the item)."""
    from riser_lite.data.types import DataError

    specials = [token for token in tokenizer.all_special_tokens if token]
    found = {item: token for item, title in catalog.items() for token in specials if token in title}
    if found:
        item = min(found)
        raise DataError(f"{len(found)} item titles hold a special-token string of the tokenizer (the first, "
                        f"item {item}: {found[item]!r} in {catalog[item][:60]!r}); expected plain text",
                        field="title")
