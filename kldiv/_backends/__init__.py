"""The fast paths, one per array library, each a package or module of its own.

Each exposes some of the functions of :mod:`kldiv._agnostic`, with the same signatures;
:mod:`kldiv._dispatch` picks, per function and library, the fast path's function where it
has one and the generic code where it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from kldiv._dispatch import fuses
from kldiv._typing import Array, Namespace

# What a bridge does for a function: (its name, the arrays, the keywords but xp) -> result.
Forward = Callable[[str, Sequence[Array], dict[str, Any]], Array]


def forwarding(name: str, fused: Collection[str], forward: Forward) -> Callable[..., Array]:
    """The fast path's function ``name``, called as the generic code's is (arrays, then
    ``validate``, ``xp`` and for reductions ``axes`` and ``keepdims``), that hands
    ``(name, arrays, keywords)`` to ``forward``, and says it fuses the checks ``fused``.

    A bridge computes every function the same way, by handing it on: written once here, not
    once per function and bridge. ``xp`` is left out: a bridge works in its target's namespace.
    """

    @fuses(*fused)
    def forwarded(*arrays: Array, xp: Namespace, **options: Any) -> Array:
        return forward(name, arrays, options)

    forwarded.__name__ = forwarded.__qualname__ = name
    forwarded.__doc__ = f"As :func:`kldiv._agnostic.{name}`, by :func:`{forward.__qualname__}`."
    return forwarded
