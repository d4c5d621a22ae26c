"""A real Ray cluster, loopback only: `ray start --head` inside a network namespace that has only
`lo` up, token authentication with a per-run token file, and `recsim-llm run` submitted to it with
`ray job submit`. The cluster's node address is 127.0.0.1, a client with a wrong token is refused,
the submitted experiment succeeds and its summaries equal the in-process (`--backend local`) run's,
and the teardown leaves no process, namespace or `~/.ray/auth_token` behind.

Why a namespace: Ray resolves 127.0.0.1 to the outbound interface's address whenever one exists
(`ray start --node-ip-address=127.0.0.1` included); in a namespace without a route it falls back to
127.0.0.1 (docs shared/research/ray_gym.md, §3.2). Being a fresh namespace, every port is free in it.

Why not `ray stop --force` in the teardown: it kills every Ray process it finds by name, in every
network namespace of the machine (the PID namespace is shared), other users' clusters included. The
teardown ends exactly the processes of the namespace (`ip netns pids`), which are all ours.

About 30 s on two cores (a head start ≈8 s, the job ≈15 s); phase timings print with `pytest -s`.
"""
import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

TINY = (Path(__file__).parent / "fixtures" / "run_tiny.yaml").resolve()
BIN = os.path.dirname(sys.executable)  # the job entrypoint is looked up on the head's PATH
GCS_PORT, DASHBOARD_PORT = 6379, 8265  # free in a fresh namespace, whatever the host runs
DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
HOME_TOKEN = Path.home() / ".ray" / "auth_token"


