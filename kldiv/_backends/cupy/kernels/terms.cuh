// The elementwise terms of the probability divergences, and the state that sums them.
//
// Each term follows the zero conventions of kldiv's NumPy path: an entry with p == 0 adds
// nothing (whatever q), p > 0 against q == 0 adds +inf, and a NaN or negative entry makes
// the term NaN, so that unchecked bad input never sums to a number.
#pragma once

#include "common.cuh"

namespace kldiv {

template <class A>
__device__ __forceinline__ bool is_bad(A p, A q) {
  return !(p >= 0 && q >= 0);  // true for NaN too
}

// p*log(p/q). Near p == q, log(p) - log(q) would cancel: log1p((p - q)/q) keeps the digits
// of the small difference. Elsewhere p/q could overflow, and the difference of logs cannot.
template <class A>
struct KlTerm {
  static const int kInputs = 2;
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    if (p == 0) return A(0);
    if (q == 0) return infinity<A>();
    const A diff = p - q;
    const A log_ratio = abs_of(diff) < q / 2 ? log1p_of(diff / q) : log_of(p) - log_of(q);
    return p * log_ratio;
  }
};

// -p*log(p).
template <class A>
struct EntropyTerm {
  static const int kInputs = 1;
  static __device__ __forceinline__ A of(A p, A) {
    if (!(p >= 0)) return quiet_nan<A>();
    return p == 0 ? A(0) : -p * log_of(p);
  }
};

// -p*log(q).
template <class A>
struct CrossEntropyTerm {
  static const int kInputs = 2;
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    if (p == 0) return A(0);
    if (q == 0) return infinity<A>();
    return -p * log_of(q);
  }
};

// (p*log(p/m) + q*log(q/m))/2 with m = (p + q)/2. Near p == q both logs come from
// s = (p - q)/(p + q), p/m = 1 + s and q/m = 1 - s, exact relative to their small values.
// Elsewhere the difference of logs: s rounds to +-1 once one side is below eps times the
// other, and log1p(-1) would make a finite term infinite. A zero side adds nothing.
template <class A>
struct JsTerm {
  static const int kInputs = 2;
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    const A total = p + q;
    if (total == 0) return A(0);
    const A s = (p - q) / total;
    const bool near = abs_of(s) < A(0.5);
    const A log_m = near ? A(0) : log_of(total / 2);
    A sum = 0;
    if (p > 0) sum += p * (near ? log1p_of(s) : log_of(p) - log_m);
    if (q > 0) sum += q * (near ? log1p_of(-s) : log_of(q) - log_m);
    return sum / 2;
  }
};

// The sum of a term over a row, as a reduction state (see common.cuh).
template <template <class> class Term, class A>
struct TermSum {
  static const int kInputs = Term<A>::kInputs;
  A sum;

  static __device__ __forceinline__ TermSum identity() {
    TermSum s;
    s.sum = 0;
    return s;
  }
  __device__ __forceinline__ void add(A p, A q) { sum += Term<A>::of(p, q); }
  static __device__ __forceinline__ TermSum merge(const TermSum& x, const TermSum& y) {
    TermSum s;
    s.sum = x.sum + y.sum;
    return s;
  }
  __device__ __forceinline__ TermSum shfl_xor(int lane_mask) const {
    TermSum s;
    s.sum = __shfl_xor_sync(kFullWarp, sum, lane_mask);
    return s;
  }
  __device__ __forceinline__ A result() const { return sum; }
};

}  // namespace kldiv
