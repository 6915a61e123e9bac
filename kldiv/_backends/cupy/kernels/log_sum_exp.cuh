// Online log-sum-exp: a running maximum and a sum rescaled to it, so that a row of logits
// is normalised in the same pass that reads it; and the two-pass KL of logits built on it.
// Reduction states (see common.cuh).
#pragma once

#include "common.cuh"
#include "terms.cuh"

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

// KL(softmax(a) || softmax(b)) of a row pair, in two passes over it, with terms >= 0.
//
// Pass 1 takes the online log-sum-exp of each row (LogitNorms): its maximum and the sum of
// exp(x - max) (LogSumExp). Pass 2 (LogitTerms) takes each entry's logits relative to the
// maxima as a float and its exact rounding error (two_diff), and from them the log-ratio
//
//   d = log(p/q) = ((a - max a) - (b - max b)) - c,  c = log(sum_a) - log(sum_b),
//
// whose first difference is exact for near-identical rows (Sterbenz), so that d keeps its
// digits, and q = exp((b - max b) - log(sum_b)), its rounding error folded in. It sums, in
// double, q, the terms q*phi(d) >= 0 with phi(d) = d*e**d - e**d + 1, and p - q:
//
//   for |d| <= 1:  q*phi(d) = q*d**2*(1 - (1 - d)*P(d)),  P(d) = (expm1(d) - d)/d**2 by its
//                  series, and p - q = q*expm1(d);
//   beyond:        q*phi(d) = p*(d - 1) + q and p - q, p = exp((a - max a) - log(sum_a)),
//
// the two forms of the NumPy path's kl_logit_term_f32, which cancel alike (a factor 3.8) at
// |d| = 1. c and the sums are roundings, so p and q are normalised only to a rounding; the
// sums put that right exactly. With S = sum(q), F = sum(q*phi(d))/S and x = sum(p - q)/S, the
// distributions are q/S and p/(S(1 + x)), their log-ratio is d - h with h = log1p(x), and
//
//   KL = sum over q/S of phi(d - h) = F/(1 + x) - (log1p(x) - x/(1 + x)),
//
// where the subtracted term is about x**2/2, of the size of a rounding of c squared (1e-13 in
// float32, 1e-31 in float64, for rows of up to 1e6): nothing of the result cancels. So the
// float32 kernel has the NumPy path's accuracy on near-identical logit rows, where the one
// pass form KL = sum(p*(a - b)) - lse(a) + lse(b) cancels terms of the size of the logits.
//
// An entry with a == -inf is a zero probability: it adds q to the terms and -q to p - q;
// b == -inf where a is finite makes the result +inf (flag kInfinite); both -inf adds nothing.
// NaN and +inf logits give NaN (kNotANumber), and so does a row with no finite a.
enum { kInfinite = 1, kNotANumber = 2 };

template <class A>
struct LogitNorms {
  static const int kInputs = 2;
  LogSumExp<A> a, b;
  int flags;

  static __device__ __forceinline__ LogitNorms identity() {
    LogitNorms s;
    s.a = s.b = LogSumExp<A>::identity();
    s.flags = 0;
    return s;
  }
  __device__ __forceinline__ void add(A x, A y) {
    if (!(x < infinity<A>()) || !(y < infinity<A>())) {  // NaN or +inf
      flags |= kNotANumber;
      return;
    }
    a.add(x);
    b.add(y);
  }
  static __device__ __forceinline__ LogitNorms merge(const LogitNorms& x, const LogitNorms& y) {
    LogitNorms s;
    s.a = LogSumExp<A>::merge(x.a, y.a);
    s.b = LogSumExp<A>::merge(x.b, y.b);
    s.flags = x.flags | y.flags;
    return s;
  }
  __device__ __forceinline__ LogitNorms shfl_xor(int lane_mask) const {
    LogitNorms s;
    s.a = a.shfl_xor(lane_mask);
    s.b = b.shfl_xor(lane_mask);
    s.flags = __shfl_xor_sync(kFullWarp, flags, lane_mask);
    return s;
  }
};

// 1/x for an x within a few roundings of 1 (the sums of normalised probabilities here): the
// float reciprocal refined by two of Newton's steps in double, to a rounding. A double
// division would be a ptxas subroutine, whose calling convention spills in the float32 kernel.
__device__ __forceinline__ Wide reciprocal_near_one(Wide x) {
  Wide r = 1.0f / static_cast<float>(x);
  r += r * (1 - x * r);
  r += r * (1 - x * r);
  return r;
}

