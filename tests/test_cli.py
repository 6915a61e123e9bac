"""The ``kldiv`` command: compute, check, bench, info, and every error.

Most tests run the command in a subprocess, as a user does: what is checked is the whole
of what reaches stdout and stderr, exit-time flushing included, and the exit status. Values
are checked against NumPy and SciPy computations written out here, not against kldiv.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import scipy.special

from kldiv._table import DIVERGENCES
from kldiv.cli import EXAMPLE_P, EXAMPLE_Q, main

ROOT = Path(__file__).resolve().parents[1]

# Placeholders in the file columns of BAD_INPUTS for what np.save cannot write.
MISSING = "missing"
DIRECTORY = "directory"

GOOD = np.array([[0.5, 0.5], [0.9, 0.1]])

DTYPES = ("float16", "float32", "float64")


def _run(
    *args: str, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    """``python -m kldiv *args`` from the checkout, with stdout and stderr captured unless
    ``kwargs`` say otherwise; never raises for a failing status."""
    kwargs.setdefault("capture_output", "stdout" not in kwargs and "stderr" not in kwargs)
    return subprocess.run(
        [sys.executable, "-m", "kldiv", *args],
        cwd=ROOT,
        text=True,
        timeout=120,
        check=False,
        env=env,
        **kwargs,
    )


def _ok(*args: str) -> str:
    """The stdout of a successful ``python -m kldiv *args``, which printed nothing else."""
    out = _run(*args)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out.stdout


def _json(*args: str) -> dict:
    return json.loads(_ok(*args, "--json"))


def _npy_bytes(array: np.ndarray) -> bytes:
    """What ``np.save`` writes for ``array``."""
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
        assert fragment in lines[0], lines[0]


def _kl(p, q, axis=-1):
    """KL(p || q) as the textbook writes it, for inputs without zeros."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return np.sum(p * np.log(p / q), axis=axis)


