// The elementwise terms of the probability divergences, and the states that sum them.
//
// The forms are those of the NumPy path's compiled kernels (kldiv/_backends/numpy/
// _native_term.h), derived again here for CUDA's libm: every term a row sums is >= 0 for
// distributions, and each is exact to a few roundings relative to its own value, also where
// p and q are nearly equal, so that near-identical rows keep their digits instead of losing
// them to the cancellation of terms of both signs. The zero conventions are kldiv's: an
// entry with p == 0 adds nothing (whatever q), p > 0 against q == 0 adds +inf, and a NaN or
// negative entry makes the term NaN, so that unchecked bad input never sums to a number.
// Terms are computed in the inputs' arithmetic type A (float for float16 and float32) and
// summed in double (Wide).
#pragma once

#include "common.cuh"

namespace kldiv {

template <class A>
__device__ __forceinline__ bool is_bad(A p, A q) {
  return !(p >= 0 && q >= 0);  // true for NaN too
}

// Polynomials, by type: float32 needs fewer terms than float64 for the same relative error.
template <class A>
struct Series;
template <>
struct Series<float> {
  // atanh(s) - s = s*z*(1/3 + z/5 + ...), z = s*s, |s| <= kNearS: the first term left out,
  // z**5/13, is 1.6e-9 relative at most.
  static __device__ __forceinline__ float atanh_tail(float z) {
    const float c[] = {1.0f / 3, 1.0f / 5, 1.0f / 7, 1.0f / 9, 1.0f / 11};
    return horner(z, c);
  }
  // sum over k >= 1 of z**(k - 1)/(k(2k - 1)), |u| < 1/8: the first term left out, z**5/66,
  // is 2.4e-11 relative.
  static __device__ __forceinline__ float js_series(float z) {
    const float c[] = {1.0f, 1.0f / 6, 1.0f / 15, 1.0f / 28, 1.0f / 45};
    return horner(z, c);
  }
  // (expm1(d) - d)/d**2 = sum over k >= 0 of d**k/(k + 2)!, |d| <= 1: the first term left
  // out, 1/13!, is 1.6e-10.
  static __device__ __forceinline__ float expm1_tail(float d) {
    const float c[] = {1.0f / 2,        1.0f / 6,         1.0f / 24,        1.0f / 120,
                       1.0f / 720,      1.0f / 5040,      1.0f / 40320,     1.0f / 362880,
                       1.0f / 3628800,  1.0f / 39916800,  1.0f / 479001600};
    return horner(d, c);
  }
};
template <>
struct Series<double> {
  // as above: z**10/23 is 1.0e-17 relative at most
  static __device__ __forceinline__ double atanh_tail(double z) {
    const double c[] = {1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,  1.0 / 11,
                        1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21};
    return horner(z, c);
  }
  // z**10/210 is 3.7e-21
  static __device__ __forceinline__ double js_series(double z) {
    const double c[] = {1.0,       1.0 / 6,   1.0 / 15,  1.0 / 28,  1.0 / 45,
                        1.0 / 66,  1.0 / 91,  1.0 / 120, 1.0 / 153, 1.0 / 190};
    return horner(z, c);
  }
  // 1/19! is 8.2e-18
  static __device__ __forceinline__ double expm1_tail(double d) {
    const double c[] = {1.0 / 2,
                        1.0 / 6,
                        1.0 / 24,
                        1.0 / 120,
                        1.0 / 720,
                        1.0 / 5040,
                        1.0 / 40320,
                        1.0 / 362880,
                        1.0 / 3628800,
                        1.0 / 39916800,
                        1.0 / 479001600,
                        1.0 / 6227020800.0,
                        1.0 / 87178291200.0,
                        1.0 / 1307674368000.0,
                        1.0 / 20922789888000.0,
                        1.0 / 355687428096000.0,
                        1.0 / 6402373705728000.0};
    return horner(d, c);
  }
};

// p and q within a factor sqrt(2) of each other: |s| <= 3 - 2*sqrt(2), s = (p - q)/(p + q).
const double kNearS = 0.17157287525380990;

// The KL term of p, q > 0 (finite), t = p*log(p/q) - (p - q) >= 0, and p*log(p/q) itself.
// With s = (p - q)/(p + q), p/q = (1 + s)/(1 - s), log(p/q) = 2*atanh(s) and p = (p + q)(1 + s)/2:
//
//   t = (p + q)*((1 + s)*atanh(s) - s) = (p + q)*(s**2 + (1 + s)*a),  a = atanh(s) - s,
//
// a sum of two terms >= 0 (for s < 0, |(1 + s)*a| < s**2/3), each exact to a few roundings:
// p - q is exact (Sterbenz) and a comes from its series. That is the form near p == q, where
// p*log(p/q) - (p - q) would cancel to (p - q)**2/(2q). Elsewhere t = p*L - (p - q), which
// cancels a factor 3.6 at most (p = 2q), with L = log(p/q), or log(p) - log(q) where p/q is
// not a normal float (the logarithms of p and q cannot overflow).
template <class A>
struct KlPieces {
  A t;             // p*log(p/q) - (p - q)
  A x_log_ratio;   // p*log(p/q), where !near
  bool near;
};

template <class A>
__device__ __forceinline__ KlPieces<A> kl_pieces(A p, A q) {
  KlPieces<A> r;
  const A diff = p - q;
  const A s = diff / (p + q);
  r.near = abs_of(s) <= A(kNearS);
  if (r.near) {
    const A z = s * s;
    const A a = s * z * Series<A>::atanh_tail(z);
    r.t = (p + q) * (z + (A(1) + s) * a);
    r.x_log_ratio = r.t + diff;
  } else {
    const A ratio = p / q;
    const bool normal = ratio >= A(1.1754943508222875e-38) && ratio < infinity<A>();
    const A log_ratio = normal ? log_of(ratio) : log_of(p) - log_of(q);
    r.x_log_ratio = p * log_ratio;
    r.t = r.x_log_ratio - diff;
  }
  return r;
}

// t(p, q) >= 0 for p, q >= 0 and q > 0: as kl_pieces, and q where p == 0 (0*log(0) = 0).
template <class A>
__device__ __forceinline__ A kl_nonnegative_term(A p, A q) {
  return p == 0 ? q : kl_pieces(p, q).t;
}

// rel_entr's element, p*log(p/q).
template <class A>
struct KlTerm {
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    if (p == 0) return A(0);
    if (q == 0) return infinity<A>();
    return kl_pieces(p, q).x_log_ratio;
  }
};

