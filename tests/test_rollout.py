"""The rollout engine: exact item distribution, validity, de-duplication, log-probs, modes, statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import naive_response_logprobs

from riser_lite.items.catalog import ItemSpace
from riser_lite.model.backbone import build_backbone, get_preset
from riser_lite.model.decoding import beam_search, encode_prompts
from riser_lite.rl.rewards import compute_rewards, rollout_stats
from riser_lite.rl.rollout import Groups, RolloutConfig, rollout

# Shared prefixes ("Blue ..."), a title that is a word-prefix of another ("Red" / "Red Sky"), a lone branch.
TITLES = dict(enumerate(["Blue Moon", "Blue Monday", "Blue Sky", "Red Sky", "Red", "Green Day"]))
PROMPTS = ["A user's recent items, oldest first:\n- Red\nNext item:\n",
           "A user's recent items, oldest first:\n- Blue Sky\n- Green Day\n- Red Sky\nNext item:\n",
           "Next item:\n"]  # three lengths: left padding differs per row


def _backbone(init_std: float, attention: str = "eager", seed: int = 0):
    # A larger init than the default makes the random policy clearly non-uniform over items.
    preset = get_preset("micro", init_std=init_std, attention=attention)
    model, tokenizer = build_backbone(TITLES, preset=preset, seed=seed)
    return model.eval(), tokenizer, ItemSpace(TITLES, tokenizer)


@pytest.fixture(scope="module")
def setup():
    return _backbone(0.3)


@pytest.fixture(scope="module")
def peaked():
    """A policy that puts almost no mass on some items, so groups often have fewer distinct items than G."""
    return _backbone(1.0)


def exact_item_probs(model, space, prompt_ids: list[int], temperature=1.0) -> dict[int, float]:
    """Brute force: P(item) = prod_t p(y_t | prefix) with p renormalised over the next tokens of the titles
    sharing the prefix (read off the response ids, not the trie), one full forward per item."""
    probs = {}
    for item, ids in space.response_ids.items():
        full = torch.tensor([prompt_ids + ids])
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, len(prompt_ids) - 1:-1].double() / temperature
        prob = 1.0
        for t, token in enumerate(ids):
            allowed = sorted({other[t] for other in space.response_ids.values()
                              if len(other) > t and other[:t] == ids[:t]})
            scores = logits[t, allowed]
            prob *= torch.softmax(scores, 0)[allowed.index(token)].item()
        probs[item] = prob
    return probs


def chi_square_p(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """p-value of Pearson's chi-square goodness-of-fit test (df = cells - 1)."""
    stat = ((observed - expected) ** 2 / expected).sum()
    df = observed.numel() - 1
    return torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat.double() / 2).item()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_constrained_sampling_matches_exact_item_distribution(setup, temperature):
    model, tokenizer, space = setup
    ids, mask = encode_prompts(tokenizer, PROMPTS[:1])
    exact = exact_item_probs(model, space, ids[0].tolist(), temperature)
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-9)
    draws = 4000
    cfg = RolloutConfig(mode="sample", group_size=draws, temperature=temperature, seed=3)
    groups = rollout(model, space, ids, mask, cfg)
    items = sorted(exact)
    observed = torch.bincount(groups.items[0], minlength=max(items) + 1)[items].double()
    expected = torch.tensor([exact[i] for i in items], dtype=torch.float64) * draws
    keep = expected > 0  # an item of probability 0 may never be drawn
    assert observed[~keep].sum() == 0
    assert (expected[keep] >= 5).all()  # the chi-square approximation needs enough expected counts
    assert chi_square_p(observed[keep], expected[keep]) > 1e-3
    # The test has power: the same counts reject a uniform distribution over the items.
    uniform = torch.full_like(expected[keep], draws / int(keep.sum()))
    assert chi_square_p(observed[keep], uniform) < 1e-3
    # item_prob is the exact probability of each sampled item.
    want = torch.tensor([exact[int(i)] for i in groups.items[0]], dtype=torch.float32)
    torch.testing.assert_close(groups.item_prob[0], want, rtol=1e-4, atol=1e-6)


