/* The element terms of _native.c, written once for both element types. _native.c includes
 * this file twice, with these defined:
 *   KL_T, KL_BITS_T   float and uint32_t, or double and uint64_t;
 *   KL_TN(name)       name with the type's suffix (kl_term_f32, ...);
 *   KL_MANT_BITS      23 or 52, the mantissa's width;
 *   KL_MIN            FLT_MIN or DBL_MIN, the least normal float;
 *   KL_POLY_TERMS     4 or 10: the terms of atanh(s) - s the type's precision needs for
 *                     |s| <= 0.1716 (kl_log: the first left out makes the log z**5/11 =
 *                     2.0e-9 off relative in float32, z**11/23 = 6.3e-19 in float64, z = s*s;
 *                     js_term's series, |u| < 1/8, alike);
 *   KL_SPLIT_TERMS    5 or 11: the same for |s| <= 0.2 (kl_split);
 *   KL_SQRT2, KL_LN2_HI, KL_LN2_LO  the constants of the split below;
 *   KL_SQRT, KL_FABS  the type's sqrt and fabs (sqrtf and fabsf for float);
 *   KL_MAX            FLT_MAX or DBL_MAX;
 *   KL_LOG2E, KL_EXP_MIN, KL_EXP_SHIFTER  the logits' exp: 1/ln2, its flush point, and
 *                     1.5 * 2**KL_MANT_BITS, which rounds a float to an integer when added
 *                     (and whose bits plus a small integer are the bits of the shifter plus
 *                     that integer: how the splits make their exponents floats, exactly);
 *   KL_EXP_DEGREE, KL_EXPM1_TERMS, KL_PHI_TERMS  the Taylor terms each type's precision
 *                     needs in the logits' exp, expm1 and phi (kl_inv_factorial's 1/k!).
 * C has no templates; a header included once per type keeps one definition of each term
 * (C++ would need a C++ compiler at install for one function of each kind). It undefines
 * these macros at its end, ready for the next type. */

/* The atanh series' coefficients, for KL_SERIES (_native.c): 2/(2k + 3), of
 * 2*(atanh(s) - s)/s**3 in s*s (kl_split, kl_log). */
#define KL_ATANH_C(k) ((KL_T)2 / (KL_T)(2 * (k) + 3))

