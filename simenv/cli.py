"""The ``recsim-llm`` command line."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import simenv  # noqa: F401  (registers RecSim-LLM-v0)
    from policies import evaluate, make_policy

    t0 = time.perf_counter()
    print(f"Building a synthetic world: {args.users} users, {args.items} items "
          f"(real MiniLM embeddings, cached after the first run) ...", flush=True)
    env = gym.make_vec("RecSim-LLM-v0", num_envs=args.users, vectorization_mode="vector_entry_point",
                       num_users=args.users, num_items=args.items, slate_size=args.slate_size,
                       num_candidates=args.candidates, horizon=args.steps, reward=args.reward,
                       world_seed=args.seed)
    print(f"  world ready in {time.perf_counter() - t0:.1f} s "
          f"({env.unwrapped.world.social.num_edges // 2} friendships)", flush=True)
    rows = []
    for name in args.policies.split(","):
        policy = make_policy(name.strip(), seed=args.seed)
        t = time.perf_counter()
        res = evaluate(policy, env, episodes=args.episodes, seed=args.seed, steps=args.steps, progress=True)
        dt = time.perf_counter() - t
        mean = {k: float(np.mean([r[k] for r in res])) for k in res[0]}
        rows.append((name, mean, mean["user_steps"] * args.episodes / dt))
    print()
    print(f"| policy | CTR | mean rating | return/user | coverage | leave rate | user-steps/s |")
    print(f"|---|---|---|---|---|---|---|")
    for name, m, speed in rows:
        print(f"| {name} | {m['ctr']:.3f} | {m['mean_rating']:.2f} | {m['return']:.2f} | {m['coverage']:.3f} "
              f"| {m['leave_rate']:.4f} | {speed:,.0f} |")
    print(f"\nreward={args.reward}, {args.steps} steps, seed {args.seed}; total {time.perf_counter() - t0:.1f} s")
    env.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsim-llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run baselines in a synthetic world and print a summary table")
    demo.add_argument("--users", type=int, default=1000)
    demo.add_argument("--items", type=int, default=1000)
    demo.add_argument("--steps", type=int, default=50)
    demo.add_argument("--episodes", type=int, default=1)
    demo.add_argument("--slate-size", type=int, default=5)
    demo.add_argument("--candidates", type=int, default=20)
    demo.add_argument("--reward", default="click")
    demo.add_argument("--policies", default="random,popular,oracle")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"recsim-llm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
