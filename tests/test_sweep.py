"""`recsim-llm sweep`: Ray Tune runs one experiment per point of the search space, each into its own
run directory, lists the trials best first, marks a failing trial with its error, and a restored
sweep returns the same table without running its finished trials again."""
from pathlib import Path

import pytest
import yaml

from simenv.sweep import load_sweep, run_sweep, set_dotted

FIXTURES = Path(__file__).parent / "fixtures"


def sweep(**changes):
    data = yaml.safe_load((FIXTURES / "sweep_tiny.yaml").read_text())
    experiment = yaml.safe_load((FIXTURES / "run_tiny.yaml").read_text())
    return load_sweep({**data, "experiment": {**experiment, "audit": False}, **changes})


def test_dotted_keys_reach_nested_fields_and_policies_by_name():
    data = {"env": {"choice": {}}, "policies": [{"policy": "popular"}, {"policy": "oracle", "name": "o"}]}
    set_dotted(data, "env.choice.temperature", 0.2)
    set_dotted(data, "policies.popular.kwargs.online", False)
    assert data["env"]["choice"]["temperature"] == 0.2 and data["policies"][0]["kwargs"] == {"online": False}
    with pytest.raises(ValueError, match="policy names"):
        set_dotted(data, "policies.oracle.kwargs.x", 1)  # that one is named "o"


@pytest.mark.parametrize("changes, message", [
    ({"space": {}}, "space: name at least one key"),
    ({"space": {"steps": {"grid": [1], "choice": [2]}}}, "exactly one sampler"),
    ({"space": {"steps": {"uniform": [1]}}}, r"need \[low, high\]"),
    ({"policy": "linucb"}, "not one of the experiment's policies"),
    ({"mode": "best"}, "mode: 'best' is not one of"),
    ({"metirc": "ctr"}, "metirc: unknown key"),
])
def test_a_bad_sweep_is_refused_naming_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        sweep(**changes)


def test_a_sweep_writes_a_run_per_trial_ranks_them_and_restores_without_rerunning(ray_local, tmp_path):
    cfg = sweep(space={"env.choice.temperature": {"grid": [0.05, 0.5]}, "env.num_candidates": {"grid": [12, 2]}})
    rows = run_sweep(cfg, tmp_path / "sweep")
    ok = [r for r in rows if r["status"] == "OK"]
    assert len(rows) == 4 and len(ok) == 2
    assert [r["env.choice.temperature"] for r in ok] == [0.05, 0.5]  # best first: sharper choices click more
    assert ok[0]["oracle/ctr"] > ok[1]["oracle/ctr"]
    failed = [r for r in rows if r["status"] == "ERROR"]
    assert all("slate_size=4 > num_candidates=2" in r["error"] for r in failed)  # the config error, named
    for r in ok:
        run = Path(r["run_dir"])
        assert yaml.safe_load((run / "config.yaml").read_text())["env"]["choice"]["temperature"] == \
            r["env.choice.temperature"]
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| OK |" in table and "| ERROR |" in table
    stamps = {r["run_dir"]: (Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns for r in ok}
    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(cfg, tmp_path / "sweep")
    again = run_sweep(cfg, tmp_path / "sweep", resume=True)
    assert [r for r in again if r["status"] == "OK"] == ok
    assert {d: (Path(d) / "summary.json").stat().st_mtime_ns for d in stamps} == stamps
