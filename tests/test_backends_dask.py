"""The Dask bridge, kldiv._backends.dask: each chunk on its library's fast path.

Values against NumPy with distributions in one chunk and across several, laziness (nothing
computed before ``.compute()``), the lazy NaN of the checks, and Dask's distributed scheduler:
two worker processes, and an array several times their memory, generated lazily.
"""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv._table import DIVERGENCES
from tests._references import REDUCTIONS, call, inputs

da = pytest.importorskip("dask.array")

CHUNKINGS = {
    "rows in one chunk": (16, 40),
    "rows across chunks": (16, 7),
    "one chunk": (64, 40),
}


def arrays(name: str, dtype: str = "float64", seed: int = 0) -> tuple[np.ndarray, ...]:
    """:func:`tests._references.inputs` of shape ``(64, 40)``, in ``dtype``."""
    return tuple(x.astype(dtype) for x in inputs(name, (64, 40), seed))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
@pytest.mark.parametrize("name", REDUCTIONS)
def test_values_equal_numpys(name, chunks, dtype):
    p, q = arrays(name, dtype)
    dp, dq = da.from_array(p, chunks=chunks), da.from_array(q, chunks=(32, 20))
    got = call(name, dp, dq)
    assert isinstance(got, da.Array)
    assert got.dtype == np.dtype(dtype)
    rtol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(got.compute(), call(name, p, q), rtol=rtol, atol=1e-15)


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
@pytest.mark.parametrize("name", REDUCTIONS)
def test_keepdims_and_one_distribution_against_a_batch(name, chunks):
    p, q = arrays(name)
    dp, dq = da.from_array(p, chunks=chunks), da.from_array(q[0], chunks=chunks[1])
    got = call(name, dp, dq, keepdims=True)
    assert got.shape == (64, 1)
    np.testing.assert_allclose(got.compute(), call(name, p, q[0], keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
@pytest.mark.parametrize("name", [n for n in REDUCTIONS if not DIVERGENCES[n].logits])
def test_rows_the_checks_refuse_are_nan(name, chunks):
    p, q = arrays(name)
    p[3] *= 1.01  # off 1
    p[5, 2] = -p[5, 2]  # a negative entry
    p[7, 1] += 2 * p[7, 2]  # a negative entry in a row that still sums to 1
    p[7, 2] = -p[7, 2]
    q[9, 30] = np.nan
    got = call(name, da.from_array(p, chunks=chunks), da.from_array(q, chunks=chunks)).compute()
    bad = [3, 5, 7] if len(DIVERGENCES[name].inputs) == 1 else [3, 5, 7, 9]
    assert np.isnan(got[bad]).all(), got[bad]
    assert np.isfinite(np.delete(got, bad)).all()


def _refuse(block: np.ndarray) -> np.ndarray:
    raise AssertionError("a chunk was computed before .compute()")


@pytest.mark.parametrize("name", DIVERGENCES)
def test_nothing_is_computed_until_asked(name):
    p, q = arrays(name)
    dp = da.from_array(p, chunks=(16, 7)).map_blocks(_refuse, dtype=p.dtype)
    dq = da.from_array(q, chunks=(16, 7))
    out = call(name, dp, dq)
    assert isinstance(out, da.Array)
    with pytest.raises(AssertionError, match="before"):
        out.compute()


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", REDUCTIONS)
def test_chunks_reach_the_fast_path_uncopied(name, keepdims, monkeypatch):
    """Where each distribution lies in one chunk, the chunk itself reaches its function:
    Dask's ``concatenate3``, which ``blockwise(concatenate=True)`` runs even on one block,
    copied every chunk once more (half of the time a Dask kl_div took)."""
    import dask.array.core

    joined = []  # the shapes concatenate3 is given: the result's chunks only, at the end
    original = dask.array.core.concatenate3

    def spy(blocks):
        out = original(blocks)
        joined.append(out.shape)
        return out

    monkeypatch.setattr(dask.array.core, "concatenate3", spy)
    p, q = arrays(name)
    dp, dq = da.from_array(p, chunks=(16, 40)), da.from_array(q, chunks=(16, 40))
    got = call(name, dp, dq, keepdims=keepdims).compute()
    np.testing.assert_allclose(got, call(name, p, q, keepdims=keepdims), rtol=1e-12)
    assert joined == [got.shape]


def test_rel_entr_runs_per_chunk():
    p, q = arrays("kl_div")
    got = kldiv.rel_entr(da.from_array(p, chunks=(16, 7)), da.from_array(q, chunks=(16, 7)))
    np.testing.assert_allclose(got.compute(), kldiv.rel_entr(p, q), rtol=1e-15)


# Dask's distributed scheduler: worker processes, and more data than their memory


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="400MiB",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _spilled_bytes(dask_worker) -> int:
    """What the worker has written to disk so far."""
    return int(dask_worker.data.spilled_total.disk)


def _native_loaded() -> bool:
    from kldiv._backends import numpy as numpy_path

    return numpy_path._native is not None


@pytest.mark.parametrize("name", REDUCTIONS)
def test_on_two_worker_processes(cluster, name):
    p, q = arrays(name)
    got = call(name, da.from_array(p, chunks=(16, 7)), da.from_array(q, chunks=(16, 40)))
    np.testing.assert_allclose(cluster.compute(got).result(), call(name, p, q), rtol=1e-12)
    loaded = cluster.run(_native_loaded)
    assert len(loaded) == 2
    assert all(loaded.values()) == _native_loaded()


def test_an_array_several_times_the_workers_memory(cluster):
    """2 x 1.2 GB of float32, made chunk by chunk, against 2 x 400 MiB of workers: each
    chunk is made, reduced to its rows' results and dropped, and no worker is restarted."""
    before = set(cluster.scheduler_info()["workers"])
    rows, n = 300_000, 1000
    rng = da.random.default_rng(5)

    def distributions() -> da.Array:
        x = rng.random((rows, n), chunks=(2_000, n), dtype=np.float32) + np.float32(0.01)
        return x / x.sum(axis=-1, keepdims=True, dtype=np.float32)

    p, q = distributions(), distributions()
    kl = kldiv.kl_div(p, q)
    got = cluster.compute(kl).result()
    assert got.shape == (rows,)
    assert np.isfinite(got).all()
    # the first rows again, on this process: the same numbers
    head = cluster.gather(cluster.compute([p[:2000], q[:2000]]))
    np.testing.assert_allclose(got[:2000], kldiv.kl_div(*head), rtol=1e-6)
    assert set(cluster.scheduler_info()["workers"]) == before, "a worker was restarted"
    spilled = sum(cluster.run(_spilled_bytes).values())
    assert spilled < 0.1 * 2 * p.nbytes, f"{spilled / 2**20:.0f} MiB spilled"
