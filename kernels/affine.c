/* The affine layer, forward and backward, by the one product rule of kernels.h: fastbp's own row
 * loops (rows.c) or BLAS (blas.c). The layers and the engine call these same kernels. */
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "kernels.h"

#define FASTBP_TEMPLATE "affine_impl.h"
#include "each_real.h"
