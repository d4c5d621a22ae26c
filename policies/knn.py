"""Item-based k-nearest-neighbour collaborative filtering (Sarwar et al. 2001), fitted on logged clicks.

Similarity of items i and j from the binary user-item matrix R (U, I), with n_i = users of item i:

    s_ij = |U_i ∩ U_j| / (sqrt(n_i * n_j) + shrinkage)        (shrunk cosine; s_ii = 0)

keeping only the ``k_neighbors`` largest s_ij of each row i. A candidate i is scored for a user with
recent items H_u (``obs["history"]``, -1 padding ignored, repeats counted) by

    score_ui = sum_{j in H_u} s_ij + eps * log(1 + count_i) / log(1 + max_count)

where the popularity term, with eps a thousandth of the smallest kept similarity, only orders
candidates that the history says nothing about (or ties).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from policies.base import BasePolicy
from policies.logs import interaction_matrix, item_counts
from simenv.datasets.base import Interactions


def top_k_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The CSR matrix with only the k largest stored values of each row kept (ties: lower column first)."""
    m = matrix.tocsr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((-m.data, rows))  # by row, then by value descending; stable keeps column order
    rank = np.arange(m.nnz) - m.indptr[rows[order]]
    keep = order[rank < k]
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


def item_similarity(r: sp.csr_matrix, k_neighbors: int, shrinkage: float) -> sp.csr_matrix:
    """(I, I) float64 CSR of shrunk cosine similarities (module docstring) from a (U, I) matrix ``r``
    (nonzero = interacted), top ``k_neighbors`` per row, zero diagonal."""
    b = (r > 0).astype(np.float64).tocsr()
    n = np.asarray(b.sum(axis=0)).ravel()  # (I,) users per item
    co = (b.T @ b).tocoo()  # (I, I) co-occurrence counts
    off = co.row != co.col
    i, j, c = co.row[off], co.col[off], co.data[off]
    s = c / (np.sqrt(n[i] * n[j]) + shrinkage)
    sim = sp.csr_matrix((s, (i, j)), shape=co.shape)
    return top_k_per_row(sim, k_neighbors)


class ItemKNNPolicy(BasePolicy):
    """Ranks candidates by their summed similarity to the user's recent items (module docstring).

    Fit it offline with ``fit(interactions, num_items)``, e.g. on ``collect_interactions`` logs of
    another policy; it does not learn online.

    Attributes (after ``fit``):
        similarity: (I, I) CSR, row i = the kept neighbours of item i.
        counts: (I,) float64 events per item in the fitted log.
    """

    name = "knn"
    per_user = True

    def __init__(self, k_neighbors: int = 50, shrinkage: float = 10.0, seed: int = 0) -> None:
        super().__init__(seed)
        if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, (int, np.integer)) or k_neighbors < 1:
            raise ValueError(f"k_neighbors={k_neighbors!r}: must be a positive integer.")
        if not shrinkage >= 0:
            raise ValueError(f"shrinkage={shrinkage!r}: must be >= 0 (0 = plain cosine).")
        self.k_neighbors = int(k_neighbors)
        self.shrinkage = float(shrinkage)
        self.similarity: sp.csr_matrix | None = None
        self.counts: np.ndarray | None = None

    def fit(self, interactions: Interactions, num_items: int) -> "ItemKNNPolicy":
        """Build the similarity from who clicked what; returns self."""
        num_users = int(interactions.user.max()) + 1 if len(interactions) else 1
        r = interaction_matrix(interactions, num_users, num_items)
        self.similarity = item_similarity(r, self.k_neighbors, self.shrinkage)
        self.counts = item_counts(interactions, num_items)
        kept = self.similarity.data[self.similarity.data > 0]
        self._eps = 1e-3 * float(kept.min()) if kept.size else 1.0
        self._pop = np.log1p(self.counts) / max(np.log1p(self.counts.max()), 1e-12)
        return self

    def setup(self, env) -> None:
        super().setup(env)
        if self.similarity is not None and self.similarity.shape[0] != self.world.num_items:
            raise ValueError(
                f"ItemKNNPolicy was fitted for {self.similarity.shape[0]} items, the env's world has "
                f"{self.world.num_items}; fit it on logs of this world."
            )

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float64 candidate scores (module docstring)."""
        if self.similarity is None:
            raise RuntimeError("ItemKNNPolicy is not fitted: call fit(interactions, num_items) first.")
        cand = obs["candidates"]  # (N, C)
        hist = obs["history"]  # (N, M), -1 = empty
        n, c = cand.shape
        m = hist.shape[1]
        valid = np.broadcast_to(hist[:, None, :] >= 0, (n, c, m))
        rows = np.broadcast_to(cand[:, :, None], (n, c, m))[valid]
        cols = np.broadcast_to(hist[:, None, :], (n, c, m))[valid]
        sims = np.asarray(self.similarity[rows, cols]).ravel()  # one lookup per (candidate, history item)
        slot = np.broadcast_to(np.arange(n * c).reshape(n, c, 1), (n, c, m))[valid]
        total = np.bincount(slot, weights=sims, minlength=n * c).reshape(n, c)
        return total + self._eps * self._pop[cand]

    def act(self, obs):
        return self.slate_from_scores(self.scores(obs))
