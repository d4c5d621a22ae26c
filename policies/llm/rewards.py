"""The simulated user as the reward of an LLM recommender trained by reinforcement (trl's ``GRPOTrainer``).

A GRPO row is one serving decision: the LLaRA prompt (``policies.llm.prompts``) and, in the columns
``candidate_items`` and ``candidate_values``, the items that user could be shown and what each is
worth to them at serving time (for example its click probability under the simulator's choice
model). The policy writes a title; the title is grounded in the catalog exactly as the generating
recommender grounds it (``policies.llm.recommender``), so training rewards what serving would count.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from policies.llm.prompts import display_title
from simenv.audit.hallucination import TitleIndex, ground


class SimulatedUserReward:
    """trl reward function ``(prompts, completions, **columns) -> list[float]``: the simulated user's value
    of the item a completion names.

    For a completion c of a row with candidates (i_1..i_C) and values (v_1..v_C)::

        r(c) = v_k                     if c names candidate i_k
             = off_candidate_penalty   if c names a catalog item outside the candidates
             = hallucination_penalty   if c names no catalog item

    "Names" is ``TitleIndex`` matching over the catalog's display titles (case, spacing, surrounding
    quotes and a trailing "(year)" do not matter). With values that are probabilities (in [0, 1]) the
    default penalties order valid > off-candidate > hallucinated, and GRPO's per-group normalisation
    keeps that order.

    Args:
        titles: the catalog's titles by item id, raw ("Usual Suspects, The") or display; matched in display form.
        off_candidate_penalty: reward of a catalog item that was not among the row's candidates.
        hallucination_penalty: reward of an answer that names no catalog item.
        name: what trl logs the reward under (``rewards/<name>/mean``); it reads ``__name__``.

    Attributes:
        counts: running totals over every call: ``answers``, ``valid`` (named a candidate),
            ``off_candidate`` and ``hallucinated``.
    """

    def __init__(self, titles: Sequence[str], off_candidate_penalty: float = -0.5, hallucination_penalty: float = -1.0,
                 name: str = "simulated_user") -> None:
        self.index = TitleIndex([display_title(str(t)) for t in titles])
        self.off_candidate_penalty = off_candidate_penalty
        self.hallucination_penalty = hallucination_penalty
        self.__name__ = name
        self.counts = {"answers": 0, "valid": 0, "off_candidate": 0, "hallucinated": 0}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], *, candidate_items: Sequence[Sequence[int]],
                 candidate_values: Sequence[Sequence[float]], log_metric: Callable[[str, float], None] | None = None,
                 **_: Any) -> list[float]:
        """One reward per completion; ``candidate_items``/``candidate_values`` are that completion's row's
        (trl repeats each row once per generation). ``log_metric`` is trl's hook for per-batch scalars."""
        candidates = np.asarray(candidate_items, np.int64)  # (N, C)
        values = np.asarray(candidate_values, np.float64)  # (N, C)
        if candidates.shape != values.shape or len(candidates) != len(completions):
            raise ValueError(f"{len(completions)} completions with candidate_items of shape {candidates.shape} and "
                             f"candidate_values of shape {values.shape}: expected one row of C items and C values "
                             "per completion.")
        grounding = ground(self.index, [[_text(c)] for c in completions], candidates)
        valid = grounding.in_candidates  # (N,)
        hallucinated = grounding.items < 0  # (N,)
        column = (candidates == grounding.items[:, None]).argmax(axis=1)  # (N,) meaningful where valid
        rewards = np.where(valid, values[np.arange(len(values)), column],
                           np.where(hallucinated, self.hallucination_penalty, self.off_candidate_penalty))
        batch = {"answers": len(valid), "valid": int(valid.sum()), "hallucinated": int(hallucinated.sum()),
                 "off_candidate": int((~valid & ~hallucinated).sum())}
        for key, value in batch.items():
            self.counts[key] += value
        if log_metric is not None and len(valid):
            log_metric(f"{self.__name__}/valid_ratio", batch["valid"] / batch["answers"])
            log_metric(f"{self.__name__}/hallucination_rate", batch["hallucinated"] / batch["answers"])
        return rewards.tolist()


def _text(completion: Any) -> str:
    """A completion's text: a plain string, or the last message's content in trl's conversational form."""
    return completion if isinstance(completion, str) else completion[-1]["content"]
