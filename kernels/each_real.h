/* The one way kernels/ writes code for float and double: a family's .c file names its template
 * and includes this file, which includes the template once per floating type with
 *   REAL        float or double
 *   SFX         f32 or f64
 *   FN(name)    fastbp_<name>_<SFX>: every templated function's name, also for calls between them
 *   EXP LOG SQRT FABS   the type's math functions (EXP: vexp.h's, which vectorizes);  GEMM  the type's row-major BLAS product
 *   FN(vec), FN(mask)   32 bytes of REAL, and what comparing two of them gives (GCC's vector
 *                       extension: lane-wise selects that the compiler would not vectorize itself)
 *
 *     #define FASTBP_TEMPLATE "elementwise_impl.h"
 *     #include "each_real.h"
 *
 * (No include guard: it is meant to be included once per family.)
 */
#ifndef FASTBP_TEMPLATE
#error "define FASTBP_TEMPLATE (the template file) before including each_real.h"
#endif

#define FASTBP_FN_(name, sfx) fastbp_##name##_##sfx
#define FASTBP_FN(name, sfx) FASTBP_FN_(name, sfx)
#define FN(name) FASTBP_FN(name, SFX)

#define REAL float
#define SFX f32
#define EXP fastbp_exp1_f32
#define LOG logf
#define SQRT sqrtf
#define FABS fabsf
#define GEMM fastbp_gemm_f32
typedef REAL FN(vec) __attribute__((vector_size(32)));
typedef int32_t FN(mask) __attribute__((vector_size(32)));
#include FASTBP_TEMPLATE
#undef REAL
#undef SFX
#undef EXP
#undef LOG
#undef SQRT
#undef FABS
#undef GEMM

#define REAL double
#define SFX f64
#define EXP fastbp_exp1_f64
#define LOG log
#define SQRT sqrt
#define FABS fabs
#define GEMM fastbp_gemm_f64
typedef REAL FN(vec) __attribute__((vector_size(32)));
typedef int64_t FN(mask) __attribute__((vector_size(32)));
#include FASTBP_TEMPLATE
#undef REAL
#undef SFX
#undef EXP
#undef LOG
#undef SQRT
#undef FABS
#undef GEMM

#undef FN
#undef FASTBP_TEMPLATE
