/*
 * py_nets.c - the binding of the two networks: the U-Net (diffusers'
 * UNet2DModel) and the feature classifier.  Each is built from a config into
 * a capsule handle (args.c), described by *_info (parameter count, FLOPs,
 * the named tensors of its flat parameter vector), run forward and backward
 * on float32 image batches (B, C, S, S) with the GIL released; the U-Net also
 * reports its per-op profile.  Parameters and gradients are the caller's
 * flat float32 arrays; unet_set_params replaces them unless a run is using them.
 */
#include "python/binding.h"

#include <string.h>

#include "core/common.h"
#include "nets/classifier.h"
#include "nets/unet.h"

static void free_unet(void* net) { unet_free(net); }
static void free_classifier(void* net) { classifier_free(net); }

const HandleKind UNET_HANDLE = {"ddpm.UNet", "UNet", "unet_create", free_unet};
const HandleKind CLASSIFIER_HANDLE = {"ddpm.Classifier", "classifier", "classifier_create",
                                      free_classifier};

/* A sequence of at most maxn ints in 0..2**20 into out: its length, or -1. */
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

/* A network's status from *_create: a ValueError with the reason it gives for
 * a config it does not support, else as raise_status. */
static PyObject* raise_create(int st, const char* F, const char* why) {
    if (st != DDPM_ERR_VALUE) return raise_status(st, F, "config");
    PyErr_Format(PyExc_ValueError, "%s(): %s", F, why ? why : "unsupported config");
    return NULL;
}

/* [(name, shape tuple, offset, size)] for the nt tensors tensor(net, i). */
static PyObject* tensor_list(const void* net, int nt,
                             const ParamTensor* (*tensor)(const void*, int)) {
    PyObject* lst = PyList_New(nt);
    if (!lst) return NULL;
    for (int i = 0; i < nt; i++) {
        const ParamTensor* p = tensor(net, i);
        PyObject* shape = PyTuple_New(p->ndim);
        if (!shape) { Py_DECREF(lst); return NULL; }
        for (int d = 0; d < p->ndim; d++) {
            PyObject* v = PyLong_FromLong(p->shape[d]);
            if (!v) { Py_DECREF(shape); Py_DECREF(lst); return NULL; }
            PyTuple_SET_ITEM(shape, d, v);
        }
        PyObject* item = Py_BuildValue("(sNnn)", p->name, shape, (Py_ssize_t)p->offset,
                                       (Py_ssize_t)p->size);
        if (!item) { Py_DECREF(lst); return NULL; }
        PyList_SET_ITEM(lst, i, item);
    }
    return lst;
}

static const ParamTensor* unet_tensor_at(const void* net, int i) { return unet_tensor(net, i); }
static const ParamTensor* classifier_tensor_at(const void* net, int i) {
    return classifier_tensor(net, i);
}

/* ------------------------------------------------------------------------ */
/* the U-Net                                                                 */
/* ------------------------------------------------------------------------ */

BINDING_DOC(unet_create,
"unet_create(sample_size, in_channels, out_channels, block_out_channels, layers_per_block,\n"
"            down_attn, up_attn, mid_attn, norm_num_groups, norm_eps, attention_head_dim,\n"
"            num_class_embeds=0)\n"
"--\n\n"
"Build the C network; returns a handle. down_attn/up_attn: one 0/1 per level;\n"
"num_class_embeds K > 0 adds a class embedding (K, 4 * block_out_channels[0]).");
PyObject* py_unet_create(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "unet_create";
    UNetConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    PyObject *boc, *da, *ua;
    int mid;
    if (!PyArg_ParseTuple(args, "iiiOiOOpifi|i", &cfg.sample_size, &cfg.in_channels,
                          &cfg.out_channels, &boc, &cfg.layers_per_block, &da, &ua, &mid,
                          &cfg.norm_groups, &cfg.norm_eps, &cfg.head_dim,
                          &cfg.num_class_embeds))
        return NULL;
    cfg.mid_attn = mid;
    int L = int_seq(boc, cfg.block_out, UNET_MAX_LEVELS, F, "block_out_channels");
    if (L < 0) return NULL;
    cfg.num_levels = L;
    if (int_seq(da, cfg.down_attn, UNET_MAX_LEVELS, F, "down_attn") != L ||
        int_seq(ua, cfg.up_attn, UNET_MAX_LEVELS, F, "up_attn") != L) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s(): down_attn and up_attn need one entry per "
                         "level", F);
        return NULL;
    }
    UNet* net;
    const char* why = NULL;
    int st = unet_create(&net, &cfg, &why);
    if (st) return raise_create(st, F, why);
    return handle_new(net, &UNET_HANDLE);
}

