r"""The prompt oracle: the best next-item prediction from what a prompt shows.

The full oracle $p(y \mid \theta, h)$ uses the user's latent taste $\theta$ and whole history $h$; no prompt
shows either. A prompt shows the window $w = (w_1, \dots, w_n)$, the newest `max_history` items of the
history. The prompt oracle is the next-item distribution given $w$ alone under the generator's own model:

$$q(y \mid w) = \int p(y \mid \theta, w)\, \pi(\theta \mid w)\, d\theta,
\qquad \pi(\theta \mid w) \propto \mathrm{Dir}(\theta; \alpha) \prod_{s=1}^{n} p(w_s \mid \theta, w_{<s}),$$

with $\alpha_g$ = `taste_concentration` x the market share of genre $g$. Items before the window are treated
as the prompt treats them: not there. The window is taken as the user's whole history, so an item consumed
before it may be predicted again (the full oracle gives it 0), and series continuation sees the window only.
Ranking items by $q$ maximises expected HR@K and NDCG@K among predictors that see exactly the window and
know the generator, so it is the ceiling a prompt allows; the full oracle stays above it.

**Exact computation.** One step of the process (`SyntheticWorld.next_item_distribution`) is affine in the
taste:

$$p(y \mid \theta, h) = p(y \mid 0, h) + \sum_g \theta_g \big(p(y \mid e_g, h) - p(y \mid 0, h)\big),$$

where $e_g$ puts all taste on genre $g$ (only the taste source depends on $\theta$, and linearly). Hence
$q(y \mid w) = p(y \mid \bar\theta, w)$ with $\bar\theta = E[\theta \mid w]$, the posterior mean taste. The
observed item $w_s$ has genre $g_s$, so its likelihood depends on $\theta_{g_s}$ alone:
$p(w_s \mid \theta, w_{<s}) = c_s + e_s\, \theta_{g_s}$ with $c_s, e_s \ge 0$ (series and popularity give
$c_s$, taste gives $e_s$). Grouping the steps by genre, the likelihood is a product of one polynomial per
genre, $L(\theta) = \prod_g P_g(\theta_g)$, $P_g(x) = \prod_{s: g_s = g} (c_s + e_s x) = \sum_j a_{g,j} x^j$.
Dirichlet moments are $E[\prod_g \theta_g^{j_g}] = \frac{\Gamma(A)}{\Gamma(A + J)}
\prod_g \frac{\Gamma(\alpha_g + j_g)}{\Gamma(\alpha_g)}$ with $A = \sum_g \alpha_g$, $J = \sum_g j_g$, so with
the generating polynomials $Q_g(z) = \sum_j a_{g,j} \frac{\Gamma(\alpha_g + j)}{\Gamma(\alpha_g)} z^j$ and
$Q(z) = \prod_g Q_g(z)$,

$$E[L] = \sum_J [z^J] Q(z) \frac{\Gamma(A)}{\Gamma(A + J)}, \qquad
E[\theta_h L] = \sum_J [z^J] Q^{(h)}(z) \frac{\Gamma(A)}{\Gamma(A + J + 1)}, \qquad
\bar\theta_h = \frac{E[\theta_h L]}{E[L]},$$

where $Q^{(h)}$ is $Q$ with $Q_h$'s moments shifted by one ($\Gamma(\alpha_h + j + 1)$ for
$\Gamma(\alpha_h + j)$). The polynomials have degree at most $n$, so this is exact and costs
$O(G n^2)$ per window: no sampling is needed (`posterior_taste`).

The tests check it against importance sampling from the prior (tests/test_prompt_oracle.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from riser_lite.data.synthetic.generator import world_of
from riser_lite.data.synthetic.world import SyntheticWorld
from riser_lite.data.types import Example, RecDataset


def prior_concentration(world: SyntheticWorld) -> np.ndarray:
    """The Dirichlet parameters $\\alpha$ of users' tastes. [G]"""
    return world.config.taste_concentration * world.genre_share


def window_likelihood_terms(world: SyntheticWorld, window: Sequence[int]
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step s of the window: (genre g_s [n] int, c_s [n], e_s [n]).

    p(w_s | θ, w_<s) = c_s + e_s θ_{g_s}: the window's s-th item given the items before it in the window.
    """
    window = list(window)
    num_genres = len(world.genres)
    genres = world.genre_of[window]
    constant, slope = np.zeros(len(window)), np.zeros(len(window))
    for s, item in enumerate(window):
        before = window[:s]
        constant[s] = world.next_item_distribution(np.zeros(num_genres), before)[item]
        slope[s] = world.next_item_distribution(np.eye(num_genres)[genres[s]], before)[item] - constant[s]
    return genres, constant, slope


def _moment_polynomial(coefficients: np.ndarray, alpha: float, shift: int) -> np.ndarray:
    """Q_g: coefficient j times Γ(α + j + shift) / Γ(α), scaled by the largest coefficient (cancels later)."""
    rising = np.exp([math.lgamma(alpha + j + shift) - math.lgamma(alpha) for j in range(len(coefficients))])
    return coefficients * rising / (coefficients.max() or 1.0)  # all zero: an impossible window


def posterior_taste(world: SyntheticWorld, window: Sequence[int]) -> np.ndarray:
    """Exact $E[\\theta \\mid w]$ under the Dirichlet prior (module docstring). [G], sums to 1."""
    alpha = prior_concentration(world)
    total = float(alpha.sum())
    genres, constant, slope = window_likelihood_terms(world, window)
    # P_g(x) = prod over the window's items of genre g of (c_s + e_s x), coefficients lowest degree first.
    factors = [np.ones(1)] * len(alpha)
    for g, c, e in zip(genres, constant, slope, strict=True):
        factors[g] = np.convolve(factors[g], [c, e])

    def expectation(shifted: int | None) -> float:
        """E[L] (shifted None) or, up to the shared scale, E[θ_shifted L]."""
        product = np.ones(1)
        for g, factor in enumerate(factors):
            product = np.convolve(product, _moment_polynomial(factor, alpha[g], int(g == shifted)))
        extra = 0 if shifted is None else 1
        normaliser = np.exp([math.lgamma(total) - math.lgamma(total + j + extra)
                             for j in range(len(product))])
        return float(product @ normaliser)

    evidence = expectation(None)
    if evidence <= 0.0:  # the window is impossible as a whole history (e.g. series_prob=1): nothing learnt
        return alpha / total
    return np.array([expectation(h) for h in range(len(alpha))]) / evidence


def prompt_oracle_distribution(world: SyntheticWorld, window: Sequence[int]) -> np.ndarray:
    """q(. | w): the process at the exact posterior mean taste, the window taken as the history. [I]"""
    return world.next_item_distribution(posterior_taste(world, window), list(window))


def prompt_oracle_rows(ds: RecDataset, examples: Sequence[Example]) -> list[dict[int, float]] | None:
    """The prompt oracle of each example as {item id: probability} (non-zero entries), or None when the
    dataset records no synthetic generator. The window is the newest `ds.max_history` history items, as the
    prompt shows them."""
    world = world_of(ds)
    if world is None:
        return None
    rows = []
    for ex in examples:
        dist = prompt_oracle_distribution(world, ex.history[-ds.max_history:])
        rows.append({item: float(p) for item, p in enumerate(dist.tolist()) if p > 0.0})
    return rows
