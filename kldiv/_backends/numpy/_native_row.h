/* The row kernels of _native.c for one instruction-set variant, element type and divergence.
 * _native_divergences.h includes this file once per (variant, type, divergence) with these
 * defined:
 *   KL_FN(name)   the function name for them (kl_rows_kl_f32_x86_64_v4, ...);
 *   KL_ATTR       the variant's target attribute, or nothing;
 *   KL_T          float or double;
 *   KL_TERM       the divergence's element term, >= 0 for distributions (_native_term.h);
 *   KL_DIFFS      1 for KL, whose value is sum(t) + sum(p - q), else 0 (the value is sum(t)),
 *                 and with KL_DIFFS, KL_MEASURE_TERM for kl_measure_rows and KL_REL_ENTR for
 *                 kl_rel_entr_rows;
 *   KL_UNARY      1 for a divergence of p alone (entropy: q is p again), whose sum of q is
 *                 its sum of p, not summed twice.
 *
 * KL_FN(kl_rows) reduces `rows` rows (at most KL_BLOCK_ROWS) of n elements, row r starting
 * r*p_stride bytes after p (and r*q_stride after q), to res->value[r] = the divergence,
 * res->sum_p[r] = sum(p) and res->sum_q[r] = sum(q). An element outside the fast domain (see
 * _native.c) has a NaN term, which makes its row's value NaN, or for an infinite entry makes
 * a sum infinite: no flag is kept apart.
 *
 * Each chunk of CHUNK elements goes through two vector loops: the terms t >= 0 into a small
 * array, then the float64 sums of t, of p, of q and of the differences p - q, lane by lane
 * (for float32 input, p and q but for KL's are summed in float32 within the chunk, kl_sum;
 * the differences p - q are exact in float64 and summed in float64 lanes kept for the whole
 * row, sum(q) then sum(p) - sum(p - q); for float64 they are summed in
 * error-free TwoSum lanes, and the chunk sums add into the row's with Neumaier's
 * compensation), so a row of a million elements keeps its digits. t and
 * p - q are summed apart: their cancellation is what the plain sum of p*log(p/q) loses near
 * p == q.
 * Rows shorter than a quarter chunk go one per vector lane instead (kl_rows_lanes). */

/* The terms of m elements (NaN for one outside the fast domain). */
KL_ATTR static void KL_FN(kl_chunk)(const KL_T *restrict p, const KL_T *restrict q,
                                    Py_ssize_t m, KL_T *restrict terms)
{
#pragma omp simd
    for (Py_ssize_t i = 0; i < m; i++) {
        terms[i] = KL_TERM(p[i], q[i]);
    }
}

#if KL_DIFFS
/* A chunk into a row's accumulators, laid out as kl_sum's, in float64 lanes: the terms, p,
 * q, and the differences diffs (or p - q where diffs is NULL) in error-free TwoSum lanes,
 * the lanes joined with compensation. Each difference is exact near p == q (Sterbenz), but
 * their sum is what near-identical rows cancel in. kl_sum's float64 chunks and
 * kl_measure_rows' chunks of both types. */
KL_ATTR static KL_INLINE void KL_FN(kl_lane_sums)(const KL_T *restrict p, const KL_T *restrict q,
                                                  Py_ssize_t m, const KL_T *restrict terms,
                                                  const KL_T *restrict diffs, double *acc)
{
    double t[KL_LANES] = {0}, sp[KL_LANES] = {0}, sq[KL_LANES] = {0};
    double d[KL_LANES] = {0}, d_err[KL_LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + KL_LANES <= m; i += KL_LANES) {
        KL_PREFETCH(p + i);
        KL_PREFETCH(q + i);
        /* each lane its own sums: vectorised, the additions in the same order */
#pragma omp simd
        for (int l = 0; l < KL_LANES; l++) {
            t[l] += (double)terms[i + l];
            sp[l] += (double)p[i + l];
            sq[l] += (double)q[i + l];
            const KL_T diff = diffs ? diffs[i + l] : p[i + l] - q[i + l];
            kl_two_sum(&d[l], &d_err[l], (double)diff);
        }
    }
    for (; i < m; i++) {
        t[0] += (double)terms[i];
        sp[0] += (double)p[i];
        sq[0] += (double)q[i];
        kl_two_sum(&d[0], &d_err[0], (double)(diffs ? diffs[i] : p[i] - q[i]));
    }
    for (int l = 0; l < KL_LANES; l++) {
        kl_neumaier(&acc[0], &acc[1], t[l]);
        kl_neumaier(&acc[2], &acc[3], d[l]);
        acc[3] += d_err[l];
        acc[4] += sp[l];
        acc[5] += sq[l];
    }
}

