"""SASRec baseline: shapes, determinism, learning a deterministic process, and ranks computed by hand."""

import math
import random

import pytest
import torch

from riser_lab.sasrec import (
    SASRecConfig,
    SASRecModel,
    evaluate_sasrec,
    load_sasrec,
    rank_targets,
    ranks_from_scores,
    save_sasrec,
    train_sasrec,
)
from riser_lite.data.types import Example, RecDataset
from riser_lite.eval.metrics import hit_rate_at_k, ndcg_at_k

SMALL = dict(dim=16, layers=1, heads=2, dropout=0.0, max_len=4, batch_size=32)


def cycle_dataset(num_items=12, per_split=(300, 40, 40), seed=0, stride=3) -> RecDataset:
    """Item k is followed by item (k + 1) mod I; ids are stride * k + 5 (not 0..I-1); catalogue unsorted."""
    rng = random.Random(seed)
    ids = [stride * k + 5 for k in range(num_items)]
    splits = {}
    for name, count in zip(("train", "valid", "test"), per_split, strict=True):
        examples = []
        for n in range(count):
            start, length = rng.randrange(num_items), rng.randint(1, 6)
            seq = [ids[(start + j) % num_items] for j in range(length + 1)]
            examples.append(Example(f"{name}{n}", tuple(seq[:-1]), seq[-1]))
        splits[name] = examples
    catalog = {item: f"item {item}" for item in reversed(ids)}
    return RecDataset("cycle", catalog, splits)


def test_score_shapes_and_item_order():
    ds = cycle_dataset()
    model = SASRecModel(ds.catalog, SASRecConfig(**SMALL))
    assert model.item_ids == sorted(ds.catalog)
    tokens = model.encode_histories([(5,), (5, 8, 11, 14, 17, 20)])
    # Left-padded, newest max_len=4 items kept, item item_ids[j] is token j + 1.
    assert tokens.tolist() == [[0, 0, 0, 1], [3, 4, 5, 6]]
    scores = model.score([(5,), (8, 11), (5, 8, 11, 14, 17, 20)])
    assert scores.shape == (3, 12) and torch.isfinite(scores).all()
    assert model.score([]).shape == (0, 12)
    with pytest.raises(ValueError, match="not in the model's catalogue"):
        model.score([(4,)])


def test_padding_and_batch_do_not_change_scores():
    ds = cycle_dataset()
    model = SASRecModel(ds.catalog, SASRecConfig(**SMALL)).eval()
    alone = model.score([(8, 11)])
    together = model.score([(8, 11), (5, 8, 11, 14), (20,)])
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    # A history longer than max_len is read as its newest max_len items.
    assert torch.allclose(model.score([(29, 5, 8, 11, 14)]), model.score([(5, 8, 11, 14)]), atol=1e-6)
    # Scoring (eval, no grad: PyTorch may take its fused inference path) equals the training forward pass.
    model.train()
    histories = [(8, 11), (5, 8, 11, 14), (20,)]
    assert torch.allclose(model(model.encode_histories(histories)), together, atol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(dim=10, heads=3)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)


def test_ranks_from_scores_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5],
                           [2.0, 2.0, 2.0, 2.0],
                           [2.0, 2.0, 2.0, 2.0],
                           [-1.0, -3.0, -2.0, 0.0]])
    targets = torch.tensor([2, 0, 3, 1])
    # Row 0: only 0.9 is above 0.5; the other 0.5 is at column 3 (after the target): rank 1.
    # Rows 1-2: all tied, ties by column: target 0 -> 0, target 3 -> 3. Row 3: lowest score -> 3.
    assert ranks_from_scores(scores, targets).tolist() == [1, 0, 3, 3]


