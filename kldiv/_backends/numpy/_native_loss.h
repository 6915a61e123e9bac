/* The loss kernel of _native.c for one instruction-set variant: included by
 * _native_variant.h with KL_ATTR and KL_NAME(name, f32, KL_VARIANT) as for _native_logits.h.
 *
 * PuzzleLib's KLDivergence on float32 rows of n: s = softmax(pred[r]), y = target[r] (a
 * distribution) or softmax(target[r]) (norm_target), writes res[r] = sum(y*log(y/s)) (float64)
 * and grad[r] = (y - s)*scale, in one call. NaN in res[r] for a row to redo (its grad row is
 * then garbage): a logit that is not finite, a target entry negative, NaN, infinite or
 * subnormal. scratch holds 3*min(n, chunk) floats: a row longer than a chunk is taken a chunk
 * at a time, its exponentials made again in the last pass, as in _native_logits.h. With
 * tolerance >= 0, returns whether a row not to redo has a target distribution off 1 by more
 * than it (for norm_target, 0).
 *
 * norm_target: the logits kernel's three passes (_native_logits.h) with a = target, b = pred,
 * and the grad written in the last. A distribution y: the maxima and y's checks; the shifted
 * exponentials of pred and their sum; then log s = (pred - max) - log(sum), y's log in float64
 * (a float32 log's absolute rounding would be all of d = log(y/s) for near-identical rows),
 * the terms t = y*log(y/s) - y + s >= 0 (kl_logit_term_f32; t = s where y == 0) and the grad.
 * sum(y*log(y/s)) = sum(t) + sum(y) - sum(s), and sum(s) = 1: the row's error is
 * sum(t) + (sum(y) - 1), the target's mass off 1 entering as it is, as the generic code's. */

/* The distribution target's middle pass on m elements: exp_s = exp(pred - max), and
 * pred - max as hi (in delta) and its rounding lo (in lo); adds to the sums of exp_s and y. */
KL_ATTR static KL_INLINE void KL_NAME(kl_loss_exps, f32, KL_VARIANT)(
    const float *restrict br, float peak_b, const float *restrict yr, Py_ssize_t m,
    float *restrict exp_s, float *restrict delta, float *restrict lo_out, double *sum_s_out,
    double *sum_y_out)
{
    double sum_s = 0.0, sum_y = 0.0;
#pragma omp simd reduction(+ : sum_s, sum_y)
    for (Py_ssize_t i = 0; i < m; i++) {
        float lo;
        const float hi = kl_diff_f32(br[i], peak_b, &lo);
        exp_s[i] = kl_exp_nonpositive_f32(hi, lo);
        delta[i] = hi;
        lo_out[i] = lo;
        sum_s += (double)exp_s[i];
        sum_y += (double)yr[i];
    }
    *sum_s_out += sum_s;
    *sum_y_out += sum_y;
}

