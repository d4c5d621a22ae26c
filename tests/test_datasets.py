"""Specifications of the world sources: the synthetic world and the MovieLens-100K loader."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from simenv.datasets import Interactions, WorldData, load_movielens, synthetic_world
from simenv.datasets.base import genre_centroids
from simenv.datasets.synthetic import GENDERS, GENRES

FIXTURE = Path(__file__).parent / "fixtures" / "ml-tiny"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedding-cache")


def _random_world(cache_dir, **kw) -> WorldData:
    args = dict(num_users=500, num_items=300, num_interests=3, dim=16, seed=0,
                embedding_model="random", cache_dir=cache_dir)
    return synthetic_world(**{**args, **kw})


def _assert_same_world(a: WorldData, b: WorldData) -> None:
    for name in ("titles", "genres", "popularity", "quality", "duration", "embeddings"):
        np.testing.assert_array_equal(getattr(a.catalog, name), getattr(b.catalog, name))
    for name in ("age", "gender", "occupation"):
        np.testing.assert_array_equal(getattr(a.persona, name), getattr(b.persona, name))
    np.testing.assert_array_equal(a.interests, b.interests)
    np.testing.assert_array_equal(a.weights, b.weights)


def _favourite_genre(world: WorldData) -> np.ndarray:
    """(U,) genre whose centroid is nearest each user's top-weighted interest."""
    top = world.interests[np.arange(world.num_users), world.weights.argmax(axis=1)]  # (U, d)
    return (top @ genre_centroids(world.catalog).T).argmax(axis=1)


# ---------------------------------------------------------------- synthetic world

@pytest.fixture(scope="session")
def minilm_world(cache_dir) -> WorldData:
    return synthetic_world(num_users=2000, num_items=150, num_interests=4, dim=64, seed=1,
                           embedding_model="minilm", cache_dir=cache_dir)


def test_synthetic_world_has_the_documented_shapes_and_dtypes(minilm_world):
    w, c = minilm_world, minilm_world.catalog
    assert (w.num_users, w.num_interests, c.num_items, c.dim) == (2000, 4, 150, 64)
    assert w.interests.shape == (2000, 4, 64) and w.interests.dtype == np.float32
    assert w.weights.shape == (2000, 4) and w.weights.dtype == np.float32
    assert c.embeddings.dtype == c.popularity.dtype == c.quality.dtype == c.duration.dtype == np.float32
    assert c.genre_names == GENRES and len(GENRES) == 18
    assert w.persona.gender_names == GENDERS
    assert w.interactions is None
    np.testing.assert_array_equal(c.item_ids, np.arange(150))


def test_synthetic_interests_are_unit_rows_and_weights_a_descending_distribution(minilm_world):
    np.testing.assert_allclose(np.linalg.norm(minilm_world.interests, axis=-1), 1.0, atol=1e-5)
    w = minilm_world.weights
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert (np.diff(w, axis=1) <= 0).all(), "the favourite genre's interest comes first, with the largest weight"


def test_synthetic_items_have_one_to_three_genres_and_valid_attributes(minilm_world):
    c = minilm_world.catalog
    assert set(c.genres.sum(axis=1)) <= {1, 2, 3}
    assert np.isclose(c.popularity.sum(), 1.0, atol=1e-5) and (c.popularity > 0).all()
    assert ((c.quality >= 0) & (c.quality <= 1)).all()
    assert ((c.duration >= 80) & (c.duration <= 180)).all()


def test_minilm_catalog_places_items_of_a_genre_closer_together_than_items_of_other_genres(minilm_world):
    c = minilm_world.catalog
    sim = c.embeddings @ c.embeddings.T  # (I, I)
    share_a_genre = (c.genres.astype(int) @ c.genres.T.astype(int)) > 0
    off_diagonal = ~np.eye(c.num_items, dtype=bool)
    assert sim[share_a_genre & off_diagonal].mean() > sim[~share_a_genre].mean() + 0.05


