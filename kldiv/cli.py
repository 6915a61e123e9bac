"""``python -m kldiv``: KL divergences of the bundled example or of two ``.npy`` files.

Every failure the user can cause (a file that cannot be read, data or arguments that
:func:`kldiv.kl_div` rejects, an output that cannot be written) ends the command with one
line on stderr, ``kldiv: ...``, and exit status 2, never a traceback; argparse's usage
errors also exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from kldiv._funcs import kl_div

# The worked example of the TensorFlow Q&A thread kldiv started from (shared/seeds): per
# row, KL(p || q) = [0.88995184, 1.08808468], as np.sum(p * np.log(p / q), axis=1) gives.
EXAMPLE_P = ((0.25, 0.1, 0.65), (0.8, 0.15, 0.05))
EXAMPLE_Q = ((0.7, 0.2, 0.1), (0.15, 0.8, 0.05))

_EXIT_ERROR = 2
"""The exit status of every failure, as argparse uses for a usage error."""

# The first bytes of a zip archive, which is what np.savez writes.
_ZIP_MAGIC = b"PK\x03\x04"


class _CommandError(Exception):
    """A failure reported as the single line ``kldiv: <message>`` with exit status 2."""


def _one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces collapsed to single spaces.

    Some NumPy messages span several lines (the one for an oversized ``.npy`` header does),
    and the command promises one line of stderr per error.
    """
    return " ".join(text.split())


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: ``strerror`` for an ``OSError`` (its ``str`` repeats the
    file name, which the caller shows already), else the message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(str(exc)) or type(exc).__name__


def _check_header(name: str, path: str, file: BinaryIO) -> None:
    """Check the ``.npy`` header at the start of the open ``file`` against what the file holds.

    Catches, with a message saying so, the cases NumPy reports least clearly or at the
    greatest cost: no data at all, not an ``.npy`` file, Python objects (which would need
    unpickling, so arbitrary code), and fewer bytes of data than the header's shape needs
    (which NumPy finds only after allocating the whole array). Leaves ``file`` at its start.

    Raises
    ------
    _CommandError
        For each of those cases, naming the argument and the file.
    Exception
        From NumPy, for a header it cannot parse (mostly ``ValueError``).
    """
    where = f"cannot read {name} from {path!r}"
    start = file.read(len(npy_format.MAGIC_PREFIX))
    if not start:
        msg = f"{where}: the file is empty"
        raise _CommandError(msg)
    if start != npy_format.MAGIC_PREFIX:
        if npy_format.MAGIC_PREFIX.startswith(start):
            problem = "the file is truncated within the .npy magic string it starts with"
        elif start.startswith(_ZIP_MAGIC):
            problem = "not a .npy file but a zip archive (an .npz?); save one array with numpy.save"
        else:
            problem = "not a .npy file (it does not start with the .npy magic string)"
        msg = f"{where}: {problem}"
        raise _CommandError(msg)
    file.seek(0)
    version = npy_format.read_magic(file)
    # Versions 1.0 and 2.0 have public header readers; NumPy's read_array checks any other
    # version itself and rejects the ones it does not know.
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    reader = readers.get(version)
    if reader is not None:
        shape, _, dtype = reader(file)
        if dtype.hasobject:
            msg = (
                f"{where}: it holds Python objects (dtype {dtype}), which kldiv does not load "
                "because unpickling them can run code; save an array of floats"
            )
            raise _CommandError(msg)
        # math.prod of Python ints cannot overflow, as NumPy's int64 product of a corrupt
        # shape can; a negative size is left to NumPy, which rejects it.
        needed = math.prod(shape) * dtype.itemsize
        available = os.fstat(file.fileno()).st_size - file.tell()
        if 0 <= available < needed:
            msg = (
                f"{where}: the file is truncated: its header declares shape {shape} of "
                f"{dtype}, {needed} bytes of data, but only {available} bytes follow it"
            )
            raise _CommandError(msg)
    file.seek(0)


