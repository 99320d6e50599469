/* Convolution and max pooling over (N, C, H, W) batches, sample by sample on the OpenMP threads:
 * a sample's windows read in place from its padded input at stride 1 (a table of offsets), or
 * laid out as the columns of a (C FH FW, OH OW) matrix in a buffer of its thread, and multiplied
 * by fastbp's own register-tiled loops (rows.c); nothing calls BLAS inside the threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define FASTBP_TEMPLATE "conv_impl.h"
#include "each_real.h"
