"""``RecSim-LLM-v0``: one arriving user of a shared world per step."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from simenv.config import split_kwargs
from simenv.simulation import Simulation
from simenv.spaces import SlateSpace
from simenv.world import World


class RecSimLLMEnv(gym.Env):
    """A recommender serving simulated users of a shared world, one user-session per episode.

    ## Description
    The world holds ``num_users`` users (interests, satiation, boredom, patience, memory, persona)
    and a social graph among them. An episode is one session of one user: each step the env
    retrieves ``num_candidates`` items for that user, the policy picks a slate of ``slate_size``
    of them, the user model answers (click one or none, rating, watch time) and the user's state
    evolves. The next episode (``reset()`` without a seed) serves the next arriving user of the
    same, evolving world. ``gym.make_vec`` gives the batched twin, ``RecSimLLMVectorEnv``.

    ## Action space
    ``SlateSpace(num_candidates, slate_size)``: a ``MultiDiscrete([num_candidates] * slate_size)``
    whose positions must be distinct; position 0 is the top of the slate (most attention).

    ## Observation space
    A ``Dict``, keyed by slot:
    - ``user``: (F + 1,) float32 in [0, 1], persona features (age, one-hot gender and occupation)
      and the elapsed share of the horizon;
    - ``history``: (memory_size,) int32, the user's recently consumed items, most recent first, -1 padded;
    - ``candidates``: (num_candidates,) int32 item indices;
    - ``candidate_features``: (num_candidates, d + 1) float32, item embedding and log-popularity in
      [0, 1] (omit with ``candidate_features=False``; ``env.unwrapped.world.catalog`` has all items).
    True interests are hidden; ``env.unwrapped.world`` exposes them for oracles and audits.

    ## Rewards
    ``reward=`` ``"click"`` (1 per click), ``"rating"`` (1-5 on a click), ``"watch_time"`` (minutes)
    or ``"retention"`` (1 per step the user stays).

    ## Episode end
    Terminated when the user's patience runs out (they leave); truncated after ``horizon`` steps.

    ## Info
    ``user_id``, ``choice`` (slate position or -1), ``clicked``, ``item``, ``rating``, ``watch_time``,
    ``fallback`` (answer came from a fallback model), ``slate`` (item ids) and ``titles`` shown.

    ## Arguments
    Any field of ``simenv.config.WorldConfig`` and ``EnvConfig`` as a keyword (``num_users``,
    ``num_items``, ``num_candidates``, ``slate_size``, ``user_model``, ``social_graph``,
    ``dataset``, ``reward``, ``horizon``, ``dynamics={...}``, ``choice={...}``, ``world_seed``,
    ...), ``world=`` a prebuilt ``World``, and ``render_mode`` (``"ansi"``).

    ## Seeding
    ``world_seed`` makes the world (catalog, users, graph); ``reset(seed=s)`` returns to that world at
    time zero with the dynamics' random streams keyed by ``s``. Draws are counter-based per user, so
    a user's trajectory is the same here and in the vector env.

    ## Version history
    - v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, world: World | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: use one of {self.metadata['render_modes']} or None.")
        self.render_mode = render_mode
        world_config, env_config = split_kwargs(kwargs)
        self.sim = Simulation(world_config, env_config, num_slots=1, world=world)
        self.config = env_config
        self.observation_space = self.sim.observation_space()
        self.action_space = SlateSpace(env_config.num_candidates, env_config.slate_size)
        self._started = False
        self._last_info: dict[str, Any] = {}

    @property
    def world(self) -> World:
        return self.sim.world

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._started:
            # a fresh run: the world at time zero, dynamics keyed by the seed (or by np_random)
            self.sim.restart(seed if seed is not None else int(self.np_random.integers(2**63)))
            self._started = True
        else:
            self.sim.next_sessions(np.ones(1, bool))
        self._last_info = {"user_id": int(self.sim.slot_user[0])}
        return self._observation(), dict(self._last_info)

    def step(self, action):
        if not self._started:
            raise gym.error.ResetNeeded("Call reset() before step().")
        if self.sim.needs_reset[0]:
            raise gym.error.ResetNeeded("This user's session has ended (terminated or truncated): call reset().")
        a = np.asarray(action)
        reward, terminated, truncated, _, info = self.sim.step(a.reshape(1, -1) if a.ndim == 1 else a)
        cat = self.world.catalog
        slate = info["slate"][0]
        self._last_info = {
            "user_id": int(info["user_id"][0]),
            "choice": int(info["choice"][0]),
            "clicked": bool(info["clicked"][0]),
            "item": int(info["item"][0]),
            "rating": float(info["rating"][0]),
            "watch_time": float(info["watch_time"][0]),
            "fallback": bool(info["fallback"][0]),
            "slate": slate.tolist(),
            "titles": [str(cat.titles[i]) for i in slate],
        }
        return self._observation(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), dict(self._last_info)

    def _observation(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.sim.observe().items()}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        w, u = self.world, int(self.sim.slot_user[0])
        lines = [f"user {u} ({w.population.persona.describe(u)}), session step {int(self.sim.slot_step[0])}"]
        if "titles" in self._last_info:
            for pos, title in enumerate(self._last_info["titles"]):
                mark = "*" if pos == self._last_info["choice"] else " "
                lines.append(f" {mark} {pos}. {title}")
        return "\n".join(lines)

    def close(self) -> None:
        pass
