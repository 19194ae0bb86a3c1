"""The numpy min-hashes of near-duplicate detection: shingles, signatures and band keys, no JVM."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.prepare.neardup import (
    EMPTY_HASH,
    band_keys,
    char_shingle_hashes,
    minhash_signatures,
)


def _sets(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 2**63, int(rng.integers(1, 400)), dtype=np.uint64) for _ in range(n)]


def _flat(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    return (np.concatenate(sets) if sets else np.zeros(0, np.uint64)), offsets


def test_shingles_are_the_character_windows_of_each_text() -> None:
    texts = ["hello world", "abc", "", "héllo wörld", "hello world", "ab cd", "abcde"]
    hashes, offsets = char_shingle_hashes(texts, 5)
    sizes = np.diff(offsets)
    assert sizes.tolist() == [7, 1, 0, 7, 7, 1, 1]  # a text shorter than k, or of k characters, is one shingle
    per = [hashes[offsets[i] : offsets[i + 1]] for i in range(len(texts))]
    assert np.array_equal(per[0], per[4])  # same text, same hashes, whatever its place in the batch

    # the hashes stand for the windows exactly: distinct counts and overlaps are those of the strings
    def windows(t: str) -> set[str]:
        return {t} if len(t) <= 5 else {t[i : i + 5] for i in range(len(t) - 4)}

    for i in range(len(texts)):
        for j in range(len(texts)):
            assert len(set(per[i]) & set(per[j])) == len(windows(texts[i]) & windows(texts[j]) - {""})
    # windows never read across texts: "abc" next to "" and another text has its own single shingle
    assert char_shingle_hashes(["abc"], 5)[0][0] == per[1][0]
    assert char_shingle_hashes(["ab", "cd"], 5)[0][0] != char_shingle_hashes(["abcd"], 5)[0][0]
    # distinct windows of one text hash apart; repeats hash the same
    h, _ = char_shingle_hashes(["abababab"], 2)
    assert len(set(h.tolist())) == 2 and len(h) == 7
    with pytest.raises(ValueError, match="k must be a positive integer"):
        char_shingle_hashes(texts, 0)
    empty_h, empty_o = char_shingle_hashes([], 5)
    assert len(empty_h) == 0 and empty_o.tolist() == [0]


def test_signatures_are_equal_exactly_for_equal_sets_and_deterministic() -> None:
    rng = np.random.default_rng(3)
    sets = _sets(50, rng)
    shuffled = [rng.permutation(np.concatenate([s, s[:3]])) for s in sets]  # same sets: order and repeats differ
    h, o = _flat(sets + shuffled)
    sig = minhash_signatures(h, o, 64, seed=11)
    assert sig.shape == (100, 64) and sig.dtype == np.uint32
    assert np.array_equal(sig[:50], sig[50:])
    # different sets never share a whole signature
    assert len({row.tobytes() for row in sig[:50]}) == 50
    assert np.array_equal(sig, minhash_signatures(h, o, 64, seed=11))
    assert (sig != minhash_signatures(h, o, 64, seed=12)).mean() > 0.9
    # the batch does not matter: each set alone gives its row
    for i in (0, 17, 49):
        alone = minhash_signatures(sets[i], np.array([0, len(sets[i])]), 64, seed=11)
        assert np.array_equal(alone[0], sig[i])
    # the min-hash of a set is the minimum over its elements of one fixed function
    one = minhash_signatures(sets[0][:1], np.array([0, 1]), 64, seed=11)[0]
    assert np.all(sig[0] <= one)


def test_collision_rate_estimates_the_jaccard_similarity() -> None:
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 2**63, 5000, dtype=np.uint64)
    errors = []
    for shared, only in [(50, 50), (300, 100), (800, 100), (90, 300), (10, 500)]:
        a = pool[: shared + only]
        b = np.concatenate([pool[:shared], pool[2000 : 2000 + only]])
        h, o = _flat([a, b])
        sig = minhash_signatures(h, o, 2000, seed=1)
        jaccard = shared / (shared + 2 * only)
        errors.append(abs((sig[0] == sig[1]).mean() - jaccard))
    # 2000 functions: the standard error is at most 0.011
    assert max(errors) < 0.045, errors


def test_empty_sets_and_bad_offsets() -> None:
    rng = np.random.default_rng(0)
    sets = [np.zeros(0, np.uint64), *_sets(2, rng), np.zeros(0, np.uint64)]
    h, o = _flat(sets)
    sig = minhash_signatures(h, o, 8, seed=0)
    assert (sig[0] == EMPTY_HASH).all() and (sig[3] == EMPTY_HASH).all()
    assert (sig[1:3] != EMPTY_HASH).any()
    assert minhash_signatures(np.zeros(0, np.uint64), np.array([0]), 8, seed=0).shape == (0, 8)
    with pytest.raises(ValueError, match="offsets must rise"):
        minhash_signatures(h, o[:3], 8, seed=0)
    with pytest.raises(ValueError, match="offsets must rise"):
        minhash_signatures(h, o[::-1], 8, seed=0)
    with pytest.raises(ValueError, match="num_hashes must be at least 1"):
        minhash_signatures(h, o, 0, seed=0)


def test_slices_of_a_large_batch_give_the_same_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    import dmine_spark.prepare.neardup as nd

    rng = np.random.default_rng(9)
    sets = _sets(40, rng)
    sets[5] = np.zeros(0, np.uint64)
    h, o = _flat(sets)
    whole = minhash_signatures(h, o, 16, seed=2)
    monkeypatch.setattr(nd, "_CHUNK", 300)  # a few sets per slice, and sets larger than a slice
    assert np.array_equal(minhash_signatures(h, o, 16, seed=2), whole)


def test_band_keys_agree_exactly_where_the_band_agrees() -> None:
    rng = np.random.default_rng(1)
    sig = rng.integers(0, 2**32, (6, 12), dtype=np.uint64).astype(np.uint32)
    sig[1] = sig[0]
    sig[2] = sig[0]
    sig[2, 5] ^= 1  # band 1 (min-hashes 4..7) differs by one bit
    sig[3, 4:8] = sig[0, 4:8]  # only band 1 shared
    keys = band_keys(sig, 3, 4)
    assert keys.shape == (6, 3) and keys.dtype == np.int64
    assert np.array_equal(keys[0], keys[1])
    assert keys[2, 0] == keys[0, 0] and keys[2, 1] != keys[0, 1] and keys[2, 2] == keys[0, 2]
    assert keys[3, 1] == keys[0, 1] and keys[3, 0] != keys[0, 0]
    # a band's key depends on the order of its min-hashes
    swapped = sig.copy()
    swapped[4, 0:4] = sig[0, [1, 0, 2, 3]]
    assert band_keys(swapped, 3, 4)[4, 0] != keys[0, 0]
    with pytest.raises(ValueError, match="not 4 bands x 4 rows"):
        band_keys(sig, 4, 4)
