"""The 20-candidate protocol (riser_lab.candidates): exact constrained scores, HitRatio@1, the file
format and its errors, SASRec on the same candidates, the real LastFM files and the CLI."""

import json
from types import SimpleNamespace

import pytest
import torch

from riser_lab.candidates import (
    NAME_ALIASES,
    CandidateWindow,
    constrained_scores,
    hits_at_1,
    load_candidate_windows,
    popularity_candidates,
    run_candidates,
    sasrec_candidates,
)
from riser_lab.cli import main
from riser_lite import runs
from riser_lite.data import load_dataset
from riser_lite.data.types import DataError, Example, RecDataset
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import encode_prompt, format_prompt
from riser_lite.model.backbone import build_backbone, get_preset

TITLES = {1: "Red Apple", 2: "Red Apricot", 3: "Red", 4: "Blue Sky", 5: "Blue Skies", 6: "Green"}


@pytest.fixture(scope="module")
def setup():
    model, tok = build_backbone(TITLES, get_preset("micro", init_std=0.5), seed=0)
    return model.eval(), ItemSpace(TITLES, tok)


def brute_force_constrained(model, space, prompt: str, item: int) -> float:
    """log pi_trie(item | prompt) with one full forward, renormalising over the next tokens of the items
    that share the prefix (read off the response ids, not the trie)."""
    prompt_ids = encode_prompt(space.tokenizer, prompt)
    ids = space.response_ids[item]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1:-1].double()
    total = 0.0
    for t, token in enumerate(ids):
        allowed = sorted({o[t] for o in space.response_ids.values() if len(o) > t and o[:t] == ids[:t]})
        total += torch.log_softmax(logits[t, allowed], 0)[allowed.index(token)].item()
    return total


def test_constrained_scores_equal_brute_force_and_form_a_distribution(setup):
    model, space = setup
    prompts = [format_prompt(["Red", "Blue Sky"]), format_prompt(["Green"])]
    candidates = [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]]
    scores = constrained_scores(model, space, prompts, candidates, batch_size=1)
    for b, prompt in enumerate(prompts):
        for c, item in enumerate(candidates[b]):
            assert scores[b, c].item() == pytest.approx(brute_force_constrained(model, space, prompt, item),
                                                        abs=1e-4)
    assert scores.exp().sum(1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)  # all items: sums to one
    batched = constrained_scores(model, space, prompts, candidates, batch_size=2)  # padding changes nothing
    assert torch.allclose(batched, scores, atol=1e-5)
    with pytest.raises(ValueError, match="same number of candidates"):
        constrained_scores(model, space, prompts, [[1, 2], [1]])


def test_hit_at_1_by_hand_ties_are_misses():
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.5, 0.1], [2.0, 1.0, 0.0]])
    candidates = [[7, 8, 9], [7, 8, 9], [9, 8, 7]]
    assert hits_at_1(scores, candidates, [8, 7, 9]).tolist() == [1.0, 0.0, 1.0]


def write(tmp_path, rows) -> str:
    path = tmp_path / "cans.json"
    path.write_text(json.dumps(rows))
    return path


def test_candidate_file_with_aliases_and_errors_that_name_the_window(tmp_path):
    titles = {0: "Florence + the Machine", 1: "+44", 2: "Muse", 3: "Blur"}
    good = {"historyList": "Muse::Plus 44", "itemList": ["Blur", "Florence and the Machine"],
            "trueSelection": "Florence and the Machine"}
    windows = load_candidate_windows(write(tmp_path, [good]), titles, num_candidates=2)
    assert windows == [CandidateWindow(history=(2, 1), candidates=(3, 0), target=0)]
    unknown = {**good, "itemList": ["Oasis", "Florence and the Machine"]}
    with pytest.raises(DataError, match=r"cans.json, field 'itemList': window 2: 'Oasis' names no"):
        load_candidate_windows(write(tmp_path, [good, unknown]), titles, num_candidates=2)
    missing_target = {**good, "trueSelection": "Muse"}
    with pytest.raises(DataError, match="window 1: the true item is not among the candidates"):
        load_candidate_windows(write(tmp_path, [missing_target]), titles, num_candidates=2)
    with pytest.raises(DataError, match="window 1: expected an object"):
        load_candidate_windows(write(tmp_path, [{"historyList": "Muse"}]), titles)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match=r"broken.json: not valid JSON \(line 1, column 3\)"):
        load_candidate_windows(tmp_path / "broken.json", titles)


