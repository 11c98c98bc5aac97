/*
 * py_rng.c - the binding of the core's foundations: the thread knob, the
 * Philox counter RNG (one block, normal and uint32 fills), the noise schedule
 * (betas of a kind, zero-terminal-SNR rescaling, the derived tables) and the
 * forward process (q_sample, q_sample_chain, q_posterior_mean).
 *
 * Legend: N samples, D values per sample, T steps of the schedule, tables
 * (T+1,) float64 indexed by the lessons' 1-based t.
 */
#include "python/binding.h"

#include <string.h>

#include "core/common.h"
#include "core/rng.h"
#include "core/threads.h"
#include "diffusion/noising.h"
#include "diffusion/schedule.h"

/* ------------------------------------------------------------------------ */
/* threads                                                                   */
/* ------------------------------------------------------------------------ */

BINDING_DOC(set_num_threads,
"set_num_threads(n)\n--\n\nUse n threads in ddpm's loops and in OpenBLAS.");
PyObject* py_set_num_threads(PyObject* self, PyObject* arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 1024) {    /* OpenMP would try to start them all at the next loop */
        PyErr_SetString(PyExc_ValueError, "set_num_threads(): n must be in 1..1024");
        return NULL;
    }
    ddpm_set_num_threads((int)n);
    Py_RETURN_NONE;
}

BINDING_DOC(get_num_threads,
"get_num_threads()\n--\n\nNumber of threads ddpm (and OpenBLAS) use.");
PyObject* py_get_num_threads(PyObject* self, PyObject* unused) {
    (void)self; (void)unused;
    return PyLong_FromLong(ddpm_get_num_threads());
}

BINDING_DOC(has_openmp,
"has_openmp()\n--\n\nTrue when the core was compiled with OpenMP.");
PyObject* py_has_openmp(PyObject* self, PyObject* unused) {
    (void)self; (void)unused;
    return PyBool_FromLong(ddpm_has_openmp());
}

/* ------------------------------------------------------------------------ */
/* random numbers                                                            */
/* ------------------------------------------------------------------------ */

