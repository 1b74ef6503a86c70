"""Trie-constrained beam search and exact item scoring (riser_lite.model.decoding).

Two kinds of model are used:
- a random tiny Qwen2 (weights spread wide so candidates are well separated), checked against
  transformers' own `generate` and against a naive forward per item;
- `ContextStub`, a hand-built "model" whose next-token distribution is a fixed table of the last two visible
  tokens, over a one-character-per-token tokenizer, so item probabilities and rankings are computed by hand.
"""

from __future__ import annotations

import math
import string
from types import SimpleNamespace

import pytest
import torch
from naive import score_items_naive

from riser_lite.eval.metrics import top_items
from riser_lite.items.catalog import ItemSpace
from riser_lite.items.prompts import encode_response, format_prompt
from riser_lite.items.tokenizer import train_tokenizer
from riser_lite.model.decoding import (
    BeamResult,
    beam_search,
    encode_prompts,
    prefix_allowed_tokens_fn,
    score_all_items,
)

# A catalogue with many shared prefixes (and one title that is a prefix of another as text).
TITLES = {
    1: "Red Apple", 2: "Red Apricot", 3: "Red Aster", 4: "Red", 5: "Blue Sky", 6: "Blue Skies",
    7: "Blue Sea", 8: "Blue Seal", 9: "Green", 10: "Greenland", 11: "Green Day", 12: "Gold",
    13: "Golden Hour", 14: "Golden Gate", 15: "Silver", 16: "Silverado", 17: "Night Train",
    18: "Night Trains", 19: "Nightfall", 20: "North Star",
}
PROMPTS = [
    format_prompt(["Red Apple", "Blue Sea"]),
    format_prompt(["Nightfall"]),
    format_prompt(["Golden Gate", "Silver", "Green Day", "North Star", "Blue Skies", "Red"]),
    format_prompt([]),
    format_prompt(["Greenland", "Gold", "Night Train"]),
]


def tiny_qwen(tokenizer, attention: str = "eager", seed: int = 0, init_std: float = 0.3):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
        initializer_range=init_std, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, attn_implementation=attention)
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def space():
    tokenizer = train_tokenizer(TITLES.values(), vocab_size=300)
    return ItemSpace(TITLES, tokenizer)


@pytest.fixture(scope="module")
def prompts(space):
    return encode_prompts(space.tokenizer, PROMPTS)


# ---------------------------------------------------------------------------------------------- the stub


