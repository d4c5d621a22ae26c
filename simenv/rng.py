"""Counter-based randomness: a uniform number is a pure hash of (key, user, counter, stream).

Why not a stateful generator: a user's random draws then depend only on the world key, the
user's own id and how many interactions that user has had, never on which other users were
served in the same batch, how the population is sharded over workers, or in what order threads
run. That is what makes the vector env, the single env and any number of Ray actors produce the
same per-user trajectory, and it costs a few integer multiplies per draw (no generator state to
read or write, nothing to copy between threads).

The hash is three rounds of the splitmix64 finaliser (Steele et al., 2014), which passes BigCrush
as a counter-based generator.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Streams: the purpose of a draw lives in the top 16 bits, a slot index in the low bits.
CHOICE = np.uint64(1 << 48)
RATING = np.uint64(2 << 48)
CANDIDATE = np.uint64(3 << 48)
BUDGET = np.uint64(4 << 48)
CUSTOM = np.uint64(5 << 48)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_M3 = np.uint64(0xD1B54A32D192ED03)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(inline="always", cache=True)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(inline="always", cache=True)
def uniform(key, user, counter, stream):
    """One float64 in the open interval (0, 1), a pure function of its four uint64-able inputs."""
    h = _mix(key ^ (np.uint64(user) * _GOLDEN))
    h = _mix(h ^ (np.uint64(counter) * _M3))
    h = _mix(h ^ np.uint64(stream))
    return (np.float64(h >> np.uint64(11)) + 0.5) * _INV53


@njit(inline="always", cache=True)
def stream_start(key, user, counter, stream):
    """The state of a short splitmix64 sequence owned by (key, user, counter, stream).

    For many draws of one user-step (e.g. 20 candidates): one full hash, then one mix per draw.
    """
    h = _mix(key ^ (np.uint64(user) * _GOLDEN))
    h = _mix(h ^ (np.uint64(counter) * _M3))
    return _mix(h ^ np.uint64(stream))


@njit(inline="always", cache=True)
def stream_next(state):
    """(new state, float64 uniform in (0, 1)): the splitmix64 generator step."""
    state = state + _GOLDEN
    return state, (np.float64(_mix(state) >> np.uint64(11)) + 0.5) * _INV53


def world_key(seed_sequence: np.random.SeedSequence) -> np.uint64:
    """The 64-bit key of the dynamics streams, derived from the world's seed sequence."""
    return np.uint64(seed_sequence.generate_state(1, dtype=np.uint64)[0])


@njit(cache=True)
def _uniform_block(key, users, counters, stream, n):
    out = np.empty((users.shape[0], n), np.float64)
    for b in range(users.shape[0]):
        for j in range(n):
            out[b, j] = uniform(key, users[b], counters[b], stream + np.uint64(j))
    return out


def uniforms(key: np.uint64, users: np.ndarray, counters: np.ndarray, n: int, stream: int = 0) -> np.ndarray:
    """(B, n) float64 uniforms for custom user simulators: row b is a pure function of
    (key, users[b], counters[b], stream), so it is reproducible across batching and sharding."""
    return _uniform_block(np.uint64(key), np.asarray(users, np.int64), np.asarray(counters, np.int64),
                          CUSTOM + np.uint64(stream) * np.uint64(1 << 20), int(n))
