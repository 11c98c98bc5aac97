/*
 * binding.h - what the files of the Python binding (ddpm._core) share.
 *
 * csrc/python/ is the only code that touches PyObject.  An entry point checks
 * its arguments in one order (ndarray, C-contiguous, dtype, native byte order,
 * aligned, writeable where written, then shapes, sizes and index ranges), takes
 * raw pointers, releases the GIL around the numeric call, and turns a status
 * into an exception whose message names the function and the parameter.
 *
 * Each check has one owner:
 *   ddpm (Python) validates user input with the friendly message (value ranges
 *               such as eta in [0, 1], schedule parameters, thresholds);
 *   the binding checks what C needs to stay in bounds: types, dtypes, layout,
 *               shapes, sizes, batch agreement, table lengths, index ranges
 *               (t into a schedule table, labels into a row), and the integer
 *               codes, counts and callables that only it receives;
 *   the C core  checks what only it can see (NaN/Inf in the data, the state of
 *               a network between forward and backward).
 * The binding is strict on purpose: the friendly conversions (float64 to
 * float32, views to contiguous copies) live in the Python package, so nothing
 * is copied here behind the caller's back.
 *
 * The rooms:
 *   args.c       these helpers: array checks, int/seed parsing, float32
 *                arguments, status -> exception, the network handles;
 *   py_rng.c     threads, Philox, normal/uint32 draws, schedule tables, the
 *                forward process (q_sample, q_sample_chain, q_posterior_mean);
 *   py_nets.c    the U-Net and the classifier: create, info, forward, backward,
 *                profile;
 *   py_train.c   grad norm, Adam, EMA, the fused U-Net step, the classifier's
 *                step;
 *   py_sample.c  the samplers, with the denoiser adapter and the stop hook that
 *                py_nll.c shares;
 *   py_nll.c     the likelihood bound and its timestep draws;
 *   py_testing.c single layers for the tests, in their own method table;
 *   module.c     init (multi-phase, NumPy's C API), constants, the product's
 *                method table.
 */
#ifndef DDPM_BINDING_H
#define DDPM_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
/* Every file names NumPy's API table the same way; module.c alone defines
 * DDPM_BINDING_OWNS_NUMPY_API, so it holds the table (filled by Py_mod_exec)
 * and the others only refer to it. */
#define PY_ARRAY_UNIQUE_SYMBOL ddpm_ARRAY_API
#ifndef DDPM_BINDING_OWNS_NUMPY_API
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include <stddef.h>
#include <stdint.h>

#include "diffusion/objective.h"
#include "diffusion/sample.h"
#include "nets/unet.h"
#include "nets/unet_lanes.h"   /* UNET_CHUNK */

#define MAX_TIMESTEPS 1000000       /* T of a schedule; sizes its (T+1,) tables */
#define MAX_BATCH (1 << 20)         /* images per call */

/* ------------------------------------------------------------------------ */
/* arrays (args.c)                                                           */
/* ------------------------------------------------------------------------ */

/* obj as an ndarray of dtype typenum, C-contiguous, native, aligned and, when
 * writeable, writeable: a borrowed reference, or NULL with the error set. */
PyArrayObject* check_array(PyObject* obj, const char* F, const char* name, int typenum,
                           int writeable);

/* Two read-only float64 schedule tables a, b of one shape (T+1,) with
 * 1 <= T <= MAX_TIMESTEPS: 0 with *a, *b and *T set, or -1. */
int check_tables(PyObject* a_obj, const char* a_name, PyObject* b_obj, const char* b_name,
                 const char* F, const double** a, const double** b, int* T);

/* A float32 array holding exactly `count` values (any shape); None is allowed
 * when optional (NULL without an error, *ok = 1).  *ok = 0 on an error. */
float* f32_arg(PyObject* obj, const char* F, const char* name, size_t count, int writeable,
               int optional, int* ok);

/* Declares `float* var` from f32_arg in an entry point whose name is in F, and
 * returns NULL from it on an error. */
