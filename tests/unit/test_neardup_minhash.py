"""The numpy min-hashes of near-duplicate detection: shingles, signatures and band keys, no JVM."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.prepare import neardup
from dmine_spark.prepare.neardup import (
    EMPTY_HASH,
    band_keys,
    char_shingle_hashes,
    component_minima,
    minhash_signatures,
    shingle_jaccard,
    sketch_cutoff,
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
    # the same min-hashes in two bands give two keys: one key column stands for (band, key)
    same = np.tile(sig[0, 0:4], 3).reshape(1, 12)
    assert len(set(band_keys(same, 3, 4)[0].tolist())) == 3
    with pytest.raises(ValueError, match="not 4 bands x 4 rows"):
        band_keys(sig, 4, 4)


def _reference_jaccard(a: str, b: str, k: int) -> float:
    def shingles(t: str) -> set[str]:
        if not t:
            return set()
        return {t} if len(t) < k else {t[i : i + k] for i in range(len(t) - k + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def test_shingle_jaccard_is_the_exact_jaccard_of_the_shingle_sets() -> None:
    rng = np.random.default_rng(3)
    words = ["top", "up", "card", "failed", "atm", "rate", "退款", "很慢", "é", "the", "the"]
    a = [" ".join(rng.choice(words, int(rng.integers(0, 12)))) for _ in range(400)]
    b = [t if i % 3 == 0 else t + " " + str(rng.choice(words)) for i, t in enumerate(a)]
    b[:5] = ["", "abc", "abcd", "the the the the", a[4]]
    a[:4] = ["", "abc", "abce", "the the"]
    for k in (1, 3, 5):
        got = shingle_jaccard(a, b, k)
        want = [_reference_jaccard(x, y, k) for x, y in zip(a, b, strict=True)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert shingle_jaccard([], [], 5).shape == (0,)


def test_shingle_jaccard_slices_do_not_mix_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    texts_a = [f"ticket number {i} about a card" for i in range(50)]
    texts_b = [f"ticket number {i} about a card!" for i in range(50)]
    whole = shingle_jaccard(texts_a, texts_b, 5)
    monkeypatch.setattr(neardup, "_PAIR_BITS", 3)  # slices of 8 pairs
    np.testing.assert_array_equal(shingle_jaccard(texts_a, texts_b, 5), whole)


def test_shingle_jaccard_refuses_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="texts_a"):
        shingle_jaccard(["a"], [], 5)


@pytest.mark.parametrize(("hashes", "threshold"), [(60, 0.8), (60, 0.9), (120, 0.7), (8, 0.5)])
def test_sketch_cutoff_drops_a_pair_at_the_threshold_at_most_miss_of_the_time(hashes: int, threshold: float) -> None:
    from math import comb

    def below(c: int) -> float:
        return sum(comb(hashes, i) * threshold**i * (1 - threshold) ** (hashes - i) for i in range(c))

    c = sketch_cutoff(hashes, threshold, miss=1e-4)
    assert below(c) <= 1e-4 < below(c + 1)
    assert sketch_cutoff(hashes, 1.0) == hashes  # identical sets agree everywhere


def test_arrow_bodies_keep_exactly_the_pairs_at_the_threshold() -> None:
    import pyarrow as pa

    base = "my card payment was declined at the shop yesterday evening"
    texts = [base, base + " again", "where can i top up my account with cash", base.replace("shop", "store")]
    nodes = pa.RecordBatch.from_arrays([pa.array([1, 2, 3, 4]), pa.array(texts)], names=["node", "norm"])
    (keyed,) = list(neardup._arrow_band_keys(iter([nodes]), shingle=5, num_bands=10, rows_per_band=6, seed=42))
    assert keyed.schema.names == ["node", "norm", "keys", "sketch"]
    assert keyed.column(0).to_pylist() == [1, 2, 3, 4] and keyed.column(1).to_pylist() == texts
    sketch = neardup._sketch_matrix(keyed.column(3), 60)
    assert sketch.shape == (4, 60)
    hashes, offsets = char_shingle_hashes(texts, 5)
    assert np.array_equal(sketch, minhash_signatures(hashes, offsets, 60, 42).astype(np.uint16))
    pairs = [(0, 1), (0, 2), (0, 3), (1, 3)]
    take = lambda side: pa.array([p[side] for p in pairs])  # noqa: E731
    left, right = keyed.take(take(0)), keyed.take(take(1))
    sketches = pa.RecordBatch.from_arrays(
        [left.column(0), right.column(0), left.column(3), right.column(3)], names=["a", "b", "sa", "sb"]
    )
    exact = shingle_jaccard([texts[a] for a, _ in pairs], [texts[b] for _, b in pairs], 5)
    cutoff = sketch_cutoff(60, 0.8)
    (likely,) = list(neardup._arrow_sketch_filter(iter([sketches]), width=60, cutoff=cutoff))
    agree = [int((sketch[i] == sketch[j]).sum()) for i, j in pairs]
    assert likely.column(0).to_pylist() == [i + 1 for (i, _), c in zip(pairs, agree, strict=True) if c >= cutoff]
    # the filter drops the unrelated pair and keeps every pair at the threshold
    assert 0 < likely.num_rows < len(pairs) and all(c >= cutoff for c, x in zip(agree, exact, strict=True) if x >= 0.8)
    # a cutoff no pair can reach keeps none
    assert list(neardup._arrow_sketch_filter(iter([sketches]), width=60, cutoff=61)) == []
    texts_of = pa.RecordBatch.from_arrays(
        [left.column(0), right.column(0), left.column(1), right.column(1)], names=["a", "b", "ta", "tb"]
    )
    out = pa.Table.from_batches(list(neardup._arrow_verify(iter([texts_of]), shingle=5, threshold=0.8)))
    want = [(i + 1, j + 1, x) for (i, j), x in zip(pairs, exact, strict=True) if x >= 0.8]
    assert want and len(want) < len(pairs)
    assert list(zip(*(out.column(c).to_pylist() for c in ("a", "b", "jaccard")), strict=True)) == want


def test_component_minima_labels_each_node_with_its_components_smallest_node() -> None:
    a = np.array(["r09", "r02", "r05", "r07", "r03"], dtype=object)
    b = np.array(["r08", "r01", "r02", "r08", "r02"], dtype=object)
    nodes, comps = component_minima(a, b)
    assert dict(zip(nodes.tolist(), comps.tolist(), strict=True)) == {
        "r01": "r01", "r02": "r01", "r03": "r01", "r05": "r01", "r07": "r07", "r08": "r07", "r09": "r07",
    }  # fmt: skip
    nodes, comps = component_minima(np.array([10, 3, 7]), np.array([3, 7, 2]))
    assert nodes.tolist() == [2, 3, 7, 10] and comps.tolist() == [2, 2, 2, 2]
    empty_nodes, empty_comps = component_minima(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert len(empty_nodes) == len(empty_comps) == 0
    with pytest.raises(ValueError, match="edge ends"):
        component_minima(np.array([1]), np.array([], dtype=np.int64))
