/*
 * args.c - the checks and conversions every entry point of the binding shares:
 * array arguments (ndarray, C-contiguous, dtype, native byte order, aligned,
 * writeable, in that order), float32 arguments of a given size, image
 * batches, lesson-time index ranges, ints and seeds, progress hooks, the one
 * status -> exception mapping, and the capsule handles of the two networks.
 * See binding.h for who checks what.
 */
#include "python/binding.h"

#include <stdlib.h>

#include "core/common.h"

/* ------------------------------------------------------------------------ */
/* arrays                                                                    */
/* ------------------------------------------------------------------------ */

static const char* dtype_name(int typenum) {
    switch (typenum) {
    case NPY_FLOAT32: return "float32";
    case NPY_FLOAT64: return "float64";
    case NPY_INT64: return "int64";
    case NPY_UINT32: return "uint32";
    default: return "?";
    }
}

PyArrayObject* check_array(PyObject* obj, const char* F, const char* name, int typenum,
                           int writeable) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a numpy.ndarray, got %s",
                     F, name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject* a = (PyArrayObject*)obj;
    if (!PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be C-contiguous", F, name);
        return NULL;
    }
    if (PyArray_TYPE(a) != typenum) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must have dtype %s", F, name,
                     dtype_name(typenum));
        return NULL;
    }
    if (!PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be in native byte order", F, name);
        return NULL;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be aligned", F, name);
        return NULL;
    }
    if (writeable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be writeable", F, name);
        return NULL;
    }
    return a;
}

/* A (T1,) float64 table, read only. */
static PyArrayObject* check_table(PyObject* obj, const char* F, const char* name, npy_intp T1) {
    PyArrayObject* a = check_array(obj, F, name, NPY_FLOAT64, 0);
    if (!a) return NULL;
    if (PyArray_NDIM(a) != 1 || PyArray_DIM(a, 0) != T1) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (T+1,) = (%zd,)",
                     F, name, (Py_ssize_t)T1);
        return NULL;
    }
    return a;
}

int check_tables(PyObject* a_obj, const char* a_name, PyObject* b_obj, const char* b_name,
                 const char* F, const double** a, const double** b, int* T) {
    PyArrayObject* aa = check_array(a_obj, F, a_name, NPY_FLOAT64, 0);
    if (!aa) return -1;
    npy_intp T1 = PyArray_SIZE(aa);
    if (PyArray_NDIM(aa) != 1 || T1 < 2 || T1 > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (T+1,) with 1 <= T <= %d",
                     F, a_name, MAX_TIMESTEPS);
        return -1;
    }
    PyArrayObject* ba = check_table(b_obj, F, b_name, T1);
    if (!ba) return -1;
    *a = (const double*)PyArray_DATA(aa);
    *b = (const double*)PyArray_DATA(ba);
    *T = (int)T1 - 1;
    return 0;
}

float* f32_arg(PyObject* obj, const char* F, const char* name, size_t count, int writeable,
               int optional, int* ok) {
    *ok = 0;
    if (optional && obj == Py_None) { *ok = 1; return NULL; }
    PyArrayObject* a = check_array(obj, F, name, NPY_FLOAT32, writeable);
    if (!a) return NULL;
    if ((size_t)PyArray_SIZE(a) != count) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must hold %zu values, got %zd", F, name, count,
                     (Py_ssize_t)PyArray_SIZE(a));
        return NULL;
    }
    *ok = 1;
    return (float*)PyArray_DATA(a);
}

int image_arg(PyObject* obj, const char* F, const char* name, int C, int S, int writeable,
              int B_expected, int* B_out, float** data) {
    PyArrayObject* a = check_array(obj, F, name, NPY_FLOAT32, writeable);
    if (!a) return -1;
    if (PyArray_NDIM(a) != 4 || PyArray_DIM(a, 1) != C || PyArray_DIM(a, 2) != S ||
        PyArray_DIM(a, 3) != S || PyArray_DIM(a, 0) < 1 ||
        (B_expected > 0 && PyArray_DIM(a, 0) != B_expected)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (%s, %d, %d, %d)", F, name,
                     B_expected > 0 ? "B" : "N", C, S, S);
        return -1;
    }
    if (PyArray_DIM(a, 0) > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "%s(): batch too large", F);
        return -1;
    }
    *B_out = (int)PyArray_DIM(a, 0);
    *data = (float*)PyArray_DATA(a);
    return 0;
}

