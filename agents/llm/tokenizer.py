"""A tokenizer built from the simulator's own text (catalog titles, genres, prompts): no model hub.

Byte-level BPE, so any text encodes (nothing is out of vocabulary), with the answer letters and
rating digits after a space guaranteed single tokens, because LLM users score one-token answers.
It saves as a normal Hugging Face tokenizer folder (``AutoTokenizer.from_pretrained`` loads it), and
returns no ``token_type_ids`` and carries a chat template, which ``transformers serve`` needs.
"""
from __future__ import annotations

from typing import Iterable

from agents.llm.prompts import LETTERS, RATINGS

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% if not loop.last %}\n{% endif %}"
                 "{% endfor %}")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    answers = [" " + a for a in (*LETTERS, *RATINGS)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # every answer also appears on its own many times, so " A" ... " 5" are merged into single tokens
    tok.train_from_iterator(_with_answers(texts, answers), trainer=trainer)
    bos = tok.token_to_id(SPECIAL["bos_token"])
    tok.post_processor = processors.TemplateProcessing(single=f"{SPECIAL['bos_token']} $A",
                                                       special_tokens=[(SPECIAL["bos_token"], bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"],
                                   **SPECIAL)
    fast.chat_template = CHAT_TEMPLATE
    for a in answers:
        if len(fast(a, add_special_tokens=False)["input_ids"]) != 1:
            raise RuntimeError(f"tokenizer: the answer {a!r} is not one token; raise vocab_size.")
    return fast


def _with_answers(texts: Iterable[str], answers: list[str]) -> Iterable[str]:
    yield from texts
    for _ in range(500):
        yield "".join(answers)
