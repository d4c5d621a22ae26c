"""The throughput benchmark runs end to end and prints its tables with positive figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_env.py"


def _rows(lines: list[str], header_start: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and the data rows of the first Markdown table whose header starts with ``header_start``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("*") for c in line.strip("|").split("|")])
    return header, rows


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%x"))


@pytest.mark.slow
def test_quick_benchmark_prints_the_throughput_table_with_positive_figures():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()

    header, rows = _rows(lines, "| engine |")
    engines = [r[0] for r in rows]
    assert "per-user Python loop" in engines
    assert sum(e.startswith("vector env") for e in engines) >= 4  # 1k and 10k users, social on and off
    for column in ("user-steps/s (median window)", "ns/user-step", "peak RSS GB", "world build s"):
        j = header.index(column)
        for r in rows:
            assert _number(r[j]) > 0, f"{column} of {r[:4]} is not positive: {r[j]!r}"
    users = {int(_number(r[header.index("users")])) for r in rows}
    assert users == {1_000, 10_000}

    assert any(line.startswith("- vector / loop at 1,000 users") for line in lines)
    stage_header, stages = _rows(lines, "| stage |")
    assert any(name.startswith("kernel choice.") for name, *_ in stages)  # the profile found the kernels
    total = next(r for r in stages if r[0] == "step (total)")
    for j, column in enumerate(stage_header):
        if column.endswith("ms/step"):
            assert _number(total[j]) > 0, f"{column} of the total step is not positive: {total[j]!r}"


def test_llm_user_benchmark_times_batched_scoring_against_the_per_user_loop():
    pytest.importorskip("transformers")
    script = SCRIPT.with_name("bench_llm_users.py")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--users", "16", "--loop-users", "2", "--rounds",
                           "2", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header, rows = _rows(lines, "| path |")
    assert [r[0].split()[0] for r in rows] == ["(a)", "(a')", "(b)"]  # respond, choice only, per-user loop
    j = header.index("decisions/s (median)")
    assert all(_number(r[j]) > 0 for r in rows)
    result = json.loads(lines[-1])
    assert result["users"] == 16 and result["loop_users"] == 2 and result["rounds"] == 2
    assert result["ratio"]["respond"]["median"] > 0 and 0 <= result["unparseable"] <= result["loop_decisions"] == 4
    assert any(line.startswith("- (a) / (b): **") for line in lines)
