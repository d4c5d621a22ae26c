"""``recsim-llm report RUN_DIR``: the bias and steering report of a run (or a folder of runs).

Writes ``report.md``, a self-contained ``report.html`` (plots inlined) and ``metrics.json`` (every
scalar metric per run: mean over seeds, 95% t-interval, per-seed values) into RUN_DIR, with the
plots in ``RUN_DIR/plots/``: the exposure Lorenz curve, popularity and homogenization over time,
engagement per user group, and the steering trade-off curve when a steering result is present.
Markdown and HTML are rendered from one list of blocks, so they always say the same thing.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from simenv.audit.rundir import Run, find_runs, read_run, seed_table

KEY_METRICS = (
    ("engagement.ctr", "CTR"),
    ("engagement.mean_rating", "mean rating"),
    ("popularity.arp_relative", "ARP (x the average item)"),
    ("popularity.aplt", "APLT (long-tail share)"),
    ("popularity.popularity_lift", "popularity lift ΔGAP"),
    ("popularity.pop_rsp", "PopRSP"),
    ("popularity.pop_reo", "PopREO"),
    ("exposure.gini", "exposure Gini"),
    ("exposure.entropy", "exposure entropy"),
    ("exposure.coverage", "catalog coverage"),
    ("exposure.top1_share", "top-1% exposure share"),
    ("slates.miscalibration", "miscalibration C_KL"),
    ("slates.ild", "intra-list diversity"),
    ("slates.novelty", "novelty (bits)"),
    ("homogenization.similarity_nn.last", "consumption similarity, similar users"),
    ("homogenization.similarity_random.last", "consumption similarity, random pairs"),
    ("homogenization.dispersion.change", "change of interest dispersion"),
    ("homogenization.drift.last", "interest drift from t=0"),
    ("homogenization.echo_excess.last", "echo excess (neighbors - random pairs)"),
)

Block = tuple  # ("h1"|"h2"|"p", text) | ("table", header, rows) | ("img", path, caption)


def mean_ci(values: np.ndarray) -> dict[str, Any]:
    """Mean over seeds with a 95% t-interval (NaN bounds for a single seed)."""
    v = np.asarray(values, np.float64)
    ok = v[np.isfinite(v)]
    out = {"mean": float(ok.mean()) if len(ok) else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "seeds": v.tolist()}
    if len(ok) >= 2:
        half = stats.t.ppf(0.975, len(ok) - 1) * ok.std(ddof=1) / math.sqrt(len(ok))
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def t_interval(values) -> tuple[float, float]:
    """``mean_ci`` as (mean, half-width) for tables written as "m ± h" (half-width NaN for one seed)."""
    ci = mean_ci(np.asarray(list(values), np.float64))
    return ci["mean"], float(ci["ci_high"] - ci["mean"])


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _cell(m: dict[str, Any]) -> str:
    if not np.isfinite(m["ci_low"]):
        return _fmt(m["mean"])
    return f"{_fmt(m['mean'])} ± {_fmt((m['ci_high'] - m['ci_low']) / 2)}"


# plots ---------------------------------------------------------------------------------------------
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_series(run: Run, key: str) -> np.ndarray | None:
    rows = [s.series[key] for s in run.seeds if key in s.series]
    if not rows:
        return None
    n = min(len(r) for r in rows)
    return np.nanmean(np.stack([r[:n] for r in rows]), axis=0) if n else None


def plot_lorenz(runs: list[Run], path: Path) -> Path:
    from simenv.audit.exposure import lorenz

    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="equal exposure")
    for run in runs:
        shown = np.sum([s.series["exposure"] for s in run.seeds], axis=0)
        if shown.sum() > 0:
            x, y = lorenz(shown, points=401)
            ax.plot(x, y, lw=2, label=run.name)
    ax.set(xlabel="share of items (least exposed first)", ylabel="share of exposure", title="Exposure Lorenz curve")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_popularity(runs: list[Run], path: Path) -> Path:
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run in runs:
        items = len(run.seeds[0].series["exposure"])
        for ax, key, scale in ((axes[0], "step.arp", items), (axes[1], "step.aplt", 1), (axes[2], "step.coverage", 1)):
            y = _mean_series(run, key)
            if y is not None:
                ax.plot(np.arange(1, len(y) + 1), y * scale, label=run.name)
    for ax, title in zip(axes, ("ARP (x the average item)", "long-tail share of slates", "catalog coverage so far")):
        ax.set(xlabel="step", title=title)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_homogenization(runs: list[Run], path: Path) -> Path:
    plt = _figure()
    keys = (("snap.similarity_nn", "consumption similarity (similar users)"),
            ("snap.similarity_random", "consumption similarity (random pairs)"),
            ("snap.dispersion", "interest dispersion (trace cov)"),
            ("snap.echo_excess", "echo excess (neighbors - random)"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for run in runs:
        clock = _mean_series(run, "snap.clock")
        for ax, (key, _) in zip(axes, keys):
            y = _mean_series(run, key)
            if y is not None and clock is not None:
                ax.plot(clock[: len(y)], y, marker="o", ms=3, label=run.name)
    for ax, (_, title) in zip(axes, keys):
        ax.set(xlabel="world tick", title=title)
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def shift_ticks(run: Run) -> list[tuple[int, str]]:
    """(tick, genre) of the interest shifts scheduled in a run's world (``dynamics.shifts``)."""
    shifts = (run.manifest.get("env", {}).get("dynamics") or {}).get("shifts") or []
    return [(int(s["at"]), str(s["genre"])) for s in shifts if isinstance(s, dict)]


