"""Every stage on semantic-ID items: tokens, trie, exact scorer, rollouts, certainty weights, pairs, losses,
evaluation, TRL export, run folders, and a saved Hugging Face model with added tokens."""

import pytest
import torch
from naive import score_items_naive

from riser_lab.sid import SIDConfig, build_semantic_ids
from riser_lite import runs
from riser_lite.data import load_dataset
from riser_lite.eval.evaluate import EvalConfig, evaluate, evaluate_run
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import example_prompt
from riser_lite.items.represent import SemanticIds, apply_items, item_texts, items_spec, whole_tokens
from riser_lite.model.backbone import add_item_tokens, build_backbone, get_preset
from riser_lite.model.decoding import beam_search, encode_prompts, score_all_items
from riser_lite.rl.batch import minibatch_loss
from riser_lite.rl.config import RLConfig
from riser_lite.rl.pairs import pairs_to_dataset
from riser_lite.rl.rollout import RolloutConfig, rollout
from riser_lite.rl.trainer import collect_step
from riser_lite.sft import SFTConfig, run_sft

SID = SIDConfig(levels=2, codebook_size=4, dim=8)


@pytest.fixture(scope="module")
def sid_setup(small_data):
    """(model, tokenizer, dataset with sid items, its ItemSpace, the spec) on a micro backbone."""
    base = load_dataset("synthetic", small_data)
    spec = items_spec("sid", build_semantic_ids(base, SID))
    ds = apply_items(base, spec)
    preset = get_preset("micro", init_std=0.3)
    model, tok = build_backbone(ds, preset, seed=0, whole_tokens=whole_tokens(spec))
    return model.eval(), tok, ds, ItemSpace(ds.catalog, tok), spec


def test_item_texts_in_each_form():
    sids = SemanticIds(codes={1: (0, 2), 2: (1, 0)})
    titles = {1: "Red", 2: "Blue"}
    assert item_texts(titles, sids, "title") == titles
    assert item_texts(titles, sids, "sid") == {1: "<a_0><b_2>", 2: "<a_1><b_0>"}
    assert item_texts(titles, sids, "title+sid") == {1: "<a_0><b_2> Red", 2: "<a_1><b_0> Blue"}
    with pytest.raises(ValueError, match="no semantic ID"):
        item_texts({**titles, 3: "Green"}, sids, "sid")
    with pytest.raises(ValueError, match="items must be one of"):
        item_texts(titles, sids, "code")


def test_each_code_token_is_one_token_and_the_trie_branches_only_on_codes(sid_setup):
    _, tok, ds, space, spec = sid_setup
    for token in whole_tokens(spec):
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    length = len(next(iter(SemanticIds.from_json(spec["sid"]).codes.values())))
    for item in space.item_ids:
        ids = space.response_ids[item]
        assert len(ids) == length + 2  # one token per level, newline, EOS
        assert tok.decode(ids[:length]) == ds.catalog[item]
        assert space.branching[item][length:] == [False, False]  # newline and EOS are forced
        assert space.parse(ds.catalog[item] + "\n") == item
    assert space.branching_profile()["decisions_per_item"] <= length
    prompt = example_prompt(ds.splits["test"][0], ds.catalog, ds.max_history)
    assert ds.catalog[ds.splits["test"][0].history[-1]] in prompt


def test_exact_scores_equal_a_naive_forward_and_exhaustive_beams(sid_setup):
    model, tok, ds, space, _ = sid_setup
    prompts = [example_prompt(ex, ds.catalog, ds.max_history) for ex in ds.splits["test"][:3]]
    ids, mask = encode_prompts(tok, prompts)
    exact = score_all_items(model, space, ids, mask)
    assert torch.allclose(exact, score_items_naive(model, space, ids, mask), atol=1e-4)
    beams = beam_search(model, space, ids, mask, num_beams=len(space))
    top = exact.argsort(1, descending=True)[:, :5]
    assert [row[:5] for row in beams.item_lists()] == [[space.item_ids[j] for j in r] for r in top.tolist()]


