/*
 * module.c - the Python binding of the ddpm core (ddpm._core).
 *
 * The only file that touches PyObject.  Each binding checks its arguments in
 * one order (ndarray, C-contiguous, dtype, native byte order, aligned,
 * writeable where written, then shapes and ranges), takes raw pointers,
 * releases the GIL around the numeric call, and turns a status into an
 * exception whose message names the function and the parameter.
 *
 * This layer is strict on purpose: the friendly conversions (float64 -> float32,
 * views -> contiguous) live in the Python package, so nothing is copied here
 * behind the caller's back.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL ddpm_ARRAY_API
#include <numpy/arrayobject.h>

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "core/rng.h"
#include "diffusion/schedule.h"
#include "diffusion/noising.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"
#include "layers/linear.h"
#include "layers/timestep.h"
#include "layers/attention.h"
#include "layers/resample.h"
#include "nets/unet.h"
#include "core/optim.h"
#include "diffusion/train.h"
#include "layers/pool.h"
#include "layers/softmax_ce.h"
#include "nets/classifier.h"

#define MAX_TIMESTEPS 1000000

/* ------------------------------------------------------------------------ */
/* argument checking                                                         */
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

/* Borrowed-reference check of one array argument. */
static PyArrayObject* check_array(PyObject* obj, const char* func, const char* name,
                                  int typenum, int writeable) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a numpy.ndarray, got %s",
                     func, name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject* a = (PyArrayObject*)obj;
    if (!PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be C-contiguous", func, name);
        return NULL;
    }
    if (PyArray_TYPE(a) != typenum) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must have dtype %s", func, name,
                     dtype_name(typenum));
        return NULL;
    }
    if (!PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be in native byte order", func, name);
        return NULL;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be aligned", func, name);
        return NULL;
    }
    if (writeable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be writeable", func, name);
        return NULL;
    }
    return a;
}

/* A (T+1,) float64 schedule table. */
static PyArrayObject* check_table(PyObject* obj, const char* func, const char* name,
                                  npy_intp T1) {
    PyArrayObject* a = check_array(obj, func, name, NPY_FLOAT64, 0);
    if (!a) return NULL;
    if (PyArray_NDIM(a) != 1 || PyArray_DIM(a, 0) != T1) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (T+1,) = (%zd,)",
                     func, name, (Py_ssize_t)T1);
        return NULL;
    }
    return a;
}

/* Turns a status of the numeric core into a Python exception. */
static PyObject* raise_status(int st, const char* func, const char* what) {
    switch (st) {
    case DDPM_ERR_NONFINITE:
        PyErr_Format(PyExc_ValueError, "%s(): %s contains NaN or Inf", func, what);
        break;
    case DDPM_ERR_TIMESTEP:
        PyErr_Format(PyExc_ValueError, "%s(): t must be in 1..T", func);
        break;
    case DDPM_ERR_NOMEM:
        PyErr_Format(PyExc_MemoryError, "%s(): out of memory", func);
        break;
    case DDPM_ERR_INTERRUPTED:
        if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
        break;
    default:
        PyErr_Format(PyExc_ValueError, "%s(): invalid %s", func, what);
        break;
    }
    return NULL;
}

static int parse_seed(PyObject* obj, const char* func, uint64_t* seed) {
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): seed must be an int", func);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s(): seed must be in [0, 2**64)", func);
        return -1;
    }
    *seed = (uint64_t)v;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* threads                                                                   */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(set_num_threads_doc,
"set_num_threads(n)\n--\n\nUse n threads in ddpm's loops and in OpenBLAS.");
static PyObject* py_set_num_threads(PyObject* self, PyObject* arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 1024) {
        PyErr_SetString(PyExc_ValueError, "set_num_threads(): n must be in 1..1024");
        return NULL;
    }
    ddpm_set_num_threads((int)n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_num_threads_doc,
"get_num_threads()\n--\n\nNumber of threads ddpm (and OpenBLAS) use.");
static PyObject* py_get_num_threads(PyObject* self, PyObject* unused) {
    (void)self; (void)unused;
    return PyLong_FromLong(ddpm_get_num_threads());
}

PyDoc_STRVAR(has_openmp_doc,
"has_openmp()\n--\n\nTrue when the core was compiled with OpenMP.");
static PyObject* py_has_openmp(PyObject* self, PyObject* unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(ddpm_has_openmp());
}

/* ------------------------------------------------------------------------ */
/* random numbers                                                            */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(philox_doc,
"philox4x32_10(counter, key)\n--\n\n"
"One Philox4x32-10 block: counter is 4 uint32, key 2 uint32; returns 4 uint32.");
/* An int in [0, 2**bits) (bits <= 64), with a ValueError naming it otherwise. */
static int parse_uint(PyObject* obj, const char* F, const char* name, int bits, uint64_t* out) {
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be an int", F, name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if ((v == (unsigned long long)-1 && PyErr_Occurred()) ||
        (bits < 64 && v >> bits)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s(): %s must be in [0, 2**%d)", F, name, bits);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static PyObject* py_philox(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "philox4x32_10";
    PyObject *co, *ko;
    if (!PyArg_ParseTuple(args, "OO:philox4x32_10", &co, &ko)) return NULL;
    if (!PyTuple_Check(co) || PyTuple_GET_SIZE(co) != 4 || !PyTuple_Check(ko) ||
        PyTuple_GET_SIZE(ko) != 2) {
        PyErr_Format(PyExc_TypeError, "%s(): counter must be a 4-tuple and key a 2-tuple", F);
        return NULL;
    }
    uint32_t ctr[4], key[2], out[4];
    for (int i = 0; i < 4; i++) {
        uint64_t v;
        if (parse_uint(PyTuple_GET_ITEM(co, i), F, "counter words", 32, &v)) return NULL;
        ctr[i] = (uint32_t)v;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t v;
        if (parse_uint(PyTuple_GET_ITEM(ko, i), F, "key words", 32, &v)) return NULL;
        key[i] = (uint32_t)v;
    }
    philox4x32_10(out, ctr, key);
    return Py_BuildValue("(kkkk)", (unsigned long)out[0], (unsigned long)out[1],
                         (unsigned long)out[2], (unsigned long)out[3]);
}