def _table_values(text: str) -> tuple[list[str], np.ndarray]:
    """The index labels and values of ``kldiv compute``'s table: the lines after the rule."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line) <= set("─-+ ") and line)
    rows = [line.rsplit(None, 1) for line in lines[rule + 1 :]]
    return [r[0] for r in rows], np.array([float(r[1]) for r in rows])


# --- compute: values ------------------------------------------------------------------------


def test_module_prints_the_worked_example_as_a_table():
    expected = _kl(EXAMPLE_P, EXAMPLE_Q)
    a, b = (f"{x:.9g}" for x in expected)
    width = max(len("KL(p || q)"), len(a), len(b))
    assert _ok() == (
        "KL(p || q) along axis -1, in nats\n"
        f"row   {'KL(p || q)':>{width}}\n"
        f"{'─' * (6 + width)}\n"
        f"0     {a:>{width}}\n"
        f"1     {b:>{width}}\n"
    )
    assert _ok("compute") == _ok()


def test_console_script_runs_the_same_command():
    script = Path(sys.executable).with_name("kldiv")
    if not script.exists():
        pytest.skip("the kldiv script is not installed (pip install -e .)")
    out = subprocess.run(
        [script, "compute", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _json("compute")


def test_files_or_options_first_mean_compute(tmp_path):
    # `python -m kldiv P Q [--axis N] [--base B]` was the command before it had subcommands.
    q = np.array([0.25, 0.75])
    np.save(tmp_path / "p.npy", GOOD)
    np.save(tmp_path / "q.npy", q)
    files = (str(tmp_path / "p.npy"), str(tmp_path / "q.npy"))
    assert _ok(*files, "--base", "2") == _ok("compute", *files, "--base", "2")
    assert _json("--base", "2") == _json("compute", "--base", "2")
    _assert_one_line_error(_run("missing.npy", "q.npy"), "missing.npy", "No such file")


def test_json_of_the_example():
    document = _json("compute")
    assert document["function"] == "kl_div"
    assert document["shape"] == [2]
    assert document["dtype"] == "float64"
    np.testing.assert_allclose(document["values"], _kl(EXAMPLE_P, EXAMPLE_Q), rtol=1e-14)


def test_two_npy_files_in_base_2(tmp_path):
    q = np.array([0.25, 0.75])
    np.save(tmp_path / "p.npy", GOOD)
    np.save(tmp_path / "q.npy", q)
    document = _json("compute", str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), "--base", "2")
    np.testing.assert_allclose(document["values"], _kl(GOOD, q) / np.log(2), rtol=1e-14)
    assert document["unit"] == "bits"


def test_every_file_format(tmp_path):
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(4), size=5)
    q = rng.dirichlet(np.ones(4), size=5)
    expected = _kl(p, q)
    np.savetxt(tmp_path / "p.csv", p, delimiter=",", fmt="%.17g")
    np.savetxt(tmp_path / "q.txt", q, fmt="%.17g", header="q, one row per line")
    np.savez(tmp_path / "pq.npz", p=p, q=q)
    np.savez(tmp_path / "q1.npz", q)
    np.save(tmp_path / "p.npy", p)
    (tmp_path / "p.data").write_bytes((tmp_path / "p.npy").read_bytes())  # sniffed as .npy
    for pair in (
        ("p.csv", "q.txt"),
        ("pq.npz", "pq.npz", "--key", "p", "--key", "q"),
        ("p.npy", "q1.npz"),
        ("p.data", "q.txt"),
    ):
        files = [str(tmp_path / a) if "." in a else a for a in pair]
        np.testing.assert_allclose(_json("compute", *files)["values"], expected, rtol=1e-12)


def test_logits(tmp_path):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 6)) * 3, rng.standard_normal((3, 6)) * 3
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    la, lb = scipy.special.log_softmax(a, axis=-1), scipy.special.log_softmax(b, axis=-1)
    expected = np.sum(np.exp(la) * (la - lb), axis=-1)
    document = _json("compute", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--logits")
    assert document["function"] == "kl_div_logits"
    np.testing.assert_allclose(document["values"], expected, rtol=1e-12)


def test_axis_0(tmp_path):
    np.save(tmp_path / "p.npy", GOOD.T)
    np.save(tmp_path / "q.npy", np.array([[0.25], [0.75]]))
    document = _json("compute", str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), "--axis", "0")
    np.testing.assert_allclose(document["values"], _kl(GOOD, [0.25, 0.75]), rtol=1e-14)


def test_normalize_integer_counts_and_reductions(tmp_path):
    counts_p = np.array([[1, 3, 0, 4], [2, 2, 2, 2], [5, 1, 1, 1]])
    counts_q = np.array([[2, 2, 2, 2], [1, 1, 1, 5], [3, 3, 1, 1]])
    np.save(tmp_path / "p.npy", counts_p)
    np.save(tmp_path / "q.npy", counts_q)
    p = counts_p / counts_p.sum(axis=1, keepdims=True)
    q = counts_q / counts_q.sum(axis=1, keepdims=True)
    rows = np.sum(scipy.special.rel_entr(p, q), axis=1)
    files = (str(tmp_path / "p.npy"), str(tmp_path / "q.npy"))
    got = _json("compute", *files, "--normalize")["values"]
    np.testing.assert_allclose(got, rows, rtol=1e-14)
    expected = {"sum": rows.sum(), "mean": rows.sum() / p.size, "batchmean": rows.mean()}
    for reduction, value in expected.items():
        document = _json("compute", *files, "--normalize", "--reduction", reduction)
        assert document["shape"] == []
        np.testing.assert_allclose(document["values"], value, rtol=1e-14)
    labels, values = _table_values(_ok("compute", *files, "--normalize", "--reduction", "sum"))
    assert labels == ["-"]
    np.testing.assert_allclose(values, [rows.sum()], rtol=1e-8)


def test_infinite_values_in_json_and_table(tmp_path):
    np.save(tmp_path / "p.npy", np.array([[0.5, 0.5], [0.5, 0.5]]))
    np.save(tmp_path / "q.npy", np.array([[1.0, 0.0], [0.5, 0.5]]))
    files = (str(tmp_path / "p.npy"), str(tmp_path / "q.npy"))
    assert _json("compute", *files)["values"] == ["inf", 0.0]
    assert _table_values(_ok("compute", *files))[1].tolist() == [np.inf, 0.0]


def test_every_value_of_a_long_batch_is_in_the_table(tmp_path):
    rng = np.random.default_rng(17)
    p = rng.dirichlet(np.ones(3), size=2000)
    q = rng.dirichlet(np.ones(3), size=2000)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    labels, values = _table_values(_ok("compute", str(tmp_path / "p.npy"), str(tmp_path / "q.npy")))
    assert labels == [str(i) for i in range(2000)]
    np.testing.assert_allclose(values, _kl(p, q), rtol=1e-8)


def test_a_3d_result_is_indexed(tmp_path):
    p = np.full((2, 3, 2), 0.5)
    q = np.array([0.25, 0.75])
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    labels, values = _table_values(_ok("compute", str(tmp_path / "p.npy"), str(tmp_path / "q.npy")))
    assert labels[:4] == ["0, 0", "0, 1", "0, 2", "1, 0"]
    np.testing.assert_allclose(values, _kl(p, q).reshape(-1), rtol=1e-8)


def test_output_files(tmp_path):
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(5), size=(3, 4)).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", p[::-1].copy())
    expected = _kl(p, p[::-1])
    files = (str(tmp_path / "p.npy"), str(tmp_path / "q.npy"))
    for suffix in (".npy", ".json"):
        target = tmp_path / f"out{suffix}"
        assert _ok("compute", *files, "-o", str(target)) == f"wrote 12 values to {target}\n"
        if suffix == ".npy":
            saved = np.load(target)
            assert saved.dtype == np.float32
        else:
            saved = np.array(json.loads(target.read_text())["values"])
        assert saved.shape == (3, 4)
        np.testing.assert_allclose(saved, expected, rtol=1e-6)
    np.save(tmp_path / "p2.npy", p[0])
    np.save(tmp_path / "q2.npy", p[1])
    target = tmp_path / "out.csv"
    _ok("compute", str(tmp_path / "p2.npy"), str(tmp_path / "q2.npy"), "--output", str(target))
    np.testing.assert_allclose(np.loadtxt(target, delimiter=","), _kl(p[0], p[1]), rtol=1e-6)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith(".")) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_json_and_output_together(tmp_path):
    target = tmp_path / "out.json"
    printed = _ok("compute", "--json", "--output", str(target))
    assert json.loads(printed) == json.loads(target.read_text())


def test_device_cpu_and_auto_agree():
    assert _json("compute", "--device", "cpu") == _json("compute", "--device", "auto")


def test_device_gpu_without_a_gpu_is_one_line():
    from kldiv._check import available_gpu

    if available_gpu() is not None:
        pytest.skip("a GPU is present")
    _assert_one_line_error(_run("compute", "--device", "gpu"), "--device gpu", "no GPU")


# --- compute: errors ------------------------------------------------------------------------


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
    ("npz archive", b"PK\x03\x04" + bytes(40), GOOD, (), ("p.npy", "zip archive", ".npz")),
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
def test_bad_npy_input_is_one_line_and_exit_2(tmp_path, p, q, args, fragments):
    p_path = _make(tmp_path / "p.npy", p)
    q_path = _make(tmp_path / "q.npy", q)
    out = _run("compute", str(p_path), str(q_path), *args)
    shown = [f.replace("p.npy", str(p_path)).replace("q.npy", str(q_path)) for f in fragments]
    _assert_one_line_error(out, *shown)


def _npz_with_member(name: str, data: bytes) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def _npz(**arrays) -> bytes:
    buffer = BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# (id, P's file name, its content, extra arguments, fragments of the one line of stderr);
# Q is a good .npy file. "P" in a fragment stands for P's path.
BAD_FILES = [
    ("npz of two arrays, no key", "p.npz", _npz(a=GOOD, b=GOOD), (), ("2 arrays", "--key")),
    ("npz without the key", "p.npz", _npz(a=GOOD), ("--key", "b"), ("no array 'b'",)),
    ("npz not a zip", "p.npz", b"not a zip at all", (), ("P", "not a valid .npz")),
    ("npz truncated member", "p.npz", _npz_with_member("a.npy", _SAVED[:150]), (), ("truncated",)),
    (
        "npz object member",
        "p.npz",
        _npz_with_member("a.npy", _npy_bytes(np.array([{}, 1], dtype=object))),
        (),
        ("Python objects",),
    ),
    ("npz empty", "p.npz", _npz(), (), ("0 arrays",)),
    ("key for a .npy", "p.npy", _npy_bytes(GOOD), ("--key", "a"), ("--key", ".npz")),
    (
        "three keys",
        "p.npz",
        _npz(a=GOOD),
        ("--key", "a", "--key", "a", "--key", "a"),
        ("at most twice",),
    ),
    ("csv of words", "p.csv", b"0.5,half\n", (), ("P", "not a CSV file of numbers")),
    ("csv ragged", "p.csv", b"0.5,0.5\n1\n", (), ("not a CSV file",)),
    ("csv empty", "p.csv", b"", (), ("no numbers",)),
    ("csv comments only", "p.csv", b"# nothing\n", (), ("no numbers",)),
    ("text not numbers", "p.txt", b"\xff\xfe\x00", (), ("P", "not a text file of numbers")),
    ("csv missing", "p.csv", MISSING, (), ("P", "No such file")),
    ("text is a directory", "p.txt", DIRECTORY, (), ("P",)),
    ("csv shape mismatch", "p.csv", b"0.5,0.25,0.25\n", (), ("broadcast",)),
    ("csv not normalised", "p.csv", b"0.5,0.6\n", (), ("not normalised",)),
    ("csv negative", "p.csv", b"-0.5,1.5\n", (), ("negative",)),
    ("normalize a zero row", "p.csv", b"0,0\n1,1\n", ("--normalize",), ("sums to 0",)),
    ("normalize logits", "p.csv", b"1,2\n", ("--normalize", "--logits"), ("--logits",)),
    ("normalize bad axis", "p.csv", b"1,2\n", ("--normalize", "--axis", "7"), ("out of bounds",)),
    ("logits with +inf", "p.csv", b"1,inf\n", ("--logits",), ("inf",)),
]


@pytest.mark.parametrize(
    ("name", "content", "args", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_FILES],
)
def test_bad_file_is_one_line_and_exit_2(tmp_path, name, content, args, fragments):
    p_path = _make(tmp_path / name, content)
    q_path = _make(tmp_path / "q.npy", GOOD)
    out = _run("compute", str(p_path), str(q_path), *args)
    _assert_one_line_error(
        out, *(f.replace("P", repr(str(p_path))) if f == "P" else f for f in fragments)
    )


BAD_USAGE = [
    (("compute", "--base", "two"), ("--base", "two")),
    (("compute", "--axis", "1.5"), ("--axis",)),
    (("compute", "--axis", "last"), ("--axis",)),
    (("compute", "--reduction", "median"), ("--reduction", "median")),
    (("compute", "--device", "tpu"), ("--device",)),
    (("compute", "only_p.npy"), ("two files",)),
    (("compute", "--key", "a"), ("--key", "bundled example")),
    (("compute", "a", "b", "c"), ("unexpected extra argument",)),
    (("chekc",), ("No such command 'chekc'",)),
    (("frobnicate",), ("No such command",)),
    (("check", "--library", "numpyy"), ("--library",)),
    (("bench", "--repeat", "0"), ("--repeat",)),
    (("compute", "--bogus"), ("No such option",)),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE])
def test_usage_errors_are_one_line_and_exit_2(args, fragments):
    _assert_one_line_error(_run(*args), *fragments)


def test_help_and_version():
    for command in ((), ("compute",), ("check",), ("bench",), ("info",)):
        out = _ok(*command, "--help")
        assert out.startswith("Usage: kldiv"), out
    assert "--reduction [none|sum|mean|batchmean]" in _ok("compute", "--help")
    from kldiv import __version__

    assert _ok("--version") == f"kldiv {__version__}\n"


# --- compute: outputs that cannot be written ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("out.txt", (".npy, .csv, .json",)),
        ("missing/out.npy", ("no directory",)),
        ("adir.npy", ("not a regular file",)),
    ],
    ids=["suffix", "no directory", "a directory"],
)
def test_bad_output_is_refused_before_any_work(tmp_path, name, fragments):
    (tmp_path / "adir.npy").mkdir()
    out = _run("compute", "--output", str(tmp_path / name))
    _assert_one_line_error(out, str(tmp_path / name), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.npy"]


def test_a_csv_of_3_dimensions_is_refused(tmp_path):
    np.save(tmp_path / "p.npy", np.full((2, 2, 2, 2), 0.5))
    target = tmp_path / "out.csv"
    out = _run("compute", str(tmp_path / "p.npy"), str(tmp_path / "p.npy"), "-o", str(target))
    _assert_one_line_error(out, "CSV", "(2, 2, 2)")
    assert not target.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_a_failed_output_write_leaves_no_partial_file(tmp_path):
    # A 1000-byte file size limit: the 16000-byte .npy fails with EFBIG (Python ignores
    # SIGXFSZ), whatever the user's permissions, root included. The limit is set in the child
    # before it runs the command (a preexec_fn would fork this process, which JAX, imported
    # by other tests, warns against).
    np.save(tmp_path / "p.npy", np.full((2000, 2), 0.5))
    target = tmp_path / "out.npy"
    target.write_bytes(b"the old file")
    args = ["compute", str(tmp_path / "p.npy"), str(tmp_path / "p.npy"), "-o", str(target)]
    limited = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)); "
        f"sys.argv = ['kldiv', *{args!r}]; "
        "runpy.run_module('kldiv', run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", limited],
        cwd=ROOT,
        text=True,
        timeout=120,
        check=False,
        capture_output=True,
    )
    _assert_one_line_error(out, f"cannot write {str(target)!r}", "File too large")
    assert target.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "p.npy"]


# --- writing to stdout ----------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("rows", [None, 2000], ids=["example", "2000 rows"])
def test_a_failed_write_is_one_line_and_exit_2(tmp_path, rows):
    # /dev/full fails every write with ENOSPC, when the text is flushed.
    args: list[str] = []
    if rows is not None:
        np.save(tmp_path / "p.npy", np.full((rows, 2), 0.5))
        args = ["compute", str(tmp_path / "p.npy"), str(tmp_path / "p.npy")]
    with open("/dev/full", "w") as full:
        out = _run(*args, stdout=full, stderr=subprocess.PIPE)
    assert out.returncode == 2, out.stderr
    assert out.stderr == "kldiv: cannot write the result to stdout: No space left on device\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
@pytest.mark.parametrize("command", [(), ("info",)], ids=["compute", "info"])
def test_a_closed_pipe_exits_2_silently(command):
    # The read end is closed before the command starts, so its first write meets EPIPE,
    # as `kldiv | head -c 1` does once head has exited.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = _run(*command, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert out.returncode == 2
    assert out.stderr == ""


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh to close stdout")
def test_a_closed_stdout_is_one_line_and_exit_2():
    out = subprocess.run(
        ["/bin/sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "kldiv"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr == "kldiv: cannot write the result: stdout is closed\n"


def test_an_ascii_stdout_gets_an_ascii_table():
    out = _run(env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.isascii()
    assert _table_values(out.stdout)[1].tolist() == _table_values(_ok())[1].tolist()


class _FullStream:
    """A text stream whose every write fails as on a full disk, and has no descriptor."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_a_failed_write_in_process_leaves_the_streams_alone(monkeypatch, capsys):
    # main() called from Python must not redirect the caller's file descriptors: a stream
    # without one (pytest's capture here) is left as it is.
    monkeypatch.setattr(sys, "stdout", _FullStream())
    assert main([]) == 2
    assert capsys.readouterr().err == (
        "kldiv: cannot write the result to stdout: No space left on device\n"
    )


