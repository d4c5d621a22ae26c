"""Supervised fine-tuning of an LLM recommender with trl's ``SFTTrainer``: the loss is the answer's
tokens only (``completion_only_loss``), on the prompt/completion rows of
``policies.llm.preference_data.sft_dataset``. trl appends the end token to each completion, as the
preference trainer and the ranking policy do, so all three read the same token sequences.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def sft_config(output_dir: str | Path, epochs: float = 3.0, learning_rate: float = 1e-3, batch_size: int = 16,
               seed: int = 0, **overrides: Any):
    """An ``SFTConfig`` for small recommenders: answer-only loss, fp32 on CPU and bf16 on a GPU,
    no gradient checkpointing (trl's default, which only slows small models), no hub, no reports."""
    from trl import SFTConfig

    gpu = torch.cuda.is_available()
    settings = dict(output_dir=str(output_dir), num_train_epochs=epochs, learning_rate=learning_rate,
                    per_device_train_batch_size=batch_size, seed=seed, data_seed=seed, completion_only_loss=True,
                    use_cpu=not gpu, bf16=gpu, gradient_checkpointing=False, report_to="none", max_length=None,
                    lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=10, save_strategy="epoch",
                    save_total_limit=1, disable_tqdm=True, logging_nan_inf_filter=False)
    settings.update(overrides)
    return SFTConfig(**settings)


def sft_trainer(model: Any, tokenizer: Any, dataset: Any, config: Any, peft_config: Any = None):
    """trl's ``SFTTrainer`` on a prompt/completion dataset; ``peft_config`` (a ``peft.LoraConfig``)
    trains LoRA adapters instead of every weight, for larger local models on a GPU."""
    from trl import SFTTrainer

    from policies.llm.trainer import check_tokenizer

    check_tokenizer(model, tokenizer)
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"SFT dataset: missing column(s) {sorted(missing)}; build it with sft_dataset().")
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)
