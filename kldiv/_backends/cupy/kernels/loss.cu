// The KLDivergence loss on (N, K) rows of logits `pred` and a target: per row, the error
//
//   sum over the row of y*(log(y) - log(s))   (0 where y = 0),
//
// s = softmax(pred) and y the target (a distribution) or its softmax (norm_target), from
// terms >= 0 that cancel nothing, so that near-identical rows keep their digits:
// distribution_target_span and softmax_target_span say how. grad = (y - s)*per_sample,
// per_sample = 1/N from the launcher (a double division in the kernel is a subroutine,
// around whose call ptxas spilled), written in pred's dtype.
//
// Pass 1 takes the log-sum-exp of the pred row (and of the target row with norm_target);
// pass 2 forms s, y, the grad and the terms. With cache_rows, pass 1 keeps the rows it reads
// in dynamic shared memory and pass 2 reads them from there: each input is read from global
// memory once. Each thread reads back only the entries it stored itself, so the cache needs
// no barrier. Without cache_rows (a row too long for shared memory) pass 2 reads again.
// Few long rows are split across blocks as the divergences' are (rows.cuh): pass 1 parks
// each span's log-sum-exp, pass 2 merges its row's and parks its sums, the finish merges
// those into the row's error; split rows are never cached.
//
// Entry points: (pred, target, grad, row_error, scratch, rows, k, splits, chunk, phase,
// per_sample, norm_target, cache_rows, warp_per_row); row_error[r] is a double, the launcher
// sums them.
#include "common.cuh"
#include "log_sum_exp.cuh"
#include "rows.cuh"

// At global scope and unmangled: the CPU harness binds `extern __shared__` arrays by name.
extern __shared__ __align__(16) unsigned char kldiv_row_cache[];

namespace kldiv {

// A pair of sums, in double: the row's terms and the target's mass.
struct TermsAndMass {
  Wide terms;
  Wide mass;

