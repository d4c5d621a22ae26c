"""Slate decisions per second of LLM users: batched likelihood scoring against a per-user generate-and-parse loop.

What is measured, on the same model in the same process:

(a) batched scoring, the path the env runs: ``LLMUser.respond`` on all ``--users`` users at once, so
    prompt building, one forward pass per batch over the state and question (personas come from the
    KV cache, as in a running simulation where the same users come back every step), the draw, and
    the rating pass for the users who clicked;
(a') the choice alone, ``LLMUser.option_logprobs``: the same work per decision as (b), and with (a)
    it shows what the rating pass costs;
(b) the Agent4Rec pattern: for each user, the whole prompt text, ``model.generate`` of
    ``--new-tokens`` greedy tokens, and a regex for the first answer letter. Answers naming no option
    are counted (an env would hand those users to a fallback). It parses the choice only, no rating,
    so (b) does less work per decision than (a): the headline ratio (a)/(b) is conservative.

A decision is one user shown one slate. (b) runs over the first ``--loop-users`` users of a round, as
its time is linear in users. Ratios of timings are measured paired: the three paths take turns (each
round rotates their order), on a fresh slate per user each round, after one untimed warm-up round
(persona cache filled, kernels loaded); the per-round ratio of decision rates is the measurement,
its median and interquartile range the result. On a CPU shared with other work, ``--threads 1``
avoids torch's OpenMP threads spinning against the other processes (a tenfold slowdown was seen).

The default model is the tiny from-scratch user LM (``new_lm`` on the world's own text, random
weights: speed does not depend on what the weights say). ``--model`` takes any local Hugging Face
folder; ``--build-0.5b FOLDER`` saves a randomly initialised Qwen2-architecture model of the 0.5B
shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary 151,936) with the user-LM
tokenizer, and measures it (``--layers`` shrinks it for a smoke run).

Usage:
    python experiments/bench_llm_users.py --quick      # tiny model on CPU, well under a minute
    python experiments/bench_llm_users.py              # tiny model on CPU, more users and rounds
    python experiments/bench_llm_users.py --build-0.5b /tmp/qwen2-0.5b --device cuda --dtype bfloat16 \\
        --users 4096 --batch-size 256 --loop-users 64
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# prompt building does small float32 matmuls: BLAS threads spinning against torch's cost 10x there
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

TARGET_RATIO = 20.0  # batched / per-user loop, small model on CPU
TARGET_GPU_DECISIONS = 2_000  # decisions/s of batched scoring, 0.5B model on one H100
DTYPES = ("float32", "bfloat16", "float16")
QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=32_768,
                 rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, rms_norm_eps=1e-6,
                 tie_word_embeddings=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 64 users, 8 in the loop, 5 rounds")
    p.add_argument("--users", type=int, default=512, help="users decided per round by batched scoring")
    p.add_argument("--loop-users", type=int, default=32, help="users of the per-user generate loop per round")
    p.add_argument("--slate-size", type=int, default=5, help="k options per slate (plus 'none of these')")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass of batched scoring")
    p.add_argument("--rounds", type=int, default=9, help="timed rounds of (a) and (b), after one warm-up round")
    p.add_argument("--new-tokens", type=int, default=4, help="tokens the per-user loop generates per user")
    p.add_argument("--num-items", type=int, default=2_000, help="catalog size of the world")
    p.add_argument("--model", default=None, help="a local Hugging Face model folder (default: a tiny user LM)")
    p.add_argument("--build-0.5b", dest="build_05b", default=None, metavar="FOLDER",
                   help="save a random Qwen2 model of the 0.5B shape to FOLDER and measure it")
    p.add_argument("--layers", type=int, default=QWEN2_05B["num_hidden_layers"],
                   help="layers of --build-0.5b (fewer for a smoke run)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 avoids spinning threads on a busy machine)")
    p.add_argument("--seed", type=int, default=0, help="world, slates and weights")
    argv = sys.argv[1:] if argv is None else argv
    if "--quick" in argv:  # smaller defaults; flags given explicitly still win
        p.set_defaults(users=64, loop_users=8, rounds=5)
    args = p.parse_args(argv)
    if args.model and args.build_05b:
        p.error("--model and --build-0.5b: pass one (a built folder is measured as built).")
    return args


def make_world(args: argparse.Namespace):
    """A world whose users have a few steps of history, so prompts carry memory and friends' likes
    at the length they have in a running simulation."""
    import gymnasium as gym

    import simenv  # noqa: F401

    n = max(args.users, 100)  # the social graph needs more users than a smoke run decides for
    venv = gym.make_vec("RecSim-LLM-v0", num_envs=n, vectorization_mode="vector_entry_point",
                        num_users=n, num_items=args.num_items, slate_size=args.slate_size,
                        num_candidates=max(20, args.slate_size), embedding_model="random", world_seed=args.seed,
                        audit=False)
    venv.reset(seed=args.seed)
    actions = np.tile(np.arange(args.slate_size), (n, 1))
    for _ in range(10):
        venv.step(actions)
    return venv.unwrapped.sim.world


def slates_for(world, users: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(B, k) distinct random items per user: a fresh slate each round, so no text repeats across rounds."""
    return np.stack([rng.choice(world.catalog.num_items, k, replace=False) for _ in users]).astype(np.int32)


