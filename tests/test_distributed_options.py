"""Data-parallel arithmetic in one process, and the GPU option (bf16 autocast)."""

import pytest
import torch
from test_sft import cycle_dataset, fast

from riser_lite import distributed
from riser_lite.model.backbone import build_backbone
from riser_lite.sft import (
    ResponseNLL,
    SFTConfig,
    collate,
    encode_examples,
    step_share,
    train_sft,
)


@pytest.mark.parametrize("n, world", [(7, 2), (1, 2), (10, 3), (0, 2), (5, 1)])
def test_shares_cover_every_item_once_in_order(n, world):
    parts = [distributed.share(list(range(n)), rank, world) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    batches = [list(distributed.my_batches(n, rank, world)) for rank in range(world)]
    assert sorted(b for part in batches for b in part) == list(range(n))


def test_share_gradients_average_to_the_global_batch_gradient():
    """What DDP computes, done by hand: each share's loss x world, gradients averaged over processes."""
    ds = cycle_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    train = encode_examples(ds.splits["train"], ds.catalog, tok, 10)
    nll = ResponseNLL(model)
    for batch in ([0, 5, 9, 14, 20, 27, 33], [3]):  # 7 examples: shares of 3 and 4; 1 example: one empty
        model.zero_grad()
        whole = collate([train[i] for i in batch], tok.pad_token_id)
        (nll(**whole) / sum(len(train[i][1]) for i in batch)).backward()
        expected = {k: p.grad.clone() for k, p in model.named_parameters()}
        averaged = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
        for rank in range(2):
            model.zero_grad()
            share, count, weight = step_share(train, batch, tok.pad_token_id, rank, 2)
            assert weight == (0.0 if len(batch) == 1 and rank == 0 else 1.0)  # shares [], [3]
            (nll(**share) / count * weight * 2).backward()
            for k, p in model.named_parameters():
                averaged[k] += p.grad / 2
        for k in expected:
            torch.testing.assert_close(averaged[k], expected[k], rtol=1e-5, atol=1e-7)


def test_bf16_autocast_changes_the_forward_but_keeps_fp32_weights():
    ds = cycle_dataset()
    losses = {}
    for precision in ("no", "bf16"):
        model, tok = build_backbone(ds, "micro", seed=0)
        records = []
        train_sft(ds, model, tok, fast(epochs=1, mixed_precision=precision), on_step=records.append)
        losses[precision] = [r["loss"] for r in records if r["event"] == "train"]
        assert all(p.dtype == torch.float32 for p in model.parameters())
    first_fp32, first_bf16 = losses["no"][0], losses["bf16"][0]
    assert first_bf16 != first_fp32  # autocast really ran the matmuls in bf16 ...
    assert first_bf16 == pytest.approx(first_fp32, abs=0.05)  # ... with bf16's ~3 significant digits
    with pytest.raises(ValueError, match="mixed_precision"):
        SFTConfig(mixed_precision="fp8")
    # fp32 keeps the recipe that run folders made before the option recorded, so they still resume
    assert SFTConfig().recipe()["mixed_precision"] == "no"
    assert SFTConfig(mixed_precision="bf16").recipe()["mixed_precision"] == "bf16"