def plot_genres(runs: list[Run], path: Path, top: int = 6) -> Path:
    """Each run's genre shares of clicks over time (the ``top`` genres by their largest share, and
    every shifted-to genre), the scheduled shifts marked."""
    plt = _figure()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 1.5, 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        clock = _mean_series(run, "snap.clock")
        series = {k.split(".", 2)[2]: _mean_series(run, k) for k in run.seeds[0].series if k.startswith("snap.genre_share.")}
        trend = {g for _, g in shift_ticks(run)}
        peak = sorted(series, key=lambda g: -np.nanmax(series[g]) if np.isfinite(series[g]).any() else 0.0)
        for g in [*trend, *[g for g in peak if g not in trend][: max(top - len(trend), 0)]]:
            if g in series and clock is not None:
                ax.plot(clock[: len(series[g])], series[g], marker="o", ms=3, lw=2.5 if g in trend else 1.2, label=g)
        for tick, g in shift_ticks(run):
            ax.axvline(tick, color="grey", ls="--", lw=1)
        ax.set(xlabel="world tick", title=f"{run.name}: genre share of clicks")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_groups(runs: list[Run], path: Path) -> Path:
    plt = _figure()
    attrs = [a for a in ("gender", "age_band", "occupation") if a in runs[0].seeds[0].summary.get("fairness", {})]
    fig, axes = plt.subplots(1, max(len(attrs), 1), figsize=(5 * max(len(attrs), 1) + 3, 3.8), squeeze=False)
    for ax, attr in zip(axes[0], attrs):
        groups = list(runs[0].seeds[0].summary["fairness"][attr]["ctr"])
        width = 0.8 / len(runs)
        for j, run in enumerate(runs):
            ctr = [np.nanmean([s.summary["fairness"][attr]["ctr"].get(g, math.nan) for s in run.seeds]) for g in groups]
            ax.bar(np.arange(len(groups)) + j * width, ctr, width, label=run.name)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=60, ha="right", fontsize=7)
        ax.set(title=f"CTR by {attr}", ylabel="CTR")
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def plot_steering(result: dict[str, Any], path: Path) -> Path:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sweep = sorted(result["sweep"], key=lambda r: r["greedy"]["damage"])
    for method, style in (("greedy", "-o"), ("random", "--s")):
        pts = sorted((r[method]["damage"], r[method]["ioip"]) for r in result["sweep"])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=4,
                label="greedy (NIRec-style)" if method == "greedy" else "random neighbors, same count")
    for r in sweep:
        ax.annotate(f"λ={r['lambda']:g}", (r["greedy"]["damage"], r["greedy"]["ioip"]), fontsize=6)
    ax.scatter([0], [result["direct"]["ioip"]], color="black", zorder=3, label="direct exposure only")
    ax.axhline(0, color="grey", lw=1, ls=":")
    ax.set(xlabel="damage to neighbors (expected clicks lost)", ylabel="IoIP (relative acceptance uplift)",
           title=f"Steering toward {result['item_title'][:40]}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figure().close(fig)
    return path


# the report ----------------------------------------------------------------------------------------
def write_report(folder: str | Path) -> dict[str, Path]:
    """Read the run(s) at ``folder`` and write report.md, report.html, metrics.json and plots/ there."""
    folder = Path(folder)
    runs = [read_run(p) for p in find_runs(folder)]
    steering = _optional(folder / "steering.json") or next((r.steering for r in runs if r.steering), None)
    ope = _optional(folder / "ope.json") or next((r.ope for r in runs if r.ope), None)
    metrics = {run.name: {k: mean_ci(v) for k, v in seed_table(run).items()} for run in runs}
    plots = folder / "plots"
    figures = [
        (plot_lorenz(runs, plots / "lorenz.png"), "Exposure Lorenz curve (exposure summed over seeds)"),
        (plot_popularity(runs, plots / "popularity_over_time.png"), "Popularity bias and coverage over time"),
        (plot_homogenization(runs, plots / "homogenization_over_time.png"), "Homogenization and echo chambers"),
        (plot_groups(runs, plots / "groups.png"), "Engagement per user group"),
    ]
    if any(k.startswith("snap.genre_share.") for r in runs for k in r.seeds[0].series):
        shifted = any(shift_ticks(r) for r in runs)
        figures.append((plot_genres(runs, plots / "genres_over_time.png"),
                        "Genre shares of clicks over time" + (" (dashed: the scheduled interest shift)" if shifted else "")))
    if steering:
        figures.append((plot_steering(steering, plots / "steering_tradeoff.png"), "Steering trade-off (λ sweep)"))
    blocks = _blocks(folder, runs, metrics, steering, ope, figures)
    doc = {"runs": {r.name: {"path": str(r.path), "policy": r.manifest["policy"], "seeds": r.manifest["seeds"],
                             "steps": r.manifest["steps"], "env": r.manifest["env"]} for r in runs},
           "metrics": metrics, "notes": {r.name: r.seeds[0].summary.get("notes", {}) for r in runs}}
    if steering:
        doc["steering"] = steering
    if ope:
        doc["ope"] = ope
    out = {"metrics": folder / "metrics.json", "markdown": folder / "report.md", "html": folder / "report.html"}
    out["metrics"].write_text(json.dumps(doc, indent=1, default=str))
    out["markdown"].write_text(_markdown(blocks, folder))
    out["html"].write_text(_html(blocks))
    return {**out, **{p.stem: p for p, _ in figures}}


def _optional(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _blocks(folder: Path, runs: list[Run], metrics: dict, steering: dict | None, ope: dict | None,
            figures: list[tuple[Path, str]]) -> list[Block]:
    first = runs[0].manifest
    env = first["env"]
    b: list[Block] = [
        ("h1", f"Bias and steering report: {folder.name}"),
        ("p", f"{len(runs)} run(s): {', '.join(r.name for r in runs)}; {first['steps']} steps, "
              f"{first.get('num_users', env.get('num_users', '?'))} users, seeds {first['seeds']}. "
              "Values are means over seeds ± the half-width of a 95% t-interval."),
        ("h2", "Key metrics"),
        ("table", ["metric"] + [r.name for r in runs],
         [[label] + [_cell(metrics[r.name][key]) if key in metrics[r.name] else "n/a" for r in runs]
          for key, label in KEY_METRICS]),
        ("h2", "Fairness across user groups"),
        ("table", ["attribute", "measure"] + [r.name for r in runs],
         [[attr, what] + [_cell(metrics[r.name][f"fairness.{attr}.{key}"])
                          if f"fairness.{attr}.{key}" in metrics[r.name] else "n/a" for r in runs]
          for attr in runs[0].seeds[0].summary.get("fairness", {})
          for key, what in (("ctr_gap", "CTR gap (max - min)"), ("ctr_ratio", "CTR ratio (min / max)"))]),
    ]
    notes = {f"{r.name}: {k}": v for r in runs for k, v in r.seeds[0].summary.get("notes", {}).items()}
    if notes:
        b += [("h2", "Undefined metrics"), ("table", ["metric", "why"], [[k, v] for k, v in notes.items()])]
    llm = [r for r in runs if "llm" in r.seeds[0].summary]
    if llm:
        keys = ("hallucination_rate", "out_of_candidate_rate", "duplicate_rate", "valid_ratio")
        b += [("h2", "LLM recommender health"),
              ("table", ["run"] + list(keys), [[r.name] + [_cell(metrics[r.name][f"llm.{k}"]) for k in keys]
                                              for r in llm])]
    if steering:
        b += [("h2", "Steering through neighbors"),
              ("p", f"Item: {steering['item_title']}; {len(steering['config']['targets'])} targets, "
                    f"{steering['candidate_neighbors']} candidate neighbors, {steering['config']['steps']} steps, "
                    f"base recommender {steering['config']['base_policy']}. IoIP and damage are paired with the "
                    "no-steering reference run."),
              ("table", ["method", "λ", "neighbors exposed", "IoIP", "damage", "interest shift", "acceptance rate",
                         "median time to acceptance"],
               [["direct", "-", "0"] + _steer_row(steering["direct"])]
               + [[m, f"{r['lambda']:g}", str(r[m]["exposed_neighbors"])] + _steer_row(r[m])
                  for r in steering["sweep"] for m in ("greedy", "random")])]
    if ope:
        b += [("h2", "Off-policy evaluation check"),
              ("p", f"Truth of the target policy on the logged states {_fmt(ope['truth_logged_states'])}, "
                    f"on-policy {_fmt(ope['truth_on_policy'])}."),
              ("table", ["estimator", "estimate", "95% CI", "error vs logged-state truth", "error vs on-policy"],
               [[name, _fmt(e["value"]), f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]",
                 f"{e['rel_error_logged']:+.1%}", f"{e['rel_error_on_policy']:+.1%}"]
                for name, e in ope["estimators"].items()])]
    b.append(("h2", "Plots"))
    b += [("img", path, caption) for path, caption in figures]
    return b


def _steer_row(m: dict[str, Any]) -> list[str]:
    return [_fmt(m["ioip"]), _fmt(m["damage"]), _fmt(m["interest_shift"]), _fmt(m["acceptance_rate"]),
            _fmt(m["median_time_to_acceptance"])]


def _markdown(blocks: list[Block], folder: Path) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1].relative_to(folder).as_posix()})", ""]
    return "\n".join(lines)


def _html(blocks: list[Block]) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}">'
                        f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "font-size:13px}th{background:#f3f3f3}img{max-width:100%}figcaption{color:#555;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>recsim-llm report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
