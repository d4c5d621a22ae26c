"""Run directories: what an experiment leaves on disk for ``recsim-llm report`` and ``compare``.

    RUN_DIR/
      run.json              manifest, written last: policy, env arguments, seeds, steps, status
      seed_<s>/audit.json   the audit summary of seed s (``Monitor.save``) and the evaluation result
      seed_<s>/audit.npz    its time series, exposure and Lorenz curve
      steering.json         optional: a ``SteeringExperiment`` result
      ope.json              optional: an ``ope_check`` result

An experiment directory holds several run directories (one per policy) and may hold its own
``steering.json``. A run whose manifest is missing or not ``complete`` did not finish; reading it
is an error that names what is missing, never a silent partial report.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
MANIFEST = "run.json"


@dataclass(frozen=True)
class SeedRecord:
    seed: int
    summary: dict[str, Any]
    evaluation: dict[str, float]
    series: dict[str, np.ndarray]


@dataclass(frozen=True)
class Run:
    """A finished run read back from disk."""

    path: Path
    manifest: dict[str, Any]
    seeds: list[SeedRecord]
    steering: dict[str, Any] | None
    ope: dict[str, Any] | None

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.manifest["policy"])


def write_run(folder: str | Path, policy: str, env_kwargs: dict[str, Any], seeds: list[int], steps: int,
              name: str | None = None, policy_kwargs: dict[str, Any] | None = None) -> Path:
    """Run ``policy`` for ``steps`` steps from each seed in a vector env serving every user, and save the audit.

    ``policy_kwargs`` go to ``make_policy`` (e.g. ``model=`` for "llm"). The manifest is written last,
    so an interrupted run is recognisably incomplete.
    """
    import gymnasium as gym

    import simenv  # noqa: F401  (registers the env)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    num_users = int(env_kwargs.get("num_users", 1000))
    env = gym.make_vec("RecSim-LLM-v0", num_envs=num_users, vectorization_mode="vector_entry_point", **env_kwargs)
    for seed in seeds:
        write_seed(folder, env, policy, seed, steps, policy_kwargs)
    env.close()
    return write_manifest(folder, policy, env_kwargs, seeds, steps, name, policy_kwargs)


def write_seed(folder: str | Path, env: Any, policy: str, seed: int, steps: int,
               policy_kwargs: dict[str, Any] | None = None) -> Path:
    """One seed of a run: ``policy`` in the (audited) vector ``env`` for ``steps`` steps, saved to ``seed_<seed>``.

    For experiments whose seeds differ in more than the env seed (a model trained per seed); a run
    made of such seeds is finished by ``write_manifest``.
    """
    from policies import evaluate, make_policy

    if env.unwrapped.sim.monitor is None:
        raise ValueError("write_seed: the audit is switched off (audit=False); a run directory needs it.")
    result = evaluate(make_policy(policy, seed=seed, **(policy_kwargs or {})), env, episodes=1, seed=seed,
                      steps=steps)[0]
    return env.unwrapped.sim.monitor.save(Path(folder) / f"seed_{seed}", extra={"evaluation": result})


def write_manifest(folder: str | Path, policy: str, env_kwargs: dict[str, Any], seeds: list[int], steps: int,
                   name: str | None = None, policy_kwargs: dict[str, Any] | None = None) -> Path:
    """Mark the run at ``folder`` complete once every seed's audit is there; values that JSON cannot hold
    (a dataset, a graph) are recorded by their type name."""
    folder = Path(folder)
    missing = [s for s in seeds if not (folder / f"seed_{s}" / "audit.json").exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: no audit for seeds {missing}; run them before writing {MANIFEST}.")
    manifest = {"format": FORMAT, "name": name or policy, "policy": policy, "policy_kwargs": policy_kwargs or {},
                "env": {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else type(v).__name__
                        for k, v in env_kwargs.items()},
                "seeds": list(seeds), "steps": steps, "num_users": int(env_kwargs.get("num_users", 1000)),
                "status": "complete"}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return folder


def is_run(folder: Path) -> bool:
    return (folder / MANIFEST).exists()


def find_runs(folder: str | Path) -> list[Path]:
    """The run directories at ``folder``: itself if it is one, else its sub-directories that are."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such directory.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory; pass a run directory (with {MANIFEST}).")
    if is_run(folder):
        return [folder]
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and is_run(p))
    if not runs:
        partial = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("seed_*")))
        hint = (f" {partial} hold seed folders but no {MANIFEST}: those runs did not finish." if partial else "")
        raise FileNotFoundError(f"{folder}: missing {MANIFEST}; it is neither a run directory nor a folder of "
                                f"run directories.{hint}")
    return runs


def read_run(folder: str | Path) -> Run:
    """Read a finished run; raises naming the first missing or half-written file."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{folder}: missing {MANIFEST} (the run did not finish, or this is not a run "
                                "directory).")
    manifest = _read_json(path)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: run format {manifest.get('format')!r}, this version reads {FORMAT}.")
    if manifest.get("status") != "complete":
        raise ValueError(f"{path}: status {manifest.get('status')!r}: the run did not complete.")
    for key in ("policy", "env", "seeds", "steps"):
        if key not in manifest:
            raise ValueError(f"{path}: the manifest lacks {key!r}.")
    seeds = []
    for seed in manifest["seeds"]:
        sub = folder / f"seed_{seed}"
        for fname in ("audit.json", "audit.npz"):
            if not (sub / fname).exists():
                raise FileNotFoundError(f"{folder}: missing seed_{seed}/{fname} (listed in {MANIFEST}).")
        doc = _read_json(sub / "audit.json")
        if "summary" not in doc:
            raise ValueError(f"{sub / 'audit.json'}: no 'summary' in it; the file is half-written.")
        try:
            with np.load(sub / "audit.npz", allow_pickle=False) as z:
                series = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{sub / 'audit.npz'}: unreadable ({err}); the file is half-written.") from err
        seeds.append(SeedRecord(int(seed), doc["summary"], doc.get("evaluation", {}), series))
    optional = {name: _read_json(folder / f"{name}.json") if (folder / f"{name}.json").exists() else None
                for name in ("steering", "ope")}
    return Run(folder, manifest, seeds, optional["steering"], optional["ope"])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); the file is half-written.") \
            from err


def scalars(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten the numeric leaves of an audit summary: ``{"popularity.arp": 0.001, ...}`` (notes left out)."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if key == "notes":
            continue
        if isinstance(value, dict):
            out.update(scalars(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def seed_table(run: Run) -> dict[str, np.ndarray]:
    """Metric name -> (S,) values over the run's seeds (NaN where a seed lacks it); evaluation metrics
    are prefixed ``evaluation.``."""
    rows = [{**scalars(s.summary), **scalars(s.evaluation, "evaluation.")} for s in run.seeds]
    names = sorted({k for r in rows for k in r})
    return {k: np.array([r.get(k, math.nan) for r in rows]) for k in names}
