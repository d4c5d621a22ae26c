"""Off-policy evaluation (OPE) of a new policy's CTR from the logs of an old one, checked against the
simulator's ground truth: how wrong is OPE here?

Logs are user-steps n = 1..N of a behaviour policy pi_b: the context x_n (the served user and their
candidates), the whole ordered slate a_n it showed, whether the user clicked (r_n in {0, 1}), and
log pi_b(a_n | x_n). A target policy pi_e is scored by the importance weight of the whole slate,

    w_n = pi_e(a_n | x_n) / pi_b(a_n | x_n) = exp(log pi_e(a_n | x_n) - log pi_b(a_n | x_n)),

with the estimators of OBP's ``obp/ope/estimators.py`` (research notes, section 5.1), written here in
numpy (OBP itself does not install on Python >= 3.11):

    IPS    V = (1/N) sum_n w_n r_n
    SNIPS  V = sum_n w_n r_n / sum_n w_n
    DM     V = (1/N) sum_n q(x_n, pi_e)
    DR     V = (1/N) sum_n [ q(x_n, pi_e) + w_n (r_n - q(x_n, a_n)) ]

where q is a reward model fitted on the logs (``PositionBasedClickModel``) and
q(x, pi_e) = E_{a ~ pi_e(x)} q(x, a).

What the estimators estimate, and what they cannot see. Each is (nearly) unbiased for the target's CTR
*in the states the behaviour policy visited*: V_logged = (1/N) sum_n E_{a ~ pi_e(x_n)} P(click | x_n, a).
The simulator computes that exactly (``truth_logged_states``). But the users here evolve with what they
are shown (interest drift, satiation, boredom, leaving), so had pi_e been deployed, users would have
been in other states: the on-policy CTR (``truth_on_policy``) differs from V_logged by a
state-distribution shift that no one-step (contextual-bandit) OPE estimator can see, however many
logs it gets. ``ope_check`` reports both truths so that the estimators' own error (vs V_logged) and
the error of the one-step OPE framing itself (V_logged vs on-policy) are read apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

_CI_LEVEL = 0.95
_BOOTSTRAP_CHUNK = 64  # resamples drawn at once: (64, N) int64 indices, ~15 MB at N = 30k


@dataclass(frozen=True)
class Estimate:
    """An estimate of a policy value with its standard error and the Kish effective sample size
    (sum w)^2 / sum w^2 of its importance weights (N for the weight-free DM): how many logged
    user-steps the estimate is effectively worth."""

    value: float
    stderr: float
    ess: float


# estimators ----------------------------------------------------------------------------------------
def ips(rewards: np.ndarray, log_w_target: np.ndarray, log_w_behavior: np.ndarray,
        clip: float | None = None) -> Estimate:
    """Inverse propensity scoring: V = (1/N) sum_n w_n r_n, w_n = min(pi_e / pi_b, clip).

    Unbiased without clipping (given pi_b > 0 wherever pi_e > 0); clipping at lambda trades bias for
    variance. ``rewards``, ``log_w_target``, ``log_w_behavior``: (N,) per logged user-step (the reward,
    log pi_e and log pi_b of the slate shown). stderr = sd(w r) / sqrt(N).
    """
    r, w = _weights(rewards, log_w_target, log_w_behavior, clip)
    terms = w * r
    return Estimate(float(terms.mean()), _sem(terms), _ess(w))


def snips(rewards: np.ndarray, log_w_target: np.ndarray, log_w_behavior: np.ndarray,
          clip: float | None = None) -> Estimate:
    """Self-normalised IPS: V = sum_n w_n r_n / sum_n w_n.

    Biased but consistent, and bounded by the reward range, so far less variable than IPS when a few
    weights are huge. Arguments as in ``ips``. stderr by the delta method:
    sqrt(sum_n w_n^2 (r_n - V)^2) / sum_n w_n.
    """
    r, w = _weights(rewards, log_w_target, log_w_behavior, clip)
    value = float((w * r).sum() / w.sum())
    stderr = float(np.sqrt((w**2 * (r - value) ** 2).sum()) / w.sum())
    return Estimate(value, stderr, _ess(w))


def dm(q_target: np.ndarray) -> Estimate:
    """Direct method: V = (1/N) sum_n q(x_n, pi_e), the reward model's own prediction for the target.

    ``q_target``: (N,) predicted CTR of the target policy in each logged context. No weights, so low
    variance, but every error of the reward model is bias. stderr = sd(q) / sqrt(N) ignores the
    uncertainty of the fitted model.
    """
    q = _as_rows(q_target, "q_target")
    return Estimate(float(q.mean()), _sem(q), float(len(q)))


def dr(rewards: np.ndarray, log_w_target: np.ndarray, log_w_behavior: np.ndarray, q_logged: np.ndarray,
       q_target: np.ndarray, clip: float | None = None) -> Estimate:
    """Doubly robust: V = (1/N) sum_n [ q(x_n, pi_e) + w_n (r_n - q(x_n, a_n)) ].

    The reward model carries the estimate and the weights correct its residuals: unbiased if either
    the weights or the model are exact, with less variance than IPS when the model is good.
    ``q_logged``: (N,) the model's predicted reward of the logged slate; ``q_target``: (N,) its
    expectation under the target policy; the rest as in ``ips``. stderr = sd(terms) / sqrt(N).
    """
    r, w = _weights(rewards, log_w_target, log_w_behavior, clip)
    q_a = _as_rows(q_logged, "q_logged", len(r))
    q_e = _as_rows(q_target, "q_target", len(r))
    terms = q_e + w * (r - q_a)
    return Estimate(float(terms.mean()), _sem(terms), _ess(w))


def _as_rows(x: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} has shape {a.shape}: expected (N,), one value per logged user-step.")
    if len(a) == 0:
        raise ValueError(f"{name} is empty: OPE needs at least one logged user-step; log the behaviour policy first.")
    if n is not None and len(a) != n:
        raise ValueError(f"{name} has {len(a)} rows but the rewards have {n}: pass one value per logged user-step.")
    return a


def _weights(rewards: np.ndarray, log_w_target: np.ndarray, log_w_behavior: np.ndarray,
             clip: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate the logs and return ((N,) rewards, (N,) importance weights, clipped at ``clip``)."""
    r = _as_rows(rewards, "rewards")
    lt = _as_rows(log_w_target, "log_w_target", len(r))
    lb = _as_rows(log_w_behavior, "log_w_behavior", len(r))
    if not np.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf: each logged user-step needs a finite reward.")
    if not np.isfinite(lb).all():
        raise ValueError(
            "log_w_behavior has non-finite values: the behaviour policy must give every logged slate a positive "
            "probability (log the log-propensity of the slate actually shown)."
        )
    if np.isnan(lt).any() or np.isposinf(lt).any():
        raise ValueError("log_w_target has NaN or +inf: pass log pi_e of each logged slate (-inf for probability 0).")
    with np.errstate(over="ignore"):
        w = np.exp(lt - lb)
    if np.isinf(w).any():
        raise ValueError(
            "importance weights overflow (pi_e / pi_b > 1e308): the behaviour policy almost never shows slates the "
            "target prefers; log with a more exploratory behaviour policy (higher temperature)."
        )
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"clip={clip!r}: must be > 0 (or None for no clipping).")
        w = np.minimum(w, clip)
    if not w.sum() > 0:
        raise ValueError(
            "all importance weights are 0: the target policy gives probability 0 to every logged slate, so the logs "
            "say nothing about it; log with a behaviour policy whose slates the target could also show."
        )
    return r, w