/* offset .. offset + n - 1 must not wrap past 2**64 */
static int parse_offset(PyObject* obj, const char* F, size_t n, uint64_t* offset) {
    if (parse_uint(obj, F, "offset", 64, offset)) return -1;
    if (n && *offset > UINT64_MAX - (n - 1)) {
        PyErr_Format(PyExc_ValueError, "%s(): offset + size exceeds 2**64", F);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(rng_normal_doc,
"rng_normal(out, seed, stream, offset)\n--\n\n"
"Fill the float32 array out with normals offset.. of (seed, stream).");
static PyObject* py_rng_normal(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "rng_normal";
    PyObject *out_o, *seed_o, *stream_o, *off_o;
    if (!PyArg_ParseTuple(args, "OOOO", &out_o, &seed_o, &stream_o, &off_o)) return NULL;
    PyArrayObject* out = check_array(out_o, F, "out", NPY_FLOAT32, 1);
    if (!out) return NULL;
    uint64_t seed, stream, offset;
    float* p = (float*)PyArray_DATA(out);
    size_t n = (size_t)PyArray_SIZE(out);
    if (parse_seed(seed_o, F, &seed) || parse_seed(stream_o, F, &stream) ||
        parse_offset(off_o, F, n, &offset))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rng_normal_fill_parallel(p, n, seed, stream, offset);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(rng_uint32_doc,
"rng_uint32(out, seed, stream, offset)\n--\n\n"
"Fill the uint32 array out with raw Philox words offset.. of (seed, stream).");
static PyObject* py_rng_uint32(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "rng_uint32";
    PyObject *out_o, *seed_o, *stream_o, *off_o;
    if (!PyArg_ParseTuple(args, "OOOO", &out_o, &seed_o, &stream_o, &off_o)) return NULL;
    PyArrayObject* out = check_array(out_o, F, "out", NPY_UINT32, 1);
    if (!out) return NULL;
    uint64_t seed, stream, offset;
    uint32_t* p = (uint32_t*)PyArray_DATA(out);
    size_t n = (size_t)PyArray_SIZE(out);
    if (parse_seed(seed_o, F, &seed) || parse_seed(stream_o, F, &stream) ||
        parse_offset(off_o, F, n, &offset))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rng_uint32_fill(p, n, seed, stream, offset);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* schedules                                                                 */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(schedule_betas_doc,
"schedule_betas(kind, T, a, b)\n--\n\n"
"betas (T+1,) float64 for kind 'linear'/'scaled_linear'/'sigmoid' (a=beta_start,\n"
"b=beta_end) or 'cosine' (a=s, b=max_beta); betas[0] = 0.");
static PyObject* py_schedule_betas(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "schedule_betas";
    const char* kind;
    long T;
    double a, b;
    if (!PyArg_ParseTuple(args, "sldd", &kind, &T, &a, &b)) return NULL;
    if (T < 1 || T > MAX_TIMESTEPS) {
        PyErr_Format(PyExc_ValueError, "%s(): timesteps must be in 1..%d, got %ld", F,
                     MAX_TIMESTEPS, T);
        return NULL;
    }
    if (!isfinite(a) || !isfinite(b)) {
        PyErr_Format(PyExc_ValueError, "%s(): schedule parameters must be finite", F);
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)T + 1};
    PyArrayObject* out = (PyArrayObject*)PyArray_SimpleNew(1, dims, NPY_FLOAT64);
    if (!out) return NULL;
    double* p = (double*)PyArray_DATA(out);
    int st;
    if (strcmp(kind, "linear") == 0) st = schedule_linear(p, (int)T, a, b);
    else if (strcmp(kind, "scaled_linear") == 0) st = schedule_scaled_linear(p, (int)T, a, b);
    else if (strcmp(kind, "sigmoid") == 0) st = schedule_sigmoid(p, (int)T, a, b);
    else if (strcmp(kind, "cosine") == 0) st = schedule_cosine(p, (int)T, a, b);
    else {
        Py_DECREF(out);
        PyErr_Format(PyExc_ValueError, "%s(): unknown kind %R", F, PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    if (st) {
        Py_DECREF(out);
        return raise_status(st, F, "schedule parameters");
    }
    return (PyObject*)out;
}

PyDoc_STRVAR(rescale_doc,
"rescale_zero_terminal_snr(betas)\n--\n\n"
"Rescale a (T+1,) float64 betas array in place so alpha_bar_T = 0.");
static PyObject* py_rescale(PyObject* self, PyObject* arg) {
    (void)self;
    const char* F = "rescale_zero_terminal_snr";
    PyArrayObject* b = check_array(arg, F, "betas", NPY_FLOAT64, 1);
    if (!b) return NULL;
    if (PyArray_NDIM(b) != 1 || PyArray_DIM(b, 0) < 3) {
        PyErr_Format(PyExc_ValueError, "%s(): betas must have shape (T+1,) with T >= 2", F);
        return NULL;
    }
    int st = schedule_rescale_zero_terminal_snr((double*)PyArray_DATA(b),
                                                (int)PyArray_DIM(b, 0) - 1);
    if (st) return raise_status(st, F, "betas (alpha_bar must decrease)");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(schedule_tables_doc,
"schedule_tables(betas)\n--\n\n"
"All derived tables as a (13, T+1) float64 array, rows in the order of\n"
"TABLE_NAMES; betas is (T+1,) with betas[0] ignored (set to 0).");
static PyObject* py_schedule_tables(PyObject* self, PyObject* arg) {
    (void)self;
    const char* F = "schedule_tables";
    PyArrayObject* b = check_array(arg, F, "betas", NPY_FLOAT64, 0);
    if (!b) return NULL;
    if (PyArray_NDIM(b) != 1 || PyArray_DIM(b, 0) < 2 ||
        PyArray_DIM(b, 0) > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): betas must have shape (T+1,) with 1 <= T <= %d",
                     F, MAX_TIMESTEPS);
        return NULL;
    }
    int T = (int)PyArray_DIM(b, 0) - 1;
    npy_intp dims[2] = {SCHEDULE_NUM_TABLES, (npy_intp)T + 1};
    PyArrayObject* out = (PyArrayObject*)PyArray_SimpleNew(2, dims, NPY_FLOAT64);
    if (!out) return NULL;
    ScheduleTables tab;
    schedule_tables_point(&tab, (double*)PyArray_DATA(out), T);
    memcpy(tab.betas, PyArray_DATA(b), sizeof(double) * ((size_t)T + 1));
    int st = schedule_fill_tables(&tab, T);
    if (st) {
        Py_DECREF(out);
        if (st == DDPM_ERR_NONFINITE) return raise_status(st, F, "betas");
        PyErr_Format(PyExc_ValueError,
                     "%s(): betas[1..T] must lie in (0, 1) (beta_T = 1 is allowed "
                     "only at t = T, for zero terminal SNR)", F);
        return NULL;
    }
    return (PyObject*)out;
}

/* ------------------------------------------------------------------------ */
/* forward process                                                           */
/* ------------------------------------------------------------------------ */

/* x (N, ...) float32 and t (N,) int64: returns N and D or -1 with an error. */
static int batch_dims(PyArrayObject* x, PyArrayObject* t, const char* F, const char* xname,
                      size_t* N, size_t* D) {
    if (PyArray_NDIM(x) < 1 || PyArray_DIM(x, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (N, ...) with N >= 1",
                     F, xname);
        return -1;
    }
    *N = (size_t)PyArray_DIM(x, 0);
    *D = *N ? (size_t)PyArray_SIZE(x) / *N : 0;
    if (*D == 0) {
        PyErr_Format(PyExc_ValueError, "%s(): %s has no values per sample", F, xname);
        return -1;
    }
    if (PyArray_NDIM(t) != 1 || (size_t)PyArray_DIM(t, 0) != *N) {
        PyErr_Format(PyExc_ValueError, "%s(): t must have shape (N,) = (%zu,)", F, *N);
        return -1;
    }
    return 0;
}

static int same_shape(PyArrayObject* a, PyArrayObject* b) {
    return PyArray_NDIM(a) == PyArray_NDIM(b) &&
           PyArray_CompareLists(PyArray_DIMS(a), PyArray_DIMS(b), PyArray_NDIM(a));
}

PyDoc_STRVAR(q_sample_doc,
"q_sample(xt, eps, x0, t, sqrt_alpha_bars, sqrt_one_minus_alpha_bars, seed, noise_given)\n--\n\n"
"x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, written into xt; eps is\n"
"drawn from seed into eps unless noise_given, in which case eps is read.");
static PyObject* py_q_sample(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "q_sample";
    PyObject *xt_o, *eps_o, *x0_o, *t_o, *sa_o, *sb_o, *seed_o;
    int noise_given;
    if (!PyArg_ParseTuple(args, "OOOOOOOp", &xt_o, &eps_o, &x0_o, &t_o, &sa_o, &sb_o,
                          &seed_o, &noise_given))
        return NULL;
    PyArrayObject *xt, *eps, *x0, *t, *sa, *sb;
    if (!(xt = check_array(xt_o, F, "xt", NPY_FLOAT32, 1))) return NULL;
    if (!(eps = check_array(eps_o, F, "eps", NPY_FLOAT32, !noise_given))) return NULL;
    if (!(x0 = check_array(x0_o, F, "x0", NPY_FLOAT32, 0))) return NULL;
    if (!(t = check_array(t_o, F, "t", NPY_INT64, 0))) return NULL;
    size_t N, D;
    if (batch_dims(x0, t, F, "x0", &N, &D)) return NULL;
    if (!same_shape(x0, xt) || !same_shape(x0, eps)) {
        PyErr_Format(PyExc_ValueError, "%s(): xt, eps and x0 must have the same shape", F);
        return NULL;
    }
    if (!(sa = check_array(sa_o, F, "sqrt_alpha_bars", NPY_FLOAT64, 0))) return NULL;
    npy_intp T1 = PyArray_SIZE(sa);
    if (!(sa = check_table(sa_o, F, "sqrt_alpha_bars", T1))) return NULL;
    if (!(sb = check_table(sb_o, F, "sqrt_one_minus_alpha_bars", T1))) return NULL;
    uint64_t seed;
    if (parse_seed(seed_o, F, &seed)) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = q_sample((float*)PyArray_DATA(xt), (float*)PyArray_DATA(eps),
                  (const float*)PyArray_DATA(x0), (const int64_t*)PyArray_DATA(t),
                  (const double*)PyArray_DATA(sa), (const double*)PyArray_DATA(sb),
                  (int)T1 - 1, N, D, seed, noise_given);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, noise_given ? "x0 or noise" : "x0");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(q_sample_chain_doc,
"q_sample_chain(xt, x0, t, alphas, betas, seed)\n--\n\n"
"Run x_s = sqrt(alpha_s) x_{s-1} + sqrt(beta_s) eps_s for s = 1..t into xt.");
static PyObject* py_q_sample_chain(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "q_sample_chain";
    PyObject *xt_o, *x0_o, *t_o, *a_o, *b_o, *seed_o;
    if (!PyArg_ParseTuple(args, "OOOOOO", &xt_o, &x0_o, &t_o, &a_o, &b_o, &seed_o))
        return NULL;
    PyArrayObject *xt, *x0, *t, *a, *b;
    if (!(xt = check_array(xt_o, F, "xt", NPY_FLOAT32, 1))) return NULL;
    if (!(x0 = check_array(x0_o, F, "x0", NPY_FLOAT32, 0))) return NULL;
    if (!(t = check_array(t_o, F, "t", NPY_INT64, 0))) return NULL;
    size_t N, D;
    if (batch_dims(x0, t, F, "x0", &N, &D)) return NULL;
    if (!same_shape(x0, xt)) {
        PyErr_Format(PyExc_ValueError, "%s(): xt and x0 must have the same shape", F);
        return NULL;
    }
    if (!(a = check_array(a_o, F, "alphas", NPY_FLOAT64, 0))) return NULL;
    npy_intp T1 = PyArray_SIZE(a);
    if (!(a = check_table(a_o, F, "alphas", T1))) return NULL;
    if (!(b = check_table(b_o, F, "betas", T1))) return NULL;
    uint64_t seed;
    if (parse_seed(seed_o, F, &seed)) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = q_sample_chain((float*)PyArray_DATA(xt), (const float*)PyArray_DATA(x0),
                        (const int64_t*)PyArray_DATA(t), (const double*)PyArray_DATA(a),
                        (const double*)PyArray_DATA(b), (int)T1 - 1, N, D, seed);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, "x0");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(q_posterior_mean_doc,
"q_posterior_mean(mean, x0, xt, t, coef1, coef2)\n--\n\n"
"mean = coef1[t] x0 + coef2[t] xt, the mean of q(x_{t-1} | x_t, x_0).");
static PyObject* py_q_posterior_mean(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "q_posterior_mean";
    PyObject *m_o, *x0_o, *xt_o, *t_o, *c1_o, *c2_o;
    if (!PyArg_ParseTuple(args, "OOOOOO", &m_o, &x0_o, &xt_o, &t_o, &c1_o, &c2_o))
        return NULL;
    PyArrayObject *m, *x0, *xt, *t, *c1, *c2;
    if (!(m = check_array(m_o, F, "mean", NPY_FLOAT32, 1))) return NULL;
    if (!(x0 = check_array(x0_o, F, "x0", NPY_FLOAT32, 0))) return NULL;
    if (!(xt = check_array(xt_o, F, "xt", NPY_FLOAT32, 0))) return NULL;
    if (!(t = check_array(t_o, F, "t", NPY_INT64, 0))) return NULL;
    size_t N, D;
    if (batch_dims(x0, t, F, "x0", &N, &D)) return NULL;
    if (!same_shape(x0, xt) || !same_shape(x0, m)) {
        PyErr_Format(PyExc_ValueError, "%s(): mean, x0 and xt must have the same shape", F);
        return NULL;
    }
    if (!(c1 = check_array(c1_o, F, "coef1", NPY_FLOAT64, 0))) return NULL;
    npy_intp T1 = PyArray_SIZE(c1);
    if (!(c1 = check_table(c1_o, F, "coef1", T1))) return NULL;
    if (!(c2 = check_table(c2_o, F, "coef2", T1))) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = q_posterior_mean((float*)PyArray_DATA(m), (const float*)PyArray_DATA(x0),
                          (const float*)PyArray_DATA(xt), (const int64_t*)PyArray_DATA(t),
                          (const double*)PyArray_DATA(c1), (const double*)PyArray_DATA(c2),
                          (int)T1 - 1, N, D);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, "x0 or xt");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* single layers (channel-major activations), for tests and experiments      */
/* ------------------------------------------------------------------------ */

/* A float32 array argument holding exactly `count` values; None allowed when
 * optional (returns NULL without an error set, *ok = 1). */
static float* f32_arg(PyObject* obj, const char* F, const char* name, size_t count,
                      int writeable, int optional, int* ok) {
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

#define F32(var, obj, name, count, wr, opt)                                  \
    int ok_##var;                                                             \
    float* var = f32_arg(obj, F, name, count, wr, opt, &ok_##var);            \
    if (!ok_##var) return NULL;

static int positive(const char* F, const char* what, long v) {
    if (v < 1 || v > (1L << 30)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be a positive size, got %ld", F, what, v);
        return 0;
    }
    return 1;
}

static int conv_dims(const char* F, int B, int C, int H, int W, int OC, int K, int S) {
    if (!positive(F, "B", B) || !positive(F, "C", C) || !positive(F, "H", H) ||
        !positive(F, "W", W) || !positive(F, "OC", OC))
        return 0;
    if (!(K == 1 || K == 3) || !(S == 1 || S == 2)) {
        PyErr_Format(PyExc_ValueError, "%s(): K must be 1 or 3 and S 1 or 2", F);
        return 0;
    }
    return 1;
}

static int out_dim(int n, int K, int S) { return (n + 2 * (K / 2) - K) / S + 1; }

PyDoc_STRVAR(conv2d_forward_doc,
"conv2d_forward(out, inp, weight, bias, B, C, H, W, OC, K, S, accumulate)\n--\n\n"
"Channel-major convolution: out (OC,B,Ho,Wo) (+)= conv(inp (C,B,H,W)) + bias.");
static PyObject* py_conv2d_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "conv2d_forward";
    PyObject *oo, *io, *wo, *bo;
    int B, C, H, W, OC, K, S, acc;
    if (!PyArg_ParseTuple(args, "OOOOiiiiiiip", &oo, &io, &wo, &bo, &B, &C, &H, &W, &OC, &K, &S, &acc)) return NULL;
    if (!conv_dims(F, B, C, H, W, OC, K, S)) return NULL;
    size_t Ho = out_dim(H, K, S), Wo = out_dim(W, K, S);
    F32(out, oo, "out", (size_t)OC * B * Ho * Wo, 1, 0);
    F32(inp, io, "inp", (size_t)C * B * H * W, 0, 0);
    F32(w, wo, "weight", (size_t)OC * C * K * K, 0, 0);
    F32(b, bo, "bias", (size_t)OC, 0, 1);
    size_t nc = conv2d_scratch_floats(B, C, H, W, OC, K, S);
    float* col = malloc(sizeof(float) * (nc ? nc : 1));
    if (!col) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    conv2d_forward(out, col, inp, w, b, B, C, H, W, OC, K, S, acc);
    Py_END_ALLOW_THREADS
    free(col);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(conv2d_backward_doc,
"conv2d_backward(dinp, dweight, dbias, dout, inp, weight, B, C, H, W, OC, K, S, accumulate=True)\n--\n\n"
"Accumulates (+=) the gradients of conv2d_forward; dinp and dbias may be None.\n"
"accumulate=False writes dinp (=) without reading it.");
static PyObject* py_conv2d_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "conv2d_backward";
    PyObject *dio, *dwo, *dbo, *doo, *io, *wo;
    int B, C, H, W, OC, K, S, acc = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOiiiiiii|p", &dio, &dwo, &dbo, &doo, &io, &wo, &B, &C, &H, &W, &OC, &K, &S, &acc)) return NULL;
    if (!conv_dims(F, B, C, H, W, OC, K, S)) return NULL;
    size_t Ho = out_dim(H, K, S), Wo = out_dim(W, K, S);
    F32(dinp, dio, "dinp", (size_t)C * B * H * W, 1, 1);
    F32(dw, dwo, "dweight", (size_t)OC * C * K * K, 1, 0);
    F32(db, dbo, "dbias", (size_t)OC, 1, 1);
    F32(dout, doo, "dout", (size_t)OC * B * Ho * Wo, 0, 0);
    F32(inp, io, "inp", (size_t)C * B * H * W, 0, 0);
    F32(w, wo, "weight", (size_t)OC * C * K * K, 0, 0);
    size_t nc = conv2d_scratch_floats(B, C, H, W, OC, K, S);
    float* col = malloc(sizeof(float) * (nc ? nc : 1));
    if (!col) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    conv2d_backward(dinp, dw, db, col, dout, inp, w, B, C, H, W, OC, K, S, acc);
    Py_END_ALLOW_THREADS
    free(col);
    Py_RETURN_NONE;
}

static int gn_dims(const char* F, int B, int C, int HW, int G) {
    if (!positive(F, "B", B) || !positive(F, "C", C) || !positive(F, "HW", HW) || !positive(F, "G", G)) return 0;
    if (C % G) { PyErr_Format(PyExc_ValueError, "%s(): C must be divisible by G", F); return 0; }
    return 1;
}

PyDoc_STRVAR(groupnorm_forward_doc,
"groupnorm_forward(out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, silu)\n--\n\n"
"Channel-major GroupNorm (optionally followed by SiLU); saves mean/rstd (B, G).");
static PyObject* py_groupnorm_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "groupnorm_forward";
    PyObject *oo, *mo, *ro, *io, *wo, *bo;
    int B, C, HW, G, silu;
    float eps;
    if (!PyArg_ParseTuple(args, "OOOOOOiiiifp", &oo, &mo, &ro, &io, &wo, &bo, &B, &C, &HW, &G, &eps, &silu)) return NULL;
    if (!gn_dims(F, B, C, HW, G)) return NULL;
    F32(out, oo, "out", (size_t)C * B * HW, 1, 0);
    F32(mean, mo, "mean", (size_t)B * G, 1, 0);
    F32(rstd, ro, "rstd", (size_t)B * G, 1, 0);
    F32(inp, io, "inp", (size_t)C * B * HW, 0, 0);
    F32(w, wo, "weight", (size_t)C, 0, 0);
    F32(b, bo, "bias", (size_t)C, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    groupnorm_forward(out, mean, rstd, inp, w, b, B, C, HW, G, eps, silu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(groupnorm_backward_doc,
"groupnorm_backward(dinp, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, silu, accumulate=True)\n--\n\n"
"Accumulates (+=) the gradients of groupnorm_forward; accumulate=False writes\n"
"dinp (=) without reading it.");
static PyObject* py_groupnorm_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "groupnorm_backward";
    PyObject *dio, *dwo, *dbo, *doo, *io, *wo, *bo, *mo, *ro;
    int B, C, HW, G, silu, acc = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOiiiip|p", &dio, &dwo, &dbo, &doo, &io, &wo, &bo, &mo, &ro, &B, &C, &HW, &G, &silu, &acc)) return NULL;
    if (!gn_dims(F, B, C, HW, G)) return NULL;
    F32(dinp, dio, "dinp", (size_t)C * B * HW, 1, 0);
    F32(dw, dwo, "dweight", (size_t)C, 1, 0);
    F32(db, dbo, "dbias", (size_t)C, 1, 0);
    F32(dout, doo, "dout", (size_t)C * B * HW, 0, 0);
    F32(inp, io, "inp", (size_t)C * B * HW, 0, 0);
    F32(w, wo, "weight", (size_t)C, 0, 0);
    F32(b, bo, "bias", (size_t)C, 0, 0);
    F32(mean, mo, "mean", (size_t)B * G, 0, 0);
    F32(rstd, ro, "rstd", (size_t)B * G, 0, 0);
    float* scratch = malloc(sizeof(float) * groupnorm_scratch_floats(B, C, HW, G));
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    groupnorm_backward(dinp, dw, db, scratch, dout, inp, w, b, mean, rstd, B, C, HW, G, silu, acc);
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(linear_forward_doc,
"linear_forward(out, inp, weight, bias, B, IN, OUT)\n--\n\nout (B,OUT) = inp (B,IN) weight^T + bias.");
static PyObject* py_linear_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "linear_forward";
    PyObject *oo, *io, *wo, *bo;
    int B, IN, OUT;
    if (!PyArg_ParseTuple(args, "OOOOiii", &oo, &io, &wo, &bo, &B, &IN, &OUT)) return NULL;
    if (!positive(F, "B", B) || !positive(F, "IN", IN) || !positive(F, "OUT", OUT)) return NULL;
    F32(out, oo, "out", (size_t)B * OUT, 1, 0);
    F32(inp, io, "inp", (size_t)B * IN, 0, 0);
    F32(w, wo, "weight", (size_t)OUT * IN, 0, 0);
    F32(b, bo, "bias", (size_t)OUT, 0, 1);
    Py_BEGIN_ALLOW_THREADS
    linear_forward(out, inp, w, b, B, IN, OUT);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(linear_backward_doc,
"linear_backward(dinp, dweight, dbias, dout, inp, weight, B, IN, OUT)\n--\n\n"
"Accumulates (+=); dinp and dbias may be None.");
static PyObject* py_linear_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "linear_backward";
    PyObject *dio, *dwo, *dbo, *doo, *io, *wo;
    int B, IN, OUT;
    if (!PyArg_ParseTuple(args, "OOOOOOiii", &dio, &dwo, &dbo, &doo, &io, &wo, &B, &IN, &OUT)) return NULL;
    if (!positive(F, "B", B) || !positive(F, "IN", IN) || !positive(F, "OUT", OUT)) return NULL;
    F32(dinp, dio, "dinp", (size_t)B * IN, 1, 1);
    F32(dw, dwo, "dweight", (size_t)OUT * IN, 1, 0);
    F32(db, dbo, "dbias", (size_t)OUT, 1, 1);
    F32(dout, doo, "dout", (size_t)B * OUT, 0, 0);
    F32(inp, io, "inp", (size_t)B * IN, 0, 0);
    F32(w, wo, "weight", (size_t)OUT * IN, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    linear_backward(dinp, dw, db, dout, inp, w, B, IN, OUT);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(silu_forward_doc, "silu_forward(out, inp)\n--\n\nout = inp * sigmoid(inp).");
static PyObject* py_silu_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "silu_forward";
    PyObject *oo, *io;
    if (!PyArg_ParseTuple(args, "OO", &oo, &io)) return NULL;
    PyArrayObject* ia = check_array(io, F, "inp", NPY_FLOAT32, 0);
    if (!ia) return NULL;
    size_t n = (size_t)PyArray_SIZE(ia);
    F32(out, oo, "out", n, 1, 0);
    const float* inp = (const float*)PyArray_DATA(ia);
    Py_BEGIN_ALLOW_THREADS
    silu_forward(out, inp, n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(silu_backward_doc, "silu_backward(dinp, dout, inp)\n--\n\ndinp += dout * silu'(inp).");
static PyObject* py_silu_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "silu_backward";
    PyObject *dio, *doo, *io;
    if (!PyArg_ParseTuple(args, "OOO", &dio, &doo, &io)) return NULL;
    PyArrayObject* ia = check_array(io, F, "inp", NPY_FLOAT32, 0);
    if (!ia) return NULL;
    size_t n = (size_t)PyArray_SIZE(ia);
    F32(dinp, dio, "dinp", n, 1, 0);
    F32(dout, doo, "dout", n, 0, 0);
    const float* inp = (const float*)PyArray_DATA(ia);
    Py_BEGIN_ALLOW_THREADS
    silu_backward(dinp, dout, inp, n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(timestep_embedding_doc,
"timestep_embedding(out, t, B, dim, flip_sin_to_cos, freq_shift, max_period)\n--\n\n"
"Sinusoidal embedding (B, dim) of the float32 time values t (B,).");
static PyObject* py_timestep_embedding(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "timestep_embedding";
    PyObject *oo, *to;
    int B, dim, flip;
    float shift, period;
    if (!PyArg_ParseTuple(args, "OOiipff", &oo, &to, &B, &dim, &flip, &shift, &period)) return NULL;
    if (!positive(F, "B", B) || !positive(F, "dim", dim)) return NULL;
    if (dim < 2 || !((float)(dim / 2) - shift != 0.0f) || !(period > 0)) {
        PyErr_Format(PyExc_ValueError, "%s(): need dim >= 2, dim/2 != freq_shift, max_period > 0", F);
        return NULL;
    }
    F32(out, oo, "out", (size_t)B * dim, 1, 0);
    F32(t, to, "t", (size_t)B, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    timestep_embedding_forward(out, t, B, dim, flip, shift, period);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(attention_forward_doc,
"attention_forward(out, att, qkv, B, C, HW, NH)\n--\n\n"
"Softmax attention: qkv (3C,B,HW) -> out (C,B,HW); att (B,NH,HW,HW) probabilities.");
static PyObject* py_attention_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "attention_forward";
    PyObject *oo, *ao, *qo;
    int B, C, HW, NH;
    if (!PyArg_ParseTuple(args, "OOOiiii", &oo, &ao, &qo, &B, &C, &HW, &NH)) return NULL;
    if (!positive(F, "B", B) || !positive(F, "C", C) || !positive(F, "HW", HW) || !positive(F, "NH", NH)) return NULL;
    if (C % NH) { PyErr_Format(PyExc_ValueError, "%s(): C must be divisible by NH", F); return NULL; }
    F32(out, oo, "out", (size_t)C * B * HW, 1, 0);
    F32(att, ao, "att", (size_t)B * NH * HW * HW, 1, 0);
    F32(qkv, qo, "qkv", (size_t)3 * C * B * HW, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    attention_forward(out, att, qkv, B, C, HW, NH);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(attention_backward_doc,
"attention_backward(dqkv, dout, qkv, att, B, C, HW, NH, accumulate=True)\n--\n\n"
"Accumulates dqkv (+=); accumulate=False writes it (=) without reading it.");
static PyObject* py_attention_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "attention_backward";
    PyObject *dqo, *doo, *qo, *ao;
    int B, C, HW, NH, acc = 1;
    if (!PyArg_ParseTuple(args, "OOOOiiii|p", &dqo, &doo, &qo, &ao, &B, &C, &HW, &NH, &acc)) return NULL;
    if (!positive(F, "B", B) || !positive(F, "C", C) || !positive(F, "HW", HW) || !positive(F, "NH", NH)) return NULL;
    if (C % NH) { PyErr_Format(PyExc_ValueError, "%s(): C must be divisible by NH", F); return NULL; }
    F32(dqkv, dqo, "dqkv", (size_t)3 * C * B * HW, 1, 0);
    F32(dout, doo, "dout", (size_t)C * B * HW, 0, 0);
    F32(qkv, qo, "qkv", (size_t)3 * C * B * HW, 0, 0);
    F32(att, ao, "att", (size_t)B * NH * HW * HW, 0, 0);
    float* scratch = malloc(sizeof(float) * (size_t)B * NH * HW * HW);
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    attention_backward(dqkv, scratch, dout, qkv, att, B, C, HW, NH, acc);
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(upsample_forward_doc,
"upsample_forward(out, inp, C, B, H, W)\n--\n\nNearest 2x: (C,B,H,W) -> (C,B,2H,2W).");
static PyObject* py_upsample_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "upsample_forward";
    PyObject *oo, *io;
    int C, B, H, W;
    if (!PyArg_ParseTuple(args, "OOiiii", &oo, &io, &C, &B, &H, &W)) return NULL;
    if (!positive(F, "C", C) || !positive(F, "B", B) || !positive(F, "H", H) || !positive(F, "W", W)) return NULL;
    F32(out, oo, "out", (size_t)C * B * H * W * 4, 1, 0);
    F32(inp, io, "inp", (size_t)C * B * H * W, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    upsample_forward(out, inp, C, B, H, W);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(upsample_backward_doc,
"upsample_backward(dinp, dout, C, B, H, W, accumulate=True)\n--\n\n"
"dinp += 2x2 sums of dout (accumulate=False: dinp = ..., not read).");
static PyObject* py_upsample_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "upsample_backward";
    PyObject *dio, *doo;
    int C, B, H, W, acc = 1;
    if (!PyArg_ParseTuple(args, "OOiiii|p", &dio, &doo, &C, &B, &H, &W, &acc)) return NULL;
    if (!positive(F, "C", C) || !positive(F, "B", B) || !positive(F, "H", H) || !positive(F, "W", W)) return NULL;
    F32(dinp, dio, "dinp", (size_t)C * B * H * W, 1, 0);
    F32(dout, doo, "dout", (size_t)C * B * H * W * 4, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    upsample_backward(dinp, dout, C, B, H, W, acc);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* the U-Net                                                                 */
/* ------------------------------------------------------------------------ */

/* A capsule owns the C network and its workspace.  `busy` (read and set with
 * the GIL held) refuses a second thread while one runs with the GIL released. */
typedef struct {
    UNet* net;
    int busy;
} UNetHandle;

static void unet_capsule_free(PyObject* cap) {
    UNetHandle* h = PyCapsule_GetPointer(cap, "ddpm.UNet");
    if (h) { unet_free(h->net); free(h); }
}

static UNetHandle* get_unet(PyObject* cap, const char* F) {
    UNetHandle* h = PyCapsule_GetPointer(cap, "ddpm.UNet");
    if (!h) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): expected a UNet handle from unet_create()", F);
        return NULL;
    }
    if (h->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s(): this UNet is in use by another thread", F);
        return NULL;
    }
    return h;
}

static int int_seq(PyObject* seq, int* out, int maxn, const char* F, const char* name) {
    PyObject* fast = PySequence_Fast(seq, "expected a sequence");
    if (!fast) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a sequence of ints", F, name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > maxn) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s(): %s has more than %d entries", F, name, maxn);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) { Py_DECREF(fast); return -1; }
        if (v < 0 || v > (1L << 20)) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "%s(): %s entries must be in 0..2**20", F, name);
            return -1;
        }
        out[i] = (int)v;
    }
    Py_DECREF(fast);
    return (int)n;
}

PyDoc_STRVAR(unet_create_doc,
"unet_create(sample_size, in_channels, out_channels, block_out_channels, layers_per_block,\n"
"            down_attn, up_attn, mid_attn, norm_num_groups, norm_eps, attention_head_dim)\n--\n\n"
"Build the C network; returns a handle. down_attn/up_attn: one 0/1 per level.");
static PyObject* py_unet_create(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "unet_create";
    UNetConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    PyObject *boc, *da, *ua;
    int mid;
    if (!PyArg_ParseTuple(args, "iiiOiOOpifi", &cfg.sample_size, &cfg.in_channels, &cfg.out_channels,
                          &boc, &cfg.layers_per_block, &da, &ua, &mid, &cfg.norm_groups,
                          &cfg.norm_eps, &cfg.head_dim))
        return NULL;
    cfg.mid_attn = mid;
    int L = int_seq(boc, cfg.block_out, UNET_MAX_LEVELS, F, "block_out_channels");
    if (L < 0) return NULL;
    cfg.num_levels = L;
    if (int_seq(da, cfg.down_attn, UNET_MAX_LEVELS, F, "down_attn") != L ||
        int_seq(ua, cfg.up_attn, UNET_MAX_LEVELS, F, "up_attn") != L) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s(): down_attn and up_attn need one entry per level", F);
        return NULL;
    }
    UNet* net;
    const char* why;
    int st = unet_create(&net, &cfg, &why);
    if (st == DDPM_ERR_NOMEM) return PyErr_NoMemory();
    if (st) {
        PyErr_Format(PyExc_ValueError, "%s(): %s", F, why ? why : "unsupported config");
        return NULL;
    }
    UNetHandle* h = calloc(1, sizeof *h);
    if (!h) { unet_free(net); return PyErr_NoMemory(); }
    h->net = net;
    PyObject* cap = PyCapsule_New(h, "ddpm.UNet", unet_capsule_free);
    if (!cap) { unet_free(net); free(h); return NULL; }
    return cap;
}

/* (name, shape tuple, offset, size): one entry of unet_info/classifier_info's tensor list. */
static PyObject* tensor_entry(const ParamTensor* p) {
    PyObject* t = PyTuple_New(p->ndim);
    if (!t) return NULL;
    for (int d = 0; d < p->ndim; d++) {
        PyObject* v = PyLong_FromLong(p->shape[d]);
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, d, v);
    }
    return Py_BuildValue("(sNnn)", p->name, t, (Py_ssize_t)p->offset, (Py_ssize_t)p->size);
}

PyDoc_STRVAR(unet_info_doc,
"unet_info(handle)\n--\n\n"
"dict: num_parameters, flops_per_image, tensors = [(name, shape, offset, size), ...].");
static PyObject* py_unet_info(PyObject* self, PyObject* cap) {
    (void)self;
    UNetHandle* h = get_unet(cap, "unet_info");
    if (!h) return NULL;
    int nt = unet_num_tensors(h->net);
    PyObject* lst = PyList_New(nt);
    if (!lst) return NULL;
    for (int i = 0; i < nt; i++) {
        const ParamTensor* p = unet_tensor(h->net, i);
        PyObject* item = tensor_entry(p);
        if (!item) { Py_DECREF(lst); return NULL; }
        PyList_SET_ITEM(lst, i, item);
    }
    return Py_BuildValue("{s:n,s:d,s:N}", "num_parameters", (Py_ssize_t)unet_num_parameters(h->net),
                         "flops_per_image", unet_flops_per_image(h->net), "tensors", lst);
}

static int image_arg(PyObject* obj, const char* F, const char* name, int C, int S, int writeable,
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
    if (PyArray_DIM(a, 0) > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "%s(): batch too large", F);
        return -1;
    }
    *B_out = (int)PyArray_DIM(a, 0);
    *data = (float*)PyArray_DATA(a);
    return 0;
}

PyDoc_STRVAR(unet_profile_doc,
"unet_profile(handle, enable)\n--\n\n"
"Return {op kind: seconds} accumulated so far and reset it; enable turns timing on/off.");
static PyObject* py_unet_profile(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cap;
    int enable;
    if (!PyArg_ParseTuple(args, "Op", &cap, &enable)) return NULL;
    UNetHandle* h = get_unet(cap, "unet_profile");
    if (!h) return NULL;
    static const char* names[UNET_PROF_N] = UNET_PROF_NAMES;
    const double* prof = unet_profile(h->net);
    PyObject* d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < UNET_PROF_N; i++) {
        PyObject* v = PyFloat_FromDouble(prof[i]);
        if (!v || PyDict_SetItemString(d, names[i], v) < 0) { Py_XDECREF(v); Py_DECREF(d); return NULL; }
        Py_DECREF(v);
    }
    unet_reset_profile(h->net);
    unet_set_profiling(h->net, enable);
    return d;
}

PyDoc_STRVAR(unet_forward_doc,
"unet_forward(handle, params, x, t, out)\n--\n\n"
"out (B,Cout,S,S) = eps_theta(x (B,Cin,S,S), t (B,) float32 network time).");
static PyObject* py_unet_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "unet_forward";
    PyObject *cap, *po, *xo, *to, *oo;
    if (!PyArg_ParseTuple(args, "OOOOO", &cap, &po, &xo, &to, &oo)) return NULL;
    UNetHandle* h = get_unet(cap, F);
    if (!h) return NULL;
    const UNetConfig* c = unet_config(h->net);
    F32(params, po, "params", unet_num_parameters(h->net), 0, 0);
    int B, B2;
    float *x, *out;
    if (image_arg(xo, F, "x", c->in_channels, c->sample_size, 0, 0, &B, &x)) return NULL;
    if (image_arg(oo, F, "out", c->out_channels, c->sample_size, 1, B, &B2, &out)) return NULL;
    F32(t, to, "t", (size_t)B, 0, 0);
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = unet_forward(h->net, params, x, t, out, B);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st) return raise_status(st, F, "x or t");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(unet_backward_doc,
"unet_backward(handle, params, grads, dout, dx)\n--\n\n"
"After unet_forward: grads += dL/dparams; dx (or None) = dL/dx.");
static PyObject* py_unet_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "unet_backward";
    PyObject *cap, *po, *go, *doo, *dxo;
    if (!PyArg_ParseTuple(args, "OOOOO", &cap, &po, &go, &doo, &dxo)) return NULL;
    UNetHandle* h = get_unet(cap, F);
    if (!h) return NULL;
    const UNetConfig* c = unet_config(h->net);
    F32(params, po, "params", unet_num_parameters(h->net), 0, 0);
    F32(grads, go, "grads", unet_num_parameters(h->net), 1, 0);
    int B, B2 = 0;
    float *dout, *dx = NULL;
    if (image_arg(doo, F, "grad_out", c->out_channels, c->sample_size, 0, 0, &B, &dout)) return NULL;
    if (dxo != Py_None &&
        image_arg(dxo, F, "dx", c->in_channels, c->sample_size, 1, B, &B2, &dx)) return NULL;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = unet_backward(h->net, params, grads, dout, dx);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_VALUE) {
        PyErr_Format(PyExc_RuntimeError, "%s(): call forward on this batch first", F);
        return NULL;
    }
    if (st) return raise_status(st, F, "grad_out");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* training: optimizer pieces and the fused step                             */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(grad_norm_doc, "grad_norm(grads)\n--\n\nsqrt(sum grads**2), fixed-order float64 sum.");
static PyObject* py_grad_norm(PyObject* self, PyObject* arg) {
    (void)self;
    PyArrayObject* g = check_array(arg, "grad_norm", "grads", NPY_FLOAT32, 0);
    if (!g) return NULL;
    double r;
    const float* p = (const float*)PyArray_DATA(g);
    size_t n = (size_t)PyArray_SIZE(g);
    Py_BEGIN_ALLOW_THREADS
    r = grad_global_norm(p, n);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(r);
}

static int parse_adam(PyObject* t, const char* F, AdamConfig* a) {
    if (!PyArg_ParseTuple(t, "fffffp", &a->lr, &a->beta1, &a->beta2, &a->eps, &a->weight_decay,
                          &a->decoupled)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): adam must be (lr, beta1, beta2, eps, weight_decay, decoupled)", F);
        return -1;
    }
    if (!(a->lr >= 0) || !(a->beta1 >= 0 && a->beta1 < 1) || !(a->beta2 >= 0 && a->beta2 < 1) ||
        !(a->eps > 0) || !(a->weight_decay >= 0) || !isfinite(a->lr) || !isfinite(a->weight_decay)) {
        PyErr_Format(PyExc_ValueError, "%s(): need lr >= 0, 0 <= betas < 1, eps > 0, weight_decay >= 0", F);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(adam_step_doc,
"adam_step(params, m, v, grads, step, adam, grad_scale)\n--\n\n"
"One Adam/AdamW update in place; adam = (lr, beta1, beta2, eps, weight_decay, decoupled).");
static PyObject* py_adam_step(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "adam_step";
    PyObject *po, *mo, *vo, *go, *ao;
    long step;
    float scale;
    if (!PyArg_ParseTuple(args, "OOOOlOf", &po, &mo, &vo, &go, &step, &ao, &scale)) return NULL;
    PyArrayObject* pa = check_array(po, F, "params", NPY_FLOAT32, 1);
    if (!pa) return NULL;
    size_t P = (size_t)PyArray_SIZE(pa);
    F32(m, mo, "m", P, 1, 0);
    F32(v, vo, "v", P, 1, 0);
    F32(g, go, "grads", P, 0, 0);
    AdamConfig a;
    if (parse_adam(ao, F, &a)) return NULL;
    if (step < 1) { PyErr_Format(PyExc_ValueError, "%s(): step must be >= 1", F); return NULL; }
    float* p = (float*)PyArray_DATA(pa);
    Py_BEGIN_ALLOW_THREADS
    adam_step(p, m, v, g, P, step, &a, scale);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ema_update_doc,
"ema_update(ema, params, decay)\n--\n\nema -= (1 - decay) * (ema - params), in place.");
static PyObject* py_ema_update(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "ema_update";
    PyObject *eo, *po;
    float decay;
    if (!PyArg_ParseTuple(args, "OOf", &eo, &po, &decay)) return NULL;
    PyArrayObject* ea = check_array(eo, F, "ema", NPY_FLOAT32, 1);
    if (!ea) return NULL;
    size_t P = (size_t)PyArray_SIZE(ea);
    F32(p, po, "params", P, 0, 0);
    if (!(decay >= 0 && decay <= 1)) { PyErr_Format(PyExc_ValueError, "%s(): decay must be in [0, 1]", F); return NULL; }
    float* e = (float*)PyArray_DATA(ea);
    Py_BEGIN_ALLOW_THREADS
    ema_update(e, p, P, decay);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ema_decay_at_doc, "ema_decay_at(decay, updates_done)\n--\n\ndiffusers' EMA decay ramp.");
static PyObject* py_ema_decay_at(PyObject* self, PyObject* args) {
    (void)self;
    float d;
    long k;
    if (!PyArg_ParseTuple(args, "fl", &d, &k)) return NULL;
    return PyFloat_FromDouble(ema_decay_at(d, k));
}

PyDoc_STRVAR(train_step_doc,
"train_step(handle, params, grads, m, v, ema, x0, xt, eps, out, dout, t, sample_loss,\n"
"           sqrt_ab, sqrt_1mab, config) -> (loss, grad_norm)\n--\n\n"
"One fused training step (see csrc/train.h).  config = (objective, min_snr_gamma,\n"
"grad_clip, adam tuple, ema_decay, ema_updates, step, seed, given_t, given_eps).");
static PyObject* py_train_step(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "train_step";
    PyObject *cap, *po, *go, *mo, *vo, *eo, *x0o, *xto, *epso, *oo, *doo, *to, *slo, *sao, *sbo, *co;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOO", &cap, &po, &go, &mo, &vo, &eo, &x0o, &xto,
                          &epso, &oo, &doo, &to, &slo, &sao, &sbo, &co))
        return NULL;
    UNetHandle* h = get_unet(cap, F);
    if (!h) return NULL;
    const UNetConfig* c = unet_config(h->net);
    const size_t P = unet_num_parameters(h->net);
    TrainConfig tc;
    memset(&tc, 0, sizeof tc);
    PyObject *adam_o, *seed_o;
    if (!PyArg_ParseTuple(co, "iddOflkOpp", &tc.objective, &tc.min_snr_gamma, &tc.grad_clip,
                          &adam_o, &tc.ema_decay, &tc.ema_updates, &tc.step, &seed_o,
                          &tc.given_t, &tc.given_eps))
        return NULL;
    if (tc.objective < 0 || tc.objective > 2 || tc.step < 1 || tc.ema_updates < 0 ||
        !(tc.ema_decay <= 1) || !isfinite(tc.min_snr_gamma) || !isfinite(tc.grad_clip)) {
        PyErr_Format(PyExc_ValueError, "%s(): bad config (objective 0..2, step >= 1, ema_decay <= 1)", F);
        return NULL;
    }
    if (parse_adam(adam_o, F, &tc.adam) || parse_seed(seed_o, F, &tc.seed)) return NULL;
    F32(params, po, "params", P, 1, 0);
    F32(grads, go, "grads", P, 1, 0);
    F32(m, mo, "m", P, 1, 0);
    F32(v, vo, "v", P, 1, 0);
    F32(ema, eo, "ema", P, 1, 1);
    int B, Bx;
    float *x0, *xt, *eps, *out, *dout;
    if (image_arg(x0o, F, "x0", c->in_channels, c->sample_size, 0, 0, &B, &x0)) return NULL;
    if (c->in_channels != c->out_channels) {
        PyErr_Format(PyExc_ValueError, "%s(): the model must output as many channels as it takes", F);
        return NULL;
    }
    if (image_arg(xto, F, "xt", c->in_channels, c->sample_size, 1, B, &Bx, &xt) ||
        image_arg(epso, F, "eps", c->in_channels, c->sample_size, !tc.given_eps, B, &Bx, &eps) ||
        image_arg(oo, F, "out", c->in_channels, c->sample_size, 1, B, &Bx, &out) ||
        image_arg(doo, F, "dout", c->in_channels, c->sample_size, 1, B, &Bx, &dout))
        return NULL;
    PyArrayObject* ta = check_array(to, F, "t", NPY_INT64, !tc.given_t);
    if (!ta) return NULL;
    if (PyArray_SIZE(ta) != B) { PyErr_Format(PyExc_ValueError, "%s(): t must have shape (B,)", F); return NULL; }
    F32(sample_loss, slo, "sample_loss", (size_t)B, 1, 0);
    PyArrayObject* sa = check_array(sao, F, "sqrt_ab", NPY_FLOAT64, 0);
    if (!sa) return NULL;
    npy_intp T1 = PyArray_SIZE(sa);
    if (T1 < 2 || !check_table(sbo, F, "sqrt_1mab", T1)) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s(): schedule tables need T >= 1", F);
        return NULL;
    }
    const size_t D = (size_t)c->in_channels * c->sample_size * c->sample_size;
    double loss = 0.0, norm = 0.0;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = train_step(h->net, params, grads, m, v, ema, x0, xt, eps, out, dout,
                    (int64_t*)PyArray_DATA(ta), NULL, NULL, sample_loss, (const double*)PyArray_DATA(sa),
                    (const double*)PyArray_DATA((PyArrayObject*)sbo), (int)T1 - 1, B, D, &tc,
                    &loss, &norm);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_NONFINITE) {
        PyErr_Format(PyExc_FloatingPointError,
                     "%s(): non-finite loss or gradient (loss=%g, grad norm=%g); parameters, "
                     "moments and EMA were left unchanged", F, loss, norm);
        return NULL;
    }
    if (st) return raise_status(st, F, "x0");
    return Py_BuildValue("(dd)", loss, norm);
}

