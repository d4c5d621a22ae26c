"""Measurements recorded while the environment runs (T-RECS's measurement objects, batched).

Two cadences keep the audit cheap enough to stay on:

- **every step**, one fused kernel over the served users accumulates what needs every slate
  (recommendation popularity, long-tail share, novelty, clicks and ratings per user group, head/tail
  counts) and scatters item exposure (plain, position-weighted, consumed). It touches k item ids per
  user, next to the user model's k x K x d affinities, so it costs a few percent of a step.
- **every ``interval`` ticks**, a *snapshot* measures what needs the state or pairwise work on a
  sample: calibration, intra-list diversity, popularity lift and PopREO on rows served that step
  (before they respond, so histories are what the slate was made for), and homogenization on a
  fixed sample of users (after the step), through the serial kernels of ``simenv.audit.kernels``,
  and each genre's share of the clicks since the last snapshot (``genre_share.<genre>``), which
  shows a scheduled interest shift (``simenv.scenarios``) take hold.
  The sample is ``sample_users`` rows, fewer in a small world (``sample_share``), so a snapshot
  stays a bounded share of the work between snapshots.

``experiments/bench_env.py`` measures the overhead against the same configurations with the audit off.
``summary()`` turns the accumulators into named metrics; a metric that does not exist for the run
(nothing clicked, a single user group, no history yet) is NaN and ``notes`` says why.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from numba import njit, prange

from simenv.audit import exposure, fairness, homogenization, kernels, popularity
from simenv.audit.errors import UndefinedMetric
from simenv.audit.hallucination import Grounding, hallucination_rates

if TYPE_CHECKING:
    from simenv.world import World

# per-chunk accumulator columns of the streaming kernel; per-group columns follow
_SERVED, _POP, _TAIL, _NOVELTY, _CLICKS, _RATING, _REC_HEAD, _REC_TAIL, _CLICK_HEAD, _CLICK_TAIL = range(10)
_FIXED = 10
_CHUNK = 1024


@dataclass(frozen=True)
class AuditConfig:
    """What the audit records (``gym.make(..., audit={...})``; ``audit=False`` switches it off)."""

    enabled: bool = True
    interval: int = 10  # world ticks between snapshots
    sample_users: int = 256  # rows per snapshot and users followed for homogenization, at most
    sample_share: float = 0.01  # ... and at most this share of the user-steps between snapshots (64 at least)
    groups: tuple[str, ...] = fairness.USER_ATTRIBUTES  # persona attributes to compare users by
    head_share: float = 0.8  # the short head holds this share of popularity
    alpha: float = 0.01  # Steck's calibration smoothing

    def __post_init__(self) -> None:
        if isinstance(self.groups, str):
            object.__setattr__(self, "groups", (self.groups,))
        object.__setattr__(self, "groups", tuple(self.groups))
        for g in self.groups:
            if g not in fairness.USER_ATTRIBUTES:
                raise ValueError(f"audit.groups: attribute {g!r} does not exist; use any of {fairness.USER_ATTRIBUTES}.")
        for name in ("interval", "sample_users"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"audit.{name}={v!r}: must be a positive integer.")
        if not 0 < self.sample_share <= 1:
            raise ValueError(f"audit.sample_share={self.sample_share!r}: must be in (0, 1].")
        if not 0 < self.head_share < 1 or not 0 < self.alpha < 1:
            raise ValueError("audit.head_share and audit.alpha must be in (0, 1).")


def _stream_body(users, active, slates, choice, rating, items, group_codes, out):
    """out[chunk] += per-chunk sums over the served rows (columns as in the module constants).

    ``items`` (I, 3) holds each item's popularity share, self-information and tail flag in one row, so
    a slate item costs one cache line, not three.
    """
    n, k = slates.shape
    n_attr = group_codes.shape[0]
    for chunk in prange(out.shape[0]):
        acc = out[chunk]
        for b in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if not active[b]:
                continue
            u = users[b]
            p = 0.0
            t = 0.0
            nov = 0.0
            for j in range(k):
                item = slates[b, j]
                p += items[item, 0]
                nov += items[item, 1]
                t += items[item, 2]
            acc[_SERVED] += 1.0
            acc[_POP] += p / k
            acc[_TAIL] += t / k
            acc[_NOVELTY] += nov / k
            acc[_REC_TAIL] += t
            acc[_REC_HEAD] += k - t
            c = choice[b]
            r = 0.0
            if c >= 0:
                r = rating[b]
                is_tail = items[slates[b, c], 2]
                acc[_CLICKS] += 1.0
                acc[_RATING] += r
                acc[_CLICK_TAIL] += is_tail
                acc[_CLICK_HEAD] += 1.0 - is_tail
            for a in range(n_attr):
                g = _FIXED + 3 * group_codes[a, u]
                acc[g] += 1.0
                acc[g + 1] += 1.0 if c >= 0 else 0.0
                acc[g + 2] += r


_stream = njit(parallel=True, cache=True)(_stream_body)
_stream_serial = njit(cache=True)(_stream_body)


@njit(cache=True)
def _expose(slates, active, choice, weights, exposure):
    """Serial scatter into exposure (I, 3) = (shown, position-weighted shown, consumed); a parallel
    scatter would race on popular items. Returns the number of items shown for the first time."""
    new = 0
    for b in range(slates.shape[0]):
        if not active[b]:
            continue
        for j in range(slates.shape[1]):
            item = slates[b, j]
            if exposure[item, 0] == 0:
                new += 1
            exposure[item, 0] += 1.0
            exposure[item, 1] += weights[j]
        if choice[b] >= 0:
            exposure[slates[b, choice[b]], 2] += 1.0
    return new


@njit(cache=True)
def _stream_and_expose(users, active, slates, choice, rating, items, group_codes, weights, exposure, out):
    """Both passes in one call, for a step of one chunk."""
    _stream_serial(users, active, slates, choice, rating, items, group_codes, out)
    return _expose(slates, active, choice, weights, exposure)


class Monitor:
    """Accumulates the audit of one run of a ``Simulation`` (see the module docstring).

    ``Simulation`` calls ``reset`` at each restart, ``before_step`` and ``after_step`` around each
    step; LLM recommenders report what they emitted with ``record_generations``.
    """

    def __init__(self, config: AuditConfig, slate_size: int) -> None:
        self.config = config
        self.slate_size = slate_size
        self._position_w = exposure.position_weights(slate_size)

    # lifecycle -----------------------------------------------------------------------------------
    def reset(self, world: "World") -> None:
        """Start a fresh record for a world at time zero."""
        cfg, cat, p = self.config, world.catalog, world.population
        self.num_items = cat.num_items
        self.popularity = popularity.shares(cat.popularity)
        self.tail = popularity.long_tail(self.popularity, cfg.head_share)
        self._inv_norm = 1.0 / np.maximum(np.linalg.norm(cat.embeddings, axis=1), 1e-12)
        info = -np.log2(np.maximum(self.popularity, self.popularity[self.popularity > 0].min()))
        self._items = np.stack([self.popularity, info, self.tail], axis=1)  # one row per item for the kernel
        self.group_names: dict[str, tuple[str, ...]] = {}
        codes, offset = [], 0
        for attr in cfg.groups:
            c, names = fairness.user_groups(p.persona, attr)
            codes.append(c + offset)
            self.group_names[attr] = names
            offset += len(names)
        self._codes = np.stack(codes) if codes else np.zeros((0, world.num_users), np.int64)
        self._num_groups = offset
        self._acc = np.zeros(_FIXED + 3 * offset)
        self._partial: np.ndarray | None = None
        self._exposure = np.zeros((cat.num_items, 3))
        self.shown, self.shown_weighted, self.consumed = self._exposure.T  # views: counts per item
        self._distinct = 0
        self._window_start = self.shown.copy()
        self._consumed_start = self.consumed.copy()
        self._genres = cat.genres.astype(np.float64)
        self._genre_keys = [f"genre_share.{g}" for g in cat.genre_names]
        self.steps: dict[str, list[float]] = {k: [] for k in ("served", "ctr", "arp", "aplt", "novelty", "coverage")}
        self.snapshots: dict[str, list[float]] = {}
        self._reo = np.zeros(4)  # hits head, hits tail, relevant head, relevant tail
        self.generation_counts: dict[str, int] = {}
        self.fallbacks = 0  # user-steps answered by the fallback user model
        self.notes: dict[str, str] = {}
        # users followed by the homogenization snapshots: a fixed sample, its initial tastes, and pairs
        rng = np.random.default_rng([int(world.key) & 0xFFFFFFFF, 0xA0D17])
        m = self.sample = self.sample_size(world.num_users)
        self.followed = np.sort(rng.choice(world.num_users, m, replace=False))
        self._taste0 = homogenization.tastes(p.interests[self.followed], p.weights[self.followed])
        if m >= 2:
            gram = self._taste0 @ self._taste0.T
            np.fill_diagonal(gram, -np.inf)
            self._nn = gram.argmax(axis=1)  # Chaney's pairs: the most similar other user at time zero
            self._rand = (np.arange(m) + rng.integers(1, m, size=m)) % m  # a random other user
        self._pending: dict[str, float] | None = None  # before_step's snapshot part, finished in after_step

    def sample_size(self, num_users: int) -> int:
        """Rows a snapshot reads. A row costs several user-steps of work, so in a small world a fixed
        sample would cost more than the steps between snapshots; the share keeps it a bounded part."""
        cfg = self.config
        by_share = max(64, math.ceil(cfg.sample_share * num_users * cfg.interval))
        return min(num_users, cfg.sample_users, by_share)

    def due(self, clock: int) -> bool:
        """Whether the step that ends at tick ``clock + 1`` takes a snapshot."""
        return (clock + 1) % self.config.interval == 0

    # per step ------------------------------------------------------------------------------------
    def before_step(self, world: "World", user_model: Any, users: np.ndarray, candidates: np.ndarray,
                    positions: np.ndarray, active: np.ndarray) -> None:
        """Snapshot metrics on the state the slates were made for (call only when ``due``)."""
        rows = np.flatnonzero(active)[: self.sample]
        if len(rows) == 0:
            return
        u, cand, pos = users[rows], candidates[rows], positions[rows]
        slates = np.take_along_axis(cand, pos, axis=1)
        hist = world.population.recent_items(u)
        cat = world.catalog
        rows_out = np.empty((len(rows), 4))
        kernels.slate_rows(hist, slates, cat.genres, cat.embeddings, self._inv_norm, self.popularity,
                           self.config.alpha, rows_out)
        calibration, ild, gap_p, gap_r = rows_out.T
        has_history = np.isfinite(gap_p)
        snap: dict[str, float] = {"clock": float(world.clock + 1)}
        snap["miscalibration"] = self._mean("miscalibration", calibration[has_history],
                                            "miscalibration: no user has a history yet.")
        snap["ild"] = self._mean("ild", ild, "intra-list diversity needs slates of at least 2 items.")
        snap["popularity_lift"] = self._safe("popularity_lift", lambda: popularity.lift(gap_p[has_history],
                                                                                        gap_r[has_history]))
        if hasattr(user_model, "item_values"):
            # relevant = the candidates the true user model ranks in its top k (known only in a simulator)
            values = user_model.item_values(world, u, cand)
            kernels.relevance_counts(values, cand, slates, self.tail, self._reo)
        else:
            self.notes["pop_reo"] = f"the user model {type(user_model).__name__} exposes no item_values, " \
                                    "so relevance is unknown"
        self._pending = snap

    def after_step(self, world: "World", users: np.ndarray, slates: np.ndarray, choice: np.ndarray,
                   rating: np.ndarray, active: np.ndarray, snapshot: bool, fallback: np.ndarray | None = None) -> None:
        """Accumulate one step (every step) and, when ``snapshot``, measure the population.

        ``fallback`` flags the rows an LLM user model could not answer (the embedded model did)."""
        if fallback is not None and fallback.any():
            self.fallbacks += int((fallback & active).sum())
        n = len(users)
        chunks = (n + _CHUNK - 1) // _CHUNK
        if self._partial is None or self._partial.shape[0] != chunks:
            self._partial = np.zeros((chunks, len(self._acc)))
        else:
            self._partial.fill(0.0)
        if chunks == 1:
            self._distinct += _stream_and_expose(users, active, slates, choice, rating, self._items, self._codes,
                                                 self._position_w, self._exposure, self._partial)
            step = self._partial[0]
        else:
            _stream(users, active, slates, choice, rating, self._items, self._codes, self._partial)
            step = self._partial.sum(axis=0)
            self._distinct += _expose(slates, active, choice, self._position_w, self._exposure)
        self._acc += step
        served = step[_SERVED]
        s = self.steps
        s["served"].append(served)
        for key, col in (("ctr", _CLICKS), ("arp", _POP), ("aplt", _TAIL), ("novelty", _NOVELTY)):
            s[key].append(step[col] / served if served else math.nan)
        s["coverage"].append(self._distinct / self.num_items)
        if snapshot:
            self._snapshot(world)

    def _snapshot(self, world: "World") -> None:
        snap = self._pending or {"clock": float(world.clock)}
        self._pending = None
        window = self.shown - self._window_start
        self._window_start = self.shown.copy()
        snap["gini_window"] = self._safe("gini_window", lambda: exposure.gini_of_counts(window))
        snap["coverage_window"] = exposure.coverage(window)
        snap["gini"] = self._safe("gini", lambda: exposure.gini_of_counts(self.shown))
        # each genre's share of the clicks since the last snapshot: what a trend (an interest shift) moves
        eaten = self.consumed - self._consumed_start
        self._consumed_start = self.consumed.copy()
        total = eaten.sum()
        shares = eaten @ self._genres / total if total > 0 else np.full(len(self._genre_keys), math.nan)
        snap.update(zip(self._genre_keys, shares.tolist()))
        p, f = world.population, self.followed
        if len(f) >= 2:
            t = np.empty((len(f), p.interests.shape[2]))
            rows = np.empty((len(f), 5))
            kernels.followed_rows(f, p.recent_items(f), self._nn, self._rand, world.catalog.genres, p.interests,
                                  p.weights, world.social.indptr, world.social.indices, t, rows)
            similar, random, entropy, cosines, degree = rows.T
            why = "consumption similarity: no pair or user has data yet."
            snap["similarity_nn"] = self._mean("similarity_nn", similar, why)
            snap["similarity_random"] = self._mean("similarity_random", random, why)
            snap["dispersion"], snap["mean_cosine"] = homogenization.dispersion(t)
            snap["drift"] = float(1.0 - np.einsum("bd,bd->b", t, self._taste0).mean())
            snap["genre_entropy"] = self._mean("genre_entropy", entropy, "genre entropy: no pair or user has data yet.")
            snap["neighbor_similarity"] = self._safe("neighbor_similarity", lambda: cosines.sum() / degree.sum()
                                                     if degree.sum() > 0 else self._undefined(
                "neighbor similarity: the users have no neighbors (empty social graph)."))
            snap["random_pair_similarity"] = float(np.einsum("bd,bd->b", t, t[self._rand]).mean())
            snap["echo_excess"] = snap["neighbor_similarity"] - snap["random_pair_similarity"]
        for key, value in snap.items():
            self.snapshots.setdefault(key, []).append(value)

    @staticmethod
    def _undefined(reason: str) -> float:
        raise UndefinedMetric(reason)

    def _mean(self, name: str, values: np.ndarray, reason: str) -> float:
        """Mean of the finite values; NaN (and ``reason`` noted) when there is none."""
        v = values[np.isfinite(values)]
        return self._safe(name, lambda: v.mean() if len(v) else self._undefined(reason))

    # LLM recommenders ------------------------------------------------------------------------------
    def record_generations(self, grounding: Grounding, valid: np.ndarray | None = None) -> None:
        """Count what an LLM recommender emitted this step (see ``simenv.audit.hallucination``).

        ``valid`` is LLaRA's per-answer validity, when the recommender answers candidate-list prompts.
        """
        for key, value in grounding.counts().items():
            self.generation_counts[key] = self.generation_counts.get(key, 0) + value
        if valid is not None:
            v = np.asarray(valid, bool)
            self.generation_counts["answers"] = self.generation_counts.get("answers", 0) + int(v.size)
            self.generation_counts["valid"] = self.generation_counts.get("valid", 0) + int(v.sum())

    # results -------------------------------------------------------------------------------------
    def _safe(self, name: str, fn: Callable[[], float]) -> float:
        try:
            return float(fn())
        except UndefinedMetric as err:
            self.notes.setdefault(name, str(err))
            return math.nan

    def summary(self) -> dict[str, Any]:
        """The run's metrics by family, JSON-ready; NaN entries have a reason in ``notes``."""
        a = self._acc
        served = a[_SERVED]

        def ratio(num: float, den: float, name: str, why: str) -> float:
            return self._safe(name, lambda: num / den if den > 0 else self._undefined(why))

        def last(key: str) -> float:
            v = self.snapshots.get(key, [])
            return v[-1] if v else math.nan

        def first(key: str) -> float:
            v = self.snapshots.get(key, [])
            return v[0] if v else math.nan

        def mean(key: str) -> float:
            v = np.asarray(self.snapshots.get(key, []), np.float64)
            v = v[np.isfinite(v)]
            return float(v.mean()) if len(v) else math.nan

        n_tail = int(self.tail.sum())
        head_items, tail_items = self.num_items - n_tail, n_tail
        out: dict[str, Any] = {
            "engagement": {
                "user_steps": int(served),
                "ctr": ratio(a[_CLICKS], served, "ctr", "no user was served"),
                "mean_rating": ratio(a[_RATING], a[_CLICKS], "mean_rating", "no click, so no rating"),
                "fallback_share": ratio(self.fallbacks, served, "fallback_share", "no user was served"),
            },
            "popularity": {
                "arp": ratio(a[_POP], served, "arp", "no user was served"),
                "arp_relative": ratio(a[_POP] * self.num_items, served, "arp", "no user was served"),
                "aplt": ratio(a[_TAIL], served, "aplt", "no user was served"),
                "tail_items": tail_items,
                "popularity_lift": mean("popularity_lift"),
                "pop_rsp": self._safe("pop_rsp", lambda: popularity.pop_rsp(
                    [a[_REC_HEAD], a[_REC_TAIL]], [served * head_items, served * tail_items])),
                "pop_reo": self._safe("pop_reo", lambda: popularity.pop_reo(self._reo[:2], self._reo[2:])),
                "click_tail_share": ratio(a[_CLICK_TAIL], a[_CLICKS], "click_tail_share", "no click"),
            },
            "exposure": {
                "gini": self._safe("gini", lambda: exposure.gini(self.shown)),
                "gini_position_weighted": self._safe("gini", lambda: exposure.gini(self.shown_weighted)),
                "entropy": self._safe("entropy", lambda: exposure.entropy(self.shown)),
                "coverage": exposure.coverage(self.shown),
                "top1_share": self._safe("top1_share", lambda: exposure.top_share(self.shown, 0.01)),
                "consumption_gini": self._safe("consumption_gini", lambda: exposure.gini(self.consumed)),
                "tail_vs_head_exposure_per_item": self._safe("tail_vs_head_exposure_per_item", lambda: (
                    lambda e: e["tail"] / e["head"] if e["head"] > 0 else self._undefined("no head exposure"))(
                    fairness.exposure_by_item_group(self.shown, self.tail.astype(np.int64), ("head", "tail")))),
            },
            "slates": {
                "miscalibration": mean("miscalibration"),
                "ild": mean("ild"),
                "novelty": ratio(a[_NOVELTY], served, "novelty", "no user was served"),
            },
            "fairness": self._fairness(),
            "homogenization": {
                key: {"first": first(key), "last": last(key), "change": last(key) - first(key)}
                for key in ("similarity_nn", "similarity_random", "dispersion", "mean_cosine", "drift",
                            "genre_entropy", "neighbor_similarity", "echo_excess")
            },
        }
        if self.generation_counts:
            out["llm"] = {**self.generation_counts, **hallucination_rates(self.generation_counts)}
        out["notes"] = dict(self.notes)
        return out

    def _fairness(self) -> dict[str, Any]:
        out = {}
        a = self._acc
        offset = 0
        for attr, names in self.group_names.items():
            cols = _FIXED + 3 * (offset + np.arange(len(names)))
            served, clicks, ratings = a[cols], a[cols + 1], a[cols + 2]
            seen = served > 0
            ctr = fairness.rates(clicks[seen], served[seen], tuple(np.asarray(names)[seen]))
            rating = fairness.rates(ratings[seen], clicks[seen], tuple(np.asarray(names)[seen]))
            try:
                gap, gap_ratio = fairness.gap(ctr)
            except UndefinedMetric as err:
                self.notes.setdefault(f"ctr_gap[{attr}]", str(err))
                gap = gap_ratio = math.nan
            out[attr] = {"ctr": ctr, "mean_rating": rating, "served": dict(zip(np.asarray(names)[seen].tolist(),
                                                                                  served[seen].tolist())),
                         "ctr_gap": gap, "ctr_ratio": gap_ratio}
            offset += len(names)
        return out

    def series(self) -> dict[str, np.ndarray]:
        """Time series (per step ``step.*``, per snapshot ``snap.*``), exposure and the Lorenz curve."""
        out = {f"step.{k}": np.asarray(v, np.float64) for k, v in self.steps.items()}
        out.update({f"snap.{k}": np.asarray(v, np.float64) for k, v in self.snapshots.items()})
        out["exposure"] = self.shown.copy()
        out["consumed"] = self.consumed.copy()
        out["tail"] = self.tail.copy()
        if self.shown.sum() > 0:
            out["lorenz.items"], out["lorenz.exposure"] = exposure.lorenz(self.shown, points=201)
        return out

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``audit.json`` (summary, audit config, ``extra``) and ``audit.npz`` (series) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "audit.npz", **self.series())
        doc = {"summary": self.summary(), "audit_config": asdict(self.config), **(extra or {})}
        (folder / "audit.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
        return folder


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")
