/*
 * py_testing.c - single layers of the networks, bound one by one for the
 * tests (each is compared with a float64 NumPy reference and finite
 * differences) and for experiments: conv2d, GroupNorm(+SiLU), linear, SiLU,
 * the sinusoidal timestep embedding, attention, 2x nearest upsampling, 2x2
 * average/max pooling, global average pooling, softmax cross-entropy; and
 * the Winograd convolutions' small product (gemm_small.h).
 *
 * They have their own method table, ddpm_testing_methods, which module.c
 * adds to ddpm._core in its exec slot: the product's table lists the product.
 *
 * Activations are channel-major, as the networks keep them: (C, B, H, W).
 * Legend: B batch, C channels, H, W height and width (HW = H*W), OC output
 * channels, K kernel size, S stride, G groups, NH attention heads, N planes.
 * Sizes are given explicitly; every array must hold exactly the values they
 * imply (F32 in binding.h), and a scratch buffer is allocated per call.
 */
#include "python/binding.h"

#include <math.h>
#include <stdlib.h>

#include "core/common.h"
#include "core/gemm_small.h"
#include "core/wide.h"
#include "layers/attention.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"
#include "layers/linear.h"
#include "layers/pool.h"
#include "layers/resample.h"
#include "layers/softmax_ce.h"
#include "layers/timestep.h"

/* A size argument in 1..2**30, or 0 with a ValueError. */
static int positive(const char* F, const char* what, long v) {
    if (v < 1 || v > (1L << 30)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be a positive size, got %ld", F, what, v);
        return 0;
    }
    return 1;
}

static int positive4(const char* F, const char* n1, long v1, const char* n2, long v2,
                     const char* n3, long v3, const char* n4, long v4) {
    return positive(F, n1, v1) && positive(F, n2, v2) && positive(F, n3, v3) &&
           positive(F, n4, v4);
}

/* ------------------------------------------------------------------------ */
/* conv2d, GroupNorm, linear, SiLU, timestep embedding                       */
/* ------------------------------------------------------------------------ */

static int conv_dims(const char* F, int B, int C, int H, int W, int OC, int K, int S) {
    if (!positive4(F, "B", B, "C", C, "H", H, "W", W) || !positive(F, "OC", OC)) return 0;
    if (!(K == 1 || K == 3) || !(S == 1 || S == 2)) {
        PyErr_Format(PyExc_ValueError, "%s(): K must be 1 or 3 and S 1 or 2", F);
        return 0;
    }
    return 1;
}

/* Output height/width of a K x K convolution with stride S and padding K/2. */
static int out_dim(int n, int K, int S) { return (n + 2 * (K / 2) - K) / S + 1; }

PyDoc_STRVAR(conv2d_forward_doc,
"conv2d_forward(out, inp, weight, bias, B, C, H, W, OC, K, S, accumulate)\n--\n\n"
"Channel-major convolution: out (OC,B,Ho,Wo) (+)= conv(inp (C,B,H,W)) + bias.");
static PyObject* py_conv2d_forward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "conv2d_forward";
    PyObject *oo, *io, *wo, *bo;
    int B, C, H, W, OC, K, S, acc;
    if (!PyArg_ParseTuple(args, "OOOOiiiiiiip", &oo, &io, &wo, &bo, &B, &C, &H, &W, &OC, &K,
                          &S, &acc))
        return NULL;
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
"conv2d_backward(dinp, dweight, dbias, dout, inp, weight, B, C, H, W, OC, K, S, "
"accumulate=True)\n--\n\n"
"Accumulates (+=) the gradients of conv2d_forward; dinp and dbias may be None.\n"
"accumulate=False writes dinp (=) without reading it.");
static PyObject* py_conv2d_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "conv2d_backward";
    PyObject *dio, *dwo, *dbo, *doo, *io, *wo;
    int B, C, H, W, OC, K, S, acc = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOiiiiiii|p", &dio, &dwo, &dbo, &doo, &io, &wo, &B, &C,
                          &H, &W, &OC, &K, &S, &acc))
        return NULL;
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