/* ------------------------------------------------------------------------ */
/* pooling, softmax cross-entropy and the feature classifier                 */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(avgpool2_forward_doc,
"avgpool2_forward(out, inp, N, H, W)\n--\n\n"
"out (N,H//2,W//2) = mean of each 2x2 block of inp (N,H,W), N = C*B planes.");
static PyObject* py_avgpool2_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "avgpool2_forward";
    PyObject *oo, *io;
    int N, H, W;
    if (!PyArg_ParseTuple(args, "OOiii", &oo, &io, &N, &H, &W)) return NULL;
    if (!positive(F, "N", N) || !positive(F, "H", H) || !positive(F, "W", W)) return NULL;
    if (H < 2 || W < 2) { PyErr_Format(PyExc_ValueError, "%s(): H and W must be >= 2", F); return NULL; }
    F32(out, oo, "out", (size_t)N * (H / 2) * (W / 2), 1, 0);
    F32(inp, io, "inp", (size_t)N * H * W, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    avgpool2_forward(out, inp, (size_t)N, H, W);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(avgpool2_backward_doc,
"avgpool2_backward(dinp, dout, N, H, W)\n--\n\nAccumulates (+=) the gradient of avgpool2_forward.");
static PyObject* py_avgpool2_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "avgpool2_backward";
    PyObject *dio, *doo;
    int N, H, W;
    if (!PyArg_ParseTuple(args, "OOiii", &dio, &doo, &N, &H, &W)) return NULL;
    if (!positive(F, "N", N) || !positive(F, "H", H) || !positive(F, "W", W)) return NULL;
    if (H < 2 || W < 2) { PyErr_Format(PyExc_ValueError, "%s(): H and W must be >= 2", F); return NULL; }
    F32(dinp, dio, "dinp", (size_t)N * H * W, 1, 0);
    F32(dout, doo, "dout", (size_t)N * (H / 2) * (W / 2), 0, 0);
    Py_BEGIN_ALLOW_THREADS
    avgpool2_backward(dinp, dout, (size_t)N, H, W);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(maxpool2_forward_doc,
"maxpool2_forward(out, inp, N, H, W)\n--\n\n"
"out (N,H//2,W//2) = max of each 2x2 block of inp (N,H,W), N = C*B planes.");
static PyObject* py_maxpool2_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "maxpool2_forward";
    PyObject *oo, *io;
    int N, H, W;
    if (!PyArg_ParseTuple(args, "OOiii", &oo, &io, &N, &H, &W)) return NULL;
    if (!positive(F, "N", N) || !positive(F, "H", H) || !positive(F, "W", W)) return NULL;
    if (H < 2 || W < 2) { PyErr_Format(PyExc_ValueError, "%s(): H and W must be >= 2", F); return NULL; }
    F32(out, oo, "out", (size_t)N * (H / 2) * (W / 2), 1, 0);
    F32(inp, io, "inp", (size_t)N * H * W, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    maxpool2_forward(out, inp, (size_t)N, H, W);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(maxpool2_backward_doc,
"maxpool2_backward(dinp, dout, inp, N, H, W)\n--\n\n"
"Accumulates (+=) the gradient of maxpool2_forward (ties: first in row-major order).");
static PyObject* py_maxpool2_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "maxpool2_backward";
    PyObject *dio, *doo, *io;
    int N, H, W;
    if (!PyArg_ParseTuple(args, "OOOiii", &dio, &doo, &io, &N, &H, &W)) return NULL;
    if (!positive(F, "N", N) || !positive(F, "H", H) || !positive(F, "W", W)) return NULL;
    if (H < 2 || W < 2) { PyErr_Format(PyExc_ValueError, "%s(): H and W must be >= 2", F); return NULL; }
    F32(dinp, dio, "dinp", (size_t)N * H * W, 1, 0);
    F32(dout, doo, "dout", (size_t)N * (H / 2) * (W / 2), 0, 0);
    F32(inp, io, "inp", (size_t)N * H * W, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    maxpool2_backward(dinp, dout, inp, (size_t)N, H, W);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(global_avgpool_forward_doc,
"global_avgpool_forward(out, inp, C, B, HW)\n--\n\nout (B,C) = mean over HW of inp (C,B,HW).");
static PyObject* py_global_avgpool_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "global_avgpool_forward";
    PyObject *oo, *io;
    int C, B, HW;
    if (!PyArg_ParseTuple(args, "OOiii", &oo, &io, &C, &B, &HW)) return NULL;
    if (!positive(F, "C", C) || !positive(F, "B", B) || !positive(F, "HW", HW)) return NULL;
    F32(out, oo, "out", (size_t)B * C, 1, 0);
    F32(inp, io, "inp", (size_t)C * B * HW, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    global_avgpool_forward(out, inp, C, B, HW);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(global_avgpool_backward_doc,
"global_avgpool_backward(dinp, dout, C, B, HW)\n--\n\ndinp (C,B,HW) += dout (B,C) / HW.");
static PyObject* py_global_avgpool_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "global_avgpool_backward";
    PyObject *dio, *doo;
    int C, B, HW;
    if (!PyArg_ParseTuple(args, "OOiii", &dio, &doo, &C, &B, &HW)) return NULL;
    if (!positive(F, "C", C) || !positive(F, "B", B) || !positive(F, "HW", HW)) return NULL;
    F32(dinp, dio, "dinp", (size_t)C * B * HW, 1, 0);
    F32(dout, doo, "dout", (size_t)B * C, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    global_avgpool_backward(dinp, dout, C, B, HW);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* logits-like (B, K) float32 and targets (B,) int64 arguments. */
static int ce_args(PyObject* lo, PyObject* to, const char* F, const char* lname, int writeable,
                   int* B, int* K, float** logits, const int64_t** targets) {
    PyArrayObject* la = check_array(lo, F, lname, NPY_FLOAT32, writeable);
    if (!la) return -1;
    if (PyArray_NDIM(la) != 2 || PyArray_DIM(la, 0) < 1 || PyArray_DIM(la, 1) < 1 ||
        PyArray_DIM(la, 0) > (1 << 24) || PyArray_DIM(la, 1) > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (B, K) with B, K >= 1", F, lname);
        return -1;
    }
    PyArrayObject* ta = check_array(to, F, "targets", NPY_INT64, 0);
    if (!ta) return -1;
    if (PyArray_NDIM(ta) != 1 || PyArray_DIM(ta, 0) != PyArray_DIM(la, 0)) {
        PyErr_Format(PyExc_ValueError, "%s(): targets must have shape (B,) = (%zd,)", F,
                     (Py_ssize_t)PyArray_DIM(la, 0));
        return -1;
    }
    *B = (int)PyArray_DIM(la, 0);
    *K = (int)PyArray_DIM(la, 1);
    *logits = (float*)PyArray_DATA(la);
    *targets = (const int64_t*)PyArray_DATA(ta);
    return 0;
}

PyDoc_STRVAR(softmax_ce_forward_doc,
"softmax_ce_forward(probs, logits, targets) -> (loss, correct)\n--\n\n"
"probs (B,K) = softmax(logits (B,K)); mean cross-entropy against targets (B,) int64\n"
"and the number of rows whose argmax is the target.");
static PyObject* py_softmax_ce_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "softmax_ce_forward";
    PyObject *po, *lo, *to;
    if (!PyArg_ParseTuple(args, "OOO", &po, &lo, &to)) return NULL;
    int B, K;
    float* logits;
    const int64_t* targets;
    if (ce_args(lo, to, F, "logits", 0, &B, &K, &logits, &targets)) return NULL;
    F32(probs, po, "probs", (size_t)B * K, 1, 0);
    double loss = 0.0;
    int correct = 0, st;
    Py_BEGIN_ALLOW_THREADS
    st = softmax_ce_forward(probs, &loss, &correct, logits, targets, B, K);
    Py_END_ALLOW_THREADS
    if (st == DDPM_ERR_VALUE) {
        PyErr_Format(PyExc_ValueError, "%s(): targets must be in 0..K-1 = 0..%d", F, K - 1);
        return NULL;
    }
    if (st) return raise_status(st, F, "logits");
    return Py_BuildValue("(di)", loss, correct);
}

PyDoc_STRVAR(softmax_ce_backward_doc,
"softmax_ce_backward(dlogits, probs, targets, dloss)\n--\n\n"
"dlogits (B,K) += dloss * (probs - onehot(targets)) / B.");
static PyObject* py_softmax_ce_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "softmax_ce_backward";
    PyObject *dlo, *po, *to;
    float dloss;
    if (!PyArg_ParseTuple(args, "OOOf", &dlo, &po, &to, &dloss)) return NULL;
    int B, K;
    float* probs;
    const int64_t* targets;
    if (ce_args(po, to, F, "probs", 0, &B, &K, &probs, &targets)) return NULL;
    F32(dlogits, dlo, "dlogits", (size_t)B * K, 1, 0);
    for (int b = 0; b < B; b++)
        if (targets[b] < 0 || targets[b] >= K) {
            PyErr_Format(PyExc_ValueError, "%s(): targets must be in 0..K-1 = 0..%d", F, K - 1);
            return NULL;
        }
    if (!isfinite(dloss)) { PyErr_Format(PyExc_ValueError, "%s(): dloss must be finite", F); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    softmax_ce_backward(dlogits, probs, targets, B, K, dloss);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* A capsule owns the classifier and its workspace; `busy` as for the UNet. */
typedef struct {
    Classifier* net;
    int busy;
} ClassifierHandle;

static void classifier_capsule_free(PyObject* cap) {
    ClassifierHandle* h = PyCapsule_GetPointer(cap, "ddpm.Classifier");
    if (h) { classifier_free(h->net); free(h); }
}

static ClassifierHandle* get_classifier(PyObject* cap, const char* F) {
    ClassifierHandle* h = PyCapsule_GetPointer(cap, "ddpm.Classifier");
    if (!h) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): expected a classifier handle from classifier_create()", F);
        return NULL;
    }
    if (h->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s(): this classifier is in use by another thread", F);
        return NULL;
    }
    return h;
}

PyDoc_STRVAR(classifier_create_doc,
"classifier_create(in_channels, image_size, widths, depth, groups, norm_eps, num_classes,\n"
"                  max_pool=False)\n--\n\n"
"Build the C classifier (csrc/classifier.h); returns a handle.  widths and depth:\n"
"one entry per stage; max_pool: 2x2 max (True) or average (False) pooling.");
static PyObject* py_classifier_create(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_create";
    ClassifierConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    PyObject *wo, *dpo;
    if (!PyArg_ParseTuple(args, "iiOOifi|p", &cfg.in_channels, &cfg.image_size, &wo, &dpo,
                          &cfg.groups, &cfg.norm_eps, &cfg.num_classes, &cfg.max_pool))
        return NULL;
    int L = int_seq(wo, cfg.widths, CLS_MAX_STAGES, F, "widths");
    if (L < 0) return NULL;
    if (int_seq(dpo, cfg.depth, CLS_MAX_STAGES, F, "depth") != L) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s(): depth needs one entry per stage (as widths)", F);
        return NULL;
    }
    cfg.num_stages = L;
    Classifier* net;
    const char* why;
    int st = classifier_create(&net, &cfg, &why);
    if (st == DDPM_ERR_NOMEM) return PyErr_NoMemory();
    if (st) {
        PyErr_Format(PyExc_ValueError, "%s(): %s", F, why ? why : "unsupported config");
        return NULL;
    }
    ClassifierHandle* h = calloc(1, sizeof *h);
    if (!h) { classifier_free(net); return PyErr_NoMemory(); }
    h->net = net;
    PyObject* cap = PyCapsule_New(h, "ddpm.Classifier", classifier_capsule_free);
    if (!cap) { classifier_free(net); free(h); return NULL; }
    return cap;
}

PyDoc_STRVAR(classifier_info_doc,
"classifier_info(handle)\n--\n\n"
"dict: num_parameters, feature_dim, flops_per_image, tensors = [(name, shape, offset, size)].");
static PyObject* py_classifier_info(PyObject* self, PyObject* cap) {
    (void)self;
    ClassifierHandle* h = get_classifier(cap, "classifier_info");
    if (!h) return NULL;
    int nt = classifier_num_tensors(h->net);
    PyObject* lst = PyList_New(nt);
    if (!lst) return NULL;
    for (int i = 0; i < nt; i++) {
        const ParamTensor* p = classifier_tensor(h->net, i);
        PyObject* item = tensor_entry(p);
        if (!item) { Py_DECREF(lst); return NULL; }
        PyList_SET_ITEM(lst, i, item);
    }
    return Py_BuildValue("{s:n,s:i,s:d,s:N}", "num_parameters",
                         (Py_ssize_t)classifier_num_parameters(h->net), "feature_dim",
                         classifier_feature_dim(h->net), "flops_per_image",
                         classifier_flops_per_image(h->net), "tensors", lst);
}

/* A (B, cols) float32 output, or None. */
static int rows_arg(PyObject* obj, const char* F, const char* name, int B, int cols, float** data) {
    *data = NULL;
    if (obj == Py_None) return 0;
    PyArrayObject* a = check_array(obj, F, name, NPY_FLOAT32, 1);
    if (!a) return -1;
    if (PyArray_NDIM(a) != 2 || PyArray_DIM(a, 0) != B || PyArray_DIM(a, 1) != cols) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (%d, %d)", F, name, B, cols);
        return -1;
    }
    *data = (float*)PyArray_DATA(a);
    return 0;
}

PyDoc_STRVAR(classifier_forward_doc,
"classifier_forward(handle, params, x, logits, features)\n--\n\n"
"logits (B,K) and features (B,D) (either may be None) of x (B,Cin,S,S) float32.");
static PyObject* py_classifier_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_forward";
    PyObject *cap, *po, *xo, *lo, *fo;
    if (!PyArg_ParseTuple(args, "OOOOO", &cap, &po, &xo, &lo, &fo)) return NULL;
    ClassifierHandle* h = get_classifier(cap, F);
    if (!h) return NULL;
    const ClassifierConfig* c = classifier_config(h->net);
    F32(params, po, "params", classifier_num_parameters(h->net), 0, 0);
    int B;
    float *x, *logits, *features;
    if (image_arg(xo, F, "x", c->in_channels, c->image_size, 0, 0, &B, &x)) return NULL;
    if (rows_arg(lo, F, "logits", B, c->num_classes, &logits) ||
        rows_arg(fo, F, "features", B, classifier_feature_dim(h->net), &features))
        return NULL;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = classifier_forward(h->net, params, x, logits, features, B);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st) return raise_status(st, F, "x");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(classifier_backward_doc,
"classifier_backward(handle, params, grads, dlogits, dx)\n--\n\n"
"After classifier_forward: grads += dL/dparams for dlogits (B,K) = dL/dlogits;\n"
"dx (B,Cin,S,S) (or None) = dL/dx.");
static PyObject* py_classifier_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_backward";
    PyObject *cap, *po, *go, *dlo, *dxo;
    if (!PyArg_ParseTuple(args, "OOOOO", &cap, &po, &go, &dlo, &dxo)) return NULL;
    ClassifierHandle* h = get_classifier(cap, F);
    if (!h) return NULL;
    const ClassifierConfig* c = classifier_config(h->net);
    const size_t P = classifier_num_parameters(h->net);
    F32(params, po, "params", P, 0, 0);
    F32(grads, go, "grads", P, 1, 0);
    PyArrayObject* da = check_array(dlo, F, "dlogits", NPY_FLOAT32, 0);
    if (!da) return NULL;
    if (PyArray_NDIM(da) != 2 || PyArray_DIM(da, 1) != c->num_classes || PyArray_DIM(da, 0) < 1 ||
        PyArray_DIM(da, 0) > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "%s(): dlogits must have shape (B, %d)", F, c->num_classes);
        return NULL;
    }
    int B = (int)PyArray_DIM(da, 0), B2;
    float* dx = NULL;
    if (dxo != Py_None && image_arg(dxo, F, "dx", c->in_channels, c->image_size, 1, B, &B2, &dx))
        return NULL;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = classifier_backward(h->net, params, grads, (const float*)PyArray_DATA(da), dx, B);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_VALUE) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s(): call classifier_forward on this batch (of %d images) first", F, B);
        return NULL;
    }
    if (st) return raise_status(st, F, "dlogits");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(classifier_train_step_doc,
"classifier_train_step(handle, params, grads, m, v, x, labels, step, adam, grad_clip)\n"
"    -> (loss, correct, grad_norm)\n--\n\n"
"One step: forward, mean softmax cross-entropy against labels (B,) int64, backward,\n"
"clip (grad_clip > 0), Adam(W) with adam = (lr, beta1, beta2, eps, weight_decay,\n"
"decoupled) at 1-based step.  Parameters are left unchanged on a NaN/Inf loss.");
static PyObject* py_classifier_train_step(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_train_step";
    PyObject *cap, *po, *go, *mo, *vo, *xo, *lo, *ao;
    ClassifierTrainConfig tc;
    memset(&tc, 0, sizeof tc);
    if (!PyArg_ParseTuple(args, "OOOOOOOlOd", &cap, &po, &go, &mo, &vo, &xo, &lo, &tc.step, &ao,
                          &tc.grad_clip))
        return NULL;
    ClassifierHandle* h = get_classifier(cap, F);
    if (!h) return NULL;
    const ClassifierConfig* c = classifier_config(h->net);
    const size_t P = classifier_num_parameters(h->net);
    if (parse_adam(ao, F, &tc.adam)) return NULL;
    if (tc.step < 1) { PyErr_Format(PyExc_ValueError, "%s(): step must be >= 1", F); return NULL; }
    if (!isfinite(tc.grad_clip)) { PyErr_Format(PyExc_ValueError, "%s(): grad_clip must be finite", F); return NULL; }
    F32(params, po, "params", P, 1, 0);
    F32(grads, go, "grads", P, 1, 0);
    F32(m, mo, "m", P, 1, 0);
    F32(v, vo, "v", P, 1, 0);
    int B;
    float* x;
    if (image_arg(xo, F, "x", c->in_channels, c->image_size, 0, 0, &B, &x)) return NULL;
    PyArrayObject* la = check_array(lo, F, "labels", NPY_INT64, 0);
    if (!la) return NULL;
    if (PyArray_NDIM(la) != 1 || PyArray_DIM(la, 0) != B) {
        PyErr_Format(PyExc_ValueError, "%s(): labels must have shape (B,) = (%d,)", F, B);
        return NULL;
    }
    const int64_t* labels = (const int64_t*)PyArray_DATA(la);
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= c->num_classes) {
            PyErr_Format(PyExc_ValueError, "%s(): labels must be in 0..%d", F, c->num_classes - 1);
            return NULL;
        }
    double loss = 0.0, norm = 0.0;
    int correct = 0, st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = classifier_train_step(h->net, params, grads, m, v, x, labels, B, &tc, &loss, &correct, &norm);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_NONFINITE && !isnan(loss)) {
        PyErr_Format(PyExc_FloatingPointError,
                     "%s(): non-finite loss or gradient (loss=%g, grad norm=%g); parameters "
                     "and moments were left unchanged", F, loss, norm);
        return NULL;
    }
    if (st) return raise_status(st, F, "x");
    return Py_BuildValue("(did)", loss, correct, norm);
}

