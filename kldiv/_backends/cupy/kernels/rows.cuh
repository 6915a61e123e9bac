// The row reduction behind every divergence: rows of n contiguous elements, row r of an
// input starting r*stride elements after its first (stride 0: one row against a batch).
#pragma once

#include "common.cuh"

namespace kldiv {

// out[r] = State over row r of (a, b), merged across the row's group; results below 0
// become 0 when `clip` is set. Besides a reduction state's members (common.cuh), State has
// kInputs, add(a_entry, b_entry) and result(); b is not read when kInputs == 1 (it may be
// null).
template <class State, class T>
__device__ void reduce_rows(const T* __restrict__ a, long long a_stride,
                            const T* __restrict__ b, long long b_stride, T* __restrict__ out,
                            long long rows, long long n, int warp_per_row, int clip) {
  typedef typename Accumulator<T>::type A;
  const RowGroup g = row_group(warp_per_row);
  for (long long row = g.first; row < rows; row += g.step) {
    const T* row_a = a + row * a_stride;
    const T* row_b = State::kInputs == 2 ? b + row * b_stride : b;
    State s = State::identity();
    for (long long i = g.lane; i < n; i += g.size) {
      s.add(load(row_a + i), State::kInputs == 2 ? load(row_b + i) : A(0));
    }
    s = group_reduce(s, g);
    if (g.lane == 0) {
      A r = s.result();
      if (clip && r < 0) r = 0;
      store(out + row, r);
    }
  }
}

// out[r*n + c] = Term(a[r*a_stride + c], b[r*b_stride + c]), grid-stride over all elements.
template <class Term, class T>
__device__ void map_rows(const T* __restrict__ a, long long a_stride, const T* __restrict__ b,
                         long long b_stride, T* __restrict__ out, long long rows, long long n) {
  const long long total = rows * n;
  const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long k = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += step) {
    // A single row (the launcher's layout for same-shape contiguous inputs) needs no
    // 64-bit division.
    const long long r = rows == 1 ? 0 : k / n;
    const long long c = k - r * n;
    store(out + k, Term::of(load(a + r * a_stride + c), load(b + r * b_stride + c)));
  }
}

}  // namespace kldiv
