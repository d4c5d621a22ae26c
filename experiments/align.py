"""Offline alignment of an LLM recommender: SFT, then each preference loss, under one protocol.

For each seed:

1. data: ML-100K (``data: movielens``) or a synthetic world with a log its simulated users wrote
   (``data: synthetic``); leave-last-out split. Training decisions are up to ``per_user`` logged
   choices per user, test decisions each user's last one, both as LLaRA prompts with 20 candidates
   (the true item and 19 the user never rated).
2. model: a small causal LM built here from a config and the prompt text (no hub), or any local
   Hugging Face model folder (``model_path``; ``lora: true`` trains LoRA adapters, for GPUs);
3. SFT with trl's ``SFTTrainer`` on the chosen titles;
4. each method: negatives from its sampler plan (random, popular, similar, self-hard from the SFT
   model's own ranking, hallucinated), optional RosePO-style smoothing ε from a preference oracle
   (the simulator's embedded choice model, read at each decision's replayed state), trained from the
   SFT model with ``PreferenceTrainer``; the SFT model is the reference;
5. evaluation of SFT and every method: the LLaRA protocol (likelihood ranking HR@1/HR@5/NDCG@5;
   generated titles: ValidRatio, HR@1 over valid and over all answers, hallucination rate),
   popularity bias of the top-ranked item (ARP, popularity lift), and an episode inside
   ``RecSim-LLM-v0`` (generate mode) whose audit goes to a run directory per method, reported
   together by ``simenv.audit.report`` (popularity and hallucination next to SFT's).

The table gives the mean over seeds with a 95% t-interval across seeds, and each method's HR@1
difference from SFT paired by seed. Outputs go to ``--out``: ``results.json``, ``table.md``,
``audit/`` (a run directory per model, its seeds, and ``report.md``). Stages that finished are kept: ``--resume`` continues
a stopped run (a training stage restarts from its last checkpoint); without it an existing ``--out``
is refused unless ``--overwrite``.

    python experiments/align.py --config experiments/configs/align_small.yaml --out runs/align_small
    python experiments/align.py --config experiments/configs/align_ml100k.yaml --out runs/align_ml100k
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.llm.pipeline import ModelConfig, StageConfig  # noqa: E402
from simenv.audit.report import t_interval  # noqa: E402
from simenv.configfile import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class MethodConfig:
    """One aligned model: a loss, its negatives and its hyper-parameters (``policies.llm.losses``)."""

    name: str
    loss: Literal["dpo", "cdpo", "sdpo", "dmpo", "simpo", "alpha_dpo"] = "dpo"
    negatives: dict[str, int] = field(default_factory=lambda: {"random": 1})  # sampler -> count
    smoothing: Literal["none", "oracle"] = "none"  # "oracle": ε_i from the embedded choice model (RosePO-style)
    eps_max: float = 0.4
    beta: float = 0.1
    gamma: float = 0.5
    alpha: float = 0.2
    sft_weight: float = 0.0


@dataclass
class SimulatorConfig:
    users: int = 100  # users served in the in-simulator episode
    steps: int = 5
    slate_size: int = 5
    mode: Literal["rank", "generate"] = "generate"
    max_new_tokens: int = 24


@dataclass
class AlignConfig:
    data: Literal["synthetic", "movielens"] = "synthetic"
    data_path: str = "../shared/data/ml-100k"
    synthetic_users: int = 200
    synthetic_items: int = 300
    synthetic_steps: int = 40
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    candidates: int = 20
    history: int = 10
    per_user: int = 5  # training decisions per user
    test_users: int | None = None  # evaluate on at most this many test decisions (all when None)
    threads: int = 2
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: StageConfig = field(default_factory=lambda: StageConfig(epochs=5, lr=3e-3))
    preference: StageConfig = field(default_factory=lambda: StageConfig(epochs=1, lr=5e-4))
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig("DPO")])
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)

    def __post_init__(self) -> None:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names) or "SFT" in names:
            raise ValueError(f"methods: names must be distinct and not 'SFT'; got {names}.")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed.")


# data ------------------------------------------------------------------------------------------------
def load_data(cfg: AlignConfig, seed: int):
    """(WorldData, env kwargs that rebuild the same world for the simulator episode)."""
    from policies.logs import simulated_world_data
    from simenv.datasets import load_movielens

    if cfg.data == "movielens":
        path = (ROOT / cfg.data_path) if not Path(cfg.data_path).is_absolute() else Path(cfg.data_path)
        if not (path / "u.data").exists():
            raise FileNotFoundError(f"data_path={cfg.data_path}: no u.data there; use data: synthetic or point to "
                                    "a MovieLens-100K folder.")
        data = load_movielens(str(path))
    else:
        data = simulated_world_data(cfg.synthetic_users, cfg.synthetic_items, cfg.synthetic_steps, seed=seed)
    return data


def split(cfg: AlignConfig, data, seed: int):
    """Training and test decisions as ``RecExamples``, and the training log's item counts."""
    from policies.llm.preference_data import examples_from_logs
    from simenv.datasets.replay import decision_points, leave_last_out

    n_users, n_items = data.persona.num_users, data.catalog.num_items
    train, test_points = leave_last_out(data.interactions, n_users)
    if cfg.test_users is not None and len(test_points) > cfg.test_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(test_points), cfg.test_users, replace=False))
        test_points = type(test_points)(*(getattr(test_points, f)[keep] for f in ("user", "position", "item",
                                                                                   "rating")))
    points = decision_points(train, n_users, cfg.per_user, seed=seed)
    train_ex = examples_from_logs(train, n_users, n_items, points, cfg.candidates, cfg.history, seed=seed)
    test_ex = examples_from_logs(train, n_users, n_items, test_points, cfg.candidates, cfg.history, seed=seed + 1)
    popularity = np.bincount(train.item, minlength=n_items).astype(np.float64)
    return train, points, train_ex, test_ex, popularity


