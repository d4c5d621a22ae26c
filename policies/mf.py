"""Matrix factorization for implicit feedback by alternating least squares (Hu, Koren, Volinsky 2008).

From the click counts r_ui of a log: preference p_ui = [r_ui > 0], confidence c_ui = 1 + alpha r_ui.
User factors X (U, f) and item factors Y (I, f) minimise

    L(X, Y) = sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (||X||_F^2 + ||Y||_F^2)

over *all* (u, i) pairs. Holding Y fixed, each x_u has the closed form

    x_u = (Y^T Y + Y^T (C^u - I) Y + reg I)^{-1} Y^T C^u p_u

where only the items of u enter the middle term. For all users at once, the middle terms are one
sparse-dense product (alpha R) @ [upper triangle of y_i y_i^T]_i, (U, I) @ (I, f(f+1)/2), the
right-hand sides (P + alpha R) @ Y, and one batched ``np.linalg.solve`` runs the (U, f, f) systems.
Items are the same with the roles swapped. Each half-step minimises L exactly: L never increases.

Serving: candidate i of user u scores x_u . y_i. A user without training clicks gets x_u = the mean
factor of the items in ``obs["history"]``; with no history either, candidates are ranked by
popularity (click counts of the log), which also breaks ties everywhere.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from policies.base import BasePolicy
from policies.logs import interaction_matrix, item_counts
from simenv.datasets.base import Interactions


def als_half_step(r: sp.csr_matrix, fixed: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """Solve for the factors of the rows of ``r`` with the column factors ``fixed`` held.

    Args:
        r: (R, Q) CSR click counts (rows = the side being solved).
        fixed: (Q, f) float64 factors of the columns.
    Returns:
        (R, f) float64: x_r = (F^T F + F^T (C^r - I) F + reg I)^{-1} F^T C^r p_r for every row r.
    """
    f = fixed.shape[1]
    iu, ju = np.triu_indices(f)  # the systems are symmetric: accumulate the upper triangle only
    outer = fixed[:, iu] * fixed[:, ju]  # (Q, f(f+1)/2) upper triangle of y y^T
    tri = np.asarray((alpha * r) @ outer)  # (R, f(f+1)/2) of sum_i alpha r_ui y_i y_i^T
    a = np.empty((r.shape[0], f, f))
    a[:, iu, ju] = tri
    a[:, ju, iu] = tri
    a += fixed.T @ fixed + reg * np.eye(f)
    pref = r.copy()
    pref.data = 1.0 + alpha * pref.data  # c_ui p_ui on the stored (clicked) entries
    b = np.asarray(pref @ fixed)  # (R, f)
    return np.linalg.solve(a, b[:, :, None])[:, :, 0]


def implicit_als_loss(r: sp.csr_matrix, x: np.ndarray, y: np.ndarray, reg: float, alpha: float) -> float:
    """L(X, Y) of the module docstring, without forming the dense (U, I) matrix.

    sum over all pairs of s_ui^2 = sum((X^T X) * (Y^T Y)); the clicked pairs then add
    c_ui (1 - s_ui)^2 - s_ui^2.
    """
    coo = r.tocoo()
    s = np.einsum("nf,nf->n", x[coo.row], y[coo.col])
    conf = 1.0 + alpha * coo.data
    fit = float(np.sum((x.T @ x) * (y.T @ y))) + float(np.sum(conf * (1.0 - s) ** 2 - s ** 2))
    return fit + reg * (float(np.sum(x * x)) + float(np.sum(y * y)))


class MatrixFactorizationPolicy(BasePolicy):
    """Implicit-feedback ALS (module docstring), fitted offline with ``fit``; it does not learn online.

    Attributes (after ``fit``):
        user_factors: (U, f) float64 X.  item_factors: (I, f) float64 Y.
        seen: (U,) bool, users with at least one training click.
        counts: (I,) float64 clicks per item in the log.
        loss_history: L(X, Y) after each iteration.
    """

    name = "mf"
    per_user = True  # fitted once, offline; serving reads only the user's own factors

    def __init__(self, factors: int = 32, reg: float = 0.1, iters: int = 10, alpha: float = 10.0,
                 seed: int = 0) -> None:
        super().__init__(seed)
        for field, value in (("factors", factors), ("iters", iters)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{field}={value!r}: must be a positive integer.")
        if not reg > 0:
            raise ValueError(f"reg={reg!r}: must be > 0 (it keeps every system solvable).")
        if not alpha >= 0:
            raise ValueError(f"alpha={alpha!r}: must be >= 0 (confidence c = 1 + alpha * count).")
        self.factors, self.reg, self.iters, self.alpha = int(factors), float(reg), int(iters), float(alpha)
        self.seed = seed
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.loss_history: list[float] = []

    def fit(self, interactions: Interactions, num_items: int, num_users: int | None = None
            ) -> "MatrixFactorizationPolicy":
        """Run ``iters`` ALS iterations (users then items) from small random factors; returns self.

        ``num_users`` defaults to the largest user index in the log plus one.
        """
        if num_users is None:
            num_users = int(interactions.user.max()) + 1 if len(interactions) else 1
        r = interaction_matrix(interactions, num_users, num_items)
        rt = r.T.tocsr()
        rng = np.random.default_rng(self.seed)
        x = rng.normal(0.0, 0.01, (num_users, self.factors))
        y = rng.normal(0.0, 0.01, (num_items, self.factors))
        self.loss_history = []
        for _ in range(self.iters):
            x = als_half_step(r, y, self.reg, self.alpha)
            y = als_half_step(rt, x, self.reg, self.alpha)
            self.loss_history.append(implicit_als_loss(r, x, y, self.reg, self.alpha))
        self.user_factors, self.item_factors = x, y
        self.seen = np.diff(r.indptr) > 0
        self.counts = item_counts(interactions, num_items)
        self._pop = np.log1p(self.counts) / max(np.log1p(self.counts.max()), 1e-12)
        return self

    def setup(self, env) -> None:
        super().setup(env)
        if self.item_factors is not None and self.item_factors.shape[0] != self.world.num_items:
            raise ValueError(
                f"MatrixFactorizationPolicy was fitted for {self.item_factors.shape[0]} items, the env's world "
                f"has {self.world.num_items}; fit it on logs of this world."
            )

    def user_vectors(self, users: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, f) factors of the served users and (N,) bool: whether each has one.

        Trained users get x_u; others the mean item factor of their ``history`` (N, M) (-1 ignored).
        """
        x, y = self.user_factors, self.item_factors
        known = users < len(x)
        known[known] = self.seen[users[known]]
        valid = history >= 0  # (N, M)
        sums = np.einsum("nm,nmf->nf", valid, y[np.maximum(history, 0)])
        counts = valid.sum(axis=1)
        vec = np.where(known[:, None], x[np.where(known, users, 0)], sums / np.maximum(counts, 1)[:, None])
        return vec, known | (counts > 0)

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float64 candidate scores: x_u . y_i plus a popularity tie-breaker (module docstring)."""
        if self.item_factors is None:
            raise RuntimeError("MatrixFactorizationPolicy is not fitted: call fit(interactions, num_items) first.")
        cand = obs["candidates"]  # (N, C)
        vec, has = self.user_vectors(np.asarray(self.env.sim.slot_user), obs["history"])
        dots = np.einsum("nf,ncf->nc", vec, self.item_factors[cand])
        pop = self._pop[cand]
        # the tie-breaker is tiny next to any factor score, and alone for users without one
        return np.where(has[:, None], dots + 1e-6 * pop, pop)

    def act(self, obs):
        return self.slate_from_scores(self.scores(obs))
