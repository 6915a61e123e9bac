"""``python -m kldiv``: the bundled example, two .npy files, and errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kldiv.cli import main


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
    assert "cannot read input" in capsys.readouterr().err
    np.save(tmp_path / "p.npy", np.array([0.5, 0.6]))
    assert main([str(tmp_path / "p.npy"), str(tmp_path / "p.npy")]) == 2
    assert "p is not normalised" in capsys.readouterr().err


def test_one_file_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "p.npy")])
    assert exc.value.code == 2