BINDING_DOC(unet_info,
"unet_info(handle)\n--\n\n"
"dict: num_parameters, flops_per_image, tensors = [(name, shape, offset, size), ...].");
PyObject* py_unet_info(PyObject* self, PyObject* cap) {
    (void)self;
    NetHandle* h = handle_get(cap, &UNET_HANDLE, "unet_info");
    if (!h) return NULL;
    PyObject* lst = tensor_list(h->net, unet_num_tensors(h->net), unet_tensor_at);
    if (!lst) return NULL;
    return Py_BuildValue("{s:n,s:d,s:N,s:i}",
                         "num_parameters", (Py_ssize_t)unet_num_parameters(h->net),
                         "flops_per_image", unet_flops_per_image(h->net), "tensors", lst,
                         "num_class_embeds", unet_config(h->net)->num_class_embeds);
}

BINDING_DOC(unet_profile,
"unet_profile(handle, enable)\n--\n\n"
"Return {op kind: seconds} accumulated so far and reset it; enable turns timing on/off.");
PyObject* py_unet_profile(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* cap;
    int enable;
    if (!PyArg_ParseTuple(args, "Op", &cap, &enable)) return NULL;
    NetHandle* h = handle_get(cap, &UNET_HANDLE, "unet_profile");
    if (!h) return NULL;
    static const char* names[UNET_PROF_N] = UNET_PROF_NAMES;
    const double* prof = unet_profile(h->net);
    PyObject* d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < UNET_PROF_N; i++) {
        PyObject* v = PyFloat_FromDouble(prof[i]);
        if (!v || PyDict_SetItemString(d, names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    unet_reset_profile(h->net);
    unet_set_profiling(h->net, enable);
    return d;
}

BINDING_DOC(unet_forward,
"unet_forward(handle, params, x, t, out, labels=None, keep=True) -> generation\n--\n\n"
"out (B,Cout,S,S) = eps_theta(x (B,Cin,S,S), t (B,) float32 network time, labels (B,)\n"
"int64 for a class-conditional network).  Returns the forward's number, which\n"
"unet_backward needs.  keep=False: no backward will follow, so the activations it\n"
"would read are not kept (each GroupNorm + SiLU is folded into the convolution\n"
"after it; the same output, bit for bit).");
PyObject* py_unet_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "unet_forward";
    PyObject *cap, *po, *xo, *to, *oo, *lo = Py_None;
    int keep = 1;
    if (!PyArg_ParseTuple(args, "OOOOO|Op", &cap, &po, &xo, &to, &oo, &lo, &keep)) return NULL;
    NetHandle* h = handle_get(cap, &UNET_HANDLE, F);
    if (!h) return NULL;
    const UNetConfig* c = unet_config(h->net);
    F32(params, po, "params", unet_num_parameters(h->net), 0, 0);
    int B, B2;
    float *x, *out;
    if (image_arg(xo, F, "x", c->in_channels, c->sample_size, 0, 0, &B, &x) ||
        image_arg(oo, F, "out", c->out_channels, c->sample_size, 1, B, &B2, &out))
        return NULL;
    F32(t, to, "t", (size_t)B, 0, 0);
    const int64_t* labels;
    if (labels_arg(lo, F, "class_labels", (size_t)B, c->num_class_embeds, &labels)) return NULL;
    if (c->num_class_embeds > 0 && !labels) {
        PyErr_Format(PyExc_ValueError, "%s(): this network is class-conditional: pass "
                     "class_labels (one per image)", F);
        return NULL;
    }
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = unet_forward(h->net, params, x, t, labels, out, B, keep);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st) return raise_status(st, F, "x or t");
    return PyLong_FromUnsignedLongLong(unet_generation(h->net));
}

