/*
 * runtime.c - the networks' shared runtime (see runtime.h): the registration
 * of named views, the workspace and its binding, the first-writer bookkeeping
 * of activation gradients, and the profiling clock.
 */
#define _POSIX_C_SOURCE 199309L
#include "nets/runtime.h"
#include "core/alloc.h"
#include "core/threads.h"
#include "layers/attention.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- layout */

void rt_init(NetRuntime* rt, int policy) {
    memset(rt, 0, sizeof *rt);
    rt->policy = policy;
}

static void free_workspace(NetRuntime* rt) {
    free(rt->acts); free(rt->dacts); free(rt->col); free(rt->scratch);
    rt->acts = rt->dacts = rt->col = rt->scratch = NULL;
    rt->col_floats = rt->scratch_floats = 0;
    rt->B = rt->cap = 0;
    rt->have_forward = 0;
}

void rt_release(NetRuntime* rt, int grads_only) {
    if (!grads_only) {
        free_workspace(rt);
        return;
    }
    free(rt->dacts);
    rt->dacts = NULL;   /* the gradient fields are rebound by the next rt_bind_acts */
}

void rt_free(NetRuntime* rt) {
    free_workspace(rt);
    free(rt->tensors); free(rt->pviews); free(rt->aviews); free(rt->needs); free(rt->preps);
    free(rt->slots);
    memset(rt, 0, sizeof *rt);
}

/* arr (n used of *cap elements of elem bytes) with room for one more: the
 * same pointer, a larger copy (*cap doubled), or NULL (arr is kept). */
static void* room(void* arr, int n, int* cap, size_t elem) {
    if (n < *cap) return arr;
    int c = *cap ? 2 * *cap : 64;
    void* p = realloc(arr, (size_t)c * elem);
    if (p) *cap = c;
    return p;
}

/* Room for one more element in rt->arr (rt->n used of rt->cap), or the
 * failure recorded in rt->status and a return from the calling function. */
#define ROOM(rt, arr, n, cap)                                                  \
    do {                                                                       \
        void* p_ = room((rt)->arr, (rt)->n, &(rt)->cap, sizeof *(rt)->arr);    \
        if (!p_) {                                                             \
            (rt)->status = DDPM_ERR_NOMEM;                                     \
            return;                                                            \
        }                                                                      \
        (rt)->arr = p_;                                                        \
    } while (0)

void rt_param(NetRuntime* rt, float** w, float** g, const char* prefix, const char* suffix,
              int ndim, int d0, int d1, int d2, int d3) {
    ROOM(rt, tensors, ntensors, tensors_cap);
    ROOM(rt, pviews, npviews, pviews_cap);
    char name[DDPM_PARAM_NAME_LEN];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    size_t off = param_tensor_add(rt->tensors, &rt->ntensors, rt->tensors_cap, &rt->nparams,
                                  name, ndim, d0, d1, d2, d3);
    if (w || g) rt->pviews[rt->npviews++] = (RtView){w, g, off, -1};
}

static void add_slot(NetRuntime* rt, float** a, float** d, size_t per_image, int kept) {
    ROOM(rt, aviews, naviews, aviews_cap);
    ROOM(rt, slots, nslots, slots_cap);
    rt->slots[rt->nslots] =
        (RtSlot){rt->acts_floats, per_image, 0, kept, -1, 0, 0, rt->block, rt->block};
    rt->aviews[rt->naviews++] = (RtView){a, d, rt->acts_floats, rt->nslots};
    rt->nslots++;
    rt->acts_floats += per_image;
    rt->lean_floats = 0;   /* laid out again when a lean workspace is reserved */
}

void rt_act(NetRuntime* rt, float** a, float** d, size_t per_image) {
    add_slot(rt, a, d, per_image, 0);
}

void rt_act_kept(NetRuntime* rt, float** a, float** d, size_t per_image) {
    add_slot(rt, a, d, per_image, 1);
}