def test_rollouts_certainty_weights_pairs_losses_and_export(sid_setup):
    model, tok, ds, space, _ = sid_setup
    examples = ds.splits["train"][:6]
    prompts = [example_prompt(ex, ds.catalog, ds.max_history) for ex in examples]
    ids, mask = encode_prompts(tok, prompts)
    groups = rollout(model, space, ids, mask, RolloutConfig(group_size=4, mode="dedup", seed=1))
    assert (groups.items >= 0).all() and groups.valid.all()  # every constrained rollout is an item
    config = RLConfig(algo="riser", group_size=4)
    data = collect_step(model, space, examples, ds.catalog, ds.max_history, config, seed=1)
    batch = data.batch
    # Certainty weights: 1 on branching code tokens, d on forced ones (newline, EOS, single-child levels).
    for row in range(batch.tokens.shape[0]):
        n = int(batch.mask[row].sum())
        item, flags = space.trie.walk(batch.tokens[row, :n].tolist())
        assert item >= 0
        expected = torch.tensor([1.0 if f else 0.3 for f in flags])
        assert torch.allclose(batch.weights[row, :n], expected)
    loss, info = minibatch_loss(model, batch, config)
    assert torch.isfinite(loss) and info["pair_count"] == len(data.pairs)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    if data.pairs:
        export = pairs_to_dataset(data.pairs, prompts, ds.catalog)
        assert export[0]["chosen"] == ds.catalog[data.pairs[0].chosen_item] + "\n"
        assert export[0]["chosen"].startswith("<a_")


def test_evaluation_on_sid_items_agrees_between_protocols(sid_setup):
    model, tok, ds, space, _ = sid_setup
    cfg = dict(split="test", ks=(1, 5), max_examples=5, num_bootstrap=50, baselines=False)
    exact = evaluate(model, tok, ds, space, EvalConfig(protocol="exact", **cfg))
    beam = evaluate(model, tok, ds, space, EvalConfig(protocol="beam", num_beams=len(space), **cfg))
    assert exact.ranks == beam.ranks and beam.valid_rate == 1.0


def codes(small_data, config):
    """Semantic IDs of the small synthetic data's training split."""
    return build_semantic_ids(load_dataset("synthetic", small_data), config)


SFT_FAST = SFTConfig(epochs=1, batch_size=16, progress=False, patience=0)


@pytest.fixture(scope="module")
def sid_run(small_data, tmp_path_factory):
    return run_sft("synthetic", path=small_data, preset="micro", config=SFT_FAST,
                   out=tmp_path_factory.mktemp("sid") / "run", items="sid", sids=codes(small_data, SID))