#endif

#if KL_EXACT_DIFFS
/* float32 input: a row's accumulators are KL_SUM_LANES float64 lanes each of sum(t),
 * sum(p) and sum(q) (KL: sum(p - q) instead), kept across the row's chunks and joined at its
 * end (kl_total): one vector accumulator per sum would make every chunk's loop wait on the
 * latency of its additions, and joining lanes per chunk costs as much again. Each p - q is
 * exact in float64 (24-bit mantissas in 53) and their sum within a rounding of the sum of
 * their sizes, small for a near-identical row; sum(p) - sum(q) would be within a rounding of
 * sum(p), 1e-16, which was 4e-6 of a row [1, 1e-11] against [1, 1e-12] (KL 2.3e-11). The
 * terms are >= 0, so their plain sum in float64 lanes is within 1e-11 of itself for a row of
 * a million, far below a float32 rounding. */
#define KL_ACC (3 * KL_SUM_LANES)

/* The third sum of a float32 row: p - q for KL (KL_DIFFS), else q. */
#if KL_DIFFS
#define KL_THIRD(x, y) ((double)(x) - (double)(y))
#else
#define KL_THIRD(x, y) ((double)(y))
#endif

/* The sums of p and q, which only the check of the mass sees unless the divergence is KL's
 * (whose value takes sum(p - q)), in float32 lanes within a chunk (16 entries a lane), joined
 * to the float64 lanes at its end: within 15 roundings of 2**-24 of the sum, under a fifth
 * of the least tolerance of rows this long (sum_tolerance, n > CHUNK/4: 40 eps), and cross
 * entropy 0.83-0.98x the time, entropy 0.90-0.94x, JS 0.95-0.98x, W1's rows on one core. */
#define KL_FLOAT_SUMS !KL_DIFFS
#if KL_FLOAT_SUMS
#define KL_CHUNK_SUM_T float
#else
#define KL_CHUNK_SUM_T double
#endif

KL_ATTR static KL_INLINE void KL_FN(kl_sum)(const KL_T *restrict p, const KL_T *restrict q,
                                            Py_ssize_t m, const KL_T *restrict terms, double *acc)
{
    double *restrict t = acc, *restrict sp = acc + KL_SUM_LANES;
#if KL_UNARY
    (void)q; /* q is p again */
#else
    double *restrict sq = acc + 2 * KL_SUM_LANES;
#endif
#if KL_FLOAT_SUMS
    float fp[KL_SUM_LANES] = {0};
#if !KL_UNARY
    float fq[KL_SUM_LANES] = {0};
#endif
#else
    double *restrict fp = sp; /* KL: float64 throughout */
#endif
    /* Counted in whole blocks: under CPython's -fwrapv, GCC cannot count the loop
     * `i + KL_SUM_LANES <= m` and unrolled it with the lanes stored to memory on every step
     * (store-forwarding chains: kl_sum was 18-29% of cross entropy's samples under perf).
     * Counted and inlined (both needed; inlined alone was slower), on one core, bit for bit
     * the same, rows of 1000 to 100000, two runs with the order alternated: entropy
     * 0.87-0.98x the time, cross entropy 0.83-0.96x, Hellinger 0.80-0.87x, KL unchanged. */
    const Py_ssize_t whole = m / KL_SUM_LANES;
    for (Py_ssize_t b = 0; b < whole; b++) {
        const Py_ssize_t i = b * KL_SUM_LANES;
        KL_PREFETCH(p + i);
#if !KL_UNARY
        KL_PREFETCH(q + i);
#endif
#pragma omp simd
        for (int l = 0; l < KL_SUM_LANES; l++) {
            t[l] += (double)terms[i + l];
            fp[l] += (KL_CHUNK_SUM_T)p[i + l];
#if KL_FLOAT_SUMS && !KL_UNARY
            fq[l] += q[i + l];
#elif !KL_UNARY
            sq[l] += KL_THIRD(p[i + l], q[i + l]);
#endif
        }
    }
    for (Py_ssize_t i = whole * KL_SUM_LANES; i < m; i++) {
        t[0] += (double)terms[i];
        fp[0] += (KL_CHUNK_SUM_T)p[i];
#if KL_FLOAT_SUMS && !KL_UNARY
        fq[0] += q[i];
#elif !KL_UNARY
        sq[0] += KL_THIRD(p[i], q[i]);
#endif
    }
#if KL_FLOAT_SUMS
#pragma omp simd
    for (int l = 0; l < KL_SUM_LANES; l++) {
        sp[l] += (double)fp[l];
#if !KL_UNARY
        sq[l] += (double)fq[l];
#endif
    }
#endif
}
#undef KL_FLOAT_SUMS
#undef KL_CHUNK_SUM_T

