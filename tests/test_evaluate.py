"""Evaluation protocols, reference rankers and the `evaluate` command (riser_lite.eval.evaluate, .baselines).

The protocol tests use the hand-built `ContextStub` of test_decoding. After any prompt its raw model gives
the items "d" (P = .216), "ab" (.0432), "ac" (.012), and one beam alone finds "ab" only; the trie-constrained
policy (the default ranking) renormalises each step over the tokens the trie allows (first a .6 / d .3,
then b .1 / c .05, the rest forced), so pi_c = ab 4/9, d 1/3, ac 2/9. Every number asserted below is worked
out by hand from that.
"""

from __future__ import annotations

import json
import math

import pytest
from test_decoding import STUB_RULES, STUB_TITLES, CharTokenizer, ContextStub, tiny_qwen

from riser_lab.cli.evaluate import format_result
from riser_lite.data.types import DataError, Example, RecDataset
from riser_lite.eval.evaluate import EvalConfig, EvalResult, compare_protocols, evaluate

AB, AC, D = 1, 2, 3
TRAIN = [Example("u1", (D,), AC), Example("u2", (D,), AC), Example("u3", (AC,), AB)]
TEST = [Example("t0", (AC,), D), Example("t1", (D,), AB), Example("t2", (AB,), AC),
        Example("t3", (AB, AC), D)]
ORACLE_TEST = [{D: 0.5, AB: 0.3, AC: 0.2}, {AB: 0.6, AC: 0.4}, {AC: 1.0}, {AB: 0.5, D: 0.5}]


def stub_dataset(oracle: bool = False) -> RecDataset:
    splits = {"train": TRAIN, "valid": [], "test": TEST}
    rows = {"train": [{AB: 1.0}] * 3, "valid": [], "test": ORACLE_TEST} if oracle else None
    return RecDataset(name="stub", catalog=dict(STUB_TITLES), splits=splits, oracle=rows)


@pytest.fixture()
def stub():
    tokenizer = CharTokenizer()
    return ContextStub(tokenizer, STUB_RULES), tokenizer


def ndcg(rank):
    return 1 / math.log2(rank + 2)


# Per policy: the two beams of every prompt, the target ranks (targets d, ab, ac, d), HR@1 and NDCG@2.
BEAM_BY_POLICY = {"raw": ([D, AB], [0, 1, None, 0], 2 / 4, (1 + ndcg(1) + 0 + 1) / 4),
                  "constrained": ([AB, D], [1, 0, None, 1], 1 / 4, (ndcg(1) + 1 + 0 + ndcg(1)) / 4)}


@pytest.mark.parametrize("policy", ["raw", "constrained"])
def test_beam_protocol_matches_hand_computation(stub, policy):
    model, tokenizer = stub
    config = EvalConfig(num_beams=2, ks=(1, 2), unconstrained=True, num_bootstrap=200, policy=policy)
    result = evaluate(model, tokenizer, stub_dataset(), config=config)
    top, ranks, hr1, ndcg2 = BEAM_BY_POLICY[policy]
    assert result.top_items == [top] * 4
    assert result.ranks == ranks
    metrics = result.metrics
    assert metrics["hr@1"] == pytest.approx(hr1) and metrics["hr@2"] == pytest.approx(3 / 4)
    assert metrics["ndcg@1"] == pytest.approx(hr1)
    assert metrics["ndcg@2"] == pytest.approx(ndcg2)
    assert metrics["coverage@1"] == pytest.approx(1 / 3) and metrics["coverage@2"] == pytest.approx(2 / 3)
    assert result.valid_rate == 1.0  # every beam's text parses back to its title
    # Unconstrained greedy: "a" (.6), then "z" (.85, in no title): never a catalogue item.
    assert result.unconstrained_valid_rate == 0.0
    for s in result.summaries.values():
        assert s["lo"] <= s["value"] <= s["hi"] and s["n"] == 4


