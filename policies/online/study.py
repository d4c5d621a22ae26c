"""An online-refinement study: recommenders aligned offline keep learning inside ``RecSim-LLM-v0``
while the simulated users they serve change (``recsim-llm run experiments/configs/online_refine.yaml``).

Per seed:

1. **Logging**: a world (synthetic catalog, social graph, the embedded choice model) is served by a
   logging policy for ``offline.log_steps`` steps; every decision is recorded (what was shown, what
   was taken). This is yesterday's data.
2. **Offline alignment** on that log: a small LM built here (or ``model.path``), SFT on the chosen
   titles, then DPO: the frozen baseline and every LLM method's starting point; and the RecICL
   model, SFT once on the same decisions in the in-context format. A study without LLM methods
   (PPO and the references) skips this step and needs no frozen method.
3. **Rounds**: each method continues the same world from the end of the log (common random
   numbers: every method meets the same users, the same shift and the same draws) for ``rounds``
   rounds of ``steps_per_round`` steps. The scenario happens at the start of round
   ``scenario.at_round``: a share of users jumps toward a trend genre (``interest_shift``), new items
   enter the catalog (``new_items``), or both. After each round the method learns from what it saw
   (``policies.online.methods``) and the next round is served by what it learned.
4. **Measures** per round (``policies.online.metrics``) and a table over seeds: each metric's mean
   over the rounds from the shift on, mean ± 95% t-interval across seeds, and each method's
   difference from the frozen policy paired by seed (when there is one); learning curves (metric
   against simulated time, the shift marked) for all methods on one plot.

The rollouts are ``simenv.rollout.ShardedRollout`` (Ray actors, or this process with
``ray.backend: local``); training runs in the driver. A round is checkpointed when it ends (the
world's and the policy's state, its decisions, its metrics, what was learned), so a stopped study
resumes at the last finished round and gives the same table as an uninterrupted one.

Run directory::

    OUT/config.yaml                         the resolved config
    OUT/seed_S/log/                         the logging phase: decisions.npz, states.pkl
    OUT/seed_S/models/{base,SFT,DPO,ICL}/   the offline models
    OUT/seed_S/METHOD/round_RR/             metrics.json, decisions.npz, states.pkl, learn.json,
                                            model/ (a refined model), failed.json (a NaN/Inf loss);
                                            ppo: ppo/, module/, twin.pkl (the algorithm, its module, the twin)
    OUT/seed_S/METHOD/pretrain/             ppo: the training over the logging phase's ticks (serves round 0)
    OUT/results.json, table.md, curves.png, report.md
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from policies.llm.pipeline import ModelConfig, StageConfig
from policies.online.methods import LLM_KINDS, Context, MethodConfig, make_refiner
from policies.online.metrics import count_delta, round_metrics
from simenv.audit.report import t_interval
from simenv.experiment import RayConfig


@dataclass
class WorldSpec:
    """The simulated world (``RecSim-LLM-v0`` keyword arguments; ``env`` adds any others)."""

    users: int = 60
    items: int = 120
    slate_size: int = 5
    candidates: int = 20
    reward: str = "click"
    env: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScenarioConfig:
    """What makes yesterday's alignment stale, at the start of round ``at_round``."""

    kind: Literal["interest_shift", "new_items", "both"] = "interest_shift"
    at_round: int = 1
    genre: str = "Sci-Fi"  # the trend
    share: float = 0.5
    strength: float = 0.7
    seeding: Literal["random", "hubs"] = "random"
    new_items: int = 20  # new_items / both: released at the shift, unseen offline


@dataclass
class OfflineConfig:
    """Yesterday: the logging policy, its log, and the offline alignment (SFT, then a preference loss)."""

    logging_policy: Literal["random", "popular", "linucb"] = "random"
    log_steps: int = 10
    sft: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=3e-3, batch_size=16))
    preference: StageConfig = field(default_factory=lambda: StageConfig(epochs=1, lr=5e-4, batch_size=16))
    loss: Literal["dpo", "cdpo", "sdpo", "dmpo", "simpo", "alpha_dpo"] = "dpo"
    negatives: dict[str, int] = field(default_factory=lambda: {"shown": 1, "random": 1})
    beta: float = 0.1
    icl_demonstrations: int = 3  # demonstrations per prompt when tuning the RecICL model


