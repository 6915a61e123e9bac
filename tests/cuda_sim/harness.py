"""Build CUDA C kernel sources with g++ against cuda_sim.h and launch them as CuPy does.

``SimModule`` stands in for ``cupy.RawModule(code=...)`` and ``SimFunction`` for the
kernel that ``get_function`` returns; NumPy arrays stand in for device arrays. See
README.md for what is and is not emulated.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEADER = Path(__file__).resolve().parent / "cuda_sim.h"
CXX = "g++"
CXXFLAGS = ("-O1", "-std=c++20", "-pthread", "-fPIC", "-fdata-sections")
SCHEDULES = ("free", "forward", "reverse", "random")
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIMS = (1024, 1024, 64)
MAX_GRID_DIMS = (2**31 - 1, 65535, 65535)
MAX_SHARED_MEM = 48 * 1024  # a launch's dynamic shared memory without opting in

# -fdata-sections gives every variable a section of its own, and function-local
# statics have names starting _ZZ: this collects all zero-initialised ones (the
# kernels' __shared__ arrays) and the dynamic shared buffer into one region that the
# launcher poisons before each block. Matching by name is needed because g++ 12
# ignores section attributes on statics in function templates (seen with 12.2).
_LINKER_SCRIPT = """\
SECTIONS {
  cudasim_shared (NOLOAD) : ALIGN(64) {
    cudasim_shared_begin = .;
    *(.bss.cudasim_dyn_smem)
    *(.bss._ZZ*)
    cudasim_shared_end = .;
  }
} INSERT AFTER .bss;
"""

# cuda_sim.h already provides what cuda_fp16.h would; this makes the include resolve.
_FP16_STUB = "#pragma once\n// cuda_sim.h, force-included, provides __half.\n"

# `extern __shared__` as the preprocessor leaves it (see __shared__ in cuda_sim.h).
_EXTERN_SHARED = re.compile(
    r"\bextern\s+static\s+__attribute__\s*\(\(\s*used\s*\)\)"
    r"(?P<decl>[^;]*?)(?P<name>\w+)\s*\[\s*\]\s*;"
)
_EXTERN_STATIC = re.compile(r"\bextern\s+static\b")
_LINE_MARKER = re.compile(r"^# \d+ .*\n", re.M)


class SimBuildError(RuntimeError):
    """g++ could not build the module."""


class SimLaunchError(RuntimeError):
    """The launch was invalid or the kernel failed (deadlock, exception)."""


# ----------------------------------------------------------------- signatures

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_KERNEL = re.compile(
    r'(?P<extern_c>extern\s+"C"\s+)?__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(?P<name>\w+)\s*\((?P<params>[^)]*)\)"
)
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict"}
# C parameter types and the NumPy dtype with the same representation (LP64, as CUDA on
# Linux). Types not listed (structs, template parameters) are not checked.
_C_DTYPES = {
    "bool": "bool",
    "char": "int8",
    "signed char": "int8",
    "unsigned char": "uint8",
    "short": "int16",
    "unsigned short": "uint16",
    "int": "int32",
    "signed": "int32",
    "unsigned": "uint32",
    "long": "int64",
    "unsigned long": "uint64",
    "long long": "int64",
    "unsigned long long": "uint64",
    "int8_t": "int8",
    "uint8_t": "uint8",
    "int16_t": "int16",
    "uint16_t": "uint16",
    "int32_t": "int32",
    "uint32_t": "uint32",
    "int64_t": "int64",
    "uint64_t": "uint64",
    "size_t": "uint64",
    "ptrdiff_t": "int64",
    "float": "float32",
    "double": "float64",
    "__half": "float16",
    "half": "float16",
}


@dataclass(frozen=True)
class Param:
    """One kernel parameter: ``const float* __restrict__ p`` has name "p", ctype "float",
    pointer 1 and dtype float32 (None for types without a NumPy equivalent)."""

    declared: str
    name: str
    ctype: str
    pointer: int
    dtype: np.dtype | None

    def __str__(self) -> str:
        return self.declared


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[Param, ...]
    extern_c: bool


def _parse_param(text: str, index: int) -> Param:
    words = [w for w in re.findall(r"[\w:]+(?:<[^>]*>)?", text) if w not in _QUALIFIERS]
    name = words.pop() if len(words) > 1 else f"arg{index}"
    ctype = re.sub(r"^std::", "", " ".join(words))
    ctype = re.sub(r"\b(short|long|signed|unsigned) int\b", r"\1", ctype)
    known = _C_DTYPES.get(ctype)
    declared = " ".join(text.split())
    pointer = text.count("*") + text.count("[")  # `float x[]` declares a pointer too
    return Param(declared, name, ctype, pointer, np.dtype(known) if known else None)


def parse_signatures(code: str) -> dict[str, Signature]:
    """The ``__global__ void NAME(...)`` kernels declared in ``code``, by name."""
    found: dict[str, Signature] = {}
    for m in _KERNEL.finditer(_COMMENTS.sub(" ", code)):
        params = [p for p in m["params"].split(",") if p.strip() not in ("", "void")]
        sig = Signature(
            m["name"], tuple(_parse_param(p, i) for i, p in enumerate(params)), bool(m["extern_c"])
        )
        found.setdefault(sig.name, sig)
    return found


def _is_device_array(arg: Any) -> bool:
    # A NumPy array here; a cupy.ndarray (or any CUDA array) for a real launch.
    return isinstance(arg, np.ndarray) or hasattr(arg, "__cuda_array_interface__")


def cupy_scalar(arg: Any) -> np.generic:
    """The value CuPy stores for a scalar kernel argument (see README.md): a Python
    bool as numpy.bool_, int as int64 (uint64 from 2**63 on), float as float64,
    complex as complex128; a NumPy scalar as itself."""
    if isinstance(arg, np.generic):
        return arg
    kind = type(arg)  # CuPy tests the exact type: bool is not taken for an int
    if kind is bool:
        return np.bool_(arg)
    if kind is int:
        return np.uint64(arg) if arg >= 2**63 else np.int64(arg)
    if kind is float:
        return np.float64(arg)
    if kind is complex:
        return np.complex128(arg)
    raise TypeError(f"Unsupported type {kind}")


def check_arguments(signature: Signature, args: Sequence[Any]) -> None:
    """Raise TypeError if ``args``, as CuPy would pass them, do not match the kernel's
    declared parameters: count, pointer vs scalar, array dtype vs pointer element
    type, and scalar representation (kind and size) vs parameter type. Qualifiers
    (const, __restrict__) are ignored; types that are not plain C types are not checked."""
    params = signature.params
    if len(args) != len(params):
        declared = ", ".join(map(str, params))
        raise TypeError(
            f"{signature.name}() takes {len(params)} arguments ({declared}), got {len(args)}"
        )
    for i, (param, arg) in enumerate(zip(params, args, strict=True)):
        where = f"{signature.name}() argument {i} '{param.name}' (declared {param})"
        if param.pointer:
            if arg is None:  # a null pointer
                continue
            if not _is_device_array(arg):
                raise TypeError(f"{where}: expected a device array, got {type(arg).__name__}")
            if (
                param.pointer == 1
                and param.dtype is not None
                and np.dtype(arg.dtype) != param.dtype
            ):
                raise TypeError(
                    f"{where}: got an array of {arg.dtype}, the parameter needs {param.dtype}"
                )
            continue
        if _is_device_array(arg) or arg is None:
            raise TypeError(f"{where}: got {type(arg).__name__} for a scalar parameter")
        if param.dtype is None:
            continue
        rep = cupy_scalar(arg).dtype
        if type(arg) is int and param.dtype.kind in "iu" and param.dtype.itemsize == 8:
            # CuPy picks int64 or uint64 for a Python int by its value: right for
            # either 8-byte integer type as long as the value fits.
            info = np.iinfo(param.dtype)
            if not info.min <= arg <= info.max:
                raise TypeError(f"{where}: {arg} is out of range")
            continue
        if (rep.kind, rep.itemsize) != (param.dtype.kind, param.dtype.itemsize):
            what = (
                f"a Python {type(arg).__name__}"
                if not isinstance(arg, np.generic)
                else "a NumPy scalar"
            )
            raise TypeError(
                f"{where}: CuPy passes {what} as {rep} ({rep.itemsize} bytes) but the kernel reads "
                f"{param.ctype} ({param.dtype.itemsize} bytes); pass numpy.{param.dtype.name}(...)"
            )


# ----------------------------------------------------------------- build


def _cache_dir() -> Path:
    path = Path(
        os.environ.get("CUDASIM_CACHE_DIR")
        or Path(tempfile.gettempdir()) / f"kldiv-cuda-sim-{os.getuid()}"
    )
    (path / "include").mkdir(parents=True, exist_ok=True)
    return path


def _write_once(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # atomic: concurrent builds (pytest-xdist) never see half a file


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimBuildError(f"{' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout


def _bind_extern_shared(unit: str) -> tuple[str, list[str]]:
    """Turn each preprocessed ``extern __shared__ T name[];`` back into ``extern T name[];``
    and return the names, which the link binds to the dynamic shared buffer: as in CUDA,
    every such array starts at the block's dynamic shared memory."""
    names: list[str] = []

    def rewrite(m: re.Match) -> str:
        names.append(m["name"])
        return f"extern{m['decl']}{m['name']}[];"

    unit = _EXTERN_SHARED.sub(rewrite, unit)
    if _EXTERN_STATIC.search(unit):
        raise SimBuildError(
            "unsupported `extern __shared__` declaration (only `extern __shared__ T name[];`)"
        )
    return unit, sorted(set(names))


