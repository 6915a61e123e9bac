"""The ``kldiv`` command (also ``python -m kldiv``): compute, check, bench and info.

- ``kldiv compute [P Q]``: KL divergences of two files (``.npy``, ``.npz``, ``.csv`` or
  whitespace-separated text), or of the bundled example without files; ``kldiv`` alone
  runs it on the bundled example.
- ``kldiv check``: every installed library and fast path against a float64 reference.
- ``kldiv bench``: kldiv's speed against naive NumPy (and PyTorch) on this CPU.
- ``kldiv info``: versions, libraries, compiled kernels, GPU.

Every failure the user can cause (a file that cannot be read, data or arguments that
kldiv rejects, an output that cannot be written, a usage error) ends the command with one
line on stderr, ``kldiv: ...``, and exit status 2, never a traceback; no output file is
left half written. ``kldiv check`` exits with status 1 when a check fails.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO

import click
import numpy as np
from numpy.lib import format as npy_format
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from kldiv._funcs import kl_div, kl_div_logits
from kldiv._version import __version__

# The worked example of the TensorFlow Q&A thread kldiv started from (shared/seeds): per
# row, KL(p || q) = [0.88995184, 1.08808468], as np.sum(p * np.log(p / q), axis=1) gives.
EXAMPLE_P = ((0.25, 0.1, 0.65), (0.8, 0.15, 0.05))
EXAMPLE_Q = ((0.7, 0.2, 0.1), (0.15, 0.8, 0.05))

_EXIT_ERROR = 2
"""The exit status of every error, as click (and argparse) use for a usage error."""

_EXIT_FAILED = 1
"""The exit status of ``kldiv check`` when a check fails."""

# The first bytes of a zip archive, which is what np.savez writes.
_ZIP_MAGIC = b"PK\x03\x04"

_OUTPUT_SUFFIXES = (".npy", ".csv", ".json")
_PLOT_SUFFIXES = (".png", ".svg", ".pdf")
_REDUCTIONS = ("none", "sum", "mean", "batchmean")


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


def _check_header(where: str, file: BinaryIO, size: int) -> None:
    """Check the ``.npy`` header at the start of the open ``file``, of ``size`` bytes, against
    what the file holds (an ``.npz`` archive's member is such a file too).

    Catches, with a message saying so, the cases NumPy reports least clearly or at the
    greatest cost: no data at all, not an ``.npy`` file, Python objects (which would need
    unpickling, so arbitrary code), and fewer bytes of data than the header's shape needs
    (which NumPy finds only after allocating the whole array). Leaves ``file`` at its start.

    Raises
    ------
    _CommandError
        For each of those cases, beginning with ``where``.
    Exception
        From NumPy, for a header it cannot parse (mostly ``ValueError``).
    """
    start = file.read(len(npy_format.MAGIC_PREFIX))
    if not start:
        msg = f"{where}: the file is empty"
        raise _CommandError(msg)
    if start != npy_format.MAGIC_PREFIX:
        if npy_format.MAGIC_PREFIX.startswith(start):
            problem = "the file is truncated within the .npy magic string it starts with"
        elif start.startswith(_ZIP_MAGIC):
            problem = "not a .npy file but a zip archive; name it .npz to read it as one"
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
        available = size - file.tell()
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
            _check_header(where, file, os.fstat(file.fileno()).st_size)
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


def _load_npz(name: str, path: str, key: str | None) -> np.ndarray[Any, Any]:
    """The array ``key`` of the ``.npz`` archive ``path`` (its only array without a key),
    checked as :func:`_load_npy` checks a ``.npy`` file.

    Raises
    ------
    _CommandError
        A file that cannot be read or is no zip archive, no ``key`` for an archive of several
        arrays, a key the archive lacks, or a member that is not a valid ``.npy`` file.
    """
    where = f"cannot read {name} from {path!r}"
    try:
        with zipfile.ZipFile(path) as archive:
            keys = [m[: -len(".npy")] for m in archive.namelist() if m.endswith(".npy")]
            if key is None:
                if len(keys) != 1:
                    msg = (
                        f"{where}: the archive holds {len(keys)} arrays "
                        f"({', '.join(keys) or 'none'}); choose one with --key"
                    )
                    raise _CommandError(msg)
                key = keys[0]
            elif key not in keys:
                msg = f"{where}: the archive has no array {key!r}; it holds {', '.join(keys)}"
                raise _CommandError(msg)
            member = archive.getinfo(f"{key}.npy")
            with archive.open(member) as file, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _check_header(f"{where}, array {key!r}", file, member.file_size)  # type: ignore[arg-type]
                return npy_format.read_array(file, allow_pickle=False)
    except _CommandError:
        raise
    except OSError as exc:
        msg = f"{where}: {_reason(exc)}"
        raise _CommandError(msg) from None
    except zipfile.BadZipFile as exc:
        msg = f"{where}: not a valid .npz archive: {_reason(exc)}"
        raise _CommandError(msg) from None
    except MemoryError:
        msg = f"{where}: the array it holds does not fit in memory"
        raise _CommandError(msg) from None
    except Exception as exc:  # a corrupt member: as for a .npy file, no list would be complete
        msg = f"{where}: not a valid .npy array in the archive: {_reason(exc)}"
        raise _CommandError(msg) from None


def _load_text(name: str, path: str, delimiter: str | None) -> np.ndarray[Any, Any]:
    """The float64 numbers of a CSV (``delimiter=","``) or whitespace-separated text file,
    one distribution per line (a 2-d array, even of one line); ``#`` starts a comment.

    Raises
    ------
    _CommandError
        A file that cannot be read, holds no numbers, something other than numbers, or
        lines of different lengths.
    """
    where = f"cannot read {name} from {path!r}"
    kind = "CSV" if delimiter else "text"
    try:
        # loadtxt warns about a file with no data; that is reported as an error below.
        # Opened here, not by loadtxt, whose message for a missing file lacks the reason.
        with open(path, encoding="utf-8") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.loadtxt(file, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except OSError as exc:
        msg = f"{where}: {_reason(exc)}"
        raise _CommandError(msg) from None
    except MemoryError:
        msg = f"{where}: the numbers it holds do not fit in memory"
        raise _CommandError(msg) from None
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"{where}: not a {kind} file of numbers: {_reason(exc)}"
        raise _CommandError(msg) from None
    if array.size == 0:
        msg = f"{where}: the file holds no numbers"
        raise _CommandError(msg)
    return array


def _sniff(path: str) -> str:
    """The format of a file whose name does not say: ``.npy`` or ``.npz`` by their first
    bytes, else text. A file that cannot be opened is left to the text reader to report."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(npy_format.MAGIC_PREFIX))
    except OSError:
        return ".txt"
    if start == npy_format.MAGIC_PREFIX:
        return ".npy"
    return ".npz" if start.startswith(_ZIP_MAGIC) else ".txt"


def _load(name: str, path: str, key: str | None) -> np.ndarray[Any, Any]:
    """The array in ``path``, read by its suffix: ``.npy``, ``.npz`` (array ``key``),
    ``.csv``, and otherwise ``.npy``/``.npz`` by their first bytes or whitespace text."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".npy", ".npz", ".csv"):
        suffix = _sniff(path)
    if key is not None and suffix != ".npz":
        msg = f"--key applies to .npz archives, and {name} ({path!r}) is not one"
        raise _CommandError(msg)
    if suffix == ".npy":
        return _load_npy(name, path)
    if suffix == ".npz":
        return _load_npz(name, path, key)
    return _load_text(name, path, "," if suffix == ".csv" else None)


def _gpu_namespace(device: str) -> Any | None:
    """CuPy, where the result should be computed on a GPU: ``gpu``, or ``auto`` when one is
    present; None for the CPU.

    Raises
    ------
    _CommandError
        ``gpu`` where no GPU can be used.
    """
    if device == "cpu":
        return None
    from kldiv._check import available_gpu

    found = available_gpu()
    if found is None and device == "gpu":
        msg = "--device gpu: no GPU found (it needs CuPy and a CUDA device it can use)"
        raise _CommandError(msg)
    return None if found is None else found[0]


def _compute(
    p: np.ndarray[Any, Any],
    q: np.ndarray[Any, Any],
    *,
    logits: bool,
    axis: int,
    base: float | None,
    reduction: str,
    normalize: bool,
    device: str,
) -> np.ndarray[Any, Any]:
    """The divergences as the options of ``kldiv compute`` ask, as a NumPy array.

    Raises
    ------
    _CommandError
        Whatever kldiv rejects (dtype, shape, axis, values, base), a failure on the GPU, or a
        result too big for memory.
    """
    if normalize and logits:
        msg = "--normalize applies to probabilities or counts, not to --logits"
        raise _CommandError(msg)
    cupy = _gpu_namespace(device)
    function = kl_div_logits if logits else kl_div
    options: dict[str, Any] = {"axis": axis, "base": base, "reduction": reduction}
    if normalize:
        options["normalize"] = True
    try:
        if cupy is None:
            result = np.asarray(function(p, q, **options))
        else:
            result = cupy.asnumpy(function(cupy.asarray(p), cupy.asarray(q), **options))
    except MemoryError as exc:
        msg = f"not enough memory: {_reason(exc)}"
        raise _CommandError(msg) from None
    # kl_div raises TypeError, ValueError and AxisError (an IndexError) by its documentation;
    # ArithmeticError covers an overflow in the arithmetic of unexpected input.
    except (TypeError, ValueError, IndexError, ArithmeticError) as exc:
        raise _CommandError(_reason(exc)) from None
    except Exception as exc:
        if cupy is None:
            raise
        # CuPy reports a driver, compiler or memory failure with its own exception types.
        msg = f"on the GPU: {type(exc).__name__}: {_reason(exc)}"
        raise _CommandError(msg) from None
    return result


def _unit(base: float | None) -> str:
    if base is None:
        return "nats"
    return "bits" if base == 2 else f"log base {base:g}"


def _number(x: float) -> str:
    """A value for the table: 9 significant digits, which tell float32 values apart."""
    return f"{x:.9g}"


def _json_value(x: float) -> float | str:
    """JSON has no infinities or NaN: those become the strings ``"inf"``, ``"-inf"``,
    ``"nan"``, which ``float()`` reads back."""
    return x if math.isfinite(x) else str(x)


def _document(result: np.ndarray[Any, Any], settings: dict[str, Any]) -> str:
    """The JSON of ``--json`` and of a ``.json`` output: the settings, then the values."""
    flat = [_json_value(float(x)) for x in result.reshape(-1)]
    values: Any = (
        flat[0] if result.ndim == 0 else np.array(flat, dtype=object).reshape(result.shape).tolist()
    )
    document = {
        **settings,
        "dtype": str(result.dtype),
        "shape": list(result.shape),
        "values": values,
    }
    return json.dumps(document, allow_nan=False)


def _output_bytes(path: str, result: np.ndarray[Any, Any], document: str) -> bytes:
    """What ``--output path`` holds, by its suffix.

    Raises
    ------
    _CommandError
        A result of more than 2 dimensions for a ``.csv`` file.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        return (document + "\n").encode()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, result, allow_pickle=False)
        return buffer.getvalue()
    if result.ndim > 2:
        msg = (
            f"cannot write {path!r}: a CSV file holds at most 2 dimensions, and the result "
            f"has shape {result.shape}; use .npy or .json"
        )
        raise _CommandError(msg)
    # 17 significant digits give a float64 back exactly, 9 a float32.
    fmt = "%.17g" if result.dtype == np.float64 else "%.9g"
    np.savetxt(buffer, result.reshape(-1) if result.ndim < 2 else result, fmt=fmt, delimiter=",")
    return buffer.getvalue()


