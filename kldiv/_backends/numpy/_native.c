/* kldiv._backends.numpy._native: compiled row kernels for the NumPy path (kldiv/_backends/numpy/__init__.py).
 *
 * NumPy can fuse none of a KL term's dozen operations, so the pure NumPy path walks each tile
 * of memory some eight times; this module makes one pass per row (three for logits), with the
 * terms in the CPU's vector lanes and the row sums that validation needs on the way. It is
 * built when a C compiler is present (setup.py marks it optional); without it the NumPy path
 * runs alone.
 *
 * The math. For p, q > 0 write p/q = 2**e * mp/mq with mp/mq in [2/3, 3/2], taken from the
 * floats' exponent and mantissa bits, exactly, by integer operations alone (kl_split: the
 * difference of their bits, plus half a unit, gives e, and with it whether q's mantissa is
 * doubled, halved or kept). Then
 * s = (mp - mq)/(mp + mq) has |s| <= 0.2, mp - mq is exact (Sterbenz), and
 * log(p/q) = e*ln2 + 2*atanh(s), with atanh(s) - s = s**3 * (1/3 + s**2/5 + ...) summed to the
 * input's precision. Each term is t = p*log(p/q) - (p - q) >= 0, and KL = sum(t) + sum(p - q):
 *  - e == 0 (always where p and q are within a factor 4/3, all of a near-identical pair): s is
 *    exactly (p - q)/(p + q) and t = (p + q)*(s**2 + (1 + s)*(atanh(s) - s)), with no
 *    cancellation, so near-identical distributions keep every digit;
 *  - otherwise t = p*L - (p - q), which loses at most a few bits there.
 * A zero p gives t = q (0*log(0) = 0). Any other element outside the fast domain (q zero,
 * subnormal, negative or NaN; p the same but for zero) makes the row's KL NaN, and an
 * infinite one its sum of p or q; kl_rows writes such rows, and rows whose arithmetic
 * overflowed, as NaN, and the caller recomputes them with NumPy, which knows every
 * convention and check.
 *
 * float32 input: terms in float32 arithmetic (at most a few ulps each, none negative), sums
 * in float64. float64 input: everything in float64.
 *
 * The same row kernels sum other non-negative terms (kl_rows(..., op=)): entropy's -p*log(p),
 * cross entropy's -p*log(q) (log by the same split, kl_log), Jensen-Shannon's, which near
 * p == q is a series in u = (p - q)/(p + q) and elsewhere (t(p, m) + t(q, m))/2, and the
 * squared Hellinger distance's and total variation's. Each term is written once for both
 * element types, in _native_term.h.
 *
 * Unchecked measures of any mass (kl_rows(..., measures=True), the caller's validate=False):
 * sum(p - q) is no rounding then, and a large q under a small p would make t = q - p + ...,
 * which the mass difference cancels. There an element with e != 0 adds p*log(p/q) whole to
 * the first sum and nothing to the second (kl_measure_term_*, kl_measure_rows); the near ones
 * split as above. Each term is then exact to a few ulps, and the KL to a rounding of the sum
 * of their magnitudes.
 *
 * kl_logit_rows, for float32 or float64 logits (_native_logits.h), takes each row's maxima,
 * then its exponentials with a vectorised exp (kl_exp_nonpositive), then terms
 * q*phi(p/q) >= 0 from the log-ratio d (kl_logit_term), which cancel nothing near p == q. d is the
 * difference of the shifted logits, exact, less the log of the normalisers' ratio, which is
 * taken from the sum of the exponentials' differences (kl_exp_diff) rather than from two
 * rounded sums: an error e in it would shift every d by e and make the KL (1 + e)*KL + e**2,
 * a floor of 1e-14 for near-identical float32 rows. Probabilities under 2**-126 (float32) or
 * 2**-1022 (float64) of a row's largest are flushed to 0 (subnormal arithmetic would be
 * slow): an absolute error of at most that times |log(p/q)| for each (under 5e-36 for float32
 * logits within 200 of each other). A row longer than a chunk (256 KiB of each input) is
 * taken a chunk at a time, its exponentials made twice, so that the scratch stays three
 * chunks whatever the row.
 *
 * On x86-64 with GCC 12 or later, each kernel is compiled three times, for x86-64-v4
 * (AVX-512), x86-64-v3 (AVX2, FMA) and the build's baseline, and the best the CPU runs is
 * taken when the module loads. kl_rows releases the GIL, so threads run it on every core. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef KLDIV_SOURCE_SHA256
#define KLDIV_SOURCE_SHA256 "unknown"
#endif

#define CHUNK 256
/* float64 lanes the compiler maps onto vector registers in the float64 sums */
#define KL_LANES 8
/* float64 lanes of a float32 row's sums (_native_row.h's kl_sum): two AVX-512 vectors */
#define KL_SUM_LANES 16
/* Rows per call of a row kernel (kl_rows_finish) */
#define KL_BLOCK_ROWS 256

/* What a row kernel leaves for a block of rows: each row's value, sum(p) and sum(q), one
 * array apiece, so that the finish (_native_variant.h's kl_block_finish) reads them as
 * vectors. */
typedef struct {
    double value[KL_BLOCK_ROWS], sum_p[KL_BLOCK_ROWS], sum_q[KL_BLOCK_ROWS];
} kl_block;

#if defined(__GNUC__) || defined(__clang__)
#define KL_INLINE inline __attribute__((always_inline))
#else
#define KL_INLINE inline
#endif

/* KL_PREFETCH(x): ask for the cache line KL_AHEAD bytes past x, once a line, from the sum
 * loops of _native_row.h, which read each line of p and q a second time (the terms' loop
 * read it first), and before each block of short rows (kl_rows_lanes): rows that stream from
 * memory keep their next lines in flight while the
 * terms' arithmetic runs, where the hardware's prefetchers left the loop waiting on them. The
 * address is made from an integer: it may lie past the row, where a prefetch does nothing
 * (and cannot fault). On one core of a 2-core Xeon (AVX-512), against the loops without it,
 * in one process, order alternated, bit for bit the same: float64 KL 0.65-0.71x the time on
 * (4096, 1000), 0.59-0.75x on (64, 32000) and (16, 1e6); float32 KL, entropy and cross
 * entropy 0.55-0.73x on (16, 1e6), 0.95x on (4096, 1000); rows held in cache (256, 1000)
 * 0.93-1.02x. A loop of prefetches before each chunk instead cost 1.10-1.15x in cache: one a
 * line, inside the sums' loop, is free there. 2048 bytes ahead measured as 4096. */
#define KL_AHEAD 4096
#if defined(__GNUC__) || defined(__clang__)
#define KL_PREFETCH(x) __builtin_prefetch((const void *)((uintptr_t)(x) + KL_AHEAD))
#else
#define KL_PREFETCH(x) ((void)0)
#endif

/* KL_PREFETCH for `count` rows from `rows`, `stride` bytes apart, a line at a time, where
 * they lie one after another (stride == row_bytes; of strided rows, that would be the gaps
 * between them too): the short rows' block KL_AHEAD bytes on (kl_rows_lanes). */
static KL_INLINE void kl_prefetch_rows(const char *rows, Py_ssize_t stride, Py_ssize_t row_bytes,
                                       Py_ssize_t count)
{
    if (stride == row_bytes) {
        for (Py_ssize_t b = 0; b < count * stride; b += 64) {
            KL_PREFETCH((uintptr_t)rows + (uintptr_t)b);
        }
    }
}