def build(
    code: str,
    source_path: Path | None,
    include_dirs: Iterable[str | os.PathLike],
    defines: Iterable[str],
    kernels: Sequence[str],
) -> Path:
    """Compile the kernel source plus a launch wrapper per entry of ``kernels`` into a
    shared library, cached by a hash of the preprocessed translation unit and flags."""
    cache = _cache_dir()
    _write_once(cache / "include" / "cuda_fp16.h", _FP16_STUB)
    _write_once(cache / "shared.ld", _LINKER_SCRIPT)
    if source_path is None:
        source_path = cache / f"src-{hashlib.sha256(code.encode()).hexdigest()[:16]}.cu"
        _write_once(source_path, code)
    flags = [
        *CXXFLAGS,
        "-include",
        str(HEADER),
        f"-I{cache / 'include'}",
        *(f"-I{Path(d).resolve()}" for d in include_dirs),
        *(f"-D{d}" for d in defines),
    ]
    # Preprocess first: the rewrite of `extern __shared__` needs macros expanded, and
    # hashing the preprocessed unit covers every header the kernel includes.
    unit, extern_shared = _bind_extern_shared(
        _run([CXX, "-E", "-x", "c++", *flags, str(source_path)])
    )
    wrappers = ['# 1 "<cuda_sim launch wrappers>"']
    for i, name in enumerate(kernels):
        wrappers.append(
            f'extern "C" __attribute__((visibility("default"))) int cudasim_launch_{i}('
            "const cudasim::LaunchConfig* config, void** args, int nargs, char* error, "
            "unsigned long size) "
            f"{{ return cudasim::launch(&{name}, config, args, nargs, error, size); }}"
        )
    unit += "\n".join(wrappers) + "\n"
    link = [
        "-shared",
        # Kernels and the names bound below never resolve to same-named symbols that
        # are already loaded in the process.
        "-fvisibility=hidden",
        "-Wl,-Bsymbolic",
        "-Wl,-z,defs",  # an unresolved symbol fails the build, not the load
        f"-Wl,-T,{cache / 'shared.ld'}",
        *(f"-Wl,--defsym={name}=cudasim_dyn_smem" for name in extern_shared),
    ]
    # Line markers only name the files diagnostics point at: leaving them out of the key
    # lets the same code, included from another directory, reuse the library.
    code_only = _LINE_MARKER.sub("", unit)
    key = hashlib.sha256("\0".join([code_only, _LINKER_SCRIPT, *CXXFLAGS, *link]).encode())
    key = key.hexdigest()[:32]
    library = cache / f"{key}.so"
    if not library.exists():
        tmp = cache / f"{key}.{os.getpid()}"
        Path(f"{tmp}.ii").write_text(unit)
        try:
            _run([CXX, *CXXFLAGS, *link, f"{tmp}.ii", "-o", f"{tmp}.so"])
            os.replace(f"{tmp}.so", library)
        finally:
            Path(f"{tmp}.ii").unlink()
    return library