#include "diffusion/sample.h"

/* ------------------------------------------------------------------------ */
/* samplers (sample.c): the whole reverse loop in C                          */
/* ------------------------------------------------------------------------ */

/* The U-Net as sample.c's denoiser. */
typedef struct {
    UNet* net;
    const float* params;
} SampleNet;

static int sample_unet_denoise(void* ctx, float* out, const float* x, const float* t,
                               const int64_t* labels, int N) {
    SampleNet* s = ctx;
    (void)labels;
    return unet_forward(s->net, s->params, x, t, out, N);
}

/* The stop hook: runs between steps on the calling thread with the GIL
 * re-acquired; a pending signal (Ctrl-C) or an exception from the progress
 * callable stops the loop, and the exception stays set for the binding. */
typedef struct {
    PyThreadState* tstate;
    PyObject* hook;          /* callable(step, nsteps) or NULL */
    int every;               /* call it every `every` steps (and at the end) */
} SampleStop;

static int sample_should_stop(void* ctx, int step, int nsteps) {
    SampleStop* c = ctx;
    PyEval_RestoreThread(c->tstate);
    int stop = 0;
    if (PyErr_CheckSignals() < 0) {
        stop = 1;
    } else if (c->hook && (step % c->every == 0 || step == nsteps)) {
        PyObject* r = PyObject_CallFunction(c->hook, "ii", step, nsteps);
        if (!r) stop = 1;
        else Py_DECREF(r);
    }
    c->tstate = PyEval_SaveThread();
    return stop;
}