static KL_INLINE KL_T KL_TN(kl_from_bits)(KL_BITS_T b)
{
    KL_T x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static KL_INLINE KL_BITS_T KL_TN(kl_bits)(KL_T x)
{
    KL_BITS_T b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* The fast domain: q normal and finite, p the same or zero. The kernels test only the
 * lower ends: NaN fails every comparison, and an infinite entry makes its row's sum of p or
 * of q infinite, which the block's finish sees (kl_block_finish). */
static KL_INLINE int KL_TN(kl_domain)(KL_T x, KL_T y)
{
    return ((x >= KL_MIN) | (x == (KL_T)0)) & (y >= KL_MIN);
}

/* An element's pieces, by the scheme at the top of _native.c: log(p/q) exact to a few ulps,
 * p*log(p/q), and t = p*log(p/q) - (p - q) where the exponents agree (near). Outside the
 * domain they are garbage, for the caller to make NaN. */
typedef struct {
    KL_T near, x_log_ratio, log_ratio;
    int is_near;
} KL_TN(kl_pieces);

static KL_INLINE KL_TN(kl_pieces) KL_TN(kl_split)(KL_T x, KL_T y)
{
    const KL_BITS_T bx = KL_TN(kl_bits)(x), by = KL_TN(kl_bits)(y);
    const KL_BITS_T mantissa = ((KL_BITS_T)1 << KL_MANT_BITS) - 1;
    const KL_BITS_T one = KL_TN(kl_bits)((KL_T)1), unit = (KL_BITS_T)1 << KL_MANT_BITS;
    /* half the range of the bits (256 or 2048 units): keeps the sum below positive */
    const KL_BITS_T offset = (KL_BITS_T)1 << (8 * sizeof(KL_BITS_T) - 1);
    /* With x = 2**ex * (1 + fx) and y = 2**ey * (1 + fy) (fx, fy the mantissas' fractions),
     * e = ex - ey + k with k = floor(fx - fy + 1/2) in {-1, 0, 1} is the floor of the bits of
     * x less those of y, plus half a unit, over the unit: read off `sum` by a shift, the
     * offset keeping it positive. Then p/q = 2**e * mx/my with mx = 1 + fx and
     * my = (1 + fy)*2**k = y*2**(e - ex) in [2/3, 3/2]*mx, so |s| <= 0.2: my's bits are y's
     * plus e units less x's exponent field (2**ex has 1.0's bits plus ex units). Integer
     * operations only, no comparison: any pair within a factor 4/3 gets e == 0. */
    const KL_BITS_T sum = bx - by + (unit >> 1) + offset;
    const KL_T mx = KL_TN(kl_from_bits)((bx & mantissa) | one);
    const KL_T my = KL_TN(kl_from_bits)(by + (sum & ~mantissa) - (bx & ~mantissa) + (one - offset));
    /* e, exact, through the shifter (1.5 * 2**KL_MANT_BITS), whose bits plus a small integer
     * are the bits of the shifter plus that integer: no integer conversion (AVX2 has none
     * for 64-bit integers) */
    const KL_T e = KL_TN(kl_from_bits)(KL_TN(kl_bits)(KL_EXP_SHIFTER) + (sum >> KL_MANT_BITS)) -
                   (KL_EXP_SHIFTER + (KL_T)(offset >> KL_MANT_BITS));
    const KL_T s = (mx - my) / (mx + my);
    const KL_T z = s * s;
    /* 2*(atanh(s) - s) = s*z*(2/3 + 2z/5 + ...); |s| <= 0.2, so the first term left out,
     * z**KL_SPLIT_TERMS/(2*KL_SPLIT_TERMS + 3), is below the type's rounding (float32:
     * 7.9e-9, float64: 1.7e-17) */
    const KL_T poly = KL_SERIES(KL_ATANH_C, KL_SPLIT_TERMS, z);
    const KL_T a2 = s * z * poly;
    const KL_T log_ratio = e * KL_LN2_HI + ((KL_T)2 * s + (a2 + e * KL_LN2_LO));
    /* near: (x + y)*(z + (1 + s)*(atanh(s) - s)) */
    const KL_T near = (x + y) * (z + ((KL_T)0.5 + (KL_T)0.5 * s) * a2);
    const KL_TN(kl_pieces) pieces = {near, x * log_ratio, log_ratio, e == (KL_T)0};
    return pieces;
}

/* t = p*log(p/q) - (p - q) >= 0. p == 0 gives q: its e is below 0 (q is normal), and
 * 0*log(p/q) is 0 however wrong the logarithm. */
static KL_INLINE KL_T KL_TN(kl_term)(KL_T x, KL_T y)
{
    const KL_TN(kl_pieces) pieces = KL_TN(kl_split)(x, y);
    const KL_T t = pieces.is_near ? pieces.near : pieces.x_log_ratio - (x - y);
    return KL_TN(kl_domain)(x, y) ? t : (KL_T)NAN;
}

/* For measures of any mass: the term of p*log(p/q) that goes into sum(t), and in *diff the
 * part that goes into sum(p - q). Near p == q they are t and p - q, as in kl_term;
 * elsewhere p*log(p/q) whole and 0, so that no large q makes a large t for the mass
 * difference to cancel. p == 0 gives 0 and 0. */
static KL_INLINE KL_T KL_TN(kl_measure_term)(KL_T x, KL_T y, KL_T *diff)
{
    const KL_TN(kl_pieces) pieces = KL_TN(kl_split)(x, y);
    const int near = pieces.is_near & (x != (KL_T)0);
    *diff = near ? x - y : (KL_T)0;
    KL_T t = near ? pieces.near : pieces.x_log_ratio;
    t = x == (KL_T)0 ? (KL_T)0 : t;
    return KL_TN(kl_domain)(x, y) ? t : (KL_T)NAN;
}

/* log(x) for a positive normal x, exact to a few ulps, by an exponent and mantissa split as
 * kl_split's with a ratio to 1: x = 2**e * m with m in [1/sqrt(2), sqrt(2)), and
 * log(m) = 2*atanh(s), s = (m - 1)/(m + 1). m is halved where the mantissa field is at least
 * sqrt(2)'s, which its sum with the rest of a unit says in the carry: integer operations, no
 * comparison. Garbage outside that domain. */
static KL_INLINE KL_T KL_TN(kl_log)(KL_T x)
{
    const KL_BITS_T bx = KL_TN(kl_bits)(x);
    const KL_BITS_T mantissa = ((KL_BITS_T)1 << KL_MANT_BITS) - 1;
    const KL_BITS_T one = KL_TN(kl_bits)((KL_T)1), unit = (KL_BITS_T)1 << KL_MANT_BITS;
    const KL_BITS_T root = KL_TN(kl_bits)(KL_SQRT2) & mantissa;
    const KL_BITS_T down = ((bx & mantissa) + (unit - root)) >> KL_MANT_BITS; /* 0 or 1 */
    const KL_T mx = KL_TN(kl_from_bits)(((bx & mantissa) | one) - down * unit);
    const KL_BITS_T shifter = KL_TN(kl_bits)(KL_EXP_SHIFTER);
    const KL_T e = KL_TN(kl_from_bits)(shifter + (bx >> KL_MANT_BITS) -
                                       (one >> KL_MANT_BITS) + down) -
                   KL_EXP_SHIFTER;
    const KL_T s = (mx - (KL_T)1) / (mx + (KL_T)1);
    const KL_T z = s * s;
    /* 2*(atanh(s) - s)/(s*z) */
    const KL_T poly = KL_SERIES(KL_ATANH_C, KL_POLY_TERMS, z);
    return e * KL_LN2_HI + ((KL_T)2 * s + (s * z * poly + e * KL_LN2_LO));
}

/* -p*log(p), 0 at p == 0: entropy's term, >= 0 for p <= 1 (y is ignored: the row kernels
 * pass p twice). */
static KL_INLINE KL_T KL_TN(entropy_term)(KL_T x, KL_T y)
{
    (void)y;
    const KL_T t = x == (KL_T)0 ? (KL_T)0 : -(x * KL_TN(kl_log)(x));
    return (x >= KL_MIN) | (x == (KL_T)0) ? t : (KL_T)NAN;
}

/* -p*log(q), 0 at p == 0 whatever q >= 0 (zeros of both at once are common in sparse
 * rows): cross entropy's term, >= 0 for q <= 1. */
static KL_INLINE KL_T KL_TN(cross_term)(KL_T x, KL_T y)
{
    const int zero = x == (KL_T)0;
    const KL_T t = zero ? (KL_T)0 : -(x * KL_TN(kl_log)(y));
    return KL_TN(kl_domain)(x, y) | (zero & (y >= (KL_T)0)) ? t : (KL_T)NAN;
}

/* The Jensen-Shannon term, (p*log(p/m) + q*log(q/m))/2 with m = (p + q)/2, >= 0.
 * With u = (p - q)/(p + q), exact to a rounding (p - q is exact near p == q), p/m = 1 + u and
 * q/m = 1 - u, and the term is m/2 * g(u), g(u) = (1 + u)log(1 + u) + (1 - u)log(1 - u)
 * = u**2 * sum over k >= 1 of u**(2k - 2)/(k(2k - 1)): near p == q (|u| < 1/8) by that series,
 * whose first term left out is below the type's rounding (float32: 1.3e-9 relative, float64:
 * 3.8e-21), so that near-identical rows keep their digits; m enters only as a factor. Beyond,
 * as (t(p, m) + t(q, m))/2 (kl_term; sum(p - m) + sum(q - m) = 0, so JS is the sum of these
 * alone, for measures of any mass too), which a rounding of m changes by (eps/u)**2 relative
 * at most. p == q == 0 gives 0. */
static KL_INLINE KL_T KL_TN(js_term)(KL_T x, KL_T y)
{
    const KL_T sum = x + y, m = (KL_T)0.5 * sum;
    const KL_T u = (x - y) / sum, z = u * u;
    KL_T poly = 0;
    for (int k = KL_POLY_TERMS; k >= 1; k--) {
        poly = poly * z + (KL_T)1 / (KL_T)(k * (2 * k - 1));
    }
    const KL_T near = (KL_T)0.5 * m * (z * poly);
    const KL_T far = (KL_T)0.5 * (KL_TN(kl_term)(x, m) + KL_TN(kl_term)(y, m));
    const KL_T t = (u < (KL_T)0.125) & (u > (KL_T)-0.125) ? near : far;
    /* a bad or out-of-domain entry is NaN whichever form is taken */
    const int ok = KL_TN(kl_domain)(x, m) & KL_TN(kl_domain)(y, m);
    return (x == (KL_T)0) & (y == (KL_T)0) ? (KL_T)0 : (ok ? t : (KL_T)NAN);
}

/* ((sqrt(p) - sqrt(q))**2)/2 >= 0, the squared Hellinger distance's term, with
 * sqrt(p) - sqrt(q) = (p - q)/(sqrt(p) + sqrt(q)): each exact to a rounding, where the
 * difference of square roots would cancel near p == q. p == q == 0 gives 0; a negative or
 * NaN entry NaN (any zero and any subnormal are in the domain: no logarithm). */
static KL_INLINE KL_T KL_TN(hellinger_term)(KL_T x, KL_T y)
{
    const KL_T roots = KL_SQRT(x) + KL_SQRT(y);
    const KL_T d = (x - y) / roots;
    const KL_T t = roots == (KL_T)0 ? (KL_T)0 : (KL_T)0.5 * (d * d);
    return (x >= (KL_T)0) & (y >= (KL_T)0) ? t : (KL_T)NAN;
}

/* |p - q|/2, total variation's term; NaN for a negative or NaN entry. */
static KL_INLINE KL_T KL_TN(tv_term)(KL_T x, KL_T y)
{
    const KL_T t = (KL_T)0.5 * KL_FABS(x - y);
    return (x >= (KL_T)0) & (y >= (KL_T)0) ? t : (KL_T)NAN;
}

/* p*log(p/q), rel_entr's element: 0 at p == 0 <= q, inf at p > 0 == q, else NaN outside the
 * fast domain (q zero under a zero p included, a subnormal, a negative, NaN or infinite
 * entry), for the caller to redo. */
static KL_INLINE KL_T KL_TN(rel_entr_term)(KL_T x, KL_T y)
{
    const KL_T r = x == (KL_T)0 ? (KL_T)0 : KL_TN(kl_split)(x, y).x_log_ratio;
    const int finite = (x < (KL_T)INFINITY) & (y < (KL_T)INFINITY);
    const int pole = (x >= KL_MIN) & (x < (KL_T)INFINITY) & (y == (KL_T)0);
    return KL_TN(kl_domain)(x, y) & finite ? r : (pole ? (KL_T)INFINITY : (KL_T)NAN);
}

/* ---- the logits' terms (_native_logits.h, _native_loss.h) ----------------------------- */

/* exp(x + x_lo) for x <= 0, x_lo a rounding error of x (|x_lo| <= ulp(x)/2), flushed to 0
 * below KL_EXP_MIN (a probability under 2**-126, float32, or 2**-1022 of the row's largest):
 * x = k*ln2 + r, |r| <= ln2/2, exp(r) by its Taylor polynomial to r**KL_EXP_DEGREE (the next
 * term: float32, r**8/8! <= 5.5e-9; float64, r**14/14! <= 4.2e-18), times 2**k put into the
 * exponent bits. k's integer is read from the bits of x*log2(e) + KL_EXP_SHIFTER, whose low
 * mantissa bits hold it, so no float-to-integer conversion is needed (AVX2 has none for
 * 64-bit integers). */
static KL_INLINE KL_T KL_TN(kl_exp_nonpositive)(KL_T x, KL_T x_lo)
{
    const KL_T shifted = x * KL_LOG2E + KL_EXP_SHIFTER;
    const KL_T k = shifted - KL_EXP_SHIFTER;
    const KL_T r = ((x - k * KL_LN2_HI) + x_lo) - k * KL_LN2_LO;
    KL_T poly = (KL_T)kl_inv_factorial[KL_EXP_DEGREE];
#pragma GCC unroll 24
    for (int j = KL_EXP_DEGREE - 1; j >= 0; j--) {
        poly = poly * r + (KL_T)kl_inv_factorial[j];
    }
    /* (k + bias) << mantissa bits, in unsigned arithmetic: k mod 2**w plus the bias */
    const KL_BITS_T bias = KL_TN(kl_bits)((KL_T)1) >> KL_MANT_BITS;
    const KL_BITS_T k_bits = KL_TN(kl_bits)(shifted) - KL_TN(kl_bits)(KL_EXP_SHIFTER);
    const KL_BITS_T scale = (k_bits + bias) << KL_MANT_BITS;
    const KL_T result = poly * KL_TN(kl_from_bits)(x >= KL_EXP_MIN ? scale : (KL_BITS_T)0);
    return x >= KL_EXP_MIN ? result : (KL_T)0;
}

/* x - y as the float nearest it and the exact rounding error (Knuth's TwoSum). */
static KL_INLINE KL_T KL_TN(kl_diff)(KL_T x, KL_T y, KL_T *err)
{
    const KL_T s = x - y, y_part = s - x;
    *err = (x - (s - y_part)) + (-y - y_part);
    return s;
}

/* exp_b*expm1(delta) = exp_a - exp_b, with exp_a = exp_b*exp(delta) rounded apart: near
 * delta == 0 by the Taylor polynomial of expm1 to delta**KL_EXPM1_TERMS (the next term, of
 * delta: float32 delta**9/10! <= 5.4e-10, float64 delta**16/17! <= 4.3e-20), which keeps
 * the digits the subtraction would lose; else as the subtraction. */
static KL_INLINE KL_T KL_TN(kl_exp_diff)(KL_T exp_a, KL_T exp_b, KL_T delta)
{
    KL_T poly = (KL_T)kl_inv_factorial[KL_EXPM1_TERMS];
#pragma GCC unroll 24
    for (int j = KL_EXPM1_TERMS - 1; j >= 1; j--) {
        poly = poly * delta + (KL_T)kl_inv_factorial[j];
    }
    const KL_T near = exp_b * (delta * poly);
    return (delta <= (KL_T)0.5) & (delta >= (KL_T)-0.5) ? near : exp_a - exp_b;
}

/* The term of the logits kernels, q*phi(p/q) = p*log(p/q) - p + q >= 0 with p/q = exp(d).
 * Both forms below compute 1 - (1 - d)*x for some x, which cancels for negative d; they cancel
 * alike at |d| = 1 (a factor 3.8 on the roundings of p and q), so that is where they meet:
 * for |d| <= 1, q*d**2*(1 - (1 - d)*P(d)), P(d) = (expm1(d) - d)/d**2 = sum d**j/(j + 2)!
 * to KL_PHI_TERMS terms (the next: float32 1/13! = 1.6e-10, float64 1/19! = 8.2e-18);
 * beyond, p*(d - 1) + q. */
static KL_INLINE KL_T KL_TN(kl_logit_term)(KL_T p, KL_T q, KL_T d)
{
    KL_T poly = (KL_T)kl_inv_factorial[KL_PHI_TERMS + 1];
#pragma GCC unroll 24
    for (int j = KL_PHI_TERMS; j >= 2; j--) {
        poly = poly * d + (KL_T)kl_inv_factorial[j];
    }
    const KL_T near = q * (d * d) * ((KL_T)1 - ((KL_T)1 - d) * poly);
    const KL_T far = p * (d - (KL_T)1) + q;
    return (d <= (KL_T)1) & (d >= (KL_T)-1) ? near : far;
}

#undef KL_T
#undef KL_BITS_T
#undef KL_TN
#undef KL_MANT_BITS
#undef KL_MIN
#undef KL_POLY_TERMS
#undef KL_SPLIT_TERMS
#undef KL_SQRT2
#undef KL_LN2_HI
#undef KL_LN2_LO
#undef KL_SQRT
#undef KL_FABS
#undef KL_MAX
#undef KL_LOG2E
#undef KL_EXP_MIN
#undef KL_EXP_SHIFTER
#undef KL_EXP_DEGREE
#undef KL_EXPM1_TERMS
#undef KL_PHI_TERMS
#undef KL_ATANH_C
