"""`recsim-llm run CONFIG.yaml`: a YAML file is checked key by key, the run directory holds the
resolved config, per-step metrics, summaries, checkpoints and the audit report, the Ray backend
gives what the in-process backend gives, and a stopped run resumes to the same results."""
import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from simenv.cli import main
from simenv.experiment import load_experiment, run_experiment
from simenv.rollout import ShardedRollout

TINY = Path(__file__).parent / "fixtures" / "run_tiny.yaml"


def tiny(**changes):
    data = yaml.safe_load(TINY.read_text())
    return load_experiment({**data, **changes})


@pytest.mark.parametrize("data, message", [
    ({"stepz": 3}, "stepz: unknown key"),
    ({"steps": "many"}, "steps: expected int, got 'many'"),
    ({"ray": {"num_workers": "2"}}, "ray.num_workers: expected int"),
    ({"ray": {"backend": "spark"}}, "ray.backend: 'spark' is not one of"),
    ({"env": {"num_userz": 10}}, "env: .*'num_userz'; did you mean 'num_users'"),
    ({"env": {"num_users": -1}}, "env: num_users=-1"),
    ({"policies": [{"policy": "nope"}]}, r"policies\[0\]: policy 'nope'"),
    ({"policies": [{"policy": "knn"}]}, "fitted offline"),
    ({"policies": [{"policy": "oracle"}, {"policy": "oracle"}]}, "names .* repeat"),
    ({"seeds": [1, 1]}, "seeds=\\[1, 1\\]"),
])
def test_a_config_error_names_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        load_experiment(data)


def test_the_run_directory_holds_config_metrics_summaries_checkpoints_and_the_audit(tmp_path):
    cfg = tiny(ray={"backend": "local", "num_workers": 2})
    summaries = run_experiment(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["env"]["num_users"] == 200 and "drift_rate" in resolved["env"]["dynamics"]  # defaults filled
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 * 1 * 12 and {r["policy"] for r in rows} == {"popular", "oracle"}
    direct = ShardedRollout(cfg.env, "oracle", num_workers=2, seed=0, backend="local").run(12).summary()
    assert summaries["oracle"][0] == direct
    assert json.loads((run / "summary.json").read_text())["oracle"]["0"] == direct
    assert sorted(p.name for p in (run / "checkpoints" / "oracle" / "seed_0").iterdir()) == ["step_000005",
                                                                                            "step_000010"]
    assert (run / "audit" / "report.md").exists() and (run / "audit" / "oracle" / "seed_0" / "audit.json").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        run_experiment(cfg, run, progress=False)


def test_ray_actors_give_what_the_in_process_shards_give(ray_local, tmp_path):
    on_ray = run_experiment(tiny(audit=False), tmp_path / "ray", progress=False)
    local = run_experiment(tiny(audit=False, ray={"backend": "local", "num_workers": 2}), tmp_path / "local",
                           progress=False)
    assert on_ray == local


def test_a_stopped_run_resumes_from_its_finished_rollouts_and_last_checkpoint(tmp_path):
    cfg = tiny(audit=False, ray={"backend": "local", "num_workers": 2})
    full = run_experiment(cfg, tmp_path / "full", progress=False)
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "full", stopped)  # as if stopped in oracle's run after its step-5 checkpoint
    (stopped / "rollouts" / "oracle" / "seed_0.npz").unlink()
    shutil.rmtree(stopped / "checkpoints" / "oracle" / "seed_0" / "step_000010")
    assert run_experiment(cfg, stopped, resume=True, progress=False) == full
    with pytest.raises(ValueError, match="key 'steps' changed"):
        run_experiment(tiny(audit=False, steps=13, ray={"backend": "local"}), stopped, resume=True, progress=False)


def test_the_command_line_runs_a_config_and_reports_bad_ones(tmp_path, capsys):
    assert main(["run", str(TINY), "--out", str(tmp_path / "cli"), "--backend", "local", "--num-workers", "1",
                 "--quiet"]) == 0
    assert "| oracle | 1 |" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())["ray"]["num_workers"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nplicies: []\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "plicies: unknown key" in capsys.readouterr().err