BINDING_DOC(unet_backward,
"unet_backward(handle, params, grads, dout, dx, generation)\n--\n\n"
"After unet_forward number `generation` on the same batch: grads += dL/dparams;\n"
"dx (or None) = dL/dx.  Refused (ValueError) when the workspace no longer holds\n"
"that forward or dout's batch is not its batch.");
PyObject* py_unet_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "unet_backward";
    PyObject *cap, *po, *go, *doo, *dxo, *geno;
    if (!PyArg_ParseTuple(args, "OOOOOO", &cap, &po, &go, &doo, &dxo, &geno)) return NULL;
    uint64_t gen;
    if (parse_uint(geno, F, "generation", 64, &gen)) return NULL;
    NetHandle* h = handle_get(cap, &UNET_HANDLE, F);
    if (!h) return NULL;
    const UNetConfig* c = unet_config(h->net);
    F32(params, po, "params", unet_num_parameters(h->net), 0, 0);
    F32(grads, go, "grads", unet_num_parameters(h->net), 1, 0);
    int B, B2 = 0;
    float *dout, *dx = NULL;
    if (image_arg(doo, F, "grad_out", c->out_channels, c->sample_size, 0, 0, &B, &dout))
        return NULL;
    if (dxo != Py_None &&
        image_arg(dxo, F, "dx", c->in_channels, c->sample_size, 1, B, &B2, &dx))
        return NULL;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = unet_backward(h->net, params, grads, dout, dx, B, gen);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_VALUE) {
        PyErr_Format(PyExc_ValueError, "%s(): grad_out holds %d images but the forward it "
                     "belongs to had another batch", F, B);
        return NULL;
    }
    if (st) return raise_status(st, F, "grad_out");
    Py_RETURN_NONE;
}

BINDING_DOC(unet_set_params,
"unet_set_params(handle, params, new)\n--\n\n"
"params[:] = new (both float32 (P,)), refused (RuntimeError) while another thread runs\n"
"this network (a sampler, a forward): its weights never change in the middle of a run.");
PyObject* py_unet_set_params(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "load_state_dict";
    PyObject *cap, *po, *no;
    if (!PyArg_ParseTuple(args, "OOO", &cap, &po, &no)) return NULL;
    NetHandle* h = handle_get(cap, &UNET_HANDLE, F);
    if (!h) return NULL;
    const size_t P = unet_num_parameters(h->net);
    F32(params, po, "params", P, 1, 0);
    F32(src, no, "new", P, 0, 0);
    /* with the GIL held: no other thread can start a run on this handle meanwhile */
    memmove(params, src, sizeof(float) * P);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* the classifier                                                            */
/* ------------------------------------------------------------------------ */

BINDING_DOC(classifier_create,
"classifier_create(in_channels, image_size, widths, depth, groups, norm_eps, num_classes,\n"
"                  max_pool=False)\n--\n\n"
"Build the C classifier (csrc/nets/classifier.h); returns a handle.  widths and depth:\n"
"one entry per stage; max_pool: 2x2 max (True) or average (False) pooling.");
PyObject* py_classifier_create(PyObject* self, PyObject* args) {
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
            PyErr_Format(PyExc_ValueError, "%s(): depth needs one entry per stage (as widths)",
                         F);
        return NULL;
    }
    cfg.num_stages = L;
    Classifier* net;
    const char* why = NULL;
    int st = classifier_create(&net, &cfg, &why);
    if (st) return raise_create(st, F, why);
    return handle_new(net, &CLASSIFIER_HANDLE);
}

BINDING_DOC(classifier_info,
"classifier_info(handle)\n--\n\n"
"dict: num_parameters, feature_dim, flops_per_image, tensors = [(name, shape, offset, size)].");
PyObject* py_classifier_info(PyObject* self, PyObject* cap) {
    (void)self;
    NetHandle* h = handle_get(cap, &CLASSIFIER_HANDLE, "classifier_info");
    if (!h) return NULL;
    PyObject* lst = tensor_list(h->net, classifier_num_tensors(h->net), classifier_tensor_at);
    if (!lst) return NULL;
    return Py_BuildValue("{s:n,s:i,s:d,s:N}",
                         "num_parameters", (Py_ssize_t)classifier_num_parameters(h->net),
                         "feature_dim", classifier_feature_dim(h->net),
                         "flops_per_image", classifier_flops_per_image(h->net), "tensors", lst);
}