def test_users_interests_sit_near_a_genre_they_like(minilm_world):
    c = minilm_world.catalog
    top = minilm_world.interests[:, 0]  # (U, d) favourite interest
    fav = _favourite_genre(minilm_world)
    assert c.genres[:, fav].any(axis=0).all(), "favourite genres are genres the catalog has"
    centroid_cos = (top * genre_centroids(c)[fav]).sum(axis=1)
    assert centroid_cos.mean() > 0.85


def test_titles_are_unique_and_readable_even_for_a_hundred_thousand_items(tmp_path):
    titles = synthetic_world(num_users=1, num_items=100_000, dim=4, embedding_model="random",
                             cache_dir=tmp_path).catalog.titles
    assert len(set(titles)) == 100_000
    assert all(isinstance(t, str) and t[:1].isupper() for t in titles[:1000])


def test_a_seed_reproduces_the_world(cache_dir):
    _assert_same_world(_random_world(cache_dir, seed=7), _random_world(cache_dir, seed=7))


def test_a_seed_sequence_reproduces_the_world_and_is_not_consumed(cache_dir):
    ss = np.random.SeedSequence(11)
    _assert_same_world(_random_world(cache_dir, seed=ss), _random_world(cache_dir, seed=ss))


def test_different_seeds_give_different_worlds(cache_dir):
    a, b = _random_world(cache_dir, seed=1), _random_world(cache_dir, seed=2)
    assert not np.array_equal(a.catalog.titles, b.catalog.titles)
    assert not np.array_equal(a.persona.age, b.persona.age)
    assert not np.allclose(a.interests, b.interests)


def test_the_catalog_does_not_depend_on_the_number_of_users(cache_dir):
    a, b = _random_world(cache_dir, num_users=10), _random_world(cache_dir, num_users=700)
    np.testing.assert_array_equal(a.catalog.embeddings, b.catalog.embeddings)


def test_personas_are_adults_of_three_genders_with_age_consistent_occupations(cache_dir):
    p = _random_world(cache_dir, num_users=20_000).persona
    assert p.age.min() >= 18 and p.age.max() <= 70
    assert set(np.unique(p.gender)) == {0, 1, 2}
    assert np.bincount(p.gender)[2] < np.bincount(p.gender)[0] / 5, "non-binary is a small minority"
    occupation = np.asarray(p.occupation_names)[p.occupation]
    assert p.age[occupation == "retired"].mean() > p.age[occupation == "student"].mean() + 20
    assert len(p.occupation_names) == 21


def test_genre_taste_depends_on_persona_so_group_analyses_have_signal(cache_dir):
    w = _random_world(cache_dir, num_users=30_000, num_items=2000, dim=32)
    fav = np.asarray(GENRES)[_favourite_genre(w)]
    female, male = w.persona.gender == 0, w.persona.gender == 1
    assert (fav[female] == "Romance").mean() > 1.3 * (fav[male] == "Romance").mean()
    young, old = w.persona.age < 25, w.persona.age >= 56
    assert (fav[old] == "Western").mean() > 2 * (fav[young] == "Western").mean()


