import math

import pytest
import torch
import torch.nn.functional as F

from riser_lite.rl.advantages import group_advantages, learnable_groups
from riser_lite.rl.losses import certainty_weights, clipped_surrogate_loss, simpo_loss
from riser_lite.rl.pairs import convert_groups_to_pairs
from riser_lite.teach import exercises

# Some wrong answers below take std() of an empty batch, which torch warns about.
pytestmark = pytest.mark.filterwarnings("ignore:.*degrees of freedom:UserWarning")

# ----------------------------------------------------------------------------- plausible wrong answers


def adv_sign_error(r):
    return -group_advantages(r)[0]


def adv_missing_eps(r):
    return (r - r.mean(1, keepdim=True)) / r.std(1, unbiased=False, keepdim=True)


def adv_sample_std(r):
    centred = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)
    return torch.where(learnable_groups(r)[:, None], centred, 0.0)


def adv_no_tie_zeroing(r):
    return (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + 1e-6)


def learnable_any_hit(r):
    return r.sum(1) > 0


def learnable_not_all_miss(r):
    return ~(r == 0).all(1)


def learnable_positive_variance(r):  # fooled by float rounding of equal non-binary rewards
    return r.var(1, unbiased=False) > 0


def weights_no_mask(branching, mask, d):
    return torch.where(branching, 1.0, d)


def weights_swapped(branching, mask, d):
    return torch.where(branching, d, 1.0) * mask


def weights_ignore_d(branching, mask, d):  # the plain mask: forced tokens weigh as much as decisions
    return mask.float()


def per_sequence_mean(x, w):
    return ((x * w).sum(-1) / w.sum(-1)).mean()


def surrogate(logp, old, adv, w, low, high, reduce=lambda x, w: -per_sequence_mean(x, w),
              pick=torch.minimum, hi=None):
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    return reduce(pick(ratio * a, torch.clamp(ratio, 1 - low, 1 + (high if hi is None else hi)) * a), w)


def surrogate_max(*args):
    return surrogate(*args, pick=torch.maximum)


def surrogate_clip_ratio_only(logp, old, adv, w, low, high):
    return -per_sequence_mean(torch.clamp(torch.exp(logp - old), 1 - low, 1 + high) * adv[:, None], w)


def surrogate_no_negation(*args):
    return surrogate(*args, reduce=per_sequence_mean)


def surrogate_plain_mean(*args):
    return surrogate(*args, reduce=lambda x, w: -x.mean())


def surrogate_token_mean(*args):
    return surrogate(*args, reduce=lambda x, w: -(x * w).sum() / w.sum())


def surrogate_one_eps(logp, old, adv, w, low, high):
    return surrogate(logp, old, adv, w, low, high, hi=low)


def surrogate_swapped_eps(logp, old, adv, w, low, high):  # clip(ρ, 1 − ε_high, 1 + ε_low)
    return surrogate(logp, old, adv, w, high, low)


def surrogate_upper_clip_only(logp, old, adv, w, low, high):  # forgets the lower side of the clip
    ratio, a = torch.exp(logp - old), adv[:, None]
    return -per_sequence_mean(torch.minimum(ratio * a, torch.clamp(ratio, max=1 + high) * a), w)


def surrogate_detached_ratio(logp, old, adv, w, low, high):
    return surrogate(logp.detach(), old, adv, w, low, high)


def surrogate_fixed(logp, old, adv, w, low, high):  # correct, and returns (loss, info)
    if logp.shape[0] == 0:
        return (logp * 0).sum(), {}
    return surrogate(logp, old, adv, w, low, high), {"note": "ok"}


def simpo(cl, cw, rl, rw, beta, gamma, score=lambda x, w: (x * w).sum(-1) / w.sum(-1), sign=1.0):
    if cl.shape[0] == 0:
        return cl.sum() * 0
    return -F.logsigmoid(sign * beta * (score(cl, cw) - score(rl, rw)) - gamma).mean()


def simpo_plain_mean(*args):
    return simpo(*args, score=lambda x, w: x.mean(-1))


def simpo_sum(*args):
    return simpo(*args, score=lambda x, w: (x * w).sum(-1))


def simpo_no_gamma(cl, cw, rl, rw, beta, gamma):
    return simpo(cl, cw, rl, rw, beta, 0.0)


def simpo_sign_error(*args):
    return simpo(*args, sign=-1.0)