/* An optional float32 array of exactly `count` values whose shape is
 * (lead..., shape of `like`): lead = NULL for the shape of like itself. */
static PyArrayObject* sample_array_like(PyObject* obj, const char* F, const char* name,
                                        PyArrayObject* like, npy_intp lead, int writeable) {
    PyArrayObject* a = check_array(obj, F, name, NPY_FLOAT32, writeable);
    if (!a) return NULL;
    int off = lead >= 0 ? 1 : 0;
    int ok = PyArray_NDIM(a) == PyArray_NDIM(like) + off &&
             (!off || PyArray_DIM(a, 0) == lead) &&
             PyArray_CompareLists(PyArray_DIMS(a) + off, PyArray_DIMS(like), PyArray_NDIM(like));
    if (!ok) {
        if (off)
            PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (%zd,) + out.shape",
                         F, name, (Py_ssize_t)lead);
        else
            PyErr_Format(PyExc_ValueError, "%s(): %s must have the shape of out", F, name);
        return NULL;
    }
    return a;
}

/* The model argument of sample/nll: a UNet handle with its params array, or
 * a tuple (mean, std) for the closed-form Gaussian denoiser with params None.
 * Fills *h and *params, or *gauss; -1 with a TypeError. */
static int denoiser_arg(PyObject* model_o, PyObject* params_o, const char* F, UNetHandle** h,
                        PyArrayObject** params, GaussianDenoiser* gauss) {
    memset(gauss, 0, sizeof *gauss);
    *h = NULL;
    *params = NULL;
    if (PyTuple_Check(model_o)) {
        if (PyTuple_GET_SIZE(model_o) != 2 ||
            !PyArg_ParseTuple(model_o, "dd", &gauss->mean, &gauss->std)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s(): model must be a UNet handle or a tuple "
                         "(mean, std) of floats", F);
            return -1;
        }
        if (params_o != Py_None) {
            PyErr_Format(PyExc_TypeError, "%s(): params must be None with the Gaussian "
                         "denoiser", F);
            return -1;
        }
        return 0;
    }
    if (!(*h = get_unet(model_o, F))) return -1;
    if (!(*params = check_array(params_o, F, "params", NPY_FLOAT32, 0))) return -1;
    return 0;
}

