"""LLM recommenders: the LLaRA prompt (``prompts``), prompt-once response scoring (``scoring``), the
policy that acts in ``RecSim-LLM-v0`` (``recommender``), preference data (``preference_data``),
losses (``losses``), SFT through trl (``sft``), the preference trainer (``trainer``) and the
offline LLaRA evaluation (``evaluate``). Modules are imported where used: torch, transformers, trl
and datasets load only for the parts that need them.
"""
