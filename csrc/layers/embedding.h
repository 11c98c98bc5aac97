/*
 * embedding.h - a lookup table added to a row per sample (nn.Embedding, as
 * UNet2DModel adds its class embedding to the time embedding).
 *
 * Legend: B batch, D row width, K rows of the table; labels are row indices
 * in 0..K-1, checked by the caller (they address the table).
 */
#ifndef DDPM_EMBEDDING_H
#define DDPM_EMBEDDING_H

#include <stddef.h>
#include <stdint.h>

/* out (B, D) += table[labels[b]] (K, D). */
void embedding_add_forward(float* out, const float* table, const int64_t* labels, int B, int D);

/* dtable (K, D) += the rows of dout (B, D) at labels: a scatter-add, each
 * element summed over b = 0, 1, ... in order whatever the thread count. */
void embedding_add_backward(float* dtable, const float* dout, const int64_t* labels, int B, int D);

#endif /* DDPM_EMBEDDING_H */
