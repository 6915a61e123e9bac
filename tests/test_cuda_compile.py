"""Proof (a): every CUDA source of the CuPy backend compiles for real GPUs, without one.

Each source goes through NVRTC as ``cupy.RawModule`` would send it (CuPy's own options: its
C++ standard, ``-ftz=true``, ``--device-as-default-execution-space`` and its include paths,
plus the backend's), for compute capabilities 7.5, 8.0 and 9.0, and NVRTC must have nothing
to say: a warning fails the test. ``ptxas -v`` then assembles each PTX for the matching
``sm_``: no kernel may spill, and each must fit the register budget that its
``__launch_bounds__`` promises. NVRTC is called directly, since CuPy's compile path first asks
the driver for a device, and there is no GPU in CI.

``python tests/test_cuda_compile.py`` prints the register table of docs/cuda.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from kldiv._backends.cupy import _launcher, _sources

ARCHS = ("75", "80", "90")
DTYPES = ("float16", "float32", "float64")
ENTRY_POINTS = {
    _sources.DIVERGENCES: [
        f"{op}_{dtype}"
        for op in (
            "rel_entr",
            "kl_div",
            "kl_div_measures",
            "entropy",
            "cross_entropy",
            "js_div",
            "hellinger",
            "total_variation",
            "kl_div_logits",
        )
        for dtype in DTYPES
    ],
    _sources.LOSS: [f"softmax_kl_loss_{dtype}" for dtype in DTYPES],
}
# A thread of a block of MAX_BLOCK_THREADS may hold this many registers (64K per block).
REGISTER_BUDGET = 65536 // _sources.MAX_BLOCK_THREADS

_PTXAS_FUNCTION = re.compile(
    r"Compiling entry function '(?P<name>\w+)' for 'sm_\d+'\s*\n"
    r"(?:.*\n)*?.*?(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
    r"(?P<loads>\d+) bytes spill loads\s*\n"
    r".*?Used (?P<registers>\d+) registers(?:.*?(?P<smem>\d+) bytes smem)?"
)


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as e:  # no CuPy, or no libnvrtc where CuPy looks
        pytest.skip(f"NVRTC is not available through CuPy ({type(e).__name__}: {e})")
    return nvrtc


def _cupy_options() -> tuple[str, ...]:
    """What ``cupy.RawModule(code=..., options=...)`` hands NVRTC besides ``-arch``: CuPy's
    ``assemble_cupy_compiler_options`` (C++ standard, CCCL, CuPy and CUDA include paths),
    then ``-ftz=true`` (``_compile_with_cache_cuda``) and
    ``--device-as-default-execution-space`` (``compile_using_nvrtc``)."""
    from cupy._core import core

    try:
        options = core.assemble_cupy_compiler_options(_sources.nvrtc_options())
    except RuntimeError as e:  # CuPy found no CUDA headers (cuda_fp16.h)
        pytest.skip(f"CuPy cannot assemble its NVRTC options: {e}")
    return (*options, "-ftz=true", "--device-as-default-execution-space")


@cache
def _compile(source: Path, arch: str) -> tuple[str, bytes]:
    """NVRTC's log and PTX for ``source`` on ``compute_<arch>``."""
    nvrtc = _nvrtc()
    options = (*_cupy_options(), f"-arch=compute_{arch}")
    program = nvrtc.createProgram(source.read_text(), str(source), [], [])
    try:
        try:
            nvrtc.compileProgram(program, list(options))
        except nvrtc.NVRTCError as e:
            pytest.fail(f"NVRTC failed on {source.name}: {e}\n{nvrtc.getProgramLog(program)}")
        return nvrtc.getProgramLog(program), nvrtc.getPTX(program).rstrip(b"\0")
    finally:
        nvrtc.destroyProgram(program)


def _ptxas() -> str:
    """ptxas of the CUDA 12 wheel (nvidia-cuda-nvcc-cu12) if installed, else one on PATH."""
    try:
        import nvidia.cuda_nvcc

        wheel = Path(next(iter(nvidia.cuda_nvcc.__path__))) / "bin" / "ptxas"
        if wheel.is_file():
            return str(wheel)
    except ImportError:
        pass
    found = shutil.which("ptxas")
    if found is None:
        pytest.skip("no ptxas (pip install nvidia-cuda-nvcc-cu12)")
    return found


@cache
def _assemble(source: Path, arch: str) -> dict[str, dict[str, int]]:
    """``ptxas -v`` on the PTX of ``source``: per entry point, its registers, stack frame,
    spill stores and loads, and static shared memory."""
    _, ptx = _compile(source, arch)
    proc = subprocess.run(
        [_ptxas(), "-v", f"-arch=sm_{arch}", "-o", "/dev/null", "-"],
        input=ptx,
        capture_output=True,
        check=False,
    )
    report = proc.stderr.decode()
    assert proc.returncode == 0, report
    return {
        m["name"]: {
            "registers": int(m["registers"]),
            "stack": int(m["stack"]),
            "spill_stores": int(m["stores"]),
            "spill_loads": int(m["loads"]),
            "smem": int(m["smem"] or 0),
        }
        for m in _PTXAS_FUNCTION.finditer(report)
    }


SOURCE_ARCHS = [
    pytest.param(source, arch, id=f"{source.name}-sm_{arch}")
    for source in _sources.SOURCES
    for arch in ARCHS
]


@pytest.mark.parametrize(("source", "arch"), SOURCE_ARCHS)
def test_nvrtc_compiles_without_a_warning(source, arch):
    log, ptx = _compile(source, arch)
    assert log.strip() == "", f"NVRTC said, for {source.name} on compute_{arch}:\n{log}"
    for name in ENTRY_POINTS[source]:
        assert f".entry {name}(".encode() in ptx, f"{name} missing from the PTX"


def test_the_warning_check_would_see_a_warning():
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(
        'extern "C" __global__ void k(float* x) { int unused = 0; x[0] = 1; }', "w.cu", [], []
    )
    try:
        nvrtc.compileProgram(program, [*_cupy_options(), "-arch=compute_75"])
        assert "warning" in nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)


@pytest.mark.parametrize(("source", "arch"), SOURCE_ARCHS)
def test_ptxas_assembles_without_spills(source, arch):
    functions = _assemble(source, arch)
    assert sorted(functions) == sorted(ENTRY_POINTS[source])
    for name, usage in functions.items():
        assert usage["spill_stores"] == usage["spill_loads"] == usage["stack"] == 0, (name, usage)
        assert usage["registers"] <= REGISTER_BUDGET, (name, usage)
        if source == _sources.LOSS:
            # The launcher leaves this much of a block's shared memory to static variables.
            assert usage["smem"] <= _launcher.LOSS_STATIC_SHARED, (name, usage)
    print(
        f"\n{source.name} sm_{arch} registers:", {n: u["registers"] for n, u in functions.items()}
    )


def register_table() -> str:
    """The Markdown table of registers per thread, kernel by architecture."""
    header = "| kernel | " + " | ".join(f"sm_{arch}" for arch in ARCHS) + " |"
    lines = [header, "|" + " --- |" * (len(ARCHS) + 1)]
    for source in _sources.SOURCES:
        usage = {arch: _assemble(source, arch) for arch in ARCHS}
        for name in ENTRY_POINTS[source]:
            counts = " | ".join(str(usage[arch][name]["registers"]) for arch in ARCHS)
            lines.append(f"| `{name}` | {counts} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(register_table())
