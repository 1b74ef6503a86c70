"""Dropout hooked onto a model without its own (SFTConfig.dropout, riser_lite.model.dropout)."""

import pytest
import torch

from riser_lab.cli import main
from riser_lite.model.backbone import build_backbone
from riser_lite.model.dropout import add_residual_dropout
from riser_lite.sft import SFTConfig, train_sft
from tests.test_sft import cycle_dataset, fast, weights

TITLES = ["Red Apple", "Blue Moon", "Green Field", "Silver Lake", "Golden Gate", "Quiet Night"]


def logits(model, ids):
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_embeddings_keep_or_zero_each_value_with_the_survivors_scaled():
    model, tok = build_backbone(TITLES, "micro", seed=0)
    ids = torch.tensor([tok("Red Apple Blue Moon")["input_ids"]])
    plain = model.get_input_embeddings()(ids)
    model.train()
    torch.manual_seed(0)
    hooks = add_residual_dropout(model, 0.5)
    dropped = model.get_input_embeddings()(ids)
    assert len(hooks) == 1 + 2 * model.config.num_hidden_layers  # embeddings, attention and MLP of each block
    zero = dropped == 0
    assert torch.allclose(dropped[~zero], plain[~zero] * 2.0)  # 1 / (1 - p)
    assert 0.3 < zero.float().mean().item() < 0.7


def test_dropout_acts_in_training_only_and_is_removed_completely():
    model, tok = build_backbone(TITLES, "micro", seed=0)
    ids = torch.tensor([tok("Green Field Silver Lake")["input_ids"]])
    model.eval()
    plain = logits(model, ids)
    handles = add_residual_dropout(model, 0.3)
    assert torch.equal(logits(model, ids), plain)  # eval mode: the hooks pass outputs through
    model.train()
    assert not torch.allclose(logits(model, ids), plain)
    for handle in handles:
        handle.remove()
    assert torch.equal(logits(model, ids), plain)  # train mode, hooks gone: the plain model again
    assert add_residual_dropout(model, 0.0) == []


def test_bad_dropout_is_refused():
    model, _ = build_backbone(TITLES, "micro", seed=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        add_residual_dropout(model, 1.0)
    with pytest.raises(ValueError, match="has none"):
        add_residual_dropout(EmbeddingOnly(), 0.1)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got -0.1"):
        SFTConfig(dropout=-0.1)


class EmbeddingOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(4, 2)

    def get_input_embeddings(self):
        return self.embed


def test_sft_with_dropout_trains_other_weights_and_saves_a_plain_model(tmp_path, capsys):
    ds = cycle_dataset()
    embeddings = []
    for p in (0.0, 0.2):
        model, tok = build_backbone(ds, "micro", seed=0)
        train_sft(ds, model, tok, fast(dropout=p))
        embeddings.append(weights(model)["model.embed_tokens.weight"])
        hooks = [m for m in model.modules() if m._forward_hooks]
        assert hooks == []  # the returned (and saved) model is the plain architecture
    assert not torch.equal(*embeddings)
    assert fast(dropout=0.2).recipe()["dropout"] == 0.2 and fast().recipe()["dropout"] == 0.0
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--dropout", "1", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "--dropout" in capsys.readouterr().err
