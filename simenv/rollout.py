"""Sharded rollouts: a world's users split over workers, stepped in lockstep, checkpointed, recovered.

``ShardedRollout`` splits the users into ``num_workers`` contiguous shards (``simenv.shard``), each a
Ray actor (``backend="ray"``) or an object in this process (``backend="local"``, for tests and
debugging). One call to a worker steps all of its users for a whole chunk of steps: a chunk ends
at each social-refresh tick (where the shards exchange tastes and latest items), at each
checkpoint, and at the end. Ray calls therefore cost per chunk, not per user-step.

Checkpoints (every ``checkpoint_every`` steps) hold every shard's state and the statistics so far,
in memory and, with ``checkpoint_dir``, on disk (``step_<t>/``, written to a temporary folder and
renamed, so a half-written checkpoint is never read). When a worker dies mid-run (``RayActorError``),
all workers are started again from the last checkpoint and the run continues: the steps after the
checkpoint are replayed, so the final statistics equal an undisturbed run's. ``resume=True`` makes
a new process continue from the last checkpoint on disk.
"""
from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from simenv.shard import ChunkStats, Shard, shard_ranges

log = logging.getLogger(__name__)
BACKENDS = ("ray", "local")


@dataclass
class RolloutResult:
    """Per-step statistics of the whole world (arrays of length ``steps``) and item counts."""

    steps: dict[str, np.ndarray]
    exposure: np.ndarray
    consumed: np.ndarray
    num_users: int
    restarts: int = 0
    seconds: float = 0.0
    rows: dict[str, np.ndarray] | None = None  # the final user-state arrays, when asked for

    def table(self) -> dict[str, np.ndarray]:
        """Per-step metrics: CTR and mean rating over served users, reward per served user, leave rate."""
        s = self.steps
        served = np.maximum(s["served"], 1)
        return {"step": np.arange(len(s["served"])), "served": s["served"], "clicks": s["clicks"],
                "ctr": s["clicks"] / served,
                "mean_rating": np.where(s["clicks"] > 0, s["rating"] / np.maximum(s["clicks"], 1), np.nan),
                "reward_per_user": s["reward"] / served, "watch_time_per_user": s["watch_time"] / served,
                "leave_rate": s["left"] / served}

    def summary(self) -> dict[str, float]:
        from simenv.audit.exposure import gini

        s = self.steps
        served = max(int(s["served"].sum()), 1)
        return {"user_steps": int(s["served"].sum()), "ctr": float(s["clicks"].sum() / served),
                "mean_rating": float(s["rating"].sum() / max(int(s["clicks"].sum()), 1)),
                "return_per_user": float(s["reward"].sum() / self.num_users),
                "exposure_gini": float(gini(self.exposure.astype(np.float64))),
                "coverage": float((self.exposure > 0).mean()), "restarts": self.restarts}


@dataclass
class _Checkpoint:
    t: int
    states: list[dict[str, Any]]
    stats: list[ChunkStats] = field(default_factory=list)


