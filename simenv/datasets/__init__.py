"""World sources: the built-in synthetic world and loaders for logged datasets."""
from simenv.datasets.base import Interactions, WorldData
from simenv.datasets.movielens import load_movielens
from simenv.datasets.synthetic import synthetic_world

__all__ = ["Interactions", "WorldData", "load_movielens", "synthetic_world"]
