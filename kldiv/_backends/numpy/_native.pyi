"""Types of the compiled row kernels, ``_native.c`` (built when a C compiler is present)."""

from typing import Any

SOURCE_SHA256: str
PARALLEL_MIN: int

def kl_rows(
    p: Any,
    q: Any,
    out: Any,
    tolerance: float | None = None,
    variant: str | None = None,
    *,
    measures: bool = False,
    op: str = "kl",
    threads: int = 1,
) -> bool: ...
def rel_entr_rows(
    p: Any, q: Any, out: Any, variant: str | None = None, threads: int = 1
) -> int: ...
def kl_logit_rows(
    a: Any,
    b: Any,
    out: Any,
    variant: str | None = None,
    chunk: int | None = None,
    threads: int = 1,
) -> None: ...
def loss_rows(
    pred: Any,
    target: Any,
    grad: Any,
    errors: Any,
    scale: float,
    norm_target: bool,
    tolerance: float | None = None,
    variant: str | None = None,
    chunk: int | None = None,
    threads: int = 1,
) -> bool: ...
def loss_label_rows(
    pred: Any,
    labels: Any,
    grad: Any,
    errors: Any,
    scale: float,
    variant: str | None = None,
    threads: int = 1,
) -> None: ...
def variants() -> tuple[str, ...]: ...
