"""Preference data for aligning an LLM recommender: decisions, rejected samplers, smoothing, datasets."""
import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.llm.preference_data import (SAMPLERS, Negatives, RecExamples, examples_from_logs, examples_from_steps,
                                          hallucinated_titles, mix_negatives, oracle_epsilon, popular_negatives,
                                          preference_dataset, random_negatives, self_hard_negatives, sft_dataset,
                                          shown_negatives, similar_negatives, validate_preferences)
from policies.llm.prompts import SEPARATOR, display_title, response
from simenv.audit.hallucination import TitleIndex
from simenv.datasets import Interactions, synthetic_world
from simenv.datasets.replay import decision_points, leave_last_out

NUM_USERS, NUM_ITEMS = 20, 200


def _log(num_users: int, num_items: int, events: int, seed: int) -> Interactions:
    """A random log with timestamps in no particular order of the rows."""
    rng = np.random.default_rng(seed)
    return Interactions(rng.integers(0, num_users, events).astype(np.int32),
                        rng.integers(0, num_items, events).astype(np.int32),
                        rng.integers(1, 6, events).astype(np.float32),
                        rng.permutation(events).astype(np.int64) * 60)


def _examples(candidates, target, history=None, shown=None, user=None) -> RecExamples:
    candidates = np.asarray(candidates, np.int64)
    n = len(candidates)
    history = np.full((n, 2), -1, np.int64) if history is None else np.asarray(history, np.int64)
    user = np.arange(n, dtype=np.int64) if user is None else np.asarray(user, np.int64)
    return RecExamples(user, history, candidates, np.asarray(target, np.int64), shown)


def _random_examples(n: int, c: int, seed: int, num_items: int = 50) -> RecExamples:
    rng = np.random.default_rng(seed)
    candidates = np.argsort(rng.random((n, num_items)), axis=1)[:, :c]
    return _examples(candidates, rng.integers(0, c, n), shown=np.ones((n, c), bool))


@pytest.fixture(scope="module")
def catalog():
    return synthetic_world(NUM_USERS, NUM_ITEMS, seed=0, embedding_model="random").catalog


@pytest.fixture(scope="module")
def log():
    return _log(NUM_USERS, NUM_ITEMS, 800, seed=1)


@pytest.fixture(scope="module")
def examples(log):
    points = decision_points(log, NUM_USERS, per_user=3, min_history=3, seed=0)
    return examples_from_logs(log, NUM_USERS, NUM_ITEMS, points, num_candidates=20, history=10, seed=0)


# ------------------------------------------------------------------------------------------- RecExamples

@pytest.mark.parametrize("change, message", [
    (dict(target=[0, 3]), "target: row 1 is out of range"),
    (dict(candidates=[[1, 2, 3], [4, 5, 4]]), "row 1 holds a duplicate candidate"),
    (dict(history=[[-1, 7], [7, -1]]), "history: row 1 has an empty slot (-1) after an item"),
    (dict(shown=np.array([[True, False, False], [False, True, False]])), "row 1's target was not shown"),
])
def test_rec_examples_name_the_row_that_breaks_a_rule(change, message):
    fields = dict(candidates=[[1, 2, 3], [4, 5, 6]], target=[0, 0], history=None, shown=None) | change
    with pytest.raises(ValueError) as error:
        _examples(**fields)
    assert message in str(error.value)


def test_rec_examples_ask_for_int64_arrays():
    with pytest.raises(ValueError, match="candidates: dtype int32, expected int64"):
        RecExamples(np.zeros(1, np.int64), np.full((1, 2), -1, np.int64), np.array([[1, 2]], np.int32),
                    np.zeros(1, np.int64))