#define F32(var, obj, name, count, wr, opt)                                  \
    int ok_##var;                                                             \
    float* var = f32_arg(obj, F, name, count, wr, opt, &ok_##var);            \
    if (!ok_##var) return NULL;

/* A float32 image batch (B, C, S, S) with 1 <= B <= MAX_BATCH, and B equal to
 * B_expected when that is > 0.  0 with *B_out and *data set, or -1. */
int image_arg(PyObject* obj, const char* F, const char* name, int C, int S, int writeable,
              int B_expected, int* B_out, float** data);

/* Class labels for a network with K embeddings: an int64 array of shape (n,)
 * with every value in 0..K-1 (they index the embedding table).  None gives
 * NULL.  K == 0 (an unconditional network) refuses any labels.  0 or -1. */
int labels_arg(PyObject* obj, const char* F, const char* name, size_t n, int64_t K,
               const int64_t** out);

/* Every one of the n lesson times t[i] in 1..T (they index (T+1,) tables):
 * 0, or -1 with "F(): name must be in 1..T = 1..<T>, got <t>". */
int check_timesteps(const int64_t* t, size_t n, int T, const char* F, const char* name);

/* ------------------------------------------------------------------------ */
/* scalars and statuses (args.c)                                            */
/* ------------------------------------------------------------------------ */

/* An int in [0, 2**bits) (bits <= 64); -1 with a TypeError/ValueError naming it. */
int parse_uint(PyObject* obj, const char* F, const char* name, int bits, uint64_t* out);

/* A 64-bit seed: parse_uint(obj, F, "seed", 64, seed). */
int parse_seed(PyObject* obj, const char* F, uint64_t* seed);

/* A progress hook: None or a callable, called every `every` >= 1 steps. */
int check_hook(PyObject* hook, int every, const char* F);

/* Sets the Python exception for a nonzero status of the numeric core and
 * returns NULL: NaN/Inf -> ValueError "<what> contains NaN or Inf", a bad
 * timestep -> ValueError, no memory -> MemoryError, a backward whose forward
 * is gone -> RuntimeError, interrupted ->
 * KeyboardInterrupt (or the hook's exception, already set), anything else ->
 * ValueError "invalid <what>". */
PyObject* raise_status(int st, const char* F, const char* what);

/* ------------------------------------------------------------------------ */
/* network handles (args.c; the two kinds in py_nets.c)                     */
/* ------------------------------------------------------------------------ */

/* What distinguishes a U-Net handle from a classifier handle. */
typedef struct {
    const char* capsule;        /* capsule name, "ddpm.UNet" */
    const char* noun;           /* for messages, "UNet" */
    const char* create;         /* the entry point that makes one, "unet_create" */
    void (*free_net)(void* net);
} HandleKind;

/* A capsule owns the C network (and its workspace).  `busy`, read and set
 * with the GIL held, refuses a second thread while one runs with the GIL
 * released. */
typedef struct {
    void* net;                  /* UNet* or Classifier* */
    const HandleKind* kind;
    int busy;
} NetHandle;

extern const HandleKind UNET_HANDLE, CLASSIFIER_HANDLE;

/* A new capsule owning net; on failure net is freed and NULL returned. */
PyObject* handle_new(void* net, const HandleKind* kind);

/* The handle in cap, checked to be of this kind and not busy; NULL with a
 * TypeError/RuntimeError otherwise. */
NetHandle* handle_get(PyObject* cap, const HandleKind* kind, const char* F);

/* ------------------------------------------------------------------------ */
/* the denoiser and the stop hook of the loops (py_sample.c, used by py_nll.c) */
/* ------------------------------------------------------------------------ */

struct LoopStop;

/* The model argument of sample/nll: a U-Net handle with its flat float32
 * params, or a tuple (mean, std) (params None): the exact denoiser of
 * N(mean, std^2) data, a test hook. */
typedef struct {
    NetHandle* h;               /* the U-Net, or NULL for the Gaussian denoiser */
    const float* params;        /* (P,) with h */
    size_t num_params;          /* its size, checked against P by check_image_batch */
    uint64_t key;               /* this call's own, for unet_infer's prepared weights */
    GaussianDenoiser gauss;     /* without h; alpha_bars, T, objective, D set by denoiser_bind */
    sample_denoise_fn fn;       /* set by denoiser_bind */
    void* ctx;
    struct LoopStop* stop;      /* set by loop_begin: the U-Net checks Ctrl-C between chunks */
} Denoiser;

/* Parses model and params into d (params checked for its dtype and layout;
 * its size by check_image_batch).  0, or -1 with a TypeError. */
int denoiser_arg(PyObject* model, PyObject* params, const char* F, Denoiser* d);

/* A batch of images (N, ...), 1 <= N <= MAX_BATCH with values per image; with
 * a U-Net: shape (N, C, S, S) for it, as many output channels as input, and
 * params of its size.  Sets *N and *D (values per image); 0 or -1. */
int check_image_batch(PyArrayObject* a, const char* name, const Denoiser* d, const char* F,
                      int* N, size_t* D);

/* Points d->fn/ctx at the U-Net or, without one, at the Gaussian denoiser
 * over alpha_bars (T+1,) (kept by the caller for the call's duration). */
void denoiser_bind(Denoiser* d, const double* alpha_bars, int T, int objective, size_t D);

/* The stop hook of sample_run/nll_run: runs between steps on the calling
 * thread with the GIL re-taken; a pending signal (Ctrl-C) or an exception
 * from the progress callable stops the loop and stays set for the binding. */
typedef struct LoopStop {
    PyThreadState* tstate;
    PyObject* hook;             /* callable(step, nsteps), or NULL */
    int every;                  /* call it every `every` steps (and at the end) */
} LoopStop;

int loop_should_stop(void* ctx, int step, int nsteps);

/* Marks the U-Net busy and releases the GIL (loop_should_stop re-takes it
 * between steps); loop_end undoes both. */
void loop_begin(Denoiser* d, LoopStop* stop, PyObject* hook, int every);
void loop_end(Denoiser* d, LoopStop* stop);

/* ------------------------------------------------------------------------ */
/* the product's entry points, listed in module.c's method table             */
/* ------------------------------------------------------------------------ */

/* Entry point `name` is py_<name>, its docstring <name>_doc (PyDoc_STR, so a
 * build without docstrings drops it), defined beside it with BINDING_DOC. */
#define BINDING_DOC(name, text) const char name##_doc[] = PyDoc_STR(text)
#define DECLARE_ENTRY(name)                                                   \
    extern const char name##_doc[];                                           \
    PyObject* py_##name(PyObject* self, PyObject* args)
#define DECLARE_ENTRY_KW(name)                                                \
    extern const char name##_doc[];                                           \
    PyObject* py_##name(PyObject* self, PyObject* args, PyObject* kwargs)

/* py_rng.c */
DECLARE_ENTRY(set_num_threads);
DECLARE_ENTRY(get_num_threads);
DECLARE_ENTRY(has_openmp);
DECLARE_ENTRY(philox4x32_10);
DECLARE_ENTRY(rng_normal);
DECLARE_ENTRY(rng_uint32);
DECLARE_ENTRY(schedule_betas);
DECLARE_ENTRY(rescale_zero_terminal_snr);
DECLARE_ENTRY(schedule_tables);
DECLARE_ENTRY(q_sample);
DECLARE_ENTRY(q_sample_chain);
DECLARE_ENTRY(q_posterior_mean);
/* py_nets.c */
DECLARE_ENTRY(unet_create);
DECLARE_ENTRY(unet_info);
DECLARE_ENTRY(unet_profile);
DECLARE_ENTRY(unet_forward);
DECLARE_ENTRY(unet_backward);
DECLARE_ENTRY(unet_set_params);
DECLARE_ENTRY(classifier_create);
DECLARE_ENTRY(classifier_info);
DECLARE_ENTRY(classifier_forward);
DECLARE_ENTRY(classifier_backward);
/* py_train.c */
DECLARE_ENTRY(grad_norm);
DECLARE_ENTRY(adam_step);
DECLARE_ENTRY(ema_update);
DECLARE_ENTRY(ema_decay_at);
DECLARE_ENTRY(train_step);
DECLARE_ENTRY(classifier_train_step);
DECLARE_ENTRY(train_draw_timesteps);
DECLARE_ENTRY(train_draw_noise);
DECLARE_ENTRY(train_drop_labels);
/* py_objective.c */
DECLARE_ENTRY(objective_predict);
DECLARE_ENTRY(objective_targets);
DECLARE_ENTRY(net_timestep);
/* py_sample.c, py_nll.c */
DECLARE_ENTRY_KW(sample);
DECLARE_ENTRY_KW(nll);
DECLARE_ENTRY(nll_timesteps);

/* py_testing.c: the single-layer bindings only the tests use, in a table of
 * their own that module.c adds in its exec slot. */
extern PyMethodDef ddpm_testing_methods[];

#endif /* DDPM_BINDING_H */