def simpo_gamma_inside_beta(cl, cw, rl, rw, beta, gamma):  # −log σ(β·(s_w − s_l − γ))
    score = (cl * cw).sum(-1) / cw.sum(-1).clamp_min(1e-12) - (rl * rw).sum(-1) / rw.sum(-1).clamp_min(1e-12)
    return -F.logsigmoid(beta * (score - gamma)).mean() if cl.shape[0] else cl.sum() * 0


def simpo_binary_weights(*args):  # masks the padding but ignores fractional (certainty) weights
    return simpo(*args, score=lambda x, w: (x * (w > 0)).sum(-1) / (w > 0).sum(-1))


def simpo_nan_when_empty(cl, cw, rl, rw, beta, gamma):
    def score(x, w):
        return (x * w).sum(-1) / w.sum(-1)

    return -F.logsigmoid(beta * (score(cl, cw) - score(rl, rw)) - gamma).mean()


def pairs_keep_duplicates(items, targets, rewards):
    keep = ~learnable_groups(rewards) & ~(items == targets[:, None]).any(1)
    return [(p, targets[p].item(), i) for p in range(len(items)) if keep[p] for i in items[p].tolist()]


def pairs_include_all_hit(items, targets, rewards):
    keep = ~learnable_groups(rewards)
    distinct = [dict.fromkeys(group.tolist()) for group in items]
    return [(p, targets[p].item(), i) for p in range(len(items)) if keep[p] for i in distinct[p]]


def pairs_every_group_with_a_miss(items, targets, rewards):
    pairs = []
    for p in range(len(items)):
        misses = [i for i in dict.fromkeys(items[p].tolist()) if i != targets[p].item()]
        pairs += [(p, targets[p].item(), i) for i in misses]
    return pairs


def pairs_as_tuples_with_info(items, targets, rewards):  # correct, different return type
    pairs, info = convert_groups_to_pairs(items, targets, rewards)
    return [(p.prompt_index, p.chosen_item, p.rejected_item) for p in reversed(pairs)], info


# ----------------------------------------------------------------------------- the tests

CHECKERS = {
    "advantages": (exercises.check_group_advantages, lambda r: group_advantages(r)[0],
                   [adv_sign_error, adv_missing_eps, adv_sample_std, adv_no_tie_zeroing]),
    "learnable": (exercises.check_learnable_groups, learnable_groups,
                  [learnable_any_hit, learnable_not_all_miss, learnable_positive_variance]),
    "weights": (exercises.check_certainty_weights, certainty_weights,
                [weights_no_mask, weights_swapped, weights_ignore_d]),
    "surrogate": (exercises.check_clipped_surrogate, clipped_surrogate_loss,
                  [surrogate_max, surrogate_clip_ratio_only, surrogate_no_negation, surrogate_plain_mean,
                   surrogate_token_mean, surrogate_one_eps, surrogate_swapped_eps, surrogate_upper_clip_only,
                   surrogate_detached_ratio]),
    "simpo": (exercises.check_simpo_loss, simpo_loss,
              [simpo_plain_mean, simpo_sum, simpo_no_gamma, simpo_gamma_inside_beta, simpo_binary_weights,
               simpo_sign_error, simpo_nan_when_empty]),
    "pairs": (exercises.check_convert_groups_to_pairs, convert_groups_to_pairs,
              [pairs_keep_duplicates, pairs_include_all_hit, pairs_every_group_with_a_miss]),
}


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_passes_the_reference(name, capsys):
    check, reference, _ = CHECKERS[name]
    result = check(reference)
    assert result.passed and result.failures == [] and bool(result)
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("name, wrong", [(n, w) for n, (_, _, ws) in CHECKERS.items() for w in ws],
                         ids=lambda x: getattr(x, "__name__", x))
def test_checker_fails_a_wrong_answer(name, wrong, capsys):
    check = CHECKERS[name][0]
    result = check(wrong)
    assert not result.passed and result.failures
    out = capsys.readouterr().out
    assert "❌" in out and "Hint" in out


@pytest.mark.parametrize("check, correct", [
    (exercises.check_clipped_surrogate, surrogate_fixed),
    (exercises.check_simpo_loss, simpo),
    (exercises.check_convert_groups_to_pairs, pairs_as_tuples_with_info),
])
def test_checker_accepts_other_correct_forms(check, correct):
    assert check(correct).passed


