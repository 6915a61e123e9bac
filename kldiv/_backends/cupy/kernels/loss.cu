// The KLDivergence loss on (N, K) rows of logits `pred` and a target: per row, the error
//
//   sum over the row of t(y, s),  t = y*d - (y - s), d = log(y) - log(s)   (t = s where y = 0)
//
// plus the target's mass sum(y) - 1 (0 for a softmaxed target), which adds up to
// sum(y > 0 ? y*(log(y) - log(s)) : 0) with every t >= 0, so that nothing cancels; s is
// softmax(pred), formed as a log-softmax, and y the target or its softmax (norm_target).
// grad = (y - s)*per_sample, per_sample = 1/N from the launcher (a double division in the
// kernel is a subroutine, around whose call ptxas spilled), written in pred's dtype.
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

// t = y*d - (y - s) >= 0 from log-probabilities, as kldiv._agnostic.logit_terms: for small d,
// y - s = s*expm1(d) keeps its digits. A term below 0 is a rounding; NaN stays NaN.
template <class A>
__device__ __forceinline__ A loss_term(A log_y, A y, A log_s, A s) {
  if (log_y == -infinity<A>()) return s;
  const A d = log_y - log_s;
  const A mass = abs_of(d) < 1 ? s * expm1_of(d) : y - s;
  const A t = y * d - mass;
  return t < 0 ? A(0) : t;
}

// The log-sum-exp of a span of the pred row and of the target row (with norm_target): the
// state a split row parks after pass 1.
template <class A>
struct LossNorms {
  LogSumExp<A> pred, target;

  static __device__ __forceinline__ LossNorms merge(const LossNorms& x, const LossNorms& y) {
    LossNorms s;
    s.pred = LogSumExp<A>::merge(x.pred, y.pred);
    s.target = LogSumExp<A>::merge(x.target, y.target);
    return s;
  }
};

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
      const TermsAndMass s = merged_slots<TermsAndMass>(scratch, items, row, w.splits);
      row_error[row] = norm_target ? s.terms : s.terms + (s.mass - 1);
    }
    return;
  }
  const RowGroup g = row_group(warp_per_row);
  // The group's own slice of the cache: its pred row, then its target row (whole rows only).
  T* const cached_pred = reinterpret_cast<T*>(kldiv_row_cache) +
                         static_cast<long long>(g.index) * k * (norm_target ? 2 : 1);
  T* const cached_target = cached_pred + k;
  for_each_span(g, w, [&](long long row, long long item, long long begin, long long end) {
    const T* row_pred = pred + row * k;
    const T* row_target = target + row * k;
    LossNorms<A> norms;
    if (w.phase == 2) {
      norms = merged_slots<LossNorms<A> >(scratch, 0, row, w.splits);
    } else {
      LogSumExp<A> lse_pred = LogSumExp<A>::identity();
      LogSumExp<A> lse_target = LogSumExp<A>::identity();
      // Not unrolled: the trip count that unrolling needs is a 64-bit division, a subroutine
      // whose calling convention made ptxas spill on sm_80 and sm_90. Many resident warps,
      // not unrolling, hide the loads' latency.
#pragma unroll 1
      for (long long i = begin + g.lane; i < end; i += g.size) {
        const T x = row_pred[i];
        lse_pred.add(load(&x));
        if (cache_rows) cached_pred[i] = x;
        if (norm_target) {
          const T t = row_target[i];
          lse_target.add(load(&t));
          if (cache_rows) cached_target[i] = t;
        }
      }
      norms.pred = group_reduce(lse_pred, g);
      norms.target = norm_target ? group_reduce(lse_target, g) : LogSumExp<A>::identity();
      if (w.phase == 1) {
        if (g.lane == 0) *slot<LossNorms<A> >(scratch, item) = norms;
        return;
      }
    }
    const A log_norm_pred = norms.pred.value();
    const A log_norm_target = norm_target ? norms.target.value() : A(0);

    TermsAndMass sums = TermsAndMass::identity();
#pragma unroll 1
    for (long long i = begin + g.lane; i < end; i += g.size) {
      const A log_s = load(cache_rows ? cached_pred + i : row_pred + i) - log_norm_pred;
      const A s = exp_of(log_s);
      A y, log_y;
      if (norm_target) {
        log_y = load(cache_rows ? cached_target + i : row_target + i) - log_norm_target;
        y = exp_of(log_y);
      } else {
        y = load(row_target + i);
        log_y = y > 0 ? log_of(y) : -infinity<A>();
        sums.mass += y;
      }
      store(grad + row * k + i, (y - s) * per_sample);
      sums.terms += loss_term(log_y, y, log_s, s);
    }
    sums = group_reduce(sums, g);
    if (g.lane != 0) return;
    if (w.phase == 0) {
      row_error[row] = norm_target ? sums.terms : sums.terms + (sums.mass - 1);
    } else {
      *slot<TermsAndMass>(scratch, items + item) = sums;
    }
  });
}

}  // namespace kldiv

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
softmax_kl_loss_float16(const __half* pred, const __half* target, __half* grad, double* row_error,
                        double* scratch, long long rows, long long k, long long splits,
                        long long chunk, int phase, float per_sample, int norm_target,
                        int cache_rows, int warp_per_row) {
  const kldiv::Phases w = kldiv::phases(rows, k, splits, chunk, phase);
  kldiv::softmax_kl_loss_rows(pred, target, grad, row_error, scratch, w, per_sample, norm_target,
                              cache_rows, warp_per_row);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
softmax_kl_loss_float32(const float* pred, const float* target, float* grad, double* row_error,
                        double* scratch, long long rows, long long k, long long splits,
                        long long chunk, int phase, float per_sample, int norm_target,
                        int cache_rows, int warp_per_row) {
  const kldiv::Phases w = kldiv::phases(rows, k, splits, chunk, phase);
  kldiv::softmax_kl_loss_rows(pred, target, grad, row_error, scratch, w, per_sample, norm_target,
                              cache_rows, warp_per_row);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
softmax_kl_loss_float64(const double* pred, const double* target, double* grad, double* row_error,
                        double* scratch, long long rows, long long k, long long splits,
                        long long chunk, int phase, double per_sample, int norm_target,
                        int cache_rows, int warp_per_row) {
  const kldiv::Phases w = kldiv::phases(rows, k, splits, chunk, phase);
  kldiv::softmax_kl_loss_rows(pred, target, grad, row_error, scratch, w, per_sample, norm_target,
                              cache_rows, warp_per_row);
}
