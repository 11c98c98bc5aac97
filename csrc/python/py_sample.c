/*
 * py_sample.c - the binding of the samplers (DDPM, DDIM, DPM-Solver++(2M)):
 * the whole reverse loop runs in C with the GIL released, the model called
 * through a denoiser adapter (the U-Net through unet_infer, or the exact
 * Gaussian denoiser the tests use), and a stop hook that takes the GIL back
 * between steps for Ctrl-C and the progress callable.  The adapter and the
 * hook are shared with py_nll.c (declared in binding.h).
 *
 * Legend: N images, D values per image, K steps, M captured frames, T steps
 * of the schedule.
 */
#include "python/binding.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "diffusion/sample.h"
#include "nets/unet.h"

/* ------------------------------------------------------------------------ */
/* the denoiser adapter and the stop hook (shared with py_nll.c)             */
/* ------------------------------------------------------------------------ */

/* Between the U-Net's chunks (unet_infer): Ctrl-C, with the GIL re-taken for it. */
static int chunk_stop(void* ctx) {
    LoopStop* stop = ctx;
    PyEval_RestoreThread(stop->tstate);
    const int sig = PyErr_CheckSignals();
    stop->tstate = PyEval_SaveThread();
    return sig < 0;
}

/* The U-Net as sample.c's denoiser: ctx is the Denoiser.  N images (N, C, S, S)
 * go through unet_infer (chunks of UNET_CHUNK, halves side by side), so one step
 * of a large batch can be interrupted between chunks too. */
static int unet_denoise(void* ctx, float* out, const float* x, const float* t,
                        const int64_t* labels, int N) {
    const Denoiser* d = ctx;
    return unet_infer(d->h->net, d->params, x, t, labels, out, N,
                      d->stop ? chunk_stop : NULL, d->stop, d->key);
}

int denoiser_arg(PyObject* model, PyObject* params, const char* F, Denoiser* d) {
    memset(d, 0, sizeof *d);
    if (PyTuple_Check(model)) {
        if (PyTuple_GET_SIZE(model) != 2 ||
            !PyArg_ParseTuple(model, "dd", &d->gauss.mean, &d->gauss.std)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s(): model must be a UNet handle or a tuple "
                         "(mean, std) of floats", F);
            return -1;
        }
        if (params != Py_None) {
            PyErr_Format(PyExc_TypeError, "%s(): params must be None with the Gaussian "
                         "denoiser", F);
            return -1;
        }
        return 0;
    }
    if (!(d->h = handle_get(model, &UNET_HANDLE, F))) return -1;
    PyArrayObject* p = check_array(params, F, "params", NPY_FLOAT32, 0);
    if (!p) return -1;
    d->params = (const float*)PyArray_DATA(p);
    d->num_params = (size_t)PyArray_SIZE(p);
    /* a new key per call (the GIL held): params may have changed since the
     * last, never during one */
    static uint64_t keys;
    d->key = ++keys;
    return 0;
}

int check_image_batch(PyArrayObject* a, const char* name, const Denoiser* d, const char* F,
                      int* N, size_t* D) {
    if (PyArray_NDIM(a) < 2 || PyArray_DIM(a, 0) < 1 || PyArray_SIZE(a) < 1 ||
        PyArray_DIM(a, 0) > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (N, ...) with 1 <= N <= 2**20 "
                     "and values per image", F, name);
        return -1;
    }
    *N = (int)PyArray_DIM(a, 0);
    *D = (size_t)PyArray_SIZE(a) / (size_t)*N;
    if (!d->h) return 0;
    const UNetConfig* c = unet_config(d->h->net);
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
    if (d->num_params != unet_num_parameters(d->h->net)) {
        PyErr_Format(PyExc_ValueError, "%s(): params must hold %zu values", F,
                     unet_num_parameters(d->h->net));
        return -1;
    }
    return 0;
}

void denoiser_bind(Denoiser* d, const double* alpha_bars, int T, int objective, size_t D) {
    if (d->h) {
        d->fn = unet_denoise;
        d->ctx = d;
        return;
    }
    d->gauss.alpha_bars = alpha_bars;
    d->gauss.T = T;
    d->gauss.objective = objective;
    d->gauss.D = D;
    d->fn = sample_gaussian_denoise;
    d->ctx = &d->gauss;
}