/* Row r's value, sum(p) and sum(q) from its lanes, into res. */
static KL_INLINE void KL_FN(kl_total)(const double *acc, kl_block *res, Py_ssize_t r)
{
    double t = 0.0, sp = 0.0, sq = 0.0;
    for (int l = 0; l < KL_SUM_LANES; l++) {
        t += acc[l];
        sp += acc[KL_SUM_LANES + l];
        sq += acc[2 * KL_SUM_LANES + l];
    }
#if KL_DIFFS
    res->value[r] = t + sq; /* sq holds sum(p - q) */
    res->sum_q[r] = sp - sq;
#else
    res->value[r] = t;
    res->sum_q[r] = KL_UNARY ? sp : sq;
#endif
    res->sum_p[r] = sp;
}

#else
/* float64 input: a long row's chunk into its accumulators: acc[0] + acc[1] = sum(t),
 * acc[2] + acc[3] = sum(p - q), acc[4] = sum(p), acc[5] = sum(q). */
#define KL_ACC 6

KL_ATTR static void KL_FN(kl_sum)(const KL_T *restrict p, const KL_T *restrict q, Py_ssize_t m,
                                  const KL_T *restrict terms, double *acc)
{
#if KL_DIFFS
    /* the differences p - q in TwoSum lanes */
    KL_FN(kl_lane_sums)(p, q, m, terms, NULL, acc);
#else
    /* terms of one sign: plain lanes, a cache line of each input a step (KL_PREFETCH), the
     * chunks joined with compensation */
    double t[KL_LANES] = {0}, sp[KL_LANES] = {0}, sq[KL_LANES] = {0};
    const Py_ssize_t whole = m / KL_LANES;
    for (Py_ssize_t b = 0; b < whole; b++) {
        const Py_ssize_t i = b * KL_LANES;
        KL_PREFETCH(p + i);
#if !KL_UNARY
        KL_PREFETCH(q + i);
#endif
#pragma omp simd
        for (int l = 0; l < KL_LANES; l++) {
            t[l] += terms[i + l];
            sp[l] += p[i + l];
#if !KL_UNARY
            sq[l] += q[i + l];
#endif
        }
    }
    for (Py_ssize_t i = whole * KL_LANES; i < m; i++) {
        t[0] += terms[i];
        sp[0] += p[i];
#if !KL_UNARY
        sq[0] += q[i];
#endif
    }
    double total = 0.0, mass_p = 0.0, mass_q = 0.0;
    for (int l = 0; l < KL_LANES; l++) {
        total += t[l];
        mass_p += sp[l];
        mass_q += sq[l];
    }
#if KL_UNARY
    (void)q; /* q is p again */
    mass_q = mass_p;
#endif
    kl_neumaier(&acc[0], &acc[1], total);
    acc[4] += mass_p;
    acc[5] += mass_q;
#endif
}

