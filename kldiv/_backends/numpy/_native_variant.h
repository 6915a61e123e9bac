/* Included by _native.c once per instruction-set variant, with KL_VARIANT (a name suffix) and
 * KL_ATTR (a target attribute, or nothing) defined: instantiates the row kernels of
 * _native_row.h for each divergence (kl, entropy, cross, js, hellinger, tv; the list is
 * _native_divergences.h), the logits kernel of _native_logits.h and the loss kernels of
 * _native_loss.h for each element type, and undefines both. */

#define KL_T float
#define KL_TYPE f32
#define KL_ROW_LANES 16
#define KL_EXACT_DIFFS 1
#define KL_SHORT_TRANSPOSE KL_TRANSPOSE /* short rows read as vectors (_native_row.h) */
#define KL_MAX FLT_MAX
#define KL_TINY FLT_MIN
#define KL_HAS_WIDER 1 /* the loss's logarithms in float64 (_native_loss.h) */
#include "_native_divergences.h"
#include "_native_logits.h"
#include "_native_loss.h"
#undef KL_MAX
#undef KL_TINY
#undef KL_HAS_WIDER
#undef KL_T
#undef KL_TYPE
#undef KL_ROW_LANES
#undef KL_EXACT_DIFFS
#undef KL_SHORT_TRANSPOSE

#define KL_T double
#define KL_TYPE f64
#define KL_ROW_LANES 8
#define KL_EXACT_DIFFS 0
#define KL_SHORT_TRANSPOSE 0
#define KL_MAX DBL_MAX
#define KL_TINY DBL_MIN
#define KL_HAS_WIDER 0
#include "_native_divergences.h"
#include "_native_logits.h"
#include "_native_loss.h"
#undef KL_MAX
#undef KL_TINY
#undef KL_HAS_WIDER
#undef KL_T
#undef KL_TYPE
#undef KL_ROW_LANES
#undef KL_EXACT_DIFFS
#undef KL_SHORT_TRANSPOSE

#undef KL_VARIANT
#undef KL_ATTR
