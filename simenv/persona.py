"""Persona attributes of users: categorical codes plus their names, and a numeric encoding."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGE_BANDS = (18, 25, 35, 45, 50, 56)  # MovieLens-style lower bounds of age bands


@dataclass(frozen=True)
class Persona:
    """Per-user persona attributes, one entry per user.

    Attributes:
        age: (U,) int16 years.
        gender: (U,) int8 code into ``gender_names``.
        occupation: (U,) int16 code into ``occupation_names``.
    """

    age: np.ndarray
    gender: np.ndarray
    occupation: np.ndarray
    gender_names: tuple[str, ...]
    occupation_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.age)
        for name in ("gender", "occupation"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Persona.{name}: shape {getattr(self, name).shape}, expected ({n},).")
        if n and (self.gender.min() < 0 or self.gender.max() >= len(self.gender_names)):
            raise ValueError("Persona.gender: codes must index gender_names.")
        if n and (self.occupation.min() < 0 or self.occupation.max() >= len(self.occupation_names)):
            raise ValueError("Persona.occupation: codes must index occupation_names.")

    @property
    def num_users(self) -> int:
        return len(self.age)

    @property
    def age_band(self) -> np.ndarray:
        """(U,) int8 index of the age band (``AGE_BANDS``) each user falls in."""
        return (np.searchsorted(np.asarray(AGE_BANDS), self.age, side="right") - 1).clip(0).astype(np.int8)

    @property
    def num_features(self) -> int:
        return 1 + len(self.gender_names) + len(self.occupation_names)

    def features(self) -> np.ndarray:
        """(U, F) float32: age scaled to [0, 1] (over 0..100 years), then one-hot gender and occupation."""
        n = self.num_users
        out = np.zeros((n, self.num_features), np.float32)
        out[:, 0] = np.clip(self.age, 0, 100) / 100.0
        rows = np.arange(n)
        out[rows, 1 + self.gender] = 1.0
        out[rows, 1 + len(self.gender_names) + self.occupation] = 1.0
        return out

    def describe(self, user: int) -> str:
        """One-line text persona, used in prompts and reports."""
        return (
            f"{int(self.age[user])}-year-old {self.gender_names[self.gender[user]]}, "
            f"{self.occupation_names[self.occupation[user]]}"
        )

    def take(self, users: np.ndarray) -> "Persona":
        """The personas of a subset of users, in the given order."""
        return Persona(self.age[users], self.gender[users], self.occupation[users],
                       self.gender_names, self.occupation_names)
