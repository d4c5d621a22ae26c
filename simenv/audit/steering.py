"""Steering target users through their social neighbors, measured on the simulator's true state.

The experiment after NIRec (arXiv 2409.08934), made temporal: for ``steps`` steps every user is served
by a base recommender (the oracle by default). The target item i* is kept among the candidates of the
targets and of their candidate neighbors in every run (``Simulation.pin``), so all runs differ only in
who is *made* to see it at the top of their slate:

- ``reference``: nobody (the base recommender shows i* only where it ranks it in its top k);
- ``direct``: the targets, and no neighbor (direct exposure to the target);
- ``greedy`` at each λ: the targets and the neighbors ``policies.steering.greedy_exposure`` picks;
- ``random`` at each λ: the targets and as many neighbors as greedy picked, chosen at random.

Every run restarts from the same world and seed, so the users' random draws are common random numbers
and differences are paired. Measures, each against the reference run:

- IoIP: mean over targets of (Ā_u - Ā_u^ref) / Ā_u^ref, Ā_u the target's acceptance probability of i*
  (the chance they take it when it is shown alone, from their true state, social proof included)
  averaged over the steps;
- damage to neighbors (DtNE): expected clicks the exposed neighbors lost, summed over neighbors and
  steps: sum P(click | base slate) - P(click | slate with i* on top), both exact from the user model
  in the state of that step (NIRec measures it with the base model's predicted scores instead);
- interest shift: change of cos(taste_u, e_i*) of the targets at the end, beyond the reference run;
- time to acceptance: first step a target took i*, and the share of targets that never did;
- neighbor collateral drift: how far the neighbors' tastes ended from the reference run's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from policies import make_policy
from policies.steering import greedy_exposure
from simenv.audit.homogenization import tastes


@dataclass(frozen=True)
class SteeringConfig:
    """One steering experiment: which item, which targets, how long, which λ values."""

    item: int
    targets: tuple[int, ...]
    steps: int = 20
    lambdas: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    seed: int = 0
    base_policy: str = "oracle"

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(int(t) for t in self.targets))
        object.__setattr__(self, "lambdas", tuple(float(x) for x in self.lambdas))
        if not self.targets:
            raise ValueError("steering: no target users given.")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("steering: target users repeat.")
        if self.steps < 1 or any(not x >= 0 for x in self.lambdas):
            raise ValueError("steering: steps must be >= 1 and every λ >= 0.")


def acceptance(world, model, users: np.ndarray, item: int) -> np.ndarray:
    """(B,) probability each user takes ``item`` when it is shown alone, in their current state."""
    users = np.asarray(users, np.int64)
    return model.choice_probabilities(world, users, np.full((len(users), 1), item, np.int32))[:, 0]


def feeders(world, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, neighbor) pairs: the neighbors whose latest item enters each user's social proof, i.e. the
    first S neighbors in graph order (``dynamics._spill`` skips those who have consumed nothing yet).
    ``row`` indexes ``users``."""
    g, s = world.social, world.spill.shape[1]
    users = np.asarray(users, np.int64)
    deg = np.minimum(g.indptr[users + 1] - g.indptr[users], s)
    rows = np.repeat(np.arange(len(users)), deg)
    first = np.repeat(g.indptr[users] - (np.cumsum(deg) - deg), deg)  # flat pair e sits at CSR first[e] + e
    return rows, g.indices[first + np.arange(deg.sum())].astype(np.int64)


def select_targets(world, model, item: int, num_targets: int, max_acceptance: float | None = None) -> np.ndarray:
    """Targets à la NIRec: users who are unlikely to take ``item`` but have neighbors who like it.

    Eligible: own acceptance below ``max_acceptance`` (default: the population median) and at least one
    feeder whose acceptance is in the top quartile. The ``num_targets`` eligible users with the most such
    fans are returned (ties by id).
    """
    world.catalog.check_item(item)
    everyone = np.arange(world.num_users)
    acc = acceptance(world, model, everyone, item)
    limit = float(np.median(acc)) if max_acceptance is None else max_acceptance
    fan = acc >= np.quantile(acc, 0.75)
    rows, nbrs = feeders(world, everyone)
    fans = np.bincount(rows, weights=fan[nbrs], minlength=world.num_users)
    eligible = np.flatnonzero((acc < limit) & (fans > 0))
    if len(eligible) == 0:
        raise ValueError(
            f"no user qualifies as a steering target for item {item}: none has acceptance below {limit:.3g} "
            "and a neighbor in the top quartile of acceptance; pick another item or pass targets explicitly."
        )
    order = np.lexsort((eligible, -fans[eligible]))
    return eligible[order[:num_targets]]