def test_more_interests_than_genres_in_the_catalog_still_gives_unit_interests(cache_dir):
    w = _random_world(cache_dir, num_items=1, num_interests=5)
    assert w.interests.shape == (500, 5, 16)
    np.testing.assert_allclose(np.linalg.norm(w.interests, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("field,value", [("num_users", 0), ("num_items", 0), ("num_interests", 0)])
def test_synthetic_world_rejects_empty_sizes_naming_the_argument(cache_dir, field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        _random_world(cache_dir, **{field: value})


# ---------------------------------------------------------------- MovieLens loader

def _rows(name: str) -> list[list[str]]:
    sep = "\t" if name == "u.data" else "|"
    text = (FIXTURE / name).read_text(encoding="latin-1")
    return [line.split(sep) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny(cache_dir) -> WorldData:
    return load_movielens(FIXTURE, num_interests=3, dim=64, cache_dir=cache_dir)


def test_loader_reads_every_user_item_and_rating_of_the_fixture(tiny):
    assert (tiny.num_users, tiny.catalog.num_items) == (30, 40)
    assert isinstance(tiny.interactions, Interactions) and len(tiny.interactions) == len(_rows("u.data")) == 435
    assert (np.diff(tiny.interactions.timestamp) >= 0).all(), "interactions are in time order"
    assert tiny.catalog.genre_names[0] == "unknown" and len(tiny.catalog.genre_names) == 19


def test_dense_indices_follow_the_sorted_original_ids(tiny):
    item_ids = sorted(int(r[0]) for r in _rows("u.item"))
    user_ids = sorted(int(r[0]) for r in _rows("u.user"))
    np.testing.assert_array_equal(tiny.catalog.item_ids, item_ids)
    titles = {int(r[0]): r[1] for r in _rows("u.item")}
    assert list(tiny.catalog.titles) == [titles[i] for i in item_ids]
    ia = tiny.interactions
    for user, item, rating, ts in _rows("u.data")[:20]:
        (row,) = np.flatnonzero((ia.timestamp == int(ts)) & (ia.user == user_ids.index(int(user))))
        assert ia.item[row] == item_ids.index(int(item)) and ia.rating[row] == float(rating)


def test_personas_come_from_u_user(tiny):
    users = sorted(_rows("u.user"), key=lambda r: int(r[0]))
    p = tiny.persona
    assert list(p.age) == [int(r[1]) for r in users]
    assert [p.gender_names[g] for g in p.gender] == [{"F": "female", "M": "male"}[r[2]] for r in users]
    assert [p.occupation_names[o] for o in p.occupation] == [r[3] for r in users]


def test_an_item_without_genre_flags_is_tagged_unknown(tiny):
    untagged = [int(r[0]) for r in _rows("u.item") if set(r[5:]) == {"0"}]
    assert len(untagged) == 1
    row = list(tiny.catalog.item_ids).index(untagged[0])
    assert tiny.catalog.genre_text(row) == "unknown"
    assert tiny.catalog.genres.any(axis=1).all()


def test_popularity_is_smoothed_counts_and_quality_a_shrunk_mean(tiny):
    c, ia = tiny.catalog, tiny.interactions
    counts = np.bincount(ia.item, minlength=c.num_items)
    assert (counts == 0).any(), "the fixture has an unrated item"
    np.testing.assert_allclose(c.popularity, (counts + 1) / (counts + 1).sum(), rtol=1e-5)
    assert ((c.quality >= 0) & (c.quality <= 1)).all()
    means = np.bincount(ia.item, weights=ia.rating, minlength=c.num_items) / np.maximum(counts, 1)
    rated = counts > 0
    assert np.corrcoef(means[rated], c.quality[rated])[0, 1] > 0.9
    unrated_quality = c.quality[~rated]
    scaled_global_mean = (ia.rating.mean() - ia.rating.min()) / (ia.rating.max() - ia.rating.min())
    np.testing.assert_allclose(unrated_quality, scaled_global_mean, atol=1e-5)


def test_durations_are_deterministic_stand_ins(tiny, cache_dir):
    assert ((tiny.catalog.duration >= 90) & (tiny.catalog.duration <= 130)).all()
    np.testing.assert_array_equal(load_movielens(FIXTURE, num_interests=3, cache_dir=cache_dir).catalog.duration,
                                  tiny.catalog.duration)


def test_loaded_interests_are_unit_rows_and_weights_sum_to_one(tiny):
    assert tiny.interests.shape == (30, 3, 64) and tiny.interests.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(tiny.interests, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tiny.weights.sum(axis=1), 1.0, atol=1e-5)


def test_a_users_top_interest_is_nearest_the_genre_they_liked_most(tiny):
    c, ia = tiny.catalog, tiny.interactions
    liked = ia.rating >= 4
    counts = np.zeros((tiny.num_users, len(c.genre_names)))
    np.add.at(counts, ia.user[liked], c.genres[ia.item[liked]].astype(float))
    has_favourite = np.sort(counts, axis=1)[:, -1] > np.sort(counts, axis=1)[:, -2]
    assert has_favourite.sum() >= 25
    nearest = (tiny.interests[:, 0] @ genre_centroids(c).T).argmax(axis=1)
    np.testing.assert_array_equal(nearest[has_favourite], counts.argmax(axis=1)[has_favourite])
    assert (tiny.weights[:, 0] == tiny.weights.max(axis=1)).all()


def test_a_user_who_liked_nothing_is_described_by_everything_they_rated(tiny):
    ia, c = tiny.interactions, tiny.catalog
    rated = np.bincount(ia.user, minlength=tiny.num_users) > 0
    liked_any = np.bincount(ia.user[ia.rating >= 4], minlength=tiny.num_users) > 0
    (user,) = np.flatnonzero(rated & ~liked_any)
    counts = c.genres[ia.item[ia.user == user]].sum(axis=0)
    top = np.sort(counts)[::-1][:3]
    np.testing.assert_allclose(tiny.weights[user], top / top.sum(), rtol=1e-5)


def test_a_user_without_ratings_gets_equal_weights_on_noisy_copies_of_the_catalog_mean(tiny):
    (user,) = np.flatnonzero(np.bincount(tiny.interactions.user, minlength=tiny.num_users) == 0)
    np.testing.assert_allclose(tiny.weights[user], 1 / 3, rtol=1e-5)
    mean = tiny.catalog.embeddings.mean(axis=0)
    cos = tiny.interests[user] @ (mean / np.linalg.norm(mean))
    assert (cos > 0.9).all() and not np.allclose(tiny.interests[user, 0], tiny.interests[user, 1])


def test_real_movielens_layout_quirks_are_accepted(tmp_path, cache_dir):
    """Blank lines (the real u.user starts with one) and a missing u.genre are fine."""
    ml = tmp_path / "ml"
    shutil.copytree(FIXTURE, ml)
    (ml / "u.genre").unlink()
    (ml / "u.data").write_text("\n" + (ml / "u.data").read_text() + "\n\n")
    w = load_movielens(ml, num_interests=3, embedding_model="random", cache_dir=cache_dir)
    assert len(w.interactions) == 435 and len(w.catalog.genre_names) == 19


@pytest.mark.parametrize("missing,format_hint", [("u.user", "user id|age|gender"), ("u.data", "user id<TAB>item id"),
                                                 ("u.item", "item id|title")])
def test_a_missing_file_is_named_with_its_expected_format(tmp_path, missing, format_hint):
    ml = tmp_path / "ml"
    shutil.copytree(FIXTURE, ml)
    (ml / missing).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{missing} not found.*{format_hint}"):
        load_movielens(ml, embedding_model="random", cache_dir=tmp_path)


def test_a_missing_folder_is_reported_as_such(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_movielens(tmp_path / "nowhere")


@pytest.mark.parametrize("file,lineno,bad_line,why", [
    ("u.data", 5, "12\t130\tfive\t880000000", "must be integers"),
    ("u.data", 3, "12\t130\t4", "3 tab-separated fields"),
    ("u.data", 7, "9999\t130\t4\t880000000", "user id 9999 is not listed in u.user"),
    ("u.item", 2, "103|Broken Row (1990)|01-Jan-1990||url|0|1", "7 fields, expected 24"),
    ("u.user", 4, "7|33|X|writer|12345", "gender 'X' is not M or F"),
])
def test_a_malformed_line_is_named_by_file_and_line_number(tmp_path, file, lineno, bad_line, why):
    ml = tmp_path / "ml"
    shutil.copytree(FIXTURE, ml)
    lines = (ml / file).read_text(encoding="latin-1").splitlines()
    lines[lineno - 1] = bad_line
    (ml / file).write_text("\n".join(lines) + "\n", encoding="latin-1")
    with pytest.raises(ValueError, match=rf"{file}:{lineno}: malformed line \(.*{why}"):
        load_movielens(ml, embedding_model="random", cache_dir=tmp_path)
