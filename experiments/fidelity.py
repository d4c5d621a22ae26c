"""Fidelity of simulated users: do they pick what real users picked next?

Protocol (leave-last-out, as in LLaRA and Agent4Rec's item-choice test): each user's last logged
choice is the test decision; it is shown among 20 candidates (the true item plus 19 items the user
never rated, drawn uniformly); a user model ranks the candidates from the user's state just before
the choice (``simenv.datasets.replay.prefix_world``), and we report HR@1, HR@5 and NDCG@5 with 95%
bootstrap intervals over test users. Models, all fitted on the training part only:

- random and popularity (training-log counts): floors;
- the embedded choice model with default parameters, and calibrated: its temperature, quality and
  interest weights chosen by maximum likelihood of the logged choices among sampled candidates at
  training decision points;
- the LLM user agent: a user LM trained here from scratch on those training decisions
  (``agents.llm.train``: SFT, then DPO), scoring the lettered candidates by likelihood, exactly as
  ``LLMUser`` does inside the simulator;
- SASRec trained on the users' training sequences.

Data: ``--data`` (default ``../shared/data/ml-100k``) when the folder exists; otherwise a synthetic
world whose interaction log is written by the simulator itself (embedded users served by the
popularity policy), which favours the embedded model, whose family generated the data.

    python experiments/fidelity.py                     # ML-100K when present (~40 min on 2 cores)
    python experiments/fidelity.py --quick             # synthetic, small: a smoke run (~1-2 min)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small float32 matmuls next to torch's threads

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.choice import ChoiceConfig, MultinomialLogitUser  # noqa: E402
from policies.logs import simulated_world_data  # noqa: E402
from simenv.datasets import Interactions, WorldData, load_movielens  # noqa: E402
from simenv.audit.ranking import ranking_metrics  # noqa: E402
from simenv.datasets.replay import (Histories, decision_points, leave_last_out, prefix_world,  # noqa: E402
                                    sample_candidates)

CANDIDATES = 20
# calibration grid of the embedded model: (temperature, quality_weight, interest_weight)
GRID = list(itertools.product((0.02, 0.05, 0.1, 0.2, 0.5), (0.0, 1.0, 2.0, 4.0), (0.0, 0.1, 0.5)))


def with_ci(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of a percentile bootstrap over test decisions."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def calibrate(data: WorldData, train: Interactions, points, seed: int) -> tuple[ChoiceConfig, float]:
    """The grid point of ``GRID`` with the highest mean log-likelihood of the logged choices among
    sampled candidates at training decision points (no position or no-click terms: candidates are
    unordered and every test decision is a click)."""
    world = prefix_world(data, train, points, seed=seed)
    cands, col = sample_candidates(data.interactions, points, data.catalog.num_items, CANDIDATES, seed=seed + 1)
    users = np.arange(len(points))
    best = (None, -np.inf)
    for tau, bq, omega in GRID:
        cfg = ChoiceConfig(temperature=tau, quality_weight=bq, interest_weight=omega, position_decay=0.0)
        v = MultinomialLogitUser(cfg).item_values(world, users, cands).astype(np.float64)
        v -= v.max(axis=1, keepdims=True)
        ll = float((v[users, col] - np.log(np.exp(v).sum(axis=1))).mean())
        if ll > best[1]:
            best = (cfg, ll)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
    ap.add_argument("--quick", action="store_true", help="synthetic world, small model: a smoke run")
    ap.add_argument("--per-user", type=int, default=5, help="training decision points per user")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lm-hidden", type=int, default=128)
    ap.add_argument("--lm-layers", type=int, default=2)
    ap.add_argument("--sft-epochs", type=int, default=3)
    ap.add_argument("--dpo-epochs", type=int, default=1)
    ap.add_argument("--sasrec-epochs", type=int, default=100)
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--work", default="runs/fidelity", help="folder for the trained user LM")
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads (use 1 when the machine is shared: busy cores stall torch's thread pool)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if not args.quick and Path(args.data, "u.data").is_file():
        data, source = load_movielens(args.data), f"MovieLens-format logs in {args.data}"
    else:
        users, items, steps = (150, 200, 30) if args.quick else (1000, 1000, 60)
        data = simulated_world_data(users, items, steps, args.seed)
        source = f"a synthetic world ({users} users, {items} items), clicks of {steps} simulated steps"
    train, test = leave_last_out(data.interactions, data.num_users)
    points = decision_points(train, data.num_users, args.per_user, seed=args.seed)
    print(f"{source}: {len(data.interactions)} events; {len(test)} test users; {len(points)} training "
          f"decisions ({time.perf_counter() - t0:.0f} s)", flush=True)

    world = prefix_world(data, train, test, seed=args.seed)
    cands, truth = sample_candidates(data.interactions, test, data.catalog.num_items, CANDIDATES, seed=args.seed)
    users = np.arange(len(test))
    scores: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    scores["random"] = np.zeros(cands.shape)
    counts = np.bincount(train.item, minlength=data.catalog.num_items).astype(float)
    scores["popularity"] = counts[cands]
    embedded_default = ChoiceConfig(position_decay=0.0)
    scores["embedded (default)"] = MultinomialLogitUser(embedded_default).item_values(world, users, cands)
    calibrated, ll = calibrate(data, train, points, args.seed)
    scores["embedded (calibrated)"] = MultinomialLogitUser(calibrated).item_values(world, users, cands)
    notes["embedded (calibrated)"] = (f"temperature {calibrated.temperature}, quality_weight "
                                      f"{calibrated.quality_weight}, interest_weight {calibrated.interest_weight} "
                                      f"(train log-lik {ll:.3f} per decision)")
    print(f"embedded model calibrated: {notes['embedded (calibrated)']} ({time.perf_counter() - t0:.0f} s)",
          flush=True)

    from policies.sasrec import SASRec, SASRecConfig

    h = Histories(train, data.num_users)
    seqs = [h.sequence(u) for u in range(data.num_users)]
    t = time.perf_counter()
    sasrec = SASRec(data.catalog.num_items, SASRecConfig(epochs=20 if args.quick else args.sasrec_epochs,
                                                         seed=args.seed)).fit(seqs)
    scores["SASRec"] = sasrec.score([seqs[u] for u in test.user], cands)
    notes["SASRec"] = f"{sasrec.config.epochs} epochs, {time.perf_counter() - t:.0f} s"
    print(f"SASRec: {notes['SASRec']}", flush=True)

    if not args.skip_llm:
        scores["LLM user (trained here)"], notes["LLM user (trained here)"] = llm_scores(
            args, data, train, points, world, users, cands)

    table = {}
    for name, s in scores.items():
        m = ranking_metrics(s, truth, args.seed)
        table[name] = {k: with_ci(v, seed=args.seed) for k, v in m.items()}
    print(f"\nleave-last-out, {CANDIDATES} candidates, {len(test)} test users; mean [95% bootstrap CI]\n")
    print("| user model | HR@1 | HR@5 | NDCG@5 |")
    print("|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in row.values()) + " |")
    for name, note in notes.items():
        print(f"- {name}: {note}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"source": source, "test_users": len(test), "table": table,
                                              "notes": notes}, indent=1))


def llm_scores(args, data: WorldData, train: Interactions, points, world, users, cands) -> tuple[np.ndarray, str]:
    """Train a user LM from scratch on the training decisions and score the test candidates with it."""
    from agents.llm import LLMUser
    from agents.llm.local import LocalLM
    from agents.llm.model import LMConfig, new_lm
    from agents.llm.records import logged_decisions
    from agents.llm.train import TrainConfig, train_user_lm

    t = time.perf_counter()
    decisions, _ = logged_decisions(data, train, points, CANDIDATES, seed=args.seed + 1, seen=data.interactions)
    texts = list(data.catalog.titles) + [decisions.persona[i] + decisions.context[i]
                                         for i in range(0, len(decisions), max(1, len(decisions) // 2000))]
    hidden = 64 if args.quick else args.lm_hidden
    folder = new_lm(texts, Path(args.work) / "user_lm", LMConfig(
        hidden_size=hidden, intermediate_size=3 * hidden, num_layers=2 if args.quick else args.lm_layers,
        num_heads=4, num_kv_heads=2, seed=args.seed))
    epochs = (1, 1) if args.quick else (args.sft_epochs, args.dpo_epochs)
    report = train_user_lm(folder, decisions, TrainConfig(sft_epochs=epochs[0], dpo_epochs=epochs[1],
                                                          seed=args.seed), log=lambda s: print(s, flush=True))
    user = LLMUser({"model": str(folder)}, scorer=LocalLM(folder, batch_size=16))
    logp = user.option_logprobs(world, users, cands)[:, :CANDIDATES]  # drop "none of these"
    n_params = sum(p.numel() for p in user.scorer.model.parameters())
    last = report["phases"].get("dpo") or report["phases"].get("sft") or {}
    note = (f"{n_params / 1e6:.1f}M parameters, {len(decisions)} training decisions, {epochs[0]} SFT + "
            f"{epochs[1]} DPO epochs, held-out choice accuracy {last.get('choice_accuracy', float('nan')):.3f}, "
            f"{time.perf_counter() - t:.0f} s")
    print(f"LLM user: {note}", flush=True)
    return logp, note


if __name__ == "__main__":
    main()
