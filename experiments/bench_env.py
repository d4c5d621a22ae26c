"""Throughput of the ``RecSim-LLM-v0`` vector env in user-steps per second, against a per-user Python loop.

What is measured: ``env.step(actions)`` of the native vector env with a fixed valid action (slate
positions 0..k-1 for every user), so no policy time is counted. With ``num_envs == num_users`` every
user of the world is served every step; a user-step is one user shown one slate. Sizes 1k, 100k and 1M
users, each with social influence on (default dynamics, ``social_graph="sbm"``) and off
(``social_graph="none"``, ``dynamics={"social": False, "spillover": False}``), with and without
candidate features in the observation. The bias audit (``simenv.audit``) is on, as by default.

The audit's overhead is a ratio of two timings taken on the same machine at the same moment, so it is
measured paired: one child process builds the same world three times (audit off; per-step measurements
only; the full audit with its snapshots), steps them in turn, one snapshot interval each, and reports
the median of the per-round ratios to the audit-off env.

The baseline is the same dynamics written the RecSim way: one Python object per user, stepped one user
at a time with per-user numpy ops (``LoopUser`` below), measured in the same run on 1k users.

Every configuration runs in a fresh subprocess (``--one JSON``), so its peak resident memory
(``ru_maxrss``) is its own, and world building and kernel loading are timed apart from the steps:
build the env, reset, warm up (at least one social refresh), then time whole refresh periods until both
``min_steps`` and ``min_seconds`` are reached.

Each child caps its address space below the memory the machine has free, so a configuration too big
for the machine is reported as out of memory instead of waking the kernel's OOM killer.

Usage:
    python experiments/bench_env.py                # full run, about 6 minutes
    python experiments/bench_env.py --repeats 3    # each configuration 3 times, fastest kept (shared machines)
    python experiments/bench_env.py --quick        # 1k and 10k users only, well under a minute
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np


def _arg(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Args:
    quick: bool = _arg(False, "smoke run: 1k and 10k users, random embeddings, short timings")
    profile: bool = _arg(True, "also time each stage of env.step at the middle size, social on")
    num_items: int = _arg(10_000, "catalog size")
    num_candidates: int = _arg(20, "C items retrieved per user and step")
    slate_size: int = _arg(10, "k positions the (fixed) policy fills")
    num_interests: int = _arg(4, "K interest vectors per user")
    embedding_dim: int = _arg(64, "d")
    embedding_model: str = _arg("minilm", "item embeddings below 1M users: minilm or random")
    embedding_model_1m: str = _arg("minilm", "item embeddings at 1M users (random: no MiniLM run on a cold cache)")
    mean_degree: float = _arg(10.0, "mean friends per user with social on, below 1M users")
    mean_degree_1m: float = _arg(20.0, "mean friends per user at 1M users (~10M undirected edges)")
    warmup_steps: int = _arg(5, "untimed steps first (loads kernels, one social refresh)")
    min_steps: int = _arg(20, "timed steps at least (rounded up to whole refresh periods)")
    min_seconds: float = _arg(3.0, "timed seconds at least per configuration")
    loop_users: int = _arg(1_000, "users of the per-user Python loop baseline")
    repeats: int = _arg(1, "runs of each configuration, round-robin; the fastest is kept (a shared machine is noisy)")
    seed: int = _arg(0, "reset seed of the dynamics")
    threads: int = _arg(0, "numba threads of the vector env (NUMBA_NUM_THREADS); 0: numba's default")
    one: str = _arg("", "internal: run one configuration (JSON) and print its result as JSON")
    overhead: str = _arg("", "internal: measure the audit overhead of one configuration (JSON)")


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    return Args(**vars(parser.parse_args()))


TARGET_UPS = 2_000_000  # user-steps/s at 100k users, social on
TARGET_RSS_GB = 8.0  # at 1M users with ~10M undirected edges


def env_kwargs(cfg: dict) -> dict:
    """Keyword arguments of ``gym.make_vec("RecSim-LLM-v0", ...)`` for one benchmark configuration."""
    kw = dict(num_users=cfg["users"], num_items=cfg["num_items"], num_candidates=cfg["num_candidates"],
              slate_size=cfg["slate_size"], num_interests=cfg["num_interests"], embedding_dim=cfg["embedding_dim"],
              embedding_model=cfg["embedding_model"], candidate_features=cfg["candidate_features"],
              audit=cfg.get("audit", True))  # run_overhead sets it; the throughput tables keep the default
    if cfg["social"]:
        kw.update(social_graph="sbm", mean_degree=cfg["mean_degree"])
    else:
        kw.update(social_graph="none", dynamics={"social": False, "spillover": False})
    return kw


# ---------------------------------------------------------------------------------------------------
# The baseline: the same dynamics as a per-user Python loop (the RecSim pattern)
# ---------------------------------------------------------------------------------------------------
class LoopUser:
    """One user as its own object with numpy state, stepped on its own (formulas as in ``simenv.dynamics``
    and ``agents.choice``; randomness from a per-user ``numpy.random.Generator``)."""

    def __init__(self, uid, interests, weights, features, neighbors, neighbor_weights, memory_size, spill_size, rng):
        self.uid = uid
        self.interests = interests.copy()  # (K, d) unit rows
        self.anchor = interests.copy()  # (K, d)
        self.weights = weights.copy()  # (K,)
        self.satiation = np.zeros(len(weights), np.float32)  # (K,)
        self.boredom = 0.0
        self.budget = 0.0
        self.memory_items = np.full(memory_size, -1, np.int32)  # (M,) ring buffer
        self.memory_pos = 0
        self.memory_ratings = np.zeros(memory_size, np.float32)
        self.features = features  # (F,)
        self.neighbors = neighbors  # (deg,) user ids
        self.neighbor_weights = neighbor_weights  # (deg,) row-normalised
        self.spill = np.full(spill_size, -1, np.int32)  # (S,)
        self.rng = rng
        self.t = 0  # steps in the current session
        self.needs_reset = False
        self.candidates = np.zeros(0, np.int64)

    def start_session(self, dyn) -> None:
        self.budget = self.rng.uniform(dyn.budget_min, dyn.budget_max)
        self.satiation *= dyn.return_recovery
        self.boredom = 0.0
        self.t = 0

    def retrieve(self, num_items: int, num_candidates: int) -> None:
        self.candidates = self.rng.choice(num_items, num_candidates, replace=False)

    def choose(self, slate, cat, ch) -> tuple[int, float]:
        """Multinomial logit over the slate plus a no-click option (``agents.choice``)."""
        k = len(slate)
        e = cat.embeddings[slate]  # (k, d)
        log_w = np.log(np.maximum(self.weights * len(self.weights), 1e-6))
        aff = (e @ self.interests.T + ch.interest_weight * log_w - ch.satiation_penalty * self.satiation).max(axis=1)
        v = (aff / ch.temperature + ch.quality_weight * (cat.quality[slate] - 0.5)
             - ch.position_decay * np.log1p(np.arange(k)) + ch.spillover_bonus * np.isin(slate, self.spill))
        logits = np.clip(np.concatenate(([ch.no_click + ch.boredom_weight * self.boredom], v)), -30.0, 30.0)
        p = np.exp(logits - logits.max())
        c = int(self.rng.choice(k + 1, p=p / p.sum())) - 1
        if c < 0:
            return -1, 0.0
        z = (aff[c] - ch.rating_center) / ch.rating_scale + ch.rating_quality * (cat.quality[slate[c]] - 0.5)
        eps = (self.rng.random() + self.rng.random() - 1.0) * 2.449489742783178  # unit variance
        r = 1.0 + 4.0 / (1.0 + np.exp(-z)) + ch.rating_noise * eps
        return c, float(min(max(round(r), 1.0), 5.0))

    def update(self, slate, c: int, rating: float, emb, dyn) -> bool:
        """Satiation, boredom, drift, weights, memory and patience (``simenv.dynamics.apply_responses``);
        returns whether the user left."""
        self.satiation *= dyn.satiation_recovery
        rep = np.isin(slate, self.memory_items).sum()
        self.boredom = dyn.boredom_decay * self.boredom + (1 - dyn.boredom_decay) * rep / len(slate)
        g = 0.0
        if c >= 0:
            item = slate[c]
            e = emb[item]
            g = (rating - 3.0) * 0.5
            best = int(np.argmax(self.interests @ e))
            if g != 0:
                eta = dyn.drift_rate * g if g > 0 else dyn.dislike_rate * g
                x = self.interests[best] + eta * (e - self.interests[best])
                self.interests[best] = x / np.linalg.norm(x)
                if g > 0:
                    self.weights[best] += dyn.weight_rate * g
                    self.weights = np.maximum(self.weights, dyn.min_weight)
                    self.weights /= self.weights.sum()
            self.satiation[best] = min(1.0, self.satiation[best] + dyn.satiation_gain)
            slot = self.memory_pos % len(self.memory_items)
            self.memory_items[slot] = item
            self.memory_ratings[slot] = rating
            self.memory_pos += 1
        self.budget += -1.0 - dyn.boredom_cost * self.boredom + dyn.satisfaction_gain * g
        return self.budget <= 0

    def taste(self) -> np.ndarray:
        t = self.weights @ self.interests  # (d,)
        return t / max(np.linalg.norm(t), 1e-12)

    def socialize(self, tastes, gamma: float, theta: float) -> None:
        """Friedkin-Johnsen step toward the weighted mean taste of this user's neighbors."""
        g = gamma if len(self.neighbors) else 0.0
        pull = self.neighbor_weights @ tastes[self.neighbors] if len(self.neighbors) else 0.0  # (d,)
        x = (1.0 - g - theta) * self.interests + g * pull + theta * self.anchor  # (K, d)
        self.interests = x / np.linalg.norm(x, axis=1, keepdims=True)

    def observe(self, cat, pop_feature, horizon: int) -> dict:
        m = len(self.memory_items)
        hist = self.memory_items[(self.memory_pos - 1 - np.arange(m)) % m]
        hist[np.arange(m) >= self.memory_pos] = -1
        return {"user": np.append(self.features, self.t / horizon).astype(np.float32), "history": hist,
                "candidates": self.candidates,
                "candidate_features": np.concatenate([cat.embeddings[self.candidates],
                                                      pop_feature[self.candidates, None]], axis=1)}


