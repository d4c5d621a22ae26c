"""The Ray scale-out benchmark runs end to end on a tiny world and reports positive speeds, round trips
and exchange sizes for the single process and for 1 and 2 actors.

It runs in a child process: the benchmark starts its own Ray with a token of its own (``RAY_AUTH_MODE``
is read when Ray loads), which must not meet the session's ``ray_local``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_ray.py"


def test_ray_benchmark_reports_speed_efficiency_round_trip_and_exchange(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "bench_ray.json"
    code = (f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import bench_ray; "
            f"bench_ray.main(['--users', '400', '--items', '300', '--steps', '10', '--repeats', '1', "
            f"'--probes', '3', '--out', {str(out)!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| Ray actors | 2 |" in proc.stdout and "| 1 process (local shard) | 1 |" in proc.stdout
    result = json.loads(out.read_text())
    rows = {(r["backend"], r["workers"]): r for r in result["rows"]}
    assert set(rows) == {("local", 1), ("ray", 1), ("ray", 2)}
    assert all(r["speed"]["median"] > 0 for r in rows.values())
    assert rows[("ray", 1)]["efficiency"]["median"] == pytest.approx(1.0)
    assert 0 < rows[("ray", 2)]["efficiency"]["median"] < 2
    for n in (1, 2):
        r = rows[("ray", n)]
        assert r["call_ms"]["median"] > 0 and r["exchange_ms"]["median"] > 0
        assert r["exchange_bytes"]["median"] > 0
    # every actor reads the whole arrays: a second reader, a second copy of the same bytes
    assert rows[("ray", 2)]["exchange_bytes"]["median"] == pytest.approx(2 * rows[("ray", 1)]["exchange_bytes"]["median"])
    assert result["runs"]["local:1"][0]["timed_steps"] == 5  # the first refresh period is warm-up
