"""Which neighbors of a target user to show a target item, after NIRec (Pan et al., arXiv 2409.08934).

Proactive steering in a social network: the recommender wants target users to accept an item i*
they do not care for yet. Showing i* to some of their *neighbors* helps (a neighbor who consumes
it puts it in the target's social proof), but each exposed neighbor loses the item i* displaced
from their slate. NIRec chooses the exposed neighbors greedily, maximising

    Δ_v = gain in the targets' acceptance from exposing v  -  λ · c_v

where c_v is v's cost. Because a target's acceptance saturates (one friend's consumption is enough
for the social-proof bonus), the gain of v shrinks as other feeders of the same target are chosen:

    E[accept_u] = p0_u + (p1_u - p0_u) · (1 - prod_{v chosen, v feeds u} (1 - q_v))
    gain_v      = sum_{u fed by v} (p1_u - p0_u) · q_v · prod_{v' chosen, v' feeds u} (1 - q_v')

with p0_u / p1_u the target's acceptance without / with i* in their social proof and q_v the chance
that v takes i* when it tops their slate. The objective is submodular, so greedy re-scoring after
each pick is the natural algorithm; it stops when no neighbor has a positive Δ_v. This module holds
the pure planner; ``simenv.audit.steering`` fills its inputs from the simulator and runs the plan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExposurePlan:
    """The neighbors chosen, in the order greedy picked them, with the planner's own estimates.

    Attributes:
        neighbors: (m,) int64 chosen neighbor user ids.
        gains: (m,) float64 marginal acceptance gain of each pick, when it was picked.
        costs: (m,) float64 cost of each pick.
        expected_acceptance: (T,) float64 the planner's expected acceptance of each target afterwards.
    """

    neighbors: np.ndarray
    gains: np.ndarray
    costs: np.ndarray
    expected_acceptance: np.ndarray


def greedy_exposure(feeds: np.ndarray, p0: np.ndarray, p1: np.ndarray, q: np.ndarray, cost: np.ndarray,
                    lam: float, candidates: np.ndarray, target_weights: np.ndarray | None = None) -> ExposurePlan:
    """NIRec's greedy exposure adjustment under the saturating social-proof model above.

    Args:
        feeds: (V, T) bool, feeds[v, t]: candidate neighbor v is in target t's social proof.
        p0, p1: (T,) acceptance of each target without and with the item in their social proof.
        q: (V,) probability each candidate neighbor takes the item when it tops their slate.
        cost: (V,) cost of exposing each neighbor (expected engagement lost; may be negative when the
            item is better for them than what it displaces).
        lam: λ >= 0, the price of one unit of neighbor cost in units of target acceptance.
        candidates: (V,) user ids of the candidate neighbors.
        target_weights: (T,) worth of one unit of each target's acceptance; default 1 (NIRec: the sum of
            acceptance probabilities). 1 / (T p0) makes the objective the mean *relative* uplift, IoIP.
    """
    feeds = np.asarray(feeds, bool)
    v, t = feeds.shape
    p0, p1, q, cost = (np.asarray(x, np.float64) for x in (p0, p1, q, cost))
    if p0.shape != (t,) or p1.shape != (t,) or q.shape != (v,) or cost.shape != (v,) or len(candidates) != v:
        raise ValueError(f"greedy_exposure: feeds is {feeds.shape}; p0/p1 need ({t},), q/cost/candidates ({v},).")
    if not lam >= 0:
        raise ValueError(f"lam={lam}: the price of neighbor damage must be >= 0.")
    weight = np.ones(t) if target_weights is None else np.asarray(target_weights, np.float64)
    if weight.shape != (t,) or np.any(weight < 0):
        raise ValueError(f"target_weights: expected ({t},) non-negative weights, got shape {weight.shape}.")
    uplift = np.maximum(p1 - p0, 0.0)
    worth = weight * uplift
    miss = np.ones(t)  # prod over chosen feeders of (1 - q): chance the target still lacks the social proof
    open_ = np.ones(v, bool)
    picks, gains, costs = [], [], []
    while open_.any():
        gain = q * (feeds @ (worth * miss))  # (V,) marginal gains given the picks so far
        score = np.where(open_, gain - lam * cost, -np.inf)
        best = int(np.argmax(score))
        if not (score[best] > 0 or (score[best] == 0 and gain[best] > 0)):
            break
        picks.append(best)
        gains.append(gain[best])
        costs.append(cost[best])
        open_[best] = False
        miss = miss * np.where(feeds[best], 1.0 - q[best], 1.0)
    chosen = np.asarray(picks, np.int64)
    return ExposurePlan(np.asarray(candidates, np.int64)[chosen], np.asarray(gains), np.asarray(costs),
                        p0 + uplift * (1.0 - miss))
