"""The per-process artefact cache every shipped model stage loads through (JVM-free)."""

from __future__ import annotations

import threading

import pytest

from dmine_spark.io.files import loaded_once


def test_an_artefact_is_loaded_once_per_kind_and_digest_across_threads() -> None:
    calls: list[bytes] = []

    def load(b: bytes) -> object:
        calls.append(b)
        return object()

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(loaded_once("t1", "d1", b"x", load))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(g) for g in got}) == 1
    other_kind = loaded_once("t2", "d1", b"x", load)
    other_digest = loaded_once("t1", "d2", b"y", load)
    assert calls == [b"x", b"x", b"y"]
    assert other_kind is not got[0] and other_digest is not got[0]


def test_a_failed_load_keeps_nothing_and_is_tried_again() -> None:
    def broken(b: bytes) -> object:
        raise ValueError("not an artefact")

    with pytest.raises(ValueError, match="not an artefact"):
        loaded_once("t3", "d", b"z", broken)
    assert loaded_once("t3", "d", b"z", lambda b: b.decode()) == "z"
