"""The native vector twin of ``RecSim-LLM-v0``: N users of one shared world served per step."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from simenv.config import split_kwargs
from simenv.simulation import Simulation
from simenv.spaces import SlateSpace, batch_dict_space
from simenv.world import World


class RecSimLLMVectorEnv(VectorEnv):
    """``gym.make_vec("RecSim-LLM-v0", num_envs=N)``: N slots serve users of one shared world at once.

    Everything is as in ``RecSimLLMEnv``, batched: observations are the Dict of arrays with a leading
    N axis, actions an int array of shape (N, slate_size), and ``info`` a dict of arrays with the
    boolean ``_key`` masks Gymnasium uses (False on rows that were autoresetting).

    Slot i serves users i, i + N, i + 2N, ... one session at a time (with ``num_users == num_envs``
    each slot is one user). When a session ends, the next step is an autoreset (NEXT_STEP mode): its
    action is ignored, its reward is 0, and the slot's next user arrives. No Python loop runs per
    user: every stage is one array operation or one parallel kernel over all N slots.

    ``user_range=(lo, hi)`` with ``num_envs == hi - lo`` serves only users lo..hi-1 of the world: one
    shard of a world split over workers (``simenv.shard``; the runner there does the social refresh).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 world: World | None = None, user_range: tuple[int, int] | None = None, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}: must be a positive integer.")
        if max_episode_steps is not None:
            kwargs.setdefault("horizon", max_episode_steps)
        kwargs.setdefault("num_users", max(num_envs, 1000) if world is None else world.num_users)
        world_config, env_config = split_kwargs(kwargs)
        self.sim = Simulation(world_config, env_config, num_slots=num_envs, world=world, user_range=user_range)
        self.config = env_config
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.sim.observation_space()
        self.single_action_space = SlateSpace(env_config.num_candidates, env_config.slate_size)
        self.observation_space = batch_dict_space(self.single_observation_space, num_envs)
        self.action_space = SlateSpace(env_config.num_candidates, env_config.slate_size, batch=num_envs)
        self._started = False

    @property
    def world(self) -> World:
        return self.sim.world

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise TypeError(
                f"seed={seed!r}: the vector env has one shared world, seeded by one int "
                "(per-user streams are derived from it)."
            )
        super().reset(seed=seed)
        if seed is not None or not self._started:
            self.sim.restart(int(seed) if seed is not None else int(self.np_random.integers(2**63)))
            self._started = True
        else:
            self.sim.next_sessions(np.ones(self.num_envs, bool))
        return self.sim.observe(), {"user_id": self.sim.slot_user.copy(), "_user_id": np.ones(self.num_envs, bool)}

    def step(self, actions):
        if not self._started:
            raise gym.error.ResetNeeded("Call reset() before step().")
        reward, terminated, truncated, active, info = self.sim.step(actions)
        if self.config.info_titles:
            info["titles"] = self.world.catalog.titles[info["slate"]]
        masks = {f"_{k}": (active if k != "user_id" else np.ones(self.num_envs, bool)) for k in info}
        info.update(masks)
        return self.sim.observe(), reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        w = self.world
        u = self.sim.slot_user
        return f"clock {w.clock}: serving users {u[:8].tolist()}{' ...' if len(u) > 8 else ''}"

    def close_extras(self, **kwargs: Any) -> None:
        pass
