/* Every row kernel of _native_row.h for one instruction-set variant and one element type:
 * included by _native_variant.h with KL_VARIANT and KL_ATTR (the variant), and KL_T,
 * KL_TYPE (f32 or f64, the suffix of _native_term.h's functions), KL_ROW_LANES and
 * KL_EXACT_DIFFS (the type) defined. Each divergence is one instantiation: its term and
 * whether its value adds sum(p - q) (KL_DIFFS, KL's alone), and whether it takes p alone
 * (KL_UNARY, entropy's). */

/* KL_SPLIT_SHORT: whether short rows make their terms apart from their sums (_native_row.h's
 * kl_rows_lanes; float32 only): it pays for the terms with a logarithm, KL's, entropy's and
 * JS's (0.67-0.87x the time, rows of 10 to 64), not for the cheap ones (cross entropy 1.07x,
 * Hellinger 1.42x, total variation 2.02x, rows of 10). */
#define KL_DIFFS 1
#define KL_UNARY 0
#define KL_SPLIT_SHORT 1
#define KL_TERM KL_TYPED(kl_term)
#define KL_MEASURE_TERM KL_TYPED(kl_measure_term)
#define KL_REL_ENTR KL_TYPED(rel_entr_term)
#define KL_FN(name) KL_NAME(name, KL_TYPED(kl), KL_VARIANT)
#include "_native_row.h"
#undef KL_DIFFS
#undef KL_UNARY
#undef KL_SPLIT_SHORT
#undef KL_TERM
#undef KL_MEASURE_TERM
#undef KL_REL_ENTR
#undef KL_FN

#define KL_DIFFS 0
#define KL_UNARY 1
#define KL_SPLIT_SHORT 1
#define KL_TERM KL_TYPED(entropy_term)
#define KL_FN(name) KL_NAME(name, KL_TYPED(entropy), KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#undef KL_UNARY
#define KL_UNARY 0
#undef KL_SPLIT_SHORT
#define KL_SPLIT_SHORT 0
#define KL_TERM KL_TYPED(cross_term)
#define KL_FN(name) KL_NAME(name, KL_TYPED(cross), KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#undef KL_SPLIT_SHORT
#define KL_SPLIT_SHORT 1
#define KL_TERM KL_TYPED(js_term)
#define KL_FN(name) KL_NAME(name, KL_TYPED(js), KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#undef KL_SPLIT_SHORT
#define KL_SPLIT_SHORT 0
#define KL_TERM KL_TYPED(hellinger_term)
#define KL_FN(name) KL_NAME(name, KL_TYPED(hellinger), KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM KL_TYPED(tv_term)
#define KL_FN(name) KL_NAME(name, KL_TYPED(tv), KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#undef KL_DIFFS
#undef KL_UNARY
#undef KL_SPLIT_SHORT
