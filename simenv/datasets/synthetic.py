"""The built-in world: a MovieLens-like catalog and population generated from a seed, no downloads.

The catalog's geometry is real: each item is embedded from the text
``"{title}. Genres: {genres}."`` by the sentence-embedding model (``simenv.embeddings``), so
genres form semantic clusters that the model, not this file, decides. Users' interests are
noisy copies of the centroids of genres they like, and which genres they like depends on their
persona (age band, gender), so group-fairness and homophily analyses have real signal to find.

Randomness: one ``SeedSequence`` is split into independent streams for the catalog and the
users, so changing ``num_users`` leaves the catalog unchanged and vice versa.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from simenv.catalog import Catalog
from simenv.datasets.base import MOVIELENS_OCCUPATIONS, WorldData, genre_centroids, item_texts
from simenv.embeddings import center, embed_texts
from simenv.persona import AGE_BANDS, Persona

GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
)
GENDERS: tuple[str, ...] = ("female", "male", "non-binary")
_GENDER_SHARE = (0.49, 0.485, 0.025)

# Genres from most to least common (the MovieLens-100K ranking); item share ~ 1 / rank^0.9.
_GENRE_RANKING = (
    "Drama", "Comedy", "Action", "Thriller", "Romance", "Adventure", "Children's", "Crime",
    "Sci-Fi", "Horror", "War", "Mystery", "Musical", "Documentary", "Animation", "Western",
    "Film-Noir", "Fantasy",
)
_GENRE_ZIPF = 0.9
# Genres that often share an item: +1.5 log-odds of being the partner's secondary genre.
_RELATED_GENRES = (
    ("Animation", "Children's"), ("Animation", "Musical"), ("Children's", "Comedy"),
    ("Crime", "Thriller"), ("Crime", "Film-Noir"), ("Film-Noir", "Mystery"), ("Mystery", "Thriller"),
    ("Action", "Adventure"), ("Action", "Sci-Fi"), ("Action", "Thriller"), ("Adventure", "Fantasy"),
    ("Sci-Fi", "Horror"), ("Horror", "Thriller"), ("Romance", "Comedy"), ("Romance", "Drama"),
    ("Drama", "War"), ("Musical", "Romance"), ("War", "Action"), ("Western", "Action"),
    ("Children's", "Fantasy"),
)
_RELATED_BOOST = 1.5
_NUM_GENRES_SHARE = (0.45, 0.38, 0.17)  # items with 1, 2, 3 genres

# Persona tilts of genre taste, in log-odds added to the genre's base popularity.
# Age bands follow persona.AGE_BANDS: 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
_AGE_TILT: tuple[dict[str, float], ...] = (
    {"Action": .4, "Sci-Fi": .4, "Horror": .6, "Comedy": .3, "Animation": .3, "Drama": -.2,
     "Western": -.6, "Film-Noir": -.6, "War": -.4, "Documentary": -.3},
    {"Action": .3, "Sci-Fi": .3, "Thriller": .2, "Comedy": .2, "Horror": .2, "Western": -.3},
    {"Children's": .5, "Animation": .3, "Crime": .2, "Drama": .1},
    {"Drama": .3, "Mystery": .2, "Crime": .2, "Horror": -.3},
    {"Drama": .4, "War": .4, "Documentary": .3, "Mystery": .3, "Western": .3, "Horror": -.5,
     "Animation": -.3},
    {"War": .6, "Western": .7, "Film-Noir": .6, "Documentary": .4, "Musical": .5, "Drama": .4,
     "Horror": -.7, "Sci-Fi": -.4, "Animation": -.4},
)
_GENDER_TILT: tuple[dict[str, float], ...] = (  # order of GENDERS
    {"Romance": .6, "Drama": .3, "Musical": .4, "Children's": .2, "Action": -.3, "War": -.4,
     "Western": -.3, "Sci-Fi": -.2},
    {"Action": .4, "Sci-Fi": .3, "War": .4, "Western": .3, "Thriller": .2, "Romance": -.4,
     "Musical": -.3},
    {"Fantasy": .5, "Sci-Fi": .3, "Animation": .4, "Documentary": .3, "Horror": .2, "Western": -.3,
     "War": -.3},
)

# MovieLens-100K occupation counts, reshaped by age below (students are young, retirees old).
_OCCUPATION_COUNT = {
    "administrator": 79, "artist": 28, "doctor": 7, "educator": 95, "engineer": 67,
    "entertainment": 18, "executive": 32, "healthcare": 16, "homemaker": 7, "lawyer": 12,
    "librarian": 51, "marketing": 26, "none": 9, "other": 105, "programmer": 66, "retired": 14,
    "salesman": 12, "scientist": 31, "student": 196, "technician": 27, "writer": 45,
}
_OCCUPATION_AGE_FACTOR = {  # multiplier per age band
    "student": (6.0, 1.0, 0.15, 0.05, 0.03, 0.02),
    "retired": (0.0, 0.0, 0.02, 0.1, 0.5, 8.0),
    "none": (2.0, 1.0, 0.8, 0.8, 1.0, 1.5),
}

# Per-genre title vocabulary: adjectives, nouns, places.
_TITLE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Action": (
        ("Iron", "Final", "Deadly", "Midnight", "Silent", "Burning", "Steel", "Rogue", "Shattered", "Savage", "Lethal", "Ultimate"),
        ("Heist", "Strike", "Protocol", "Vendetta", "Fury", "Siege", "Extraction", "Showdown", "Takedown", "Pursuit", "Impact", "Payback", "Crossfire", "Ambush"),
        ("Hong Kong", "the Docks", "Sector Nine", "the Border", "Berlin", "Marseille", "the Highway", "Lagos")),
    "Adventure": (
        ("Lost", "Hidden", "Golden", "Forgotten", "Wild", "Distant", "Sunken", "Ancient", "Secret", "Endless", "Far", "Emerald"),
        ("Expedition", "Treasure", "Voyage", "Island", "Quest", "Map", "Temple", "Journey", "Compass", "Kingdom", "Jungle", "Odyssey", "Horizon", "Caravan"),
        ("the Amazon", "Zanzibar", "the Andes", "Atlantis", "the Sahara", "Borneo", "the Yukon", "Samarkand")),
    "Animation": (
        ("Little", "Brave", "Tiny", "Magic", "Bouncy", "Curious", "Happy", "Sleepy", "Jolly", "Clever", "Fluffy", "Sparkly"),
        ("Penguin", "Robot", "Dragon", "Fox", "Balloon", "Toybox", "Otter", "Firefly", "Snowman", "Bunny", "Cloud", "Teapot", "Kitten", "Gadget"),
        ("Candy Valley", "Bubble Town", "the Moon", "Toyland", "Puddle Lane", "the Treehouse", "Marshmallow Bay", "the Rainbow")),
    "Children's": (
        ("Best", "Big", "Lucky", "Silly", "Friendly", "Little", "Super", "Kind", "Giant", "Cheerful", "Tiny", "Merry"),
        ("Pony", "Puppy", "Treehouse", "Birthday", "Picnic", "Sleepover", "Kite", "Schoolbus", "Bear", "Wizard", "Pet", "Scout", "Lemonade Stand", "Summer Camp"),
        ("the Farm", "Grandma's House", "the Zoo", "Maple Street", "the Playground", "the Circus", "Camp Wiggle", "the Schoolyard")),
    "Comedy": (
        ("Crazy", "Accidental", "Awkward", "Wild", "Lazy", "Hopeless", "Totally Normal", "Big Fat", "Unlikely", "Clumsy", "Perfect", "Reluctant"),
        ("Wedding", "Roommates", "Vacation", "Road Trip", "Weekend", "Party", "Neighbors", "Interns", "Reunion", "Babysitter", "Bachelor", "Blind Date", "Office", "Inheritance"),
        ("Vegas", "the Suburbs", "Cancun", "the Office", "Brooklyn", "Ibiza", "the Country Club", "New Jersey")),
    "Crime": (
        ("Dirty", "Cold", "Crooked", "Black", "Dead", "Blind", "Corrupt", "Marked", "Quiet", "Bloody", "Stolen", "Hard"),
        ("Money", "Syndicate", "Witness", "Alibi", "Confession", "Precinct", "Ransom", "Informant", "Racket", "Verdict", "Getaway", "Mob", "Contract", "Score"),
        ("Chicago", "the Bronx", "Naples", "Miami", "the Harbor", "Little Italy", "Detroit", "Palermo")),
    "Documentary": (
        ("Inside", "Hidden", "Untold", "Real", "Modern", "Vanishing", "True", "Secret", "Changing", "Unseen", "Living", "Frozen"),
        ("Oceans", "Factory", "Election", "Planet", "Migration", "Revolution", "Coral Reefs", "Archive", "Harvest", "Frontier", "Orchestra", "Glaciers", "Pandemic", "Economy"),
        ("the Arctic", "Detroit", "the Congo", "Mongolia", "the Pacific", "Appalachia", "the Himalayas", "Chernobyl")),
    "Drama": (
        ("Quiet", "Broken", "Long", "Bitter", "Tender", "Silent", "Empty", "Fragile", "Last", "Distant", "Grey", "Restless"),
        ("Letters", "Winter", "Inheritance", "Promise", "Harvest", "Goodbye", "Silence", "Homecoming", "Confession", "Daughter", "Orchard", "Verdict", "Widow", "Season"),
        ("Verona", "Dublin", "the Valley", "Ohio", "Lisbon", "the Coast", "Montana", "Krakow")),
    "Fantasy": (
        ("Enchanted", "Crystal", "Shadow", "Elven", "Cursed", "Eternal", "Sorcerer's", "Dragon's", "Moonlit", "Forbidden", "Runic", "Silver"),
        ("Crown", "Sword", "Throne", "Prophecy", "Amulet", "Realm", "Spellbook", "Citadel", "Unicorn", "Grimoire", "Oracle", "Sceptre", "Griffin", "Tower"),
        ("Avalon", "Eldoria", "the Mist", "Shadowfell", "the Fae Court", "Mirkwater", "Everglen", "the Underdark")),
    "Film-Noir": (
        ("Dark", "Naked", "Long", "Lonely", "Crooked", "Smoky", "Midnight", "Deadly", "Fallen", "Double", "Rainy", "Faceless"),
        ("City", "Alley", "Dame", "Detective", "Streets", "Shadows", "Deception", "Payoff", "Nightclub", "Cigarette", "Raincoat", "Blackmail", "Doublecross", "Gunshot"),
        ("Los Angeles", "Dockside", "the Waterfront", "Skid Row", "Union Station", "the Harbor", "the Precinct", "Bunker Hill")),
    "Horror": (
        ("Bloody", "Haunted", "Hollow", "Cursed", "Rotting", "Screaming", "Dead", "Possessed", "Wicked", "Unholy", "Pale", "Crawling"),
        ("Cabin", "Asylum", "Ritual", "Doll", "Basement", "Curse", "Exorcism", "Harvest", "Seance", "Carnival", "Nightmare", "Graveyard", "Whisper", "Host"),
        ("Elm Street", "the Woods", "Ravenwood", "the Crypt", "Salem", "Blackwater", "the Morgue", "Dead Man's Creek")),
    "Musical": (
        ("Singing", "Dancing", "Golden", "Starlit", "Swinging", "Velvet", "Jazzy", "Dazzling", "Sweet", "Sparkling", "Melodic", "Bright"),
        ("Serenade", "Melody", "Ballroom", "Chorus", "Rhapsody", "Encore", "Showboat", "Waltz", "Jukebox", "Cabaret", "Songbird", "Overture", "Tango", "Harmony"),
        ("Broadway", "Harlem", "Paris", "Vienna", "the Riviera", "Tin Pan Alley", "Havana", "the Palace")),
    "Mystery": (
        ("Missing", "Vanishing", "Locked", "Curious", "Hidden", "Strange", "Silent", "Secret", "Unknown", "Final", "Twelfth", "Crimson"),
        ("Clue", "Key", "Letter", "Manor", "Portrait", "Riddle", "Inheritance", "Diary", "Cipher", "Stranger", "Lighthouse", "Testament", "Alibi", "Puzzle"),
        ("Blackmoor Manor", "the Orient Express", "Cornwall", "the Abbey", "Baker Street", "the Lighthouse", "Thornfield", "Lake Geneva")),
    "Romance": (
        ("Sweet", "Summer", "Endless", "Lovely", "Secret", "Forever", "Second", "Tender", "Perfect", "Stolen", "Starlit", "Unexpected"),
        ("Kiss", "Heart", "Love", "Letter", "Proposal", "Affair", "Romance", "Valentine", "Honeymoon", "Serenade", "Promise", "Rendezvous", "Embrace", "Crush"),
        ("Verona", "Paris", "Tuscany", "Santorini", "Notting Hill", "Provence", "Venice", "Kyoto")),
    "Sci-Fi": (
        ("Quantum", "Stellar", "Cyber", "Orbital", "Binary", "Galactic", "Neon", "Synthetic", "Hyper", "Dark", "Infinite", "Zero"),
        ("Protocol", "Frontier", "Android", "Nebula", "Colony", "Singularity", "Starfall", "Paradox", "Transmission", "Vector", "Horizon", "Reactor", "Clone", "Exodus"),
        ("Mars", "Europa", "the Void", "Sector 7", "Alpha Centauri", "Titan", "Neo-Tokyo", "the Dyson Sphere")),
    "Thriller": (
        ("Silent", "Deadly", "Hidden", "Perfect", "Fatal", "Final", "Cold", "Blind", "Dark", "Rogue", "Broken", "Sleeping"),
        ("Witness", "Conspiracy", "Agent", "Target", "Cipher", "Hostage", "Dossier", "Deadline", "Trap", "Identity", "Code", "Obsession", "Fugitive", "Asset"),
        ("Moscow", "Istanbul", "Langley", "Prague", "Geneva", "the Embassy", "Tangier", "Vienna")),
    "War": (
        ("Bloody", "Last", "Forgotten", "Iron", "Burning", "Long", "Brave", "Lost", "Fallen", "Distant", "Broken", "Silent"),
        ("Battalion", "Front", "Platoon", "Trench", "Regiment", "Beachhead", "Bridge", "Armistice", "Convoy", "Sniper", "Offensive", "Garrison", "Bunker", "Squadron"),
        ("Normandy", "Stalingrad", "Iwo Jima", "the Somme", "Verdun", "Khe Sanh", "Arnhem", "Gallipoli")),
    "Western": (
        ("Dusty", "Lonesome", "Wild", "Lawless", "High", "Rawhide", "Outlaw", "Silver", "Rusty", "Desert", "Golden", "Sundown"),
        ("Rider", "Saddle", "Sheriff", "Stagecoach", "Gunslinger", "Frontier", "Ranch", "Posse", "Bounty", "Trail", "Canyon", "Mustang", "Rustler", "Showdown"),
        ("Tombstone", "Dodge City", "the Rio Grande", "Laramie", "El Paso", "Deadwood", "Abilene", "the Badlands")),
}
_TITLE_TEMPLATES = ("The {a} {n}", "{a} {n}", "The {n} of {p}", "A {n} in {p}", "{a} {n} in {p}")
_ROMAN = ("II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")

_DEFAULT_INTEREST_NOISE = 0.35
_USER_CHUNK = 1 << 16  # users per chunk when filling (U, K, d): bounds temporaries to ~70 MB


def synthetic_world(
    num_users: int,
    num_items: int,
    num_interests: int = 4,
    dim: int = 64,
    seed: int | np.random.SeedSequence = 0,
    embedding_model: str = "minilm",
    cache_dir: str | Path | None = None,
    *,
    interest_noise: float = _DEFAULT_INTEREST_NOISE,
) -> WorldData:
    """Generate a world of ``num_users`` users and ``num_items`` items.

    Args:
        num_users: U >= 1.
        num_items: I >= 1 (titles stay unique for any I).
        num_interests: K >= 1 interests per user; the first is the user's favourite genre and
            has the largest weight.
        dim: d, the embedding width (see ``embed_texts``).
        seed: an int or a SeedSequence; the same seed gives the same world. A SeedSequence is
            not mutated (its children are derived, not spawned), so passing it twice repeats.
        embedding_model: ``"minilm"`` (semantic) or ``"random"`` (fast, no semantics).
        cache_dir: embedding cache folder (see ``embed_texts``).
        interest_noise: expected norm of the Gaussian added to a genre centroid (a unit vector)
            to make one user's interest; 0 makes all fans of a genre identical.

    Returns:
        WorldData with ``interactions=None``.
    """
    for name, value, low in (("num_users", num_users, 1), ("num_items", num_items, 1),
                             ("num_interests", num_interests, 1)):
        if value < low:
            raise ValueError(f"synthetic_world: {name}={value}, must be >= {low}.")
    if interest_noise < 0:
        raise ValueError(f"synthetic_world: interest_noise={interest_noise}, must be >= 0.")
    catalog_ss, user_ss = _children(seed, 2)
    catalog = _catalog(num_items, dim, np.random.default_rng(catalog_ss), embedding_model, cache_dir)
    persona_rng, taste_rng, interest_rng = (np.random.default_rng(s) for s in user_ss.spawn(3))
    persona = _personas(num_users, persona_rng)
    interests, weights = _interests(persona, catalog, num_interests, interest_noise, taste_rng, interest_rng)
    return WorldData(catalog=catalog, persona=persona, interests=interests, weights=weights, interactions=None)


def _children(seed: int | np.random.SeedSequence, n: int) -> list[np.random.SeedSequence]:
    """n independent child seeds, derived like ``spawn`` but without mutating the parent."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, i), pool_size=ss.pool_size)
            for i in range(n)]