# ----------------------------------------------------------------- launch


class _LaunchConfig(ctypes.Structure):
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("schedule", ctypes.c_int),
        ("seed", ctypes.c_ulonglong),
    ]


def _dims(value: int | Sequence[int], what: str) -> tuple[int, ...]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3:
        raise SimLaunchError(f"{what} must have 1 to 3 dimensions, got {value!r}")
    # As cupy.cuda.function.Function: missing dimensions are 1, and so is one below 1.
    return tuple(max(1, int(d)) for d in dims) + (1,) * (3 - len(dims))


def _marshal(arg: Any) -> ctypes.Array:
    """The bytes that args[i] points at, as CuPy prepares them: a device array's data
    pointer, None as a null pointer, any scalar as ``cupy_scalar`` stores it. CuPy
    leaves the rest of its scalar buffer unspecified; here it is 0xFF bytes, so a
    parameter wider than the value stored reads garbage that shows."""
    if isinstance(arg, np.ndarray):
        raw = arg.ctypes.data.to_bytes(8, "little")
    elif arg is None:
        raw = bytes(8)
    else:
        raw = cupy_scalar(arg).tobytes()
    return ctypes.create_string_buffer(raw.ljust(32, b"\xff"), 32)


class SimFunction:
    """A kernel of a SimModule, called like the kernel ``cupy.RawModule.get_function``
    returns, plus a schedule and a seed."""

    def __init__(self, module: SimModule, name: str, entry: Any, signature: Signature | None):
        self.module = module  # keeps the library loaded
        self.name = name
        self.signature = signature
        self._entry = entry

    def __call__(
        self,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[Any],
        shared_mem: int = 0,
        schedule: str = "free",
        seed: int = 0,
    ) -> None:
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS_PER_BLOCK:
            raise SimLaunchError(
                f"block {block} has {threads} threads, more than {MAX_THREADS_PER_BLOCK}"
            )
        for what, dims, limits in (("grid", grid, MAX_GRID_DIMS), ("block", block, MAX_BLOCK_DIMS)):
            if any(d > limit for d, limit in zip(dims, limits, strict=True)):
                raise SimLaunchError(f"{what} {dims} exceeds the CUDA limits {limits}")
        if not 0 <= shared_mem <= MAX_SHARED_MEM:
            raise SimLaunchError(
                f"shared_mem={shared_mem} bytes exceeds the {MAX_SHARED_MEM} bytes a launch may use"
            )
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        config = _LaunchConfig()
        config.grid[:], config.block[:] = grid, block
        config.schedule = SCHEDULES.index(schedule)
        config.seed = seed
        buffers = [_marshal(a) for a in args]
        pointers = (ctypes.c_void_p * max(1, len(buffers)))(*map(ctypes.addressof, buffers))
        error = ctypes.create_string_buffer(1024)
        if self._entry(ctypes.byref(config), pointers, len(buffers), error, len(error)):
            raise SimLaunchError(f"{self.name}: {error.value.decode()}")

    def check_arguments(self, args: Sequence[Any]) -> None:
        if self.signature is None:
            raise KeyError(f"no __global__ declaration of {self.name!r} found in the source")
        check_arguments(self.signature, args)