def test_exact_protocol_matches_hand_computation(stub):
    model, tokenizer = stub
    raw = evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(protocol="exact", ks=(1, 2),
                                                                       policy="raw"))
    assert raw.top_items == [[D, AB]] * 4 and raw.ranks == [0, 1, 2, 0]
    assert raw.metrics["hr@2"] == pytest.approx(3 / 4)
    assert raw.metrics["ndcg@2"] == pytest.approx((2 + ndcg(1)) / 4)
    assert raw.valid_rate is None and raw.unconstrained_valid_rate is None
    # The default ranks by pi_c: ab 4/9 > d 1/3 > ac 2/9.
    result = evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(protocol="exact", ks=(1, 2)))
    assert result.config["policy"] == "constrained"
    assert result.top_items == [[AB, D]] * 4 and result.ranks == [1, 0, 2, 1]
    assert result.metrics["hr@1"] == pytest.approx(1 / 4) and result.metrics["hr@2"] == pytest.approx(3 / 4)
    assert result.metrics["ndcg@2"] == pytest.approx((1 + 2 * ndcg(1)) / 4)


def test_compare_protocols_counts_disagreements(stub):
    model, tokenizer = stub
    out = compare_protocols(model, tokenizer, stub_dataset(), config=EvalConfig(num_beams=1, ks=(1,),
                                                                                policy="raw"))
    # Raw scores: one beam returns [ab]; the exact top-1 is d. Targets d, ab, ac, d.
    assert out["beam_ranks"] == [None, 0, None, None] and out["exact_ranks"] == [0, 1, 2, 0]
    assert out["rank_differs"] == pytest.approx(3 / 4)
    assert out["hit_differs"] == {"hr@1": pytest.approx(3 / 4)}
    assert out["topk_overlap"] == {"@1": 0.0}
    assert out["beam"]["hr@1"]["value"] == pytest.approx(1 / 4) and out["exact"]["hr@1"]["value"] == 0.5
    # With enough beams the protocols agree on every example.
    agree = compare_protocols(model, tokenizer, stub_dataset(), config=EvalConfig(num_beams=3, ks=(1, 2, 3),
                                                                                  policy="raw"))
    assert agree["rank_differs"] == 0.0 and set(agree["hit_differs"].values()) == {0.0}
    # Under pi_c (the default) one beam's [ab] is the exact top-1 too: exact ranks 1, 0, 2, 1.
    constrained = compare_protocols(model, tokenizer, stub_dataset(), config=EvalConfig(num_beams=1, ks=(1,)))
    assert constrained["beam_ranks"] == [None, 0, None, None]
    assert constrained["exact_ranks"] == [1, 0, 2, 1]
    assert constrained["rank_differs"] == 0.0 and constrained["topk_overlap"] == {"@1": 1.0}


