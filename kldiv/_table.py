"""What each divergence is: one row per public function, read by everything else.

The public layer (:mod:`kldiv._funcs`) reads a row to know which arguments to check and how
to finish a result; the dispatch (:mod:`kldiv._dispatch`) looks each name up in every fast
path, and falls back to the generic code of :mod:`kldiv._agnostic`; the tests parametrize
over :data:`DIVERGENCES`. Adding a divergence is a row here, its generic implementation, its
public function with docstring, and its float64 NumPy reference in ``tests/_references.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The value checks the public layer knows, by name. An implementation that does one itself,
# in its own pass over the data, says so with :func:`kldiv._dispatch.fuses`.
VALUES = "values"  # probabilities: every entry finite and >= 0
NORMALISED = "normalised"  # probabilities: each distribution sums to 1 within the tolerance
LOGITS = "logits"  # logits: no NaN or +inf, and a finite entry in each distribution

Clip = Literal["never", "validated", "always"]


@dataclass(frozen=True)
class Divergence:
    """One public function.

    ``inputs`` are the positional arrays' names, as errors name them. ``logits`` says they
    are logits rather than probabilities. ``reduces`` is False for an elementwise function.
    ``base`` says whether ``base=`` applies (a logarithm is in the definition). ``clip`` says
    when a result below 0 is a rounding, and is returned as 0: ``"validated"`` when the rows
    were checked to be distributions, ``"always"``, or ``"never"`` (a sum of non-negative
    terms, or a quantity with no sign). ``finish`` is applied to the reduction by the public
    layer, last: every implementation returns what comes before it.
    """

    name: str
    inputs: tuple[str, ...]
    logits: bool = False
    reduces: bool = True
    base: bool = True
    clip: Clip = "never"
    finish: Literal["sqrt"] | None = None

    @property
    def checks(self) -> frozenset[str]:
        """The value checks ``validate=True`` asks for."""
        if self.logits:
            return frozenset({LOGITS})
        return frozenset({VALUES, NORMALISED} if self.reduces else {VALUES})

    def clips(self, validate: bool) -> bool:
        """Whether results below 0 become 0, for this ``validate``."""
        return self.clip == "always" or (self.clip == "validated" and validate)


DIVERGENCES: dict[str, Divergence] = {
    row.name: row
    for row in (
        Divergence("rel_entr", ("p", "q"), reduces=False, base=False),
        # KL >= 0 holds for distributions; a measure of another mass may go below 0
        Divergence("kl_div", ("p", "q"), clip="validated"),
        # each term is clipped at 0 itself, and so is the sum, for any input
        Divergence("kl_div_logits", ("a", "b"), logits=True, clip="always"),
        Divergence("entropy", ("p",)),
        Divergence("cross_entropy", ("p", "q")),
        Divergence("js_div", ("p", "q"), clip="always"),
        Divergence("hellinger", ("p", "q"), base=False, finish="sqrt"),
        Divergence("total_variation", ("p", "q"), base=False),
    )
}
