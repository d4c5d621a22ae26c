"""Log-likelihood of several responses to one prompt, with the prompt encoded once.

An LLM recommender ranks 20 candidate titles for a prompt, and a multi-negative preference loss
scores 1+K titles for a prompt. Prompts are long (10 history titles and 20 candidates, a few hundred
tokens) and titles short (a few tokens), so running ``prompt + title`` once per title costs 1+K
prompts. Here the prompt runs once, its key/value states are shared by every response of that
prompt, and only the response tokens run again: cost ~ one prompt + the response tokens, for
inference and for training alike (gradients flow through the shared states into the prompt pass).

Exactness: prompts are left-padded and positions counted over real tokens, responses continue at
the prompt's true length, and a response attends to its prompt and its own earlier tokens only, so
a response's log-probability equals that of ``prompt + response`` run alone (a test checks this).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class EncodedResponses:
    """A batch of B prompts, each with R responses, as padded token tensors.

    Attributes:
        prompt_ids: (B, P) left-padded prompt tokens (the tokenizer's start token included).
        prompt_mask: (B, P) 1 on real tokens.
        response_ids: (B, R, L) right-padded response tokens (the end-of-text token included).
        response_mask: (B, R, L) 1 on real tokens; a response with no tokens is an absent slot.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    def to(self, device: torch.device | str) -> "EncodedResponses":
        return EncodedResponses(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.response_ids,
                                                          self.response_mask)))

    @property
    def lengths(self) -> torch.Tensor:
        """(B, R) tokens per response."""
        return self.response_mask.sum(-1)


def pad_responses(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[Sequence[int]]], pad_id: int
                  ) -> EncodedResponses:
    """Pad token lists into an ``EncodedResponses``: prompts on the left, responses on the right.

    Every prompt must have the same number of responses, and every response at least one token.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists.")
    r = {len(rs) for rs in responses}
    if len(r) != 1:
        raise ValueError(f"every prompt needs the same number of responses; got {sorted(r)}.")
    num_r = r.pop()
    if any(len(p) == 0 for p in prompts) or any(len(x) == 0 for rs in responses for x in rs):
        raise ValueError("an empty prompt or response: each needs at least one token.")
    p_len = max(len(p) for p in prompts)
    r_len = max(len(x) for rs in responses for x in rs)
    prompt_ids = torch.full((len(prompts), p_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), p_len), dtype=torch.long)
    response_ids = torch.full((len(prompts), num_r, r_len), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(prompts), num_r, r_len), dtype=torch.long)
    for b, (p, rs) in enumerate(zip(prompts, responses)):
        prompt_ids[b, p_len - len(p):] = torch.as_tensor(p)
        prompt_mask[b, p_len - len(p):] = 1
        for j, x in enumerate(rs):
            response_ids[b, j, : len(x)] = torch.as_tensor(x)
            response_mask[b, j, : len(x)] = 1
    return EncodedResponses(prompt_ids, prompt_mask, response_ids, response_mask)


def response_logps(model: torch.nn.Module, batch: EncodedResponses, per_token: bool = False) -> torch.Tensor:
    """(B, R) summed log p(response | prompt) under ``model``, or (B, R, L) per token with ``per_token``.

    Differentiable: call it under ``torch.no_grad()`` for scoring, inside the graph for training.
    """
    from transformers import DynamicCache

    b, r, length = batch.response_ids.shape
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    pos = (batch.prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=config)
    out = model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, position_ids=pos,
                cache=cache, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1].float().log_softmax(-1)  # (B, V): the distribution of each response's 1st token
    # every response of a prompt continues the same key/value states (repeated, not recomputed)
    shared = DynamicCache(ddp_cache_data=[(layer.keys.repeat_interleave(r, 0), layer.values.repeat_interleave(r, 0))
                                          for layer in out.cache.layers], config=config)
    ids = batch.response_ids.reshape(b * r, length)
    mask = batch.response_mask.reshape(b * r, length)
    start = batch.prompt_mask.sum(-1).repeat_interleave(r)  # (B*R,) the true prompt lengths
    rest = model(input_ids=ids, attention_mask=torch.cat([batch.prompt_mask.repeat_interleave(r, 0), mask], 1),
                 position_ids=start[:, None] + torch.arange(length, device=ids.device)[None, :],
                 cache=shared, use_cache=True).logits[:, :-1].float()
    logits_next = rest.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B*R, L-1) tokens 2..L
    first_tok = first.repeat_interleave(r, 0).gather(-1, ids[:, :1]).squeeze(-1)  # (B*R,) token 1
    tokens = torch.cat([first_tok[:, None], logits_next], 1) * mask
    tokens = tokens.reshape(b, r, length)
    return tokens if per_token else tokens.sum(-1)
