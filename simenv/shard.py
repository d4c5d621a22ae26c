"""One shard of a world split over workers: a contiguous range of users served with a policy replica.

A sharded world serves every user every step (``num_envs == num_users``). Its users are split into
contiguous ranges, one per shard. Every shard builds the same world from the same configuration (a
world is a pure function of its config and seed, so nothing large is shipped), serves only its own
users, and owns their rows of the state; the rows of other users in its copy are never read.

Social edges that cross shards are the one place a user reads another user's state, and that
happens only in the social refresh, every ``social_interval`` ticks: the refresh reads every
user's taste and latest item, all before any row is updated. So the runner
(``simenv.rollout.ShardedRollout``) steps all shards up to a refresh tick, gathers their
``social_inputs`` in user order, and hands the whole arrays back; each shard refreshes its own rows
from them (``simenv.dynamics.social_refresh_rows``). Every random draw is a hash of (key, user,
the user's own counter), so a user's draws do not depend on which shard serves them. Together,
a sharded run equals the single-process run bit for bit, for any number of shards, as long as the
policy's slate for a user depends on that user only (``random``, with its per-replica generator,
and learning policies, which learn from their own shard's users, depend on the split).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from simenv.dynamics import social_inputs, social_refresh_rows

# one row per served user-step: who, at which world tick, what they had seen (obs["history"]), the
# candidates, the slate (positions into candidates), the position taken (-1: none), the rating, and
# each candidate's value under the user model just before the user responded
DECISION_FIELDS = ("user", "clock", "history", "candidates", "slate", "choice", "rating", "values")


def shard_ranges(num_users: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous (lo, hi) user ranges of near-equal size covering 0..num_users-1."""
    if num_shards < 1 or num_shards > num_users:
        raise ValueError(f"num_workers={num_shards}: must be between 1 and num_users={num_users}.")
    bounds = np.linspace(0, num_users, num_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class ChunkStats:
    """What a shard's users did over a chunk of steps: one entry per step of each per-step array."""

    served: np.ndarray  # (T,) int64 users who acted (not autoresetting)
    clicks: np.ndarray  # (T,) int64
    rating: np.ndarray  # (T,) float64 sum of ratings (0 without a click)
    watch_time: np.ndarray  # (T,) float64
    reward: np.ndarray  # (T,) float64
    left: np.ndarray  # (T,) int64 users whose patience ran out
    exposure: np.ndarray  # (num_items,) int64 times each item was shown
    consumed: np.ndarray  # (num_items,) int64 times each item was clicked

    FIELDS = ("served", "clicks", "rating", "watch_time", "reward", "left")

    @staticmethod
    def combine(parts: list["ChunkStats"]) -> "ChunkStats":
        """The whole world's statistics from its shards' (sums in shard order)."""
        return ChunkStats(*(sum(getattr(p, f) for p in parts) for f in (*ChunkStats.FIELDS, "exposure", "consumed")))


class Shard:
    """Users ``lo..hi-1`` of the world ``env_kwargs`` describes, served by a replica of ``policy``.

    Plain Python: ``simenv.rollout`` runs it in-process or as a Ray actor, unchanged.
    """

    def __init__(self, env_kwargs: dict[str, Any], user_range: tuple[int, int], policy: str,
                 policy_kwargs: dict[str, Any] | None = None, seed: int = 0, threads: int | None = None) -> None:
        import numba

        from policies import make_policy
        from simenv.vector import RecSimLLMVectorEnv

        if threads:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.lo, self.hi = (int(x) for x in user_range)
        kwargs = {**env_kwargs, "audit": False}
        self.env = RecSimLLMVectorEnv(num_envs=self.hi - self.lo, user_range=(self.lo, self.hi), **kwargs)
        self.policy = make_policy(policy, seed=seed, **(policy_kwargs or {}))
        self.seed = seed
        self.obs: dict[str, np.ndarray] | None = None
        self._decisions: list[dict[str, np.ndarray]] = []

    @property
    def world(self):
        return self.env.world

    def reset(self, seed: int) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.policy.setup(self.env)

    def set_policy(self, policy: str, policy_kwargs: dict[str, Any] | None = None) -> None:
        """Serve from here on with a new replica of ``policy`` (an online study's next round's model);
        the users' state and the world stay as they are."""
        from policies import make_policy

        self.policy = make_policy(policy, seed=self.seed, **(policy_kwargs or {}))
        self.policy.setup(self.env)

    def take_decisions(self) -> dict[str, np.ndarray]:
        """The decisions ``run(..., record=True)`` logged since the last call (see ``DECISION_FIELDS``),
        one row per served user-step in step order, and forget them."""
        out = {k: np.concatenate([d[k] for d in self._decisions]) if self._decisions else np.zeros((0,), np.int64)
               for k in DECISION_FIELDS}
        self._decisions = []
        return out

    def policy_state(self) -> dict[str, Any]:
        return self.policy.state_dict()

    def _decision(self, obs: dict[str, np.ndarray], actions: np.ndarray, info: dict[str, np.ndarray],
                  values: np.ndarray, active: np.ndarray) -> dict[str, np.ndarray]:
        return {"user": info["user_id"][active].astype(np.int64), "clock": np.full(int(active.sum()), self.world.clock - 1),
                "history": np.asarray(obs["history"])[active], "candidates": np.asarray(obs["candidates"])[active],
                "slate": np.asarray(actions, np.int64)[active], "choice": info["choice"][active].astype(np.int64),
                "rating": info["rating"][active], "values": values[active]}

    def run(self, steps: int, record: bool = False) -> ChunkStats:
        """``steps`` steps of every user of the shard. The runner stops a chunk at each refresh tick.
        ``record`` also logs every served decision for ``take_decisions``: an online study learns from
        them, and the candidates' values under the user model (taken before the users respond) say
        which candidate the user truly preferred."""
        n_items = self.world.num_items
        t = {f: np.zeros(steps, np.int64 if f in ("served", "clicks", "left") else np.float64)
             for f in ChunkStats.FIELDS}
        exposure, consumed = np.zeros(n_items, np.int64), np.zeros(n_items, np.int64)
        for s in range(steps):
            obs = self.obs
            actions = self.policy.act(obs)
            if record:
                sim = self.env.sim
                values = sim.user_model.item_values(self.world, sim.slot_user, np.asarray(obs["candidates"]))
            self.obs, reward, terminated, _, info = self.env.step(actions)
            self.policy.update(obs, actions, reward, info)
            active = info["_clicked"]
            clicked = info["clicked"] & active
            t["served"][s] = active.sum()
            t["clicks"][s] = clicked.sum()
            t["rating"][s] = info["rating"][active].sum(dtype=np.float64)
            t["watch_time"][s] = info["watch_time"][active].sum(dtype=np.float64)
            t["reward"][s] = reward.sum(dtype=np.float64)
            t["left"][s] = terminated.sum()
            exposure += np.bincount(info["slate"][active].ravel(), minlength=n_items)
            consumed += np.bincount(info["item"][clicked], minlength=n_items)
            if record:
                self._decisions.append(self._decision(obs, actions, info, values, active))
            if self.world.social_due() and s < steps - 1:
                raise RuntimeError(f"shard {self.lo}..{self.hi}: stepped past a social-refresh tick "
                                   f"(clock {self.world.clock}); the runner must stop each chunk there.")
        return ChunkStats(**t, exposure=exposure, consumed=consumed)

    # the social exchange -------------------------------------------------------------------------
    def social_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return social_inputs(self.world.population, self.lo, self.hi)

    def social_refresh(self, tastes: np.ndarray, latest: np.ndarray) -> None:
        w = self.world
        social_refresh_rows(w.population, w.social, w.dynamics, w.spill, self.lo, self.hi, tastes, latest)

    def social_refresh_from(self, *pieces: np.ndarray) -> None:
        """``social_refresh`` from every shard's ``social_inputs`` in shard order: the n tastes arrays,
        then the n latest arrays. On Ray the pieces come straight from the other actors' results in
        the object store (read in place), so the driver never gathers, concatenates or re-sends them."""
        n = len(pieces) // 2
        self.social_refresh(np.concatenate(pieces[:n]), np.concatenate(pieces[n:]))

    # state ---------------------------------------------------------------------------------------
    def rows(self) -> dict[str, np.ndarray]:
        """This shard's rows of every user-state array (and of the spillover lists)."""
        return user_rows(self.world, self.lo, self.hi)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here: user rows, slots, clock, policy."""
        return {**world_state(self.env, self.lo, self.hi), "policy": pickle.dumps(self.policy.state_dict())}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``state()``: the shard must have been ``reset`` with the run's seed first."""
        load_world_state(self.env, state, self.lo, self.hi)
        if "policy" in state:  # absent: a new policy takes over the world where another left it
            self.policy.load_state_dict(pickle.loads(state["policy"]))
        self.obs = self.env.sim.observe()


SLOTS = ("slot_user", "slot_step", "needs_reset", "candidates")


def user_rows(world, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Copies of users lo..hi-1's rows of every user-state array and of the spillover lists."""
    out = {k: v[lo:hi].copy() for k, v in world.population.arrays().items()}
    out["spill"] = world.spill[lo:hi].copy()
    return out


def world_state(env, lo: int, hi: int) -> dict[str, Any]:
    """What a vector env serving users lo..hi-1 carries from one tick to the next: their rows, the
    clock, the dynamics key and the slots (``load_world_state`` continues from it exactly)."""
    w, sim = env.world, env.sim
    return {"rows": user_rows(w, lo, hi), "clock": int(w.clock), "key": int(w.key),
            "slots": {k: getattr(sim, k).copy() for k in SLOTS}}


def load_world_state(env, state: dict[str, Any], lo: int, hi: int) -> None:
    """Continue from a ``world_state`` of the same world (the env ``reset`` with the run's seed first)."""
    w, sim = env.world, env.sim
    arrays = w.population.arrays()
    for k, v in state["rows"].items():
        (w.spill if k == "spill" else arrays[k])[lo:hi] = v
    w.clock, w.key = int(state["clock"]), np.uint64(state["key"])
    for k, v in state["slots"].items():
        getattr(sim, k)[...] = v
