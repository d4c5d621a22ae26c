"""Training a user LM to imitate logged decisions: SFT on the options taken, then a preference step.

The recipe of "Mirroring Users" (UserMirrorer): first supervised fine-tuning on what users chose,
then direct preference optimisation of the chosen option over one shown-but-not-chosen option.
Both are computed on the answer tokens only, the same tokens ``LLMUser`` scores:

    SFT:  L = -log p(letter of the choice | prompt) - w_r * 1[clicked] * log p(rating digit | prompt, letter)
    DPO:  L = -log sigmoid(beta * [(log p(c) - log p_ref(c)) - (log p(r) - log p_ref(r))]) - alpha * log p(c)

where c is the chosen letter, r a letter drawn uniformly (per epoch, seeded) among the other
options, and p_ref the model after SFT, evaluated once before the preference step. The NLL term
(weight alpha, as in RPO) matters for a *user* model: its answer distribution is sampled as the
user's behaviour, and plain DPO widens margins at the cost of calibration. Each answer is a
single token after the same prompt, so one forward pass gives every option's log-probability.

Any local Hugging Face causal LM folder trains the same way (fp32 on CPU; bf16 autocast on a GPU).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from agents.llm.local import LocalLM, default_device
from agents.llm.prompts import ANSWER_CUE, RATING_CUE, RATINGS, option_labels, rating_suffix
from agents.llm.records import Decisions


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of ``train_user_lm`` (defaults suit a from-scratch model of ~1M parameters)."""

    sft_epochs: int = 3
    dpo_epochs: int = 1
    batch_size: int = 16
    lr: float = 3e-3  # SFT peak learning rate (from-scratch models want it high; fine-tuning wants ~1e-5)
    dpo_lr: float = 5e-4
    beta: float = 0.1  # DPO temperature
    dpo_nll_weight: float = 1.0  # alpha: NLL of the chosen option kept in the preference step (0: plain DPO)
    rating_weight: float = 0.5  # w_r: weight of the rating token in SFT
    warmup: float = 0.05  # share of each phase's steps with a linear warm-up, then linear decay
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    holdout: float = 0.1  # share of decisions held out to measure imitation
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("sft_epochs", "dpo_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be >= 0.")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size}: must be >= 1.")
        for name in ("lr", "dpo_lr", "beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be > 0.")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"train.holdout={self.holdout}: must be in [0, 1).")


class _Encoded:
    """Token sequences of decisions: prompt, chosen letter, and (after a click) rating cue and digit.

    ``letter_at[i]`` / ``rating_at[i]`` are the positions whose logits predict the letter / the digit
    (``rating_at`` is -1 for "none"). Texts are tokenised exactly as ``LLMUser`` scores them: the
    persona with the tokenizer's start tokens, then state and question as one piece, then the answer
    and the rating cue as a continuation.
    """

    def __init__(self, lm: LocalLM, d: Decisions) -> None:
        labels = option_labels(d.slate_size)
        end, self.letter_ids = lm.answer_tokens(ANSWER_CUE, labels)
        rating_end, self.digit_ids = lm.answer_tokens(RATING_CUE, RATINGS)
        tail, rating_tail = end[len(ANSWER_CUE):], rating_end[len(RATING_CUE):]
        self.ids: list[list[int]] = []
        self.letter_at = np.empty(len(d), np.int64)
        self.rating_at = np.full(len(d), -1, np.int64)
        for i in range(len(d)):
            head = lm.encode(d.persona[i], True)
            prompt = head + lm.encode(d.context[i] + tail, False)
            c = int(d.choice[i])
            self.letter_at[i] = len(prompt) - 1
            if c == d.slate_size:
                self.ids.append(prompt + [int(self.letter_ids[c])])
                continue
            full = prompt + lm.encode(rating_suffix(labels[c]) + rating_tail, False)  # as LLMUser continues
            if full[len(prompt)] != int(self.letter_ids[c]):
                raise ValueError("train_user_lm: the tokenizer does not spell the chosen answer letter as its own "
                                 "token after the answer cue; LLM users score one-token answers.")
            self.rating_at[i] = len(full) - 1
            self.ids.append(full + [int(self.digit_ids[int(d.rating[i]) - 1])])
        self.choice = d.choice.astype(np.int64)
        self.rating = d.rating

    def __len__(self) -> int:
        return len(self.ids)