def test_specific_hints():
    result = exercises.check_convert_groups_to_pairs(pairs_keep_duplicates)
    assert any("distinct rejected item" in f for f in result.failures)
    result = exercises.check_convert_groups_to_pairs(pairs_include_all_hit)
    assert any("groups that hold a hit give no pairs" in f for f in result.failures)
    result = exercises.check_clipped_surrogate(surrogate_no_negation)
    assert any("wrong sign" in f for f in result.failures)
    result = exercises.check_clipped_surrogate(surrogate_detached_ratio)
    assert any("no gradient" in f for f in result.failures)
    result = exercises.check_clipped_surrogate(surrogate_token_mean)
    assert any("within each sequence first" in f for f in result.failures)
    result = exercises.check_simpo_loss(simpo_no_gamma)
    assert any("γ = 0" in f for f in result.failures)
    result = exercises.check_group_advantages(adv_sample_std)
    assert any("sample std" in f for f in result.failures)


def _failure(result, case: str) -> str:
    """The failure message of one named case of a checker's result."""
    found = [f for f in result.failures if f.startswith(f"[{case}]")]
    assert len(found) == 1, (case, result.failures)
    return found[0]


def test_hints_name_the_classic_mistakes():
    """Sign errors, a missing ε, clipping the wrong side and a plain mean over padding: each is caught on the
    case built for it, with the message that says what is wrong."""
    # sign errors
    assert "wrong sign" in _failure(exercises.check_group_advantages(adv_sign_error),
                                    "one hit in a group of 4")
    assert "wrong sign" in _failure(exercises.check_clipped_surrogate(surrogate_no_negation),
                                    "first step, ρ = 1")
    assert "chosen and rejected are swapped" in _failure(exercises.check_simpo_loss(simpo_sign_error),
                                                         "one pair by hand")
    # missing ε: NaN in all-equal groups
    message = _failure(exercises.check_group_advantages(adv_missing_eps), "all-hit group")
    assert "NaN" in message and "1e-6 keeps the division finite" in message
    # clipping the wrong side
    message = _failure(exercises.check_clipped_surrogate(surrogate_upper_clip_only),
                       "ρ = 0.5, A < 0: clip active, no gradient")
    assert "(1 − ε)·A, is the smaller one" in message
    assert "not the maximum" in _failure(exercises.check_clipped_surrogate(surrogate_max),
                                     "ρ = 1.5, A > 0: clip active, no gradient")
    assert "not the ratio alone" in _failure(exercises.check_clipped_surrogate(surrogate_clip_ratio_only),
                                             "ρ = 1.5, A < 0: clip inactive")
    assert "eps_low and eps_high are swapped" in _failure(
        exercises.check_clipped_surrogate(surrogate_swapped_eps), "random ratios, ε_low = 0.2, ε_high = 0.28")
    # a plain mean where a masked (weighted) mean is needed
    assert "average each sequence with its weights" in _failure(
        exercises.check_clipped_surrogate(surrogate_plain_mean), "padding holds garbage log-probs")
    assert "not a plain mean" in _failure(exercises.check_simpo_loss(simpo_plain_mean),
                                          "different lengths, garbage in padding")
    assert "padding must weigh 0" in _failure(exercises.check_certainty_weights(weights_no_mask),
                                              "hand example, d = 0.5")
    # the other named mistakes
    assert "plain mask" in _failure(exercises.check_certainty_weights(weights_ignore_d),
                                    "hand example, d = 0.5")
    assert "1 and d are swapped" in _failure(exercises.check_certainty_weights(weights_swapped),
                                             "hand example, d = 0.5")
    assert "γ is multiplied by β" in _failure(exercises.check_simpo_loss(simpo_gamma_inside_beta),
                                               "one pair by hand")


def test_raise_on_fail_and_crashing_learner():
    def broken(rewards):
        raise RuntimeError("not implemented yet")

    result = exercises.check_group_advantages(broken)
    assert not result.passed and all("RuntimeError" in f for f in result.failures)
    with pytest.raises(AssertionError):
        exercises.check_learnable_groups(learnable_any_hit, raise_on_fail=True)
    assert exercises.check_learnable_groups(learnable_groups, raise_on_fail=True).passed


# ----------------------------------------------------------------------------- hints never give the answer

def _answer_lines(name: str) -> list[str]:
    """The code lines of a reference answer (no def line, docstring or comment), without whitespace."""
    import inspect

    from riser_lite.teach import solutions

    lines = []
    for line in inspect.getsource(solutions.solution(name)).splitlines()[1:]:
        code = line.split("#")[0].strip()
        if code and not code.startswith(('"""', "return pairs", "continue", "pairs = []")):
            lines.append("".join(code.split()))
    return lines