int loop_should_stop(void* ctx, int step, int nsteps) {
    LoopStop* c = ctx;
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

void loop_begin(Denoiser* d, LoopStop* stop, PyObject* hook, int every) {
    stop->hook = hook == Py_None ? NULL : hook;
    stop->every = every;
    d->stop = stop;
    if (d->h) d->h->busy = 1;
    stop->tstate = PyEval_SaveThread();
}

void loop_end(Denoiser* d, LoopStop* stop) {
    PyEval_RestoreThread(stop->tstate);
    d->stop = NULL;
    if (d->h) d->h->busy = 0;
}

/* ------------------------------------------------------------------------ */
/* sample(): arguments into a SampleSpec, captured frames, the run           */
/* ------------------------------------------------------------------------ */

/* sample()'s arguments as Python gave them. */
typedef struct {
    PyObject *out, *model, *params, *alpha_bars, *ts, *prevs;
    PyObject *seed, *x_T, *noise, *capture, *cap_x, *cap_eps, *cap_x0, *hook;
    PyObject *labels, *init, *known, *mask, *betas, *undo_noise;
    int sampler, objective, variance, clip_x0, hook_every, guidance_t_lo, guidance_t_hi;
    long long null_label;
    double eta, thresh_ratio, thresh_max, guidance_scale, guidance_rescale;
} SampleArgs;

static int sample_parse(PyObject* args, PyObject* kwargs, SampleArgs* a) {
    static char* kwlist[] = {"out", "model", "params", "alpha_bars", "ts", "prevs",
                             "sampler", "objective", "variance", "eta", "clip_x0",
                             "thresh_ratio", "thresh_max", "seed", "x_T", "noise", "capture",
                             "cap_x", "cap_eps", "cap_x0", "hook", "hook_every", "labels",
                             "null_label", "guidance_scale", "guidance_rescale", "init", "known",
                             "mask", "betas", "undo_noise", "guidance_t_lo", "guidance_t_hi",
                             NULL};
    memset(a, 0, sizeof *a);
    a->x_T = a->noise = a->capture = Py_None;
    a->cap_x = a->cap_eps = a->cap_x0 = a->hook = Py_None;
    a->labels = a->init = a->known = a->mask = a->betas = a->undo_noise = Py_None;
    a->guidance_scale = 1.0;
    a->sampler = a->objective = -1;
    a->clip_x0 = 1;
    a->hook_every = 1;
    a->thresh_max = INFINITY;
    return PyArg_ParseTupleAndKeywords(
               args, kwargs, "OOOOOO|$iiidpddOOOOOOOOiOLddOOOOOii:sample", kwlist, &a->out,
               &a->model, &a->params, &a->alpha_bars, &a->ts, &a->prevs, &a->sampler,
               &a->objective, &a->variance, &a->eta, &a->clip_x0, &a->thresh_ratio,
               &a->thresh_max, &a->seed, &a->x_T, &a->noise, &a->capture, &a->cap_x,
               &a->cap_eps, &a->cap_x0, &a->hook, &a->hook_every, &a->labels, &a->null_label,
               &a->guidance_scale, &a->guidance_rescale, &a->init, &a->known, &a->mask,
               &a->betas, &a->undo_noise, &a->guidance_t_lo, &a->guidance_t_hi) ? 0 : -1;
}

/* An optional float32 array shaped like `like` (lead < 0) or (lead,) + like's
 * shape: its data, NULL for None (*ok = 1), or NULL with *ok = 0 on an error. */
static float* array_like(PyObject* obj, const char* F, const char* name, PyArrayObject* like,
                         npy_intp lead, int writeable, int* ok) {
    *ok = 1;
    if (obj == Py_None) return NULL;
    *ok = 0;
    PyArrayObject* a = check_array(obj, F, name, NPY_FLOAT32, writeable);
    if (!a) return NULL;
    int off = lead >= 0 ? 1 : 0;
    if (PyArray_NDIM(a) != PyArray_NDIM(like) + off || (off && PyArray_DIM(a, 0) != lead) ||
        !PyArray_CompareLists(PyArray_DIMS(a) + off, PyArray_DIMS(like), PyArray_NDIM(like))) {
        if (off)
            PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (%zd,) + out.shape",
                         F, name, (Py_ssize_t)lead);
        else
            PyErr_Format(PyExc_ValueError, "%s(): %s must have the shape of out", F, name);
        return NULL;
    }
    *ok = 1;
    return (float*)PyArray_DATA(a);
}

/* The captured frames of a K-step run: capture (M,) int64 step indices, M <= K + 1,
 * and cap_x, cap_eps, cap_x0 (M,) + out.shape, each optional.  Which steps are
 * captured (0..K, increasing) is ddpm.sample's to choose: sample_run writes frame
 * m < M only. */
