"""Each audit metric against a value worked out by hand on a tiny fixture."""
import math

import numpy as np
import pytest

from simenv.audit import diversity, exposure, fairness, hallucination, homogenization, popularity
from simenv.audit.errors import UndefinedMetric

# four items with interaction counts 5, 3, 1, 1: shares .5, .3, .1, .1
POP = np.array([5.0, 3.0, 1.0, 1.0])
SLATES = np.array([[0, 1], [2, 3]])


def test_the_short_head_is_the_fewest_items_holding_80_percent_of_interactions():
    # cumulative shares .5, .8 -> items 0 and 1 are the head
    assert popularity.long_tail(POP).tolist() == [False, False, True, True]


def test_arp_is_the_mean_popularity_share_of_recommended_items():
    # row 0: (.5 + .3) / 2 = .4; row 1: (.1 + .1) / 2 = .1; mean .25
    assert popularity.arp(SLATES, POP) == pytest.approx(0.25)


def test_aplt_is_the_mean_share_of_tail_items_per_slate():
    assert popularity.aplt(SLATES, popularity.long_tail(POP)) == pytest.approx(0.5)


def test_popularity_lift_compares_slates_with_each_users_own_history():
    # user 0 consumed item 2 (share .1) and is shown items with mean share .4: (.4 - .1) / .1 = 3;
    # user 1 has no history and is left out
    hist = np.array([[2, -1], [-1, -1]])
    assert popularity.popularity_lift(SLATES, hist, POP) == pytest.approx(3.0)


def test_popularity_lift_without_any_history_is_undefined_not_zero():
    with pytest.raises(UndefinedMetric, match="no user has a history"):
        popularity.popularity_lift(SLATES, np.full((2, 2), -1), POP)


def test_pop_rsp_and_reo_are_the_relative_spread_of_head_and_tail_rates():
    # rates .6 and .2: std .2 / mean .4 = .5
    assert popularity.pop_rsp([6, 2], [10, 10]) == pytest.approx(0.5)
    assert popularity.pop_reo([3, 3], [5, 5]) == pytest.approx(0.0)
    with pytest.raises(UndefinedMetric):
        popularity.pop_reo([1, 0], [2, 0])


def test_gini_by_counting_sort_equals_gini_on_integer_counts():
    rng = np.random.default_rng(0)
    for counts in ([0, 0, 0, 4], [4, 1, 3, 2], rng.poisson(3, 500), rng.zipf(1.5, 300) % 10_000):
        assert exposure.gini_of_counts(np.asarray(counts, float)) == pytest.approx(exposure.gini(counts), abs=1e-12)


def test_gini_is_zero_for_equal_exposure_and_three_quarters_when_one_of_four_items_takes_all():
    # sorted [0, 0, 0, 4]: sum (2k - n - 1) x_k = (8 - 5) * 4 = 12; / (n * sum) = 12 / 16
    assert exposure.gini([0, 0, 0, 4]) == pytest.approx(0.75)
    assert exposure.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    # [1, 2, 3, 4]: (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10 / 40
    assert exposure.gini([4, 1, 3, 2]) == pytest.approx(0.25)


def test_entropy_coverage_and_top_share_of_exposure():
    assert exposure.entropy([1, 1, 1, 1]) == pytest.approx(1.0)
    assert exposure.entropy([0, 0, 0, 4]) == pytest.approx(0.0)
    # two of four items equally: log 2 / log 4
    assert exposure.entropy([0, 2, 0, 2]) == pytest.approx(0.5)
    assert exposure.coverage([0, 2, 0, 2]) == 0.5
    # the top 25% of four items is one item, holding 4 of 10
    assert exposure.top_share([1, 2, 3, 4], 0.25) == pytest.approx(0.4)


def test_the_lorenz_curve_runs_from_the_least_to_the_most_exposed_item():
    items, share = exposure.lorenz([0, 0, 0, 4])
    assert items.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert share.tolist() == [0, 0, 0, 0, 1]


def test_exposure_metrics_refuse_to_divide_by_zero():
    with pytest.raises(UndefinedMetric, match="nothing was shown"):
        exposure.gini(np.zeros(3))
    with pytest.raises(ValueError):
        exposure.gini([-1, 2])


def test_position_weights_are_the_dcg_discount():
    assert exposure.position_weights(3) == pytest.approx([1, 1 / math.log2(3), 0.5])


GENRES = np.array([[1, 0], [1, 1], [0, 1]], bool)


def test_genre_distribution_averages_each_items_genre_shares():
    # item 0 -> [1, 0], item 1 -> [.5, .5]; mean [.75, .25]; the empty row stays zero
    dist = diversity.genre_distribution(np.array([[0, 1], [-1, -1]]), GENRES)
    assert dist.tolist() == [[0.75, 0.25], [0, 0]]


def test_miscalibration_is_steck_kl_with_the_history_mixed_into_the_slate():
    # p = [1, 0] (history: item 0), q = [0, 1] (slate: item 2); q~ = .99 q + .01 p = [.01, .99];
    # KL = 1 * log(1 / .01)
    kl = diversity.miscalibration(np.array([[0]]), np.array([[2]]), GENRES)
    assert kl == pytest.approx([math.log(100)])
    assert diversity.miscalibration(np.array([[0]]), np.array([[0]]), GENRES) == pytest.approx([0.0])