BINDING_DOC(philox4x32_10,
"philox4x32_10(counter, key)\n--\n\n"
"One Philox4x32-10 block: counter is 4 uint32, key 2 uint32; returns 4 uint32.");
PyObject* py_philox4x32_10(PyObject* self, PyObject* args) {
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

/* The fill's out array (dtype typenum, written) and its (seed, stream, offset):
 * offset .. offset + n - 1 must not wrap past 2**64. */
static PyArrayObject* fill_args(PyObject* args, const char* F, int typenum, uint64_t* seed,
                                uint64_t* stream, uint64_t* offset) {
    PyObject *out_o, *seed_o, *stream_o, *off_o;
    if (!PyArg_ParseTuple(args, "OOOO", &out_o, &seed_o, &stream_o, &off_o)) return NULL;
    PyArrayObject* out = check_array(out_o, F, "out", typenum, 1);
    if (!out) return NULL;
    size_t n = (size_t)PyArray_SIZE(out);
    if (parse_seed(seed_o, F, seed) || parse_uint(stream_o, F, "stream", 64, stream) ||
        parse_uint(off_o, F, "offset", 64, offset))
        return NULL;
    if (n && *offset > UINT64_MAX - (n - 1)) {
        PyErr_Format(PyExc_ValueError, "%s(): offset + size exceeds 2**64", F);
        return NULL;
    }
    return out;
}

BINDING_DOC(rng_normal,
"rng_normal(out, seed, stream, offset)\n--\n\n"
"Fill the float32 array out with normals offset.. of (seed, stream).");
PyObject* py_rng_normal(PyObject* self, PyObject* args) {
    (void)self;
    uint64_t seed, stream, offset;
    PyArrayObject* out = fill_args(args, "rng_normal", NPY_FLOAT32, &seed, &stream, &offset);
    if (!out) return NULL;
    float* p = (float*)PyArray_DATA(out);
    size_t n = (size_t)PyArray_SIZE(out);
    Py_BEGIN_ALLOW_THREADS
    rng_normal_fill_parallel(p, n, seed, stream, offset);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

BINDING_DOC(rng_uint32,
"rng_uint32(out, seed, stream, offset)\n--\n\n"
"Fill the uint32 array out with raw Philox words offset.. of (seed, stream).");
PyObject* py_rng_uint32(PyObject* self, PyObject* args) {
    (void)self;
    uint64_t seed, stream, offset;
    PyArrayObject* out = fill_args(args, "rng_uint32", NPY_UINT32, &seed, &stream, &offset);
    if (!out) return NULL;
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

BINDING_DOC(schedule_betas,
"schedule_betas(kind, T, a, b)\n--\n\n"
"betas (T+1,) float64 for kind 'linear'/'scaled_linear'/'sigmoid' (a=beta_start,\n"
"b=beta_end) or 'cosine' (a=s, b=max_beta); betas[0] = 0.");
PyObject* py_schedule_betas(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "schedule_betas";
    const char* kind;
    long T;
    double a, b;
    if (!PyArg_ParseTuple(args, "sldd", &kind, &T, &a, &b)) return NULL;
    if (T < 1 || T > MAX_TIMESTEPS) {       /* the size of the output */
        PyErr_Format(PyExc_ValueError, "%s(): timesteps must be in 1..%d, got %ld", F,
                     MAX_TIMESTEPS, T);
        return NULL;
    }
    int (*fill)(double*, int, double, double);
    if (strcmp(kind, "linear") == 0) fill = schedule_linear;
    else if (strcmp(kind, "scaled_linear") == 0) fill = schedule_scaled_linear;
    else if (strcmp(kind, "sigmoid") == 0) fill = schedule_sigmoid;
    else if (strcmp(kind, "cosine") == 0) fill = schedule_cosine;
    else {
        PyErr_Format(PyExc_ValueError, "%s(): unknown kind %R", F, PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)T + 1};
    PyArrayObject* out = (PyArrayObject*)PyArray_SimpleNew(1, dims, NPY_FLOAT64);
    if (!out) return NULL;
    int st = fill((double*)PyArray_DATA(out), (int)T, a, b);
    if (st) {
        Py_DECREF(out);
        return raise_status(st, F, "schedule parameters");
    }
    return (PyObject*)out;
}

BINDING_DOC(rescale_zero_terminal_snr,
"rescale_zero_terminal_snr(betas)\n--\n\n"
"Rescale a (T+1,) float64 betas array in place so alpha_bar_T = 0.");
PyObject* py_rescale_zero_terminal_snr(PyObject* self, PyObject* arg) {
    (void)self;
    const char* F = "rescale_zero_terminal_snr";
    PyArrayObject* b = check_array(arg, F, "betas", NPY_FLOAT64, 1);
    if (!b) return NULL;
    if (PyArray_NDIM(b) != 1 || PyArray_DIM(b, 0) < 3 ||
        PyArray_DIM(b, 0) > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): betas must have shape (T+1,) with T >= 2 (and <= %d)",
                     F, MAX_TIMESTEPS);
        return NULL;
    }
    int st = schedule_rescale_zero_terminal_snr((double*)PyArray_DATA(b),
                                                (int)PyArray_DIM(b, 0) - 1);
    if (st) return raise_status(st, F, "betas (alpha_bar must decrease)");
    Py_RETURN_NONE;
}

BINDING_DOC(schedule_tables,
"schedule_tables(betas)\n--\n\n"
"All derived tables as a (13, T+1) float64 array, rows in the order of\n"
"TABLE_NAMES; betas is (T+1,) with betas[0] ignored (set to 0).");
PyObject* py_schedule_tables(PyObject* self, PyObject* arg) {
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
/* the forward process                                                       */
/* ------------------------------------------------------------------------ */

static int same_shape(PyArrayObject* a, PyArrayObject* b) {
    return PyArray_NDIM(a) == PyArray_NDIM(b) &&
           PyArray_CompareLists(PyArray_DIMS(a), PyArray_DIMS(b), PyArray_NDIM(a));
}

/* x (N, ...) float32 with values per sample, and t (N,) int64: sets N and D,
 * or -1 with an error. */
static int batch_dims(PyArrayObject* x, PyArrayObject* t, const char* F, const char* xname,
                      size_t* N, size_t* D) {
    if (PyArray_NDIM(x) < 1 || PyArray_DIM(x, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (N, ...) with N >= 1",
                     F, xname);
        return -1;
    }
    *N = (size_t)PyArray_DIM(x, 0);
    *D = (size_t)PyArray_SIZE(x) / *N;
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

#define DATA(a) PyArray_DATA(a)

BINDING_DOC(q_sample,
"q_sample(xt, eps, x0, t, sqrt_alpha_bars, sqrt_one_minus_alpha_bars, seed, noise_given)\n"
"--\n\n"
"x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, written into xt; eps is\n"
"drawn from seed into eps unless noise_given, in which case eps is read.");
PyObject* py_q_sample(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "q_sample";
    PyObject *xt_o, *eps_o, *x0_o, *t_o, *sa_o, *sb_o, *seed_o;
    int noise_given;
    if (!PyArg_ParseTuple(args, "OOOOOOOp", &xt_o, &eps_o, &x0_o, &t_o, &sa_o, &sb_o,
                          &seed_o, &noise_given))
        return NULL;
    PyArrayObject *xt, *eps, *x0, *t;
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
    const double *sa, *sb;
    int T;
    if (check_tables(sa_o, "sqrt_alpha_bars", sb_o, "sqrt_one_minus_alpha_bars", F, &sa, &sb,
                     &T) ||
        check_timesteps(DATA(t), N, T, F, "t"))
        return NULL;
    uint64_t seed;
    if (parse_seed(seed_o, F, &seed)) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = q_sample(DATA(xt), DATA(eps), DATA(x0), DATA(t), sa, sb, N, D, seed, noise_given);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, noise_given ? "x0 or noise" : "x0");
    Py_RETURN_NONE;
}

BINDING_DOC(q_sample_chain,
"q_sample_chain(xt, x0, t, alphas, betas, seed)\n--\n\n"
"Run x_s = sqrt(alpha_s) x_{s-1} + sqrt(beta_s) eps_s for s = 1..t into xt.");
PyObject* py_q_sample_chain(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "q_sample_chain";
    PyObject *xt_o, *x0_o, *t_o, *a_o, *b_o, *seed_o;
    if (!PyArg_ParseTuple(args, "OOOOOO", &xt_o, &x0_o, &t_o, &a_o, &b_o, &seed_o))
        return NULL;
    PyArrayObject *xt, *x0, *t;
    if (!(xt = check_array(xt_o, F, "xt", NPY_FLOAT32, 1))) return NULL;
    if (!(x0 = check_array(x0_o, F, "x0", NPY_FLOAT32, 0))) return NULL;
    if (!(t = check_array(t_o, F, "t", NPY_INT64, 0))) return NULL;
    size_t N, D;
    if (batch_dims(x0, t, F, "x0", &N, &D)) return NULL;
    if (!same_shape(x0, xt)) {
        PyErr_Format(PyExc_ValueError, "%s(): xt and x0 must have the same shape", F);
        return NULL;
    }
    const double *alphas, *betas;
    int T;
    if (check_tables(a_o, "alphas", b_o, "betas", F, &alphas, &betas, &T) ||
        check_timesteps(DATA(t), N, T, F, "t"))
        return NULL;
    uint64_t seed;
    if (parse_seed(seed_o, F, &seed)) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = q_sample_chain(DATA(xt), DATA(x0), DATA(t), alphas, betas, N, D, seed);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, "x0");
    Py_RETURN_NONE;
}

BINDING_DOC(q_posterior_mean,
"q_posterior_mean(mean, x0, xt, t, coef1, coef2)\n--\n\n"
"mean = coef1[t] x0 + coef2[t] xt, the mean of q(x_{t-1} | x_t, x_0).");
PyObject* py_q_posterior_mean(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "q_posterior_mean";
    PyObject *m_o, *x0_o, *xt_o, *t_o, *c1_o, *c2_o;
    if (!PyArg_ParseTuple(args, "OOOOOO", &m_o, &x0_o, &xt_o, &t_o, &c1_o, &c2_o))
        return NULL;
    PyArrayObject *m, *x0, *xt, *t;
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
    const double *c1, *c2;
    int T;
    if (check_tables(c1_o, "coef1", c2_o, "coef2", F, &c1, &c2, &T) ||
        check_timesteps(DATA(t), N, T, F, "t"))
        return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = q_posterior_mean(DATA(m), DATA(x0), DATA(xt), DATA(t), c1, c2, N, D);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, "x0 or xt");
    Py_RETURN_NONE;
}