# ---------------------------------------------------------------- catalog

def _catalog(num_items: int, dim: int, rng: np.random.Generator, model: str,
             cache_dir: str | Path | None) -> Catalog:
    genres, primary = _item_genres(num_items, rng)  # (I, G) bool, (I,) int
    years = rng.integers(1920, 2025, num_items)  # only disambiguates repeated titles
    titles = _titles(primary, years, rng)
    quality = rng.beta(4.0, 2.0, num_items)  # mean 0.67, few items below 0.3
    # Heavy-tailed popularity, weakly tied to quality as in real catalogs.
    log_pop = 1.2 * rng.standard_normal(num_items) + 1.5 * (quality - quality.mean())
    popularity = np.exp(log_pop - log_pop.max())
    durations = _durations(genres, rng)
    embeddings = center(embed_texts(item_texts(titles, genres, GENRES), dim=dim, model=model, cache_dir=cache_dir))
    return Catalog(
        item_ids=np.arange(num_items, dtype=np.int64),
        titles=titles,
        genres=genres,
        genre_names=GENRES,
        popularity=(popularity / popularity.sum()).astype(np.float32),
        quality=quality.astype(np.float32),
        duration=durations,
        embeddings=embeddings,
    )


def _genre_log_share() -> np.ndarray:
    """(G,) float64 log of each genre's share of items (Zipf over the popularity ranking)."""
    rank = np.array([_GENRE_RANKING.index(g) for g in GENRES])
    share = 1.0 / (rank + 1.0) ** _GENRE_ZIPF
    return np.log(share / share.sum())