def test_old_logp_equals_teacher_forcing_with_left_padding(setup):
    model, tokenizer, space = setup
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    assert len(set(mask.sum(1).tolist())) == 3  # three prompt lengths
    runs = [("sample", "raw"), ("dedup", "raw"), ("unconstrained", "raw"), ("sample", "constrained"),
            ("dedup", "constrained")]
    for mode, policy in runs:
        groups = rollout(model, space, ids, mask, RolloutConfig(mode=mode, group_size=5, seed=1,
                                                                temperature=1.5, policy=policy))
        # Independent reference: each rollout alone, unpadded, one full forward without a cache; the
        # constrained policy renormalises each step's logits over the children of the rollout's trie node.
        for n in range(groups.num_prompts * groups.group_size):
            p = n // groups.group_size
            prompt = ids[p][mask[p].bool()].tolist()
            length = int(groups.response_mask[n].sum())
            response = groups.response_ids[n, :length].tolist()
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + response])).logits[0, len(prompt) - 1:-1]
            logits = logits.float()
            if policy == "constrained":
                nodes, node = [], torch.zeros(1, dtype=torch.long)
                for token in response:
                    nodes.append(node)
                    node = space.trie.step(node, torch.tensor([token]))
                valid = space.trie.valid_mask(torch.cat(nodes))
                valid = torch.nn.functional.pad(valid, (0, logits.shape[1] - valid.shape[1]))
                logits = logits.masked_fill(~valid, float("-inf"))
            want = torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).squeeze(1)
            torch.testing.assert_close(groups.old_logp[n, :length], want, atol=2e-5, rtol=1e-5)
            assert (groups.old_logp[n, length:] == 0).all()
        # One plain forward of [prompt | response] per row agrees too: the PPO ratio starts at 1.
        prompts, prompt_mask = groups.expanded_prompts()
        trie = space.trie if policy == "constrained" else None
        logp, _ = naive_response_logprobs(model, prompts, prompt_mask, groups.response_ids,
                                          groups.response_mask, trie=trie)
        torch.testing.assert_close(groups.old_logp, logp, atol=2e-5, rtol=1e-5)


def test_old_logp_with_sdpa_attention_chunks_and_repeated_prefill(monkeypatch):
    model, tokenizer, space = _backbone(0.3, attention="sdpa", seed=1)
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    base = RolloutConfig(mode="dedup", group_size=3, oversample=5, seed=4)
    groups = rollout(model, space, ids, mask, base)
    # Same seed, prompts prefilled once per draw instead of once per prompt: the very same draws.
    again = rollout(model, space, ids, mask, RolloutConfig(**{**base.__dict__, "expand_cache": False}))
    assert torch.equal(groups.items, again.items)
    torch.testing.assert_close(groups.old_logp, again.old_logp, atol=1e-5, rtol=1e-5)
    # Prompts processed one per chunk and scoring in many small chunks: the log-probs stay exact.
    monkeypatch.setattr("riser_lite.rl.rollout.LOGIT_BUDGET", 1)
    chunked = rollout(model, space, ids, mask, RolloutConfig(**{**base.__dict__, "max_batch_sequences": 5}))
    prompts, prompt_mask = chunked.expanded_prompts()
    logp, _ = naive_response_logprobs(model, prompts, prompt_mask, chunked.response_ids,
                                      chunked.response_mask, trie=space.trie)
    torch.testing.assert_close(chunked.old_logp, logp, atol=2e-5, rtol=1e-5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), temperature=st.floats(0.2, 4.0),
       mode=st.sampled_from(["sample", "dedup"]), group=st.integers(1, 7))
