/* fastbp._native: the CPython face of the C kernels.
 *
 * Arguments arrive through the buffer protocol (NumPy arrays work as they are), so the module
 * needs no NumPy headers to build. The Python wrapper (fastbp/backends/native.py) validates and
 * allocates; this file checks dtypes, contiguity, lengths and index ranges once more, so that a
 * direct call with bad arguments raises instead of reading or writing out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "blas.h"
#include "kernels.h" /* and omp.h, under OpenMP */

/* elementwise loops of at least this many elements run on OpenMP threads (set from Python) */
static Py_ssize_t parallel_min = PY_SSIZE_T_MAX;
/* set_num_threads refuses more OpenMP threads than this many per processor */
#define FASTBP_THREADS_PER_PROCESSOR 8

enum kind { K_REAL, K_I64, K_F64, K_BOOL };
enum real_kind { REAL_NONE = 0, REAL_F32, REAL_F64 };

#define MAX_ARGS 16
typedef struct {
    Py_buffer views[MAX_ARGS];
    int count;
    enum real_kind real; /* the float dtype shared by all K_REAL arguments */
} Args;

static void release(Args *a)
{
    for (int i = 0; i < a->count; ++i) PyBuffer_Release(&a->views[i]);
    a->count = 0;
}

static const char *strip_byteorder(const char *fmt)
{
    /* '@' and '=' mean native order; '<' is native on the little-endian machines we build for */
    return (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == '<') ? fmt + 1 : fmt;
}

/* Acquire obj as a C-contiguous buffer of `kind` with `expected` items (-1: any); returns its data. */
static void *take(Args *a, PyObject *obj, enum kind kind, int writable, const char *name, Py_ssize_t expected)
{
    Py_buffer *v = &a->views[a->count];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s array", name, writable ? ", writable" : "");
        return NULL;
    }
    a->count++;
    const char *f = strip_byteorder(v->format ? v->format : "B");
    const char *problem = NULL;
    if (kind == K_REAL) {
        enum real_kind k = (strcmp(f, "f") == 0 && v->itemsize == 4) ? REAL_F32
                         : (strcmp(f, "d") == 0 && v->itemsize == 8) ? REAL_F64 : REAL_NONE;
        if (k == REAL_NONE) problem = "must be float32 or float64";
        else if (a->real != REAL_NONE && k != a->real) problem = "must have the same dtype as the other float arrays";
        else a->real = k;
    } else if (kind == K_I64) {
        if (!((strcmp(f, "q") == 0 || strcmp(f, "l") == 0) && v->itemsize == 8)) problem = "must be an int64 array";
    } else if (kind == K_F64) {
        if (!(strcmp(f, "d") == 0 && v->itemsize == 8)) problem = "must be a float64 array";
    } else if (!(v->itemsize == 1 && (strcmp(f, "?") == 0 || strcmp(f, "B") == 0))) {
        problem = "must be a bool array";
    }
    if (problem) {
        PyErr_Format(PyExc_TypeError, "%s %s", name, problem);
        return NULL;
    }
    if (expected >= 0 && v->len / v->itemsize != expected) {
        PyErr_Format(PyExc_ValueError, "%s has %zd elements, expected %zd", name, v->len / v->itemsize, expected);
        return NULL;
    }
    return v->buf;
}

static Py_ssize_t items(const Args *a, int i) { return a->views[i].len / a->views[i].itemsize; }

static int check_range(const int64_t *values, Py_ssize_t n, int64_t limit, const char *name)
{
    for (Py_ssize_t i = 0; i < n; ++i)
        if (values[i] < 0 || values[i] >= limit) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] = %lld is outside [0, %lld)", name, i, (long long)values[i],
                         (long long)limit);
            return -1;
        }
    return 0;
}

#define F32(a) ((a).real == REAL_F32)
#define FAIL(a) do { release(&(a)); return NULL; } while (0)

/* SciPy's sgemm/dgemm, taken from scipy.linalg.cython_blas's table of C functions when the module
 * loads (never from Python, so no caller can hand over another function). A capsule's name is
 * the C signature: both must be gemm's, of float and of double. */
