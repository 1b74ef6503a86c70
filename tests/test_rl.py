"""The RL trainer: teacher-forced log-probs, the step's sequence table, and whole runs on a micro model."""

import json

import pytest
import torch
from naive import naive_response_logprobs

from riser_lab.compare import same_budget
from riser_lite.items.catalog import ItemSpace
from riser_lite.model.policy_logp import response_logprobs
from riser_lite.rl.batch import minibatch_loss
from riser_lite.rl.config import RLConfig
from riser_lite.rl.losses import certainty_weights
from riser_lite.rl.pairs import pairs_to_dataset
from riser_lite.rl.trainer import collect_step, train_rl
from riser_lite.runs import read_metrics

# The metrics every RL record carries (the contract with plots and widgets).
RECORD_KEYS = {
    "step", "rollouts_used", "learnable_fraction", "converted_groups", "pairs", "gradient_prompt_fraction",
    "unique_items_per_group", "hit_rate", "reward_mean", "reward_var", "grpo/clip_frac_low",
    "grpo/clip_frac_high", "grpo/approx_kl", "entropy", "valid_mass", "grad_norm", "loss", "grpo/loss",
    "pair/loss", "lr", "time_s", "policy",
}
TIME_KEYS = {"time_s", "step_time_s", "rollout_time_s", "update_time_s", "eval_time_s"}


def config(algo="riser", **overrides) -> RLConfig:
    base = {"steps": 2, "prompts_per_step": 4, "eval_every": 0, "lr": 1e-3, "group_size": 4}
    return RLConfig(algo=algo, **{**base, **overrides})


def strip_time(records):
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


# ----------------------------------------------------------------------------------------- log-probs