def _item_genres(num_items: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(I, G) bool genres with 1-3 flags per item, and the (I,) primary genre index.

    Secondary genres are drawn without replacement by the Gumbel-top-k trick, tilted towards
    genres related to the primary one (Animation with Children's, Crime with Film-Noir, ...).
    """
    g = len(GENRES)
    log_share = _genre_log_share()
    primary = _sample_categorical(np.exp(log_share), rng.random(num_items))  # (I,)
    related = np.zeros((g, g))
    for a, b in _RELATED_GENRES:
        related[GENRES.index(a), GENRES.index(b)] = related[GENRES.index(b), GENRES.index(a)] = _RELATED_BOOST
    keys = log_share[None, :] + related[primary] + rng.gumbel(size=(num_items, g))  # (I, G)
    rows = np.arange(num_items)
    keys[rows, primary] = np.inf  # the primary always comes first
    top = np.argsort(-keys, axis=1)[:, :len(_NUM_GENRES_SHARE)]  # (I, 3)
    count = 1 + _sample_categorical(np.asarray(_NUM_GENRES_SHARE), rng.random(num_items))  # (I,) in 1..3
    genres = np.zeros((num_items, g), bool)
    keep = np.arange(top.shape[1])[None, :] < count[:, None]  # (I, 3)
    genres[np.broadcast_to(rows[:, None], top.shape)[keep], top[keep]] = True
    return genres, primary


def _titles(primary: np.ndarray, years: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(I,) object array of unique titles, e.g. "The Midnight Heist", "The Starfall of Mars (1987)".

    Titles come from the primary genre's vocabulary; a repeated title gets the item's year,
    then a sequel numeral, until unique.
    """
    n = len(primary)
    picks = rng.integers(0, 1 << 30, size=(n, 4))  # template, adjective, noun, place (mod list length)
    seen: set[str] = set()
    titles = np.empty(n, dtype=object)
    for i in range(n):
        adjectives, nouns, places = _TITLE_WORDS[GENRES[primary[i]]]
        t, a, w, p = picks[i]
        base = _TITLE_TEMPLATES[t % len(_TITLE_TEMPLATES)].format(
            a=adjectives[a % len(adjectives)], n=nouns[w % len(nouns)], p=places[p % len(places)])
        title = base
        sequel = 0
        while title in seen:
            title = f"{base} ({years[i]})" if sequel == 0 else f"{base} {_sequel(sequel)} ({years[i]})"
            sequel += 1
        seen.add(title)
        titles[i] = title
    return titles


def _sequel(k: int) -> str:
    return _ROMAN[k - 1] if k <= len(_ROMAN) else f"Part {k + 1}"


def _durations(genres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(I,) float32 minutes in [80, 180]: the mean typical length of the item's genres + noise."""
    typical = {"Animation": 85, "Children's": 90, "Comedy": 98, "Horror": 95, "Documentary": 95,
               "Musical": 115, "Drama": 120, "War": 135, "Western": 115, "Adventure": 120,
               "Fantasy": 120, "Sci-Fi": 115, "Action": 112, "Crime": 110, "Thriller": 108,
               "Mystery": 105, "Film-Noir": 95, "Romance": 108}
    base = np.array([typical[g] for g in GENRES], np.float64)
    mean = (genres @ base) / genres.sum(axis=1)
    return np.clip(mean + 12.0 * rng.standard_normal(len(mean)), 80.0, 180.0).astype(np.float32)


def _sample_categorical(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: (n,) indices into p (unnormalised, (C,)) from (n,) uniforms in [0, 1)."""
    cdf = np.cumsum(p) / np.sum(p)
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(p) - 1)


# ---------------------------------------------------------------- users

def _personas(num_users: int, rng: np.random.Generator) -> Persona:
    """Ages 18-70 skewed young (mean ~36), gender by _GENDER_SHARE, age-dependent occupation."""
    age = (18 + np.floor(53 * rng.beta(1.6, 3.0, num_users))).astype(np.int16)
    gender = _sample_categorical(np.asarray(_GENDER_SHARE), rng.random(num_users)).astype(np.int8)
    band = Persona(age, gender, np.zeros(num_users, np.int16), GENDERS, MOVIELENS_OCCUPATIONS).age_band  # (U,)
    occupation = np.zeros(num_users, np.int16)
    base = np.array([_OCCUPATION_COUNT[o] for o in MOVIELENS_OCCUPATIONS], np.float64)
    u = rng.random(num_users)
    for b in range(len(AGE_BANDS)):
        p = base * np.array([_OCCUPATION_AGE_FACTOR.get(o, (1.0,) * len(AGE_BANDS))[b]
                             for o in MOVIELENS_OCCUPATIONS])
        in_band = band == b
        occupation[in_band] = _sample_categorical(p, u[in_band])
    # Users are i.i.d., so their numbering is free: number them by (age band, occupation, gender).
    # Homophilous friends then have nearby indices, and the social refresh's gather of neighbor
    # rows stays within a few MB of cache instead of jumping across the whole population.
    order = np.lexsort((gender, occupation, band))
    return Persona(age[order], gender[order], occupation[order], GENDERS, MOVIELENS_OCCUPATIONS)


def _taste_tilts() -> tuple[np.ndarray, np.ndarray]:
    """(A, G) and (S, G) float32 log-odds tilts of genre taste per age band and per gender."""
    age = np.zeros((len(AGE_BANDS), len(GENRES)), np.float32)
    for b, tilt in enumerate(_AGE_TILT):
        for name, v in tilt.items():
            age[b, GENRES.index(name)] = v
    gender = np.zeros((len(GENDERS), len(GENRES)), np.float32)
    for s, tilt in enumerate(_GENDER_TILT):
        for name, v in tilt.items():
            gender[s, GENRES.index(name)] = v
    return age, gender


def _interests(
    persona: Persona,
    catalog: Catalog,
    k: int,
    noise: float,
    taste_rng: np.random.Generator,
    interest_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(U, K, d) float32 unit interests and (U, K) float32 weights, sorted by weight descending.

    Each user picks K liked genres without replacement (Gumbel-top-k over persona-tilted
    log-odds; genres absent from the catalog are never picked; if K exceeds the genres present,
    the ranking repeats). Interest j = unit(centroid[genre_j] + noise * z / sqrt(d)),
    z ~ N(0, I_d). Weights ~ Dirichlet(1, ..., 1), the largest going to the favourite genre.
    """
    u = persona.num_users
    d = catalog.dim
    centroids = genre_centroids(catalog)  # (G, d)
    present = catalog.genres.any(axis=0)  # (G,)
    age_tilt, gender_tilt = _taste_tilts()
    logits = (_genre_log_share().astype(np.float32)[None, :] + age_tilt[persona.age_band]
              + gender_tilt[persona.gender])  # (U, G)
    logits[:, ~present] = -np.inf
    uniform = np.maximum(taste_rng.random(logits.shape, dtype=np.float32), np.float32(2.0**-25))  # no log(0)
    keys = logits - np.log(-np.log(uniform))  # + standard Gumbel noise
    del uniform
    num_present = int(present.sum())
    if k < num_present:
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # (U, K), unordered
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        chosen = np.take_along_axis(top, order, axis=1)  # (U, K), favourite first
    else:
        chosen = np.argsort(-keys, axis=1)[:, np.arange(k) % num_present]
    del keys, logits

    weights = interest_rng.standard_gamma(1.0, size=(u, k), dtype=np.float32)  # Dirichlet(1) numerators
    weights = -np.sort(-weights, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)

    interests = np.empty((u, k, d), np.float32)
    scale = np.float32(noise / np.sqrt(d))
    for start in range(0, u, _USER_CHUNK):
        block = interests[start:start + _USER_CHUNK]  # a view: filled in place
        interest_rng.standard_normal(out=block, dtype=np.float32)
        block *= scale
        block += centroids[chosen[start:start + _USER_CHUNK]]
        block /= np.maximum(np.sqrt(np.einsum("ukd,ukd->uk", block, block)), 1e-12)[..., None]
    return interests, weights.astype(np.float32)