def _check_target(option: str, path: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output ``path`` that cannot be what ``option`` writes: a
    suffix not in ``suffixes``, a missing directory, or something other than a regular file
    (replacing ``/dev/null`` or a directory is never what was meant)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        msg = f"{option} {path!r}: the file name must end in {', '.join(suffixes)}"
        raise _CommandError(msg)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        msg = f"cannot write {path!r}: no directory {directory!r}"
        raise _CommandError(msg)
    if os.path.lexists(path) and not os.path.isfile(path):
        msg = f"cannot write {path!r}: it exists and is not a regular file"
        raise _CommandError(msg)


def _save(path: str, write: Callable[[str], None]) -> None:
    """Have ``write(temporary)`` make the file, then move it to ``path``, so that ``path``
    is either the whole file or left as it was, never partial.

    Raises
    ------
    _CommandError
        A file that cannot be written or moved (a full disk, no permission).
    """
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".kldiv-", suffix=suffix)
    except OSError as exc:
        msg = f"cannot write {path!r}: {_reason(exc)}"
        raise _CommandError(msg) from None
    os.close(fd)
    try:
        write(temporary)
        # mkstemp makes the file private (0600); the output gets a new file's usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        msg = f"cannot write {path!r}: {_reason(exc)}"
        raise _CommandError(msg) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


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


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _render(renderable: RenderableType) -> str:
    """``renderable`` as the text to print: rendered in memory, so that :func:`_write`
    reports any failure to print it. Plain text, no colours, off a terminal."""
    terminal = _stdout_is_terminal()
    width = shutil.get_terminal_size().columns if terminal else 200
    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=terminal,
        no_color=not terminal,
        highlight=False,
        emoji=False,
        markup=False,  # messages and file names are text: "[p]" is no style
        legacy_windows=False,
    )
    if isinstance(renderable, _Titled):
        console.print(renderable.heading, soft_wrap=True)
    console.print(renderable)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    # rich pads every line to the table's width and ends a borderless table with a blank
    # line; neither carries anything.
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


