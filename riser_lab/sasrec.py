"""SASRec: the item-id baseline a practitioner would train instead of an LLM recommender.

Self-attentive sequential recommendation (Kang & McAuley, ICDM 2018): history item embeddings plus learned
position embeddings, a few causal transformer blocks, and the newest position's output scoring every
catalogue item by a dot product with its (shared) item embedding. It never sees a title: it is what item
ids alone buy, on the same train split and the same protocol as the LLM (`rank_targets` ranks the whole
catalogue, history items included, as the LLM evaluation does).

Training: full softmax cross-entropy over the catalogue for each (history -> target) example, the pairs
the LLM's SFT sees. The paper used binary cross-entropy with one sampled negative; the full softmax is the
stronger variant (Klenitskiy & Vasilev, RecSys 2023), so the baseline is not a straw man.

Sequences are left-padded to `max_len` (newest item in the last column). Padding keys are masked out of
attention; each position may always attend to itself, so a padding row has a defined (unused) output.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from riser_lite.eval.metrics import DEFAULT_KS, ndcg_at_k, ranks_from_scores, top_items
from riser_lite.model.decoding import inference


@dataclass
class SASRecConfig:
    """SASRec size and training settings (defaults: seconds on the synthetic data, minutes on LastFM)."""

    dim: int = 64  # width of item/position embeddings and of the transformer blocks
    layers: int = 2  # causal transformer blocks (the paper uses 2)
    heads: int = 2  # attention heads per block (dim must be divisible by it)
    dropout: float = 0.2  # dropout on embeddings, attention and MLP (the paper's 0.2 for sparse data)
    ffn_mult: int = 1  # width of each block's feed-forward layer in multiples of dim (the paper: 1)
    max_len: int = 10  # newest history items read per example (= the LLM prompt's max_history)
    epochs: int = 100  # upper bound on passes over the training examples (early stopping ends sooner)
    batch_size: int = 128  # examples per optimizer step
    lr: float = 1e-3  # AdamW learning rate (the paper's 1e-3)
    weight_decay: float = 0.0  # AdamW weight decay on weight matrices (not on embeddings, norms, biases)
    patience: int = 5  # stop after this many epochs without a better validation NDCG@10 (0: never)
    seed: int = 0  # seeds initialisation, data order and dropout
    eval_batch_size: int = 512  # examples per scoring forward pass

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        sizes = (self.dim, self.layers, self.heads, self.ffn_mult, self.max_len, self.epochs, self.batch_size)
        if min(sizes) < 1:
            raise ValueError("dim, layers, heads, ffn_mult, max_len, epochs and batch_size must all be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class SASRecModel(nn.Module):
    """Item embeddings -> causal transformer -> scores over the catalogue.

    Column j of every score matrix is item `item_ids[j]` (item ids sorted ascending, the order of
    `items.catalog.ItemSpace.item_ids`). Internally item `item_ids[j]` is token j + 1; 0 is padding.
    """

    def __init__(self, item_ids: Sequence[int], config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_ids = sorted(int(i) for i in item_ids)
        if not self.item_ids:
            raise ValueError("SASRec needs a non-empty catalogue")
        self.index_of = {item: j for j, item in enumerate(self.item_ids)}
        self.item_emb = nn.Embedding(len(self.item_ids) + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.emb_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(config.dim, config.heads, config.dim * config.ffn_mult,
                                           dropout=config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.item_emb.weight, std=config.dim ** -0.5)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def encode_histories(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """Item-id histories (oldest first) -> left-padded tokens [B, max_len] (the newest max_len items)."""
        length = self.config.max_len
        tokens = torch.zeros(len(histories), length, dtype=torch.long)
        for row, history in enumerate(histories):
            kept = list(history)[-length:]
            unknown = [item for item in kept if item not in self.index_of]
            if unknown:
                raise ValueError(f"history {row} holds item ids {unknown[:5]} that are not in the model's "
                                 f"catalogue of {self.num_items} items")
            if kept:
                tokens[row, length - len(kept):] = torch.tensor([self.index_of[item] + 1 for item in kept])
        return tokens

    def hidden(self, tokens: Tensor) -> Tensor:
        """tokens [B, L] (0 = padding, left-padded) -> representation of the newest position [B, dim]."""
        batch, length = tokens.shape
        positions = torch.arange(length, device=tokens.device)
        x = self.item_emb(tokens) * math.sqrt(self.config.dim) + self.pos_emb(positions)
        pad = tokens == 0
        x = self.emb_dropout(x.masked_fill(pad[..., None], 0.0))
        # blocked[b, q, k]: query q may not see key k (the future, or padding other than itself).
        future = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        eye = torch.eye(length, dtype=torch.bool, device=tokens.device)
        blocked = future[None] | (pad[:, None, :] & ~eye[None])  # [B, L, L]
        blocked = blocked.repeat_interleave(self.config.heads, dim=0)  # [B * heads, L, L]
        x = self.blocks(x, mask=blocked)
        return self.final_norm(x[:, -1])

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, L] -> logits [B, I] over the catalogue (column j = item_ids[j])."""
        return self.hidden(tokens) @ self.item_emb.weight[1:].T

    def score(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """Logits [B, I] for item-id histories (oldest first), in eval mode; column j = item_ids[j]."""
        with inference(self):
            out = [self(self.encode_histories(histories[i: i + self.config.eval_batch_size]))
                   for i in range(0, len(histories), self.config.eval_batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.num_items)


@dataclass
class SASRecHistory:
    """What training did, attached to the model as `model.train_history`."""

    epochs_run: int = 0  # epochs completed
    best_epoch: int = 0  # 1-based epoch whose weights were kept
    best_valid_ndcg10: float | None = None  # validation NDCG@10 of the kept weights (None: no validation)
    stopped_early: bool = False  # True if patience ran out
    train_seconds: float = 0.0  # wall time of the whole training call
    records: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, valid_ndcg@10, seconds


def _ranks_and_lists(model: SASRecModel, examples, max_k: int) -> tuple[list[int], list[list[int]]]:
    """Full-catalogue target ranks and the top-max_k item lists (ties by item id) of examples."""
    missing = [ex.target for ex in examples if ex.target not in model.index_of]
    if missing:
        raise ValueError(f"targets {missing[:5]} are not in the model's catalogue of {model.num_items} items")
    if not examples:
        return [], []
    scores = model.score([ex.history for ex in examples])
    columns = torch.tensor([model.index_of[ex.target] for ex in examples])
    return ranks_from_scores(scores, columns).tolist(), top_items(scores, model.item_ids, max_k)


def rank_targets(model: SASRecModel, dataset, split: str = "test") -> list[int | None]:
    """0-based rank of each example's target of `split` over the whole catalogue (history items are not
    excluded), ties by item id (`metrics.ranks_from_scores`)."""
    return _ranks_and_lists(model, dataset.splits[split], 1)[0]


def _train_epoch(model: SASRecModel, tokens: Tensor, targets: Tensor, optimizer, order_rng) -> float:
    """One pass over the training examples (tokens [N, L], target columns [N]) in a seeded random order;
    returns the mean cross-entropy."""
    model.train()
    total = 0.0
    for batch in torch.randperm(len(targets), generator=order_rng).split(model.config.batch_size):
        loss = nn.functional.cross_entropy(model(tokens[batch]), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(targets)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train_sasrec(dataset, config: SASRecConfig | None = None) -> SASRecModel:
    """Train SASRec on `dataset.splits["train"]`, early-stopping on validation NDCG@10.

    The weights of the best validation epoch are restored before returning (ties keep the earlier epoch).
    Deterministic in `config.seed` on a given machine and thread count. With no validation examples it
    trains for `config.epochs` epochs and keeps the last weights.
    Returns the model in eval mode, with `model.train_history` (a SASRecHistory).
    """
    config = config or SASRecConfig()
    start = time.perf_counter()
    train = dataset.splits["train"]
    if not train:
        raise ValueError(f"dataset {dataset.name!r} has no training examples")
    torch.manual_seed(config.seed)  # initialisation and dropout
    model = SASRecModel(dataset.catalog, config)
    unknown = [ex.target for ex in train if ex.target not in model.index_of]
    if unknown:
        raise ValueError(f"train targets {unknown[:5]} are not in the catalogue of dataset {dataset.name!r}")
    tokens = model.encode_histories([ex.history for ex in train])
    targets = torch.tensor([model.index_of[ex.target] for ex in train])
    order_rng = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    has_valid = bool(dataset.splits["valid"])
    history = SASRecHistory()
    best_state, best, waited = None, -1.0, 0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        record = {"epoch": epoch, "loss": _train_epoch(model, tokens, targets, optimizer, order_rng)}
        history.epochs_run = epoch
        if has_valid:
            record["valid_ndcg@10"] = float(ndcg_at_k(rank_targets(model, dataset, "valid"), 10))
            if record["valid_ndcg@10"] > best:
                best, waited, history.best_epoch = record["valid_ndcg@10"], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
        record["seconds"] = time.perf_counter() - epoch_start
        history.records.append(record)
        if has_valid and config.patience and waited >= config.patience:
            history.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        history.best_valid_ndcg10 = best
    else:
        history.best_epoch = history.epochs_run
    history.train_seconds = time.perf_counter() - start
    model.train_history = history
    return model.eval()


def evaluate_sasrec(model: SASRecModel, dataset, split: str = "test", ks: Sequence[int] = DEFAULT_KS,
                    *, seed: int = 0, num_bootstrap: int = 1000, alpha: float = 0.05) -> dict:
    """HR@K and NDCG@K over the whole catalogue, with percentile-bootstrap intervals over examples.

    Returns the JSON form of the LLM evaluation's `EvalResult` with protocol "exact" (summaries, ranks,
    top_items, coverage, and on synthetic data the expected metrics), plus "method": "sasrec"; `config`
    holds the SASRecConfig and the evaluation settings. No reference rankers (`baselines` is empty).
    """
    from riser_lite.eval.evaluate import EvalConfig, EvalResult, list_metrics

    if split not in dataset.splits:
        raise ValueError(f"split must be one of {sorted(dataset.splits)}, got {split!r}")
    start = time.perf_counter()
    examples = dataset.splits[split]
    if not examples:
        raise ValueError(f"split {split!r} of dataset {dataset.name!r} has no examples to evaluate")
    settings = EvalConfig(split=split, protocol="exact", ks=tuple(int(k) for k in ks), seed=seed,
                          num_bootstrap=num_bootstrap, alpha=alpha)
    ranks, lists = _ranks_and_lists(model, examples, settings.max_k)
    oracle = getattr(dataset, "oracle", None)
    metrics = list_metrics(ranks, lists, model.num_items, oracle[split] if oracle else None, settings)
    config = {**asdict(model.config), "split": split, "ks": list(settings.ks), "num_bootstrap": num_bootstrap,
              "alpha": alpha, "seed_bootstrap": seed}
    result = EvalResult(split=split, protocol="exact", num_examples=len(examples), ranks=ranks,
                        top_items=lists, **metrics, valid_rate=None, unconstrained_valid_rate=None,
                        config=config, seconds=time.perf_counter() - start)
    return {"method": "sasrec", **result.to_dict()}


# ---------------------------------------------------------------------------------------------- files, CLI

WEIGHTS_FILE = "sasrec.safetensors"
CONFIG_FILE = "sasrec.json"


def save_sasrec(model: SASRecModel, folder, data: dict | None = None) -> Path:
    """Write `sasrec.safetensors` (weights) and `sasrec.json` (config, item ids, training history, and the
    data spec `data` it was trained on) into a folder the package owns (`riser_lite.runs.own_entry`)."""
    from safetensors.torch import save_file

    from riser_lite.runs import own_entry

    folder = Path(folder)
    weights, config = own_entry(folder, WEIGHTS_FILE, "sasrec"), own_entry(folder, CONFIG_FILE, "sasrec")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    history = getattr(model, "train_history", None)
    meta = {"config": asdict(model.config), "item_ids": model.item_ids,
            "train_history": asdict(history) if history is not None else None, "data": data}
    config.write_text(json.dumps(meta, indent=1))
    return folder


def check_sasrec_out(folder, config: SASRecConfig, data: dict, names) -> None:
    """Refuse an --out that is a user's folder, holds a user's file of these names, or holds a SASRec of
    other settings or data (its model and results would be replaced without a word)."""
    from riser_lite.runs import RunError, check_outputs, read_json

    folder = check_outputs(folder, "sasrec", names)  # claimed when the model is saved
    if (folder / CONFIG_FILE).is_file():
        saved = read_json(folder / CONFIG_FILE)
        saved = saved if isinstance(saved, dict) else {}
        if saved.get("data") != data or saved.get("config") != json.loads(json.dumps(asdict(config))):
            raise RunError(f"{folder} holds a SASRec of other settings or data ({saved.get('data')}); choose "
                           "another --out")


def load_sasrec(folder) -> SASRecModel:
    """The model `save_sasrec` wrote (eval mode)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no saved SASRec model: expected {CONFIG_FILE} in it")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    model = SASRecModel(meta["item_ids"], SASRecConfig(**meta["config"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    if meta.get("train_history"):
        model.train_history = SASRecHistory(**meta["train_history"])
    return model.eval()


def sasrec_item_vectors(dataset, item_ids: Sequence[int], config) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length SASRec item embeddings [I, dim] and a cold mask [I] (items in no training example): the
    vectors semantic IDs are built from (TIGER's choice). From the saved model in `config.sasrec` (a
    `riser_lab.sid.SIDConfig`; its catalogue is checked, its training data cannot be), or from one
    trained here on `dataset` with SASRec's defaults, seeded by `config.seed`."""
    from riser_lab.sid import unit_rows
    from riser_lite.data.types import DataError

    if config.sasrec is not None:
        if not (Path(config.sasrec) / CONFIG_FILE).is_file():
            raise DataError(f"no saved SASRec model (expected {CONFIG_FILE}; `riser-lite sasrec --out` "
                            "writes one)", path=config.sasrec)
        model = load_sasrec(config.sasrec)
        if model.item_ids != list(item_ids):
            raise DataError(f"the SASRec saved there ranks {model.num_items} items, not this dataset's "
                            f"catalogue of {len(item_ids)}: train one on this dataset", path=config.sasrec)
    else:
        model = train_sasrec(dataset, SASRecConfig(max_len=dataset.max_history, seed=config.seed))
    seen = {item for ex in dataset.splits["train"] for item in (*ex.history, ex.target)}
    cold = np.array([item not in seen for item in item_ids])
    return unit_rows(model.item_emb.weight[1:].detach().double().numpy(), cold)