static void *blas_function(PyObject *table, const char *name, const char *real)
{
    PyObject *capsule = PyDict_GetItemString(table, name); /* borrowed */
    const char *signature = capsule && PyCapsule_CheckExact(capsule) ? PyCapsule_GetName(capsule) : NULL;
    if (!signature || strncmp(signature, "void (char *, char *, int *, int *, int *, ", 43) != 0 || !strstr(signature, real)) {
        PyErr_Format(PyExc_ImportError, "fastbp._native: scipy.linalg.cython_blas has no %s of the expected signature", name);
        return NULL;
    }
    return PyCapsule_GetPointer(capsule, signature);
}

static int load_blas(void)
{
    PyObject *module = PyImport_ImportModule("scipy.linalg.cython_blas");
    PyObject *table = module ? PyObject_GetAttrString(module, "__pyx_capi__") : NULL;
    void *s = table ? blas_function(table, "sgemm", "_s *") : NULL, *d = s ? blas_function(table, "dgemm", "_d *") : NULL;
    Py_XDECREF(table);
    Py_XDECREF(module);
    if (!d) return -1;
    fastbp_sgemm = (fastbp_sgemm_t)s;
    fastbp_dgemm = (fastbp_dgemm_t)d;
    return 0;
}

/* sizes passed from Python: a ValueError unless each is at least `least` */
static int sizes_at_least(int least, const char *what, int count, const int *sizes)
{
    for (int i = 0; i < count; ++i)
        if (sizes[i] < least) {
            PyErr_Format(PyExc_ValueError, "%s: sizes must be at least %d, got %d", what, least, sizes[i]);
            return -1;
        }
    return 0;
}

/* n rows of k items: a ValueError unless both are non-negative and n * k fits in Py_ssize_t. */
static int matrix_items(Py_ssize_t n, Py_ssize_t k, const char *what, Py_ssize_t *items)
{
    if (n < 0 || k < 0 || __builtin_mul_overflow(n, k, items)) {
        PyErr_Format(PyExc_ValueError, "%s: bad shape (%zd, %zd)", what, n, k);
        return -1;
    }
    return 0;
}

static PyObject *affine_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *oW, *ob, *oout;
    int n, k, m;
    if (!PyArg_ParseTuple(args, "OOOOiii:affine_forward", &ox, &oW, &ob, &oout, &n, &k, &m)) return NULL;
    if (sizes_at_least(0, "affine_forward", 3, (int[]){n, k, m}) < 0) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *x = take(&a, ox, K_REAL, 0, "x", (Py_ssize_t)n * k), *W = x ? take(&a, oW, K_REAL, 0, "W", (Py_ssize_t)k * m) : NULL;
    void *b = W ? take(&a, ob, K_REAL, 0, "b", m) : NULL, *out = b ? take(&a, oout, K_REAL, 1, "out", (Py_ssize_t)n * m) : NULL;
    if (!out) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_affine_forward_f32(x, W, b, out, n, k, m);
    else fastbp_affine_forward_f64(x, W, b, out, n, k, m);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *affine_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *od, *ox, *oW, *odx, *odW, *odb;
    int n, k, m;
    if (!PyArg_ParseTuple(args, "OOOOOOiii:affine_backward", &od, &ox, &oW, &odx, &odW, &odb, &n, &k, &m)) return NULL;
    if (sizes_at_least(0, "affine_backward", 3, (int[]){n, k, m}) < 0) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *dout = take(&a, od, K_REAL, 0, "dout", (Py_ssize_t)n * m);
    void *x = dout ? take(&a, ox, K_REAL, 0, "x", (Py_ssize_t)n * k) : NULL;
    void *W = x ? take(&a, oW, K_REAL, 0, "W", (Py_ssize_t)k * m) : NULL;
    void *dW = W ? take(&a, odW, K_REAL, 1, "dW", (Py_ssize_t)k * m) : NULL;
    void *db = dW ? take(&a, odb, K_REAL, 1, "db", m) : NULL;
    void *dx = NULL;
    if (!db) FAIL(a);
    if (odx != Py_None && !(dx = take(&a, odx, K_REAL, 1, "dx", (Py_ssize_t)n * k))) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_affine_backward_f32(dout, x, W, dx, dW, db, n, k, m);
    else fastbp_affine_backward_f64(dout, x, W, dx, dW, db, n, k, m);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

