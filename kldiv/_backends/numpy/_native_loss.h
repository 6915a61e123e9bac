/* The loss kernels of _native.c for one instruction-set variant and one element type:
 * included by _native_variant.h with KL_ATTR and KL_VARIANT (the variant), and KL_T,
 * KL_TYPE, KL_MAX, KL_TINY (the least normal float) and KL_HAS_WIDER (1 for float32, whose
 * logarithms and sums can be taken in float64; 0 for float64) defined.
 *
 * PuzzleLib's KLDivergence on rows of n: s = softmax(pred[r]), y = target[r] (a
 * distribution) or softmax(target[r]) (norm_target), writes res[r] = sum(y*log(y/s)) (float64)
 * and grad[r] = (y - s)*scale, in one call. NaN in res[r] for a row to redo (its grad row is
 * then garbage): a logit that is not finite, a target entry negative, NaN, infinite or
 * subnormal, and in float64 an s that underflows to 0 under a y > 0. scratch holds
 * 3*min(n, chunk) elements: a row longer than a chunk is taken a chunk at a time, its
 * exponentials made again in the last pass, as in _native_logits.h. With tolerance >= 0,
 * returns whether a row not to redo has a target distribution off 1 by more than it (for
 * norm_target, 0).
 *
 * norm_target: the logits kernel's three passes (_native_logits.h) with a = target, b = pred,
 * and the grad written in the last. A distribution y: the maxima and y's checks; the shifted
 * exponentials of pred and their sum; then s, the grad and the terms
 * t = y*log(y/s) - y + s >= 0 (t = s where y == 0). sum(y*log(y/s)) = sum(t) + sum(y) - sum(s),
 * and sum(s) = 1: the row's error is sum(t) + (sum(y) - 1), the target's mass off 1 entering
 * as it is, as the generic code's. The rounding of s (s(1 + e) for the exact s) enters sum(t)
 * as -sum(y*e) and the 1 it stands for as +sum(s*e): they cancel to sum((s - y)*e), second
 * order for a pred near its target. d = log(y/s) must keep its digits there:
 *   float32 (KL_HAS_WIDER): log(y) - log(s) in float64, log(s) = (pred - max) - log(sum) (a
 *     float32 log's absolute rounding would be all of d), and t = kl_logit_term(y, s, d);
 *     sum(y) in float64 is exact for float32 entries;
 *   float64: t = kl_term(y, s), log(y/s) from the bits of both (_native_term.h's kl_split,
 *     exact to a few roundings of itself), and sum(y) in error-free TwoSum lanes: a plain
 *     sum's rounding, 1e-16 a row, would be 1e-12 of an error of 1e-4. */

/* The distribution target's middle pass on m elements: exp_s = exp(pred - max), and
 * (KL_HAS_WIDER) pred - max as hi (in delta) and its rounding lo (in lo_out); adds to the
 * sum of exp_s, and (KL_HAS_WIDER) to the sum of y. */
KL_ATTR static KL_INLINE void KL_NAME(kl_loss_exps, KL_TYPE, KL_VARIANT)(
    const KL_T *restrict br, KL_T peak_b, const KL_T *restrict yr, Py_ssize_t m,
    KL_T *restrict exp_s, KL_T *restrict delta, KL_T *restrict lo_out, double *sum_s_out,
    double *sum_y_out)
{
    double sum_s = 0.0, sum_y = 0.0;
#if !KL_HAS_WIDER
    (void)yr, (void)delta, (void)lo_out; /* the last pass needs s alone */
#endif
#pragma omp simd reduction(+ : sum_s, sum_y)
    for (Py_ssize_t i = 0; i < m; i++) {
        KL_T lo;
        const KL_T hi = KL_TYPED(kl_diff)(br[i], peak_b, &lo);
        exp_s[i] = KL_TYPED(kl_exp_nonpositive)(hi, lo);
        sum_s += (double)exp_s[i];
#if KL_HAS_WIDER
        delta[i] = hi;
        lo_out[i] = lo;
        sum_y += (double)yr[i];
#endif
    }
    *sum_s_out += sum_s;
    *sum_y_out += sum_y;
}

#if !KL_HAS_WIDER
#define KL_LOSS_LANES 8
/* sum(y) of m float64 entries into *sum and its rounding error into *err: TwoSum lanes,
 * error-free, joined with Neumaier's compensation (the row kernels' float64 sum(p - q)). */