def _steer(positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Slates of ``rows`` with candidate 0 (the pinned item) on top and the base ranking after it."""
    out = positions.copy()
    sub = positions[rows]
    order = np.argsort(sub == 0, axis=1, kind="stable")  # a 0 already in the slate moves to the end
    rest = np.take_along_axis(sub, order, axis=1)[:, :-1]
    out[rows] = np.concatenate([np.zeros((len(rows), 1), sub.dtype), rest], axis=1)
    return out


class SteeringExperiment:
    """Runs the plan and the rollouts of a ``SteeringConfig`` in a vector env (see the module docstring).

    The env must serve every user every step (``num_envs == num_users``), since targets and neighbors
    are steered at once.
    """

    def __init__(self, env, config: SteeringConfig) -> None:
        self.env = env
        self.base_env = env.unwrapped if hasattr(env, "unwrapped") else env
        sim = self.base_env.sim
        self.config = config
        world = sim.world
        world.catalog.check_item(config.item)
        if self.base_env.num_envs != world.num_users:
            raise ValueError(
                f"steering needs every user served every step: num_envs={self.base_env.num_envs} but the world has "
                f"{world.num_users} users; make the env with num_envs=num_users."
            )
        bad = [t for t in config.targets if not 0 <= t < world.num_users]
        if bad:
            raise ValueError(f"target users {bad[:5]} are outside the population 0..{world.num_users - 1}.")
        self.model = sim.user_model
        if not hasattr(self.model, "choice_probabilities"):
            raise TypeError(f"steering measures acceptance with choice_probabilities; {type(self.model).__name__} "
                            "has none (use the embedded user model).")
        self.targets = np.asarray(config.targets, np.int64)
        rows, nbrs = feeders(world, self.targets)
        outside = ~np.isin(nbrs, self.targets)
        cand = np.unique(nbrs[outside])
        if len(cand) == 0:
            raise ValueError("the targets have no neighbors outside the target group: nothing to steer through.")
        self.candidates = cand
        self.feeds = np.zeros((len(cand), len(self.targets)), bool)  # (V, T)
        self.feeds[np.searchsorted(cand, nbrs[outside]), rows[outside]] = True
        sim.pin(config.item, np.concatenate([self.targets, cand]))

    # one run -------------------------------------------------------------------------------------
    def _reset(self):
        obs, _ = self.env.reset(seed=self.config.seed)
        policy = make_policy(self.config.base_policy, seed=self.config.seed)
        policy.setup(self.env)
        return obs, policy

    def plan_inputs(self) -> dict[str, np.ndarray]:
        """The planner's inputs from the true state at time zero (the model of NIRec's "oracle" variant)."""
        obs, policy = self._reset()
        sim, world, item = self.base_env.sim, self.base_env.sim.world, self.config.item
        base = policy.act(obs)
        steered = _steer(base, self.candidates)
        cand = sim.candidates
        p_base = self.model.choice_probabilities(world, self.candidates, np.take_along_axis(
            cand[self.candidates], base[self.candidates], axis=1))
        p_steer = self.model.choice_probabilities(world, self.candidates, np.take_along_axis(
            cand[self.candidates], steered[self.candidates], axis=1))
        p0 = acceptance(world, self.model, self.targets, item).astype(np.float64)
        bonus = float(getattr(self.model.config, "spillover_bonus", 0.0))
        p1 = 1.0 / (1.0 + (1.0 - p0) / np.maximum(p0, 1e-12) * np.exp(-bonus))  # logit(p0) + bonus
        return {"feeds": self.feeds, "p0": p0, "p1": p1, "q": p_steer[:, 0].astype(np.float64),
                "cost": (p_base.sum(axis=1) - p_steer.sum(axis=1)).astype(np.float64), "candidates": self.candidates,
                # gains in IoIP units: the planner optimises the measure it is judged by
                "target_weights": 1.0 / (len(p0) * np.maximum(p0, 1e-12))}

    def rollout(self, forced: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``steps`` steps with i* on top of the slates of the ``forced`` users; record the measures."""
        obs, policy = self._reset()
        sim, item, targets = self.base_env.sim, self.config.item, self.targets
        forced = np.asarray(forced, np.int64)
        exposed = np.setdiff1d(forced, targets)
        steps = self.config.steps
        accept = np.zeros((steps, len(targets)))
        took = np.zeros((steps, len(targets)), bool)
        damage = np.zeros(steps)
        for t in range(steps):
            world = sim.world
            accept[t] = acceptance(world, self.model, targets, item)
            base = policy.act(obs)
            live = ~sim.needs_reset  # autoresetting slots ignore their action
            positions = _steer(base, forced[live[forced]])
            rows = exposed[live[exposed]]
            if len(rows):
                items_base = np.take_along_axis(sim.candidates[rows], base[rows], axis=1)
                items_steer = np.take_along_axis(sim.candidates[rows], positions[rows], axis=1)
                damage[t] = float(self.model.choice_probabilities(world, rows, items_base).sum()
                                  - self.model.choice_probabilities(world, rows, items_steer).sum())
            obs, reward, term, trunc, info = self.env.step(positions)
            policy.update(obs, positions, reward, info)
            took[t] = (info["item"][targets] == item) & info["_item"][targets]
        p = sim.world.population
        users = np.concatenate([targets, self.candidates])
        return {"acceptance": accept, "took": took, "damage": damage,
                "tastes": tastes(p.interests[users], p.weights[users])}

    # the experiment ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Reference, direct, and greedy vs random at every λ; returns a JSON-ready result."""
        cfg, world = self.config, self.base_env.sim.world
        inputs = self.plan_inputs()
        ref = self.rollout(np.zeros(0, np.int64))
        e = world.catalog.embeddings[cfg.item].astype(np.float64)
        e = e / np.linalg.norm(e)
        out: dict[str, Any] = {
            "config": asdict(cfg), "item_title": str(world.catalog.titles[cfg.item]),
            "candidate_neighbors": int(len(self.candidates)),
            "reference": self._measures(ref, ref, e, 0),
            "direct": self._measures(self.rollout(self.targets), ref, e, 0),
            "sweep": [],
        }
        rng = np.random.default_rng([cfg.seed, 0x57EE2])
        for lam in cfg.lambdas:
            plan = greedy_exposure(**inputs, lam=lam)
            m = len(plan.neighbors)
            rand = rng.choice(self.candidates, m, replace=False)
            out["sweep"].append({
                "lambda": lam,
                "greedy": self._measures(self.rollout(np.concatenate([self.targets, plan.neighbors])), ref, e, m),
                "random": self._measures(self.rollout(np.concatenate([self.targets, rand])), ref, e, m),
                "planned_acceptance": float(plan.expected_acceptance.mean()),
            })
        return out

    def _measures(self, run: dict, ref: dict, e: np.ndarray, exposed: int) -> dict[str, Any]:
        n_t = len(self.targets)
        a, a_ref = run["acceptance"].mean(axis=0), ref["acceptance"].mean(axis=0)
        took_any = run["took"].any(axis=0)
        first = np.where(took_any, run["took"].argmax(axis=0) + 1, -1)
        cos, cos_ref = run["tastes"][:n_t] @ e, ref["tastes"][:n_t] @ e
        drift = np.linalg.norm(run["tastes"][n_t:] - ref["tastes"][n_t:], axis=1)
        return {
            "exposed_neighbors": int(exposed),
            "ioip": float(np.mean((a - a_ref) / np.maximum(a_ref, 1e-12))),
            "acceptance": float(a.mean()),
            "damage": float(run["damage"].sum()),
            "damage_per_exposed_step": float(run["damage"].sum() / (exposed * len(run["damage"]))) if exposed else 0.0,
            "interest_shift": float(np.mean(cos - cos_ref)),
            "acceptance_rate": float(took_any.mean()),
            "median_time_to_acceptance": float(np.median(first[took_any])) if took_any.any() else float("nan"),
            "never_accepted": float(1.0 - took_any.mean()),
            "neighbor_drift": float(drift.mean()),
        }
