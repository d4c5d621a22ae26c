"""What one round of an online study measured, from the decisions the simulated users made in it.

Engagement comes from the users' own responses: click rate, mean rating of the clicks, and the
return (summed reward) per user over the round. Accuracy is measured against the simulated user's
true preference at the moment of the decision: the candidate with the highest utility under the
user model (``user_model.item_values``, read before the user responded) is that user's "true next
choice"; HR@1 is the share of slates led by it, NDCG@5 = 1/log2(2 + its slate position) when it is
in the first five, else 0. Bias: popularity lift (ΔGAP of slates against the users' histories,
``simenv.audit.popularity``), exposure Gini of the round's impressions, and homogenization as the
mean pairwise cosine of the users' tastes after the round (higher: more alike). The trend columns
show the scenario: the share of clicks on the trend genre's items, and the users' mean taste cosine
to the trend direction. ValidRatio and the hallucination rate come from the policy's generation
counts over the round (NaN for policies that do not generate titles).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from simenv.audit import exposure, homogenization, popularity
from simenv.audit.errors import UndefinedMetric

METRICS = ("ctr", "mean_rating", "return", "HR@1", "NDCG@5", "ValidRatio", "hallucination_rate",
           "popularity_lift", "exposure_gini", "homogenization", "trend_click_share", "trend_alignment")


def true_best(values: np.ndarray) -> np.ndarray:
    """(n,) the candidate column of highest utility (ties: the first)."""
    return np.argmax(values, axis=1)


def hit_and_ndcg(slates: np.ndarray, best: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(n,) HR@1 and NDCG@k of slates (candidate positions, best first) against the best column."""
    at = slates[:, :k] == best[:, None]
    found = at.any(axis=1)
    rank = np.argmax(at, axis=1)
    return (slates[:, 0] == best).astype(np.float64), np.where(found, 1.0 / np.log2(rank + 2.0), 0.0)


def round_metrics(decisions: dict[str, np.ndarray], reward: float, num_users: int, exposure_counts: np.ndarray,
                  rows: dict[str, np.ndarray], catalog, trend_genre: str | None,
                  generation: dict[str, int] | None) -> dict[str, float]:
    """Every column of ``METRICS`` for one round.

    Args:
        decisions: the round's ``ShardedRollout.advance(..., record=True)`` decisions.
        reward: the round's summed reward over all users.
        exposure_counts: (I,) impressions of each item in the round.
        rows: every user's state after the round (``ShardedRollout.rows()``).
        catalog: the world's catalog (popularity, genres, embeddings).
        trend_genre: the scenario's trend genre (None: trend columns NaN).
        generation: the policy's generation counts over the round (None: it did not generate).
    """
    cands, slates, choice = decisions["candidates"], decisions["slate"], decisions["choice"]
    n = len(choice)
    clicked = choice >= 0
    items = np.take_along_axis(cands, slates, axis=1)
    hr, ndcg = hit_and_ndcg(slates, true_best(decisions["values"]))
    taken = items[np.flatnonzero(clicked), choice[clicked]]
    t = homogenization.tastes(rows["interests"], rows["weights"])
    out: dict[str, float] = {
        "ctr": float(clicked.mean()) if n else math.nan,
        "mean_rating": float(decisions["rating"][clicked].mean()) if clicked.any() else math.nan,
        "return": reward / num_users,
        "HR@1": float(hr.mean()) if n else math.nan,
        "NDCG@5": float(ndcg.mean()) if n else math.nan,
        "ValidRatio": math.nan, "hallucination_rate": math.nan,
        "exposure_gini": exposure.gini_of_counts(exposure_counts),
        "homogenization": homogenization.dispersion(t)[1],
        "trend_click_share": math.nan, "trend_alignment": math.nan,
    }
    try:
        out["popularity_lift"] = popularity.popularity_lift(items, decisions["history"], catalog.popularity)
    except UndefinedMetric:
        out["popularity_lift"] = math.nan
    if generation and generation.get("answers", 0):
        out["ValidRatio"] = generation.get("valid", 0) / generation["answers"]
        out["hallucination_rate"] = generation.get("hallucinated", 0) / generation["answers"]
    if trend_genre is not None:
        from simenv.scenarios import trend_direction

        member = catalog.genres[:, list(catalog.genre_names).index(trend_genre)]
        out["trend_click_share"] = float(member[taken].mean()) if len(taken) else math.nan
        out["trend_alignment"] = float((t @ trend_direction(catalog, trend_genre)).mean())
    return out


def count_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """Generation counts over a round from the cumulative counts at its end and start."""
    return {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in after}
