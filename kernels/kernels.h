/* fastbp native kernels: plain C over contiguous buffers.
 *
 * Every kernel comes in a float32 (_f32) and a float64 (_f64) flavour with identical loops.
 * Callers (module.c) have already checked lengths, formats and contiguity: kernels do no
 * bounds checking of their own.
 */
#ifndef FASTBP_KERNELS_H
#define FASTBP_KERNELS_H

#include <stddef.h>

/* param -= lr * grad, elementwise, in place. */
void fastbp_sgd_update_f32(float *param, const float *grad, float lr, ptrdiff_t n);
void fastbp_sgd_update_f64(double *param, const double *grad, double lr, ptrdiff_t n);

/* mask = (x <= 0); out = mask ? 0 : x.  NaN is not <= 0, so it passes through, as in NumPy. */
void fastbp_relu_forward_f32(const float *x, float *out, unsigned char *mask, ptrdiff_t n);
void fastbp_relu_forward_f64(const double *x, double *out, unsigned char *mask, ptrdiff_t n);

/* dx = mask ? 0 : dout.  dout is only read. */
void fastbp_relu_backward_f32(const float *dout, const unsigned char *mask, float *dx, ptrdiff_t n);
void fastbp_relu_backward_f64(const double *dout, const unsigned char *mask, double *dx, ptrdiff_t n);

#endif