class _Titled(Table):
    """A table whose title is printed on a line of its own above it, unwrapped: rich's own
    title is wrapped to the width of the columns."""

    heading = ""


def _table(title: str, *columns: str, numbers: Sequence[int] | None = None) -> _Titled:
    """A table in the box characters stdout can encode: Unicode, else ASCII. The columns
    at the indices ``numbers`` (default: all but the first) are right-aligned."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    style = box.SIMPLE_HEAD if encoding in ("utf8", "utf16", "utf32") else box.ASCII
    table = _Titled(box=style, expand=False, show_edge=False, pad_edge=False)
    table.heading = title
    for i, column in enumerate(columns):
        right = i > 0 if numbers is None else i in numbers
        justify = "right" if right else "left"
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def _values_table(result: np.ndarray[Any, Any], title: str, label: str) -> _Titled:
    """Every value of ``result``, one row each, with its index."""
    table = _table(title, "index" if result.ndim != 1 else "row", label)
    if result.ndim == 0:
        table.add_row("-", _number(float(result)))
    for index in np.ndindex(result.shape if result.ndim else (0,)):
        table.add_row(", ".join(map(str, index)), _number(float(result[index])))
    return table


def _report(fn: Callable[..., int | None]) -> Callable[..., int | None]:
    """Turn a command's :class:`_CommandError` into click's exception of the same meaning,
    which :func:`main` prints as one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int | None:
        try:
            return fn(*args, **kwargs)
        except _CommandError as exc:
            raise _ClickError(str(exc)) from None
        except BrokenPipeError:
            # click would exit with status 1 for it; main() says nothing and returns 2.
            raise _PipeClosed from None

    return wrapper


