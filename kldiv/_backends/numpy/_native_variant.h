/* Included by _native.c once per instruction-set variant, with KL_VARIANT (a name suffix) and
 * KL_ATTR (a target attribute, or nothing) defined: instantiates the row kernels of
 * _native_row.h for each divergence (kl, entropy, cross, js, hellinger, tv) and element type,
 * the logits kernel of _native_logits.h and the loss kernel of _native_loss.h, and undefines
 * both. */

#define KL_T float
#define KL_ROW_LANES 16
#define KL_EXACT_DIFFS 1

#define KL_DIFFS 1
#define KL_TERM kl_term_f32
#define KL_MEASURE_TERM kl_measure_term_f32
#define KL_REL_ENTR rel_entr_term_f32
#define KL_FN(name) KL_NAME(name, kl_f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_DIFFS
#undef KL_TERM
#undef KL_MEASURE_TERM
#undef KL_REL_ENTR
#undef KL_FN

#define KL_DIFFS 0
#define KL_TERM entropy_term_f32
#define KL_FN(name) KL_NAME(name, entropy_f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM cross_term_f32
#define KL_FN(name) KL_NAME(name, cross_f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM js_term_f32
#define KL_FN(name) KL_NAME(name, js_f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM hellinger_term_f32
#define KL_FN(name) KL_NAME(name, hellinger_f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM tv_term_f32
#define KL_FN(name) KL_NAME(name, tv_f32, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#undef KL_DIFFS

#undef KL_T
#undef KL_ROW_LANES
#undef KL_EXACT_DIFFS

#define KL_T double
#define KL_ROW_LANES 8
#define KL_EXACT_DIFFS 0

#define KL_DIFFS 1
#define KL_TERM kl_term_f64
#define KL_MEASURE_TERM kl_measure_term_f64
#define KL_REL_ENTR rel_entr_term_f64
#define KL_FN(name) KL_NAME(name, kl_f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_DIFFS
#undef KL_TERM
#undef KL_MEASURE_TERM
#undef KL_REL_ENTR
#undef KL_FN

#define KL_DIFFS 0
#define KL_TERM entropy_term_f64
#define KL_FN(name) KL_NAME(name, entropy_f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM cross_term_f64
#define KL_FN(name) KL_NAME(name, cross_f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM js_term_f64
#define KL_FN(name) KL_NAME(name, js_f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM hellinger_term_f64
#define KL_FN(name) KL_NAME(name, hellinger_f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#define KL_TERM tv_term_f64
#define KL_FN(name) KL_NAME(name, tv_f64, KL_VARIANT)
#include "_native_row.h"
#undef KL_TERM
#undef KL_FN
#undef KL_DIFFS

#undef KL_T
#undef KL_ROW_LANES
#undef KL_EXACT_DIFFS

#include "_native_logits.h"
#include "_native_loss.h"

#undef KL_VARIANT
#undef KL_ATTR