KL_ATTR static KL_INLINE void KL_NAME(kl_loss_mass, KL_TYPE, KL_VARIANT)(const KL_T *restrict y,
                                                                         Py_ssize_t m,
                                                                         double *sum,
                                                                         double *err)
{
    double lane[KL_LOSS_LANES] = {0}, lane_err[KL_LOSS_LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + KL_LOSS_LANES <= m; i += KL_LOSS_LANES) {
#pragma omp simd
        for (int l = 0; l < KL_LOSS_LANES; l++) {
            kl_two_sum(&lane[l], &lane_err[l], y[i + l]);
        }
    }
    for (; i < m; i++) {
        kl_two_sum(&lane[0], &lane_err[0], y[i]);
    }
    for (int l = 0; l < KL_LOSS_LANES; l++) {
        kl_neumaier(sum, err, lane[l]);
        *err += lane_err[l];
    }
}
#undef KL_LOSS_LANES
#endif

KL_ATTR static int KL_NAME(kl_loss_rows, KL_TYPE, KL_VARIANT)(
    const char *pred, Py_ssize_t pred_stride, const char *target, Py_ssize_t target_stride,
    Py_ssize_t rows, Py_ssize_t n, Py_ssize_t chunk, int norm_target, double scale_arg,
    char *grad, Py_ssize_t grad_stride, void *scratch, double *res, double tolerance)
{
    int off = 0;
    const KL_T scale = (KL_T)scale_arg;
    chunk = n < chunk ? n : chunk;
    KL_T *restrict exp_s = (KL_T *)scratch, *restrict exp_y = exp_s + chunk;
    KL_T *restrict delta = exp_s + 2 * chunk;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const KL_T *restrict br = (const KL_T *)(pred + r * pred_stride);
        const KL_T *restrict yr = (const KL_T *)(target + r * target_stride);
        KL_T *restrict g = (KL_T *)(grad + r * grad_stride);
        KL_T peak_b = -KL_MAX, peak_y = -KL_MAX;
        int bad = 0;
        if (norm_target) {
#pragma omp simd reduction(max : peak_b, peak_y) reduction(| : bad)
            for (Py_ssize_t i = 0; i < n; i++) {
                peak_b = br[i] > peak_b ? br[i] : peak_b;
                peak_y = yr[i] > peak_y ? yr[i] : peak_y;
                bad |= !((br[i] <= KL_MAX) & (br[i] >= -KL_MAX)) |
                       !((yr[i] <= KL_MAX) & (yr[i] >= -KL_MAX));
            }
        }
        else {
#pragma omp simd reduction(max : peak_b) reduction(| : bad)
            for (Py_ssize_t i = 0; i < n; i++) {
                peak_b = br[i] > peak_b ? br[i] : peak_b;
                bad |= !((br[i] <= KL_MAX) & (br[i] >= -KL_MAX)) | !(yr[i] <= KL_MAX) |
                       !((yr[i] >= KL_TINY) | (yr[i] == (KL_T)0));
            }
        }
        if (bad) {
            res[r] = (double)NAN;
            continue;
        }
        double total = 0.0;
        if (norm_target) {
            /* as kl_logit_rows, a = target and b = pred */
            double sum_diff;
            const double sum_s = KL_NAME(kl_logit_sums, KL_TYPE, KL_VARIANT)(
                yr, peak_y, br, peak_b, n, chunk, exp_y, exp_s, delta, &sum_diff);
            const double shift = log1p(sum_diff / sum_s);
            const KL_T shift_hi = (KL_T)shift, shift_lo = (KL_T)(shift - (double)shift_hi);
            const KL_T scale_y = (KL_T)(1.0 / (sum_s + sum_diff));
            const KL_T scale_s = (KL_T)(1.0 / sum_s);
            for (Py_ssize_t start = 0; start < n; start += chunk) {
                const Py_ssize_t m = n - start < chunk ? n - start : chunk;
                if (chunk < n) { /* the exponentials are another chunk's: made again */
                    double unused;
                    KL_NAME(kl_logit_exps, KL_TYPE, KL_VARIANT)(yr + start, peak_y,
                                                                br + start, peak_b, m, exp_y,
                                                                exp_s, delta, &unused);
                }
                KL_T *restrict gc = g + start;
                double part = 0.0;
#pragma omp simd reduction(+ : part)
                for (Py_ssize_t i = 0; i < m; i++) {
                    const KL_T d = (delta[i] - shift_hi) - shift_lo;
                    const KL_T y = exp_y[i] * scale_y, s = exp_s[i] * scale_s;
                    part += (double)KL_TYPED(kl_logit_term)(y, s, d);
                    gc[i] = (y - s) * scale;
                }
                total += part;
            }
        }
        else {
            /* (KL_HAS_WIDER) exp_y holds the rounding of pred - max, delta pred - max */
            double sum_s = 0.0, sum_y = 0.0, sum_y_err = 0.0;
            for (Py_ssize_t start = 0; start < n; start += chunk) {
                const Py_ssize_t m = n - start < chunk ? n - start : chunk;
                KL_NAME(kl_loss_exps, KL_TYPE, KL_VARIANT)(br + start, peak_b, yr + start, m,
                                                           exp_s, delta, exp_y, &sum_s,
                                                           &sum_y);
#if !KL_HAS_WIDER
                KL_NAME(kl_loss_mass, KL_TYPE, KL_VARIANT)(yr + start, m, &sum_y, &sum_y_err);
#endif
            }
#if KL_HAS_WIDER
            const double log_sum = log(sum_s);
#endif
            const KL_T scale_s = (KL_T)(1.0 / sum_s);
            for (Py_ssize_t start = 0; start < n; start += chunk) {
                const Py_ssize_t m = n - start < chunk ? n - start : chunk;
                const KL_T *restrict yc = yr + start;
                if (chunk < n) {
                    double unused_s = 0.0, unused_y = 0.0;
                    KL_NAME(kl_loss_exps, KL_TYPE, KL_VARIANT)(br + start, peak_b, yc, m,
                                                               exp_s, delta, exp_y, &unused_s,
                                                               &unused_y);
                }
                KL_T *restrict gc = g + start;
                double part = 0.0;
#if KL_HAS_WIDER
                /* d = log(y) - log(s), log(s) = (pred - max) - log(sum), in float64, over
                 * pred - max in delta. A loop of its own: in one with the terms, an element's
                 * chain of dependent operations (the float64 log's, then phi's series) was
                 * too long for the core to overlap enough elements; apart, bit for bit the
                 * same, 0.88-0.93x the loss's time on rows of 1000, 0.93-0.95x on 32000. */
#pragma omp simd
                for (Py_ssize_t i = 0; i < m; i++) {
                    const KL_T y = yc[i];
                    const double log_y = kl_log_f64(y != (KL_T)0 ? (double)y : 1.0);
                    delta[i] = (KL_T)((log_y - ((double)delta[i] - log_sum)) - (double)exp_y[i]);
                }
#endif
#pragma omp simd reduction(+ : part)
                for (Py_ssize_t i = 0; i < m; i++) {
                    const KL_T y = yc[i], s = exp_s[i] * scale_s;
#if KL_HAS_WIDER
                    const int live = y != (KL_T)0;
                    part += (double)(live ? KL_TYPED(kl_logit_term)(y, s, delta[i]) : s);
#else
                    /* NaN where s underflows to 0 under a y > 0: the row is redone */
                    part += (double)(y == (KL_T)0 ? s : KL_TYPED(kl_term)(y, s));
#endif
                    gc[i] = (y - s) * scale;
                }
                total += part;
            }
            /* sum(y) - 1, exact but for one rounding (float64: from the TwoSum lanes) */
            const double mass = (sum_y - 1.0) + sum_y_err;
            total += mass;
            off |= tolerance >= 0.0 && !(fabs(mass) <= tolerance);
        }
        res[r] = total;
    }
    return off;
}

