/* The row kernels of _native.c for one instruction-set variant and one element type.
 * _native.c includes this file once per (variant, type) with these defined:
 *   KL_FN(name)   the function name for this variant and type (kl_rows_f32_x86_64_v4, ...);
 *   KL_ATTR       the variant's target attribute, or nothing;
 *   KL_T          float or double, and KL_DOMAIN, KL_TERM its element functions.
 *
 * KL_FN(kl_rows) reduces `rows` rows of n elements, row r starting r*p_stride bytes after p
 * (and r*q_stride after q), to res[3r] = KL(p || q), res[3r + 1] = sum(p) and res[3r + 2] =
 * sum(q). An element outside the fast domain (see _native.c) has a NaN term, which makes its
 * row's KL NaN: no flag is kept apart.
 *
 * Each chunk of CHUNK elements goes through two vector loops: the terms t >= 0 into a small
 * array, then the float64 sums of t, of the differences d = p - q (exact for float32 input),
 * of p and of q, lane by lane (an OpenMP simd reduction, which the compiler vectorises). Chunk sums add into the row's with
 * Neumaier's compensation, so a row of a million elements keeps its digits. t and d are summed
 * apart: their cancellation is what the plain sum of p*log(p/q) loses near p == q.
 * Rows shorter than a quarter chunk go through the loops many rows at a time. */

/* The terms of m elements (NaN for one outside the fast domain). */
KL_ATTR static void KL_FN(kl_chunk)(const KL_T *restrict p, const KL_T *restrict q,
                                    Py_ssize_t m, KL_T *restrict terms)
{
#pragma omp simd
    for (Py_ssize_t i = 0; i < m; i++) {
        terms[i] = KL_TERM(p[i], q[i]);
    }
}

/* A long row's chunk into its accumulators: acc[0] + acc[1] = sum(t), acc[2] + acc[3] =
 * sum(p - q), acc[4] = sum(p), acc[5] = sum(q). */
KL_ATTR static void KL_FN(kl_sum)(const KL_T *restrict p, const KL_T *restrict q, Py_ssize_t m,
                                  const KL_T *restrict terms, double *acc)
{
#if KL_EXACT_DIFFS
    /* float32 input: p - q, sum(p) and sum(q) are exact in float64 but for rows spanning
     * more than 2**21 in magnitude, so sum(p - q) = sum(p) - sum(q) */
    double t = 0.0, sp = 0.0, sq = 0.0;
#pragma omp simd reduction(+ : t, sp, sq)
    for (Py_ssize_t i = 0; i < m; i++) {
        t += (double)terms[i];
        sp += (double)p[i];
        sq += (double)q[i];
    }
    kl_neumaier(&acc[0], &acc[1], t);
    kl_neumaier(&acc[2], &acc[3], sp - sq);
    acc[4] += sp;
    acc[5] += sq;
#else
    /* float64 input: each p - q is exact near p == q, but their sum is what near-identical
     * rows cancel in, so it is summed without error (TwoSum in each lane); so are the lanes */
    double t[KL_LANES] = {0}, sp[KL_LANES] = {0}, sq[KL_LANES] = {0};
    double d[KL_LANES] = {0}, d_err[KL_LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + KL_LANES <= m; i += KL_LANES) {
        for (int l = 0; l < KL_LANES; l++) {
            t[l] += terms[i + l];
            sp[l] += p[i + l];
            sq[l] += q[i + l];
            kl_two_sum(&d[l], &d_err[l], p[i + l] - q[i + l]);
        }
    }
    for (; i < m; i++) {
        t[0] += terms[i];
        sp[0] += p[i];
        sq[0] += q[i];
        kl_two_sum(&d[0], &d_err[0], p[i] - q[i]);
    }
    for (int l = 0; l < KL_LANES; l++) {
        kl_neumaier(&acc[0], &acc[1], t[l]);
        kl_neumaier(&acc[2], &acc[3], d[l]);
        acc[3] += d_err[l];
        acc[4] += sp[l];
        acc[5] += sq[l];
    }
#endif
}

KL_ATTR static void KL_FN(kl_rows)(const char *p, Py_ssize_t p_stride, const char *q,
                                   Py_ssize_t q_stride, Py_ssize_t rows, Py_ssize_t n,
                                   double *res)
{
    KL_T terms[CHUNK];
    if (n > 0 && n <= CHUNK / 4) {
        /* short rows: a block of them side by side (copied so unless they already are) */
        KL_T p_buf[CHUNK], q_buf[CHUNK];
        const Py_ssize_t per_block = CHUNK / n, row_bytes = n * (Py_ssize_t)sizeof(KL_T);
        for (Py_ssize_t r0 = 0; r0 < rows; r0 += per_block) {
            const Py_ssize_t k = rows - r0 < per_block ? rows - r0 : per_block;
            const KL_T *pb = (const KL_T *)(p + r0 * p_stride);
            const KL_T *qb = (const KL_T *)(q + r0 * q_stride);
            if (p_stride != row_bytes) {
                kl_gather(p_buf, p + r0 * p_stride, p_stride, k, n, sizeof(KL_T));
                pb = p_buf;
            }
            if (q_stride != row_bytes) {
                kl_gather(q_buf, q + r0 * q_stride, q_stride, k, n, sizeof(KL_T));
                qb = q_buf;
            }
            KL_FN(kl_chunk)(pb, qb, k * n, terms);
            for (Py_ssize_t j = 0; j < k; j++) {
                const Py_ssize_t first = j * n, last = first + n;
                double t = 0.0, d = 0.0, sp = 0.0, sq = 0.0;
                for (Py_ssize_t i = first; i < last; i++) {
                    const double x = (double)pb[i], y = (double)qb[i];
                    t += (double)terms[i];
                    d += x - y;
                    sp += x;
                    sq += y;
                }
                double *out = res + 3 * (r0 + j);
                out[0] = t + d;
                out[1] = sp;
                out[2] = sq;
            }
        }
        return;
    }
    for (Py_ssize_t r = 0; r < rows; r++) {
        const KL_T *pr = (const KL_T *)(p + r * p_stride);
        const KL_T *qr = (const KL_T *)(q + r * q_stride);
        double acc[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (Py_ssize_t start = 0; start < n; start += CHUNK) {
            const Py_ssize_t m = n - start < CHUNK ? n - start : CHUNK;
            KL_FN(kl_chunk)(pr + start, qr + start, m, terms);
            KL_FN(kl_sum)(pr + start, qr + start, m, terms, acc);
        }
        double *out = res + 3 * r;
        out[0] = acc[0] + (acc[2] + (acc[1] + acc[3]));
        out[1] = acc[4];
        out[2] = acc[5];
    }
}
