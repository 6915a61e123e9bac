"""CPU harness that runs unchanged CUDA C kernels with CUDA's launch semantics (see README.md)."""

from .harness import (
    SCHEDULES,
    Param,
    Signature,
    SimBuildError,
    SimFunction,
    SimLaunchError,
    SimModule,
    assert_all_schedules,
    check_arguments,
    cupy_scalar,
    parse_signatures,
    run_schedules,
)

__all__ = [
    "SCHEDULES",
    "Param",
    "Signature",
    "SimBuildError",
    "SimFunction",
    "SimLaunchError",
    "SimModule",
    "assert_all_schedules",
    "check_arguments",
    "cupy_scalar",
    "parse_signatures",
    "run_schedules",
]