def test_popularity_and_oracle_baselines(stub):
    model, tokenizer = stub
    result = evaluate(model, tokenizer, stub_dataset(oracle=True), config=EvalConfig(num_beams=2, ks=(1, 2)))
    # Train target counts: ac 2, ab 1, d 0 -> order ac, ab, d.
    pop, pop_all, oracle = (result.baselines[name] for name in ("popularity", "popularity_all", "oracle"))
    # History skipped: t0 [ab, d] -> 1; t1 [ac, ab] -> 1; t2 [ac, d] -> 0; t3 [d] -> 0.
    assert pop["summaries"]["hr@1"]["value"] == pytest.approx(2 / 4)
    assert pop["summaries"]["hr@2"]["value"] == pytest.approx(4 / 4)
    assert pop["summaries"]["ndcg@2"]["value"] == pytest.approx((ndcg(1) + ndcg(1) + 1 + 1) / 4)
    # Nothing skipped: [ac, ab] for everyone -> ranks None, 1, 0, None.
    assert pop_all["summaries"]["hr@1"]["value"] == pytest.approx(1 / 4)
    assert pop_all["summaries"]["hr@2"]["value"] == pytest.approx(2 / 4)
    # Oracle lists [d, ab], [ab, ac], [ac, ab] (filled by id), [ab, d] (tie by id) -> ranks 0, 0, 0, 1.
    assert oracle["summaries"]["hr@1"]["value"] == pytest.approx(3 / 4)
    assert oracle["expected"]["hr@1"]["value"] == pytest.approx((0.5 + 0.6 + 1.0 + 0.5) / 4)
    assert oracle["expected"]["hr@2"]["value"] == pytest.approx((0.8 + 1.0 + 1.0 + 1.0) / 4)
    # The model's lists [ab, d] (ranked by pi_c) under the true distributions.
    assert result.expected["hr@1"]["value"] == pytest.approx((0.3 + 0.6 + 0 + 0.5) / 4)
    assert result.expected["hr@2"]["value"] == pytest.approx((0.8 + 0.6 + 0 + 1.0) / 4)
    assert result.expected["ndcg@2"]["value"] == pytest.approx(
        (0.3 + 0.5 * ndcg(1) + 0.6 + 0.5 + 0.5 * ndcg(1)) / 4)
    assert pop["expected"]["hr@1"]["value"] == pytest.approx((0.3 + 0.4 + 1.0 + 0.5) / 4)  # ab, ac, ac, d
    # The oracle's one recommendation: sampled from p, sum_y p(y)^2; its top item (tie ab/d: ab), E[HR@1].
    accept = oracle["expected_acceptance"]
    assert accept["sampled_hit"]["value"] == pytest.approx((0.38 + 0.52 + 1.0 + 0.5) / 4)
    assert accept["greedy_hit"]["value"] == pytest.approx(oracle["expected"]["hr@1"]["value"])


def test_acceptance_of_the_constrained_policy_matches_hand_computation(stub):
    model, tokenizer = stub
    config = EvalConfig(num_beams=2, ks=(1, 2), acceptance=True)
    result = evaluate(model, tokenizer, stub_dataset(oracle=True), config=config)
    # Constrained policy after any prompt: ab 4/9, ac 2/9, d 1/3 (the stub leaks mass to "z", which the
    # trie forbids). Its greedy item is ab, although the raw model ranks d first.
    pi = {AB: 4 / 9, AC: 2 / 9, D: 1 / 3}
    accept = [sum(pi[item] * p for item, p in dist.items()) for dist in ORACLE_TEST]
    assert result.expected_acceptance["sampled_hit"]["value"] == pytest.approx(sum(accept) / 4)
    assert result.expected_acceptance["greedy_hit"]["value"] == pytest.approx((0.3 + 0.6 + 0 + 0.5) / 4)
    assert result.acceptance["greedy_hit"]["value"] == pytest.approx(1 / 4)  # targets d, ab, ac, d
    assert result.acceptance["sampled_hit"]["value"] in {0, 0.25, 0.5, 0.75, 1.0}
    again = evaluate(model, tokenizer, stub_dataset(oracle=True), config=config)
    assert again.acceptance == result.acceptance  # seeded
    off = evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(num_beams=2, ks=(1,)))
    assert off.acceptance is None and off.expected_acceptance is None and off.acceptance_values is None


def test_sampled_hit_rate_estimates_the_acceptance(stub):
    """900 copies of user t1 (target ab, pi_c(ab) = 4/9): the sampled hit rate is a binomial mean."""
    model, tokenizer = stub
    splits = {"train": TRAIN, "valid": [], "test": [TEST[1]] * 900}
    ds = RecDataset(name="stub", catalog=dict(STUB_TITLES), splits=splits)
    result = evaluate(model, tokenizer, ds, config=EvalConfig(num_beams=2, ks=(1,), batch_size=300,
                                                              baselines=False, acceptance=True))
    assert result.expected_acceptance is None  # no true distribution on this dataset
    rate = result.acceptance["sampled_hit"]["value"]
    assert abs(rate - 4 / 9) < 4 * math.sqrt(4 / 9 * 5 / 9 / 900)
    assert result.acceptance["greedy_hit"]["value"] == 1.0