#include "_native_threads.h"

/* ---- short rows as vectors ------------------------------------------------------------- */

/* An 8x8 transpose of float rows, for the float32 short-row kernels (_native_row.h's
 * kl_rows_lanes): a block of rows is read with one vector load a row and turned into
 * columns, one value per row in each, by shuffles, where reading it an entry at a time costs
 * two loads and two inserts per element. GCC 12 and clang have __builtin_shufflevector; a
 * compiler without it reads the entries one at a time. */
#ifndef KL_TRANSPOSE /* -DKL_TRANSPOSE=0 builds the entry-at-a-time path alone */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define KL_TRANSPOSE 1
#endif
#endif
#endif
#ifndef KL_TRANSPOSE
#define KL_TRANSPOSE 0
#endif

#if KL_TRANSPOSE
typedef float kl_f32x8 __attribute__((vector_size(32)));

/* cols[c*ld + j] = the entry at column c of row j, for the 8 rows of 8 floats at
 * base + j*stride bytes: pairs interleaved, then 64-bit pairs, then 128-bit halves. */
static KL_INLINE void kl_transpose_f32(const char *base, Py_ssize_t stride, float *cols,
                                       Py_ssize_t ld)
{
    kl_f32x8 r[8], t[8], u[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        memcpy(&r[j], base + j * stride, sizeof r[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 8; j += 2) {
        t[j] = __builtin_shufflevector(r[j], r[j + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[j + 1] = __builtin_shufflevector(r[j], r[j + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
#pragma GCC unroll 2
    for (int j = 0; j < 8; j += 4) {
        u[j] = __builtin_shufflevector(t[j], t[j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[j + 1] = __builtin_shufflevector(t[j], t[j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[j + 2] = __builtin_shufflevector(t[j + 1], t[j + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[j + 3] = __builtin_shufflevector(t[j + 1], t[j + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        const kl_f32x8 lo = __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        const kl_f32x8 hi = __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        memcpy(cols + c * ld, &lo, sizeof lo);
        memcpy(cols + (c + 4) * ld, &hi, sizeof hi);
    }
}

#endif

/* ---- elements ---------------------------------------------------------------------------- */

/* ln 2 split so that e*LN2_HI is exact for every exponent difference e. */
#define KL_SQRT2_F32 1.41421356f
#define KL_LN2_HI_F32 0.693145752f      /* 0x3f317200 */
#define KL_LN2_LO_F32 1.42860677e-06f   /* 0x35bfbe8e */
#define KL_SQRT2_F64 1.4142135623730951
#define KL_LN2_HI_F64 6.93147180369123816490e-01 /* 0x3fe62e42fee00000 */
#define KL_LN2_LO_F64 1.90821492927058770002e-10 /* 0x3dea39ef35793c76 */

/* The atanh series of _native_term.h: KL_SERIES(C, N, x) is sum over k < N of C(k)*x**k.
 * float32's (N = 4, 5) by Horner's rule; float64's (N = 10, 11) by Estrin's scheme, as pairs
 * C(k) + C(k + 1)*x joined by x**2, x**4 and x**8. Horner's chains N dependent multiply-adds
 * an element, which in float64 left too few elements in flight for the core to overlap
 * (float64 KL's loop: 52 instructions, a chain of about 95 cycles, 40 cycles an iteration);
 * Estrin's chain is 4 deep. The coefficients are positive and x = s*s >= 0: no term cancels,
 * so it is as exact as Horner's. Measured on one core against Horner's, in one process:
 * float64 KL 0.82-0.96x the time on rows of 16 to 100000, float64 entropy and cross entropy
 * 0.83-1.02x. float32's short series gained only noise (0.91-1.05x) and W4's
 * rows of 10 lost 1-2%: they keep Horner's. Where a loop is bound by its count of operations
 * rather than its chain, the extra powers cost: js_term's own series measured 1.03-1.10x and
 * keeps Horner's, as do the logits' Taylor series (exp, expm1, phi: no gain). x must be a
 * variable: its powers are written out and left to the compiler to share. */
#define KL_SERIES_SQ(x) ((x) * (x))
#define KL_SERIES_P2(C, k, x) (C(k) + C((k) + 1) * (x))
#define KL_SERIES_P4(C, k, x)                                                                  \
    (KL_SERIES_P2(C, k, x) + KL_SERIES_P2(C, (k) + 2, x) * KL_SERIES_SQ(x))
#define KL_SERIES_P8(C, x)                                                                     \
    (KL_SERIES_P4(C, 0, x) + KL_SERIES_P4(C, 4, x) * KL_SERIES_SQ(KL_SERIES_SQ(x)))
#define KL_SERIES_X8(x) KL_SERIES_SQ(KL_SERIES_SQ(KL_SERIES_SQ(x)))
#define KL_SERIES_4(C, x) (C(0) + (x) * (C(1) + (x) * (C(2) + (x) * C(3))))
#define KL_SERIES_5(C, x) (C(0) + (x) * (C(1) + (x) * (C(2) + (x) * (C(3) + (x) * C(4)))))
#define KL_SERIES_10(C, x) (KL_SERIES_P8(C, x) + KL_SERIES_P2(C, 8, x) * KL_SERIES_X8(x))
#define KL_SERIES_11(C, x)                                                                     \
    (KL_SERIES_P8(C, x) + (KL_SERIES_P2(C, 8, x) + C(10) * KL_SERIES_SQ(x)) * KL_SERIES_X8(x))
#define KL_SERIES_CAT(n) KL_SERIES_##n
#define KL_SERIES_N(n) KL_SERIES_CAT(n)
#define KL_SERIES(C, N, x) KL_SERIES_N(N)(C, x)

/* 1/k! for k = 0..19, the Taylor coefficients of _native_term.h's exp, expm1 and phi */
static const double kl_inv_factorial[20] = {1.0,
                                            1.0,
                                            1.0 / 2.0,
                                            1.0 / 6.0,
                                            1.0 / 24.0,
                                            1.0 / 120.0,
                                            1.0 / 720.0,
                                            1.0 / 5040.0,
                                            1.0 / 40320.0,
                                            1.0 / 362880.0,
                                            1.0 / 3628800.0,
                                            1.0 / 39916800.0,
                                            1.0 / 479001600.0,
                                            1.0 / 6227020800.0,
                                            1.0 / 87178291200.0,
                                            1.0 / 1307674368000.0,
                                            1.0 / 20922789888000.0,
                                            1.0 / 355687428096000.0,
                                            1.0 / 6402373705728000.0,
                                            1.0 / 121645100408832000.0};

/* The element terms, once per element type (_native_term.h says what each macro is, and
 * undefines them all at its end). */
#define KL_T float
#define KL_BITS_T uint32_t
#define KL_TN(name) name##_f32
#define KL_MANT_BITS 23
#define KL_MIN FLT_MIN
#define KL_POLY_TERMS 4
#define KL_SPLIT_TERMS 5
#define KL_SQRT2 KL_SQRT2_F32
#define KL_LN2_HI KL_LN2_HI_F32
#define KL_LN2_LO KL_LN2_LO_F32
#define KL_SQRT sqrtf
#define KL_FABS fabsf
#define KL_MAX FLT_MAX
#define KL_LOG2E 1.44269504f
#define KL_EXP_MIN -87.3f
#define KL_EXP_SHIFTER 12582912.0f /* 1.5 * 2**23 */
#define KL_EXP_DEGREE 7
#define KL_EXPM1_TERMS 9
#define KL_PHI_TERMS 11
#include "_native_term.h"

#define KL_T double
#define KL_BITS_T uint64_t
#define KL_TN(name) name##_f64
#define KL_MANT_BITS 52
#define KL_MIN DBL_MIN
#define KL_POLY_TERMS 10
#define KL_SPLIT_TERMS 11
#define KL_SQRT2 KL_SQRT2_F64
#define KL_LN2_HI KL_LN2_HI_F64
#define KL_LN2_LO KL_LN2_LO_F64
#define KL_SQRT sqrt
#define KL_FABS fabs
#define KL_MAX DBL_MAX
#define KL_LOG2E 1.4426950408889634
#define KL_EXP_MIN -708.3
#define KL_EXP_SHIFTER 6755399441055744.0 /* 1.5 * 2**52 */
#define KL_EXP_DEGREE 13
#define KL_EXPM1_TERMS 16
#define KL_PHI_TERMS 17
#include "_native_term.h"

/* sum + err += x, with err gaining the exact rounding error of sum + x (Knuth's TwoSum, no
 * branch, so it vectorises). */
static KL_INLINE void kl_two_sum(double *sum, double *err, double x)
{
    const double s = *sum + x;
    const double x_part = s - *sum;
    *err += (*sum - (s - x_part)) + (x - x_part);
    *sum = s;
}

/* sum += x, with the rounding error kept in comp (Neumaier). */
static KL_INLINE void kl_neumaier(double *sum, double *comp, double x)
{
    const double s = *sum + x;
    *comp += fabs(*sum) >= fabs(x) ? (*sum - s) + x : (x - s) + *sum;
    *sum = s;
}

/* Store value into element i of a 1-D float32 ('f') or float64 ('d') array. */
static KL_INLINE void kl_store(void *out, char kind, Py_ssize_t i, double value)
{
    if (kind == 'f') {
        ((float *)out)[i] = (float)value;
    }
    else {
        ((double *)out)[i] = value;
    }
}

/* Label j of a row of integer labels, of the type label_code names: its size in bytes, negative
 * for an unsigned type (kl_label_code). An unsigned label over INT64_MAX reads as -1, out of
 * every range. */
static KL_INLINE int64_t kl_label_at(const char *row, int label_code, Py_ssize_t j)
{
    switch (label_code) {
    case 1:
        return ((const int8_t *)row)[j];
    case -1:
        return ((const uint8_t *)row)[j];
    case 2:
        return ((const int16_t *)row)[j];
    case -2:
        return ((const uint16_t *)row)[j];
    case 4:
        return ((const int32_t *)row)[j];
    case -4:
        return ((const uint32_t *)row)[j];
    case 8:
        return ((const int64_t *)row)[j];
    default: {
        const uint64_t label = ((const uint64_t *)row)[j];
        return label > (uint64_t)INT64_MAX ? -1 : (int64_t)label;
    }
    }
}

/* ---- variants ---------------------------------------------------------------------------- */

typedef void (*kl_rows_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, Py_ssize_t,
                           Py_ssize_t, kl_block *);

typedef int (*kl_block_finish_fn)(kl_block *, Py_ssize_t, void *, char, double);

typedef void (*kl_logit_rows_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t, Py_ssize_t, void *, void *, char);

/* The divergences of the row kernels, in the order of kl_variant.rows and KL_OP_NAMES. */
enum { KL_OP_KL, KL_OP_ENTROPY, KL_OP_CROSS, KL_OP_JS, KL_OP_HELLINGER, KL_OP_TV, KL_N_OPS };
static const char *const KL_OP_NAMES[KL_N_OPS] = {"kl", "entropy", "cross_entropy",
                                                  "js", "hellinger", "total_variation"};

typedef Py_ssize_t (*kl_rel_entr_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t,
                                     Py_ssize_t, Py_ssize_t, char *, Py_ssize_t);

typedef int (*kl_loss_rows_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, Py_ssize_t,
                               Py_ssize_t, Py_ssize_t, int, double, char *, Py_ssize_t, void *,
                               double *, double);

typedef void (*kl_loss_label_rows_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, int,
                                      Py_ssize_t, Py_ssize_t, Py_ssize_t, double, char *,
                                      Py_ssize_t, double *);

typedef struct {
    const char *name;
    kl_rows_fn rows[KL_N_OPS][2]; /* [divergence][0: float32, 1: float64] */
    kl_rows_fn measure[2];
    kl_block_finish_fn finish;
    kl_rel_entr_fn rel_entr[2];
    kl_logit_rows_fn logits[2];
    kl_loss_rows_fn loss[2];
    kl_loss_label_rows_fn loss_labels[2];
    int supported;
} kl_variant;

#define KL_NAME3(name, type, variant) name##_##type##_##variant
#define KL_NAME(name, type, variant) KL_NAME3(name, type, variant)
/* name with the suffix of the element type KL_TYPE (f32 or f64): _native_term.h's functions */
#define KL_TYPED3(name, type) name##_##type
#define KL_TYPED2(name, type) KL_TYPED3(name, type)
#define KL_TYPED(name) KL_TYPED2(name, KL_TYPE)
/* name with the suffix of the variant KL_VARIANT: a function of no element type */
#define KL_VARIANT_FN(name) KL_TYPED2(name, KL_VARIANT)

/* _native_variant.h instantiates the kernels of _native_row.h (both element types) and
 * _native_logits.h for the variant named KL_VARIANT, with target attribute KL_ATTR. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define KL_X86_VARIANTS 1
#define KL_VARIANT x86_64_v4
#define KL_ATTR __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#include "_native_variant.h"
#define KL_VARIANT x86_64_v3
#define KL_ATTR __attribute__((target("arch=x86-64-v3")))
#include "_native_variant.h"
#endif
#define KL_VARIANT baseline
#define KL_ATTR
#include "_native_variant.h"

/* A variant's entry of kl_variants: its name, kernels and whether the CPU runs it. */
#define KL_PAIR(op, v) {KL_NAME(kl_rows, op##_f32, v), KL_NAME(kl_rows, op##_f64, v)}
#define KL_VARIANT_ENTRY(label, v, supported)                                                \
    {label,                                                                                  \
     {KL_PAIR(kl, v), KL_PAIR(entropy, v), KL_PAIR(cross, v), KL_PAIR(js, v),                \
      KL_PAIR(hellinger, v), KL_PAIR(tv, v)},                                                \
     {KL_NAME(kl_measure_rows, kl_f32, v), KL_NAME(kl_measure_rows, kl_f64, v)},             \
     KL_TYPED2(kl_block_finish, v),                                                          \
     {KL_NAME(kl_rel_entr_rows, kl_f32, v), KL_NAME(kl_rel_entr_rows, kl_f64, v)},           \
     {KL_NAME(kl_logit_rows, f32, v), KL_NAME(kl_logit_rows, f64, v)},                       \
     {KL_NAME(kl_loss_rows, f32, v), KL_NAME(kl_loss_rows, f64, v)},                         \
     {KL_NAME(kl_loss_label_rows, f32, v), KL_NAME(kl_loss_label_rows, f64, v)},             \
     supported}

/* Best first; `supported` is filled in when the module loads. */
static kl_variant kl_variants[] = {
#ifdef KL_X86_VARIANTS
    KL_VARIANT_ENTRY("x86-64-v4", x86_64_v4, 0),
    KL_VARIANT_ENTRY("x86-64-v3", x86_64_v3, 0),
#endif
    KL_VARIANT_ENTRY("baseline", baseline, 1),
};

#define KL_N_VARIANTS ((int)(sizeof kl_variants / sizeof kl_variants[0]))

static void kl_detect_variants(void)
{
#ifdef KL_X86_VARIANTS
    __builtin_cpu_init();
    kl_variants[0].supported = __builtin_cpu_supports("x86-64-v4") != 0;
    kl_variants[1].supported = __builtin_cpu_supports("x86-64-v3") != 0;
#endif
}

/* ---- Python --------------------------------------------------------------------------- */

/* The element type of a float buffer, 'f' or 'd', or 0. */
static char kl_float_kind(const Py_buffer *b)
{
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') {
        f++;
    }
    if (f[0] == 'f' && f[1] == '\0' && b->itemsize == 4) {
        return 'f';
    }
    if (f[0] == 'd' && f[1] == '\0' && b->itemsize == 8) {
        return 'd';
    }
    return 0;
}

/* The variant named by name (a str), or the best for None; NULL with an exception set. */
static const kl_variant *kl_find_variant(PyObject *name)
{
    for (int i = 0; i < KL_N_VARIANTS; i++) {
        if (!kl_variants[i].supported) {
            continue;
        }
        if (name == Py_None || (PyUnicode_Check(name) &&
                                PyUnicode_CompareWithASCIIString(name, kl_variants[i].name) == 0)) {
            return &kl_variants[i];
        }
    }
    PyErr_Format(PyExc_ValueError, "variant %R is not one of variants()", name);
    return NULL;
}

/* Buffers of two input arrays (read-only, any strides) and an output (writable, with
 * out_flags: KL_OUT_C for C order, PyBUF_RECORDS for any strides): 0, or -1 with an exception
 * set and nothing held. */
#define KL_OUT_C (PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE)

static int kl_get_buffers(PyObject *x, PyObject *y, PyObject *out, int out_flags,
                          Py_buffer buffers[3])
{
    if (PyObject_GetBuffer(x, &buffers[0], PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(y, &buffers[1], PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&buffers[0]);
        return -1;
    }
    if (PyObject_GetBuffer(out, &buffers[2], out_flags) < 0) {
        PyBuffer_Release(&buffers[0]);
        PyBuffer_Release(&buffers[1]);
        return -1;
    }
    return 0;
}

static void kl_release_buffers(Py_buffer buffers[3])
{
    for (int i = 0; i < 3; i++) {
        PyBuffer_Release(&buffers[i]);
    }
}

/* Two 2-D float buffers of one shape whose rows are contiguous, and their element type. */
static char kl_check_pair(const Py_buffer *x, const Py_buffer *y, const char *names)
{
    const char kind = kl_float_kind(x);
    if (x->ndim != 2 || y->ndim != 2 || x->shape[0] != y->shape[0] ||
        x->shape[1] != y->shape[1]) {
        PyErr_Format(PyExc_ValueError, "%s must be 2-D arrays of the same shape", names);
        return 0;
    }
    if (kind == 0 || kl_float_kind(y) != kind) {
        PyErr_Format(PyExc_TypeError, "%s must both be float32 or both float64", names);
        return 0;
    }
    if (x->shape[1] > 1 && (x->strides[1] != x->itemsize || y->strides[1] != y->itemsize)) {
        PyErr_Format(PyExc_ValueError, "the rows of %s must be contiguous", names);
        return 0;
    }
    return kind;
}
/* the logits kernel's default chunk of a row (_native_logits.h), in bytes of each input */
#define KL_LOGIT_CHUNK_BYTES (256 * 1024)

/* ---- the kernels on threads (_native_threads.h) ----------------------------------------- */

/* The threads= argument of the kernels: *threads, clamped to KL_MAX_THREADS; -1 with an
 * exception below 1. */
static int kl_threads_arg(int *threads)
{
    if (*threads < 1) {
        PyErr_SetString(PyExc_ValueError, "threads must be at least 1");
        return -1;
    }
    *threads = *threads < KL_MAX_THREADS ? *threads : KL_MAX_THREADS;
    return 0;
}

/* The rows [*start, *stop) of piece i of `pieces` over `rows` rows, each piece starting at a
 * multiple of `align` rows (the last ending at the last row). */
static KL_INLINE void kl_piece_rows(Py_ssize_t rows, Py_ssize_t pieces, Py_ssize_t i,
                                    Py_ssize_t align, Py_ssize_t *start, Py_ssize_t *stop)
{
    *start = rows * i / pieces / align * align;
    *stop = i + 1 == pieces ? rows : rows * (i + 1) / pieces / align * align;
}

/* Rows a piece of short rows starts at a multiple of: the lanes kernels (_native_row.h's
 * kl_rows_lanes) take rows KL_ROW_LANES (8 or 16) at a time and the few left by the per-row
 * loop, whose last bits differ; pieces aligned to 16 rows leave those few where one thread
 * leaves them, at the very end, so that every row is the same on any thread count. */
#define KL_LANE_ALIGN 16

/* Pieces per thread of a call on threads: a worker that wakes late leaves its pieces to the
 * others, so that the call takes about a piece longer than on one thread at worst. A call
 * wakes sleeping workers (kl_parallel's `wake`) for KL_WAKE_MIN elements, KL's (0.6 ms on one
 * core, float32), or KL_WAKE_RECENT_MIN right after another call; measured below those, a
 * wake cost more than the second thread saved. */
#define KL_PIECES_PER_THREAD 4
#define KL_PARALLEL_MIN (16 * 1024)
#ifndef KL_WAKE_MIN
#define KL_WAKE_MIN (1024 * 1024)
#endif
#ifndef KL_WAKE_RECENT_MIN
#define KL_WAKE_RECENT_MIN (32 * 1024)
#endif

/* The pieces of a call on rows like x's (2-D) on `threads` threads, whose elements cost
 * `weight` times a KL term's, at least `align` rows a piece: one below KL_PARALLEL_MIN
 * elements, in KL terms, where the hand-over measured no gain (a float32 (8, 1000) KL:
 * 5.4 us on one thread, 5.6 on two). */
static Py_ssize_t kl_pieces(int threads, const Py_buffer *x, Py_ssize_t weight, Py_ssize_t align)
{
    const Py_ssize_t rows = x->shape[0];
    if (rows * x->shape[1] * weight < KL_PARALLEL_MIN) {
        return 1;
    }
    Py_ssize_t pieces = threads > 1 ? (Py_ssize_t)threads * KL_PIECES_PER_THREAD : 1;
    pieces = pieces < rows / align ? pieces : rows / align;
    return pieces > 1 ? pieces : 1;
}

/* kl_parallel's `wake` for a call on rows like x's whose elements cost `weight` times a KL
 * term's: the thresholds above are in KL terms. */
static int kl_wake_level(const Py_buffer *x, Py_ssize_t weight)
{
    const Py_ssize_t size = x->shape[0] * x->shape[1] * weight;
    return size >= KL_WAKE_MIN ? 2 : size >= KL_WAKE_RECENT_MIN ? 1 : 0;
}

/* The logits and loss kernels' cost an element, in KL terms (kl_wake_level): on one core,
 * float32 rows of 1000, about 1.3 ns an element for the logits kernel, 0.45 for KL's. */
#define KL_LOGIT_WEIGHT 3

/* A kl_rows call, cut into pieces of rows for kl_parallel (_native_threads.h). */
typedef struct {
    kl_rows_fn run;
    kl_block_finish_fn finish;
    const Py_buffer *p, *q;
    char *out;
    char out_kind;
    double tolerance;
    Py_ssize_t pieces;
    Py_ssize_t align; /* pieces start at multiples of this many rows */
    KL_ATOMIC(int) off;
} kl_rows_job;

/* Piece i of the job: its rows, a block at a time, each block finished by `finish` as
 * kl_rows's docstring says; a row off 1 by more than the tolerance (< 0: no check) sets off. */
static void kl_rows_piece(void *ctx, Py_ssize_t i, int slot)
{
    (void)slot;
    kl_rows_job *job = ctx;
    const Py_buffer *p = job->p, *q = job->q;
    const Py_ssize_t rows = p->shape[0];
    const Py_ssize_t size = (Py_ssize_t)(job->out_kind == 'f' ? sizeof(float) : sizeof(double));
    Py_ssize_t start, stop;
    kl_piece_rows(rows, job->pieces, i, job->align, &start, &stop);
    kl_block res;
    int off = 0;
    for (Py_ssize_t r0 = start; r0 < stop; r0 += KL_BLOCK_ROWS) {
        const Py_ssize_t k = stop - r0 < KL_BLOCK_ROWS ? stop - r0 : KL_BLOCK_ROWS;
        job->run((const char *)p->buf + r0 * p->strides[0], p->strides[0],
                 (const char *)q->buf + r0 * q->strides[0], q->strides[0], k, p->shape[1],
                 &res);
        off |= job->finish(&res, k, job->out + r0 * size, job->out_kind, job->tolerance);
    }
    if (off) {
        kl_atomic_store(&job->off, 1);
    }
}

/* Run the row kernel on all rows, on `threads` threads; returns whether a row is off 1. */
static int kl_rows_finish(kl_rows_fn run, kl_block_finish_fn finish, const Py_buffer *p,
                          const Py_buffer *q, void *out, char out_kind, double tolerance,
                          int threads)
{
    /* rows of at most a quarter chunk go by lanes (kl_rows_lanes) */
    const Py_ssize_t align = p->shape[1] <= CHUNK / 4 ? KL_LANE_ALIGN : 1;
    const Py_ssize_t pieces = kl_pieces(threads, p, 1, align);
    kl_rows_job job = {run, finish, p, q, out, out_kind, tolerance, pieces, align, 0};
    kl_parallel(threads, pieces, kl_rows_piece, &job, kl_wake_level(p, 1));
    return kl_atomic_load(&job.off);
}

PyDoc_STRVAR(kl_rows_doc,
             "kl_rows(p, q, out, tolerance=None, variant=None, *, measures=False, op='kl',\n"
             "        threads=1)\n"
             "--\n\n"
             "For each row r of the 2-D float32 or float64 arrays p and q (same shape and\n"
             "dtype, each row contiguous, any row stride), write out[r] = KL(p[r] || q[r])\n"
             "into the C-contiguous 1-D float32 or float64 array out, or NaN for a row to\n"
             "redo: one holding an element outside the fast domain (q not a positive normal\n"
             "float; p not one or zero), or whose arithmetic overflowed. op names another\n"
             "divergence of p and q: 'entropy' (of p; pass p as q too), 'cross_entropy',\n"
             "'js', 'hellinger' (the square of the distance) or 'total_variation'.\n"
             "measures=True (op='kl' only) takes rows of any mass (unchecked input):\n"
             "each term far from p == q enters whole, so that sum(t) never cancels against\n"
             "sum(p - q). With a tolerance, values below 0 are written as 0, and the result\n"
             "says whether a row not to redo has sum(p) or sum(q) off 1 by more than it.\n"
             "variant names one of variants(); None takes the first. threads: how many\n"
             "threads share the rows (the caller's and the module's own workers, which\n"
             "spin a moment after a call and then sleep). Releases the GIL.");

static PyObject *kl_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"p",        "q",  "out",     "tolerance", "variant",
                               "measures", "op", "threads", NULL};
    PyObject *p_obj, *q_obj, *out_obj, *tolerance_obj = Py_None, *variant_obj = Py_None;
    int measures = 0, threads = 1;
    const char *op_name = "kl";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OO$psi:kl_rows", keywords, &p_obj,
                                     &q_obj, &out_obj, &tolerance_obj, &variant_obj,
                                     &measures, &op_name, &threads) ||
        kl_threads_arg(&threads) < 0) {
        return NULL;
    }
    int op = 0;
    while (op < KL_N_OPS && strcmp(op_name, KL_OP_NAMES[op]) != 0) {
        op++;
    }
    if (op == KL_N_OPS) {
        PyErr_Format(PyExc_ValueError,
                     "op '%s' is not one of 'kl', 'entropy', 'cross_entropy', 'js', "
                     "'hellinger', 'total_variation'",
                     op_name);
        return NULL;
    }
    if (measures && op != KL_OP_KL) {
        PyErr_SetString(PyExc_ValueError, "measures=True is for op='kl' only");
        return NULL;
    }
    const kl_variant *variant = kl_find_variant(variant_obj);
    if (variant == NULL) {
        return NULL;
    }
    double tolerance = -1.0;
    if (tolerance_obj != Py_None) {
        tolerance = PyFloat_AsDouble(tolerance_obj);
        if (tolerance == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(tolerance >= 0.0)) {
            PyErr_SetString(PyExc_ValueError, "tolerance must be None or a number >= 0");
            return NULL;
        }
    }

    Py_buffer buffers[3];
    if (kl_get_buffers(p_obj, q_obj, out_obj, KL_OUT_C, buffers) < 0) {
        return NULL;
    }
    const Py_buffer *p = &buffers[0], *q = &buffers[1], *out = &buffers[2];
    PyObject *result = NULL;
    const char kind = kl_check_pair(p, q, "p and q");
    const char out_kind = kl_float_kind(out);
    if (kind == 0) {
        /* the exception is set */
    }
    else if (out_kind == 0 || out->ndim != 1 || out->shape[0] != p->shape[0]) {
        PyErr_SetString(PyExc_ValueError,
                        "out must be a 1-D float32 or float64 array of one element per row");
    }
    else {
        const int type = kind == 'f' ? 0 : 1;
        const kl_rows_fn run = measures ? variant->measure[type] : variant->rows[op][type];
        int off;
        Py_BEGIN_ALLOW_THREADS
        off = kl_rows_finish(run, variant->finish, p, q, out->buf, out_kind, tolerance,
                             threads);
        Py_END_ALLOW_THREADS
        result = PyBool_FromLong(off);
    }
    kl_release_buffers(buffers);
    return result;
}

PyDoc_STRVAR(rel_entr_rows_doc,
             "rel_entr_rows(p, q, out, variant=None, threads=1)\n--\n\n"
             "Write out = p*log(p/q) elementwise for the 2-D float32 or float64 arrays p and q\n"
             "(same shape and dtype, each row contiguous, any row stride) into out, of their\n"
             "shape and dtype with contiguous rows: 0 where p == 0 <= q, inf where\n"
             "p > 0 == q, NaN for an element to redo (outside the fast domain: a subnormal,\n"
             "p == q == 0, a negative, NaN or infinite entry). Returns how many are NaN.\n"
             "variant and threads as for kl_rows. Releases the GIL.");

/* A rel_entr_rows call in pieces of rows. */
typedef struct {
    kl_rel_entr_fn run;
    const Py_buffer *p, *q, *out;
    Py_ssize_t pieces;
    KL_ATOMIC(Py_ssize_t) lost;
} kl_rel_entr_job;

static void kl_rel_entr_piece(void *ctx, Py_ssize_t i, int slot)
{
    (void)slot;
    kl_rel_entr_job *job = ctx;
    const Py_buffer *p = job->p, *q = job->q, *out = job->out;
    Py_ssize_t start, stop;
    kl_piece_rows(p->shape[0], job->pieces, i, 1, &start, &stop);
    const Py_ssize_t lost =
        job->run((const char *)p->buf + start * p->strides[0], p->strides[0],
                 (const char *)q->buf + start * q->strides[0], q->strides[0], stop - start,
                 p->shape[1], (char *)out->buf + start * out->strides[0], out->strides[0]);
    if (lost) {
        kl_atomic_add(&job->lost, lost);
    }
}

static PyObject *rel_entr_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"p", "q", "out", "variant", "threads", NULL};
    PyObject *p_obj, *q_obj, *out_obj, *variant_obj = Py_None;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|Oi:rel_entr_rows", keywords, &p_obj,
                                     &q_obj, &out_obj, &variant_obj, &threads) ||
        kl_threads_arg(&threads) < 0) {
        return NULL;
    }
    const kl_variant *variant = kl_find_variant(variant_obj);
    if (variant == NULL) {
        return NULL;
    }
    Py_buffer buffers[3];
    if (kl_get_buffers(p_obj, q_obj, out_obj, PyBUF_RECORDS, buffers) < 0) {
        return NULL;
    }
    const Py_buffer *p = &buffers[0], *q = &buffers[1], *out = &buffers[2];
    PyObject *result = NULL;
    const char kind = kl_check_pair(p, q, "p and q");
    if (kind == 0) {
        /* the exception is set */
    }
    else if (kl_float_kind(out) != kind || out->ndim != 2 || out->shape[0] != p->shape[0] ||
             out->shape[1] != p->shape[1] ||
             (out->shape[1] > 1 && out->strides[1] != out->itemsize)) {
        PyErr_SetString(PyExc_ValueError,
                        "out must be a writable 2-D array of p's shape and dtype, rows contiguous");
    }
    else {
        const Py_ssize_t pieces = kl_pieces(threads, p, 1, 1);
        kl_rel_entr_job job = {variant->rel_entr[kind == 'f' ? 0 : 1], p, q, out, pieces, 0};
        Py_BEGIN_ALLOW_THREADS
        kl_parallel(threads, pieces, kl_rel_entr_piece, &job, kl_wake_level(p, 1));
        Py_END_ALLOW_THREADS
        result = PyLong_FromSsize_t(kl_atomic_load(&job.lost));
    }
    kl_release_buffers(buffers);
    return result;
}

/* The chunk argument of the logits and loss kernels: 0 for None (the default, which
 * kl_scratch makes once the element size is known), else a positive int; -1 with an
 * exception. */
static Py_ssize_t kl_chunk_arg(PyObject *chunk_obj)
{
    if (chunk_obj == Py_None) {
        return 0;
    }
    const Py_ssize_t chunk = PyNumber_AsSsize_t(chunk_obj, PyExc_OverflowError);
    if (chunk == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (chunk < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk must be a positive number of elements");
        return -1;
    }
    return chunk;
}

/* The chunk in elements of rows like x's (*chunk, or for 0 KL_LOGIT_CHUNK_BYTES of them),
 * the call's *pieces (kl_pieces) on *threads threads, cut to the pieces (no more take part),
 * and the kernels' scratch, three chunks of a row (_native_logits.h, _native_loss.h) for
 * each thread, *slot_bytes apart; NULL with an exception. x is 2-D. */
static char *kl_scratch(const Py_buffer *x, Py_ssize_t *chunk, int *threads, Py_ssize_t *pieces,
                        size_t *slot_bytes)
{
    *pieces = kl_pieces(*threads, x, KL_LOGIT_WEIGHT, 1);
    *threads = *pieces < *threads ? (int)*pieces : *threads;
    const int slots = *threads;
    if (*chunk == 0) {
        *chunk = KL_LOGIT_CHUNK_BYTES / x->itemsize;
    }
    const size_t chunk_bytes = (size_t)(x->shape[1] < *chunk ? x->shape[1] : *chunk) *
                               (size_t)x->itemsize;
    *slot_bytes = (3 * chunk_bytes + 64) / 64 * 64; /* each slot's start 16-byte aligned */
    char *scratch = PyMem_RawMalloc(*slot_bytes * (size_t)slots);
    if (scratch == NULL) {
        PyErr_NoMemory();
    }
    return scratch;
}

/* A kl_logit_rows call in pieces of rows, each thread with its own scratch. */
typedef struct {
    kl_logit_rows_fn run;
    const Py_buffer *a, *b;
    char *out;
    char out_kind;
    Py_ssize_t chunk, pieces;
    char *scratch;
    size_t slot_bytes;
} kl_logit_job;

static void kl_logit_piece(void *ctx, Py_ssize_t i, int slot)
{
    const kl_logit_job *job = ctx;
    const Py_buffer *a = job->a, *b = job->b;
    Py_ssize_t start, stop;
    kl_piece_rows(a->shape[0], job->pieces, i, 1, &start, &stop);
    const Py_ssize_t size = (Py_ssize_t)(job->out_kind == 'f' ? sizeof(float) : sizeof(double));
    job->run((const char *)a->buf + start * a->strides[0], a->strides[0],
             (const char *)b->buf + start * b->strides[0], b->strides[0], stop - start,
             a->shape[1], job->chunk, job->scratch + (size_t)slot * job->slot_bytes,
             job->out + start * size, job->out_kind);
}

PyDoc_STRVAR(kl_logit_rows_doc,
             "kl_logit_rows(a, b, out, variant=None, chunk=None, threads=1)\n--\n\n"
             "For each row r of the 2-D float32 or float64 arrays a and b (same shape and\n"
             "dtype, each row contiguous, any row stride), write\n"
             "out[r] = KL(softmax(a[r]) || softmax(b[r])) into the C-contiguous 1-D float32\n"
             "or float64 array out: NaN for a row holding a logit that is not finite. Rows of\n"
             "any length, taken in chunks of `chunk` elements (default: 256 KiB of each\n"
             "input), with scratch of three chunks a thread. variant and threads as for\n"
             "kl_rows. Releases the GIL.");

static PyObject *kl_logit_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"a", "b", "out", "variant", "chunk", "threads", NULL};
    PyObject *a_obj, *b_obj, *out_obj, *variant_obj = Py_None, *chunk_obj = Py_None;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OOi:kl_logit_rows", keywords, &a_obj,
                                     &b_obj, &out_obj, &variant_obj, &chunk_obj, &threads) ||
        kl_threads_arg(&threads) < 0) {
        return NULL;
    }
    Py_ssize_t chunk = kl_chunk_arg(chunk_obj);
    if (chunk < 0) {
        return NULL;
    }
    const kl_variant *variant = kl_find_variant(variant_obj);
    if (variant == NULL) {
        return NULL;
    }
    Py_buffer buffers[3];
    if (kl_get_buffers(a_obj, b_obj, out_obj, KL_OUT_C, buffers) < 0) {
        return NULL;
    }
    const Py_buffer *a = &buffers[0], *b = &buffers[1], *out = &buffers[2];
    PyObject *result = NULL;
    const char kind = kl_check_pair(a, b, "a and b");
    char *scratch = NULL;
    size_t slot_bytes = 0;
    Py_ssize_t pieces = 1;
    if (kind == 0) {
        /* the exception is set */
    }
    else if (kl_float_kind(out) == 0 || out->ndim != 1 || out->shape[0] != a->shape[0]) {
        PyErr_SetString(PyExc_ValueError,
                        "out must be a 1-D float32 or float64 array of one element per row");
    }
    else if ((scratch = kl_scratch(a, &chunk, &threads, &pieces, &slot_bytes)) == NULL) {
        /* the exception is set */
    }
    else {
        kl_logit_job job = {variant->logits[kind == 'f' ? 0 : 1],
                            a,
                            b,
                            out->buf,
                            kl_float_kind(out),
                            chunk,
                            pieces,
                            scratch,
                            slot_bytes};
        Py_BEGIN_ALLOW_THREADS
        kl_parallel(threads, pieces, kl_logit_piece, &job, kl_wake_level(a, KL_LOGIT_WEIGHT));
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyMem_RawFree(scratch);
    kl_release_buffers(buffers);
    return result;
}

/* A loss_rows call in pieces of rows, each thread with its own scratch. */
typedef struct {
    kl_loss_rows_fn run;
    const Py_buffer *p, *y, *g;
    double *res;
    Py_ssize_t chunk, pieces;
    int norm_target;
    double scale, tolerance;
    char *scratch;
    size_t slot_bytes;
    KL_ATOMIC(int) off;
} kl_loss_job;

static void kl_loss_piece(void *ctx, Py_ssize_t i, int slot)
{
    kl_loss_job *job = ctx;
    const Py_buffer *p = job->p, *y = job->y, *g = job->g;
    Py_ssize_t start, stop;
    kl_piece_rows(p->shape[0], job->pieces, i, 1, &start, &stop);
    const int off = job->run((const char *)p->buf + start * p->strides[0], p->strides[0],
                             (const char *)y->buf + start * y->strides[0], y->strides[0],
                             stop - start, p->shape[1], job->chunk, job->norm_target,
                             job->scale, (char *)g->buf + start * g->strides[0], g->strides[0],
                             job->scratch + (size_t)slot * job->slot_bytes, job->res + start,
                             job->tolerance);
    if (off) {
        kl_atomic_store(&job->off, 1);
    }
}

PyDoc_STRVAR(loss_rows_doc,
             "loss_rows(pred, target, grad, errors, scale, norm_target, tolerance=None,\n"
             "          variant=None, chunk=None, threads=1)\n--\n\n"
             "PuzzleLib's KLDivergence on the 2-D arrays pred (logits) and target (same shape,\n"
             "both float32 or both float64, each row contiguous, any row stride): a\n"
             "distribution per row, or with norm_target scores to softmax. Writes\n"
             "errors[r] = sum(y*log(y/s)) into the C-contiguous 1-D float64 array errors and\n"
             "grad[r] = (y - s)*scale into grad (pred's dtype and shape, rows contiguous),\n"
             "s = softmax(pred[r]). NaN in errors for a row to redo (a logit that is not\n"
             "finite; a target entry negative, NaN, infinite or subnormal; in float64 an s\n"
             "that underflows to 0 where the target is not 0), whose grad row is then not\n"
             "written. With a tolerance, returns whether a row not to redo has a target off 1\n"
             "by more than it (a distribution target only), else False. Rows of any length,\n"
             "in chunks of `chunk` elements (default 256 KiB) with scratch of three a thread.\n"
             "variant and threads as for kl_rows. Releases the GIL.");

static PyObject *loss_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"pred",        "target",    "grad",    "errors", "scale",
                               "norm_target", "tolerance", "variant", "chunk",  "threads",
                               NULL};
    PyObject *pred_obj, *target_obj, *grad_obj, *errors_obj, *variant_obj = Py_None;
    PyObject *tolerance_obj = Py_None, *chunk_obj = Py_None;
    double scale;
    int norm_target, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOdp|OOOi:loss_rows", keywords, &pred_obj,
                                     &target_obj, &grad_obj, &errors_obj, &scale, &norm_target,
                                     &tolerance_obj, &variant_obj, &chunk_obj, &threads) ||
        kl_threads_arg(&threads) < 0) {
        return NULL;
    }
    Py_ssize_t chunk = kl_chunk_arg(chunk_obj);
    if (chunk < 0) {
        return NULL;
    }
    double tolerance = -1.0;
    if (tolerance_obj != Py_None) {
        tolerance = PyFloat_AsDouble(tolerance_obj);
        if (tolerance == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(tolerance >= 0.0)) {
            PyErr_SetString(PyExc_ValueError, "tolerance must be None or a number >= 0");
            return NULL;
        }
    }
    const kl_variant *variant = kl_find_variant(variant_obj);
    if (variant == NULL) {
        return NULL;
    }
    Py_buffer buffers[3], grad_buffer;
    if (kl_get_buffers(pred_obj, target_obj, errors_obj, KL_OUT_C, buffers) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(grad_obj, &grad_buffer, PyBUF_RECORDS) < 0) {
        kl_release_buffers(buffers);
        return NULL;
    }
    const Py_buffer *p = &buffers[0], *y = &buffers[1], *res = &buffers[2], *g = &grad_buffer;
    PyObject *result = NULL;
    const char kind = kl_check_pair(p, y, "pred and target");
    char *scratch = NULL;
    size_t slot_bytes = 0;
    Py_ssize_t pieces = 1;
    if (kind == 0) {
        /* the exception is set */
    }
    else if (kl_float_kind(res) != 'd' || res->ndim != 1 || res->shape[0] != p->shape[0]) {
        PyErr_SetString(PyExc_ValueError,
                        "errors must be a 1-D float64 array of one element per row");
    }
    else if (kl_float_kind(g) != kind || g->ndim != 2 || g->shape[0] != p->shape[0] ||
             g->shape[1] != p->shape[1] || (g->shape[1] > 1 && g->strides[1] != g->itemsize)) {
        PyErr_SetString(PyExc_ValueError, "grad must be a writable array of pred's dtype and "
                                          "shape, rows contiguous");
    }
    else if ((scratch = kl_scratch(p, &chunk, &threads, &pieces, &slot_bytes)) == NULL) {
        /* the exception is set */
    }
    else {
        kl_loss_job job = {variant->loss[kind == 'f' ? 0 : 1],
                           p,
                           y,
                           g,
                           res->buf,
                           chunk,
                           pieces,
                           norm_target,
                           scale,
                           tolerance,
                           scratch,
                           slot_bytes,
                           0};
        Py_BEGIN_ALLOW_THREADS
        kl_parallel(threads, pieces, kl_loss_piece, &job, kl_wake_level(p, KL_LOGIT_WEIGHT));
        Py_END_ALLOW_THREADS
        result = PyBool_FromLong(kl_atomic_load(&job.off));
    }
    PyMem_RawFree(scratch);
    PyBuffer_Release(&grad_buffer);
    kl_release_buffers(buffers);
    return result;
}

PyDoc_STRVAR(loss_label_rows_doc,
             "loss_label_rows(pred, labels, grad, errors, scale, variant=None, threads=1)\n"
             "--\n\n"
             "PuzzleLib's KLDivergence on the 2-D float32 or float64 array pred (logits; each\n"
             "row contiguous, any row stride) against the 2-D array labels of (rows, P)\n"
             "integers of any size (each row contiguous): a row of pred holds C*P logits,\n"
             "class-major, and its target is 1/P at label[p]*P + p for each position p. Writes\n"
             "errors[r] = sum(y*log(y/s)) into the C-contiguous 1-D float64 array errors and\n"
             "grad[r] = (y - s)*scale into grad (pred's dtype and shape, rows contiguous),\n"
             "s = softmax(pred[r]). NaN in errors for a row holding a logit that is not finite\n"
             "or a label outside [0, C), whose grad row is then garbage. variant and threads\n"
             "as for kl_rows. Releases the GIL.");

/* A loss_label_rows call in pieces of rows. */
typedef struct {
    kl_loss_label_rows_fn run;
    const Py_buffer *p, *l, *g;
    int label_code;
    double scale;
    double *res;
    Py_ssize_t pieces;
} kl_label_job;

static void kl_label_piece(void *ctx, Py_ssize_t i, int slot)
{
    (void)slot;
    const kl_label_job *job = ctx;
    const Py_buffer *p = job->p, *l = job->l, *g = job->g;
    Py_ssize_t start, stop;
    kl_piece_rows(p->shape[0], job->pieces, i, 1, &start, &stop);
    job->run((const char *)p->buf + start * p->strides[0], p->strides[0],
             (const char *)l->buf + start * l->strides[0], l->strides[0], job->label_code,
             l->shape[1], stop - start, p->shape[1], job->scale,
             (char *)g->buf + start * g->strides[0], g->strides[0], job->res + start);
}

/* The label_code of kl_label_at for an integer buffer: its size, negative when unsigned; 0
 * for anything else. */
static int kl_label_code(const Py_buffer *b)
{
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') {
        f++;
    }
    if (f[0] == '\0' || f[1] != '\0' || strchr("bBhHiIlLqQ", f[0]) == NULL) {
        return 0;
    }
    const int size = (int)b->itemsize;
    if (size != 1 && size != 2 && size != 4 && size != 8) {
        return 0;
    }
    return strchr("BHILQ", f[0]) != NULL ? -size : size;
}

