/* The update rules, elementwise over flat parameter buffers: the layers' optimizers (fastbp/optim.py)
 * and the engine's fused step both call optimizer_step, the one place the rules are chosen. */
#include <math.h>

#include "kernels.h"

/* Adam's step size at step t (1-based), the bias corrections of m and v folded in as the book
 * does. The same formula as fastbp/engine.py's adam_step_size (tests/test_engine.py compares). */
double fastbp_adam_step_size(double lr, double beta1, double beta2, int64_t t)
{
    return lr * sqrt(1.0 - pow(beta2, (double)t)) / (1.0 - pow(beta1, (double)t));
}

#define FASTBP_TEMPLATE "optimizers_impl.h"
#include "each_real.h"