  static __device__ __forceinline__ TermsAndMass identity() {
    TermsAndMass s;
    s.terms = s.mass = 0;
    return s;
  }
  static __device__ __forceinline__ TermsAndMass merge(const TermsAndMass& x,
                                                       const TermsAndMass& y) {
    TermsAndMass s;
    s.terms = x.terms + y.terms;
    s.mass = x.mass + y.mass;
    return s;
  }
  __device__ __forceinline__ TermsAndMass shfl_xor(int lane_mask) const {
    TermsAndMass s;
    s.terms = __shfl_xor_sync(kFullWarp, terms, lane_mask);
    s.mass = __shfl_xor_sync(kFullWarp, mass, lane_mask);
    return s;
  }
};

// d = log(y/s) for y > 0, s = softmax(pred) at it and log_s = log(s) in double. In float32,
// log(y) - log(s) in double: the two logarithms' absolute roundings in float32 would be all
// of a near-identical row's d (as the NumPy path's float32 kernel notes), in double they are
// 1e-16. In float64 that 1e-16 is still 1e-11 of a d of 1e-5, so where y and s are within a
// factor 2 (y - s exact, Sterbenz), d = log1p((y - s)/s), exact to a few roundings of itself
// (1/s as exp(-log_s): a double division is a subroutine, around whose call ptxas spills);
// s's own rounding enters the row's sum of t and its mass difference alike, and cancels.
__device__ __forceinline__ float loss_log_ratio(float y, float, Wide log_s) {
  return static_cast<float>(log(static_cast<Wide>(y)) - log_s);
}
__device__ __forceinline__ double loss_log_ratio(double y, double s, Wide log_s) {
  return y < 2 * s && s < 2 * y ? log1p((y - s) * exp(-log_s)) : log(y) - log_s;
}

// t = y*log(y/s) - (y - s) >= 0 for a target entry y, s = softmax(pred) at it and log_s =
// log(s) in double: s*phi(d) with s a factor alone for |d| <= 1 (phi_over_square),
// y*(d - 1) + s beyond, d = loss_log_ratio. t = s where y == 0 (and for a NaN or negative y,
// which the row's mass sum makes NaN or the caller refuses). NaN stays NaN.
template <class A>
__device__ __forceinline__ A distribution_loss_term(A y, A s, Wide log_s) {
  if (!(y > 0)) return s;
  const A d = loss_log_ratio(y, s, log_s);
  const A t = abs_of(d) <= A(1) ? s * (d * d) * phi_over_square(d) : y * (d - A(1)) + s;
  return t < 0 ? A(0) : t;
}

// A distribution target: pass 1 takes pred's log-sum-exp in double (its rounding is a shift
// common to the row's d, which moves the error by its square alone; a float32 sum's would be
// about 1e-13, more than a near-identical row's whole error), pass 2 forms log(s) in double,
// s with that rounding folded in, the grad and the terms; the error is sum(t) + (sum(y) - 1).
template <class T>
__device__ __forceinline__ void distribution_target_span(
    const T* row_pred, const T* row_target, T* row_grad, T* cached_pred, Wide* row_error,
    Wide* scratch, const Phases& w, const RowGroup& g, long long row, long long item,
    long long begin, long long end, typename Accumulator<T>::type per_sample, int cache_rows) {
  typedef typename Accumulator<T>::type A;
  LogSumExp<Wide> norm;
  if (w.phase == 2) {
    norm = merged_slots<LogSumExp<Wide> >(scratch, 0, row, w.splits);
  } else {
    norm = LogSumExp<Wide>::identity();
    // Not unrolled: the trip count that unrolling needs is a 64-bit division, a subroutine
    // whose calling convention made ptxas spill on sm_80 and sm_90. Many resident warps,
    // not unrolling, hide the loads' latency.
#pragma unroll 1
    for (long long i = begin + g.lane; i < end; i += g.size) {
      const T x = row_pred[i];
      norm.add(static_cast<Wide>(load(&x)));
      if (cache_rows) cached_pred[i] = x;
    }
    norm = group_reduce(norm, g);
    if (w.phase == 1) {
      if (g.lane == 0) *slot<LogSumExp<Wide> >(scratch, item) = norm;
      return;
    }
  }
  const Wide log_norm = norm.value();
  TermsAndMass sums = TermsAndMass::identity();
#pragma unroll 1
  for (long long i = begin + g.lane; i < end; i += g.size) {
    const Wide log_s_wide =
        static_cast<Wide>(load(cache_rows ? cached_pred + i : row_pred + i)) - log_norm;
    const A log_s = static_cast<A>(log_s_wide);
    const A e = exp_of(log_s);
    // a -inf logit is s == 0, with no rounding to fold in (-inf - -inf would be NaN)
    const A s = log_s > -infinity<A>() ? e + e * static_cast<A>(log_s_wide - log_s) : A(0);
    const A y = load(row_target + i);
    store(row_grad + i, (y - s) * per_sample);
    sums.mass += y;
    sums.terms += distribution_loss_term(y, s, log_s_wide);
  }
  sums = group_reduce(sums, g);
  if (g.lane != 0) return;
  if (w.phase == 0) {
    row_error[row] = sums.terms + (sums.mass - 1);
  } else {
    *slot<TermsAndMass>(scratch, w.rows * w.splits + item) = sums;
  }
}

// A softmax target (norm_target): the row's error is KL(softmax(target) || softmax(pred)) by
// the two passes of kl_div_logits (log_sum_exp.cuh, a = target, b = pred), whose p - q is the
// grad's y - s.
template <class T>
__device__ __forceinline__ void softmax_target_span(
    const T* row_pred, const T* row_target, T* row_grad, T* cached_pred, T* cached_target,
    Wide* row_error, Wide* scratch, const Phases& w, const RowGroup& g, long long row,
    long long item, long long begin, long long end, typename Accumulator<T>::type per_sample,
    int cache_rows) {
  typedef typename Accumulator<T>::type A;
  LogitNorms<A> norms;
  if (w.phase == 2) {
    norms = merged_slots<LogitNorms<A> >(scratch, 0, row, w.splits);
  } else {
    norms = LogitNorms<A>::identity();
#pragma unroll 1  // as in distribution_target_span
    for (long long i = begin + g.lane; i < end; i += g.size) {
      const T x = row_pred[i];
      const T t = row_target[i];
      norms.add(load(&t), load(&x));
      if (cache_rows) {
        cached_pred[i] = x;
        cached_target[i] = t;
      }
    }
    norms = group_reduce(norms, g);
    if (w.phase == 1) {
      if (g.lane == 0) *slot<LogitNorms<A> >(scratch, item) = norms;
      return;
    }
  }
  LogitReference<A> r;
  LogitTerms<A> sums = logit_terms_for(norms, &r);
#pragma unroll 1
  for (long long i = begin + g.lane; i < end; i += g.size) {
    const A diff = sums.add(load(cache_rows ? cached_target + i : row_target + i),
                            load(cache_rows ? cached_pred + i : row_pred + i), r);
    store(row_grad + i, diff * per_sample);
  }
  sums = group_reduce(sums, g);
  if (g.lane != 0) return;
  if (w.phase == 0) {
    row_error[row] = sums.result();
  } else {
    *slot<LogitTerms<A> >(scratch, w.rows * w.splits + item) = sums;
  }
}

template <class T>
__device__ void softmax_kl_loss_rows(const T* __restrict__ pred, const T* __restrict__ target,
                                     T* __restrict__ grad, Wide* __restrict__ row_error,
                                     Wide* __restrict__ scratch, const Phases& w,
                                     typename Accumulator<T>::type per_sample, int norm_target,
                                     int cache_rows, int warp_per_row) {
  typedef typename Accumulator<T>::type A;
  const long long items = w.rows * w.splits;
  const long long k = w.n;
  if (w.phase == 3) {  // the finish of split rows: a thread to a row
    const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
#pragma unroll 1  // see for_each_span
    for (long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
         row < w.rows; row += step) {
      if (norm_target) {
        row_error[row] = merged_slots<LogitTerms<A> >(scratch, items, row, w.splits).result();
      } else {
        const TermsAndMass s = merged_slots<TermsAndMass>(scratch, items, row, w.splits);
        row_error[row] = s.terms + (s.mass - 1);
      }
    }
    return;
  }
  const RowGroup g = row_group(warp_per_row);
  // The group's own slice of the cache: its pred row, then its target row (whole rows only).
  T* const cached_pred = reinterpret_cast<T*>(kldiv_row_cache) +
                         static_cast<long long>(g.index) * k * (norm_target ? 2 : 1);
  T* const cached_target = cached_pred + k;
  for_each_span(g, w, [&](long long row, long long item, long long begin, long long end) {
    if (norm_target) {
      softmax_target_span(pred + row * k, target + row * k, grad + row * k, cached_pred,
                          cached_target, row_error, scratch, w, g, row, item, begin, end,
                          per_sample, cache_rows);
    } else {
      distribution_target_span(pred + row * k, target + row * k, grad + row * k, cached_pred,
                               row_error, scratch, w, g, row, item, begin, end, per_sample,
                               cache_rows);
    }
  });
}

}  // namespace kldiv

