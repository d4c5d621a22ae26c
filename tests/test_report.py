"""Run directories, the report and the paired comparison, through the command line a user runs."""
import json
import shutil

import numpy as np
import pytest

from simenv.audit.compare import bootstrap_mean_ci, compare_runs
from simenv.audit.rundir import read_run, write_run
from simenv.cli import main

DEMO = ["--users", "150", "--items", "200", "--steps", "12", "--seeds", "2", "--policies", "random,popular"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", *DEMO, "--out", str(out)]) == 0
    return out


def test_the_demo_writes_one_finished_run_per_policy_and_a_steering_result(demo_dir):
    for policy in ("random", "popular"):
        run = read_run(demo_dir / policy)
        assert run.manifest["status"] == "complete" and [s.seed for s in run.seeds] == [0, 1]
    steering = json.loads((demo_dir / "steering.json").read_text())
    assert len(steering["sweep"]) >= 2 and "ioip" in steering["direct"]


def test_the_report_of_a_demo_run_renders_with_non_empty_plots(demo_dir):
    import matplotlib.image

    assert main(["report", str(demo_dir)]) == 0
    md = (demo_dir / "report.md").read_text()
    assert "## Key metrics" in md and "| exposure Gini |" in md and "## Steering through neighbors" in md
    html = (demo_dir / "report.html").read_text()
    names = ("lorenz", "popularity_over_time", "homogenization_over_time", "groups", "genres_over_time",
             "steering_tradeoff")
    assert html.count("data:image/png;base64,") == len(names)
    for name in names:
        png = demo_dir / "plots" / f"{name}.png"
        assert png.stat().st_size > 5_000, name
        pixels = matplotlib.image.imread(png)
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"
        assert f"plots/{name}.png" in md
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    arp = metrics["metrics"]["popular"]["popularity.arp"]
    assert arp["ci_low"] <= arp["mean"] <= arp["ci_high"] and len(arp["seeds"]) == 2
    assert metrics["metrics"]["popular"]["exposure.gini"]["mean"] > metrics["metrics"]["random"]["exposure.gini"]["mean"]


def test_a_single_run_directory_reports_on_its_own(demo_dir, tmp_path):
    single = tmp_path / "popular"
    shutil.copytree(demo_dir / "popular", single)
    assert main(["report", str(single)]) == 0
    assert "popular" in (single / "report.md").read_text()


def test_compare_gives_paired_differences_with_bootstrap_intervals(demo_dir, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert main(["compare", str(demo_dir / "random"), str(demo_dir / "popular"), "--json", str(out)]) == 0
    assert "| exposure Gini |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    gini = result["metrics"]["exposure.gini"]
    assert gini["diff"] == pytest.approx(gini["b"] - gini["a"]) and gini["diff"] > 0.2
    assert gini["ci_low"] <= gini["diff"] <= gini["ci_high"] and result["seeds"] == [0, 1]


def test_bootstrap_interval_of_a_mean():
    assert bootstrap_mean_ci(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)
    lo, hi = bootstrap_mean_ci(np.array([0.0, 1.0]), resamples=20_000)
    assert lo == 0.0 and hi == 1.0  # resamples of two values: means 0, .5, 1
    assert all(np.isnan(bootstrap_mean_ci(np.array([1.0]))))


def test_a_missing_or_unfinished_run_directory_is_an_error_naming_what_is_missing(demo_dir, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err

    unfinished = tmp_path / "exp"
    shutil.copytree(demo_dir / "random", unfinished / "random")
    (unfinished / "random" / "run.json").unlink()
    assert main(["report", str(unfinished)]) == 2
    assert "['random'] hold seed folders but no run.json" in capsys.readouterr().err

    run = tmp_path / "run"
    shutil.copytree(demo_dir / "random", run)
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "seeds": [0, 1, 7]}))
    assert main(["report", str(run)]) == 2
    assert "missing seed_7/audit.json" in capsys.readouterr().err

    (run / "run.json").write_text(json.dumps({**manifest, "status": "running"}))
    with pytest.raises(ValueError, match="did not complete"):
        read_run(run)

    (run / "run.json").write_text(json.dumps(manifest))
    text = (run / "seed_1" / "audit.json").read_text()
    (run / "seed_1" / "audit.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="half-written"):
        read_run(run)


def test_runs_of_different_environments_or_seeds_are_not_compared(tmp_path):
    env = dict(num_users=60, num_items=120, horizon=5)
    a = read_run(write_run(tmp_path / "a", "random", env, [0], 5))
    b = read_run(write_run(tmp_path / "b", "random", {**env, "slate_size": 3}, [0], 5))
    c = read_run(write_run(tmp_path / "c", "popular", env, [1], 5))
    with pytest.raises(ValueError, match="slate_size differ"):
        compare_runs(a, b)
    with pytest.raises(ValueError, match="share no seed"):
        compare_runs(a, c)