/* Elementwise kernels: (in..., out) of equal lengths; `mask` arguments are bool. */
static PyObject *relu_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *oout, *omask;
    if (!PyArg_ParseTuple(args, "OOO:relu_forward", &ox, &oout, &omask)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *x = take(&a, ox, K_REAL, 0, "x", -1);
    Py_ssize_t n = x ? items(&a, 0) : 0;
    void *out = x ? take(&a, oout, K_REAL, 1, "out", n) : NULL, *mask = out ? take(&a, omask, K_BOOL, 1, "mask", n) : NULL;
    if (!mask) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_relu_forward_f32(x, out, mask, n, parallel_min);
    else fastbp_relu_forward_f64(x, out, mask, n, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *relu_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *od, *omask, *odx;
    if (!PyArg_ParseTuple(args, "OOO:relu_backward", &od, &omask, &odx)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *dout = take(&a, od, K_REAL, 0, "dout", -1);
    Py_ssize_t n = dout ? items(&a, 0) : 0;
    void *mask = dout ? take(&a, omask, K_BOOL, 0, "mask", n) : NULL, *dx = mask ? take(&a, odx, K_REAL, 1, "dx", n) : NULL;
    if (!dx) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_relu_backward_f32(dout, mask, dx, n, parallel_min);
    else fastbp_relu_backward_f64(dout, mask, dx, n, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *sigmoid_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *oout;
    if (!PyArg_ParseTuple(args, "OO:sigmoid_forward", &ox, &oout)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *x = take(&a, ox, K_REAL, 0, "x", -1);
    Py_ssize_t n = x ? items(&a, 0) : 0;
    void *out = x ? take(&a, oout, K_REAL, 1, "out", n) : NULL;
    if (!out) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_sigmoid_forward_f32(x, out, n, parallel_min);
    else fastbp_sigmoid_forward_f64(x, out, n, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *sigmoid_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *od, *oout, *odx;
    if (!PyArg_ParseTuple(args, "OOO:sigmoid_backward", &od, &oout, &odx)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *dout = take(&a, od, K_REAL, 0, "dout", -1);
    Py_ssize_t n = dout ? items(&a, 0) : 0;
    void *out = dout ? take(&a, oout, K_REAL, 0, "out", n) : NULL, *dx = out ? take(&a, odx, K_REAL, 1, "dx", n) : NULL;
    if (!dx) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_sigmoid_backward_f32(dout, out, dx, n, parallel_min);
    else fastbp_sigmoid_backward_f64(dout, out, dx, n, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *softmax_xent_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *olab, *oy;
    int n, c;
    if (!PyArg_ParseTuple(args, "OOOii:softmax_xent_forward", &ox, &olab, &oy, &n, &c)) return NULL;
    if (sizes_at_least(1, "softmax_xent_forward", 2, (int[]){n, c}) < 0) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *x = take(&a, ox, K_REAL, 0, "x", (Py_ssize_t)n * c);
    int64_t *labels = x ? take(&a, olab, K_I64, 0, "labels", n) : NULL;
    void *y = labels ? take(&a, oy, K_REAL, 1, "y", (Py_ssize_t)n * c) : NULL;
    if (!y || check_range(labels, n, c, "labels") < 0) FAIL(a);
    double loss;
    Py_BEGIN_ALLOW_THREADS
    loss = F32(a) ? fastbp_softmax_xent_forward_f32(x, labels, y, n, c, parallel_min)
                  : fastbp_softmax_xent_forward_f64(x, labels, y, n, c, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    return PyFloat_FromDouble(loss);
}

static PyObject *softmax_xent_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oy, *olab, *odx;
    double scale;
    int n, c;
    if (!PyArg_ParseTuple(args, "OOdOii:softmax_xent_backward", &oy, &olab, &scale, &odx, &n, &c)) return NULL;
    if (sizes_at_least(1, "softmax_xent_backward", 2, (int[]){n, c}) < 0) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *y = take(&a, oy, K_REAL, 0, "y", (Py_ssize_t)n * c);
    int64_t *labels = y ? take(&a, olab, K_I64, 0, "labels", n) : NULL;
    void *dx = labels ? take(&a, odx, K_REAL, 1, "dx", (Py_ssize_t)n * c) : NULL;
    if (!dx || check_range(labels, n, c, "labels") < 0) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_softmax_xent_backward_f32(y, labels, (float)scale, dx, n, c, parallel_min);
    else fastbp_softmax_xent_backward_f64(y, labels, scale, dx, n, c, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *half_squared_error(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oy, *ot;
    if (!PyArg_ParseTuple(args, "OO:half_squared_error", &oy, &ot)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *y = take(&a, oy, K_REAL, 0, "y", -1);
    Py_ssize_t n = y ? items(&a, 0) : 0;
    void *t = y ? take(&a, ot, K_REAL, 0, "t", n) : NULL;
    if (!t) FAIL(a);
    double total = F32(a) ? fastbp_half_squared_error_f32(y, t, n) : fastbp_half_squared_error_f64(y, t, n);
    release(&a);
    return PyFloat_FromDouble(total);
}

static PyObject *scaled_difference(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oy, *ot, *odx;
    double scale;
    if (!PyArg_ParseTuple(args, "OOdO:scaled_difference", &oy, &ot, &scale, &odx)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *y = take(&a, oy, K_REAL, 0, "y", -1);
    Py_ssize_t n = y ? items(&a, 0) : 0;
    void *t = y ? take(&a, ot, K_REAL, 0, "t", n) : NULL, *dx = t ? take(&a, odx, K_REAL, 1, "dx", n) : NULL;
    if (!dx) FAIL(a);
    if (F32(a)) fastbp_scaled_difference_f32(y, t, (float)scale, dx, n, parallel_min);
    else fastbp_scaled_difference_f64(y, t, scale, dx, n, parallel_min);
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *sgd_update(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *op, *og;
    double lr;
    if (!PyArg_ParseTuple(args, "OOd:sgd_update", &op, &og, &lr)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *p = take(&a, op, K_REAL, 1, "param", -1);
    Py_ssize_t n = p ? items(&a, 0) : 0;
    void *g = p ? take(&a, og, K_REAL, 0, "grad", n) : NULL;
    if (!g) FAIL(a);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_sgd_update_f32(p, g, (float)lr, n, parallel_min);
    else fastbp_sgd_update_f64(p, g, lr, n, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *momentum_update(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *op, *og, *ov;
    double lr, momentum;
    if (!PyArg_ParseTuple(args, "OOOdd:momentum_update", &op, &og, &ov, &lr, &momentum)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *p = take(&a, op, K_REAL, 1, "param", -1);
    Py_ssize_t n = p ? items(&a, 0) : 0;
    void *g = p ? take(&a, og, K_REAL, 0, "grad", n) : NULL, *v = g ? take(&a, ov, K_REAL, 1, "velocity", n) : NULL;
    if (!v) FAIL(a);
    if (F32(a)) fastbp_momentum_update_f32(p, g, v, (float)lr, (float)momentum, n, parallel_min);
    else fastbp_momentum_update_f64(p, g, v, lr, momentum, n, parallel_min);
    release(&a);
    Py_RETURN_NONE;
}

static PyObject *adam_update(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *op, *og, *om, *ov;
    double lr_t, beta1, beta2, eps;
    if (!PyArg_ParseTuple(args, "OOOOdddd:adam_update", &op, &og, &om, &ov, &lr_t, &beta1, &beta2, &eps)) return NULL;
    Args a = {.count = 0, .real = REAL_NONE};
    void *p = take(&a, op, K_REAL, 1, "param", -1);
    Py_ssize_t n = p ? items(&a, 0) : 0;
    void *g = p ? take(&a, og, K_REAL, 0, "grad", n) : NULL, *m = g ? take(&a, om, K_REAL, 1, "m", n) : NULL;
    void *v = m ? take(&a, ov, K_REAL, 1, "v", n) : NULL;
    if (!v) FAIL(a);
    if (F32(a)) fastbp_adam_update_f32(p, g, m, v, (float)lr_t, (float)beta1, (float)beta2, (float)eps, n, parallel_min);
    else fastbp_adam_update_f64(p, g, m, v, lr_t, beta1, beta2, eps, n, parallel_min);
    release(&a);
    Py_RETURN_NONE;
}

/* ---- compact rows: a C-owned, immutable CSR copy of a data set, made once --------------- */

#define COMPACT_CAPSULE "fastbp._native.compact_rows"

typedef struct {
    Py_ssize_t n, k;
    enum real_kind real;
    int64_t *indptr;
    int32_t *indices;
    void *values;
    int64_t *column_counts; /* where the fused step splits the columns between threads */
} Compact;

/* A large array that training reads at random rows: on Linux, in 2 MiB pages where the kernel
 * allows it (transparent huge pages), so that each row read does not first miss the TLB. */
static void *random_access_alloc(size_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (bytes >= huge) {
        void *p = NULL;
        if (posix_memalign(&p, huge, (bytes + huge - 1) / huge * huge) != 0) return NULL;
        madvise(p, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE); /* advice only: failure is harmless */
        return p;
    }
#endif
    return malloc(bytes);
}

static void compact_destroy(Compact *c)
{
    if (!c) return;
    free(c->indptr);
    free(c->indices);
    free(c->values);
    free(c->column_counts);
    free(c);
}

static void compact_free(PyObject *capsule) { compact_destroy(PyCapsule_GetPointer(capsule, COMPACT_CAPSULE)); }

/* compact_rows(x, n, k, max_nnz) -> (capsule, nnz): the nonzeros of the (n, k) matrix x, row by
 * row; (None, nnz) when there are more than max_nnz of them (dense data stays dense). Only
 * this function makes the capsule, so its column indices are in range by construction and the
 * kernels need not check them on every call. */
static PyObject *compact_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox;
    Py_ssize_t n, k;
    long long max_nnz;
    if (!PyArg_ParseTuple(args, "OnnL:compact_rows", &ox, &n, &k, &max_nnz)) return NULL;
    Py_ssize_t n_items;
    if (k < 1 || k > INT32_MAX || matrix_items(n, k, "compact_rows", &n_items) < 0)
        return PyErr_Format(PyExc_ValueError, "compact_rows: bad shape (%zd, %zd)", n, k);
    Args a = {.count = 0, .real = REAL_NONE};
    void *x = take(&a, ox, K_REAL, 0, "x", n_items); /* x holds n * k items: n + 1 offsets fit in memory too */
    if (!x) FAIL(a);
    Compact *c = calloc(1, sizeof(Compact));
    if (!c || !(c->indptr = malloc(sizeof(int64_t) * (size_t)(n + 1)))) {
        compact_destroy(c);
        release(&a);
        return PyErr_NoMemory();
    }
    c->n = n;
    c->k = k;
    c->real = a.real;
    const size_t item = F32(a) ? sizeof(float) : sizeof(double);
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_count_nonzeros_f32(x, n, k, c->indptr);
    else fastbp_count_nonzeros_f64(x, n, k, c->indptr);
    Py_END_ALLOW_THREADS
    const int64_t nnz = c->indptr[n];
    if (nnz > max_nnz) {
        release(&a);
        compact_destroy(c);
        return Py_BuildValue("OL", Py_None, (long long)nnz);
    }
    c->indices = random_access_alloc(sizeof(int32_t) * (size_t)(nnz > 0 ? nnz : 1));
    c->values = random_access_alloc(item * (size_t)(nnz > 0 ? nnz : 1));
    c->column_counts = malloc(sizeof(int64_t) * (size_t)k);
    if (!c->indices || !c->values || !c->column_counts) {
        release(&a);
        compact_destroy(c);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (F32(a)) fastbp_compact_rows_f32(x, n, k, c->indptr, c->indices, c->values);
    else fastbp_compact_rows_f64(x, n, k, c->indptr, c->indices, c->values);
    fastbp_column_counts(c->indices, nnz, c->column_counts, k);
    Py_END_ALLOW_THREADS
    release(&a);
    PyObject *capsule = PyCapsule_New(c, COMPACT_CAPSULE, compact_free);
    if (!capsule) {
        compact_destroy(c);
        return NULL;
    }
    return Py_BuildValue("NL", capsule, (long long)nnz);
}

/* The x of the whole-network kernels: a float array of n_rows * k items, or compact rows of that
 * shape (whose dtype then becomes the one the other float arguments must share). */
static int take_rows(Args *a, PyObject *ox, Py_ssize_t n_rows, int64_t k, fastbp_rows *rows)
{
    if (PyCapsule_IsValid(ox, COMPACT_CAPSULE)) {
        const Compact *c = PyCapsule_GetPointer(ox, COMPACT_CAPSULE);
        if (n_rows < 0 || c->n != n_rows || c->k != k) {
            PyErr_Format(PyExc_ValueError, "x: compact rows of shape (%zd, %zd), expected (%zd, %lld)", c->n, c->k, n_rows,
                         (long long)k);
            return -1;
        }
        a->real = c->real;
        *rows = (fastbp_rows){.dense = NULL, .indptr = c->indptr, .indices = c->indices, .values = c->values,
                              .column_counts = c->column_counts};
        return 0;
    }
    Py_ssize_t n_items;
    if (matrix_items(n_rows, (Py_ssize_t)k, "x", &n_items) < 0) return -1;
    void *x = take(a, ox, K_REAL, 0, "x", n_items);
    if (!x) return -1;
    *rows = (fastbp_rows){.dense = x};
    return 0;
}

/* Checks a network's layer sizes; returns the number of layers or -1. */
/* Checks a network's layer sizes: positive, and every buffer the kernels size from them (the
 * parameters, and `batch` rows of every layer's output) countable in bytes. Returns the number of
 * layers, or -1 with a ValueError. */
static int network_layers(Args *a, PyObject *osizes, int64_t **sizes, Py_ssize_t batch)
{
    *sizes = take(a, osizes, K_I64, 0, "sizes", -1);
    if (!*sizes) return -1;
    Py_ssize_t count = items(a, a->count - 1);
    if (count < 2 || count > INT_MAX) { PyErr_SetString(PyExc_ValueError, "sizes needs at least 2 entries"); return -1; }
    const int64_t *s = *sizes;
    for (Py_ssize_t i = 0; i < count; ++i)
        if (s[i] < 1 || s[i] > INT32_MAX) { PyErr_SetString(PyExc_ValueError, "sizes must be positive 32-bit integers"); return -1; }
    int64_t params = 0, outputs = 0, term, bytes;
    int overflow = 0;
    for (Py_ssize_t i = 0; i + 1 < count; ++i) {
        overflow |= __builtin_mul_overflow(s[i], s[i + 1], &term);
        overflow |= __builtin_add_overflow(params, term + s[i + 1], &params);
        overflow |= __builtin_add_overflow(outputs, s[i + 1], &outputs);
    }
    overflow |= __builtin_mul_overflow(params, (int64_t)sizeof(double), &bytes);
    overflow |= __builtin_mul_overflow(outputs, (int64_t)batch * (int64_t)sizeof(double), &bytes);
    if (overflow || bytes > PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "sizes: the network's buffers would not fit in memory");
        return -1;
    }
    return (int)(count - 1);
}

static PyObject *train_steps(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *olab, *obat, *op, *og, *osizes, *ohyper, *ostate, *olosses;
    int activation, optimizer;
    long long step0;
    Py_ssize_t n_rows, n_steps;
    int batch;
    if (!PyArg_ParseTuple(args, "OnOOnOOOiiOOLO:train_steps", &ox, &n_rows, &olab, &obat, &n_steps, &op, &og, &osizes,
                          &activation, &optimizer, &ohyper, &ostate, &step0, &olosses)) return NULL;
    if (activation < 0 || activation > 1 || optimizer < 0 || optimizer > 2)
        return PyErr_Format(PyExc_ValueError, "bad activation %d or optimizer %d", activation, optimizer);
    Args a = {.count = 0, .real = REAL_NONE};
    int64_t *sizes;
    int n_layers = network_layers(&a, osizes, &sizes, 1);
    if (n_layers < 0) FAIL(a);
    Py_ssize_t count = fastbp_parameter_count(sizes, n_layers);
    fastbp_rows x;
    if (take_rows(&a, ox, n_rows, sizes[0], &x) < 0) FAIL(a);
    int64_t *labels = take(&a, olab, K_I64, 0, "labels", n_rows);
    int64_t *batches = labels ? take(&a, obat, K_I64, 0, "batches", -1) : NULL;
    if (!batches) FAIL(a);
    Py_ssize_t n_batch_items = items(&a, a.count - 1);
    batch = n_steps > 0 ? (int)(n_batch_items / n_steps) : 0;
    if (n_steps < 0 || (n_steps > 0 && (n_batch_items / n_steps > INT_MAX || batch < 1 ||
                                        (Py_ssize_t)batch * n_steps != n_batch_items))) {
        PyErr_SetString(PyExc_ValueError, "batches must hold n_steps rows of equal length");
        FAIL(a);
    }
    Args sizes_again = {.count = 0, .real = REAL_NONE}; /* the buffers of `batch` rows fit too */
    int64_t *unused;
    const int fits = network_layers(&sizes_again, osizes, &unused, batch);
    release(&sizes_again);
    if (fits < 0) FAIL(a);
    void *params = take(&a, op, K_REAL, 1, "params", count), *grads = params ? take(&a, og, K_REAL, 1, "grads", count) : NULL;
    void *hyper = grads ? take(&a, ohyper, K_REAL, 0, "hyper", 4) : NULL;
    void *state = hyper ? take(&a, ostate, K_REAL, 1, "state", 2 * count) : NULL;
    double *losses = state ? take(&a, olosses, K_F64, 1, "losses", -1) : NULL;
    if (!losses) FAIL(a);
    if (items(&a, a.count - 1) < n_steps) { PyErr_SetString(PyExc_ValueError, "losses is shorter than n_steps"); FAIL(a); }
    if (check_range(batches, n_batch_items, n_rows, "batches") < 0 || check_range(labels, n_rows, sizes[n_layers], "labels") < 0)
        FAIL(a);
    Py_ssize_t done;
    Py_BEGIN_ALLOW_THREADS
    done = F32(a) ? fastbp_train_steps_f32(&x, labels, batches, n_steps, batch, params, grads, sizes, n_layers, activation,
                                           optimizer, hyper, state, step0, losses)
                  : fastbp_train_steps_f64(&x, labels, batches, n_steps, batch, params, grads, sizes, n_layers, activation,
                                           optimizer, hyper, state, step0, losses);
    Py_END_ALLOW_THREADS
    release(&a);
    if (done < 0) return PyErr_NoMemory();
    return PyLong_FromSsize_t(done);
}

static PyObject *predict_labels(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *op, *osizes, *olabels;
    Py_ssize_t n_rows;
    int activation;
    if (!PyArg_ParseTuple(args, "OnOOiO:predict_labels", &ox, &n_rows, &op, &osizes, &activation, &olabels)) return NULL;
    if (activation < 0 || activation > 1) return PyErr_Format(PyExc_ValueError, "bad activation %d", activation);
    Args a = {.count = 0, .real = REAL_NONE};
    int64_t *sizes;
    int n_layers = network_layers(&a, osizes, &sizes, 2048); /* rows per prediction chunk */
    if (n_layers < 0) FAIL(a);
    fastbp_rows x;
    if (take_rows(&a, ox, n_rows, sizes[0], &x) < 0) FAIL(a);
    void *params = take(&a, op, K_REAL, 0, "params", fastbp_parameter_count(sizes, n_layers));
    int64_t *labels = params ? take(&a, olabels, K_I64, 1, "labels", n_rows) : NULL;
    if (!labels) FAIL(a);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = F32(a) ? fastbp_predict_labels_f32(&x, n_rows, params, sizes, n_layers, activation, labels)
                    : fastbp_predict_labels_f64(&x, n_rows, params, sizes, n_layers, activation, labels);
    Py_END_ALLOW_THREADS
    release(&a);
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *set_parallel_min(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n:set_parallel_min", &n)) return NULL;
    if (n < 1) return PyErr_Format(PyExc_ValueError, "set_parallel_min needs a positive size, got %zd", n);
    parallel_min = n;
    Py_RETURN_NONE;
}

static PyObject *set_num_threads(PyObject *self, PyObject *args)
{
    (void)self;
    int n;
    if (!PyArg_ParseTuple(args, "i:set_num_threads", &n)) return NULL;
    if (n < 1) return PyErr_Format(PyExc_ValueError, "set_num_threads needs a positive count, got %d", n);
#ifdef _OPENMP
    /* more threads than processors is allowed (the tests split work that way on small machines),
     * but not so many that starting them could exhaust the machine */
    const int most = FASTBP_THREADS_PER_PROCESSOR * omp_get_num_procs();
    if (n > most)
        return PyErr_Format(PyExc_ValueError, "set_num_threads: at most %d threads on this machine of %d processors, got %d",
                            most, omp_get_num_procs(), n);
    omp_set_num_threads(n);
#endif
    Py_RETURN_NONE;
}

static PyObject *openmp(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
#ifdef _OPENMP
    return PyLong_FromLong(omp_get_max_threads());
#else
    return PyLong_FromLong(0);
#endif
}

static PyMethodDef native_methods[] = {
    {"set_parallel_min", set_parallel_min, METH_VARARGS, "set_parallel_min(n): thread elementwise loops of n elements or more."},
    {"set_num_threads", set_num_threads, METH_VARARGS, "set_num_threads(n): OpenMP threads of the elementwise loops."},
    {"openmp", openmp, METH_NOARGS, "openmp() -> OpenMP threads available, or 0 when built without OpenMP."},
    {"affine_forward", affine_forward, METH_VARARGS, "affine_forward(x, W, b, out, n, k, m): out = x W + b."},
    {"affine_backward", affine_backward, METH_VARARGS,
     "affine_backward(dout, x, W, dx or None, dW, db, n, k, m): dx = dout W^T, dW = x^T dout, db = sum(dout)."},
    {"relu_forward", relu_forward, METH_VARARGS, "relu_forward(x, out, mask): mask = x <= 0; out = where(mask, 0, x)."},
    {"relu_backward", relu_backward, METH_VARARGS, "relu_backward(dout, mask, dx): dx = where(mask, 0, dout)."},
    {"sigmoid_forward", sigmoid_forward, METH_VARARGS, "sigmoid_forward(x, out)."},
    {"sigmoid_backward", sigmoid_backward, METH_VARARGS, "sigmoid_backward(dout, out, dx): dx = dout (1 - out) out."},
    {"softmax_xent_forward", softmax_xent_forward, METH_VARARGS,
     "softmax_xent_forward(x, labels, y, n, c) -> mean cross-entropy; fills y with softmax(x)."},
    {"softmax_xent_backward", softmax_xent_backward, METH_VARARGS,
     "softmax_xent_backward(y, labels, scale, dx, n, c): dx = scale (y - onehot(labels))."},
    {"half_squared_error", half_squared_error, METH_VARARGS, "half_squared_error(y, t) -> sum((y - t)^2) / 2."},
    {"scaled_difference", scaled_difference, METH_VARARGS, "scaled_difference(y, t, scale, dx): dx = (y - t) scale."},
    {"sgd_update", sgd_update, METH_VARARGS, "sgd_update(param, grad, lr): param -= lr grad, in place."},
    {"momentum_update", momentum_update, METH_VARARGS, "momentum_update(param, grad, v, lr, momentum), in place."},
    {"adam_update", adam_update, METH_VARARGS, "adam_update(param, grad, m, v, lr_t, beta1, beta2, eps), in place."},
    {"compact_rows", compact_rows, METH_VARARGS,
     "compact_rows(x, n, k) -> (rows, nnz): the nonzeros of the (n, k) matrix x, for train_steps and predict_labels."},
    {"train_steps", train_steps, METH_VARARGS,
     "train_steps(x or compact rows, n_rows, labels, batches, n_steps, params, grads, sizes, activation, optimizer, hyper, state, "
     "step0, losses) -> steps done."},
    {"predict_labels", predict_labels, METH_VARARGS,
     "predict_labels(x or compact rows, n_rows, params, sizes, activation, labels): argmax of the network's output per row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "fastbp's ahead-of-time compiled C kernels (see kernels/ in the source tree).", -1,
    native_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (load_blas() < 0) return NULL;
    return PyModule_Create(&native_module);
}
