"""Kullback-Leibler divergence done right, fast, and on any array library.

The functions take arrays of NumPy, CuPy, PyTorch, JAX, Dask or any library of the Python
array API standard, and return arrays of the same library, dtype and device.
"""

from kldiv import _funcs, distributions
from kldiv._funcs import *  # noqa: F403 (the divergences: _funcs.__all__)
from kldiv._options import Options, get_options, options, set_options
from kldiv._version import __version__
from kldiv.loss import KLDivergence, KLDivergenceError, softmax_kl_loss

__all__ = [
    *_funcs.__all__,
    "KLDivergence",
    "KLDivergenceError",
    "Options",
    "__version__",
    "distributions",
    "get_options",
    "options",
    "set_options",
    "softmax_kl_loss",
]