/* A testing switch: fn(on) with on a bool, its previous setting returned as a bool. */
static PyObject* testing_switch(PyObject* args, int (*fn)(int)) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    return PyBool_FromLong(fn(on));
}

PyDoc_STRVAR(conv2d_whole_planes_doc,
"conv2d_whole_planes(on) -> bool\n--\n\n"
"Testing: False sends every Winograd chunk through the row-by-row transforms,\n"
"True (the default) lets small planes (7x7) go whole. The numbers are the same\n"
"either way. Returns the previous setting.");
static PyObject* py_conv2d_whole_planes(PyObject* self, PyObject* args) {
    (void)self;
    return testing_switch(args, conv2d_whole_planes);
}

PyDoc_STRVAR(gemm_small_doc,
"gemm_small(out, a, b, M, N, K)\n--\n\n"
"Testing: out (M,N) = a (M,K) b (K,N), the Winograd convolutions' product\n"
"(a packed first, as the convolutions pack their weights).");
static PyObject* py_gemm_small(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "gemm_small";
    PyObject *oo, *ao, *bo;
    int M, N, K;
    if (!PyArg_ParseTuple(args, "OOOiii", &oo, &ao, &bo, &M, &N, &K)) return NULL;
    if (!positive(F, "M", M) || !positive(F, "N", N) || !positive(F, "K", K)) return NULL;
    F32(out, oo, "out", (size_t)M * N, 1, 0);
    F32(a, ao, "a", (size_t)M * K, 0, 0);
    F32(b, bo, "b", (size_t)K * N, 0, 0);
    float* ap = malloc(sizeof(float) * (size_t)M * K);   /* a's size, checked above */
    if (!ap) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    gemm_small_pack(ap, a, (size_t)K, M, K);
    gemm_small_packed(M, N, K, ap, b, (size_t)N, out, (size_t)N);
    Py_END_ALLOW_THREADS
    free(ap);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(gemm_small_kernel_doc,
"gemm_small_kernel(on) -> bool\n--\n\n"
"Testing: False sends the Winograd products to OpenBLAS, True (the default)\n"
"to ddpm's own AVX2 + FMA kernel where the CPU has one. Returns whether the\n"
"kernel was in use before the call.");
static PyObject* py_gemm_small_kernel(PyObject* self, PyObject* args) {
    (void)self;
    return testing_switch(args, gemm_small_kernel);
}

PyDoc_STRVAR(simd_wide_doc,
"simd_wide(on) -> bool\n--\n\n"
"Testing: False keeps the elementwise rows (exp, GroupNorm+SiLU) and the\n"
"F(4x4) row transforms' staging in 8-float vectors where the CPU has AVX-512F,\n"
"True (the default) hands them to the 16-float ones there (the same bits).\n"
"Returns whether the 16-float paths were in use before the call.");
static PyObject* py_simd_wide(PyObject* self, PyObject* args) {
    (void)self;
    return testing_switch(args, ddpm_wide);
}

static int gn_dims(const char* F, int B, int C, int HW, int G) {
    if (!positive4(F, "B", B, "C", C, "HW", HW, "G", G)) return 0;
    if (C % G) {
        PyErr_Format(PyExc_ValueError, "%s(): C must be divisible by G", F);
        return 0;
    }
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
    if (!PyArg_ParseTuple(args, "OOOOOOiiiifp", &oo, &mo, &ro, &io, &wo, &bo, &B, &C, &HW, &G,
                          &eps, &silu))
        return NULL;
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
"groupnorm_backward(dinp, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, "
"silu, accumulate=True)\n--\n\n"
"Accumulates (+=) the gradients of groupnorm_forward; accumulate=False writes\n"
"dinp (=) without reading it.");
static PyObject* py_groupnorm_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "groupnorm_backward";
    PyObject *dio, *dwo, *dbo, *doo, *io, *wo, *bo, *mo, *ro;
    int B, C, HW, G, silu, acc = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOiiiip|p", &dio, &dwo, &dbo, &doo, &io, &wo, &bo, &mo,
                          &ro, &B, &C, &HW, &G, &silu, &acc))
        return NULL;
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
    groupnorm_backward(dinp, dw, db, scratch, dout, inp, w, b, mean, rstd, B, C, HW, G, silu,
                       acc);
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(linear_forward_doc,
"linear_forward(out, inp, weight, bias, B, IN, OUT)\n--\n\n"
"out (B,OUT) = inp (B,IN) weight^T + bias.");
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
    if (!PyArg_ParseTuple(args, "OOOOOOiii", &dio, &dwo, &dbo, &doo, &io, &wo, &B, &IN, &OUT))
        return NULL;
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

