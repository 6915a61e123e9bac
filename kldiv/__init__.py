"""Kullback-Leibler divergence done right, fast, and on any array library.

The functions take arrays of NumPy, CuPy, PyTorch, JAX, Dask or any library of the Python
array API standard, and return arrays of the same library, dtype and device.
"""

from kldiv._funcs import cross_entropy, entropy, js_div, kl_div, kl_div_logits, rel_entr
from kldiv._version import __version__
from kldiv.loss import KLDivergence, KLDivergenceError, softmax_kl_loss

__all__ = [
    "KLDivergence",
    "KLDivergenceError",
    "__version__",
    "cross_entropy",
    "entropy",
    "js_div",
    "kl_div",
    "kl_div_logits",
    "rel_entr",
    "softmax_kl_loss",
]