/* The loss against integer labels, on rows of n = classes*positions logits laid out
 * class-major (pred of shape (N, C, *spatial) seen as rows): the target of a row is y = 1/P
 * at entry label[j]*P + j for each of its P positions, 0 elsewhere, and is never made.
 * labels: rows of P integers of the type kl_label_at reads (label_code). Writes
 * res[r] = sum(y*log(y/s)) (kl_label_error, float64) and grad[r] = (y - s)*scale. NaN in
 * res[r] for a row holding a logit that is not finite (for the caller to redo) or a label
 * outside [0, C); its grad row is then garbage. No scratch. */

/* sum(y*log(y/s)) = log(sum/P) - mean(d) for d[j] = pred[label[j]] - max, from the sum of
 * the exponentials off the labels, others, without cancellation: with mean(d) = m and
 * t = others/(P*exp(m)), it is log1p(mean(expm1(d - m)) + t), every term >= 0 (AM/GM of the
 * labels' exponentials, and the mass off them); log(t) is formed in log space, so that no
 * exp(m) underflows. Where the labels' logits lie over 700 apart (expm1 would overflow, and
 * the error is hundreds), by the largest d instead: (max - m) + log(mean(exp(d - max)) + ...).
 * One label (P = 1): log1p(others/exp(d)) = -log(s). d is read again from the row for each
 * sum, so that no scratch of P holds it. */
