"""Offline accuracy of a ranking against the true next item: HR@k and NDCG@k over candidates.

Shared by the user-model fidelity test (which simulated user picks what the real user picked?) and
the LLM recommenders' LLaRA protocol (which candidate does the recommender rank first?).
"""
from __future__ import annotations

import numpy as np


def ranking_metrics(scores: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Per decision: hit@1, hit@5 and NDCG@5 of the true column of (n, C) ``scores``.

    Ties are broken at random (seeded), never in the true item's favour: a model that scores every
    candidate alike gets chance, 1/C, not a perfect hit rate.
    """
    scores = np.asarray(scores)
    truth = np.asarray(truth, np.int64)
    if scores.ndim != 2 or truth.shape != (len(scores),):
        raise ValueError(f"ranking_metrics: scores {scores.shape} and truth {truth.shape}; expected (n, C) and (n,).")
    jitter = np.random.default_rng(seed).random(scores.shape) * 1e-9
    s = scores.astype(np.float64) + jitter * (1 + np.abs(scores))
    rank = (s > s[np.arange(len(s)), truth][:, None]).sum(axis=1)  # 0 = ranked first
    return {"HR@1": (rank < 1).astype(float), "HR@5": (rank < 5).astype(float),
            "NDCG@5": np.where(rank < 5, 1.0 / np.log2(rank + 2), 0.0)}
