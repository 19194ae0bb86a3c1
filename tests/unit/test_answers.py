"""Answer matching's routes (intent, similarity, none) on hand-built vectors: numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.mine.answers import match_answers

# three templates: two answer intent "a" (pointing along e0 and e1), one general (along e2)
ANSWERS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
INTENTS = ["a", "a", None]


def _match(q, preds, probs, **kw):
    return match_answers(
        np.asarray(q, dtype=np.float32),
        preds,
        probs,
        ANSWERS,
        INTENTS,
        min_confidence=kw.get("min_confidence", 0.5),
        min_score=kw.get("min_score", 0.6),
        unknown_label="unknown",
    )


def test_a_confident_prediction_picks_the_most_similar_template_of_its_intent() -> None:
    # the question is closest to the general template, but the classifier is sure of intent "a"
    idx, score, by = _match([[0.2, 0.5, 0.9]], ["a"], [0.9])
    assert idx.tolist() == [1] and by.tolist() == ["intent"]
    assert score[0] == pytest.approx(0.5 / np.linalg.norm([0.2, 0.5, 0.9]), abs=1e-6)


def test_an_unsure_or_unknown_or_unanswered_intent_falls_back_to_similarity_or_none() -> None:
    q = [[0.1, 0.0, 1.0], [0.1, 0.0, 1.0], [0.1, 0.0, 1.0], [0.6, 0.6, 0.55], [1.0, 0.05, 0.0], [1.0, 0.05, 0.0]]
    preds = ["a", "unknown", "b", "a", "b", "c"]
    idx, score, by = _match(q, preds, [0.3, 0.99, 0.99, None, 0.99, 0.2])
    # unsure (0.3), unknown, and a confident intent without templates (against the general template only)
    assert by.tolist()[:4] == ["similarity", "similarity", "similarity", "none"]
    assert idx.tolist()[:4] == [2, 2, 2, -1]
    assert np.isnan(score[3]) and (score[:3] > 0.99).all()
    # close to intent "a"'s template: a confident "b" may not take it (only general ones), an unsure "c" may
    assert by.tolist()[4:] == ["none", "similarity"] and idx.tolist()[4:] == [-1, 0]


def test_no_template_or_no_question_gives_empty_results() -> None:
    idx, score, by = match_answers(
        np.zeros((2, 3)), ["a", "a"], [1.0, 1.0], np.zeros((0, 3)), [], min_confidence=0.5, min_score=0.0
    )
    assert idx.tolist() == [-1, -1] and by.tolist() == ["none", "none"]
    idx, _, _ = match_answers(np.zeros((0, 3)), [], [], ANSWERS, INTENTS, min_confidence=0.5, min_score=0.0)
    assert len(idx) == 0