def corpus(world, k: int) -> list[str]:
    """The world's titles and prompts: the text the user-LM tokenizer is trained on."""
    from agents.llm import PromptConfig, build_prompts

    users = np.arange(min(world.num_users, 256))
    p = build_prompts(world, users, slates_for(world, users, k, np.random.default_rng(0)), PromptConfig())
    return list(world.catalog.titles) + [p.full(b) for b in range(len(users))]


def build_qwen2_05b(texts: list[str], folder: Path, layers: int, seed: int) -> Path:
    """Save a randomly initialised Qwen2 model of the 0.5B shape (bfloat16) with a tokenizer built on ``texts``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from agents.llm.tokenizer import build_tokenizer

    tok = build_tokenizer(texts)
    torch.manual_seed(seed)
    config = Qwen2Config(**{**QWEN2_05B, "num_hidden_layers": layers}, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def resolve_model(args: argparse.Namespace, world, scratch: Path) -> tuple[Path, str]:
    """The model folder to measure and how to name it in the report."""
    if args.model:
        return Path(args.model), args.model
    texts = corpus(world, args.slate_size)
    if args.build_05b:
        return build_qwen2_05b(texts, Path(args.build_05b), args.layers, args.seed), \
            f"random Qwen2 0.5B shape, {args.layers} layers ({args.build_05b})"
    from agents.llm.model import LMConfig, new_lm

    return new_lm(texts, scratch / "user_lm", LMConfig(seed=args.seed)), "tiny user LM (random weights)"


def run_loop(lm, world, users: np.ndarray, slates: np.ndarray, new_tokens: int) -> int:
    """The per-user generate-and-parse loop over ``users``; returns how many answers named no option."""
    import torch

    from agents.llm import PromptConfig, build_prompts, option_labels

    labels = option_labels(slates.shape[1])
    letter = re.compile(r"\b([A-Z])\b")
    prompts = build_prompts(world, users, slates, PromptConfig(), social=world.social.num_edges > 0)
    unparseable = 0
    with torch.inference_mode():
        for b in range(len(users)):
            enc = lm.tokenizer(prompts.full(b), return_tensors="pt").to(lm.device)
            out = lm.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=lm.pad_id)
            text = lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            found = letter.search(text)
            unparseable += found is None or found.group(1) not in labels
    return unparseable


def _quartiles(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "q25": float(np.percentile(x, 25)), "q75": float(np.percentile(x, 75))}


def measure(args: argparse.Namespace) -> dict:
    """Build the world and the model, then time the paths in paired rounds (see the module docstring)."""
    import torch

    from agents.llm import LLMUser, PromptConfig, build_prompts
    from agents.llm.local import LocalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    world = make_world(args)
    with tempfile.TemporaryDirectory() as scratch:
        path, name = resolve_model(args, world, Path(scratch))
        lm = LocalLM(path, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None,
                     batch_size=args.batch_size, prefix_cache=max(4096, args.users))
    setup_s = time.perf_counter() - t0
    user = LLMUser({"model": str(path), "batch_size": args.batch_size}, scorer=lm)
    users = np.arange(args.users)
    loop_users = users[: args.loop_users]
    paths = {
        "respond": (len(users), lambda slates: user.respond(world, users, slates)),
        "choice": (len(users), lambda slates: user.option_logprobs(world, users, slates)),
        "loop": (len(loop_users), lambda slates: run_loop(lm, world, loop_users, slates[: len(loop_users)],
                                                          args.new_tokens)),
    }
    seconds: dict[str, list[float]] = {p: [] for p in paths}
    passes: dict[str, list[int]] = {p: [] for p in paths}
    unparseable = 0
    rng = np.random.default_rng(args.seed)
    for r in range(args.rounds + 1):  # round 0 warms up: persona cache, kernels, allocator
        slates = slates_for(world, users, args.slate_size, rng)
        order = list(paths)[r % len(paths):] + list(paths)[: r % len(paths)]  # each path takes each turn
        for p in order:
            before = lm.forward_passes
            w0 = time.perf_counter()
            out = paths[p][1](slates)
            if r:
                seconds[p].append(time.perf_counter() - w0)
                passes[p].append(lm.forward_passes - before)
                unparseable += out if p == "loop" else 0
    rate = {p: paths[p][0] / np.asarray(seconds[p]) for p in paths}
    prompts = build_prompts(world, users, slates, PromptConfig())
    return {
        "model": name, "parameters": sum(t.numel() for t in lm.model.parameters()), "device": lm.device,
        "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "users": args.users, "loop_users": len(loop_users), "slate_size": args.slate_size,
        "batch_size": args.batch_size, "new_tokens": args.new_tokens, "rounds": args.rounds, "setup_s": setup_s,
        "persona_tokens": float(np.mean([len(lm.encode(x, True)) for x in prompts.persona])),
        "rest_tokens": float(np.mean([len(lm.encode(s + q, False)) for s, q in zip(prompts.state, prompts.question)])),
        "decisions_per_s": {p: _quartiles(rate[p]) for p in paths},
        "forward_passes_per_round": {p: float(np.median(passes[p])) for p in ("respond", "choice")},
        "ratio": {p: _quartiles(rate[p] / rate["loop"]) for p in ("respond", "choice")},
        "rating_share": float(np.median(1 - np.asarray(seconds["choice"]) / np.asarray(seconds["respond"]))),
        "unparseable": unparseable, "loop_decisions": len(loop_users) * args.rounds,
    }


def report(r: dict) -> None:
    """The markdown table and verdicts, then the result as one JSON line."""
    print(f"# LLM users: slate decisions per second ({r['model']}, {r['parameters'] / 1e6:,.1f}M parameters, "
          f"{r['device']} {r['dtype']}, {r['threads']} torch threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f})\n")
    print(f"Slate of {r['slate_size']} + none; prompts average {r['persona_tokens']:.0f} persona tokens (cached in "
          f"(a)) + {r['rest_tokens']:.0f} state and question tokens; {r['rounds']} paired rounds after one warm-up; "
          f"setup (world, model) {r['setup_s']:.1f} s.\n")
    rows = {"respond": f"(a) batched `LLMUser.respond`: choice, draw, rating (batch {r['batch_size']}, persona cache)",
            "choice": "(a') batched choice only: `LLMUser.option_logprobs`",
            "loop": f"(b) per-user `model.generate` ({r['new_tokens']} greedy tokens) + regex, choice only"}
    print("| path | decisions per round | decisions/s (median) | IQR | ms per decision | forward passes per round |")
    print("|---|---:|---:|---:|---:|---:|")
    for p, label in rows.items():
        d = r["decisions_per_s"][p]
        n = r["users"] if p != "loop" else r["loop_users"]
        fp = f"{r['forward_passes_per_round'][p]:.0f}" if p != "loop" else f"<= {n * r['new_tokens']:,}"
        print(f"| {label} | {n:,} | {d['median']:,.1f} | {d['q25']:,.1f} to {d['q75']:,.1f} "
              f"| {1e3 / d['median']:.2f} | {fp} |")
    a, a1 = r["ratio"]["respond"], r["ratio"]["choice"]
    verdict = "met" if a["median"] >= TARGET_RATIO else "missed"
    print(f"\n- (a) / (b): **{a['median']:,.1f}x** (IQR {a['q25']:,.1f}x to {a['q75']:,.1f}x of per-round ratios; "
          f"target >= {TARGET_RATIO:.0f}x with a small model on CPU: {verdict})")
    print(f"- (a') / (b), the same work on both sides: {a1['median']:,.1f}x (IQR {a1['q25']:,.1f}x to "
          f"{a1['q75']:,.1f}x); the rating pass takes {r['rating_share']:.0%} of (a)")
    print(f"- (b) answers naming no option: {r['unparseable']:,} of {r['loop_decisions']:,} "
          f"({r['unparseable'] / max(r['loop_decisions'], 1):.0%}); (a) scores the options, so it answers with one")
    if r["device"].startswith("cuda"):
        ups = r["decisions_per_s"]["respond"]["median"]
        verdict = "met" if ups >= TARGET_GPU_DECISIONS else "missed"
        print(f"- (a) on {r['device']}: {ups:,.0f} decisions/s (target >= {TARGET_GPU_DECISIONS:,} with the 0.5B "
              f"model on one H100: {verdict})")
    print("\n" + json.dumps(r))


def main(argv: list[str] | None = None) -> None:
    report(measure(parse_args(argv)))


if __name__ == "__main__":
    main()