@dataclass
class ServeConfig:
    """How LLM policies serve (``LLMRecommenderPolicy``)."""

    mode: Literal["rank", "generate"] = "rank"
    history: int = 10
    batch_size: int = 16
    max_new_tokens: int = 16
    probe: float = 0.25  # rank mode: the share of served users whose generated title is counted (ValidRatio)


@dataclass
class OnlineStudyConfig:
    study: Literal["online_refine"] = "online_refine"
    name: str = "online_refine"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    world: WorldSpec = field(default_factory=WorldSpec)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    rounds: int = 4
    steps_per_round: int = 3
    model: ModelConfig = field(default_factory=lambda: ModelConfig(vocab_size=700, hidden_size=64,
                                                                   intermediate_size=128))
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig("frozen", "frozen"),
                                                                 MethodConfig("iterated DPO", "iterated_po")])
    ray: RayConfig = field(default_factory=lambda: RayConfig(backend="local"))
    threads: int = 2

    def __post_init__(self) -> None:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods: names must be distinct; got {names}.")
        kinds = [m.kind for m in self.methods]
        if "frozen" not in kinds and any(k in LLM_KINDS for k in kinds):
            raise ValueError("methods: include a method of kind 'frozen' beside LLM methods: it is the baseline "
                             "they start from and every difference is taken against.")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed.")
        if self.rounds < 1 or self.steps_per_round < 1 or self.offline.log_steps < 1:
            raise ValueError("rounds, steps_per_round and offline.log_steps must be >= 1.")
        if not 0 < self.scenario.at_round < self.rounds:
            raise ValueError(f"scenario.at_round={self.scenario.at_round}: the shift must come after round 0 and "
                             f"before the last round, 1..{self.rounds - 1}.")

    @property
    def shift_tick(self) -> int:
        return self.offline.log_steps + self.scenario.at_round * self.steps_per_round


# the world -------------------------------------------------------------------------------------------
def env_kwargs(cfg: OnlineStudyConfig, seed: int) -> dict[str, Any]:
    w, sc = cfg.world, cfg.scenario
    dynamics = dict(w.env.get("dynamics", {}))
    if sc.kind in ("interest_shift", "both"):
        dynamics["shifts"] = [{"at": cfg.shift_tick, "genre": sc.genre, "share": sc.share,
                               "strength": sc.strength, "seeding": sc.seeding}]
    if sc.kind in ("new_items", "both"):
        dynamics["releases"] = [{"at": cfg.shift_tick, "count": sc.new_items}]
    horizon = cfg.offline.log_steps + cfg.rounds * cfg.steps_per_round + 1
    scored = any(m.kind == "ppo" for m in cfg.methods)  # only the RLlib module reads candidate features
    return {**w.env, "num_users": w.users, "num_items": w.items, "slate_size": w.slate_size,
            "num_candidates": w.candidates, "reward": w.reward, "horizon": w.env.get("horizon", horizon),
            "candidate_features": scored, "world_seed": seed, "dynamics": dynamics}


def rollout(cfg: OnlineStudyConfig, seed: int, policy: str, kwargs: dict[str, Any]):
    from simenv.rollout import ShardedRollout

    r = cfg.ray
    return ShardedRollout(env_kwargs(cfg, seed), policy, kwargs, num_workers=r.num_workers, seed=seed,
                          backend=r.backend, threads_per_worker=r.threads_per_worker, cpus_per_worker=r.cpus_per_worker)


def world_of(cfg: OnlineStudyConfig, seed: int):
    from simenv.vector import RecSimLLMVectorEnv

    env = RecSimLLMVectorEnv(num_envs=cfg.world.users, **{**env_kwargs(cfg, seed), "audit": False})
    return env.world


def _save_round(folder: Path, decisions: dict[str, np.ndarray], states: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "decisions.npz", **decisions)
    tmp = folder / ".states.pkl"
    tmp.write_bytes(pickle.dumps(states))
    tmp.rename(folder / "states.pkl")


def _load_round(folder: Path) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    with np.load(folder / "decisions.npz") as z:
        decisions = {k: z[k] for k in z.files}
    return decisions, pickle.loads((folder / "states.pkl").read_bytes())


