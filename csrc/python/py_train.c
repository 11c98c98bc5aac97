/*
 * py_train.c - the binding of training: the optimizer pieces on flat float32
 * vectors (global gradient norm, one Adam/AdamW step, an EMA update and
 * diffusers' EMA decay ramp), the fused U-Net training step (noise, forward,
 * loss, backward, clip, Adam, EMA in one C call) and the classifier's step
 * (forward, softmax cross-entropy, backward, clip, Adam).
 *
 * Legend: P parameters, B images per batch, D values per image, T steps of
 * the schedule.  adam = (lr, beta1, beta2, eps, weight_decay, decoupled).
 */
#include "python/binding.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/optim.h"
#include "diffusion/train.h"
#include "nets/classifier.h"
#include "nets/unet.h"

/* The adam tuple into *a (types only). */
static int parse_adam(PyObject* t, const char* F, AdamConfig* a) {
    if (!PyTuple_Check(t) ||
        !PyArg_ParseTuple(t, "fffffp", &a->lr, &a->beta1, &a->beta2, &a->eps, &a->weight_decay,
                          &a->decoupled)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): adam must be (lr, beta1, beta2, eps, "
                     "weight_decay, decoupled)", F);
        return -1;
    }
    return 0;
}

/* The ranges of an Adam config, for the entry points whose caller does not
 * check them (adam_step, classifier_train_step; ddpm.Trainer checks its own). */
static int check_adam_ranges(const AdamConfig* a, const char* F) {
    if (!(a->lr >= 0) || !(a->beta1 >= 0 && a->beta1 < 1) || !(a->beta2 >= 0 && a->beta2 < 1) ||
        !(a->eps > 0) || !(a->weight_decay >= 0) || !isfinite(a->lr) ||
        !isfinite(a->weight_decay)) {
        PyErr_Format(PyExc_ValueError, "%s(): need lr >= 0, 0 <= betas < 1, eps > 0, "
                     "weight_decay >= 0", F);
        return -1;
    }
    return 0;
}

