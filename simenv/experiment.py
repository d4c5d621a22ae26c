"""Experiments from a YAML file: ``recsim-llm run CONFIG.yaml`` on a laptop or on a Ray cluster.

An ``ExperimentConfig`` names a world (the ``RecSim-LLM-v0`` keyword arguments), the policies to
serve it with, the seeds and the number of steps, and how to spread the users over workers. Every
key is checked when the file is read: an unknown key or a wrong type is an error that names it.

``run_experiment`` runs each (policy, seed) as a ``simenv.rollout.ShardedRollout`` and writes a run
directory::

    OUT/config.yaml            the resolved config (every default filled in)
    OUT/metrics.csv            per-step metrics of every (policy, seed); also .parquet when pandas is there
    OUT/summary.json, .md      per-(policy, seed) summaries and their means over seeds
    OUT/rollouts/P/seed_S.npz  a finished rollout (a resumed run skips it)
    OUT/checkpoints/P/seed_S/  the rollout's checkpoints (a resumed run continues from the last)
    OUT/audit/                 audited run directories and the bias report (``audit: true``)

The audit replays each (policy, seed) in one audited process: the bias metrics (homogenization,
neighbor similarity, fairness) read every user's state at once, which shards do not hold; a sharded
run equals the single-process run bit for bit (``simenv.shard``), so the audit describes the same
trajectories when the policy serves each user from that user's observation alone (``per_user``;
else it is the same world served by one replica instead of several), and the launcher checks that
its click-through rate matches.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np


OFFLINE = ("knn", "mf")  # need fit(interactions) before they can act


@dataclass
class PolicySpec:
    """A policy to serve the world with: a ``policies.make_policy`` name, its arguments, a display name."""

    policy: str
    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from policies import LLM_POLICIES, POLICIES

        if self.policy not in POLICIES and self.policy not in LLM_POLICIES:
            raise ValueError(f"policy {self.policy!r}: use one of {sorted([*POLICIES, *LLM_POLICIES])}.")
        if self.policy in OFFLINE:
            raise ValueError(f"policy {self.policy!r} is fitted offline on logged interactions first; the launcher "
                             "serves policies that act from the start (random, popular, oracle, linucb, llm).")
        self.name = self.name or self.policy
        if not self.name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValueError(f"name {self.name!r}: a policy's name names its folders; use letters, digits, -, _.")


@dataclass
class RayConfig:
    """Where the shards run: Ray actors (a local Ray, or the cluster at ``address``) or this process."""

    backend: Literal["ray", "local"] = "ray"
    address: str | None = None  # None: the cluster of a `ray job submit`, else a new local Ray; "auto": a running one
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.threads_per_worker < 1 or not self.cpus_per_worker > 0:
            raise ValueError("num_workers and threads_per_worker must be >= 1 and cpus_per_worker > 0.")


@dataclass
class ExperimentConfig:
    """One experiment: a world, the policies that serve it, seeds, steps and workers."""

    name: str = "experiment"
    env: dict[str, Any] = field(default_factory=dict)  # RecSim-LLM-v0 keyword arguments
    policies: list[PolicySpec] = field(default_factory=lambda: [PolicySpec("random"), PolicySpec("popular")])
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 50
    checkpoint_every: int = 10
    max_restarts: int = 3
    audit: bool = True
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        from simenv.config import split_kwargs

        try:
            split_kwargs(self.env)
        except (TypeError, ValueError) as err:
            raise ValueError(f"env: {err}") from err
        if not self.policies:
            raise ValueError("policies: name at least one policy.")
        names = [p.name for p in self.policies]
        if len(set(names)) < len(names):
            raise ValueError(f"policies: names {names} repeat; give each a distinct `name`.")
        if not self.seeds or len(set(self.seeds)) < len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds={self.seeds}: distinct non-negative integers, at least one.")
        if self.steps < 1 or self.checkpoint_every < 0 or self.max_restarts < 0:
            raise ValueError("steps must be >= 1, checkpoint_every and max_restarts >= 0.")

    @property
    def num_users(self) -> int:
        return int(self.env.get("num_users", 1000))

    def resolved(self) -> dict[str, Any]:
        """The config as plain data, every default filled in, the world's too (what ``config.yaml`` holds)."""
        from simenv.config import split_kwargs

        world, env = split_kwargs(self.env)
        return {**dataclasses.asdict(self), "env": {**dataclasses.asdict(world), **dataclasses.asdict(env)}}


def load_experiment(source: str | Path | dict[str, Any]) -> ExperimentConfig:
    from simenv.configfile import load_config

    return load_config(ExperimentConfig, source)


