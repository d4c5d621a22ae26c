"""Stochastic slates with known propensities: Plackett-Luce sampling over any scoring policy.

Off-policy evaluation needs a logging policy that puts positive probability on every slate and can
say how probable the slate it showed was. ``PlackettLucePolicy`` turns any policy with a
``scores(obs) -> (N, C)`` method into one: the slate is drawn position by position, each time
picking a not-yet-chosen candidate c with probability proportional to exp(s_c / T), so

    pi(a_1, ..., a_k | x) = prod_{j=1..k} exp(s_{a_j} / T) / sum_{c not in {a_1..a_{j-1}}} exp(s_c / T).

T -> 0 recovers the base policy's greedy slate; T -> inf the uniformly random slate.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from policies.base import BasePolicy


class PlackettLucePolicy(BasePolicy):
    """A Plackett-Luce slate distribution over the scores of ``base`` at ``temperature``.

    Sampling uses the Gumbel-top-k trick (the k largest of s_c / T + Gumbel noise, in order, are an
    exact Plackett-Luce draw), one array operation for all N users. ``log_propensity`` gives the exact
    log-probability of whole ordered slates, the weight OPE estimators need.

    The sampling stream restarts from ``seed`` at every ``setup``: two rollouts from the same env seed
    then see the same exploration noise (common random numbers), and an OPE run is reproducible.
    ``update`` forwards feedback to ``base`` (an online popularity count keeps learning).
    """

    name = "plackett_luce"

    def __init__(self, base: BasePolicy, temperature: float, seed: int = 0) -> None:
        if not hasattr(base, "scores"):
            raise TypeError(
                f"PlackettLucePolicy needs a base policy with scores(obs) -> (N, C); {type(base).__name__} has "
                "none. Use RandomPolicy, PopularityPolicy, OraclePolicy or add a scores method."
            )
        if isinstance(temperature, bool) or not np.isfinite(temperature) or not temperature > 0:
            raise ValueError(
                f"temperature={temperature!r}: must be a finite number > 0 (small: close to the base policy's "
                "greedy slate; large: close to uniform)."
            )
        super().__init__(seed)
        self.base = base
        self.temperature = float(temperature)
        self.seed = seed

    def setup(self, env: Any) -> None:
        super().setup(env)
        self.base.setup(env)
        self.rng = np.random.default_rng(self.seed)

    def update(self, obs, actions, rewards, info) -> None:
        self.base.update(obs, actions, rewards, info)

    def logits(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float64 base scores / temperature: the Plackett-Luce log-weights of the candidates."""
        scores = np.asarray(self.base.scores(obs), np.float64)
        if scores.ndim != 2 or scores.shape[1] != self.num_candidates:
            raise ValueError(
                f"{type(self.base).__name__}.scores returned shape {scores.shape}: expected (N, {self.num_candidates})"
                " = (users, num_candidates)."
            )
        if np.isnan(scores).any() or np.isposinf(scores).any():
            raise ValueError(
                f"{type(self.base).__name__}.scores returned NaN or +inf: scores must be finite (-inf marks a "
                "candidate the policy never shows)."
            )
        return scores / self.temperature

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, k) int64 candidate positions, one Plackett-Luce slate per user (Gumbel-top-k)."""
        logits = self.logits(obs)
        keys = logits + self.rng.gumbel(size=logits.shape)
        return self.slate_from_scores(keys)

    def log_propensity(self, obs: dict[str, np.ndarray], actions: np.ndarray) -> np.ndarray:
        """(N,) float64 log pi(actions | obs) of each whole ordered slate; ``actions`` is (N, k) positions.

        Position j's denominator sums exp(logit) over the candidates not placed at positions < j: a
        (N, k, C) mask ``rank[n, c] >= j``, where rank is the position of c in the slate (k if absent),
        so every log-sum-exp is computed directly (no running subtraction that could cancel).
        """
        logits = self.logits(obs)
        a = np.asarray(actions)
        n, c = logits.shape
        if a.ndim != 2 or a.shape[0] != n or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"actions of shape {a.shape} and dtype {a.dtype}: expected integer positions of shape ({n}, k), "
                "one slate per observed user."
            )
        k = a.shape[1]
        if k > c or (a < 0).any() or (a >= c).any():
            raise ValueError(f"actions must hold at most {c} positions in 0..{c - 1} (num_candidates={c}).")
        rank = np.full((n, c), k, np.int64)
        np.put_along_axis(rank, a, np.arange(k)[None, :].repeat(n, 0), axis=1)
        if ((rank < k).sum(axis=1) != k).any():
            raise ValueError("a slate repeats a candidate position: each slate picks distinct positions.")
        available = rank[:, None, :] >= np.arange(k)[None, :, None]  # (N, k, C)
        denominators = logsumexp(np.where(available, logits[:, None, :], -np.inf), axis=2)  # (N, k)
        chosen = np.take_along_axis(logits, a, axis=1)  # (N, k)
        with np.errstate(invalid="ignore"):  # -inf - (-inf) only where a never-shown candidate was chosen
            out = (chosen - denominators).sum(axis=1)
        return np.where(np.isneginf(chosen).any(axis=1), -np.inf, out)