static PyObject *loss_label_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"pred",  "labels",  "grad",    "errors",
                               "scale", "variant", "threads", NULL};
    PyObject *pred_obj, *labels_obj, *grad_obj, *errors_obj, *variant_obj = Py_None;
    double scale;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOd|Oi:loss_label_rows", keywords,
                                     &pred_obj, &labels_obj, &grad_obj, &errors_obj, &scale,
                                     &variant_obj, &threads) ||
        kl_threads_arg(&threads) < 0) {
        return NULL;
    }
    const kl_variant *variant = kl_find_variant(variant_obj);
    if (variant == NULL) {
        return NULL;
    }
    Py_buffer p, l, g, res;
    if (PyObject_GetBuffer(pred_obj, &p, PyBUF_RECORDS_RO) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(labels_obj, &l, PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&p);
        return NULL;
    }
    if (PyObject_GetBuffer(grad_obj, &g, PyBUF_RECORDS) < 0) {
        PyBuffer_Release(&l);
        PyBuffer_Release(&p);
        return NULL;
    }
    if (PyObject_GetBuffer(errors_obj, &res, KL_OUT_C) < 0) {
        PyBuffer_Release(&g);
        PyBuffer_Release(&l);
        PyBuffer_Release(&p);
        return NULL;
    }
    PyObject *result = NULL;
    const int label_code = kl_label_code(&l);
    const char kind = kl_float_kind(&p);
    if (kind == 0 || p.ndim != 2 || (p.shape[1] > 1 && p.strides[1] != p.itemsize)) {
        PyErr_SetString(PyExc_TypeError,
                        "pred must be a 2-D float32 or float64 array, rows contiguous");
    }
    else if (label_code == 0) {
        PyErr_SetString(PyExc_TypeError, "labels must be an array of integers");
    }
    else if (l.ndim != 2 || l.shape[0] != p.shape[0] || l.shape[1] < 1 ||
             p.shape[1] % l.shape[1] != 0 || (l.shape[1] > 1 && l.strides[1] != l.itemsize)) {
        PyErr_SetString(PyExc_ValueError, "labels must be a 2-D array of (rows, P), rows "
                                          "contiguous, P dividing pred's row");
    }
    else if (kl_float_kind(&res) != 'd' || res.ndim != 1 || res.shape[0] != p.shape[0]) {
        PyErr_SetString(PyExc_ValueError,
                        "errors must be a 1-D float64 array of one element per row");
    }
    else if (kl_float_kind(&g) != kind || g.ndim != 2 || g.shape[0] != p.shape[0] ||
             g.shape[1] != p.shape[1] || (g.shape[1] > 1 && g.strides[1] != g.itemsize)) {
        PyErr_SetString(PyExc_ValueError, "grad must be a writable array of pred's dtype and "
                                          "shape, rows contiguous");
    }
    else {
        const Py_ssize_t pieces = kl_pieces(threads, &p, KL_LOGIT_WEIGHT, 1);
        kl_label_job job = {variant->loss_labels[kind == 'f' ? 0 : 1],
                            &p,
                            &l,
                            &g,
                            label_code,
                            scale,
                            res.buf,
                            pieces};
        Py_BEGIN_ALLOW_THREADS
        kl_parallel(threads, pieces, kl_label_piece, &job, kl_wake_level(&p, KL_LOGIT_WEIGHT));
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&res);
    PyBuffer_Release(&g);
    PyBuffer_Release(&l);
    PyBuffer_Release(&p);
    return result;
}

