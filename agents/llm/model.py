"""A small causal LM built from a config and the simulator's own text (no model hub): user LMs and LLM
recommenders both start from it.

``new_lm`` makes the tokenizer from the catalog and prompt text and a Llama-architecture model
of a few layers, and saves both as a Hugging Face folder, so ``LocalLM``, ``transformers serve`` and
the trainers load it like any downloaded model. ``recsim-llm train-user-lm`` trains it as a user, ``policies.llm`` as a recommender.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from agents.llm.tokenizer import build_tokenizer


@dataclass(frozen=True)
class LMConfig:
    """Shape of a from-scratch causal LM (defaults: ~0.4M parameters, trains on CPU in minutes)."""

    vocab_size: int = 2000
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 1024
    seed: int = 0


def new_lm(texts: Iterable[str], folder: str | Path, config: LMConfig = LMConfig()) -> Path:
    """Build the tokenizer on ``texts`` and a freshly initialised model; save both to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tok = build_tokenizer(texts, config.vocab_size)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads, max_position_embeddings=config.max_positions,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
