"""Cluster naming on the driver: stems, maximal marginal relevance, the term pick and the name-label check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmine_spark.mine.metrics import cluster_majority_labels
from dmine_spark.mine.naming import (
    Candidate,
    content_stems,
    mmr_select,
    name_label_overlap,
    names_overlap_labels,
    word_overlap,
    word_overlap_matrix,
)

STOPS = ["my", "the", "a", "is", "to"]


def test_content_stems_split_labels_and_drop_stop_words_and_numbers() -> None:
    assert content_stems("card_arrival") == {"card", "arriv"}
    assert content_stems("Where is my card arriving?", STOPS) == {"where", "card", "arriv"}
    assert content_stems("top up 2024 x", STOPS) == {"top", "up"}


def test_word_overlap_is_the_overlap_coefficient_of_stems() -> None:
    assert word_overlap("top up", "top") == 1.0
    assert word_overlap("disposable", "disposable cards") == 1.0
    assert word_overlap("card pin", "pin code") == 0.5
    assert word_overlap("cards", "card") == 1.0
    assert word_overlap("exchange rate", "refund") == 0.0
    assert word_overlap("", "card") == 0.0
    m = word_overlap_matrix(["top up", "top", "refund"])
    assert m.shape == (3, 3) and m[0, 1] == m[1, 0] == 1.0 and m[0, 2] == 0.0


def test_mmr_without_diversity_ranks_by_relevance() -> None:
    assert mmr_select([0.2, 0.9, 0.5], lambda i, j: 1.0, 3, diversity=0.0) == [1, 2, 0]


def test_mmr_skips_a_near_copy_of_a_picked_term() -> None:
    terms = ["card", "cards", "arrive"]
    rel = [1.0, 0.95, 0.6]
    picked = mmr_select(rel, lambda i, j: word_overlap(terms[i], terms[j]), 2, diversity=0.3)
    assert [terms[i] for i in picked] == ["card", "arrive"]


def test_mmr_takes_a_similarity_matrix_and_stops_at_the_candidates() -> None:
    sim = np.array([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert mmr_select([1.0, 0.9, 0.5], sim, 5, diversity=0.5) == [0, 2, 1]
    assert mmr_select([], sim, 3) == []
    # deferred: a near copy comes after every other item, however relevant
    assert mmr_select([1.0, 0.9, 0.1], sim, 3, diversity=0.0, defer_at=0.9) == [0, 2, 1]
    with pytest.raises(ValueError, match="diversity"):
        mmr_select([1.0], sim, 1, diversity=1.5)


def test_pick_terms_prefers_distinct_terms_and_reranks_by_centroid() -> None:
    pytest.importorskip("pyspark")
    from dmine_spark.mine.cluster import pick_terms

    cands = [Candidate("card", 1.0, 0.5), Candidate("cards", 0.9, 0.3), Candidate("arrive", 0.5, 0.2)]
    assert pick_terms(cands, 2) == ["card", "arrive"]
    vectors = {"card": [1.0, 0.0], "cards": [0.9, 0.1], "arrive": [0.0, 1.0]}
    picked = pick_terms(
        cands,
        1,
        term_vectors=lambda ts: np.array([vectors[t] for t in ts]),
        centroid=np.array([0.1, 1.0]),
    )
    assert picked == ["arrive"]
    assert pick_terms([], 3) == []


def test_pick_terms_ranks_common_and_typical_terms_first() -> None:
    pytest.importorskip("pyspark")
    from dmine_spark.mine.cluster import pick_terms

    cands = [
        Candidate("zanzibar", 9.0, 0.01, 40.0),  # rare in the cluster
        Candidate("said", 1.0, 0.6, 1.1),  # common everywhere
        Candidate("refund", 2.0, 0.3, 5.0),  # common here, typical of here
    ]
    assert pick_terms(cands, 3, min_share=0.1, min_lift=2.0) == ["refund", "zanzibar", "said"]
    # a common term inside a picked one comes after the others: not "rates" beside "exchange rates"
    rates = [
        Candidate("exchange rates", 2.0, 0.5, 9.0),
        Candidate("rates", 1.9, 0.6, 8.0),
        Candidate("fx", 1.0, 0.01, 9.0),
    ]
    assert pick_terms(rates, 3, min_share=0.1, min_lift=2.0) == ["exchange rates", "fx", "rates"]
    assert pick_terms(cands, 3) == ["zanzibar", "refund", "said"]


def test_name_label_overlap_counts_clusters_whose_name_shares_a_stem_with_the_label() -> None:
    names = {0: ["card", "arrive", "delivered"], 1: ["second", "businesses", "daughter"], 2: ["top up", "failed"]}
    labels = {0: "card_arrival", 1: "country_support", 2: "top_up_failed", 3: "cash_withdrawal"}
    hits = names_overlap_labels(names, labels, STOPS)
    assert hits == {0: True, 1: False, 2: True, 3: False}
    assert name_label_overlap(names, labels, STOPS) == 0.5
    assert math.isnan(name_label_overlap(names, {}))


def test_majority_label_breaks_ties_by_the_smaller_label() -> None:
    triples = [("b", 0, 5), ("a", 0, 5), ("c", 0, 1), ("x", 1, 2), ("y", 1, 7)]
    assert cluster_majority_labels(triples) == {0: "a", 1: "y"}