static KL_INLINE void KL_FN(kl_total)(const double *acc, kl_block *res, Py_ssize_t r)
{
    res->value[r] = acc[0] + (acc[2] + (acc[1] + acc[3]));
    res->sum_p[r] = acc[4];
    res->sum_q[r] = acc[5];
}
#endif

/* Short rows, one row per vector lane: KL_ROW_LANES rows at a time, column by column, so
 * that each row's sums stay in its own lane and no row is reduced across lanes. rows is a
 * multiple of KL_ROW_LANES; p_extent (q_extent) is how many bytes past p (q) the highest of
 * the call's rows ends.
 *
 * With KL_SHORT_TRANSPOSE (float32) and KL_SPLIT_SHORT (the divergences whose terms take a
 * logarithm: _native_divergences.h) the block is taken 8 columns at a time: transposed
 * (kl_transpose_f32, one vector load a row; the last group too where its loads, reaching
 * past the rows' end, stay within the extents: into the next row, or a gap between rows)
 * into column-major scratch, whose terms kl_chunk makes in one contiguous pass, then summed
 * column by column (kl_lanes_sum). Measured on one core against reading an entry at a time:
 * 0.85x the time for KL's rows of 10, 0.67-0.87x for rows of 40 and 64. For float64 the
 * same split took 1.10x for rows of 10, so its columns, the cheap terms' and any float32
 * columns left go an entry at a time, term and sums in one loop. Either way each row's sums
 * are the same, in the same order. */
#if KL_DIFFS && !KL_EXACT_DIFFS
#define KL_LANE_DIFFS 1 /* float64 KL: p - q in TwoSum lanes */
#else
#define KL_LANE_DIFFS 0
#endif

#if KL_SHORT_TRANSPOSE && KL_SPLIT_SHORT
/* m columns of a block into the rows' lanes: x[c*KL_ROW_LANES + j] and y[...] the entries
 * of row j at column c, tt[...] their terms; sq gains KL_THIRD (for KL sum(p - q)). */
KL_ATTR static KL_INLINE void KL_FN(kl_lanes_sum)(const KL_T *restrict x, const KL_T *restrict y,
                                                  const KL_T *restrict tt, Py_ssize_t m,
                                                  double *restrict t, double *restrict sp,
                                                  double *restrict sq)
{
#if KL_UNARY
    (void)y;
    (void)sq;
#endif
    for (Py_ssize_t c = 0; c < m; c++) {
        const Py_ssize_t k = c * KL_ROW_LANES;
#pragma omp simd
        for (int j = 0; j < KL_ROW_LANES; j++) {
            t[j] += (double)tt[k + j];
            sp[j] += (double)x[k + j];
#if !KL_UNARY
            sq[j] += KL_THIRD(x[k + j], y[k + j]);
#endif
        }
    }
}
#endif