KL_ATTR static double KL_NAME(kl_label_error, KL_TYPE, KL_VARIANT)(const KL_T *br, double peak,
                                                               const char *lr, int label_code,
                                                               Py_ssize_t positions,
                                                               double others)
{
#define KL_LABEL_D(j) ((double)br[kl_label_at(lr, label_code, (j)) * positions + (j)] - peak)
    double mean = 0.0, top = -INFINITY;
    for (Py_ssize_t j = 0; j < positions; j++) {
        const double d = KL_LABEL_D(j);
        mean += d;
        top = d > top ? d : top;
    }
    mean /= (double)positions;
    const double log_positions = log((double)positions);
    const double log_t = others > 0.0 ? log(others) - log_positions - mean : -INFINITY;
    if (top - mean > 700.0) {
        double am = 0.0;
        for (Py_ssize_t j = 0; j < positions; j++) {
            am += exp(KL_LABEL_D(j) - top);
        }
        return (top - mean) + log(am / (double)positions + exp(log_t + mean - top));
    }
    double spread = 0.0;
    for (Py_ssize_t j = 0; j < positions; j++) {
        spread += expm1(KL_LABEL_D(j) - mean);
    }
#undef KL_LABEL_D
    spread /= (double)positions;
    return log_t > 0.0 ? log_t + log1p((1.0 + spread) * exp(-log_t))
                       : log1p(spread + exp(log_t));
}

KL_ATTR static void KL_NAME(kl_loss_label_rows, KL_TYPE, KL_VARIANT)(
    const char *pred, Py_ssize_t pred_stride, const char *labels, Py_ssize_t labels_stride,
    int label_code, Py_ssize_t positions, Py_ssize_t rows, Py_ssize_t n, double scale_arg,
    char *grad, Py_ssize_t grad_stride, double *res)
{
    const int64_t classes = (int64_t)(n / positions);
    const KL_T y = (KL_T)(1.0 / (double)positions), scale = (KL_T)scale_arg;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const KL_T *restrict br = (const KL_T *)(pred + r * pred_stride);
        const char *lr = labels + r * labels_stride;
        KL_T *restrict g = (KL_T *)(grad + r * grad_stride);
        KL_T peak = -KL_MAX;
        int bad = 0;
#pragma omp simd reduction(max : peak) reduction(| : bad)
        for (Py_ssize_t i = 0; i < n; i++) {
            peak = br[i] > peak ? br[i] : peak;
            bad |= !((br[i] <= KL_MAX) & (br[i] >= -KL_MAX));
        }
        for (Py_ssize_t j = 0; j < positions; j++) {
            const int64_t label = kl_label_at(lr, label_code, j);
            bad |= (label < 0) | (label >= classes);
        }
        if (bad) {
            res[r] = (double)NAN;
            continue;
        }
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            KL_T lo;
            const KL_T hi = KL_TYPED(kl_diff)(br[i], peak, &lo);
            g[i] = KL_TYPED(kl_exp_nonpositive)(hi, lo);
        }
        /* the labels' exponentials summed and marked (negated), the others summed apart */
        double labelled = 0.0, others = 0.0;
        for (Py_ssize_t j = 0; j < positions; j++) {
            const Py_ssize_t at = (Py_ssize_t)kl_label_at(lr, label_code, j) * positions + j;
            labelled += (double)g[at];
            g[at] = -g[at];
        }
#pragma omp simd reduction(+ : others)
        for (Py_ssize_t i = 0; i < n; i++) {
            others += g[i] > (KL_T)0 ? (double)g[i] : 0.0;
        }
        const KL_T scale_s = (KL_T)(1.0 / (labelled + others));
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            g[i] = (g[i] < (KL_T)0 ? -g[i] : g[i]) * scale_s; /* s */
        }
        for (Py_ssize_t j = 0; j < positions; j++) {
            g[(Py_ssize_t)kl_label_at(lr, label_code, j) * positions + j] -= y; /* s - y */
        }
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            g[i] = -g[i] * scale;
        }
        res[r] = KL_NAME(kl_label_error, KL_TYPE, KL_VARIANT)(br, (double)peak, lr, label_code,
                                                          positions, others);
    }
}
