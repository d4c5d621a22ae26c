"""Logged data: the clicks a policy collected in a run, as ``Interactions``, and the arrays offline
policies are fitted from (user-item count matrix, item counts)."""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from policies.base import Policy
from simenv.datasets.base import Interactions, WorldData


def collect_interactions(env: Any, policy: Policy, steps: int, seed: int = 0) -> Interactions:
    """Run ``policy`` in the vector env for ``steps`` world steps and log every click.

    The env is reset with ``reset(seed=seed)`` and the policy set up on it (and updated as it goes,
    so a learning policy logs what it learns). Each click of an active row becomes one event
    (user, item, rating, timestamp) with user = ``info["user_id"]`` (the world's user index),
    item = ``info["item"]``, rating = ``info["rating"]`` and timestamp = the step index 0..steps-1
    (world ticks, not seconds). Rows that were autoresetting (``info["_clicked"]`` False) log nothing.

    Returns:
        Interactions with n = number of clicks, in step order.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r}: must be a positive integer (world steps to run).")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    if not hasattr(base, "num_envs"):
        raise TypeError(
            "collect_interactions needs the vector env: gym.make_vec('RecSim-LLM-v0', num_envs=N, "
            "vectorization_mode='vector_entry_point')."
        )
    obs, _ = env.reset(seed=seed)
    policy.setup(env)
    users, items, ratings, times = [], [], [], []
    for t in range(int(steps)):
        actions = policy.act(obs)
        next_obs, reward, _, _, info = env.step(actions)
        policy.update(obs, actions, reward, info)
        hit = info["clicked"] & info["_clicked"]
        users.append(info["user_id"][hit])
        items.append(info["item"][hit])
        ratings.append(info["rating"][hit])
        times.append(np.full(int(hit.sum()), t, np.int64))
        obs = next_obs
    return Interactions(
        user=np.concatenate(users).astype(np.int32),
        item=np.concatenate(items).astype(np.int32),
        rating=np.concatenate(ratings).astype(np.float32),
        timestamp=np.concatenate(times),
    )


def simulated_world_data(num_users: int, num_items: int, steps: int, seed: int = 0, policy: str = "popular",
                         slate_size: int = 5, num_candidates: int = 20) -> WorldData:
    """A synthetic world plus the clicks its embedded users made under ``policy`` for ``steps`` steps,
    as a MovieLens-like log (timestamp = step): offline data for worlds that have no real log."""
    import gymnasium as gym

    import simenv  # noqa: F401  (registers the env)
    from policies import make_policy
    from simenv.datasets import synthetic_world

    data = synthetic_world(num_users, num_items, seed=seed)
    env = gym.make_vec("RecSim-LLM-v0", num_envs=num_users, vectorization_mode="vector_entry_point",
                       dataset=data, num_users=num_users, slate_size=slate_size, num_candidates=num_candidates,
                       horizon=steps, audit=False, candidate_features=False, world_seed=seed)
    log = collect_interactions(env, make_policy(policy), steps, seed=seed)
    env.close()
    return WorldData(data.catalog, data.persona, data.interests, data.weights, log)


def interaction_matrix(interactions: Interactions, num_users: int, num_items: int) -> sp.csr_matrix:
    """(num_users, num_items) float64 CSR of counts: R[u, i] = number of events (u, i) in the log.

    Raises ValueError, naming the field, if a user or item index falls outside its range.
    """
    for field, size, name in (("user", num_users, "num_users"), ("item", num_items, "num_items")):
        idx = getattr(interactions, field)
        if len(idx) and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(
                f"Interactions.{field} spans {int(idx.min())}..{int(idx.max())}, outside 0..{size - 1} "
                f"({name}={size}); pass the {name} of the world the log came from."
            )
    ones = np.ones(len(interactions), np.float64)
    r = sp.csr_matrix((ones, (interactions.user, interactions.item)), shape=(num_users, num_items))
    r.sum_duplicates()
    return r


def item_counts(interactions: Interactions, num_items: int) -> np.ndarray:
    """(num_items,) float64: events per item, the popularity offline policies fall back on."""
    item = interactions.item
    if len(item) and (item.min() < 0 or item.max() >= num_items):
        raise ValueError(
            f"Interactions.item spans {int(item.min())}..{int(item.max())}, outside 0..{num_items - 1} "
            f"(num_items={num_items}); pass the num_items of the world the log came from."
        )
    return np.bincount(item, minlength=num_items).astype(np.float64)