class _ClickError(click.ClickException):
    exit_code = _EXIT_ERROR


class _PipeClosed(Exception):
    """stdout's reader went away (``| head``); stdout was discarded already."""


_COMPUTE_HELP = (
    "KL(P || Q) of each distribution along --axis. Without files, of the bundled example "
    f"p = {[list(r) for r in EXAMPLE_P]}, q = {[list(r) for r in EXAMPLE_Q]}.\n\n"
    "P and Q are .npy, .npz (--key), .csv or whitespace-separated text files, one "
    "distribution per line; Q broadcasts against P."
)


class _Kldiv(click.Group):
    """The command group, which also takes ``kldiv P Q [options]`` and ``kldiv --base 2``
    for ``kldiv compute ...``, as ``python -m kldiv`` did before it had subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and _means_compute(args[0]):
            args = ["compute", *args]
        return super().parse_args(ctx, args)


def _means_compute(first: str) -> bool:
    """Whether the first argument starts ``kldiv compute``'s: an option of compute's (not
    the group's help or version), or a file name, which no subcommand's name looks like."""
    if first.startswith("-"):
        return first not in ("-h", "--help", "--version")
    return "." in first or os.sep in first or os.path.exists(first)


@click.group(
    cls=_Kldiv,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Kullback-Leibler divergence on any array library. Without a command, or with "
    "files or options of compute's first (kldiv P Q --base 2): `kldiv compute`.",
)
@click.version_option(__version__, "--version", prog_name="kldiv", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> int | None:
    if ctx.invoked_subcommand is None:
        status: int | None = ctx.invoke(compute)
        return status
    return None


@cli.command(help=_COMPUTE_HELP)
@click.argument("p", required=False)
@click.argument("q", required=False)
@click.option("--key", multiple=True, help="The array of an .npz file; twice: P's, then Q's.")
@click.option("--logits", is_flag=True, help="P and Q are logits: KL(softmax(P) || softmax(Q)).")
@click.option("--axis", type=int, default=-1, show_default=True, help="The distribution axis.")
@click.option("--base", type=float, default=None, help="Logarithm base (default e: nats).")
@click.option(
    "--reduction",
    type=click.Choice(_REDUCTIONS),
    default="none",
    show_default=True,
    help="none: every value; sum; mean: sum / input elements; batchmean: mean per row.",
)
@click.option("--normalize", is_flag=True, help="Divide P and Q by their sums (counts too).")
@click.option(
    "--device",
    type=click.Choice(("auto", "cpu", "gpu")),
    default="auto",
    show_default=True,
    help="auto: the GPU (CuPy) where one is present, else the CPU.",
)
@click.option(
    "--output", "-o", default=None, help="Write the result to a .npy, .csv or .json file."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@_report
def compute(
    p: str | None = None,
    q: str | None = None,
    key: tuple[str, ...] = (),
    logits: bool = False,
    axis: int = -1,
    base: float | None = None,
    reduction: str = "none",
    normalize: bool = False,
    device: str = "auto",
    output: str | None = None,
    as_json: bool = False,
) -> None:
    if (p is None) != (q is None):
        msg = "give two files, P and Q, or none for the bundled example"
        raise _CommandError(msg)
    if len(key) > 2:
        msg = "give --key at most twice: P's array, then Q's"
        raise _CommandError(msg)
    if output is not None:
        _check_target("--output", output, _OUTPUT_SUFFIXES)
    if p is None or q is None:
        p_array, q_array = np.array(EXAMPLE_P), np.array(EXAMPLE_Q)
        if key:
            msg = "--key applies to .npz archives, and the bundled example is none"
            raise _CommandError(msg)
    else:
        keys = (key[0], key[-1]) if key else (None, None)
        p_array, q_array = _load("p", p, keys[0]), _load("q", q, keys[1])
    result = _compute(
        p_array,
        q_array,
        logits=logits,
        axis=axis,
        base=base,
        reduction=reduction,
        normalize=normalize,
        device=device,
    )
    function = "kl_div_logits" if logits else "kl_div"
    settings = {
        "function": function,
        "axis": axis,
        "base": base,
        "unit": _unit(base),
        "reduction": reduction,
        "normalize": normalize,
    }
    document = _document(result, settings)
    if output is not None:
        data = _output_bytes(output, result, document)
        _save(output, lambda temporary: _write_bytes(temporary, data))
    if as_json:
        _write(document)
    elif output is not None:
        _write(f"wrote {result.size} values to {output}")
    else:
        what = "KL(softmax(p) || softmax(q))" if logits else "KL(p || q)"
        where = f"axis {axis}" if reduction == "none" else f"axis {axis}, {reduction}"
        title = f"{what} along {where}, in {_unit(base)}"
        _write(_render(_values_table(result, title, what)))


def _progress(total: int, description: str) -> Any:
    """A rich progress bar on stderr, shown only on a terminal: elsewhere it would add lines
    to stderr, which carries errors alone."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task(description, total=total)
    return progress, lambda: progress.advance(task)


@cli.command(
    help="Check every installed library (NumPy, PyTorch, JAX, Dask, array_api_strict, CuPy "
    "with a GPU) and every fast path against a NumPy float64 reference, on random rows, "
    "zeros, logit gaps and long rows in float32 and float64. Exit status 1 on any failure."
)
@click.option(
    "--library",
    "libraries",
    multiple=True,
    type=click.Choice(("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")),
    help="Check only this library (repeat for several); default: every one installed.",
)
@_report
def check(libraries: tuple[str, ...] = ()) -> None:
    from kldiv import _check

    found = _check.paths(libraries or _check.LIBRARIES)
    if not found:
        msg = f"nothing to check: {', '.join(libraries)} not installed (or CuPy without a GPU)"
        raise _CommandError(msg)
    progress, advance = _progress(sum(len(p.dtypes) for p in found), "checking")
    with progress:
        rows = _check.run_check(found, advance)
    table = _table(
        "kldiv against a float64 reference",
        "library",
        "path",
        "function",
        "dtype",
        "max rel error",
        "tolerance",
        "result",
        numbers=(4, 5),
    )
    for row in rows:
        verdict = "PASS" if row.passed else f"FAIL {row.worst or row.failure}"
        if row.failure:
            verdict = f"FAIL {row.failure}"
        error = "-" if row.failure else f"{row.error:.2e}"
        tolerance = f"{_check.TOLERANCE[row.dtype]:.0e}"
        table.add_row(row.library, row.path, row.function, row.dtype, error, tolerance, verdict)
    failed = [row for row in rows if not row.passed]
    largest = []
    for dtype in _check.TOLERANCE:
        of_dtype = [row for row in rows if row.dtype == dtype and not row.failure]
        if of_dtype:
            w = max(of_dtype, key=lambda row: row.error)
            where = f"{w.library} {w.path} {w.function}, {w.worst}"
            largest.append(f"{dtype} {w.error:.2e} ({where})")
    summary = (
        f"{len(rows) - len(failed)} of {len(rows)} passed, {len(failed)} failed; "
        f"largest error: {'; '.join(largest) or 'none'}"
    )
    _write(_render(table) + "\n" + summary)
    if failed:
        raise click.exceptions.Exit(_EXIT_FAILED)


@cli.command(
    help="Time kldiv against the naive NumPy expression (and PyTorch, where installed) on "
    "a few CPU workloads, interleaved in this process; print the medians and ratios."
)
@click.option("--quick", is_flag=True, help="Small workloads and few repeats (seconds).")
@click.option("--repeat", type=click.IntRange(min=1), default=None, help="Samples per side.")
@click.option("--plot", default=None, help="Draw the ratios to this .png (needs matplotlib).")
@_report
def bench(quick: bool = False, repeat: int | None = None, plot: str | None = None) -> None:
    from kldiv import _bench

    pyplot = None
    if plot is not None:
        _check_target("--plot", plot, _PLOT_SUFFIXES)
        pyplot = _bench.pyplot()
        if pyplot is None:
            msg = "--plot needs matplotlib: pip install 'kldiv[plot]'"
            raise _CommandError(msg)
    workloads = _bench.workloads(quick)
    samples = repeat if repeat is not None else (3 if quick else 15)
    progress, advance = _progress(len(workloads), "benchmarking")
    with progress:
        results = [_bench.run(w, samples, after=advance) for w in workloads]
    sides = _bench.side_names(results)
    table = _table(
        f"median ms per call ({samples} samples); ratio to naive NumPy, below 1 is faster",
        "workload",
        "shape",
        *(f"{side} ms" for side in sides),
        *(f"{side} ratio" for side in sides if side != _bench.BASELINE),
    )
    for result in results:
        times = [result.times.get(side) for side in sides]
        ratios = [result.ratio(side) for side in sides if side != _bench.BASELINE]
        table.add_row(
            result.workload.name,
            f"{result.workload.shape} {result.workload.dtype}",
            *("-" if t is None else f"{t * 1e3:.3f}" for t in times),
            *("-" if r is None else f"{r:.2f}" for r in ratios),
        )
    notes = [f"WARNING: {note}" for result in results for note in result.warnings]
    if pyplot is not None and plot is not None:
        _save(plot, lambda temporary: _bench.draw(pyplot, results, temporary))
        notes.append(f"drew the ratios to {plot}")
    _write("\n".join([_render(table), *notes]))


@cli.command(help="Versions, the array libraries found, the compiled kernels, GPU and NVRTC.")
@_report
def info() -> None:
    table = _table(f"kldiv {__version__}", "item", "value", numbers=())
    for item, value in _info_rows():
        table.add_row(item, value)
    _write(_render(table))


def _version_of(module: str, distributions: Mapping[str, list[str]]) -> str:
    """The installed version of ``module``'s distribution, without importing it."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return "not installed"
    for dist in distributions.get(module, []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return "installed, version unknown"


def _info_rows() -> list[tuple[str, str]]:
    import importlib.metadata
    import platform

    import kldiv
    from kldiv._backends import numpy as numpy_path
    from kldiv._check import available_gpu

    rows = [
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("numpy", np.__version__),
    ]
    # Which distribution installs which module: read once, it scans every installed one.
    distributions = importlib.metadata.packages_distributions()
    for module in ("array_api_compat", "scipy", "torch", "jax", "dask", "cupy"):
        rows.append((module, _version_of(module, distributions)))
    rows += [(m, _version_of(m, distributions)) for m in ("array_api_strict", "matplotlib")]
    native = numpy_path._native
    if native is None:
        rows.append(("compiled kernels", "not built (the pure NumPy path runs)"))
    else:
        variants = native.variants()
        state = "on" if kldiv.get_options().compiled else "switched off by set_options"
        rows.append(
            ("compiled kernels", f"{variants[0]} ({state}; CPU runs {', '.join(variants)})")
        )
    rows.append(("threads", str(numpy_path._workers())))
    gpu = available_gpu()
    cupy_installed = _version_of("cupy", distributions) != "not installed"
    if gpu is not None:
        rows.append(("GPU", gpu[1]))
    else:
        rows.append(("GPU", _no_gpu_reason() if cupy_installed else "none"))
    if cupy_installed:
        rows.append(("NVRTC", _nvrtc_version()))
    return rows


def _no_gpu_reason() -> str:
    """``none``, with what CuPy says about it: on a new GPU machine, the driver's error is
    what the user needs to see."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy's errors for a missing or too old driver
        return f"none (CuPy: {type(exc).__name__}: {_reason(exc)})"
    return "none" if count == 0 else f"none usable of {count} (CuPy cannot open one)"


def _nvrtc_version() -> str:
    try:
        import cupy

        major, minor = cupy.cuda.nvrtc.getVersion()
    except Exception as exc:  # CuPy's errors for a missing library
        return f"not found ({type(exc).__name__}: {_reason(exc)})"
    return f"{major}.{minor}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kldiv`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status: 0; 1 when ``kldiv check`` finds a failure; 2 after an error,
        usage errors included, reported as one line ``kldiv: ...`` on stderr.
    """
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="kldiv",
            standalone_mode=False,
        )
    except (_PipeClosed, BrokenPipeError):
        # The reader has all it wanted (``| head``): like a Unix tool ended by SIGPIPE, say
        # nothing, but do not claim success, since not all output was delivered.
        _discard_stdout()
        return _EXIT_ERROR
    except click.ClickException as exc:
        print(f"kldiv: {_one_line(exc.format_message())}", file=sys.stderr)
        return _EXIT_ERROR
    except click.Abort:
        print("kldiv: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0
