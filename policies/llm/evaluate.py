"""Offline evaluation of an LLM recommender under the LLaRA / S-DPO protocol, plus popularity bias.

Each test decision shows the user's recent titles and 20 candidates (the true next item and 19 the
user never rated). Two readings of the same model:

- likelihood ranking of the candidates (the fast mode the simulator uses): HR@1, HR@5, NDCG@5;
- greedy generation of a title (LLaRA's mode): ValidRatio (the answer is one candidate's title,
  matched exactly after normalisation: LLaRA's substring rule calls "Aliens" an answer naming both
  "Alien" and "Aliens", and so invalid), HR@1 counted over valid answers (LLaRA's ``calculate_hr1``) and over all answers
  (S-DPO's ``evaluate_batch``) - both, since papers mix them - and the hallucination rate (a title
  matching no catalog item) and out-of-candidate rate (a real item that was not offered).

Popularity bias of the top-ranked item: ARP (in units of the average item's share, so 1 = an
unbiased pick) and the popularity lift ΔGAP against each user's own history (``simenv.audit.popularity``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from policies.llm.preference_data import RecExamples
from simenv.audit.hallucination import ground
from simenv.audit.popularity import arp, popularity_lift
from simenv.audit.ranking import ranking_metrics


def observations(examples: RecExamples) -> dict[str, np.ndarray]:
    """The env-style observation of each decision: history most recent first and -1 padded at the end."""
    h = examples.history[:, ::-1]  # oldest-first left-padded -> newest-first right-padded
    order = np.argsort(h < 0, axis=1, kind="stable")
    return {"history": np.take_along_axis(h, order, axis=1), "candidates": examples.candidates}


def evaluate_recommender(policy: Any, examples: RecExamples, popularity: np.ndarray, generate: bool = True,
                         seed: int = 0) -> dict[str, Any]:
    """Per-decision results (arrays of length n) and their summary (``summary``) for ``policy`` (an
    ``LLMRecommenderPolicy`` that has read the catalog's titles)."""
    obs = observations(examples)
    prompts = policy.prompts(obs)
    scores = policy.scores(obs, prompts)
    out: dict[str, Any] = dict(ranking_metrics(scores, examples.target, seed))
    top = examples.candidates[np.arange(len(examples)), scores.argmax(axis=1)]
    out["top_item"] = top
    if generate:
        answers = policy.lm.generate(prompts, policy.max_new_tokens)
        g = ground(policy.index, [[a] for a in answers], examples.candidates)
        out["answer"] = answers
        out["valid"] = g.in_candidates
        out["hit"] = g.items == examples.target_items
        out["hallucinated"] = g.items < 0
        out["out_of_candidates"] = (g.items >= 0) & ~g.in_candidates
    out["summary"] = summary(out, examples, popularity)
    return out


def summary(results: dict[str, Any], examples: RecExamples, popularity: np.ndarray) -> dict[str, float]:
    """Means of the per-decision results, and popularity bias of the top-ranked items."""
    s = {k: float(np.mean(results[k])) for k in ("HR@1", "HR@5", "NDCG@5")}
    top = results["top_item"][:, None]
    s["ARP"] = arp(top, popularity) * len(popularity)
    s["popularity_lift"] = popularity_lift(top, examples.history, popularity)
    if "valid" in results:
        valid, hit = results["valid"], results["hit"]
        s["ValidRatio"] = float(valid.mean())
        s["HR@1 (valid)"] = float(hit.sum() / valid.sum()) if valid.any() else float("nan")
        s["HR@1 (all)"] = float(hit.mean())
        s["hallucination_rate"] = float(results["hallucinated"].mean())
        s["out_of_candidate_rate"] = float(results["out_of_candidates"].mean())
    return s