# training --------------------------------------------------------------------------------------------
def base_model(cfg: AlignConfig, data, train_ex, folder: Path) -> Path:
    """The model SFT starts from: ``model.path``, or a new one built on the catalog and prompt text."""
    from policies.llm.pipeline import base_model as build
    from policies.llm.preference_data import sft_dataset

    rows = sft_dataset(train_ex, data.catalog.titles)
    texts = [p + c for p, c in zip(rows["prompt"], rows["completion"])] + list(data.catalog.titles)
    return build(cfg.model, texts, folder)


def train_sft(cfg: AlignConfig, data, train_ex, start: Path, folder: Path, seed: int) -> Path:
    from policies.llm.pipeline import sft_stage
    from policies.llm.preference_data import sft_dataset

    return sft_stage(start, sft_dataset(train_ex, data.catalog.titles), folder, cfg.sft, seed, cfg.model)


def oracle_values(data, train, points, train_ex, items: np.ndarray, seed: int) -> np.ndarray:
    """(n, m) utilities of ``items`` (-1 = none) under the embedded choice model at each training
    decision's replayed state: the RosePO-style preference oracle."""
    from agents.choice import ChoiceConfig, MultinomialLogitUser
    from simenv.datasets.replay import prefix_world

    world = prefix_world(data, train, points, seed=seed)
    safe = np.where(items >= 0, items, 0)
    values = MultinomialLogitUser(ChoiceConfig()).item_values(world, np.arange(len(points)), safe)
    return np.where(items >= 0, values, np.nan)


