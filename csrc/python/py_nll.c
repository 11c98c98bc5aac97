/*
 * py_nll.c - the binding of the likelihood bound (diffusion/nll.h): nll()
 * runs the loop over timesteps in C with the GIL released, through the
 * denoiser adapter and stop hook of py_sample.c; nll_timesteps() draws the
 * Monte Carlo timesteps from the counter RNG.
 *
 * Legend: N images, D values per image, K timesteps (columns) per image,
 * T steps of the schedule.
 */
#include "python/binding.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "diffusion/nll.h"

#define MAX_FIRST_IMAGE ((uint64_t)1 << 40)   /* (first_image + n) * D stays far below 2**64 */

/* nll()'s arguments as Python gave them. */
typedef struct {
    PyObject *terms, *prior, *x0, *model, *params, *betas, *ts;
    PyObject *seed, *first_image, *noise, *hook, *labels;
    int objective, variance, clip_x0, hook_every;
} NllArgs;

static int nll_parse(PyObject* args, PyObject* kwargs, NllArgs* a) {
    static char* kwlist[] = {"terms", "prior", "x0", "model", "params", "betas", "ts",
                             "objective", "variance", "clip_x0", "seed", "first_image", "noise",
                             "hook", "hook_every", "labels", NULL};
    memset(a, 0, sizeof *a);
    a->noise = a->hook = a->labels = Py_None;
    a->objective = -1;
    a->hook_every = 1;
    return PyArg_ParseTupleAndKeywords(
               args, kwargs, "OOOOOOO|$iipOOOOiO:nll", kwlist, &a->terms, &a->prior, &a->x0,
               &a->model, &a->params, &a->betas, &a->ts, &a->objective, &a->variance,
               &a->clip_x0, &a->seed, &a->first_image, &a->noise, &a->hook,
               &a->hook_every, &a->labels) ? 0 : -1;
}

/* The arrays and codes of a into *spec, the outputs, *d, *N and *D: 0, or -1
 * with an error.  The values of betas (in (0, 1], beta_1 not negligible, an
 * eps model not at alpha_bar_T = 0) are ddpm's NoiseSchedule's and nll's to
 * check. */
static int nll_spec(const NllArgs* a, const char* F, NllSpec* spec, PyArrayObject** terms,
                    PyArrayObject** prior, PyArrayObject** x0, Denoiser* d, int* N, size_t* D) {
    memset(spec, 0, sizeof *spec);
    /* arrays: ndarray, contiguous, dtype, byte order, aligned, writeable */
    if (!(*terms = check_array(a->terms, F, "terms", NPY_FLOAT64, 1)) ||
        !(*prior = check_array(a->prior, F, "prior", NPY_FLOAT64, 1)) ||
        !(*x0 = check_array(a->x0, F, "x0", NPY_FLOAT32, 0)))
        return -1;
    if (denoiser_arg(a->model, a->params, F, d)) return -1;
    PyArrayObject *betas, *ts, *noise = NULL;
    if (!(betas = check_array(a->betas, F, "betas", NPY_FLOAT64, 0)) ||
        !(ts = check_array(a->ts, F, "ts", NPY_INT64, 0)))
        return -1;

    /* shapes */
    if (check_image_batch(*x0, "x0", d, F, N, D)) return -1;
    if (PyArray_NDIM(betas) != 1 || PyArray_DIM(betas, 0) < 2 ||
        PyArray_DIM(betas, 0) > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): betas must have shape (T+1,), 1 <= T <= %d",
                     F, MAX_TIMESTEPS);
        return -1;
    }
    if (PyArray_NDIM(ts) != 2 || PyArray_DIM(ts, 0) != *N || PyArray_DIM(ts, 1) < 1 ||
        PyArray_DIM(ts, 1) > MAX_TIMESTEPS) {
        PyErr_Format(PyExc_ValueError, "%s(): ts must have shape (N, K) = (%d, K), "
                     "1 <= K <= %d", F, *N, MAX_TIMESTEPS);
        return -1;
    }
    const npy_intp K = PyArray_DIM(ts, 1);
    if (PyArray_NDIM(*terms) != 2 || PyArray_DIM(*terms, 0) != *N ||
        PyArray_DIM(*terms, 1) != K) {
        PyErr_Format(PyExc_ValueError, "%s(): terms must have the shape of ts (%d, %zd)", F, *N,
                     (Py_ssize_t)K);
        return -1;
    }
    if (PyArray_NDIM(*prior) != 1 || PyArray_DIM(*prior, 0) != *N) {
        PyErr_Format(PyExc_ValueError, "%s(): prior must have shape (N,) = (%d,)", F, *N);
        return -1;
    }
    if (a->noise != Py_None) {
        if (!(noise = check_array(a->noise, F, "noise", NPY_FLOAT32, 0))) return -1;
        if (PyArray_NDIM(noise) != PyArray_NDIM(*x0) + 1 || PyArray_DIM(noise, 0) != K ||
            !PyArray_CompareLists(PyArray_DIMS(noise) + 1, PyArray_DIMS(*x0),
                                  PyArray_NDIM(*x0))) {
            PyErr_Format(PyExc_ValueError, "%s(): noise must have shape (K,) + x0.shape with "
                         "K = %zd", F, (Py_ssize_t)K);
            return -1;
        }
    }
    spec->T = (int)PyArray_DIM(betas, 0) - 1;
    spec->betas = (const double*)PyArray_DATA(betas);
    spec->K = (int)K;
    spec->ts = (const int64_t*)PyArray_DATA(ts);
    spec->noise = noise ? (const float*)PyArray_DATA(noise) : NULL;

    /* codes, indices, counters */
    if (a->objective < OBJ_EPS || a->objective > OBJ_V) {
        PyErr_Format(PyExc_ValueError, "%s(): objective must be 0 (eps), 1 (x0) or 2 (v), "
                     "got %d", F, a->objective);
        return -1;
    }
    if (a->variance < NLL_FIXED_SMALL || a->variance > NLL_FIXED_LARGE) {
        PyErr_Format(PyExc_ValueError, "%s(): variance must be 0 (fixed_small) or 1 "
                     "(fixed_large), got %d", F, a->variance);
        return -1;
    }
    if (check_timesteps(spec->ts, (size_t)*N * (size_t)K, spec->T, F, "ts")) return -1;
    if ((a->seed && parse_seed(a->seed, F, &spec->seed)) ||
        (a->first_image && parse_uint(a->first_image, F, "first_image", 64, &spec->first_image)))
        return -1;
    if (spec->first_image > MAX_FIRST_IMAGE) {
        PyErr_Format(PyExc_ValueError, "%s(): first_image must be <= 2**40", F);
        return -1;
    }
    if (check_hook(a->hook, a->hook_every, F)) return -1;
    const int64_t Kc = d->h ? unet_config(d->h->net)->num_class_embeds : 0;
    if (labels_arg(a->labels, F, "labels", (size_t)*N, Kc, &spec->labels)) return -1;
    if (Kc > 0 && !spec->labels) {
        PyErr_Format(PyExc_ValueError, "%s(): this network is class-conditional: pass labels",
                     F);
        return -1;
    }
    spec->objective = a->objective;
    spec->variance = a->variance;
    spec->clip_x0 = a->clip_x0;
    return 0;
}

