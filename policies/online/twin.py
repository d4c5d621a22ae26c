"""The PPO method's twin world: ``RecSim-LLM-v0`` as the study builds it, for RLlib's env runner, and
able to start again at a saved moment.

RLlib resets its env when a new (or restored) Algorithm first samples, and an Algorithm checkpoint
holds the module, the optimizer and the counters, not the env. ``TwinVectorEnv`` makes that reset
return to the state named by ``start`` in its env config (``state()`` saved when the last training
phase ended), so each phase continues the twin where the last one left it, whether the Algorithm
was built a moment ago in this process or after a restart.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from simenv.shard import load_world_state, world_state
from simenv.vector import RecSimLLMVectorEnv


class TwinVectorEnv(RecSimLLMVectorEnv):
    """``RecSimLLMVectorEnv`` built from RLlib's env config, whose ``reset`` can return to a saved state.

    Args:
        config: what RLlib passes a callable env: the ``RecSim-LLM-v0`` keyword arguments of
            ``AlgorithmConfig.environment(env_config=...)`` plus ``num_envs`` (the runner's slots) and
            ``start``: a file written from ``state()`` (pickled), or None for the world's start.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        kwargs = dict(config)
        self.start = kwargs.pop("start", None)
        super().__init__(num_envs=int(kwargs.pop("num_envs")), **kwargs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """The world's start for ``seed``, then, with a ``start``, the saved state over it (rows, clock,
        dynamics key and slots: everything the world carries from one tick to the next)."""
        obs, info = super().reset(seed=seed, options=options)
        if self.start is None:
            return obs, info
        self.load_state(pickle.loads(Path(self.start).read_bytes()))
        info["user_id"] = self.sim.slot_user.copy()
        return self.sim.observe(), info

    def state(self) -> dict[str, Any]:
        """Everything needed to continue the twin exactly from here: ``simenv.shard.world_state`` of
        one shard holding every user (the layout of ``Shard.state``, without a policy)."""
        return world_state(self, 0, self.num_envs)

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``state()`` of a twin of the same world (after ``reset``)."""
        load_world_state(self, state, 0, self.num_envs)
