"""Preference data for aligning an LLM recommender that answers the LLaRA candidate-selection prompt.

A recommendation decision (``RecExamples``) is a user's history, C candidates and the column of the
candidate they took. Alignment turns each decision into ``(prompt, chosen, rejected[k], ε[k])``:

- the prompt is ``prompts.recommendation_prompt`` over the display titles of the history and candidates;
- chosen is the taken item's title (the SFT target);
- the k rejected answers come from samplers, one per "customized preference" (RosePO, Liao et al.,
  arXiv 2410.12519) plus S-DPO's random negatives and our own additions:

  ================  ===================================================  =======================
  name              rejected answers                                     source
  ================  ===================================================  =======================
  ``random``        uniform among the non-target candidates              S-DPO
  ``popular``       sampled ∝ popularity^power among non-targets         RosePO popularity-aware
  ``similar``       nearest to the target by cosine of item embeddings   RosePO semantic-similar
  ``self_hard``     the current model's top-scored non-targets           RosePO / SPRec self-hard
  ``shown``         displayed in the simulator but not taken             simulator data
  ``hallucinated``  plausible titles that are not in the catalog         our extension
  ================  ===================================================  =======================

- ε is a per-pair label-smoothing factor from a preference oracle (``oracle_epsilon``), the
  "RosePO-style" personalized smoothing of cDPO; it is a reconstruction of RosePO, not a verified
  reproduction (see the shared research notes, ``shared/research/alignment.md`` §2.4).

Column samplers return (n, k) *columns* of ``candidates`` (never the target's, distinct within a row).
All randomness comes from a ``np.random.Generator`` (or a seed) and is drawn for all examples at once.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import datasets
import numpy as np

from policies.llm.prompts import display_title, prompts_from_ids, response
from simenv.audit.hallucination import TitleIndex
from simenv.datasets.base import Interactions
from simenv.datasets.replay import DecisionPoints, Histories, sample_candidates

SAMPLERS = ("random", "popular", "similar", "self_hard", "shown", "hallucinated")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "chosen_item", "rejected_items", "rejected_source", "epsilon")


@dataclass(frozen=True)
class RecExamples:
    """n recommendation decisions: who, what they had seen, what they could take, and what they took.

    Attributes:
        user: (n,) int64 user index.
        history: (n, H) int64 item ids, oldest first, -1 = empty; empties come first (left padding),
            so the newest item is always in the last column.
        candidates: (n, C) int64 item ids, distinct within a row, C >= 2.
        target: (n,) int64 the column of ``candidates`` holding the item taken.
        shown: (n, C) bool, which candidates were displayed (simulator data), or None for logs, which
            do not record what a user saw. The target is always shown.
    """

    user: np.ndarray
    history: np.ndarray
    candidates: np.ndarray
    target: np.ndarray
    shown: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.user)
        for name, ndim in (("user", 1), ("history", 2), ("candidates", 2), ("target", 1)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int64:
                raise ValueError(f"RecExamples.{name}: dtype {getattr(arr, 'dtype', type(arr))}, expected int64; "
                                 f"pass np.asarray(..., np.int64).")
            if arr.ndim != ndim or arr.shape[0] != n:
                raise ValueError(f"RecExamples.{name}: shape {arr.shape}, expected {ndim} dims with {n} rows "
                                 f"like user.")
        c = self.candidates.shape[1]
        if c < 2:
            raise ValueError(f"RecExamples.candidates: {c} column(s); a decision needs at least 2 candidates.")
        _raise_at_first_row(self.candidates.min(axis=1, initial=0) < 0,
                            "RecExamples.candidates: row {row} holds a negative item id; ids are >= 0.")
        ordered = np.sort(self.candidates, axis=1)
        _raise_at_first_row((ordered[:, 1:] == ordered[:, :-1]).any(axis=1),
                            "RecExamples.candidates: row {row} holds a duplicate candidate; candidates must be "
                            "distinct within a row.")
        _raise_at_first_row((self.target < 0) | (self.target >= c),
                            f"RecExamples.target: row {{row}} is out of range; targets are columns 0..{c - 1}.")
        _raise_at_first_row(self.history.min(axis=1, initial=-1) < -1,
                            "RecExamples.history: row {row} holds an id below -1; -1 marks an empty slot.")
        filled = self.history >= 0
        _raise_at_first_row((filled[:, :-1] & ~filled[:, 1:]).any(axis=1),
                            "RecExamples.history: row {row} has an empty slot (-1) after an item; histories are "
                            "oldest first with the empties first (left padding).")
        if self.shown is not None:
            if not isinstance(self.shown, np.ndarray) or self.shown.dtype != bool or self.shown.shape != (n, c):
                raise ValueError(f"RecExamples.shown: expected a ({n}, {c}) bool array like candidates or None, "
                                 f"got {getattr(self.shown, 'dtype', type(self.shown))} "
                                 f"{getattr(self.shown, 'shape', '')}.")
            _raise_at_first_row(~self.shown[np.arange(n), self.target],
                                "RecExamples.shown: row {row}'s target was not shown; a user takes only what "
                                "was displayed.")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def target_items(self) -> np.ndarray:
        """(n,) int64 item id taken in each decision."""
        return self.candidates[np.arange(len(self)), self.target]

    def subset(self, rows: np.ndarray | Sequence[int]) -> RecExamples:
        """The decisions at ``rows`` (integer indices or an (n,) bool mask), in that order."""
        rows = np.asarray(rows)
        shown = None if self.shown is None else self.shown[rows]
        return RecExamples(self.user[rows], self.history[rows], self.candidates[rows], self.target[rows], shown)


def _raise_at_first_row(bad: np.ndarray, message: str) -> None:
    """Raise ValueError(message with {row} = the first True row of ``bad`` (n,) bool), if any."""
    if bad.any():
        raise ValueError(message.format(row=int(np.argmax(bad))))


# --------------------------------------------------------------------------------------------- builders

def examples_from_logs(interactions: Interactions, num_users: int, num_items: int, points: DecisionPoints,
                       num_candidates: int = 20, history: int = 10, seed: int = 0) -> RecExamples:
    """Decisions at logged choice points, LLaRA protocol: the true item among never-interacted items.

    Args:
        interactions: the log the points index: point b's user had ``points.position[b]`` events (in
            time order) before the choice. Use the log ``decision_points`` drew from, or the training
            log of ``leave_last_out`` for its test points.
        points: (n) decision points.
        num_candidates: C, the true item plus ``C - 1`` items the user never interacted with in
            ``interactions`` (``sample_candidates``), in a seeded random order.
        history: H, the number of most recent events before the point kept (fewer are left-padded with -1).
    """
    if history < 0:
        raise ValueError(f"history={history}: must be >= 0 (the number of past items in the prompt).")
    h = Histories(interactions, num_users)
    user = np.asarray(points.user, np.int64)
    position = np.asarray(points.position, np.int64)
    _raise_at_first_row((position < 0) | (position > h.length[user]),
                        "examples_from_logs: decision point {row} lies outside its user's history in this log; "
                        "pass the log the points were drawn from.")
    kept = np.minimum(position, history)
    offset = np.arange(history)[None, :] - (history - kept)[:, None]  # (n, H) index among the kept events
    rows, cols = np.nonzero(offset >= 0)
    first = h.start[user] + position - kept  # log position (in time order) of each row's oldest kept event
    past = np.full((len(user), history), -1, np.int64)
    past[rows, cols] = interactions.item[h.order[first[rows] + offset[rows, cols]]]
    candidates, target = sample_candidates(interactions, points, num_items, num_candidates, seed)
    return RecExamples(user, past, candidates.astype(np.int64), target.astype(np.int64))


def examples_from_steps(history: np.ndarray, candidates: np.ndarray, slates: np.ndarray, choice: np.ndarray,
                        users: np.ndarray) -> RecExamples:
    """Decisions from simulator steps: each click is a decision among the step's candidates.

    Args:
        history: (n, H) int the env's ``obs["history"]``: most recent first, -1 padded at the end.
        candidates: (n, C) int the env's ``obs["candidates"]``.
        slates: (n, k) int the actions: positions into ``candidates``, top of the slate first.
        choice: (n,) int ``info["choice"]``: the slate position clicked, -1 for no click.
        users: (n,) int ``info["user_id"]``.

    Returns:
        The m <= n steps with a click, in order; ``shown`` marks each step's slate.
    """
    history, candidates, slates = (np.asarray(a, np.int64) for a in (history, candidates, slates))
    choice, users = np.asarray(choice, np.int64), np.asarray(users, np.int64)
    n = len(choice)
    if history.ndim != 2 or candidates.ndim != 2 or slates.ndim != 2 or users.shape != (n,) or \
            len(history) != n or len(candidates) != n or len(slates) != n:
        raise ValueError(f"examples_from_steps: history {history.shape}, candidates {candidates.shape}, slates "
                         f"{slates.shape}, users {users.shape} and choice {choice.shape}: expected (n, H), (n, C), "
                         f"(n, k), (n,) and (n,) with the same n.")
    c, k = candidates.shape[1], slates.shape[1]
    _raise_at_first_row(((slates < 0) | (slates >= c)).any(axis=1),
                        f"examples_from_steps: slate {{row}} holds a position outside 0..{c - 1}; slates are "
                        f"positions into candidates, not item ids.")
    _raise_at_first_row((choice < -1) | (choice >= k),
                        f"examples_from_steps: choice {{row}} is outside -1..{k - 1} (a slate position or -1).")
    filled = history >= 0
    _raise_at_first_row((~filled[:, :-1] & filled[:, 1:]).any(axis=1),
                        "examples_from_steps: history row {row} has an item after an empty slot; expected the "
                        "env's order (most recent first, -1 padded at the end).")
    shown = np.zeros((n, c), bool)
    shown[np.arange(n)[:, None], slates] = True
    click = np.flatnonzero(choice >= 0)
    target = slates[click, choice[click]]
    return RecExamples(users[click], history[click, ::-1].copy(), candidates[click], target, shown[click])


# --------------------------------------------------------------------------------------------- samplers

def _check_k(name: str, k: int, available: int) -> None:
    """Raise unless 0 <= k <= available (the non-target candidates a row offers)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{name}: k={k!r}, expected a non-negative int number of negatives.")
    if k > available:
        raise ValueError(f"{name}: k={k} negatives but only {available} non-target candidates per row: more "
                         f"negatives than candidates; lower k or use more candidates.")


