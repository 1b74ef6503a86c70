"""Pairs exported by riser_lite train TRL's DPOTrainer and CPOTrainer (SimPO) with the same conventions.

Skipped only where trl is not installed (`pip install -e ".[trl]"`; `make setup` installs it). Each trainer
runs two steps on a micro model from `pairs_to_dataset`, one pair per step, in fp32 (TRL's configs default
to bf16=True, which on CPU changes the log-probs: see docs/scale.md).
"""

import copy

import pytest
import torch
from test_sft import cycle_dataset

from riser_lite.items.prompts import encode_prompt, encode_response, example_prompt
from riser_lite.model.backbone import build_backbone
from riser_lite.rl.losses import simpo_loss
from riser_lite.rl.pairs import convert_groups_to_pairs, pairs_to_dataset

trl = pytest.importorskip("trl")


def exported_pairs():
    """Four no-hit groups of two rollouts -> eight (target, rolled-out miss) pairs, as RISER makes them."""
    ds = cycle_dataset()
    examples = ds.splits["train"][:4]
    rollouts = torch.tensor([[(e.target + 1) % 6, (e.target + 2) % 6] for e in examples])
    targets = torch.tensor([e.target for e in examples])
    pairs, info = convert_groups_to_pairs(rollouts, targets, torch.zeros(4, 2))
    assert info["groups_converted"] == 4 and info["pairs"] == 8
    prompts = [example_prompt(e, ds.catalog, 10) for e in examples]
    return ds, pairs_to_dataset(pairs, prompts, ds.catalog)


@torch.no_grad()
def our_logps(model, tok, ds, row) -> tuple[list[float], list[float]]:
    """Per-token log-probs of the chosen and rejected responses, with this package's template."""
    out = []
    for item in (row["chosen_item"], row["rejected_item"]):
        prompt = encode_prompt(tok, row["prompt"])
        response = encode_response(tok, ds.catalog[item])
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        out.append([logp[len(prompt) + j - 1, t].item() for j, t in enumerate(response)])
    return out[0], out[1]


def trainer_args(config_class, tmp_path, **extra):
    return config_class(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=1,
                        learning_rate=1e-3, bf16=False, use_cpu=True, report_to="none", logging_steps=1,
                        save_strategy="no", seed=0, **extra)


def dpo_trainer(model, tok, data, tmp_path):
    args = trainer_args(trl.DPOConfig, tmp_path)
    return trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=data,
                          processing_class=tok)


def test_trl_tokenizes_the_exported_pairs_to_our_template(tmp_path):
    ds, data = exported_pairs()
    model, tok = build_backbone(ds, "micro", seed=0)
    trainer = dpo_trainer(model, tok, data, tmp_path)
    for row, tokenized in zip(data, trainer.train_dataset, strict=True):
        assert tokenized["prompt_ids"] == encode_prompt(tok, row["prompt"])
        assert tokenized["chosen_ids"] == encode_response(tok, ds.catalog[row["chosen_item"]])
        assert tokenized["rejected_ids"] == encode_response(tok, ds.catalog[row["rejected_item"]])


def test_dpo_trainer_takes_two_steps_from_exported_pairs(tmp_path):
    ds, data = exported_pairs()
    model, tok = build_backbone(ds, "micro", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sums = {sum(c) for c, _ in (our_logps(model, tok, ds, row) for row in data)}
    trainer = dpo_trainer(model, tok, data, tmp_path)
    trainer.train()
    first, second = [r for r in trainer.state.log_history if "loss" in r]
    assert first["loss"] == pytest.approx(0.6931472, abs=1e-6)  # policy = reference: -log sigmoid(0) = ln 2
    assert min(abs(first["logps/chosen"] - s) for s in sums) < 1e-4  # DPO scores summed log-probs, as ours
    assert second["loss"] < first["loss"] and second["rewards/accuracies"] == 1.0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cpo_trainer_simpo_matches_our_simpo_loss(tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    ds, data = exported_pairs()
    model, tok = build_backbone(ds, "micro", seed=0)
    means = {sum(c) / len(c) for c, _ in (our_logps(model, tok, ds, row) for row in data)}
    # cpo_alpha=0: pure SimPO (the default 1.0 adds the chosen responses' NLL); our beta and gamma.
    args = trainer_args(CPOConfig, tmp_path, loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5)
    trainer = CPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    first = [r for r in trainer.state.log_history if "loss" in r][0]
    chosen, rejected = first["logps/chosen"], first["logps/rejected"]  # per-token means under SimPO
    assert min(abs(chosen - m) for m in means) < 1e-4  # the same length-normalised score as ours
    one = torch.ones(1, 1)
    ours, _ = simpo_loss(torch.tensor([[chosen]]), one, torch.tensor([[rejected]]), one, beta=2.0, gamma=0.5)
    assert first["loss"] == pytest.approx(ours.item(), abs=1e-5)
    assert len([r for r in trainer.state.log_history if "loss" in r]) == 2
