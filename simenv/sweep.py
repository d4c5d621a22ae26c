"""Sweeps: ``recsim-llm sweep CONFIG.yaml`` searches over experiments with Ray Tune.

A sweep file holds a base ``experiment`` (the mapping ``recsim-llm run`` reads, or the path of such
a file) and a ``space`` of dotted keys into it, each with one Tune sampler::

    experiment: experiments/configs/run_small.yaml
    space:
      env.choice.temperature: {grid: [0.05, 0.1, 0.2]}
      env.dynamics.drift_rate: {loguniform: [0.01, 0.1]}
    metric: ctr            # a summary key (simenv.rollout.RolloutResult.summary), mean over seeds
    policy: oracle         # whose metric; default the first policy
    mode: max
    num_samples: 2

Each trial is one experiment, written as a run directory ``OUT/trials/<trial>/`` by
``simenv.experiment.run_experiment`` (its shards run in the trial's process; Tune runs trials in
parallel). Every policy's summary is reported to Tune as ``<policy>/<key>``. ``OUT/sweep.csv`` and
``sweep.md`` list the trials with their parameters and metrics, best first. A stopped sweep is
continued with ``resume``: ``Tuner.restore`` reruns the unfinished and errored trials, and each
rerun trial resumes its run directory from its own checkpoints.
"""
from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SAMPLERS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass
class SweepConfig:
    """A search over experiments: the base experiment, the space, and what to optimise."""

    experiment: Any = None  # a mapping of ExperimentConfig fields, or the path of a run YAML
    space: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    metric: str = "ctr"
    policy: str | None = None
    mode: Literal["max", "min"] = "max"
    num_samples: int = 1
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    max_failures: int = 1  # retries of a trial that fails for a reason other than its config
    seed: int = 0  # of the search's own sampling

    def __post_init__(self) -> None:
        from simenv.experiment import load_experiment

        if self.experiment is None:
            raise ValueError("experiment: give the base experiment (a mapping, or the path of a run YAML).")
        if isinstance(self.experiment, str):
            import yaml

            path = Path(self.experiment)
            if not path.exists():
                raise FileNotFoundError(f"experiment: {path} does not exist.")
            self.experiment = yaml.safe_load(path.read_text()) or {}
        if not isinstance(self.experiment, dict):
            raise ValueError(f"experiment: expected a mapping or a path, got {self.experiment!r}.")
        base = load_experiment(self.experiment)  # the base itself must be valid
        if not self.space:
            raise ValueError("space: name at least one key to search over.")
        for key, spec in self.space.items():
            if len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
                raise ValueError(f"space.{key}: give exactly one sampler of {SAMPLERS}, e.g. {{grid: [1, 2]}}.")
            values = next(iter(spec.values()))
            if not values or (next(iter(spec)) in ("uniform", "loguniform", "randint") and len(values) != 2):
                raise ValueError(f"space.{key}: grid/choice need values; uniform/loguniform/randint need [low, high].")
            set_dotted(copy.deepcopy(self.experiment), key, values[0])  # the path must exist
        names = [p.name for p in base.policies]
        self.policy = self.policy or names[0]
        if self.policy not in names:
            raise ValueError(f"policy {self.policy!r}: not one of the experiment's policies {names}.")
        if self.num_samples < 1 or self.max_concurrent_trials < 1 or not self.cpus_per_trial > 0:
            raise ValueError("num_samples and max_concurrent_trials must be >= 1, cpus_per_trial > 0.")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set ``a.b.c`` in nested mappings; ``policies.<name>.kwargs.x`` addresses a policy by its name."""
    parts = key.split(".")
    node: Any = data
    if parts[0] == "policies":
        named = [p for p in data.get("policies", []) if len(parts) > 2 and p.get("name", p.get("policy")) == parts[1]]
        if not named:
            raise ValueError(f"space.{key}: use policies.<name>.<field> with one of the experiment's policy names.")
        node, parts = named[0], parts[2:]
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"space.{key}: {part!r} is not a mapping.")
    node[parts[-1]] = value
    return data


def load_sweep(source: str | Path | dict[str, Any]) -> SweepConfig:
    """A sweep from a YAML file or a mapping; a relative ``experiment`` path is read from the sweep file's folder."""
    from simenv.configfile import load_config

    if isinstance(source, (str, Path)):
        import yaml

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"sweep file {path} does not exist.")
        source = yaml.safe_load(path.read_text()) or {}
        if isinstance(source, dict) and isinstance(source.get("experiment"), str):
            source["experiment"] = str(path.parent / source["experiment"])
    return load_config(SweepConfig, source)