def train_method(cfg: AlignConfig, method: MethodConfig, data, train, points, train_ex, popularity, sft: Path,
                 folder: Path, seed: int) -> Path:
    from datasets import Dataset  # noqa: F401  (fail early with a clear import error)

    from policies.llm.preference_data import mix_negatives, oracle_epsilon, preference_dataset
    from policies.llm.recommender import LLMRecommenderPolicy
    from policies.llm.evaluate import observations
    from policies.llm.pipeline import preference_stage

    if (folder / "model" / "config.json").exists():
        return folder / "model"
    scores = None
    if "self_hard" in method.negatives:  # the SFT model's own ranking of the training candidates
        policy = LLMRecommenderPolicy(str(sft), batch_size=16)
        policy.use_catalog(data.catalog.titles)
        scores = policy.scores(observations(train_ex))
    neg = mix_negatives(train_ex, method.negatives, titles=data.catalog.titles, popularity=popularity + 1.0,
                        embeddings=data.catalog.embeddings, scores=scores, rng=seed)
    eps = None
    if method.smoothing == "oracle":
        items = np.concatenate([train_ex.target_items[:, None], neg.items], axis=1)
        v = oracle_values(data, train, points, train_ex, items, seed)
        eps = oracle_epsilon(v[:, 0], v[:, 1:], method.eps_max, rejected_items=neg.items)
    dataset = preference_dataset(train_ex, neg, data.catalog.titles, eps)
    model = preference_stage(sft, dataset, folder, cfg.preference, seed, cfg.model, loss=method.loss,
                             beta=method.beta, gamma=method.gamma, alpha=method.alpha, sft_weight=method.sft_weight)
    (folder / "negatives.json").write_text(json.dumps({"plan": method.negatives, "smoothing": method.smoothing,
                                                       "mean_epsilon": float(np.mean(dataset["epsilon"]))}))
    return model


# evaluation ------------------------------------------------------------------------------------------
def offline_metrics(model: Path, data, test_ex, popularity, cfg: AlignConfig) -> dict[str, Any]:
    from policies.llm.evaluate import evaluate_recommender
    from policies.llm.recommender import LLMRecommenderPolicy

    policy = LLMRecommenderPolicy(str(model), batch_size=16, max_new_tokens=cfg.simulator.max_new_tokens)
    policy.use_catalog(data.catalog.titles)
    out = evaluate_recommender(policy, test_ex, popularity)
    return {"summary": out["summary"], "HR@1": out["HR@1"].tolist()}


def sim_env_kwargs(data, cfg: AlignConfig, seed: int) -> dict[str, Any]:
    return dict(dataset=data, num_users=min(cfg.simulator.users, data.persona.num_users),
                slate_size=cfg.simulator.slate_size, num_candidates=cfg.candidates, horizon=cfg.simulator.steps,
                candidate_features=False, world_seed=seed,
                audit={"interval": 1})  # a short episode: snapshot every step (popularity lift, calibration)


def policy_kwargs(model: Path, cfg: AlignConfig) -> dict[str, Any]:
    return {"model": str(model), "mode": cfg.simulator.mode, "max_new_tokens": cfg.simulator.max_new_tokens,
            "batch_size": 16}


def simulator_run(model: Path, data, cfg: AlignConfig, run_folder: Path, seed: int) -> dict[str, Any]:
    """An episode of ``RecSim-LLM-v0`` on the same catalog, served by this model; its audit is seed
    ``seed`` of the run directory ``run_folder`` (one per model, all seeds, for ``write_report``)."""
    import gymnasium as gym

    import simenv  # noqa: F401  (registers the env)
    from simenv.audit.rundir import write_seed

    path = run_folder / f"seed_{seed}" / "audit.json"
    if not path.exists():
        kwargs = sim_env_kwargs(data, cfg, seed)
        env = gym.make_vec("RecSim-LLM-v0", num_envs=kwargs["num_users"], vectorization_mode="vector_entry_point",
                           **kwargs)
        write_seed(run_folder, env, "llm", seed, cfg.simulator.steps, policy_kwargs(model, cfg))
        env.close()
    record = json.loads(path.read_text())
    summary, evaluation = record["summary"], record["evaluation"]
    pop, llm = summary.get("popularity", {}), summary.get("llm", {})
    return {**{f"sim_{k}": v for k, v in evaluation.items() if k in ("ctr", "mean_rating", "return")},
            "sim_ARP": pop.get("arp_relative", math.nan), "sim_popularity_lift": pop.get("popularity_lift", math.nan),
            "sim_hallucination_rate": llm.get("hallucination_rate", math.nan),
            "sim_valid_ratio": llm.get("valid_ratio", math.nan)}