def test_rank_targets_and_evaluation_on_a_fixed_score_matrix(monkeypatch):
    ds = cycle_dataset(num_items=4, per_split=(5, 3, 3))  # item ids 5, 8, 11, 14
    model = SASRecModel(ds.catalog, SASRecConfig(**SMALL))
    test = [Example("a", (5,), 11), Example("b", (8,), 5), Example("c", (11,), 14)]
    ds.splits["test"] = test
    fixed = torch.tensor([[0.0, 1.0, 3.0, 2.0],   # target 11 (column 2) is best: rank 0
                          [1.0, 1.0, 0.0, 2.0],   # target 5 (column 0): 14 above, 8 tied after it: rank 1
                          [4.0, 3.0, 2.0, 1.0]])  # target 14 (column 3) is last: rank 3
    monkeypatch.setattr(model, "score", lambda histories: fixed[: len(histories)])
    ranks = rank_targets(model, ds, "test")
    assert ranks == [0, 1, 3]
    result = evaluate_sasrec(model, ds, "test", ks=(1, 2), num_bootstrap=50)
    assert result["method"] == "sasrec" and result["protocol"] == "exact" and result["ranks"] == [0, 1, 3]
    assert result["top_items"] == [[11, 14], [14, 5], [5, 8]]
    summaries = result["summaries"]
    assert summaries["hr@1"]["value"] == pytest.approx(1 / 3)
    assert summaries["hr@2"]["value"] == pytest.approx(2 / 3)
    assert summaries["ndcg@2"]["value"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert summaries["ndcg@2"]["n"] == 3 and summaries["hr@2"]["lo"] <= 2 / 3 <= summaries["hr@2"]["hi"]
    assert result["coverage"] == {"coverage@1": 0.75, "coverage@2": 1.0}
    assert set(result) >= {"split", "num_examples", "summaries", "ranks", "top_items", "coverage", "config"}


def test_training_is_deterministic_by_seed():
    ds = cycle_dataset(per_split=(120, 20, 20))
    config = SASRecConfig(**{**SMALL, "dropout": 0.1}, epochs=2, patience=0)
    first, second = train_sasrec(ds, config), train_sasrec(ds, config)
    other = train_sasrec(ds, SASRecConfig(**{**SMALL, "dropout": 0.1}, epochs=2, patience=0, seed=1))
    histories = [ex.history for ex in ds.splits["test"]]
    assert torch.equal(first.score(histories), second.score(histories))
    assert not torch.allclose(first.score(histories), other.score(histories))
    assert first.train_history.epochs_run == 2 and len(first.train_history.records) == 2


def test_learns_next_item_is_last_plus_one():
    ds = cycle_dataset()
    model = train_sasrec(ds, SASRecConfig(**SMALL, epochs=60, lr=1e-2, patience=5))
    ranks = rank_targets(model, ds, "test")
    assert hit_rate_at_k(ranks, 1) == 1.0
    assert ndcg_at_k(ranks, 10) == 1.0
    history = model.train_history
    assert history.best_valid_ndcg10 == 1.0 and 1 <= history.best_epoch <= history.epochs_run
    # Early stopping kept the best epoch: NDCG@10 reached 1 and did not improve for `patience` epochs.
    assert history.stopped_early and history.epochs_run == history.best_epoch + 5


def test_save_and_load_round_trip(tmp_path):
    ds = cycle_dataset(per_split=(60, 10, 10))
    model = train_sasrec(ds, SASRecConfig(**SMALL, epochs=1, patience=0))
    save_sasrec(model, tmp_path / "sasrec")
    loaded = load_sasrec(tmp_path / "sasrec")
    histories = [ex.history for ex in ds.splits["test"]]
    assert loaded.item_ids == model.item_ids and loaded.config == model.config
    assert torch.equal(loaded.score(histories), model.score(histories))
    assert loaded.train_history.records == model.train_history.records
    with pytest.raises(FileNotFoundError, match="sasrec.json"):
        load_sasrec(tmp_path / "nowhere")


def test_cli_arguments_reach_the_config():
    from riser_lab.cli import build_parser

    args = build_parser().parse_args(["sasrec", "--data", "lastfm", "--seed", "4", "--out", "x"])
    assert (args.data, args.path, args.seed, args.out) == ("lastfm", None, 4, "x")
    assert args.func.__name__ == "_run_sasrec"