def run_experiment(cfg: ExperimentConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
                   progress: bool = True) -> dict[str, dict[int, dict[str, float]]]:
    """Run every (policy, seed) of ``cfg`` and write the run directory ``out``; returns the summaries.

    ``resume`` continues a stopped run of the same config (finished rollouts are kept, the one in
    progress restarts from its last checkpoint); ``overwrite`` starts ``out`` afresh.
    """
    import yaml
    from tqdm.auto import tqdm

    from simenv.rollout import ShardedRollout

    out = Path(out)
    _prepare(out, cfg, resume, overwrite)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.resolved(), sort_keys=False))
    if cfg.ray.backend == "ray":
        init_ray(cfg.ray.address)
    results: dict[str, dict[int, Any]] = {}
    total = len(cfg.policies) * len(cfg.seeds) * cfg.steps
    with tqdm(total=total, desc=cfg.name, unit="step", disable=not progress) as bar:
        for spec in cfg.policies:
            for seed in cfg.seeds:
                done = out / "rollouts" / spec.name / f"seed_{seed}.npz"
                if done.exists():
                    results.setdefault(spec.name, {})[seed] = _load_rollout(done, cfg.num_users)
                    bar.update(cfg.steps)
                    continue
                bar.set_postfix_str(f"{spec.name} seed {seed}")
                mark = [0]

                def tick(t: int, _rollout: Any) -> None:
                    bar.update(t - mark[0])
                    mark[0] = t

                rollout = ShardedRollout(cfg.env, spec.policy, spec.kwargs, num_workers=cfg.ray.num_workers, seed=seed,
                                         backend=cfg.ray.backend, threads_per_worker=cfg.ray.threads_per_worker,
                                         cpus_per_worker=cfg.ray.cpus_per_worker,
                                         checkpoint_every=cfg.checkpoint_every, max_restarts=cfg.max_restarts,
                                         checkpoint_dir=out / "checkpoints" / spec.name / f"seed_{seed}")
                result = rollout.run(cfg.steps, resume=resume, on_chunk=tick)
                bar.update(cfg.steps - mark[0])
                _save_rollout(done, result)
                results.setdefault(spec.name, {})[seed] = result
    summaries = {name: {s: r.summary() for s, r in by_seed.items()} for name, by_seed in results.items()}
    _write_metrics(out, results)
    _write_summary(out, summaries)
    if cfg.audit:
        _audit(out, cfg, summaries)
    return summaries


def _prepare(out: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    saved = out / "config.yaml"
    if overwrite and resume:
        raise ValueError("resume and overwrite exclude each other.")
    if overwrite:
        shutil.rmtree(out, ignore_errors=True)
    elif saved.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it.")
    elif saved.exists():
        import yaml

        before = yaml.safe_load(saved.read_text())
        now = yaml.safe_load(yaml.safe_dump(cfg.resolved()))  # as the file holds it (tuples become lists)
        before.pop("ray", None), now.pop("ray")  # the same run may resume on other workers
        diff = _first_difference(before, now)
        if diff is not None:
            raise ValueError(f"{out}: --resume with a different config (key {diff!r} changed); use a new --out.")
    out.mkdir(parents=True, exist_ok=True)


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted path of the first value that differs between two plain-data configs, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
            if d is not None:
                return d
        return None
    return None if a == b else where


def init_ray(address: str | None) -> None:
    """Join the cluster of a ``ray job submit`` or at ``address``, else start a local Ray (once)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None and "RAY_ADDRESS" not in os.environ:  # a laptop: start a local Ray for this run
        ray.init(include_dashboard=False, log_to_driver=False)
    else:  # a job on a cluster (RAY_ADDRESS is set by `ray job submit`) or an explicit address
        ray.init(address=address, log_to_driver=False)


def _save_rollout(path: Path, result: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, exposure=result.exposure, consumed=result.consumed, restarts=result.restarts,
             **{f"step_{k}": v for k, v in result.steps.items()})
    tmp.rename(path)


def _load_rollout(path: Path, num_users: int) -> Any:
    from simenv.rollout import RolloutResult

    with np.load(path) as z:
        steps = {k[5:]: z[k] for k in z.files if k.startswith("step_")}
        return RolloutResult(steps, z["exposure"], z["consumed"], num_users, int(z["restarts"]))


def _write_metrics(out: Path, results: dict[str, dict[int, Any]]) -> None:
    rows = []
    for name, by_seed in results.items():
        for seed, result in by_seed.items():
            table = result.table()
            for i in range(len(table["step"])):
                rows.append({"policy": name, "seed": seed, **{k: v[i].item() for k, v in table.items()}})
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(out / "metrics.parquet", index=False)
    except ImportError:  # pandas/pyarrow come with ray[tune]; the CSV is always there
        pass


def _write_summary(out: Path, summaries: dict[str, dict[int, dict[str, float]]]) -> None:
    (out / "summary.json").write_text(json.dumps({n: {str(s): v for s, v in d.items()} for n, d in summaries.items()},
                                                 indent=1))
    keys = ["user_steps", "ctr", "mean_rating", "return_per_user", "exposure_gini", "coverage", "restarts"]
    lines = ["| policy | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for name, by_seed in summaries.items():
        means = [np.mean([s[k] for s in by_seed.values()]) for k in keys]
        lines.append(f"| {name} | {len(by_seed)} | " + " | ".join(f"{m:.4g}" for m in means) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def _audit(out: Path, cfg: ExperimentConfig, summaries: dict[str, dict[int, dict[str, float]]]) -> None:
    """Audited single-process replays of every (policy, seed), then the bias report over all policies."""
    from policies import make_policy
    from simenv.audit.report import write_report
    from simenv.audit.rundir import read_run, write_run

    for spec in cfg.policies:
        same_trajectory = cfg.ray.num_workers == 1 or (spec.policy != "llm" and
                                                        make_policy(spec.policy, **spec.kwargs).per_user)
        run = read_run(write_run(out / "audit" / spec.name, spec.policy, cfg.env, list(cfg.seeds), cfg.steps,
                                 name=spec.name, policy_kwargs=spec.kwargs))
        for seed_run in run.seeds:
            sharded = summaries[spec.name][seed_run.seed]["ctr"]
            audited = float(seed_run.evaluation["ctr"])
            if same_trajectory and not np.isclose(sharded, audited, rtol=1e-9, atol=1e-12):
                raise RuntimeError(f"{spec.name} seed {seed_run.seed}: the audited replay's CTR {audited} differs "
                                   f"from the sharded run's {sharded}; the shards did not reproduce the world.")
    write_report(out / "audit")
