"""The serving loop shared by the single and the vector environment.

N *slots* serve users of one shared world. Slot i owns the users {i, i + N, i + 2N, ...} and
serves them one session at a time, in that order, wrapping around: when a session ends (the user
left, or the horizon was reached), the slot's next user arrives. With N == num_users every user is
served every step and a user's next session starts right after the last one (their return).

Per step, for all slots at once: validate the slates, gather their item ids, ask the user model,
apply the dynamics, compute rewards, rotate finished slots (NEXT_STEP autoreset in the vector env),
tick the world clock (social refresh every few ticks) and retrieve the next candidates.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from agents.base import Responses, resolve_user_model
from simenv.audit.monitor import Monitor
from simenv.config import EnvConfig, WorldConfig
from simenv.retrieval import draw_candidates, popular_share_of
from simenv.rng import world_key
from simenv.scenarios import available_items
from simenv.spaces import observation_space
from simenv.world import World, build_world

_CODES = {1: "is out of range", 2: "repeats a position"}


@njit(parallel=True, cache=True)
def _check_actions(actions, num_candidates, bad):
    for b in prange(actions.shape[0]):
        bad[b] = 0
        for j in range(actions.shape[1]):
            a = actions[b, j]
            if a < 0 or a >= num_candidates:
                bad[b] = 1
                break
            for i in range(j):
                if actions[b, i] == a:
                    bad[b] = 2
                    break
            if bad[b]:
                break


@njit(parallel=True, cache=True)
def _gather(candidates, actions, out):
    for b in prange(actions.shape[0]):
        for j in range(actions.shape[1]):
            out[b, j] = candidates[b, actions[b, j]]


@njit(parallel=True, cache=True)
def _candidate_features(candidates, emb, pop_feature, out):
    d = emb.shape[1]
    for b in prange(candidates.shape[0]):
        for c in range(candidates.shape[1]):
            item = candidates[b, c]
            for j in range(d):
                out[b, c, j] = emb[item, j]
            out[b, c, d] = pop_feature[item]


@njit(parallel=True, cache=True)
def _user_view(users, user_features, progress, memory_items, memory_pos, out_user, out_history):
    """Fill the ``user`` (persona features + session progress) and ``history`` observations."""
    m = memory_items.shape[1]
    f = user_features.shape[1]
    for b in prange(users.shape[0]):
        u = users[b]
        for j in range(f):
            out_user[b, j] = user_features[u, j]
        out_user[b, f] = progress[b]
        pos = memory_pos[u]
        for j in range(m):
            out_history[b, j] = memory_items[u, (pos - 1 - j) % m] if j < pos else -1


class Simulation:
    """Batched serving of a shared world by ``num_slots`` slots (see the module docstring)."""

    def __init__(self, world_config: WorldConfig, env_config: EnvConfig, num_slots: int,
                 world: World | None = None, user_range: tuple[int, int] | None = None) -> None:
        """``user_range=(lo, hi)`` serves users lo..hi-1 only, one slot each (``num_slots == hi - lo``):
        a shard of a world split over workers (``simenv.shard``), whose social refresh is deferred to
        the sharded runner."""
        if user_range is not None:
            lo, hi = (int(x) for x in user_range)
            if not 0 <= lo < hi or hi - lo != num_slots:
                raise ValueError(f"user_range={user_range}: needs 0 <= lo < hi and hi - lo == num_envs={num_slots} "
                                 "(each user of a shard has its own slot).")
            if env_config.audit.enabled:
                raise ValueError("user_range: a shard is not audited (audit=False); the sharded runner measures "
                                 "the whole world from every shard's output.")
        self.user_range = user_range
        self.world_config = world_config
        self.config = env_config
        self.num_slots = num_slots
        self.user_model = resolve_user_model(env_config.user_model, **_user_model_options(env_config))
        self._popular_share = popular_share_of(env_config.candidate_sampler, env_config.popular_share)
        self.monitor = Monitor(env_config.audit, env_config.slate_size) if env_config.audit.enabled else None
        self._pin_item = -1
        self._pinned: np.ndarray | None = None  # (U,) bool: users whose candidates always hold the pinned item
        # the world at time zero: made once, copied by every restart
        self.initial_world = world.copy() if world is not None else build_world(world_config)
        self.initial_world.defer_social = user_range is not None
        self._set_world(self.initial_world.copy())

    # world lifecycle -----------------------------------------------------------------------------
    def _set_world(self, world: World) -> None:
        n, c = self.num_slots, self.config
        if world.num_users < n:
            raise ValueError(
                f"num_users={world.num_users} < num_envs={n}: each slot serves distinct users; "
                "raise num_users or lower num_envs."
            )
        if c.num_candidates > world.num_items:
            raise ValueError(
                f"num_candidates={c.num_candidates} > num_items={world.num_items}: candidates are distinct items; "
                "lower num_candidates or raise num_items."
            )
        self.world = world
        cat = world.catalog
        hidden = sum(r.count for r in world.dynamics.releases)
        if c.num_candidates > world.num_items - hidden:
            raise ValueError(
                f"num_candidates={c.num_candidates} > the {world.num_items - hidden} items out before the releases "
                f"(num_items={world.num_items}, {hidden} released later); lower num_candidates or the release counts."
            )
        self._cdf_items = -1  # the popularity CDF over the items out so far, remade when a release comes
        scaled = np.log1p(cat.popularity * cat.num_items)
        self._pop_feature = (scaled / max(scaled.max(), 1e-12)).astype(np.float32)
        self._user_features = world.population.persona.features()
        if self.user_range is not None and self.user_range[1] > world.num_users:
            raise ValueError(f"user_range={self.user_range}: the world has {world.num_users} users.")
        lo = 0 if self.user_range is None else self.user_range[0]
        self.slot_index = np.arange(lo, lo + n, dtype=np.int64)
        self.slot_user = self.slot_index.copy()
        self.slot_step = np.zeros(n, np.int32)
        self.needs_reset = np.zeros(n, bool)
        self.candidates = np.zeros((n, c.num_candidates), np.int32)
        if self.monitor is not None:
            self.monitor.reset(world)

    def restart(self, seed: int) -> None:
        """Return to the world at time zero, with the random streams of the dynamics keyed by ``seed``."""
        world = self.initial_world.copy()
        world.key = world_key(np.random.SeedSequence(seed))
        self._set_world(world)
        everyone = np.ones(self.num_slots, bool)
        self.world.start_sessions(self.slot_user, everyone)
        self._retrieve(everyone)

    def next_sessions(self, mask: np.ndarray) -> None:
        """End the sessions of the masked slots and let each slot's next user arrive."""
        nxt = self.slot_user + self.num_slots
        wrap = (nxt >= self.world.num_users) | (self.user_range is not None)  # a shard's slot keeps its user
        nxt[wrap] = self.slot_index[wrap]
        self.slot_user = np.where(mask, nxt, self.slot_user)
        self.slot_step[mask] = 0
        self.world.start_sessions(self.slot_user, mask)
        self._retrieve(mask)

    def _retrieve(self, mask: np.ndarray) -> None:
        w = self.world
        n_items = available_items(w.num_items, w.dynamics.releases, w.clock)
        if n_items != self._cdf_items:
            self._pop_cdf = np.cumsum(w.catalog.popularity[:n_items], dtype=np.float64)
            self._pop_cdf /= self._pop_cdf[-1]
            self._cdf_items = n_items
        draw_candidates(self.slot_user, mask, w.population.steps, w.key, n_items, self._popular_share,
                        self._pop_cdf, self.candidates)
        if self._pinned is not None:
            rows = np.flatnonzero(mask & self._pinned[self.slot_user])
            cand = self.candidates[rows]
            has = cand == self._pin_item
            at = np.where(has.any(axis=1), has.argmax(axis=1), 0)
            cand[np.arange(len(rows)), at] = cand[:, 0]  # the item's old position gets candidate 0 ...
            cand[:, 0] = self._pin_item  # ... and the item takes position 0
            self.candidates[rows] = cand

    def pin(self, item: int | None, users: np.ndarray | None = None) -> None:
        """Make ``item`` candidate 0 of every later retrieval for ``users`` (steering experiments need the
        target item to be available to the users they steer); ``pin(None)`` removes the pin.

        The item replaces the first drawn candidate, or swaps with it when it was drawn anyway, so the
        other candidates are those the user would have had.
        """
        if item is None:
            self._pin_item, self._pinned = -1, None
            return
        self.world.catalog.check_item(item)
        users = np.asarray(users, np.int64)
        if users.size and (users.min() < 0 or users.max() >= self.world.num_users):
            raise ValueError(f"pin: user ids must be in 0..{self.world.num_users - 1}.")
        self._pin_item = int(item)
        self._pinned = np.zeros(self.world.num_users, bool)
        self._pinned[users] = True
        self._retrieve(self._pinned[self.slot_user] & ~self.needs_reset)

    # stepping ------------------------------------------------------------------------------------
    def validate(self, actions) -> np.ndarray:
        """Return actions as a contiguous (N, k) int64 array, or raise naming what is wrong and the fix."""
        n, k, c = self.num_slots, self.config.slate_size, self.config.num_candidates
        a = np.asarray(actions)
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(
                f"action dtype {a.dtype}: must be integers, slate positions into the candidates (0..{c - 1})."
            )
        if a.shape != (n, k):
            raise ValueError(f"action shape {a.shape}: expected ({n}, {k}) = (num_envs, slate_size).")
        a = np.ascontiguousarray(a, np.int64)
        bad = np.empty(n, np.int8)
        _check_actions(a, c, bad)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"action[{b}] = {a[b].tolist()} {_CODES[int(bad[b])]}: each slate picks slate_size={k} distinct "
                f"positions in 0..{c - 1} (num_candidates={c})."
            )
        return a

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One step of all slots. Slots flagged ``needs_reset`` ignore their action and start a new session
        (NEXT_STEP autoreset). Returns (reward, terminated, truncated, active, responses-as-info)."""
        w, cfg = self.world, self.config
        a = self.validate(actions)
        n = self.num_slots
        resetting = self.needs_reset
        active = ~resetting
        slates = np.empty((n, cfg.slate_size), np.int32)
        _gather(self.candidates, a, slates)
        users = self.slot_user
        snapshot = self.monitor is not None and self.monitor.due(w.clock)
        if snapshot:
            self.monitor.before_step(w, self.user_model, users, self.candidates, a, active)
        responses = self._respond(users, slates, active)
        left = w.apply(users, slates, responses, active)
        self.slot_step[active] += 1
        terminated = left & active
        truncated = (self.slot_step >= cfg.horizon) & active & ~terminated
        reward = self._reward(responses, left, active)
        info = {
            "user_id": users.copy(),
            "choice": responses.choice,
            "clicked": responses.choice >= 0,
            "item": np.where(responses.choice >= 0,
                             slates[np.arange(n), np.maximum(responses.choice, 0)], -1).astype(np.int32),
            "rating": responses.rating,
            "watch_time": responses.watch_time,
            "fallback": responses.fallback,
            "slate": slates,
            "left": terminated,
        }
        if resetting.any():
            self.next_sessions(resetting)
        self.needs_reset = terminated | truncated
        w.tick()
        if self.monitor is not None:
            self.monitor.after_step(w, users, slates, responses.choice, responses.rating, active, snapshot,
                                    responses.fallback)
        self._retrieve(~self.needs_reset)
        return reward, terminated, truncated, active, info

    def _respond(self, users: np.ndarray, slates: np.ndarray, active: np.ndarray) -> Responses:
        if active.all():
            r = self.user_model.respond(self.world, users, slates)
        else:
            idx = np.flatnonzero(active)
            part = self.user_model.respond(self.world, users[idx], slates[idx])
            n = len(users)
            r = Responses(np.full(n, -1, np.int32), np.zeros(n, np.float32), np.zeros(n, np.float32),
                          np.zeros(n, bool))
            r.choice[idx], r.rating[idx], r.watch_time[idx], r.fallback[idx] = (
                part.choice, part.rating, part.watch_time, part.fallback)
        if not getattr(self.user_model, "trusted", False):
            r.validate(self.config.slate_size)
        return r

    def _reward(self, r: Responses, left: np.ndarray, active: np.ndarray) -> np.ndarray:
        kind = self.config.reward
        if kind == "click":
            out = (r.choice >= 0).astype(np.float32)
        elif kind == "rating":
            out = np.asarray(r.rating, np.float32).copy()
        elif kind == "watch_time":
            out = np.asarray(r.watch_time, np.float32).copy()
        else:  # retention: one per step the user stays
            out = (~left).astype(np.float32)
        out[~active] = 0.0
        return out

    # observations --------------------------------------------------------------------------------
    def observe(self) -> dict[str, np.ndarray]:
        """The batched observation of every slot's current user."""
        w, cfg = self.world, self.config
        n, p = self.num_slots, w.population
        user = np.empty((n, self._user_features.shape[1] + 1), np.float32)
        hist = np.empty((n, p.memory_size), np.int32)
        _user_view(self.slot_user, self._user_features, (self.slot_step / cfg.horizon).astype(np.float32),
                   p.memory_items, p.memory_pos, user, hist)
        obs = {"user": user, "history": hist, "candidates": self.candidates.copy()}
        if cfg.candidate_features:
            feats = np.empty((self.num_slots, cfg.num_candidates, w.catalog.dim + 1), np.float32)
            _candidate_features(self.candidates, w.catalog.embeddings, self._pop_feature, feats)
            obs["candidate_features"] = feats
        return obs

    def observation_space(self):
        """The single-user observation space of what ``observe`` returns per slot."""
        w, cfg = self.world, self.config
        return observation_space(w.population.persona.num_features + 1, w.population.memory_size,
                                 cfg.num_candidates, w.num_items, w.catalog.dim, cfg.candidate_features)


def _user_model_options(config: EnvConfig) -> dict:
    """Constructor options of the built-in user models, from the env config."""
    if config.user_model in ("embedded", "mnl"):
        return {"config": config.choice}
    if config.user_model == "llm":
        return {"config": config.llm, "choice": config.choice}
    return {}
