"""Scale-out of sharded rollouts on Ray actors: user-steps per second on 1..n actors against one process.

What is measured, all in the same run and on the same world:

1. the baseline: ``ShardedRollout(..., backend="local", num_workers=1)``, one shard in this process
   (no Ray, one numba thread), the speed a single core gives;
2. ``ShardedRollout(..., backend="ray", num_workers=n)`` for each ``n`` of ``--workers`` (one CPU and
   one numba thread per actor), and the parallel efficiency ``speed(n) / (n * speed(1 actor))``;
3. the per-call overhead: the round trip of an empty actor call (``__ray_ready__``) to all actors at
   once, in ms (what every chunk pays on top of the stepping);
4. the social exchange per refresh: the bytes every actor reads (every user's taste and latest item,
   straight from the other actors' results in the object store), n times over, and its ms.

A user-step is one user shown one slate; every user is served every step. World building, actor
start-up and kernel loading are not timed: ``ShardedRollout.run`` starts its workers itself, so the
clock is read in the ``on_chunk`` callback, and the timed window runs from the end of the first chunk
(the world is built, the kernels are loaded) to the end of the last. Chunks end at the social-refresh
ticks, so the window holds whole refresh periods, exchanges included. Probes (3) and (4) run after the
last chunk, outside the window; (4) repeats the exchange the runner does, through its private
``_run_chunk`` with 0 steps (an extra refresh at the very end changes nothing that is measured).

Each configuration runs ``--repeats`` times, round-robin over the configurations so that a noisy
machine slows all of them alike; the tables give the median and the interquartile range (IQR).

Usage:
    python experiments/bench_ray.py                                   # 100k users, workers 1,2
    python experiments/bench_ray.py --users 5000 --steps 15 --repeats 1   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numba already uses the cores; BLAS on top oversubscribes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=100_000, help="users of the world (all served every step)")
    p.add_argument("--items", type=int, default=5_000, help="catalog size")
    p.add_argument("--steps", type=int, default=30,
                   help="steps per run; the first refresh period is warm-up, the rest is timed")
    p.add_argument("--workers", default="1,2", help="comma-separated numbers of Ray actors")
    p.add_argument("--repeats", type=int, default=3, help="runs of each configuration (median and IQR)")
    p.add_argument("--policy", default="popular", help="a per-user policy (popular runs with online=False)")
    p.add_argument("--social-interval", type=int, default=5, help="steps between social refreshes (chunk length)")
    p.add_argument("--probes", type=int, default=20, help="round trips timed for the per-call overhead")
    p.add_argument("--address", default=None, help="a running Ray cluster to join; default: a fresh local Ray")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_ray.json", help="where the JSON results go")
    return p.parse_args(argv)


def env_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return dict(num_users=a.users, num_items=a.items, slate_size=10, num_candidates=20, horizon=a.steps + 1,
                candidate_features=False, embedding_model="random", world_seed=a.seed, mean_degree=10.0,
                dynamics={"social_interval": a.social_interval})


def _stats(xs: list[float]) -> dict[str, Any]:
    q1, med, q3 = np.percentile(xs, [25, 50, 75]) if xs else (np.nan,) * 3
    return {"median": float(med), "iqr": float(q3 - q1), "values": [float(x) for x in xs]}


def one_run(a: argparse.Namespace, backend: str, workers: int) -> dict[str, float]:
    """One rollout; returns the timed speed and, on Ray, the per-call and exchange probes."""
    import ray

    from simenv.rollout import ShardedRollout

    kwargs = {"online": False} if a.policy == "popular" else {}
    rollout = ShardedRollout(env_kwargs(a), a.policy, kwargs, num_workers=workers, seed=a.seed, backend=backend,
                             threads_per_worker=1, cpus_per_worker=1.0)
    marks: list[tuple[int, float]] = []
    probes: dict[str, float] = {}

    def on_chunk(t: int, r: ShardedRollout) -> None:
        marks.append((t, time.perf_counter()))
        if t < a.steps or backend != "ray":
            return
        trips = []
        for _ in range(a.probes):  # an empty call to every actor at once, as each chunk makes
            s = time.perf_counter()
            ray.get([w.__ray_ready__.remote() for w in r.workers])
            trips.append(time.perf_counter() - s)
        probes["call_ms"] = 1e3 * float(np.median(trips))
        times = []
        for _ in range(3):  # the runner's exchange, as it runs at every refresh tick
            s = time.perf_counter()
            r._run_chunk(0, exchange=True)
            times.append(time.perf_counter() - s)
        inputs = r._call("social_inputs")
        nbytes = sum(x[0].nbytes + x[1].nbytes for x in inputs) * len(r.workers)  # every actor reads every piece
        probes["exchange_ms"] = 1e3 * float(np.median(times))
        probes["exchange_bytes"] = float(nbytes)

    result = rollout.run(a.steps, on_chunk=on_chunk)
    if len(marks) < 2:
        raise ValueError(f"--steps {a.steps} with --social-interval {a.social_interval} gives {len(marks)} chunk(s); "
                         "the first is warm-up, so at least two are needed: raise --steps.")
    (t0, c0), (t1, c1) = marks[0], marks[-1]
    user_steps = int(result.steps["served"][t0:t1].sum())
    return {"user_steps_per_s": user_steps / (c1 - c0), "timed_steps": t1 - t0, "timed_s": c1 - c0, **probes}


def _init_ray(address: str | None, cpus: int) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        # a token of this run only, inherited by every Ray process it starts; never ~/.ray/auth_token.
        # Before the first `import ray` of the process: Ray reads RAY_AUTH_MODE once, when it loads.
        token = Path(tempfile.mkdtemp(prefix="bench_ray_")) / "auth_token"
        token.write_text(uuid.uuid4().hex)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    import ray

    if ray.is_initialized():
        return
    if address is None:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 * 1024**2)
    else:
        ray.init(address=address, log_to_driver=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    workers = [int(w) for w in a.workers.split(",") if w.strip()]
    if 1 not in workers:
        workers = [1, *workers]  # the efficiency is relative to one actor
    _init_ray(a.address, max(max(workers), os.cpu_count() or 1))
    import ray
    configs = [("local", 1)] + [("ray", n) for n in workers]
    runs: dict[str, list[dict[str, float]]] = {f"{b}:{n}": [] for b, n in configs}
    t_all = time.perf_counter()
    try:
        for rep in range(a.repeats):
            for backend, n in configs:
                s = time.perf_counter()
                r = one_run(a, backend, n)
                runs[f"{backend}:{n}"].append(r)
                print(f"  repeat {rep + 1}/{a.repeats} {backend} x{n}: {r['user_steps_per_s']:,.0f} user-steps/s "
                      f"({time.perf_counter() - s:.1f} s with start-up)", flush=True)
    finally:
        if a.address is None:
            ray.shutdown()
    one = float(np.median([r["user_steps_per_s"] for r in runs["ray:1"]]))
    rows = []
    for backend, n in configs:
        rs = runs[f"{backend}:{n}"]
        row = {"backend": backend, "workers": n, "speed": _stats([r["user_steps_per_s"] for r in rs])}
        if backend == "ray":
            row["efficiency"] = _stats([r["user_steps_per_s"] / (n * one) for r in rs])
            for k in ("call_ms", "exchange_ms", "exchange_bytes"):
                row[k] = _stats([r[k] for r in rs])
        rows.append(row)
    base = rows[0]["speed"]["median"]

    def cell(s: dict[str, Any], fmt: str) -> str:
        return f"{s['median']:{fmt}} ± {s['iqr']:{fmt}}"

    print(f"\n{a.users:,} users, {a.items:,} items, policy {a.policy}; {runs['local:1'][0]['timed_steps']} timed steps "
          f"of {a.steps}; median ± IQR over {a.repeats} repeat(s); {os.cpu_count()} CPUs\n")
    print("| engine | workers | user-steps/s | vs 1 process | parallel efficiency | call round trip ms "
          "| exchange MB / refresh | exchange ms / refresh |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ray_cells = ("n/a",) * 4 if row["backend"] == "local" else (
            cell(row["efficiency"], ".2f"), cell(row["call_ms"], ".2f"),
            f"{row['exchange_bytes']['median'] / 1e6:.2f}", cell(row["exchange_ms"], ".1f"))
        name = "1 process (local shard)" if row["backend"] == "local" else "Ray actors"
        print(f"| {name} | {row['workers']} | {cell(row['speed'], ',.0f')} | {row['speed']['median'] / base:.2f}x "
              f"| " + " | ".join(ray_cells) + " |")
    result = {"args": vars(a), "cpus": os.cpu_count(), "seconds": time.perf_counter() - t_all, "rows": rows,
              "runs": runs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
