"""MovieLens-100K (the ``u.data`` / ``u.item`` / ``u.user`` layout) as a simulator world.

The catalog and personas come straight from the files; what the files do not hold is derived
and documented here:

- popularity: (ratings of the item + 1) / total, so unrated items keep a small prior share;
- quality: Bayesian-shrunk mean rating, ``(sum + m * mu) / (count + m)`` with ``m = 10``
  pseudo-ratings at the global mean ``mu``, rescaled from the observed rating range to [0, 1];
- duration: not in the data; 110 min +- 20 from a hash of the item id (deterministic, carries
  no information);
- initial interests: for each user, the unit mean embedding of the items they liked in each of
  their K most-watched genres (see ``interests_from_ratings``).

Users and items get dense indices in order of their original ids; ``catalog.item_ids`` keeps
the original item ids (user ``u`` is the u-th smallest user id of ``u.user``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simenv.catalog import Catalog
from simenv.datasets.base import MOVIELENS_OCCUPATIONS, Interactions, WorldData, item_texts
from simenv.embeddings import center, embed_texts
from simenv.persona import Persona

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
GENDERS: tuple[str, ...] = ("female", "male")  # the two codes (F, M) MovieLens-100K records
_GENDER_CODES = {"F": 0, "M": 1}

_FORMATS = {
    "u.data": "tab-separated 'user id<TAB>item id<TAB>rating<TAB>unix timestamp', one rating a line",
    "u.item": "pipe-separated latin-1 'item id|title|release date|video release date|IMDb URL|"
              "<one 0/1 flag per genre of u.genre>'",
    "u.user": "pipe-separated 'user id|age|gender (M/F)|occupation|zip code'",
    "u.genre": "pipe-separated 'genre name|index', index 0, 1, 2, ... in order",
}
_QUALITY_PSEUDO_RATINGS = 10.0
_FILL_WEIGHT = 0.5  # pseudo-count of an interest filled in for a user with fewer than K genres
_FILL_NOISE = 0.1  # expected norm of the noise that keeps filled-in interests apart


def load_movielens(
    path: str | Path,
    num_interests: int = 4,
    dim: int = 64,
    seed: int | np.random.SeedSequence = 0,
    embedding_model: str = "minilm",
    cache_dir: str | Path | None = None,
    min_rating_liked: float = 4.0,
) -> WorldData:
    """Build a world from a MovieLens-100K folder.

    Args:
        path: folder with ``u.data``, ``u.item``, ``u.user`` (and optionally ``u.genre``,
            ``u.occupation``).
        num_interests: K interests per user.
        dim: embedding width (see ``embed_texts``).
        seed: seeds only the noise of filled-in interests (users with fewer than K genres).
        embedding_model: ``"minilm"`` or ``"random"``; items are embedded from
            ``"{title}. Genres: {genres}."``.
        cache_dir: embedding cache folder (see ``embed_texts``).
        min_rating_liked: ratings at or above this count as "liked" when building interests.

    Returns:
        WorldData whose ``interactions`` hold every rating, sorted by timestamp (stable).
    """
    if num_interests < 1:
        raise ValueError(f"load_movielens: num_interests={num_interests}, must be >= 1.")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"load_movielens: {root} is not a folder; pass the folder that holds u.data, u.item "
            f"and u.user (MovieLens-100K layout, e.g. the unzipped 'ml-100k')."
        )
    genre_names = _read_genres(root / "u.genre") if (root / "u.genre").is_file() else ML100K_GENRES
    item_ids, titles, genres, genre_names = _read_items(root / "u.item", genre_names)
    user_ids, persona = _read_users(root / "u.user", _read_occupations(root / "u.occupation"))
    interactions = _read_ratings(root / "u.data", user_ids, item_ids)

    num_items = len(item_ids)
    count = np.bincount(interactions.item, minlength=num_items).astype(np.float64)  # (I,)
    catalog = Catalog(
        item_ids=item_ids,
        titles=titles,
        genres=genres,
        genre_names=genre_names,
        popularity=((count + 1) / (count + 1).sum()).astype(np.float32),
        quality=_shrunk_quality(interactions, num_items),
        duration=_hashed_duration(item_ids),
        embeddings=center(embed_texts(item_texts(titles, genres, genre_names), dim=dim, model=embedding_model,
                                      cache_dir=cache_dir)),
    )
    interests, weights = interests_from_ratings(
        interactions, catalog, len(user_ids), num_interests, min_rating_liked, np.random.default_rng(seed))
    return WorldData(catalog=catalog, persona=persona, interests=interests, weights=weights,
                     interactions=interactions)


# ---------------------------------------------------------------- derived attributes

def _shrunk_quality(ia: Interactions, num_items: int) -> np.ndarray:
    """(I,) float32 in [0, 1]: shrunk mean rating, so a single 5-star rating is not 'the best'."""
    if len(ia) == 0:
        return np.full(num_items, 0.5, np.float32)
    r = ia.rating.astype(np.float64)
    lo, hi = r.min(), r.max()
    total = np.bincount(ia.item, weights=r, minlength=num_items)
    count = np.bincount(ia.item, minlength=num_items)
    m = _QUALITY_PSEUDO_RATINGS
    mean = (total + m * r.mean()) / (count + m)
    return (np.clip((mean - lo) / (hi - lo), 0, 1) if hi > lo else np.full(num_items, 0.5)).astype(np.float32)


def _hashed_duration(item_ids: np.ndarray) -> np.ndarray:
    """(I,) float32 minutes in [90, 130): a stand-in, since MovieLens has no running times."""
    h = (item_ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 32)  # Knuth hash
    return (110.0 + 40.0 * (h.astype(np.float64) / 2**32 - 0.5)).astype(np.float32)


def interests_from_ratings(
    ia: Interactions,
    catalog: Catalog,
    num_users: int,
    k: int,
    min_rating_liked: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(U, K, d) float32 unit interests and (U, K) float32 weights from the logged ratings.

    Interest j of user u is the unit mean embedding of the items u liked (rating >=
    ``min_rating_liked``; all rated items if u liked none) that carry u's j-th most frequent
    genre among those items (ties: lower genre index first), and its weight is proportional to
    that genre count. Slots left over (u has fewer than K genres, or no ratings at all) get u's
    overall mean (the catalog mean if u rated nothing) plus small noise, with pseudo-count
    ``_FILL_WEIGHT``.
    """
    emb = catalog.embeddings  # (I, d)
    g = len(catalog.genre_names)
    d = emb.shape[1]
    liked = ia.rating >= min_rating_liked  # (n,)
    use = liked | (np.bincount(ia.user[liked], minlength=num_users)[ia.user] == 0)
    users, items = ia.user[use], ia.item[use]  # (m,)
    rows, pair_genre = np.nonzero(catalog.genres[items])  # (P,): one entry per (rating, genre)
    pair_user, pair_item = users[rows], items[rows]

    counts = np.zeros((num_users, g), np.float64)
    np.add.at(counts, (pair_user, pair_genre), 1.0)
    top = np.argsort(-counts, axis=1, kind="stable")[:, :k]  # (U, min(K, G)) favourite first
    top_counts = np.take_along_axis(counts, top, axis=1)
    if top.shape[1] < k:  # more interests than genres: the extra slots are fill-ins
        pad = k - top.shape[1]
        top = np.pad(top, ((0, 0), (0, pad)))
        top_counts = np.pad(top_counts, ((0, 0), (0, pad)))
    valid = top_counts > 0  # (U, K)

    slot = np.full((num_users, g), -1, np.int64)  # (U, G) -> interest slot of that genre, or -1
    vu, vk = np.nonzero(valid)
    slot[vu, top[vu, vk]] = vk
    pair_slot = slot[pair_user, pair_genre]
    hit = pair_slot >= 0
    sums = np.zeros((num_users, k, d), np.float32)
    np.add.at(sums, (pair_user[hit], pair_slot[hit]), emb[pair_item[hit]])

    overall = np.zeros((num_users, d), np.float32)
    np.add.at(overall, users, emb[items])
    rated_nothing = np.bincount(users, minlength=num_users) == 0
    overall[rated_nothing] = emb.mean(axis=0)
    overall /= np.maximum(np.linalg.norm(overall, axis=1, keepdims=True), 1e-12)
    noise = rng.standard_normal((num_users, k, d), dtype=np.float32) * np.float32(_FILL_NOISE / np.sqrt(d))
    interests = np.where(valid[..., None], sums, overall[:, None, :] + noise)
    interests /= np.maximum(np.linalg.norm(interests, axis=-1, keepdims=True), 1e-12)

    weights = np.where(valid, top_counts, _FILL_WEIGHT)
    weights /= weights.sum(axis=1, keepdims=True)
    return interests.astype(np.float32), weights.astype(np.float32)


