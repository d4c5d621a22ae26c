"""The policy protocol: batched slates from batched observations.

A policy sees the observation of N served users at once and returns an (N, slate_size) int array
of distinct candidate positions, best first. Learning policies also get ``update`` with what
happened. ``setup`` hands over the environment (its world, slate size, catalog) once.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    def setup(self, env: Any) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...

    def update(self, obs: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray,
               info: dict[str, np.ndarray]) -> None: ...


class BasePolicy:
    """Shared plumbing: remembers the env's sizes and turns candidate scores into slates."""

    name = "base"
    # True when a user's slate depends on that user's observation alone (no random stream shared by
    # users, no learning from other users): a run sharded over workers then equals the
    # single-process run (simenv.shard); otherwise it is the same world, served by other replicas.
    per_user = False

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.env: Any = None

    def setup(self, env: Any) -> None:
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.slate_size = self.env.config.slate_size
        self.num_candidates = self.env.config.num_candidates

    @property
    def world(self):
        return self.env.world

    def update(self, obs, actions, rewards, info) -> None:
        """Non-learning policies ignore feedback."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the policy (all but the env); ``load_state_dict`` after ``setup``
        continues it exactly."""
        return {k: v for k, v in vars(self).items() if k != "env"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)

    def slate_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """(N, C) scores -> (N, k) positions of the k highest, best first (ties broken by position)."""
        k = self.slate_size
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1).astype(np.int64)