class ShardedRollout:
    """Runs ``policy`` over every user of the world ``env_kwargs`` describes, sharded over workers.

    Args:
        env_kwargs: ``RecSim-LLM-v0`` keyword arguments (every user is served every step).
        policy, policy_kwargs: a ``policies.make_policy`` name and its arguments; each worker has a replica.
        num_workers: shards (Ray actors, or local objects).
        seed: the episode seed (``reset(seed=...)`` of every shard: the same world stream for all).
        backend: ``"ray"`` (joins a running Ray, or starts a local one) or ``"local"``.
        threads_per_worker: numba threads each worker uses.
        cpus_per_worker: CPUs each Ray actor reserves (fractions share a core; a run that asks for
            more CPUs than the cluster has is refused at the start instead of waiting forever).
        checkpoint_every: steps between checkpoints (0: only the start, in memory).
        checkpoint_dir: where checkpoints are written (None: memory only).
        max_restarts: dead-worker recoveries allowed before the error is raised.
    """

    def __init__(self, env_kwargs: dict[str, Any], policy: str = "popular", policy_kwargs: dict[str, Any] | None = None,
                 num_workers: int = 1, seed: int = 0, backend: str = "ray", threads_per_worker: int = 1, cpus_per_worker: float = 1.0,
                 checkpoint_every: int = 0, checkpoint_dir: str | Path | None = None, max_restarts: int = 3) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: use one of {BACKENDS}.")
        if checkpoint_every < 0 or max_restarts < 0 or cpus_per_worker <= 0:
            raise ValueError("checkpoint_every and max_restarts must be >= 0, cpus_per_worker > 0.")
        self.env_kwargs = dict(env_kwargs)
        self.num_users = int(self.env_kwargs.setdefault("num_users", 1000))
        self.ranges = shard_ranges(self.num_users, num_workers)
        self.policy, self.policy_kwargs = policy, dict(policy_kwargs or {})
        self.seed, self.backend, self.threads, self.cpus = seed, backend, threads_per_worker, cpus_per_worker
        self.checkpoint_every, self.max_restarts = checkpoint_every, max_restarts
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.workers: list[Any] = []
        from simenv.config import split_kwargs

        world_config, _ = split_kwargs({k: v for k, v in self.env_kwargs.items()})
        self._interval = world_config.dynamics.social_interval
        self._social = world_config.dynamics.social or world_config.dynamics.spillover

    # workers -------------------------------------------------------------------------------------
    def _start(self) -> None:
        args = [(self.env_kwargs, r, self.policy, self.policy_kwargs, self.seed, self.threads) for r in self.ranges]
        if self.backend == "local":
            self.workers = [Shard(*a) for a in args]
        else:
            import ray

            if not ray.is_initialized():
                ray.init(include_dashboard=False, log_to_driver=False)
            have = ray.cluster_resources().get("CPU", 0.0)
            if self.cpus * len(args) > have:
                raise ValueError(f"num_workers={len(args)} x cpus_per_worker={self.cpus:g} needs "
                                 f"{self.cpus * len(args):g} CPUs; the Ray cluster has {have:g}. Use fewer "
                                 "workers or a fractional cpus_per_worker.")
            remote = ray.remote(Shard).options(num_cpus=self.cpus, max_restarts=0)
            self.workers = [remote.remote(*a) for a in args]
        self._call("reset", self.seed)

    def _call(self, method: str, *args: Any, each: list[tuple] | None = None) -> list[Any]:
        """``method`` on every worker (with ``args``, or ``each[i]`` for worker i), results in worker order."""
        calls = each if each is not None else [args] * len(self.workers)
        if self.backend == "local":
            return [getattr(w, method)(*a) for w, a in zip(self.workers, calls)]
        import ray

        return ray.get([getattr(w, method).remote(*a) for w, a in zip(self.workers, calls)])

    def close(self) -> None:
        if self.backend == "ray" and self.workers:
            import ray

            for w in self.workers:
                ray.kill(w)
        self.workers = []

    def _run_chunk(self, n: int, exchange: bool, record: bool = False) -> list[ChunkStats]:
        """``n`` steps on every shard, then (``exchange``) the social refresh of the sharded world:
        every shard gets every user's taste and latest item.

        On Ray the whole chunk is submitted at once and the driver waits once: each actor's
        ``social_inputs`` follow its ``run`` and stay in the object store as two results, and their
        references go to every actor's ``social_refresh_from``, so the actors read one another's
        arrays in place and the driver never gathers, concatenates or re-sends them."""
        if self.backend == "local":
            parts = self._call("run", n, record)
            if exchange:
                inputs = self._call("social_inputs")
                self._call("social_refresh", np.concatenate([x[0] for x in inputs]),
                           np.concatenate([x[1] for x in inputs]))
            return parts
        import ray

        parts = [w.run.remote(n, record) for w in self.workers]
        refreshed = []
        if exchange:
            inputs = [w.social_inputs.options(num_returns=2).remote() for w in self.workers]
            pieces = [r[0] for r in inputs] + [r[1] for r in inputs]
            refreshed = [w.social_refresh_from.remote(*pieces) for w in self.workers]
        done = ray.get(parts + refreshed)
        return done[:len(parts)]

    # stepping in rounds (an online study: serve, learn, swap the policy, serve on) ---------------
    def open(self, states: list[dict[str, Any]] | dict[str, Any] | None = None) -> None:
        """Start the workers at the episode's start, or at ``states``: ``states()`` of a rollout with the
        same shards (policy state included), or a whole-world ``merge_states`` (any shard layout; the
        policy starts fresh)."""
        self._start()
        if isinstance(states, dict):
            states = split_state(states, self.ranges)
        if states is not None:
            if len(states) != len(self.workers):
                raise ValueError(f"{len(states)} shard states for {len(self.workers)} workers: resume with the same "
                                 "num_workers, or open from merge_states(...).")
            self._call("load_state", each=[(s,) for s in states])
        self._clock = int(states[0]["clock"]) if states is not None else 0

    def advance(self, steps: int, record: bool = False) -> tuple[ChunkStats, dict[str, np.ndarray]]:
        """``steps`` more steps of every user from where the last call stopped (chunks end at social
        refresh ticks, which exchange across shards as in ``run``). Returns the world's statistics and,
        with ``record``, every served decision in user order within each step (``Shard.take_decisions``)."""
        parts = []
        t, end = self._clock, self._clock + steps
        while t < end:
            n = self._chunk(t, end)
            exchange = self._social and (t + n) % self._interval == 0
            parts.append(ChunkStats.combine(self._run_chunk(n, exchange, record)))
            t += n
        self._clock = end
        decisions: dict[str, np.ndarray] = {}
        if record:  # step order; within a step, the shards' users in user order
            shards = self._call("take_decisions")
            clock = np.concatenate([d["clock"] for d in shards])
            order = np.argsort(clock, kind="stable")
            decisions = {k: np.concatenate([d[k] for d in shards])[order] for k in shards[0]}
        stats = ChunkStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in ChunkStats.FIELDS),
                           sum(p.exposure for p in parts), sum(p.consumed for p in parts))
        return stats, decisions

    def set_policy(self, policy: str, policy_kwargs: dict[str, Any] | None = None) -> None:
        """Every worker serves from now on with a new replica of ``policy`` (its state starts fresh)."""
        self.policy, self.policy_kwargs = policy, dict(policy_kwargs or {})
        self._call("set_policy", policy, self.policy_kwargs)

    def policy_states(self) -> list[dict[str, Any]]:
        """Every replica's ``state_dict()`` (e.g. an LLM policy's generation counts), in shard order."""
        return self._call("policy_state")

    def states(self) -> list[dict[str, Any]]:
        """Every shard's ``state()``: what ``open(states)`` continues from exactly."""
        return self._call("state")

    def rows(self) -> dict[str, np.ndarray]:
        """Every user's state arrays, in user order."""
        parts = self._call("rows")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    # checkpoints ---------------------------------------------------------------------------------
    def _save(self, ckpt: _Checkpoint) -> None:
        if self.checkpoint_dir is None:
            return
        final = self.checkpoint_dir / f"step_{ckpt.t:06d}"
        tmp = self.checkpoint_dir / f".tmp_step_{ckpt.t:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, state in enumerate(ckpt.states):
            (tmp / f"shard_{i}.pkl").write_bytes(pickle.dumps(state))
        (tmp / "stats.pkl").write_bytes(pickle.dumps(ckpt.stats))
        (tmp / "meta.json").write_text(json.dumps({"t": ckpt.t, "ranges": self.ranges, "seed": self.seed,
                                                   "policy": self.policy}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def latest_checkpoint(self) -> _Checkpoint | None:
        """The last complete checkpoint on disk, or None; one from another layout or seed is an error."""
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return None
        done = sorted(p for p in self.checkpoint_dir.glob("step_*") if (p / "meta.json").exists())
        if not done:
            return None
        meta = json.loads((done[-1] / "meta.json").read_text())
        if [tuple(r) for r in meta["ranges"]] != self.ranges or meta["seed"] != self.seed:
            raise ValueError(f"{done[-1]}: checkpoint of shards {meta['ranges']} and seed {meta['seed']}; this run "
                             f"has shards {self.ranges} and seed {self.seed}: resume with the same num_workers.")
        states = [pickle.loads((done[-1] / f"shard_{i}.pkl").read_bytes()) for i in range(len(self.ranges))]
        return _Checkpoint(meta["t"], states, pickle.loads((done[-1] / "stats.pkl").read_bytes()))

    # the run -------------------------------------------------------------------------------------
    def run(self, steps: int, resume: bool = False, on_chunk: Callable[[int, "ShardedRollout"], None] | None = None,
            final_rows: bool = False) -> RolloutResult:
        """``steps`` steps of every user. ``on_chunk(t, self)`` is called after each chunk (progress,
        or a test killing a worker); ``resume`` continues from the last checkpoint on disk;
        ``final_rows`` returns the final state of every user (``Population.arrays()`` and ``spill``)."""
        if steps < 1:
            raise ValueError(f"steps={steps}: must be >= 1.")
        start = time.perf_counter()
        restarts = 0
        self._start()
        ckpt = self.latest_checkpoint() if resume else None
        if ckpt is not None:
            self._call("load_state", each=[(s,) for s in ckpt.states])
            log.info("resumed at step %d from %s", ckpt.t, self.checkpoint_dir)
        else:
            ckpt = _Checkpoint(0, self._call("state"))
        t, stats = ckpt.t, list(ckpt.stats)
        while t < steps:
            n = self._chunk(t, steps)
            try:
                parts = self._run_chunk(n, exchange=self._social and (t + n) % self._interval == 0)
            except Exception as err:  # a dead actor: start over from the last checkpoint
                if not _is_dead_worker(err) or restarts >= self.max_restarts:
                    raise
                restarts += 1
                log.warning("a worker died at step %d (%s); restarting all workers from step %d (restart %d/%d)",
                            t, type(err).__name__, ckpt.t, restarts, self.max_restarts)
                self.close()
                self._start()
                self._call("load_state", each=[(s,) for s in ckpt.states])
                t, stats = ckpt.t, list(ckpt.stats)
                continue
            stats.append(ChunkStats.combine(parts))
            t += n
            if self.checkpoint_every and t % self.checkpoint_every == 0 and t < steps:
                ckpt = _Checkpoint(t, self._call("state"), list(stats))
                self._save(ckpt)
            if on_chunk is not None:
                on_chunk(t, self)
        rows = None
        if final_rows:
            parts = self._call("rows")
            rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self.close()
        steps_arr = {f: np.concatenate([getattr(s, f) for s in stats]) for f in ChunkStats.FIELDS}
        return RolloutResult(steps_arr, sum(s.exposure for s in stats), sum(s.consumed for s in stats),
                             self.num_users, restarts, time.perf_counter() - start, rows)

    def _chunk(self, t: int, steps: int) -> int:
        """Steps until the next refresh tick, checkpoint or the end, whichever comes first."""
        n = steps - t
        if self._social:
            n = min(n, self._interval - t % self._interval)
        if self.checkpoint_every:
            n = min(n, self.checkpoint_every - t % self.checkpoint_every)
        return n


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One whole-world state from every shard's ``Shard.state()`` in shard order (the policy replicas'
    states are left out: they belong to one layout), for ``ShardedRollout.open`` with any shards."""
    return {"rows": {k: np.concatenate([s["rows"][k] for s in states]) for k in states[0]["rows"]},
            "clock": states[0]["clock"], "key": states[0]["key"],
            "slots": {k: np.concatenate([s["slots"][k] for s in states]) for k in states[0]["slots"]}}


def split_state(state: dict[str, Any], ranges: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """``merge_states``'s inverse for the shards ``ranges`` (users lo..hi-1 each)."""
    return [{"rows": {k: v[lo:hi] for k, v in state["rows"].items()}, "clock": state["clock"], "key": state["key"],
             "slots": {k: v[lo:hi] for k, v in state["slots"].items()}} for lo, hi in ranges]


def _is_dead_worker(err: Exception) -> bool:
    try:
        from ray.exceptions import RayActorError
    except ImportError:
        return False
    return isinstance(err, RayActorError)
