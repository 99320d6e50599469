/* fastbp._native: the CPython face of the C kernels.
 *
 * Arguments arrive through the buffer protocol (NumPy arrays work as they are), so the module
 * needs no NumPy headers to build. The Python wrapper (fastbp/backends/native.py) validates and
 * allocates; this file checks dtypes, contiguity, lengths and index ranges once more, so that a
 * direct call with bad arguments raises instead of reading or writing out of bounds.
 *
 * The kernels with plain array arguments are bound by one table (FASTBP_BINDINGS below), one
 * line each, and called through one function (call_binding) that checks every argument and
 * releases the GIL. The engine's entry points, compact rows and the settings are written out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
/* NumPy's C API only to make arrays (fresh outputs, below); arrays are read through the buffer protocol */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL fastbp_native_ARRAY_API
#include <numpy/arrayobject.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

#include "blas.h"
#include "kernels.h" /* and omp.h, under OpenMP */

/* elementwise loops of at least this many elements run on OpenMP threads (set from Python) */
static Py_ssize_t parallel_min = PY_SSIZE_T_MAX;
/* set_num_threads refuses more OpenMP threads than this many per processor */
#define FASTBP_THREADS_PER_PROCESSOR 8

/* ---- arguments: buffers of a checked kind and length ---------------------------------------- */

enum kind { K_REAL, K_I64, K_F64, K_F32, K_BOOL, K_U32 };
enum real_kind { REAL_NONE = 0, REAL_F32, REAL_F64 };

