/*
 * py_objective.c - the binding of diffusion/objective.h: the network's time
 * for lesson time t, and the eps / x0 / v conversions and training targets,
 * so Python's Diffusion.predict_* / target compute exactly what the samplers
 * and the training step compute.
 */
#include "python/binding.h"

#include "diffusion/objective.h"

/* An objective code in 0..OBJ_COUNT-1, or -1 with a ValueError. */
static int check_objective(int objective, const char* F) {
    if (objective < 0 || objective >= OBJ_COUNT) {
        PyErr_Format(PyExc_ValueError, "%s(): objective must be in 0..%d", F, OBJ_COUNT - 1);
        return -1;
    }
    return 0;
}

/* n values per image of a batch (N, ...): like's shape; a, b (N,) float32.
 * 0 with *N, *D, *pa, *pb set, or -1. */
static int batch_coefs(PyArrayObject* like, PyObject* ao, PyObject* bo, const char* F, int* N,
                       size_t* D, const float** pa, const float** pb) {
    if (PyArray_NDIM(like) < 1 || PyArray_DIM(like, 0) < 1 ||
        PyArray_DIM(like, 0) > MAX_BATCH || PyArray_SIZE(like) < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): need a batch (N, ...) of 1..%d images", F,
                     MAX_BATCH);
        return -1;
    }
    *N = (int)PyArray_DIM(like, 0);
    *D = (size_t)PyArray_SIZE(like) / (size_t)*N;
    int ok;
    *pa = f32_arg(ao, F, "a", (size_t)*N, 0, 0, &ok);
    if (!ok) return -1;
    *pb = f32_arg(bo, F, "b", (size_t)*N, 0, 0, &ok);
    return ok ? 0 : -1;
}

BINDING_DOC(objective_predict,
"objective_predict(eps, x0, x, model_out, a, b, objective, clip)\n--\n\n"
"eps, x0 (N, ...) = eps_hat, x0_hat from model_out at x (N, ...) float32, image n\n"
"at a[n] = sqrt(alpha_bar), b[n] = sqrt(1 - alpha_bar); x0 clipped to [-1, 1] if clip.");
PyObject* py_objective_predict(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "objective_predict";
    PyObject *eo, *x0o, *xo, *mo, *ao, *bo;
    int objective, clip;
    if (!PyArg_ParseTuple(args, "OOOOOOip", &eo, &x0o, &xo, &mo, &ao, &bo, &objective, &clip))
        return NULL;
    PyArrayObject* xa = check_array(xo, F, "x", NPY_FLOAT32, 0);
    if (!xa || check_objective(objective, F)) return NULL;
    int N;
    size_t D;
    const float *a, *b;
    if (batch_coefs(xa, ao, bo, F, &N, &D, &a, &b)) return NULL;
    const size_t ND = (size_t)N * D;
    F32(m, mo, "model_out", ND, 0, 0);
    F32(eps, eo, "eps", ND, 1, 0);
    F32(x0, x0o, "x0", ND, 1, 0);
    const float* x = PyArray_DATA(xa);
    Py_BEGIN_ALLOW_THREADS
    objective_predict(eps, x0, x, m, N, D, objective, a, b, clip);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

BINDING_DOC(objective_targets,
"objective_targets(target, x0, eps, a, b, objective)\n--\n\n"
"target (N, ...) = what the network should output for x0, eps (N, ...) float32.");
PyObject* py_objective_targets(PyObject* self, PyObject* args) {
    (void)self;
    const char* F = "objective_targets";
    PyObject *to, *x0o, *eo, *ao, *bo;
    int objective;
    if (!PyArg_ParseTuple(args, "OOOOOi", &to, &x0o, &eo, &ao, &bo, &objective)) return NULL;
    PyArrayObject* xa = check_array(x0o, F, "x0", NPY_FLOAT32, 0);
    if (!xa || check_objective(objective, F)) return NULL;
    int N;
    size_t D;
    const float *a, *b;
    if (batch_coefs(xa, ao, bo, F, &N, &D, &a, &b)) return NULL;
    const size_t ND = (size_t)N * D;
    F32(eps, eo, "eps", ND, 0, 0);
    F32(target, to, "target", ND, 1, 0);
    const float* x0 = PyArray_DATA(xa);
    Py_BEGIN_ALLOW_THREADS
    objective_targets(target, x0, eps, N, D, objective, a, b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

BINDING_DOC(net_timestep,
"net_timestep(t) -> ndarray\n--\n\n"
"The network's time (int64) for lesson times t (int64 array): t - 1.");
PyObject* py_net_timestep(PyObject* self, PyObject* to) {
    (void)self;
    const char* F = "net_timestep";
    PyArrayObject* ta = check_array(to, F, "t", NPY_INT64, 0);
    if (!ta) return NULL;
    PyArrayObject* out = (PyArrayObject*)PyArray_NewLikeArray(ta, NPY_CORDER, NULL, 0);
    if (!out) return NULL;
    const int64_t* t = PyArray_DATA(ta);
    int64_t* o = PyArray_DATA(out);
    for (npy_intp i = 0; i < PyArray_SIZE(ta); i++) o[i] = net_timestep(t[i]);
    return (PyObject*)out;
}