/* A batch of images (N, ...) for a sampling-style loop: 1 <= N <= 2**20 and, with
 * a U-Net (h), shape (N, C, S, S) for it, in == out channels and params of its size.
 * Sets *N and *D (values per image); -1 with a ValueError set otherwise. */
static int check_image_batch(PyArrayObject* a, const char* name, UNetHandle* h,
                             PyArrayObject* params, const char* F, int* N, size_t* D) {
    if (PyArray_NDIM(a) < 2 || PyArray_DIM(a, 0) < 1 || PyArray_SIZE(a) < 1 ||
        PyArray_DIM(a, 0) > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (N, ...) with 1 <= N <= 2**20 "
                     "and values per image", F, name);
        return -1;
    }
    *N = (int)PyArray_DIM(a, 0);
    *D = (size_t)PyArray_SIZE(a) / (size_t)*N;
    if (!h) return 0;
    const UNetConfig* c = unet_config(h->net);
    if (c->in_channels != c->out_channels) {
        PyErr_Format(PyExc_ValueError, "%s(): the model must output as many channels as it "
                     "takes (%d in, %d out)", F, c->in_channels, c->out_channels);
        return -1;
    }
    if (PyArray_NDIM(a) != 4 || PyArray_DIM(a, 1) != c->in_channels ||
        PyArray_DIM(a, 2) != c->sample_size || PyArray_DIM(a, 3) != c->sample_size) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (N, %d, %d, %d) for this "
                     "model", F, name, c->in_channels, c->sample_size, c->sample_size);
        return -1;
    }
    if ((size_t)PyArray_SIZE(params) != unet_num_parameters(h->net)) {
        PyErr_Format(PyExc_ValueError, "%s(): params must hold %zu values", F,
                     unet_num_parameters(h->net));
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(sample_doc,
"sample(out, model, params, alpha_bars, ts, prevs, *, sampler, objective, variance=0,\n"
"       eta=0.0, clip_x0=True, thresh_ratio=0.0, thresh_max=inf, seed=0, x_T=None,\n"
"       noise=None, capture=None, cap_x=None, cap_eps=None, cap_x0=None, hook=None,\n"
"       hook_every=1)\n--\n\n"
"Run a whole reverse process in C with the GIL released; out (N, ...) float32\n"
"receives x_0.  model is a UNet handle (params its flat float32 parameters) or,\n"
"as a test hook, a tuple (mean, std): the exact denoiser of N(mean, std^2) data\n"
"(params None).  alpha_bars (T+1,) float64; ts, prevs (K,) int64 lesson times of\n"
"each model call and of the state each step moves to.  sampler 0 DDPM, 1 DDIM,\n"
"2 DPM-Solver++(2M); objective 0 eps, 1 x0, 2 v; variance 0 fixed_small,\n"
"1 fixed_large, 2 zero.  x_T (like out) and noise (K, like out) replace the RNG\n"
"draws.  capture (M,) int64 step indices 0..K (increasing) select frames\n"
"written to cap_x/cap_eps/cap_x0 (M, like out).  hook(step, K) is called every\n"
"hook_every steps; Ctrl-C or an exception in hook stops the loop and is raised.");
static PyObject* py_sample(PyObject* self, PyObject* args, PyObject* kwargs) {
    (void)self;
    const char* F = "sample";
    static char* kwlist[] = {"out", "model", "params", "alpha_bars", "ts", "prevs",
                             "sampler", "objective", "variance", "eta", "clip_x0",
                             "thresh_ratio", "thresh_max", "seed", "x_T", "noise", "capture",
                             "cap_x", "cap_eps", "cap_x0", "hook", "hook_every", NULL};
    PyObject *out_o, *model_o, *params_o, *ab_o, *ts_o, *prevs_o;
    PyObject *seed_o = NULL, *xT_o = Py_None, *noise_o = Py_None, *cap_o = Py_None;
    PyObject *cx_o = Py_None, *ce_o = Py_None, *c0_o = Py_None, *hook_o = Py_None;
    int sampler = -1, objective = -1, variance = 0, clip_x0 = 1, hook_every = 1;
    double eta = 0.0, thresh_ratio = 0.0, thresh_max = INFINITY;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO|$iiidpddOOOOOOOOi:sample", kwlist,
                                     &out_o, &model_o, &params_o, &ab_o, &ts_o, &prevs_o,
                                     &sampler, &objective, &variance, &eta, &clip_x0,
                                     &thresh_ratio, &thresh_max, &seed_o, &xT_o, &noise_o,
                                     &cap_o, &cx_o, &ce_o, &c0_o, &hook_o, &hook_every))
        return NULL;

    /* arrays: ndarray, contiguous, dtype, byte order, aligned, writeable */
    PyArrayObject* out = check_array(out_o, F, "out", NPY_FLOAT32, 1);
    if (!out) return NULL;
    UNetHandle* h = NULL;
    GaussianDenoiser gauss;
    PyArrayObject* params = NULL;
    if (denoiser_arg(model_o, params_o, F, &h, &params, &gauss) < 0) return NULL;
    PyArrayObject* ab = check_array(ab_o, F, "alpha_bars", NPY_FLOAT64, 0);
    if (!ab) return NULL;
    PyArrayObject* ts = check_array(ts_o, F, "ts", NPY_INT64, 0);
    if (!ts) return NULL;
    PyArrayObject* prevs = check_array(prevs_o, F, "prevs", NPY_INT64, 0);
    if (!prevs) return NULL;
    PyArrayObject *xT = NULL, *noise = NULL, *cap = NULL, *cx = NULL, *ce = NULL, *c0 = NULL;
    npy_intp K = PyArray_SIZE(ts);
    if (xT_o != Py_None && !(xT = sample_array_like(xT_o, F, "x_T", out, -1, 0))) return NULL;
    if (noise_o != Py_None && !(noise = sample_array_like(noise_o, F, "noise", out, K, 0)))
        return NULL;
    npy_intp M = 0;
    if (cap_o != Py_None) {
        if (!(cap = check_array(cap_o, F, "capture", NPY_INT64, 0))) return NULL;
        M = PyArray_SIZE(cap);
    }
    if (cx_o != Py_None && !(cx = sample_array_like(cx_o, F, "cap_x", out, M, 1))) return NULL;
    if (ce_o != Py_None && !(ce = sample_array_like(ce_o, F, "cap_eps", out, M, 1))) return NULL;
    if (c0_o != Py_None && !(c0 = sample_array_like(c0_o, F, "cap_x0", out, M, 1))) return NULL;

    /* shapes */
    int N;
    size_t D;
    if (check_image_batch(out, "out", h, params, F, &N, &D) < 0) return NULL;
    if (PyArray_NDIM(ab) != 1 || PyArray_DIM(ab, 0) < 2 ||
        PyArray_DIM(ab, 0) > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): alpha_bars must have shape (T+1,), 1 <= T <= %d",
                     F, MAX_TIMESTEPS);
        return NULL;
    }
    int T = (int)PyArray_DIM(ab, 0) - 1;
    if (PyArray_NDIM(ts) != 1 || K < 1 || K > MAX_TIMESTEPS || PyArray_NDIM(prevs) != 1 ||
        PyArray_DIM(prevs, 0) != K) {
        PyErr_Format(PyExc_ValueError, "%s(): ts and prevs must have the same shape (K,), "
                     "1 <= K <= %d", F, MAX_TIMESTEPS);
        return NULL;
    }
    if (cap && (PyArray_NDIM(cap) != 1 || M > K + 1)) {
        PyErr_Format(PyExc_ValueError, "%s(): capture must have shape (M,) with M <= K + 1", F);
        return NULL;
    }
    if (!cap && (cx || ce || c0)) {
        PyErr_Format(PyExc_ValueError, "%s(): cap_x/cap_eps/cap_x0 need capture", F);
        return NULL;
    }

    /* ranges */
    if (sampler < SAMPLER_DDPM || sampler > SAMPLER_DPMPP_2M) {
        PyErr_Format(PyExc_ValueError, "%s(): sampler must be 0 (DDPM), 1 (DDIM) or 2 "
                     "(DPM-Solver++), got %d", F, sampler);
        return NULL;
    }
    if (objective < OBJ_EPS || objective > OBJ_V) {
        PyErr_Format(PyExc_ValueError, "%s(): objective must be 0 (eps), 1 (x0) or 2 (v), "
                     "got %d", F, objective);
        return NULL;
    }
    if (variance < SAMPLE_FIXED_SMALL || variance > SAMPLE_VAR_ZERO) {
        PyErr_Format(PyExc_ValueError, "%s(): variance must be 0, 1 or 2, got %d", F, variance);
        return NULL;
    }
    if (!(eta >= 0.0 && eta <= 1.0)) {
        PyErr_Format(PyExc_ValueError, "%s(): eta must be in [0, 1], got %g", F, eta);
        return NULL;
    }
    if (!(thresh_ratio >= 0.0 && thresh_ratio <= 1.0) ||
        (thresh_ratio > 0.0 && !(thresh_max >= 1.0))) {
        PyErr_Format(PyExc_ValueError, "%s(): thresh_ratio must be in [0, 1] and thresh_max "
                     ">= 1", F);
        return NULL;
    }
    uint64_t seed = 0;
    if (seed_o && parse_seed(seed_o, F, &seed)) return NULL;
    if (hook_o != Py_None && !PyCallable_Check(hook_o)) {
        PyErr_Format(PyExc_TypeError, "%s(): hook must be callable or None", F);
        return NULL;
    }
    if (hook_every < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): hook_every must be >= 1, got %d", F, hook_every);
        return NULL;
    }
    const double* abp = (const double*)PyArray_DATA(ab);
    if (abp[0] != 1.0) {
        PyErr_Format(PyExc_ValueError, "%s(): alpha_bars[0] must be 1", F);
        return NULL;
    }
    for (int t = 1; t <= T; t++) {
        if (!(abp[t] >= 0.0 && abp[t] < 1.0)) {
            PyErr_Format(PyExc_ValueError, "%s(): alpha_bars[1..T] must lie in [0, 1)", F);
            return NULL;
        }
    }
    const int64_t* tsp = (const int64_t*)PyArray_DATA(ts);
    const int64_t* pvp = (const int64_t*)PyArray_DATA(prevs);
    for (npy_intp k = 0; k < K; k++) {
        if (tsp[k] < 1 || tsp[k] > T || pvp[k] < 0 || pvp[k] >= tsp[k]) {
            PyErr_Format(PyExc_ValueError, "%s(): need 1 <= ts[k] <= T = %d and 0 <= prevs[k] < "
                         "ts[k]; step %zd has ts %lld, prevs %lld", F, T, (Py_ssize_t)k,
                         (long long)tsp[k], (long long)pvp[k]);
            return NULL;
        }
    }
    if (cap) {
        const int64_t* cp = (const int64_t*)PyArray_DATA(cap);
        for (npy_intp i = 0; i < M; i++) {
            if (cp[i] < 0 || cp[i] > K || (i && cp[i] <= cp[i - 1])) {
                PyErr_Format(PyExc_ValueError, "%s(): capture must be increasing step indices "
                             "in 0..K = 0..%zd", F, (Py_ssize_t)K);
                return NULL;
            }
        }
    }

    SampleSpec spec;
    memset(&spec, 0, sizeof spec);
    spec.sampler = sampler;
    spec.objective = objective;
    spec.variance = variance;
    spec.K = (int)K;
    spec.ts = tsp;
    spec.prevs = pvp;
    spec.alpha_bars = abp;
    spec.T = T;
    spec.eta = eta;
    spec.clip_x0 = clip_x0;
    spec.thresh_ratio = thresh_ratio;
    spec.thresh_max = thresh_max;
    spec.seed = seed;
    spec.x_T = xT ? (const float*)PyArray_DATA(xT) : NULL;
    spec.noise = noise ? (const float*)PyArray_DATA(noise) : NULL;
    spec.M = (int)M;
    spec.capture = cap ? (const int64_t*)PyArray_DATA(cap) : NULL;
    spec.cap_x = cx ? (float*)PyArray_DATA(cx) : NULL;
    spec.cap_eps = ce ? (float*)PyArray_DATA(ce) : NULL;
    spec.cap_x0 = c0 ? (float*)PyArray_DATA(c0) : NULL;

    SampleNet snet;
    sample_denoise_fn fn;
    void* fctx;
    if (h) {
        snet.net = h->net;
        snet.params = (const float*)PyArray_DATA(params);
        fn = sample_unet_denoise;
        fctx = &snet;
    } else {
        gauss.alpha_bars = abp;
        gauss.T = T;
        gauss.objective = objective;
        gauss.D = D;
        fn = sample_gaussian_denoise;
        fctx = &gauss;
    }
    SampleStop stop = {NULL, hook_o == Py_None ? NULL : hook_o, hook_every};
    const char* what = "";
    int st;
    if (h) h->busy = 1;
    stop.tstate = PyEval_SaveThread();
    st = sample_run((float*)PyArray_DATA(out), &spec, N, D, fn, fctx, sample_should_stop, &stop,
                    &what);
    PyEval_RestoreThread(stop.tstate);
    if (h) h->busy = 0;
    if (st == DDPM_ERR_INTERRUPTED) return raise_status(st, F, "");
    if (st == DDPM_ERR_NONFINITE) {
        PyErr_Format(PyExc_ValueError, "%s(): %s contains NaN or Inf", F, what);
        return NULL;
    }
    if (st) return raise_status(st, F, "arguments");
    Py_RETURN_NONE;
}