def _space(cfg: SweepConfig) -> dict[str, Any]:
    from ray import tune

    def sampler(kind: str, values: list[Any]) -> Any:
        if kind == "grid":
            return tune.grid_search(values)
        if kind == "choice":
            return tune.choice(values)
        return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](*values)

    return {key: sampler(*next(iter(spec.items()))) for key, spec in cfg.space.items()}


def _trial(params: dict[str, Any], base: dict[str, Any], out: str, policy: str, metric: str) -> None:
    """One trial: the base experiment with ``params`` set, run into its own run directory."""
    import numpy as np
    from ray import tune

    from simenv.experiment import load_experiment, run_experiment

    data = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(data, key, value.item() if hasattr(value, "item") else value)
    data["ray"] = {**data.get("ray", {}), "backend": "local"}  # the trial's shards run in its process
    cfg = load_experiment(data)
    folder = Path(out) / "trials" / tune.get_context().get_trial_name()
    summaries = run_experiment(cfg, folder, resume=(folder / "config.yaml").exists(), progress=False)
    report = {f"{name}/{k}": float(np.mean([s[k] for s in by_seed.values()]))
              for name, by_seed in summaries.items() for k in next(iter(by_seed.values()))}
    tune.report({metric: report[f"{policy}/{metric}"], **report, "run_dir": str(folder)})


def run_sweep(cfg: SweepConfig, out: str | Path, resume: bool = False, address: str | None = None) -> list[dict]:
    """Run (or, with ``resume``, continue) the sweep into ``out``; returns the trials' rows, best first."""
    from ray import tune

    from simenv.experiment import init_ray

    out = Path(out).resolve()
    init_ray(address)
    base = _absolute_paths(cfg.experiment)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, out=str(out), policy=cfg.policy, metric=cfg.metric),
        {"cpu": cfg.cpus_per_trial})
    path = out / "tune"
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
    elif path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a sweep; pass --resume to continue it.")
    else:
        tuner = tune.Tuner(
            trainable, param_space=_space(cfg),
            tune_config=tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, num_samples=cfg.num_samples,
                                        max_concurrent_trials=cfg.max_concurrent_trials,
                                        search_alg=_seeded_search(cfg.seed)),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=cfg.max_failures)))
    grid = tuner.fit()
    rows = []
    for result in grid:
        row = {"trial": Path(result.path).name, **{k: result.config.get(k) for k in cfg.space}}
        if result.error is not None:
            row.update(status="ERROR", error=str(result.error).strip().splitlines()[-1][:300])
        else:
            row.update(status="OK", **{k: v for k, v in result.metrics.items() if "/" in k or k == "run_dir"})
        rows.append(row)
    key = f"{cfg.policy}/{cfg.metric}"
    sign = -1 if cfg.mode == "max" else 1
    rows.sort(key=lambda r: (r["status"] != "OK", sign * r.get(key, math.inf) if r["status"] == "OK" else 0))
    _write_table(out, rows, cfg, key)
    return rows


def _seeded_search(seed: int) -> Any:
    """Tune's default search (grid + random sampling), with a fixed seed so a sweep is reproducible."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


def _absolute_paths(experiment: dict[str, Any]) -> dict[str, Any]:
    """Trials run in Tune's worker processes: make the experiment's file paths independent of the cwd."""
    data = copy.deepcopy(experiment)
    env = data.get("env", {})
    for key in ("dataset_path", "cache_dir"):
        if isinstance(env.get(key), str):
            env[key] = str(Path(env[key]).expanduser().resolve())
    return data


def _write_table(out: Path, rows: list[dict], cfg: SweepConfig, key: str) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    shown = ["trial", *cfg.space, "status", key, *sorted(k for k in fields if k.endswith(f"/{cfg.metric}")
                                                          and k != key)]
    lines = [f"Sweep over {list(cfg.space)}; {cfg.mode} {key}, best first.", "",
             "| " + " | ".join(shown) + " |", "|---" * len(shown) + "|"]
    for r in rows:
        cells = [r.get("error", "") if k == key and r["status"] != "OK" else r.get(k, "") for k in shown]
        lines.append("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