/* The 1-based optimizer step (Adam's bias correction divides by 1 - beta^step). */
static int check_step(long step, const char* F) {
    if (step < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): step must be >= 1", F);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* optimizer pieces                                                          */
/* ------------------------------------------------------------------------ */

BINDING_DOC(grad_norm,
"grad_norm(grads)\n--\n\nsqrt(sum grads**2), fixed-order float64 sum.");
PyObject* py_grad_norm(PyObject* self, PyObject* arg) {
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

BINDING_DOC(adam_step,
"adam_step(params, m, v, grads, step, adam, grad_scale)\n--\n\n"
"One Adam/AdamW update in place; adam = (lr, beta1, beta2, eps, weight_decay, decoupled).");
PyObject* py_adam_step(PyObject* self, PyObject* args) {
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
    if (parse_adam(ao, F, &a) || check_adam_ranges(&a, F) || check_step(step, F)) return NULL;
    float* p = (float*)PyArray_DATA(pa);
    Py_BEGIN_ALLOW_THREADS
    adam_step(p, m, v, g, P, step, &a, scale);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

BINDING_DOC(ema_update,
"ema_update(ema, params, decay)\n--\n\nema -= (1 - decay) * (ema - params), in place.");
PyObject* py_ema_update(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "ema_update";
    PyObject *eo, *po;
    float decay;
    if (!PyArg_ParseTuple(args, "OOf", &eo, &po, &decay)) return NULL;
    PyArrayObject* ea = check_array(eo, F, "ema", NPY_FLOAT32, 1);
    if (!ea) return NULL;
    size_t P = (size_t)PyArray_SIZE(ea);
    F32(p, po, "params", P, 0, 0);
    if (!(decay >= 0 && decay <= 1)) {
        PyErr_Format(PyExc_ValueError, "%s(): decay must be in [0, 1]", F);
        return NULL;
    }
    float* e = (float*)PyArray_DATA(ea);
    Py_BEGIN_ALLOW_THREADS
    ema_update(e, p, P, decay);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

BINDING_DOC(ema_decay_at,
"ema_decay_at(decay, updates_done)\n--\n\ndiffusers' EMA decay ramp.");
PyObject* py_ema_decay_at(PyObject* self, PyObject* args) {
    (void)self;
    float d;
    long k;
    if (!PyArg_ParseTuple(args, "fl", &d, &k)) return NULL;
    return PyFloat_FromDouble(ema_decay_at(d, k));
}

/* ------------------------------------------------------------------------ */
/* the fused U-Net step                                                      */
/* ------------------------------------------------------------------------ */

/* config = (objective, min_snr_gamma, grad_clip, adam, ema_decay, ema_updates, step, seed,
 * given_t, given_eps[, p_uncond, null_label, given_drop]) into *tc.  The value ranges of
 * min_snr_gamma, grad_clip, adam, ema_decay and p_uncond are ddpm.Trainer's to check. */
static int parse_train_config(PyObject* co, const char* F, TrainConfig* tc) {
    memset(tc, 0, sizeof *tc);
    PyObject *adam_o, *seed_o;
    long long null_label = -1;
    if (!PyArg_ParseTuple(co, "iddOflkOpp|dLp", &tc->objective, &tc->min_snr_gamma,
                          &tc->grad_clip, &adam_o, &tc->ema_decay, &tc->ema_updates, &tc->step,
                          &seed_o, &tc->given_t, &tc->given_eps, &tc->p_uncond, &null_label,
                          &tc->given_drop))
        return -1;
    tc->null_label = null_label;
    if (parse_adam(adam_o, F, &tc->adam) || parse_seed(seed_o, F, &tc->seed) ||
        check_step(tc->step, F))
        return -1;
    if (tc->objective < OBJ_EPS || tc->objective > OBJ_V || tc->ema_updates < 0) {
        PyErr_Format(PyExc_ValueError, "%s(): bad config (objective 0..2, ema_updates >= 0)",
                     F);
        return -1;
    }
    return 0;
}

BINDING_DOC(train_step,
"train_step(handle, params, grads, m, v, ema, x0, xt, eps, out, dout, t, sample_loss,\n"
"           sqrt_ab, sqrt_1mab, config, labels=None, used=None) -> (loss, grad_norm)\n--\n\n"
"One fused training step (see csrc/diffusion/train.h).  config = (objective,\n"
"min_snr_gamma, grad_clip, adam tuple, ema_decay, ema_updates, step, seed, given_t,\n"
"given_eps[, p_uncond, null_label, given_drop]).  labels (B,) int64 for a\n"
"class-conditional network; used (B,) int64 receives them after label dropout.");
PyObject* py_train_step(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "train_step";
    PyObject *cap, *po, *go, *mo, *vo, *eo, *x0o, *xto, *epso, *oo, *doo, *to, *slo, *sao, *sbo;
    PyObject *co, *lo = Py_None, *uo = Py_None;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOO|OO", &cap, &po, &go, &mo, &vo, &eo, &x0o,
                          &xto, &epso, &oo, &doo, &to, &slo, &sao, &sbo, &co, &lo, &uo))
        return NULL;
    NetHandle* h = handle_get(cap, &UNET_HANDLE, F);
    if (!h) return NULL;
    const UNetConfig* c = unet_config(h->net);
    const size_t P = unet_num_parameters(h->net);
    TrainConfig tc;
    if (parse_train_config(co, F, &tc)) return NULL;
    F32(params, po, "params", P, 1, 0);
    F32(grads, go, "grads", P, 1, 0);
    F32(m, mo, "m", P, 1, 0);
    F32(v, vo, "v", P, 1, 0);
    F32(ema, eo, "ema", P, 1, 1);
    /* images (B, C, S, S): out and dout hold the network output, so C in = C out */
    const int C = c->in_channels, S = c->sample_size;
    int B, Bx;
    float *x0, *xt, *eps, *out, *dout;
    if (image_arg(x0o, F, "x0", C, S, 0, 0, &B, &x0)) return NULL;
    if (c->out_channels != C) {
        PyErr_Format(PyExc_ValueError, "%s(): the model must output as many channels as it "
                     "takes", F);
        return NULL;
    }
    if (image_arg(xto, F, "xt", C, S, 1, B, &Bx, &xt) ||
        image_arg(epso, F, "eps", C, S, !tc.given_eps, B, &Bx, &eps) ||
        image_arg(oo, F, "out", C, S, 1, B, &Bx, &out) ||
        image_arg(doo, F, "dout", C, S, 1, B, &Bx, &dout))
        return NULL;
    PyArrayObject* ta = check_array(to, F, "t", NPY_INT64, !tc.given_t);
    if (!ta) return NULL;
    if (PyArray_SIZE(ta) != B) {
        PyErr_Format(PyExc_ValueError, "%s(): t must have shape (B,)", F);
        return NULL;
    }
    int64_t* t = PyArray_DATA(ta);
    F32(sample_loss, slo, "sample_loss", (size_t)B, 1, 0);
    const double *sa, *sb;
    int T;
    if (check_tables(sao, "sqrt_ab", sbo, "sqrt_1mab", F, &sa, &sb, &T)) return NULL;
    if (tc.given_t && check_timesteps(t, (size_t)B, T, F, "t")) return NULL;
    const int64_t K = c->num_class_embeds;
    const int64_t* labels;
    int64_t* used = NULL;
    if (labels_arg(lo, F, "labels", (size_t)B, K, &labels)) return NULL;
    if (K > 0) {
        PyArrayObject* ua = labels ? check_array(uo, F, "used", NPY_INT64, 1) : NULL;
        if (!labels || !ua || PyArray_SIZE(ua) != B) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s(): a class-conditional network needs labels "
                             "and used, (B,) int64 each", F);
            return NULL;
        }
        used = PyArray_DATA(ua);
        if (tc.null_label < 0 || tc.null_label >= K) {
            PyErr_Format(PyExc_ValueError, "%s(): null_label must be in 0..%lld", F,
                         (long long)(K - 1));
            return NULL;
        }
    }
    const size_t D = (size_t)C * S * S;
    double loss = 0.0, norm = 0.0;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = train_step(h->net, params, grads, m, v, ema, x0, xt, eps, out, dout, t, labels, used,
                    sample_loss, sa, sb, T, B, D, &tc, &loss, &norm);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_NONFINITE) {   /* PyErr_Format has no %g: format the numbers here */
        char msg[256];
        snprintf(msg, sizeof msg, "%s(): non-finite loss or gradient (loss=%g, grad norm=%g); "
                 "parameters, moments and EMA were left unchanged", F, loss, norm);
        PyErr_SetString(PyExc_FloatingPointError, msg);
        return NULL;
    }
    if (st) return raise_status(st, F, "x0");
    return Py_BuildValue("(dd)", loss, norm);
}