// KL = sum(t) + sum(p - q), each term t >= 0 and the differences summed without rounding
// error (TwoSum for float64; in double for float32): near-identical distributions keep every
// digit, as on the NumPy path, where the plain sum of p*log(p/q) cancels terms of both signs.
//
// kMeasures (validate=False, measures of any mass, as the NumPy path's kl_measure_rows): a
// large q under a small p would make t = q - p + ... for the mass difference to cancel, so
// there an entry not near p == q adds p*log(p/q) whole to the first sum and nothing to the
// second; near entries split as above.
template <class A, bool kMeasures>
struct KlSum {
  static const int kInputs = 2;
  Wide t, d, d_err;  // sum(t); sum(p - q) as d + d_err

  static __device__ __forceinline__ KlSum identity() {
    KlSum s;
    s.t = s.d = s.d_err = 0;
    return s;
  }
  __device__ __forceinline__ void add(A p, A q) {
    if (is_bad(p, q)) {
      t += quiet_nan<A>();
    } else if (p == 0) {
      // adds 0 (t = q and p - q = -q, summed apart, would add roundings)
    } else if (q == 0) {
      t += infinity<A>();
    } else {
      const KlPieces<A> k = kl_pieces(p, q);
      if (kMeasures && !k.near) {
        t += k.x_log_ratio;
      } else {
        t += k.t;
        if (sizeof(A) == sizeof(Wide)) {
          two_sum(&d, &d_err, p - q);  // p - q is exact near p == q (Sterbenz)
        } else {
          // float32 entries: p - q is exact in double (24-bit mantissas in 53), and their
          // sum within a rounding of the sum of their sizes, as on the NumPy path
          d += Wide(p) - Wide(q);
        }
      }
    }
  }
  static __device__ __forceinline__ KlSum merge(const KlSum& x, const KlSum& y) {
    KlSum s;
    s.t = x.t + y.t;
    s.d = x.d;
    s.d_err = x.d_err + y.d_err;
    two_sum(&s.d, &s.d_err, y.d);
    return s;
  }
  __device__ __forceinline__ KlSum shfl_xor(int lane_mask) const {
    KlSum s;
    s.t = __shfl_xor_sync(kFullWarp, t, lane_mask);
    s.d = __shfl_xor_sync(kFullWarp, d, lane_mask);
    s.d_err = __shfl_xor_sync(kFullWarp, d_err, lane_mask);
    return s;
  }
  __device__ __forceinline__ Wide result() const { return t + (d + d_err); }
};

