"""SFT: response-only labels, exact loss, batching, learning, determinism, early stopping, resume, CLI."""


import numpy as np
import pytest
import torch

from riser_lite import runs
from riser_lite.data.types import DataError, Example, RecDataset
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import encode_prompt, encode_response, example_prompt
from riser_lite.model.backbone import build_backbone
from riser_lite.sft import (
    IGNORE,
    SFTConfig,
    collate,
    encode_examples,
    plan_batches,
    response_loss,
    run_sft,
    train_sft,
    validation_loss,
    validation_ranking,
)

TITLES = ["Red Apple", "Blue Moon", "Green Field", "Silver Lake", "Golden Gate", "Quiet Night"]


def cycle_dataset(valid_step: int = 1) -> RecDataset:
    """Next item = last item + 1 (mod 6); histories of 1-2 items. Validation targets follow +valid_step."""
    n = len(TITLES)
    train = [Example(f"u{a}{b}", (a, b) if b >= 0 else (a,), ((b if b >= 0 else a) + 1) % n)
             for a in range(n) for b in [-1, *range(n)] if a != b]
    valid = [Example(f"v{a}", (a,), (a + valid_step) % n) for a in range(n)]
    return RecDataset("cycle", dict(enumerate(TITLES)), {"train": train, "valid": valid, "test": valid})


def fast(**overrides) -> SFTConfig:
    base = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "progress": False, "patience": 0}
    return SFTConfig(**{**base, **overrides})


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_labels_are_ignored_exactly_on_prompt_and_padding():
    short, long = ([5, 6], [7, 1]), ([5, 6, 8, 9], [10, 11, 1])
    batch = collate([short, long], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 0, 0, 0], [5, 6, 8, 9, 10, 11, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    i = IGNORE
    assert batch["labels"].tolist() == [[i, i, 7, 1, i, i, i], [i, i, i, i, 10, 11, 1]]


def test_encoded_examples_use_the_shared_template():
    ds = cycle_dataset()
    model, tok = build_backbone(ds, "micro")
    ex = ds.splits["train"][7]
    (prompt, response), = encode_examples([ex], ds.catalog, tok, max_history=10)
    assert prompt == encode_prompt(tok, example_prompt(ex, ds.catalog, 10))
    assert response == encode_response(tok, ds.catalog[ex.target]) and response[-1] == tok.eos_token_id


def test_response_loss_is_the_mean_nll_of_response_tokens():
    ds = cycle_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    encoded = encode_examples(ds.splits["train"][:3], ds.catalog, tok, 10)
    batch = collate(encoded, tok.pad_token_id)
    loss, count = response_loss(model, batch)
    total, n = 0.0, 0
    for prompt, response in encoded:  # one unpadded sequence at a time, by hand
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for j, token in enumerate(response):
            total -= logp[len(prompt) + j - 1, token].item()
            n += 1
    assert count == n == sum(len(r) for _, r in encoded)
    assert loss.item() == pytest.approx(total / n, rel=1e-5)


def allowed_after(prefix: list[int], responses: list[list[int]]) -> set[int]:
    """Tokens that continue `prefix` towards some catalogue response, straight from the token lists."""
    return {seq[len(prefix)] for seq in responses if seq[:len(prefix)] == prefix and len(seq) > len(prefix)}


def constrained_case():
    """A micro model, its title trie, the titles' token lists and a batch of 4 training examples."""
    ds = cycle_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    encoded = encode_examples(ds.splits["train"][:4], ds.catalog, tok, 10)
    return (model, tok, ItemSpace(ds.catalog, tok).trie, [encode_response(tok, t) for t in TITLES], encoded,
            collate(encoded, tok.pad_token_id))


def test_constrained_loss_renormalises_over_the_tokens_the_titles_allow():
    model, tok, trie, responses, encoded, batch = constrained_case()
    loss, count = response_loss(model, batch, trie=trie)
    total, n, forced = 0.0, 0, 0
    for prompt, response in encoded:  # one unpadded sequence at a time, by hand
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + response])).logits[0].double()
        for j, token in enumerate(response):
            allowed = sorted(allowed_after(response[:j], responses))
            row = logits[len(prompt) + j - 1]
            total -= (row[token] - torch.logsumexp(row[allowed], 0)).item()
            n, forced = n + 1, forced + (len(allowed) == 1)
    assert forced >= len(encoded)  # at least the EOS after each newline is forced (it costs 0)
    assert count == n
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    assert loss.item() < response_loss(model, batch)[0].item()  # renormalising can only raise log-probs


