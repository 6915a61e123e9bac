/* The logits kernel of _native.c for one instruction-set variant and one element type:
 * included by _native_variant.h with KL_ATTR and KL_VARIANT (the variant), and KL_T, KL_TYPE
 * and KL_MAX (the type) defined.
 *
 * KL(softmax(a[r]) || softmax(b[r])) of rows of n logits into res[r] (a float32 or float64
 * array, res_kind 'f' or 'd'), NaN for a row holding a logit that is not finite (-inf, a
 * masked class, included: the caller redoes such rows). Three passes over each row: the
 * maxima; the shifted exponentials and the differences of the shifted logits, and the
 * normalisers in float64; then the terms q*phi(p/q) >= 0 (kl_logit_term), summed in float64.
 * Their log-ratio d keeps its digits for near-identical rows: it is
 * delta = (a - max a) - (b - max b), exact, less log(sum_a/sum_b), taken as
 * log1p(sum(exp_b*expm1(delta))/sum_b).
 *
 * scratch holds 3*min(n, chunk) elements, whatever the row: a row of at most chunk keeps
 * its exponentials there between the last two passes; a longer one is taken in chunks, its
 * exponentials made again in the last pass (one more exp an element, rather than memory of
 * the row's size). */

/* The middle pass of the logits and loss kernels, on one row pair: exp_a = exp(a - max a),
 * exp_b likewise; delta = (a - max a) - (b - max b), exact but for a rounding relative to
 * itself; returns sum(exp_b), and in *sum_diff sum(exp_a - exp_b) = sum(exp_b*expm1(delta)),
 * which near-identical rows must not take as a difference of two rounded sums. */
KL_ATTR static KL_INLINE double KL_NAME(kl_logit_exps, KL_TYPE, KL_VARIANT)(
    const KL_T *restrict ar, KL_T peak_a, const KL_T *restrict br, KL_T peak_b, Py_ssize_t n,
    KL_T *restrict exp_a, KL_T *restrict exp_b, KL_T *restrict delta, double *sum_diff_out)
{
    double sum_b = 0.0, sum_diff = 0.0;
#pragma omp simd reduction(+ : sum_b, sum_diff)
    for (Py_ssize_t i = 0; i < n; i++) {
        KL_T lo_a, lo_b;
        const KL_T hi_a = KL_TYPED(kl_diff)(ar[i], peak_a, &lo_a);
        const KL_T hi_b = KL_TYPED(kl_diff)(br[i], peak_b, &lo_b);
        exp_a[i] = KL_TYPED(kl_exp_nonpositive)(hi_a, lo_a);
        exp_b[i] = KL_TYPED(kl_exp_nonpositive)(hi_b, lo_b);
        const KL_T dl = (hi_a - hi_b) + (lo_a - lo_b);
        delta[i] = dl;
        sum_b += (double)exp_b[i];
        sum_diff += (double)KL_TYPED(kl_exp_diff)(exp_a[i], exp_b[i], dl);
    }
    *sum_diff_out = sum_diff;
    return sum_b;
}

/* kl_logit_exps over a whole row, a chunk at a time (chunk <= n): sum(exp_b) and, in
 * *sum_diff_out, sum(exp_a - exp_b); the scratch holds the last chunk's exponentials. The
 * logits kernel's second pass, and the loss kernel's with a softmaxed target. */
KL_ATTR static KL_INLINE double KL_NAME(kl_logit_sums, KL_TYPE, KL_VARIANT)(
    const KL_T *restrict ar, KL_T peak_a, const KL_T *restrict br, KL_T peak_b, Py_ssize_t n,
    Py_ssize_t chunk, KL_T *restrict exp_a, KL_T *restrict exp_b, KL_T *restrict delta,
    double *sum_diff_out)
{
    double sum_b = 0.0, sum_diff = 0.0;
    for (Py_ssize_t start = 0; start < n; start += chunk) {
        const Py_ssize_t m = n - start < chunk ? n - start : chunk;
        double part_diff;
        sum_b += KL_NAME(kl_logit_exps, KL_TYPE, KL_VARIANT)(
            ar + start, peak_a, br + start, peak_b, m, exp_a, exp_b, delta, &part_diff);
        sum_diff += part_diff;
    }
    *sum_diff_out = sum_diff;
    return sum_b;
}

KL_ATTR static void KL_NAME(kl_logit_rows, KL_TYPE, KL_VARIANT)(
    const char *a, Py_ssize_t a_stride, const char *b, Py_ssize_t b_stride, Py_ssize_t rows,
    Py_ssize_t n, Py_ssize_t chunk, void *scratch, void *res, char res_kind)
{
    chunk = n < chunk ? n : chunk;
    KL_T *restrict exp_a = (KL_T *)scratch, *restrict exp_b = exp_a + chunk;
    KL_T *restrict delta = exp_a + 2 * chunk;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const KL_T *restrict ar = (const KL_T *)(a + r * a_stride);
        const KL_T *restrict br = (const KL_T *)(b + r * b_stride);
        KL_T peak_a = -KL_MAX, peak_b = -KL_MAX;
        int bad = 0;
#pragma omp simd reduction(max : peak_a, peak_b) reduction(| : bad)
        for (Py_ssize_t i = 0; i < n; i++) {
            peak_a = ar[i] > peak_a ? ar[i] : peak_a;
            peak_b = br[i] > peak_b ? br[i] : peak_b;
            bad |= !((ar[i] <= KL_MAX) & (ar[i] >= -KL_MAX)) |
                   !((br[i] <= KL_MAX) & (br[i] >= -KL_MAX));
        }
        if (bad) {
            kl_store(res, res_kind, r, (double)NAN);
            continue;
        }
        double sum_diff;
        const double sum_b = KL_NAME(kl_logit_sums, KL_TYPE, KL_VARIANT)(
            ar, peak_a, br, peak_b, n, chunk, exp_a, exp_b, delta, &sum_diff);
        /* log p - log q = delta - log(sum_a/sum_b) */
        const double shift = log1p(sum_diff / sum_b);
        const KL_T shift_hi = (KL_T)shift, shift_lo = (KL_T)(shift - (double)shift_hi);
        const KL_T scale_a = (KL_T)(1.0 / (sum_b + sum_diff)), scale_b = (KL_T)(1.0 / sum_b);
        double total = 0.0;
        for (Py_ssize_t start = 0; start < n; start += chunk) {
            const Py_ssize_t m = n - start < chunk ? n - start : chunk;
            if (chunk < n) { /* the exponentials are another chunk's: made again */
                double unused;
                KL_NAME(kl_logit_exps, KL_TYPE, KL_VARIANT)(ar + start, peak_a, br + start,
                                                            peak_b, m, exp_a, exp_b, delta,
                                                            &unused);
            }
#pragma omp simd
            for (Py_ssize_t i = 0; i < m; i++) {
                const KL_T d = (delta[i] - shift_hi) - shift_lo;
                exp_a[i] = KL_TYPED(kl_logit_term)(exp_a[i] * scale_a, exp_b[i] * scale_b, d);
            }
            double part = 0.0;
#pragma omp simd reduction(+ : part)
            for (Py_ssize_t i = 0; i < m; i++) {
                part += (double)exp_a[i];
            }
            total += part;
        }
        kl_store(res, res_kind, r, total);
    }
}
