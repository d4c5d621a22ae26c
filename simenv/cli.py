"""The ``recsim-llm`` command line: ``demo`` (a small audited simulation), ``run`` (an experiment
from a YAML file, sharded over Ray workers, or an online-refinement study when the file has
``study: online_refine``), ``sweep`` (a Ray Tune search over such experiments),
``report``, ``compare`` and ``train-user-lm`` (a user LM trained to imitate logged decisions)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    from simenv.audit.report import write_report
    from simenv.audit.rundir import read_run, write_run

    t0 = time.perf_counter()
    out = Path(args.out)
    env_kwargs = dict(num_users=args.users, num_items=args.items, slate_size=args.slate_size,
                      num_candidates=args.candidates, horizon=args.steps, reward=args.reward, world_seed=args.seed)
    seeds = [args.seed + i for i in range(args.seeds)]
    print(f"Synthetic world: {args.users} users, {args.items} items (real MiniLM embeddings, cached after the "
          f"first run); {args.steps} steps from seeds {seeds}; runs and report in {out}/", flush=True)
    rows = []
    for name in args.policies.split(","):
        name = name.strip()
        t = time.perf_counter()
        run = read_run(write_run(out / name, name, env_kwargs, seeds, args.steps))
        dt = time.perf_counter() - t
        s = run.seeds[0].summary
        ev = {k: float(np.mean([x.evaluation[k] for x in run.seeds])) for k in run.seeds[0].evaluation}
        rows.append((name, ev, s, ev["user_steps"] * len(seeds) / dt))
        print(f"  {name}: done in {dt:.1f} s", flush=True)
    print()
    print("| policy | CTR | mean rating | coverage | ARP (x avg item) | exposure Gini | leave rate | user-steps/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ev, s, speed in rows:
        print(f"| {name} | {ev['ctr']:.3f} | {ev['mean_rating']:.2f} | {ev['coverage']:.3f} "
              f"| {s['popularity']['arp_relative']:.2f} | {s['exposure']['gini']:.3f} | {ev['leave_rate']:.4f} "
              f"| {speed:,.0f} |")
    if args.steer:
        try:
            _demo_steering(args, env_kwargs, out)
        except ValueError as err:  # e.g. a tiny world where no user qualifies as a target
            print(f"\nsteering skipped: {err}")
    paths = write_report(out)
    print(f"\nreport: {paths['markdown']} and {paths['html']}; metrics: {paths['metrics']}")
    names = [r[0] for r in rows]
    if len(names) >= 2:
        print(f"paired comparison: recsim-llm compare {out / names[0]} {out / names[1]}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def _demo_steering(args: argparse.Namespace, env_kwargs: dict, out: Path) -> None:
    import gymnasium as gym

    import simenv  # noqa: F401
    from simenv.audit.steering import SteeringConfig, SteeringExperiment, select_targets

    env = gym.make_vec("RecSim-LLM-v0", num_envs=args.users, vectorization_mode="vector_entry_point",
                       **{**env_kwargs, "audit": False})
    env.reset(seed=args.seed)
    sim = env.unwrapped.sim
    pop = sim.world.catalog.popularity
    item = int(np.argsort(pop)[int(0.6 * len(pop))])  # neither a hit nor obscure
    targets = select_targets(sim.world, sim.user_model, item, 20)
    t = time.perf_counter()
    result = SteeringExperiment(env, SteeringConfig(item, tuple(targets.tolist()), steps=20, seed=args.seed)).run()
    (out / "steering.json").write_text(json.dumps(result, indent=1))
    best = max(result["sweep"], key=lambda r: r["greedy"]["ioip"] - r["random"]["ioip"])
    print(f"\nsteering toward {result['item_title']!r} ({len(targets)} targets, {time.perf_counter() - t:.1f} s): "
          f"direct IoIP {result['direct']['ioip']:+.3f}; at λ={best['lambda']:g} greedy IoIP "
          f"{best['greedy']['ioip']:+.3f} (damage {best['greedy']['damage']:.2f}) vs random neighbors "
          f"{best['random']['ioip']:+.3f} (damage {best['random']['damage']:.2f})")


def _report(args: argparse.Namespace) -> int:
    from simenv.audit.report import write_report

    paths = write_report(args.run_dir)
    print(f"wrote {paths['markdown']}, {paths['html']}, {paths['metrics']} and {len(paths) - 3} plots")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from simenv.audit.compare import compare_runs
    from simenv.audit.report import KEY_METRICS
    from simenv.audit.rundir import read_run

    result = compare_runs(read_run(args.run_a), read_run(args.run_b), resamples=args.resamples)
    labels = dict(KEY_METRICS)
    names = list(result["metrics"]) if args.all else [k for k, _ in KEY_METRICS if k in result["metrics"]]
    print(f"{result['b']} - {result['a']}, paired over seeds {result['seeds']} (common random numbers); "
          "95% percentile-bootstrap interval over seeds\n")
    print(f"| metric | {result['a']} | {result['b']} | difference | 95% CI |")
    print("|---|---:|---:|---:|---|")
    for name in names:
        m = result["metrics"][name]
        ci = f"[{m['ci_low']:.4g}, {m['ci_high']:.4g}]" if np.isfinite(m["ci_low"]) else "n/a (one seed)"
        print(f"| {labels.get(name, name)} | {m['a']:.4g} | {m['b']:.4g} | {m['diff']:+.4g} | {ci} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _train_user_lm(args: argparse.Namespace) -> int:
    from agents.llm.model import LMConfig, new_lm
    from agents.llm.records import movielens_decisions, simulated_decisions
    from agents.llm.train import TrainConfig, train_user_lm

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} exists and is not empty; pass --overwrite to replace it.")
    t0 = time.perf_counter()
    if args.movielens:
        decisions, data = movielens_decisions(args.movielens, per_user=args.per_user, slate_size=args.slate_size,
                                              seed=args.seed, embedding_model=args.embedding_model)
        titles = list(data.catalog.titles)
        source = f"MovieLens-format logs in {args.movielens}"
    else:
        env_kwargs = dict(num_users=args.users, num_items=args.items, slate_size=args.slate_size,
                          num_candidates=args.candidates, world_seed=args.seed, embedding_model=args.embedding_model)
        decisions, world = simulated_decisions(env_kwargs, args.policy, args.steps, args.seed)
        titles = list(world.catalog.titles)
        source = f"the embedded choice model served by the {args.policy!r} policy for {args.steps} steps"
    print(f"{len(decisions)} decisions from {source} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if args.model:
        start = args.model
    else:
        texts = titles + [decisions.persona[i] + decisions.context[i] for i in range(0, len(decisions),
                                                                                     max(1, len(decisions) // 2000))]
        start = new_lm(texts, out, LMConfig(vocab_size=args.vocab_size, hidden_size=args.hidden,
                                                     intermediate_size=3 * args.hidden, num_layers=args.layers,
                                                     num_heads=args.heads, num_kv_heads=max(1, args.heads // 2),
                                                     seed=args.seed))
        print(f"new model and tokenizer in {out}", flush=True)
    config = TrainConfig(sft_epochs=args.sft_epochs, dpo_epochs=args.dpo_epochs, batch_size=args.batch_size,
                         lr=args.lr, dpo_lr=args.dpo_lr, beta=args.beta, seed=args.seed, device=args.device)
    train_user_lm(start, decisions, config, out=out)
    print(f"user LM in {out} ({time.perf_counter() - t0:.1f} s); use it with "
          f"gym.make('RecSim-LLM-v0', user_model='llm', llm={{'model': '{out}'}})")
    return 0


def _study_kind(path: str) -> str | None:
    """The ``study:`` key of a YAML file (an online-refinement study), or None (an experiment)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist.")
    data = yaml.safe_load(p.read_text()) or {}
    return data.get("study") if isinstance(data, dict) else None


