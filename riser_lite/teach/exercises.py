"""Classroom checkers: run a learner's function and the library's on the same inputs and compare.

Each ``check_*`` runs random and edge-case inputs (all-miss and all-hit groups, ties, empty batches,
ratios on both sides of the clip, padding) with a fixed seed, prints ✅ or what differs with a hint, and
returns a ``CheckResult``. It raises ``AssertionError`` on failure only with ``raise_on_fail=True``.
A learner's loss may return the loss tensor or ``(loss, info)``; losses are compared by value and by
gradient with respect to the log-probs. The exercise signatures are in each checker's docstring.
**[choice]** the exercises and their reference answers are this package's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from riser_lite.rl.advantages import group_advantages, learnable_groups
from riser_lite.rl.losses import certainty_weights, clipped_surrogate_loss, sequence_scores, simpo_loss
from riser_lite.rl.pairs import convert_groups_to_pairs
from riser_lite.rl.rewards import hit_reward, rank_reward

SEED = 0
ATOL, RTOL = 1e-5, 1e-4
SHOWN_FAILURES = 4  # printed in full; all of them are in CheckResult.failures


@dataclass
class CheckResult:
    """Outcome of a checker: ``passed`` and one message per failing case."""

    passed: bool
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class Case:
    """One test input: a name for the report, the positional arguments, and a hint shown on failure."""

    name: str
    args: tuple
    hint: str


def _report(title: str, num_cases: int, failures: list[str], raise_on_fail: bool) -> CheckResult:
    if not failures:
        print(f"✅ {title}: your function matches the reference on all {num_cases} cases.")
    else:
        print(f"❌ {title}: {len(failures)} of {num_cases} cases differ from the reference.")
        for failure in failures[:SHOWN_FAILURES]:
            print(f"   • {failure}")
        if len(failures) > SHOWN_FAILURES:
            print(f"   … and {len(failures) - SHOWN_FAILURES} more (see .failures); fix the first ones first")
        if raise_on_fail:
            raise AssertionError(f"{title} failed: " + " | ".join(failures))
    return CheckResult(passed=not failures, failures=failures)


def _call(fn: Callable, args: tuple, grad_positions: Sequence[int]) -> tuple[Tensor, list[Tensor | None]]:
    """fn(*args) on fresh copies of the inputs; returns the output and d(output)/d(args[i]) for i in
    grad_positions (None where the output does not depend on the input through autograd)."""
    args = tuple(a.detach().clone() if isinstance(a, Tensor) else a for a in args)
    for i in grad_positions:
        args[i].requires_grad_(True)
    out = fn(*args)
    out = out[0] if isinstance(out, tuple) else out  # accept loss or (loss, info)
    out = torch.as_tensor(out)
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


def _run_tensor_cases(title: str, learner: Callable, reference: Callable, cases: list[Case],
                      grad_positions: Sequence[int], raise_on_fail: bool,
                      diagnose: Callable[[Case, Tensor, Tensor], str | None] | None = None) -> CheckResult:
    """Compare learner and reference case by case; ``diagnose`` may name a known mistake."""
    failures = []
    for case in cases:
        expected, expected_grads = _call(reference, case.args, grad_positions)
        try:
            got, got_grads = _call(learner, case.args, grad_positions)
        except Exception as error:  # a learner's bug is a failed case, not a crash of the checker
            failures.append(f"[{case.name}] your function raised {type(error).__name__}: {error}. "
                            f"Hint: {case.hint}")
            continue
        problem = _difference(expected, got)
        comparable = got.shape == expected.shape and got.is_floating_point() and not got.isnan().any()
        if problem and diagnose and comparable:
            known_mistake = diagnose(case, expected.double(), got.double())
            problem = f"{problem} ({known_mistake})" if known_mistake else problem
        for i, want, have in zip(grad_positions, expected_grads, got_grads, strict=True):
            if problem:
                break
            want = torch.zeros_like(case.args[i]) if want is None else want
            if have is None:
                if want.abs().sum() > 0:
                    problem = f"the output has no gradient w.r.t. argument {i} (was something detached?)"
                continue
            problem = _difference(want, have, what=f"gradient w.r.t. argument {i}")
        if problem:
            failures.append(f"[{case.name}] {problem}. Hint: {case.hint}")
    return _report(title, len(cases), failures, raise_on_fail)


# ----------------------------------------------------------------------------- advantages

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


def check_group_advantages(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``group_advantages(rewards: Tensor[P, G]) -> Tensor[P, G]`` (or (adv, info)).

    A = (r − mean(r)) / (std(r) + 1e-6) per group, population std (``unbiased=False``), and exactly 0 in
    groups whose rewards are all equal.
    """
    formula = "A = (r − mean) / (std + eps) per row, std with unbiased=False (population)"
    special = {
        "ties": "a group with all-equal rewards must get exactly 0: float rounding leaves r − mean ≈ 1e-8, "
                "which eps blows up; find such groups with max == min and set them to 0 with torch.where",
        "G = 1": "a group of one has std 0: it must get 0, not NaN",
        "all-": "a group with all-equal rewards has std 0: add eps (and set it to exactly 0)",
        "empty": "with P = 0 return an empty [0, G] tensor",
    }
    cases = []
    for name, rewards in _reward_cases():
        hints = [hint for key, hint in special.items() if key in name]
        cases.append(Case(name, (rewards,), hints[0] if hints else formula))

    def diagnose(case: Case, expected: Tensor, got: Tensor) -> str | None:
        group_size = expected.shape[-1]
        if group_size > 1 and torch.allclose(got, expected * math.sqrt((group_size - 1) / group_size),
                                             atol=1e-4):
            return "this is the sample std: use unbiased=False"
        return None

    return _run_tensor_cases("check_group_advantages", fn, lambda r: group_advantages(r)[0], cases, (),
                             raise_on_fail, diagnose)


