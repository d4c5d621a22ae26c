"""A trained RLlib ``SlateRLModule`` (``policies.rllib_slate``) serving ``RecSim-LLM-v0`` like any other
policy: ``make_policy("rllib_slate", module=FOLDER)``, so an online study can serve what PPO learned."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policies.base import BasePolicy


class RLModuleSlatePolicy(BasePolicy):
    """Greedy slates of the RLModule saved in ``module``: the k best of its candidate scores, best first.

    One ``forward_inference`` (torch, no grad) scores the candidates of every served user at once; the
    slate is the mode of the module's Plackett-Luce distribution, so serving does not explore and a
    user's slate depends on that user's observation alone (``per_user``). The module reads the
    observation's ``candidate_features``, so the world must be built with ``candidate_features=True``.

    Args:
        module: a folder written by ``RLModule.save_to_path`` (loaded with ``RLModule.from_checkpoint``).
        seed: unused (greedy serving draws nothing); kept for ``make_policy``'s common signature.
    """

    name = "rllib_slate"
    per_user = True

    def __init__(self, module: str | Path, seed: int = 0) -> None:
        from ray.rllib.core.rl_module.rl_module import RLModule

        super().__init__(seed)
        self.module_path = str(module)
        self.module = RLModule.from_checkpoint(self.module_path)

    def setup(self, env: Any) -> None:
        super().setup(env)
        served = self.env.single_observation_space
        if "candidate_features" not in served.spaces:
            raise ValueError(f"rllib_slate: the module {self.module_path} scores candidate_features, which this "
                             "world's observations lack; build it with candidate_features=True.")
        if served != self.module.observation_space:
            raise ValueError(f"rllib_slate: the module {self.module_path} was trained on observations "
                             f"{self.module.observation_space}, this world gives {served}; serve it in a world "
                             "of the same configuration.")

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        import torch
        from ray.rllib.core.columns import Columns

        batch = {Columns.OBS: {k: torch.from_numpy(np.asarray(v)) for k, v in obs.items()}}
        with torch.no_grad():
            scores = self.module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]  # (N, C)
        return self.slate_from_scores(scores.numpy())

    def state_dict(self) -> dict[str, Any]:
        """Nothing: serving learns nothing, and the module is on disk (a checkpoint must not pickle it)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see ``state_dict``)."""