static int sample_capture(const SampleArgs* a, PyArrayObject* out, npy_intp K, const char* F,
                          SampleSpec* spec) {
    npy_intp M = 0;
    if (a->capture != Py_None) {
        PyArrayObject* cap = check_array(a->capture, F, "capture", NPY_INT64, 0);
        if (!cap) return -1;
        if (PyArray_NDIM(cap) != 1 || PyArray_DIM(cap, 0) > K + 1) {
            PyErr_Format(PyExc_ValueError, "%s(): capture must have shape (M,) with M <= K + 1",
                         F);
            return -1;
        }
        M = PyArray_DIM(cap, 0);
        spec->capture = (const int64_t*)PyArray_DATA(cap);
    }
    int ok;
    spec->cap_x = array_like(a->cap_x, F, "cap_x", out, M, 1, &ok);
    if (!ok) return -1;
    spec->cap_eps = array_like(a->cap_eps, F, "cap_eps", out, M, 1, &ok);
    if (!ok) return -1;
    spec->cap_x0 = array_like(a->cap_x0, F, "cap_x0", out, M, 1, &ok);
    if (!ok) return -1;
    if (!spec->capture && (spec->cap_x || spec->cap_eps || spec->cap_x0)) {
        PyErr_Format(PyExc_ValueError, "%s(): cap_x/cap_eps/cap_x0 need capture", F);
        return -1;
    }
    spec->M = (int)M;
    return 0;
}

/* Class labels (N,) for a conditional U-Net, the null label and the guidance
 * scale into spec->guide; the Gaussian denoiser takes no labels.  0 or -1. */
static int sample_guidance(const SampleArgs* a, PyArrayObject* out, const char* F,
                           const Denoiser* d, SampleSpec* spec) {
    const int64_t K = d->h ? unet_config(d->h->net)->num_class_embeds : 0;
    const npy_intp N = PyArray_NDIM(out) ? PyArray_DIM(out, 0) : 0;
    if (labels_arg(a->labels, F, "labels", (size_t)N, K, &spec->guide.labels)) return -1;
    if (K > 0 && !spec->guide.labels) {
        PyErr_Format(PyExc_ValueError, "%s(): this network is class-conditional: pass labels "
                     "(the null label %lld for unconditional samples)", F, (long long)(K - 1));
        return -1;
    }
    if (K > 0 && (a->null_label < 0 || a->null_label >= K)) {
        PyErr_Format(PyExc_ValueError, "%s(): null_label must be in 0..%lld", F,
                     (long long)(K - 1));
        return -1;
    }
    spec->guide.null_label = a->null_label;
    spec->guide.scale = a->guidance_scale;
    spec->guide.rescale = a->guidance_rescale;
    spec->guide.t_lo = a->guidance_t_lo;
    spec->guide.t_hi = a->guidance_t_hi;
    return 0;
}

/* The arrays and codes of a into *spec, *out, *d, *N and *D: 0, or -1 with an
 * error.  Value ranges that cannot reach outside an array (eta, thresholds,
 * the schedule's values) are ddpm.sample's to check. */
