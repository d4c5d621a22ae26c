"""Typed YAML configs: nested dataclasses are filled strictly, and every mistake names its key."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from simenv.configfile import load_config


@dataclass
class Stage:
    epochs: float = 1.0
    lr: float = 1e-3


@dataclass
class Method:
    name: str
    loss: Literal["dpo", "sdpo"] = "dpo"
    negatives: dict[str, int] = field(default_factory=dict)


@dataclass
class Experiment:
    seeds: list[int] = field(default_factory=lambda: [0])
    path: str | None = None
    sft: Stage = field(default_factory=Stage)
    methods: list[Method] = field(default_factory=list)


def test_nested_mappings_and_lists_become_dataclasses_and_ints_are_accepted_as_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seeds: [1, 2]\nsft: {epochs: 3}\nmethods:\n  - {name: a, loss: sdpo, negatives: {random: 3}}\n")
    cfg = load_config(Experiment, path)
    assert cfg.seeds == [1, 2] and cfg.path is None
    assert cfg.sft == Stage(epochs=3.0) and isinstance(cfg.sft.epochs, float)
    assert cfg.methods == [Method("a", "sdpo", {"random": 3})]


def test_no_source_gives_the_defaults():
    assert load_config(Experiment, None) == Experiment()


@pytest.mark.parametrize("data, message", [
    ({"sft": {"lr": 1e-3, "epoch": 2}}, "sft.epoch: unknown key"),
    ({"sft": {"lr": "fast"}}, "sft.lr: expected float, got 'fast'"),
    ({"seeds": 3}, "seeds: expected a list"),
    ({"seeds": [0, True]}, "seeds[1]: expected int"),
    ({"methods": [{"name": "a", "loss": "ppo"}]}, "methods[0].loss: 'ppo' is not one of ['dpo', 'sdpo']"),
    ({"methods": [{"loss": "dpo"}]}, "methods[0]"),
    ({"methods": [{"name": "a", "negatives": {"random": "x"}}]}, "methods[0].negatives.random: expected int"),
    ({"sft": [1]}, "sft: expected a mapping of Stage fields"),
])
def test_every_mistake_is_an_error_naming_the_full_path_of_its_key(data, message):
    with pytest.raises(ValueError) as err:
        load_config(Experiment, data)
    assert message in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(Experiment, tmp_path / "nope.yaml")