class SimModule:
    """Stands in for ``cupy.RawModule(code=..., name_expressions=...)``.

    ``source`` is CUDA C code, or the path of a file holding it (a ``os.PathLike``,
    or a one-line string naming an existing file). The ``extern "C" __global__``
    kernels of the source are available by name, and ``name_expressions`` (such as
    ``"axpy<float>"``) add template instantiations. ``defines`` are ``NAME`` or
    ``NAME=VALUE`` strings, as for ``-D``."""

    def __init__(
        self,
        source: str | os.PathLike,
        include_dirs: Iterable[str | os.PathLike] = (),
        defines: Iterable[str] = (),
        name_expressions: Sequence[str] | None = None,
    ):
        path = None
        if isinstance(source, os.PathLike) or ("\n" not in source and Path(source).is_file()):
            path = Path(source).resolve()
            source = path.read_text()
        self.signatures = parse_signatures(source)
        self.kernel_names = [s.name for s in self.signatures.values() if s.extern_c] + list(
            name_expressions or ()
        )
        library = ctypes.CDLL(str(build(source, path, include_dirs, defines, self.kernel_names)))
        self._entries: dict[str, Any] = {}
        for i, name in enumerate(self.kernel_names):
            entry = getattr(library, f"cudasim_launch_{i}")
            entry.argtypes = [
                ctypes.POINTER(_LaunchConfig),
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_ulong,
            ]
            entry.restype = ctypes.c_int
            self._entries[name] = entry
        self._library = library

    def get_function(self, name: str) -> SimFunction:
        if name not in self._entries:
            raise KeyError(f"no kernel {name!r} in this module; it has {sorted(self._entries)}")
        return SimFunction(self, name, self._entries[name], self.signatures.get(name.split("<")[0]))

    def check_arguments(self, kernel_name: str, args: Sequence[Any]) -> None:
        """Raise TypeError if ``args`` do not match the declaration of ``kernel_name``."""
        self.get_function(kernel_name).check_arguments(args)


# ----------------------------------------------------------------- schedules


def run_schedules(launch: Callable[..., Any], seeds: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """Call ``launch(schedule=..., seed=...)`` under every schedule ("random" once per
    seed) and return the results by label: "free", "forward", "reverse", "random(seed=0)", ..."""
    results = {}
    for schedule in SCHEDULES:
        if schedule == "random":
            for seed in seeds:
                results[f"random(seed={seed})"] = launch(schedule=schedule, seed=seed)
        else:
            results[schedule] = launch(schedule=schedule, seed=0)
    return results


def assert_all_schedules(
    launch: Callable[..., Any], check: Callable[[Any], None], seeds: Sequence[int] = (0, 1)
) -> Mapping[str, Any]:
    """Run ``launch`` under every schedule and apply ``check`` to each result (it
    raises AssertionError when a result is wrong); fail naming every schedule whose
    result was wrong. Returns the results by label."""
    results = run_schedules(launch, seeds)
    failures = {}
    for label, result in results.items():
        try:
            check(result)
        except AssertionError as e:
            failures[label] = e
    if failures:
        details = "\n".join(f"  {label}: {e}" for label, e in failures.items())
        raise AssertionError(
            f"wrong result under {len(failures)} of {len(results)} schedules:\n{details}"
        )
    return results
