"""Interest dynamics as pure batched kernels. Every mechanism can be switched off in ``DynamicsConfig``.

Notation: user u, interest k, item i with unit embedding e_i, interests x_uk (unit), weights w_uk,
satiation s_uk, boredom b_u, budget B_u. A consumed item i with rating r gives the signal
g = (r - 3) / 2 in [-1, 1] (liked > 0, disliked < 0). The interest that item i "speaks to" is
k* = argmax_k e_i . x_uk.

Per served user-step (``apply_responses``), in this order:
  satiation   s_uk <- rho_s * s_uk                           (recovery while served)
              s_uk* <- min(1, s_uk* + alpha_s)              (on a click)
  boredom     b_u <- rho_b * b_u + (1 - rho_b) * rep_u        (rep_u = share of the slate already in memory)
  drift       x_uk* <- unit(x_uk* + eta * g * (e_i - x_uk*))  (eta = drift_rate if g > 0 else dislike_rate:
                                                             toward liked items, away from disliked ones)
  weights     w_uk* <- w_uk* + eta_w * max(g, 0); w <- max(w, w_min) / sum      (multi-interest rebalancing)
  memory      ring buffer gets (i, r)
  patience    B_u <- B_u - 1 - boredom_cost * b_u + satisfaction_gain * g * click
              the user leaves (episode terminated) when B_u <= 0
At the start of each session (``start_sessions``): B_u ~ Uniform(budget_min, budget_max) from the
counter RNG keyed by the session number, s_u <- return_recovery * s_u (a break restores appetite),
b_u <- 0.

Every ``social_interval`` world ticks, over all users (``social_refresh``), Friedkin-Johnsen
averaging in embedding space (DeGroot when stubbornness = 0):
  t_v = unit(sum_k w_vk x_vk)                  (each user's taste)
  n_u = sum_v W_uv t_v                         (W row-normalised; |n_u| < 1 when neighbors disagree,
                                                so a divided neighborhood pulls less)
  x_uk <- unit((1 - gamma - theta) x_uk + gamma n_u + theta x_uk(0))
and exposure spillover: spill_u = the latest item consumed by each of up to S neighbors; the choice
model adds a bonus to slate items found in spill_u ("your friends just watched this").
Refreshing every few ticks, not every tick, is what keeps the edge pass off the per-step hot path:
influence through friends is slower than one's own consumption anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from simenv.rng import BUDGET, uniform


@dataclass(frozen=True)
class DynamicsConfig:
    """Parameters of the user-state dynamics (see the module docstring for the formulas)."""

    drift: bool = True
    drift_rate: float = 0.05  # eta for liked items
    dislike_rate: float = 0.02  # eta for disliked items (moves away)
    weight_rate: float = 0.02  # eta_w
    min_weight: float = 0.02  # w_min: an interest never vanishes entirely
    satiation: bool = True
    satiation_gain: float = 0.25  # alpha_s
    satiation_recovery: float = 0.9  # rho_s, per served step
    return_recovery: float = 0.3  # satiation kept across a break between sessions
    boredom: bool = True
    boredom_decay: float = 0.7  # rho_b
    boredom_cost: float = 2.0  # extra patience spent per step at full boredom
    leave: bool = True
    budget_min: float = 15.0
    budget_max: float = 40.0
    satisfaction_gain: float = 1.0
    social: bool = True
    social_rate: float = 0.05  # gamma, per refresh
    stubbornness: float = 0.02  # theta, pull back to the initial interests
    social_interval: int = 5  # world ticks between refreshes
    spillover: bool = True
    # scheduled world events (simenv.scenarios), as the dataclasses or mappings of their fields
    shifts: tuple = ()  # InterestShift: a share of users' interests move toward a genre
    releases: tuple = ()  # ItemRelease: new items enter retrieval

    def __post_init__(self) -> None:
        from simenv.scenarios import InterestShift, ItemRelease

        for name, cls, fields in (("shifts", InterestShift, "at, genre, share, strength, seeding"),
                                  ("releases", ItemRelease, "at, count")):
            try:
                events = tuple(x if isinstance(x, cls) else cls(**x) for x in getattr(self, name))
            except TypeError as err:
                raise ValueError(f"dynamics.{name}: {err}; each has the fields {fields}.") from err
            object.__setattr__(self, name, events)
        for name in ("drift_rate", "dislike_rate", "weight_rate", "satiation_gain", "social_rate", "stubbornness"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("satiation_recovery", "return_recovery", "boredom_decay"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check_range("min_weight", self.min_weight, 0.0, 0.5)
        if self.social_rate + self.stubbornness > 1.0:
            raise ValueError(
                f"dynamics.social_rate + dynamics.stubbornness = {self.social_rate + self.stubbornness}: "
                "must be <= 1 (they are convex weights); lower one of them."
            )
        if not 0 < self.budget_min <= self.budget_max:
            raise ValueError(
                f"dynamics.budget_min={self.budget_min}, budget_max={self.budget_max}: need 0 < min <= max."
            )
        if self.boredom_cost < 0 or self.satisfaction_gain < 0:
            raise ValueError("dynamics.boredom_cost and satisfaction_gain must be >= 0.")
        if int(self.social_interval) != self.social_interval or self.social_interval < 1:
            raise ValueError(f"dynamics.social_interval={self.social_interval}: must be an integer >= 1.")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, (int, float)) and np.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"dynamics.{name}={value!r}: must be a number in [{lo}, {hi}].")


@njit(inline="always", fastmath=True, cache=True)
def _normalize(x):
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j] * x[j]
    if s > np.float32(1e-24):
        inv = np.float32(1.0) / np.sqrt(s)
        for j in range(x.shape[0]):
            x[j] *= inv


@njit(parallel=True, fastmath=True, cache=True)
def apply_responses(
    users, active, slates, choice, rating,  # (B,) int64, (B,) bool, (B,k) int32 items, (B,) int32, (B,) float32
    emb,  # (I, d) float32
    interests, weights, satiation, boredom, budget,  # population arrays, changed in place
    memory_items, memory_ratings, memory_pos, steps,
    drift, drift_rate, dislike_rate, weight_rate, min_weight,
    sat_on, sat_gain, sat_recovery,
    bored_on, bored_decay, bored_cost,
    leave_on, satisfaction_gain,
    left,  # (B,) bool out
):
    """Advance the state of the served users by one step given their responses (formulas above)."""
    n_int = interests.shape[1]
    d = interests.shape[2]
    mem = memory_items.shape[1]
    k_slate = slates.shape[1]
    for b in prange(users.shape[0]):
        left[b] = False
        if not active[b]:
            continue
        u = users[b]
        if sat_on:
            for k in range(n_int):
                satiation[u, k] *= sat_recovery
        if bored_on:
            rep = 0
            for j in range(k_slate):
                item = slates[b, j]
                for m in range(mem):
                    if memory_items[u, m] == item:
                        rep += 1
                        break
            boredom[u] = bored_decay * boredom[u] + (1.0 - bored_decay) * (rep / k_slate)
        c = choice[b]
        g = np.float32(0.0)
        if c >= 0:
            item = slates[b, c]
            g = (rating[b] - np.float32(3.0)) * np.float32(0.5)
            best = 0
            best_s = np.float32(-1e30)
            for k in range(n_int):
                s = np.float32(0.0)
                for j in range(d):
                    s += emb[item, j] * interests[u, k, j]
                if s > best_s:
                    best_s = s
                    best = k
            if drift and g != 0:
                eta = drift_rate * g if g > 0 else dislike_rate * g
                for j in range(d):
                    interests[u, best, j] += eta * (emb[item, j] - interests[u, best, j])
                _normalize(interests[u, best])
                if g > 0:
                    weights[u, best] += weight_rate * g
                    tot = np.float32(0.0)
                    for k in range(n_int):
                        if weights[u, k] < min_weight:
                            weights[u, k] = min_weight
                        tot += weights[u, k]
                    for k in range(n_int):
                        weights[u, k] /= tot
            if sat_on:
                satiation[u, best] = min(np.float32(1.0), satiation[u, best] + sat_gain)
            slot = memory_pos[u] % mem
            memory_items[u, slot] = item
            memory_ratings[u, slot] = rating[b]
            memory_pos[u] += 1
        steps[u] += 1
        if leave_on:
            budget[u] += -np.float32(1.0) - bored_cost * boredom[u] + satisfaction_gain * g
            left[b] = budget[u] <= 0


@njit(parallel=True, cache=True)
def start_sessions(users, mask, key, budget_min, budget_max, return_recovery, sessions, budget, satiation, boredom):
    """Begin a new session for ``users[mask]``: fresh patience, partly recovered satiation, no boredom."""
    for b in prange(users.shape[0]):
        if not mask[b]:
            continue
        u = users[b]
        sessions[u] += 1
        budget[u] = budget_min + (budget_max - budget_min) * uniform(key, u, sessions[u], BUDGET)
        for k in range(satiation.shape[1]):
            satiation[u, k] *= return_recovery
        boredom[u] = 0.0


@njit(parallel=True, fastmath=True, cache=True)
def _tastes(interests, weights, out):
    for u in prange(interests.shape[0]):
        for j in range(interests.shape[2]):
            out[u, j] = 0.0
        for k in range(interests.shape[1]):
            w = weights[u, k]
            for j in range(interests.shape[2]):
                out[u, j] += w * interests[u, k, j]
        _normalize(out[u])


_CHUNK = 256  # users per parallel task: one scratch row per task, not per user


@njit(parallel=True, fastmath=True, cache=True)
def _average_neighbors(indptr, indices, w, tastes, interests, anchor, gamma, theta):
    n, n_int, d = interests.shape
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        pull = np.empty(d, np.float32)
        for u in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            lo, hi = indptr[u], indptr[u + 1]
            g = gamma if hi > lo else np.float32(0.0)
            if g == 0 and theta == 0:
                continue
            pull[:] = 0.0
            for e in range(lo, hi):  # contiguous neighbor rows: vectorised over d
                v = indices[e]
                we = w[e]
                for j in range(d):
                    pull[j] += we * tastes[v, j]
            keep = np.float32(1.0) - g - theta
            for k in range(n_int):
                for j in range(d):
                    interests[u, k, j] = keep * interests[u, k, j] + g * pull[j] + theta * anchor[u, k, j]
                _normalize(interests[u, k])


@njit(parallel=True, cache=True)
def _spill(indptr, indices, memory_items, memory_pos, spill):
    mem = memory_items.shape[1]
    for u in prange(spill.shape[0]):
        lo, hi = indptr[u], indptr[u + 1]
        s = 0
        for e in range(lo, hi):
            if s >= spill.shape[1]:
                break
            v = indices[e]
            if memory_pos[v] > 0:
                spill[u, s] = memory_items[v, (memory_pos[v] - 1) % mem]
                s += 1
        for t in range(s, spill.shape[1]):
            spill[u, t] = -1


def social_refresh(population, social, config: DynamicsConfig, spill: np.ndarray, scratch: np.ndarray) -> None:
    """Neighbor averaging and spillover over the whole population (formulas in the module docstring).

    Args:
        spill: (U, S) int32 out: latest item of up to S neighbors, -1 padded.
        scratch: (U, d) float32 work buffer for the tastes, reused across refreshes.
    """
    p = population
    if config.social and (config.social_rate > 0 or config.stubbornness > 0):
        _tastes(p.interests, p.weights, scratch)
        _average_neighbors(social.indptr, social.indices, social.weights, scratch, p.interests, p.anchor,
                           np.float32(config.social_rate), np.float32(config.stubbornness))
    if config.spillover:
        _spill(social.indptr, social.indices, p.memory_items, p.memory_pos, spill)
    else:
        spill.fill(-1)


def social_inputs(population, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """What users ``lo..hi-1`` contribute to a refresh of their neighbors: (n, d) float32 tastes t_v and
    (n,) int32 latest consumed item (-1 = none). A sharded world gathers these from every shard."""
    p = population
    tastes = np.empty((hi - lo, p.interests.shape[2]), np.float32)
    _tastes(p.interests[lo:hi], p.weights[lo:hi], tastes)
    pos = p.memory_pos[lo:hi]
    latest = p.memory_items[lo:hi][np.arange(hi - lo), (pos - 1) % p.memory_items.shape[1]]
    return tastes, np.where(pos > 0, latest, -1).astype(np.int32)


def social_refresh_rows(population, social, config: DynamicsConfig, spill: np.ndarray, lo: int, hi: int,
                        tastes: np.ndarray, latest: np.ndarray) -> None:
    """``social_refresh`` for users ``lo..hi-1`` only, from every user's ``social_inputs``.

    Equal to the rows lo..hi-1 of a whole-world refresh: the kernels run on views of those rows (the
    CSR row pointers sliced, not rebased, still address the global edge arrays), reading neighbors'
    tastes and latest items from the gathered arrays instead of the local population.
    """
    p = population
    rows = social.indptr[lo: hi + 1]
    if config.social and (config.social_rate > 0 or config.stubbornness > 0):
        _average_neighbors(rows, social.indices, social.weights, tastes, p.interests[lo:hi], p.anchor[lo:hi],
                           np.float32(config.social_rate), np.float32(config.stubbornness))
    if config.spillover:
        # each user's latest item as a one-slot memory, so the whole-world kernel reads it unchanged
        _spill(rows, social.indices, latest.reshape(-1, 1), (latest >= 0).astype(np.int64), spill[lo:hi])
    else:
        spill[lo:hi].fill(-1)