def test_subset_keeps_the_chosen_rows_and_their_target_items():
    ex = _examples([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [2, 0, 1], shown=np.ones((3, 3), bool))
    part = ex.subset([2, 0])
    assert len(part) == 2
    np.testing.assert_array_equal(part.target_items, [8, 3])
    np.testing.assert_array_equal(part.user, [2, 0])
    assert part.shown.shape == (2, 3)


# ---------------------------------------------------------------------------------------------- builders

def test_examples_from_logs_histories_are_the_items_before_the_decision_point_in_time_order(log, examples):
    points = decision_points(log, NUM_USERS, per_user=3, min_history=3, seed=0)
    for b, (u, pos, item) in enumerate(zip(points.user, points.position, points.item)):
        mine = np.flatnonzero(log.user == u)
        in_time = log.item[mine[np.argsort(log.timestamp[mine])]]
        before = in_time[:pos][-10:]
        expected = np.concatenate([np.full(10 - len(before), -1), before])
        np.testing.assert_array_equal(examples.history[b], expected)
        assert examples.target_items[b] == item == in_time[pos]
    assert examples.history.min() == -1, "some point has fewer than 10 past events, so it is left-padded"


def test_examples_from_logs_candidates_are_the_true_item_and_never_interacted_items_in_random_columns(log, examples):
    assert examples.candidates.shape == (len(examples), 20) and examples.shown is None
    for b in range(len(examples)):
        others = np.delete(examples.candidates[b], examples.target[b])
        assert not np.isin(others, log.item[log.user == examples.user[b]]).any()
    assert len(np.unique(examples.target)) > 5, "the target's column must vary across rows"


def test_examples_from_logs_reads_leave_last_out_test_points_from_the_training_log(log):
    train, test = leave_last_out(log, NUM_USERS, min_history=5)
    ex = examples_from_logs(train, NUM_USERS, NUM_ITEMS, test, num_candidates=5, history=3, seed=0)
    for b, u in enumerate(test.user):
        mine = np.flatnonzero(log.user == u)
        in_time = log.item[mine[np.argsort(log.timestamp[mine])]]
        np.testing.assert_array_equal(ex.history[b], in_time[-4:-1])
        assert ex.target_items[b] == in_time[-1]


def test_examples_from_steps_drops_no_click_rows_and_maps_slate_positions():
    history = np.array([[5, 3, -1], [9, -1, -1], [1, 2, 4]])  # env order: most recent first, -1 at the end
    candidates = np.array([[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]])
    slates = np.array([[3, 1], [0, 2], [2, 0]])
    choice = np.array([1, -1, 0])
    ex = examples_from_steps(history, candidates, slates, choice, users=np.array([7, 8, 9]))
    np.testing.assert_array_equal(ex.user, [7, 9])
    np.testing.assert_array_equal(ex.history, [[-1, 3, 5], [4, 2, 1]])
    np.testing.assert_array_equal(ex.target_items, [11, 32])
    np.testing.assert_array_equal(ex.shown, [[False, True, False, True], [True, False, True, False]])


def test_examples_from_steps_rejects_a_history_not_in_the_env_order():
    with pytest.raises(ValueError, match="history row 0 has an item after an empty slot"):
        examples_from_steps(np.array([[-1, 3]]), np.array([[1, 2]]), np.array([[0]]), np.array([0]), np.array([0]))


# ---------------------------------------------------------------------------------------------- samplers

def _draw(name: str, ex: RecExamples, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    num_items = int(ex.candidates.max()) + 1
    if name == "random":
        return random_negatives(ex, k, rng)
    if name == "popular":
        return popular_negatives(ex, k, rng.random(num_items), rng)
    if name == "similar":
        return similar_negatives(ex, k, rng.normal(size=(num_items, 4)))
    if name == "self_hard":
        return self_hard_negatives(ex, k, rng.normal(size=ex.candidates.shape))
    return shown_negatives(ex, k, rng)


COLUMN_SAMPLERS = ("random", "popular", "similar", "self_hard", "shown")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), c=st.integers(2, 25), data=st.data(), seed=st.integers(0, 2**16))
def test_column_negatives_are_distinct_non_target_columns(n, c, data, seed):
    k = data.draw(st.integers(0, c - 1))
    name = data.draw(st.sampled_from(COLUMN_SAMPLERS))
    ex = _random_examples(n, c, seed)
    cols = _draw(name, ex, k, seed)
    assert cols.shape == (n, k) and cols.dtype == np.int64
    assert ((cols >= 0) & (cols < c)).all()
    assert not (cols == ex.target[:, None]).any()
    assert all(len(set(row)) == k for row in cols.tolist())


@pytest.mark.parametrize("name", COLUMN_SAMPLERS)
def test_more_negatives_than_candidates_raises(name):
    with pytest.raises(ValueError, match="more negatives than candidates"):
        _draw(name, _random_examples(3, 5, seed=0), k=5, seed=0)


