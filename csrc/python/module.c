/*
 * module.c - ddpm._core: the module's init (multi-phase: a Py_mod_exec slot
 * imports NumPy's C API, whose table this file owns), its constants (the
 * schedule's TABLE_NAMES, MAX_TIMESTEPS, the RNG streams) and the method table
 * of the product.  The test-only layer bindings (py_testing.c) are added from
 * their own table in the exec slot.  The entry points live by concern in the
 * other files of csrc/python/ (binding.h lists them).
 */
#define DDPM_BINDING_OWNS_NUMPY_API
#include "python/binding.h"

#include "core/rng.h"
#include "diffusion/schedule.h"
#include "diffusion/nll.h"

#define METHOD(name, flags) {#name, (PyCFunction)(void (*)(void))py_##name, flags, name##_doc}

static PyMethodDef core_methods[] = {
    /* threads, RNG, schedules, the forward process (py_rng.c) */
    METHOD(set_num_threads, METH_O),
    METHOD(get_num_threads, METH_NOARGS),
    METHOD(has_openmp, METH_NOARGS),
    METHOD(philox4x32_10, METH_VARARGS),
    METHOD(rng_normal, METH_VARARGS),
    METHOD(rng_uint32, METH_VARARGS),
    METHOD(schedule_betas, METH_VARARGS),
    METHOD(rescale_zero_terminal_snr, METH_O),
    METHOD(schedule_tables, METH_O),
    METHOD(q_sample, METH_VARARGS),
    METHOD(q_sample_chain, METH_VARARGS),
    METHOD(q_posterior_mean, METH_VARARGS),
    /* the networks (py_nets.c) */
    METHOD(unet_create, METH_VARARGS),
    METHOD(unet_info, METH_O),
    METHOD(unet_profile, METH_VARARGS),
    METHOD(unet_forward, METH_VARARGS),
    METHOD(unet_backward, METH_VARARGS),
    METHOD(unet_set_params, METH_VARARGS),
    METHOD(classifier_create, METH_VARARGS),
    METHOD(classifier_info, METH_O),
    METHOD(classifier_forward, METH_VARARGS),
    METHOD(classifier_backward, METH_VARARGS),
    /* training (py_train.c) */
    METHOD(grad_norm, METH_O),
    METHOD(adam_step, METH_VARARGS),
    METHOD(ema_update, METH_VARARGS),
    METHOD(ema_decay_at, METH_VARARGS),
    METHOD(train_step, METH_VARARGS),
    METHOD(train_draw_timesteps, METH_VARARGS),
    METHOD(train_draw_noise, METH_VARARGS),
    METHOD(train_drop_labels, METH_VARARGS),
    /* the time convention and the eps/x0/v algebra (py_objective.c) */
    METHOD(objective_predict, METH_VARARGS),
    METHOD(objective_targets, METH_VARARGS),
    METHOD(net_timestep, METH_O),
    METHOD(classifier_train_step, METH_VARARGS),
    /* sampling and the likelihood bound (py_sample.c, py_nll.c) */
    METHOD(sample, METH_VARARGS | METH_KEYWORDS),
    METHOD(nll, METH_VARARGS | METH_KEYWORDS),
    METHOD(nll_timesteps, METH_VARARGS),
    {NULL, NULL, 0, NULL},
};

/* An int constant of the module from a uint64_t (the RNG streams). */
static int add_u64(PyObject* m, const char* name, uint64_t v) {
    PyObject* o = PyLong_FromUnsignedLongLong(v);
    if (!o) return -1;
    if (PyModule_AddObject(m, name, o) < 0) {
        Py_DECREF(o);
        return -1;
    }
    return 0;
}

/* A tuple of n names as module constant `name` (the C enums' names, in order). */
static int add_names(PyObject* m, const char* name, const char* const* names, int n) {
    PyObject* tup = PyTuple_New(n);
    if (!tup) return -1;
    for (int i = 0; i < n; i++) {
        PyObject* s = PyUnicode_FromString(names[i]);
        if (!s) { Py_DECREF(tup); return -1; }
        PyTuple_SET_ITEM(tup, i, s);
    }
    if (PyModule_AddObject(m, name, tup) < 0) { Py_DECREF(tup); return -1; }
    return 0;
}

static int core_exec(PyObject* m) {
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    if (PyModule_AddFunctions(m, ddpm_testing_methods) < 0) return -1;
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
    if (PyModule_AddIntConstant(m, "MAX_TIMESTEPS", MAX_TIMESTEPS) < 0 ||
        PyModule_AddIntConstant(m, "UNET_CHUNK", UNET_CHUNK) < 0)
        return -1;
    if (add_u64(m, "STREAM_USER", DDPM_STREAM_USER) < 0 ||
        add_u64(m, "STREAM_NLL_EPS", DDPM_STREAM_NLL_EPS) < 0 ||
        add_u64(m, "STREAM_SAMPLE_LABELS", DDPM_STREAM_SAMPLE_LABELS) < 0)
        return -1;
    static const char* const objectives[OBJ_COUNT] = OBJECTIVE_NAMES;
    static const char* const samplers[SAMPLER_COUNT] = SAMPLER_NAMES;
    static const char* const variances[SAMPLE_VARIANCE_COUNT] = SAMPLE_VARIANCE_NAMES;
    static const char* const nll_variances[NLL_VARIANCE_COUNT] = NLL_VARIANCE_NAMES;
    if (add_names(m, "OBJECTIVES", objectives, OBJ_COUNT) < 0 ||
        add_names(m, "SAMPLERS", samplers, SAMPLER_COUNT) < 0 ||
        add_names(m, "SAMPLE_VARIANCES", variances, SAMPLE_VARIANCE_COUNT) < 0 ||
        add_names(m, "NLL_VARIANCES", nll_variances, NLL_VARIANCE_COUNT) < 0)
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
