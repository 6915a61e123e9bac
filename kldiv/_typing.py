"""The names kldiv's annotations use for what the array API standard leaves untyped."""

from __future__ import annotations

from typing import Any, TypeAlias

# An array of any library the standard covers; the standard gives no static type for it.
Array: TypeAlias = Any
# An array namespace: a module such as array_api_compat.numpy, or array_api_strict.
Namespace: TypeAlias = Any
Axis: TypeAlias = int | tuple[int, ...] | None
