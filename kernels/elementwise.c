/* Elementwise activations: ReLU (value and mask in one pass; backward from the mask) and Sigmoid. */
#include <math.h>
#include <string.h>

#include "kernels.h"

#define FASTBP_TEMPLATE "elementwise_impl.h"
#include "each_real.h"
