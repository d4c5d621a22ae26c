"""Configuration of a world and of the environment that serves it, as validated dataclasses.

``gym.make("RecSim-LLM-v0", **kwargs)`` passes flat keyword arguments; ``split_kwargs`` routes
each to the dataclass that owns it and rejects unknown or ill-typed ones with an error naming the
key, the value and the fix.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from agents.choice import ChoiceConfig
from simenv.audit.monitor import AuditConfig
from simenv.dynamics import DynamicsConfig
from simenv.retrieval import SAMPLERS

REWARDS = ("click", "rating", "watch_time", "retention")
GRAPH_KINDS = ("sbm", "small_world", "scale_free", "knn", "none")
DATASETS = ("synthetic", "movielens")


@dataclass(frozen=True)
class WorldConfig:
    """What the world is made of."""

    num_users: int = 1000
    num_items: int = 1000
    num_interests: int = 4  # K interest vectors per user
    embedding_dim: int = 64  # d: sentence embeddings are projected to this dimension
    memory_size: int = 16  # M: ring buffer of recent items per user
    spill_size: int = 8  # S: neighbors whose latest item is remembered for exposure spillover
    dataset: Any = "synthetic"  # "synthetic", "movielens", or a simenv.datasets.WorldData
    dataset_path: str | None = None  # folder with u.data/u.item/u.user for dataset="movielens"
    embedding_model: str = "minilm"  # "minilm" (real sentence embeddings) or "random" (no semantics)
    cache_dir: str | None = None  # embedding cache; default $RECSIM_LLM_CACHE or ~/.cache/recsim-llm
    social_graph: Any = "sbm"  # a builder name, a networkx graph, or a simenv.social.SocialGraph
    mean_degree: float = 10.0
    homophily: float = 0.8  # share of a user's friends in the same persona block (sbm)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    world_seed: int = 0  # seeds the making of the world (catalog, users, graph); reset(seed) seeds the dynamics

    def __post_init__(self) -> None:
        if isinstance(self.world_seed, bool) or not isinstance(self.world_seed, int) or self.world_seed < 0:
            raise ValueError(f"world_seed={self.world_seed!r}: must be a non-negative integer.")
        for name in ("num_users", "num_items", "num_interests", "embedding_dim", "memory_size", "spill_size"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.dataset, str) and self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r}: use one of {DATASETS} or pass a WorldData object.")
        if self.dataset == "movielens" and not self.dataset_path:
            raise ValueError("dataset='movielens' needs dataset_path, the folder that holds u.data, u.item, u.user.")
        if isinstance(self.social_graph, str) and self.social_graph not in GRAPH_KINDS:
            raise ValueError(
                f"social_graph={self.social_graph!r}: use one of {GRAPH_KINDS}, a networkx graph or a SocialGraph."
            )
        if not self.mean_degree > 0:
            raise ValueError(f"mean_degree={self.mean_degree!r}: must be > 0.")
        if not 0 <= self.homophily <= 1:
            raise ValueError(f"homophily={self.homophily!r}: must be in [0, 1].")
        if isinstance(self.dynamics, dict):
            object.__setattr__(self, "dynamics", _build(DynamicsConfig, self.dynamics, "dynamics"))


@dataclass(frozen=True)
class EnvConfig:
    """How the environment serves the world: candidates, slates, reward, episode length, user model."""

    num_candidates: int = 20  # C items retrieved per served user
    slate_size: int = 5  # k positions the policy fills
    horizon: int = 50  # steps per session before truncation
    reward: str = "click"
    user_model: Any = "embedded"
    llm: Any = None  # options of user_model="llm": a dict of agents.llm.LLMUserConfig fields
    choice: ChoiceConfig = field(default_factory=ChoiceConfig)  # options of the embedded user model
    candidate_sampler: str = "uniform"
    popular_share: float = 0.5  # for candidate_sampler="mixed"
    candidate_features: bool = True  # include (C, d + 1) candidate features in observations
    info_titles: bool = False  # vector env: add shown titles to info (single env always does)
    audit: AuditConfig = field(default_factory=AuditConfig)  # bias measurements; False switches them off

    def __post_init__(self) -> None:
        for name in ("num_candidates", "slate_size", "horizon"):
            _positive_int(name, getattr(self, name))
        if self.slate_size > self.num_candidates:
            raise ValueError(
                f"slate_size={self.slate_size} > num_candidates={self.num_candidates}: a slate picks distinct "
                "candidates; raise num_candidates or lower slate_size."
            )
        if self.reward not in REWARDS:
            raise ValueError(f"reward={self.reward!r}: use one of {REWARDS}.")
        if self.candidate_sampler not in SAMPLERS:
            raise ValueError(f"candidate_sampler={self.candidate_sampler!r}: use one of {SAMPLERS}.")
        if not 0 <= self.popular_share <= 1:
            raise ValueError(f"popular_share={self.popular_share!r}: must be in [0, 1].")
        if isinstance(self.choice, dict):
            object.__setattr__(self, "choice", _build(ChoiceConfig, self.choice, "choice"))
        if self.llm is not None and self.user_model != "llm":
            raise ValueError(f"llm={{...}} configures user_model='llm', but user_model={self.user_model!r}.")
        if isinstance(self.audit, bool):
            object.__setattr__(self, "audit", AuditConfig(enabled=self.audit))
        elif isinstance(self.audit, dict):
            object.__setattr__(self, "audit", _build(AuditConfig, self.audit, "audit"))
        elif not isinstance(self.audit, AuditConfig):
            raise TypeError(f"audit={self.audit!r}: pass True/False, a dict of AuditConfig fields or an AuditConfig.")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer.")


def _build(cls: type, values: dict, prefix: str) -> Any:
    names = [f.name for f in fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], names, n=1)
        raise ValueError(
            f"{prefix}.{unknown[0]} is not a parameter of {cls.__name__}"
            + (f"; did you mean {prefix}.{hint[0]!r}?" if hint else f"; valid: {names}.")
        )
    return cls(**values)


def split_kwargs(kwargs: dict[str, Any]) -> tuple[WorldConfig, EnvConfig]:
    """Route flat keyword arguments to (WorldConfig, EnvConfig); unknown keys are errors."""
    world_keys = {f.name for f in fields(WorldConfig)}
    env_keys = {f.name for f in fields(EnvConfig)}
    unknown = [k for k in kwargs if k not in world_keys | env_keys]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(world_keys | env_keys), n=1)
        raise TypeError(
            f"RecSim-LLM-v0 got an unknown argument {unknown[0]!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; valid: {sorted(world_keys | env_keys)}.")
        )
    world = WorldConfig(**{k: v for k, v in kwargs.items() if k in world_keys})
    env = EnvConfig(**{k: v for k, v in kwargs.items() if k in env_keys})
    return world, env
