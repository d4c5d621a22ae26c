"""The world: catalog, population, social graph and clock, all arrays, advanced in batches.

``World`` owns the state; ``World.apply`` and ``World.tick`` run the pure kernels of
``simenv.dynamics`` on it. One seed fans out (``numpy.random.SeedSequence.spawn``) into
independent streams for the dataset, the social graph and the dynamics key, so changing how one
component draws never shifts another.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from agents.base import Responses
from simenv import dynamics as dyn
from simenv.catalog import Catalog
from simenv.config import WorldConfig
from simenv.datasets import WorldData
from simenv.dynamics import DynamicsConfig
from simenv.persona import Persona
from simenv.population import Population
from simenv.rng import uniforms, world_key
from simenv.scenarios import apply_shift, trend_direction
from simenv.social import SocialGraph

_FORMAT = 1


@dataclass
class World:
    """All state of a simulation. Mutated in place by ``apply``, ``start_sessions`` and ``tick``.

    Attributes:
        spill: (U, S) int32 latest item consumed by up to S neighbors of each user (-1 = none).
        key: 64-bit key of the counter-based random streams.
        clock: world ticks so far (one tick per environment step).
        defer_social: when True, ``tick`` only advances the clock: a sharded run (``simenv.shard``)
            gathers every shard's ``social_inputs`` and refreshes each shard's rows itself.
    """

    catalog: Catalog
    population: Population
    social: SocialGraph
    dynamics: DynamicsConfig
    key: np.uint64
    spill: np.ndarray
    clock: int = 0
    defer_social: bool = False

    def __post_init__(self) -> None:
        if self.social.num_users != self.population.num_users:
            raise ValueError(
                f"social graph has {self.social.num_users} users, the population {self.population.num_users}."
            )
        if self.catalog.dim != self.population.interests.shape[2]:
            raise ValueError(
                f"catalog embeddings have dim {self.catalog.dim}, interests {self.population.interests.shape[2]}."
            )
        for shift in self.dynamics.shifts:  # an unknown genre is an error now, not at the shift's tick
            trend_direction(self.catalog, shift.genre)
        self._scratch: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return self.population.num_users

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    def apply(self, users: np.ndarray, slates: np.ndarray, responses: Responses, active: np.ndarray) -> np.ndarray:
        """Apply the dynamics to the served users; returns (B,) bool: who left (patience exhausted)."""
        p, c = self.population, self.catalog
        d = self.dynamics
        left = np.empty(len(users), bool)
        dyn.apply_responses(
            users, active, slates, np.asarray(responses.choice, np.int32), np.asarray(responses.rating, np.float32),
            c.embeddings, p.interests, p.weights, p.satiation, p.boredom, p.budget,
            p.memory_items, p.memory_ratings, p.memory_pos, p.steps,
            d.drift, np.float32(d.drift_rate), np.float32(d.dislike_rate), np.float32(d.weight_rate),
            np.float32(d.min_weight), d.satiation, np.float32(d.satiation_gain), np.float32(d.satiation_recovery),
            d.boredom, np.float32(d.boredom_decay), np.float32(d.boredom_cost), d.leave,
            np.float32(d.satisfaction_gain), left,
        )
        return left

    def start_sessions(self, users: np.ndarray, mask: np.ndarray) -> None:
        p, d = self.population, self.dynamics
        dyn.start_sessions(users, mask, self.key, np.float32(d.budget_min), np.float32(d.budget_max),
                           np.float32(d.return_recovery), p.sessions, p.budget, p.satiation, p.boredom)

    def tick(self) -> None:
        """Advance the world clock; run the interest shifts scheduled for this tick, then, every
        ``social_interval`` ticks, the social refresh (which so already sees the shifted tastes)."""
        self.clock += 1
        for shift in self.dynamics.shifts:
            if shift.at == self.clock:
                apply_shift(self, shift)
        if self.social_due() and not self.defer_social:
            if self._scratch is None:
                self._scratch = np.empty((self.num_users, self.catalog.dim), np.float32)
            dyn.social_refresh(self.population, self.social, self.dynamics, self.spill, self._scratch)

    def social_due(self) -> bool:
        """Whether the tick just taken is a social-refresh tick."""
        d = self.dynamics
        return self.clock % d.social_interval == 0 and (d.social or d.spillover)

    def uniforms(self, users: np.ndarray, n: int, stream: int = 0) -> np.ndarray:
        """(B, n) reproducible uniforms for custom user models, keyed by each user's interaction count."""
        return uniforms(self.key, users, self.population.steps[users], n, stream)

    def copy(self) -> "World":
        return dataclasses.replace(self, population=self.population.copy(), spill=self.spill.copy())

    # persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the whole world to a folder (``world.npz`` + ``world.json``); ``World.load`` resumes it exactly."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        c, p = self.catalog, self.population
        arrays = {f"pop.{k}": v for k, v in p.arrays().items()}
        arrays.update({f"cat.{f.name}": getattr(c, f.name) for f in dataclasses.fields(c) if f.name != "genre_names"})
        arrays["cat.titles"] = np.asarray(c.titles, dtype=str)
        arrays.update({"persona.age": p.persona.age, "persona.gender": p.persona.gender,
                       "persona.occupation": p.persona.occupation,
                       "social.indptr": self.social.indptr, "social.indices": self.social.indices,
                       "social.weights": self.social.weights, "spill": self.spill})
        np.savez(path / "world.npz", **arrays)
        meta = {
            "format": _FORMAT, "clock": self.clock, "key": int(self.key),
            "genre_names": list(c.genre_names), "gender_names": list(p.persona.gender_names),
            "occupation_names": list(p.persona.occupation_names), "dynamics": dataclasses.asdict(self.dynamics),
        }
        (path / "world.json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "World":
        path = Path(path)
        if not (path / "world.npz").exists() or not (path / "world.json").exists():
            raise FileNotFoundError(f"{path}: no saved world here (expected world.npz and world.json from World.save).")
        meta = json.loads((path / "world.json").read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: world format {meta.get('format')}, this version reads {_FORMAT}.")
        with np.load(path / "world.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        persona = Persona(a["persona.age"], a["persona.gender"], a["persona.occupation"],
                          tuple(meta["gender_names"]), tuple(meta["occupation_names"]))
        catalog = Catalog(**{k[4:]: v for k, v in a.items() if k.startswith("cat.")},
                          genre_names=tuple(meta["genre_names"]))
        catalog = dataclasses.replace(catalog, titles=catalog.titles.astype(object))
        population = Population(**{k[4:]: v for k, v in a.items() if k.startswith("pop.")}, persona=persona)
        social = SocialGraph(a["social.indptr"], a["social.indices"], a["social.weights"])
        return cls(catalog, population, social, DynamicsConfig(**meta["dynamics"]), np.uint64(meta["key"]),
                   a["spill"], meta["clock"])


def build_world(config: WorldConfig, seed: int | None = None) -> World:
    """Make a world at time zero; the same (config, seed) always gives the same world.

    ``seed`` defaults to ``config.world_seed``.
    """
    from simenv.datasets.movielens import load_movielens
    from simenv.datasets.synthetic import synthetic_world
    from simenv.graph_builders import build_social_graph

    ss_data, ss_graph, ss_key = np.random.SeedSequence(config.world_seed if seed is None else seed).spawn(3)
    if isinstance(config.dataset, WorldData):
        data = config.dataset
    elif config.dataset == "movielens":
        data = load_movielens(config.dataset_path, num_interests=config.num_interests, dim=config.embedding_dim,
                              seed=ss_data, embedding_model=config.embedding_model, cache_dir=config.cache_dir)
    else:
        data = synthetic_world(config.num_users, config.num_items, num_interests=config.num_interests,
                               dim=config.embedding_dim, seed=ss_data, embedding_model=config.embedding_model,
                               cache_dir=config.cache_dir)
    num_users = data.persona.num_users
    if isinstance(config.social_graph, SocialGraph):
        social = config.social_graph
        if social.num_users != num_users:
            raise ValueError(
                f"social_graph: a SocialGraph of {social.num_users} users for a world of {num_users} users; "
                "build it for the same number of users."
            )
    elif isinstance(config.social_graph, nx.Graph):
        social = SocialGraph.from_networkx(config.social_graph, num_users)
    else:
        social = build_social_graph(config.social_graph, num_users=num_users, persona=data.persona,
                                    interests=data.interests, mean_degree=config.mean_degree,
                                    homophily=config.homophily, rng=np.random.default_rng(ss_graph))
    population = Population.initial(data.interests, data.weights, data.persona, config.memory_size)
    spill = np.full((num_users, config.spill_size), -1, np.int32)
    return World(data.catalog, population, social, config.dynamics, world_key(ss_key), spill)