def test_popular_negatives_are_drawn_in_proportion_to_popularity():
    n, c = 20_000, 5
    ex = _examples(np.tile(np.arange(c), (n, 1)), np.zeros(n))
    popularity = np.array([9.0, 1.0, 2.0, 3.0, 4.0])
    cols = popular_negatives(ex, 1, popularity, np.random.default_rng(0))[:, 0]
    freq = np.bincount(cols, minlength=c) / n
    # exact probabilities among the non-targets 1..4 are 0.1 .. 0.4 (sd of each frequency < 0.004)
    np.testing.assert_allclose(freq, [0.0, 0.1, 0.2, 0.3, 0.4], atol=0.02)


def test_popular_negatives_favour_popular_items_over_a_uniform_draw():
    n, c, k = 2_000, 20, 3
    ex = _random_examples(n, c, seed=1, num_items=100)
    popularity = np.linspace(0.01, 1.0, 100) ** 3
    mean_pop = lambda cols: popularity[np.take_along_axis(ex.candidates, cols, axis=1)].mean()
    popular = mean_pop(popular_negatives(ex, k, popularity, np.random.default_rng(0)))
    uniform = mean_pop(random_negatives(ex, k, np.random.default_rng(0)))
    flat = mean_pop(popular_negatives(ex, k, popularity, np.random.default_rng(0), power=0.0))
    assert popular > 1.5 * uniform  # about 2x; a uniform draw's mean has a relative sd near 2%
    assert abs(flat - uniform) < 0.1 * uniform


def test_similar_negatives_are_the_nearest_candidates_by_cosine():
    degrees = np.array([0, 10, 50, 5, 100, 30, 170])
    lengths = np.array([1.0, 9.0, 1.0, 0.2, 5.0, 3.0, 100.0])  # lengths must not matter, only angles
    embeddings = lengths[:, None] * np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], axis=1)
    ex = _examples([[6, 1, 2, 3, 0, 4, 5], [0, 1, 2, 3, 4, 5, 6]], target=[4, 2])
    cols = similar_negatives(ex, 3, embeddings)
    np.testing.assert_array_equal(ex.candidates[0, cols[0]], [3, 1, 5])  # 5°, 10°, 30° from item 0 at 0°
    np.testing.assert_array_equal(ex.candidates[1, cols[1]], [5, 1, 3])  # 20°, 40°, 45° from item 2 at 50°


def test_self_hard_negatives_are_the_top_scored_non_target_candidates():
    ex = _examples([[10, 11, 12, 13, 14]], target=[0])
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.5]])
    np.testing.assert_array_equal(self_hard_negatives(ex, 2, scores), [[2, 4]])