#include "diffusion/nll.h"

/* ------------------------------------------------------------------------ */
/* the likelihood bound (nll.c): the loop over timesteps in C                 */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(nll_doc,
"nll(terms, prior, x0, model, params, betas, ts, *, objective, variance=0, clip_x0=False,\n"
"    seed=0, first_image=0, noise=None, hook=None, hook_every=1)\n--\n\n"
"The terms of the DDPM variational bound in nats, computed in C with the GIL\n"
"released.  x0 (N, ...) float32 on [-1, 1]; terms (N, K) float64 receives the\n"
"term at lesson time ts[n, k] (ts (N, K) int64, 1..T; t = 1 is -log p(x_0 | x_1),\n"
"t >= 2 is L_{t-1}); prior (N,) float64 receives L_T.  model is a UNet handle\n"
"(params its flat float32 parameters) or, as a test hook, a tuple (mean, std):\n"
"the exact denoiser of N(mean, std^2) data (params None).  betas (T+1,) float64\n"
"(betas[0] ignored).  objective 0 eps, 1 x0, 2 v; variance 0 fixed_small,\n"
"1 fixed_large.  eps of image n at time t is drawn from (seed, stream\n"
"STREAM_NLL_EPS + t) at offset (first_image + n) * D unless noise (K, like x0)\n"
"float32 gives column k's eps.  hook(k, K) is called every hook_every columns;\n"
"Ctrl-C or an exception in hook stops the loop and is raised (terms and prior\n"
"are then left untouched).");
static PyObject* py_nll(PyObject* self, PyObject* args, PyObject* kwargs) {
    (void)self;
    const char* F = "nll";
    static char* kwlist[] = {"terms", "prior", "x0", "model", "params", "betas", "ts",
                             "objective", "variance", "clip_x0", "seed", "first_image", "noise",
                             "hook", "hook_every", NULL};
    PyObject *terms_o, *prior_o, *x0_o, *model_o, *params_o, *betas_o, *ts_o;
    PyObject *seed_o = NULL, *first_o = NULL, *noise_o = Py_None, *hook_o = Py_None;
    int objective = -1, variance = 0, clip_x0 = 0, hook_every = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO|$iipOOOOi:nll", kwlist,
                                     &terms_o, &prior_o, &x0_o, &model_o, &params_o, &betas_o,
                                     &ts_o, &objective, &variance, &clip_x0, &seed_o, &first_o,
                                     &noise_o, &hook_o, &hook_every))
        return NULL;

    /* arrays: ndarray, contiguous, dtype, byte order, aligned, writeable */
    PyArrayObject* terms = check_array(terms_o, F, "terms", NPY_FLOAT64, 1);
    if (!terms) return NULL;
    PyArrayObject* prior = check_array(prior_o, F, "prior", NPY_FLOAT64, 1);
    if (!prior) return NULL;
    PyArrayObject* x0 = check_array(x0_o, F, "x0", NPY_FLOAT32, 0);
    if (!x0) return NULL;
    UNetHandle* h = NULL;
    GaussianDenoiser gauss;
    PyArrayObject* params = NULL;
    if (denoiser_arg(model_o, params_o, F, &h, &params, &gauss) < 0) return NULL;
    PyArrayObject* betas = check_array(betas_o, F, "betas", NPY_FLOAT64, 0);
    if (!betas) return NULL;
    PyArrayObject* ts = check_array(ts_o, F, "ts", NPY_INT64, 0);
    if (!ts) return NULL;
    PyArrayObject* noise = NULL;

    /* shapes */
    int N;
    size_t D;
    if (check_image_batch(x0, "x0", h, params, F, &N, &D) < 0) return NULL;
    if (PyArray_NDIM(betas) != 1 || PyArray_DIM(betas, 0) < 2 ||
        PyArray_DIM(betas, 0) > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): betas must have shape (T+1,), 1 <= T <= %d",
                     F, MAX_TIMESTEPS);
        return NULL;
    }
    int T = (int)PyArray_DIM(betas, 0) - 1;
    if (PyArray_NDIM(ts) != 2 || PyArray_DIM(ts, 0) != N || PyArray_DIM(ts, 1) < 1 ||
        PyArray_DIM(ts, 1) > MAX_TIMESTEPS) {
        PyErr_Format(PyExc_ValueError, "%s(): ts must have shape (N, K) = (%d, K), "
                     "1 <= K <= %d", F, N, MAX_TIMESTEPS);
        return NULL;
    }
    npy_intp K = PyArray_DIM(ts, 1);
    if (PyArray_NDIM(terms) != 2 || PyArray_DIM(terms, 0) != N || PyArray_DIM(terms, 1) != K) {
        PyErr_Format(PyExc_ValueError, "%s(): terms must have the shape of ts (%d, %zd)", F, N,
                     (Py_ssize_t)K);
        return NULL;
    }
    if (PyArray_NDIM(prior) != 1 || PyArray_DIM(prior, 0) != N) {
        PyErr_Format(PyExc_ValueError, "%s(): prior must have shape (N,) = (%d,)", F, N);
        return NULL;
    }
    if (noise_o != Py_None) {
        if (!(noise = check_array(noise_o, F, "noise", NPY_FLOAT32, 0))) return NULL;
        if (PyArray_NDIM(noise) != PyArray_NDIM(x0) + 1 || PyArray_DIM(noise, 0) != K ||
            !PyArray_CompareLists(PyArray_DIMS(noise) + 1, PyArray_DIMS(x0), PyArray_NDIM(x0))) {
            PyErr_Format(PyExc_ValueError, "%s(): noise must have shape (K,) + x0.shape with "
                         "K = %zd", F, (Py_ssize_t)K);
            return NULL;
        }
    }

    /* ranges */
    if (objective < OBJ_EPS || objective > OBJ_V) {
        PyErr_Format(PyExc_ValueError, "%s(): objective must be 0 (eps), 1 (x0) or 2 (v), "
                     "got %d", F, objective);
        return NULL;
    }
    if (variance < NLL_FIXED_SMALL || variance > NLL_FIXED_LARGE) {
        PyErr_Format(PyExc_ValueError, "%s(): variance must be 0 (fixed_small) or 1 "
                     "(fixed_large), got %d", F, variance);
        return NULL;
    }
    uint64_t seed = 0, first = 0;
    if (seed_o && parse_seed(seed_o, F, &seed)) return NULL;
    if (first_o && parse_seed(first_o, F, &first)) return NULL;
    if (first > ((uint64_t)1 << 40)) {
        PyErr_Format(PyExc_ValueError, "%s(): first_image must be <= 2**40", F);
        return NULL;
    }
    if (hook_o != Py_None && !PyCallable_Check(hook_o)) {
        PyErr_Format(PyExc_TypeError, "%s(): hook must be callable or None", F);
        return NULL;
    }
    if (hook_every < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): hook_every must be >= 1, got %d", F, hook_every);
        return NULL;
    }
    const double* bp = (const double*)PyArray_DATA(betas);
    for (int t = 1; t <= T; t++) {
        if (!(bp[t] > 0.0 && bp[t] <= 1.0) || (bp[t] == 1.0 && t != T)) {
            PyErr_Format(PyExc_ValueError, "%s(): betas[1..T] must lie in (0, 1] (1 only at "
                         "t = T), got betas[%d] = %g", F, t, bp[t]);
            return NULL;
        }
    }
    if (1.0 - bp[1] == 1.0) {
        PyErr_Format(PyExc_ValueError, "%s(): betas[1] is too small (1 - beta_1 rounds to 1)", F);
        return NULL;
    }
    const int64_t* tsp = (const int64_t*)PyArray_DATA(ts);
    for (npy_intp i = 0; i < (npy_intp)N * K; i++) {
        if (tsp[i] < 1 || tsp[i] > T) {
            PyErr_Format(PyExc_ValueError, "%s(): ts must lie in 1..T = 1..%d, got %lld", F, T,
                         (long long)tsp[i]);
            return NULL;
        }
    }
    if (objective == OBJ_EPS && bp[T] == 1.0) {
        PyErr_Format(PyExc_ValueError, "%s(): an eps model cannot predict x_0 where alpha_bar_T "
                     "= 0 (a zero-terminal-SNR schedule); use the v or x0 objective", F);
        return NULL;
    }

    NllSpec spec;
    memset(&spec, 0, sizeof spec);
    spec.objective = objective;
    spec.variance = variance;
    spec.clip_x0 = clip_x0;
    spec.T = T;
    spec.betas = bp;
    spec.K = (int)K;
    spec.ts = tsp;
    spec.seed = seed;
    spec.first_image = first;
    spec.noise = noise ? (const float*)PyArray_DATA(noise) : NULL;

    SampleNet snet;
    sample_denoise_fn fn;
    void* fctx;
    double* abuf = NULL;
    if (h) {
        snet.net = h->net;
        snet.params = (const float*)PyArray_DATA(params);
        fn = sample_unet_denoise;
        fctx = &snet;
    } else {
        abuf = malloc(sizeof(double) * (size_t)(T + 1));   /* the denoiser's alpha_bars */
        if (!abuf) return PyErr_NoMemory();
        abuf[0] = 1.0;
        for (int t = 1; t <= T; t++) abuf[t] = abuf[t - 1] * (1.0 - bp[t]);
        gauss.alpha_bars = abuf;
        gauss.T = T;
        gauss.objective = objective;
        gauss.D = D;
        fn = sample_gaussian_denoise;
        fctx = &gauss;
    }
    SampleStop stop = {NULL, hook_o == Py_None ? NULL : hook_o, hook_every};
    const char* what = "";
    int st;
    if (h) h->busy = 1;
    stop.tstate = PyEval_SaveThread();
    st = nll_run((double*)PyArray_DATA(terms), (double*)PyArray_DATA(prior),
                 (const float*)PyArray_DATA(x0), &spec, N, D, fn, fctx, sample_should_stop, &stop,
                 &what);
    PyEval_RestoreThread(stop.tstate);
    if (h) h->busy = 0;
    free(abuf);
    if (st == DDPM_ERR_INTERRUPTED) return raise_status(st, F, "");
    if (st == DDPM_ERR_NONFINITE) {
        PyErr_Format(PyExc_ValueError, "%s(): %s contains NaN or Inf", F, what);
        return NULL;
    }
    if (st) return raise_status(st, F, what && *what ? what : "arguments");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(nll_timesteps_doc,
"nll_timesteps(ts, T, seed, first_image)\n--\n\n"
"Fill ts (N, K) int64 with K distinct lesson times per image drawn uniformly from\n"
"2..T (sorted), image n from (seed, stream STREAM_NLL_T) at offset\n"
"(first_image + n) * 2K: the same draws however the images are batched.");
static PyObject* py_nll_timesteps(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "nll_timesteps";
    PyObject *ts_o, *seed_o, *first_o;
    int T;
    if (!PyArg_ParseTuple(args, "OiOO", &ts_o, &T, &seed_o, &first_o)) return NULL;
    PyArrayObject* ts = check_array(ts_o, F, "ts", NPY_INT64, 1);
    if (!ts) return NULL;
    if (PyArray_NDIM(ts) != 2 || PyArray_DIM(ts, 0) < 1 || PyArray_DIM(ts, 0) > (1 << 20) ||
        PyArray_DIM(ts, 1) < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): ts must have shape (N, K), 1 <= N <= 2**20, K >= 1",
                     F);
        return NULL;
    }
    if (T < 2 || T > MAX_TIMESTEPS || PyArray_DIM(ts, 1) > T - 1) {
        PyErr_Format(PyExc_ValueError, "%s(): need 2 <= T <= %d and K <= T - 1 (got T = %d, "
                     "K = %zd)", F, MAX_TIMESTEPS, T, (Py_ssize_t)PyArray_DIM(ts, 1));
        return NULL;
    }
    uint64_t seed, first;
    if (parse_seed(seed_o, F, &seed) || parse_seed(first_o, F, &first)) return NULL;
    if (first > ((uint64_t)1 << 40)) {
        PyErr_Format(PyExc_ValueError, "%s(): first_image must be <= 2**40", F);
        return NULL;
    }
    int st;
    int N = (int)PyArray_DIM(ts, 0), K = (int)PyArray_DIM(ts, 1);
    Py_BEGIN_ALLOW_THREADS
    st = nll_draw_timesteps((int64_t*)PyArray_DATA(ts), N, K, T, seed, first);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, "arguments");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* module                                                                    */