def logging_phase(cfg: OnlineStudyConfig, seed: int, folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Yesterday's log: decisions and the world's state after ``offline.log_steps`` steps."""
    from simenv.rollout import merge_states

    if not (folder / "states.pkl").exists():
        server = rollout(cfg, seed, cfg.offline.logging_policy, {})
        server.open()
        _, decisions = server.advance(cfg.offline.log_steps, record=True)
        _save_round(folder, decisions, server.states())
        server.close()
    decisions, states = _load_round(folder)
    return decisions, merge_states(states)  # the whole world, for any shard layout; a new policy takes over


# offline alignment -----------------------------------------------------------------------------------
def offline_models(cfg: OnlineStudyConfig, world, log: dict[str, np.ndarray], folder: Path, seed: int,
                   need_icl: bool) -> tuple[Path, Path | None]:
    """(the offline-aligned model: SFT then the preference loss; the RecICL model or None)."""
    from policies.llm.in_context import icl_sft_dataset
    from policies.llm.pipeline import base_model, preference_stage, sft_stage
    from policies.llm.preference_data import examples_from_steps, mix_negatives, preference_dataset, sft_dataset

    titles = list(world.catalog.titles)
    ex = examples_from_steps(log["history"], log["candidates"], log["slate"], log["choice"], log["user"])
    if not len(ex):
        raise ValueError(f"offline.log_steps={cfg.offline.log_steps}: the logging policy got no click to learn "
                         "from; log more steps.")
    clicked = log["choice"] >= 0
    shown_items = np.take_along_axis(log["candidates"], log["slate"], axis=1)[clicked]
    sft_rows = sft_dataset(ex, titles)
    icl_rows = icl_sft_dataset(ex, shown_items, titles, world.num_users, cfg.offline.icl_demonstrations)
    texts = ([p + c for p, c in zip(sft_rows["prompt"], sft_rows["completion"])] + icl_rows["prompt"][:200]
             + [str(t) for t in titles])
    start = base_model(cfg.model, texts, folder / "base")
    sft = sft_stage(start, sft_rows, folder / "SFT", cfg.offline.sft, seed, cfg.model)
    o = cfg.offline
    neg = mix_negatives(ex, o.negatives, titles=titles, popularity=world.catalog.popularity,
                        embeddings=world.catalog.embeddings, rng=seed)
    aligned = preference_stage(sft, preference_dataset(ex, neg, titles), folder / "DPO", o.preference, seed,
                               cfg.model, loss=o.loss, beta=o.beta)
    icl = sft_stage(start, icl_rows, folder / "ICL", o.sft, seed, cfg.model) if need_icl else None
    return aligned, icl


# the rounds ------------------------------------------------------------------------------------------
def context(cfg: OnlineStudyConfig, world, seed: int, frozen: Path | None = None, icl: Path | None = None) -> Context:
    """What every method of seed ``seed`` shares; ``frozen`` and ``icl`` are the offline models (None in a
    study without LLM methods)."""
    return Context(list(world.catalog.titles), world.catalog.popularity, world.catalog.embeddings, world.num_users,
                   cfg.model, frozen.resolve() if frozen else None, icl.resolve() if icl else None,
                   dataclasses.asdict(cfg.serve), seed, env_kwargs(cfg, seed), cfg.offline.log_steps,
                   cfg.steps_per_round)


def finished_rounds(folder: Path, rounds: int) -> int:
    """How many rounds of a method are finished (served, measured and learned from), from the start."""
    r = 0
    while r < rounds and (folder / f"round_{r:02d}" / "learn.json").exists():
        r += 1
    return r


def run_method(cfg: OnlineStudyConfig, method: MethodConfig, ctx: Context, world, start_states: dict,
               folder: Path, on_round: Callable[[str, int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every round of one method; rounds already finished on disk are read back, not rerun."""
    folder = Path(folder).resolve()  # RLlib's checkpoints refuse relative paths
    refiner = make_refiner(method, ctx, folder)
    refiner.start()
    done = finished_rounds(folder, cfg.rounds)
    trend = cfg.scenario.genre if cfg.scenario.kind in ("interest_shift", "both") else None
    server = None
    current: tuple[str, dict] | None = None
    for r in range(done, cfg.rounds):
        rf = folder / f"round_{r:02d}"
        spec = refiner.policy(r)
        if (rf / "metrics.json").exists():  # served and measured before the stop; only learning is left
            decisions, _ = _load_round(rf)
        else:
            if server is None:
                previous = folder / f"round_{r - 1:02d}" / "states.pkl"
                states = pickle.loads(previous.read_bytes()) if r > 0 else start_states
                server = rollout(cfg, ctx.seed, *spec)
                server.open(states)
                current = spec
            elif spec != current:
                server.set_policy(*spec)
                current = spec
            t0 = time.perf_counter()
            before = server.policy_states()
            stats, decisions = server.advance(cfg.steps_per_round, record=True)
            generation = _generation(server.policy_states(), before) if spec[0].startswith("llm") else None
            rollout_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            metrics = round_metrics(decisions, float(stats.reward.sum()), cfg.world.users, stats.exposure,
                                    server.rows(), world.catalog, trend, generation)
            _save_round(rf, decisions, server.states())
            (rf / "metrics.json").write_text(json.dumps({
                "round": r, "clock": cfg.offline.log_steps + (r + 1) * cfg.steps_per_round, "metrics": metrics,
                "served": int(len(decisions["user"])), "rollout_s": rollout_s, "measure_s": time.perf_counter() - t1,
                "policy": spec[0], "model": spec[1].get("model", spec[1].get("module"))}))
        learned = refiner.learn(r, decisions, rf) if r < cfg.rounds - 1 else {"status": "none", "labelling_s": 0.0,
                                                                              "training_s": 0.0}
        (rf / "learn.json").write_text(json.dumps(learned))
        if on_round is not None:
            on_round(method.name, ctx.seed, r)
    if server is not None:
        server.close()
    return [{**json.loads((folder / f"round_{r:02d}" / "metrics.json").read_text()),
             "learn": json.loads((folder / f"round_{r:02d}" / "learn.json").read_text())} for r in range(cfg.rounds)]


def _generation(after: list[dict[str, Any]], before: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for a, b in zip(after, before):
        for k, v in count_delta(a.get("generation_counts", {}), b.get("generation_counts", {})).items():
            total[k] = total.get(k, 0) + v
    return total


# the study -------------------------------------------------------------------------------------------
def load_study(source) -> OnlineStudyConfig:
    from simenv.configfile import load_config

    return load_config(OnlineStudyConfig, source)


def run_study(cfg: OnlineStudyConfig, out: Path, resume: bool = False, overwrite: bool = False,
              on_round: Callable[[str, int, int], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """The whole study (see the module docstring); returns ``results.json``'s content."""
    import torch
    import yaml

    out = Path(out)
    resolved = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise FileExistsError(f"{out} exists; pass --resume to continue it or --overwrite to start over.")
        elif (out / "config.yaml").exists() and (out / "config.yaml").read_text() != resolved:
            raise ValueError(f"{out}/config.yaml differs from this config; a resumed study must use the same one "
                             "(or --overwrite).")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(resolved)
    torch.set_num_threads(cfg.threads)
    need_llm = any(m.kind in LLM_KINDS for m in cfg.methods)
    need_icl = any(m.kind == "icl" for m in cfg.methods)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {m.name: {} for m in cfg.methods}
    t0 = time.perf_counter()
    for seed in cfg.seeds:
        work = out / f"seed_{seed}"
        world = world_of(cfg, seed)
        log, start_states = logging_phase(cfg, seed, work / "log")
        frozen, icl = (offline_models(cfg, world, log, work / "models", seed, need_icl) if need_llm
                       else (None, None))
        ctx = context(cfg, world, seed, frozen, icl)
        if progress:
            print(f"seed {seed}: {int((log['choice'] >= 0).sum())} logged clicks"
                  f"{'; offline models ready' if need_llm else ''} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for method in cfg.methods:
            rounds = run_method(cfg, method, ctx, world, start_states, work / method.name.replace(" ", "_"), on_round)
            results[method.name][seed] = rounds
            if progress:
                ctr = " ".join(f"{x['metrics']['ctr']:.3f}" for x in rounds)
                print(f"  {method.name}: CTR by round {ctr} ({time.perf_counter() - t0:.0f} s)", flush=True)
    payload = {"shift_tick": cfg.shift_tick, "at_round": cfg.scenario.at_round, "results": results}
    (out / "results.json").write_text(json.dumps(payload))
    text = table(results, cfg)
    (out / "table.md").write_text(text + "\n")
    plot_curves(results, cfg, out / "curves.png")
    (out / "report.md").write_text(report(results, cfg, text))
    return payload


# the table and the curves ----------------------------------------------------------------------------
TABLE = ("ctr", "mean_rating", "return", "HR@1", "NDCG@5", "ValidRatio", "hallucination_rate", "popularity_lift",
         "exposure_gini", "homogenization", "trend_click_share")


def after_shift(rounds: list[dict[str, Any]], cfg: OnlineStudyConfig, metric: str) -> float:
    """A metric's mean over the rounds from the shift on (NaN rounds left out)."""
    v = [x["metrics"][metric] for x in rounds[cfg.scenario.at_round:]]
    v = [x for x in v if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _cell(m: float, h: float, digits: int = 3) -> str:
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f}" if not np.isfinite(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def table(results: dict[str, dict[int, list[dict[str, Any]]]], cfg: OnlineStudyConfig) -> str:
    """The after-shift means of ``TABLE``, and the differences from the frozen policy when there is one."""
    frozen = next((m.name for m in cfg.methods if m.kind == "frozen"), None)
    deltas = ("ctr", "return") if frozen else ()
    lines = [f"Means over rounds {cfg.scenario.at_round}..{cfg.rounds - 1} (from the shift on), mean ± 95% "
             f"t-interval over seeds {cfg.seeds}"
             + (f"; Δ columns are paired by seed against {frozen!r}." if frozen else "."), "",
             "| method | " + " | ".join(TABLE) + (" | ΔCTR vs frozen | Δreturn vs frozen |" if frozen else " |"),
             "|---" * (len(TABLE) + 1 + len(deltas)) + "|"]
    for name, by_seed in results.items():
        row = [_cell(*t_interval([after_shift(r, cfg, c) for r in by_seed.values()])) for c in TABLE]
        for metric in deltas:
            diffs = [after_shift(r, cfg, metric) - after_shift(results[frozen][s], cfg, metric)
                     for s, r in by_seed.items()]
            row.append("-" if name == frozen else _cell(*t_interval(diffs)))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def curve(by_seed: dict[int, list[dict[str, Any]]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(clock at each round's end, the metric's mean over seeds)."""
    runs = list(by_seed.values())
    clock = np.array([x["clock"] for x in runs[0]])
    values = np.array([[np.nan if x["metrics"][metric] is None else x["metrics"][metric] for x in r] for r in runs])
    return clock, np.nanmean(values, axis=0)


def plot_curves(results, cfg: OnlineStudyConfig, path: Path,
                metrics: tuple[str, ...] = ("ctr", "HR@1", "trend_click_share", "popularity_lift")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for ax, metric in zip(axes, metrics):
        for name, by_seed in results.items():
            x, y = curve(by_seed, metric)
            ax.plot(x, y, marker="o", label=name)
        ax.axvline(cfg.shift_tick, color="grey", linestyle="--", linewidth=1)
        ax.set_title(metric)
        ax.set_xlabel("simulated time (world tick at the round's end)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(f"online refinement: {cfg.scenario.kind} at tick {cfg.shift_tick} (dashed), right after round 0; "
                 f"mean over seeds {cfg.seeds}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results, cfg: OnlineStudyConfig, text: str) -> str:
    lines = [f"# Online refinement study `{cfg.name}`", "", text, "", "![learning curves](curves.png)", "",
             "## Rounds that learned nothing", ""]
    notes = [f"- {name}, seed {seed}, round {x['round']}: {x['learn']['status']}: {x['learn'].get('reason', '')}"
             for name, by_seed in results.items() for seed, rounds in by_seed.items() for x in rounds
             if x["learn"]["status"] in ("skipped", "failed")]
    lines += notes or ["none: every learning method trained after every round but the last."]
    lines += ["", "## Time per round (mean over seeds and rounds, seconds)", "",
              "| method | rollout | labelling | training | users served per second of round |", "|---|---|---|---|---|"]
    for name, by_seed in results.items():
        rs = [x for rounds in by_seed.values() for x in rounds]
        roll = np.mean([x["rollout_s"] for x in rs])
        lab = np.mean([x["learn"]["labelling_s"] for x in rs])
        tr = np.mean([x["learn"]["training_s"] for x in rs])
        served = np.mean([x["served"] for x in rs])
        lines.append(f"| {name} | {roll:.2f} | {lab:.2f} | {tr:.2f} | {served / (roll + lab + tr):,.0f} |")
    return "\n".join(lines) + "\n"
