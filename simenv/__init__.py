"""recsim-llm's simulated world and its Gymnasium API. Importing this package registers
``RecSim-LLM-v0``; ``gym.make("simenv:RecSim-LLM-v0")`` imports it for you (the form to hand to
subprocesses and Ray workers)."""
from gymnasium import register

from simenv.config import EnvConfig, WorldConfig
from simenv.dynamics import DynamicsConfig

ENV_ID = "RecSim-LLM-v0"

register(
    id=ENV_ID,
    entry_point="simenv.env:RecSimLLMEnv",
    vector_entry_point="simenv.vector:RecSimLLMVectorEnv",
)

__all__ = ["ENV_ID", "DynamicsConfig", "EnvConfig", "WorldConfig"]