void rt_link(NetRuntime* rt, float** a, float** d, float** src) {
    ROOM(rt, aviews, naviews, aviews_cap);
    for (int i = 0; i < rt->naviews; i++)
        if (rt->aviews[i].value == src) {
            rt->aviews[rt->naviews++] = (RtView){a, d, rt->aviews[i].offset, rt->aviews[i].slot};
            RtSlot* s = &rt->slots[rt->aviews[i].slot];
            if (s->last < rt->block) s->last = rt->block;
            rt->lean_floats = 0;
            return;
        }
    rt->status = DDPM_ERR_VALUE;   /* src was never registered: a layout bug */
}

void rt_need_conv(NetRuntime* rt, int C, int H, int W, int OC, int K, int S) {
    ROOM(rt, needs, nneeds, needs_cap);
    rt->needs[rt->nneeds++] = (RtNeed){RT_NEED_CONV, C, H, W, OC, K, S, 0};
}

void rt_prep(NetRuntime* rt, const float** u, float** w, int C, int H, int W, int OC, int K,
             int S) {
    *u = NULL;
    const size_t n = conv2d_weights_floats(C, H, W, OC, K, S);
    if (!n) return;
    ROOM(rt, preps, npreps, preps_cap);
    rt->preps[rt->npreps++] = (RtPrep){u, w, C, H, W, OC, K, S, rt->prep_floats};
    rt->prep_floats += n;
}

void rt_prep_build(NetRuntime* rt, float* buf) {
    for (int i = 0; i < rt->npreps; i++) {
        const RtPrep* p = &rt->preps[i];
        conv2d_weights(buf + p->off, *p->w, p->C, p->H, p->W, p->OC, p->K, p->S);
    }
}

void rt_bind_prep(NetRuntime* rt, const float* buf) {
    for (int i = 0; i < rt->npreps; i++) *rt->preps[i].u = buf ? buf + rt->preps[i].off : NULL;
}

void rt_need_norm(NetRuntime* rt, int C, int HW, int G) {
    ROOM(rt, needs, nneeds, needs_cap);
    rt->needs[rt->nneeds++] = (RtNeed){RT_NEED_NORM, C, HW, 1, 0, 0, 0, G};
}

static int slot_viewed_by(const NetRuntime* rt, float** field) {
    for (int i = 0; i < rt->naviews; i++)
        if (rt->aviews[i].value == field) return rt->aviews[i].slot;
    return -1;
}

void rt_alias(NetRuntime* rt, float** child, float** parent, size_t sub) {
    const int c = slot_viewed_by(rt, child), p = slot_viewed_by(rt, parent);
    if (c < 0 || p < 0 || c == p || rt->slots[c].kept || rt->slots[p].kept ||
        rt->slots[c].parent >= 0 || rt->slots[p].parent >= 0 ||
        sub > rt->slots[p].len || rt->slots[c].len > rt->slots[p].len - sub) {
        rt->status = DDPM_ERR_VALUE;   /* a layout bug */
        return;
    }
    for (int i = 0; i < rt->nslots; i++)
        if (rt->slots[i].parent == c) {   /* c holds others: one level only */
            rt->status = DDPM_ERR_VALUE;
            return;
        }
    rt->slots[c].parent = p;
    rt->slots[c].sub = sub;
    rt->lean_floats = 0;
}

void rt_block(NetRuntime* rt) { rt->block++; }

void rt_plan_begin(NetRuntime* rt) { rt->plan_from = rt->block + 1; }

/* Each slot's place in a lean workspace.  A unit is a slot that is neither
 * kept nor inside another, with the slots inside it: it lives from the
 * first block that registers one of them to the last that reads one (from
 * before the first block to after the last when one belongs to a block
 * before plan_from).  In order of birth, each unit takes the lowest offset
 * where it overlaps no placed unit that lives at the same time (first fit).
 * Those inside sit at their parent's place (rt_alias allows one level). */
