// The row reductions behind every divergence: rows of n contiguous elements, row r of an
// input starting r*stride elements after its first (stride 0: one row against a batch).
//
// A launch's work is rows * splits spans: row r, split k covers entries [k*chunk, (k+1)*chunk)
// of the row (splits == 1: the whole row), one span to a group (a warp or a block), spans
// taken with a grid stride. With splits == 1 a kernel writes each row's result. Otherwise
// the rows are few and long and a row is split across blocks, and the kernel runs in phases,
// one launch each, in order on one stream: phase k (1 <= k <= the state's passes) parks each
// span's reduction state in a slot of `scratch`, pass k's slots after those of pass k - 1;
// the last phase (finish) merges each row's slots, in the order of its splits, into its
// result. Every span is reduced by the same threads in the same order, and every merge is
// in a fixed order, so the result does not depend on how the blocks are scheduled: no
// atomics.
#pragma once

#include "common.cuh"
#include "log_sum_exp.cuh"

#ifndef KLDIV_SLOT_BYTES
#error "compile with -DKLDIV_SLOT_BYTES=<the launcher's scratch slot size>"
#endif

namespace kldiv {

// Slot i of scratch, sized by the launcher: every state fits one.
template <class State>
__device__ __forceinline__ State* slot(Wide* scratch, long long i) {
  static_assert(sizeof(State) <= KLDIV_SLOT_BYTES, "a reduction state outgrows its slot");
  static_assert(KLDIV_SLOT_BYTES % sizeof(Wide) == 0, "slots hold whole doubles");
  return reinterpret_cast<State*>(scratch + i * (KLDIV_SLOT_BYTES / sizeof(Wide)));
}

// What a launch does: the whole rows at once, one pass of split rows, or their finish.
struct Phases {
  long long rows, n, splits, chunk;
  int phase;  // 0: whole rows; 1 .. passes: that pass of split rows; passes + 1: finish
};

__device__ __forceinline__ Phases phases(long long rows, long long n, long long splits,
                                         long long chunk, int phase) {
  Phases w;
  w.rows = rows;
  w.n = n;
  w.splits = splits;
  w.chunk = chunk;
  w.phase = phase;
  return w;
}

// Calls body(row, item, begin, end) for each span of the group's, in order.
template <class Body>
__device__ __forceinline__ void for_each_span(const RowGroup& g, const Phases& w, Body body) {
  const long long items = w.rows * w.splits;
  // Grid-stride loops are not unrolled: the trip count that unrolling computes is a 64-bit
  // division, a subroutine whose calling convention makes ptxas spill.
#pragma unroll 1
  for (long long item = g.first; item < items; item += g.step) {
    // Split rows are fewer than the resident blocks, so that item < 2**31 and a 32-bit
    // division does (a 64-bit one is a subroutine, whose calling convention spills).
    const long long row =
        w.splits == 1 ? item
                      : static_cast<long long>(static_cast<unsigned>(item) /
                                               static_cast<unsigned>(w.splits));
    const long long begin = (item - row * w.splits) * w.chunk;
    const long long end = begin + w.chunk < w.n ? begin + w.chunk : w.n;
    body(row, item, begin, end);
  }
}

// The merge, in split order, of row `row`'s states of the pass whose slots start at `first`.
template <class State>
__device__ __forceinline__ State merged_slots(Wide* scratch, long long first, long long row,
                                              long long splits) {
  State s = *slot<State>(scratch, first + row * splits);
#pragma unroll 1
  for (long long k = 1; k < splits; k++) {
    s = State::merge(s, *slot<State>(scratch, first + row * splits + k));
  }
  return s;
}

template <class T>
__device__ __forceinline__ void store_result(T* out, long long row, Wide r, int clip) {
  typedef typename Accumulator<T>::type A;
  if (clip && r < 0) r = 0;
  store(out + row, static_cast<A>(r));
}

// The finish phase: one thread to a row, the last pass's slots merged into its result.
template <class State, class T>
__device__ void finish_rows(Wide* scratch, long long first, T* out, const Phases& w, int clip) {
  const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
#pragma unroll 1
  for (long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
       row < w.rows; row += step) {
    store_result(out, row, merged_slots<State>(scratch, first, row, w.splits).result(), clip);
  }
}

// out[r] = State over row r of (a, b), a one-pass state (TermSum, KlSum); results below 0
// become 0 when `clip` is set. Besides a reduction state's members (common.cuh), State has
// kInputs, add(a_entry, b_entry) and result(); b is not read when kInputs == 1 (it may be
// null).
template <class State, class T>
__device__ void reduce_rows(const T* __restrict__ a, long long a_stride,
                            const T* __restrict__ b, long long b_stride, T* __restrict__ out,
                            Wide* __restrict__ scratch, const Phases& w, int warp_per_row,
                            int clip) {
  typedef typename Accumulator<T>::type A;
  if (w.phase == 2) {
    finish_rows<State>(scratch, 0, out, w, clip);
    return;
  }
  const RowGroup g = row_group(warp_per_row);
  for_each_span(g, w, [&](long long row, long long item, long long begin, long long end) {
    const T* row_a = a + row * a_stride;
    const T* row_b = State::kInputs == 2 ? b + row * b_stride : b;
    State s = State::identity();
    for (long long i = begin + g.lane; i < end; i += g.size) {
      s.add(load(row_a + i), State::kInputs == 2 ? load(row_b + i) : A(0));
    }
    s = group_reduce(s, g);
    if (g.lane != 0) return;
    if (w.phase == 0) {
      store_result(out, row, s.result(), clip);
    } else {
      *slot<State>(scratch, item) = s;
    }
  });
}

// out[r] = KL(softmax(a[r]) || softmax(b[r])), the two passes of log_sum_exp.cuh: whole rows
// in one launch (phase 0), or split rows in three (norms, terms, finish). Results below 0 (a
// rounding) become 0 when `clip` is set.
template <class T>
__device__ void logit_kl_rows(const T* __restrict__ a, long long a_stride,
                              const T* __restrict__ b, long long b_stride, T* __restrict__ out,
                              Wide* __restrict__ scratch, const Phases& w, int warp_per_row,
                              int clip) {
  typedef typename Accumulator<T>::type A;
  const long long items = w.rows * w.splits;
  if (w.phase == 3) {
    finish_rows<LogitTerms<A> >(scratch, items, out, w, clip);
    return;
  }
  const RowGroup g = row_group(warp_per_row);
  for_each_span(g, w, [&](long long row, long long item, long long begin, long long end) {
    const T* row_a = a + row * a_stride;
    const T* row_b = b + row * b_stride;
    LogitNorms<A> norms;
    if (w.phase == 2) {
      norms = merged_slots<LogitNorms<A> >(scratch, 0, row, w.splits);
    } else {
      norms = LogitNorms<A>::identity();
      for (long long i = begin + g.lane; i < end; i += g.size) {
        norms.add(load(row_a + i), load(row_b + i));
      }
      norms = group_reduce(norms, g);
      if (w.phase == 1) {
        if (g.lane == 0) *slot<LogitNorms<A> >(scratch, item) = norms;
        return;
      }
    }
    LogitReference<A> r;
    LogitTerms<A> s = logit_terms_for(norms, &r);
    for (long long i = begin + g.lane; i < end; i += g.size) {
      s.add(load(row_a + i), load(row_b + i), r);
    }
    s = group_reduce(s, g);
    if (g.lane != 0) return;
    if (w.phase == 0) {
      store_result(out, row, s.result(), clip);
    } else {
      *slot<LogitTerms<A> >(scratch, items + item) = s;
    }
  });
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