def test_every_constrained_rollout_is_a_catalogue_item(setup, seed, temperature, mode, group):
    model, tokenizer, space = setup
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    cfg = RolloutConfig(mode=mode, group_size=group, temperature=temperature, seed=seed)
    groups = rollout(model, space, ids, mask, cfg)
    assert groups.items.shape == (3, group) and groups.valid.all()
    assert groups.response_ids.shape[0] == 3 * group
    for n, item in enumerate(groups.items.reshape(-1).tolist()):
        want = space.response_ids[item]
        assert groups.response_ids[n, : len(want)].tolist() == want
        assert int(groups.response_mask[n].sum()) == len(want)
        assert groups.branching[n, : len(want)].tolist() == space.branching[item]
        assert not groups.branching[n, len(want):].any()
        # A forced token (no branching) is drawn with probability 1.
        forced = groups.response_mask[n] & ~groups.branching[n]
        assert (groups.behaviour_logp[n][forced] == 0).all()
    assert ((groups.item_prob > 0) & (groups.item_prob <= 1 + 1e-6)).all()


@pytest.mark.parametrize("seed", range(6))
def test_dedup_keeps_every_distinct_item_drawn(peaked, seed):
    model, tokenizer, space = peaked
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    group, draws = 4, 9
    cfg = RolloutConfig(mode="dedup", group_size=group, oversample=draws, seed=seed)
    groups = rollout(model, space, ids, mask, cfg)
    # The m draws of dedup mode are those of sample mode with G = m and the same seed.
    raw = rollout(model, space, ids, mask, RolloutConfig(mode="sample", group_size=draws, seed=seed))
    assert raw.items.shape == (3, draws) and groups.num_samples_drawn == draws
    for p in range(3):
        drawn = raw.items[p].tolist()
        distinct = list(dict.fromkeys(drawn))  # in order of first appearance
        repeats = [item for k, item in enumerate(drawn) if item in drawn[:k]]
        assert groups.items[p].tolist() == (distinct + repeats)[:group]
        assert len(set(groups.items[p].tolist())) == min(group, len(distinct))
        assert groups.duplicate_counts[p].tolist() == [drawn.count(i) for i in groups.items[p].tolist()]
    # Each raw draw's log-prob is its item's probability; the kept ones agree with item_prob.
    exact = exact_item_probs(model, space, ids[0][mask[0].bool()].tolist())
    want = torch.tensor([math.log(exact[i]) for i in raw.items[0].tolist()])
    torch.testing.assert_close(raw.item_prob[0].log(), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(groups.item_prob[0].log(), torch.tensor(
        [math.log(exact[i]) for i in groups.items[0].tolist()]), atol=1e-4, rtol=1e-4)


def test_sample_mode_draws_with_replacement_and_is_deterministic(peaked):
    model, tokenizer, space = peaked
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    cfg = RolloutConfig(mode="sample", group_size=8, seed=11)
    a, b = rollout(model, space, ids, mask, cfg), rollout(model, space, ids, mask, cfg)
    assert torch.equal(a.items, b.items)
    assert torch.equal(a.old_logp, b.old_logp)
    assert (a.duplicate_counts > 1).any()  # the peaked policy repeats items when drawing with replacement
    c = rollout(model, space, ids, mask, RolloutConfig(mode="sample", group_size=8, seed=12))
    assert not torch.equal(a.items, c.items)


def test_unconstrained_mode_parses_text_to_items():
    model, tokenizer, space = _backbone(0.3)
    ids, mask = encode_prompts(tokenizer, PROMPTS[:2])
    # A random model writes no titles: every rollout is invalid (-1), with its text kept for inspection.
    cfg = RolloutConfig(mode="unconstrained", group_size=6, seed=0, max_new_tokens=6)
    groups = rollout(model, space, ids, mask, cfg)
    assert (groups.items == -1).all() and not groups.valid.any()
    assert len(groups.texts) == 12 and groups.response_mask.sum(1).max() <= 6
    # Teach it one title, then free sampling mostly writes that title and parses back to its item.
    target = space.response_ids[2]  # "Blue Sky"
    sequence = torch.tensor([ids[0][mask[0].bool()].tolist() + target])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        model(input_ids=sequence, labels=sequence).loss.backward()
        optimizer.step()
    model.eval()
    cfg = RolloutConfig(mode="unconstrained", group_size=6, seed=0, temperature=0.5)
    groups = rollout(model, space, ids[:1], mask[:1], cfg)
    assert (groups.items == 2).sum() >= 4
    for n, text in enumerate(groups.texts):
        assert int(groups.items.reshape(-1)[n]) == space.parse(text)
    hit = int((groups.items.reshape(-1) == 2).nonzero()[0])
    assert groups.response_ids[hit, : len(target)].tolist() == target
    assert groups.branching[hit, : len(target)].tolist() == space.branching[2]


def raw_item_logprobs(model, space, prompt_ids: list[int]) -> dict[int, float]:
    """Brute force log P(item | prompt) under the raw model (what beam search ranks by)."""
    out = {}
    for item, ids in space.response_ids.items():
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1:-1]
        out[item] = torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(ids)[:, None]).sum().item()
    return out


