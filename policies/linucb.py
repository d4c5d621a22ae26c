"""LinUCB with one linear model shared by all users and items (Li, Chu, Langford, Schapire 2010).

Features of user u and item i, with e_i the item's catalog embedding (d,) and h_u the mean
embedding of the items in the user's ``obs["history"]`` (zeros when empty):

    phi(u, i) = concat(e_i * h_u, e_i, 1)            (p = 2d + 1; * is elementwise)

so theta . phi is a diagonal bilinear match e_i^T diag(theta_1) h_u plus an item term plus a bias.
With A = ridge I + sum phi phi^T and b = sum r phi over the shown examples, theta = A^{-1} b and

    score(u, i) = theta . phi + alpha * sqrt(phi^T A^{-1} phi)

Each update adds every shown item of the active rows as one example (r = 1 for the clicked item, 0
for the others shown): a rank-(B k) update of A and b, then one Cholesky solve for A^{-1} and theta.
The model starts from scratch at every ``setup`` (``evaluate`` calls it once per episode).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from policies.base import BasePolicy


def history_mean(embeddings: np.ndarray, history: np.ndarray) -> np.ndarray:
    """(N, d) float32 mean embedding of each row's history items; zeros for an empty history.

    Args:
        embeddings: (I, d) item embeddings.
        history: (N, M) int item ids, -1 = empty.
    """
    valid = history >= 0
    sums = np.einsum("nm,nmd->nd", valid.astype(np.float32), embeddings[np.maximum(history, 0)])
    return sums / np.maximum(valid.sum(axis=1), 1)[:, None].astype(np.float32)


def linucb_features(embeddings: np.ndarray, user_mean: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(N, n, 2d + 1) float32 phi(u, i) = concat(e_i * h_u, e_i, 1) for the (N, n) ``items`` of N users
    with (N, d) history means ``user_mean``."""
    e = embeddings[items]  # (N, n, d)
    ones = np.ones(items.shape + (1,), np.float32)
    return np.concatenate([e * user_mean[:, None, :], e, ones], axis=2)


class LinUCBPolicy(BasePolicy):
    """Shared-parameter linear UCB over phi(u, i) (module docstring); learns online in ``update``.

    Attributes (after ``setup``):
        A: (p, p) float64 ridge I + sum phi phi^T.  b: (p,) float64 sum r phi.
        theta: (p,) float64 A^{-1} b.  examples: shown items learned from so far.
    """

    name = "linucb"

    def __init__(self, alpha: float = 1.0, ridge: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        if not alpha >= 0:
            raise ValueError(f"alpha={alpha!r}: must be >= 0 (0 = greedy, no exploration bonus).")
        if not ridge > 0:
            raise ValueError(f"ridge={ridge!r}: must be > 0 (it makes A invertible before any data).")
        self.alpha, self.ridge = float(alpha), float(ridge)

    def setup(self, env) -> None:
        super().setup(env)
        self.embeddings = self.world.catalog.embeddings
        p = 2 * self.embeddings.shape[1] + 1
        self.A = self.ridge * np.eye(p)
        self.b = np.zeros(p)
        self.theta = np.zeros(p)
        self._a_inv = np.eye(p, dtype=np.float32) / np.float32(self.ridge)
        self.examples = 0

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float32 upper confidence bounds of the candidates."""
        phi = linucb_features(self.embeddings, history_mean(self.embeddings, obs["history"]), obs["candidates"])
        mean = phi @ self.theta.astype(np.float32)  # (N, C)
        var = np.einsum("ncp,ncp->nc", phi @ self._a_inv, phi)
        return mean + np.float32(self.alpha) * np.sqrt(np.maximum(var, 0.0))

    def act(self, obs):
        return self.slate_from_scores(self.scores(obs))

    def update(self, obs, actions, rewards, info) -> None:
        active = np.asarray(info["_clicked"], bool)
        if not active.any():
            return
        slate = info["slate"][active]  # (B, k) shown item ids
        clicked = slate == info["item"][active][:, None]  # (B, k); item -1 (no click) matches nothing
        user_mean = history_mean(self.embeddings, obs["history"][active])
        phi = linucb_features(self.embeddings, user_mean, slate).reshape(-1, self.A.shape[0]).astype(np.float64)
        self.A += phi.T @ phi
        self.b += phi.T @ clicked.ravel().astype(np.float64)
        factor = scipy.linalg.cho_factor(self.A, lower=True)
        a_inv = scipy.linalg.cho_solve(factor, np.eye(len(self.b)))
        self.theta = scipy.linalg.cho_solve(factor, self.b)
        self._a_inv = a_inv.astype(np.float32)
        self.examples += phi.shape[0]