// -p*log(p), >= 0 for p <= 1: no cancellation to avoid.
template <class A>
struct EntropyTerm {
  static const int kInputs = 1;
  static __device__ __forceinline__ A of(A p, A) {
    if (!(p >= 0)) return quiet_nan<A>();
    return p == 0 ? A(0) : -p * log_of(p);
  }
};

// -p*log(q), >= 0 for q <= 1.
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

// The Jensen-Shannon term (p*log(p/m) + q*log(q/m))/2 >= 0, m = (p + q)/2. With
// u = (p - q)/(p + q) (p - q exact near p == q), p/m = 1 + u, q/m = 1 - u, and the term is
// (m/2)*g(u), g(u) = (1 + u)log(1 + u) + (1 - u)log(1 - u) = u**2 * sum over k >= 1 of
// u**(2k - 2)/(k(2k - 1)): the form for |u| < 1/8, where the two logarithms' terms would
// cancel to first order. Beyond, (t(p, m) + t(q, m))/2 with kl's t >= 0 (the differences
// p - m and q - m add to 0), t(0, m) = m. p == q == 0 adds nothing.
template <class A>
struct JsTerm {
  static const int kInputs = 2;
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    const A total = p + q;
    if (total == 0) return A(0);
    const A m = A(0.5) * total;
    const A u = (p - q) / total;
    if (abs_of(u) < A(0.125)) {
      const A z = u * u;
      return A(0.5) * m * (z * Series<A>::js_series(z));
    }
    return A(0.5) * (kl_nonnegative_term(p, m) + kl_nonnegative_term(q, m));
  }
};

// ((sqrt(p) - sqrt(q))**2)/2, the squared Hellinger distance's term, with
// sqrt(p) - sqrt(q) = (p - q)/(sqrt(p) + sqrt(q)): no cancellation near p == q.
template <class A>
struct HellingerTerm {
  static const int kInputs = 2;
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    const A roots = sqrt_of(p) + sqrt_of(q);
    if (roots == 0) return A(0);
    const A d = (p - q) / roots;
    return A(0.5) * (d * d);
  }
};

// |p - q|/2, total variation's term.
template <class A>
struct TotalVariationTerm {
  static const int kInputs = 2;
  static __device__ __forceinline__ A of(A p, A q) {
    if (is_bad(p, q)) return quiet_nan<A>();
    return A(0.5) * abs_of(p - q);
  }
};

// The sum of a term over a row, in double, as a reduction state (see common.cuh).
template <template <class> class Term, class A>
struct TermSum {
  static const int kInputs = Term<A>::kInputs;
  Wide sum;

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
  __device__ __forceinline__ Wide result() const { return sum; }
};

}  // namespace kldiv
