"""``python -m kldiv``: the bundled example, two .npy files, and errors.

Most tests run the command in a subprocess, as a user does: what is checked is the whole
of what reaches stdout and stderr, exit-time flushing included, and the exit status.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kldiv import kl_div
from kldiv.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Placeholders in the file columns of BAD_INPUTS for what np.save cannot write.
MISSING = "missing"
DIRECTORY = "directory"

GOOD = np.array([[0.5, 0.5], [0.9, 0.1]])


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """``python -m kldiv *args`` from the checkout, with stdout and stderr captured unless
    ``kwargs`` say otherwise; never raises for a failing status."""
    kwargs.setdefault("capture_output", "stdout" not in kwargs and "stderr" not in kwargs)
    return subprocess.run(
        [sys.executable, "-m", "kldiv", *args],
        cwd=ROOT,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    """What ``np.save`` writes for ``array``."""
    from io import BytesIO

    buffer = BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _make(path: Path, content) -> Path:
    """Put ``content`` at ``path``: an array is saved with ``np.save``, bytes are written as
    they are, DIRECTORY makes a directory and MISSING nothing."""
    if content is DIRECTORY:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not MISSING:
        path.write_bytes(_npy_bytes(np.asarray(content)))
    return path


def _assert_one_line_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2, nothing on stdout, and one ``kldiv: `` line on stderr holding every
    one of ``fragments``, with no traceback."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("kldiv: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_module_prints_the_worked_example():
    out = subprocess.run(
        [sys.executable, "-m", "kldiv"], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[0.88995184, 1.08808468]"


def test_two_npy_files(tmp_path, capsys):
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([0.25, 0.75])
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    assert main([str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), "--base", "2"]) == 0
    printed = np.array(eval(capsys.readouterr().out))
    expected = np.sum(p * np.log2(p / q), axis=-1)
    np.testing.assert_allclose(printed, expected, rtol=1e-7)


def test_bad_files_and_bad_data_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.npy"), str(tmp_path / "missing.npy")]) == 2
    assert "cannot read p from" in capsys.readouterr().err
    np.save(tmp_path / "p.npy", np.array([0.5, 0.6]))
    assert main([str(tmp_path / "p.npy"), str(tmp_path / "p.npy")]) == 2
    assert "p is not normalised" in capsys.readouterr().err


def test_one_file_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "p.npy")])
    assert exc.value.code == 2


def test_every_value_of_a_long_batch_is_printed(tmp_path):
    # Over 1000 values, NumPy's printing shows 6 and "...".
    rng = np.random.default_rng(17)
    p = rng.dirichlet(np.ones(3), size=2000)
    q = rng.dirichlet(np.ones(3), size=2000)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    out = _run(str(tmp_path / "p.npy"), str(tmp_path / "q.npy"))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "..." not in out.stdout
    printed = np.array(ast.literal_eval(out.stdout))
    assert printed.shape == (2000,)
    # Printed with 8 decimals: each value within half a unit of the 8th of the true one.
    np.testing.assert_allclose(printed, kl_div(p, q), rtol=0, atol=5e-9)


def test_a_short_result_keeps_its_one_line_format(tmp_path):
    np.save(tmp_path / "p.npy", GOOD)
    np.save(tmp_path / "q.npy", np.array([0.5, 0.5]))
    out = _run(str(tmp_path / "p.npy"), str(tmp_path / "q.npy"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[0.        , 0.36806421]\n"


# Truncated files are cut from what np.save writes for a (2, 3) float64 array: 128 bytes of
# header (magic string, version, length and the padded dictionary), then 48 bytes of data.
_SAVED = _npy_bytes(np.full((2, 3), 1 / 3))


def _npy_with_header(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy file of the given header dictionary text, then ``data``."""
    text = header.encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


