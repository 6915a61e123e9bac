// Entry points of the divergences, one per operation and dtype, named <op>_<dtype> after
// NumPy's dtype names; the launcher looks them up by the inputs' dtype.
//
// Reductions: (a, a_stride, b, b_stride, out, scratch, rows, n, splits, chunk, phase,
//              warp_per_row, clip), see rows.cuh: scratch holds the split rows' states
//              (null when splits == 1), phase says which launch of a split row this is.
// rel_entr:   (p, p_stride, q, q_stride, out, rows, n), see map_rows.
#include "common.cuh"
#include "log_sum_exp.cuh"
#include "rows.cuh"
#include "terms.cuh"

namespace kldiv {
template <class A>
using KlValidatedSum = KlSum<A, false>;
template <class A>
using KlMeasuresSum = KlSum<A, true>;
template <class A>
using EntropySum = TermSum<EntropyTerm, A>;
template <class A>
using CrossEntropySum = TermSum<CrossEntropyTerm, A>;
template <class A>
using JsSum = TermSum<JsTerm, A>;
template <class A>
using HellingerSum = TermSum<HellingerTerm, A>;
template <class A>
using TotalVariationSum = TermSum<TotalVariationTerm, A>;
}  // namespace kldiv

// ---------------------------------------------------------------- rel_entr

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
rel_entr_float16(const __half* p, long long p_stride, const __half* q, long long q_stride,
                 __half* out, long long rows, long long n) {
  kldiv::map_rows<kldiv::KlTerm<float> >(p, p_stride, q, q_stride, out, rows, n);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
rel_entr_float32(const float* p, long long p_stride, const float* q, long long q_stride, float* out,
                 long long rows, long long n) {
  kldiv::map_rows<kldiv::KlTerm<float> >(p, p_stride, q, q_stride, out, rows, n);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
rel_entr_float64(const double* p, long long p_stride, const double* q, long long q_stride,
                 double* out, long long rows, long long n) {
  kldiv::map_rows<kldiv::KlTerm<double> >(p, p_stride, q, q_stride, out, rows, n);
}

// ---------------------------- kl_div, validate=True: distributions, sum(t) + sum(p - q)

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
               __half* out, double* scratch, long long rows, long long n, long long splits,
               long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::KlValidatedSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                    warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_float32(const float* a, long long a_stride, const float* b, long long b_stride, float* out,
               double* scratch, long long rows, long long n, long long splits, long long chunk,
               int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::KlValidatedSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                    warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_float64(const double* a, long long a_stride, const double* b, long long b_stride,
               double* out, double* scratch, long long rows, long long n, long long splits,
               long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::KlValidatedSum<double> >(a, a_stride, b, b_stride, out, scratch, w,
                                                     warp_per_row, clip);
}

// -------------------------------------- kl_div, validate=False: measures of any mass

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_measures_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                        __half* out, double* scratch, long long rows, long long n, long long splits,
                        long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::KlMeasuresSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                   warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_measures_float32(const float* a, long long a_stride, const float* b, long long b_stride,
                        float* out, double* scratch, long long rows, long long n, long long splits,
                        long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::KlMeasuresSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                   warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_measures_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                        double* out, double* scratch, long long rows, long long n, long long splits,
                        long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::KlMeasuresSum<double> >(a, a_stride, b, b_stride, out, scratch, w,
                                                    warp_per_row, clip);
}

// ---------------------------------------------------------------- entropy (b unused)

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
entropy_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                __half* out, double* scratch, long long rows, long long n, long long splits,
                long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::EntropySum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
entropy_float32(const float* a, long long a_stride, const float* b, long long b_stride, float* out,
                double* scratch, long long rows, long long n, long long splits, long long chunk,
                int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::EntropySum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
entropy_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                double* out, double* scratch, long long rows, long long n, long long splits,
                long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::EntropySum<double> >(a, a_stride, b, b_stride, out, scratch, w,
                                                 warp_per_row, clip);
}

// ---------------------------------------------------------------- cross_entropy

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
cross_entropy_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                      __half* out, double* scratch, long long rows, long long n, long long splits,
                      long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::CrossEntropySum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                     warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
cross_entropy_float32(const float* a, long long a_stride, const float* b, long long b_stride,
                      float* out, double* scratch, long long rows, long long n, long long splits,
                      long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::CrossEntropySum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                     warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
cross_entropy_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                      double* out, double* scratch, long long rows, long long n, long long splits,
                      long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::CrossEntropySum<double> >(a, a_stride, b, b_stride, out, scratch, w,
                                                      warp_per_row, clip);
}

// ---------------------------------------------------------------- js_div

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
js_div_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
               __half* out, double* scratch, long long rows, long long n, long long splits,
               long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::JsSum<float> >(a, a_stride, b, b_stride, out, scratch, w, warp_per_row,
                                           clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
js_div_float32(const float* a, long long a_stride, const float* b, long long b_stride, float* out,
               double* scratch, long long rows, long long n, long long splits, long long chunk,
               int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::JsSum<float> >(a, a_stride, b, b_stride, out, scratch, w, warp_per_row,
                                           clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
js_div_float64(const double* a, long long a_stride, const double* b, long long b_stride,
               double* out, double* scratch, long long rows, long long n, long long splits,
               long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::JsSum<double> >(a, a_stride, b, b_stride, out, scratch, w, warp_per_row,
                                            clip);
}

// ------------------------------- hellinger (squared; the public layer takes the root)

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
hellinger_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                  __half* out, double* scratch, long long rows, long long n, long long splits,
                  long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::HellingerSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                  warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
hellinger_float32(const float* a, long long a_stride, const float* b, long long b_stride,
                  float* out, double* scratch, long long rows, long long n, long long splits,
                  long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::HellingerSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                  warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
hellinger_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                  double* out, double* scratch, long long rows, long long n, long long splits,
                  long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::HellingerSum<double> >(a, a_stride, b, b_stride, out, scratch, w,
                                                   warp_per_row, clip);
}

// ---------------------------------------------------------------- total_variation

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
total_variation_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                        __half* out, double* scratch, long long rows, long long n, long long splits,
                        long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::TotalVariationSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                       warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
total_variation_float32(const float* a, long long a_stride, const float* b, long long b_stride,
                        float* out, double* scratch, long long rows, long long n, long long splits,
                        long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::TotalVariationSum<float> >(a, a_stride, b, b_stride, out, scratch, w,
                                                       warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
total_variation_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                        double* out, double* scratch, long long rows, long long n, long long splits,
                        long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::reduce_rows<kldiv::TotalVariationSum<double> >(a, a_stride, b, b_stride, out, scratch, w,
                                                        warp_per_row, clip);
}

// ---------------------------------------------------------------- kl_div_logits (a, b logits)

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_logits_float16(const __half* a, long long a_stride, const __half* b, long long b_stride,
                      __half* out, double* scratch, long long rows, long long n, long long splits,
                      long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::logit_kl_rows(a, a_stride, b, b_stride, out, scratch, w, warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_logits_float32(const float* a, long long a_stride, const float* b, long long b_stride,
                      float* out, double* scratch, long long rows, long long n, long long splits,
                      long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::logit_kl_rows(a, a_stride, b, b_stride, out, scratch, w, warp_per_row, clip);
}

extern "C" __global__ void __launch_bounds__(KLDIV_MAX_BLOCK_THREADS)
kl_div_logits_float64(const double* a, long long a_stride, const double* b, long long b_stride,
                      double* out, double* scratch, long long rows, long long n, long long splits,
                      long long chunk, int phase, int warp_per_row, int clip) {
  const kldiv::Phases w = kldiv::phases(rows, n, splits, chunk, phase);
  kldiv::logit_kl_rows(a, a_stride, b, b_stride, out, scratch, w, warp_per_row, clip);
}
