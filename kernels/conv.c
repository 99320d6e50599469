/* Convolution and max pooling over (N, C, H, W) batches, sample by sample on the OpenMP threads:
 * a sample's windows laid out as the rows of its im2col matrix (OH OW, C FH FW) in a buffer of
 * its thread, then multiplied by fastbp's own row loops (rows.c), the small filter matrix held in
 * the first-level cache; nothing calls BLAS inside the threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define FASTBP_TEMPLATE "conv_impl.h"
#include "each_real.h"
