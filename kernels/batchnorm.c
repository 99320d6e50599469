/* Batch normalization of the columns of x (N, D): forward in two passes (shifted sums, then the
 * output), backward in two (the column sums, then dx). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define FASTBP_TEMPLATE "batchnorm_impl.h"
#include "each_real.h"
