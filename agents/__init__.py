"""User simulators: the embedded choice model and the protocol any custom simulator follows."""
from agents.base import Responses, UserSimulator, resolve_user_model
from agents.choice import ChoiceConfig, MultinomialLogitUser

__all__ = ["ChoiceConfig", "MultinomialLogitUser", "Responses", "UserSimulator", "resolve_user_model"]
