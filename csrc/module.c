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

#include "common.h"
#include "rng.h"
#include "schedule.h"
#include "noising.h"

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
#ifdef _OPENMP
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

/* ------------------------------------------------------------------------ */
/* random numbers                                                            */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(philox_doc,
"philox4x32_10(counter, key)\n--\n\n"
"One Philox4x32-10 block: counter is 4 uint32, key 2 uint32; returns 4 uint32.");
static PyObject* py_philox(PyObject* self, PyObject* args) {
    (void)self;
    unsigned int c[4], k[2];
    if (!PyArg_ParseTuple(args, "(IIII)(II):philox4x32_10", &c[0], &c[1], &c[2], &c[3],
                          &k[0], &k[1]))
        return NULL;
    uint32_t ctr[4] = {c[0], c[1], c[2], c[3]}, key[2] = {k[0], k[1]}, out[4];
    philox4x32_10(out, ctr, key);
    return Py_BuildValue("(kkkk)", (unsigned long)out[0], (unsigned long)out[1],
                         (unsigned long)out[2], (unsigned long)out[3]);
}

PyDoc_STRVAR(rng_normal_doc,
"rng_normal(out, seed, stream, offset)\n--\n\n"
"Fill the float32 array out with normals offset.. of (seed, stream).");
static PyObject* py_rng_normal(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "rng_normal";
    PyObject *out_o, *seed_o, *stream_o;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "OOOK", &out_o, &seed_o, &stream_o, &offset)) return NULL;
    PyArrayObject* out = check_array(out_o, F, "out", NPY_FLOAT32, 1);
    if (!out) return NULL;
    uint64_t seed, stream;
    if (parse_seed(seed_o, F, &seed) || parse_seed(stream_o, F, &stream)) return NULL;
    float* p = (float*)PyArray_DATA(out);
    size_t n = (size_t)PyArray_SIZE(out);
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
    PyObject *out_o, *seed_o, *stream_o;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "OOOK", &out_o, &seed_o, &stream_o, &offset)) return NULL;
    PyArrayObject* out = check_array(out_o, F, "out", NPY_UINT32, 1);
    if (!out) return NULL;
    uint64_t seed, stream;
    if (parse_seed(seed_o, F, &seed) || parse_seed(stream_o, F, &stream)) return NULL;
    uint32_t* p = (uint32_t*)PyArray_DATA(out);
    size_t n = (size_t)PyArray_SIZE(out);
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
