"""How wrong is off-policy evaluation in a world whose users evolve?

Logs a stochastic behaviour policy (Plackett-Luce over popularity, high temperature), estimates a
target policy's CTR (Plackett-Luce over the oracle's true utilities) with IPS, SNIPS, DM and DR from
those logs, and compares each with two ground truths the simulator knows:

- truth on logged states: the target's exact expected CTR in the states the behaviour policy's users
  were in (what the estimators estimate);
- truth on-policy: the target's CTR when it is itself deployed from the same seed (common random
  numbers). The difference between the two is the state-distribution shift that a one-step OPE cannot
  see: users drift, tire and leave differently under the target.

Prints a markdown table. Usage:
    python experiments/ope_check.py                            # 1000 users, 30 steps, ~20 s
    python experiments/ope_check.py --slate-size 3 --num-candidates 8    # small slate space: usable weights
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass, field

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

import simenv  # noqa: E402,F401  (registers RecSim-LLM-v0)
from policies import OraclePolicy, PlackettLucePolicy, PopularityPolicy  # noqa: E402
from simenv.audit.ope import ope_check  # noqa: E402


def _arg(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Args:
    users: int = _arg(1000, "users in the world, all served every step (num_envs = users)")
    items: int = _arg(1000, "catalog size")
    steps: int = _arg(30, "world steps logged (and rolled out on-policy for the truth)")
    num_candidates: int = _arg(20, "C candidates per user and step")
    slate_size: int = _arg(5, "k positions per slate; whole-slate weights live on C!/(C-k)! slates")
    behavior_temperature: float = _arg(10.0, "Plackett-Luce temperature of the logging policy over log popularity")
    target_temperature: float = _arg(1.0, "Plackett-Luce temperature of the evaluated policy over oracle utilities")
    target_samples: int = _arg(16, "target slates sampled per logged context for DM/DR and the logged-state truth")
    resamples: int = _arg(1000, "bootstrap resamples of the 95%% CIs")
    seed: int = _arg(0, "reset seed (the same for logging and on-policy runs) and bootstrap seed")


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        kind = {"int": int, "float": float}[f.type]
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default, help=f.metadata["help"])
    return Args(**vars(parser.parse_args()))


if __name__ == "__main__":
    args = parse_args()
    start = time.perf_counter()
    env = gym.make_vec("RecSim-LLM-v0", num_envs=args.users, vectorization_mode="vector_entry_point",
                       num_users=args.users, num_items=args.items, num_candidates=args.num_candidates,
                       slate_size=args.slate_size)
    behavior = PlackettLucePolicy(PopularityPolicy(), temperature=args.behavior_temperature, seed=args.seed + 1)
    target = PlackettLucePolicy(OraclePolicy(), temperature=args.target_temperature, seed=args.seed + 2)
    result = ope_check(env, behavior, target, steps=args.steps, seed=args.seed, target_samples=args.target_samples,
                       n_resamples=args.resamples)
    env.close()

    logged, on_policy = result["truth_logged_states"], result["truth_on_policy"]
    print(f"{args.users} users x {args.steps} steps, C={args.num_candidates}, k={args.slate_size}; "
          f"behaviour PL(popular, T={args.behavior_temperature:g}), target PL(oracle, T={args.target_temperature:g}); "
          f"seed {args.seed}; {time.perf_counter() - start:.1f} s\n")
    print(f"- logged user-steps: {result['user_steps']}; behaviour CTR: {result['behavior_ctr']:.4f}; "
          f"max importance weight: {result['max_weight']:.3g}")
    print(f"- target truth on logged states: {logged:.4f}; on-policy: {on_policy:.4f} realised, "
          f"{result['truth_on_policy_expected']:.4f} expected; state-shift gap (logged - on-policy expected): "
          f"{result['state_shift_gap']:+.4f} ({result['state_shift_gap'] / result['truth_on_policy_expected']:+.1%})\n")
    print("| estimator | estimate | 95% CI | ESS | truth (logged states) | truth (on-policy) "
          "| rel. error vs logged | rel. error vs on-policy |")
    print("|---|---|---|---|---|---|---|---|")
    for name, e in result["estimators"].items():
        print(f"| {name.upper()} | {e['value']:.4f} | [{e['ci_low']:.4f}, {e['ci_high']:.4f}] | {e['ess']:.0f} "
              f"| {logged:.4f} | {on_policy:.4f} | {e['rel_error_logged']:+.1%} | {e['rel_error_on_policy']:+.1%} |")
