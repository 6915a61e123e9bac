"""Smoke test of the benchmark scripts: ``--quick`` runs write complete JSON files.

It is in the project's ``testpaths``, so CI runs it. It checks structure only, every
workload or case with every side, never a speed or accuracy target: those depend on the
machine and on the kldiv being measured.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

FUNCTIONS = {
    f"W1-{name}"
    for name in ("entropy", "cross_entropy", "js_div", "hellinger", "total_variation", "rel_entr")
}
LOGITS = {"W1-logits", "W3-logits", "W2-logits", "WV-logits"}
LOSSES = {"W1-loss", "W2-loss", "W1-labels"}
WORKLOADS = {"W1", "W2", "W3", "W4", "W5"} | LOSSES | LOGITS | FUNCTIONS
# the jitted JAX one-liner is a side where JAX is installed
JAX = {"jax_jit"} if importlib.util.find_spec("jax") else set()
PROBABILITY_SIDES = JAX | {
    "kldiv",
    "kldiv_numpy",
    "numpy_naive",
    "scipy_rel_entr",
    "scipy_entropy",
    "torch",
    "floor_log",
    "floor_read",
}
LOGIT_SIDES = {"kldiv", "numpy_naive", "torch"}
LOSS_SIDES = {"kldiv", "kldiv_numpy", "numpy_naive", "torch"}
FUNCTION_SIDES = JAX | {"kldiv", "kldiv_numpy", "numpy_naive", "torch"}
SIDE_FIELDS = {
    "median_s",
    "samples_s",
    "ns_per_element",
    "spread",
    "ratio_to_naive",
    "peak_extra_bytes_tracemalloc",
    "peak_extra_bytes_rss",
    "max_rel_diff_vs_kldiv",
}
CASES = {"random", "peaked", "heavy", "zeros", "large"} | {
    f"near_{kl}" for kl in ("1e-09", "3e-09", "1e-08", "1e-07", "1e-06", "1e-05", "1e-04")
}
ACCURACY_SIDES = {
    "kldiv",
    "kldiv_numpy",
    "numpy_naive",
    "numpy_naive_f64",
    "scipy_rel_entr",
    "scipy_entropy",
    "torch",
}


@pytest.fixture(scope="module")
def scripts() -> tuple[ModuleType, ModuleType]:
    """The two scripts as modules; they import ``_common`` from their own folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(Path(__file__).resolve().parent))
        # Imported, not skipped when missing: a smoke test that skips proves nothing.
        bench = importlib.import_module("bench_cpu")
        accuracy = importlib.import_module("accuracy")
    return bench, accuracy


def _load(path: Path) -> dict:
    assert path.is_file(), path
    return json.loads(path.read_text())


def test_bench_cpu_quick(scripts: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    bench, _ = scripts
    bench.main(["--quick", "--repeat", "2", "--out", str(tmp_path)])
    data = _load(tmp_path / "results.json")
    assert (tmp_path / "results.md").read_text().startswith("# kldiv CPU benchmark")
    assert set(data["workloads"]) == WORKLOADS
    for name, workload in data["workloads"].items():
        expected = LOGIT_SIDES if name.endswith("-logits") else PROBABILITY_SIDES
        if name in FUNCTIONS:
            expected = FUNCTION_SIDES
        elif name in LOSSES:
            expected = LOSS_SIDES
        assert set(workload["sides"]) == expected, name
        for side, fields in workload["sides"].items():
            assert set(fields) == SIDE_FIELDS, (name, side)
            assert len(fields["samples_s"]) == 2
            assert fields["median_s"] > 0
            # tracemalloc cannot see PyTorch or XLA; everything else has a number.
            untraced = side in ("torch", "jax_jit")
            assert (fields["peak_extra_bytes_tracemalloc"] is None) == untraced
            # The RSS subprocess measures every side, PyTorch's included.
            assert isinstance(fields["peak_extra_bytes_rss"], int), (name, side, data["rss_note"])
    assert data["workloads"]["W1"]["kldiv_ratio_to_log_floor"] > 0
    # W1-W5, the four logits' two each and the vocabulary rows' memory, the functions, the
    # loss in float32 and float64 and the labels' loss (two each), the floor and memory;
    # W1-W5 against JAX
    assert len(data["targets"]) == 5 + 4 * 2 + 1 + 6 + 3 * 2 + 2 + (5 if JAX else 0)
    assert {"cpu_model", "numpy", "scipy", "torch", "torch_threads"} <= set(data["machine"])


def test_accuracy_quick(scripts: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    _, accuracy = scripts
    accuracy.main(["--quick", "--out", str(tmp_path)])
    data = _load(tmp_path / "accuracy.json")
    assert (tmp_path / "accuracy.md").read_text().startswith("# kldiv accuracy")
    expected = {f"{case}/{dtype}" for case in CASES for dtype in ("float32", "float64")}
    assert set(data["cases"]) == expected
    for key, case in data["cases"].items():
        assert set(case["max_rel_error"]) == ACCURACY_SIDES, key
        assert set(case["rel_error"]) == ACCURACY_SIDES, key
        assert len(case["kl_reference"]) == case["rows"], key
        assert isinstance(case["kldiv_negative"], bool)
    assert len(data["targets"]) == 5


def test_bench_libraries_quick(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(Path(__file__).resolve().parent))
        libraries = importlib.import_module("bench_libraries")
    libraries.main(["--quick", "--out", str(tmp_path)])
    data = _load(tmp_path / "bench_libraries.json")
    assert (tmp_path / "bench_libraries.md").read_text().startswith("# kldiv against each")
    # the cases with a target, and the sizes between without one
    sizes = {"jax-eager-2x3", "numpy-16x100", "torch-16x100", "jax-eager-16x100"}
    assert set(data["cases"]) == set(libraries.LIMITS) | sizes
    for name, case in data["cases"].items():
        assert case["results_agree"], name
        assert len(case["samples_s"]["kldiv"]) == 3
        assert case["ratio"] > 0
    assert "floor" in data["cases"]["dask"]["median_s"]
    assert len(data["targets"]) == len(libraries.LIMITS)


def test_accuracy_kernels_quick() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(Path(__file__).resolve().parent))
        kernels = importlib.import_module("accuracy_kernels")
    lines = kernels.main(["--rows", "1"])
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    # a header and 5 kernels x 2 dtypes x 4 kinds; a header and 6 loss cases
    assert len(rows) == 1 + 5 * 2 * len(kernels.KINDS) + 1 + 6
    assert all(len(row.split("|")) == 7 for row in rows)