class LoopEnv:
    """All users of a world, each a ``LoopUser``, served one after the other each step."""

    def __init__(self, world, env_config, choice_config, seed: int) -> None:
        p, s = world.population, world.social
        self.cat, self.dyn, self.env_config, self.choice = world.catalog, world.dynamics, env_config, choice_config
        scaled = np.log1p(self.cat.popularity * self.cat.num_items)
        self.pop_feature = (scaled / max(scaled.max(), 1e-12)).astype(np.float32)
        features = p.persona.features()
        rngs = np.random.default_rng(seed).spawn(p.num_users)
        self.users = [
            LoopUser(u, p.interests[u], p.weights[u], features[u], s.indices[s.indptr[u]:s.indptr[u + 1]],
                     s.weights[s.indptr[u]:s.indptr[u + 1]], p.memory_size, world.spill.shape[1], rngs[u])
            for u in range(p.num_users)
        ]
        self.clock = 0

    def reset(self) -> list[dict]:
        for u in self.users:
            u.start_session(self.dyn)
            u.retrieve(self.cat.num_items, self.env_config.num_candidates)
        return [u.observe(self.cat, self.pop_feature, self.env_config.horizon) for u in self.users]

    def step(self, positions: np.ndarray) -> tuple[list[dict], list[float]]:
        obs, rewards = [], []
        cfg = self.env_config
        for u in self.users:
            if u.needs_reset:  # NEXT_STEP autoreset, as in the vector env
                u.start_session(self.dyn)
                u.needs_reset = False
                rewards.append(0.0)
            else:
                slate = u.candidates[positions]
                c, r = u.choose(slate, self.cat, self.choice)
                left = u.update(slate, c, r, self.cat.embeddings, self.dyn)
                u.t += 1
                u.needs_reset = left or u.t >= cfg.horizon
                rewards.append(float(c >= 0))
            u.retrieve(self.cat.num_items, cfg.num_candidates)
            obs.append(u.observe(self.cat, self.pop_feature, cfg.horizon))
        self.clock += 1
        if self.clock % self.dyn.social_interval == 0:
            self._social_refresh()
        return obs, rewards

    def _social_refresh(self) -> None:
        d = self.dyn
        if d.social:
            tastes = np.stack([u.taste() for u in self.users])  # (U, d)
            for u in self.users:
                u.socialize(tastes, d.social_rate, d.stubbornness)
        if d.spillover:
            for u in self.users:
                latest = [self.users[v].memory_items[(self.users[v].memory_pos - 1) % len(u.memory_items)]
                          for v in u.neighbors if self.users[v].memory_pos > 0][: len(u.spill)]
                u.spill[:] = -1
                u.spill[: len(latest)] = latest


