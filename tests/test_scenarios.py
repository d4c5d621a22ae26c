"""Scheduled world events. Interest shifts: at the scheduled tick, the chosen users' interests move
toward the trend genre and nobody else's do; the same seed picks the same users; a trend seeded at
hubs spreads to their neighbors through the social dynamics; sharded runs still equal the single
process; a shift naming an unknown genre is refused when the world is made. Item releases: new
items are never candidates before their tick and are from then on."""
import gymnasium as gym
import numpy as np
import pytest

import simenv  # noqa: F401
from policies import make_policy
from simenv.rollout import ShardedRollout
from simenv.scenarios import available_items, ItemRelease, shifted_users, trend_direction

WORLD = dict(num_users=300, num_items=200, slate_size=4, num_candidates=12, horizon=40, candidate_features=False,
             embedding_model="random", world_seed=2, mean_degree=8.0, audit=False)


def make(shift=None, **changes):
    dynamics = {"shifts": [shift]} if shift else {}
    return gym.make_vec("RecSim-LLM-v0", num_envs=WORLD["num_users"], vectorization_mode="vector_entry_point",
                        **{**WORLD, **changes, "dynamics": dynamics})


def closeness(env, genre="Comedy"):
    """(U,) mean cosine of each user's interests with the trend direction."""
    w = env.unwrapped.world
    return (w.population.interests @ trend_direction(w.catalog, genre)).mean(axis=1)


def run(env, steps, seed=0):
    obs, _ = env.reset(seed=seed)
    policy = make_policy("oracle")
    policy.setup(env)
    trace = []
    for _ in range(steps):
        obs, *_ = env.step(policy.act(obs))
        trace.append(closeness(env).copy())
    return trace


def test_the_chosen_users_move_toward_the_trend_at_the_scheduled_tick_and_no_one_else():
    shift = {"at": 4, "genre": "Comedy", "share": 0.3, "strength": 0.6}
    with_shift, without = run(make(shift), 4), run(make(), 4)
    np.testing.assert_array_equal(with_shift[2], without[2])  # nothing happens before tick 4
    env = make(shift)
    env.reset(seed=0)
    chosen = shifted_users(env.unwrapped.world, env.unwrapped.world.dynamics.shifts[0])
    assert 0.2 < len(chosen) / WORLD["num_users"] < 0.4
    jump = with_shift[3] - without[3]
    assert (jump[chosen] > 0.1).all()
    others = np.setdiff1d(np.arange(WORLD["num_users"]), chosen)
    np.testing.assert_array_equal(with_shift[3][others], without[3][others])


def test_the_same_seed_shifts_the_same_users_and_another_seed_others():
    env = make({"at": 2, "genre": "Drama", "share": 0.25})
    shift = env.unwrapped.world.dynamics.shifts[0]
    picks = []
    for seed in (0, 0, 1):
        env.reset(seed=seed)
        picks.append(shifted_users(env.unwrapped.world, shift))
    np.testing.assert_array_equal(picks[0], picks[1])
    assert not np.array_equal(picks[0], picks[2])


def test_a_trend_seeded_at_hubs_spreads_to_their_neighbors():
    shift = {"at": 1, "genre": "Comedy", "share": 0.05, "strength": 0.9, "seeding": "hubs"}
    env = make(shift)
    env.reset(seed=0)
    world = env.unwrapped.world
    hubs = shifted_users(world, world.dynamics.shifts[0])
    assert world.social.degrees()[hubs].min() >= np.sort(world.social.degrees())[-len(hubs)]
    friends = np.setdiff1d(np.unique(np.concatenate([world.social.indices[world.social.indptr[h]:
                                                                         world.social.indptr[h + 1]] for h in hubs])),
                           hubs)
    with_shift, without = run(make(shift), 30), run(make(), 30)
    gain = with_shift[-1][friends] - without[-1][friends]
    assert gain.mean() > 0.01  # the friends of the hubs, never shifted themselves, moved toward the trend
    assert (with_shift[0][friends] == without[0][friends]).all()  # ...and not at the shift itself


