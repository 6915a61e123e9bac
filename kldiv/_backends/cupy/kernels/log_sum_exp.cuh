// Online log-sum-exp: a running maximum and a sum rescaled to it, so that a row of logits
// is normalised in the same pass that reads it. Reduction states (see common.cuh).
#pragma once

#include "common.cuh"

namespace kldiv {

// log(sum(exp(x))) = max + log(sum): the sum of exp(x - max) over the entries seen.
// A -inf entry (a zero probability) adds nothing; NaN and +inf propagate to a NaN sum.
template <class A>
struct LogSumExp {
  A max;
  A sum;

  static __device__ __forceinline__ LogSumExp identity() {
    LogSumExp s;
    s.max = -infinity<A>();
    s.sum = 0;
    return s;
  }
  __device__ __forceinline__ void add(A x) {
    if (x > max) {
      sum = sum * exp_of(max - x) + 1;  // 0 * 0 + 1 while max is still -inf
      max = x;
    } else if (!(x == -infinity<A>())) {
      sum += exp_of(x - max);
    }
  }
  static __device__ __forceinline__ LogSumExp merge(const LogSumExp& x, const LogSumExp& y) {
    LogSumExp s;
    s.max = x.max > y.max ? x.max : y.max;
    if (s.max == -infinity<A>()) return x;  // both empty; -inf - -inf would be NaN
    s.sum = x.sum * exp_of(x.max - s.max) + y.sum * exp_of(y.max - s.max);
    return s;
  }
  __device__ __forceinline__ LogSumExp shfl_xor(int lane_mask) const {
    LogSumExp s;
    s.max = __shfl_xor_sync(kFullWarp, max, lane_mask);
    s.sum = __shfl_xor_sync(kFullWarp, sum, lane_mask);
    return s;
  }
  __device__ __forceinline__ A value() const { return max + log_of(sum); }
};

// KL(softmax(a) || softmax(b)) in one pass over both rows:
//
//   KL = sum(p*(a - b)) - lse(a) + lse(b)
//      = (u - v)/sum_a - log(sum_a) + log(sum_b),
//
// with e = exp(a - max_a), sum_a = sum(e), u = sum(e*(a - max_a)), sum_b = sum(exp(b - max_b))
// and v = sum(e*(b - max_b)). Keeping u and v relative to the maxima, rather than summing
// p*(a - b) and subtracting lse(a), avoids cancelling two numbers as large as the logits
// (a logit gap of 1e4 would cost float32 its last digits). When a maximum grows by d < 0
// (old minus new), the sums are rescaled: e by exp(d), u by exp(d) after u += d*sum_a, and v
// by exp(d) (new max_a) or v += d*sum_a (new max_b).
//
// An entry with a == -inf is a zero probability and adds nothing; b == -inf where a is
// finite makes the result +inf (flag kInfinite, since the sums cannot carry an inf that a
// later rescale by exp(-inf) = 0 would turn into NaN). NaN and +inf logits give NaN.
template <class A>
struct LogitKl {
  enum { kInfinite = 1, kNotANumber = 2 };
  static const int kInputs = 2;
  A max_a, sum_a, u;
  A max_b, sum_b, v;
  int flags;

  static __device__ __forceinline__ LogitKl identity() {
    LogitKl s;
    s.max_a = s.max_b = -infinity<A>();
    s.sum_a = s.u = s.sum_b = s.v = 0;
    s.flags = 0;
    return s;
  }

  __device__ __forceinline__ void add(A a, A b) {
    const A inf = infinity<A>();
    if (!(a < inf) || !(b < inf)) {  // NaN or +inf
      flags |= kNotANumber;
      return;
    }
    if (b > max_b) {
      const A shift = max_b - b;
      if (max_b > -inf) {  // else no entry has b > -inf yet, and v is 0
        v += shift * sum_a;
      }
      sum_b = sum_b * exp_of(shift) + 1;
      max_b = b;
    } else if (b > -inf) {
      sum_b += exp_of(b - max_b);
    }
    A e;
    if (a > max_a) {
      const A shift = max_a - a;
      const A scale = exp_of(shift);
      if (max_a > -inf) {  // else sum_a, u and v are all 0
        u = scale * (u + shift * sum_a);
        v *= scale;
      }
      sum_a = sum_a * scale + 1;
      max_a = a;
      e = 1;  // and a - max_a = 0 adds nothing to u
    } else if (a > -inf) {
      e = exp_of(a - max_a);
      sum_a += e;
      u += e * (a - max_a);
    } else {
      return;
    }
    if (b > -inf) {
      v += e * (b - max_b);
    } else {
      flags |= kInfinite;
    }
  }

  // x moved to the maxima of the merged state, as (sum_a, u, v, sum_b).
  static __device__ __forceinline__ void rescaled(const LogitKl& x, A max_a, A max_b, A* out) {
    const A inf = infinity<A>();
    A v = x.v;
    if (x.max_b > -inf) {
      v += (x.max_b - max_b) * x.sum_a;
    }
    out[3] = x.max_b > -inf ? x.sum_b * exp_of(x.max_b - max_b) : A(0);
    if (x.max_a > -inf) {
      const A shift = x.max_a - max_a;
      const A scale = exp_of(shift);
      out[0] = x.sum_a * scale;
      out[1] = scale * (x.u + shift * x.sum_a);
      out[2] = scale * v;
    } else {
      out[0] = out[1] = out[2] = 0;
    }
  }

  static __device__ __forceinline__ LogitKl merge(const LogitKl& x, const LogitKl& y) {
    LogitKl s;
    s.flags = x.flags | y.flags;
    s.max_a = x.max_a > y.max_a ? x.max_a : y.max_a;
    s.max_b = x.max_b > y.max_b ? x.max_b : y.max_b;
    A from_x[4], from_y[4];
    rescaled(x, s.max_a, s.max_b, from_x);
    rescaled(y, s.max_a, s.max_b, from_y);
    s.sum_a = from_x[0] + from_y[0];
    s.u = from_x[1] + from_y[1];
    s.v = from_x[2] + from_y[2];
    s.sum_b = from_x[3] + from_y[3];
    return s;
  }

  __device__ __forceinline__ LogitKl shfl_xor(int lane_mask) const {
    LogitKl s;
    s.max_a = __shfl_xor_sync(kFullWarp, max_a, lane_mask);
    s.sum_a = __shfl_xor_sync(kFullWarp, sum_a, lane_mask);
    s.u = __shfl_xor_sync(kFullWarp, u, lane_mask);
    s.max_b = __shfl_xor_sync(kFullWarp, max_b, lane_mask);
    s.sum_b = __shfl_xor_sync(kFullWarp, sum_b, lane_mask);
    s.v = __shfl_xor_sync(kFullWarp, v, lane_mask);
    s.flags = __shfl_xor_sync(kFullWarp, flags, lane_mask);
    return s;
  }

  __device__ __forceinline__ A result() const {
    if (flags & kNotANumber) return quiet_nan<A>();
    if (flags & kInfinite) return infinity<A>();
    // No finite a at all gives 0/0: NaN, as log_softmax of such a row.
    return (u - v) / sum_a - log_of(sum_a) + log_of(sum_b);
  }
};

}  // namespace kldiv