# ---------------------------------------------------------------------------------------------------
# One configuration, in its own process
# ---------------------------------------------------------------------------------------------------
def _rss_now_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _time_steps(step, cfg: dict, period: int) -> dict:
    """Step whole refresh periods until ``min_steps`` and ``min_seconds`` are both reached.

    Each window is one refresh period (``social_interval`` steps, so every window holds one refresh).
    The median window is robust to other processes taking the cores now and then; ``cpu_share``, this
    process's CPU time over (wall time x threads), well below 1 says that they did.
    """
    windows, t0, c0 = [], time.perf_counter(), _cpu_seconds()
    while True:
        w0 = time.perf_counter()
        for _ in range(period):
            step()
        windows.append(time.perf_counter() - w0)
        elapsed = time.perf_counter() - t0
        if period * len(windows) >= cfg["min_steps"] and elapsed >= cfg["min_seconds"]:
            return {"steps": period * len(windows), "seconds": elapsed, "cpu_seconds": _cpu_seconds() - c0,
                    "median_window_s": float(np.median(windows)), "best_window_s": min(windows), "period": period}


class _StageTimer:
    """Exclusive wall time per named stage: a wrapped call's time minus the wrapped calls inside it."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self._stack: list[float] = []

    def wrap(self, owner, attr: str, label: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            return  # the simulator changed shape; that stage then counts as "other"

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                inner = self._stack.pop()
                self.total[label] = self.total.get(label, 0.0) + dt - inner
                if self._stack:
                    self._stack[-1] += dt

        setattr(owner, attr, timed)


_KERNEL_MODULES = ("simenv.simulation", "simenv.dynamics", "simenv.retrieval", "agents.choice", "agents.base",
                   "simenv.audit.monitor")


def _instrument(env) -> _StageTimer:
    """Time the Python stages of ``env.step`` by name and every parallel numba kernel the simulator calls
    through a module global (found, not listed, so the profile follows the simulator as it changes)."""
    import importlib

    from numba.core.dispatcher import Dispatcher

    t, sim, world = _StageTimer(), env.sim, env.sim.world
    for owner, attr, label in [
        (env, "step", "python: VectorEnv.step + Simulation.step glue (info dict, masks)"),
        (sim, "validate", "python: validate actions (dtype, shape, int64 copy)"),
        (sim, "_respond", "python: respond (Responses.validate)"),
        (world, "apply", "python: World.apply"),
        (sim, "_reward", "python: reward"),
        (sim, "next_sessions", "python: next_sessions (autoreset)"),
        (world, "start_sessions", "python: World.start_sessions"),
        (world, "tick", "python: World.tick"),
        (sim, "_retrieve", "python: _retrieve"),
        (sim, "observe", "python: observe (allocations, copies)"),
        (sim.monitor, "before_step", "python: audit snapshot before the step"),
        (sim.monitor, "after_step", "python: audit after_step"),
        (sim.monitor, "_snapshot", "python: audit population snapshot"),
    ]:
        t.wrap(owner, attr, label)
    for name in _KERNEL_MODULES:
        module = importlib.import_module(name)
        for attr, obj in list(vars(module).items()):
            if isinstance(obj, Dispatcher) and (obj.targetoptions.get("parallel") or attr == "_expose"):
                t.wrap(module, attr, f"kernel {obj.py_func.__module__.rsplit('.', 1)[-1]}.{obj.__name__}")
            elif attr == "social_refresh" and callable(obj):
                t.wrap(module, attr, "python: social_refresh")
    return t


def run_vector(cfg: dict) -> dict:
    import gymnasium as gym
    import numba

    import simenv  # noqa: F401  (registers RecSim-LLM-v0)
    import simenv.simulation

    # the world build (catalog, users, graph) is timed inside make_vec, so that memory use is as in real use
    world_timer = _StageTimer()
    world_timer.wrap(simenv.simulation, "build_world", "world")
    t0 = time.perf_counter()
    env = gym.make_vec("RecSim-LLM-v0", num_envs=cfg["users"], vectorization_mode="vector_entry_point",
                       **env_kwargs(cfg))
    make_s = time.perf_counter() - t0
    build_s = world_timer.total.get("world", float("nan"))
    t0 = time.perf_counter()
    env.reset(seed=cfg["seed"])
    reset_s = time.perf_counter() - t0
    actions = np.tile(np.arange(cfg["slate_size"], dtype=np.int64), (cfg["users"], 1))
    for _ in range(cfg["warmup_steps"]):
        env.step(actions)
    timer = _instrument(env) if cfg.get("profile") else None
    out = _time_steps(lambda: env.step(actions), cfg, env.unwrapped.world.dynamics.social_interval)
    out.update(rss_stepping_gb=_rss_now_gb(), build_s=build_s, env_s=make_s - build_s, reset_s=reset_s,
               edges=int(env.unwrapped.world.social.num_edges // 2),
               numba_threads=numba.get_num_threads())
    if timer is not None:
        out["stages_ms"] = {k: 1e3 * v / out["steps"] for k, v in timer.total.items()}
    return out


def run_loop(cfg: dict) -> dict:
    from simenv.config import split_kwargs
    from simenv.world import build_world

    world_config, env_config = split_kwargs(env_kwargs(cfg))
    t0 = time.perf_counter()
    world = build_world(world_config)
    build_s = time.perf_counter() - t0
    env = LoopEnv(world, env_config, env_config.choice, cfg["seed"])
    t0 = time.perf_counter()
    env.reset()
    reset_s = time.perf_counter() - t0
    positions = np.arange(cfg["slate_size"])
    for _ in range(cfg["warmup_steps"]):
        env.step(positions)
    out = _time_steps(lambda: env.step(positions), cfg, world.dynamics.social_interval)
    out.update(rss_stepping_gb=_rss_now_gb(), build_s=build_s, env_s=0.0, reset_s=reset_s,
               edges=int(world.social.num_edges // 2), numba_threads=1)
    return out


def _guard_memory() -> float:
    """Cap this process's address space below the memory the machine has free, so that a configuration
    too big for it fails here with MemoryError instead of waking the kernel's OOM killer on a shared
    machine. Returns the cap in GB."""
    info = {line.split(":")[0]: int(line.split()[1]) for line in open("/proc/meminfo")}
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    cap = (vm + int(0.9 * info["MemAvailable"])) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap / 2**30


AUDIT_VARIANTS = {"off": False, "per-step": {"interval": 10**9}, "on": True}


def run_overhead(cfg: dict) -> dict:
    """Paired timing of the same env with the audit off, per-step only, and on (see the module docstring).

    The envs take turns, one snapshot interval of steps each, so a burst of load elsewhere hits all
    three alike; the ratio per round to the audit-off env is the measurement, its median the result.
    """
    import gymnasium as gym

    import simenv  # noqa: F401
    from simenv.audit.monitor import AuditConfig

    _guard_memory()
    steps = AuditConfig().interval
    envs = {}
    for name, audit in AUDIT_VARIANTS.items():
        envs[name] = gym.make_vec("RecSim-LLM-v0", num_envs=cfg["users"], vectorization_mode="vector_entry_point",
                                  **{**env_kwargs(cfg), "audit": audit})
        envs[name].reset(seed=cfg["seed"])
    actions = np.tile(np.arange(cfg["slate_size"], dtype=np.int64), (cfg["users"], 1))
    for env in envs.values():
        for _ in range(max(cfg["warmup_steps"], steps)):
            env.step(actions)
    times: dict[str, list[float]] = {name: [] for name in envs}
    t0 = time.perf_counter()
    while len(times["off"]) < 5 or time.perf_counter() - t0 < 3 * cfg["min_seconds"]:
        for name, env in envs.items():
            w0 = time.perf_counter()
            for _ in range(steps):
                env.step(actions)
            times[name].append(time.perf_counter() - w0)
    off = np.asarray(times["off"])
    out = {"rounds": len(off), "steps_per_round": steps,
           "off_user_steps_per_s": cfg["users"] * steps / float(np.median(off))}
    for name in ("per-step", "on"):
        ratio = np.asarray(times[name]) / off - 1.0
        out[name] = {"overhead": float(np.median(ratio)), "q25": float(np.percentile(ratio, 25)),
                     "q75": float(np.percentile(ratio, 75)),
                     "user_steps_per_s": cfg["users"] * steps / float(np.median(times[name]))}
    return out


def run_one(cfg: dict) -> dict:
    cap_gb = _guard_memory()
    try:
        out = run_loop(cfg) if cfg["kind"] == "loop" else run_vector(cfg)
    except MemoryError as err:
        return {"error": f"out of memory under a {cap_gb:.1f} GB address-space cap ({err})",
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    out["mean_user_steps_per_s"] = cfg["users"] * out["steps"] / out["seconds"]
    out["user_steps_per_s"] = cfg["users"] * out["period"] / out["median_window_s"]
    out["ns_per_user_step"] = 1e9 / out["user_steps_per_s"]
    out["cpu_share"] = out["cpu_seconds"] / (out["seconds"] * out["numba_threads"])
    out["best_user_steps_per_s"] = cfg["users"] * out["period"] / out["best_window_s"]
    return out


def spawn(cfg: dict, mode: str = "--one") -> dict:
    """Run one configuration in a fresh interpreter; returns its result merged into ``cfg``
    (with ``error`` set, and no figures, if it did not complete)."""
    env = dict(os.environ, **({"NUMBA_NUM_THREADS": str(cfg["threads"])} if cfg["threads"] else {}))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), mode, json.dumps(cfg)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"killed by signal {-proc.returncode}"]
        return {**cfg, "error": f"exit {proc.returncode}: {tail[0][:200]}"}
    return {**cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------
def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.overhead:
        print(json.dumps(run_overhead(json.loads(args.overhead))))
        return
    if args.quick:
        args.embedding_model = args.embedding_model_1m = "random"
        args.min_seconds, args.min_steps = 0.5, 10
    sizes = [1_000, 10_000] if args.quick else [1_000, 100_000, 1_000_000]
    mid, big = sizes[1], sizes[-1]
    base = {k: v for k, v in vars(args).items() if k not in ("quick", "profile", "one", "loop_users", "repeats")}

    def config(kind: str, users: int, social: bool, features: bool = True, profile: bool = False) -> dict:
        huge = users >= 1_000_000
        return {**base, "kind": kind, "users": users, "social": social, "candidate_features": features,
                "profile": profile, "mean_degree": args.mean_degree_1m if huge else args.mean_degree,
                "embedding_model": args.embedding_model_1m if huge else args.embedding_model}

    configs = [config("loop", args.loop_users, True)]
    for n in sizes:
        for social in (True, False):
            for features in (True, False):
                configs.append(config("vector", n, social, features))
    if args.profile:
        configs += [config("vector", mid, True, features, profile=True) for features in (False, True)]

    print(f"# recsim-llm vector env throughput ({os.cpu_count()} cores, load average at start "
          f"{os.getloadavg()[0]:.1f}, numpy {np.__version__})\n", flush=True)
    runs: list[list[dict]] = [[] for _ in configs]
    for rep in range(args.repeats):  # round-robin, so that a burst of load elsewhere hits one run of a config
        for cfg, done in zip(configs, runs):
            if done and "error" in done[-1]:
                continue  # failed (out of memory): trying again would fail again
            t0 = time.perf_counter()
            r = spawn(cfg)
            done.append(r)
            figure = r["error"] if "error" in r else f"{r['user_steps_per_s']:,.0f} user-steps/s"
            print(f"  [{rep + 1}/{args.repeats}] {r['kind']} users={r['users']:,} social={r['social']} "
                  f"features={r['candidate_features']}{' (profiled)' if r['profile'] else ''}: {figure} "
                  f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    results = []
    for done in runs:
        ok = [r for r in done if "error" not in r]
        r = dict(max(ok, key=lambda r: r["user_steps_per_s"]) if ok else done[-1])
        r["runs"] = len(done)
        r["peak_rss_gb"] = max((x["peak_rss_gb"] for x in done if "peak_rss_gb" in x), default=float("nan"))
        results.append(r)

    timed = [r for r in results if not r["profile"]]
    print("| engine | users | social | undirected edges | cand. features | embeddings | world build s | env make s "
          "| timed steps "
          "| user-steps/s (median window) | best window | mean | ns/user-step | CPU share | RSS after steps GB "
          "| peak RSS GB |")
    print("|---|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in timed:
        engine = ("per-user Python loop" if r["kind"] == "loop"
                  else "vector env" + (f" ({r['numba_threads']} threads)" if "numba_threads" in r else ""))
        edges = f"{r['edges']:,}" if "edges" in r else "-"
        head = (f"| {engine} | {r['users']:,} | {'on' if r['social'] else 'off'} | {edges} "
                f"| {'yes' if r['candidate_features'] else 'no'} | {r['embedding_model']} ")
        if "error" in r:
            peak = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "-"
            print(head + f"| - | - | - | failed: {r['error']} | - | - | - | - | - | {peak} |")
            continue
        print(head + f"| {r['build_s']:.1f} | {r['env_s']:.1f} | {r['steps']:,} | {r['user_steps_per_s']:,.0f} "
              f"| {r['best_user_steps_per_s']:,.0f} | {r['mean_user_steps_per_s']:,.0f} | {r['ns_per_user_step']:,.0f} "
              f"| {r['cpu_share']:.2f} "
              f"| {r['rss_stepping_gb']:.2f} | {r['peak_rss_gb']:.2f} |")
    print(f"\nuser-steps/s is the median over windows of one social refresh period each (best of {args.repeats} "
          f"run{'s' if args.repeats > 1 else ''}; ns/user-step is its inverse); CPU share = process CPU "
          f"time / (wall time x threads) while timing: well below 1 means other processes took the cores "
          f"(load average now {os.getloadavg()[0]:.1f}). World build: catalog (cached item embeddings), users and "
          "social graph; env make: the rest of gym.make_vec (world copy, spaces).")

    def find(kind: str, users: int, social: bool, features: bool) -> dict | None:
        return next((r for r in timed if (r["kind"], r["users"], r["social"], r["candidate_features"])
                     == (kind, users, social, features) and "error" not in r), None)

    def ups(r: dict | None) -> str:
        return f"{r['user_steps_per_s']:,.0f}" if r else "failed"

    print("\n## Against the per-user loop and the targets\n")
    loop = find("loop", args.loop_users, True, True)
    same = find("vector", args.loop_users, True, True)
    if loop and same:
        print(f"- vector / loop at {args.loop_users:,} users, social on: "
              f"**{same['user_steps_per_s'] / loop['user_steps_per_s']:,.0f}x** "
              f"({ups(same)} vs {ups(loop)} user-steps/s)")
    vectors = [r for r in timed if r["kind"] == "vector" and "error" not in r]
    if loop and vectors:
        best = max(vectors, key=lambda r: r["user_steps_per_s"])
        print(f"- best vector configuration ({best['users']:,} users, social {'on' if best['social'] else 'off'}, "
              f"features {'on' if best['candidate_features'] else 'off'}) / loop: "
              f"**{best['user_steps_per_s'] / loop['user_steps_per_s']:,.0f}x**")
    for features in (False, True):
        r = find("vector", mid, True, features)
        verdict = "met" if r and r["user_steps_per_s"] >= TARGET_UPS else "missed"
        print(f"- {mid:,} users, social on, candidate features {'on' if features else 'off'}: {ups(r)} user-steps/s "
              f"(target >= {TARGET_UPS:,}: {verdict})")
    for social in (True, False):
        for features in (True, False):
            found = [(n, find("vector", n, social, features)) for n in sizes]
            found = [(n, r["ns_per_user_step"]) for n, r in found if r]
            if len(found) < 2:
                continue
            ns = [x for _, x in found]
            print(f"- ns/user-step, social {'on' if social else 'off'}, "
                  f"candidate features {'on' if features else 'off'}: "
                  + ", ".join(f"{x:,.0f} at {n:,}" for n, x in found)
                  + f" (largest/smallest {max(ns) / min(ns):.2f}; target: flat)")
    for features in (False, True):
        r = next((r for r in timed if (r["kind"], r["users"], r["social"], r["candidate_features"])
                  == ("vector", big, True, features)), None)
        if r is None:
            continue
        if "error" in r:
            print(f"- {big:,} users, social on, candidate features {'on' if features else 'off'}: "
                  f"failed ({r['error']}) "
                  f"(target < {TARGET_RSS_GB:.0f} GB: missed)")
            continue
        verdict = "met" if r["peak_rss_gb"] < TARGET_RSS_GB else "missed"
        print(f"- {big:,} users, {r['edges']:,} undirected edges, candidate features {'on' if features else 'off'}: "
              f"peak RSS {r['peak_rss_gb']:.2f} GB, {r['rss_stepping_gb']:.2f} GB after the steps "
              f"(target < {TARGET_RSS_GB:.0f} GB: {verdict})")

    print("\n## Overhead of the bias audit (social on, candidate features off; paired, median of rounds)\n")
    print("| users | audit off: user-steps/s | per-step measurements: overhead (IQR) | full audit: user-steps/s "
          "| full audit: overhead (IQR) | rounds |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        r = spawn(config("vector", n, True, False), "--overhead")
        if "error" in r:
            print(f"| {n:,} | failed: {r['error']} | | | | |")
            continue
        per, on = r["per-step"], r["on"]
        print(f"| {n:,} | {r['off_user_steps_per_s']:,.0f} | {per['overhead']:+.1%} ({per['q25']:+.1%} to "
              f"{per['q75']:+.1%}) | {on['user_steps_per_s']:,.0f} | **{on['overhead']:+.1%}** ({on['q25']:+.1%} to "
              f"{on['q75']:+.1%}) | {r['rounds']} |", flush=True)

    profiles = {r["candidate_features"]: r for r in results if r["profile"] and "error" not in r}
    if profiles:
        tables = {}
        for features, r in profiles.items():
            stages = dict(r["stages_ms"])
            total = 1e3 * r["seconds"] / r["steps"]  # the stage timers sum over all windows: compare with the mean
            stages["timers and untimed glue"] = total - sum(stages.values())
            tables[features] = (stages, total)
        order = sorted({name for stages, _ in tables.values() for name in stages},
                       key=lambda name: -max(stages.get(name, 0.0) for stages, _ in tables.values()))
        print(f"\n## Where a step goes: {mid:,} users, social on\n")
        print("Exclusive times: a stage's time minus the timed stages inside it; the social refresh kernels run "
              "every social_interval ticks and are averaged over the steps. "
              + "; ".join(f"candidate features {'on' if f else 'off'}: {r['mean_user_steps_per_s']:,.0f} user-steps/s "
                          f"mean with timers, CPU share {r['cpu_share']:.2f}" for f, r in sorted(profiles.items()))
              + f". The 2M user-steps/s target is {1e3 * mid / TARGET_UPS:.0f} ms per step.\n")
        columns = sorted(tables)
        print("| stage | " + " | ".join(f"features {'on' if f else 'off'}: ms/step | share | ns/user-step"
                                        for f in columns) + " |")
        print("|---|" + "---:|---:|---:|" * len(columns))
        for name in order:
            cells = []
            for f in columns:
                stages, total = tables[f]
                ms = stages.get(name, 0.0)
                cells.append(f"{ms:.2f} | {ms / total:.0%} | {1e6 * ms / mid:.0f}")
            print(f"| {name} | " + " | ".join(cells) + " |")
        print("| **step (total)** | " + " | ".join(f"**{tables[f][1]:.2f}** | 100% | **{1e6 * tables[f][1] / mid:.0f}**"
                                                  for f in columns) + " |")


if __name__ == "__main__":
    main()
