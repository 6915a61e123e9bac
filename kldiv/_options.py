"""The process-wide settings of kldiv's CPU fast path: :func:`set_options` and :func:`options`."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_UNSET = object()


@dataclass(frozen=True)
class Options:
    """kldiv's settings; see :func:`set_options`."""

    threads: int | None = None
    compiled: bool = True
    parallel_min: int = 256 * 1024
    # float64 elements in one scratch tile: 512 KiB. Smaller tiles keep more in L2, but every
    # tile costs some twenty NumPy calls of Python overhead under the GIL, which the workers
    # then queue for: measured on the 2-core machine of benchmarks/RESULTS.md, 32K-element
    # tiles ran 1.3x faster on two threads than on one, 64K and 128K ones 1.5x. 64K keeps the
    # three tiles of a KL worker, two workers, at 3 MiB.
    tile: int = 64 * 1024


_current = Options()
_lock = threading.Lock()


def get_options() -> Options:
    """The settings in force.

    Examples
    --------
    >>> import kldiv
    >>> kldiv.get_options().compiled
    True
    """
    return _current


def _checked(changes: dict[str, object]) -> dict[str, object]:
    if "compiled" in changes and not isinstance(changes["compiled"], bool):
        raise TypeError(f"compiled must be a bool, got {changes['compiled']!r}")
    for name, least in (("threads", 1), ("parallel_min", 0), ("tile", 1)):
        value = changes.get(name, least)
        if value is None and name == "threads":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value!r}")
    return changes


def set_options(
    *,
    threads: int | object | None = _UNSET,
    compiled: bool | object = _UNSET,
    parallel_min: int | object = _UNSET,
    tile: int | object = _UNSET,
) -> Options:
    """Change kldiv's CPU settings for the whole process; returns the previous ones.

    Parameters
    ----------
    threads : int or None, optional
        Threads for the NumPy fast path (PyTorch CPU tensors included): None (the default)
        for one per CPU core this process may run on, 1 for none but the caller's.
    compiled : bool, optional
        Run the compiled C kernels where they were built (default True). False runs the pure
        NumPy tiles: the same results to a rounding, slower; for tests and benchmarks.
    parallel_min : int, optional
        Work of fewer elements for kldiv's Python thread pool (the NumPy tiles) runs on the
        calling thread (default 262144): below that, handing it to threads costs more than
        it saves. The compiled kernels share their rows with threads of their own, whose
        hand-over costs a few atomic operations: they decide by the call's size.
    tile : int, optional
        float64 elements per scratch tile of the NumPy tiles (default 65536), the rows of at
        most one tile that ``kl_div_logits`` and the loss fuse; a tiny one makes small tests
        cross tile boundaries.

    Returns
    -------
    Options
        The settings before the change, to pass back: ``kldiv.set_options(**vars(old))``.

    See Also
    --------
    options : the same for a ``with`` block.

    Examples
    --------
    >>> import kldiv
    >>> old = kldiv.set_options(threads=1)
    >>> kldiv.get_options().threads
    1
    >>> _ = kldiv.set_options(**vars(old))
    """
    global _current
    given = {"threads": threads, "compiled": compiled, "parallel_min": parallel_min, "tile": tile}
    changes = _checked({k: value for k, value in given.items() if value is not _UNSET})
    with _lock:
        previous = _current
        _current = dataclasses.replace(previous, **changes)  # type: ignore[arg-type]
    return previous


@contextlib.contextmanager
def options(**changes: object) -> Iterator[Options]:
    """:func:`set_options` for the duration of a ``with`` block, restored after it.

    The settings are the process's, not the thread's: a ``with`` block in one thread
    changes them for every thread until it ends.

    Examples
    --------
    >>> import numpy as np
    >>> import kldiv
    >>> with kldiv.options(compiled=False, threads=1):
    ...     kldiv.kl_div(np.array([0.5, 0.5]), np.array([0.25, 0.75]))
    array(0.14384104)
    """
    previous = set_options(**changes)
    try:
        yield get_options()
    finally:
        # only what this block changed: another thread's block may have changed the rest
        set_options(**{name: getattr(previous, name) for name in changes})
