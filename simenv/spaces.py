"""Gymnasium spaces of RecSim-LLM-v0: a slate action space that samples distinct positions, and the
Dict observation space, keyed by slot (never by changing item ids, the RecSim pitfall)."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces


class SlateSpace(spaces.MultiDiscrete):
    """``slate_size`` distinct positions into ``num_candidates`` candidates (optionally batched).

    A ``MultiDiscrete`` to every consumer (RLlib, wrappers), but ``sample`` never repeats a position
    within a slate and ``contains`` rejects slates that do.
    """

    def __init__(self, num_candidates: int, slate_size: int, batch: int | None = None, seed=None):
        shape = (slate_size,) if batch is None else (batch, slate_size)
        super().__init__(np.full(shape, num_candidates, np.int64), dtype=np.int64, seed=seed)

    def sample(self, mask=None, probability=None) -> np.ndarray:
        if mask is not None or probability is not None:
            raise NotImplementedError("SlateSpace.sample does not take masks or probabilities.")
        n_cand, k = int(self.nvec.flat[0]), self.shape[-1]
        keys = self.np_random.random(self.shape[:-1] + (n_cand,))
        return np.argsort(keys, axis=-1)[..., :k].astype(self.dtype)

    def contains(self, x) -> bool:
        if not super().contains(x):
            return False
        s = np.sort(np.asarray(x), axis=-1)
        return not np.any(s[..., 1:] == s[..., :-1])

    def __repr__(self) -> str:
        return f"SlateSpace(num_candidates={int(self.nvec.flat[0])}, shape={self.shape})"


def batch_dict_space(single: spaces.Dict, n: int) -> spaces.Dict:
    """``batch_space`` for a Dict of Boxes, with bounds as broadcast views instead of n tiled copies.

    Gymnasium's ``batch_space`` tiles every bound array n times: 12.7 GB of bounds for a million
    users with candidate features. The views hold the same values at no cost.
    """
    out = {}
    for key, box in single.spaces.items():
        shape = (n, *box.shape)
        batched = spaces.Box(low=box.low[None], high=box.high[None], dtype=box.dtype)
        for name in ("low", "high", "bounded_below", "bounded_above"):
            setattr(batched, name, np.broadcast_to(getattr(box, name), shape))
        batched._shape = shape
        out[key] = batched
    return spaces.Dict(out)


def observation_space(num_user_features: int, memory_size: int, num_candidates: int, num_items: int,
                      dim: int, candidate_features: bool) -> spaces.Dict:
    """The single-user observation space (see ``RecSimLLMEnv`` for the meaning of each key)."""
    obs = {
        "user": spaces.Box(0.0, 1.0, (num_user_features,), np.float32),
        "history": spaces.Box(-1, num_items - 1, (memory_size,), np.int32),
        "candidates": spaces.Box(0, num_items - 1, (num_candidates,), np.int32),
    }
    if candidate_features:
        obs["candidate_features"] = spaces.Box(-1.0, 1.0, (num_candidates, dim + 1), np.float32)
    return spaces.Dict(obs)
