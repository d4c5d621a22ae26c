"""Grounding what a language-model recommender says in the catalog, and counting what it invents.

An LLM recommender emits titles. Each is matched to the catalog by its normalised title (case,
spacing, quotes and a trailing "(year)" do not matter); a title that matches no item is a
hallucination, one that matches an item outside the user's candidates is out-of-candidate.
``valid_answer`` is LLaRA's ValidRatio rule for candidate-list prompts: an answer is valid iff it
mentions exactly one candidate title.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_SPACE = re.compile(r"\s+")
_EDGE = "\"'`“”‘’ .,;:!-*"


def normalize_title(title: str) -> str:
    """Casefolded title with collapsed spaces, without surrounding quotes/punctuation or a "(year)"."""
    t = _SPACE.sub(" ", str(title)).strip().strip(_EDGE)
    return _YEAR.sub("", t).strip(_EDGE).casefold()


class TitleIndex:
    """Normalised title -> item id for a catalog; ambiguous normalised titles map to the first item."""

    def __init__(self, titles) -> None:
        self.titles = [str(t) for t in titles]
        self._ids: dict[str, int] = {}
        for i, t in enumerate(self.titles):
            self._ids.setdefault(normalize_title(t), i)

    def lookup(self, texts) -> np.ndarray:
        """(n,) int64 item id of each text, -1 where it matches no catalog title."""
        return np.array([self._ids.get(normalize_title(t), -1) for t in texts], np.int64)


@dataclass(frozen=True)
class Grounding:
    """Where each emitted title landed.

    Attributes:
        items: (n,) int64 catalog item id, -1 when the title is not in the catalog.
        in_candidates: (n,) bool, the item is among that user's candidates.
        duplicate: (n,) bool, the item was already emitted earlier in the same slate.
    """

    items: np.ndarray
    in_candidates: np.ndarray
    duplicate: np.ndarray

    def counts(self) -> dict[str, int]:
        """Totals the audit accumulates: emitted, hallucinated, out_of_candidates, duplicates."""
        in_catalog = self.items >= 0
        return {
            "emitted": int(len(self.items)),
            "hallucinated": int((~in_catalog).sum()),
            "out_of_candidates": int((in_catalog & ~self.in_candidates).sum()),
            "duplicates": int(self.duplicate.sum()),
        }


def ground(index: TitleIndex, titles: list[list[str]], candidates: np.ndarray) -> Grounding:
    """Ground the titles an LLM recommender emitted for each user (one list per row of ``candidates``).

    Args:
        titles: B lists of emitted titles (a slate each).
        candidates: (B, C) item ids the user could be shown.
    """
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or len(titles) != len(candidates):
        raise ValueError(f"ground: {len(titles)} title lists for candidates of shape {candidates.shape}.")
    flat = [t for row in titles for t in row]
    rows = np.repeat(np.arange(len(titles)), [len(r) for r in titles])
    items = index.lookup(flat)
    in_cand = (candidates[rows] == items[:, None]).any(axis=1) & (items >= 0)
    # a duplicate is any but the first emission of the same catalog item within one slate
    key = rows * (int(items.max(initial=0)) + 1) + items
    first = np.zeros(len(items), bool)
    first[np.unique(key, return_index=True)[1]] = True
    duplicate = ~first & (items >= 0)
    return Grounding(items, in_cand, duplicate)


def valid_answer(answer: str, candidate_titles: list[str]) -> bool:
    """LLaRA's validity: the answer mentions exactly one of the candidate titles (casefolded substring)."""
    text = str(answer).casefold()
    return sum(normalize_title(t) in text for t in candidate_titles) == 1


def hallucination_rates(counts: dict[str, int]) -> dict[str, float]:
    """Rates from accumulated counts: hallucination, out-of-candidate, duplicate, and the valid-answer
    ratio when ``answers``/``valid`` were counted. A zero denominator gives NaN, never 0."""
    def rate(num: str, den: str) -> float:
        return counts.get(num, 0) / counts[den] if counts.get(den, 0) > 0 else float("nan")

    return {
        "hallucination_rate": rate("hallucinated", "emitted"),
        "out_of_candidate_rate": rate("out_of_candidates", "emitted"),
        "duplicate_rate": rate("duplicates", "emitted"),
        "valid_ratio": rate("valid", "answers"),
    }
