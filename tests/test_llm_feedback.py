"""Free-text feedback of LLM users: exact batched greedy generation, asked for only when configured."""
import http.server
import json
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch

import simenv  # noqa: F401
from agents.llm import LLMUser, PromptConfig, build_prompts
from agents.llm.http import HTTPScorer
from agents.llm.local import LocalLM
from agents.llm.model import LMConfig, new_lm
from agents.llm.user import FEEDBACK_CUE
from test_llm_users import WORLD, corpus


@pytest.fixture(scope="module")
def user_lm(tmp_path_factory):
    """A from-scratch user LM with weights spread wide enough that greedy text differs from prompt to
    prompt (at the default initialisation every prompt continues with the same token)."""
    from transformers import AutoModelForCausalLM

    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    folder = new_lm(corpus(env), tmp_path_factory.mktemp("feedback_lm"), LMConfig(vocab_size=700))
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return folder


def prompts(n: int = 9) -> list[str]:
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    users = np.arange(n)
    slates = np.stack([np.random.default_rng(u).choice(120, 4, replace=False) for u in users])
    p = build_prompts(env.unwrapped.world, users, slates, PromptConfig())
    return [p.full(b) + " B" + FEEDBACK_CUE for b in range(n)]


def test_generation_returns_one_stripped_new_text_per_prompt_as_transformers_greedy_generate_does(user_lm):
    lm = LocalLM(user_lm, batch_size=4)
    texts = prompts()
    out = lm.generate(texts, 8)
    assert len(out) == len(texts) and all(isinstance(t, str) and t and t == t.strip() for t in out)
    for text, got in zip(texts[:3], out):
        enc = lm.tokenizer(text, return_tensors="pt")
        ref = lm.model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=lm.pad_id)
        assert got == lm.tokenizer.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_batched_generation_equals_one_by_one_generation(user_lm):
    texts = prompts()  # prompts of different lengths, so a batch left-pads most of them
    batched = LocalLM(user_lm, batch_size=4).generate(texts, 12)
    single = LocalLM(user_lm, batch_size=1)
    assert batched == [single.generate([t], 12)[0] for t in texts]
    assert len(set(batched)) == len(texts)  # the texts differ, so equality is not a coincidence


def test_generation_stops_at_an_end_of_sequence_token(user_lm):
    lm = LocalLM(user_lm)
    text = prompts(1)[0]
    enc = lm.tokenizer(text, return_tensors="pt")
    tokens = lm.model.generate(**enc, max_new_tokens=12, do_sample=False,
                               pad_token_id=lm.pad_id)[0, enc["input_ids"].shape[1]:].tolist()
    stop = next(j for j in range(1, len(tokens)) if tokens[j] not in tokens[:j])  # first new token id
    lm.model.config.eos_token_id = [lm.tokenizer.eos_token_id, tokens[stop]]
    stopping = LocalLM(lm.model, lm.tokenizer)
    assert stopping.generate([text], 12) == [lm.tokenizer.decode(tokens[:stop]).strip()]
    assert stopping.forward_passes == stop + 1  # the tokens kept, then the end token, then no more


class Counting:
    """A backend that counts and records the generation requests it passes on."""

    def __init__(self, inner):
        self.inner = inner
        self.generated: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, texts, max_new_tokens):
        self.generated.append(list(texts))
        return self.inner.generate(texts, max_new_tokens)


def vector_env(user, num_envs=6, **kw):
    return gym.make_vec("RecSim-LLM-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        user_model=user, **{**WORLD, **kw})


def test_feedback_is_off_by_default(user_lm):
    scorer = Counting(LocalLM(user_lm))
    user = LLMUser({"model": str(user_lm)}, scorer=scorer)
    venv = vector_env(user)
    venv.reset(seed=0)
    for _ in range(3):
        venv.step(np.tile(np.arange(4), (6, 1)))
    assert user.stats["decisions"] == 18
    assert scorer.generated == [] and user.last_feedback == [] and len(user.last_feedback_users) == 0


def test_with_feedback_tokens_every_served_user_gets_one_text_per_step(user_lm):
    scorer = Counting(LocalLM(user_lm))
    user = LLMUser({"model": str(user_lm), "feedback_tokens": 4}, scorer=scorer)
    venv = vector_env(user, horizon=2)  # slots restart sessions on the third step: not every slot is served
    venv.reset(seed=0)
    served_counts = []
    for _ in range(3):
        _, _, _, _, info = venv.step(np.tile(np.arange(4), (6, 1)))
        served = info["user_id"][info["_choice"]]
        served_counts.append(len(served))
        np.testing.assert_array_equal(user.last_feedback_users, served)
        assert len(user.last_feedback) == len(served) and all(isinstance(t, str) and t for t in user.last_feedback)
    assert served_counts[0] == 6 and min(served_counts) < 6
    assert len(scorer.generated) == 3  # one batched request per step


def test_feedback_reads_the_decision_prompt_then_the_chosen_letter_or_none_then_the_cue(user_lm):
    env = gym.make("RecSim-LLM-v0", **WORLD)
    env.reset(seed=0)
    world = env.unwrapped.world
    scorer = Counting(LocalLM(user_lm))
    user = LLMUser({"model": str(user_lm)}, scorer=scorer)
    users, slates = np.array([3, 5, 8]), np.stack([np.arange(4), np.arange(4, 8), np.arange(8, 12)])
    out = user.feedback(world, users, slates, np.array([0, 2, -1]))
    p = build_prompts(world, users, slates, user.config.prompt)
    assert scorer.generated == [[p.full(0) + " A" + FEEDBACK_CUE, p.full(1) + " C" + FEEDBACK_CUE,
                                 p.full(2) + " E" + FEEDBACK_CUE]]  # E: "none of these" after 4 options
    assert out == scorer.inner.generate(scorer.generated[0], 32)


def test_feedback_options_are_checked(user_lm):
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="llm.feedback_tokens"):
            LLMUser({"model": str(user_lm), "feedback_tokens": bad}, scorer=LocalLM(user_lm))

    class ScoreOnly:
        def answer_tokens(self, cue, labels): ...
        def next_token_logprobs(self, prefixes, suffixes, ids, keys=None): ...

    with pytest.raises(ValueError, match="no generate"):
        LLMUser({"model": "any", "feedback_tokens": 8}, scorer=ScoreOnly())


class Completions(http.server.BaseHTTPRequestHandler):
    """Answers every completion with the same text (or a body without one) and records the requests."""

    requests: list[dict] = []
    body = {"choices": [{"text": "  Too much drama lately.\n"}]}

    def do_POST(self):
        Completions.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        raw = json.dumps(Completions.body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_http_feedback_asks_the_server_for_greedy_text_and_returns_it_stripped():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scorer = HTTPScorer(f"http://127.0.0.1:{server.server_address[1]}/v1", "served", concurrency=2)
        assert scorer.generate(["one", "two", "three"], 16) == ["Too much drama lately."] * 3
        assert sorted(r["prompt"] for r in Completions.requests) == ["one", "three", "two"]
        assert all(r["max_tokens"] == 16 and r["temperature"] == 0 and "logprobs" not in r
                   for r in Completions.requests)
        Completions.body = {"error": "no choices"}
        assert scorer.generate(["four"], 16) == [""]
    finally:
        server.shutdown()