# table -----------------------------------------------------------------------------------------------
COLUMNS = ("HR@1", "HR@5", "NDCG@5", "ValidRatio", "HR@1 (valid)", "HR@1 (all)", "hallucination_rate", "ARP",
           "popularity_lift", "sim_ctr", "sim_ARP", "sim_hallucination_rate")


def table(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    def cell(m: float, h: float) -> str:
        return "n/a" if not np.isfinite(m) else (f"{m:.3f}" if not np.isfinite(h) else f"{m:.3f} ± {h:.3f}")

    def value(r: dict[str, Any], column: str) -> float:
        return r["offline"]["summary"].get(column, r["sim"].get(column, math.nan))

    lines = ["| method | " + " | ".join(COLUMNS) + " | ΔHR@1 vs SFT |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, by_seed in results.items():
        row = [cell(*t_interval([value(r, c) for r in by_seed.values()])) for c in COLUMNS]
        diffs = [r["offline"]["summary"]["HR@1"] - results["SFT"][s]["offline"]["summary"]["HR@1"]
                 for s, r in by_seed.items() if s in results["SFT"]]
        row.append("-" if name == "SFT" else cell(*t_interval(diffs)))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# main ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="YAML file of AlignConfig fields (defaults when omitted)")
    parser.add_argument("--out", type=Path, required=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    group.add_argument("--overwrite", action="store_true", help="delete --out first")
    args = parser.parse_args(argv)
    cfg = load_config(AlignConfig, args.config)
    if args.out.exists() and any(args.out.iterdir()):
        if args.overwrite:
            shutil.rmtree(args.out)
        elif not args.resume:
            raise SystemExit(f"{args.out} exists; pass --resume to continue it or --overwrite to start over.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    import torch

    torch.set_num_threads(cfg.threads)
    from simenv.audit.report import write_report
    from simenv.audit.rundir import write_manifest

    results: dict[str, dict[int, dict[str, Any]]] = {"SFT": {}, **{m.name: {} for m in cfg.methods}}
    t0 = time.time()
    for seed in cfg.seeds:
        work = args.out / f"seed_{seed}"
        data = load_data(cfg, seed)
        train, points, train_ex, test_ex, popularity = split(cfg, data, seed)
        print(f"seed {seed}: {len(train_ex)} training decisions, {len(test_ex)} test decisions", flush=True)
        start = base_model(cfg, data, train_ex, work / "base")
        sft = train_sft(cfg, data, train_ex, start, work / "SFT", seed)
        models = {"SFT": sft}
        for method in cfg.methods:
            models[method.name] = train_method(cfg, method, data, train, points, train_ex, popularity, sft,
                                               work / method.name, seed)
        for name, model in models.items():
            done = work / name / "metrics.json"
            if not done.exists():
                result = {"offline": offline_metrics(model, data, test_ex, popularity, cfg),
                          "sim": simulator_run(model, data, cfg, args.out / "audit" / name, seed)}
                done.write_text(json.dumps(result))
            results[name][seed] = json.loads(done.read_text())
            s = results[name][seed]["offline"]["summary"]
            print(f"  {name}: HR@1 {s['HR@1']:.3f}, ValidRatio {s.get('ValidRatio', math.nan):.3f}, "
                  f"popularity lift {s['popularity_lift']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(results))
    for name in results:  # one run directory per model, its seeds each served by that seed's model
        write_manifest(args.out / "audit" / name, "llm", sim_env_kwargs(data, cfg, cfg.seeds[-1]), cfg.seeds,
                       cfg.simulator.steps, name=name, policy_kwargs={"mode": cfg.simulator.mode})
    write_report(args.out / "audit")  # SFT and every method side by side, mean ± CI over seeds
    print("\n" + text)
    return results


if __name__ == "__main__":
    main()