class CharTokenizer:
    """One token per character; id 0 = pad, 1 = EOS. Enough of the HF tokenizer API for ItemSpace."""

    pad_token, eos_token = "<pad>", "<eos>"
    pad_token_id, eos_token_id = 0, 1
    padding_side = "left"

    def __init__(self):
        self.chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n"))
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars) + 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.index[c] for c in text]}

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return "".join(self.chars[i - 2] if i >= 2 else ("" if skip_special_tokens else "?") for i in ids)

    def batch_decode(self, rows, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return [self.decode(r, skip_special_tokens) for r in rows]


class _TokenCache:
    """The stub's 'KV cache': the tokens seen so far, per row."""

    def __init__(self, tokens):
        self.tokens = tokens

    def reorder_cache(self, index):
        self.tokens = self.tokens.index_select(0, index)

    def crop(self, n):
        self.tokens = self.tokens[:, :n]


class ContextStub(torch.nn.Module):
    """Next-token distribution = a fixed table of the last two tokens the position may attend to.

    `rules` maps (previous, last) characters to {next character: probability} (use "<eos>" for EOS); the
    remaining mass goes to "z" (in no title), and unlisted contexts are uniform. Attention is read from the
    mask (2D padding mask + causality, or a 4D additive mask), so tree-shaped masks are honoured.
    """

    def __init__(self, tokenizer: CharTokenizer, rules: dict):
        super().__init__()
        self.tok = tokenizer
        vocab = len(tokenizer)
        self.config = SimpleNamespace(_attn_implementation="eager", vocab_size=vocab)
        table = torch.zeros(vocab, vocab, vocab)  # uniform logits by default
        tid = lambda c: tokenizer.eos_token_id if c == "<eos>" else tokenizer.index[c]  # noqa: E731
        for (prev, last), dist in rules.items():
            probs = torch.zeros(vocab)
            for char, p in dist.items():
                probs[tid(char)] = p
            probs[tid("z")] += 1.0 - sum(dist.values())
            table[tid(prev), tid(last)] = probs.log()
        self.register_buffer("table", table)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # decoders read the device and dtype from parameters

    def probability(self, context: str, response_ids: list[int]) -> float:
        """Hand-side: P(response | prompt text) from the rules (a pure python walk)."""
        seq = [self.tok.index[c] for c in context]
        p = 1.0
        for token in response_ids:
            p *= float(self.table[seq[-2], seq[-1]].softmax(-1)[token])
            seq.append(token)
        return p

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True):
        past = cache.tokens if cache is not None else input_ids[:, :0]
        full = torch.cat([past, input_ids], 1)
        steps, total = input_ids.shape[1], full.shape[1]
        if attention_mask.ndim == 4:
            allowed = attention_mask[:, 0] == 0
        else:
            causal = torch.arange(total)[None, :] <= (past.shape[1] + torch.arange(steps))[:, None]
            allowed = attention_mask.bool()[:, None, :] & causal[None]
        pos = torch.arange(1, total + 1)
        last = (allowed * pos).amax(-1) - 1
        before = (allowed & (pos - 1 < last[..., None])) * pos
        prev = before.amax(-1) - 1
        gather = lambda idx: torch.where(idx >= 0, full.gather(1, idx.clamp(min=0)), 0)  # noqa: E731
        logits = self.table[gather(prev), gather(last)]
        return SimpleNamespace(logits=logits, cache=_TokenCache(full))


# Items "ab", "ac", "d". After the prompt (ending ":\n") the model prefers "a" (0.6) to "d" (0.3), but "a" is
# followed by the titles' letters only rarely, so:
#   P(ab) = .6 * .1 * .9 * .8 = .0432,  P(ac) = .6 * .05 * .5 * .8 = .012,  P(d) = .3 * .9 * .8 = .216.
# The exact ranking is d, ab, ac; one beam follows "a" and returns ab; two beams find d, ab.
STUB_TITLES = {1: "ab", 2: "ac", 3: "d"}
STUB_RULES = {
    (":", "\n"): {"a": 0.6, "d": 0.3},
    ("\n", "a"): {"b": 0.1, "c": 0.05},
    ("a", "b"): {"\n": 0.9}, ("a", "c"): {"\n": 0.5}, ("\n", "d"): {"\n": 0.9},
    ("b", "\n"): {"<eos>": 0.8}, ("c", "\n"): {"<eos>": 0.8}, ("d", "\n"): {"<eos>": 0.8},
}
STUB_PROBS = {1: 0.0432, 2: 0.012, 3: 0.216}


def stub_setup():
    tokenizer = CharTokenizer()
    return ContextStub(tokenizer, STUB_RULES), ItemSpace(STUB_TITLES, tokenizer)


# ---------------------------------------------------------------------------------------------- tests


def test_encode_prompts_left_pads(space):
    ids, mask = encode_prompts(space.tokenizer, ["Next item:\n", format_prompt(["Red", "Gold"])])
    assert ids.shape == mask.shape and mask.dtype == torch.long
    short = space.tokenizer("Next item:\n", add_special_tokens=False)["input_ids"]
    assert ids[0, -len(short):].tolist() == short and mask[0].sum() == len(short)
    assert (ids[0, : -len(short)] == space.tokenizer.pad_token_id).all() and mask[1].all()
    with pytest.raises(TypeError):
        encode_prompts(space.tokenizer, "one string")