#define MAX_ARGS 16 /* arrays per call */
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
    } else if (kind == K_F32) {
        if (!(strcmp(f, "f") == 0 && v->itemsize == 4)) problem = "must be a float32 array";
    } else if (kind == K_U32) {
        if (!((strcmp(f, "I") == 0 || strcmp(f, "L") == 0) && v->itemsize == 4)) problem = "must be a uint32 array";
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


/* n rows of k items: a ValueError unless both are non-negative and n * k fits in Py_ssize_t. */
static int matrix_items(Py_ssize_t n, Py_ssize_t k, const char *what, Py_ssize_t *items)
{
    if (n < 0 || k < 0 || __builtin_mul_overflow(n, k, items)) {
        PyErr_Format(PyExc_ValueError, "%s: bad shape (%zd, %zd)", what, n, k);
        return -1;
    }
    return 0;
}

/* ---- the binding table -------------------------------------------------------------------
 *
 * X(name, arrays, ints, doubles, returns, rule, call): the Python function `name` takes the
 * arrays, then one int per letter of `ints`, then `doubles` floats, and runs `call` for the
 * arrays' dtype when `rule` holds (else a ValueError).
 *   arrays: "name:kind:length" each; kind r (float, read), w (float, written), w? (written or
 *           None), n / N (a float / bool output the module makes, shaped like the first array, and
 *           returns: not an argument; a NumPy call per output from Python costs 0.2-0.4 us at
 *           batch 1), b / B (bool, read / written), l / L (int64, read / written; l<X: labels in
 *           [0, X)), d (float64, read), s (float32, read: an input to float64 weights), U (uint32,
 *           written); length: a product of int letters, digits, H (the hyper vector's length,
 *           unless H is an int's letter) and * (the length of the first * array: elementwise kernels).
 *   ints:   lowercase >= 0, uppercase >= 1; o is an update rule's code; all but T fit an int.
 *   rule, call: with P(i) the i-th array, I(i) / L(i) the i-th int (int / int64), D(i) the i-th
 *           float, n the * length and pmin the threading threshold.
 *   returns: NONE, FLOAT (the call's value) or STATUS (negative: out of memory); a binding with
 *           n / N outputs returns them instead (one, or a tuple in their order).
 */
#define NOTHING(call) ((call), 0.0)
/* a window's output size: the windows of K at stride S over X padded by P, ending at the edge */
#define WINDOWS(X, K, S, P, OUT) ((X) + 2 * (P) >= (K) && ((X) + 2 * (P) - (K)) % (S) == 0 && ((X) + 2 * (P) - (K)) / (S) + 1 == (OUT))
#define CONV_SIZES WINDOWS(L(2), L(5), L(7), L(8), L(9)) && WINDOWS(L(3), L(6), L(7), L(8), L(10))
#define POOL_SIZES WINDOWS(L(2), L(4), L(6), L(7), L(8)) && WINDOWS(L(3), L(5), L(6), L(7), L(9))
#define FASTBP_BINDINGS(X)                                                                                              \
    X(relu_forward, "x:r:* out:n:* mask:N:*", "", 0, NONE, 1, NOTHING(FN(relu_forward)(P(0), P(1), P(2), n, pmin)))    \
    X(relu_backward, "dout:r:* mask:b:* dx:n:*", "", 0, NONE, 1,                                                        \
      NOTHING(FN(relu_backward)(P(0), P(1), P(2), n, pmin)))                                                            \
    X(exp, "x:r:* out:n:*", "", 0, NONE, 1, NOTHING(FN(exp)(P(0), P(1), n, pmin)))                                     \
    X(sigmoid_forward, "x:r:* out:n:*", "", 0, NONE, 1, NOTHING(FN(sigmoid_forward)(P(0), P(1), n, pmin)))             \
    X(sigmoid_backward, "dout:r:* out:r:* dx:n:*", "", 0, NONE, 1,                                                      \
      NOTHING(FN(sigmoid_backward)(P(0), P(1), P(2), n, pmin)))                                                         \
    X(dropout_forward, "x:r:* draw:d:* out:w:* mask:B:*", "", 1, NONE, 1,                                               \
      NOTHING(FN(dropout_forward)(P(0), P(1), D(0), P(2), P(3), n, pmin)))                                              \
    X(dropout_forward_mt, "x:r:* state:U:K out:w:* mask:B:*", "K", 1, NONE, L(0) == FASTBP_MT19937_WORDS + 1,            \
      NOTHING(FN(dropout_forward_mt)(P(0), P(1), D(0), P(2), P(3), n, pmin)))                                           \
    X(dropout_backward, "dout:r:* mask:b:* dx:w:*", "", 0, NONE, 1,                                                     \
      NOTHING(FN(dropout_backward)(P(0), P(1), P(2), n, pmin)))                                                         \
    X(affine_forward, "x:r:nk W:r:km b:r:m out:w:nm", "nkm", 0, STATUS, 1,                                             \
      FN(affine_forward_layer)(P(0), 0, P(1), P(2), P(3), I(0), I(1), I(2)))                                            \
    X(affine_forward_f32x, "x:s:nk W:r:km b:r:m out:w:nm", "nkm", 0, STATUS, 1,                                         \
      FN(affine_forward_layer)(P(0), 1, P(1), P(2), P(3), I(0), I(1), I(2)))                                            \
    X(affine_backward, "dout:r:nm x:r:nk W:r:km dx:w?:nk dW:w:km db:w:m", "nkm", 0, STATUS, 1,                         \
      FN(affine_backward_layer)(P(0), P(1), 0, P(2), P(3), P(4), P(5), I(0), I(1), I(2)))                               \
    X(affine_backward_f32x, "dout:r:nm x:s:nk W:r:km dx:w?:nk dW:w:km db:w:m", "nkm", 0, STATUS, 1,                    \
      FN(affine_backward_layer)(P(0), P(1), 1, P(2), P(3), P(4), P(5), I(0), I(1), I(2)))                               \
    X(conv_forward, "x:r:NCHW W:r:FCKL b:r:F out:w:NFOQ", "NCHWFKLSpOQ", 0, STATUS, CONV_SIZES,                         \
      FN(conv_forward)(P(0), P(1), P(2), P(3), NULL, I(0), I(1), I(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9), I(10), pmin)) \
    X(conv_backward, "dout:r:NFOQ x:r:NCHW W:r:FCKL dx:w?:NCHW dW:w:FCKL db:w:F", "NCHWFKLSpOQ", 0, STATUS, CONV_SIZES,  \
      FN(conv_backward)(P(0), P(1), P(2), P(3), P(4), P(5), I(0), I(1), I(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9), \
                        I(10), pmin))                                                                                   \
    X(pool_forward, "x:r:NCHW out:w:NCOQ arg_max:L:NCOQ", "NCHWKLSpOQ", 0, NONE, POOL_SIZES,                             \
      NOTHING(FN(pool_forward)(P(0), P(1), P(2), I(0), I(1), I(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9), pmin)))   \
    X(pool_backward, "dout:r:NCOQ arg_max:l:NCOQ dx:w:NCHW", "NCHWKLSpOQ", 0, NONE, POOL_SIZES,                          \
      NOTHING(FN(pool_backward)(P(0), P(1), P(2), I(0), I(1), I(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9), pmin)))  \
    X(batchnorm_forward, "x:r:ND gamma:r:D beta:r:D out:w:ND xn:w:ND mean:w:D var:w:D std:w:D", "ND", 1, STATUS, 1,      \
      FN(batchnorm_forward)(P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), I(0), I(1), D(0)))                          \
    X(batchnorm_infer, "x:r:nD gamma:r:D beta:r:D mean:r:D var:r:D out:w:nD", "nD", 1, NONE, 1,                          \
      NOTHING(FN(batchnorm_infer)(P(0), P(1), P(2), P(3), P(4), P(5), I(0), I(1), D(0))))                               \
    X(batchnorm_backward, "dout:r:ND xn:r:ND std:r:D gamma:r:D dx:w:ND dgamma:w:D dbeta:w:D", "ND", 0, STATUS, 1,        \
      FN(batchnorm_backward)(P(0), P(1), P(2), P(3), P(4), P(5), P(6), I(0), I(1)))                                     \
    X(softmax_xent_forward, "x:r:NC labels:l:N<C y:w:NC", "NC", 0, FLOAT, 1,                                            \
      FN(softmax_xent_forward)(P(0), P(1), P(2), I(0), I(1), pmin))                                                     \
    X(softmax_xent_backward, "y:r:NC labels:l:N<C dx:w:NC", "NC", 1, NONE, 1,                                           \
      NOTHING(FN(softmax_xent_backward)(P(0), P(1), (REAL)D(0), P(2), I(0), I(1), pmin)))                               \
    X(one_hot_labels, "t:r:NC labels:L:N", "NC", 0, FLOAT, 1, FN(one_hot_labels)(P(0), P(1), I(0), I(1)))            \
    X(half_squared_error, "y:r:* t:r:*", "", 0, FLOAT, 1, FN(half_squared_error)(P(0), P(1), n))                       \
    X(scaled_difference, "y:r:* t:r:* dx:w:*", "", 1, NONE, 1,                                                          \
      NOTHING(FN(scaled_difference)(P(0), P(1), (REAL)D(0), P(2), n, pmin)))                                           \
    X(optimizer_step, "param:w:* grad:r:* m:w:* v:w:* hyper:r:H", "oT", 0, NONE, 1,                                     \
      NOTHING(FN(optimizer_step)(I(0), P(0), P(1), P(2), P(3), n, P(4), L(1), pmin)))

enum returns { NONE, FLOAT, STATUS };
typedef double (*adapter)(void *const *p, const long long *ints, const double *doubles, Py_ssize_t n, Py_ssize_t pmin);
typedef int (*rule_check)(const long long *ints);

/* one adapter per binding and type: fastbp_bind_<name>_<f32|f64> */
#define P(i) (p[i])
#define I(i) ((int)ints[i])
#define L(i) ((int64_t)ints[i])
#define D(i) (doubles[i])
#define ADAPTER(name, arrays, int_letters, n_doubles, returns, rule, call)                                             \
    static double FN(bind_##name)(void *const *p, const long long *ints, const double *doubles, Py_ssize_t n,          \
                                  Py_ssize_t pmin)                                                                      \
    {                                                                                                                   \
        (void)p; (void)ints; (void)doubles; (void)n; (void)pmin;                                                        \
        return (double)(call);                                                                                          \
    }
#define RULE(name, arrays, int_letters, n_doubles, returns, rule, call) \
    static int rule_##name(const long long *ints) { (void)ints; return rule; }
FASTBP_BINDINGS(RULE)
#undef RULE
#define FASTBP_TEMPLATE "bindings_impl.h"
#include "each_real.h"
#undef ADAPTER
#undef P
#undef I
#undef L
#undef D

