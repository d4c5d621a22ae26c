"""Recommendation policies for ``RecSim-LLM-v0``: baselines, offline collaborative filters and an
online bandit, all batched over the N served users, plus ``evaluate`` to measure them.

``make_policy("knn", k_neighbors=20)`` builds one by name; ``POLICIES`` maps each name to its class.
"""
from __future__ import annotations

from typing import Any

from policies.base import BasePolicy, Policy
from policies.evaluate import evaluate
from policies.knn import ItemKNNPolicy
from policies.linucb import LinUCBPolicy
from policies.logs import collect_interactions
from policies.mf import MatrixFactorizationPolicy
from policies.simple import OraclePolicy, PopularityPolicy, RandomPolicy
from policies.stochastic import PlackettLucePolicy

POLICIES: dict[str, type[BasePolicy]] = {
    "random": RandomPolicy,
    "popular": PopularityPolicy,
    "oracle": OraclePolicy,
    "knn": ItemKNNPolicy,
    "mf": MatrixFactorizationPolicy,
    "linucb": LinUCBPolicy,
}

LLM_POLICIES = ("llm", "llm_icl")


def make_policy(name: str, **kwargs: Any) -> BasePolicy:
    """A new policy of the given name, built with ``kwargs`` (its constructor's arguments).

    Offline policies ("knn", "mf") still need ``fit(interactions, num_items)`` before they can act;
    "llm" (``policies.llm.recommender.LLMRecommenderPolicy``) and "llm_icl" (its in-context variant,
    ``policies.llm.in_context``) need ``model=`` a local model folder, and "rllib_slate"
    (``policies.rllib_serve.RLModuleSlatePolicy``) needs ``module=`` a saved RLlib module folder; they
    are imported only when asked for, since they load torch and transformers or RLlib.
    """
    if name == "llm":
        from policies.llm.recommender import LLMRecommenderPolicy

        return LLMRecommenderPolicy(**kwargs)
    if name == "llm_icl":
        from policies.llm.in_context import InContextLLMPolicy

        return InContextLLMPolicy(**kwargs)
    if name == "rllib_slate":
        from policies.rllib_serve import RLModuleSlatePolicy

        return RLModuleSlatePolicy(**kwargs)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: use one of {sorted([*POLICIES, *LLM_POLICIES, 'rllib_slate'])}.")
    return POLICIES[name](**kwargs)


__all__ = [
    "LLM_POLICIES", "POLICIES", "BasePolicy", "ItemKNNPolicy", "LinUCBPolicy", "MatrixFactorizationPolicy", "OraclePolicy",
    "PlackettLucePolicy", "Policy", "PopularityPolicy", "RandomPolicy", "collect_interactions", "evaluate",
    "make_policy",
]
