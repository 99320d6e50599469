/* fastbp._native: the CPython face of the C kernels.
 *
 * Arguments arrive through the buffer protocol (NumPy arrays work as they are), so the module
 * needs no NumPy headers to build. The Python wrapper (fastbp/backends/native.py) validates
 * and allocates; this file checks formats, contiguity and lengths once more, so that a direct
 * call with bad arguments raises instead of reading or writing out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "kernels.h"

enum real_kind { REAL_NONE = 0, REAL_F32, REAL_F64 };

/* A C-contiguous buffer, acquired with its format so that dtypes can be checked. */
static int acquire(PyObject *obj, Py_buffer *view, int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s array", name,
                     writable ? ", writable" : "");
        return -1;
    }
    return 0;
}

static const char *strip_byteorder(const char *fmt)
{
    /* '@' and '=' mean native order; '<' is native on the little-endian machines we build for */
    return (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == '<') ? fmt + 1 : fmt;
}

static enum real_kind real_kind_of(const Py_buffer *v)
{
    const char *f = strip_byteorder(v->format ? v->format : "B");
    if (strcmp(f, "f") == 0 && v->itemsize == 4) return REAL_F32;
    if (strcmp(f, "d") == 0 && v->itemsize == 8) return REAL_F64;
    return REAL_NONE;
}

static int is_bool_buffer(const Py_buffer *v)
{
    const char *f = strip_byteorder(v->format ? v->format : "B");
    return v->itemsize == 1 && (strcmp(f, "?") == 0 || strcmp(f, "B") == 0);
}

static void release_all(Py_buffer *views, int count)
{
    for (int i = 0; i < count; ++i) PyBuffer_Release(&views[i]);
}

/* Acquire `count` buffers; all float ones share one kind and every buffer has `n` items. */
struct arg_spec { PyObject *obj; const char *name; int writable; int is_mask; };

static int acquire_args(struct arg_spec *specs, Py_buffer *views, int count,
                        enum real_kind *kind, Py_ssize_t *n)
{
    *kind = REAL_NONE;
    for (int i = 0; i < count; ++i) {
        if (acquire(specs[i].obj, &views[i], specs[i].writable, specs[i].name) < 0) {
            release_all(views, i);
            return -1;
        }
        Py_ssize_t items = views[i].len / views[i].itemsize;
        const char *problem = NULL;
        if (specs[i].is_mask) {
            if (!is_bool_buffer(&views[i])) problem = "must be a bool array";
        } else {
            enum real_kind k = real_kind_of(&views[i]);
            if (k == REAL_NONE) problem = "must be float32 or float64";
            else if (*kind != REAL_NONE && k != *kind) problem = "must have the same dtype as the other arrays";
            else *kind = k;
        }
        if (!problem && i > 0 && items != *n) problem = "has a different number of elements from the first array";
        if (problem) {
            PyErr_Format(PyExc_TypeError, "%s %s", specs[i].name, problem);
            release_all(views, i + 1);
            return -1;
        }
        if (i == 0) *n = items;
    }
    return 0;
}

static PyObject *sgd_update(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *param, *grad;
    double lr;
    if (!PyArg_ParseTuple(args, "OOd:sgd_update", &param, &grad, &lr)) return NULL;
    struct arg_spec specs[2] = {{param, "param", 1, 0}, {grad, "grad", 0, 0}};
    Py_buffer v[2];
    enum real_kind kind;
    Py_ssize_t n;
    if (acquire_args(specs, v, 2, &kind, &n) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (kind == REAL_F32) fastbp_sgd_update_f32(v[0].buf, v[1].buf, (float)lr, n);
    else fastbp_sgd_update_f64(v[0].buf, v[1].buf, lr, n);
    Py_END_ALLOW_THREADS
    release_all(v, 2);
    Py_RETURN_NONE;
}

static PyObject *relu_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x, *out, *mask;
    if (!PyArg_ParseTuple(args, "OOO:relu_forward", &x, &out, &mask)) return NULL;
    struct arg_spec specs[3] = {{x, "x", 0, 0}, {out, "out", 1, 0}, {mask, "mask", 1, 1}};
    Py_buffer v[3];
    enum real_kind kind;
    Py_ssize_t n;
    if (acquire_args(specs, v, 3, &kind, &n) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (kind == REAL_F32) fastbp_relu_forward_f32(v[0].buf, v[1].buf, v[2].buf, n);
    else fastbp_relu_forward_f64(v[0].buf, v[1].buf, v[2].buf, n);
    Py_END_ALLOW_THREADS
    release_all(v, 3);
    Py_RETURN_NONE;
}

static PyObject *relu_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *dout, *mask, *dx;
    if (!PyArg_ParseTuple(args, "OOO:relu_backward", &dout, &mask, &dx)) return NULL;
    struct arg_spec specs[3] = {{dout, "dout", 0, 0}, {mask, "mask", 0, 1}, {dx, "dx", 1, 0}};
    Py_buffer v[3];
    enum real_kind kind;
    Py_ssize_t n;
    if (acquire_args(specs, v, 3, &kind, &n) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (kind == REAL_F32) fastbp_relu_backward_f32(v[0].buf, v[1].buf, v[2].buf, n);
    else fastbp_relu_backward_f64(v[0].buf, v[1].buf, v[2].buf, n);
    Py_END_ALLOW_THREADS
    release_all(v, 3);
    Py_RETURN_NONE;
}

static PyMethodDef native_methods[] = {
    {"sgd_update", sgd_update, METH_VARARGS,
     "sgd_update(param, grad, lr): param -= lr * grad, in place (float32 or float64)."},
    {"relu_forward", relu_forward, METH_VARARGS,
     "relu_forward(x, out, mask): mask = x <= 0; out = where(mask, 0, x)."},
    {"relu_backward", relu_backward, METH_VARARGS,
     "relu_backward(dout, mask, dx): dx = where(mask, 0, dout)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "fastbp's ahead-of-time compiled C kernels (see kernels/ in the source tree).", -1,
    native_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