def _run_study(args: argparse.Namespace) -> int:
    from policies.online.study import load_study, run_study

    cfg = load_study(args.config)
    if args.num_workers is not None:
        cfg.ray.num_workers = args.num_workers
    if args.address is not None:
        cfg.ray.address = args.address
    if args.backend is not None:
        cfg.ray.backend = args.backend
    cfg.ray.__post_init__()
    if cfg.ray.backend == "ray":
        from simenv.experiment import init_ray

        init_ray(cfg.ray.address)
    out = Path(args.out or Path("runs") / cfg.name)
    run_study(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print((out / "table.md").read_text(), end="")
    print(f"run directory: {out}/ (report.md, curves.png, results.json, a folder per seed and method)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from simenv.experiment import load_experiment, run_experiment

    kind = _study_kind(args.config)
    if kind is not None:
        if kind != "online_refine":
            raise ValueError(f"study: {kind!r} is not a study this version runs; use 'online_refine' (or no "
                             "'study' key for an experiment).")
        return _run_study(args)
    cfg = load_experiment(args.config)
    ray_cfg = cfg.ray
    if args.num_workers is not None:
        ray_cfg.num_workers = args.num_workers
    if args.address is not None:
        ray_cfg.address = args.address
    if args.backend is not None:
        ray_cfg.backend = args.backend
    ray_cfg.__post_init__()
    out = Path(args.out or Path("runs") / cfg.name)
    summaries = run_experiment(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print((out / "summary.md").read_text(), end="")
    print(f"run directory: {out}/ (config.yaml, metrics.csv, summary.json{', audit/report.md' if cfg.audit else ''})")
    return 0 if summaries else 1


def _sweep(args: argparse.Namespace) -> int:
    from simenv.sweep import load_sweep, run_sweep

    cfg = load_sweep(args.config)
    out = Path(args.out or Path("runs") / f"sweep_{Path(args.config).stem}")
    rows = run_sweep(cfg, out, resume=args.resume, address=args.address)
    print((out / "sweep.md").read_text(), end="")
    print(f"{len(rows)} trials, {sum(r['status'] != 'OK' for r in rows)} failed; run directories in {out}/trials/")
    return 0 if any(r["status"] == "OK" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsim-llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run baselines in a synthetic world, audit them, write a report")
    demo.add_argument("--users", type=int, default=1000)
    demo.add_argument("--items", type=int, default=1000)
    demo.add_argument("--steps", type=int, default=50)
    demo.add_argument("--seeds", type=int, default=3, help="runs per policy, from --seed on")
    demo.add_argument("--slate-size", type=int, default=5)
    demo.add_argument("--candidates", type=int, default=20)
    demo.add_argument("--reward", default="click")
    demo.add_argument("--policies", default="random,popular,oracle")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steer", action=argparse.BooleanOptionalAction, default=True,
                      help="also run a steering experiment (λ sweep)")
    demo.add_argument("--out", default="runs/demo", help="experiment folder: one run directory per policy")
    demo.set_defaults(func=_demo)
    run = sub.add_parser("run", help="run the experiment (or, with a 'study:' key, the online study) a YAML file "
                                     "describes, sharded over Ray workers")
    run.add_argument("config", help="experiment YAML (simenv.experiment.ExperimentConfig), or an online-refinement "
                                    "study (policies.online.study.OnlineStudyConfig, 'study: online_refine')")
    run.add_argument("--out", help="run directory (default runs/<name>)")
    run.add_argument("--address", help="Ray cluster address ('auto': the running one); default: a job's cluster, "
                                       "else a new local Ray")
    run.add_argument("--num-workers", type=int, help="shards of the users (overrides ray.num_workers)")
    run.add_argument("--backend", choices=("ray", "local"), help="'local': shards in this process, no Ray")
    run.add_argument("--resume", action="store_true", help="continue a stopped run in --out from its checkpoints")
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    sweep = sub.add_parser("sweep", help="search over experiments with Ray Tune; one run directory per trial")
    sweep.add_argument("config", help="sweep YAML (simenv.sweep.SweepConfig)")
    sweep.add_argument("--out", help="sweep folder (default runs/sweep_<config name>)")
    sweep.add_argument("--address", help="Ray cluster address; default: a job's cluster, else a new local Ray")
    sweep.add_argument("--resume", action="store_true", help="continue a stopped sweep (Tuner.restore)")
    sweep.set_defaults(func=_sweep)
    report = sub.add_parser("report", help="write report.md, report.html, metrics.json and plots for run(s)")
    report.add_argument("run_dir", help="a run directory, or a folder of run directories")
    report.set_defaults(func=_report)
    compare = sub.add_parser("compare", help="paired differences of two runs with bootstrap intervals")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--all", action="store_true", help="every metric, not only the key ones")
    compare.add_argument("--resamples", type=int, default=10_000)
    compare.add_argument("--json", help="also write the comparison to this file")
    compare.set_defaults(func=_compare)
    lm = sub.add_parser("train-user-lm", help="train a user LM to imitate logged decisions (SFT, then DPO)")
    lm.add_argument("--out", required=True, help="folder of the trained model (a Hugging Face model folder)")
    lm.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    lm.add_argument("--movielens", help="MovieLens-format folder (u.data, u.item, u.user); default: simulator logs")
    lm.add_argument("--per-user", type=int, default=10, help="MovieLens: logged choices per user")
    lm.add_argument("--users", type=int, default=500, help="simulator logs: users (one decision each per step)")
    lm.add_argument("--items", type=int, default=500)
    lm.add_argument("--steps", type=int, default=20)
    lm.add_argument("--candidates", type=int, default=20)
    lm.add_argument("--policy", default="popular", help="simulator logs: the baseline policy that serves users")
    lm.add_argument("--slate-size", type=int, default=5, help="options per decision (MovieLens: the sampled slate)")
    lm.add_argument("--embedding-model", default="minilm", choices=("minilm", "random"))
    lm.add_argument("--model", help="start from this local Hugging Face model folder instead of a new model")
    lm.add_argument("--vocab-size", type=int, default=2000)
    lm.add_argument("--hidden", type=int, default=128)
    lm.add_argument("--layers", type=int, default=4)
    lm.add_argument("--heads", type=int, default=4)
    lm.add_argument("--sft-epochs", type=int, default=3)
    lm.add_argument("--dpo-epochs", type=int, default=1)
    lm.add_argument("--batch-size", type=int, default=16)
    lm.add_argument("--lr", type=float, default=3e-3)
    lm.add_argument("--dpo-lr", type=float, default=5e-4)
    lm.add_argument("--beta", type=float, default=0.1)
    lm.add_argument("--device", help="cuda when present, else cpu")
    lm.add_argument("--seed", type=int, default=0)
    lm.set_defaults(func=_train_user_lm)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"recsim-llm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
