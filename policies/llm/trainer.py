"""One preference trainer for every loss in ``policies.llm.losses``, on ``transformers.Trainer``.

Why not trl's ``DPOTrainer``: it scores one chosen and one rejected response as two whole
``prompt + response`` sequences, has no multi-negative losses (S-DPO, DMPO) and no per-example
smoothing (RosePO), and its loss lives in one private method. Here each example is a prompt with
1+K responses (column 0 chosen); the prompt is encoded once and all responses continue its
key/value states (``policies.llm.scoring``), so K negatives cost K short titles, not K prompts.

The reference model's log-probabilities are computed once, before training, and kept as a dataset
column: no second model in memory and no reference forward per step. By default the reference is
the model as handed over (the SFT model), evaluated with dropout off.

A run resumes from its last checkpoint (``trainer.train(resume_from_checkpoint=True)``), α-DPO's
running moments included. Metrics use trl's names (``rewards/margins``, ``rewards/accuracies``...).
"""
from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from policies.llm.losses import GapMoments, LossConfig, preference_loss
from policies.llm.preference_data import validate_preferences
from policies.llm.scoring import EncodedResponses, pad_responses, response_logps

MOMENTS_FILE = "alpha_dpo_moments.json"


@dataclass
class PreferenceConfig(TrainingArguments):
    """``TrainingArguments`` plus the preference loss (see ``policies.llm.losses``)."""

    loss: str = field(default="dpo", metadata={"help": "dpo, cdpo (RosePO-style per-example smoothing), sdpo, "
                                                       "dmpo, simpo or alpha_dpo."})
    beta: float = field(default=0.1, metadata={"help": "Inverse temperature of the implicit reward."})
    gamma: float = field(default=0.5, metadata={"help": "Target reward margin of SimPO and α-DPO."})
    alpha: float = field(default=0.2, metadata={"help": "α-DPO: weight of the standardised reference gap."})
    ema_decay: float = field(default=0.9, metadata={"help": "α-DPO: decay of the gap's running moments."})
    sft_weight: float = field(default=0.0, metadata={"help": "Weight of the chosen response's per-token NLL "
                                                             "added to the loss (RPO / DMPO's ftx term)."})
    reference_batch_size: int = field(default=32, metadata={"help": "Prompts per pass when precomputing the "
                                                                    "reference log-probabilities."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept: the collator reads its columns."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.loss_config = LossConfig(name=self.loss, beta=self.beta, gamma=self.gamma, alpha=self.alpha,
                                      ema_decay=self.ema_decay)
        if self.sft_weight < 0:
            raise ValueError(f"sft_weight={self.sft_weight}: must be >= 0.")
        if self.reference_batch_size < 1:
            raise ValueError(f"reference_batch_size={self.reference_batch_size}: must be >= 1.")


def check_tokenizer(model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer that cannot drive ``model``: ids beyond its embedding, or no end token."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}: mismatched "
                         "tokenizer and model; load both from the same folder.")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: responses end with it; set tokenizer.eos_token.")


def tokenize_preferences(dataset: Any, tokenizer: Any) -> Any:
    """Adds ``prompt_ids`` and ``response_ids`` ([chosen, *rejected], each ending in eos) to a
    preference dataset (``policies.llm.preference_data.preference_dataset``)."""
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list]) -> dict[str, list]:
        prompts = tokenizer(batch["prompt"])["input_ids"]
        responses = []
        for chosen, rejected in zip(batch["chosen"], batch["rejected"]):
            ids = tokenizer([chosen, *rejected], add_special_tokens=False)["input_ids"]
            responses.append([list(x) + [eos] for x in ids])
        return {"prompt_ids": prompts, "response_ids": responses}

    return dataset.map(encode, batched=True, desc=None)