def test_intra_list_diversity_averages_cosine_distance_over_pairs():
    emb = np.array([[1, 0], [0, 1], [2, 0]], np.float32)
    # pairs (0,1): 1, (0,2): 0, (1,2): 1 -> 2/3
    assert diversity.intra_list_diversity(np.array([[0, 1, 2]]), emb) == pytest.approx([2 / 3])


def test_novelty_is_the_mean_self_information_of_the_slate():
    # shares .5 and .25: -log2 -> 1 and 2
    assert diversity.novelty(np.array([[0, 1]]), np.array([2.0, 1.0, 1.0])) == pytest.approx([1.5])


def test_group_rates_keep_a_group_without_data_as_nan_and_gaps_use_only_defined_groups():
    r = fairness.rates(np.array([1, 0, 1]), np.array([2, 0, 4]), ("a", "b", "c"))
    assert r["a"] == 0.5 and math.isnan(r["b"]) and r["c"] == 0.25
    assert fairness.gap(r) == pytest.approx((0.25, 0.5))
    with pytest.raises(UndefinedMetric, match="at least 2 groups"):
        fairness.gap({"a": 0.5, "b": math.nan})


def test_item_group_exposure_is_mean_exposure_per_item_and_an_empty_group_is_an_error():
    assert fairness.exposure_by_item_group(np.array([4, 0, 2, 2]), np.array([0, 0, 1, 1]), ("head", "tail")) == {
        "head": 2.0, "tail": 2.0}
    with pytest.raises(ValueError, match="hold no items"):
        fairness.exposure_by_item_group(np.array([4, 0]), np.array([0, 0]), ("head", "tail"))


def test_an_unknown_user_attribute_is_an_error_naming_the_valid_ones(small_world):
    with pytest.raises(ValueError, match="'height' does not exist.*gender"):
        fairness.user_groups(small_world.population.persona, "height")
    codes, names = fairness.user_groups(small_world.population.persona, "age_band")
    assert codes.max() < len(names) and names[0] == "18-24"


def test_jaccard_counts_each_item_once_and_leaves_empty_pairs_undefined():
    a = np.array([[1, 2, -1], [1, 1, 2], [-1, -1, -1]])
    b = np.array([[2, 3, -1], [1, 2, -1], [-1, -1, -1]])
    sim = homogenization.jaccard(a, b)
    assert sim[0] == pytest.approx(1 / 3) and sim[1] == pytest.approx(1.0) and math.isnan(sim[2])


def test_dispersion_of_two_orthogonal_tastes():
    # per-dimension variance .25 + .25; mean pairwise cosine 0
    assert homogenization.dispersion(np.array([[1.0, 0], [0, 1]])) == pytest.approx((0.5, 0.0))
    assert homogenization.dispersion(np.array([[1.0, 0], [1, 0]])) == pytest.approx((0.0, 1.0))


def test_neighbor_similarity_is_the_mean_cosine_along_edges():
    # path 0 - 1 - 2; tastes: users 0 and 1 alike, user 2 orthogonal
    indptr = np.array([0, 1, 3, 4])
    indices = np.array([1, 0, 2, 1])
    interests = np.array([[[1.0, 0]], [[1, 0]], [[0, 1]]], np.float32)
    weights = np.ones((3, 1), np.float32)
    assert homogenization.neighbor_similarity(np.array([0]), indptr, indices, interests, weights) == pytest.approx(1)
    assert homogenization.neighbor_similarity(np.array([1]), indptr, indices, interests, weights) == pytest.approx(.5)
    with pytest.raises(UndefinedMetric):
        homogenization.neighbor_similarity(np.array([0]), np.zeros(4, np.int64), indices[:0], interests, weights)


def test_genre_entropy_of_consumption():
    assert homogenization.genre_entropy(np.array([[0, 0], [1, -1]]), GENRES) == pytest.approx([0.0, 1.0])


def test_titles_match_the_catalog_whatever_their_case_quotes_or_year():
    assert hallucination.normalize_title('  "Toy  Story (1995)". ') == "toy story"


def test_grounding_separates_hallucinated_out_of_candidate_and_duplicate_titles():
    index = hallucination.TitleIndex(["Toy Story (1995)", "Heat (1995)", "Up"])
    g = hallucination.ground(index, [["toy story", "Made Up Film", "Heat", "TOY STORY"]], np.array([[0, 2]]))
    assert g.items.tolist() == [0, -1, 1, 0]
    assert g.counts() == {"emitted": 4, "hallucinated": 1, "out_of_candidates": 1, "duplicates": 1}
    rates = hallucination.hallucination_rates({**g.counts(), "answers": 4, "valid": 3})
    assert rates["hallucination_rate"] == 0.25 and rates["valid_ratio"] == 0.75


def test_an_answer_is_valid_when_it_names_exactly_one_candidate():
    cands = ["Heat (1995)", "Up"]
    assert hallucination.valid_answer("I would pick Heat.", cands)
    assert not hallucination.valid_answer("Heat, or maybe Up", cands)
    assert not hallucination.valid_answer("Casablanca", cands)


def test_rates_without_a_denominator_are_nan_not_zero():
    assert math.isnan(hallucination.hallucination_rates({})["hallucination_rate"])
