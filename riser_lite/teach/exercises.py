"""Classroom checkers: run a learner's function and the library's on the same inputs and compare.

Each ``check_*`` runs random and edge-case inputs with a fixed seed and prints ✅, "not implemented yet" (an
untouched exercise raises ``NotImplementedError``), or per failing case what differs, then the diagnosis of a
known mistake with its hint, or else the case's hint. Hints never hold the answer's code (tests check every
text in `HINTS`); the answer is behind `solutions.reveal`. A learner's loss may return the loss or
``(loss, info)``; losses are compared by value and by gradient. It returns a ``CheckResult``
(``raise_on_fail=True`` raises ``AssertionError`` on failure).
**[choice]** the exercises and their reference answers are this package's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import Tensor

from riser_lite.eval.metrics import hit_rate_at_k, ndcg_at_k
from riser_lite.items.catalog import ItemSpace
from riser_lite.rl.advantages import group_advantages, learnable_groups
from riser_lite.rl.losses import certainty_weights, clipped_surrogate_loss, sequence_scores, simpo_loss
from riser_lite.rl.pairs import convert_groups_to_pairs
from riser_lite.rl.rewards import hit_reward, rank_reward

SEED = 0
ATOL, RTOL = 1e-5, 1e-4
SHOWN_FAILURES = 4  # printed in full; all of them are in CheckResult.failures
NOT_STARTED = "not implemented yet"  # all an untouched exercise is told


@dataclass
class CheckResult:
    """Outcome of a checker: ``passed``, one message per failing case, and whether the learner started."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    started: bool = True  # False when the learner's function raised NotImplementedError

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class Case:
    """One test input: a name for the report, the positional arguments, and the hint shown on failure."""

    name: str
    args: tuple
    hint: str  # points at the idea the case tests; never the answer's code


@dataclass(frozen=True)
class Mistake:
    """A classic wrong answer, recognised from the learner's output."""

    diagnosis: str  # what the learner's output is, e.g. "this is the sample std"
    hint: str  # where to look to fix exactly that mistake


class _NotStarted(Exception):
    """The learner's function raised NotImplementedError: the exercise is untouched."""


class _LearnerError(Exception):
    """The learner's function raised: a failed case, not a crash of the checker."""


def _learner_call(fn: Callable, *args):
    """fn(*args), with NotImplementedError turned into _NotStarted and any other error into _LearnerError."""
    try:
        return fn(*args)
    except NotImplementedError as error:
        raise _NotStarted from error
    except Exception as error:
        raise _LearnerError(f"{type(error).__name__}: {error}") from error


def _run_cases(exercise: str, cases: list[Case], compare: Callable[[Case], str | None],
               raise_on_fail: bool) -> CheckResult:
    """The one way every checker runs: ``compare(case)`` says what differs (hint included) or None."""
    title = f"check_{exercise}"
    failures = []
    for case in cases:
        try:
            problem = compare(case)
        except _NotStarted:
            print(f"⏳ {title}: {NOT_STARTED}.")
            return CheckResult(passed=False, failures=[NOT_STARTED], started=False)
        except _LearnerError as error:
            problem = f"your function raised {error}. Hint: {case.hint}"
        if problem:
            failures.append(f"[{case.name}] {problem}")
    if not failures:
        print(f"✅ {title}: your function matches the reference on all {len(cases)} cases.")
        return CheckResult(passed=True)
    print(f"❌ {title}: {len(failures)} of {len(cases)} cases differ from the reference.")
    for failure in failures[:SHOWN_FAILURES]:
        print(f"   • {failure}")
    if len(failures) > SHOWN_FAILURES:
        print(f"   … and {len(failures) - SHOWN_FAILURES} more (see .failures); fix the first ones first")
    print(f"   Stuck? riser_lite.teach.solutions.reveal({exercise!r}) prints a reference answer.")
    if raise_on_fail:
        raise AssertionError(f"{title} failed: " + " | ".join(failures))
    return CheckResult(passed=False, failures=failures)