// __launch_bounds__ with at least one block a multiprocessor, said outright: without it ptxas
// for sm_90 holds the loss to 64 registers (room for two blocks) and spills the double
// arithmetic around them; with it, 62 registers for float32, 93 for float64 (docs/cuda.md),
// no spill.
extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS, 1)
softmax_kl_loss_float16(const __half* pred, const __half* target, __half* grad, double* row_error,
                        double* scratch, long long rows, long long k, long long splits,
                        long long chunk, int phase, float per_sample, int norm_target,
                        int cache_rows, int warp_per_row) {
  const kldiv::Phases w = kldiv::phases(rows, k, splits, chunk, phase);
  kldiv::softmax_kl_loss_rows(pred, target, grad, row_error, scratch, w, per_sample, norm_target,
                              cache_rows, warp_per_row);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS, 1)
softmax_kl_loss_float32(const float* pred, const float* target, float* grad, double* row_error,
                        double* scratch, long long rows, long long k, long long splits,
                        long long chunk, int phase, float per_sample, int norm_target,
                        int cache_rows, int warp_per_row) {
  const kldiv::Phases w = kldiv::phases(rows, k, splits, chunk, phase);
  kldiv::softmax_kl_loss_rows(pred, target, grad, row_error, scratch, w, per_sample, norm_target,
                              cache_rows, warp_per_row);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS, 1)
softmax_kl_loss_float64(const double* pred, const double* target, double* grad, double* row_error,
                        double* scratch, long long rows, long long k, long long splits,
                        long long chunk, int phase, double per_sample, int norm_target,
                        int cache_rows, int warp_per_row) {
  const kldiv::Phases w = kldiv::phases(rows, k, splits, chunk, phase);
  kldiv::softmax_kl_loss_rows(pred, target, grad, row_error, scratch, w, per_sample, norm_target,
                              cache_rows, warp_per_row);
}