KL_ATTR static void KL_FN(kl_rows_lanes)(const char *p, Py_ssize_t p_stride, const char *q,
                                         Py_ssize_t q_stride, Py_ssize_t rows, Py_ssize_t n,
                                         Py_ssize_t p_extent, Py_ssize_t q_extent, kl_block *res)
{
    const Py_ssize_t size = (Py_ssize_t)sizeof(KL_T);
#if KL_SHORT_TRANSPOSE && KL_SPLIT_SHORT
    KL_T xs[8 * KL_ROW_LANES], ys[8 * KL_ROW_LANES], tt[8 * KL_ROW_LANES];
#else
    (void)p_extent;
    (void)q_extent;
#endif
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += KL_ROW_LANES) {
        double t[KL_ROW_LANES] = {0}, sp[KL_ROW_LANES] = {0}, sq[KL_ROW_LANES] = {0};
#if KL_LANE_DIFFS
        double d[KL_ROW_LANES] = {0}, d_err[KL_ROW_LANES] = {0};
#endif
        const char *pb = p + r0 * p_stride, *qb = q + r0 * q_stride;
        Py_ssize_t c0 = 0;
        kl_prefetch_rows(pb, p_stride, n * size, KL_ROW_LANES);
#if !KL_UNARY
        kl_prefetch_rows(qb, q_stride, n * size, KL_ROW_LANES);
#endif
#if KL_SHORT_TRANSPOSE && KL_SPLIT_SHORT
        /* where the block's highest row starts, past p (q) */
        const Py_ssize_t p_top = (r0 + (p_stride >= 0 ? KL_ROW_LANES - 1 : 0)) * p_stride;
        const Py_ssize_t q_top = (r0 + (q_stride >= 0 ? KL_ROW_LANES - 1 : 0)) * q_stride;
        for (; c0 < n; c0 += 8) {
            const Py_ssize_t reach = (c0 + 8) * size;
            if (c0 + 8 > n && (p_top + reach > p_extent || q_top + reach > q_extent)) {
                break;
            }
            for (int g = 0; g < KL_ROW_LANES; g += 8) {
                kl_transpose_f32(pb + g * p_stride + c0 * size, p_stride, xs + g, KL_ROW_LANES);
#if !KL_UNARY
                kl_transpose_f32(qb + g * q_stride + c0 * size, q_stride, ys + g, KL_ROW_LANES);
#endif
            }
            const Py_ssize_t m = n - c0 < 8 ? n - c0 : 8;
            const KL_T *y = KL_UNARY ? xs : ys;
            KL_FN(kl_chunk)(xs, y, m * KL_ROW_LANES, tt);
            KL_FN(kl_lanes_sum)(xs, y, tt, m, t, sp, sq);
        }
#endif
        for (; c0 < n; c0++) { /* an entry at a time: a strided load and an insert each */
            const char *pi = pb + c0 * size, *qi = qb + c0 * size;
#pragma omp simd
            for (int j = 0; j < KL_ROW_LANES; j++) {
                const KL_T x = *(const KL_T *)(pi + j * p_stride);
                const KL_T y = *(const KL_T *)(qi + j * q_stride);
                t[j] += (double)KL_TERM(x, y);
                sp[j] += (double)x;
#if KL_EXACT_DIFFS && !KL_UNARY
                sq[j] += KL_THIRD(x, y);
#elif !KL_UNARY
                sq[j] += (double)y;
#endif
#if KL_LANE_DIFFS
                kl_two_sum(&d[j], &d_err[j], x - y);
#endif
            }
        }
        /* As vectors for float32 (0.8-0.9x the time of rows of 10), one at a time for
         * float64, whose lanes would then live in memory through the block (1.15x). */
#if KL_SHORT_TRANSPOSE
#pragma omp simd
#endif
        for (int j = 0; j < KL_ROW_LANES; j++) {
#if !KL_DIFFS
            res->value[r0 + j] = t[j];
            res->sum_q[r0 + j] = KL_UNARY ? sp[j] : sq[j];
#elif KL_EXACT_DIFFS
            res->value[r0 + j] = t[j] + sq[j]; /* float32: sq holds sum(p - q), as kl_sum's */
            res->sum_q[r0 + j] = sp[j] - sq[j];
#else
            res->value[r0 + j] = t[j] + (d[j] + d_err[j]);
            res->sum_q[r0 + j] = sq[j];
#endif
            res->sum_p[r0 + j] = sp[j];
        }
    }
}

#undef KL_LANE_DIFFS

KL_ATTR static void KL_FN(kl_rows)(const char *p, Py_ssize_t p_stride, const char *q,
                                   Py_ssize_t q_stride, Py_ssize_t rows, Py_ssize_t n,
                                   kl_block *res)
{
    Py_ssize_t first = 0; /* the first row of the loop below */
    if (n <= CHUNK / 4) {
        /* short rows, but for the last few: one per lane */
        const Py_ssize_t laned = rows - rows % KL_ROW_LANES;
        const Py_ssize_t size = (Py_ssize_t)sizeof(KL_T);
        const Py_ssize_t p_extent = (p_stride >= 0 ? (rows - 1) * p_stride : 0) + n * size;
        const Py_ssize_t q_extent = (q_stride >= 0 ? (rows - 1) * q_stride : 0) + n * size;
        KL_FN(kl_rows_lanes)(p, p_stride, q, q_stride, laned, n, p_extent, q_extent, res);
        first = laned;
    }
    KL_T terms[CHUNK];
    for (Py_ssize_t r = first; r < rows; r++) {
        const KL_T *pr = (const KL_T *)(p + r * p_stride);
        const KL_T *qr = (const KL_T *)(q + r * q_stride);
        double acc[KL_ACC] = {0.0};
        for (Py_ssize_t start = 0; start < n; start += CHUNK) {
            const Py_ssize_t m = n - start < CHUNK ? n - start : CHUNK;
            KL_FN(kl_chunk)(pr + start, qr + start, m, terms);
            KL_FN(kl_sum)(pr + start, qr + start, m, terms, acc);
        }
        KL_FN(kl_total)(acc, res, r);
    }
}