def _best_columns(name: str, key: np.ndarray, allowed: np.ndarray, k: int,
                  tiebreak: np.ndarray | None = None) -> np.ndarray:
    """(n, k) int64 columns with the largest ``key`` (n, C) among ``allowed`` (n, C) bool, best first.

    Equal keys are ordered by ``tiebreak`` (n, C), else by column; raises naming the first row that
    allows fewer than k columns.
    """
    _raise_at_first_row(allowed.sum(axis=1) < k,
                        f"{name}: row {{row}} has fewer than k={k} candidates to draw from: more negatives than "
                        f"candidates; lower k.")
    second = np.zeros_like(key) if tiebreak is None else tiebreak
    order = np.lexsort((second, -key, ~allowed), axis=1)  # allowed first, then key descending
    return order[:, :k].astype(np.int64)


def _non_target(examples: RecExamples) -> np.ndarray:
    """(n, C) bool: every column but the target's."""
    allowed = np.ones(examples.candidates.shape, bool)
    allowed[np.arange(len(examples)), examples.target] = False
    return allowed


def _random(examples: RecExamples, k: int, rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    return _best_columns("random_negatives", rng.random(allowed.shape), allowed, k)


def _popular(examples: RecExamples, k: int, rng: np.random.Generator, allowed: np.ndarray,
             popularity: np.ndarray, power: float) -> np.ndarray:
    popularity = np.asarray(popularity, np.float64)
    if popularity.ndim != 1 or len(popularity) <= examples.candidates.max(initial=0):
        raise ValueError(f"popular_negatives: popularity has shape {popularity.shape}; expected (I,) with an entry "
                         f"for every candidate id (max {examples.candidates.max(initial=0)}).")
    if not np.all(np.isfinite(popularity)) or np.any(popularity < 0):
        raise ValueError("popular_negatives: popularity must be finite and >= 0 (counts or shares).")
    if not (math.isfinite(power) and power >= 0):
        raise ValueError(f"popular_negatives: power={power}, expected a finite number >= 0 (0 = uniform).")
    with np.errstate(divide="ignore"):
        log_weight = np.log(popularity[examples.candidates] ** power)  # -inf for zero popularity
    # Gumbel-top-k: the k largest log w + Gumbel noise are a draw without replacement ∝ w; zero-weight
    # items come last, in random order, and only when a row has fewer than k weighted ones.
    gumbel = -np.log(-np.log(rng.random(allowed.shape).clip(1e-300, None)))
    return _best_columns("popular_negatives", log_weight + gumbel, allowed, k, tiebreak=gumbel)


def _similar(examples: RecExamples, k: int, allowed: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2 or len(embeddings) <= examples.candidates.max(initial=0):
        raise ValueError(f"similar_negatives: embeddings have shape {embeddings.shape}; expected (I, d) with a row "
                         f"for every candidate id (max {examples.candidates.max(initial=0)}).")
    vectors = embeddings[examples.candidates]  # (n, C, d)
    norms = np.linalg.norm(vectors, axis=2)
    _raise_at_first_row(~(np.isfinite(norms) & (norms > 0)).all(axis=1),
                        "similar_negatives: row {row} has a candidate with a zero or non-finite embedding; cosine "
                        "similarity needs non-zero finite vectors.")
    unit = vectors / norms[:, :, None]
    cosine = np.einsum("ncd,nd->nc", unit, unit[np.arange(len(examples)), examples.target])
    return _best_columns("similar_negatives", cosine, allowed, k)


def _self_hard(examples: RecExamples, k: int, allowed: np.ndarray, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.shape != examples.candidates.shape:
        raise ValueError(f"self_hard_negatives: scores have shape {scores.shape}, expected "
                         f"{examples.candidates.shape} (one score per candidate column).")
    _raise_at_first_row(~np.isfinite(scores).all(axis=1),
                        "self_hard_negatives: scores row {row} holds NaN or Inf; score every candidate.")
    return _best_columns("self_hard_negatives", scores, allowed, k)


def _shown(examples: RecExamples, k: int, rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    if examples.shown is None:
        raise ValueError("shown_negatives: examples.shown is None (logs do not record what was displayed); use "
                         "random_negatives, or build examples with examples_from_steps.")
    return _best_columns("shown_negatives", rng.random(allowed.shape), allowed & examples.shown, k)


def random_negatives(examples: RecExamples, k: int, rng: np.random.Generator | int) -> np.ndarray:
    """(n, k) int64 columns drawn uniformly without replacement among the non-target candidates (S-DPO)."""
    _check_k("random_negatives", k, examples.candidates.shape[1] - 1)
    return _random(examples, k, np.random.default_rng(rng), _non_target(examples))


def popular_negatives(examples: RecExamples, k: int, popularity: np.ndarray, rng: np.random.Generator | int,
                      power: float = 1.0) -> np.ndarray:
    """(n, k) int64 columns drawn without replacement ∝ popularity^power among the non-target candidates.

    RosePO's popularity-aware negatives: rejecting popular items pushes against popularity
    amplification. ``popularity`` is (I,) non-negative (counts or shares); ``power`` = 0 is uniform,
    larger powers concentrate on the most popular.
    """
    _check_k("popular_negatives", k, examples.candidates.shape[1] - 1)
    return _popular(examples, k, np.random.default_rng(rng), _non_target(examples), popularity, power)


def similar_negatives(examples: RecExamples, k: int, embeddings: np.ndarray) -> np.ndarray:
    """(n, k) int64 columns of the k non-target candidates nearest the target by cosine, nearest first.

    RosePO's semantic-similar negatives: they teach the fine distinction between the right title and
    near-duplicates. ``embeddings`` is (I, d); ties go to the lower column.
    """
    _check_k("similar_negatives", k, examples.candidates.shape[1] - 1)
    return _similar(examples, k, _non_target(examples), embeddings)


def self_hard_negatives(examples: RecExamples, k: int, scores: np.ndarray) -> np.ndarray:
    """(n, k) int64 columns of the k highest-scored non-target candidates, highest first.

    RosePO/SPRec self-hard negatives: what the current model would wrongly recommend. ``scores`` is
    (n, C), e.g. teacher-forced log-likelihoods of each candidate title; ties go to the lower column.
    """
    _check_k("self_hard_negatives", k, examples.candidates.shape[1] - 1)
    return _self_hard(examples, k, _non_target(examples), scores)


def shown_negatives(examples: RecExamples, k: int, rng: np.random.Generator | int) -> np.ndarray:
    """(n, k) int64 columns drawn uniformly among candidates that were shown but not taken (simulator data).

    Raises if a row has fewer than k such candidates (a slate of s items offers s - 1).
    """
    _check_k("shown_negatives", k, examples.candidates.shape[1] - 1)
    return _shown(examples, k, np.random.default_rng(rng), _non_target(examples))


# --------------------------------------------------------------------------------- hallucinated titles

_TAIL = re.compile(r"(?P<year>\s\(\d{4}\))?(?P<id>\s\[id \d+\])?$")
_SEQUELS = (" 2", " II", " 3", " III", ": Part II", " Returns")
_ATTEMPTS = 8  # random attempts per negative before the deterministic " Part m" fallback


def _body_and_year(title: str) -> tuple[str, str]:
    """("The Usual Suspects", " (1995)") from "The Usual Suspects (1995)"; the id tag is dropped."""
    m = _TAIL.search(title)
    return title[: m.start()].strip() or title, m["year"] or ""


def _splice(head: str, tail: str, u: float, v: float) -> str:
    """The first words of ``head`` and the last words of ``tail``; cut points from u, v in [0, 1).

    The head keeps at least two words (so an article never stands alone) and the tail at least one.
    """
    a, b = head.split(), tail.split()
    keep = min(2, len(a))
    cut_a = keep + int(u * (max(len(a) - 1, keep) - keep + 1))
    cut_b = 1 + int(v * (len(b) - 1)) if len(b) > 1 else 0
    return " ".join(a[:cut_a] + b[cut_b:])


def _catalog_index(titles: Sequence[str]) -> TitleIndex:
    """An index matching both the catalog's titles and their display forms."""
    raw = [str(t) for t in titles]
    return TitleIndex(raw + [display_title(t) for t in raw])


def _hallucinate(examples: RecExamples, k: int, titles: Sequence[str], rng: np.random.Generator,
                 index: TitleIndex) -> list[list[str]]:
    n, c = examples.candidates.shape
    display = [display_title(str(t)) for t in titles]
    # every random choice for every example is drawn up front: partner column (never the target),
    # strategy (0 = splice, 1 = sequel), which title leads, sequel suffix and two cut points
    shape = (n, k, _ATTEMPTS)
    partner = (examples.target[:, None, None] + rng.integers(1, c, size=shape)) % c
    strategy = rng.integers(0, 2, size=shape)
    target_leads = rng.random(shape) < 0.5
    suffix = rng.integers(0, len(_SEQUELS), size=shape)
    cuts = rng.random(shape + (2,))
    out = []
    for i in range(n):
        own = display[examples.target_items[i]]
        row: list[str] = []
        for j in range(k):
            title = None
            for a in range(_ATTEMPTS):
                other = display[examples.candidates[i, partner[i, j, a]]]
                lead, follow = (own, other) if target_leads[i, j, a] else (other, own)
                (lead_body, year), (follow_body, _) = _body_and_year(lead), _body_and_year(follow)
                if strategy[i, j, a] == 0:
                    guess = _splice(lead_body, follow_body, *cuts[i, j, a]) + year
                else:
                    guess = lead_body + _SEQUELS[suffix[i, j, a]] + year
                if guess not in row and index.lookup([guess])[0] < 0:
                    title = guess
                    break
            m = 2
            body, year = _body_and_year(own)
            while title is None:  # a finite catalog leaves some "Part m" free
                guess = f"{body}: Part {m}{year}"
                title = guess if guess not in row and index.lookup([guess])[0] < 0 else None
                m += 1
            row.append(title)
        out.append(row)
    return out


def hallucinated_titles(examples: RecExamples, k: int, titles: Sequence[str],
                        rng: np.random.Generator | int) -> list[list[str]]:
    """n lists of k distinct plausible display titles that match no catalog item.

    Our extension, not a verified RosePO sampler (RosePO's exact definition of hallucination
    negatives was not checked): it teaches the model to answer with a real candidate rather than an
    invented title. Each is a word splice of the target's and another candidate's title ("The
    Midnight" + "of Mars" -> "The Midnight of Mars") or a sequel of one of them ("... 2", "... II"),
    keeping the leading title's year; a guess that matches a catalog title (by ``TitleIndex``, raw or
    display form) is redrawn. A changed year alone is never used: title matching ignores years.

    Args:
        titles: (I,) catalog titles (raw, as in ``Catalog.titles``).
    """
    _check_k("hallucinated_titles", k, math.inf)
    return _hallucinate(examples, k, titles, np.random.default_rng(rng), _catalog_index(titles))


# ------------------------------------------------------------------------------------------------- mix

@dataclass(frozen=True)
class Negatives:
    """k rejected answers for each of n decisions.

    Attributes:
        items: (n, k) int64 catalog ids of the rejected items, -1 for a hallucinated title.
        titles: n lists of k display titles.
        source: n lists of k sampler names (see ``SAMPLERS``), for per-source margins.
    """

    items: np.ndarray
    titles: list[list[str]]
    source: list[list[str]]

    def __post_init__(self) -> None:
        if not isinstance(self.items, np.ndarray) or self.items.dtype != np.int64 or self.items.ndim != 2:
            raise ValueError(f"Negatives.items: expected an (n, k) int64 array, got "
                             f"{getattr(self.items, 'dtype', type(self.items))} {getattr(self.items, 'shape', '')}.")
        n, k = self.items.shape
        for name in ("titles", "source"):
            rows = getattr(self, name)
            if len(rows) != n or any(len(r) != k for r in rows):
                raise ValueError(f"Negatives.{name}: expected {n} lists of {k} entries, like items.")

    def __len__(self) -> int:
        return len(self.items)


def mix_negatives(examples: RecExamples, plan: dict[str, int], *, titles: Sequence[str],
                  popularity: np.ndarray | None = None, embeddings: np.ndarray | None = None,
                  scores: np.ndarray | None = None, rng: np.random.Generator | int) -> Negatives:
    """k = sum(plan.values()) negatives per decision from several samplers, no item twice in a row.

    The samplers run in the plan's order, each excluding the columns taken before it, so
    ``{"similar": 1, "random": 2}`` gives the nearest non-target candidate and 2 random others.

    Args:
        plan: sampler name (one of ``SAMPLERS``) -> number of negatives from it.
        titles: (I,) catalog titles, for display titles and hallucinated ones.
        popularity: (I,) for "popular" (drawn ∝ popularity, power 1); embeddings: (I, d) for "similar";
            scores: (n, C) for "self_hard".
        rng: a Generator or seed for "random", "popular", "shown" and "hallucinated".
    """
    unknown = sorted(set(plan) - set(SAMPLERS))
    if unknown:
        raise ValueError(f"mix_negatives: unknown sampler(s) {unknown}; valid ones are {list(SAMPLERS)}.")
    needs = {"popular": ("popularity", popularity), "similar": ("embeddings", embeddings),
             "self_hard": ("scores", scores)}
    for name, (arg, value) in needs.items():
        if plan.get(name, 0) and value is None:
            raise ValueError(f"mix_negatives: the '{name}' sampler needs {arg}=...; pass it or drop '{name}' "
                             f"from the plan.")
    for name, count in plan.items():
        _check_k(f"mix_negatives[{name!r}]", count, math.inf)
    if not sum(plan.values()):
        raise ValueError(f"mix_negatives: plan {plan} draws no negatives; ask for at least one, e.g. {{'random': 1}}.")
    from_columns = sum(count for name, count in plan.items() if name != "hallucinated")
    _check_k("mix_negatives", from_columns, examples.candidates.shape[1] - 1)
    rng = np.random.default_rng(rng)
    draw: dict[str, Callable[[int, np.ndarray], np.ndarray]] = {
        "random": lambda k, allowed: _random(examples, k, rng, allowed),
        "popular": lambda k, allowed: _popular(examples, k, rng, allowed, popularity, 1.0),
        "similar": lambda k, allowed: _similar(examples, k, allowed, embeddings),
        "self_hard": lambda k, allowed: _self_hard(examples, k, allowed, scores),
        "shown": lambda k, allowed: _shown(examples, k, rng, allowed),
    }
    n = len(examples)
    display = [display_title(str(t)) for t in titles]
    allowed = _non_target(examples)
    items, names, labels = [], [], []
    for name, count in plan.items():
        if name == "hallucinated":
            invented = _hallucinate(examples, count, titles, rng, _catalog_index(titles))
            items.append(np.full((n, count), -1, np.int64))
            names.append(invented)
        else:
            columns = draw[name](count, allowed)
            allowed[np.arange(n)[:, None], columns] = False
            chosen = examples.candidates[np.arange(n)[:, None], columns]
            items.append(chosen)
            names.append([[display[j] for j in row] for row in chosen])
        labels.append([name] * count)
    return Negatives(np.concatenate(items, axis=1),
                     [[t for part in names for t in part[i]] for i in range(n)],
                     [[s for part in labels for s in part] for _ in range(n)])


# ------------------------------------------------------------------------------------------- smoothing

def oracle_epsilon(chosen_values: np.ndarray, rejected_values: np.ndarray, eps_max: float = 0.4, *,
                   rejected_items: np.ndarray | None = None) -> np.ndarray:
    """(n, k) float64 per-pair label smoothing ε = clip(σ(v_l − v_w), 0, eps_max), RosePO-style.

    σ(v_l − v_w) is the oracle's probability that the user prefers the rejected item l over the chosen
    w (a two-item logit choice), so a pair the oracle doubts is trusted less by the cDPO loss
    L = −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ). ε < 0.5 keeps the chosen answer preferred.

    Args:
        chosen_values: (n,) oracle utilities of the chosen items, in logit units (e.g. the
            simulator's ``user_model.item_values(world, users, candidates)`` at the target column).
        rejected_values: (n, k) utilities of the rejected items.
        eps_max: the cap, in [0, 0.5).
        rejected_items: (n, k) item ids of the negatives (``Negatives.items``); hallucinated ones (-1)
            cannot be liked, so they get ε = 0 and their value is ignored (may be NaN).
    """
    if not 0 <= eps_max < 0.5:
        raise ValueError(f"oracle_epsilon: eps_max={eps_max}, expected 0 <= eps_max < 0.5 (at 0.5 a pair carries "
                         f"no preference).")
    chosen = np.asarray(chosen_values, np.float64)
    rejected = np.asarray(rejected_values, np.float64)
    if chosen.ndim != 1 or rejected.ndim != 2 or len(rejected) != len(chosen):
        raise ValueError(f"oracle_epsilon: chosen_values {chosen.shape} and rejected_values {rejected.shape}; "
                         f"expected (n,) and (n, k).")
    real = np.ones(rejected.shape, bool)
    if rejected_items is not None:
        if np.shape(rejected_items) != rejected.shape:
            raise ValueError(f"oracle_epsilon: rejected_items {np.shape(rejected_items)}, expected {rejected.shape} "
                             f"like rejected_values.")
        real = np.asarray(rejected_items) >= 0
    finite = np.isfinite(chosen)[:, None] & np.isfinite(rejected)
    _raise_at_first_row((real & ~finite).any(axis=1),
                        "oracle_epsilon: row {row} has a NaN or Inf value for a real item; the oracle must "
                        "value every chosen and non-hallucinated rejected item.")
    margin = np.where(real, rejected - chosen[:, None], -np.inf)
    prefer_rejected = np.exp(-np.logaddexp(0.0, -margin))  # σ(v_l − v_w), stable for large |margin|
    return np.clip(prefer_rejected, 0.0, eps_max)


# ---------------------------------------------------------------------------------------------- datasets

def preference_dataset(examples: RecExamples, negatives: Negatives, titles: Sequence[str],
                       epsilon: np.ndarray | None = None) -> datasets.Dataset:
    """One preference record per decision, checked by ``validate_preferences``.

    Columns: ``prompt``, ``chosen`` (the target's response), ``rejected`` (k responses),
    ``chosen_item``, ``rejected_items`` (-1 = hallucinated), ``rejected_source``, ``epsilon`` (k
    smoothing factors, zeros when None), ``user``, ``candidates`` (C item ids), ``target`` (column).

    Args:
        titles: (I,) catalog titles (raw); prompts and responses use their display form.
        epsilon: (n, k) from ``oracle_epsilon``, or None for plain (unsmoothed) preferences.
    """
    n, k = negatives.items.shape
    if n != len(examples):
        raise ValueError(f"preference_dataset: {n} rows of negatives for {len(examples)} examples; draw the "
                         f"negatives from these examples.")
    eps = np.zeros((n, k)) if epsilon is None else np.asarray(epsilon, np.float64)
    if eps.shape != (n, k):
        raise ValueError(f"preference_dataset: epsilon has shape {eps.shape}, expected {(n, k)} like negatives.")
    display = [display_title(str(t)) for t in titles]
    target_items = examples.target_items
    ds = datasets.Dataset.from_dict({
        "prompt": prompts_from_ids(examples.history, examples.candidates, display),
        "chosen": [response(display[j]) for j in target_items],
        "rejected": [[response(t) for t in row] for row in negatives.titles],
        "chosen_item": target_items.tolist(),
        "rejected_items": negatives.items.tolist(),
        "rejected_source": [list(row) for row in negatives.source],
        "epsilon": eps.tolist(),
        "user": examples.user.tolist(),
        "candidates": examples.candidates.tolist(),
        "target": examples.target.tolist(),
    }, features=datasets.Features({
        "prompt": datasets.Value("string"),
        "chosen": datasets.Value("string"),
        "rejected": datasets.List(datasets.Value("string")),
        "chosen_item": datasets.Value("int64"),
        "rejected_items": datasets.List(datasets.Value("int64")),
        "rejected_source": datasets.List(datasets.Value("string")),
        "epsilon": datasets.List(datasets.Value("float64")),
        "user": datasets.Value("int64"),
        "candidates": datasets.List(datasets.Value("int64")),
        "target": datasets.Value("int64"),
    }))
    validate_preferences(ds)
    return ds


def sft_dataset(examples: RecExamples, titles: Sequence[str]) -> datasets.Dataset:
    """Supervised records in trl's prompt-completion format: ``prompt``, ``completion`` (the target's
    response), plus ``user``, ``candidates`` and ``target`` for evaluation."""
    display = [display_title(str(t)) for t in titles]
    return datasets.Dataset.from_dict({
        "prompt": prompts_from_ids(examples.history, examples.candidates, display),
        "completion": [response(display[j]) for j in examples.target_items],
        "user": examples.user.tolist(),
        "candidates": examples.candidates.tolist(),
        "target": examples.target.tolist(),
    }, features=datasets.Features({
        "prompt": datasets.Value("string"),
        "completion": datasets.Value("string"),
        "user": datasets.Value("int64"),
        "candidates": datasets.List(datasets.Value("int64")),
        "target": datasets.Value("int64"),
    }))


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def validate_preferences(dataset: datasets.Dataset) -> None:
    """Raise ValueError naming the record and field of the first malformed preference record.

    Checks the columns in ``PREFERENCE_COLUMNS`` exist; every prompt, chosen and rejected entry is a
    non-empty string; no rejected response equals the chosen one; every record has as many rejected
    responses as record 0, and as many rejected_items, rejected_source and epsilon entries as
    responses; each ε is in [0, 0.5); rejected_items never contain the chosen item.
    """
    missing = [c for c in PREFERENCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"validate_preferences: missing column(s) {missing}; a preference dataset needs "
                         f"{list(PREFERENCE_COLUMNS)} (build it with preference_dataset).")
    data = dataset.select_columns(list(PREFERENCE_COLUMNS)).to_dict()
    k = None
    for i in range(len(dataset)):
        row = {c: data[c][i] for c in PREFERENCE_COLUMNS}
        for field in ("prompt", "chosen"):
            if not _is_text(row[field]):
                raise _record_error(i, field, f"{row[field]!r} is not a non-empty string")
        rejected = row["rejected"]
        if not isinstance(rejected, list) or not all(_is_text(r) for r in rejected):
            raise _record_error(i, "rejected", "expected a list of non-empty strings")
        if row["chosen"] in rejected:
            raise _record_error(i, "rejected", f"response {rejected.index(row['chosen'])} equals the chosen response")
        k = len(rejected) if k is None else k
        if len(rejected) != k:
            raise _record_error(i, "rejected", f"{len(rejected)} responses, but record 0 has {k}")
        for field in ("rejected_items", "rejected_source", "epsilon"):
            if len(row[field]) != k:
                raise _record_error(i, field, f"{len(row[field])} entries for {k} rejected responses")
        if not all(0 <= e < 0.5 for e in row["epsilon"]):  # also rejects NaN
            raise _record_error(i, "epsilon", f"{row['epsilon']} has a value outside [0, 0.5)")
        if row["chosen_item"] in row["rejected_items"]:
            raise _record_error(i, "rejected_items", f"contains the chosen item {row['chosen_item']}")


def _record_error(index: int, field: str, problem: str) -> ValueError:
    return ValueError(f"validate_preferences: record {index}, field '{field}': {problem}.")