def test_stub_scores_match_hand_computation():
    model, space = stub_setup()
    ids, mask = encode_prompts(space.tokenizer, [format_prompt(["ab"]), format_prompt([])])
    hand = torch.tensor([[STUB_PROBS[i] for i in space.item_ids]] * 2).log()
    # Raw policy: the probabilities above (the constrained ones are checked further down).
    torch.testing.assert_close(score_all_items(model, space, ids, mask, policy="raw"), hand, rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(score_items_naive(model, space, ids, mask, policy="raw"), hand, rtol=1e-5,
                               atol=1e-5)
    # The stub's own python walk agrees with the table used above.
    assert model.probability(format_prompt([]), encode_response(space.tokenizer, "d")) == pytest.approx(0.216)


def test_beam_on_stub_equals_hand_ranking():
    model, space = stub_setup()
    ids, mask = encode_prompts(space.tokenizer, [format_prompt(["ac", "d"])])
    full = beam_search(model, space, ids, mask, num_beams=3, policy="raw")  # the hand ranking is raw
    assert full.item_lists() == [[3, 1, 2]]  # exhaustive (K = catalogue size): the exact ranking
    torch.testing.assert_close(full.scores[0], torch.tensor([0.216, 0.0432, 0.012]).log())
    assert beam_search(model, space, ids, mask, num_beams=1, policy="raw").item_lists() == [[1]]  # misses d
    assert beam_search(model, space, ids, mask, num_beams=2, policy="raw").item_lists() == [[3, 1]]


def test_beam_matches_transformers_generate(space, prompts):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, seed=1)
    for k in (3, 8):
        ours = beam_search(model, space, ids, mask, num_beams=k, policy="raw")  # generate ranks raw
        out = model.generate(
            input_ids=ids, attention_mask=mask, num_beams=k, num_return_sequences=k, do_sample=False,
            length_penalty=0.0, early_stopping=False, max_new_tokens=space.max_response_len,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(space, ids.shape[1]),
            pad_token_id=space.tokenizer.pad_token_id, eos_token_id=space.tokenizer.eos_token_id,
            return_dict_in_generate=True, output_scores=True)
        generated = out.sequences[:, ids.shape[1]:].reshape(len(PROMPTS), k, -1)
        for b in range(len(PROMPTS)):
            theirs = []
            for row in generated[b].tolist():
                end = row.index(space.tokenizer.eos_token_id) + 1
                theirs.append(space.trie.walk(row[:end])[0])
            assert ours.items[b].tolist() == theirs, (k, b)
        theirs_scores = out.sequences_scores.view(len(PROMPTS), k)
        torch.testing.assert_close(ours.scores, theirs_scores, atol=1e-4, rtol=1e-5)


def test_beam_result_is_consistent(space, prompts):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, seed=2)
    result = beam_search(model, space, ids, mask, num_beams=6)
    assert isinstance(result, BeamResult) and result.items.shape == (len(PROMPTS), 6)
    assert result.tokens.shape == (len(PROMPTS), 6, space.max_response_len)
    for b in range(len(PROMPTS)):
        assert len(set(result.items[b].tolist())) == 6  # distinct catalogue items
        assert (result.scores[b][:-1] >= result.scores[b][1:]).all()  # best first
        for j, item in enumerate(result.items[b].tolist()):
            n = len(space.response_ids[item])
            assert result.tokens[b, j, :n].tolist() == space.response_ids[item]
            assert result.token_mask[b, j].sum() == n
    torch.testing.assert_close(result.token_logprobs.sum(-1), result.scores)
    exact = score_all_items(model, space, ids, mask)
    columns = torch.tensor([[space.index_of[i] for i in row] for row in result.items.tolist()])
    torch.testing.assert_close(result.scores, exact.gather(1, columns), atol=1e-4, rtol=1e-5)