#if KL_DIFFS
/* KL_FN(kl_measure_rows): as kl_rows, for unchecked measures of any mass (the caller's
 * validate=False). Each element's KL_MEASURE_TERM goes into sum(t), and the part of its mass
 * difference it leaves, p - q near p == q and 0 elsewhere, into sum(p - q): a large q under a
 * small p adds p*log(p/q) whole to the first sum, and nothing to cancel to the second. The
 * first sum holds terms of both signs; Neumaier's compensation joins its chunks. Short rows
 * take the chunked path too: this is the rare path, not the one to fit into vector lanes. */

/* The terms and differences of m elements (NaN for one outside the fast domain). */
KL_ATTR static void KL_FN(kl_measure_chunk)(const KL_T *restrict p, const KL_T *restrict q,
                                            Py_ssize_t m, KL_T *restrict terms,
                                            KL_T *restrict diffs)
{
#pragma omp simd
    for (Py_ssize_t i = 0; i < m; i++) {
        terms[i] = KL_MEASURE_TERM(p[i], q[i], &diffs[i]);
    }
}

KL_ATTR static void KL_FN(kl_measure_rows)(const char *p, Py_ssize_t p_stride, const char *q,
                                           Py_ssize_t q_stride, Py_ssize_t rows, Py_ssize_t n,
                                           kl_block *res)
{
    KL_T terms[CHUNK], diffs[CHUNK];
    for (Py_ssize_t r = 0; r < rows; r++) {
        const KL_T *pr = (const KL_T *)(p + r * p_stride);
        const KL_T *qr = (const KL_T *)(q + r * q_stride);
        double acc[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (Py_ssize_t start = 0; start < n; start += CHUNK) {
            const Py_ssize_t m = n - start < CHUNK ? n - start : CHUNK;
            KL_FN(kl_measure_chunk)(pr + start, qr + start, m, terms, diffs);
            KL_FN(kl_lane_sums)(pr + start, qr + start, m, terms, diffs, acc);
        }
        res->value[r] = acc[0] + (acc[2] + (acc[1] + acc[3]));
        res->sum_p[r] = acc[4];
        res->sum_q[r] = acc[5];
    }
}

/* KL_FN(kl_rel_entr_rows): out[r][i] = p*log(p/q) for `rows` rows of n elements, laid out as
 * kl_rows's inputs, into rows of out (out_stride bytes apart, each contiguous), by
 * KL_REL_ENTR; returns how many came out NaN (elements to redo, or bad input). */
KL_ATTR static Py_ssize_t KL_FN(kl_rel_entr_rows)(const char *p, Py_ssize_t p_stride,
                                                  const char *q, Py_ssize_t q_stride,
                                                  Py_ssize_t rows, Py_ssize_t n, char *out,
                                                  Py_ssize_t out_stride)
{
    Py_ssize_t lost = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const KL_T *restrict pr = (const KL_T *)(p + r * p_stride);
        const KL_T *restrict qr = (const KL_T *)(q + r * q_stride);
        KL_T *restrict o = (KL_T *)(out + r * out_stride);
#pragma omp simd reduction(+ : lost)
        for (Py_ssize_t i = 0; i < n; i++) {
            const KL_T t = KL_REL_ENTR(pr[i], qr[i]);
            o[i] = t;
            lost += t != t;
        }
    }
    return lost;
}
#endif

#undef KL_ACC
#undef KL_THIRD
