/* The logits kernel of _native.c for one instruction-set variant: included by
 * _native_variant.h with KL_ATTR and KL_NAME(name, f32, KL_VARIANT) as for _native_row.h.
 *
 * KL(softmax(a[r]) || softmax(b[r])) of float32 rows of n logits into res[r], NaN for a row
 * holding a logit that is not finite (-inf, a masked class, included: the caller redoes
 * such rows). scratch holds 2n floats. Three passes over each row: the maxima; the shifted
 * exponentials, kept in scratch, and their sums in float64; then the terms
 * q*phi(p/q) >= 0 (kl_logit_term_f32), summed in float64. Their log-ratio d = (a - b) - c
 * is taken with a - b exact (a pair of floats), so near-identical rows keep their digits. */

KL_ATTR static void KL_NAME(kl_logit_rows, f32, KL_VARIANT)(const char *a, Py_ssize_t a_stride,
                                                           const char *b, Py_ssize_t b_stride,
                                                           Py_ssize_t rows, Py_ssize_t n,
                                                           float *scratch, double *res)
{
    float *restrict exp_a = scratch, *restrict exp_b = scratch + n;
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
            res[r] = (double)NAN;
            continue;
        }
        double sum_a = 0.0, sum_b = 0.0;
#pragma omp simd reduction(+ : sum_a, sum_b)
        for (Py_ssize_t i = 0; i < n; i++) {
            /* the shifted logits' roundings, a few ulps of the largest, would become
             * relative errors of p and q: they are kept and passed on */
            float lo_a, lo_b;
            const float hi_a = kl_diff_f32(ar[i], peak_a, &lo_a);
            const float hi_b = kl_diff_f32(br[i], peak_b, &lo_b);
            exp_a[i] = kl_exp_nonpositive_f32(hi_a, lo_a);
            exp_b[i] = kl_exp_nonpositive_f32(hi_b, lo_b);
            sum_a += (double)exp_a[i];
            sum_b += (double)exp_b[i];
        }
        /* log p - log q = (a - b) - shift, with a - b as an exact float pair (TwoSum) and
         * shift split in two floats, so that d keeps its digits near a == b + const */
        const double shift = ((double)peak_a + log(sum_a)) - ((double)peak_b + log(sum_b));
        const float shift_hi = (float)shift, shift_lo = (float)(shift - (double)shift_hi);
        const float scale_a = (float)(1.0 / sum_a), scale_b = (float)(1.0 / sum_b);
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            float err;
            const float diff = kl_diff_f32(ar[i], br[i], &err);
            const float d = ((diff - shift_hi) + err) - shift_lo;
            exp_a[i] = kl_logit_term_f32(exp_a[i] * scale_a, exp_b[i] * scale_b, d);
        }
        double total = 0.0;
#pragma omp simd reduction(+ : total)
        for (Py_ssize_t i = 0; i < n; i++) {
            total += (double)exp_a[i];
        }
        res[r] = total;
    }
}