def _call(fn: Callable, args: tuple, grad_positions: Sequence[int]) -> tuple[Tensor, list[Tensor | None]]:
    """fn(*args) on fresh copies of the inputs -> (output, [d output / d args[i] for i in grad_positions]),
    None where the output does not depend on that input through autograd."""
    args = tuple(a.detach().clone() if isinstance(a, Tensor) else a for a in args)
    for i in grad_positions:
        args[i].requires_grad_(True)
    out = fn(*args)
    if out is None:
        raise TypeError("it returned None (is a return statement missing?)")
    out = out[0] if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) else out
    out = torch.as_tensor(out)  # accept loss or (loss, info), and plain floats or tuples of floats
    if not grad_positions or not out.requires_grad:
        return out.detach(), [None] * len(grad_positions)
    grads = torch.autograd.grad(out, [args[i] for i in grad_positions], allow_unused=True)
    return out.detach(), list(grads)


def _difference(expected: Tensor, got: Tensor, what: str = "output") -> str | None:
    """None if got matches expected, else a short description of how it differs."""
    if tuple(got.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if expected.dtype == torch.bool:
        got = got.bool()
        if torch.equal(got, expected):
            return None
        return f"{what} is {got.tolist()}, expected {expected.tolist()}"
    got, expected = got.double(), expected.double()
    if torch.isnan(got).any():
        return f"{what} contains NaN"
    if torch.allclose(got, expected, atol=ATOL, rtol=RTOL):
        return None
    if expected.abs().sum() > ATOL and torch.allclose(got, -expected, atol=ATOL, rtol=RTOL):
        return f"{what} has the wrong sign"
    if expected.numel() <= 8:
        return f"{what} is {_fmt(got)}, expected {_fmt(expected)}"
    return f"{what} differs by up to {(got - expected).abs().max().item():.3g}"


def _fmt(x: Tensor):
    return round(x.item(), 5) if x.dim() == 0 else [round(v, 5) for v in x.flatten().tolist()]


def _close(got: Tensor, candidate) -> bool:
    """True when the learner's output (float64) equals a candidate wrong answer."""
    candidate = torch.as_tensor(candidate).detach().double()
    return got.shape == candidate.shape and torch.allclose(got, candidate, atol=ATOL, rtol=RTOL)


def _tensor_comparison(learner: Callable, reference: Callable,
                       diagnose: Callable[[Case, Tensor], Mistake | None],
                       grad_positions: Sequence[int] = ()) -> Callable[[Case], str | None]:
    """`_run_cases`'s compare for tensor outputs: by value, then by the gradients w.r.t. the arguments at
    `grad_positions`; ``diagnose(case, got)`` may name a known mistake."""
    def compare(case: Case) -> str | None:
        expected, expected_grads = _call(reference, case.args, grad_positions)
        got, got_grads = _learner_call(_call, learner, case.args, grad_positions)
        problem = _difference(expected, got)
        if problem and got.shape == expected.shape and not got.double().isnan().any():
            mistake = diagnose(case, got.double())
            if mistake:
                return f"{problem}: {mistake.diagnosis}. Hint: {mistake.hint}"
        for i, want, have in zip(grad_positions, expected_grads, got_grads, strict=True):
            if problem:
                break
            if have is None:
                if want is not None and want.abs().sum() > 0:
                    problem = f"the output has no gradient w.r.t. argument {i} (was something detached?)"
                continue
            want = torch.zeros_like(case.args[i]) if want is None else want
            problem = _difference(want, have, what=f"gradient w.r.t. argument {i}")
        return f"{problem}. Hint: {case.hint}" if problem else None

    return compare


# ----------------------------------------------------------------------------- 01: decision tokens

DECISION_HINTS = {
    "count": "count decision tokens and all tokens over the whole catalogue, then divide once",
    "empty": "a title with no tokens adds nothing to either count; a catalogue with no tokens at all gives 0",
}
DECISION_MISTAKES = {
    "per_item": Mistake("this is the mean of every item's own fraction",
                        "long titles hold more tokens and must weigh more: pool the counts before dividing"),
    "forced": Mistake("this is the fraction of forced tokens",
                      "a decision is a token whose flag is True"),
}


def check_decision_fraction(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``decision_fraction(branching: dict[int, list[bool]]) -> float``.

    The share of all response tokens of the catalogue that are decisions (flag True): Σ decisions / Σ tokens
    over every item (0 when there are no tokens). The library's: ``ItemSpace.branching_profile``.
    """
    generator = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(1, 12, (30,), generator=generator).tolist()
    random_flags = {i: (torch.rand(n, generator=generator) < 0.3).tolist() for i, n in enumerate(lengths)}
    cases = [
        Case("two titles by hand", ({0: [True, False, False], 1: [True, True]},), DECISION_HINTS["count"]),
        Case("a long title next to a short one", ({0: [True] + [False] * 9, 1: [True]},),
             DECISION_HINTS["count"]),
        Case("a title without tokens", ({0: [True, False], 1: []},), DECISION_HINTS["empty"]),
        Case("no items at all", ({},), DECISION_HINTS["empty"]),
        Case("random catalogue", (random_flags,), DECISION_HINTS["count"]),
    ]

    def reference(branching):
        return ItemSpace.branching_profile(SimpleNamespace(branching=branching,
                                                           item_ids=list(branching)))["branching_fraction"]

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        branching = case.args[0]
        per_item = [sum(flags) / len(flags) for flags in branching.values() if flags]
        if per_item and _close(got, sum(per_item) / len(per_item)):
            return DECISION_MISTAKES["per_item"]
        if branching and _close(got, 1 - reference(branching)):
            return DECISION_MISTAKES["forced"]
        return None

    compare = _tensor_comparison(fn, reference, diagnose)
    return _run_cases("decision_fraction", cases, compare, raise_on_fail)


# ----------------------------------------------------------------------------- 02: HR@K and NDCG@K

RANK_HINTS = {
    "formula": "HR@K: the share of users whose true item is in the top K; NDCG@K: the mean gain, one over "
               "the base-2 logarithm of rank + 2 inside the top K and 0 outside, with 0-based ranks",
    "none": "a user whose true item is not in the list (rank None) is a miss with gain 0, and still counts "
            "in the mean",
    "empty": "with no users both metrics are 0",
}
RANK_MISTAKES = {
    "one_based": Mistake("the gains are those of 1-based ranks",
                         "ranks here start at 0: the top item has rank 0 and gain 1"),
    "inclusive": Mistake("a true item at rank K counts as a hit",
                         "ranks start at 0, so the top K are the ranks 0 to K − 1"),
    "drops_none": Mistake("users whose true item is missing from the list are left out of the mean",
                          "a missing item is a miss: divide by every user, not only the ranked ones"),
}


def _rank_metrics(ranks, k, gain=lambda r: 1 / math.log2(r + 2), inside=lambda r, k: r < k, users=None):
    """(HR@K, NDCG@K) written out with a gain and a top-K test of choice (for the diagnoses)."""
    hits = [r is not None and inside(r, k) for r in ranks]
    gains = [gain(r) if hit else 0.0 for r, hit in zip(ranks, hits, strict=True)]
    count = max(len(ranks) if users is None else users, 1)
    return (sum(hits) / count, sum(gains) / count)


def check_hr_and_ndcg_at_k(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``hr_and_ndcg_at_k(ranks: list[int | None], k: int) -> (float, float)``.

    ranks: per user, the 0-based rank of the true item in the model's list (None when it is not in it).
    HR@K = mean of [rank < K]; NDCG@K = mean of 1 / log2(rank + 2) over ranks < K (0 elsewhere).
    The library's: ``riser_lite.eval.metrics.hit_rate_at_k`` and ``ndcg_at_k``.
    """
    generator = torch.Generator().manual_seed(SEED)
    drawn = torch.randint(0, 26, (40,), generator=generator).tolist()
    random_ranks = [None if r >= 20 else r for r in drawn]  # None: the true item is not in the list
    cases = [
        Case("four users by hand, K = 10", ([0, None, 3, 12], 10), RANK_HINTS["formula"]),
        Case("a true item at rank K", ([10, 9, 0], 10), RANK_HINTS["formula"]),
        Case("K = 1", ([0, 1, None, 0], 1), RANK_HINTS["formula"]),
        Case("no true item in any list", ([None, None, None], 10), RANK_HINTS["none"]),
        Case("no users", ([], 10), RANK_HINTS["empty"]),
        Case("random ranks, K = 5", (random_ranks, 5), RANK_HINTS["formula"]),
    ]

    def reference(ranks, k):
        return torch.tensor([hit_rate_at_k(ranks, k), ndcg_at_k(ranks, k)], dtype=torch.float64)

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        ranks, k = case.args
        if _close(got, _rank_metrics(ranks, k, gain=lambda r: 1 / math.log2(r + 1) if r > 0 else 1.0)):
            return RANK_MISTAKES["one_based"]
        if _close(got, _rank_metrics(ranks, k, inside=lambda r, k: r <= k)):
            return RANK_MISTAKES["inclusive"]
        ranked = sum(r is not None for r in ranks)
        if ranked < len(ranks) and _close(got, _rank_metrics(ranks, k, users=ranked)):
            return RANK_MISTAKES["drops_none"]
        return None

    compare = _tensor_comparison(fn, reference, diagnose)
    return _run_cases("hr_and_ndcg_at_k", cases, compare, raise_on_fail)


# ----------------------------------------------------------------------------- 03: advantages

def _reward_cases() -> list[tuple[str, Tensor]]:
    generator = torch.Generator().manual_seed(SEED)
    items = torch.randint(0, 5, (8, 6), generator=generator)
    targets = torch.randint(0, 5, (8,), generator=generator)
    return [
        ("one hit in a group of 4", torch.tensor([[1.0, 0.0, 0.0, 0.0]])),
        ("G = 2", torch.tensor([[0.0, 1.0]])),
        ("all-miss group next to a learnable one",
         torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])),
        ("all-hit group", torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])),
        ("ties at a non-binary value", torch.tensor([[0.3] * 7, [0.3] * 6 + [0.6]])),
        ("one group of ties", torch.tensor([[0.3] * 7])),
        ("G = 1", torch.tensor([[1.0], [0.0]])),
        ("random hit rewards", hit_reward(items, targets)),
        ("random rank rewards", rank_reward(items, targets)),
        ("random real rewards", torch.rand(5, 7, generator=generator)),
        ("empty batch (P = 0)", torch.zeros(0, 4)),
    ]


