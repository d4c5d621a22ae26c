"""PPO from RLlib's new API stack, with the ``SlateRLModule`` slate policy, against random, popular and
oracle slates on the same ``RecSim-LLM-v0`` world.

What is measured: after each ``algo.train()``, RLlib's ``env_runners/episode_return_mean``, the mean
return (clicks per session, with the default ``reward="click"``) of the last ``--smoothing`` sessions
completed by the (first) sampling runner, and the env steps sampled so far.

The baselines run in the same process, on the same world: the same ``env_config`` and the reset seed
of that runner (``seed + worker_index``), so the dynamics' random streams are the PPO run's. The world
drifts as it is served (satiation, boredom, interest drift), so a return is only comparable at the
same world time: each baseline policy drives its own vector env up to the world clock the PPO runner
had reached at the end of each iteration, and is scored with the same statistic (mean return of its
last ``--smoothing`` completed sessions). Both start from the untrained (uniformly random) slate, so
PPO's first iterations sit on the random baseline; the gap afterwards is what PPO learned.

Outputs under ``--out``: ``rllib_ppo.csv`` (one row per iteration), ``rllib_ppo.md`` (the same as a
table, plus the command) and ``rllib_ppo.png`` (returns per iteration).

Usage:
    python experiments/rllib_ppo.py                       # 256 users, 1000 items, 30 iterations
    python experiments/rllib_ppo.py --iterations 3 --users 64 --out runs/rllib_ppo_smoke
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _arg(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Args:
    iterations: int = _arg(30, "algo.train() calls")
    users: int = _arg(256, "users of the world, all served every step by one runner's vector env")
    items: int = _arg(1000, "catalog size")
    seed: int = _arg(0, "world_seed and debugging(seed=...)")
    num_env_runners: int = _arg(0, "RLlib sampling actors (0: sample in the driver)")
    steps_per_user: int = _arg(32, "env steps per user per training batch")
    lr: float = _arg(1e-3, "PPO learning rate")
    gamma: float = _arg(0.9, "PPO discount")
    num_epochs: int = _arg(4, "PPO epochs per batch")
    minibatch_size: int = _arg(1024, "PPO minibatch size")
    smoothing: int = _arg(256, "sessions in the mean episode return (RLlib's metrics_num_episodes_for_smoothing)")
    baselines: str = _arg("random,popular,oracle", "comma-separated policies.make_policy names to compare with")
    out: str = _arg("runs/rllib_ppo", "output folder")


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                            help=f.metadata["help"])
    return Args(**vars(parser.parse_args(argv)))


def env_config(args: Args) -> dict:
    """``RecSim-LLM-v0`` keyword arguments of the world PPO and the baselines are served."""
    return {"num_users": args.users, "num_items": args.items, "world_seed": args.seed}


class Baseline:
    """A ``policies`` policy serving its own vector env of the PPO world, scored like RLlib scores PPO."""

    def __init__(self, name: str, args: Args, reset_seed: int) -> None:
        import gymnasium as gym

        from policies import make_policy
        from policies.rllib_slate import ENV_ID

        self.name = name
        self.env = gym.make_vec(ENV_ID, num_envs=args.users, vectorization_mode="vector_entry_point",
                                **env_config(args))
        self.policy = make_policy(name, seed=args.seed)
        self.obs, _ = self.env.reset(seed=reset_seed)
        self.policy.setup(self.env)
        self.running = np.zeros(args.users)  # (N,) return of each slot's current session
        self.finished: list[float] = []  # returns of completed sessions, in completion order
        self.smoothing = args.smoothing

    def advance_to(self, clock: int) -> float:
        """Step until the world clock reaches ``clock``; the mean return of the last completed sessions."""
        world = self.env.unwrapped.world
        while world.clock < clock:
            actions = self.policy.act(self.obs)
            obs, reward, terminated, truncated, info = self.env.step(actions)
            self.policy.update(self.obs, actions, reward, info)
            self.running += reward
            done = terminated | truncated
            self.finished += self.running[done].tolist()
            self.running[done] = 0.0
            self.obs = obs
        return float(np.mean(self.finished[-self.smoothing:])) if self.finished else float("nan")


def runner_state(algo, num_env_runners: int) -> tuple[int, int]:
    """(world clock, worker index) of the first sampling runner's env."""
    return algo.env_runner_group.foreach_env_runner(
        lambda r: (int(r.env.unwrapped.world.clock), int(r.worker_index)), local_env_runner=num_env_runners == 0,
    )[0]


def write_outputs(rows: list[dict], args: Args, out: Path) -> None:
    with open(out / "rllib_ppo.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    names = [n for n in rows[0] if n.endswith("_return")]
    lines = [
        f"`python {shlex.join(['experiments/rllib_ppo.py', *sys.argv[1:]])}`",
        "",
        f"Mean return (clicks per session) of the last {args.smoothing} completed sessions; {args.users} users, "
        f"{args.items} items, seed {args.seed}; baselines at the same world clock.",
        "",
        "| iteration | env steps | world clock | " + " | ".join(n.removesuffix("_return") for n in names)
        + " | PPO - random |",
        "|---" * (len(names) + 4) + "|",
    ]
    for r in rows:
        cells = [str(r["iteration"]), str(r["timesteps"]), str(r["world_clock"])]
        cells += [f"{r[n]:.2f}" for n in names]
        cells.append(f"{r['ppo_return'] - r['random_return']:+.2f}" if "random_return" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    (out / "rllib_ppo.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    it = [r["iteration"] for r in rows]
    for n in names:
        ax.plot(it, [r[n] for r in rows], marker="o" if n == "ppo_return" else None,
                linestyle="-" if n == "ppo_return" else "--", label=n.removesuffix("_return"))
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel(f"mean session return (last {args.smoothing})")
    ax.set_title(f"RLlib PPO, SlateRLModule, {args.users} users")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rllib_ppo.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from policies.rllib_slate import build_algo, ppo_config

    ray.init(num_cpus=max(args.num_env_runners, 1) + 1, include_dashboard=False, log_to_driver=False)
    config = ppo_config(env_config(args), num_env_runners=args.num_env_runners, users_per_runner=args.users,
                        seed=args.seed, steps_per_user=args.steps_per_user, lr=args.lr, gamma=args.gamma,
                        num_epochs=args.num_epochs, minibatch_size=args.minibatch_size)
    config.reporting(metrics_num_episodes_for_smoothing=args.smoothing)
    algo = build_algo(config, out / "algo")
    _, worker_index = runner_state(algo, args.num_env_runners)
    baselines = [Baseline(name, args, args.seed + worker_index) for name in args.baselines.split(",") if name]
    rows = []
    start = time.perf_counter()
    for i in range(1, args.iterations + 1):
        result = algo.train()
        clock, _ = runner_state(algo, args.num_env_runners)
        row = {"iteration": i, "timesteps": int(result["num_env_steps_sampled_lifetime"]), "world_clock": clock,
               "ppo_return": float(result["env_runners"]["episode_return_mean"])}
        row.update({f"{b.name}_return": b.advance_to(clock) for b in baselines})
        row["entropy"] = float(result["learners"]["default_policy"]["entropy"])
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        write_outputs(rows, args, out)
    algo.stop()
    ray.shutdown()
    print((out / "rllib_ppo.md").read_text())


if __name__ == "__main__":
    main()
