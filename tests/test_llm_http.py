"""LLM users behind a real OpenAI-compatible server on 127.0.0.1: ``transformers serve`` on a tiny
locally built model, a server that answers garbage, and a server killed mid-run."""
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from agents.llm.http import LLMServerError
from agents.llm.model import LMConfig, new_lm
from test_llm_users import WORLD, corpus

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
SERVE = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {seconds} s")


def serve(model: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp / "hub"))
    (tmp / "hub").mkdir(exist_ok=True)
    proc = subprocess.Popen([SERVE, "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


@pytest.fixture(scope="module")
def user_lm(tmp_path_factory):
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    return new_lm(corpus(env), tmp_path_factory.mktemp("served_lm"), LMConfig(vocab_size=700))


def make_env(url: str, model: str, **llm):
    return gym.make_vec("RecSim-LLM-v0", num_envs=4, vectorization_mode="vector_entry_point", user_model="llm",
                        llm={"backend": "http", "base_url": url + "/v1", "model": model, **llm}, **WORLD)


def test_a_served_model_answers_and_every_unusable_answer_is_counted_and_replaced(user_lm, tmp_path):
    proc, url = serve(user_lm, tmp_path)
    try:
        venv = make_env(url, str(user_lm))
        venv.reset(seed=0)
        fallbacks = 0
        for _ in range(2):
            _, _, _, _, info = venv.step(np.tile(np.arange(4), (4, 1)))
            fallbacks += int(info["fallback"].sum())
        user = venv.unwrapped.sim.user_model
        counts = user.scorer.counts
        assert user.stats["decisions"] == 8
        assert counts["with_logprobs"] + counts["parsed"] + counts["unparseable"] == counts["requests"] >= 8
        assert fallbacks == user.stats["unusable"] + user.stats["ratings_unusable"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


class Garbage(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>certainly not JSON")

    def log_message(self, *args):
        pass


def test_a_server_that_answers_garbage_makes_every_user_fall_back_without_a_crash():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        venv = make_env(f"http://127.0.0.1:{server.server_address[1]}", "any")
        venv.reset(seed=0)
        _, _, _, _, info = venv.step(np.tile(np.arange(4), (4, 1)))
        assert info["fallback"].all()
        assert venv.unwrapped.sim.user_model.stats["unusable"] == 4
    finally:
        server.shutdown()


def test_a_server_killed_mid_run_is_retried_then_a_clear_error_names_the_url(user_lm, tmp_path):
    proc, url = serve(user_lm, tmp_path)
    venv = make_env(url, str(user_lm), retries=2, timeout=2.0)
    venv.reset(seed=0)
    venv.step(np.tile(np.arange(4), (4, 1)))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(LLMServerError, match=f"no answer from {url}/v1/completions after 3 tries"):
        venv.step(np.tile(np.arange(4), (4, 1)))