@pytest.mark.parametrize("name", sorted(exercises.HINTS))
def test_no_hint_holds_the_reference_answer(name):
    """No hint or diagnosis contains a line of the reference answer, or any Python call at all."""
    import re

    call = re.compile(r"\b[A-Za-z_][A-Za-z0-9_.]*\(", re.ASCII)
    answer = _answer_lines(name)
    assert len(answer) >= 1
    for text in exercises.HINTS[name]:
        flat = "".join(text.split())
        assert not [line for line in answer if line in flat], (name, text)
        assert not call.search(text), (name, text)


def test_every_exercise_has_hints_and_a_reference():
    from riser_lite.teach import solutions

    assert set(exercises.HINTS) == set(exercises.CHECKERS) == set(solutions.SOLUTIONS)


def test_diagnosis_comes_first_with_its_own_hint():
    """04's γ case: the diagnosis names the missing γ and the hint that follows is about γ, not the score."""
    message = _failure(exercises.check_simpo_loss(simpo_no_gamma), "one pair by hand")
    diagnosis, hint = message.split(". Hint: ")
    assert diagnosis.endswith("this is the loss with γ = 0")
    assert hint == exercises.SIMPO_HINTS["gamma"]


def test_wrong_answers_print_where_the_full_answer_is(capsys):
    exercises.check_learnable_groups(learnable_any_hit)
    out = capsys.readouterr().out
    assert "reveal('learnable_groups')" in out and "amax" not in out


# ----------------------------------------------------------------------------- 01 and 02's exercises

def decision_fraction_per_item(branching):
    fractions = [sum(f) / len(f) for f in branching.values() if f]
    return sum(fractions) / len(fractions) if fractions else 0.0


def decision_fraction_forced(branching):
    tokens = sum(len(f) for f in branching.values())
    return sum(len(f) - sum(f) for f in branching.values()) / tokens if tokens else 0.0


def ranks_one_based(ranks, k):
    hits = [r is not None and r < k for r in ranks]
    gains = [1 / math.log2(r + 1) if h and r > 0 else float(h) for r, h in zip(ranks, hits, strict=True)]
    return sum(hits) / max(len(ranks), 1), sum(gains) / max(len(ranks), 1)


def ranks_inclusive(ranks, k):
    hits = [r is not None and r <= k for r in ranks]
    gains = [1 / math.log2(r + 2) if h else 0.0 for r, h in zip(ranks, hits, strict=True)]
    return sum(hits) / max(len(ranks), 1), sum(gains) / max(len(ranks), 1)


def ranks_drop_missing(ranks, k):
    ranked = [r for r in ranks if r is not None]
    return (sum(r < k for r in ranked) / max(len(ranked), 1),
            sum(1 / math.log2(r + 2) for r in ranked if r < k) / max(len(ranked), 1))


@pytest.mark.parametrize("wrong, case, diagnosis", [
    (decision_fraction_per_item, "a long title next to a short one", "mean of every item's own fraction"),
    (decision_fraction_forced, "two titles by hand", "fraction of forced tokens"),
])
def test_decision_fraction_diagnoses(wrong, case, diagnosis):
    assert diagnosis in _failure(exercises.check_decision_fraction(wrong), case)


def test_decision_fraction_values():
    """The hand case by hand: 3 decisions among 5 tokens is 0.6, the per-item mean 2/3 is not."""
    from riser_lite.teach.solutions import decision_fraction

    assert decision_fraction({0: [True, False, False], 1: [True, True]}) == pytest.approx(0.6)
    result = exercises.check_decision_fraction(lambda branching: 2 / 3)
    assert "output is 0.66667, expected 0.6" in _failure(result, "two titles by hand")


@pytest.mark.parametrize("wrong, diagnosis", [
    (ranks_one_based, "1-based ranks"),
    (ranks_inclusive, "rank K counts as a hit"),
    (ranks_drop_missing, "left out of the mean"),
])
def test_hr_and_ndcg_diagnoses(wrong, diagnosis):
    result = exercises.check_hr_and_ndcg_at_k(wrong)
    assert not result.passed and any(diagnosis in f for f in result.failures), result.failures


def test_hr_and_ndcg_hand_case():
    """[0, None, 3, 12] at K = 10: HR = 2/4, NDCG = (1 + 1/log2(5)) / 4."""
    hand = (0.5, (1 + 1 / math.log2(5)) / 4)
    from riser_lite.teach.solutions import hr_and_ndcg_at_k

    assert hr_and_ndcg_at_k([0, None, 3, 12], 10) == pytest.approx(hand, abs=1e-12)
    assert exercises.check_hr_and_ndcg_at_k(hr_and_ndcg_at_k).passed
