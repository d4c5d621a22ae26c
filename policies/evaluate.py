"""Run a policy in the environment and measure it, per episode."""
from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

from policies.base import Policy


def evaluate(policy: Policy, env: Any, episodes: int = 1, seed: int = 0, steps: int | None = None,
             progress: bool = False) -> list[dict[str, float]]:
    """Roll ``policy`` out in a vector env for ``episodes`` runs of ``steps`` world steps each.

    Episode e starts from the world at time zero with ``reset(seed=seed + e)``; ``steps`` defaults
    to the env's horizon. Returns one dict per episode: ``ctr`` (clicks per served user-step),
    ``mean_rating`` (over clicks), ``return`` (total reward per slot), ``coverage`` (share of the
    catalog ever shown), ``leave_rate`` (sessions ended by leaving per served user-step),
    ``user_steps``.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: must be >= 1.")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    if not hasattr(base, "num_envs"):
        raise TypeError("evaluate needs the vector env: gym.make_vec('RecSim-LLM-v0', num_envs=N).")
    steps = steps or base.config.horizon
    results = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        policy.setup(env)
        shown = np.zeros(base.world.num_items, bool)
        total_reward = clicks = active_steps = left = 0.0
        rating_sum = 0.0
        for _ in tqdm(range(steps), disable=not progress, desc=f"{getattr(policy, 'name', 'policy')} ep {e}",
                      leave=False):
            actions = policy.act(obs)
            next_obs, reward, terminated, truncated, info = env.step(actions)
            policy.update(obs, actions, reward, info)
            active = info["_clicked"]
            shown[info["slate"][active].ravel()] = True
            total_reward += float(reward.sum())
            clicked = info["clicked"] & active
            clicks += float(clicked.sum())
            rating_sum += float(info["rating"][clicked].sum())
            active_steps += float(active.sum())
            left += float(terminated.sum())
            obs = next_obs
        results.append({
            "ctr": clicks / max(active_steps, 1.0),
            "mean_rating": rating_sum / max(clicks, 1.0),
            "return": total_reward / base.num_envs,
            "coverage": float(shown.mean()),
            "leave_rate": left / max(active_steps, 1.0),
            "user_steps": active_steps,
        })
    return results
