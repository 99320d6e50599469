/* Loss layers: softmax with cross-entropy (one pass per row), and half the squared error. */
#include <math.h>
#include <string.h>

#include "kernels.h"

#define FASTBP_TEMPLATE "loss_impl.h"
#include "each_real.h"
