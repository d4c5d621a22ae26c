"""Policies that need no training: random, most-popular, and the oracle that sees true interests."""
from __future__ import annotations

import numpy as np

from policies.base import BasePolicy


class RandomPolicy(BasePolicy):
    """A uniformly random slate of distinct candidates: the floor every policy must beat."""

    name = "random"

    def act(self, obs):
        n = obs["candidates"].shape[0]
        keys = self.rng.random((n, self.num_candidates))
        return np.argsort(keys, axis=1)[:, : self.slate_size].astype(np.int64)

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) zeros: no candidate is preferred, so a Plackett-Luce policy over it is uniform."""
        return np.zeros(obs["candidates"].shape, np.float64)


class PopularityPolicy(BasePolicy):
    """Ranks candidates by popularity: the catalog prior, plus clicks counted online when ``online``."""

    name = "popular"

    def __init__(self, online: bool = True, seed: int = 0) -> None:
        super().__init__(seed)
        self.online = online
        self.per_user = not online  # online counts pool every served user's clicks

    def setup(self, env) -> None:
        super().setup(env)
        cat = self.world.catalog
        # prior counts: popularity share times a pseudo-count, so online clicks can move the ranking
        self.counts = cat.popularity.astype(np.float64) * cat.num_items * 10.0

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) log click counts of the candidates. The log keeps the ranking of the counts and makes
        a Plackett-Luce policy over it at temperature 1 sample items in proportion to their counts."""
        with np.errstate(divide="ignore"):  # a zero count is -inf: never shown by Plackett-Luce
            return np.log(self.counts[obs["candidates"]])

    def act(self, obs):
        return self.slate_from_scores(self.scores(obs))

    def update(self, obs, actions, rewards, info) -> None:
        if self.online:
            items = info["item"][info["item"] >= 0]
            np.add.at(self.counts, items, 1.0)


class OraclePolicy(BasePolicy):
    """Reads the true user state and ranks candidates by the user model's own utility: an upper
    bound for myopic policies (greedy per step; it ignores satiation it causes later)."""

    name = "oracle"
    per_user = True

    def setup(self, env) -> None:
        super().setup(env)
        model = self.env.sim.user_model
        if not hasattr(model, "item_values"):
            raise TypeError(
                f"OraclePolicy needs a user model with item_values(world, users, items); "
                f"{type(model).__name__} has none."
            )
        self.model = model

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) the user model's position-free utility of each candidate for the user now served,
        in the logit units of the choice model (Plackett-Luce at temperature 1 orders slates the way the
        user's own logit choice weighs items, position effects aside)."""
        users = self.env.sim.slot_user
        return self.model.item_values(self.world, users, obs["candidates"]).astype(np.float64)

    def act(self, obs):
        return self.slate_from_scores(self.scores(obs))