PyDoc_STRVAR(silu_backward_doc,
"silu_backward(dinp, dout, inp)\n--\n\ndinp += dout * silu'(inp).");
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
    if (!PyArg_ParseTuple(args, "OOiipff", &oo, &to, &B, &dim, &flip, &shift, &period))
        return NULL;
    if (!positive(F, "B", B) || !positive(F, "dim", dim)) return NULL;
    if (dim < 2 || !((float)(dim / 2) - shift != 0.0f) || !(period > 0)) {
        PyErr_Format(PyExc_ValueError, "%s(): need dim >= 2, dim/2 != freq_shift, "
                     "max_period > 0", F);
        return NULL;
    }
    F32(out, oo, "out", (size_t)B * dim, 1, 0);
    F32(t, to, "t", (size_t)B, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    timestep_embedding_forward(out, t, B, dim, flip, shift, period);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* attention, upsampling                                                     */
/* ------------------------------------------------------------------------ */

static int attention_dims(const char* F, int B, int C, int HW, int NH) {
    if (!positive4(F, "B", B, "C", C, "HW", HW, "NH", NH)) return 0;
    if (C % NH) {
        PyErr_Format(PyExc_ValueError, "%s(): C must be divisible by NH", F);
        return 0;
    }
    return 1;
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
    if (!attention_dims(F, B, C, HW, NH)) return NULL;
    F32(out, oo, "out", (size_t)C * B * HW, 1, 0);
    F32(att, ao, "att", (size_t)B * NH * HW * HW, 1, 0);
    F32(qkv, qo, "qkv", (size_t)3 * C * B * HW, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    attention_forward(out, att, qkv, B, C, HW, NH, 1);
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
    if (!PyArg_ParseTuple(args, "OOOOiiii|p", &dqo, &doo, &qo, &ao, &B, &C, &HW, &NH, &acc))
        return NULL;
    if (!attention_dims(F, B, C, HW, NH)) return NULL;
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
    if (!positive4(F, "C", C, "B", B, "H", H, "W", W)) return NULL;
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
    if (!positive4(F, "C", C, "B", B, "H", H, "W", W)) return NULL;
    F32(dinp, dio, "dinp", (size_t)C * B * H * W, 1, 0);
    F32(dout, doo, "dout", (size_t)C * B * H * W * 4, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    upsample_backward(dinp, dout, C, B, H, W, acc);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* pooling                                                                   */
/* ------------------------------------------------------------------------ */

/* N planes of H x W, halved by 2x2 pooling. */
static int pool_dims(const char* F, int N, int H, int W) {
    if (!positive(F, "N", N) || !positive(F, "H", H) || !positive(F, "W", W)) return 0;
    if (H < 2 || W < 2) {
        PyErr_Format(PyExc_ValueError, "%s(): H and W must be >= 2", F);
        return 0;
    }
    return 1;
}

/* out (N, H/2, W/2) = fwd(inp (N, H, W)): the 2x2 average and max pooling. */
static PyObject* pool2_forward(PyObject* args, const char* F,
                               void (*fwd)(float*, const float*, size_t, int, int)) {
    PyObject *oo, *io;
    int N, H, W;
    if (!PyArg_ParseTuple(args, "OOiii", &oo, &io, &N, &H, &W)) return NULL;
    if (!pool_dims(F, N, H, W)) return NULL;
    F32(out, oo, "out", (size_t)N * (H / 2) * (W / 2), 1, 0);
    F32(inp, io, "inp", (size_t)N * H * W, 0, 0);
    Py_BEGIN_ALLOW_THREADS
    fwd(out, inp, (size_t)N, H, W);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(avgpool2_forward_doc,
"avgpool2_forward(out, inp, N, H, W)\n--\n\n"
"out (N,H//2,W//2) = mean of each 2x2 block of inp (N,H,W), N = C*B planes.");
static PyObject* py_avgpool2_forward(PyObject* self, PyObject* args) {
    (void)self;
    return pool2_forward(args, "avgpool2_forward", avgpool2_forward);
}

PyDoc_STRVAR(avgpool2_backward_doc,
"avgpool2_backward(dinp, dout, N, H, W)\n--\n\n"
"Accumulates (+=) the gradient of avgpool2_forward.");
static PyObject* py_avgpool2_backward(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "avgpool2_backward";
    PyObject *dio, *doo;
    int N, H, W;
    if (!PyArg_ParseTuple(args, "OOiii", &dio, &doo, &N, &H, &W)) return NULL;
    if (!pool_dims(F, N, H, W)) return NULL;
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
    return pool2_forward(args, "maxpool2_forward", maxpool2_forward);
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
    if (!pool_dims(F, N, H, W)) return NULL;
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

/* ------------------------------------------------------------------------ */
/* softmax cross-entropy                                                     */
/* ------------------------------------------------------------------------ */

/* A (B, K) float32 array named lname and targets (B,) int64 in 0..K-1 (each
 * picks a column of a row): 0 with the sizes and data set, or -1. */
static int ce_args(PyObject* lo, PyObject* to, const char* F, const char* lname, int* B, int* K,
                   float** logits, const int64_t** targets) {
    PyArrayObject* la = check_array(lo, F, lname, NPY_FLOAT32, 0);
    if (!la) return -1;
    if (PyArray_NDIM(la) != 2 || PyArray_DIM(la, 0) < 1 || PyArray_DIM(la, 1) < 1 ||
        PyArray_DIM(la, 0) > (1 << 24) || PyArray_DIM(la, 1) > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must have shape (B, K) with B, K >= 1", F,
                     lname);
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
    for (int b = 0; b < *B; b++) {
        if ((*targets)[b] < 0 || (*targets)[b] >= *K) {
            PyErr_Format(PyExc_ValueError, "%s(): targets must be in 0..K-1 = 0..%d", F, *K - 1);
            return -1;
        }
    }
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
    if (ce_args(lo, to, F, "logits", &B, &K, &logits, &targets)) return NULL;
    F32(probs, po, "probs", (size_t)B * K, 1, 0);
    double loss = 0.0;
    int correct = 0, st;
    Py_BEGIN_ALLOW_THREADS
    st = softmax_ce_forward(probs, &loss, &correct, logits, targets, B, K);
    Py_END_ALLOW_THREADS
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
    if (ce_args(po, to, F, "probs", &B, &K, &probs, &targets)) return NULL;
    F32(dlogits, dlo, "dlogits", (size_t)B * K, 1, 0);
    if (!isfinite(dloss)) {
        PyErr_Format(PyExc_ValueError, "%s(): dloss must be finite", F);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    softmax_ce_backward(dlogits, probs, targets, B, K, dloss);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* the table                                                                 */
/* ------------------------------------------------------------------------ */

#define METHOD(name) {#name, py_##name, METH_VARARGS, name##_doc}

PyMethodDef ddpm_testing_methods[] = {
    METHOD(conv2d_forward),
    METHOD(conv2d_backward),
    METHOD(conv2d_whole_planes),
    METHOD(gemm_small),
    METHOD(gemm_small_kernel),
    METHOD(simd_wide),
    METHOD(groupnorm_forward),
    METHOD(groupnorm_backward),
    METHOD(linear_forward),
    METHOD(linear_backward),
    METHOD(silu_forward),
    METHOD(silu_backward),
    METHOD(timestep_embedding),
    METHOD(attention_forward),
    METHOD(attention_backward),
    METHOD(upsample_forward),
    METHOD(upsample_backward),
    METHOD(avgpool2_forward),
    METHOD(avgpool2_backward),
    METHOD(maxpool2_forward),
    METHOD(maxpool2_backward),
    METHOD(global_avgpool_forward),
    METHOD(global_avgpool_backward),
    METHOD(softmax_ce_forward),
    METHOD(softmax_ce_backward),
    {NULL, NULL, 0, NULL},
};