typedef struct {
    const char *name, *arrays, *ints;
    int doubles;
    enum returns returns;
    rule_check rule;
    adapter f32, f64;
} binding;

#define ENTRY(name, arrays, int_letters, n_doubles, returns, rule, call) \
    {#name, arrays, int_letters, n_doubles, returns, rule_##name, FASTBP_FN(bind_##name, f32), FASTBP_FN(bind_##name, f64)},
static const binding bindings[] = {FASTBP_BINDINGS(ENTRY)};
#undef ENTRY
#define N_BINDINGS ((int)(sizeof bindings / sizeof bindings[0]))

/* An array argument, parsed once from its "name:kind:length" text. */
typedef struct {
    char name[24], length[8], limit;
    enum kind kind;
    int writable, optional, fresh; /* fresh: made here (n / N), not passed */
} array_spec;

#define MAX_SPECS 8
static array_spec specs[N_BINDINGS][MAX_SPECS];
static int spec_count[N_BINDINGS], n_fresh[N_BINDINGS];

static int parse_specs(void)
{
    for (int b = 0; b < N_BINDINGS; ++b) {
        const char *at = bindings[b].arrays;
        while (*at) {
            array_spec *s = &specs[b][spec_count[b]++];
            char kind[4] = {0};
            int used = 0;
            if (spec_count[b] > MAX_SPECS || sscanf(at, "%23[^:]:%3[^:]:%7[^ <]%n", s->name, kind, s->length, &used) != 3) {
                PyErr_Format(PyExc_SystemError, "fastbp._native: bad binding text %s", bindings[b].arrays);
                return -1;
            }
            at += used;
            if (*at == '<') { s->limit = at[1]; at += 2; }
            s->kind = (kind[0] == 'l' || kind[0] == 'L') ? K_I64 : (kind[0] == 'b' || kind[0] == 'B' || kind[0] == 'N') ? K_BOOL
                    : kind[0] == 'd' ? K_F64 : kind[0] == 's' ? K_F32 : kind[0] == 'U' ? K_U32 : K_REAL;
            s->fresh = kind[0] == 'n' || kind[0] == 'N';
            s->writable = kind[0] == 'w' || kind[0] == 'B' || kind[0] == 'L' || kind[0] == 'U' || s->fresh;
            s->optional = kind[1] == '?';
            if (s->fresh && (spec_count[b] == 1 || strcmp(s->length, "*") != 0)) { /* shaped like the first array */
                PyErr_Format(PyExc_SystemError, "fastbp._native: bad fresh output in %s", bindings[b].arrays);
                return -1;
            }
            n_fresh[b] += s->fresh;
            while (*at == ' ') ++at;
        }
    }
    return 0;
}

/* The value of a length text: a product of int letters, digits, H, and * (= star). */
static int length_of(const char *text, const binding *b, const long long *ints, Py_ssize_t star, Py_ssize_t *out)
{
    Py_ssize_t total = 1;
    for (const char *c = text; *c; ++c) {
        Py_ssize_t factor;
        const char *letter = strchr(b->ints, *c); /* an int's letter first: H may be a height */
        if (letter) factor = (Py_ssize_t)ints[letter - b->ints];
        else if (*c == '*') factor = star;
        else if (*c == 'H') factor = FASTBP_HYPER_LENGTH;
        else if (*c >= '0' && *c <= '9') factor = *c - '0';
        else factor = -1;
        if (factor < 0 || __builtin_mul_overflow(total, factor, &total)) {
            PyErr_Format(PyExc_ValueError, "%s: sizes too large", b->name);
            return -1;
        }
    }
    *out = total;
    return 0;
}

static int check_int(const binding *b, char letter, long long value)
{
    const long long least = (letter >= 'A' && letter <= 'Z') ? 1 : 0;
    const long long most = letter == 'o' ? FASTBP_OPTIMIZER_COUNT - 1 : letter == 'T' ? LLONG_MAX : INT_MAX;
    if (value >= least && value <= most) return 0;
    PyErr_Format(PyExc_ValueError, "%s: %c must lie in [%lld, %lld], got %lld", b->name, letter, least, most, value);
    return -1;
}

static PyObject *call_binding(PyObject *self, PyObject *args)
{
    const int index = (int)PyLong_AsLong(self);
    const binding *b = &bindings[index];
    const int n_arrays = spec_count[index] - n_fresh[index], n_ints = (int)strlen(b->ints); /* passed arrays */
    if (PyTuple_GET_SIZE(args) != n_arrays + n_ints + b->doubles)
        return PyErr_Format(PyExc_TypeError, "%s takes %d arguments (arrays %s, ints %s, %d floats), got %zd", b->name,
                            n_arrays + n_ints + b->doubles, b->arrays, b->ints, b->doubles, PyTuple_GET_SIZE(args));
    long long ints[12];
    double doubles[4];
    for (int i = 0; i < n_ints; ++i) {
        ints[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(args, n_arrays + i));
        if (PyErr_Occurred() || check_int(b, b->ints[i], ints[i]) < 0) return NULL;
    }
    for (int i = 0; i < b->doubles; ++i) {
        doubles[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(args, n_arrays + n_ints + i));
        if (PyErr_Occurred()) return NULL;
    }
    if (!b->rule(ints))
        return PyErr_Format(PyExc_ValueError, "%s: the sizes %s do not fit together (windows must end at the edges)", b->name,
                            b->ints);
    Args a = {.count = 0, .real = REAL_NONE};
    void *p[MAX_SPECS] = {0};
    PyObject *made[MAX_SPECS] = {0}; /* the fresh outputs, returned */
    int n_made = 0;
    Py_ssize_t star = -1;
    for (int i = 0, given = 0; i < spec_count[index]; ++i) {
        const array_spec *s = &specs[index][i];
        PyObject *obj;
        if (s->fresh) { /* shaped like the first array; float ones in the float arrays' dtype */
            const Py_buffer *first = &a.views[0];
            obj = made[n_made++] = PyArray_SimpleNew(first->ndim, (npy_intp *)first->shape,
                                                      s->kind == K_BOOL ? NPY_BOOL : F32(a) ? NPY_FLOAT32 : NPY_FLOAT64);
            if (!obj) {
                --n_made;
                goto fail;
            }
        } else {
            obj = PyTuple_GET_ITEM(args, given++);
        }
        if (s->optional && obj == Py_None) continue;
        Py_ssize_t expected = -1;
        if ((!(strcmp(s->length, "*") == 0 && star < 0) && length_of(s->length, b, ints, star, &expected) < 0)
            || !(p[i] = take(&a, obj, s->kind, s->writable, s->name, expected)))
            goto fail;
        if (star < 0 && strcmp(s->length, "*") == 0) star = items(&a, a.count - 1);
        if (s->limit && check_range(p[i], items(&a, a.count - 1), ints[strchr(b->ints, s->limit) - b->ints], s->name) < 0)
            goto fail;
    }
    const adapter call = a.real == REAL_F32 ? b->f32 : b->f64;
    double value;
    Py_BEGIN_ALLOW_THREADS
    value = call(p, ints, doubles, star, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    if (b->returns == STATUS && value < 0) {
        for (int j = 0; j < n_made; ++j) Py_DECREF(made[j]);
        return PyErr_NoMemory();
    }
    if (n_made == 1) return made[0];
    if (n_made > 1) {
        PyObject *outputs = PyTuple_New(n_made);
        for (int j = 0; j < n_made; ++j) {
            if (outputs) PyTuple_SET_ITEM(outputs, j, made[j]); /* (steals the reference) */
            else Py_DECREF(made[j]);
        }
        return outputs;
    }
    if (b->returns == FLOAT) return PyFloat_FromDouble(value);
    Py_RETURN_NONE;
fail:
    release(&a);
    for (int j = 0; j < n_made; ++j) Py_DECREF(made[j]);
    return NULL;
}

/* ---- BLAS -------------------------------------------------------------------------------- */

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

static char blas_name[512] = "none";

/* NumPy's own OpenBLAS: the scipy-openblas64 library its wheels carry in numpy.libs, already
 * loaded by NumPy (never loaded anew here), with 64-bit integer sizes. 0 when found. */
static int load_numpy_blas(void)
{
#if defined(__linux__) || defined(__APPLE__)
    PyObject *globals = PyDict_New();
    PyObject *done = globals ? PyRun_String(
        "import glob, os, numpy\n"
        "paths = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), 'numpy.libs',\n"
        "                                      'libscipy_openblas64_*.so')))\n",
        Py_file_input, globals, globals) : NULL;
    PyObject *paths = done ? PyDict_GetItemString(globals, "paths") : NULL; /* borrowed */
    const char *path = paths && PyList_Check(paths) && PyList_GET_SIZE(paths) > 0 ? PyUnicode_AsUTF8(PyList_GET_ITEM(paths, 0)) : NULL;
    void *library = path ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    void *s = library ? dlsym(library, "scipy_sgemm_64_") : NULL, *d = library ? dlsym(library, "scipy_dgemm_64_") : NULL;
    if (s && d) {
        fastbp_set_blas(s, d, 1, dlsym(library, "openblas_set_num_threads_local"));
        snprintf(blas_name, sizeof blas_name, "NumPy's OpenBLAS (%s)", path);
    }
    Py_XDECREF(done);
    Py_XDECREF(globals);
    PyErr_Clear(); /* not finding it is no error: SciPy's serves */
    return s && d ? 0 : -1;
#else
    return -1;
#endif
}

/* The BLAS of blas.h: NumPy's where found (unless FASTBP_BLAS=scipy), else SciPy's. */
static int load_blas(void)
{
    const char *choice = getenv("FASTBP_BLAS");
    if (!(choice && strcmp(choice, "scipy") == 0) && load_numpy_blas() == 0) return 0;
    PyObject *module = PyImport_ImportModule("scipy.linalg.cython_blas");
    PyObject *table = module ? PyObject_GetAttrString(module, "__pyx_capi__") : NULL;
    void *s = table ? blas_function(table, "sgemm", "_s *") : NULL, *d = s ? blas_function(table, "dgemm", "_d *") : NULL;
    Py_XDECREF(table);
    Py_XDECREF(module);
    if (!d) return -1;
    fastbp_set_blas(s, d, 0, NULL);
    snprintf(blas_name, sizeof blas_name, "SciPy's OpenBLAS (scipy.linalg.cython_blas)");
    return 0;
}

static PyObject *blas(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return PyUnicode_FromString(blas_name);
}

/* ---- compact rows: a C-owned, immutable CSR copy of a data set, made once --------------- */

#define COMPACT_CAPSULE "fastbp._native.compact_rows"
#define COMPACT_SPLIT_THREADS 64 /* the most threads whose row splits a set keeps */

typedef struct {
    Py_ssize_t n, k;
    enum real_kind real;
    int64_t *indptr;
    int32_t *indices;
    void *values;
    int64_t *column_counts; /* where the fused step splits the columns between threads */
    /* each row's splits for the column ranges of t threads (fastbp_row_splits), made at a first
     * training call on t threads and kept (a call still running may read them) */
    int32_t *splits[COMPACT_SPLIT_THREADS + 1];
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
    for (int t = 0; t <= COMPACT_SPLIT_THREADS; ++t) free(c->splits[t]);
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

/* ---- the engine ------------------------------------------------------------------------- */

/* The x of the engine: a float array of n_rows * k items, or compact rows of that shape (whose
 * dtype then becomes the one the other float arguments must share). `threads` above 1: compact
 * rows come with their splits for that many threads (made once, while the GIL is held: about 2 ms
 * for MNIST's 60000 images; without memory for them, the engine finds each batch row's split). */
/* x as the engine's rows: compact rows, or a dense matrix of the network's dtype (or, where
 * float32_ok, a float32 one into a float64 network: prediction converts as it reads). */
static int take_rows(Args *a, PyObject *ox, Py_ssize_t n_rows, int64_t k, fastbp_rows *rows, int threads, int float32_ok)
{
    if (PyCapsule_IsValid(ox, COMPACT_CAPSULE)) {
        Compact *c = PyCapsule_GetPointer(ox, COMPACT_CAPSULE);
        if (n_rows < 0 || c->n != n_rows || c->k != k) {
            PyErr_Format(PyExc_ValueError, "x: compact rows of shape (%zd, %zd), expected (%zd, %lld)", c->n, c->k, n_rows,
                         (long long)k);
            return -1;
        }
        if (a->real != REAL_NONE && a->real != c->real) {
            PyErr_SetString(PyExc_TypeError, "x: compact rows must have the same dtype as the other float arrays");
            return -1;
        }
        a->real = c->real;
        *rows = (fastbp_rows){.dense = NULL, .indptr = c->indptr, .indices = c->indices, .values = c->values,
                              .column_counts = c->column_counts};
        if (threads > 1 && threads <= COMPACT_SPLIT_THREADS) {
            if (!c->splits[threads]) c->splits[threads] = fastbp_row_splits(rows, c->n, (int)c->k, threads);
            rows->splits = c->splits[threads];
            rows->split_threads = threads;
        }
        return 0;
    }
    Py_ssize_t n_items;
    if (matrix_items(n_rows, (Py_ssize_t)k, "x", &n_items) < 0) return -1;
    const int f32 = float32_ok && a->real == REAL_F64 && PyArray_Check(ox) && PyArray_TYPE((PyArrayObject *)ox) == NPY_FLOAT32;
    void *x = take(a, ox, f32 ? K_F32 : K_REAL, 0, "x", n_items);
    if (!x) return -1;
    *rows = (fastbp_rows){.dense = x, .dense_f32 = f32};
    return 0;
}

#define FIELD(program, i, field) ((program)[(ptrdiff_t)(i) * FASTBP_OP_FIELDS + (field)])

/* A convolution's or pooling's record: sizes in range, windows that end at the edges, in and out
 * the products of its shapes, a convolution's parameters inside the buffer. NULL when it holds. */
static const char *window_op_problem(const int64_t *op, Py_ssize_t n_params)
{
    const int64_t *f = op + FASTBP_FIELD_SHAPE;
    for (int k = FASTBP_C; k <= FASTBP_OW; ++k)
        if (f[k] < (k == FASTBP_PAD ? 0 : 1) || f[k] > INT32_MAX / 4) return "has a window op with a size out of range";
    if (op[FASTBP_FIELD_CODE] == FASTBP_OP_POOL && f[FASTBP_F] != f[FASTBP_C]) return "has a pooling op that changes channels";
    for (int axis = 0; axis < 2; ++axis) {
        const int64_t size = f[FASTBP_H + axis] + 2 * f[FASTBP_PAD] - f[FASTBP_KH + axis];
        if (size < 0 || size % f[FASTBP_STRIDE] || size / f[FASTBP_STRIDE] + 1 != f[FASTBP_OH + axis])
            return "has a window op whose windows do not end at the edges";
    }
    int64_t in, out;
    if (__builtin_mul_overflow(f[FASTBP_C] * f[FASTBP_H], f[FASTBP_W], &in) ||
        __builtin_mul_overflow(f[FASTBP_F] * f[FASTBP_OH], f[FASTBP_OW], &out) || op[FASTBP_FIELD_IN] != in ||
        op[FASTBP_FIELD_OUT] != out) /* (each size is below 2^29: the first products fit) */
        return "has a window op whose in or out is not the product of its shapes";
    if (op[FASTBP_FIELD_CODE] == FASTBP_OP_CONV) {
        const int64_t at = op[FASTBP_FIELD_PARAM_AT];
        int64_t window, size, end;
        if (at < 0 || __builtin_mul_overflow(f[FASTBP_C] * f[FASTBP_KH], f[FASTBP_KW], &window) ||
            __builtin_mul_overflow(f[FASTBP_F], window + 1, &size) || __builtin_add_overflow(at, size, &end) ||
            end > n_params)
            return "has parameters outside the parameter buffer";
    }
    return NULL;
}

/* A batch normalization's record: in = out, gamma and beta inside the parameter buffer, its
 * running statistics inside the n_stats of the stats buffer, a momentum in [0, 1] and an eps > 0. */
static const char *batchnorm_op_problem(const int64_t *op, Py_ssize_t n_params, Py_ssize_t n_stats)
{
    double momentum, eps;
    memcpy(&momentum, &op[FASTBP_FIELD_MOMENTUM], sizeof momentum);
    memcpy(&eps, &op[FASTBP_FIELD_EPS], sizeof eps);
    const int64_t d = op[FASTBP_FIELD_IN], at = op[FASTBP_FIELD_PARAM_AT], stats_at = op[FASTBP_FIELD_STATS_AT];
    if (op[FASTBP_FIELD_OUT] != d) return "has an elementwise op whose sizes differ";
    if (at < 0 || at > n_params - 2 * d) return "has parameters outside the parameter buffer";
    if (stats_at < 0 || stats_at > n_stats - 2 * d)
        return "has a batch normalization whose running statistics lie outside stats";
    if (!(momentum >= 0 && momentum <= 1) || !(eps > 0 && eps < INFINITY))
        return "has a batch normalization momentum outside [0, 1] or an eps that is not positive";
    return NULL;
}

/* Checks a network's program (kernels.h): op records whose sizes chain, parameters inside the
 * n_params buffer (running statistics inside n_stats), the loss last, and every buffer the engine
 * sizes from them (`batch` rows of every op's output) countable in bytes. Returns the number of
 * ops, or -1 with a ValueError. */
static int take_program(Args *a, PyObject *oprogram, Py_ssize_t n_params, Py_ssize_t n_stats, Py_ssize_t batch,
                        const int64_t **program)
{
    const int64_t *ops = take(a, oprogram, K_I64, 0, "program", -1);
    if (!ops) return -1;
    const Py_ssize_t fields = items(a, a->count - 1);
    const Py_ssize_t n_ops = fields / FASTBP_OP_FIELDS;
    const char *problem = NULL;
    if (fields % FASTBP_OP_FIELDS || n_ops < 2) problem = "must hold at least 2 op records";
    else if (n_ops > FASTBP_MAX_OPS) problem = "has more than 65536 ops";
    else if (FIELD(ops, n_ops - 1, FASTBP_FIELD_CODE) != FASTBP_OP_SOFTMAX_LOSS) problem = "must end with the loss";
    int64_t outputs = 0;
    for (Py_ssize_t i = 0; !problem && i < n_ops; ++i) {
        const int64_t code = FIELD(ops, i, FASTBP_FIELD_CODE), in = FIELD(ops, i, FASTBP_FIELD_IN);
        const int64_t out = FIELD(ops, i, FASTBP_FIELD_OUT), at = FIELD(ops, i, FASTBP_FIELD_PARAM_AT);
        int64_t size = 0, end = 0;
        if (code < 0 || code >= FASTBP_OP_COUNT || (code == FASTBP_OP_SOFTMAX_LOSS && i != n_ops - 1)) problem = "has an unknown op";
        else if (in < 1 || out < 1 || in > INT32_MAX || out > INT32_MAX) problem = "has a size outside [1, 2^31)";
        else if (i > 0 && in != FIELD(ops, i - 1, FASTBP_FIELD_OUT)) problem = "has an op whose input is not the previous output";
        else if (code == FASTBP_OP_BATCHNORM) problem = batchnorm_op_problem(&FIELD(ops, i, 0), n_params, n_stats);
        else if (code == FASTBP_OP_DROPOUT && (FIELD(ops, i, FASTBP_FIELD_RATIO) < 0 ||
                                               FIELD(ops, i, FASTBP_FIELD_RATIO) >= FASTBP_RATIO_SCALE))
            problem = "has a dropout ratio outside [0, 1)";
        else if (code == FASTBP_OP_CONV || code == FASTBP_OP_POOL) problem = window_op_problem(&FIELD(ops, i, 0), n_params);
        else if (code != FASTBP_OP_AFFINE && in != out) problem = "has an elementwise op whose sizes differ";
        else if (code == FASTBP_OP_AFFINE && (at < 0 || __builtin_mul_overflow(in + 1, out, &size) ||
                                              __builtin_add_overflow(at, size, &end) || end > n_params))
            problem = "has parameters outside the parameter buffer";
        else if (__builtin_add_overflow(outputs, out, &outputs)) problem = "is too large";
    }
    int64_t bytes;
    if (!problem && __builtin_mul_overflow(outputs, (int64_t)batch * (int64_t)sizeof(double), &bytes)) problem = "is too large";
    if (problem) {
        PyErr_Format(PyExc_ValueError, "program %s", problem);
        return -1;
    }
    *program = ops;
    return (int)n_ops;
}

/* The engine's network and data: params and the running statistics stats (both writable for
 * training, and then compact rows come with their splits for the OpenMP threads), a program
 * checked against them for `batch` rows a pass, and x. Returns the number of ops, or -1 with the
 * error set. */
static int take_network(Args *a, PyObject *op, PyObject *ostats, int writable, PyObject *oprogram, Py_ssize_t batch,
                        PyObject *ox, Py_ssize_t n_rows, void **params, double **stats, const int64_t **program,
                        fastbp_rows *x)
{
    if (!(*params = take(a, op, K_REAL, writable, "params", -1))) return -1;
    const Py_ssize_t n_params = items(a, a->count - 1);
    *stats = take(a, ostats, K_F64, writable, "stats", -1);
    if (!*stats && PyErr_Occurred()) return -1; /* (an empty array may have no data) */
    const int n_ops = take_program(a, oprogram, n_params, items(a, a->count - 1), batch, program);
    /* (prediction, which writes no parameters, also reads float32 rows into a float64 net) */
    if (n_ops < 0 ||
        take_rows(a, ox, n_rows, FIELD(*program, 0, FASTBP_FIELD_IN), x, writable ? FASTBP_MAX_THREADS() : 1, !writable) < 0)
        return -1;
    if (!x->dense && FIELD(*program, 0, FASTBP_FIELD_CODE) != FASTBP_OP_AFFINE) {
        PyErr_SetString(PyExc_ValueError, "compact rows feed only a first affine op");
        return -1;
    }
    return n_ops;
}

/* Ctrl-C during a training call: Python's own handler only sets a flag that Python reads after
 * the call, a whole block of steps later (a block slowed by a busy machine took minutes). While
 * the call runs, SIGINT stops the engine before its next step instead; the caller (on Python's
 * main thread, where Python takes signals) turns that into KeyboardInterrupt with the steps done. */
static struct sigaction python_sigint;

static void on_sigint(int signal_number)
{
    (void)signal_number;
    fastbp_stop_requested = 1;
}

static int catch_sigint(void)
{
    struct sigaction mine;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = on_sigint;
    sigemptyset(&mine.sa_mask);
    fastbp_stop_requested = 0;
    return sigaction(SIGINT, &mine, &python_sigint) == 0;
}

/* Python's handler back; whether a SIGINT came meanwhile. */
static int release_sigint(void)
{
    sigaction(SIGINT, &python_sigint, NULL);
    const int came = fastbp_stop_requested;
    fastbp_stop_requested = 0;
    return came;
}

static PyObject *train_steps(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *olab, *obat, *op, *og, *oprogram, *ohyper, *ostate, *olosses, *ostats;
    int optimizer;
    long long step0;
    Py_ssize_t n_rows, n_steps;
    int catch_interrupt;
    if (!PyArg_ParseTuple(args, "OnOOnOOOiOOLOOp:train_steps", &ox, &n_rows, &olab, &obat, &n_steps, &op, &og, &oprogram,
                          &optimizer, &ohyper, &ostate, &step0, &olosses, &ostats, &catch_interrupt)) return NULL;
    if (optimizer < 0 || optimizer >= FASTBP_OPTIMIZER_COUNT)
        return PyErr_Format(PyExc_ValueError, "unknown update rule %d", optimizer);
    if (step0 < 0) return PyErr_Format(PyExc_ValueError, "step0 must be >= 0, got %lld", step0);
    Args a = {.count = 0, .real = REAL_NONE};
    int64_t *batches = take(&a, obat, K_I64, 0, "batches", -1);
    if (!batches) FAIL(a);
    const Py_ssize_t n_batch_items = items(&a, 0);
    if (n_steps < 0 || (n_steps > 0 && (n_batch_items % n_steps || n_batch_items / n_steps < 1 ||
                                        n_batch_items / n_steps > INT_MAX))) {
        PyErr_SetString(PyExc_ValueError, "batches must hold n_steps rows of equal length");
        FAIL(a);
    }
    const int batch = n_steps > 0 ? (int)(n_batch_items / n_steps) : 1;
    void *params;
    double *stats;
    const int64_t *program;
    fastbp_rows x;
    const int n_ops = take_network(&a, op, ostats, 1, oprogram, batch, ox, n_rows, &params, &stats, &program, &x);
    if (n_ops < 0) FAIL(a);
    const Py_ssize_t count = items(&a, 1);
    int64_t *labels = take(&a, olab, K_I64, 0, "labels", n_rows);
    void *grads = labels ? take(&a, og, K_REAL, 1, "grads", count) : NULL;
    void *hyper = grads ? take(&a, ohyper, K_REAL, 0, "hyper", FASTBP_HYPER_LENGTH) : NULL;
    void *state = hyper ? take(&a, ostate, K_REAL, 1, "state", 2 * count) : NULL;
    double *losses = state ? take(&a, olosses, K_F64, 1, "losses", -1) : NULL;
    if (!losses) FAIL(a);
    if (items(&a, a.count - 1) < n_steps) { PyErr_SetString(PyExc_ValueError, "losses is shorter than n_steps"); FAIL(a); }
    const int64_t classes = FIELD(program, n_ops - 1, FASTBP_FIELD_OUT);
    if (check_range(batches, n_batch_items, n_rows, "batches") < 0 || check_range(labels, n_rows, classes, "labels") < 0)
        FAIL(a);
    Py_ssize_t done;
    const int catching = catch_interrupt && catch_sigint();
    Py_BEGIN_ALLOW_THREADS
    done = a.real == REAL_F32 ? fastbp_train_steps_f32(&x, labels, batches, n_steps, batch, params, grads, count, program,
                                                       n_ops, optimizer, hyper, state, step0, losses, stats, parallel_min)
                              : fastbp_train_steps_f64(&x, labels, batches, n_steps, batch, params, grads, count, program,
                                                       n_ops, optimizer, hyper, state, step0, losses, stats, parallel_min);
    Py_END_ALLOW_THREADS
    const int interrupted = catching && release_sigint();
    release(&a);
    if (done < 0) return PyErr_NoMemory();
    return Py_BuildValue("(nO)", done, interrupted ? Py_True : Py_False);
}

static PyObject *predict_labels(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *op, *oprogram, *ostats, *olabels;
    Py_ssize_t n_rows;
    int chunk;
    if (!PyArg_ParseTuple(args, "OnOOOiO:predict_labels", &ox, &n_rows, &op, &oprogram, &ostats, &chunk, &olabels))
        return NULL;
    if (chunk < 1) return PyErr_Format(PyExc_ValueError, "chunk must be positive, got %d", chunk);
    Args a = {.count = 0, .real = REAL_NONE};
    void *params;
    double *stats;
    const int64_t *program;
    fastbp_rows x;
    const int n_ops = take_network(&a, op, ostats, 0, oprogram, 2 * (Py_ssize_t)chunk, ox, n_rows, &params, &stats, &program,
                                   &x);
    if (n_ops < 0) FAIL(a);
    const Py_ssize_t n_stats = items(&a, 1);
    int64_t *labels = take(&a, olabels, K_I64, 1, "labels", n_rows);
    if (!labels) FAIL(a);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = a.real == REAL_F32
                 ? fastbp_predict_labels_f32(&x, n_rows, params, program, n_ops, stats, n_stats, chunk, labels, parallel_min)
                 : fastbp_predict_labels_f64(&x, n_rows, params, program, n_ops, stats, n_stats, chunk, labels, parallel_min);
    Py_END_ALLOW_THREADS
    release(&a);
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

#undef FIELD

/* ---- settings and facts ------------------------------------------------------------------ */

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

/* blas_threads_local(n) -> the setting before, or -1 where the BLAS has no per-thread setting
 * (then nothing changed): the BLAS threads of products called from this thread, NumPy's included. */
static PyObject *blas_threads_local(PyObject *self, PyObject *args)
{
    (void)self;
    int n;
    if (!PyArg_ParseTuple(args, "i:blas_threads_local", &n)) return NULL;
    if (n < 1) return PyErr_Format(PyExc_ValueError, "blas_threads_local needs a positive count, got %d", n);
    return PyLong_FromLong(fastbp_blas_threads_local(n));
}

/* isa(name=None) -> (in use, the CPU's best): the row kernels' instruction set, by name; a name
 * chooses that one (at most the CPU's best), for the tests to run every version on one machine. */
static const char *const isa_names[] = {"base", "avx2", "avx512"};

static PyObject *isa(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "|z:isa", &name)) return NULL;
    if (name) {
        int chosen = -1;
        for (int i = 0; i < (int)(sizeof isa_names / sizeof *isa_names); ++i)
            if (strcmp(name, isa_names[i]) == 0) chosen = i;
        if (chosen < 0)
            return PyErr_Format(PyExc_ValueError, "isa: no instruction set %R (base, avx2 or avx512)", PyTuple_GET_ITEM(args, 0));
        if (fastbp_set_isa(chosen) < 0)
            return PyErr_Format(PyExc_ValueError, "isa: this CPU has no %s (its best: %s)", name, isa_names[fastbp_cpu_isa()]);
    }
    return Py_BuildValue("ss", isa_names[fastbp_isa()], isa_names[fastbp_cpu_isa()]);
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

/* The engine's numbers (kernels.h), for fastbp/engine.py to check its own against. */
static PyObject *constants(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i, s:i,s:i,s:i, s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i, s:i,s:i,s:i,s:i,s:i,s:i, "
        "s:i,s:i,s:i,s:i,s:i, s:i,s:i,s:i}",
        "FIELD_CODE", FASTBP_FIELD_CODE, "FIELD_PARAM_AT", FASTBP_FIELD_PARAM_AT, "FIELD_IN", FASTBP_FIELD_IN,
        "FIELD_OUT", FASTBP_FIELD_OUT, "FIELD_SHAPE", FASTBP_FIELD_SHAPE, "OP_FIELDS", FASTBP_OP_FIELDS,
        "FIELD_RATIO", FASTBP_FIELD_RATIO, "FIELD_SEED", FASTBP_FIELD_SEED, "RATIO_SCALE", FASTBP_RATIO_SCALE,
        "FIELD_MOMENTUM", FASTBP_FIELD_MOMENTUM, "FIELD_EPS", FASTBP_FIELD_EPS, "FIELD_STATS_AT", FASTBP_FIELD_STATS_AT,
        "AFFINE", FASTBP_OP_AFFINE, "RELU", FASTBP_OP_RELU, "SIGMOID", FASTBP_OP_SIGMOID, "SOFTMAX_LOSS", FASTBP_OP_SOFTMAX_LOSS,
        "CONV", FASTBP_OP_CONV, "POOL", FASTBP_OP_POOL, "DROPOUT", FASTBP_OP_DROPOUT, "BATCHNORM", FASTBP_OP_BATCHNORM,
        "SGD", FASTBP_SGD, "MOMENTUM", FASTBP_MOMENTUM, "ADAM", FASTBP_ADAM, "NESTEROV", FASTBP_NESTEROV,
        "ADAGRAD", FASTBP_ADAGRAD, "RMSPROP", FASTBP_RMSPROP,
        "HYPER_LR", FASTBP_HYPER_LR, "HYPER_BETA1", FASTBP_HYPER_BETA1, "HYPER_BETA2", FASTBP_HYPER_BETA2,
        "HYPER_EPS", FASTBP_HYPER_EPS, "HYPER_DECAY", FASTBP_HYPER_DECAY,
        "CONVERT_ROWS", FASTBP_CONVERT_ROWS, "COMPACT_MAX_PERCENT", FASTBP_COMPACT_MAX_PERCENT,
        "SOFTMAX_WORK", FASTBP_SOFTMAX_WORK);
}

static PyObject *adam_step_size(PyObject *self, PyObject *args)
{
    (void)self;
    double lr, beta1, beta2;
    long long t;
    if (!PyArg_ParseTuple(args, "dddL:adam_step_size", &lr, &beta1, &beta2, &t)) return NULL;
    return PyFloat_FromDouble(fastbp_adam_step_size(lr, beta1, beta2, t));
}

/* engine_seconds(reset) -> ((forward seconds per op code), (backward ...)): the engine's time
 * account (kernels.h); the update rule's is the backward tuple's last entry. */
static PyObject *engine_seconds(PyObject *self, PyObject *args)
{
    (void)self;
    int reset = 0;
    if (!PyArg_ParseTuple(args, "|p:engine_seconds", &reset)) return NULL;
    PyObject *both = PyTuple_New(2);
    for (int pass = 0; both && pass < 2; ++pass) {
        PyObject *row = PyTuple_New(FASTBP_OP_COUNT + 1);
        for (int c = 0; row && c <= FASTBP_OP_COUNT; ++c) PyTuple_SET_ITEM(row, c, PyFloat_FromDouble(fastbp_engine_seconds[pass][c]));
        if (!row) {
            Py_DECREF(both);
            return NULL;
        }
        PyTuple_SET_ITEM(both, pass, row);
    }
    if (reset && both) memset(fastbp_engine_seconds, 0, sizeof fastbp_engine_seconds);
    return both;
}

static PyMethodDef native_methods[] = {
    {"engine_seconds", engine_seconds, METH_VARARGS,
     "engine_seconds(reset=False) -> (forward, backward): seconds the engine spent per op code (the update last)."},
    {"set_parallel_min", set_parallel_min, METH_VARARGS, "set_parallel_min(n): thread elementwise loops of n elements or more."},
    {"set_num_threads", set_num_threads, METH_VARARGS, "set_num_threads(n): OpenMP threads of the elementwise loops."},
    {"blas_threads_local", blas_threads_local, METH_VARARGS,
     "blas_threads_local(n) -> before: BLAS threads of this thread's products (-1: this BLAS has no such setting)."},
    {"isa", isa, METH_VARARGS, "isa(name=None) -> (in use, the CPU's best): the row kernels' instruction set; a name chooses it."},
    {"openmp", openmp, METH_NOARGS, "openmp() -> OpenMP threads available, or 0 when built without OpenMP."},
    {"blas", blas, METH_NOARGS, "blas() -> which BLAS the products call."},
    {"constants", constants, METH_NOARGS, "constants() -> the engine's op, field, update-rule and hyper-vector numbers."},
    {"adam_step_size", adam_step_size, METH_VARARGS, "adam_step_size(lr, beta1, beta2, t): the C formula, for the tests."},
    {"compact_rows", compact_rows, METH_VARARGS,
     "compact_rows(x, n, k, max_nnz) -> (rows, nnz): the nonzeros of the (n, k) matrix x, for train_steps and predict_labels."},
    {"train_steps", train_steps, METH_VARARGS,
     "train_steps(x or compact rows, n_rows, labels, batches, n_steps, params, grads, program, optimizer, hyper, state, "
     "step0, losses, stats, catch_interrupt) -> (steps done, interrupted): stats, the batch normalizations' running "
     "statistics (float64), updated; with catch_interrupt (call it from Python's main thread), Ctrl-C stops the steps "
     "before the next one."},
    {"predict_labels", predict_labels, METH_VARARGS,
     "predict_labels(x or compact rows, n_rows, params, program, stats, chunk, labels): argmax of the network's output "
     "per row (batch normalization with the running statistics stats)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "fastbp's ahead-of-time compiled C kernels (see kernels/ in the source tree).", -1,
    native_methods, NULL, NULL, NULL, NULL,
};

static PyMethodDef binding_defs[N_BINDINGS];

PyMODINIT_FUNC PyInit__native(void)
{
    import_array1(NULL); /* NumPy's C API (PyArray_SimpleNew) */
    if (load_blas() < 0 || parse_specs() < 0) return NULL;
    PyObject *module = PyModule_Create(&native_module);
    if (!module) return NULL;
    for (int b = 0; b < N_BINDINGS; ++b) { /* each bound kernel: call_binding with its index as `self` */
        binding_defs[b] = (PyMethodDef){bindings[b].name, call_binding, METH_VARARGS, bindings[b].arrays};
        PyObject *index = PyLong_FromLong(b);
        PyObject *function = index ? PyCFunction_NewEx(&binding_defs[b], index, NULL) : NULL;
        Py_XDECREF(index);
        if (!function || PyModule_AddObject(module, bindings[b].name, function) < 0) {
            Py_XDECREF(function);
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(module, "MT19937_WORDS", FASTBP_MT19937_WORDS) < 0) { /* dropout_forward_mt's key */
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