def test_sasrec_ranks_the_same_candidates_by_its_logits():
    index_of = {10: 0, 11: 1, 12: 2}
    stub = SimpleNamespace(index_of=index_of,
                           score=lambda histories: torch.tensor([[0.0, 1.0, 2.0]] * len(histories)))
    windows = [CandidateWindow((10,), (11, 12), 12), CandidateWindow((10,), (10, 11), 10)]
    result = sasrec_candidates(stub, windows, num_bootstrap=50)
    assert result["summaries"]["hr@1"]["value"] == 0.5 and result["num_windows"] == 2
    assert result["hits"] == [1, 0]  # kept per window, in file order, for paired comparisons


def test_popularity_ranks_candidates_by_training_counts():
    train = [Example("u", (1,), 2), Example("u", (1, 2), 2), Example("v", (2,), 3)]
    ds = RecDataset("p", {1: "a", 2: "b", 3: "c"}, {"train": train, "valid": [], "test": []})
    windows = [CandidateWindow((1,), (3, 2), 2), CandidateWindow((1,), (1, 3), 3),
               CandidateWindow((2,), (3, 1), 1)]  # counts: 2 -> 2, 3 -> 1, 1 -> 0: hit, hit, miss
    result = popularity_candidates(ds, windows, num_bootstrap=50)
    assert result["summaries"]["hr@1"]["value"] == pytest.approx(2 / 3) and result["hits"] == [1, 1, 0]


def test_the_real_lastfm_files_load_completely(lastfm_path):
    catalog = load_dataset("lastfm", lastfm_path).catalog
    test = load_candidate_windows(lastfm_path / "sdpo_cans20" / "lastfm-test.json", catalog)
    valid = load_candidate_windows(lastfm_path / "sdpo_cans20" / "lastfm-val.json", catalog)
    assert (len(test), len(valid)) == (2495, 2767)
    assert all(len(w.candidates) == 20 and len(w.history) >= 3 for w in test + valid)
    with pytest.raises(DataError, match="names no catalogue item"):  # the two spellings need the aliases
        load_candidate_windows(lastfm_path / "sdpo_cans20" / "lastfm-test.json", catalog, aliases={})
    assert set(NAME_ALIASES.values()) <= set(catalog.values())


def test_cli_scores_a_lastfm_run_and_saves_the_result(lastfm_path, tmp_path, capsys):
    ds = load_dataset("lastfm", lastfm_path)
    model, tok = build_backbone(ds, get_preset("micro"), seed=0)
    runs.save_run(tmp_path / "run", model, tok, {"data": runs.dataset_spec("lastfm", lastfm_path)})
    assert main(["candidates", "--run", str(tmp_path / "run"), "--max-windows", "6"]) == 0
    assert capsys.readouterr().out.startswith("20-candidate protocol, test (6 windows")
    # the first 6 windows only: named so, never in place of a full evaluation
    result = json.loads((tmp_path / "run" / "eval_test_candidates20_first6.json").read_text())
    summaries = result["model"]["summaries"]
    assert result["num_windows"] == 6 and result["items"] == "title"
    assert summaries["hr@1"]["n"] == 6 and 0.0 <= summaries["valid_ratio"]["value"] <= 1.0
    assert 0.0 <= result["popularity"]["summaries"]["hr@1"]["value"] <= 1.0
    assert main(["candidates"]) == 2  # neither a run nor a SASRec model
    assert "give --run and/or --sasrec" in capsys.readouterr().err


def test_model_and_sasrec_on_the_same_windows_get_a_paired_difference(lastfm_path, tmp_path, capsys):
    from riser_lab.sasrec import SASRecConfig, save_sasrec, train_sasrec

    ds = load_dataset("lastfm", lastfm_path)
    model, tok = build_backbone(ds, get_preset("micro"), seed=0)
    runs.save_run(tmp_path / "run", model, tok, {"data": runs.dataset_spec("lastfm", lastfm_path)})
    small = SASRecConfig(dim=8, layers=1, heads=1, epochs=1, patience=0)
    save_sasrec(train_sasrec(ds, small), tmp_path / "sasrec")
    result = run_candidates(str(tmp_path / "run"), "test", sasrec=str(tmp_path / "sasrec"), max_windows=40,
                            save=False)
    model_hits, sasrec_hits = result["model"]["hits"], result["sasrec"]["hits"]
    assert len(model_hits) == len(sasrec_hits) == 40 and set(model_hits + sasrec_hits) <= {0, 1}
    paired = result["model_vs_sasrec"]["hr@1"]
    assert paired["n"] == 40
    assert paired["diff"] == pytest.approx((sum(model_hits) - sum(sasrec_hits)) / 40)
    assert paired["diff"] == pytest.approx(result["model"]["summaries"]["hr@1"]["value"]
                                           - result["sasrec"]["summaries"]["hr@1"]["value"])
    assert 0 < paired["p_value"] <= 1 and paired["lo"] <= paired["diff"] <= paired["hi"]
    assert not list((tmp_path / "run").glob("eval_*.json"))  # save=False