# ---------------------------------------------------------------- file parsing

def _sorted_unique_ids(ids: list[int], path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted int64 ids, the order that sorts them); a repeated id is an error naming the file."""
    raw = np.asarray(ids, np.int64)
    order = np.argsort(raw, kind="stable")
    sorted_ids = raw[order]
    dup = np.flatnonzero(np.diff(sorted_ids) == 0)
    if len(dup):
        raise ValueError(f"{path}: {what} id {sorted_ids[dup[0]]} appears twice; ids must be unique.")
    return sorted_ids, order


def _lines(path: Path, encoding: str = "latin-1") -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines; a clear error if the file is missing."""
    if not path.is_file():
        raise FileNotFoundError(
            f"load_movielens: {path} not found; expected {path.name} in MovieLens-100K format: "
            f"{_FORMATS[path.name]}."
        )
    text = path.read_text(encoding=encoding)
    return [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _malformed(path: Path, lineno: int, line: str, why: str) -> ValueError:
    return ValueError(
        f"{path}:{lineno}: malformed line ({why}): {line[:120]!r}; expected {_FORMATS[path.name]}."
    )


def _read_genres(path: Path) -> tuple[str, ...]:
    names: list[str] = []
    for lineno, line in _lines(path):
        parts = line.split("|")
        if len(parts) != 2 or not parts[1].strip().isdigit() or int(parts[1]) != len(names):
            raise _malformed(path, lineno, line, f"expected 'name|{len(names)}'")
        names.append(parts[0].strip())
    if not names:
        raise ValueError(f"{path}: no genres; delete the file to use the standard 19 MovieLens genres.")
    return tuple(names)


def _read_occupations(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return MOVIELENS_OCCUPATIONS
    return tuple(line.strip() for _, line in _lines(path))


def _read_items(path: Path, genre_names: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Sorted (I,) int64 ids, (I,) unique titles, (I, G) bool genres, genre names."""
    g = len(genre_names)
    ids, titles, flags = [], [], []
    for lineno, line in _lines(path):
        parts = line.split("|")
        if len(parts) != 5 + g:
            raise _malformed(path, lineno, line, f"{len(parts)} fields, expected {5 + g} (5 + {g} genre flags)")
        if not parts[0].strip().isdigit():
            raise _malformed(path, lineno, line, f"item id {parts[0]!r} is not a non-negative integer")
        if any(f not in ("0", "1") for f in parts[5:]):
            raise _malformed(path, lineno, line, "genre flags must be 0 or 1")
        ids.append(int(parts[0]))
        titles.append(parts[1].strip() or f"Item {parts[0].strip()}")
        flags.append([f == "1" for f in parts[5:]])
    if not ids:
        raise ValueError(f"{path}: no items; expected {_FORMATS['u.item']}.")
    item_ids, order = _sorted_unique_ids(ids, path, "item")
    genres = np.asarray(flags, bool).reshape(len(ids), g)[order]
    names = tuple(genre_names)
    untagged = ~genres.any(axis=1)
    if untagged.any():  # every item needs a genre: tag untagged ones "unknown"
        if "unknown" not in names:
            names = (*names, "unknown")
            genres = np.concatenate([genres, np.zeros((len(ids), 1), bool)], axis=1)
        genres[untagged, names.index("unknown")] = True
    return item_ids, _unique_titles([titles[i] for i in order], item_ids), genres, names


def _unique_titles(titles: list[str], item_ids: np.ndarray) -> np.ndarray:
    """MovieLens repeats some titles (re-entered films); later repeats get ' [id N]' appended."""
    seen: set[str] = set()
    out = np.empty(len(titles), dtype=object)
    for i, (t, item_id) in enumerate(zip(titles, item_ids)):
        out[i] = t if t not in seen else f"{t} [id {item_id}]"
        seen.add(out[i])
    return out


def _read_users(path: Path, occupations: tuple[str, ...]) -> tuple[np.ndarray, Persona]:
    """Sorted (U,) int64 user ids and their personas; unlisted occupations are appended."""
    occupation_names = list(occupations)
    ids, ages, genders, jobs = [], [], [], []
    for lineno, line in _lines(path):
        parts = line.split("|")
        if len(parts) != 5:
            raise _malformed(path, lineno, line, f"{len(parts)} fields, expected 5")
        uid, age, gender, job = (p.strip() for p in parts[:4])
        if not uid.isdigit() or not age.isdigit():
            raise _malformed(path, lineno, line, "user id and age must be non-negative integers")
        if gender.upper() not in _GENDER_CODES:
            raise _malformed(path, lineno, line, f"gender {gender!r} is not M or F")
        if job not in occupation_names:
            occupation_names.append(job)
        ids.append(int(uid))
        ages.append(int(age))
        genders.append(_GENDER_CODES[gender.upper()])
        jobs.append(occupation_names.index(job))
    if not ids:
        raise ValueError(f"{path}: no users; expected {_FORMATS['u.user']}.")
    user_ids, order = _sorted_unique_ids(ids, path, "user")
    persona = Persona(
        age=np.asarray(ages, np.int16)[order],
        gender=np.asarray(genders, np.int8)[order],
        occupation=np.asarray(jobs, np.int16)[order],
        gender_names=GENDERS,
        occupation_names=tuple(occupation_names),
    )
    return user_ids, persona


def _read_ratings(path: Path, user_ids: np.ndarray, item_ids: np.ndarray) -> Interactions:
    """All ratings with dense indices, sorted by timestamp (stable)."""
    lines = _lines(path)
    raw = np.empty((len(lines), 4), np.float64)
    for row, (lineno, line) in enumerate(lines):
        parts = line.split("\t")
        if len(parts) != 4:
            raise _malformed(path, lineno, line, f"{len(parts)} tab-separated fields, expected 4")
        try:
            raw[row] = (int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3]))
        except ValueError:
            raise _malformed(path, lineno, line, "user id, item id and timestamp must be integers, "
                                                 "rating a number") from None
        if not np.isfinite(raw[row, 2]):
            raise _malformed(path, lineno, line, "rating is not finite")
    user = _dense_index(raw[:, 0].astype(np.int64), user_ids, path, lines, "user", "u.user")
    item = _dense_index(raw[:, 1].astype(np.int64), item_ids, path, lines, "item", "u.item")
    timestamp = raw[:, 3].astype(np.int64)
    order = np.argsort(timestamp, kind="stable")
    return Interactions(user=user[order], item=item[order], rating=raw[order, 2].astype(np.float32),
                        timestamp=timestamp[order])


def _dense_index(raw: np.ndarray, ids: np.ndarray, path: Path, lines: list[tuple[int, str]],
                 what: str, listing: str) -> np.ndarray:
    """(n,) int32 positions of raw ids in the sorted ids; an unknown id names its line."""
    pos = np.minimum(np.searchsorted(ids, raw), len(ids) - 1)
    bad = np.flatnonzero(ids[pos] != raw)
    if len(bad):
        lineno, line = lines[bad[0]]
        raise _malformed(path, lineno, line, f"{what} id {raw[bad[0]]} is not listed in {listing}")
    return pos.astype(np.int32)

