/*
 * embedding.c - the class embedding's forward (a row added per sample) and
 * backward (a scatter-add into the table); see embedding.h.
 *
 * Legend: B batch, D row width.  The backward splits the D columns over
 * threads, so every table element sums its rows in the order b = 0, 1, ...
 */
#include "layers/embedding.h"
#include "core/threads.h"

void embedding_add_forward(float* out, const float* table, const int64_t* labels, int B, int D) {
    for (int b = 0; b < B; b++) {
        const float* row = table + (size_t)labels[b] * D;
        float* o = out + (size_t)b * D;
        for (int j = 0; j < D; j++) o[j] += row[j];
    }
}

void embedding_add_backward(float* dtable, const float* dout, const int64_t* labels, int B,
                            int D) {
    int nt = ddpm_threads_for((size_t)B * D, 1 << 14);
    if (nt > D) nt = D;
    DDPM_PARALLEL_FOR(nt)
    for (int j = 0; j < D; j++)
        for (int b = 0; b < B; b++) dtable[(size_t)labels[b] * D + j] += dout[(size_t)b * D + j];
}