def test_sharded_runs_with_a_shift_equal_the_single_process():
    shift = {"at": 5, "genre": "Comedy", "share": 0.3}  # on a social-refresh tick: shift first, then refresh
    world = {**WORLD, "dynamics": {"shifts": [shift]}}
    one = ShardedRollout(world, "oracle", num_workers=1, seed=3, backend="local").run(12, final_rows=True)
    three = ShardedRollout(world, "oracle", num_workers=3, seed=3, backend="local").run(12, final_rows=True)
    np.testing.assert_array_equal(one.rows["interests"], three.rows["interests"])
    np.testing.assert_array_equal(one.steps["clicks"], three.steps["clicks"])


@pytest.mark.parametrize("shift, message", [
    ({"at": 3, "genre": "Polka"}, "shift.genre='Polka': not a genre of this catalog"),
    ({"at": 0, "genre": "Drama"}, "shift.at=0"),
    ({"at": 3, "genre": "Drama", "seeding": "celebrities"}, "seeding='celebrities'"),
    ({"at": 3, "genre": "Drama", "when": 2}, "dynamics.shifts: .*each has the fields at, genre"),
])
def test_a_bad_shift_is_refused_naming_the_field(shift, message):
    with pytest.raises(ValueError, match=message):
        make(shift)


def test_released_items_are_never_candidates_before_their_tick_and_are_after():
    releases = [{"at": 5, "count": 30}, {"at": 10, "count": 20}]
    env = gym.make_vec("RecSim-LLM-v0", num_envs=WORLD["num_users"], vectorization_mode="vector_entry_point",
                       **{**WORLD, "dynamics": {"releases": releases}})
    obs, _ = env.reset(seed=0)
    sim = env.unwrapped.sim
    policy = make_policy("random")
    policy.setup(env)
    highest = []
    for _ in range(14):
        highest.append(int(sim.candidates.max()))  # the candidates the next step shows
        obs, *_ = env.step(policy.act(obs))
    assert max(highest[:5]) < 150 and 150 <= max(highest[5:10]) < 180 and max(highest[10:]) >= 180
    assert available_items(200, tuple(ItemRelease(**r) for r in releases), 7) == 180  # ids 150..179 are out


def test_a_release_that_leaves_too_few_items_for_the_candidates_is_refused():
    with pytest.raises(ValueError, match="num_candidates=12 > the 10 items out before the releases"):
        gym.make_vec("RecSim-LLM-v0", num_envs=10, vectorization_mode="vector_entry_point",
                     **{**WORLD, "num_users": 10, "dynamics": {"releases": [{"at": 2, "count": 190}]}})


def test_the_audit_shows_the_trend_genre_take_a_larger_share_of_clicks_after_the_shift(tmp_path):
    from simenv.audit.report import write_report
    from simenv.audit.rundir import read_run, write_run

    shift = {"at": 8, "genre": "Comedy", "share": 0.9, "strength": 0.9}
    world = {**WORLD, "audit": {"interval": 2}, "dynamics": {"shifts": [shift]}}
    run = read_run(write_run(tmp_path / "oracle", "oracle", world, [0], 16))
    series = run.seeds[0].series
    clock, comedy = series["snap.clock"], series["snap.genre_share.Comedy"]
    before, after = comedy[clock <= 8].mean(), comedy[clock > 10].mean()
    assert after > before + 0.1
    shares = np.stack([v for k, v in series.items() if k.startswith("snap.genre_share.")])
    assert (shares <= 1).all() and (shares.sum(axis=0) >= 1 - 1e-9).all()  # an item may have several genres
    paths = write_report(tmp_path)
    assert (tmp_path / "plots" / "genres_over_time.png").exists()
    assert "Genre shares of clicks over time (dashed: the scheduled interest shift)" in paths["markdown"].read_text()
