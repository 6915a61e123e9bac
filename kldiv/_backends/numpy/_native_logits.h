/* The logits kernel of _native.c for one instruction-set variant: included by
 * _native_variant.h with KL_ATTR and KL_NAME(name, f32, KL_VARIANT) as for _native_row.h.
 *
 * KL(softmax(a[r]) || softmax(b[r])) of float32 rows of n logits into res[r] (a float32 or
 * float64 array, res_kind 'f' or 'd'), NaN for a row holding a logit that is not finite
 * (-inf, a masked class, included: the caller redoes such rows). scratch holds 3n floats.
 * Three passes over each row: the maxima; the shifted exponentials and the differences of
 * the shifted logits, kept in scratch, and the normalisers in float64; then the terms
 * q*phi(p/q) >= 0 (kl_logit_term_f32), summed in float64. Their log-ratio d keeps its digits
 * for near-identical rows: it is delta = (a - max a) - (b - max b), exact, less
 * log(sum_a/sum_b), taken as log1p(sum(exp_b*expm1(delta))/sum_b). */

/* The middle pass of the logits and loss kernels, on one row pair: exp_a = exp(a - max a),
 * exp_b likewise; delta = (a - max a) - (b - max b), exact but for a rounding relative to
 * itself; returns sum(exp_b), and in *sum_diff sum(exp_a - exp_b) = sum(exp_b*expm1(delta)),
 * which near-identical rows must not take as a difference of two rounded sums. */
KL_ATTR static KL_INLINE double KL_NAME(kl_logit_exps, f32, KL_VARIANT)(
    const float *restrict ar, float peak_a, const float *restrict br, float peak_b, Py_ssize_t n,
    float *restrict exp_a, float *restrict exp_b, float *restrict delta, double *sum_diff_out)
{
    double sum_b = 0.0, sum_diff = 0.0;
#pragma omp simd reduction(+ : sum_b, sum_diff)
    for (Py_ssize_t i = 0; i < n; i++) {
        float lo_a, lo_b;
        const float hi_a = kl_diff_f32(ar[i], peak_a, &lo_a);
        const float hi_b = kl_diff_f32(br[i], peak_b, &lo_b);
        exp_a[i] = kl_exp_nonpositive_f32(hi_a, lo_a);
        exp_b[i] = kl_exp_nonpositive_f32(hi_b, lo_b);
        const float dl = (hi_a - hi_b) + (lo_a - lo_b);
        delta[i] = dl;
        sum_b += (double)exp_b[i];
        sum_diff += (double)kl_exp_diff_f32(exp_a[i], exp_b[i], dl);
    }
    *sum_diff_out = sum_diff;
    return sum_b;
}

KL_ATTR static void KL_NAME(kl_logit_rows, f32, KL_VARIANT)(const char *a, Py_ssize_t a_stride,
                                                           const char *b, Py_ssize_t b_stride,
                                                           Py_ssize_t rows, Py_ssize_t n,
                                                           float *scratch, void *res,
                                                           char res_kind)
{
    float *restrict exp_a = scratch, *restrict exp_b = scratch + n;
    float *restrict delta = scratch + 2 * n;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *restrict ar = (const float *)(a + r * a_stride);
        const float *restrict br = (const float *)(b + r * b_stride);
        float peak_a = -FLT_MAX, peak_b = -FLT_MAX;
        int bad = 0;
#pragma omp simd reduction(max : peak_a, peak_b) reduction(| : bad)
        for (Py_ssize_t i = 0; i < n; i++) {
            peak_a = ar[i] > peak_a ? ar[i] : peak_a;
            peak_b = br[i] > peak_b ? br[i] : peak_b;
            bad |= !(fabsf(ar[i]) <= FLT_MAX) | !(fabsf(br[i]) <= FLT_MAX);
        }
        if (bad) {
            kl_store(res, res_kind, r, (double)NAN);
            continue;
        }
        double sum_diff;
        const double sum_b = KL_NAME(kl_logit_exps, f32, KL_VARIANT)(
            ar, peak_a, br, peak_b, n, exp_a, exp_b, delta, &sum_diff);
        /* log p - log q = delta - log(sum_a/sum_b) */
        const double shift = log1p(sum_diff / sum_b);
        const float shift_hi = (float)shift, shift_lo = (float)(shift - (double)shift_hi);
        const float scale_a = (float)(1.0 / (sum_b + sum_diff)), scale_b = (float)(1.0 / sum_b);
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            const float d = (delta[i] - shift_hi) - shift_lo;
            exp_a[i] = kl_logit_term_f32(exp_a[i] * scale_a, exp_b[i] * scale_b, d);
        }
        double total = 0.0;
#pragma omp simd reduction(+ : total)
        for (Py_ssize_t i = 0; i < n; i++) {
            total += (double)exp_a[i];
        }
        kl_store(res, res_kind, r, total);
    }
}
