"""kldiv.set_options and kldiv.options: what they accept, what they change, and that they
restore only what a block changed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import kldiv
from kldiv._backends import numpy as numpy_path
from tests._helpers import random_distributions


def test_defaults_and_round_trip():
    options = kldiv.get_options()
    assert options == kldiv.Options()
    previous = kldiv.set_options(threads=1, tile=128)
    try:
        assert kldiv.get_options().threads == 1
        assert kldiv.get_options().tile == 128
        assert kldiv.get_options().compiled is options.compiled
    finally:
        kldiv.set_options(**vars(previous))
    assert kldiv.get_options() == options


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"threads": 0}, ValueError, "threads must be >= 1"),
        ({"threads": 1.5}, TypeError, "threads must be an int"),
        ({"threads": True}, TypeError, "threads must be an int"),
        ({"compiled": 1}, TypeError, "compiled must be a bool"),
        ({"parallel_min": -1}, ValueError, "parallel_min must be >= 0"),
        ({"tile": 0}, ValueError, "tile must be >= 1"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(changes, error, match):
    before = kldiv.get_options()
    with pytest.raises(error, match=match):
        kldiv.set_options(**changes)
    assert kldiv.get_options() == before


def test_every_setting_gives_the_same_results():
    rng = np.random.default_rng(0)
    p, q = (random_distributions(rng, (300, 500)).astype(np.float32) for _ in range(2))
    expected = kldiv.kl_div(p, q)
    for changes in (
        {"compiled": False},
        {"threads": 1},
        {"threads": 3, "parallel_min": 0},
        {"compiled": False, "tile": 1000, "parallel_min": 0},
    ):
        with kldiv.options(**changes):
            np.testing.assert_allclose(kldiv.kl_div(p, q), expected, rtol=1e-6, err_msg=changes)


def test_compiled_false_switches_the_kernels_off():
    with kldiv.options(compiled=False):
        assert numpy_path._kernels() is None
    assert (numpy_path._kernels() is None) == (numpy_path._native is None)


def test_a_block_restores_only_what_it_changed():
    """Two threads' blocks overlapping: each puts back its own settings alone."""
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with kldiv.options(tile=64):
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait(5)
    with kldiv.options(threads=1):
        assert kldiv.get_options().tile == 64
    assert kldiv.get_options().threads is None
    assert kldiv.get_options().tile == 64  # the other block is still open
    leave.set()
    thread.join()
    assert kldiv.get_options() == kldiv.Options()


def test_changing_settings_while_another_thread_computes():
    rng = np.random.default_rng(1)
    p, q = (random_distributions(rng, (200, 300)) for _ in range(2))
    expected = kldiv.kl_div(p, q)
    stop = threading.Event()

    def toggle() -> None:
        while not stop.is_set():
            for changes in ({"tile": 64, "threads": 3}, {"tile": 65536, "threads": 2}):
                kldiv.set_options(**changes)

    before = kldiv.set_options(compiled=False, parallel_min=0)
    thread = threading.Thread(target=toggle)
    thread.start()
    try:
        for _ in range(30):
            np.testing.assert_allclose(kldiv.kl_div(p, q), expected, rtol=1e-12)
    finally:
        stop.set()
        thread.join()
        kldiv.set_options(**vars(before))
