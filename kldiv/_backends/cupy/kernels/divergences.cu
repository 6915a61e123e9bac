// Entry points of the divergences, one per operation and dtype, named <op>_<dtype> after
// NumPy's dtype names; the launcher looks them up by the inputs' dtype.
//
// Reductions: (a, a_stride, b, b_stride, out, rows, n, warp_per_row, clip), see reduce_rows.
// rel_entr:   (p, p_stride, q, q_stride, out, rows, n), see map_rows.
#include "common.cuh"
#include "log_sum_exp.cuh"
#include "rows.cuh"
#include "terms.cuh"

namespace kldiv {
template <class A>
using KlSum = TermSum<KlTerm, A>;
template <class A>
using EntropySum = TermSum<EntropyTerm, A>;
template <class A>
using CrossEntropySum = TermSum<CrossEntropyTerm, A>;
template <class A>
using JsSum = TermSum<JsTerm, A>;
}  // namespace kldiv

// ---------------------------------------------------------------- rel_entr

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
rel_entr_float16(const __half* p, long long p_stride, const __half* q, long long q_stride,
                 __half* out, long long rows, long long n) {
  kldiv::map_rows<kldiv::KlTerm<float> >(p, p_stride, q, q_stride, out, rows, n);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
rel_entr_float32(const float* p, long long p_stride, const float* q, long long q_stride,
                 float* out, long long rows, long long n) {
  kldiv::map_rows<kldiv::KlTerm<float> >(p, p_stride, q, q_stride, out, rows, n);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
rel_entr_float64(const double* p, long long p_stride, const double* q, long long q_stride,
                 double* out, long long rows, long long n) {
  kldiv::map_rows<kldiv::KlTerm<double> >(p, p_stride, q, q_stride, out, rows, n);
}

// ---------------------------------------------------------------- kl_div

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_float16(const __half* p, long long p_stride, const __half* q, long long q_stride,
               __half* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::KlSum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                           warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_float32(const float* p, long long p_stride, const float* q, long long q_stride,
               float* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::KlSum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                           warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_float64(const double* p, long long p_stride, const double* q, long long q_stride,
               double* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::KlSum<double> >(p, p_stride, q, q_stride, out, rows, n,
                                            warp_per_row, clip);
}

// ---------------------------------------------------------------- entropy (q unused)

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
entropy_float16(const __half* p, long long p_stride, const __half* q, long long q_stride,
                __half* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::EntropySum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                                warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
entropy_float32(const float* p, long long p_stride, const float* q, long long q_stride,
                float* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::EntropySum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                                warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
entropy_float64(const double* p, long long p_stride, const double* q, long long q_stride,
                double* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::EntropySum<double> >(p, p_stride, q, q_stride, out, rows, n,
                                                 warp_per_row, clip);
}

// ---------------------------------------------------------------- cross_entropy

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
cross_entropy_float16(const __half* p, long long p_stride, const __half* q, long long q_stride,
                      __half* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::CrossEntropySum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                                     warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
cross_entropy_float32(const float* p, long long p_stride, const float* q, long long q_stride,
                      float* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::CrossEntropySum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                                     warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
cross_entropy_float64(const double* p, long long p_stride, const double* q, long long q_stride,
                      double* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::CrossEntropySum<double> >(p, p_stride, q, q_stride, out, rows, n,
                                                      warp_per_row, clip);
}

// ---------------------------------------------------------------- js_div

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
js_div_float16(const __half* p, long long p_stride, const __half* q, long long q_stride,
               __half* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::JsSum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                           warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
js_div_float32(const float* p, long long p_stride, const float* q, long long q_stride,
               float* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::JsSum<float> >(p, p_stride, q, q_stride, out, rows, n,
                                           warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
js_div_float64(const double* p, long long p_stride, const double* q, long long q_stride,
               double* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::JsSum<double> >(p, p_stride, q, q_stride, out, rows, n,
                                            warp_per_row, clip);
}

// ---------------------------------------------------------------- kl_div_logits (a, b logits)

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_logits_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                      __half* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::LogitKl<float> >(a, a_stride, b, b_stride, out, rows, n,
                                             warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_logits_float32(const float* a, long long a_stride, const float* b, long long b_stride,
                      float* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::LogitKl<float> >(a, a_stride, b, b_stride, out, rows, n,
                                             warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_logits_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                      double* out, long long rows, long long n, int warp_per_row, int clip) {
  kldiv::reduce_rows<kldiv::LogitKl<double> >(a, a_stride, b, b_stride, out, rows, n,
                                              warp_per_row, clip);
}