def _sem(terms: np.ndarray) -> float:
    return float(terms.std(ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else float("nan")


def _ess(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w**2).sum())


# reward model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionBasedClickModel:
    """A position-based click model fitted on logs only (no access to the users' true state):

        P(click on item i at position k) = theta_k gamma_i,      q(x, a) = 1 - prod_k (1 - theta_k gamma_{a_k}),

    the probability of at least one click on the slate. It knows which items and positions draw
    clicks on average, not who the user is, so it is the kind of model a practitioner would fit from
    the same logs; DM inherits its bias, DR corrects it with the weights.

    ``examination``: (k,) theta_k, the per-position click rate relative to the best position (max 1).
    ``attractiveness``: (I,) gamma_i, clicks of i per examination-weighted impression, Beta-smoothed
    toward the global rate g with ``prior_strength`` pseudo-impressions:
    gamma_i = (clicks_i + alpha g) / (sum_{impressions of i} theta_k + alpha); never-shown items get g.
    """

    examination: np.ndarray
    attractiveness: np.ndarray

    @classmethod
    def fit(cls, slates: np.ndarray, choice: np.ndarray, num_items: int,
            prior_strength: float = 10.0) -> "PositionBasedClickModel":
        """Fit from ``slates``: (N, k) item ids shown and ``choice``: (N,) clicked position (-1: none)."""
        s = np.asarray(slates)
        c = np.asarray(choice)
        if s.ndim != 2 or c.shape != (len(s),) or len(s) == 0:
            raise ValueError(
                f"slates of shape {s.shape} and choice of shape {c.shape}: expected (N, k) item ids and (N,) clicked "
                "positions (-1 for no click) with N >= 1."
            )
        n, k = s.shape
        if (c < -1).any() or (c >= k).any():
            raise ValueError(f"choice must be a slate position in 0..{k - 1} or -1 (no click).")
        if (s < 0).any() or (s >= num_items).any():
            raise ValueError(f"slates must hold item ids in 0..{num_items - 1} (num_items={num_items}).")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength={prior_strength!r}: must be > 0 (pseudo-impressions of the prior).")
        clicked = c >= 0
        position_rate = np.bincount(c[clicked], minlength=k) / n  # every slate fills every position
        top = position_rate.max()
        examination = position_rate / top if top > 0 else np.ones(k)
        exposure = np.bincount(s.ravel(), weights=np.broadcast_to(examination, s.shape).ravel(), minlength=num_items)
        clicks = np.bincount(s[clicked, c[clicked]], minlength=num_items).astype(np.float64)
        g = clicks.sum() / exposure.sum() if exposure.sum() > 0 else 0.0
        attractiveness = np.clip((clicks + prior_strength * g) / (exposure + prior_strength), 0.0, 1.0)
        return cls(examination, attractiveness)

    def predict(self, slates: np.ndarray) -> np.ndarray:
        """(...) predicted CTR 1 - prod_k (1 - theta_k gamma_{a_k}) of ``slates``: (..., k) item ids."""
        s = np.asarray(slates)
        if s.shape[-1] != len(self.examination):
            raise ValueError(f"slates have {s.shape[-1]} positions; the model was fitted on {len(self.examination)}.")
        return 1.0 - np.prod(1.0 - self.examination * self.attractiveness[s], axis=-1)


# the check -----------------------------------------------------------------------------------------
def ope_check(env: Any, behavior: Any, target: Any, steps: int, seed: int, target_samples: int = 16, *,
              n_resamples: int = 1000) -> dict[str, Any]:
    """Estimate ``target``'s CTR from ``behavior``'s logs with IPS, SNIPS, DM and DR, and score them
    against the simulator's ground truth.

    1. Logging: ``env.reset(seed=seed)``, then ``behavior`` (a stochastic policy with
       ``log_propensity``, e.g. a ``PlackettLucePolicy``) serves ``steps`` steps. For every active
       user-step: the click, log pi_b and log pi_e of the shown slate, the slate's items and the clicked
       position (to fit the reward model), and ``target_samples`` slates drawn from the target in that
       state.
    2. ``truth_logged_states``: the mean over logged user-steps of the target's exact expected CTR in the
       behaviour's states, sum_k P(click k | user state, slate) from the user model's
       ``choice_probabilities``, averaged over the target-sampled slates. This is what the estimators
       estimate (up to Monte-Carlo error of the inner average, which vanishes over N user-steps).
    3. ``truth_on_policy``: the target's realised CTR rolled out itself from the same seed (the same users,
       candidates and choice draws, keyed by each user's interaction count: common random numbers), and
       ``truth_on_policy_expected``, the same from exact click probabilities (no click noise).
       ``state_shift_gap`` = truth_logged_states - truth_on_policy_expected is the part of OPE's error
       that comes from users evolving differently under the target, which a one-step OPE cannot see.

    The reward model (``PositionBasedClickModel``) is fitted on all logs; q(x, pi_e) averages its
    prediction over the same target-sampled slates. CIs: percentile bootstrap over logged user-steps
    (``n_resamples`` resamples, seeded by ``seed``; the reward model is held fixed, and user-steps of
    one user are resampled as if independent). Relative errors are (estimate - truth) / truth.

    Returns a dict: ``behavior_ctr``, ``truth_logged_states``, ``truth_on_policy``,
    ``truth_on_policy_expected``, ``state_shift_gap``, ``user_steps``, ``on_policy_user_steps``,
    ``max_weight`` and ``estimators``: {name: {value, stderr, ess, ci_low, ci_high,
    rel_error_logged, rel_error_on_policy}} for ips, snips, dm, dr.
    """
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    if not hasattr(base, "num_envs") or not hasattr(base, "sim"):
        raise TypeError("ope_check needs the vector env: gym.make_vec('RecSim-LLM-v0', num_envs=N, "
                        "vectorization_mode='vector_entry_point').")
    for role, policy in (("behavior", behavior), ("target", target)):
        if not hasattr(policy, "log_propensity"):
            raise TypeError(
                f"{role} policy {type(policy).__name__} has no log_propensity(obs, actions): wrap it in "
                f"PlackettLucePolicy({type(policy).__name__}(), temperature=...)."
            )
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r}: must be a positive integer (world steps to log).")
    if isinstance(target_samples, bool) or not isinstance(target_samples, (int, np.integer)) or target_samples < 1:
        raise ValueError(f"target_samples={target_samples!r}: must be a positive integer (slates per context).")
    sim = base.sim
    model = sim.user_model
    if not hasattr(model, "choice_probabilities"):
        raise TypeError(f"ope_check needs exact click probabilities; user model {type(model).__name__} has no "
                        "choice_probabilities(world, users, slates). Use user_model='embedded'.")
    m = int(target_samples)

    def click_probability(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B,) P(any click) of (B, k) item-id slates shown to ``users`` in their current state."""
        return model.choice_probabilities(sim.world, users, items).sum(axis=1, dtype=np.float64)

    def log_step(obs: dict[str, np.ndarray], actions: np.ndarray) -> dict[str, np.ndarray]:
        n, k = actions.shape
        sampled = np.stack([target.act(obs) for _ in range(m)])  # (m, N, k) positions
        sampled_items = np.take_along_axis(obs["candidates"][None], sampled, axis=2)  # (m, N, k)
        truth = click_probability(np.tile(sim.slot_user, m), sampled_items.reshape(m * n, k)).reshape(m, n)
        return {
            "log_pb": behavior.log_propensity(obs, actions),
            "log_pe": target.log_propensity(obs, actions),
            "target_items": sampled_items.transpose(1, 0, 2),  # (N, m, k)
            "truth": truth.mean(axis=0),
        }

    def on_policy_step(obs: dict[str, np.ndarray], actions: np.ndarray) -> dict[str, np.ndarray]:
        items = np.take_along_axis(obs["candidates"], actions, axis=1)
        return {"p_click": click_probability(sim.slot_user, items)}

    logs = _rollout(env, behavior, steps, seed, log_step, observers=(target,))
    if len(logs["clicked"]) == 0:
        raise ValueError("the logging run served no active user-step; raise steps or num_envs.")
    on_policy = _rollout(env, target, steps, seed, on_policy_step)

    reward_model = PositionBasedClickModel.fit(logs["slate"], logs["choice"], base.world.num_items)
    r = logs["clicked"].astype(np.float64)
    q_logged = reward_model.predict(logs["slate"])
    q_target = reward_model.predict(logs["target_items"]).mean(axis=1)
    lt, lb = logs["log_pe"], logs["log_pb"]
    w = np.exp(lt - lb)

    truth_logged = float(logs["truth"].mean())
    truth_on = float(on_policy["clicked"].mean())
    # per-row (numerator, denominator) whose resampled sums' ratio is each estimator: the bootstrap's input
    terms = {
        "ips": (ips(r, lt, lb), w * r, None),
        "snips": (snips(r, lt, lb), w * r, w),
        "dm": (dm(q_target), q_target, None),
        "dr": (dr(r, lt, lb, q_logged, q_target), q_target + w * (r - q_logged), None),
    }
    estimators = {}
    for name, (est, num, den) in terms.items():
        low, high = _bootstrap_ci(num, den, n_resamples, seed)
        estimators[name] = {
            "value": est.value, "stderr": est.stderr, "ess": est.ess, "ci_low": low, "ci_high": high,
            "rel_error_logged": (est.value - truth_logged) / truth_logged,
            "rel_error_on_policy": (est.value - truth_on) / truth_on,
        }
    truth_on_expected = float(on_policy["p_click"].mean())
    return {
        "behavior_ctr": float(r.mean()),
        "truth_logged_states": truth_logged,
        "truth_on_policy": truth_on,
        "truth_on_policy_expected": truth_on_expected,
        "state_shift_gap": truth_logged - truth_on_expected,
        "user_steps": len(r),
        "on_policy_user_steps": len(on_policy["clicked"]),
        "max_weight": float(w.max()),
        "estimators": estimators,
    }


def _rollout(env: Any, policy: Any, steps: int, seed: int,
             before_step: Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]],
             observers: tuple = ()) -> dict[str, np.ndarray]:
    """Serve ``steps`` steps of ``policy`` from ``env.reset(seed=seed)`` (the loop of ``evaluate``).

    ``before_step(obs, actions)`` runs in the state the slate is shown in and returns per-slot arrays;
    ``observers`` are policies set up with the env that do not act. Returns those arrays and ``clicked``,
    ``choice`` (clicked position, -1 none) and ``slate`` (item ids), concatenated over the active
    user-steps only (rows autoresetting between sessions are dropped, as ``evaluate`` does).
    """
    obs, _ = env.reset(seed=seed)
    policy.setup(env)
    for observer in observers:
        observer.setup(env)
    rows: list[dict[str, np.ndarray]] = []
    for _ in range(steps):
        actions = policy.act(obs)
        extra = before_step(obs, actions)
        next_obs, reward, _, _, info = env.step(actions)
        policy.update(obs, actions, reward, info)
        active = info["_clicked"]
        step = {"clicked": info["clicked"], "choice": info["choice"], "slate": info["slate"], **extra}
        rows.append({key: value[active] for key, value in step.items()})
        obs = next_obs
    return {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}


def _bootstrap_ci(numerator: np.ndarray, denominator: np.ndarray | None, n_resamples: int,
                  seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap CI of sum(numerator) / sum(denominator) (the mean when ``denominator``
    is None) over resampled rows; ``numerator``, ``denominator``: (N,). Seeded, so reproducible."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r}: must be >= 1.")
    rng = np.random.default_rng(seed)
    n = len(numerator)
    stats = np.empty(n_resamples)
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        b = min(_BOOTSTRAP_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        num = numerator[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with no weight left has no ratio
            stats[start:start + b] = num / (denominator[idx].sum(axis=1) if denominator is not None else n)
    alpha = (1.0 - _CI_LEVEL) / 2.0
    low, high = np.quantile(stats[np.isfinite(stats)], [alpha, 1.0 - alpha])
    return float(low), float(high)