/* A (B, cols) float32 output, or None (*data = NULL). */
static int rows_arg(PyObject* obj, const char* F, const char* name, int B, int cols,
                    float** data) {
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

BINDING_DOC(classifier_forward,
"classifier_forward(handle, params, x, logits, features) -> generation\n--\n\n"
"logits (B,K) and features (B,D) (either may be None) of x (B,Cin,S,S) float32.\n"
"Returns the forward's number, which classifier_backward needs.");
PyObject* py_classifier_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_forward";
    PyObject *cap, *po, *xo, *lo, *fo;
    if (!PyArg_ParseTuple(args, "OOOOO", &cap, &po, &xo, &lo, &fo)) return NULL;
    NetHandle* h = handle_get(cap, &CLASSIFIER_HANDLE, F);
    if (!h) return NULL;
    const ClassifierConfig* c = classifier_config(h->net);
    F32(params, po, "params", classifier_num_parameters(h->net), 0, 0);
    int B;
    float *x, *logits, *features;
    if (image_arg(xo, F, "x", c->in_channels, c->image_size, 0, 0, &B, &x) ||
        rows_arg(lo, F, "logits", B, c->num_classes, &logits) ||
        rows_arg(fo, F, "features", B, classifier_feature_dim(h->net), &features))
        return NULL;
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = classifier_forward(h->net, params, x, logits, features, B);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st) return raise_status(st, F, "x");
    return PyLong_FromUnsignedLongLong(classifier_generation(h->net));
}

BINDING_DOC(classifier_backward,
"classifier_backward(handle, params, grads, dlogits, dx, generation)\n--\n\n"
"After classifier_forward number `generation` on the same batch: grads += dL/dparams\n"
"for dlogits (B,K) = dL/dlogits; dx (B,Cin,S,S) (or None) = dL/dx.");
PyObject* py_classifier_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "classifier_backward";
    PyObject *cap, *po, *go, *dlo, *dxo, *geno;
    if (!PyArg_ParseTuple(args, "OOOOOO", &cap, &po, &go, &dlo, &dxo, &geno)) return NULL;
    uint64_t gen;
    if (parse_uint(geno, F, "generation", 64, &gen)) return NULL;
    NetHandle* h = handle_get(cap, &CLASSIFIER_HANDLE, F);
    if (!h) return NULL;
    const ClassifierConfig* c = classifier_config(h->net);
    const size_t P = classifier_num_parameters(h->net);
    F32(params, po, "params", P, 0, 0);
    F32(grads, go, "grads", P, 1, 0);
    PyArrayObject* da = check_array(dlo, F, "dlogits", NPY_FLOAT32, 0);
    if (!da) return NULL;
    if (PyArray_NDIM(da) != 2 || PyArray_DIM(da, 1) != c->num_classes ||
        PyArray_DIM(da, 0) < 1 || PyArray_DIM(da, 0) > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "%s(): dlogits must have shape (B, %d)", F,
                     c->num_classes);
        return NULL;
    }
    int B = (int)PyArray_DIM(da, 0), B2;
    float* dx = NULL;
    if (dxo != Py_None &&
        image_arg(dxo, F, "dx", c->in_channels, c->image_size, 1, B, &B2, &dx))
        return NULL;
    const float* dlogits = PyArray_DATA(da);
    int st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = classifier_backward(h->net, params, grads, dlogits, dx, B, gen);
    Py_END_ALLOW_THREADS
    h->busy = 0;
    if (st == DDPM_ERR_VALUE) {
        PyErr_Format(PyExc_ValueError, "%s(): dlogits holds %d images but the forward it "
                     "belongs to had another batch", F, B);
        return NULL;
    }
    if (st) return raise_status(st, F, "dlogits");
    Py_RETURN_NONE;
}