PyDoc_STRVAR(variants_doc,
             "variants()\n--\n\n"
             "The names of the compiled variants this CPU runs, best first.");

static PyObject *variants(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    PyObject *names = PyList_New(0);
    if (names == NULL) {
        return NULL;
    }
    for (int i = 0; i < KL_N_VARIANTS; i++) {
        if (!kl_variants[i].supported) {
            continue;
        }
        PyObject *name = PyUnicode_FromString(kl_variants[i].name);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *result = PyList_AsTuple(names);
    Py_DECREF(names);
    return result;
}

static PyMethodDef kl_methods[] = {
    {"kl_rows", (PyCFunction)(void (*)(void))kl_rows, METH_VARARGS | METH_KEYWORDS, kl_rows_doc},
    {"rel_entr_rows", (PyCFunction)(void (*)(void))rel_entr_rows, METH_VARARGS | METH_KEYWORDS,
     rel_entr_rows_doc},
    {"kl_logit_rows", (PyCFunction)(void (*)(void))kl_logit_rows, METH_VARARGS | METH_KEYWORDS,
     kl_logit_rows_doc},
    {"loss_rows", (PyCFunction)(void (*)(void))loss_rows, METH_VARARGS | METH_KEYWORDS,
     loss_rows_doc},
    {"loss_label_rows", (PyCFunction)(void (*)(void))loss_label_rows,
     METH_VARARGS | METH_KEYWORDS, loss_label_rows_doc},
    {"variants", variants, METH_NOARGS, variants_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kl_module = {
    PyModuleDef_HEAD_INIT,
    "kldiv._backends.numpy._native",
    "Compiled row kernels for kldiv's NumPy path; see kldiv/_backends/numpy/_native.c.",
    -1,
    kl_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    kl_detect_variants();
    PyObject *module = PyModule_Create(&kl_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "PARALLEL_MIN", KL_PARALLEL_MIN) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", KLDIV_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
