"""The item catalog: every item attribute as one array indexed by the dense item index.

Items are addressed everywhere by their dense index ``0..num_items-1``; ``item_ids`` keeps the
dataset's own ids (e.g. MovieLens ids) for reports and logs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Catalog:
    """Items of the world.

    Attributes:
        item_ids: (I,) int64 external ids (dataset ids; ``arange(I)`` for synthetic worlds).
        titles: (I,) object array of str, unique readable titles.
        genres: (I, G) bool multi-hot genre membership; every item has at least one genre.
        genre_names: the G genre names.
        popularity: (I,) float32, non-negative, sums to 1: the prior share of interactions.
        quality: (I,) float32 in [0, 1]: intrinsic quality that raises choice and rating.
        duration: (I,) float32 minutes, > 0: full watch time of the item.
        embeddings: (I, d) float32 unit rows: the item's position in the interest space.
    """

    item_ids: np.ndarray
    titles: np.ndarray
    genres: np.ndarray
    genre_names: tuple[str, ...]
    popularity: np.ndarray
    quality: np.ndarray
    duration: np.ndarray
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.titles)
        if n == 0:
            raise ValueError("Catalog: titles is empty; a catalog needs at least one item.")
        for name in ("item_ids", "popularity", "quality", "duration"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"Catalog.{name}: shape {arr.shape}, expected ({n},) like titles.")
        if self.genres.shape != (n, len(self.genre_names)):
            raise ValueError(
                f"Catalog.genres: shape {self.genres.shape}, expected ({n}, {len(self.genre_names)})."
            )
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise ValueError(f"Catalog.embeddings: shape {self.embeddings.shape}, expected ({n}, d).")
        for name in ("popularity", "quality", "duration", "embeddings"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"Catalog.{name}: contains NaN or Inf; clean the input data.")

    @property
    def num_items(self) -> int:
        return len(self.titles)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def check_item(self, item: int) -> None:
        """Raise a ValueError naming the valid range unless ``item`` is an item index of this catalog."""
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or not 0 <= item < self.num_items:
            raise ValueError(f"item {item!r} is outside the catalog: item ids are 0..{self.num_items - 1}.")

    def genre_text(self, item: int) -> str:
        """Comma-separated genre names of one item (for prompts and reports)."""
        return ", ".join(g for g, on in zip(self.genre_names, self.genres[item]) if on)
