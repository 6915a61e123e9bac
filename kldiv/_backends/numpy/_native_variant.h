/* Included by _native.c once per instruction-set variant, with KL_VARIANT (a name suffix) and
 * KL_ATTR (a target attribute, or nothing) defined: instantiates the row kernels of
 * _native_row.h for float32 and float64 and the logits kernel of _native_logits.h, and
 * undefines both. */

#define KL_T float
#define KL_ROW_LANES 16
#define KL_EXACT_DIFFS 1
#define KL_DOMAIN kl_domain_f32
#define KL_TERM kl_term_f32
#define KL_MEASURE_TERM kl_measure_term_f32
#define KL_FN(name) KL_NAME(name, f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_T
#undef KL_ROW_LANES
#undef KL_EXACT_DIFFS
#undef KL_DOMAIN
#undef KL_TERM
#undef KL_MEASURE_TERM
#undef KL_FN

#define KL_T double
#define KL_ROW_LANES 8
#define KL_EXACT_DIFFS 0
#define KL_DOMAIN kl_domain_f64
#define KL_TERM kl_term_f64
#define KL_MEASURE_TERM kl_measure_term_f64
#define KL_FN(name) KL_NAME(name, f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_T
#undef KL_ROW_LANES
#undef KL_EXACT_DIFFS
#undef KL_DOMAIN
#undef KL_TERM
#undef KL_MEASURE_TERM
#undef KL_FN

#include "_native_logits.h"

#undef KL_VARIANT
#undef KL_ATTR
