"""recsim-llm's simulated world and its Gymnasium API. Importing this package registers
``RecSim-LLM-v0``; ``gym.make("simenv:RecSim-LLM-v0")`` imports it for you (the form to hand to
subprocesses and Ray workers)."""
from gymnasium import register

ENV_ID = "RecSim-LLM-v0"

register(
    id=ENV_ID,
    entry_point="simenv.env:RecSimLLMEnv",
    vector_entry_point="simenv.vector:RecSimLLMVectorEnv",
)

_EXPORTS = {"DynamicsConfig": "simenv.dynamics", "EnvConfig": "simenv.config", "WorldConfig": "simenv.config",
            "World": "simenv.world", "build_world": "simenv.world"}


def __getattr__(name: str):
    # lazy, so that importing a leaf module (simenv.rng from agents) does not import the config
    # modules, which import agents back
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simenv' has no attribute {name!r}")


__all__ = ["ENV_ID", *_EXPORTS]