def check_learnable_groups(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``learnable_groups(rewards: Tensor[P, G]) -> BoolTensor[P]``.

    True where the group's rewards are not all equal (reward variance > 0).
    """
    hint = ("a group is learnable when its rewards differ: rewards.amax(1) > rewards.amin(1). 'any hit' "
            "is wrong for all-hit groups, and var() > 0 is fooled by float rounding of equal values")
    cases = [Case(name, (rewards,), hint) for name, rewards in _reward_cases()]
    return _run_tensor_cases("check_learnable_groups", fn, learnable_groups, cases, (), raise_on_fail)


# ----------------------------------------------------------------------------- token weights

def check_certainty_weights(fn: Callable, raise_on_fail: bool = False) -> CheckResult:
    """Exercise signature: ``certainty_weights(branching: BoolTensor[N, T], mask: Tensor[N, T], d: float)
    -> Tensor[N, T]``: 1 where branching, d where forced, 0 on padding."""
    generator = torch.Generator().manual_seed(SEED)
    branching = torch.tensor([[True, False, False, False], [True, True, False, True]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    random_branching = torch.rand(6, 9, generator=generator) < 0.4
    random_mask = (torch.arange(9)[None, :] < torch.randint(1, 10, (6, 1), generator=generator)).float()
    hint = "torch.where(branching, 1.0, d) * mask: padding is 0 even where branching is True"
    cases = [
        Case("hand example, d = 0.5", (branching, mask, 0.5), hint),
        Case("d = 0 (forced tokens ignored)", (branching, mask, 0.0), hint),
        Case("d = 1 gives the plain mask", (branching, mask, 1.0), hint),
        Case("branching marked on padding", (torch.ones(2, 4, dtype=torch.bool), mask, 0.3), hint),
        Case("random, float mask, d = 0.25", (random_branching, random_mask, 0.25), hint),
        Case("empty batch (N = 0)", (torch.zeros(0, 5, dtype=torch.bool), torch.zeros(0, 5), 0.5), hint),
    ]

    def diagnose(case: Case, expected: Tensor, got: Tensor) -> str | None:
        branching, mask, d = case.args
        branching, mask = branching.bool(), mask.double()
        if torch.allclose(got, mask):
            return "this is the plain mask: a forced token (branching False) weighs d"
        if torch.allclose(got, torch.where(branching, float(d), 1.0).double() * mask):
            return "1 and d are swapped: a branching token is a decision and weighs 1"
        if torch.allclose(got, torch.where(branching, 1.0, float(d)).double()):
            return "padding must weigh 0: multiply by the mask"
        return None

    return _run_tensor_cases("check_certainty_weights", fn, certainty_weights, cases, (), raise_on_fail,
                             diagnose)


# ----------------------------------------------------------------------------- clipped surrogate

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

    def case(name, logp_, old_, adv_, w_, low=0.2, high=0.2, hint="min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A)"):
        return Case(name, (logp_, old_, adv_, w_, low, high), hint)

    cases = [
        case("first step, ρ = 1", old, old, adv, torch.ones(6, 5), hint="loss = −mean of A when ρ = 1"),
        case("ρ = 1.5, A > 0: clip active, no gradient", up, one_token, pos, ones,
             hint="above 1+ε with A > 0 the min picks the clipped term: torch.minimum, not maximum"),
        case("ρ = 0.5, A < 0: clip active, no gradient", down, one_token, neg, ones,
             hint="below 1−ε with A < 0 the clipped term (1−ε)·A is the smaller one"),
        case("ρ = 1.5, A < 0: clip inactive", up, one_token, neg, ones,
             hint="with A < 0 a large ratio is not clipped: the min keeps ρ·A (do not clip ρ alone)"),
        case("ρ = 0.5, A > 0: clip inactive", down, one_token, pos, ones,
             hint="with A > 0 a small ratio is not clipped: the min keeps ρ·A (do not clip ρ alone)"),
        case("random ratios, ε_low = 0.2, ε_high = 0.28", logp, old, adv, torch.ones(6, 5), 0.2, 0.28,
             hint="clip to [1 − eps_low, 1 + eps_high]: the two sides have their own ε"),
        case("padding holds garbage log-probs", garbage_pad, old, adv, lengths_mask,
             hint="average with the weights, Σ w·obj / Σ w per sequence, never a plain mean"),
        case("certainty weights (d = 0.3)", logp, old, adv, lengths_mask * 0.3 + (torch.arange(5) == 0) * 0.7,
             hint="weights are not just 0/1: use Σ w·obj / Σ w"),
        case("empty batch (N = 0)", torch.zeros(0, 5), torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, 5),
             hint="with no sequences return a zero that keeps the graph, e.g. (logp * 0).sum()"),
    ]

    def reference(logp_, old_, adv_, w_, low, high):
        return clipped_surrogate_loss(logp_, old_, adv_, w_, low, high, aggregation="seq_mean")[0]

    def diagnose(case: Case, expected: Tensor, got: Tensor) -> str | None:
        token_mean = clipped_surrogate_loss(*case.args, aggregation="token_mean")[0].detach()
        if torch.allclose(got, token_mean.double(), atol=ATOL):
            return "this is the mean over all tokens: average each sequence first, then the sequences"
        logp_, old_, adv_, w_, low, high = case.args
        swapped = clipped_surrogate_loss(logp_, old_, adv_, w_, high, low)[0].detach().double()
        if low != high and torch.allclose(got, swapped, atol=ATOL):
            return "eps_low and eps_high are swapped: clip to [1 − eps_low, 1 + eps_high]"
        return None

    return _run_tensor_cases("check_clipped_surrogate", fn, reference, cases, (0,), raise_on_fail, diagnose)


# ----------------------------------------------------------------------------- SimPO

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
    score_hint = "s(y) = Σ w·logp / Σ w (a weighted mean per sequence, not a plain mean or a sum)"
    cases = [
        Case("one pair by hand", (hand_w, torch.ones(1, 2), hand_l, torch.ones(1, 3), 2.0, 0.5), score_hint),
        Case("margin γ = 1", (hand_w, torch.ones(1, 2), hand_l, torch.ones(1, 3), 2.0, 1.0),
             "subtract γ inside the sigmoid: −log σ(β·(s_w − s_l) − γ)"),
        Case("β = 2.5, γ = 0", (chosen, torch.ones(5, 4), rejected, torch.ones(5, 6), 2.5, 0.0),
             "multiply the score difference by β"),
        Case("different lengths, garbage in padding", (chosen_garbage, chosen_mask, rejected, rejected_mask,
                                                       2.0, 0.5), score_hint),
        Case("certainty weights", (chosen, fractional, rejected, rejected_mask, 2.0, 0.5), score_hint),
        Case("empty batch (M = 0)", (torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 6),
                                     torch.zeros(0, 6), 2.0, 0.5),
             "with no pairs return a zero that keeps the graph, e.g. chosen_logp.sum() * 0"),
    ]
    def reference(*args):
        return simpo_loss(*args)[0]

    def diagnose(case: Case, expected: Tensor, got: Tensor) -> str | None:
        chosen_logp, chosen_w, rejected_logp, rejected_w, beta, gamma = case.args
        without_gamma = simpo_loss(*case.args[:5], 0.0)[0]
        if gamma != 0 and torch.allclose(got, without_gamma.double(), atol=ATOL):
            return "this is the loss with γ = 0: subtract γ inside the sigmoid"
        swapped = simpo_loss(rejected_logp, rejected_w, chosen_logp, chosen_w, beta, gamma)[0]
        if torch.allclose(got, swapped.double(), atol=ATOL):
            return "chosen and rejected are swapped: the margin is β·(s_chosen − s_rejected) − γ"
        difference = sequence_scores(chosen_logp, chosen_w) - sequence_scores(rejected_logp, rejected_w)
        gamma_scaled = -torch.nn.functional.logsigmoid(beta * (difference - gamma)).mean()
        if gamma != 0 and beta != 1 and torch.allclose(got, gamma_scaled.double(), atol=ATOL):
            return "γ is multiplied by β here: subtract it after scaling, β·(s_w − s_l) − γ"
        return None

    return _run_tensor_cases("check_simpo_loss", fn, reference, cases, (0, 2), raise_on_fail, diagnose)


# ----------------------------------------------------------------------------- pair conversion

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
    cases = [
        ("learnable, duplicated all-miss, all-hit and all-miss groups", mixed, mixed_targets),
        ("one all-miss group of duplicates", torch.tensor([[5, 5, 5, 5]]), torch.tensor([0])),
        ("all-hit groups only", torch.tensor([[4, 4, 4], [2, 2, 2]]), torch.tensor([4, 2])),
        ("G = 1", torch.tensor([[1], [2]]), torch.tensor([1, 3])),
        ("empty batch (P = 0)", torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long)),
        ("random batch", items, targets),
    ]
    failures = []
    for name, group_items, group_targets in cases:
        for reward_name, reward_fn in (("hit", hit_reward), ("rank", rank_reward)):
            rewards = reward_fn(group_items, group_targets)
            expected = Counter(_as_triples(convert_groups_to_pairs(group_items, group_targets, rewards)[0]))
            try:
                got = Counter(_as_triples(fn(group_items.clone(), group_targets.clone(), rewards.clone())))
            except Exception as error:
                failures.append(f"[{name}, {reward_name} reward] your function raised "
                                f"{type(error).__name__}: {error}")
                continue
            if got != expected:
                failures.append(f"[{name}, {reward_name} reward] {_pair_problem(expected, got)}")
    return _report("check_convert_groups_to_pairs", 2 * len(cases), failures, raise_on_fail)


def _pair_problem(expected: Counter, got: Counter) -> str:
    missing, extra = expected - got, got - expected
    parts = [f"missing pairs {sorted(missing)[:4]}" if missing else "",
             f"unexpected pairs {sorted(extra)[:4]}" if extra else ""]
    said = ", ".join(part for part in parts if part)
    if any(count > 1 for count in got.values()):
        return f"{said}. Hint: the same pair appears twice: keep each distinct rejected item once"
    if any(chosen == rejected for _, chosen, rejected in extra):
        return f"{said}. Hint: a rejected item equals the target: all-hit groups give no pairs"
    if extra:
        return f"{said}. Hint: only groups with all-equal rewards and no hit are converted"
    return f"{said}. Hint: every distinct item of an all-miss group is a rejected item, chosen = the target"
