"""The production side of the CuPy backend: ``cupy.RawModule``, and one launcher per GPU.

The only module of kldiv that imports CuPy, and only inside its functions: the dispatch
imports the backend once it has seen a CuPy array, and the tests import the launcher
without CuPy.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kldiv._backends.cupy import _sources
from kldiv._backends.cupy._launcher import DeviceProperties, Launcher, Module
from kldiv._typing import Array

Result = TypeVar("Result")

_launchers: dict[int, Launcher] = {}
_lock = threading.Lock()


@functools.cache
def raw_module(source: Path) -> Module:
    """``source`` as a ``cupy.RawModule``: compiled on first use on each device, and cached
    by CuPy in memory and on disk."""
    import cupy

    module: Module = cupy.RawModule(code=source.read_text(), options=_sources.nvrtc_options())
    return module


def device_properties(device_id: int) -> DeviceProperties:
    """The launch-relevant attributes of CUDA device ``device_id``."""
    from cupy.cuda import runtime

    def attribute(name: str) -> int:
        return int(runtime.deviceGetAttribute(getattr(runtime, name), device_id))

    return DeviceProperties(
        multiprocessors=attribute("cudaDevAttrMultiProcessorCount"),
        max_threads_per_block=attribute("cudaDevAttrMaxThreadsPerBlock"),
        max_threads_per_multiprocessor=attribute("cudaDevAttrMaxThreadsPerMultiProcessor"),
        shared_memory_per_block=attribute("cudaDevAttrMaxSharedMemoryPerBlock"),
    )


def on_device_of(x: Array, work: Callable[[Launcher], Result]) -> Result:
    """``work(launcher)`` with ``x``'s device current, so that outputs are allocated there
    and kernels run on its current stream."""
    import cupy

    device = x.device
    with _lock:
        launcher = _launchers.get(device.id)
        if launcher is None:
            launcher = Launcher(raw_module, cupy, device_properties(device.id))
            _launchers[device.id] = launcher
    with device:
        return work(launcher)