static int lean_layout(NetRuntime* rt) {
    const int n = rt->nslots;
    int* lo = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    int* hi = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    int* order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    int* live = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!lo || !hi || !order || !live) {
        free(lo); free(hi); free(order); free(live);
        return DDPM_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        lo[i] = rt->slots[i].born;
        hi[i] = rt->slots[i].last;
    }
    for (int i = 0; i < n; i++) {   /* a unit's lifetime: its own and its parts' */
        const RtSlot* s = &rt->slots[i];
        if (s->parent < 0) continue;
        if (lo[i] < lo[s->parent]) lo[s->parent] = lo[i];
        if (hi[i] > hi[s->parent]) hi[s->parent] = hi[i];
    }
    int units = 0;
    for (int i = 0; i < n; i++) {
        if (rt->slots[i].kept || rt->slots[i].parent >= 0) continue;
        if (lo[i] < rt->plan_from) {   /* computed out of registration order: never shared */
            lo[i] = -1;
            hi[i] = rt->block + 1;
        }
        int k = units++;   /* insertion by birth, stable */
        while (k > 0 && lo[order[k - 1]] > lo[i]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    size_t top = 0;
    for (int u = 0; u < units; u++) {
        const int i = order[u];
        int nl = 0;   /* placed units alive at i's birth, by offset */
        for (int v = 0; v < u; v++) {
            const int j = order[v];
            if (hi[j] < lo[i]) continue;
            int k = nl++;
            while (k > 0 && rt->slots[live[k - 1]].lean > rt->slots[j].lean) {
                live[k] = live[k - 1];
                k--;
            }
            live[k] = j;
        }
        size_t at = 0;   /* the lowest gap that holds it */
        for (int k = 0; k < nl; k++) {
            const RtSlot* o = &rt->slots[live[k]];
            if (o->lean >= at + rt->slots[i].len) break;
            if (o->lean + o->len > at) at = o->lean + o->len;
        }
        rt->slots[i].lean = at;
        if (at + rt->slots[i].len > top) top = at + rt->slots[i].len;
    }
    for (int i = 0; i < n; i++) {
        RtSlot* s = &rt->slots[i];
        if (s->kept) s->lean = RT_KEPT;
        else if (s->parent >= 0) s->lean = rt->slots[s->parent].lean + s->sub;
    }
    free(lo); free(hi); free(order); free(live);
    rt->lean_floats = top > 0 ? top : 1;
    return DDPM_OK;
}

void rt_need_attention(NetRuntime* rt, int NH, int HW) {
    ROOM(rt, needs, nneeds, needs_cap);
    rt->needs[rt->nneeds++] = (RtNeed){RT_NEED_ATTN, NH, HW, 1, 0, 0, 0, 0};
}

/* ------------------------------------------------------------- workspace */

/* The conv and groupnorm scratch (floats) the recorded layers need at batch B. */
static void scratch_sizes(const NetRuntime* rt, int B, size_t* col, size_t* gn) {
    *col = 1;
    *gn = 1;
    for (int i = 0; i < rt->nneeds; i++) {
        const RtNeed* n = &rt->needs[i];
        if (n->kind == RT_NEED_CONV) {
            size_t c = conv2d_scratch_floats(B, n->C, n->H, n->W, n->OC, n->K, n->S);
            if (c > *col) *col = c;
        } else if (n->kind == RT_NEED_ATTN) {
            size_t c = attention_scratch_floats(B, n->C, n->H);
            if (c > *col) *col = c;
        } else {
            size_t g = groupnorm_scratch_floats(B, n->C, n->H * n->W, n->G);
            if (g > *gn) *gn = g;
        }
    }
}

/* *buf holds at least n floats (reallocated, contents dropped, when smaller). */
static int hold(float** buf, size_t* have, size_t n) {
    if (*buf && *have >= n) return DDPM_OK;
    free(*buf);
    *buf = ddpm_alloc_large(sizeof(float) * n);
    *have = *buf ? n : 0;
    return *buf ? DDPM_OK : DDPM_ERR_NOMEM;
}

void rt_set_lean(NetRuntime* rt, int lean) {
    if (rt->lean == !!lean) return;
    free_workspace(rt);
    rt->lean = !!lean;
}

int rt_reserve(NetRuntime* rt, int B, int for_training) {
    if (B < 1 || (for_training && rt->lean)) return DDPM_ERR_VALUE;
    if (rt->lean && !rt->lean_floats) {
        int st = lean_layout(rt);
        if (st) return st;
    }
    const int grow = rt->policy == RT_GROW;
    if (grow ? B > rt->cap : B != rt->cap) {   /* a new activation arena */
        if (grow) {
            free(rt->acts); free(rt->dacts);
            rt->acts = rt->dacts = NULL;
            rt->B = rt->cap = 0;
            rt->have_forward = 0;
        } else {
            free_workspace(rt);   /* scratch too: it is sized with the arena */
        }
        const size_t per_image = rt->lean ? rt->lean_floats : rt->acts_floats;
        rt->acts = ddpm_alloc_large(sizeof(float) * per_image * (size_t)B);
        if (!rt->acts) return DDPM_ERR_NOMEM;
        rt->cap = B;
    }
    if (grow || !rt->col || !rt->scratch) {   /* RT_GROW only grows the scratch */
        size_t col, gn;
        scratch_sizes(rt, B, &col, &gn);
        int st = hold(&rt->col, &rt->col_floats, col);
        if (!st) st = hold(&rt->scratch, &rt->scratch_floats, gn);
        if (st) {
            if (!grow) free_workspace(rt);
            return st;
        }
    }
    if (for_training && !rt->dacts) {
        rt->dacts = ddpm_alloc_large(sizeof(float) * rt->acts_floats * (size_t)rt->cap);
        if (!rt->dacts) return DDPM_ERR_NOMEM;
    }
    return DDPM_OK;
}

void rt_bind_acts(NetRuntime* rt, int B) {
    rt->B = B;
    for (int i = 0; i < rt->naviews; i++) {
        const RtView* v = &rt->aviews[i];
        if (rt->lean) {
            const size_t at = rt->slots[v->slot].lean;
            if (v->value) *v->value = at == RT_KEPT ? NULL : rt->acts + at * (size_t)B;
            if (v->grad) *v->grad = NULL;
            continue;
        }
        const size_t at = v->offset * (size_t)B;
        if (v->value) *v->value = rt->acts + at;
        if (v->grad) *v->grad = rt->dacts ? rt->dacts + at : NULL;
    }
}

void rt_bind_params(NetRuntime* rt, const float* params, float* grads) {
    for (int i = 0; i < rt->npviews; i++) {
        const RtView* v = &rt->pviews[i];
        /* the forward reads parameters only; the fields are float* so that
         * one struct type serves parameters and gradients (llm.c's way) */
        if (v->value) *v->value = (float*)params + v->offset;
        if (v->grad && grads) *v->grad = grads + v->offset;
    }
}

/* --------------------------------------------- first-writer bookkeeping */

void rt_grad_begin(NetRuntime* rt) {
    for (int i = 0; i < rt->nslots; i++) rt->slots[i].fresh = 1;
}

/* The slot holding gradient d (a bound gradient field): slots are in
 * increasing offset order. */
static RtSlot* slot_of(NetRuntime* rt, const float* d) {
    const size_t off = (size_t)(d - rt->dacts) / (size_t)rt->B;
    int lo = 0, hi = rt->nslots - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (rt->slots[mid].off <= off) lo = mid;
        else hi = mid - 1;
    }
    return &rt->slots[lo];
}

int rt_grad_acc(NetRuntime* rt, const float* d) {
    RtSlot* s = slot_of(rt, d);
    const int first = s->fresh;
    s->fresh = 0;
    return !first;
}

float* rt_grad_ready(NetRuntime* rt, float* d) {
    RtSlot* s = slot_of(rt, d);
    if (s->fresh) {
        ddpm_zero(rt->dacts + s->off * (size_t)rt->B, s->len * (size_t)rt->B);
        s->fresh = 0;
    }
    return d;
}

/* ------------------------------------------------------------- profiling */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double rt_prof_start(const NetRuntime* rt) { return rt->profiling ? now_s() : 0.0; }

void rt_prof_stop(NetRuntime* rt, int kind, double t0) {
    if (rt->profiling && kind >= 0 && kind < RT_PROF_KINDS) rt->prof[kind] += now_s() - t0;
}
