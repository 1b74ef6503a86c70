"""Configuration of the RL trainer: one dataclass, per-algorithm presets, and the metrics it logs.

``RLConfig(algo=...)`` fills every field left at None from ``ALGO_PRESETS[algo]``; any switch can then be
set on its own (``use_pairs``, ``use_dedup``, ``use_certainty_weights``, ``use_clipping``) to ablate one
part of RISER. Settings the course never varies are module constants (``MAX_GRAD_NORM``, ``EVAL_KS``, ...).
``METRICS`` documents every key of the per-step records `rl.trainer.train_rl` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from riser_lite.rl.rollout import RolloutConfig

ALGOS = ("grpo", "rere", "riser")
PROMPT_USERS = ("all", "heldout")
# Per-algorithm values of the switches left at None in RLConfig.
ALGO_PRESETS: dict[str, dict] = {
    "grpo": {"group_size": 16, "use_dedup": False, "use_pairs": False, "use_certainty_weights": False},
    "rere": {"group_size": 16, "use_dedup": False, "use_pairs": False, "use_certainty_weights": False},
    "riser": {"group_size": 8, "use_dedup": True, "use_pairs": True, "use_certainty_weights": True},
}
# What each algorithm rolls out and how it rewards: ReRe-style draws its group by beam search and adds a
# rank penalty on wrong beams; GRPO and RISER sample and reward a hit.
ROLLOUT_MODE = {"grpo": "sample", "rere": "beam", "riser": "sample"}
REWARD = {"grpo": "hit", "rere": "rank", "riser": "hit"}
# Fixed settings of the method (the course never varies them): AdamW without decay and a global gradient
# norm of 1; one minibatch per pass; validation by constrained beam search at these cut-offs.
MAX_GRAD_NORM = 1.0
EVAL_KS = (1, 5, 10, 20)
DPO_BETA = 0.1  # DPO's beta (SimPO's are RLConfig.simpo_beta and simpo_gamma)
LORA_R, LORA_ALPHA = 8, 16.0  # the LoRA adapters RL adds (as SFT's)


# Every key of a step's metrics record (validation keys are prefixed "val_", one per evaluation metric).
# The loss keys are the names `rl.losses` gives them (``riser_loss``'s info; branch keys prefixed
# ``grpo/`` and ``pair/``), averaged over the step's μ updates.
METRICS: dict[str, str] = {
    "stage": "always 'rl'", "step": "RL step (1-based)", "algo": "the RLConfig preset",
    "policy": "the policy trained: 'constrained' (renormalised over trie-valid tokens) or 'raw'",
    "rollouts_used": "candidates generated so far (P x draws per prompt per step): the rollout budget",
    "learnable_fraction": "groups whose rewards differ (GRPO gets a gradient from them)",
    "converted_groups": "non-learnable no-hit groups turned into preference pairs this step",
    "pairs": "preference pairs this step (distinct rejected items of the converted groups)",
    "gradient_prompt_fraction": "prompts that gave any gradient: (learnable + converted) / P",
    "unique_items_per_group": "mean distinct items in a group", "hit_rate": "fraction of rollouts that hit",
    "reward_mean": "mean reward", "reward_var": "mean within-group reward variance",
    "duplicate_rate": "rollouts repeating an item earlier in their group",
    "valid_rate": "rollouts that are catalogue items",
    "group_prob_mass": "policy probability of a group's distinct items, summed (mean over groups)",
    "loss": "total loss L_GRPO + lambda L_pair", "lam": "lambda, the weight of the pair loss",
    "grpo_sequences": "rollouts in the GRPO branch of an update", "pair_count": "pairs in an update",
    "grpo/loss": "GRPO loss: surrogate + beta KL", "grpo/surrogate": "clipped surrogate loss",
    "grpo/clip_frac_low": "weighted share of GRPO tokens clipped below 1 - eps_low (A < 0)",
    "grpo/clip_frac_high": "weighted share of GRPO tokens clipped above 1 + eps_high (A > 0)",
    "grpo/approx_kl": "k3 estimate of KL(pi_old || pi_theta) on GRPO tokens",
    "grpo/ratio_mean": "mean ratio pi_theta / pi_old on GRPO tokens",
    "grpo/ratio_min": "smallest ratio on a GRPO token", "grpo/ratio_max": "largest ratio on a GRPO token",
    "grpo/sequences": "GRPO sequences with a token of weight > 0", "grpo/tokens": "GRPO tokens of weight > 0",
    "grpo/kl": "k3 estimate of KL(pi_theta || pi_ref) on GRPO tokens (only with a reference)",
    "grpo/kl_max": "largest per-token k3 KL to the reference (only with a reference)",
    "pair/loss": "pair loss (SimPO or DPO, before lambda)",
    "pair/reward_margin": "mean pair margin (SimPO: beta (s_w - s_l); DPO: beta (D_w - D_l))",
    "pair/accuracy": "pairs whose chosen response scores above the rejected one",
    "pair/chosen_score": "SimPO: mean score s(y_w) = weighted mean log-prob of the chosen titles",
    "pair/rejected_score": "SimPO: mean score s(y_l) of the rejected titles",
    "pair/chosen_reward": "DPO: mean beta D(y_w)", "pair/rejected_reward": "DPO: mean beta D(y_l)",
    "pair/pairs": "pairs the pair loss averaged over",
    "entropy": "mean per-token entropy of the trained policy on its rollouts (first pass)",
    "valid_mass": "mean raw probability on trie-valid tokens along the rollouts (1 = no leakage)",
    "grad_norm": "global gradient norm before clipping",
    "lr": "learning rate", "step_time_s": "wall time of this step", "time_s": "wall time since the start",
    "rollout_time_s": "part of step_time_s spent drawing rollouts and building the batch (rewards, pairs)",
    "update_time_s": "part of step_time_s spent in reference log-probs and the mu updates",
    "eval_time_s": "part of step_time_s spent in periodic validation (0 on other steps)",
}


@dataclass
class RLConfig:
    """Everything an RL run depends on. Fields left at None take the value of the ``algo`` preset."""

    # The clip range, the weight of trie-forced tokens and SimPO's scale and margin are constants of the
    # method, read (never set) by the notebooks as ``config.eps_low``, ``RLConfig().certainty_d``, ...
    eps_low: ClassVar[float] = 0.2  # clip the ratio below 1 - eps_low (for A < 0)
    eps_high: ClassVar[float] = 0.2  # clip the ratio above 1 + eps_high (for A > 0)
    certainty_d: ClassVar[float] = 0.3  # weight of a trie-forced token when use_certainty_weights
    simpo_beta: ClassVar[float] = 2.0  # SimPO beta (scale of the score difference)
    simpo_gamma: ClassVar[float] = 0.5  # SimPO target margin gamma

    algo: str = "riser"  # "grpo" | "rere" | "riser": which preset fills the None fields below
    steps: int = 40  # RL steps (each: one batch of rollouts, then inner_epochs optimizer steps)
    prompts_per_step: int = 16  # P: training examples drawn per step
    # "all" training users, or "heldout": only those the SFT start held out (needs an SFT run with
    # rl_holdout > 0; see riser_lite.data.holdout)
    prompt_users: str = "all"
    group_size: int | None = None  # G: rollouts kept per prompt (preset: riser 8, grpo/rere 16)
    oversample: int | None = None  # m: draws per prompt in dedup mode (None = 2 G)
    policy: str = "constrained"  # trained policy: "constrained" (softmax over trie-valid tokens) | "raw"
    lr: float = 1e-4  # AdamW learning rate (constant)
    inner_epochs: int = 2  # mu: passes over each step's rollouts; clipping only acts from the second
    beta_kl: float = 0.0  # weight of the k3 KL to the frozen SFT reference; 0 = no reference forward
    pair_loss: str = "simpo"  # "simpo" (reference-free) | "dpo" (reference = the SFT model)
    lambda_pair: float = 1.0  # lambda: weight of the pair loss against the GRPO loss
    use_pairs: bool | None = None  # RISER: non-learnable no-hit groups become preference pairs
    use_dedup: bool | None = None  # RISER: oversample m draws and keep distinct items (sampling algos only)
    use_certainty_weights: bool | None = None  # RISER: forced tokens weigh certainty_d in both branches
    use_clipping: bool = True  # token-level ratio clipping; False = plain ratio x A surrogate
    eval_every: int = 20  # validation HR/NDCG (first eval_examples users) every this many steps; 0 = never
    eval_examples: int = 100  # validation examples evaluated (the first ones of the split: cheap and fixed)
    seed: int = 0  # seeds prompt sampling and rollouts (everything is derived from it)
    lora: bool = False  # train LoRA adapters instead of all weights

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        for key, value in ALGO_PRESETS[self.algo].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        checks = [
            (not self.use_dedup or self.rollout_mode == "sample",
             f"use_dedup needs sampled rollouts; algo {self.algo!r} draws by {self.rollout_mode}"),
            (self.prompt_users in PROMPT_USERS,
             f"prompt_users must be one of {PROMPT_USERS}, got {self.prompt_users!r}"),
            (self.pair_loss in ("simpo", "dpo"),
             f"pair_loss must be 'simpo' or 'dpo', got {self.pair_loss!r}"),
            (self.steps >= 1 and self.prompts_per_step >= 1, "steps and prompts_per_step must be >= 1"),
            (self.inner_epochs >= 1, f"inner_epochs must be >= 1, got {self.inner_epochs}"),
            (self.beta_kl >= 0 and self.lr > 0, "need beta_kl >= 0 and lr > 0"),
            # an m that would be recorded in the run and ignored
            (self.oversample is None or self.use_dedup,
             f"oversample (m = {self.oversample}) applies to dedup sampling (algo 'riser'); algo "
             f"{self.algo!r} without dedup draws each rollout as it comes"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.rollout_config(0).validate()  # group_size, m >= G, policy

    @property
    def rollout_mode(self) -> str:
        """How the algorithm draws its groups ("sample" or "beam"; dedup is ``use_dedup`` on "sample")."""
        return ROLLOUT_MODE[self.algo]

    @property
    def reward(self) -> str:
        """"hit" (RISER, GRPO) or "rank" (ReRe: hit + rank penalty on wrong beams)."""
        return REWARD[self.algo]

    def rollout_config(self, step_seed: int) -> RolloutConfig:
        mode = "dedup" if self.use_dedup else self.rollout_mode
        return RolloutConfig(mode=mode, group_size=self.group_size, oversample=self.oversample,
                             seed=step_seed, policy=self.policy)

    def draws_per_prompt(self) -> int:
        """Candidates generated per prompt: the unit of the rollout budget (see `rl.trainer`)."""
        return self.rollout_config(0).draws()

    def needs_reference(self) -> bool:
        return self.beta_kl > 0 or (self.use_pairs and self.pair_loss == "dpo")