static int sample_spec(const SampleArgs* a, const char* F, SampleSpec* spec, PyArrayObject** out,
                       Denoiser* d, int* N, size_t* D) {
    memset(spec, 0, sizeof *spec);
    /* arrays: ndarray, contiguous, dtype, byte order, aligned, writeable */
    if (!(*out = check_array(a->out, F, "out", NPY_FLOAT32, 1))) return -1;
    if (denoiser_arg(a->model, a->params, F, d)) return -1;
    PyArrayObject *ab, *ts, *prevs;
    if (!(ab = check_array(a->alpha_bars, F, "alpha_bars", NPY_FLOAT64, 0)) ||
        !(ts = check_array(a->ts, F, "ts", NPY_INT64, 0)) ||
        !(prevs = check_array(a->prevs, F, "prevs", NPY_INT64, 0)))
        return -1;
    npy_intp K = PyArray_SIZE(ts);
    int ok;
    spec->x_T = array_like(a->x_T, F, "x_T", *out, -1, 0, &ok);
    if (!ok) return -1;
    spec->noise = array_like(a->noise, F, "noise", *out, K, 0, &ok);
    if (!ok) return -1;
    if (sample_capture(a, *out, K, F, spec)) return -1;

    /* shapes */
    if (check_image_batch(*out, "out", d, F, N, D)) return -1;
    if (PyArray_NDIM(ab) != 1 || PyArray_DIM(ab, 0) < 2 ||
        PyArray_DIM(ab, 0) > (npy_intp)MAX_TIMESTEPS + 1) {
        PyErr_Format(PyExc_ValueError, "%s(): alpha_bars must have shape (T+1,), 1 <= T <= %d",
                     F, MAX_TIMESTEPS);
        return -1;
    }
    if (PyArray_NDIM(ts) != 1 || K < 1 || K > MAX_TIMESTEPS || PyArray_NDIM(prevs) != 1 ||
        PyArray_DIM(prevs, 0) != K) {
        PyErr_Format(PyExc_ValueError, "%s(): ts and prevs must have the same shape (K,), "
                     "1 <= K <= %d", F, MAX_TIMESTEPS);
        return -1;
    }
    spec->alpha_bars = (const double*)PyArray_DATA(ab);
    spec->T = (int)PyArray_DIM(ab, 0) - 1;
    spec->K = (int)K;
    spec->ts = (const int64_t*)PyArray_DATA(ts);
    spec->prevs = (const int64_t*)PyArray_DATA(prevs);

    /* codes and indices: which formula runs, which table entries are read */
    if (a->sampler < 0 || a->sampler >= SAMPLER_COUNT) {
        PyErr_Format(PyExc_ValueError, "%s(): sampler must be 0 (DDPM), 1 (DDIM), 2 "
                     "(DPM-Solver++) or 3 (RePaint), got %d", F, a->sampler);
        return -1;
    }
    if (a->objective < OBJ_EPS || a->objective > OBJ_V) {
        PyErr_Format(PyExc_ValueError, "%s(): objective must be 0 (eps), 1 (x0) or 2 (v), "
                     "got %d", F, a->objective);
        return -1;
    }
    if (a->variance < SAMPLE_FIXED_SMALL || a->variance > SAMPLE_VAR_ZERO) {
        PyErr_Format(PyExc_ValueError, "%s(): variance must be 0, 1 or 2, got %d", F,
                     a->variance);
        return -1;
    }
    const int repaint = a->sampler == SAMPLER_REPAINT;
    size_t undo_steps = 0;
    for (int k = 0; k < spec->K; k++) {
        const int64_t t = spec->ts[k], p = spec->prevs[k];
        /* a RePaint jump back up reads betas[t .. p - 1] */
        const int up_ok = repaint && p > t && p <= (int64_t)spec->T + 1;
        if (t < 1 || t > spec->T || p < 0 || (p >= t && !up_ok)) {
            PyErr_Format(PyExc_ValueError, "%s(): need 1 <= ts[k] <= T = %d and 0 <= prevs[k] < "
                         "ts[k]; step %d has ts %lld, prevs %lld", F, spec->T, k, (long long)t,
                         (long long)p);
            return -1;
        }
        if (p > t) undo_steps += (size_t)(p - t);
    }
    if (sample_guidance(a, *out, F, d, spec)) return -1;
    spec->init = array_like(a->init, F, "init", *out, -1, 0, &ok);
    if (!ok) return -1;
    spec->known = array_like(a->known, F, "known", *out, -1, 0, &ok);
    if (!ok) return -1;
    spec->mask = array_like(a->mask, F, "mask", *out, -1, 0, &ok);
    if (!ok) return -1;
    spec->undo_noise = array_like(a->undo_noise, F, "undo_noise", *out,
                                  (npy_intp)undo_steps, 0, &ok);
    if (!ok) return -1;
    if (repaint || undo_steps) {
        PyArrayObject* be = a->betas == Py_None ? NULL
                          : check_array(a->betas, F, "betas", NPY_FLOAT64, 0);
        if (!be || PyArray_SIZE(be) != spec->T + 1 || !spec->known || !spec->mask) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s(): RePaint needs known, mask (like out) and "
                             "betas (T+1,)", F);
            return -1;
        }
        spec->betas = PyArray_DATA(be);
    }
    if (a->seed && parse_seed(a->seed, F, &spec->seed)) return -1;
    if (check_hook(a->hook, a->hook_every, F)) return -1;

    spec->sampler = a->sampler;
    spec->objective = a->objective;
    spec->variance = a->variance;
    spec->eta = a->eta;
    spec->clip_x0 = a->clip_x0;
    spec->thresh_ratio = a->thresh_ratio;
    spec->thresh_max = a->thresh_max;
    return 0;
}

BINDING_DOC(sample,
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
PyObject* py_sample(PyObject* self, PyObject* args, PyObject* kwargs) {
    (void)self;
    const char* F = "sample";
    SampleArgs a;
    SampleSpec spec;
    PyArrayObject* out;
    Denoiser d;
    int N;
    size_t D;
    if (sample_parse(args, kwargs, &a) || sample_spec(&a, F, &spec, &out, &d, &N, &D))
        return NULL;
    denoiser_bind(&d, spec.alpha_bars, spec.T, spec.objective, D);
    LoopStop stop;
    const char* what = "";
    loop_begin(&d, &stop, a.hook, a.hook_every);
    int st = sample_run((float*)PyArray_DATA(out), &spec, N, D, d.fn, d.ctx, loop_should_stop,
                        &stop, &what);
    loop_end(&d, &stop);
    if (st) return raise_status(st, F, st == DDPM_ERR_NONFINITE ? what : "arguments");
    Py_RETURN_NONE;
}
