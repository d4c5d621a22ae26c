"""The embedded default user: a multinomial-logit choice over the slate plus a no-click option.

For user u shown item i at slate position j (0-based):
  a_ui  = max_k [ e_i . x_uk + omega * log(K w_uk) - lambda * s_uk ]      (best-matching interest,
          favouring heavy interests, penalising satiated ones)
  v_uj  = a_ui / tau + beta_q (q_i - 1/2) + beta_s [i in spill_u] - rho * log(1 + j)
  v_u0  = c_0 + beta_b b_u                                                   (no click; boredom makes
                                                                            skipping likelier)
  P(j)  = exp(v_uj) / (exp(v_u0) + sum_j' exp(v_uj'))
A click on i yields a rating r = clip(round(1 + 4 sigmoid((a_ui - r_c) / r_s + beta_rq (q_i - 1/2))
+ sigma_r * eps), 1, 5) with eps of unit variance, and watch time = duration_i * (1/4 + 3/4 (r - 1) / 4).
All draws come from the counter RNG keyed by (user, the user's interaction count), so a user's
answer does not depend on who else is in the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit, prange

from agents.base import Responses
from simenv.rng import CHOICE, RATING, uniform

if TYPE_CHECKING:
    from simenv.world import World


@dataclass(frozen=True)
class ChoiceConfig:
    """Parameters of the logit choice (symbols as in the module docstring)."""

    temperature: float = 0.1  # tau: affinity scale; smaller = more deterministic users
    interest_weight: float = 0.1  # omega
    satiation_penalty: float = 0.3  # lambda
    quality_weight: float = 1.0  # beta_q
    spillover_bonus: float = 1.0  # beta_s
    position_decay: float = 0.5  # rho
    no_click: float = 5.5  # c_0
    boredom_weight: float = 2.0  # beta_b
    rating_center: float = 0.35  # r_c
    rating_scale: float = 0.1  # r_s
    rating_quality: float = 2.0  # beta_rq
    rating_noise: float = 0.5  # sigma_r

    def __post_init__(self) -> None:
        for name in ("temperature", "rating_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"choice.{name}={getattr(self, name)!r}: must be > 0.")
        for name, value in vars(self).items():
            if not np.isfinite(value):
                raise ValueError(f"choice.{name}={value!r}: must be finite.")
        if self.rating_noise < 0 or self.position_decay < 0:
            raise ValueError("choice.rating_noise and choice.position_decay must be >= 0.")


@njit(inline="always", fastmath=True, cache=True)
def _affinity(u, item, emb, interests, log_w, satiation, omega, lam):
    best = np.float32(-1e30)
    for k in range(interests.shape[1]):
        s = np.float32(0.0)
        for j in range(emb.shape[1]):
            s += emb[item, j] * interests[u, k, j]
        s += omega * log_w[k] - lam * satiation[u, k]
        if s > best:
            best = s
    return best


@njit(inline="always", cache=True)
def _in_spill(u, item, spill):
    for t in range(spill.shape[1]):
        if spill[u, t] == item:
            return True
    return False


@njit(inline="always", fastmath=True, cache=True)
def _log_weights(u, weights, out):
    n = weights.shape[1]
    for k in range(n):
        out[k] = np.float32(math.log(max(weights[u, k] * n, 1e-6)))


_CHUNK = 256  # users per parallel task: per-task scratch buffers instead of per-user allocations


@njit(parallel=True, fastmath=True, cache=True)
def _choose(users, slates, emb, quality, duration, interests, weights, satiation, boredom, spill, steps, key,
            p, choice, rating, watch):
    # p: float32 parameter vector in ChoiceConfig order
    tau, omega, lam, bq, bs, rho, c0, bb, rc, rs, brq, sig = (p[0], p[1], p[2], p[3], p[4], p[5],
                                                              p[6], p[7], p[8], p[9], p[10], p[11])
    n, k_slate = slates.shape
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        log_w = np.empty(weights.shape[1], np.float32)
        ev = np.empty(k_slate, np.float32)
        aff = np.empty(k_slate, np.float32)
        for b in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            u = users[b]
            _log_weights(u, weights, log_w)
            e0 = np.float32(math.exp(min(c0 + bb * boredom[u], np.float32(30.0))))
            total = e0
            for j in range(k_slate):
                item = slates[b, j]
                a = _affinity(u, item, emb, interests, log_w, satiation, omega, lam)
                aff[j] = a
                v = a / tau + bq * (quality[item] - np.float32(0.5)) - rho * np.float32(math.log(1.0 + j))
                if _in_spill(u, item, spill):
                    v += bs
                ev[j] = np.float32(math.exp(max(min(v, np.float32(30.0)), np.float32(-30.0))))
                total += ev[j]
            t = steps[u]
            x = np.float32(uniform(key, u, t, CHOICE)) * total - e0  # < 0: the no-click option
            c = -1
            acc = np.float32(0.0)
            if x >= 0:
                c = k_slate - 1  # guards float round-off at the top end
                for j in range(k_slate):
                    acc += ev[j]
                    if x < acc:
                        c = j
                        break
            choice[b] = c
            if c < 0:
                rating[b] = 0.0
                watch[b] = 0.0
                continue
            item = slates[b, c]
            z = (aff[c] - rc) / rs + brq * (quality[item] - np.float32(0.5))
            eps = (uniform(key, u, t, RATING) + uniform(key, u, t, RATING + np.uint64(1)) - 1.0) * 2.449489742783178
            r = 1.0 + 4.0 / (1.0 + math.exp(-z)) + sig * eps
            r = min(max(round(r), 1.0), 5.0)
            rating[b] = r
            watch[b] = duration[item] * np.float32(0.25 + 0.1875 * (r - 1.0))


@njit(parallel=True, fastmath=True, cache=True)
def _values(users, items, emb, quality, interests, weights, satiation, spill, p, out):
    tau, omega, lam, bq, bs = p[0], p[1], p[2], p[3], p[4]
    n = users.shape[0]
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        log_w = np.empty(weights.shape[1], np.float32)
        for b in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            u = users[b]
            _log_weights(u, weights, log_w)
            for j in range(items.shape[1]):
                item = items[b, j]
                v = _affinity(u, item, emb, interests, log_w, satiation, omega, lam) / tau + bq * (quality[item] - 0.5)
                if _in_spill(u, item, spill):
                    v += bs
                out[b, j] = v


@njit(parallel=True, fastmath=True, cache=True)
def _probabilities(users, slates, emb, quality, interests, weights, satiation, boredom, spill, p, out):
    tau, omega, lam, bq, bs, rho, c0, bb = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    n, k_slate = slates.shape
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        log_w = np.empty(weights.shape[1], np.float32)
        for b in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            u = users[b]
            _log_weights(u, weights, log_w)
            total = np.float32(math.exp(min(c0 + bb * boredom[u], np.float32(30.0))))
            for j in range(k_slate):
                item = slates[b, j]
                v = (_affinity(u, item, emb, interests, log_w, satiation, omega, lam) / tau
                     + bq * (quality[item] - np.float32(0.5)) - rho * np.float32(math.log(1.0 + j)))
                if _in_spill(u, item, spill):
                    v += bs
                out[b, j] = np.float32(math.exp(max(min(v, np.float32(30.0)), np.float32(-30.0))))
                total += out[b, j]
            for j in range(k_slate):
                out[b, j] /= total


class MultinomialLogitUser:
    """The embedded default user simulator (formulas in the module docstring)."""

    # its kernel only emits choices in [-1, k), ratings in 1..5 and finite watch times, so the
    # per-step check applied to custom models (an 8-pass numpy scan, ~5% of a step) is skipped
    trusted = True

    def __init__(self, config: ChoiceConfig | None = None, **overrides: float) -> None:
        base = config or ChoiceConfig()
        self.config = ChoiceConfig(**{**vars(base), **overrides})
        self._p = np.array(list(vars(self.config).values()), np.float32)

    def respond(self, world: "World", users: np.ndarray, slates: np.ndarray) -> Responses:
        b = len(users)
        choice = np.empty(b, np.int32)
        rating = np.empty(b, np.float32)
        watch = np.empty(b, np.float32)
        c, p = world.catalog, world.population
        _choose(users, slates, c.embeddings, c.quality, c.duration, p.interests, p.weights, p.satiation,
                p.boredom, world.spill, p.steps, world.key, self._p, choice, rating, watch)
        return Responses(choice, rating, watch)

    def item_values(self, world: "World", users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, n) float32 position-free deterministic utility v of each item for each user: what an
        oracle with the true state would rank by."""
        out = np.empty(items.shape, np.float32)
        c, p = world.catalog, world.population
        _values(np.asarray(users, np.int64), np.ascontiguousarray(items, np.int32), c.embeddings, c.quality,
                p.interests, p.weights, p.satiation, world.spill, self._p, out)
        return out

    def choice_probabilities(self, world: "World", users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(B, k) float32 probability that each user takes each slate position (item ids in ``slates``)
        in their current state; ``1 - sum`` is the no-click probability. The exact expectation of what
        ``respond`` samples: audits use it to measure engagement and damage without sampling noise."""
        slates = np.ascontiguousarray(np.atleast_2d(slates), np.int32)
        out = np.empty(slates.shape, np.float32)
        c, p = world.catalog, world.population
        _probabilities(np.asarray(users, np.int64), slates, c.embeddings, c.quality, p.interests, p.weights,
                       p.satiation, p.boredom, world.spill, self._p, out)
        return out
