"""Paired comparison of two runs on common random numbers, with bootstrap intervals across seeds.

Two runs of the same environment from the same seeds see the same world and the same per-user random
draws (the counter-based streams of ``simenv.rng``), so the per-seed difference of a metric isolates
the policy. Its mean over seeds gets a percentile-bootstrap 95% interval (seeds resampled with
replacement); with few seeds the interval is rough, which ``n_seeds`` makes visible.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from simenv.audit.rundir import Run, seed_table


def bootstrap_mean_ci(values: np.ndarray, resamples: int = 10_000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN, NaN below two values)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare_runs(a: Run, b: Run, resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Per metric: mean of (b - a) over common seeds, its bootstrap 95% interval, and both means.

    Raises when the runs are not comparable: different environments or steps (no common random numbers)
    or no seed in common.
    """
    env_a, env_b = a.manifest["env"], b.manifest["env"]
    differ = sorted(k for k in set(env_a) | set(env_b) if env_a.get(k) != env_b.get(k))
    if differ or a.manifest["steps"] != b.manifest["steps"]:
        what = differ or ["steps"]
        raise ValueError(f"{a.path} and {b.path} ran different environments ({', '.join(map(str, what))} differ): "
                         "a paired comparison needs the same environment and steps.")
    common = sorted(set(a.manifest["seeds"]) & set(b.manifest["seeds"]))
    if not common:
        raise ValueError(f"{a.path} (seeds {a.manifest['seeds']}) and {b.path} (seeds {b.manifest['seeds']}) share "
                         "no seed: common random numbers need the same seeds.")
    ta, tb = _rows(a, common), _rows(b, common)
    metrics: dict[str, Any] = {}
    for name in sorted(set(ta) & set(tb)):
        d = tb[name] - ta[name]
        ok = np.isfinite(d)
        if not ok.any():
            continue
        lo, hi = bootstrap_mean_ci(d[ok], resamples, seed=seed)
        metrics[name] = {"a": float(np.nanmean(ta[name])), "b": float(np.nanmean(tb[name])),
                         "diff": float(d[ok].mean()), "ci_low": lo, "ci_high": hi, "n_seeds": int(ok.sum())}
    return {"a": a.name, "b": b.name, "seeds": common, "metrics": metrics}


def _rows(run: Run, seeds: list[int]) -> dict[str, np.ndarray]:
    table = seed_table(run)
    pick = [run.manifest["seeds"].index(s) for s in seeds]
    return {k: v[pick] for k, v in table.items()}
