"""Where the time of an online-refinement round goes, per method: rollout (the simulated users served
by the method's policy, sharded as in the study), labelling (turning the round's decisions into
preference sets or GRPO prompts) and training (the preference trainer or trl's GRPOTrainer).

Every method runs in the same study (same world, seed, rounds and machine), so the figures compare
directly; the ratio column divides each method's round time by the frozen policy's (serving only).
Users served per second count every served user-step of a round over the whole round's time.

    python experiments/bench_online.py                    # 100 users, 3 rounds of 3 steps, every method
    python experiments/bench_online.py --users 60 --rounds 2 --out runs/bench_online_quick
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def timing_table(results: dict[str, dict[Any, list[dict[str, Any]]]], rounds_used: str = "all but the last") -> str:
    """Mean seconds per round (rounds that learned: every round but the last) split by phase."""
    rows, base = [], None
    for name, by_seed in results.items():
        rs = [x for rounds in by_seed.values() for x in rounds[:-1]] or [x for r in by_seed.values() for x in r]
        roll = float(np.mean([x["rollout_s"] + x.get("measure_s", 0.0) for x in rs]))
        lab = float(np.mean([x["learn"]["labelling_s"] for x in rs]))
        tr = float(np.mean([x["learn"]["training_s"] for x in rs]))
        served = float(np.mean([x["served"] for x in rs]))
        total = roll + lab + tr
        if name == "frozen":
            base = total
        rows.append((name, roll, lab, tr, total, served / total))
    lines = [f"Seconds per round (mean over seeds and {rounds_used} rounds).", "",
             "| method | rollout | labelling | training | round | x frozen | users served / s of round |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, roll, lab, tr, total, speed in rows:
        ratio = f"{total / base:.2f}" if base else "n/a"
        lines.append(f"| {name} | {roll:.2f} | {lab:.2f} | {tr:.2f} | {total:.2f} | {ratio} | {speed:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    from policies.online.study import load_study, run_study

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "configs" / "online_refine.yaml"))
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--out", default="runs/bench_online")
    args = parser.parse_args(argv)
    cfg = load_study(args.config)
    cfg = dataclasses.replace(cfg, seeds=cfg.seeds[:1], rounds=args.rounds,
                              world=dataclasses.replace(cfg.world, users=args.users),
                              ray=dataclasses.replace(cfg.ray, backend=args.backend))
    cfg.__post_init__()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    results = run_study(cfg, out, progress=True)["results"]
    import torch

    device = f"CUDA ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else f"CPU, {cfg.threads} threads"
    text = (timing_table(results) + f"\n\n{args.users} users, {cfg.steps_per_round} steps per round, {device}, "
            f"backend {args.backend}; whole run {time.perf_counter() - t0:.0f} s (offline training included).")
    (out / "bench_online.md").write_text(text + "\n")
    (out / "bench_online.json").write_text(json.dumps({"config": dataclasses.asdict(cfg)}, default=str))
    print("\n" + text)
    return text


if __name__ == "__main__":
    main()
