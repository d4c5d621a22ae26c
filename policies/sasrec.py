"""SASRec: self-attentive sequential recommendation (Kang & McAuley 2018), a fidelity baseline.

It answers "which item does this user pick next?" from the order of the user's past items, e.g. to
rank the held-out last item of each user among 20 candidates (leave-last-out).

Model: item ids are stored shifted by one (row 0 of the embedding is padding). A history of up to
``max_len`` items becomes item embedding + learned position embedding, then ``layers`` pre-norm
transformer blocks with causal self-attention and a final LayerNorm. The hidden state h_t after item
t scores any item i as h_t . e_i with the *input* embedding e_i (shared weights).

Training: every position t of a sequence predicts item t+1 by full-softmax cross-entropy over the
catalog (a few thousand items make the full softmax cheap, and it learns better than sampled
negatives). Sequences are right-aligned (left-padded) so the last column is always the most recent
item. Padding never changes a result: padded keys are masked out of attention, and positions count
from the oldest item read, so a history scores the same however wide the batch around it is padded.
Sequences longer than ``max_len + 1`` are cut into consecutive windows ending at the newest item, so
every transition is trained on exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SASRecConfig:
    max_len: int = 50  # history items the model reads (most recent)
    dim: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN x), then x + ffn(LN x) (SASRec's point-wise FFN)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, W, D); allowed: (B, 1, W, W) bool, query row may attend to key column."""
        b, w, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, w, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, w, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class _Net(nn.Module):
    def __init__(self, num_items: int, c: SASRecConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(num_items + 1, c.dim, padding_idx=0)
        self.positions = nn.Embedding(c.max_len, c.dim)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(_Block(c.dim, c.heads, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        # unit-norm item vectors: against the final LayerNorm's ~sqrt(dim)-norm states the first
        # logits are ~N(0, 1), not N(0, dim) (nn.Embedding's default), which starts far off
        for emb in (self.items, self.positions):
            nn.init.normal_(emb.weight, std=c.dim ** -0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, W) left-padded shifted ids (0 = padding) -> (B, W, D) hidden states."""
        real = x > 0
        w = x.shape[1]
        pads = (~real).sum(1, keepdim=True)
        pos = (torch.arange(w) - pads).clamp(min=0)  # 0 = oldest real item, whatever the padding width
        causal = torch.ones(w, w, dtype=torch.bool).tril()
        # a padded query may see only itself: a row with no key at all would make NaNs that leak on
        allowed = causal & (real[:, None, :] | torch.eye(w, dtype=torch.bool))
        h = self.drop(self.items(x) + self.positions(pos))
        for block in self.blocks:
            h = block(h, allowed[:, None])
        return self.norm(h)


class SASRec:
    """Next-item model over ``num_items`` items (ids 0..num_items-1); ``fit`` then ``score``.

    Attributes:
        history: mean training cross-entropy per epoch (over all predicted positions).
    """

    def __init__(self, num_items: int, config: SASRecConfig = SASRecConfig()) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}.")
        if config.dim % config.heads:
            raise ValueError(f"dim ({config.dim}) must be divisible by heads ({config.heads}).")
        if config.max_len < 1:
            raise ValueError(f"max_len must be positive, got {config.max_len}.")
        self.num_items, self.config = num_items, config
        self.history: list[float] = []
        with torch.random.fork_rng(devices=[]):  # seeded, without moving the caller's global RNG
            torch.manual_seed(config.seed)
            self.net = _Net(num_items, config)

    def fit(self, sequences: list[np.ndarray]) -> SASRec:
        """Train next-item prediction at every position of every sequence (item ids in time order).

        Sequences shorter than two items have no transition and are skipped. A second call goes on
        training from the current weights (with a fresh optimizer) and extends ``history``.
        """
        c = self.config
        windows = []
        for u, seq in enumerate(sequences):
            seq = self._checked_ids(seq, f"sequence {u}")
            # consecutive windows of max_len + 1 items ending at the newest: each transition once
            windows += [seq[max(0, end - c.max_len - 1):end] for end in range(len(seq), 1, -c.max_len)]
        if not windows:
            raise ValueError("no training data: fit needs at least one sequence of two or more items.")
        rng = np.random.default_rng(c.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        self.net.train()
        with torch.random.fork_rng(devices=[]):  # dropout masks follow the seed too
            torch.manual_seed(c.seed)
            for _ in range(c.epochs):
                total, count = 0.0, 0
                order = rng.permutation(len(windows))
                for start in range(0, len(windows), c.batch_size):
                    batch = [windows[i] for i in order[start:start + c.batch_size]]
                    x = _left_pad([s[:-1] + 1 for s in batch], fill=0)
                    y = _left_pad([s[1:] for s in batch], fill=-100)  # -100: cross_entropy's ignore_index
                    logits = self.net(x) @ self.net.items.weight[1:].T  # (B, W, num_items)
                    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    n = int((y >= 0).sum())
                    total, count = total + loss.item() * n, count + n
                self.history.append(total / count)
        self.net.eval()
        return self

    def score(self, histories: list[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """(B, C) float32 scores of the candidate item ids (B, C) given each history (last max_len items).

        Higher is likelier next; scores compare across the candidates of one history only.
        """
        candidates = np.asarray(candidates)
        if candidates.ndim != 2 or candidates.shape[0] != len(histories):
            raise ValueError(f"candidates must have shape (len(histories)={len(histories)}, C), "
                             f"got {candidates.shape}.")
        candidates = self._checked_ids(candidates, "candidates", ndim=2)
        recent = []
        for u, h in enumerate(histories):
            h = self._checked_ids(h, f"history {u}")
            if len(h) == 0:
                raise ValueError(f"history {u} is empty: SASRec needs at least one item to score from.")
            recent.append(h[-self.config.max_len:])
        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(recent), self.config.batch_size):
                x = _left_pad([h + 1 for h in recent[start:start + self.config.batch_size]], fill=0)
                last = self.net(x)[:, -1]  # (b, D): the state after the most recent item
                cand = self.net.items(torch.from_numpy(candidates[start:start + len(x)] + 1))  # (b, C, D)
                out.append(torch.einsum("bd,bcd->bc", last, cand).numpy())
        return np.concatenate(out) if out else np.zeros(candidates.shape, np.float32)

    def _checked_ids(self, ids: np.ndarray, what: str, ndim: int = 1) -> np.ndarray:
        """``ids`` as int64, after checking they are an ``ndim``-D array of item ids in 0..num_items-1."""
        ids = np.asarray(ids)
        if ids.ndim != ndim:
            raise ValueError(f"{what} must be {ndim}-D, got shape {ids.shape}.")
        if ids.size == 0:  # np.asarray([]) is float64: an empty array is fine whatever its dtype
            return ids.astype(np.int64)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{what} must hold integer item ids, got dtype {ids.dtype}.")
        if ids.min() < 0 or ids.max() >= self.num_items:
            raise ValueError(f"{what} has item ids outside 0..{self.num_items - 1} "
                             f"(min {ids.min()}, max {ids.max()}).")
        return ids.astype(np.int64)


def _left_pad(seqs: list[np.ndarray], fill: int) -> torch.Tensor:
    """(len(seqs), longest) int64 tensor with each sequence right-aligned after ``fill`` values."""
    out = np.full((len(seqs), max(len(s) for s in seqs)), fill, dtype=np.int64)
    for row, s in zip(out, seqs):
        row[len(row) - len(s):] = s
    return torch.from_numpy(out)