def collate(features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads a list of tokenised examples into the tensors ``compute_loss`` reads."""
    batch = pad_responses([f["prompt_ids"] for f in features], [f["response_ids"] for f in features], pad_id)
    out = {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask, "response_ids": batch.response_ids,
           "response_mask": batch.response_mask,
           "epsilon": torch.as_tensor(np.array([f["epsilon"] for f in features], np.float32))}
    if "ref_logps" in features[0]:
        out["ref_logps"] = torch.as_tensor(np.array([f["ref_logps"] for f in features], np.float32))
    return out


@torch.no_grad()
def reference_logps(model: Any, dataset: Any, pad_id: int, batch_size: int = 32) -> list[list[float]]:
    """Summed log-probability of every response of every example under ``model`` (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start: start + batch_size]
        batch = pad_responses(rows["prompt_ids"], rows["response_ids"], pad_id).to(device)
        out += response_logps(model, batch).float().cpu().tolist()
    model.train(was_training)
    return out


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off, so the policy's log-probabilities at step 0 equal the reference's (as trl does)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class _SaveMoments(TrainerCallback):
    """Writes α-DPO's running moments into each checkpoint, so a resumed run continues them."""

    def __init__(self, moments: GapMoments) -> None:
        self.moments = moments

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, MOMENTS_FILE), "w") as f:
            json.dump(self.moments.state_dict(), f)


class PreferenceTrainer(Trainer):
    """Trains a causal LM recommender with a preference loss over 1+K responses per prompt.

    Args:
        model: the policy; also the reference (its log-probabilities before training) unless
            ``ref_model`` is given or the dataset already has a ``ref_logps`` column.
        args: a ``PreferenceConfig``.
        train_dataset: a preference dataset (``preference_dataset``): prompt, chosen, rejected (K
            each), epsilon; validated first.
        processing_class: the model's tokenizer.
    """

    def __init__(self, model: Any, args: PreferenceConfig, train_dataset: Any, processing_class: Any,
                 ref_model: Any = None, eval_dataset: Any = None, **kwargs: Any) -> None:
        if not isinstance(args, PreferenceConfig):
            raise TypeError(f"args must be a PreferenceConfig, not {type(args).__name__}.")
        check_tokenizer(model, processing_class)
        validate_preferences(train_dataset)
        disable_dropout(model)
        pad_id = processing_class.pad_token_id if processing_class.pad_token_id is not None else \
            processing_class.eos_token_id
        train = tokenize_preferences(train_dataset, processing_class)
        evals = tokenize_preferences(eval_dataset, processing_class) if eval_dataset is not None else None
        if args.loss_config.needs_reference:
            ref = model if ref_model is None else ref_model
            if "ref_logps" not in train.column_names:
                train = train.add_column("ref_logps", reference_logps(ref, train, pad_id, args.reference_batch_size))
            if evals is not None and "ref_logps" not in evals.column_names:
                evals = evals.add_column("ref_logps", reference_logps(ref, evals, pad_id, args.reference_batch_size))
        self.moments = GapMoments(args.ema_decay) if args.loss == "alpha_dpo" else None
        callbacks = list(kwargs.pop("callbacks", None) or []) + ([_SaveMoments(self.moments)] if self.moments else [])
        super().__init__(model=model, args=args, train_dataset=train, eval_dataset=evals,
                         data_collator=lambda f: collate(f, pad_id), processing_class=processing_class,
                         callbacks=callbacks, **kwargs)
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = EncodedResponses(inputs["prompt_ids"], inputs["prompt_mask"], inputs["response_ids"],
                                 inputs["response_mask"])
        logps = response_logps(model, batch)
        lengths = batch.lengths.to(logps.dtype)
        # evaluation batches must not move α-DPO's training moments
        moments = self.moments if model.training or self.moments is None else copy.deepcopy(self.moments)
        losses, metrics = preference_loss(self.args.loss_config, logps, inputs.get("ref_logps"), lengths,
                                          inputs["epsilon"], moments)
        loss = losses.mean()
        if self.args.sft_weight > 0:
            nll = -(logps[:, 0] / lengths[:, 0]).mean()
            loss = loss + self.args.sft_weight * nll
            metrics["nll/chosen"] = float(nll.detach())
        prefix = "" if model.training else "eval_"
        for key, value in metrics.items():
            self._metrics[prefix + key].append(float(value))
        return (loss, {"logps": logps}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the means of the loss metrics gathered since the last log (trl's pattern)."""
        evaluating = any(k.startswith("eval_") for k in logs)
        for key in [k for k in self._metrics if k.startswith("eval_") == evaluating]:
            logs[key] = float(np.mean(self._metrics.pop(key)))
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        if self.moments is not None and resume_from_checkpoint:
            folder = get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True else \
                resume_from_checkpoint
            path = os.path.join(folder, MOMENTS_FILE) if folder else None
            if path and os.path.exists(path):
                with open(path) as f:
                    self.moments.load_state_dict(json.load(f))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
