"""The trie-constrained policy: what RL trains is what rollouts sample and evaluation ranks.

Under the constrained policy log π_c(y_t) = z_{y_t} − logsumexp of the logits the trie allows at that
node; the raw policy is the plain log-softmax. These tests pin its defining properties on a micro model.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riser_lite.eval.evaluate import EvalConfig, evaluate
from riser_lite.items.catalog import ItemSpace
from riser_lite.model.forward import policy_log_softmax, trie_nodes, valid_token_mask
from riser_lite.model.policy_logp import response_logprobs
from riser_lite.rl.batch import sequence_logprobs
from riser_lite.rl.config import EVAL_KS, RLConfig
from riser_lite.rl.trainer import collect_step, train_rl


def config(algo="riser", **overrides) -> RLConfig:
    base = {"steps": 2, "prompts_per_step": 4, "eval_every": 0, "lr": 1e-3, "group_size": 4}
    return RLConfig(algo=algo, **{**base, **overrides})


# Raw-policy results of the trainer before the constrained policy existed (same micro model, data and seed;
# one torch thread): `policy="raw"` must reproduce them. GRPO / ReRe / RISER with β = 0.1, 3 steps.
# "val_ndcg@10" was validated with lists ranked by raw log P(item), "val_ndcg@10_constrained" is the same
# model's validation under the constrained ranking that validation uses by default. GRPO's checksum is
# 207.76040787999227 since rollouts record the raw old_logp with the trainer's own log-softmax
# (`response_logprobs`) rather than gather - logsumexp: equal up to float rounding, 2.4e-8 relative here.
RAW_BEFORE = {
    "grpo": {"loss": [-0.014235679060220718, 0.0, 0.008587760850787163], "checksum": 207.76040787999227},
    "rere": {"checksum": 161.26319059684465},
    "riser": {"loss": [0.7419995069503784, 0.8717679679393768, 1.0034869015216827],
              "grad_norm": [2.8542089462280273, 2.856043815612793, 2.823460102081299],
              "entropy": [5.8189568519592285, 5.8161091804504395, 5.802631378173828],
              "val_ndcg@10": 0.12053288586309885, "val_ndcg@10_constrained": 0.174367455622273,
              "checksum": 164.582135241566},
}


def _all_items(space):
    items = list(space.item_ids)
    return items, *space.response_batch(items)


def _one_prompt(dataset, tokenizer, rows: int):
    from riser_lite.items.prompts import example_prompt
    from riser_lite.model.decoding import encode_prompts

    ids, mask = encode_prompts(tokenizer, [example_prompt(dataset.splits["test"][0], dataset.catalog, 10)])
    return ids.expand(rows, -1), mask.expand(rows, -1)


@pytest.mark.parametrize("policy", ["constrained", "raw"])
def test_first_pass_ratio_is_one(micro_start, policy):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    for algo in ("grpo", "rere", "riser"):
        data = collect_step(model, space, ds.splits["train"][:5], ds.catalog, ds.max_history,
                            config(algo, policy=policy), seed=3)
        with torch.no_grad():
            logp, _ = sequence_logprobs(model, data.batch)
        rollout_rows = data.batch.is_rollout
        ratio = torch.exp(logp[rollout_rows] - data.batch.old_logp[rollout_rows])
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=2e-5, rtol=0)


def test_constrained_item_probabilities_sum_to_one_and_forced_tokens_cost_nothing(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    items, ids, mask, branching = _all_items(space)
    p_ids, p_mask = _one_prompt(ds, tokenizer, len(items))
    with torch.no_grad():
        constrained, diagnostics = response_logprobs(model, p_ids, p_mask, ids, mask, with_entropy=True,
                                                     trie=space.trie)
        raw, _ = response_logprobs(model, p_ids, p_mask, ids, mask)
    item_prob = constrained.sum(1).double().exp()
    assert item_prob.sum().item() == pytest.approx(1.0, abs=1e-5)  # a distribution over the catalogue
    assert raw.sum(1).double().exp().sum().item() < 1.0 - 1e-3  # the raw policy leaks mass off the trie
    forced = mask & ~branching
    assert forced.any() and constrained[forced].abs().max().item() < 1e-6  # log π_c = 0: no decision
    assert (constrained[mask] >= raw[mask] - 1e-6).all()  # renormalising never lowers a valid token
    mass = diagnostics.valid_mass[mask]
    assert (mass > 0).all() and (mass < 1).all()
    # The entropy is over valid tokens only: exactly 0 on forced tokens.
    assert diagnostics.entropy[forced].abs().max().item() < 1e-6


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6))
def test_no_gradient_reaches_a_forbidden_token(micro_start, seed, rows):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    items, ids, mask, _ = _all_items(space)
    pick = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:rows]
    ids, mask = ids[pick], mask[pick]
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, ids.shape[1], model.config.vocab_size, generator=generator, requires_grad=True)
    nodes = trie_nodes(space.trie, ids).clamp(min=0)
    valid = valid_token_mask(space.trie, nodes.reshape(-1), logits.shape[-1]).view(logits.shape)
    logp = policy_log_softmax(logits, valid).gather(-1, ids[..., None]).squeeze(-1)
    (logp * mask).sum().backward()
    forbidden = ~valid & mask[..., None]
    assert logits.grad[forbidden].abs().max().item() == 0.0
    assert logits.grad[valid & mask[..., None]].abs().sum().item() > 0.0


def test_raw_policy_reproduces_the_trainer_before_the_switch(micro_start):
    _, tokenizer, dataset = micro_start()
    for algo, extra in (("grpo", {}), ("rere", {}), ("riser", {"beta_kl": 0.1})):
        from riser_lite.model.backbone import build_model, get_preset

        model = build_model(get_preset("micro"), tokenizer, seed=0)
        cfg = RLConfig(algo=algo, steps=3, prompts_per_step=4, eval_every=3, eval_examples=8, lr=1e-2,
                       group_size=4, seed=5, policy="raw", **extra)
        result = train_rl((model, tokenizer, dataset), cfg)
        want = RAW_BEFORE[algo]
        checksum = float(sum(p.detach().double().sum() for p in result.model.parameters()))
        assert checksum == pytest.approx(want["checksum"], rel=1e-9)
        for key in ("loss", "grad_norm", "entropy"):
            if key in want:
                assert [r[key] for r in result.records] == pytest.approx(want[key], rel=1e-6, abs=1e-9)
        if "val_ndcg@10" in want:
            assert result.records[-1]["val_ndcg@10"] == pytest.approx(want["val_ndcg@10_constrained"],
                                                                       abs=1e-12)
            # The same validation ranked by the raw scores gives the number from before the switch.
            raw = evaluate(result.model, tokenizer, dataset, config=EvalConfig(
                split="valid", protocol="beam", ks=EVAL_KS, num_beams=max(EVAL_KS),
                max_examples=cfg.eval_examples, num_bootstrap=100, baselines=False, seed=cfg.seed,
                policy="raw"))
            assert raw.metrics["ndcg@10"] == pytest.approx(want["val_ndcg@10"], abs=1e-12)


def test_records_show_the_raw_mass_on_valid_tokens(micro_start):
    for policy in ("constrained", "raw"):
        (record,) = train_rl(micro_start(), config("grpo", steps=1, policy=policy)).records
        assert record["policy"] == policy and 0.0 < record["valid_mass"] < 1.0


def test_evaluation_can_rank_by_the_constrained_policy(micro_start):
    model, tokenizer, dataset = micro_start()
    space = ItemSpace(dataset.catalog, tokenizer)
    ranks = {}
    for protocol in ("beam", "exact"):
        for policy in ("raw", "constrained"):
            config = EvalConfig(split="test", protocol=protocol, num_beams=24, ks=(1, 5, 10, 20),
                                policy=policy, baselines=False, num_bootstrap=10)
            ranks[protocol, policy] = evaluate(model, tokenizer, dataset, space, config).ranks
    # With as many beams as items, beam search is exhaustive: it ranks as the exact scorer, per policy.
    assert ranks["beam", "raw"] == ranks["exact", "raw"]
    assert ranks["beam", "constrained"] == ranks["exact", "constrained"]
    # The constrained ranking is the order of the item probabilities under pi_c (a distribution: sums to 1).
    from riser_lite.items.prompts import example_prompt
    from riser_lite.model.decoding import encode_prompts, score_all_items

    example = dataset.splits["test"][0]
    ids, mask = encode_prompts(tokenizer, [example_prompt(example, dataset.catalog, dataset.max_history)])
    probs = score_all_items(model, space, ids, mask, policy="constrained").double().exp()[0]
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    target_prob = probs[space.index_of[example.target]]
    assert ranks["exact", "constrained"][0] == int((probs > target_prob).sum())
    with pytest.raises(ValueError, match="policy must be"):
        EvalConfig(policy="greedy").validate()