def test_response_logprobs_match_unpadded_forwards(micro_backbone):
    model, _ = micro_backbone
    prompts, responses = [[3, 4, 5, 6], [7, 8], [9, 10, 11]], [[1, 2, 3], [4], [5, 6]]
    s, t = max(map(len, prompts)), max(map(len, responses))
    p_ids, p_mask = torch.zeros(3, s, dtype=torch.long), torch.zeros(3, s, dtype=torch.long)
    r_ids, r_mask = torch.zeros(3, t, dtype=torch.long), torch.zeros(3, t, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        p_ids[i, s - len(p):], p_mask[i, s - len(p):] = torch.tensor(p), 1
        r_ids[i, :len(r)], r_mask[i, :len(r)] = torch.tensor(r), True
    with torch.no_grad():
        logp, diagnostics = response_logprobs(model, p_ids, p_mask, r_ids, r_mask, with_entropy=True)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            logits = model(input_ids=torch.tensor([p + r])).logits[0].float()
            expected = torch.log_softmax(logits, -1)[len(p) - 1:len(p) + len(r) - 1]
            picked = expected.gather(-1, torch.tensor(r)[:, None]).squeeze(-1)
            torch.testing.assert_close(logp[i, :len(r)], picked, atol=1e-5, rtol=0)
            ent = -(expected.exp() * expected).sum(-1)
            torch.testing.assert_close(diagnostics.entropy[i, :len(r)], ent, atol=1e-5, rtol=0)
    assert diagnostics.valid_mass[r_mask].eq(1).all()  # the raw policy has no trie to leak from
    assert logp[1, 1:].eq(0).all() and logp[2, 2:].eq(0).all()  # padding holds 0


def test_teacher_forcing_reproduces_rollout_old_logp(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    data = collect_step(model, space, ds.splits["train"][:5], ds.catalog, ds.max_history, config(), seed=3)
    groups = data.groups
    prompt_ids, prompt_mask = groups.expanded_prompts()
    with torch.no_grad():
        logp, _ = naive_response_logprobs(model, prompt_ids, prompt_mask, groups.response_ids,
                                          groups.response_mask, trie=space.trie)
    # The PPO ratio must start at 1: the trainer recomputes exactly what the rollout recorded.
    assert data.batch.trie is space.trie  # the constrained policy is the default
    torch.testing.assert_close(logp, groups.old_logp, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------- the step's table

def test_step_batch_rows_hold_the_right_responses_and_weights(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    cfg = config(group_size=4)
    d = RLConfig.certainty_d
    data = collect_step(model, space, ds.splits["train"][:6], ds.catalog, ds.max_history, cfg, seed=1)
    batch, groups = data.batch, data.groups
    num_rollouts = groups.items.numel()
    assert data.pairs, "a random model should miss, giving pairs"
    for pair, c, r in zip(data.pairs, batch.chosen_rows.tolist(), batch.rejected_rows.tolist(), strict=True):
        assert c >= num_rollouts and batch.row_prompt[c] == pair.prompt_index
        assert r < num_rollouts and r // 4 == pair.prompt_index
        ids = batch.tokens[c][batch.mask[c]].tolist()
        assert ids == space.response_ids[pair.chosen_item]
        assert pair.chosen_item == data.targets[pair.prompt_index]
        assert batch.tokens[r][batch.mask[r]].tolist() == space.response_ids[pair.rejected_item]
        flags = torch.tensor(space.branching[pair.chosen_item])
        expected = torch.where(flags, 1.0, d)
        torch.testing.assert_close(batch.weights[c][batch.mask[c]], expected)
    # GRPO rows are exactly the rollouts of the learnable groups, with their advantages.
    learnable_rows = data.learnable.repeat_interleave(4).nonzero().squeeze(1)
    assert batch.grpo_rows.tolist() == learnable_rows.tolist()
    torch.testing.assert_close(batch.advantages, data.advantages.reshape(-1)[learnable_rows])
    torch.testing.assert_close(batch.weights[:num_rollouts],
                               certainty_weights(groups.branching, groups.response_mask, d))


def test_a_reordered_step_keeps_every_row(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    data = collect_step(model, space, ds.splits["train"][:6], ds.catalog, ds.max_history, config(), seed=2)
    batch = data.batch
    shuffled = batch.subset(torch.tensor([3, 0, 5, 1, 4, 2]))  # the order an update sums the prompts in
    assert shuffled.grpo_rows.numel() == batch.grpo_rows.numel()
    key = lambda p: (p.prompt_index, p.rejected_item)  # noqa: E731
    assert sorted(shuffled.pairs, key=key) == sorted(batch.pairs, key=key)
    for h in (shuffled, batch.subset(torch.arange(6))):  # re-indexed rows still point at the same sequences
        for pair, c, r in zip(h.pairs, h.chosen_rows.tolist(), h.rejected_rows.tolist(), strict=True):
            assert h.tokens[c][h.mask[c]].tolist() == space.response_ids[pair.chosen_item]
            assert h.tokens[r][h.mask[r]].tolist() == space.response_ids[pair.rejected_item]


def test_one_update_moves_log_probs_the_way_the_advantage_says(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    cfg = config(algo="grpo", group_size=4)
    data = collect_step(model, space, ds.splits["train"][:4], ds.catalog, ds.max_history, cfg, seed=4)
    batch = data.batch
    signs = torch.tensor([1.0, -1.0] * (batch.grpo_rows.numel() // 2))
    batch.advantages = signs
    before = response_logprobs(model, *_prompts(batch), batch.tokens, batch.mask, trie=space.trie)[0].detach()
    loss, info = minibatch_loss(model, batch, cfg)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-2 * p.grad
    after = response_logprobs(model, *_prompts(batch), batch.tokens, batch.mask, trie=space.trie)[0].detach()
    change = ((after - before) * batch.mask).sum(1)[batch.grpo_rows]
    assert (change[signs > 0].mean() > 0) and (change[signs < 0].mean() < 0)
    assert info["grpo/clip_frac_low"] == 0.0 and info["grpo/clip_frac_high"] == 0.0
    assert abs(info["grpo/approx_kl"]) < 1e-6


def _prompts(batch):
    return batch.prompt_ids[batch.row_prompt], batch.prompt_mask[batch.row_prompt]


def test_pairs_export_to_a_preference_dataset(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    data = collect_step(model, space, ds.splits["train"][:4], ds.catalog, ds.max_history, config(), seed=0)
    table = pairs_to_dataset(data.pairs, data.prompts, ds.catalog)
    assert {"prompt", "chosen", "rejected"} <= set(table.column_names) and len(table) == len(data.pairs)
    first = data.pairs[0]
    assert table[0]["prompt"] == data.prompts[first.prompt_index]
    assert table[0]["chosen"] == ds.catalog[first.chosen_item] + "\n"


# ----------------------------------------------------------------------------------------- whole runs

@pytest.mark.parametrize("algo", ["grpo", "rere", "riser"])
def test_each_algorithm_writes_complete_records(micro_start, algo, tmp_path):
    result = train_rl(micro_start(), config(algo, steps=1), out=tmp_path)
    (record,) = result.records
    assert RECORD_KEYS <= set(record)
    assert read_metrics(tmp_path, stage="rl") == [json.loads(json.dumps(record))]
    assert record["rollouts_used"] == 4 * result_draws(algo)
    assert 0.0 <= record["hit_rate"] <= 1.0 and record["grad_norm"] >= 0.0
    parts = [record[k] for k in ("rollout_time_s", "update_time_s", "eval_time_s")]
    assert min(parts) >= 0.0 and sum(parts) <= record["step_time_s"] <= record["time_s"]


def result_draws(algo: str) -> int:
    return config(algo).draws_per_prompt()


def test_gradient_prompt_fraction_riser_vs_grpo(micro_start):
    riser = train_rl(micro_start(), config("riser", steps=3)).records
    grpo = train_rl(micro_start(), config("grpo", steps=3)).records
    for r in riser:  # every group is either learnable or converted to pairs
        assert r["gradient_prompt_fraction"] == 1.0
        assert r["learnable_fraction"] * 4 + r["converted_groups"] == 4
    for r in grpo:
        assert r["gradient_prompt_fraction"] == r["learnable_fraction"]
        assert r["converted_groups"] == 0 and r["pairs"] == 0 and r["pair/loss"] == 0.0
    no_pairs = train_rl(micro_start(), config("riser", steps=2, use_pairs=False)).records
    assert all(r["gradient_prompt_fraction"] == r["learnable_fraction"] for r in no_pairs)


def test_clipping_acts_only_with_several_inner_epochs(micro_start):
    single = train_rl(micro_start(), config("riser", steps=3, inner_epochs=1, lr=5e-2)).records
    assert all(r["grpo/clip_frac_low"] == 0.0 and r["grpo/clip_frac_high"] == 0.0 for r in single)
    assert all(abs(r["grpo/approx_kl"]) < 1e-6 for r in single)
    several = train_rl(micro_start(), config("riser", steps=3, inner_epochs=4, lr=5e-2)).records
    assert max(r["grpo/clip_frac_low"] + r["grpo/clip_frac_high"] for r in several) > 0.0
    unclipped = train_rl(micro_start(),
                         config("riser", steps=3, inner_epochs=4, lr=5e-2, use_clipping=False)).records
    assert all(r["grpo/clip_frac_low"] == 0.0 and r["grpo/clip_frac_high"] == 0.0 for r in unclipped)


def test_reference_is_frozen_and_only_built_when_needed(micro_start):
    start = micro_start()
    original = {k: v.clone() for k, v in start[0].state_dict().items()}
    result = train_rl(start, config("grpo", steps=2, beta_kl=0.1, lr=1e-2, inner_epochs=1))
    assert result.reference is not None
    for name, value in result.reference.state_dict().items():
        assert torch.equal(value, original[name]), name
    assert any(not torch.equal(v, original[k]) for k, v in result.model.state_dict().items())
    assert all(r["grpo/kl"] is not None and r["grpo/kl"] >= 0.0 for r in result.records)
    # Step 1's only update sees the starting weights (KL 0); step 2's policy has moved.
    assert result.records[0]["grpo/kl"] < 1e-6 < result.records[-1]["grpo/kl"]

    plain = train_rl(micro_start(), config("riser", steps=1, beta_kl=0.0))
    assert plain.reference is None and "grpo/kl" not in plain.records[0]
    dpo = train_rl(micro_start(), config("riser", steps=1, pair_loss="dpo"))
    assert dpo.reference is not None and dpo.records[0]["pair/loss"] > 0.0


def test_same_seed_same_metrics(micro_start):
    first = train_rl(micro_start(), config("riser", steps=2, seed=5)).records
    again = train_rl(micro_start(), config("riser", steps=2, seed=5)).records
    other = train_rl(micro_start(), config("riser", steps=2, seed=6)).records
    assert strip_time(first) == strip_time(again)
    assert strip_time(first) != strip_time(other)


class Interrupt(Exception):
    pass


def test_resume_gives_the_straight_run(micro_start, tmp_path):
    cfg = config("riser", steps=4, lr=1e-2)  # a checkpoint after every step
    straight = train_rl(micro_start(), cfg, out=tmp_path / "straight")

    def stop_at_three(record):
        if record["step"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):  # step 3 is logged, but not checkpointed
        train_rl(micro_start(), cfg, out=tmp_path / "resumed", on_step=stop_at_three)
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == [1, 2, 3]
    resumed = train_rl(micro_start(), cfg, out=tmp_path / "resumed")
    assert strip_time(resumed.records) == strip_time(straight.records)
    assert strip_time(read_metrics(tmp_path / "resumed")) == strip_time(straight.records)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="different RL config"):
        train_rl(micro_start(), config("riser", steps=4, lr=2e-2), out=tmp_path / "resumed")


def test_lora_trains_adapters_only(micro_start):
    start = micro_start()
    original = {k: v.clone() for k, v in start[0].state_dict().items()}
    result = train_rl(start, config("riser", steps=1, lora=True, lr=1e-2))
    trained = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    merged = result.model.merge_and_unload()
    assert any(not torch.equal(v, original[k]) for k, v in merged.state_dict().items() if k in original)


# ----------------------------------------------------------------------------------------- config and CLI

def test_presets_share_one_rollout_budget():
    draws = {algo: RLConfig(algo=algo).draws_per_prompt() for algo in ("grpo", "rere", "riser")}
    assert draws == {"grpo": 16, "rere": 16, "riser": 16}
    assert RLConfig(algo="riser").group_size == 8 and RLConfig(algo="grpo").group_size == 16
    matched = same_budget(RLConfig(algo="riser"), 12)
    assert matched.draws_per_prompt() == 12 and matched.group_size == 6
    assert same_budget(RLConfig(algo="grpo"), 12).group_size == 12


@pytest.mark.parametrize("bad, message", [
    ({"algo": "ppo"}, "algo must be one of"),
    ({"algo": "rere", "use_dedup": True}, "use_dedup needs sampled rollouts"),
    ({"pair_loss": "ipo"}, "pair_loss must be"),
    ({"inner_epochs": 0}, "inner_epochs must be >= 1"),
])
def test_bad_config_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        RLConfig(**bad)


def test_config_round_trips_through_json():
    from dataclasses import asdict

    cfg = RLConfig(algo="rere", steps=7)
    assert RLConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg


def test_cli_runs_from_an_sft_run_folder(micro_start, tmp_path, capsys):
    from riser_lab.cli import main
    from riser_lite.data.native import save_dataset
    from riser_lite.runs import dataset_spec, save_run

    model, tokenizer, dataset = micro_start()
    save_dataset(dataset, tmp_path / "data")
    save_run(tmp_path / "sft", model, tokenizer, {"data": dataset_spec("native", tmp_path / "data")})
    code = main(["rl", "--run", str(tmp_path / "sft"), "--out", str(tmp_path / "rl"), "--algo", "riser",
                 "--steps", "2", "--no-certainty", "--seed", "3"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("step    1") and lines[-1] == f"saved {tmp_path / 'rl'} (2 steps)"
    assert [r["step"] for r in read_metrics(tmp_path / "rl")] == [1, 2]
    saved = json.loads((tmp_path / "rl" / "config.json").read_text())
    assert saved["rl"]["use_certainty_weights"] is False and saved["rl"]["group_size"] == 8
    assert saved["rl"]["seed"] == 3 and saved["data"]["source"] == "native"
    assert (tmp_path / "rl" / "model" / "model.safetensors").exists()


def test_shared_prompt_logprobs_equal_the_plain_forward_with_gradients(micro_start):
    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    data = collect_step(model, space, ds.splits["train"][:5], ds.catalog, ds.max_history, config(), seed=7)
    b = data.batch
    keep = torch.tensor([0, 1, 2, 9, 10, b.row_prompt.numel() - 1])  # rows of several prompts, not all
    rows = b.row_prompt[keep]
    plain, plain_diag = naive_response_logprobs(model, b.prompt_ids[rows], b.prompt_mask[rows],
                                                b.tokens[keep], b.mask[keep], with_entropy=True, trie=b.trie)
    plain.sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shared, shared_diag = response_logprobs(model, b.prompt_ids, b.prompt_mask, b.tokens[keep], b.mask[keep],
                                            rows, with_entropy=True, trie=b.trie)
    shared.sum().backward()
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared_diag.entropy, plain_diag.entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared_diag.valid_mass, plain_diag.valid_mass, atol=1e-5, rtol=0)
    for p, g in zip(model.parameters(), expected_grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_every_logged_key_is_documented(micro_start):
    from riser_lite.rl.config import METRICS

    (record,) = train_rl(micro_start(), config("riser", steps=1)).records
    undocumented = [k for k in record if k not in METRICS and not k.startswith("val_")]
    assert not undocumented, f"add {undocumented} to riser_lite.rl.config.METRICS"


def test_notebook_helpers_agree_with_the_losses(micro_start):
    from riser_lite.rl.batch import pair_scores, pairs_only, token_ratios, update_on_batch

    model, tokenizer, ds = micro_start()
    space = ItemSpace(ds.catalog, tokenizer)
    cfg = config("riser", lr=5e-2)
    data = collect_step(model, space, ds.splits["train"][:6], ds.catalog, ds.max_history, cfg, seed=5)
    chosen, rejected = pair_scores(model, data.batch)
    _, info = minibatch_loss(model, pairs_only(data.batch), cfg)
    expected = info["pair/reward_margin"] / RLConfig.simpo_beta + rejected.mean().item()
    assert chosen.mean().item() == pytest.approx(expected, abs=1e-5)
    # A GRPO batch whose advantages we set: ratios start at 1, and after a few large steps the tokens the
    # clip stops are exactly those past the band in the direction of their advantage.
    batch = data.batch
    batch.grpo_rows = torch.arange(8)
    batch.advantages = torch.tensor([1.0, -1.0] * 4)
    ratio, active = token_ratios(model, batch, cfg)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-4) and not active.any()
    infos = update_on_batch(model, batch, cfg, updates=4)
    assert infos[0]["grpo/clip_frac_low"] == infos[0]["grpo/clip_frac_high"] == 0.0
    assert infos[-1]["grpo/clip_frac_low"] + infos[-1]["grpo/clip_frac_high"] > 0.0
    ratio, active = token_ratios(model, batch, cfg)
    mask = batch.mask[batch.grpo_rows]
    up = (ratio > 1 + cfg.eps_high) & (batch.advantages[:, None] > 0) & mask
    down = (ratio < 1 - cfg.eps_low) & (batch.advantages[:, None] < 0) & mask
    assert torch.equal(active, up | down)
