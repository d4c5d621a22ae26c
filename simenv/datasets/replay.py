"""Logged histories replayed as simulator states: the world of each user at each decision point.

Offline evaluation of user models (does a simulated user pick what the real user picked next?) and
training a user LM on logs both need, for a logged choice, *the state the user was in just before
it*, in the same arrays a live simulation holds, so that the embedded choice model, an LLM user and
its prompts read a logged user exactly as they read a simulated one. ``prefix_world`` builds that
state for many decision points at once: row b of the returned world is "user u after their first
t events", with

- interests and weights estimated from those t events only (``interests_from_ratings``, the rule
  the MovieLens loader applies to a whole history);
- memory holding the last t events with their ratings, oldest first, so the newest is where a
  live simulation would have written it;
- the user's persona; no satiation, boredom or friends (logs do not record them).

``leave_last_out`` is the standard split: each user's last event is the test decision, the rest is
training data; ``sample_candidates`` adds negatives the user never interacted with (LLaRA protocol).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simenv.datasets.base import Interactions, WorldData
from simenv.datasets.movielens import interests_from_ratings
from simenv.dynamics import DynamicsConfig
from simenv.population import Population
from simenv.rng import world_key
from simenv.social import SocialGraph
from simenv.world import World


@dataclass(frozen=True)
class DecisionPoints:
    """Logged choices, each with the history that preceded it.

    Attributes:
        user: (n,) int64 user index.
        position: (n,) int64 how many of the user's events (in time order) came before the choice.
        item: (n,) int32 the item chosen.
        rating: (n,) float32 the rating given to it.
    """

    user: np.ndarray
    position: np.ndarray
    item: np.ndarray
    rating: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


class Histories:
    """Each user's events in time order, from an ``Interactions`` log (stable for equal timestamps)."""

    def __init__(self, interactions: Interactions, num_users: int) -> None:
        self.interactions = interactions
        order = np.lexsort((interactions.timestamp, interactions.user))  # by user, then time
        self.order = order
        self.length = np.bincount(interactions.user, minlength=num_users).astype(np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]]).astype(np.int64)

    def events(self, users: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Indices into the log of the first ``counts[b]`` events of ``users[b]``, concatenated."""
        counts = np.asarray(counts, np.int64)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.order[np.repeat(self.start[users], counts) + offsets]

    def sequence(self, user: int) -> np.ndarray:
        """(n,) int32 items of one user in time order."""
        return self.interactions.item[self.order[self.start[user]: self.start[user] + self.length[user]]]


def leave_last_out(interactions: Interactions, num_users: int, min_history: int = 5
                   ) -> tuple[Interactions, DecisionPoints]:
    """(training log, test decisions): every user with more than ``min_history`` events gives their last
    event as a test decision; all other events are training data."""
    if min_history < 1:
        raise ValueError(f"min_history={min_history}: must be >= 1.")
    h = Histories(interactions, num_users)
    users = np.flatnonzero(h.length > min_history)
    if not len(users):
        raise ValueError(f"leave_last_out: no user has more than min_history={min_history} events.")
    last = h.order[h.start[users] + h.length[users] - 1]
    keep = np.ones(len(interactions), bool)
    keep[last] = False
    ia = interactions
    train = Interactions(ia.user[keep], ia.item[keep], ia.rating[keep], ia.timestamp[keep])
    test = DecisionPoints(users.astype(np.int64), h.length[users] - 1, ia.item[last], ia.rating[last])
    return train, test


def decision_points(interactions: Interactions, num_users: int, per_user: int, min_history: int = 5,
                    seed: int = 0) -> DecisionPoints:
    """Up to ``per_user`` logged choices of each user, drawn uniformly among the events that have at
    least ``min_history`` events before them (training points for a user model)."""
    if per_user < 1:
        raise ValueError(f"per_user={per_user}: must be >= 1.")
    h = Histories(interactions, num_users)
    rng = np.random.default_rng(seed)
    users, positions = [], []
    for u in np.flatnonzero(h.length > min_history):
        eligible = np.arange(min_history, h.length[u])
        take = rng.choice(eligible, min(per_user, len(eligible)), replace=False)
        users.append(np.full(len(take), u, np.int64))
        positions.append(np.sort(take))
    if not users:
        raise ValueError(f"decision_points: no user has more than min_history={min_history} events.")
    user, position = np.concatenate(users), np.concatenate(positions)
    at = h.order[h.start[user] + position]
    return DecisionPoints(user, position, interactions.item[at], interactions.rating[at])


def prefix_world(data: WorldData, history: Interactions, points: DecisionPoints, memory_size: int = 16,
                 min_rating_liked: float = 4.0, seed: int = 0) -> World:
    """A world whose user b is ``points.user[b]`` just before their choice b (see the module docstring).

    ``history`` is the log the prefixes are read from: point b's user saw its first
    ``points.position[b]`` events (in time order) there.
    """
    n = len(points)
    h = Histories(history, data.num_users)
    if np.any(points.position > h.length[points.user]):
        raise ValueError("prefix_world: a decision point lies past the end of its user's history in this log.")
    idx = h.events(points.user, points.position)
    owner = np.repeat(np.arange(n, dtype=np.int32), points.position)
    prefix = Interactions(owner, history.item[idx], history.rating[idx], history.timestamp[idx])
    interests, weights = interests_from_ratings(prefix, data.catalog, n, data.num_interests, min_rating_liked,
                                                np.random.default_rng(seed))
    p = data.persona
    persona = replace(p, age=p.age[points.user], gender=p.gender[points.user], occupation=p.occupation[points.user])
    pop = Population.initial(interests, weights, persona, memory_size)
    kept = np.minimum(points.position, memory_size)
    within = np.arange(len(idx)) - np.repeat(np.cumsum(points.position) - points.position, points.position)
    slot = within - (points.position - kept)[owner]  # the last ``kept`` events go to slots 0..kept-1
    mine = slot >= 0
    pop.memory_items[owner[mine], slot[mine]] = history.item[idx[mine]]
    pop.memory_ratings[owner[mine], slot[mine]] = history.rating[idx[mine]]
    pop.memory_pos[:] = kept
    pop.steps[:] = points.position
    key = world_key(np.random.SeedSequence(seed))
    return World(data.catalog, pop, SocialGraph.empty(n), DynamicsConfig(), key, np.full((n, 1), -1, np.int32))


def sample_candidates(interactions: Interactions, points: DecisionPoints, num_items: int, num_candidates: int,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """((n, C) int32 candidates, (n,) int64 column of the true item): each point's chosen item plus
    ``C - 1`` distinct items drawn uniformly among those its user never interacted with in
    ``interactions``, in random order."""
    n, c = len(points), num_candidates
    if c < 2:
        raise ValueError(f"num_candidates={c}: must be >= 2.")
    seen_keys = np.unique(interactions.user.astype(np.int64) * num_items + interactions.item)
    seen_count = np.bincount(interactions.user, minlength=int(points.user.max()) + 1)[points.user]
    if np.any(num_items - seen_count < c - 1):
        raise ValueError(f"sample_candidates: a user has interacted with all but fewer than {c - 1} of the "
                         f"{num_items} items; lower num_candidates.")
    rng = np.random.default_rng(seed)
    out = np.empty((n, c), np.int32)
    out[:, 0] = points.item
    missing = np.arange(n)
    while len(missing):  # a few rounds at most: each draws 4C items per row and keeps the first usable
        users = points.user[missing]
        draw = rng.integers(0, num_items, size=(len(missing), 4 * c))
        usable = ~np.isin(users[:, None] * num_items + draw, seen_keys) & (draw != points.item[missing][:, None])
        row_item = (np.arange(len(missing))[:, None] * num_items + draw).ravel()
        first = np.zeros(row_item.size, bool)
        first[np.unique(row_item, return_index=True)[1]] = True  # drop repeats within a row
        usable &= first.reshape(draw.shape)
        rank = np.cumsum(usable, axis=1)
        done = rank[:, -1] >= c - 1
        r, j = np.nonzero(usable & (rank <= c - 1) & done[:, None])
        out[missing[r], rank[r, j]] = draw[r, j]
        missing = missing[~done]
    perm = np.argsort(rng.random((n, c)), axis=1)
    out = np.take_along_axis(out, perm, axis=1)
    return out, np.argmax(perm == 0, axis=1).astype(np.int64)
