"""Specifications of simenv.embeddings: text -> (n, dim) unit rows, with a disk cache."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simenv import embeddings
from simenv.embeddings import NATIVE_DIM, embed_texts, projection_matrix

HORROR_A = "The Haunted Cabin. Genres: Horror."
HORROR_B = "Screaming Asylum. Genres: Horror."
KIDS = "The Lucky Puppy. Genres: Children's, Comedy."
MUSICAL = "Singing Serenade in Vienna. Genres: Musical, Romance."


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session")
def minilm_rows(cache_dir):
    """Real MiniLM vectors of four titles (the model loads once per test session)."""
    return embed_texts([HORROR_A, HORROR_B, KIDS, MUSICAL], dim=64, cache_dir=cache_dir)


def _cos(a, b):
    return float(a @ b)


def test_minilm_puts_titles_of_one_genre_closer_than_titles_of_unrelated_genres(minilm_rows):
    horror_a, horror_b, kids, musical = minilm_rows
    assert _cos(horror_a, horror_b) > _cos(horror_a, kids)
    assert _cos(horror_a, horror_b) > _cos(horror_a, musical)
    assert _cos(horror_b, horror_a) > _cos(horror_b, kids)


def test_minilm_output_is_float32_unit_rows_of_the_requested_width(minilm_rows):
    assert minilm_rows.shape == (4, 64) and minilm_rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(minilm_rows, axis=1), 1.0, atol=1e-5)


def test_an_item_embedded_later_lands_where_it_would_have_landed_in_the_first_batch(minilm_rows, cache_dir):
    alone = embed_texts([KIDS], dim=64, cache_dir=cache_dir)
    np.testing.assert_allclose(alone[0], minilm_rows[2], atol=1e-4)


def test_a_cache_hit_returns_the_identical_array_and_loads_no_model(minilm_rows, cache_dir, monkeypatch):
    def refuse_to_load():
        raise AssertionError("the model was loaded although the embeddings are cached")

    monkeypatch.setattr(embeddings, "_load_minilm", refuse_to_load)
    again = embed_texts([HORROR_A, HORROR_B, KIDS, MUSICAL], dim=64, cache_dir=cache_dir)
    np.testing.assert_array_equal(again, minilm_rows)


def test_a_cache_miss_with_the_model_unavailable_does_try_to_load_it(cache_dir, monkeypatch):
    monkeypatch.setattr(embeddings, "_load_minilm", lambda: (_ for _ in ()).throw(RuntimeError("no model")))
    with pytest.raises(RuntimeError, match="no model"):
        embed_texts(["a text never embedded before"], dim=64, cache_dir=cache_dir)


def test_the_cache_key_covers_model_dim_seed_and_texts(tmp_path):
    embed_texts(["a", "b"], dim=8, model="random", cache_dir=tmp_path)
    embed_texts(["a", "b"], dim=8, model="random", cache_dir=tmp_path)  # hit: no new file
    assert len(list(tmp_path.glob("*.npy"))) == 1
    embed_texts(["a", "b"], dim=9, model="random", cache_dir=tmp_path)
    embed_texts(["a", "b"], dim=8, model="random", cache_dir=tmp_path, projection_seed=1)
    embed_texts(["a", "c"], dim=8, model="random", cache_dir=tmp_path)
    embed_texts(["a\x1fb"], dim=8, model="random", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 5
    assert not list(tmp_path.glob("*.tmp")), "atomic writes leave no temporary files behind"


def test_the_default_cache_dir_is_taken_from_RECSIM_LLM_CACHE(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSIM_LLM_CACHE", str(tmp_path / "from-env"))
    embed_texts(["x"], dim=4, model="random")
    assert len(list((tmp_path / "from-env").glob("*.npy"))) == 1


def test_a_corrupt_cache_file_is_recomputed_not_returned(tmp_path):
    first = embed_texts(["x", "y"], dim=8, model="random", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(b"not an npy file")
    np.testing.assert_array_equal(embed_texts(["x", "y"], dim=8, model="random", cache_dir=tmp_path), first)


def test_an_unwritable_cache_warns_and_still_returns_embeddings(tmp_path):
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="could not write the cache"):
        out = embed_texts(["x"], dim=8, model="random", cache_dir=blocker)
    assert out.shape == (1, 8)


def test_the_random_model_is_a_pure_function_of_each_text(tmp_path):
    a = embed_texts(["alpha", "beta", "alpha"], dim=32, model="random", cache_dir=tmp_path / "1")
    b = embed_texts(["beta"], dim=32, model="random", cache_dir=tmp_path / "2")
    np.testing.assert_allclose(a[0], a[2], atol=1e-6)
    np.testing.assert_allclose(a[1], b[0], atol=1e-6)
    assert abs(_cos(a[0], a[1])) < 0.6  # unrelated texts: no semantics, near-orthogonal


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, NATIVE_DIM), seed=st.integers(0, 2**32 - 1),
       texts=st.lists(st.text(max_size=20), min_size=1, max_size=6))
def test_every_row_is_unit_norm_for_any_dim_seed_and_text(tmp_path_factory, dim, seed, texts):
    out = embed_texts(texts, dim=dim, model="random", projection_seed=seed,
                      cache_dir=tmp_path_factory.getbasetemp() / "hypothesis-cache")
    assert out.shape == (len(texts), dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_the_projection_is_orthonormal_and_a_function_of_dim_and_seed_only():
    q = projection_matrix(64, seed=3)
    assert q.shape == (NATIVE_DIM, 64)
    np.testing.assert_allclose(q.T @ q, np.eye(64), atol=1e-5)
    np.testing.assert_array_equal(q, projection_matrix(64, seed=3))
    assert not np.allclose(q, projection_matrix(64, seed=4))
    assert not q.flags.writeable, "the memoised matrix cannot be corrupted by a caller"


def test_full_width_means_no_projection():
    np.testing.assert_array_equal(projection_matrix(NATIVE_DIM), np.eye(NATIVE_DIM, dtype=np.float32))


def test_no_texts_give_an_empty_matrix_of_the_requested_width(tmp_path):
    assert embed_texts([], dim=16, cache_dir=tmp_path).shape == (0, 16)


def test_an_unknown_model_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match=r"model='bert'.*'minilm', 'random'"):
        embed_texts(["x"], model="bert")


@pytest.mark.parametrize("dim", [0, NATIVE_DIM + 1])
def test_a_dim_outside_1_to_384_is_rejected_naming_the_limit(dim):
    with pytest.raises(ValueError, match=rf"dim={dim}.*1\.\.{NATIVE_DIM}"):
        embed_texts(["x"], dim=dim, model="random")