# --- check ----------------------------------------------------------------------------------


def _check_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("──"))
    return [line.split() for line in lines[rule + 1 : -1]]


def test_check_passes_every_installed_library():
    import importlib.util

    out = _run("check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""
    rows = _check_rows(out.stdout)
    libraries = {row[0] for row in rows}
    expected = {"numpy"} | {
        name
        for name in ("array_api_strict", "torch", "jax", "dask")
        if importlib.util.find_spec(name)
    }
    assert expected <= libraries
    functions = set(DIVERGENCES)  # every row of the table
    paths = {(row[0], row[1]) for row in rows}
    assert {("numpy", "short"), ("numpy", "pool"), ("numpy", "compiled")} <= paths
    assert ("numpy", "tiles") in paths
    for path in paths:
        # the array API standard has no float16
        dtypes = ("float32", "float64") if path[0] == "array_api_strict" else DTYPES
        assert {r[3] for r in rows if (r[0], r[1]) == path} == set(dtypes)
        for dtype in dtypes:
            assert {r[2] for r in rows if (r[0], r[1]) == path and r[3] == dtype} == functions
    assert all(row[6] == "PASS" and float(row[4]) <= float(row[5]) for row in rows)
    summary = out.stdout.splitlines()[-1]
    assert summary.startswith(f"{len(rows)} of {len(rows)} passed, 0 failed; largest error: ")
    largest = re.findall(r"(float\d\d) ([0-9.e+-]+) \(", summary)
    for dtype, value in largest:
        assert float(value) == max(float(r[4]) for r in rows if r[3] == dtype)
    assert [dtype for dtype, _ in largest] == list(DTYPES)


def test_check_fails_a_wrong_function_with_exit_1():
    # hellinger off by 1e-2 relative (5 times the float16 tolerance), in every path.
    code = (
        "import sys, kldiv\n"
        "right = kldiv.hellinger\n"
        "kldiv.hellinger = lambda *a, **k: right(*a, **k) * (1 + 1e-2)\n"
        "from kldiv.cli import main\n"
        "sys.exit(main(['check', '--library', 'numpy']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 1, out.stdout + out.stderr
    rows = _check_rows(out.stdout)
    assert {row[0] for row in rows} == {"numpy"}
    failed = [row for row in rows if row[6] != "PASS"]
    assert {row[2] for row in failed} == {"hellinger"}
    assert len(failed) == 9  # three paths, three dtypes
    assert all(row[6] == "FAIL" and 9e-3 < float(row[4]) < 1.1e-2 for row in failed)
    assert out.stdout.splitlines()[-1].startswith(
        f"{len(rows) - 9} of {len(rows)} passed, 9 failed"
    )


def test_check_reports_an_exception_as_a_failure():
    code = (
        "import sys, kldiv\n"
        "def broken(*a, **k):\n"
        "    raise RuntimeError('broken on purpose')\n"
        "kldiv.js_div = broken\n"
        "from kldiv.cli import main\n"
        "sys.exit(main(['check', '--library', 'numpy']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    failed = [line for line in out.stdout.splitlines() if " FAIL " in f" {line} "]
    assert len(failed) == 9
    assert all("js_div" in line and "broken on purpose" in line for line in failed)


def test_check_error_measure():
    from kldiv._check import error

    assert error(np.array([1.0, np.inf]), np.array([1.0, np.inf]), "float64") == 0
    assert error(np.array([1.0, 2.0]), np.array([1.0, 2.002]), "float64") == pytest.approx(
        0.002 / 2.002
    )
    assert error(np.array([np.nan]), np.array([1.0]), "float64") == np.inf
    assert error(np.array([np.inf]), np.array([1.0]), "float32") == np.inf
    assert error(np.array([1.0]), np.array([1.0, 1.0]), "float32") == np.inf
    # Below the floor, the error is absolute: 1e-7 off a reference of 1e-9.
    assert error(np.array([1.01e-7]), np.array([1e-9]), "float32") == pytest.approx(0.1)


# --- bench ----------------------------------------------------------------------------------


def _bench_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("──"))
    return [
        re.split(r"\s{2,}", line.strip()) for line in lines[rule + 1 :] if line.startswith("W1")
    ]


def test_bench_quick_with_a_plot(tmp_path):
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed")
    target = tmp_path / "ratios.png"
    out = _ok("bench", "--quick", "--repeat", "3", "--plot", str(target))
    header = out.splitlines()[1].split()
    rows = _bench_rows(out)
    assert [row[0] for row in rows] == ["W1", "W1-logits", "W1-entropy", "W1-loss"]
    sides = [
        h[: -len(" ms")]
        for h in re.split(r"\s{2,}", out.splitlines()[1].strip())
        if h.endswith(" ms")
    ]
    assert sides[:2] == ["kldiv", "numpy"]
    for row in rows:
        assert row[1] == "(256, 100) float32"
        times = dict(zip(sides, map(float, row[2 : 2 + len(sides)]), strict=True))
        ratios = [float(r) for r in row[2 + len(sides) :]]
        others = [s for s in sides if s != "numpy"]
        assert len(ratios) == len(others)
        for side, ratio in zip(others, ratios, strict=True):
            # the table rounds ms to 3 decimals and ratios to 2: recompute from the rounding
            assert ratio == pytest.approx(times[side] / times["numpy"], rel=0.05, abs=0.01)
    assert "ratio" in " ".join(header)
    assert out.splitlines()[-1] == f"drew the ratios to {target}"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratios.png"]


def test_bench_plot_without_matplotlib_is_one_line(tmp_path):
    # A matplotlib that cannot be imported, first on the path, stands for a missing one.
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    target = tmp_path / "ratios.png"
    out = _run("bench", "--quick", "--plot", str(target), env=env)
    _assert_one_line_error(out, "--plot needs matplotlib", "kldiv[plot]")
    assert not target.exists()


def test_bench_plot_to_a_bad_name_is_refused_first(tmp_path):
    _assert_one_line_error(_run("bench", "--quick", "--plot", str(tmp_path / "r.txt")), ".png")
    _assert_one_line_error(_run("bench", "--plot", str(tmp_path / "no" / "r.png")), "no directory")


# --- info and import ------------------------------------------------------------------------


def test_info():
    out = _ok("info")
    items = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines()[3:])
    from kldiv import __version__
    from kldiv._backends import numpy as numpy_path

    assert out.splitlines()[0] == f"kldiv {__version__}"
    assert items["numpy"] == np.__version__
    assert items["scipy"] == scipy.__version__
    for module in ("torch", "jax", "dask", "cupy", "array_api_strict", "matplotlib"):
        assert module in items
    if numpy_path._native is None:
        assert items["compiled kernels"].startswith("not built")
    else:
        assert items["compiled kernels"].startswith(f"{numpy_path._native.variants()[0]} (on;")
    assert int(items["threads"]) >= 1
    from kldiv._check import available_gpu

    gpu = available_gpu()
    if gpu is None:
        assert items["GPU"].startswith("none")
    else:
        assert items["GPU"] == gpu[1]
    assert ("NVRTC" in items) == (items["cupy"] != "not installed")


def test_import_kldiv_loads_neither_click_nor_rich():
    code = "import sys, kldiv\nprint(sorted(m for m in ('click', 'rich') if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