BINDING_DOC(nll,
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
PyObject* py_nll(PyObject* self, PyObject* args, PyObject* kwargs) {
    (void)self;
    const char* F = "nll";
    NllArgs a;
    NllSpec spec;
    PyArrayObject *terms, *prior, *x0;
    Denoiser d;
    int N;
    size_t D;
    if (nll_parse(args, kwargs, &a) ||
        nll_spec(&a, F, &spec, &terms, &prior, &x0, &d, &N, &D))
        return NULL;
    const int T = spec.T;
    double* alpha_bars = NULL;      /* the Gaussian denoiser's, from betas */
    if (!d.h) {
        alpha_bars = malloc(sizeof(double) * (size_t)(T + 1));
        if (!alpha_bars) return PyErr_NoMemory();
        alpha_bars[0] = 1.0;
        for (int t = 1; t <= T; t++) alpha_bars[t] = alpha_bars[t - 1] * (1.0 - spec.betas[t]);
    }
    denoiser_bind(&d, alpha_bars, T, spec.objective, D);
    LoopStop stop;
    const char* what = "";
    loop_begin(&d, &stop, a.hook, a.hook_every);
    int st = nll_run((double*)PyArray_DATA(terms), (double*)PyArray_DATA(prior),
                     (const float*)PyArray_DATA(x0), &spec, N, D, d.fn, d.ctx, loop_should_stop,
                     &stop, &what);
    loop_end(&d, &stop);
    free(alpha_bars);
    if (st) return raise_status(st, F, what && *what ? what : "arguments");
    Py_RETURN_NONE;
}

BINDING_DOC(nll_timesteps,
"nll_timesteps(ts, T, seed, first_image)\n--\n\n"
"Fill ts (N, K) int64 with K distinct lesson times per image drawn uniformly from\n"
"2..T (sorted), image n from (seed, stream STREAM_NLL_T) at offset\n"
"(first_image + n) * 2K: the same draws however the images are batched.");
PyObject* py_nll_timesteps(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "nll_timesteps";
    PyObject *ts_o, *seed_o, *first_o;
    int T;
    if (!PyArg_ParseTuple(args, "OiOO", &ts_o, &T, &seed_o, &first_o)) return NULL;
    PyArrayObject* ts = check_array(ts_o, F, "ts", NPY_INT64, 1);
    if (!ts) return NULL;
    if (PyArray_NDIM(ts) != 2 || PyArray_DIM(ts, 0) < 1 || PyArray_DIM(ts, 0) > MAX_BATCH ||
        PyArray_DIM(ts, 1) < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): ts must have shape (N, K), 1 <= N <= 2**20, "
                     "K >= 1", F);
        return NULL;
    }
    /* K distinct draws from a pool of the T - 1 times 2..T */
    if (T < 2 || T > MAX_TIMESTEPS || PyArray_DIM(ts, 1) > T - 1) {
        PyErr_Format(PyExc_ValueError, "%s(): need 2 <= T <= %d and K <= T - 1 (got T = %d, "
                     "K = %zd)", F, MAX_TIMESTEPS, T, (Py_ssize_t)PyArray_DIM(ts, 1));
        return NULL;
    }
    uint64_t seed, first;
    if (parse_seed(seed_o, F, &seed) || parse_uint(first_o, F, "first_image", 64, &first))
        return NULL;
    if (first > MAX_FIRST_IMAGE) {
        PyErr_Format(PyExc_ValueError, "%s(): first_image must be <= 2**40", F);
        return NULL;
    }
    int st;
    int N = (int)PyArray_DIM(ts, 0), K = (int)PyArray_DIM(ts, 1);
    int64_t* p = PyArray_DATA(ts);
    Py_BEGIN_ALLOW_THREADS
    st = nll_draw_timesteps(p, N, K, T, seed, first);
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st, F, "arguments");
    Py_RETURN_NONE;
}