int check_timesteps(const int64_t* t, size_t n, int T, const char* F, const char* name) {
    for (size_t i = 0; i < n; i++) {
        if (t[i] < 1 || t[i] > T) {
            PyErr_Format(PyExc_ValueError, "%s(): %s must be in 1..T = 1..%d, got %lld", F, name,
                         T, (long long)t[i]);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* scalars and statuses                                                      */
/* ------------------------------------------------------------------------ */

int parse_uint(PyObject* obj, const char* F, const char* name, int bits, uint64_t* out) {
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be an int", F, name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if ((v == (unsigned long long)-1 && PyErr_Occurred()) || (bits < 64 && v >> bits)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s(): %s must be in [0, 2**%d)", F, name, bits);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int parse_seed(PyObject* obj, const char* F, uint64_t* seed) {
    return parse_uint(obj, F, "seed", 64, seed);
}

int check_hook(PyObject* hook, int every, const char* F) {
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_Format(PyExc_TypeError, "%s(): hook must be callable or None", F);
        return -1;
    }
    if (every < 1) {        /* the loop takes step % every */
        PyErr_Format(PyExc_ValueError, "%s(): hook_every must be >= 1, got %d", F, every);
        return -1;
    }
    return 0;
}

int labels_arg(PyObject* obj, const char* F, const char* name, size_t n, int64_t K,
               const int64_t** out) {
    *out = NULL;
    if (obj == Py_None) return 0;
    if (K <= 0) {
        PyErr_Format(PyExc_ValueError, "%s(): %s given, but the network is unconditional "
                     "(num_class_embeds is None)", F, name);
        return -1;
    }
    PyArrayObject* a = check_array(obj, F, name, NPY_INT64, 0);
    if (!a) return -1;
    if (PyArray_NDIM(a) != 1 || (size_t)PyArray_DIM(a, 0) != n) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (%zu,), one per image", F, name,
                     n);
        return -1;
    }
    const int64_t* l = PyArray_DATA(a);
    for (size_t i = 0; i < n; i++)
        if (l[i] < 0 || l[i] >= K) {
            PyErr_Format(PyExc_ValueError, "%s(): %s must be in 0..%lld (num_class_embeds - 1), "
                         "got %lld", F, name, (long long)(K - 1), (long long)l[i]);
            return -1;
        }
    *out = l;
    return 0;
}

PyObject* raise_status(int st, const char* F, const char* what) {
    switch (st) {
    case DDPM_ERR_STALE:
        PyErr_Format(PyExc_RuntimeError, "%s(): the activations this backward needs are gone "
                     "(another forward ran since, or none ran): call forward on this batch "
                     "right before backward", F);
        break;
    case DDPM_ERR_NONFINITE:
        PyErr_Format(PyExc_ValueError, "%s(): %s contains NaN or Inf", F, what);
        break;
    case DDPM_ERR_TIMESTEP:
        PyErr_Format(PyExc_ValueError, "%s(): t must be in 1..T", F);
        break;
    case DDPM_ERR_NOMEM:
        PyErr_Format(PyExc_MemoryError, "%s(): out of memory", F);
        break;
    case DDPM_ERR_INTERRUPTED:
        if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
        break;
    default:
        PyErr_Format(PyExc_ValueError, "%s(): invalid %s", F, what);
        break;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* network handles                                                           */
/* ------------------------------------------------------------------------ */

static void handle_capsule_free(PyObject* cap) {
    NetHandle* h = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (h) {
        h->kind->free_net(h->net);
        free(h);
    }
}

PyObject* handle_new(void* net, const HandleKind* kind) {
    NetHandle* h = calloc(1, sizeof *h);
    if (!h) {
        kind->free_net(net);
        return PyErr_NoMemory();
    }
    h->net = net;
    h->kind = kind;
    PyObject* cap = PyCapsule_New(h, kind->capsule, handle_capsule_free);
    if (!cap) {
        kind->free_net(net);
        free(h);
    }
    return cap;
}

NetHandle* handle_get(PyObject* cap, const HandleKind* kind, const char* F) {
    NetHandle* h = PyCapsule_GetPointer(cap, kind->capsule);
    if (!h) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): expected a %s handle from %s()", F, kind->noun,
                     kind->create);
        return NULL;
    }
    if (h->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s(): this %s is in use by another thread", F,
                     kind->noun);
        return NULL;
    }
    return h;
}
