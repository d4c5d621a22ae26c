import os

# numba kernels already use both cores; BLAS threads on top of them oversubscribe small solves 100x
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest

from simenv.config import WorldConfig
from simenv.world import build_world

SMALL = dict(num_users=60, num_items=120)


@pytest.fixture(scope="session")
def small_world():
    """A 60-user, 120-item synthetic world with real MiniLM embeddings (cached on disk)."""
    return build_world(WorldConfig(**SMALL))


@pytest.fixture
def world(small_world):
    return small_world.copy()


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray runtime for the session (2 CPUs, no dashboard, no usage statistics)."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2,
                 runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "OPENBLAS_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