ADVANTAGE_HINTS = {
    "formula": "within each group (along G): subtract the group's mean reward, divide by the group's "
               "standard deviation plus 1e-6; the population std, which divides by G",
    "ties": "a group whose rewards are all equal must get exactly 0: rounding leaves r − mean near 1e-8, "
            "which a tiny std blows up. Spot such groups by their largest and smallest reward and "
            "overwrite them",
    "G = 1": "a group of one has std 0: its advantage must be 0, not NaN",
    "all-": "a group with all-equal rewards has std 0: the 1e-6 keeps the division finite, and such a group "
            "must come out exactly 0",
    "empty": "with P = 0 the answer is an empty [0, G] tensor: nothing may assume at least one group",
}
ADVANTAGE_MISTAKES = {
    "sample_std": Mistake("this is the sample std (it divides by G − 1)",
                          "GRPO's std here is the population one: look at the correction (or unbiased) "
                          "argument of the std"),
    "ties_not_zero": Mistake("groups whose rewards are all equal are not exactly 0",
                             ADVANTAGE_HINTS["ties"]),
}


def check_group_advantages(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``group_advantages(rewards: Tensor[P, G]) -> Tensor[P, G]`` (or (adv, info)).

    A = (r − mean(r)) / (std(r) + 1e-6) per group, population std (``unbiased=False``), and exactly 0 in
    groups whose rewards are all equal.
    """
    cases = []
    for name, rewards in _reward_cases():
        hints = [hint for key, hint in ADVANTAGE_HINTS.items() if key in name]
        cases.append(Case(name, (rewards,), hints[0] if hints else ADVANTAGE_HINTS["formula"]))

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        rewards = case.args[0].double()
        expected = group_advantages(case.args[0])[0].double()
        group_size = rewards.shape[-1]
        if group_size > 1 and _close(got, expected * math.sqrt((group_size - 1) / group_size)):
            return ADVANTAGE_MISTAKES["sample_std"]
        centred = rewards - rewards.mean(1, keepdim=True)
        if _close(got, centred / (centred.pow(2).mean(1, keepdim=True).sqrt() + 1e-6)):
            return ADVANTAGE_MISTAKES["ties_not_zero"]
        return None

    compare = _tensor_comparison(fn, lambda r: group_advantages(r)[0], diagnose)
    return _run_cases("group_advantages", cases, compare, raise_on_fail)


LEARNABLE_HINTS = {
    "spread": "a group is learnable when its rewards are not all equal: compare two numbers of each group "
              "that coincide exactly when every reward is the same",
}
LEARNABLE_MISTAKES = {
    "any_hit": Mistake("this marks every group with a hit as learnable",
                       "an all-hit group has no spread either: learnable means the rewards differ"),
    "variance": Mistake("this looks like a variance test that float rounding fools",
                        "equal rewards such as 0.3 can have a variance of 1e-17: compare exact values"),
}


def check_learnable_groups(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``learnable_groups(rewards: Tensor[P, G]) -> BoolTensor[P]``.

    True where the group's rewards are not all equal (reward variance > 0).
    """
    cases = [Case(name, (rewards,), LEARNABLE_HINTS["spread"]) for name, rewards in _reward_cases()]

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        rewards = case.args[0]
        if rewards.shape[0] and _close(got, (rewards > 0).any(1).double()):
            return LEARNABLE_MISTAKES["any_hit"]
        if rewards.shape[0] and _close(got, (rewards.var(1, unbiased=False) > 0).double()):
            return LEARNABLE_MISTAKES["variance"]
        return None

    compare = _tensor_comparison(fn, learnable_groups, diagnose)
    return _run_cases("learnable_groups", cases, compare, raise_on_fail)


# ----------------------------------------------------------------------------- 05: token weights

WEIGHT_HINTS = {
    "kinds": "three kinds of token: a decision (branching True) weighs 1, a forced token weighs d, and "
             "padding weighs 0 whatever its branching flag says",
}
WEIGHT_MISTAKES = {
    "mask": Mistake("this is the plain mask", "a forced token (branching False) weighs d, not 1"),
    "swapped": Mistake("1 and d are swapped", "a branching token is a decision and weighs 1; d is for forced "
                                              "tokens"),
    "padding": Mistake("padding tokens get a weight", "padding must weigh 0: the mask says which tokens are "
                                                      "real"),
}


def check_certainty_weights(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``certainty_weights(branching: BoolTensor[N, T], mask: Tensor[N, T], d: float)
    -> Tensor[N, T]``: 1 where branching, d where forced, 0 on padding."""
    generator = torch.Generator().manual_seed(SEED)
    branching = torch.tensor([[True, False, False, False], [True, True, False, True]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    random_branching = torch.rand(6, 9, generator=generator) < 0.4
    random_mask = (torch.arange(9)[None, :] < torch.randint(1, 10, (6, 1), generator=generator)).float()
    hint = WEIGHT_HINTS["kinds"]
    cases = [
        Case("hand example, d = 0.5", (branching, mask, 0.5), hint),
        Case("d = 0 (forced tokens ignored)", (branching, mask, 0.0), hint),
        Case("d = 1 gives the plain mask", (branching, mask, 1.0), hint),
        Case("branching marked on padding", (torch.ones(2, 4, dtype=torch.bool), mask, 0.3), hint),
        Case("random, float mask, d = 0.25", (random_branching, random_mask, 0.25), hint),
        Case("empty batch (N = 0)", (torch.zeros(0, 5, dtype=torch.bool), torch.zeros(0, 5), 0.5), hint),
    ]

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        branching, mask, d = case.args
        branching, mask = branching.bool(), mask.double()
        if _close(got, mask):
            return WEIGHT_MISTAKES["mask"]
        if _close(got, torch.where(branching, float(d), 1.0).double() * mask):
            return WEIGHT_MISTAKES["swapped"]
        if _close(got, torch.where(branching, 1.0, float(d)).double()):
            return WEIGHT_MISTAKES["padding"]
        return None

    compare = _tensor_comparison(fn, certainty_weights, diagnose)
    return _run_cases("certainty_weights", cases, compare, raise_on_fail)


# ----------------------------------------------------------------------------- 05: clipped surrogate

SURROGATE_HINTS = {
    "formula": "per token, the smaller of the unclipped and the clipped objective, with the ratio clipped to "
               "the band [1 − eps_low, 1 + eps_high]",
    "first": "when every ratio is 1 nothing is clipped and the loss is minus the mean advantage",
    "high_pos": "above 1 + ε with A > 0 the clipped term is the smaller one, and it has no gradient: take "
                "the minimum of the two terms, not the maximum",
    "low_neg": "below 1 − ε with A < 0 the clipped term, (1 − ε)·A, is the smaller one",
    "unclipped": "the clip acts only where it lowers the objective: clip the term, not the ratio alone, and "
                 "keep the smaller of the two",
    "two_eps": "the band has two sides with their own ε: the lower edge uses eps_low, the upper eps_high",
    "weighted": "average each sequence with its weights (Σ w·objective / Σ w), then over the sequences; "
                "weights are not only 0 and 1",
    "empty": "with no sequences return a zero that still depends on logp, so that backward works",
}
SURROGATE_MISTAKES = {
    "token_mean": Mistake("this is the mean over all tokens of the batch",
                          "average within each sequence first, then over the sequences"),
    "eps_swapped": Mistake("eps_low and eps_high are swapped", SURROGATE_HINTS["two_eps"]),
}


def check_clipped_surrogate(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``clipped_surrogate(logp, old_logp, advantages, weights, eps_low, eps_high)
    -> loss`` (or (loss, info)), with logp, old_logp, weights [N, T] and advantages [N].

    ρ = exp(logp − old_logp); obj = min(ρ·A, clip(ρ, 1 − eps_low, 1 + eps_high)·A) per token;
    per sequence Σ_t w·obj / Σ_t w; loss = −(mean over sequences). Compared by value and d loss / d logp.
    """
    generator = torch.Generator().manual_seed(SEED)
    old = -torch.rand(6, 5, generator=generator) * 3
    logp = old + 0.6 * torch.randn(6, 5, generator=generator)  # ratios on both sides of the clip
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0])
    lengths_mask = (torch.arange(5)[None, :] < torch.tensor([[5], [3], [1], [4], [2], [5]])).float()
    garbage_pad = torch.where(lengths_mask.bool(), logp, torch.full_like(logp, 3.0))
    one_token = torch.zeros(1, 1)
    up, down = one_token + math.log(1.5), one_token + math.log(0.5)  # ρ = 1.5 and ρ = 0.5
    ones, pos, neg = torch.ones(1, 1), torch.tensor([1.0]), torch.tensor([-1.0])
    hints = SURROGATE_HINTS

    def case(name, logp_, old_, adv_, w_, low=0.2, high=0.2, hint=hints["formula"]):
        return Case(name, (logp_, old_, adv_, w_, low, high), hint)

    cases = [
        case("first step, ρ = 1", old, old, adv, torch.ones(6, 5), hint=hints["first"]),
        case("ρ = 1.5, A > 0: clip active, no gradient", up, one_token, pos, ones, hint=hints["high_pos"]),
        case("ρ = 0.5, A < 0: clip active, no gradient", down, one_token, neg, ones, hint=hints["low_neg"]),
        case("ρ = 1.5, A < 0: clip inactive", up, one_token, neg, ones, hint=hints["unclipped"]),
        case("ρ = 0.5, A > 0: clip inactive", down, one_token, pos, ones, hint=hints["unclipped"]),
        case("random ratios, ε_low = 0.2, ε_high = 0.28", logp, old, adv, torch.ones(6, 5), 0.2, 0.28,
             hint=hints["two_eps"]),
        case("padding holds garbage log-probs", garbage_pad, old, adv, lengths_mask, hint=hints["weighted"]),
        case("certainty weights (d = 0.3)", logp, old, adv, lengths_mask * 0.3 + (torch.arange(5) == 0) * 0.7,
             hint=hints["weighted"]),
        case("empty batch (N = 0)", torch.zeros(0, 5), torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, 5),
             hint=hints["empty"]),
    ]

    def reference(logp_, old_, adv_, w_, low, high):
        return clipped_surrogate_loss(logp_, old_, adv_, w_, low, high, aggregation="seq_mean")[0]

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        if _close(got, clipped_surrogate_loss(*case.args, aggregation="token_mean")[0]):
            return SURROGATE_MISTAKES["token_mean"]
        logp_, old_, adv_, w_, low, high = case.args
        if low != high and _close(got, clipped_surrogate_loss(logp_, old_, adv_, w_, high, low)[0]):
            return SURROGATE_MISTAKES["eps_swapped"]
        return None

    compare = _tensor_comparison(fn, reference, diagnose, (0,))
    return _run_cases("clipped_surrogate", cases, compare, raise_on_fail)