def test_beam_mode_returns_distinct_items_in_beam_order(setup):
    model, tokenizer, space = setup
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    for policy in ("raw", "constrained"):
        groups = rollout(model, space, ids, mask, RolloutConfig(mode="beam", group_size=4, policy=policy))
        result = beam_search(model, space, ids, mask, num_beams=4, policy=policy)
        assert torch.equal(groups.items, result.items)
        assert groups.valid.all() and (groups.duplicate_counts == 1).all()
        assert all(len(set(row)) == 4 for row in groups.items.tolist())
        # old_logp is the teacher-forced log-prob under the policy, as in the sampling modes.
        prompts, prompt_mask = groups.expanded_prompts()
        trie = space.trie if policy == "constrained" else None
        logp, _ = naive_response_logprobs(model, prompts, prompt_mask, groups.response_ids,
                                          groups.response_mask, trie=trie)
        torch.testing.assert_close(groups.old_logp, logp, atol=2e-5, rtol=1e-5)
    # With as many beams as items the search is exhaustive: all items, by exact log P(item | prompt).
    groups = rollout(model, space, ids, mask, RolloutConfig(mode="beam", group_size=6, policy="raw"))
    for p in range(3):
        exact = raw_item_logprobs(model, space, ids[p][mask[p].bool()].tolist())
        assert groups.items[p].tolist() == sorted(exact, key=exact.get, reverse=True)
        want = torch.tensor([math.exp(exact[i]) for i in groups.items[p].tolist()], dtype=torch.float32)
        torch.testing.assert_close(groups.item_prob[p], want, rtol=1e-4, atol=1e-7)
        n = p * 6
        assert groups.branching[n, : len(space.branching[int(groups.items[p, 0])])].tolist() == \
            space.branching[int(groups.items[p, 0])]


def test_lora_wrapped_model_gives_the_same_rollouts(setup):
    from riser_lite.model.backbone import add_lora

    model, tokenizer, space = _backbone(0.3)
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    cfg = RolloutConfig(mode="dedup", group_size=3, seed=5)
    plain = rollout(model, space, ids, mask, cfg)
    lora = add_lora(model, r=4)  # fresh adapters are a no-op: same policy, same draws
    wrapped = rollout(lora, space, ids, mask, cfg)
    assert torch.equal(plain.items, wrapped.items)
    torch.testing.assert_close(plain.old_logp, wrapped.old_logp, atol=1e-5, rtol=1e-5)


def test_any_hf_causal_lm_works(setup):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer, space = setup
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2,
                                       n_head=2, initializer_range=0.3)).eval()
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    groups = rollout(model, space, ids, mask, RolloutConfig(mode="dedup", group_size=3, seed=0))
    assert groups.valid.all()
    prompts, prompt_mask = groups.expanded_prompts()
    logp, _ = naive_response_logprobs(model, prompts, prompt_mask, groups.response_ids,
                                      groups.response_mask, trie=space.trie)
    torch.testing.assert_close(groups.old_logp, logp, atol=2e-5, rtol=1e-5)


