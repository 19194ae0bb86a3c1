"""Cluster names a person would write: term selection and the check of names against labels.

The cluster stage counts candidate terms in Spark (words and word n-grams,
each with the share of the cluster's texts it occurs in and its class-based
TF-IDF score, :func:`dmine_spark.mine.cluster.cluster_terms`). The functions
here pick each cluster's terms from those candidates, on the driver, and
score names against labels. They are pure functions of small inputs (a few
dozen candidates per cluster), tested without a JVM.

Methods
-------
- Class-based TF-IDF: M. Grootendorst, "BERTopic: Neural topic modeling with
  a class-based TF-IDF procedure", arXiv:2203.05794 (2022).
- Maximal marginal relevance (MMR): J. Carbonell and J. Goldstein, "The use of
  MMR, diversity-based reranking for reordering documents and producing
  summaries", SIGIR 1998. Here it keeps a name's terms apart: "disposable"
  is not picked beside "disposable cards" when another strong term exists.
- Re-ranking candidate terms by the cosine of their embedding to the
  cluster's centroid follows KeyBERT (M. Grootendorst, 2020,
  https://github.com/MaartenGr/KeyBERT), on dmine_spark's own encoder.
- Stems: the Snowball English (Porter 2) stemmer, from the ``snowballstemmer``
  package.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Candidate",
    "content_stems",
    "mmr_select",
    "name_label_overlap",
    "names_overlap_labels",
    "word_overlap",
    "word_overlap_matrix",
]

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class Candidate:
    """One candidate term of a cluster, as counted in Spark.

    Attributes
    ----------
    term : str
        One word or a word n-gram (words joined by one space), lowercased.
    score : float
        Its class-based TF-IDF score in the cluster (higher is more typical).
    share : float
        The share of the cluster's texts it occurs in, in [0, 1].
    lift : float
        ``share`` over the share of all texts it occurs in (above 1: typical of the cluster).
    """

    term: str
    score: float
    share: float
    lift: float = 1.0


@functools.cache
def _stemmer(language: str) -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer(language)


def content_stems(text: str, stop_words: Iterable[str] = (), *, language: str = "english") -> frozenset[str]:
    """The stems of ``text``'s words that are not stop words.

    Words are runs of letters and digits (``_`` and punctuation split them,
    so a label ``card_arrival`` gives ``card`` and ``arriv``). Words of one
    character and numbers are left out. Texts without spaces between words
    (Chinese) give their runs whole; segment them first.

    Parameters
    ----------
    text : str
    stop_words : iterable of str
        Lowercase words left out.
    language : str
        A Snowball stemmer language (``english``, ``german``...).

    Returns
    -------
    frozenset of str
    """
    stops = set(stop_words)
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 and not w.isdigit() and w not in stops]
    return frozenset(_stemmer(language).stemWords(words))


def _overlap(sa: frozenset[str], sb: frozenset[str]) -> float:
    return len(sa & sb) / min(len(sa), len(sb)) if sa and sb else 0.0


def word_overlap(a: str, b: str, *, language: str = "english") -> float:
    """How much two terms say the same, by their words' stems: the overlap coefficient, in [0, 1].

    ``|A ∩ B| / min(|A|, |B|)`` over the two sets of stems (Szymkiewicz–Simpson),
    so a term inside another counts as fully alike: ``"disposable"`` and
    ``"disposable cards"`` give 1.0, ``"top up"`` and ``"top ups"`` 1.0,
    ``"exchange rate"`` and ``"rate"`` 1.0, ``"card pin"`` and ``"pin code"`` 0.5.
    """
    return _overlap(content_stems(a, language=language), content_stems(b, language=language))


def word_overlap_matrix(terms: Sequence[str], *, language: str = "english") -> np.ndarray:
    """:func:`word_overlap` of every pair of ``terms``: an array of shape (n, n), each term stemmed once."""
    stems = [content_stems(t, language=language) for t in terms]
    return np.array([[_overlap(a, b) for b in stems] for a in stems], dtype=np.float64).reshape(len(stems), len(stems))


def mmr_select(
    relevance: Sequence[float],
    similarity: Callable[[int, int], float] | np.ndarray,
    n: int,
    *,
    diversity: float = 0.5,
    defer_at: float | None = None,
) -> list[int]:
    """Maximal marginal relevance: pick ``n`` items that are relevant and unlike each other.

    The first pick is the most relevant item; each next one maximises
    ``(1 - diversity) * relevance[i] - diversity * max(similarity(i, j) for j picked)``
    (Carbonell & Goldstein 1998, with KeyBERT's ``diversity`` convention).

    Parameters
    ----------
    relevance : sequence of float, length m
        Each candidate's relevance, best scaled to [0, 1].
    similarity : callable ``(i, j) -> float`` or array of shape (m, m)
        Similarity of two candidates, in [0, 1] for words or [-1, 1] for cosines.
    n : int
        Items to pick (fewer when there are fewer candidates).
    diversity : float
        0 ranks by relevance alone; 1 by dissimilarity alone.
    defer_at : float, optional
        An item at least this similar to a picked one is picked only when every other item is too
        (with word overlap, 1.0: a term whose stems all occur in a picked term, or the reverse).

    Returns
    -------
    list of int
        Indexes into ``relevance``, in the order picked.

    Raises
    ------
    ValueError
        When ``diversity`` is outside [0, 1].
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    sim = similarity.__getitem__ if isinstance(similarity, np.ndarray) else None
    rel = list(relevance)
    left = list(range(len(rel)))
    picked: list[int] = []

    def redundancy(i: int) -> float:
        return max((float(sim((i, j))) if sim else similarity(i, j)) for j in picked)  # type: ignore[operator]

    while left and len(picked) < n:
        if not picked:
            best = max(left, key=lambda i: (rel[i], -i))
        else:
            red = {i: redundancy(i) for i in left}
            pool = [i for i in left if defer_at is None or red[i] < defer_at] or left
            best = max(pool, key=lambda i: ((1.0 - diversity) * rel[i] - diversity * red[i], -i))
        picked.append(best)
        left.remove(best)
    return picked


def names_overlap_labels(
    names: Mapping[int, Sequence[str]],
    majority_labels: Mapping[int, str],
    stop_words: Iterable[str] = (),
    *,
    language: str = "english",
) -> dict[int, bool]:
    """Whether each labelled cluster's name shares a content word (by stem) with its majority label.

    Parameters
    ----------
    names : mapping of cluster id to its name's terms
    majority_labels : mapping of cluster id to the most frequent label of its labelled rows
    stop_words : iterable of str
    language : str
        The Snowball stemmer's language.

    Returns
    -------
    dict of int to bool
        For every cluster in ``majority_labels`` (a cluster without a name does not overlap).
    """
    stops = frozenset(stop_words)
    out = {}
    for cluster, label in majority_labels.items():
        name_stems: set[str] = set()
        for term in names.get(cluster, ()):
            name_stems |= content_stems(term, stops, language=language)
        out[cluster] = bool(name_stems & content_stems(label, stops, language=language))
    return out


def name_label_overlap(
    names: Mapping[int, Sequence[str]],
    majority_labels: Mapping[int, str],
    stop_words: Iterable[str] = (),
    *,
    language: str = "english",
) -> float:
    """The share of labelled clusters whose name shares a content word with the cluster's majority label.

    A cheap check that names say what a person who labelled the data would
    say: on BANKING77, the name "card / arrive / delivered" shares "card" with
    the intent ``card_arrival``. Words are compared by Snowball stem, without
    stop words (:func:`names_overlap_labels`).

    Returns
    -------
    float
        In [0, 1]; ``nan`` when no cluster has a labelled row.
    """
    hits = names_overlap_labels(names, majority_labels, stop_words, language=language)
    return float(np.mean(list(hits.values()))) if hits else float("nan")
