"""Cost of a preference-training step with several negatives, thanks to the prompt encoded once.

What is measured, on one model and one batch of LLaRA prompts (10 history titles, 20 candidates,
a few hundred tokens each) in the same process:

(a) DPO, 1 negative: ``response_logps`` (the prompt run once, 2 titles continuing its key/value
    states), the loss, backward, and an AdamW step: one step of ``PreferenceTrainer``;
(b) S-DPO, 4 negatives: the same with 5 titles per prompt;
(c) S-DPO, 4 negatives, whole sequences: each of the 5 ``prompt + title`` run as its own sequence,
    the way trl's ``DPOTrainer`` concatenates chosen and rejected; the baseline that (b) improves on.

The headline is (b)/(a), target at most 2.5x (the issue's); (c)/(b) shows what the shared prompt
saves. The three take turns in each timed round (order rotated), after one untimed warm-up round;
the per-round ratio is the measurement, its median and interquartile range the result. Gradients
are the same whichever way the scores are computed (a test checks scores equal), so the optimizer
step is identical work in all three. ``--threads 1`` avoids torch's threads spinning on a busy CPU.

Usage:
    python experiments/bench_align.py --quick            # tiny model, seconds
    python experiments/bench_align.py --threads 1        # the documented CPU figure
    python experiments/bench_align.py --model PATH --device cuda --dtype bfloat16 --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 2.5  # S-DPO with 4 negatives / DPO with 1, per step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: batch 4, 3 rounds")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per step")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds, after one warm-up round")
    p.add_argument("--negatives", type=int, default=4, help="negatives of the multi-negative step")
    p.add_argument("--model", default=None, help="a local Hugging Face causal LM folder (default: built here)")
    p.add_argument("--hidden-size", type=int, default=128, help="width of the model built here")
    p.add_argument("--layers", type=int, default=2, help="layers of the model built here")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="default: bf16 on cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.rounds = min(args.batch_size, 4), min(args.rounds, 3)
    return args


def batch_texts(batch_size: int, negatives: int, seed: int) -> tuple[list[str], list[list[str]], list[str]]:
    """Prompts of a synthetic world's catalog, their 1+K responses, and text to build a tokenizer on."""
    from policies.llm.prompts import recommendation_prompt, response
    from simenv.datasets import synthetic_world

    titles = list(synthetic_world(50, 500, seed=seed).catalog.titles)
    rng = np.random.default_rng(seed)
    prompts, responses = [], []
    for _ in range(batch_size):
        picks = rng.choice(len(titles), 30, replace=False)
        cands = [titles[i] for i in picks[10:]]
        prompts.append(recommendation_prompt([titles[i] for i in picks[:10]], cands))
        responses.append([response(cands[j]) for j in range(1 + negatives)])
    return prompts, responses, prompts + titles


def encode(tokenizer, prompts: list[str], responses: list[list[str]], k: int):
    """``EncodedResponses`` of the first 1+k responses of each prompt."""
    from policies.llm.scoring import pad_responses

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    p_ids = tokenizer(prompts)["input_ids"]
    r_ids = [[list(x) + [eos] for x in tokenizer(rs[: 1 + k], add_special_tokens=False)["input_ids"]]
             for rs in responses]
    return pad_responses(p_ids, r_ids, pad)


def whole_sequence_logps(model, batch):
    """(B, R) log p(response | prompt) with every ``prompt + response`` run as its own sequence."""
    import torch

    b, r, length = batch.response_ids.shape
    ids = torch.cat([batch.prompt_ids.repeat_interleave(r, 0), batch.response_ids.reshape(b * r, length)], 1)
    mask = torch.cat([batch.prompt_mask.repeat_interleave(r, 0), batch.response_mask.reshape(b * r, length)], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    p = batch.prompt_ids.shape[1]
    tail = logits[:, p - 1: -1].float().log_softmax(-1)
    tokens = tail.gather(-1, ids[:, p:, None]).squeeze(-1) * mask[:, p:]
    return tokens.sum(-1).reshape(b, r)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.llm.model import LMConfig, new_lm
    from policies.llm.losses import LossConfig, preference_loss
    from policies.llm.scoring import response_logps

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    prompts, responses, corpus = batch_texts(args.batch_size, args.negatives, args.seed)
    folder = args.model or new_lm(corpus, Path(tempfile.mkdtemp(prefix="bench_align_")),
                                  LMConfig(vocab_size=2000, hidden_size=args.hidden_size,
                                           intermediate_size=3 * args.hidden_size, num_layers=args.layers,
                                           num_heads=4, num_kv_heads=2, max_positions=2048, seed=args.seed))
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).train()
    tok = AutoTokenizer.from_pretrained(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    one, many = encode(tok, prompts, responses, 1).to(device), encode(tok, prompts, responses, args.negatives).to(device)
    ref_one = torch.zeros(one.response_ids.shape[:2], device=device)
    ref_many = torch.zeros(many.response_ids.shape[:2], device=device)
    paths = {
        "dpo_1neg": (response_logps, one, ref_one, LossConfig("dpo")),
        f"sdpo_{args.negatives}neg": (response_logps, many, ref_many, LossConfig("sdpo")),
        f"sdpo_{args.negatives}neg_whole_sequences": (whole_sequence_logps, many, ref_many, LossConfig("sdpo")),
    }

    def step(name: str) -> float:
        score, batch, ref, loss_config = paths[name]
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses, _ = preference_loss(loss_config, score(model, batch), ref, None, None)
        losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    names = list(paths)
    for name in names:  # warm-up
        step(name)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % 3:] + names[: r % 3]:
            times[name].append(step(name))
    t = {n: np.asarray(v) for n, v in times.items()}
    a, b, c = names

    def summary(x: np.ndarray) -> dict:
        return {"median": float(np.median(x)), "q1": float(np.percentile(x, 25)), "q3": float(np.percentile(x, 75))}

    result = {
        "device": device, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
        "parameters": int(sum(p.numel() for p in model.parameters())), "batch_size": args.batch_size,
        "prompt_tokens": int(one.prompt_mask.sum(-1).float().mean()),
        "response_tokens": float(many.response_mask.sum(-1).float().mean()), "rounds": args.rounds,
        "step_seconds": {n: summary(t[n]) for n in names},
        "samples_per_s": {n: args.batch_size / float(np.median(t[n])) for n in names},
        "ratio_multi_over_one": summary(t[b] / t[a]), "ratio_whole_over_shared": summary(t[c] / t[b]),
        "target_ratio": TARGET_RATIO,
    }
    ratio = result["ratio_multi_over_one"]["median"]
    print(f"{result['parameters'] / 1e6:.2f}M parameters, {device} {result['dtype']}, {result['threads']} threads, "
          f"batch {args.batch_size}, prompts of {result['prompt_tokens']} tokens, titles of "
          f"{result['response_tokens']:.1f} tokens")
    for n in names:
        s = result["step_seconds"][n]
        print(f"  {n:34s} {1000 * s['median']:8.1f} ms/step (IQR {1000 * s['q1']:.1f}-{1000 * s['q3']:.1f}), "
              f"{result['samples_per_s'][n]:7.1f} samples/s")
    print(f"S-DPO {args.negatives} negatives / DPO 1 negative: {ratio:.2f}x (target <= {TARGET_RATIO}x: "
          f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}); whole sequences / shared prompt: "
          f"{result['ratio_whole_over_shared']['median']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