def test_exhaustive_beam_equals_exact_ranking(space, prompts):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, seed=3)
    result = beam_search(model, space, ids, mask, num_beams=len(space))
    exact = score_all_items(model, space, ids, mask)
    assert result.item_lists() == top_items(exact, space.item_ids, len(space))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_score_all_items_equals_naive_forward(space, prompts, attention):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, attention=attention, seed=4)
    fast = score_all_items(model, space, ids, mask, chunk_nodes=16)  # many chunks, prefixes split across them
    naive = score_items_naive(model, space, ids, mask)
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=1e-5)
    assert (fast.exp().sum(1) <= 1.0 + 1e-5).all()
    torch.testing.assert_close(score_all_items(model, space, ids, mask, chunk_nodes=10_000), fast,
                               atol=1e-4, rtol=1e-5)


def test_left_padding_does_not_change_results(space, prompts):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, seed=5)
    batch_scores = score_all_items(model, space, ids, mask)
    batch_beams = beam_search(model, space, ids, mask, num_beams=4)
    for b in range(len(PROMPTS)):
        alone_ids, alone_mask = encode_prompts(space.tokenizer, [PROMPTS[b]])
        assert alone_mask.all()
        torch.testing.assert_close(score_all_items(model, space, alone_ids, alone_mask)[0], batch_scores[b],
                                   atol=1e-4, rtol=1e-5)
        alone = beam_search(model, space, alone_ids, alone_mask, 4)
        assert alone.items[0].tolist() == batch_beams.items[b].tolist()


def test_short_step_limit_never_returns_truncated_items(space, prompts):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, seed=6)
    limit = min(len(r) for r in space.response_ids.values()) + 1
    result = beam_search(model, space, ids, mask, num_beams=3, max_new_tokens=limit)
    for row in result.item_lists():
        assert all(len(space.response_ids[item]) <= limit for item in row)
    assert ((result.items >= 0) | (result.scores == float("-inf"))).all()


def test_more_beams_than_items_pads_with_placeholders():
    model, space = stub_setup()
    ids, mask = encode_prompts(space.tokenizer, [format_prompt(["d"])])
    result = beam_search(model, space, ids, mask, num_beams=5, policy="raw")
    assert result.items[0].tolist() == [3, 1, 2, -1, -1]
    assert math.isinf(float(result.scores[0, 3])) and not result.token_mask[0, 3:].any()


def test_bad_arguments_raise(space, prompts):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model, space, ids, mask, num_beams=0)
    with pytest.raises(ValueError, match="shape"):
        beam_search(model, space, ids, mask[:, 1:], num_beams=2)
    with pytest.raises(ValueError, match="shape"):
        score_all_items(model, space, ids[0], mask[0])


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_constrained_item_scores_are_a_distribution_over_the_catalogue(space, prompts, attention):
    ids, mask = prompts
    model = tiny_qwen(space.tokenizer, attention=attention, seed=4)
    constrained = score_all_items(model, space, ids, mask, chunk_nodes=16, policy="constrained")
    torch.testing.assert_close(constrained.exp().sum(1), torch.ones(ids.shape[0]), atol=1e-5, rtol=0)
    naive = score_items_naive(model, space, ids, mask, policy="constrained")
    torch.testing.assert_close(constrained, naive, atol=1e-4, rtol=1e-5)
    # Renormalising over valid tokens only removes leaked mass: every item gains probability.
    raw = score_all_items(model, space, ids, mask, chunk_nodes=16, policy="raw")
    assert (constrained >= raw - 1e-5).all() and (raw.exp().sum(1) < 1.0 - 1e-3).all()


def test_constrained_scores_on_the_stub_renormalise_at_each_node():
    model, space = stub_setup()
    ids, mask = encode_prompts(space.tokenizer, [format_prompt(["ab"])])
    constrained = score_all_items(model, space, ids, mask, policy="constrained")
    # Root: a .6, d .3 -> 2/3, 1/3. After "a": b .1, c .05 -> 2/3, 1/3. Newline and EOS are forced (log 0).
    hand = torch.tensor([[4 / 9, 2 / 9, 1 / 3]]).log()  # ab, ac, d
    torch.testing.assert_close(constrained, hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score_items_naive(model, space, ids, mask, policy="constrained"), hand,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="policy"):
        score_all_items(model, space, ids, mask, policy="masked")