def _skip(reason: str) -> None:
    print(f"test_ray_cluster skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


def _sh(*cmd: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)


def _file_state(path: Path):
    return (path.stat().st_mtime_ns, path.read_bytes()) if path.exists() else None


class LoopbackCluster:
    """A Ray head in the network namespace ``name``; ``run`` executes a command in that namespace with
    the cluster's environment (token file, no usage statistics, this interpreter's bin dir first on PATH)."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.tmp = name, tmp
        self.token = tmp / "token"
        self.token.write_text(uuid.uuid4().hex + "\n")
        self.token.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # RAY_AUTH_TOKEN would win
        self.env = {**env, "PATH": BIN + os.pathsep + env.get("PATH", ""), "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(self.token), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_USAGE_STATS_PROMPT_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                    "OPENBLAS_NUM_THREADS": "1"}
        self.timings: dict[str, float] = {}

    def run(self, *cmd: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        return _sh("ip", "netns", "exec", self.name, *cmd, timeout=timeout, env={**self.env, **env})

    def timed(self, phase: str, *cmd: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        try:
            return self.run(*cmd, timeout=timeout, **env)
        finally:
            self.timings[phase] = time.perf_counter() - start

    def pids(self) -> list[int]:
        return [int(p) for p in _sh("ip", "netns", "pids", self.name).stdout.split()]

    def stop(self) -> list[int]:
        """Ends the namespace's processes (SIGTERM, then SIGKILL after 10 s); returns any still alive."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.pids():
                return []
        return self.pids()


@pytest.fixture(scope="module")
def cluster():
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("ip") is None:
        _skip("needs Linux, root and iproute2 (`ip netns`) to run the cluster in a loopback-only network namespace")
    if importlib.util.find_spec("ray") is None or not os.path.exists(os.path.join(BIN, "ray")):
        _skip(f"ray is not installed for {sys.executable} (pip install 'recsim-llm[ray]')")
    if importlib.util.find_spec("aiohttp") is None:
        _skip("`ray job submit` needs ray[default] (the dashboard); pip install 'recsim-llm[ray]'")
    if not os.path.exists(os.path.join(BIN, "recsim-llm")):
        _skip(f"the recsim-llm command is not in {BIN} (pip install -e .)")
    home_token = _file_state(HOME_TOKEN)
    name = f"recsim-{uuid.uuid4().hex[:10]}"
    start = time.perf_counter()
    made = _sh("ip", "netns", "add", name)
    if made.returncode != 0:
        _skip(f"`ip netns add` failed, so no loopback-only namespace: {made.stderr.strip()}")
    tmp = Path(tempfile.mkdtemp(prefix="rtc", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    c = LoopbackCluster(name, tmp)
    try:
        lo = c.run("ip", "link", "set", "lo", "up")
        assert lo.returncode == 0, lo.stderr
        c.timings["namespace"] = time.perf_counter() - start
        head = c.timed("ray start --head", "ray", "start", "--head", f"--port={GCS_PORT}", "--num-cpus=2",
                       "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}", "--include-dashboard=true",
                       "--disable-usage-stats", f"--temp-dir={tmp / 'ray'}", timeout=90)
        assert head.returncode == 0, f"ray start failed:\n{head.stdout[-3000:]}\n{head.stderr[-3000:]}"
        yield c
    finally:
        start = time.perf_counter()
        alive = c.stop()
        _sh("ip", "netns", "delete", name)
        shutil.rmtree(tmp, ignore_errors=True)
        c.timings["teardown"] = time.perf_counter() - start
        print("\nphase timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in c.timings.items()))
        assert not alive, f"processes {alive} of namespace {name} survived SIGKILL"
        assert name not in _sh("ip", "netns", "list").stdout
        assert _file_state(HOME_TOKEN) == home_token, f"{HOME_TOKEN} was created or changed by the cluster test"


def test_the_cluster_inside_the_namespace_runs_on_the_loopback_address_only(cluster):
    probe = cluster.timed("loopback probe", sys.executable, "-c",
                          "import ray; ray.init(address='auto', log_to_driver=False); "
                          "print('NODES', *[n['NodeManagerAddress'] for n in ray.nodes()])",
                          RAY_ADDRESS=f"127.0.0.1:{GCS_PORT}")
    assert probe.returncode == 0, probe.stderr[-3000:]
    nodes = next(line for line in probe.stdout.splitlines() if line.startswith("NODES")).split()[1:]
    assert nodes == ["127.0.0.1"]


def test_a_client_with_a_wrong_token_is_refused(cluster):
    wrong = cluster.tmp / "wrong_token"
    wrong.write_text(uuid.uuid4().hex + "\n")
    refused = cluster.timed("wrong-token client", "ray", "job", "list", "--address", DASHBOARD,
                            RAY_AUTH_TOKEN_PATH=str(wrong))
    assert refused.returncode != 0
    assert "AuthenticationError" in refused.stdout + refused.stderr


def test_a_submitted_experiment_succeeds_and_equals_the_in_process_run(cluster, tmp_path):
    on_cluster, local = tmp_path / "cluster", tmp_path / "local"
    start = time.perf_counter()
    # the reference runs meanwhile, outside the namespace: it needs no Ray
    reference = subprocess.Popen([os.path.join(BIN, "recsim-llm"), "run", str(TINY), "--out", str(local),
                                  "--backend", "local", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=cluster.env)
    job_id = f"tiny-{uuid.uuid4().hex[:8]}"
    job = cluster.timed("ray job submit (recsim-llm run)", "ray", "job", "submit", "--address", DASHBOARD,
                        "--submission-id", job_id, "--", "recsim-llm", "run", str(TINY), "--out", str(on_cluster),
                        "--address", "auto", "--quiet", timeout=180)
    log = reference.communicate(timeout=120)[0]
    cluster.timings["local reference (overlapped)"] = time.perf_counter() - start
    assert reference.returncode == 0, log[-3000:]
    assert job.returncode == 0, f"job {job_id} failed:\n{job.stdout[-4000:]}\n{job.stderr[-2000:]}"
    assert f"Job '{job_id}' succeeded" in job.stdout + job.stderr

    assert (on_cluster / "config.yaml").exists() and (on_cluster / "audit" / "report.md").exists()
    rows = list(csv.DictReader(open(on_cluster / "metrics.csv")))
    assert {"policy", "seed", "step", "clicks", "ctr"} <= set(rows[0])
    assert len(rows) == 2 * 1 * 12 and {r["policy"] for r in rows} == {"popular", "oracle"}
    summary = json.loads((on_cluster / "summary.json").read_text())
    assert summary["oracle"]["0"]["user_steps"] == 200 * 12
    assert summary == json.loads((local / "summary.json").read_text())