def test_result_is_json_ready_and_formats(stub):
    model, tokenizer = stub
    config = EvalConfig(num_beams=2, ks=(1, 2), max_examples=3, acceptance=True)
    result = evaluate(model, tokenizer, stub_dataset(oracle=True), config=config)
    assert isinstance(result, EvalResult) and result.num_examples == 3 and len(result.ranks) == 3
    data = json.loads(json.dumps(result.to_dict()))
    assert data["summaries"]["hr@1"]["value"] == result.metrics["hr@1"]
    table = format_result(data)
    assert "hr@2" in table and "popularity" in table and "oracle" in table and "95% CI" in table
    assert "greedy_hit" in table and "acceptance (expected)" in table
    assert "oracle acceptance (expected): sampled_hit" in table


def test_bad_configs_and_data_raise(stub):
    model, tokenizer = stub
    with pytest.raises(ValueError, match="num_beams"):
        evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(num_beams=5, ks=(10,)))
    with pytest.raises(ValueError, match="protocol"):
        evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(protocol="greedy"))
    with pytest.raises(ValueError, match="split"):
        evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(split="dev"))
    with pytest.raises(DataError, match="no examples"):
        evaluate(model, tokenizer, stub_dataset(), config=EvalConfig(split="valid", num_beams=2, ks=(1,)))
    from riser_lite.items.catalog import ItemSpace

    smaller = ItemSpace({AB: "ab", D: "d"}, tokenizer)
    with pytest.raises(DataError, match="not in the catalogue"):
        evaluate(model, tokenizer, stub_dataset(), smaller, EvalConfig(num_beams=2, ks=(1,)))


def test_evaluate_command_on_a_run_folder(tmp_path, capsys):
    from riser_lab.cli import main
    from riser_lite.data.native import save_dataset
    from riser_lite.items.tokenizer import train_tokenizer
    from riser_lite.runs import dataset_spec, save_run

    names = ["Alpha", "Beta", "Gamma", "Delta", "Echo", "Fox"]
    titles = {i: f"Title {name}" for i, name in enumerate(names, 1)}
    examples = [Example(f"u{i}", (1 + i % 6,), 1 + (i + 1) % 6) for i in range(8)]
    ds = RecDataset("mini", titles, {"train": examples[:4], "valid": examples[4:6], "test": examples[6:]})
    save_dataset(ds, tmp_path / "data")
    tokenizer = train_tokenizer(titles.values(), vocab_size=300)
    run = save_run(tmp_path / "run", tiny_qwen(tokenizer), tokenizer,
                   config={"data": dataset_spec("native", tmp_path / "data")})
    assert main(["evaluate", "--run", str(run)]) == 0
    assert "hr@10" in capsys.readouterr().out  # the table
    printed = saved = json.loads((run / "eval_test_beam.json").read_text())
    assert printed["num_examples"] == 2
    assert printed["valid_rate"] == 1.0 and 0.0 <= printed["unconstrained_valid_rate"] <= 1.0
    assert set(printed["baselines"]) == {"popularity", "popularity_all"}
    assert set(printed["acceptance"]) == {"sampled_hit", "greedy_hit"}  # real data: the sampled hit rate
    assert printed["expected_acceptance"] is None
    # The default ranking is the constrained policy's; raw rankings are saved under their own name.
    assert saved["config"]["policy"] == "constrained" and not (run / "eval_test_beam_raw.json").exists()
    assert main(["evaluate", "--run", str(run), "--policy", "raw"]) == 0
    capsys.readouterr()
    assert json.loads((run / "eval_test_beam_raw.json").read_text())["config"]["policy"] == "raw"
    assert json.loads((run / "eval_test_beam.json").read_text())["config"]["policy"] == "constrained"
    assert main(["evaluate", "--run", str(run), "--protocol", "exact"]) == 0
    assert "exact protocol" in capsys.readouterr().out
    assert json.loads((run / "eval_test_exact.json").read_text())["config"]["protocol"] == "exact"