BINDING_DOC(train_draw_timesteps,
"train_draw_timesteps(t, seed, step, T)\n--\n\n"
"t (B,) int64 = the timesteps training step `step` (1-based) draws under seed.");
PyObject* py_train_draw_timesteps(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "train_draw_timesteps";
    PyObject *to, *seed_o;
    long step;
    int T;
    if (!PyArg_ParseTuple(args, "OOli", &to, &seed_o, &step, &T)) return NULL;
    PyArrayObject* ta = check_array(to, F, "t", NPY_INT64, 1);
    uint64_t seed;
    if (!ta || parse_seed(seed_o, F, &seed) || check_step(step, F)) return NULL;
    if (T < 1 || T > MAX_TIMESTEPS || PyArray_SIZE(ta) > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "%s(): T must be in 1..%d, t at most %d long", F,
                     MAX_TIMESTEPS, MAX_BATCH);
        return NULL;
    }
    train_draw_timesteps(PyArray_DATA(ta), (int)PyArray_SIZE(ta), T, seed, step);
    Py_RETURN_NONE;
}

BINDING_DOC(train_draw_noise,
"train_draw_noise(eps, seed, step)\n--\n\n"
"eps (any shape) float32 = the noise training step `step` (1-based) draws under seed.");
PyObject* py_train_draw_noise(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "train_draw_noise";
    PyObject *eo, *seed_o;
    long step;
    if (!PyArg_ParseTuple(args, "OOl", &eo, &seed_o, &step)) return NULL;
    PyArrayObject* ea = check_array(eo, F, "eps", NPY_FLOAT32, 1);
    uint64_t seed;
    if (!ea || parse_seed(seed_o, F, &seed) || check_step(step, F)) return NULL;
    float* e = PyArray_DATA(ea);
    size_t n = (size_t)PyArray_SIZE(ea);
    Py_BEGIN_ALLOW_THREADS
    train_draw_noise(e, n, seed, step);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

BINDING_DOC(train_drop_labels,
"train_drop_labels(out, labels, p, null_label, seed, step)\n--\n\n"
"out (B,) int64 = labels with each replaced by null_label as training step `step` draws.");
PyObject* py_train_drop_labels(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "train_drop_labels";
    PyObject *oo, *lo, *seed_o;
    double p;
    long long null_label;
    long step;
    if (!PyArg_ParseTuple(args, "OOdLOl", &oo, &lo, &p, &null_label, &seed_o, &step))
        return NULL;
    PyArrayObject* oa = check_array(oo, F, "out", NPY_INT64, 1);
    PyArrayObject* la = oa ? check_array(lo, F, "labels", NPY_INT64, 0) : NULL;
    uint64_t seed;
    if (!la || parse_seed(seed_o, F, &seed) || check_step(step, F)) return NULL;
    if (PyArray_SIZE(la) != PyArray_SIZE(oa) || PyArray_SIZE(oa) > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "%s(): out and labels must have one shape", F);
        return NULL;
    }
    train_drop_labels(PyArray_DATA(oa), PyArray_DATA(la), (int)PyArray_SIZE(oa), p, null_label,
                      seed, step);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* the classifier's step                                                     */
/* ------------------------------------------------------------------------ */

BINDING_DOC(classifier_train_step,
"classifier_train_step(handle, params, grads, m, v, x, labels, step, adam, grad_clip)\n"
"    -> (loss, correct, grad_norm)\n--\n\n"
"One step: forward, mean softmax cross-entropy against labels (B,) int64, backward,\n"
"clip (grad_clip > 0), Adam(W) with adam = (lr, beta1, beta2, eps, weight_decay,\n"
"decoupled) at 1-based step.  Parameters are left unchanged on a NaN/Inf loss.");
PyObject* py_classifier_train_step(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_train_step";
    PyObject *cap, *po, *go, *mo, *vo, *xo, *lo, *ao;
    ClassifierTrainConfig tc;
    memset(&tc, 0, sizeof tc);
    if (!PyArg_ParseTuple(args, "OOOOOOOlOd", &cap, &po, &go, &mo, &vo, &xo, &lo, &tc.step, &ao,
                          &tc.grad_clip))
        return NULL;
    NetHandle* h = handle_get(cap, &CLASSIFIER_HANDLE, F);
    if (!h) return NULL;
    const ClassifierConfig* c = classifier_config(h->net);
    const size_t P = classifier_num_parameters(h->net);
    /* ddpm.FeatureNet.train_step passes these through: the binding is their only check */
    if (parse_adam(ao, F, &tc.adam) || check_adam_ranges(&tc.adam, F) || check_step(tc.step, F))
        return NULL;
    if (!isfinite(tc.grad_clip)) {
        PyErr_Format(PyExc_ValueError, "%s(): grad_clip must be finite", F);
        return NULL;
    }
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
    for (int b = 0; b < B; b++) {       /* each picks a column of the (B, K) logits */
        if (labels[b] < 0 || labels[b] >= c->num_classes) {
            PyErr_Format(PyExc_ValueError, "%s(): labels must be in 0..%d", F,
                         c->num_classes - 1);
            return NULL;
        }
    }
    double loss = 0.0, norm = 0.0;
    int correct = 0, st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = classifier_train_step(h->net, params, grads, m, v, x, labels, B, &tc, &loss, &correct,
                               &norm);
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