def _batch_logprobs(model, enc: _Encoded, rows: np.ndarray, pad_id: int, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, k+1) log p of every option letter, (B, 5) log p of every rating digit) under the full
    vocabulary; the rating rows of "none" decisions are meaningless and masked by the callers."""
    seqs = [enc.ids[r] for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):  # right padding: real tokens keep positions 0..n-1
        ids[b, : len(s)] = torch.as_tensor(s)
        mask[b, : len(s)] = 1
    ids, mask = ids.to(device), mask.to(device)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        at = torch.as_tensor(np.stack([enc.letter_at[rows], np.maximum(enc.rating_at[rows], 0)], 1), device=device)
        picked = hidden[torch.arange(len(rows), device=device)[:, None], at]  # (B, 2, H)
        logp = torch.log_softmax(model.get_output_embeddings()(picked).float(), dim=-1)
    letters = torch.as_tensor(enc.letter_ids, device=device)
    digits = torch.as_tensor(enc.digit_ids, device=device)
    return logp[:, 0, letters], logp[:, 1, digits]


def _schedule(step: int, total: int, warmup: float) -> float:
    w = max(1, int(warmup * total))
    return (step + 1) / w if step < w else max(0.0, (total - step) / max(1, total - w))


@torch.no_grad()
def evaluate_imitation(model, enc: _Encoded, pad_id: int, device: str, batch_size: int = 32) -> dict[str, float]:
    """How well the model imitates held-out decisions: choice accuracy (top option = the one taken),
    mean negative log-likelihood of the taken option among the options, rating accuracy on clicks."""
    model.eval()
    hits, nll, r_hits, clicks = 0.0, 0.0, 0.0, 0
    for start in range(0, len(enc), batch_size):
        rows = np.arange(start, min(len(enc), start + batch_size))
        opt, rat = _batch_logprobs(model, enc, rows, pad_id, device)
        opt = torch.log_softmax(opt, dim=-1).cpu().numpy()
        choice = enc.choice[rows]
        hits += float((opt.argmax(1) == choice).sum())
        nll -= float(opt[np.arange(len(rows)), choice].sum())
        clicked = enc.rating_at[rows] >= 0
        if clicked.any():
            guess = rat.cpu().numpy().argmax(1) + 1
            r_hits += float((guess[clicked] == enc.rating[rows][clicked]).sum())
            clicks += int(clicked.sum())
    n = max(len(enc), 1)
    return {"choice_accuracy": hits / n, "choice_nll": nll / n, "rating_accuracy": r_hits / max(clicks, 1)}


def train_user_lm(model_dir: str | Path, decisions: Decisions, config: TrainConfig = TrainConfig(),
                  out: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the model in ``model_dir`` on ``decisions`` (SFT, then DPO) and save it to ``out``
    (default: over ``model_dir``). Returns the report also written to ``out/training.json``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if len(decisions) < 2:
        raise ValueError(f"train_user_lm: {len(decisions)} decisions; need at least 2.")
    device = config.device or default_device()
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    lm = LocalLM(model, tokenizer, device=device, dtype=torch.float32, prefix_cache=0)
    train, held = decisions.split(config.holdout, config.seed) if config.holdout > 0 else (decisions, None)
    enc = _Encoded(lm, train)
    held_enc = _Encoded(lm, held) if held is not None and len(held) else None
    pad = lm.pad_id
    rng = np.random.default_rng(config.seed)
    report: dict = {"config": asdict(config), "decisions": len(decisions), "train": len(train),
                    "held_out": len(held) if held is not None else 0, "slate_size": decisions.slate_size,
                    "none_share": float(np.mean(decisions.choice == decisions.slate_size)),
                    "mean_tokens": float(np.mean([len(s) for s in enc.ids])), "phases": {}}

    def measure(phase: str, seconds: float, losses: list[float]) -> None:
        entry = {"seconds": round(seconds, 2), "final_loss": float(np.mean(losses[-20:])) if losses else None}
        if held_enc is not None:
            entry.update(evaluate_imitation(model, held_enc, pad, device))
        report["phases"][phase] = entry
        log(f"  {phase}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in entry.items()))

    measure("initial", 0.0, [])

    def run_phase(epochs: int, lr: float, loss_fn) -> list[float]:
        steps_per_epoch = math.ceil(len(enc) / config.batch_size)
        total = epochs * steps_per_epoch
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, config.warmup))
        losses = []
        model.train()
        for epoch in range(epochs):
            perm = rng.permutation(len(enc))
            for start in range(0, len(enc), config.batch_size):
                rows = perm[start: start + config.batch_size]
                loss = loss_fn(rows, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(loss.item())
        model.eval()
        return losses

    def sft_loss(rows: np.ndarray, epoch: int) -> torch.Tensor:
        opt_lp, rat_lp = _batch_logprobs(model, enc, rows, pad, device)
        choice = torch.as_tensor(enc.choice[rows], device=device)
        loss = -opt_lp.gather(1, choice[:, None]).mean()
        clicked = torch.as_tensor(enc.rating_at[rows] >= 0, device=device)
        if clicked.any():
            digit = torch.as_tensor(np.maximum(enc.rating[rows], 1).astype(np.int64) - 1, device=device)
            loss = loss + config.rating_weight * -(rat_lp.gather(1, digit[:, None])[:, 0] * clicked).sum() / len(rows)
        return loss

    if config.sft_epochs:
        t = time.perf_counter()
        losses = run_phase(config.sft_epochs, config.lr, sft_loss)
        measure("sft", time.perf_counter() - t, losses)

    if config.dpo_epochs:
        t = time.perf_counter()
        with torch.no_grad():
            model.eval()
            ref = torch.cat([_batch_logprobs(model, enc, np.arange(s, min(len(enc), s + 64)), pad, device)[0]
                             for s in range(0, len(enc), 64)])  # (n, k+1): p_ref, computed once
        k1 = decisions.slate_size + 1
        rejected = []
        for _ in range(config.dpo_epochs):  # one rejected option per decision and epoch, never the chosen
            r = rng.integers(0, k1 - 1, size=len(enc))
            rejected.append(r + (r >= enc.choice))

        def dpo_loss(rows: np.ndarray, epoch: int) -> torch.Tensor:
            opt_lp, _ = _batch_logprobs(model, enc, rows, pad, device)
            c = torch.as_tensor(enc.choice[rows], device=device)[:, None]
            r = torch.as_tensor(rejected[epoch][rows], device=device)[:, None]
            ref_rows = ref[torch.as_tensor(rows, device=device)]
            margin = ((opt_lp.gather(1, c) - ref_rows.gather(1, c)) - (opt_lp.gather(1, r) - ref_rows.gather(1, r)))
            return -F.logsigmoid(config.beta * margin).mean() - config.dpo_nll_weight * opt_lp.gather(1, c).mean()

        losses = run_phase(config.dpo_epochs, config.dpo_lr, dpo_loss)
        measure("dpo", time.perf_counter() - t, losses)

    out = Path(out) if out is not None else Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(report, indent=1))
    return report