class AllowEverything:
    """A stand-in trie under which every token is valid everywhere: the constrained policy is the raw one."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def step(self, nodes, tokens):
        return torch.zeros_like(nodes)

    def valid_mask(self, nodes):
        return torch.ones(nodes.numel(), self.vocab_size, dtype=torch.bool)


def test_constrained_loss_with_every_token_allowed_is_the_raw_loss():
    ds = cycle_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    batch = collate(encode_examples(ds.splits["train"][:5], ds.catalog, tok, 10), tok.pad_token_id)
    raw, n_raw = response_loss(model, batch)
    trivial, n_trivial = response_loss(model, batch, trie=AllowEverything(len(tok)))
    assert n_raw == n_trivial and trivial.item() == pytest.approx(raw.item(), rel=1e-6)


def test_no_gradient_reaches_forbidden_tokens_under_the_constrained_loss():
    model, tok, trie, responses, encoded, batch = constrained_case()
    allowed = torch.zeros(sum(len(r) for _, r in encoded), model.config.vocab_size, dtype=torch.bool)
    rows = [(row, response[:j]) for row, (_, response) in enumerate(encoded) for j in range(len(response))]
    for i, (_, prefix) in enumerate(rows):  # response positions in row-major order, as the head sees them
        allowed[i, sorted(allowed_after(prefix, responses))] = True
    grads = {}
    for name, trie_or_none in (("constrained", trie), ("raw", None)):
        seen = []

        def keep_logits(_module, _inputs, out, seen=seen) -> None:  # None: the output is left unchanged
            out.retain_grad()
            seen.append(out)
        hook = model.get_output_embeddings().register_forward_hook(keep_logits)
        model.zero_grad()
        response_loss(model, batch, trie=trie_or_none)[0].backward()
        hook.remove()
        (logits,) = seen  # the head runs once, on the response positions only
        assert logits.shape == allowed.shape
        grads[name] = logits.grad
    assert torch.count_nonzero(grads["constrained"][~allowed]) == 0
    forced = allowed.sum(1) == 1
    assert forced.any() and torch.count_nonzero(grads["constrained"][forced]) == 0  # log pi_c = 0 there
    assert torch.count_nonzero(grads["constrained"][~forced]) > 0
    assert torch.count_nonzero(grads["raw"][~allowed]) > 0  # what the mask removes


def test_batches_cover_every_example_once_and_bucketing_cuts_padding():
    lengths = np.random.default_rng(0).integers(10, 100, size=1000).tolist()
    plan = plan_batches(lengths, 32, seed=1, epoch=0, bucket_chunk=8)
    assert sorted(i for b in plan for i in b) == list(range(1000))
    assert len(plan) == 32  # ceil(1000 / 32): one partial batch
    assert plan == plan_batches(lengths, 32, seed=1, epoch=0, bucket_chunk=8)
    assert plan != plan_batches(lengths, 32, seed=1, epoch=1, bucket_chunk=8)

    def padded(plan):
        return sum(len(b) * max(lengths[i] for i in b) for b in plan)

    order = np.random.default_rng(1).permutation(1000)  # plain shuffled batches, for comparison
    flat = padded([order[i:i + 32].tolist() for i in range(0, 1000, 32)])
    assert padded(plan) < 0.75 * flat  # real tokens are 55% of the flat batches' cells here


def greedy_title(model, tok, ds, example, max_new: int = 12) -> str:
    ids = encode_prompt(tok, example_prompt(example, ds.catalog, 10))
    for _ in range(max_new):
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == tok.eos_token_id:
            break
        ids.append(nxt)
    return tok.decode(ids[len(encode_prompt(tok, example_prompt(example, ds.catalog, 10))):]).strip()


def test_overfits_a_tiny_set_and_then_generates_the_right_titles():
    ds = cycle_dataset()
    model, tok = build_backbone(ds, "micro", seed=0)
    records = []
    config = fast(epochs=80, lr=1e-2)  # under the cosine decay: long enough to learn to read the history
    result = train_sft(ds, model, tok, config, on_step=records.append)
    train_losses = [r["loss"] for r in records if r["event"] == "train"]
    assert train_losses[0] > 3.0 and np.mean(train_losses[-5:]) < 0.05
    assert result.summary["best_valid_loss"] < 0.05  # validation follows the same rule here
    model.eval()
    for ex in ds.splits["valid"]:
        assert greedy_title(model, tok, ds, ex) == ds.catalog[ex.target]


def test_same_seed_same_numbers_other_seed_other_numbers():
    ds = cycle_dataset()
    outcomes = []
    for seed in (0, 0, 1):
        model, tok = build_backbone(ds, "micro", seed=0)
        records = []
        train_sft(ds, model, tok, fast(), on_step=records.append, seed=seed)
        outcomes.append(([r.get("loss") for r in records], weights(model)))
    (loss_a, w_a), (loss_b, w_b), (loss_c, _) = outcomes
    assert loss_a == loss_b and all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert loss_a != loss_c  # the seed changes the data order


def test_early_stopping_restores_the_best_weights():
    ds = cycle_dataset(valid_step=2)  # validation contradicts the training rule: it worsens as training fits
    model, tok = build_backbone(ds, "micro", seed=0)
    result = train_sft(ds, model, tok, fast(epochs=40, lr=2e-2, patience=2))
    valid_losses = [r["valid_loss"] for r in result.history]
    summary = result.summary
    assert summary["stopped_early"] and summary["epochs_run"] < 40
    assert len(valid_losses) == int(summary["epochs_run"])
    assert summary["best_valid_loss"] == min(valid_losses)
    assert all(v >= summary["best_valid_loss"] for v in valid_losses[-2:])  # patience ran out
    valid = encode_examples(ds.splits["valid"], ds.catalog, tok, 10)
    best = summary["best_valid_loss"]
    assert validation_loss(model, valid, tok.pad_token_id) == pytest.approx(best, rel=1e-6)


def test_selecting_on_a_ranking_metric_keeps_its_best_step_and_stops_on_it():
    ds = cycle_dataset(valid_step=2)  # validation contradicts the training rule: it worsens as training fits
    model, tok = build_backbone(ds, "micro", seed=0)
    config = fast(epochs=40, lr=2e-2, patience=2, select_on="ndcg@10", max_valid=5)
    result = train_sft(ds, model, tok, config)
    records, summary = result.history, result.summary
    values = [r["valid_ndcg@10"] for r in records]
    assert all("valid_loss" in r for r in records)  # the loss is still logged
    assert len(set(values)) > 1 and summary["stopped_early"] and summary["epochs_run"] < 40
    best = int(np.argmax(values))  # the first maximum: later ties are no improvement
    assert summary["best_step"] == records[best]["step"] and summary["best_valid_ndcg@10"] == values[best]
    assert summary["best_valid_loss"] == records[best]["valid_loss"]
    assert [r["best"] for r in records] == [v > max(values[:i], default=-1.0) for i, v in enumerate(values)]
    assert len(records) - 1 - best == 2  # patience: two validations without a higher value, then stop
    assert summary["select_on"] == "ndcg@10"
    restored = validation_ranking(model, tok, ds, ItemSpace(ds.catalog, tok), config)  # the kept weights
    assert restored == {"valid_ndcg@10": values[best]}


def test_the_validation_ranking_is_the_constrained_policy_s_top_item():
    ds = cycle_dataset(valid_step=2)
    model, tok = build_backbone(ds, "micro", seed=0)
    result = train_sft(ds, model, tok, fast(epochs=6, lr=2e-2, patience=2, select_on="hr@1"))
    kept = next(r for r in result.history if r["step"] == result.summary["best_step"])
    model.eval()
    hits = 0
    responses = {item: encode_response(tok, title) for item, title in ds.catalog.items()}
    for ex in ds.splits["valid"]:  # HR@1 of the kept weights by hand: the title most probable under the
        prompt = encode_prompt(tok, example_prompt(ex, ds.catalog, 10))  # constrained policy is the target
        scores = {}
        for item, response in responses.items():
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + response])).logits[0].double()
            score = 0.0
            for j, t in enumerate(response):  # renormalised over the tokens some title continues with here
                allowed = sorted({r[j] for r in responses.values() if len(r) > j and r[:j] == response[:j]})
                row = logits[len(prompt) + j - 1]
                score += (row[t] - torch.logsumexp(row[allowed], 0)).item()
            scores[item] = score
        hits += max(scores, key=scores.get) == ex.target
    assert kept["valid_hr@1"] == pytest.approx(hits / len(ds.splits["valid"]), abs=1e-12)


@pytest.mark.parametrize("field, value, message", [
    ("select_on", "ndcg", "select_on must be 'loss' or a ranking metric 'hr@K', 'ndcg@K'"),
    ("select_on", "ndcg@0", "select_on must be 'loss' or a ranking metric"),
    ("loss_policy", "masked", "loss_policy must be one of ('raw', 'constrained'), got 'masked'"),
])
def test_bad_selection_options_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fast(**{field: value})


def test_expected_metrics_need_the_true_distributions(tmp_path):
    ds = cycle_dataset()  # no oracle
    model, tok = build_backbone(ds, "micro", seed=0)
    with pytest.raises(DataError, match="select_on='expected_ndcg@10' needs the true next-item"):
        train_sft(ds, model, tok, fast(select_on="expected_ndcg@10"))
    with pytest.raises(DataError, match="select_on='expected_hr@5'"):
        run_sft(ds, preset="micro", config=fast(select_on="expected_hr@5"), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the folder is written


def test_the_recipe_is_every_field_that_shapes_the_weights():
    from dataclasses import fields

    recipe = SFTConfig().recipe()
    not_recipe = {"progress"}  # how it runs, not what it learns
    assert set(recipe) == {f.name for f in fields(SFTConfig)} - not_recipe
    assert recipe["loss_policy"] == "raw" and recipe["select_on"] == "loss" and recipe["dropout"] == 0.0
    assert SFTConfig(loss_policy="constrained", select_on="hr@5").recipe()["loss_policy"] == "constrained"


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("checkpoint_every, options", [
    (0, {}), (3, {}),
    # Selection on a ranking metric under the constrained loss: the best-metric state must survive too.
    (3, {"loss_policy": "constrained", "select_on": "ndcg@10"}),
    (3, {"dropout": 0.2}),  # dropout draws from the RNG the checkpoints save
])
def test_resume_after_a_crash_ends_with_the_uninterrupted_weights(tmp_path, checkpoint_every, options):
    ds = cycle_dataset()
    config = fast(epochs=3, checkpoint_every=checkpoint_every, **options)
    model, tok = build_backbone(ds, "micro", seed=0)
    straight = train_sft(ds, model, tok, config, out_dir=tmp_path / "a")
    expected = weights(model)

    def crash_in_epoch_three(record):
        if record["event"] == "train" and record["epoch"] > 2.5:
            raise Crash
    model, tok = build_backbone(ds, "micro", seed=0)
    with pytest.raises(Crash):
        train_sft(ds, model, tok, config, out_dir=tmp_path / "b", on_step=crash_in_epoch_three)
    model, tok = build_backbone(ds, "micro", seed=0)  # a fresh process: nothing survives but the folder
    resumed = train_sft(ds, model, tok, config, out_dir=tmp_path / "b")
    assert all(torch.equal(expected[k], v) for k, v in weights(model).items())
    keys = ("best_valid_loss", "steps", "best_step", f"best_valid_{config.select_on}")
    assert [resumed.summary.get(k) for k in keys] == [straight.summary.get(k) for k in keys]

    def without_time(path):
        return [{k: v for k, v in r.items() if k != "time"} for r in runs.read_metrics(path)]
    assert without_time(tmp_path / "b") == without_time(tmp_path / "a")  # no record lost or repeated
    with pytest.raises(ValueError, match="another config"):
        train_sft(ds, model, tok, fast(epochs=4), out_dir=tmp_path / "b")


def test_run_sft_writes_a_loadable_run_and_does_not_retrain(tmp_path):
    ds = cycle_dataset()
    out = run_sft(ds, preset="micro", config=fast(), out=tmp_path / "run", seed=2)
    run = runs.load_run(out)
    config = run.config
    assert config["seed"] == 2 and "seed" not in config["sft"] and config["backbone"]["preset"] == "micro"
    assert config["results"]["sft"]["steps"] == 2 * 5  # 36 examples in batches of 8, two epochs
    metrics = runs.read_metrics(out, "sft")
    assert [r["step"] for r in metrics if r["event"] == "train"] == list(range(1, 11))
    assert [r["epoch"] for r in metrics if r["event"] == "valid"] == [1.0, 2.0]
    valid = encode_examples(ds.splits["valid"], ds.catalog, run.tokenizer, 10)
    assert validation_loss(run.model, valid, run.tokenizer.pad_token_id) == pytest.approx(
        config["results"]["sft"]["best_valid_loss"], rel=1e-6)
    stamp = (out / "model" / "model.safetensors").stat().st_mtime_ns
    assert run_sft(ds, preset="micro", config=fast(), out=out, seed=2) == out
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == stamp  # finished: not retrained
    with pytest.raises(ValueError, match="different"):
        run_sft(ds, preset="micro", config=fast(), out=out, seed=3)


def test_cli_trains_from_a_dataset_folder(tmp_path, capsys):
    from riser_lab.cli import main
    from riser_lite.data.native import save_dataset

    save_dataset(cycle_dataset(), tmp_path / "data")
    code = main(["sft", "--data", "native", "--path", str(tmp_path / "data"), "--model", "micro",
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "16", "--seed", "1"])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"SFT run {tmp_path / 'run'}: ")
    config = runs.read_config(tmp_path / "run")
    assert config["results"]["sft"]["steps"] == 3 and config["seed"] == 1
    assert config["sft"]["loss_policy"] == "raw" and config["sft"]["select_on"] == "loss"
    assert runs.load_run_dataset(tmp_path / "run").catalog == dict(enumerate(TITLES))


def test_cli_selection_options_reach_the_run(tmp_path, capsys):
    from riser_lab.cli import main
    from riser_lite.data.native import save_dataset

    save_dataset(cycle_dataset(), tmp_path / "data")
    base = ["sft", "--data", "native", "--path", str(tmp_path / "data"), "--model", "micro", "--epochs", "2",
            "--batch-size", "16"]
    assert main([*base, "--out", str(tmp_path / "run"), "--loss-policy", "constrained", "--select-on", "hr@1",
                 "--patience", "0"]) == 0
    printed = capsys.readouterr().out
    config = runs.read_config(tmp_path / "run")
    assert config["sft"]["loss_policy"] == "constrained" and config["sft"]["select_on"] == "hr@1"
    assert f"best validation hr@1 {config['results']['sft']['best_valid_hr@1']:.4f}" in printed
    valid = [r for r in runs.read_metrics(tmp_path / "run") if r["event"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6]  # at both epoch ends (3 steps each)
    assert all(round(6 * r["valid_hr@1"], 9).is_integer() for r in valid)  # a share of the 6 users
    assert main([*base, "--out", str(tmp_path / "bad"), "--select-on", "mrr@10"]) == 2
    assert "select_on must be 'loss' or a ranking metric" in capsys.readouterr().err


def test_run_sft_fine_tunes_a_saved_pretrained_model_with_lora(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = cycle_dataset()
    base, tok = build_backbone(ds, "micro", seed=5)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    tok.save_pretrained(tmp_path / "base")
    out = run_sft(ds, model=str(tmp_path / "base"), lora={"r": 2, "alpha": 4.0}, config=fast(lr=5e-2),
                  out=tmp_path / "run")
    run = runs.load_run(out)
    from riser_lite.model.pretrained import folder_sha256

    assert run.config["backbone"] == {"pretrained": str(tmp_path / "base"),
                                      "sha256": folder_sha256(tmp_path / "base")}
    assert run.config["trainable_parameters"] < run.config["parameters"] / 5
    assert not any("lora" in name for name in run.model.state_dict())  # saved merged
    valid = encode_examples(ds.splits["valid"], ds.catalog, run.tokenizer, 10)
    trained = validation_loss(run.model, valid, run.tokenizer.pad_token_id)
    assert trained == pytest.approx(run.config["results"]["sft"]["best_valid_loss"], rel=1e-5)
    assert trained < validation_loss(base, valid, tok.pad_token_id)  # the adapters learned something
