"""The prompt oracle: exact posterior-mean taste, its importance-sampled cross-check, and its place between
popularity and the full oracle."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from riser_lite.data import load_dataset
from riser_lite.data.synthetic import SyntheticConfig, build_world, generate_synthetic, world_of
from riser_lite.data.synthetic.prompt_oracle import (
    posterior_taste,
    prior_concentration,
    prompt_oracle_distribution,
    prompt_oracle_rows,
    window_likelihood_terms,
)
from riser_lite.data.types import DataError, Example, RecDataset
from riser_lite.eval.baselines import expected_columns, oracle_ranks
from riser_lite.eval.oracle import popularity_hit_rate, prompt_oracle_hit_rate

# Two genres, one short series each, six standalones: windows of up to 4 items (histories are longer).
TINY = SyntheticConfig(num_genres=2, series_per_genre=1, min_series_length=2, max_series_length=3,
                       standalones_per_genre=6, makers_per_genre=1, num_train_users=5, num_valid_users=5,
                       num_test_users=12, min_length=3, max_length=8, max_history=4)


def taste_directions(world, history):
    """The affine form of one step: (p(. | 0, h) [I], B [I, G] with B[:, g] = p(. | e_g, h) - p(. | 0, h))."""
    num_genres = len(world.genres)
    base = world.next_item_distribution(np.zeros(num_genres), history)
    directions = np.stack([world.next_item_distribution(np.eye(num_genres)[g], history) - base
                           for g in range(num_genres)], axis=1)
    return base, directions


def test_one_step_is_affine_in_the_taste():
    world = build_world(TINY, seed=2)
    history = [0, 5]
    base, directions = taste_directions(world, history)
    for taste in np.random.default_rng(0).dirichlet([0.5, 0.5], size=5):
        assert world.next_item_distribution(taste, history) == pytest.approx(base + directions @ taste,
                                                                             abs=1e-15)


def test_one_item_window_matches_the_hand_computed_posterior_mean():
    # L(θ) = c + e θ_g; E[θ_h L] = c α_h / A + e α_g (α_h + [h = g]) / (A (A + 1)); E[L] = c + e α_g / A.
    world = build_world(TINY, seed=2)
    item = next(it.item_id for it in world.items if it.series is None)
    (g,), (c,), (e,) = window_likelihood_terms(world, [item])
    alpha = prior_concentration(world)
    total = alpha.sum()
    by_hand = np.array([(c * alpha[h] / total + e * alpha[g] * (alpha[h] + (h == g)) / (total * (total + 1)))
                        / (c + e * alpha[g] / total) for h in range(2)])
    assert posterior_taste(world, [item]) == pytest.approx(by_hand, rel=1e-12)
    assert c > 0 and e > 0


def brute_force_posterior_taste(world, window) -> np.ndarray:
    """E[θ | w] by expanding the likelihood into its 2^n products, each integrated with Dirichlet moments."""
    alpha = prior_concentration(world)
    genres, constant, slope = window_likelihood_terms(world, window)

    def moment(powers):  # E[prod_g θ_g^powers_g] under Dir(alpha)
        rising = sum(math.lgamma(a + j) - math.lgamma(a) for a, j in zip(alpha, powers, strict=True))
        return math.exp(math.lgamma(alpha.sum()) - math.lgamma(alpha.sum() + powers.sum()) + rising)

    evidence, weighted = 0.0, np.zeros(len(alpha))
    for picks in itertools.product((0, 1), repeat=len(window)):  # 1: take e_s θ_{g_s}, 0: take c_s
        powers = np.bincount(genres[np.array(picks, dtype=bool)], minlength=len(alpha))
        weight = math.prod(e if pick else c for pick, c, e in zip(picks, constant, slope, strict=True))
        evidence += weight * moment(powers)
        weighted += [weight * moment(powers + np.eye(len(alpha), dtype=int)[h]) for h in range(len(alpha))]
    return weighted / evidence


def test_likelihood_terms_are_the_process_and_the_closed_form_matches_enumeration():
    ds = generate_synthetic(TINY, seed=2)
    world = world_of(ds)
    taste = np.array([0.3, 0.7])
    for ex in ds.splits["test"]:
        window = list(ex.history[-TINY.max_history:])
        genres, constant, slope = window_likelihood_terms(world, window)
        for s, item in enumerate(window):
            step = world.next_item_distribution(taste, window[:s])[item]
            assert constant[s] + slope[s] * taste[genres[s]] == pytest.approx(step, rel=1e-12)
        assert posterior_taste(world, window) == pytest.approx(brute_force_posterior_taste(world, window),
                                                               rel=1e-10)


def sampled_prompt_oracle(world, window, rng, num_draws: int = 20_000):
    r"""Importance-sampled q(. | w), the reference `prompt_oracle_distribution` is checked against:
    (estimate [I], its standard error [I], effective sample size).

    Draw $\theta^{(m)} \sim \mathrm{Dir}(\alpha)$, weight $\tilde w_m = L(\theta^{(m)}) / \sum_{m'}
    L(\theta^{(m')})$, estimate $\hat\theta = \sum_m \tilde w_m \theta^{(m)}$. Its Monte-Carlo covariance
    (delta method for a self-normalised estimator) is $\hat\Sigma = \sum_m \tilde w_m^2 (\theta^{(m)} -
    \hat\theta)(\theta^{(m)} - \hat\theta)^\top$, and the standard error of $\hat q(y)$ is
    $\sqrt{b_y^\top \hat\Sigma\, b_y}$ with $b_{y,g} = p(y \mid e_g, w) - p(y \mid 0, w)$; the effective
    sample size is $1 / \sum_m \tilde w_m^2$.
    """
    draws = rng.dirichlet(prior_concentration(world), size=num_draws)  # [M, G]
    genres, constant, slope = window_likelihood_terms(world, window)
    log_weight = np.log(constant[None, :] + slope[None, :] * draws[:, genres]).sum(1)  # [M]
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    taste = weight @ draws  # [G]
    centred = (draws - taste) * weight[:, None]
    covariance = centred.T @ centred  # [G, G], delta method for a self-normalised estimate
    _, directions = taste_directions(world, list(window))
    error = np.sqrt(np.maximum(np.einsum("ig,gh,ih->i", directions, covariance, directions), 0.0))
    return world.next_item_distribution(taste, list(window)), error, float(1.0 / np.sum(weight ** 2))


def test_importance_sampling_agrees_with_the_exact_prompt_oracle_within_its_reported_error():
    ds = generate_synthetic(TINY, seed=2)
    world = world_of(ds)
    rng = np.random.default_rng(0)
    for ex in ds.splits["test"]:
        window = ex.history[-TINY.max_history:]
        exact = prompt_oracle_distribution(world, window)
        estimate, error, ess = sampled_prompt_oracle(world, window, rng, num_draws=4000)
        assert ess > 100  # enough draws for the delta-method error to mean something
        assert exact.sum() == pytest.approx(1.0, abs=1e-12)
        # 5 standard errors: a false alarm has probability ~1e-6 per item under the normal approximation.
        assert np.all(np.abs(estimate - exact) <= 5 * error + 1e-12)
        assert error.max() > 0  # the error is reported, not zero


def test_prompt_oracle_rows_use_the_prompt_window_and_need_a_generator():
    ds = generate_synthetic(TINY, seed=2)
    long = next(ex for ex in ds.splits["train"] if len(ex.history) == TINY.max_history)
    shorter = RecDataset(ds.name, ds.catalog, ds.splits, max_history=2, generator=ds.generator)
    row = prompt_oracle_rows(shorter, [long])[0]
    expected = prompt_oracle_distribution(world_of(ds), long.history[-2:])
    assert row == {item: p for item, p in enumerate(expected.tolist()) if p > 0}
    plain = RecDataset("x", ds.catalog, {"train": [], "valid": [], "test": [Example("u", (0,), 1)]})
    assert prompt_oracle_rows(plain, plain.splits["test"]) is None


def test_bundled_prompt_oracle_lies_between_popularity_and_the_full_oracle():
    ds = load_dataset("synthetic")
    examples, truth = ds.splits["test"], ds.oracle["test"]
    rows = prompt_oracle_rows(ds, examples)
    prompt = expected_columns(oracle_ranks(examples, rows, 10)[1], truth, (1, 10))
    full = expected_columns(oracle_ranks(examples, truth, 10)[1], truth, (1, 10))
    assert popularity_hit_rate(ds, "test", 10).expected < prompt["hr@10"].mean() < full["hr@10"].mean()
    # Pinned (deterministic): E[HR@10] 0.5161 and E[HR@1] 0.2490 against the full oracle's 0.5524 / 0.2685.
    assert prompt["hr@10"].mean() == pytest.approx(0.5161, abs=1e-4)
    assert prompt["hr@1"].mean() == pytest.approx(0.2490, abs=1e-4)
    # No ranking of the window beats the full oracle on any single user in expectation.
    assert np.all(prompt["hr@10"] <= full["hr@10"] + 1e-12)
    assert prompt_oracle_hit_rate(ds, "test", 10).expected == pytest.approx(prompt["hr@10"].mean(), abs=1e-12)


def test_prompt_oracle_hit_rate_needs_the_generator():
    ds = generate_synthetic(TINY, seed=2)
    ds.generator = None
    with pytest.raises(DataError, match="records no synthetic generator"):
        prompt_oracle_hit_rate(ds, "test", 1)


def test_a_window_impossible_as_a_whole_history_falls_back_to_the_prior():
    # series_prob=1: a user who just met part 1 of a series always continues it, so any other next item
    # has probability 0 and the window tells nothing about the taste.
    config = dataclasses.replace(TINY, series_prob=1.0)
    world = build_world(config, seed=2)
    first = next(it for it in world.items if it.series is not None and it.part == 1)
    other = next(it.item_id for it in world.items if it.series is None)
    taste = posterior_taste(world, [first.item_id, other])
    assert taste == pytest.approx(prior_concentration(world) / prior_concentration(world).sum())