def test_shown_negatives_come_from_the_slate_and_need_enough_of_it():
    shown = np.array([[True, True, False, True, False], [False, True, True, False, False]])
    ex = _examples([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], target=[0, 2], shown=shown)
    cols = shown_negatives(ex, 1, np.random.default_rng(0))
    assert cols[0, 0] in (1, 3) and cols[1, 0] == 1
    with pytest.raises(ValueError, match="row 1 has fewer than k=2"):
        shown_negatives(ex, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shown is None"):
        shown_negatives(_examples([[1, 2]], [0]), 1, np.random.default_rng(0))


def test_hallucinated_titles_never_match_the_catalog_even_when_sequels_exist():
    titles = ["Alien (1979)", "Alien 2", "Alien II", "Alien 3", "Alien III", "Alien: Part II", "Alien Returns",
              "Aliens (1986)", "Usual Suspects, The (1995)", "The Usual Suspects 2", "Heat"]
    ex = _examples(np.tile(np.arange(len(titles)), (40, 1)), np.arange(40) % len(titles))
    invented = hallucinated_titles(ex, 4, titles, np.random.default_rng(0))
    index = TitleIndex(titles + [display_title(t) for t in titles])
    assert len(invented) == 40 and all(len(row) == 4 == len(set(row)) for row in invented)
    flat = [t for row in invented for t in row]
    assert all(t.strip() for t in flat)
    assert (index.lookup(flat) == -1).all()


def test_hallucinated_titles_are_built_from_the_candidates_words(catalog, examples):
    invented = hallucinated_titles(examples, 2, catalog.titles, np.random.default_rng(0))
    for row, cands in zip(invented, examples.candidates):
        words = {w for j in cands for w in display_title(catalog.titles[j]).split()}
        for title in row:
            assert set(title.replace(":", " ").split()) - words <= {"2", "II", "3", "III", "Part", "Returns"}


# ---------------------------------------------------------------------------------------------------- mix

PLAN = {"similar": 1, "popular": 2, "random": 2, "hallucinated": 1}


def _mix(catalog, examples, seed, plan=PLAN):
    return mix_negatives(examples, plan, titles=catalog.titles, popularity=catalog.popularity,
                         embeddings=catalog.embeddings, rng=np.random.default_rng(seed))


def test_mix_negatives_honours_the_plan_without_repeats(catalog, examples):
    neg = _mix(catalog, examples, seed=0)
    assert neg.items.shape == (len(examples), 6)
    assert all(row == ["similar", "popular", "popular", "random", "random", "hallucinated"] for row in neg.source)
    np.testing.assert_array_equal(neg.items[:, 5], -1)
    np.testing.assert_array_equal(neg.items[:, 0], examples.candidates[
        np.arange(len(examples)), similar_negatives(examples, 1, catalog.embeddings)[:, 0]])
    real = neg.items[:, :5]
    assert all(len(set(row)) == 5 for row in real.tolist())
    assert not (real == examples.target_items[:, None]).any()
    assert all(np.isin(r, c).all() for r, c in zip(real, examples.candidates))
    assert [t[:5] for t in neg.titles] == [[display_title(catalog.titles[j]) for j in r] for r in real]


def test_mix_negatives_rejects_plans_it_cannot_draw(catalog, examples):
    with pytest.raises(ValueError) as error:
        _mix(catalog, examples, 0, {"hard": 1})
    assert f"unknown sampler(s) ['hard']; valid ones are {list(SAMPLERS)}" in str(error.value)
    with pytest.raises(ValueError, match="'self_hard' sampler needs scores="):
        _mix(catalog, examples, 0, {"self_hard": 1})
    with pytest.raises(ValueError, match="'popular' sampler needs popularity="):
        mix_negatives(examples, {"popular": 1}, titles=catalog.titles, rng=0)
    with pytest.raises(ValueError, match="more negatives than candidates"):
        _mix(catalog, examples, 0, {"random": 10, "similar": 10, "hallucinated": 3})
    with pytest.raises(ValueError, match="draws no negatives"):
        _mix(catalog, examples, 0, {"random": 0})


def test_negatives_check_their_rows_match_items():
    with pytest.raises(ValueError, match="Negatives.titles: expected 1 lists of 2 entries"):
        Negatives(np.zeros((1, 2), np.int64), [["a"]], [["random", "random"]])


# ------------------------------------------------------------------------------------------------ smoothing

def test_oracle_epsilon_is_the_clipped_probability_of_preferring_the_rejected_item():
    chosen = np.array([0.0, 2.0])
    rejected = np.array([[0.0, -30.0, 5.0], [1.0, np.nan, 2.0]])
    items = np.array([[3, 4, 5], [6, -1, 7]])
    eps = oracle_epsilon(chosen, rejected, eps_max=0.4, rejected_items=items)
    expected = [[0.4, 1 / (1 + np.exp(30.0)), 0.4], [1 / (1 + np.e), 0.0, 0.4]]
    np.testing.assert_allclose(eps, expected, rtol=1e-12)


@pytest.mark.parametrize("eps_max", [-0.1, 0.5, 1.0])
def test_oracle_epsilon_cap_must_keep_the_chosen_answer_preferred(eps_max):
    with pytest.raises(ValueError, match="0 <= eps_max < 0.5"):
        oracle_epsilon(np.zeros(1), np.zeros((1, 1)), eps_max)


def test_oracle_epsilon_needs_a_value_for_every_real_item():
    with pytest.raises(ValueError, match="row 0 has a NaN or Inf value for a real item"):
        oracle_epsilon(np.zeros(1), np.array([[np.nan]]))


# ------------------------------------------------------------------------------------------------ datasets

def test_prompts_list_every_history_and_candidate_display_title_and_chosen_is_the_target():
    titles = [f"Film {i}, The ({1990 + i})" for i in range(8)]
    ex = _examples([[4, 5, 6, 7], [0, 1, 2, 3]], target=[2, 0], history=[[-1, 1, 3], [5, 6, 7]])
    neg = Negatives(np.array([[4], [3]], np.int64), [[display_title(titles[4])], [display_title(titles[3])]],
                    [["random"], ["random"]])
    ds = preference_dataset(ex, neg, titles)
    for b, record in enumerate(ds):
        watched = record["prompt"].split("has watched ")[1].split(" in the previous.")[0].split(SEPARATOR)
        listed = record["prompt"].split("movie titles: ")[1].split(".\nAnswer:")[0].split(SEPARATOR)
        assert watched == [display_title(titles[j]) for j in ex.history[b] if j >= 0]
        assert listed == [display_title(titles[j]) for j in ex.candidates[b]]
        assert record["chosen"] == response(display_title(titles[ex.target_items[b]]))
        assert record["rejected"] == [response(neg.titles[b][0])]
    assert ds[0]["chosen"] == " The Film 6 (1996)"
    assert ds["epsilon"][:] == [[0.0], [0.0]]


def test_preference_dataset_records_the_negatives_and_smoothing(catalog, examples):
    neg = _mix(catalog, examples, seed=0)
    eps = np.full(neg.items.shape, 0.25)
    ds = preference_dataset(examples, neg, catalog.titles, eps)
    assert len(ds) == len(examples)
    record = ds[3]
    assert record["rejected_items"] == neg.items[3].tolist()
    assert record["rejected_source"] == neg.source[3]
    assert record["epsilon"] == [0.25] * 6
    assert record["candidates"] == examples.candidates[3].tolist() and record["target"] == examples.target[3]
    assert record["chosen_item"] == examples.target_items[3] and record["user"] == examples.user[3]


def test_the_same_seed_gives_the_same_dataset_and_another_seed_a_different_one(catalog, log):
    points = decision_points(log, NUM_USERS, per_user=2, min_history=3, seed=0)

    def build(seed):
        ex = examples_from_logs(log, NUM_USERS, NUM_ITEMS, points, seed=seed)
        return preference_dataset(ex, _mix(catalog, ex, seed), catalog.titles).to_dict()

    assert build(1) == build(1)
    assert build(1) != build(2)


def test_sft_dataset_is_in_prompt_completion_format(catalog, examples):
    ds = sft_dataset(examples, catalog.titles)
    assert ds.column_names == ["prompt", "completion", "user", "candidates", "target"]
    assert ds[0]["completion"] == response(display_title(catalog.titles[examples.target_items[0]]))
    assert ds[0]["prompt"] == preference_dataset(examples, _mix(catalog, examples, 0), catalog.titles)[0]["prompt"]


def _break(record: dict, field: str):
    """Record 1 of a valid dataset, made invalid in one field."""
    if field == "prompt":
        record["prompt"] = "  "
    elif field == "chosen":
        record["chosen"] = None
    elif field == "rejected-equal":
        record["rejected"][1] = record["chosen"]
    elif field == "rejected-count":
        for name in ("rejected", "rejected_items", "rejected_source", "epsilon"):
            record[name] = record[name][:-1]
    elif field == "epsilon-length":
        record["epsilon"] = record["epsilon"][:-1]
    elif field == "epsilon-range":
        record["epsilon"][0] = 0.5
    elif field == "rejected_items":
        record["rejected_items"][0] = record["chosen_item"]


@pytest.mark.parametrize("field, message", [
    ("missing", "missing column(s) ['epsilon']"),
    ("prompt", "record 1, field 'prompt'"),
    ("chosen", "record 1, field 'chosen'"),
    ("rejected-equal", "record 1, field 'rejected': response 1 equals the chosen response"),
    ("rejected-count", "record 1, field 'rejected': 5 responses, but record 0 has 6"),
    ("epsilon-length", "record 1, field 'epsilon': 5 entries for 6 rejected responses"),
    ("epsilon-range", "record 1, field 'epsilon'"),
    ("rejected_items", "record 1, field 'rejected_items': contains the chosen item"),
])
def test_validate_preferences_names_the_record_and_field_at_fault(catalog, examples, field, message):
    few = examples.subset(np.arange(3))
    records = preference_dataset(few, _mix(catalog, few, 0), catalog.titles).to_list()
    if field == "missing":
        for record in records:
            del record["epsilon"]
    else:
        _break(records[1], field)
    with pytest.raises(ValueError) as error:
        validate_preferences(datasets.Dataset.from_list(records))
    assert message in str(error.value)