def _load_npy(name: str, path: str) -> np.ndarray[Any, Any]:
    """The array saved in the ``.npy`` file ``path``, given as argument ``name``.

    Parameters
    ----------
    name : str
        The argument the file was given as (``"p"`` or ``"q"``), for messages.
    path : str
        The file.

    Returns
    -------
    numpy.ndarray
        The array, of whatever dtype the file holds; never an object array.

    Raises
    ------
    _CommandError
        For every way the file cannot be read, naming ``name`` and ``path``: a missing or
        unreadable file, a directory, an empty or truncated file, something other than an
        ``.npy`` file, a corrupt header, an object array, an array too big for memory.
    """
    where = f"cannot read {name} from {path!r}"
    try:
        # NumPy warns when it reads a header written by Python 2; that is no concern of
        # the user's, and a warning would add lines to stderr.
        with open(path, "rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_header(name, path, file)
            return npy_format.read_array(file, allow_pickle=False)
    except _CommandError:
        raise
    except OSError as exc:  # missing, unreadable, a directory
        msg = f"{where}: {_reason(exc)}"
        raise _CommandError(msg) from None
    except MemoryError:
        msg = f"{where}: the array it holds does not fit in memory"
        raise _CommandError(msg) from None
    # Anything else comes from parsing a corrupt header, whatever the file's bytes make
    # NumPy's parser (ast, tokenize, np.dtype) raise: ValueError and TypeError mostly, but
    # tokenize.TokenError, IndexError and others too, so no list of types would be complete.
    except Exception as exc:
        msg = f"{where}: not a valid .npy file: {_reason(exc)}"
        raise _CommandError(msg) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kldiv",
        description=(
            "Print KL(p || q) along the last axis. With no files, for the bundled example "
            f"p = {[list(r) for r in EXAMPLE_P]}, q = {[list(r) for r in EXAMPLE_Q]}."
        ),
    )
    parser.add_argument("p", nargs="?", help="a .npy file of probabilities")
    parser.add_argument("q", nargs="?", help="a .npy file of probabilities, broadcast against p")
    parser.add_argument("--axis", type=int, default=-1, help="the distribution axis (default -1)")
    parser.add_argument("--base", type=float, default=None, help="log base (default e: nats)")
    return parser


def _divergence(p: Any, q: Any, axis: int, base: float | None) -> str:
    """``kl_div(p, q)`` formatted for printing: every value, in NumPy's bracketed form.

    Raises
    ------
    _CommandError
        Whatever ``kl_div`` rejects (dtype, shape, axis, values, base), or a result too big
        for memory.
    """
    try:
        result = kl_div(p, q, axis=axis, base=base)
    except MemoryError as exc:
        msg = f"not enough memory: {_reason(exc)}"
        raise _CommandError(msg) from None
    # kl_div raises TypeError, ValueError and AxisError (an IndexError) by its documentation;
    # ArithmeticError covers an overflow in the arithmetic of unexpected input.
    except (TypeError, ValueError, IndexError, ArithmeticError) as exc:
        raise _CommandError(_reason(exc)) from None
    # threshold: NumPy elides all but 6 values of an array over 1000 entries ("..."); the
    # command's output is the data, so all of it is printed.
    return np.array2string(np.asarray(result), separator=", ", precision=8, threshold=sys.maxsize)


def _discard_stdout() -> None:
    """Point the process's stdout at the null device after a write to it failed.

    The unwritten text stays in ``sys.stdout``'s buffer, and the interpreter flushes that
    at exit; to a broken stdout the flush would fail again and print a second error. This
    is the remedy of the "Note on SIGPIPE" in the :mod:`signal` documentation. A stdout
    with no file descriptor (a test's capture) is left alone: nothing flushes it to a file.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _write(text: str) -> None:
    """Print ``text`` and a newline to stdout, and flush it, so that any failure shows here.

    Raises
    ------
    _CommandError
        A write that failed (a full disk, a closed file), after stdout was discarded.
    BrokenPipeError
        A reader that stopped reading (``| head``), after stdout was discarded.
    """
    if sys.stdout is None:
        # Started with stdout closed (``>&-``): print would drop the text without a word.
        msg = "cannot write the result: stdout is closed"
        raise _CommandError(msg)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        raise
    except OSError as exc:
        _discard_stdout()
        msg = f"cannot write the result to stdout: {_reason(exc)}"
        raise _CommandError(msg) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status: 0, or 2 after an error, reported as one line on stderr. A usage
        error exits through argparse's ``SystemExit`` with status 2.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.p is None) != (args.q is None):
        parser.error("give two .npy files, p and q, or none for the bundled example")
    try:
        if args.p is None:
            p, q = np.array(EXAMPLE_P), np.array(EXAMPLE_Q)
        else:
            p, q = _load_npy("p", args.p), _load_npy("q", args.q)
        _write(_divergence(p, q, args.axis, args.base))
    except BrokenPipeError:
        # The reader has all it wanted (``| head``): like a Unix tool ended by SIGPIPE, say
        # nothing, but do not claim success, since not all output was delivered.
        return _EXIT_ERROR
    except _CommandError as exc:
        print(f"kldiv: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    return 0