// phi(d)/d**2 = 1 - (1 - d)*P(d), P(d) = (expm1(d) - d)/d**2 by its series, for |d| <= 1:
// q*d**2 times it is q*phi(d) = p*log(p/q) - (p - q) >= 0 for p = q*e**d, with q a factor
// alone, so that a near-identical pair keeps its digits. LogitTerms' and the loss's term.
template <class A>
__device__ __forceinline__ A phi_over_square(A d) {
  return A(1) - (A(1) - d) * Series<A>::expm1_tail(d);
}

// What pass 2 needs of pass 1's norms: the maxima, the logarithms of the sums, and
// c = log(sum_a) - log(sum_b).
template <class A>
struct LogitReference {
  A max_a, max_b, log_sum_a, log_sum_b, shift;
};

template <class A>
struct LogitTerms {
  Wide q, terms, mass;  // sum(q), sum(q*phi(d)), sum(p - q)
  int flags;

  static __device__ __forceinline__ LogitTerms identity() {
    LogitTerms s;
    s.q = s.terms = s.mass = 0;
    s.flags = 0;
    return s;
  }
  // The entry (a, b) of a row with pass 1's reference r; returns its p - q (the loss's grad,
  // which the divergence leaves unused).
  __device__ __forceinline__ A add(A a, A b, const LogitReference<A>& r) {
    const A inf = infinity<A>();
    if (!(b > -inf)) {  // q == 0 (a and b are not NaN or +inf: pass 1 saw to that)
      if (!(a > -inf)) return A(0);
      flags |= kInfinite;
      return exp_of((a - r.max_a) - r.log_sum_a);
    }
    A y_lo;
    const A y = two_diff(b, r.max_b, &y_lo);
    const A log_q = y - r.log_sum_b;
    const A e = exp_of(log_q);
    const A qi = e + e * y_lo;
    q += qi;
    if (!(a > -inf)) {  // p == 0: phi(-inf) = 1
      terms += qi;
      mass -= qi;
      return -qi;
    }
    A x_lo;
    const A x = two_diff(a, r.max_a, &x_lo);
    const A d = ((x - y) + (x_lo - y_lo)) - r.shift;
    if (abs_of(d) <= A(1)) {
      terms += qi * (d * d) * phi_over_square(d);
      const A diff = qi * expm1_of(d);
      mass += diff;
      return diff;
    }
    const A ep = exp_of(x - r.log_sum_a);
    const A pi = ep + ep * x_lo;
    terms += pi * (d - A(1)) + qi;
    mass += Wide(pi) - Wide(qi);
    return pi - qi;
  }
  static __device__ __forceinline__ LogitTerms merge(const LogitTerms& x, const LogitTerms& y) {
    LogitTerms s;
    s.q = x.q + y.q;
    s.terms = x.terms + y.terms;
    s.mass = x.mass + y.mass;
    s.flags = x.flags | y.flags;
    return s;
  }
  __device__ __forceinline__ LogitTerms shfl_xor(int lane_mask) const {
    LogitTerms s;
    s.q = __shfl_xor_sync(kFullWarp, q, lane_mask);
    s.terms = __shfl_xor_sync(kFullWarp, terms, lane_mask);
    s.mass = __shfl_xor_sync(kFullWarp, mass, lane_mask);
    s.flags = __shfl_xor_sync(kFullWarp, flags, lane_mask);
    return s;
  }
  __device__ __forceinline__ Wide result() const {
    if (flags & kNotANumber) return quiet_nan<Wide>();
    if (flags & kInfinite) return infinity<Wide>();
    const Wide to_q = reciprocal_near_one(q);
    const Wide x = mass * to_q;
    const Wide to_p = reciprocal_near_one(1 + x);
    return terms * to_q * to_p - (log1p(x) - x * to_p);
  }
};

// Pass 2's first state and reference from pass 1's norms; NaN for a row with no finite a
// (0/0, as log_softmax of such a row).
template <class A>
__device__ __forceinline__ LogitTerms<A> logit_terms_for(const LogitNorms<A>& norms,
                                                        LogitReference<A>* r) {
  LogitTerms<A> s = LogitTerms<A>::identity();
  s.flags = norms.flags;
  if (!(norms.a.max > -infinity<A>())) s.flags |= kNotANumber;
  r->max_a = norms.a.max;
  r->max_b = norms.b.max;
  r->log_sum_a = log_of(norms.a.sum);
  r->log_sum_b = log_of(norms.b.sum);
  r->shift = r->log_sum_a - r->log_sum_b;
  return s;
}

}  // namespace kldiv