# (id, p, q, extra arguments, fragments the one line of stderr must hold). In the file
# columns, the name "p.npy"/"q.npy" of the file stands for its path in the message.
BAD_INPUTS = [
    # Files that cannot be read.
    ("missing file", MISSING, GOOD, (), ("p.npy", "No such file")),
    ("empty file", b"", GOOD, (), ("p.npy", "empty")),
    ("empty q file", GOOD, b"", (), ("cannot read q", "q.npy", "empty")),
    ("truncated data", GOOD, _SAVED[:150], (), ("q.npy", "truncated")),
    ("truncated header", _SAVED[:40], GOOD, (), ("p.npy", "array header")),
    ("truncated magic string", _SAVED[:3], GOOD, (), ("p.npy", "truncated")),
    ("text file", b"0.5 0.5\n", GOOD, (), ("p.npy", "not a .npy file")),
    ("pickle file", pickle.dumps([0.5, 0.5]), GOOD, (), ("p.npy", "not a .npy file")),
    ("npz archive", b"PK\x03\x04" + bytes(40), GOOD, (), ("p.npy", "zip archive")),
    ("object array", np.array([{}, 1], dtype=object), GOOD, (), ("p.npy", "Python objects")),
    ("directory", DIRECTORY, GOOD, (), ("p.npy", "directory")),
    ("unhashable header key", _npy_with_header("{[1]: 2}"), GOOD, (), ("p.npy", "valid")),
    ("unclosed header", _npy_with_header("{'descr': "), GOOD, (), ("p.npy", "valid")),
    (
        "bad descr",
        _npy_with_header("{'descr': (), 'fortran_order': False, 'shape': (2,)}", bytes(16)),
        GOOD,
        (),
        ("p.npy", "valid"),
    ),
    (
        # 2**40 float64 entries, 8 TiB, that the file does not hold: no attempt to allocate.
        "huge shape",
        _npy_with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,)}", bytes(16)
        ),
        GOOD,
        (),
        ("p.npy", "truncated"),
    ),
    ("unknown version", b"\x93NUMPY\x09\x00" + bytes(40), GOOD, (), ("p.npy", "version")),
    # Data that kl_div rejects.
    ("integer dtype", np.array([1, 0]), GOOD, (), ("real floating", "int64")),
    ("bool dtype", np.array([True, False]), GOOD, (), ("real floating", "bool")),
    ("complex dtype", np.array([0.5 + 0j, 0.5]), GOOD, (), ("real floating", "complex")),
    ("string dtype", np.array(["a", "b"]), GOOD, (), ("real floating",)),
    ("structured dtype", np.zeros(2, dtype="f8,f8"), GOOD, (), ("real floating",)),
    ("datetime dtype", np.array(["2020-01-01"], dtype="M8[D]"), GOOD, (), ("real floating",)),
    ("0-d arrays", np.array(1.0), np.array(1.0), (), ("out of bounds",)),
    ("0-d p", np.array(1.0), GOOD, (), ("cannot be broadcast",)),
    ("NaN entry", np.array([np.nan, 0.5]), GOOD, (), ("NaN",)),
    ("negative entry", np.array([-0.5, 1.5]), GOOD, (), ("negative",)),
    ("not normalised", np.array([0.5, 0.6]), GOOD, (), ("not normalised",)),
    ("shapes", np.full((3, 2), 0.5), GOOD, (), ("broadcast",)),
    ("one-entry distributions", np.ones((2, 1)), GOOD, (), ("cannot be broadcast",)),
    ("empty distribution", np.zeros((2, 0)), np.zeros((2, 0)), (), ("no entries",)),
    # Arguments that kl_div rejects.
    ("axis out of range", GOOD, GOOD, ("--axis", "2"), ("out of bounds",)),
    ("huge axis", GOOD, GOOD, ("--axis", str(2**70)), ("out of bounds",)),
    ("base 1", GOOD, GOOD, ("--base", "1"), ("base",)),
    ("base 0", GOOD, GOOD, ("--base", "0"), ("base",)),
    ("negative base", GOOD, GOOD, ("--base", "-2"), ("base",)),
    ("NaN base", GOOD, GOOD, ("--base", "nan"), ("base",)),
    ("infinite base", GOOD, GOOD, ("--base", "1e999"), ("base",)),
]


@pytest.mark.parametrize(
    ("p", "q", "args", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, p, q, args, fragments):
    p_path = _make(tmp_path / "p.npy", p)
    q_path = _make(tmp_path / "q.npy", q)
    out = _run(str(p_path), str(q_path), *args)
    shown = [f.replace("p.npy", str(p_path)).replace("q.npy", str(q_path)) for f in fragments]
    _assert_one_line_error(out, *shown)


def test_bad_arguments_for_the_bundled_example():
    _assert_one_line_error(_run("--axis", "-3"), "out of bounds")
    _assert_one_line_error(_run("--base", "1"), "base")


@pytest.mark.parametrize(
    "args",
    [("--base", "two"), ("--axis", "1.5"), ("--axis", "last"), ("only_p.npy",)],
    ids=["base", "float axis", "word axis", "one file"],
)
def test_usage_errors_exit_2_without_a_traceback(args):
    out = _run(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("usage: ")
    assert "error: " in out.stderr.splitlines()[-1]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("rows", [None, 2000], ids=["example", "2000 rows"])
def test_a_failed_write_is_one_line_and_exit_2(tmp_path, rows):
    # /dev/full fails every write with ENOSPC: the short example fails when it is flushed,
    # the long result already while printing.
    args: list[str] = []
    if rows is not None:
        np.save(tmp_path / "p.npy", np.full((rows, 2), 0.5))
        args = [str(tmp_path / "p.npy"), str(tmp_path / "p.npy")]
    with open("/dev/full", "w") as full:
        out = _run(*args, stdout=full, stderr=subprocess.PIPE)
    assert out.returncode == 2, out.stderr
    assert out.stderr == "kldiv: cannot write the result to stdout: No space left on device\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_a_closed_pipe_exits_2_silently():
    # The read end is closed before the command starts, so its first write meets EPIPE,
    # as `python -m kldiv | head -c 1` does once head has exited.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = _run(stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert out.returncode == 2
    assert out.stderr == ""


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh to close stdout")
def test_a_closed_stdout_is_one_line_and_exit_2():
    out = subprocess.run(
        ["/bin/sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "kldiv"],
        cwd=ROOT,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr == "kldiv: cannot write the result: stdout is closed\n"


class _FullStream:
    """A text stream whose every write fails as on a full disk, and has no descriptor."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass


def test_a_failed_write_in_process_leaves_the_streams_alone(monkeypatch, capsys):
    # main() called from Python must not redirect the caller's file descriptors: a stream
    # without one (pytest's capture here) is left as it is.
    monkeypatch.setattr(sys, "stdout", _FullStream())
    assert main([]) == 2
    assert capsys.readouterr().err == (
        "kldiv: cannot write the result to stdout: No space left on device\n"
    )
