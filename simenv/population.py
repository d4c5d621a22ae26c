"""User state as arrays: every user of the world in one struct-of-arrays.

Shapes use U users, K interests per user, d embedding dims, M memory slots.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from simenv.embeddings import unit_rows
from simenv.persona import Persona


@dataclass
class Population:
    """Mutable state of all users (changed in place by the dynamics kernels).

    Attributes:
        interests: (U, K, d) float32 unit rows: the K interest directions of each user.
        anchor: (U, K, d) float32 unit rows: the initial interests (Friedkin-Johnsen stubbornness).
        weights: (U, K) float32, rows sum to 1: how much of the user's attention each interest holds.
        satiation: (U, K) float32 in [0, 1]: how saturated each interest is by recent consumption.
        boredom: (U,) float32 in [0, 1]: repetition fatigue within the current session.
        budget: (U,) float32: remaining patience (time budget, in steps) of the current session.
        memory_items: (U, M) int32 ring buffer of recently consumed item indices (-1 = empty).
        memory_ratings: (U, M) float32 ratings given to those items (0 = empty).
        memory_pos: (U,) int64 total writes to the ring buffer (next slot = memory_pos % M).
        steps: (U,) int64 interactions so far: the per-user counter of the counter-based RNG.
        sessions: (U,) int64 sessions started so far (keys the patience draw of each session).
        persona: persona attributes.
    """

    interests: np.ndarray
    anchor: np.ndarray
    weights: np.ndarray
    satiation: np.ndarray
    boredom: np.ndarray
    budget: np.ndarray
    memory_items: np.ndarray
    memory_ratings: np.ndarray
    memory_pos: np.ndarray
    steps: np.ndarray
    sessions: np.ndarray
    persona: Persona

    @classmethod
    def initial(cls, interests: np.ndarray, weights: np.ndarray, persona: Persona, memory_size: int) -> "Population":
        """A population at time zero: no satiation, empty memory, no session started."""
        u, k, _ = interests.shape
        if weights.shape != (u, k):
            raise ValueError(f"Population: weights shape {weights.shape}, expected ({u}, {k}).")
        if persona.num_users != u:
            raise ValueError(f"Population: persona has {persona.num_users} users, interests have {u}.")
        if memory_size < 1:
            raise ValueError(f"memory_size={memory_size}: must be >= 1.")
        interests = unit_rows(interests)
        w = np.maximum(np.asarray(weights, np.float32), 0)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        return cls(
            interests=interests,
            anchor=interests.copy(),
            weights=w.astype(np.float32),
            satiation=np.zeros((u, k), np.float32),
            boredom=np.zeros(u, np.float32),
            budget=np.zeros(u, np.float32),
            memory_items=np.full((u, memory_size), -1, np.int32),
            memory_ratings=np.zeros((u, memory_size), np.float32),
            memory_pos=np.zeros(u, np.int64),
            steps=np.zeros(u, np.int64),
            sessions=np.zeros(u, np.int64),
            persona=persona,
        )

    @property
    def num_users(self) -> int:
        return self.interests.shape[0]

    @property
    def num_interests(self) -> int:
        return self.interests.shape[1]

    @property
    def memory_size(self) -> int:
        return self.memory_items.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        """The mutable state arrays by name (for save/load and equality checks)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "persona"}

    def copy(self) -> "Population":
        """Deep copy of the mutable state; ``anchor`` and ``persona`` are never mutated and are shared."""
        arrays = {k: (v if k == "anchor" else v.copy()) for k, v in self.arrays().items()}
        return Population(**arrays, persona=self.persona)

    def recent_items(self, users: np.ndarray) -> np.ndarray:
        """(B, M) int32 memory of the given users, most recent first, -1 padded."""
        m = self.memory_size
        pos = self.memory_pos[users]
        order = (pos[:, None] - 1 - np.arange(m)[None, :]) % m
        items = np.take_along_axis(self.memory_items[users], order, axis=1)
        items[np.arange(m)[None, :] >= pos[:, None]] = -1
        return items