/* ------------------------------------------------------------------------ */

static PyMethodDef core_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_O, set_num_threads_doc},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"has_openmp", py_has_openmp, METH_NOARGS, has_openmp_doc},
    {"philox4x32_10", py_philox, METH_VARARGS, philox_doc},
    {"rng_normal", py_rng_normal, METH_VARARGS, rng_normal_doc},
    {"rng_uint32", py_rng_uint32, METH_VARARGS, rng_uint32_doc},
    {"schedule_betas", py_schedule_betas, METH_VARARGS, schedule_betas_doc},
    {"rescale_zero_terminal_snr", py_rescale, METH_O, rescale_doc},
    {"schedule_tables", py_schedule_tables, METH_O, schedule_tables_doc},
    {"q_sample", py_q_sample, METH_VARARGS, q_sample_doc},
    {"q_sample_chain", py_q_sample_chain, METH_VARARGS, q_sample_chain_doc},
    {"q_posterior_mean", py_q_posterior_mean, METH_VARARGS, q_posterior_mean_doc},
    {"conv2d_forward", py_conv2d_forward, METH_VARARGS, conv2d_forward_doc},
    {"conv2d_backward", py_conv2d_backward, METH_VARARGS, conv2d_backward_doc},
    {"groupnorm_forward", py_groupnorm_forward, METH_VARARGS, groupnorm_forward_doc},
    {"groupnorm_backward", py_groupnorm_backward, METH_VARARGS, groupnorm_backward_doc},
    {"linear_forward", py_linear_forward, METH_VARARGS, linear_forward_doc},
    {"linear_backward", py_linear_backward, METH_VARARGS, linear_backward_doc},
    {"silu_forward", py_silu_forward, METH_VARARGS, silu_forward_doc},
    {"silu_backward", py_silu_backward, METH_VARARGS, silu_backward_doc},
    {"timestep_embedding", py_timestep_embedding, METH_VARARGS, timestep_embedding_doc},
    {"attention_forward", py_attention_forward, METH_VARARGS, attention_forward_doc},
    {"attention_backward", py_attention_backward, METH_VARARGS, attention_backward_doc},
    {"upsample_forward", py_upsample_forward, METH_VARARGS, upsample_forward_doc},
    {"upsample_backward", py_upsample_backward, METH_VARARGS, upsample_backward_doc},
    {"unet_create", py_unet_create, METH_VARARGS, unet_create_doc},
    {"unet_info", py_unet_info, METH_O, unet_info_doc},
    {"unet_profile", py_unet_profile, METH_VARARGS, unet_profile_doc},
    {"unet_forward", py_unet_forward, METH_VARARGS, unet_forward_doc},
    {"unet_backward", py_unet_backward, METH_VARARGS, unet_backward_doc},
    {"grad_norm", py_grad_norm, METH_O, grad_norm_doc},
    {"adam_step", py_adam_step, METH_VARARGS, adam_step_doc},
    {"ema_update", py_ema_update, METH_VARARGS, ema_update_doc},
    {"ema_decay_at", py_ema_decay_at, METH_VARARGS, ema_decay_at_doc},
    {"train_step", py_train_step, METH_VARARGS, train_step_doc},
    {"sample", (PyCFunction)(void (*)(void))py_sample, METH_VARARGS | METH_KEYWORDS, sample_doc},
    {"nll", (PyCFunction)(void (*)(void))py_nll, METH_VARARGS | METH_KEYWORDS, nll_doc},
    {"nll_timesteps", py_nll_timesteps, METH_VARARGS, nll_timesteps_doc},
    {"avgpool2_forward", py_avgpool2_forward, METH_VARARGS, avgpool2_forward_doc},
    {"avgpool2_backward", py_avgpool2_backward, METH_VARARGS, avgpool2_backward_doc},
    {"maxpool2_forward", py_maxpool2_forward, METH_VARARGS, maxpool2_forward_doc},
    {"maxpool2_backward", py_maxpool2_backward, METH_VARARGS, maxpool2_backward_doc},
    {"global_avgpool_forward", py_global_avgpool_forward, METH_VARARGS, global_avgpool_forward_doc},
    {"global_avgpool_backward", py_global_avgpool_backward, METH_VARARGS, global_avgpool_backward_doc},
    {"softmax_ce_forward", py_softmax_ce_forward, METH_VARARGS, softmax_ce_forward_doc},
    {"softmax_ce_backward", py_softmax_ce_backward, METH_VARARGS, softmax_ce_backward_doc},
    {"classifier_create", py_classifier_create, METH_VARARGS, classifier_create_doc},
    {"classifier_info", py_classifier_info, METH_O, classifier_info_doc},
    {"classifier_forward", py_classifier_forward, METH_VARARGS, classifier_forward_doc},
    {"classifier_backward", py_classifier_backward, METH_VARARGS, classifier_backward_doc},
    {"classifier_train_step", py_classifier_train_step, METH_VARARGS, classifier_train_step_doc},
    {NULL, NULL, 0, NULL},
};

static int core_exec(PyObject* m) {
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    static const char* names[SCHEDULE_NUM_TABLES] = {
        "betas", "alphas", "alpha_bars", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars",
        "snr", "snr_db", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2", "sqrt_recip_alphas", "eps_coef"};
    PyObject* tup = PyTuple_New(SCHEDULE_NUM_TABLES);
    if (!tup) return -1;
    for (int i = 0; i < SCHEDULE_NUM_TABLES; i++) {
        PyObject* s = PyUnicode_FromString(names[i]);
        if (!s) { Py_DECREF(tup); return -1; }
        PyTuple_SET_ITEM(tup, i, s);
    }
    if (PyModule_AddObject(m, "TABLE_NAMES", tup) < 0) { Py_DECREF(tup); return -1; }
    if (PyModule_AddIntConstant(m, "MAX_TIMESTEPS", MAX_TIMESTEPS) < 0) return -1;
    if (PyModule_AddObject(m, "STREAM_USER", PyLong_FromUnsignedLongLong(DDPM_STREAM_USER)) < 0)
        return -1;
    if (PyModule_AddObject(m, "STREAM_NLL_EPS", PyLong_FromUnsignedLongLong(DDPM_STREAM_NLL_EPS)) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

PyDoc_STRVAR(core_doc,
"ddpm._core: the C engine of ddpm (schedules, RNG, noising, network, samplers).\n"
"Strict about its inputs; use the ddpm package for friendly conversions.");

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "_core", core_doc, 0, core_methods, core_slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
