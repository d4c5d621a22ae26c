"""A local ``transformers`` causal LM as the scorer behind LLM users: next-token log-probabilities of
many prompts in batched forward passes, with each user's persona prefix encoded once and kept.

Why scoring and not generation: a user's decision is one letter among the slate's options, so the
model's distribution over those letters at the answer position *is* the decision (Agent4Rec-style
generate-then-regex is slower by the generated length and fails on unparseable text). One forward
pass per batch gives every user's full choice distribution; sampling it with the world's counter RNG
keeps runs reproducible. ``generate`` (greedy, batched the same exact way) is there only for the
free-text feedback users give when asked (``LLMUserConfig.feedback_tokens``).

Batching exactly: prompts are left-padded, and position ids are counted over real tokens only
(``cumsum(mask) - 1``), so a user's scores do not depend on who else is in the batch. The persona
cache stores each prefix's key/value states, computed at positions 0..L-1; a batch stitches them
right-aligned into one cache, left-pads the suffixes, and continues the positions at L, so cached
and uncached runs score the same tokens at the same positions.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalLM:
    """Next-token scorer over a local Hugging Face causal LM.

    Args:
        model: a folder with ``config.json`` and weights (any local Hugging Face model path), or a
            loaded ``PreTrainedModel``.
        tokenizer: the tokenizer; loaded from ``model`` when it is a path.
        device: ``"cuda"`` when a GPU is present, else ``"cpu"``.
        dtype: bfloat16 on a GPU, float32 on CPU.
        batch_size: prompts per forward pass.
        prefix_cache: how many persona prefixes to keep encoded (least recently used dropped); 0 turns
            the cache off and every prompt is encoded whole.
    """

    def __init__(self, model: Any, tokenizer: Any = None, device: str | None = None, dtype: torch.dtype | None = None,
                 batch_size: int = 32, prefix_cache: int = 4096) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or default_device()
        if dtype is None:
            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not (path / "config.json").exists():
                raise FileNotFoundError(f"LLM user model: {path} has no config.json; pass a local Hugging Face model "
                                        "folder (for example the output of `recsim-llm train-user-lm`).")
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        elif tokenizer is None:
            raise ValueError("LocalLM: a loaded model needs its tokenizer.")
        self.model = model.to(self.device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1.")
        self.batch_size = batch_size
        self.prefix_cache = prefix_cache
        self._kv: OrderedDict[Hashable, tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]] = OrderedDict()
        self._tokens: dict[str, list[int]] = {}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0
        config_eos = getattr(self.model.config, "eos_token_id", None)
        eos = {tokenizer.eos_token_id, *(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])}
        self.eos_ids = torch.as_tensor(sorted(int(e) for e in eos if e is not None), dtype=torch.long,
                                       device=self.device)
        self.forward_passes = 0
        self._kept: list[tuple] = []  # per batch of the last keep=True call: (cache, mask, next position)

    # tokens ------------------------------------------------------------------------------------------
    def encode(self, text: str, first: bool) -> list[int]:
        """Token ids of a prompt part; ``first`` parts get the tokenizer's special start tokens."""
        key = ("\x00" if first else "\x01") + text
        ids = self._tokens.get(key)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=first)["input_ids"])
            if len(self._tokens) < 100_000:
                self._tokens[key] = ids
        return ids

    def answer_tokens(self, cue: str, labels: Sequence[str]) -> tuple[str, np.ndarray]:
        """The token of each answer label right after ``cue``, and the text the prompt must end with.

        Tries " A" after the cue (how most tokenizers write an answer), then the cue with a trailing
        space and the bare label. Raises ValueError when a label is not one token either way.
        """
        for end, sep in ((cue, " "), (cue + " ", "")):
            base = self.encode(end, False)
            ids = []
            for label in labels:
                full = self.encode(end + sep + label, False)
                if len(full) != len(base) + 1 or full[: len(base)] != base:
                    break
                ids.append(full[-1])
            else:
                if len(set(ids)) == len(ids):
                    return end, np.asarray(ids, np.int64)
        raise ValueError(f"the tokenizer does not spell each of the answers {list(labels)} after {cue!r} as one "
                         "distinct token; LLM users score one-token answers.")

    # scoring -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def next_token_logprobs(self, prefixes: Sequence[str], suffixes: Sequence[str], token_ids: np.ndarray,
                            keys: Sequence[Hashable] | None = None, keep: bool = False) -> np.ndarray:
        """(B, n) float64 log p(token_ids[j] | prefix_b + suffix_b) under the full vocabulary.

        ``keys`` name the prefixes for the cache (default: the prefix text itself). ``keep`` holds the
        key/value states of these prompts until the next call, for ``continued_logprobs``.
        """
        if len(prefixes) != len(suffixes):
            raise ValueError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes.")
        keys = list(prefixes) if keys is None else list(keys)
        ids = torch.as_tensor(np.asarray(token_ids, np.int64), device=self.device)
        out = np.empty((len(prefixes), len(ids)))
        self._kept = []
        for start in range(0, len(prefixes), self.batch_size):
            sl = slice(start, start + self.batch_size)
            pre = [self.encode(p, True) for p in prefixes[sl]]
            suf = [self.encode(s, False) for s in suffixes[sl]]
            if self.prefix_cache > 0:
                logits, kept = self._with_cached_prefixes(keys[sl], pre, suf, keep)
            else:
                logits, kept = self._whole([p + s for p, s in zip(pre, suf)], keep)
            if keep:
                self._kept.append(kept)
            logp = torch.log_softmax(logits.float(), dim=-1)[:, ids]
            out[sl] = logp.double().cpu().numpy()
        return out

    @torch.inference_mode()
    def continued_logprobs(self, rows: np.ndarray, continuations: Sequence[str], token_ids: np.ndarray) -> np.ndarray:
        """(R, n) log p(token_ids[j] | prompt of row r of the last ``keep=True`` call + continuation r).

        The prompt's key/value states are reused, so only the continuation's few tokens are computed:
        a user's rating after the letter it chose costs ~10 tokens instead of the whole prompt again.
        """
        from transformers import DynamicCache

        rows = np.asarray(rows, np.int64)
        ids = torch.as_tensor(np.asarray(token_ids, np.int64), device=self.device)
        out = np.empty((len(rows), len(ids)))
        for b, (cache, mask, next_pos) in enumerate(self._kept):
            start = b * self.batch_size
            mine = np.flatnonzero((rows >= start) & (rows < start + len(next_pos)))
            if not len(mine):
                continue
            local = torch.as_tensor(rows[mine] - start, device=self.device)
            layers = [(layer.keys[local], layer.values[local]) for layer in cache.layers]
            ids_c, mask_c = self._left_pad([self.encode(continuations[i], False) for i in mine])
            pos = next_pos[local][:, None] + (mask_c.cumsum(-1) - 1).clamp(min=0)
            self.forward_passes += 1
            logits = self.model(input_ids=ids_c, attention_mask=torch.cat([mask[local], mask_c], dim=1),
                                position_ids=pos, cache=DynamicCache(ddp_cache_data=layers, config=self.model.config),
                                use_cache=True, logits_to_keep=1).logits[:, -1]
            out[mine] = torch.log_softmax(logits.float(), dim=-1)[:, ids].double().cpu().numpy()
        return out

    # generation --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuation of each prompt, at most ``max_new_tokens`` tokens, stopping at eos; only
        the new text, stripped.

        For free-text feedback, which is asked for explicitly: decisions never generate (see the module
        docstring). Written as its own decode loop rather than ``model.generate`` so that it pads and
        counts positions exactly as scoring does: a prompt's text does not depend on its batch.
        """
        from transformers import DynamicCache

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1.")
        eos = set(self.eos_ids.tolist())
        fill = min(eos, default=self.pad_id)  # what finished rows are fed; cut off with their end token
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            seqs = self.tokenizer(list(prompts[start: start + self.batch_size]), add_special_tokens=True)["input_ids"]
            ids, mask = self._left_pad([list(s) for s in seqs])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache(config=self.model.config)
            new = torch.empty((len(seqs), 0), dtype=torch.long, device=self.device)
            done = torch.zeros(len(seqs), dtype=torch.bool, device=self.device)
            for _ in range(max_new_tokens):
                self.forward_passes += 1
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                                    use_cache=True, logits_to_keep=1).logits[:, -1]
                token = torch.where(done, fill, logits.argmax(-1))
                new = torch.cat([new, token[:, None]], dim=1)
                done |= torch.isin(token, self.eos_ids)
                if bool(done.all()):
                    break
                ids, pos = token[:, None], pos[:, -1:] + 1
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            rows = [next((row[:j] for j, t in enumerate(row) if t in eos), row) for row in new.tolist()]
            out += [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]
        return out

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            if s:
                ids[b, width - len(s):] = torch.as_tensor(s)
                mask[b, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _whole(self, seqs: list[list[int]], keep: bool = False) -> tuple[torch.Tensor, tuple | None]:
        from transformers import DynamicCache

        ids, mask = self._left_pad(seqs)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config) if keep else None
        self.forward_passes += 1
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=keep,
                            logits_to_keep=1).logits[:, -1]
        return logits, ((cache, mask, pos[:, -1] + 1) if keep else None)

    def _encode_prefixes(self, seqs: list[list[int]]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per prefix, per layer (key, value) of shape (heads, L, head_dim) at positions 0..L-1."""
        from transformers import DynamicCache

        ids, mask = self._left_pad(seqs)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        self.forward_passes += 1
        self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                   logits_to_keep=1)
        width = ids.shape[1]
        return [[(layer.keys[b, :, width - len(s):].clone(), layer.values[b, :, width - len(s):].clone())
                 for layer in cache.layers] for b, s in enumerate(seqs)]

    def _with_cached_prefixes(self, keys: list[Hashable], pre: list[list[int]], suf: list[list[int]], keep: bool = False
                              ) -> tuple[torch.Tensor, tuple | None]:
        from transformers import DynamicCache

        missing = list(dict.fromkeys(k for k in keys if k not in self._kv))
        if missing:
            first = {k: p for k, p in zip(keys, pre)}
            for k, kv in zip(missing, self._encode_prefixes([first[k] for k in missing])):
                self._kv[k] = (len(first[k]), kv)
        entries = []
        for k in keys:
            self._kv.move_to_end(k)
            entries.append(self._kv[k])
        while len(self._kv) > max(self.prefix_cache, len(set(keys))):
            self._kv.popitem(last=False)
        lengths = torch.as_tensor([n for n, _ in entries], device=self.device)
        width = int(lengths.max())
        layers = []
        for li in range(len(entries[0][1])):
            k0, v0 = entries[0][1][li]
            kk = k0.new_zeros((len(entries), k0.shape[0], width, k0.shape[2]))
            vv = v0.new_zeros((len(entries), v0.shape[0], width, v0.shape[2]))
            for b, (n, kv) in enumerate(entries):
                kk[b, :, width - n:] = kv[li][0]
                vv[b, :, width - n:] = kv[li][1]
            layers.append((kk, vv))
        prefix_mask = (torch.arange(width, device=self.device)[None, :] >= (width - lengths)[:, None]).long()
        ids, suffix_mask = self._left_pad(suf)
        pos = lengths[:, None] + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        self.forward_passes += 1
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                            logits_to_keep=1).logits[:, -1]
        return logits, ((cache, mask, pos[:, -1] + 1) if keep else None)
