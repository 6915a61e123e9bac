"""What ``bench_cpu.py`` and ``accuracy.py`` share: machine description, targets, tables."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import operator
import os
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

import kldiv
from kldiv._backends import numpy as _numpy_backend

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: ``value op limit`` passes; a missing value misses."""

    description: str
    value: float | None
    op: str
    limit: float

    @property
    def passed(self) -> bool:
        return self.value is not None and _OPS[self.op](self.value, self.limit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "value": self.value,
            "op": self.op,
            "limit": self.limit,
            "passed": self.passed,
        }


def json_safe(x: Any) -> Any:
    """``x`` with every NaN or infinite float, which strict JSON lacks, as "nan", "inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def targets_table(targets: Sequence[Target], fmt: str) -> str:
    rows = [
        [
            t.description,
            "n/a" if t.value is None else format(t.value, fmt),
            f"{t.op} {t.limit:g}",
            "PASS" if t.passed else "MISS",
        ]
        for t in targets
    ]
    return markdown_table(["target", "measured", "limit", "result"], rows)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded so that it lines up in a terminal too."""
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(n) for c, n in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * n for n in widths) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numpy_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with kldiv's compiled kernels switched off (``kldiv.options``): kldiv's pure
    NumPy path, which is what runs where the kernels were not built."""

    def call(*args: Any) -> Any:
        with kldiv.options(compiled=False):
            return fn(*args)

    return call


def native_variants() -> tuple[str, ...] | str:
    """The compiled variants this CPU runs, best (the one used) first, or why there are none."""
    native = _numpy_backend._native
    return "not built: kldiv runs in pure NumPy" if native is None else native.variants()


def machine() -> dict[str, Any]:
    """CPU, library versions and SIMD/BLAS facts that timings and roundings depend on."""
    config = np.show_config(mode="dicts")
    simd = config.get("SIMD Extensions", {})
    blas = config.get("Build Dependencies", {}).get("blas", {})
    try:
        import threadpoolctl

        pools: Any = threadpoolctl.threadpool_info()
    except ImportError:
        pools = "threadpoolctl not installed"
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        # The machine is shared: the load when the run started says how noisy it was.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "kldiv": kldiv.__version__,
        # Which checkout was measured: the working tree, or another one on PYTHONPATH.
        "kldiv_path": str(Path(kldiv.__file__).resolve().parent),
        "kldiv_native_variants": native_variants(),
        "torch_threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "not set"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy_simd_baseline": simd.get("baseline"),
        "numpy_simd_found": simd.get("found"),
        "numpy_blas": f"{blas.get('name')} {blas.get('version')}",
        "threadpoolctl": pools,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "not set"),
    }


def machine_lines(info: dict[str, Any]) -> list[str]:
    return [f"- {key}: {value}" for key, value in info.items()]


def write_outputs(out: Path, stem: str, data: dict[str, Any], text: str) -> None:
    """``out/stem.json``, strict JSON (see :func:`json_safe`), and ``out/stem.md``."""
    out.mkdir(parents=True, exist_ok=True)
    text_json = json.dumps(json_safe(data), indent=2, allow_nan=False)
    (out / f"{stem}.json").write_text(text_json + "\n")
    (out / f"{stem}.md").write_text(text)


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    """No cyclic garbage collection inside: a collection would land on whichever side ran.

    (``gc.collect()`` before each call would be no better: with PyTorch loaded, it costs
    about 0.1 s, more than most of the calls measured.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