# ----------------------------------------------------------------------------- 04: SimPO

SIMPO_HINTS = {
    "score": "the score of a response is its weighted mean log-prob (Σ w·logp / Σ w per sequence), not a "
             "plain mean or a sum",
    "gamma": "the target margin γ sits inside the sigmoid, after the score difference is scaled by β",
    "beta": "the score difference is scaled by β before γ is subtracted",
    "empty": "with no pairs return a zero that still depends on the log-probs, so that backward works",
}
SIMPO_MISTAKES = {
    "no_gamma": Mistake("this is the loss with γ = 0", SIMPO_HINTS["gamma"]),
    "swapped": Mistake("chosen and rejected are swapped",
                       "the margin is the chosen score minus the rejected one: the loss falls as the target "
                       "pulls ahead"),
    "gamma_scaled": Mistake("γ is multiplied by β here", "β scales the score difference only; γ is "
                                                         "subtracted after that"),
}


def check_simpo_loss(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``simpo_loss(chosen_logp, chosen_weights, rejected_logp, rejected_weights,
    beta, gamma) -> loss`` (or (loss, info)); chosen [M, T1], rejected [M, T2].

    s(y) = Σ_t w·logp / Σ_t w; loss = mean over pairs of −log σ(β·(s_w − s_l) − γ). Compared by value and
    by the gradients w.r.t. chosen_logp and rejected_logp.
    """
    generator = torch.Generator().manual_seed(SEED)
    chosen, rejected = -torch.rand(5, 4, generator=generator) * 4, -torch.rand(5, 6, generator=generator) * 4
    chosen_mask = (torch.arange(4)[None, :] < torch.tensor([[4], [2], [3], [1], [4]])).float()
    rejected_mask = (torch.arange(6)[None, :] < torch.tensor([[6], [1], [3], [5], [2]])).float()
    chosen_garbage = torch.where(chosen_mask.bool(), chosen, torch.full_like(chosen, -20.0))
    fractional = chosen_mask * 0.4 + (torch.arange(4) == 0) * 0.6
    hand_w, hand_l = torch.tensor([[-1.0, -3.0]]), torch.tensor([[-2.0, -2.0, -5.0]])
    hints = SIMPO_HINTS
    cases = [
        Case("one pair by hand", (hand_w, torch.ones(1, 2), hand_l, torch.ones(1, 3), 2.0, 0.5),
             hints["score"]),
        Case("margin γ = 1", (hand_w, torch.ones(1, 2), hand_l, torch.ones(1, 3), 2.0, 1.0),
             hints["gamma"]),
        Case("β = 2.5, γ = 0", (chosen, torch.ones(5, 4), rejected, torch.ones(5, 6), 2.5, 0.0),
             hints["beta"]),
        Case("different lengths, garbage in padding", (chosen_garbage, chosen_mask, rejected, rejected_mask,
                                                       2.0, 0.5), hints["score"]),
        Case("certainty weights", (chosen, fractional, rejected, rejected_mask, 2.0, 0.5), hints["score"]),
        Case("empty batch (M = 0)", (torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 6),
                                     torch.zeros(0, 6), 2.0, 0.5), hints["empty"]),
    ]

    def reference(*args):
        return simpo_loss(*args)[0]

    def diagnose(case: Case, got: Tensor) -> Mistake | None:
        chosen_logp, chosen_w, rejected_logp, rejected_w, beta, gamma = case.args
        if gamma != 0 and _close(got, simpo_loss(*case.args[:5], 0.0)[0]):
            return SIMPO_MISTAKES["no_gamma"]
        if _close(got, simpo_loss(rejected_logp, rejected_w, chosen_logp, chosen_w, beta, gamma)[0]):
            return SIMPO_MISTAKES["swapped"]
        difference = sequence_scores(chosen_logp, chosen_w) - sequence_scores(rejected_logp, rejected_w)
        gamma_scaled = -torch.nn.functional.logsigmoid(beta * (difference - gamma)).mean()
        if gamma != 0 and beta != 1 and _close(got, gamma_scaled):
            return SIMPO_MISTAKES["gamma_scaled"]
        return None

    compare = _tensor_comparison(fn, reference, diagnose, (0, 2))
    return _run_cases("simpo_loss", cases, compare, raise_on_fail)


# ----------------------------------------------------------------------------- 04: pair conversion

PAIR_HINTS = {
    "twice": "the same pair appears twice: keep each distinct rejected item of a group once",
    "target_rejected": "a rejected item equals the target: groups that hold a hit give no pairs",
    "learnable": "only groups whose rewards are all equal and that hold no hit are converted",
    "missing": "every distinct item of an all-miss group is a rejected item; the chosen one is the target",
}


def _as_triples(pairs) -> list[tuple[int, int, int]]:
    """Learner's pairs (PreferencePair objects or (prompt_index, chosen, rejected) tuples) as int triples."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[1], dict):
        pairs = pairs[0]  # (pairs, info)
    triples = []
    for pair in pairs:
        if hasattr(pair, "prompt_index"):
            pair = (pair.prompt_index, pair.chosen_item, pair.rejected_item)
        triples.append(tuple(int(x) for x in pair))
    return triples


def check_convert_groups_to_pairs(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``convert_groups_to_pairs(rollout_items: LongTensor[P, G], targets: LongTensor[P],
    rewards: Tensor[P, G]) -> list of pairs`` (or (pairs, info)); a pair is a ``PreferencePair`` or a tuple
    (prompt_index, chosen_item, rejected_item). The order of the pairs does not matter.

    Groups with all-equal rewards and no hit give (p, target, item) for each *distinct* rolled-out item;
    learnable groups and all-hit groups give none.
    """
    generator = torch.Generator().manual_seed(SEED)
    items = torch.randint(0, 6, (10, 5), generator=generator)
    targets = torch.randint(0, 6, (10,), generator=generator)
    mixed = torch.tensor([[3, 4, 5, 6], [7, 7, 8, 7], [2, 2, 2, 2], [1, 9, 1, 4]])
    mixed_targets = torch.tensor([3, 1, 2, 5])
    groups = [
        ("learnable, duplicated all-miss, all-hit and all-miss groups", mixed, mixed_targets),
        ("one all-miss group of duplicates", torch.tensor([[5, 5, 5, 5]]), torch.tensor([0])),
        ("all-hit groups only", torch.tensor([[4, 4, 4], [2, 2, 2]]), torch.tensor([4, 2])),
        ("G = 1", torch.tensor([[1], [2]]), torch.tensor([1, 3])),
        ("empty batch (P = 0)", torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long)),
        ("random batch", items, targets),
    ]
    rewards = (("hit", hit_reward), ("rank", rank_reward))
    cases = [Case(f"{name}, {kind} reward", (group, target, reward_fn(group, target)), PAIR_HINTS["missing"])
             for name, group, target in groups for kind, reward_fn in rewards]

    def compare(case: Case) -> str | None:
        expected = Counter(_as_triples(convert_groups_to_pairs(*case.args)[0]))
        got = Counter(_learner_call(lambda: _as_triples(fn(*(arg.clone() for arg in case.args)))))
        return None if got == expected else _pair_problem(expected, got)

    return _run_cases("convert_groups_to_pairs", cases, compare, raise_on_fail)


def _pair_problem(expected: Counter, got: Counter) -> str:
    """The pairs missing and unexpected, and the hint of the likeliest cause."""
    missing, extra = expected - got, got - expected
    parts = [f"missing pairs {sorted(missing)[:4]}" if missing else "",
             f"unexpected pairs {sorted(extra)[:4]}" if extra else ""]
    if any(count > 1 for count in got.values()):
        cause = "twice"
    elif any(chosen == rejected for _, chosen, rejected in extra):
        cause = "target_rejected"
    else:
        cause = "learnable" if extra else "missing"
    return f"{', '.join(part for part in parts if part)}. Hint: {PAIR_HINTS[cause]}"


# Every exercise by the name of its reference answer: its checker, its hints and its known mistakes.
EXERCISES: dict[str, tuple[Callable[..., CheckResult], dict, dict]] = {
    "decision_fraction": (check_decision_fraction, DECISION_HINTS, DECISION_MISTAKES),
    "hr_and_ndcg_at_k": (check_hr_and_ndcg_at_k, RANK_HINTS, RANK_MISTAKES),
    "group_advantages": (check_group_advantages, ADVANTAGE_HINTS, ADVANTAGE_MISTAKES),
    "learnable_groups": (check_learnable_groups, LEARNABLE_HINTS, LEARNABLE_MISTAKES),
    "convert_groups_to_pairs": (check_convert_groups_to_pairs, PAIR_HINTS, {}),
    "simpo_loss": (check_simpo_loss, SIMPO_HINTS, SIMPO_MISTAKES),
    "clipped_surrogate": (check_clipped_surrogate, SURROGATE_HINTS, SURROGATE_MISTAKES),
    "certainty_weights": (check_certainty_weights, WEIGHT_HINTS, WEIGHT_MISTAKES),
}
CHECKERS = {name: check for name, (check, _, _) in EXERCISES.items()}
# Every text a learner can be shown after a wrong answer (tests check none holds the answer).
HINTS = {name: [*hints.values(), *(text for m in mistakes.values() for text in (m.diagnosis, m.hint))]
         for name, (_, hints, mistakes) in EXERCISES.items()}
