/* kldiv._backends.numpy._native: compiled row kernels for the NumPy path (kldiv/_backends/numpy/__init__.py).
 *
 * NumPy can fuse none of a KL term's dozen operations, so the pure NumPy path walks each tile
 * of memory some eight times; this module makes one pass per row (three for logits), with the
 * terms in the CPU's vector lanes and the row sums that validation needs on the way. It is
 * built when a C compiler is present (setup.py marks it optional); without it the NumPy path
 * runs alone.
 *
 * The math. For p, q > 0 write p/q = 2**e * r with r in [1/sqrt(2), sqrt(2)], taken from the
 * floats' exponent and mantissa bits, exactly. Then s = (mp - mq)/(mp + mq) of the mantissas
 * has |s| <= 0.1716, mp - mq is exact (Sterbenz), and log(p/q) = e*ln2 + 2*atanh(s), with
 * atanh(s) - s = s**3 * (1/3 + s**2/5 + ...) summed to the input's precision. Each term is
 * t = p*log(p/q) - (p - q) >= 0, and KL = sum(t) + sum(p - q):
 *  - e == 0 (p and q within a factor sqrt(2), all of a near-identical pair): s is exactly
 *    (p - q)/(p + q) and t = (p + q)*(s**2 + (1 + s)*(atanh(s) - s)), with no cancellation,
 *    so near-identical distributions keep every digit;
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
 * Unchecked measures of any mass (kl_rows(..., measures=True), the caller's validate=False):
 * sum(p - q) is no rounding then, and a large q under a small p would make t = q - p + ...,
 * which the mass difference cancels. There an element with e != 0 adds p*log(p/q) whole to
 * the first sum and nothing to the second (kl_measure_term_*, kl_measure_rows); the near ones
 * split as above. Each term is then exact to a few ulps, and the KL to a rounding of the sum
 * of their magnitudes.
 *
 * kl_logit_rows, for float32 logits (_native_logits.h), takes each row's maxima, then its
 * exponentials with a vectorised exp (kl_exp_nonpositive_f32), then terms q*phi(p/q) >= 0
 * from the log-ratio d (kl_logit_term_f32), which cancel nothing near p == q. d is the
 * difference of the shifted logits, exact, less the log of the normalisers' ratio, which is
 * taken from the sum of the exponentials' differences (kl_exp_diff_f32) rather than from two
 * rounded sums: an error e in it would shift every d by e and make the KL (1 + e)*KL + e**2,
 * a floor of 1e-14 for near-identical rows. Probabilities under 2**-126 of a row's largest
 * are flushed to 0 (subnormal arithmetic would be slow): an absolute error under 1e-37.
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

#if defined(__GNUC__) || defined(__clang__)
#define KL_INLINE inline __attribute__((always_inline))
#else
#define KL_INLINE inline
#endif

/* ---- elements ---------------------------------------------------------------------------- */

