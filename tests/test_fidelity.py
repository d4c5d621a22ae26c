"""The fidelity experiment: ranking metrics worked by hand, and the quick run end to end."""
import subprocess
import sys
from pathlib import Path

import numpy as np

from simenv.audit.ranking import ranking_metrics

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "fidelity.py"


def test_hit_rates_and_ndcg_follow_the_rank_of_the_true_item():
    scores = np.array([[0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # truth (column 0) ranked 1st
                       [0.5, 0.9, 0.8, 0.2, 0.3, 0.4, 0.0],   # 3rd
                       [0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])  # 7th: out of the top 5
    m = ranking_metrics(scores, np.zeros(3, np.int64))
    np.testing.assert_array_equal(m["HR@1"], [1, 0, 0])
    np.testing.assert_array_equal(m["HR@5"], [1, 1, 0])
    np.testing.assert_allclose(m["NDCG@5"], [1.0, 0.5, 0.0])  # 1 / log2(3 + 1) = 0.5


def test_ties_are_broken_at_random_not_in_the_true_items_favour():
    hr1 = ranking_metrics(np.zeros((4000, 20)), np.zeros(4000, np.int64))["HR@1"].mean()
    assert abs(hr1 - 0.05) < 0.015


def test_the_quick_run_prints_every_user_model_with_metrics_in_range(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| user model")}
    assert set(rows) == {"random", "popularity", "embedded (default)", "embedded (calibrated)", "SASRec",
                         "LLM user (trained here)"}
    for line in rows.values():
        values = [float(cell.split()[0]) for cell in line.strip("|").split("|")[1:]]
        assert all(0 <= v <= 1 for v in values)
    hr5 = {name: float(line.strip("|").split("|")[2].split()[0]) for name, line in rows.items()}
    assert hr5["popularity"] > hr5["random"]  # a log written by users who favour quality is not random