KL_ATTR static int KL_NAME(kl_loss_rows, f32, KL_VARIANT)(
    const char *pred, Py_ssize_t pred_stride, const char *target, Py_ssize_t target_stride,
    Py_ssize_t rows, Py_ssize_t n, Py_ssize_t chunk, int norm_target, float scale, char *grad,
    Py_ssize_t grad_stride, float *scratch, double *res, double tolerance)
{
    int off = 0;
    chunk = n < chunk ? n : chunk;
    float *restrict exp_s = scratch, *restrict exp_y = scratch + chunk;
    float *restrict delta = scratch + 2 * chunk;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *restrict br = (const float *)(pred + r * pred_stride);
        const float *restrict yr = (const float *)(target + r * target_stride);
        float *restrict g = (float *)(grad + r * grad_stride);
        float peak_b = -FLT_MAX, peak_y = -FLT_MAX;
        int bad = 0;
        if (norm_target) {
#pragma omp simd reduction(max : peak_b, peak_y) reduction(| : bad)
            for (Py_ssize_t i = 0; i < n; i++) {
                peak_b = br[i] > peak_b ? br[i] : peak_b;
                peak_y = yr[i] > peak_y ? yr[i] : peak_y;
                bad |= !(fabsf(br[i]) <= FLT_MAX) | !(fabsf(yr[i]) <= FLT_MAX);
            }
        }
        else {
#pragma omp simd reduction(max : peak_b) reduction(| : bad)
            for (Py_ssize_t i = 0; i < n; i++) {
                peak_b = br[i] > peak_b ? br[i] : peak_b;
                bad |= !(fabsf(br[i]) <= FLT_MAX) | !(yr[i] <= FLT_MAX) |
                       !((yr[i] >= FLT_MIN) | (yr[i] == 0.0f));
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
            const double sum_s = KL_NAME(kl_logit_sums, f32, KL_VARIANT)(
                yr, peak_y, br, peak_b, n, chunk, exp_y, exp_s, delta, &sum_diff);
            const double shift = log1p(sum_diff / sum_s);
            const float shift_hi = (float)shift, shift_lo = (float)(shift - (double)shift_hi);
            const float scale_y = (float)(1.0 / (sum_s + sum_diff));
            const float scale_s = (float)(1.0 / sum_s);
            for (Py_ssize_t start = 0; start < n; start += chunk) {
                const Py_ssize_t m = n - start < chunk ? n - start : chunk;
                if (chunk < n) { /* the exponentials are another chunk's: made again */
                    double unused;
                    KL_NAME(kl_logit_exps, f32, KL_VARIANT)(yr + start, peak_y, br + start,
                                                            peak_b, m, exp_y, exp_s, delta,
                                                            &unused);
                }
                float *restrict gc = g + start;
                double part = 0.0;
#pragma omp simd reduction(+ : part)
                for (Py_ssize_t i = 0; i < m; i++) {
                    const float d = (delta[i] - shift_hi) - shift_lo;
                    const float y = exp_y[i] * scale_y, s = exp_s[i] * scale_s;
                    part += (double)kl_logit_term_f32(y, s, d);
                    gc[i] = (y - s) * scale;
                }
                total += part;
            }
        }
        else {
            /* exp_y holds the rounding of pred - max, delta pred - max */
            double sum_s = 0.0, sum_y = 0.0;
            for (Py_ssize_t start = 0; start < n; start += chunk) {
                const Py_ssize_t m = n - start < chunk ? n - start : chunk;
                KL_NAME(kl_loss_exps, f32, KL_VARIANT)(br + start, peak_b, yr + start, m, exp_s,
                                                       delta, exp_y, &sum_s, &sum_y);
            }
            const double log_sum = log(sum_s);
            const float scale_s = (float)(1.0 / sum_s);
            for (Py_ssize_t start = 0; start < n; start += chunk) {
                const Py_ssize_t m = n - start < chunk ? n - start : chunk;
                const float *restrict yc = yr + start;
                if (chunk < n) {
                    double unused_s = 0.0, unused_y = 0.0;
                    KL_NAME(kl_loss_exps, f32, KL_VARIANT)(br + start, peak_b, yc, m, exp_s,
                                                           delta, exp_y, &unused_s, &unused_y);
                }
                float *restrict gc = g + start;
                double part = 0.0;
#pragma omp simd reduction(+ : part)
                for (Py_ssize_t i = 0; i < m; i++) {
                    const float y = yc[i], s = exp_s[i] * scale_s;
                    const int live = y != 0.0f;
                    /* d = log(y) - log(s), log(s) = (pred - max) - log(sum), in float64 */
                    const double log_y = kl_log_f64(live ? (double)y : 1.0);
                    const float d =
                        (float)((log_y - ((double)delta[i] - log_sum)) - (double)exp_y[i]);
                    part += (double)(live ? kl_logit_term_f32(y, s, d) : s);
                    gc[i] = (y - s) * scale;
                }
                total += part;
            }
            total += sum_y - 1.0;
            off |= tolerance >= 0.0 && !(fabs(sum_y - 1.0) <= tolerance);
        }
        res[r] = total;
    }
    return off;
}

/* The loss against integer labels, on float32 rows of n = classes*positions logits laid out
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
KL_ATTR static double KL_NAME(kl_label_error, f64, KL_VARIANT)(const float *br, double peak,
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

KL_ATTR static void KL_NAME(kl_loss_label_rows, f32, KL_VARIANT)(
    const char *pred, Py_ssize_t pred_stride, const char *labels, Py_ssize_t labels_stride,
    int label_code, Py_ssize_t positions, Py_ssize_t rows, Py_ssize_t n, float scale,
    char *grad, Py_ssize_t grad_stride, double *res)
{
    const int64_t classes = (int64_t)(n / positions);
    const float y = (float)(1.0 / (double)positions);
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *restrict br = (const float *)(pred + r * pred_stride);
        const char *lr = labels + r * labels_stride;
        float *restrict g = (float *)(grad + r * grad_stride);
        float peak = -FLT_MAX;
        int bad = 0;
#pragma omp simd reduction(max : peak) reduction(| : bad)
        for (Py_ssize_t i = 0; i < n; i++) {
            peak = br[i] > peak ? br[i] : peak;
            bad |= !(fabsf(br[i]) <= FLT_MAX);
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
            float lo;
            const float hi = kl_diff_f32(br[i], peak, &lo);
            g[i] = kl_exp_nonpositive_f32(hi, lo);
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
            others += g[i] > 0.0f ? (double)g[i] : 0.0;
        }
        const float scale_s = (float)(1.0 / (labelled + others));
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            g[i] = fabsf(g[i]) * scale_s; /* s */
        }
        for (Py_ssize_t j = 0; j < positions; j++) {
            g[(Py_ssize_t)kl_label_at(lr, label_code, j) * positions + j] -= y; /* s - y */
        }
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) {
            g[i] = -g[i] * scale;
        }
        res[r] = KL_NAME(kl_label_error, f64, KL_VARIANT)(br, (double)peak, lr, label_code,
                                                          positions, others);
    }
}
