"""Users driven by a language model: prompts from the world state, scored by a local or served LM."""
from agents.llm.prompts import PromptConfig, Prompts, build_prompts, option_labels
from agents.llm.user import LLMUser, LLMUserConfig

__all__ = ["LLMUser", "LLMUserConfig", "PromptConfig", "Prompts", "build_prompts", "option_labels"]