def _hand_groups() -> Groups:
    items = torch.tensor([[1, 1, 2], [3, -1, 3]])
    n, t = 6, 2
    return Groups(
        prompt_ids=torch.ones(2, 2, dtype=torch.long), prompt_mask=torch.ones(2, 2, dtype=torch.long),
        items=items, response_ids=torch.arange(n * t).view(n, t),
        response_mask=torch.ones(n, t, dtype=torch.bool), old_logp=torch.zeros(n, t),
        behaviour_logp=torch.zeros(n, t), branching=torch.zeros(n, t, dtype=torch.bool),
        duplicate_counts=torch.tensor([[2, 2, 1], [2, 1, 2]]), valid=items >= 0,
        item_prob=torch.tensor([[0.2, 0.2, 0.1], [0.3, 0.0, 0.3]]), num_samples_drawn=3, mode="sample")


def test_rewards_and_stats_by_hand():
    groups, targets = _hand_groups(), torch.tensor([1, 0])
    assert compute_rewards(groups, targets).tolist() == [[1, 1, 0], [0, 0, 0]]
    penalty = (1 / math.log2(4)) / sum(1 / math.log2(k + 2) for k in range(3))
    torch.testing.assert_close(compute_rewards(groups, targets, "rank"),
                               torch.tensor([[1.0, 1.0, -penalty], [0.0, 0.0, 0.0]]))
    custom = compute_rewards(groups, targets, lambda items, tgt: (items == 3).float())
    assert custom.tolist() == [[0, 0, 0], [1, 0, 1]]
    stats = rollout_stats(groups, targets)
    assert stats["learnable_fraction"] == 0.5 and stats["all_miss_fraction"] == 0.5
    assert stats["hit_rate"] == pytest.approx(2 / 6)
    assert stats["reward_var"] == pytest.approx((2 / 9) / 2)
    assert stats["unique_items_per_group"] == 1.5  # {1, 2} and {3}; the invalid rollout names no item
    assert stats["duplicate_rate"] == pytest.approx(2 / 6)
    assert stats["valid_rate"] == pytest.approx(5 / 6)
    assert stats["group_prob_mass"] == pytest.approx((0.3 + 0.3) / 2)
    with pytest.raises(ValueError, match="one target per prompt"):
        compute_rewards(groups, torch.tensor([1]))
    with pytest.raises(ValueError, match="returned shape"):
        compute_rewards(groups, targets, lambda items, tgt: items[:, :1].float())


def test_groups_select():
    groups = _hand_groups()
    second = groups.select(torch.tensor([False, True]))
    assert second.items.tolist() == [[3, -1, 3]]
    assert torch.equal(second.response_ids, groups.response_ids[3:])
    assert groups.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]


def test_bad_inputs_are_named(setup):
    model, tokenizer, space = setup
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    for kwargs, message in [({"mode": "greedy"}, "mode must be one of"), ({"group_size": 0}, "group_size"),
                            ({"mode": "dedup", "group_size": 4, "oversample": 2}, "oversample"),
                            ({"temperature": 0.0}, "temperature")]:
        with pytest.raises(ValueError, match=message):
            rollout(model, space, ids, mask, RolloutConfig(**kwargs))
    with pytest.raises(ValueError, match="left-padded"):
        rollout(model, space, ids.flip(1), mask.flip(1), RolloutConfig())
    with pytest.raises(ValueError, match="one shape"):
        rollout(model, space, ids, mask[:, 1:], RolloutConfig())


def test_cli_prints_group_statistics(tmp_path, capsys):

    from riser_lab.cli import main
    from riser_lite.data import load_dataset
    from riser_lite.runs import dataset_spec, save_run

    dataset = load_dataset("synthetic")
    model, tokenizer = build_backbone(dataset, preset="micro", seed=0)
    save_run(tmp_path / "run", model, tokenizer, {"data": dataset_spec("synthetic")})
    args = ["rollout", "--run", str(tmp_path / "run"), "--mode", "dedup", "--group-size", "4",
            "--num-prompts", "3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("dedup rollouts, G=4, 8 draws per prompt, 3 train prompts")
    stats = dict(line.split() for line in text.splitlines()[1:] if len(line.split()) == 2)
    assert float(stats["groups"]) == 3 and float(stats["valid_rate"]) == 1.0
    assert "learnable_fraction" in stats and "target:" in text
