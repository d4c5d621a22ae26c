"""experiments/align.py end to end on a tiny synthetic world: SFT and two aligned models over two
seeds give a table with intervals, an audit report with their popularity and hallucination figures
side by side, a finished run is never overwritten by accident, and a resumed run retrains nothing."""
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import align  # noqa: E402

TINY = {
    "data": "synthetic", "synthetic_users": 30, "synthetic_items": 60, "synthetic_steps": 15, "seeds": [0, 1],
    "per_user": 2, "threads": 1,
    "model": {"vocab_size": 400, "hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2,
              "num_kv_heads": 1},
    "sft": {"epochs": 1, "lr": 3e-3, "batch_size": 16}, "preference": {"epochs": 1, "lr": 5e-4, "batch_size": 16},
    "methods": [{"name": "DPO", "loss": "dpo", "negatives": {"random": 1}},
                {"name": "S-DPO popular", "loss": "sdpo", "negatives": {"popular": 2}, "smoothing": "oracle"}],
    "simulator": {"users": 12, "steps": 2, "slate_size": 3, "mode": "generate", "max_new_tokens": 6},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = root / "out"
    return config, out, align.main(["--config", str(config), "--out", str(out)])


def test_the_table_has_sft_and_every_method_with_intervals_over_seeds(finished):
    _, out, results = finished
    assert set(results) == {"SFT", "DPO", "S-DPO popular"}
    assert all(set(by_seed) == {0, 1} for by_seed in results.values())
    table = (out / "table.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| SFT", "| DPO", "| S-DPO popular"]
    assert "±" in table[3] and table[2].endswith("| - |")  # SFT has no difference from itself
    for by_seed in results.values():
        for r in by_seed.values():
            s = r["offline"]["summary"]
            assert 0 <= s["HR@1"] <= s["HR@5"] <= 1 and 0 <= s["ValidRatio"] <= 1
            assert s["hallucination_rate"] + s["ValidRatio"] + s["out_of_candidate_rate"] == pytest.approx(1.0)
            assert 0 <= r["sim"]["sim_hallucination_rate"] <= 1 and 0 <= r["sim"]["sim_ctr"] <= 1


def test_the_audit_report_puts_popularity_and_hallucination_of_every_model_next_to_sfts(finished):
    _, out, _ = finished
    report = (out / "audit" / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric |"))
    assert all(name in header for name in ("SFT", "DPO", "S-DPO popular"))
    assert "ARP (x the average item)" in report and "LLM recommender health" in report
    metrics = json.loads((out / "audit" / "metrics.json").read_text())["metrics"]
    for name in ("SFT", "DPO", "S-DPO popular"):
        assert len(metrics[name]["llm.hallucination_rate"]["seeds"]) == 2  # each seed with its own model
        assert "popularity.arp_relative" in metrics[name]


def test_a_finished_output_folder_is_refused_without_resume_or_overwrite(finished):
    config, out, _ = finished
    with pytest.raises(SystemExit, match="--resume"):
        align.main(["--config", str(config), "--out", str(out)])


def test_resuming_a_finished_run_retrains_nothing_and_gives_the_same_results(finished):
    config, out, results = finished
    weights = sorted(out.glob("seed_*/*/model/model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    assert len(weights) == 6
    again = align.main(["--config", str(config), "--out", str(out), "--resume"])
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(results))
    assert [p.stat().st_mtime_ns for p in weights] == stamps


def test_a_config_naming_an_unknown_loss_is_an_error_naming_the_key_and_the_valid_losses(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**TINY, "methods": [{"name": "X", "loss": "ppo"}]}))
    with pytest.raises(ValueError, match=r"methods\[0\]\.loss: 'ppo' is not one of \['dpo', 'cdpo'"):
        align.main(["--config", str(config), "--out", str(tmp_path / "out")])


def test_lora_adapters_train_through_the_same_pipeline(tmp_path):
    config = tmp_path / "lora.yaml"
    config.write_text(yaml.safe_dump({**TINY, "seeds": [0], "model": {**TINY["model"], "lora": True, "lora_rank": 2},
                                      "methods": TINY["methods"][:1]}))
    results = align.main(["--config", str(config), "--out", str(tmp_path / "out")])
    assert set(results) == {"SFT", "DPO"}
    assert 0.0 <= results["DPO"][0]["offline"]["summary"]["HR@1"] <= 1.0
    from safetensors.numpy import load_file

    sft, dpo = (load_file(tmp_path / "out" / "seed_0" / m / "model" / "model.safetensors") for m in ("SFT", "DPO"))
    changed = {k for k in sft if not (sft[k] == dpo[k]).all()}
    assert changed and all("proj" in k for k in changed)  # merged adapters moved linear layers only
    assert not any("embed" in k or "norm" in k for k in changed)