static KL_INLINE float kl_f32_from_bits(uint32_t b)
{
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static KL_INLINE uint32_t kl_f32_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static KL_INLINE double kl_f64_from_bits(uint64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static KL_INLINE uint64_t kl_f64_bits(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* The fast domain: q normal and finite, p the same or zero. The kernels test only the
 * lower ends: NaN fails every comparison, and an infinite entry makes its row's sum of p or
 * of q infinite, which kl_rows_finish sees. */
static KL_INLINE int kl_domain_f32(float x, float y)
{
    return ((x >= FLT_MIN) | (x == 0.0f)) & (y >= FLT_MIN);
}

static KL_INLINE int kl_domain_f64(double x, double y)
{
    return ((x >= DBL_MIN) | (x == 0.0)) & (y >= DBL_MIN);
}

/* ln 2 split so that e*LN2_HI is exact for every exponent difference e. */
#define KL_SQRT2_F32 1.41421356f
#define KL_LN2_HI_F32 0.693145752f      /* 0x3f317200 */
#define KL_LN2_LO_F32 1.42860677e-06f   /* 0x35bfbe8e */
#define KL_SQRT2_F64 1.4142135623730951
#define KL_LN2_HI_F64 6.93147180369123816490e-01 /* 0x3fe62e42fee00000 */
#define KL_LN2_LO_F64 1.90821492927058770002e-10 /* 0x3dea39ef35793c76 */

/* An element's term pieces, by the scheme at the top of the file: t where e == 0 (near), and
 * p*log(p/q), exact to a few ulps. Outside the domain they are garbage, for the caller to
 * make NaN. */
typedef struct {
    float near, x_log_ratio;
    int is_near;
} kl_pieces_f32;

typedef struct {
    double near, x_log_ratio;
    int is_near;
} kl_pieces_f64;

static KL_INLINE kl_pieces_f32 kl_split_f32(float x, float y)
{
    /* Outside the domain the bits below are garbage, but the term is NaN in the end. */
    const uint32_t bx = kl_f32_bits(x), by = kl_f32_bits(y);
    const uint32_t mantissa = 0x007FFFFFu, one = 0x3F800000u;
    float e = (float)((int32_t)(bx >> 23) - (int32_t)(by >> 23));
    float mx = kl_f32_from_bits((bx & mantissa) | one);
    float my = kl_f32_from_bits((by & mantissa) | one);
    const int up = mx > KL_SQRT2_F32 * my, down = my > KL_SQRT2_F32 * mx;
    my = up ? 2.0f * my : my;
    mx = down ? 2.0f * mx : mx;
    e = up ? e + 1.0f : e;
    e = down ? e - 1.0f : e;
    const float s = (mx - my) / (mx + my);
    const float z = s * s;
    /* atanh(s) - s = s*z*(1/3 + z/5 + ...): the next term, z**5/13 <= 2e-9, is below float32 */
    float poly = 1.0f / 11.0f;
    poly = poly * z + 1.0f / 9.0f;
    poly = poly * z + 1.0f / 7.0f;
    poly = poly * z + 1.0f / 5.0f;
    poly = poly * z + 1.0f / 3.0f;
    const float a = s * z * poly;
    const float log_ratio = e * KL_LN2_HI_F32 + (2.0f * s + (2.0f * a + e * KL_LN2_LO_F32));
    const kl_pieces_f32 pieces = {(x + y) * (z + (1.0f + s) * a), x * log_ratio, e == 0.0f};
    return pieces;
}

/* t = p*log(p/q) - (p - q) >= 0. */
static KL_INLINE float kl_term_f32(float x, float y)
{
    const kl_pieces_f32 pieces = kl_split_f32(x, y);
    float t = pieces.is_near ? pieces.near : pieces.x_log_ratio - (x - y);
    t = x == 0.0f ? y : t;
    return kl_domain_f32(x, y) ? t : NAN;
}

/* For measures of any mass: the term of p*log(p/q) that goes into sum(t), and in *diff the
 * part that goes into sum(p - q). Near p == q they are t and p - q, as in kl_term_f32;
 * elsewhere p*log(p/q) whole and 0, so that no large q makes a large t for the mass
 * difference to cancel. p == 0 gives 0 and 0. */
static KL_INLINE float kl_measure_term_f32(float x, float y, float *diff)
{
    const kl_pieces_f32 pieces = kl_split_f32(x, y);
    const int near = pieces.is_near & (x != 0.0f);
    *diff = near ? x - y : 0.0f;
    float t = near ? pieces.near : pieces.x_log_ratio;
    t = x == 0.0f ? 0.0f : t;
    return kl_domain_f32(x, y) ? t : NAN;
}

static KL_INLINE kl_pieces_f64 kl_split_f64(double x, double y)
{
    /* Outside the domain the bits below are garbage, but the term is NaN in the end. */
    const uint64_t bx = kl_f64_bits(x), by = kl_f64_bits(y);
    const uint64_t mantissa = 0x000FFFFFFFFFFFFFull, one = 0x3FF0000000000000ull;
    /* the biased exponents as doubles, without a 64-bit integer conversion: 2**52 + k - 2**52 */
    const uint64_t magic = 0x4330000000000000ull;
    double e = kl_f64_from_bits(magic | (bx >> 52)) - kl_f64_from_bits(magic | (by >> 52));
    double mx = kl_f64_from_bits((bx & mantissa) | one);
    double my = kl_f64_from_bits((by & mantissa) | one);
    const int up = mx > KL_SQRT2_F64 * my, down = my > KL_SQRT2_F64 * mx;
    my = up ? 2.0 * my : my;
    mx = down ? 2.0 * mx : mx;
    e = up ? e + 1.0 : e;
    e = down ? e - 1.0 : e;
    const double s = (mx - my) / (mx + my);
    const double z = s * s;
    /* the next term, z**10/23 <= 2.2e-17, is below float64 */
    double poly = 1.0 / 21.0;
    poly = poly * z + 1.0 / 19.0;
    poly = poly * z + 1.0 / 17.0;
    poly = poly * z + 1.0 / 15.0;
    poly = poly * z + 1.0 / 13.0;
    poly = poly * z + 1.0 / 11.0;
    poly = poly * z + 1.0 / 9.0;
    poly = poly * z + 1.0 / 7.0;
    poly = poly * z + 1.0 / 5.0;
    poly = poly * z + 1.0 / 3.0;
    const double a = s * z * poly;
    const double log_ratio = e * KL_LN2_HI_F64 + (2.0 * s + (2.0 * a + e * KL_LN2_LO_F64));
    const kl_pieces_f64 pieces = {(x + y) * (z + (1.0 + s) * a), x * log_ratio, e == 0.0};
    return pieces;
}

static KL_INLINE double kl_term_f64(double x, double y)
{
    const kl_pieces_f64 pieces = kl_split_f64(x, y);
    double t = pieces.is_near ? pieces.near : pieces.x_log_ratio - (x - y);
    t = x == 0.0 ? y : t;
    return kl_domain_f64(x, y) ? t : (double)NAN;
}

static KL_INLINE double kl_measure_term_f64(double x, double y, double *diff)
{
    const kl_pieces_f64 pieces = kl_split_f64(x, y);
    const int near = pieces.is_near & (x != 0.0);
    *diff = near ? x - y : 0.0;
    double t = near ? pieces.near : pieces.x_log_ratio;
    t = x == 0.0 ? 0.0 : t;
    return kl_domain_f64(x, y) ? t : (double)NAN;
}

/* exp(x + x_lo) for x <= 0 in float32, x_lo a rounding error of x (|x_lo| <= ulp(x)/2), flushed
 * to 0 below -87.3 (a probability under 1e-38 of the row's largest): x = k*ln2 + r,
 * |r| <= ln2/2, exp(r) by its Taylor polynomial to r**7 (the next term, r**8/8!, is 5.5e-9
 * at most), times 2**k put into the exponent bits. */
#define KL_LOG2E_F32 1.44269504f
#define KL_EXP_MIN_F32 -87.3f

static KL_INLINE float kl_exp_nonpositive_f32(float x, float x_lo)
{
    const float shifter = 12582912.0f; /* 1.5 * 2**23: adding it rounds to an integer */
    const float k = (x * KL_LOG2E_F32 + shifter) - shifter;
    const float r = ((x - k * KL_LN2_HI_F32) + x_lo) - k * KL_LN2_LO_F32;
    float poly = 1.0f / 5040.0f;
    poly = poly * r + 1.0f / 720.0f;
    poly = poly * r + 1.0f / 120.0f;
    poly = poly * r + 1.0f / 24.0f;
    poly = poly * r + 1.0f / 6.0f;
    poly = poly * r + 0.5f;
    poly = poly * r + 1.0f;
    poly = poly * r + 1.0f;
    const int32_t scale = ((int32_t)k + 127) << 23;
    const float result = poly * kl_f32_from_bits((uint32_t)(x >= KL_EXP_MIN_F32 ? scale : 0));
    return x >= KL_EXP_MIN_F32 ? result : 0.0f;
}

/* x - y as the float nearest it and the exact rounding error (Knuth's TwoSum). */
static KL_INLINE float kl_diff_f32(float x, float y, float *err)
{
    const float s = x - y, y_part = s - x;
    *err = (x - (s - y_part)) + (-y - y_part);
    return s;
}

/* exp_b*expm1(delta) = exp_a - exp_b, with exp_a = exp_b*exp(delta) rounded apart: near
 * delta == 0 by the Taylor polynomial of expm1 (the next term, delta**10/10!, is 2.7e-10 of
 * delta), which keeps the digits the subtraction would lose; else as the subtraction. */
static KL_INLINE float kl_exp_diff_f32(float exp_a, float exp_b, float delta)
{
    float poly = 1.0f / 362880.0f;
    poly = poly * delta + 1.0f / 40320.0f;
    poly = poly * delta + 1.0f / 5040.0f;
    poly = poly * delta + 1.0f / 720.0f;
    poly = poly * delta + 1.0f / 120.0f;
    poly = poly * delta + 1.0f / 24.0f;
    poly = poly * delta + 1.0f / 6.0f;
    poly = poly * delta + 0.5f;
    poly = poly * delta + 1.0f;
    const float near = exp_b * (delta * poly);
    return (delta <= 0.5f) & (delta >= -0.5f) ? near : exp_a - exp_b;
}

/* The term of the logits kernel, q*phi(p/q) = p*log(p/q) - p + q >= 0 with p/q = exp(d).
 * Both forms below compute 1 - (1 - d)*x for some x, which cancels for negative d; they cancel
 * alike at |d| = 1 (a factor 3.8 on the roundings of p and q), so that is where they meet:
 * for |d| <= 1, q*d**2*(1 - (1 - d)*P(d)), P(d) = (expm1(d) - d)/d**2 by its Taylor
 * polynomial (the next term, 1/13!, is 1.6e-10); beyond, p*(d - 1) + q. */
static KL_INLINE float kl_logit_term_f32(float p, float q, float d)
{
    float poly = 1.0f / 479001600.0f; /* 1/12! */
    poly = poly * d + 1.0f / 39916800.0f;
    poly = poly * d + 1.0f / 3628800.0f;
    poly = poly * d + 1.0f / 362880.0f;
    poly = poly * d + 1.0f / 40320.0f;
    poly = poly * d + 1.0f / 5040.0f;
    poly = poly * d + 1.0f / 720.0f;
    poly = poly * d + 1.0f / 120.0f;
    poly = poly * d + 1.0f / 24.0f;
    poly = poly * d + 1.0f / 6.0f;
    poly = poly * d + 0.5f;
    const float near = q * (d * d) * (1.0f - (1.0f - d) * poly);
    const float far = p * (d - 1.0f) + q;
    return (d <= 1.0f) & (d >= -1.0f) ? near : far;
}

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

/* ---- variants ---------------------------------------------------------------------------- */

typedef void (*kl_rows_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, Py_ssize_t,
                           Py_ssize_t, double *);

typedef void (*kl_logit_rows_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t, float *, void *, char);

typedef struct {
    const char *name;
    kl_rows_fn f32;
    kl_rows_fn f64;
    kl_rows_fn measure_f32;
    kl_rows_fn measure_f64;
    kl_logit_rows_fn logits_f32;
    int supported;
} kl_variant;

#define KL_NAME3(name, type, variant) name##_##type##_##variant
#define KL_NAME(name, type, variant) KL_NAME3(name, type, variant)

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

/* Best first; `supported` is filled in when the module loads. */
static kl_variant kl_variants[] = {
#ifdef KL_X86_VARIANTS
    {"x86-64-v4", kl_rows_f32_x86_64_v4, kl_rows_f64_x86_64_v4, kl_measure_rows_f32_x86_64_v4,
     kl_measure_rows_f64_x86_64_v4, kl_logit_rows_f32_x86_64_v4, 0},
    {"x86-64-v3", kl_rows_f32_x86_64_v3, kl_rows_f64_x86_64_v3, kl_measure_rows_f32_x86_64_v3,
     kl_measure_rows_f64_x86_64_v3, kl_logit_rows_f32_x86_64_v3, 0},
#endif
    {"baseline", kl_rows_f32_baseline, kl_rows_f64_baseline, kl_measure_rows_f32_baseline,
     kl_measure_rows_f64_baseline, kl_logit_rows_f32_baseline, 1},
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

/* Buffers of two input arrays (read-only, any strides) and an output (writable, C order):
 * 0, or -1 with an exception set and nothing held. */
static int kl_get_buffers(PyObject *x, PyObject *y, PyObject *out, Py_buffer buffers[3])
{
    if (PyObject_GetBuffer(x, &buffers[0], PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(y, &buffers[1], PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&buffers[0]);
        return -1;
    }
    if (PyObject_GetBuffer(out, &buffers[2], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) <
        0) {
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

/* Rows per call of a row kernel: their (KL, sum p, sum q) on the stack. */
#define KL_BLOCK_ROWS 256

/* Run the row kernel `run` on all rows and finish each row as kl_rows's docstring says;
 * returns whether a row is off 1 by more than tolerance (< 0: no check). No GIL needed. */
static int kl_rows_finish(kl_rows_fn run, const Py_buffer *p, const Py_buffer *q, void *out,
                          char out_kind, double tolerance)
{
    double res[3 * KL_BLOCK_ROWS];
    const Py_ssize_t rows = p->shape[0];
    int off = 0;
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += KL_BLOCK_ROWS) {
        const Py_ssize_t k = rows - r0 < KL_BLOCK_ROWS ? rows - r0 : KL_BLOCK_ROWS;
        run((const char *)p->buf + r0 * p->strides[0], p->strides[0],
            (const char *)q->buf + r0 * q->strides[0], q->strides[0], k, p->shape[1], res);
        for (Py_ssize_t j = 0; j < k; j++) {
            double kl = res[3 * j];
            const double sum_p = res[3 * j + 1], sum_q = res[3 * j + 2];
            if (!(isfinite(kl) && isfinite(sum_p) && isfinite(sum_q))) {
                kl = (double)NAN; /* for the caller to redo */
            }
            else if (tolerance >= 0.0) {
                off |= !(fabs(sum_p - 1.0) <= tolerance && fabs(sum_q - 1.0) <= tolerance);
                kl = kl < 0.0 ? 0.0 : kl;
            }
            kl_store(out, out_kind, r0 + j, kl);
        }
    }
    return off;
}

PyDoc_STRVAR(kl_rows_doc,
             "kl_rows(p, q, out, tolerance=None, variant=None, *, measures=False)\n"
             "--\n\n"
             "For each row r of the 2-D float32 or float64 arrays p and q (same shape and\n"
             "dtype, each row contiguous, any row stride), write out[r] = KL(p[r] || q[r])\n"
             "into the C-contiguous 1-D float32 or float64 array out, or NaN for a row to\n"
             "redo: one holding an element outside the fast domain (q not a positive normal\n"
             "float; p not one or zero), or whose arithmetic overflowed. measures=True\n"
             "takes rows of any mass (unchecked input): each term far from p == q enters\n"
             "whole, so that sum(t) never cancels against sum(p - q). With a tolerance, KLs\n"
             "below 0 are written as 0, and the result says whether a row not to redo has\n"
             "sum(p) or sum(q) off 1 by more than it. variant names one of variants();\n"
             "None takes the first. Releases the GIL.");

static PyObject *kl_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"p", "q", "out", "tolerance", "variant", "measures", NULL};
    PyObject *p_obj, *q_obj, *out_obj, *tolerance_obj = Py_None, *variant_obj = Py_None;
    int measures = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OO$p:kl_rows", keywords, &p_obj,
                                     &q_obj, &out_obj, &tolerance_obj, &variant_obj,
                                     &measures)) {
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
    if (kl_get_buffers(p_obj, q_obj, out_obj, buffers) < 0) {
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
        const kl_rows_fn run = measures ? (kind == 'f' ? variant->measure_f32 : variant->measure_f64)
                                        : (kind == 'f' ? variant->f32 : variant->f64);
        int off;
        Py_BEGIN_ALLOW_THREADS
        off = kl_rows_finish(run, p, q, out->buf, out_kind, tolerance);
        Py_END_ALLOW_THREADS
        result = PyBool_FromLong(off);
    }
    kl_release_buffers(buffers);
    return result;
}

PyDoc_STRVAR(kl_logit_rows_doc,
             "kl_logit_rows(a, b, out, variant=None)\n--\n\n"
             "For each row r of the 2-D float32 arrays a and b (same shape, each row\n"
             "contiguous, any row stride), write out[r] = KL(softmax(a[r]) || softmax(b[r]))\n"
             "into the C-contiguous 1-D float32 or float64 array out: NaN for a row holding\n"
             "a logit that is not finite. variant as for kl_rows. Releases the GIL.");

static PyObject *kl_logit_rows(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"a", "b", "out", "variant", NULL};
    PyObject *a_obj, *b_obj, *out_obj, *variant_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:kl_logit_rows", keywords, &a_obj,
                                     &b_obj, &out_obj, &variant_obj)) {
        return NULL;
    }
    const kl_variant *variant = kl_find_variant(variant_obj);
    if (variant == NULL) {
        return NULL;
    }
    Py_buffer buffers[3];
    if (kl_get_buffers(a_obj, b_obj, out_obj, buffers) < 0) {
        return NULL;
    }
    const Py_buffer *a = &buffers[0], *b = &buffers[1], *out = &buffers[2];
    PyObject *result = NULL;
    const char kind = kl_check_pair(a, b, "a and b");
    float *scratch = NULL;
    if (kind == 0) {
        /* the exception is set */
    }
    else if (kind != 'f') {
        PyErr_SetString(PyExc_TypeError, "a and b must be float32");
    }
    else if (kl_float_kind(out) == 0 || out->ndim != 1 || out->shape[0] != a->shape[0]) {
        PyErr_SetString(PyExc_ValueError,
                        "out must be a 1-D float32 or float64 array of one element per row");
    }
    else if ((scratch = PyMem_RawMalloc(3 * (size_t)a->shape[1] * sizeof(float) + 1)) == NULL) {
        PyErr_NoMemory();
    }
    else {
        Py_BEGIN_ALLOW_THREADS
        variant->logits_f32(a->buf, a->strides[0], b->buf, b->strides[0], a->shape[0],
                            a->shape[1], scratch, out->buf, kl_float_kind(out));
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyMem_RawFree(scratch);
    kl_release_buffers(buffers);
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
    {"kl_logit_rows", (PyCFunction)(void (*)(void))kl_logit_rows, METH_VARARGS | METH_KEYWORDS,
     kl_logit_rows_doc},
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
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", KLDIV_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