def test_sft_run_records_the_codes_and_later_stages_reuse_them(small_data, sid_run):
    out = sid_run
    run = runs.load_run(out)
    spec = run.config["data"]["items"]
    assert spec["form"] == "sid" and spec["sid"]["config"]["codebook_size"] == 4
    rebuilt = runs.load_run_dataset(run)
    assert rebuilt.catalog == {int(i): code for i, code in spec["sid"]["codes"].items()}
    assert all(len(run.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in whole_tokens(spec))
    result = evaluate_run(out, protocol="exact", max_examples=4, save=False, num_bootstrap=20)
    assert result["num_examples"] == 4 and result["summaries"]["hr@10"]["n"] == 4
    again = run_sft("synthetic", path=small_data, preset="micro", config=SFT_FAST, out=out, items="sid",
                    sids=codes(small_data, SID))
    assert again == out  # same recipe (same codes): not retrained
    with pytest.raises(ValueError, match="different"):  # other codes are another recipe
        run_sft("synthetic", path=small_data, preset="micro", config=SFT_FAST, out=out, items="sid",
                sids=codes(small_data, SIDConfig(levels=2, codebook_size=5, dim=8)))


def test_rl_from_a_sid_run_keeps_its_codes(sid_run, tmp_path):
    from riser_lite.rl.trainer import train_rl

    config = RLConfig(algo="riser", steps=1, prompts_per_step=4, group_size=4, eval_every=0)
    train_rl(sid_run, config, out=tmp_path / "rl")
    rl_items = runs.read_json(tmp_path / "rl" / "config.json")["data"]["items"]
    assert rl_items == runs.read_json(sid_run / "config.json")["data"]["items"]
    assert runs.load_run_dataset(tmp_path / "rl").catalog == runs.load_run_dataset(sid_run).catalog


def test_a_saved_hugging_face_model_gets_whole_sid_tokens(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base_ds = load_dataset("synthetic", small_data)
    model, tok = build_backbone(base_ds, "micro", seed=1)  # a title model: no sid tokens yet
    model.save_pretrained(tmp_path / "base", safe_serialization=True)
    tok.save_pretrained(tmp_path / "base")
    rows_before = model.get_input_embeddings().num_embeddings
    spec = items_spec("sid", build_semantic_ids(base_ds, SID))
    assert add_item_tokens(model, tok, whole_tokens(spec)) == len(whole_tokens(spec))
    assert model.get_input_embeddings().num_embeddings == rows_before + len(whole_tokens(spec))
    config = SFTConfig(epochs=1, batch_size=16, progress=False, patience=0, lr=1e-3)
    out = run_sft("synthetic", path=small_data, model=str(tmp_path / "base"), config=config,
                  out=tmp_path / "run", items="sid", sids=codes(small_data, SID))
    run = runs.load_run(out)
    assert len(run.tokenizer) == rows_before + len(whole_tokens(spec))
    code = run.config["data"]["items"]["sid"]["codes"]["0"]
    assert len(run.tokenizer(code, add_special_tokens=False)["input_ids"]) == code.count("<")
    result = evaluate_run(out, protocol="exact", max_examples=3, save=False, num_bootstrap=20)
    assert result["num_examples"] == 3


def test_title_plus_sid_decides_only_on_code_tokens(small_data):
    base = load_dataset("synthetic", small_data)
    spec = items_spec("title+sid", build_semantic_ids(base, SID))
    ds = apply_items(base, spec)
    _, tok = build_backbone(ds, "micro", seed=0, whole_tokens=whole_tokens(spec))
    space = ItemSpace(ds.catalog, tok)
    length = len(SemanticIds.from_json(spec["sid"]).codes[space.item_ids[0]])
    for item in space.item_ids:
        assert ds.catalog[item].endswith(" " + base.catalog[item])
        assert not any(space.branching[item][length:])  # the code names the item: the title is forced
    assert space.parse(ds.catalog[space.item_ids[3]] + "\n") == space.item_ids[3]


def test_an_item_last_level_is_one_token_per_item_and_scores_exactly(small_data):
    base = load_dataset("synthetic", small_data)
    item_level = SIDConfig(levels=1, codebook_size=4, dim=8, last_level="item")
    spec = items_spec("sid", build_semantic_ids(base, item_level))
    ds = apply_items(base, spec)
    preset = get_preset("micro", init_std=0.3)
    model, tok = build_backbone(ds, preset, seed=0, whole_tokens=whole_tokens(spec))
    space = ItemSpace(ds.catalog, tok)
    assert all(len(space.response_ids[item]) == 4 for item in space.item_ids)  # cluster, item, newline, EOS
    assert space.branching_profile()["decisions_per_item"] <= 2
    prompts = [example_prompt(ex, ds.catalog, ds.max_history) for ex in ds.splits["test"][:3]]
    ids, mask = encode_prompts(tok, prompts)
    exact = score_all_items(model.eval(), space, ids, mask)
    assert torch.allclose(exact, score_items_naive(model, space, ids, mask), atol=1e-4)
