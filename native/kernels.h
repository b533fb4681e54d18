// Coarse kernels over caller-owned float buffers (llm.c signatures: outputs first, explicit dims).
// Gradients of activations are written (overwritten); gradients of weights (dw, db) are accumulated (+=).
#pragma once
#include <cstdint>

namespace perp {

void bias_add(float* y, const float* b, long M, long N);
void bias_grad(float* db, const float* dy, long M, long N);  // db[j] += sum_i dy[i, j]

void rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, long M, long C, float eps);
void rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, long M,
                 long C);
void layernorm_fwd(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, long M, long C,
                   float eps);
void layernorm_bwd(float* dx, float* dw, float* db, const float* dout, const float* x, const float* mean,
                   const float* rstd, const float* w, long M, long C);

// x, out: (B, T, H, D); cos/sin: (T, R/2) for the rotated dims [0, R). inverse=true applies the transposed rotation
// (the backward). interleaved: pairs (2i, 2i+1) (llama2.c / GPT-J); else rotate-half pairs (i, i + R/2) (HF LLaMA/NeoX).
void rope(float* out, const float* x, const float* cos, const float* sin, long B, long T, long H, long D, long R,
          bool interleaved, bool inverse);

// Causal attention. q, out: (B, T, H, D); k, v: (B, T, KV, D); P (B, H, T, T) stores the probabilities for backward
// (may be null in inference): row t is written up to the end of its query panel's diagonal key panel, which covers
// every key <= t and every entry attention_bwd reads; the rest of the row (zeros by causality) is left as it was.
// scale multiplies q·k. past > 0 (inference with a KV cache): k, v are (B, past + T, KV, D), the `past` cached keys
// first, and query t sits at position past + t (it sees keys up to there); P must then be null.
void attention_fwd(float* out, float* P, const float* q, const float* k, const float* v, long B, long T, long H,
                   long KV, long D, float scale, long window = 0, long past = 0);
// Rows with cached prefixes of their own (inference): row b's T queries (q, out: (B, T, H, D)) follow past[b] cached
// keys and values, rows of pk[b] / pv[b] ((past[b], KV, D)), then its T new ones, rows [bT, bT + T) of k / v
// ((B, T, KV, D)); otherwise as attention_fwd with P null: bit for bit what it gives each row over the keys back to back.
void attention_fwd_rows(float* out, const float* q, const float* k, const float* v, const float* const* pk,
                        const float* const* pv, const int32_t* past, long B, long T, long H, long KV, long D,
                        float scale, long window);
void attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* P, long B, long T, long H, long KV, long D, float scale);

enum Act { ACT_RELU = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_SILU = 3 };
void act_fwd(float* out, const float* x, long n, int kind);
void act_bwd(float* dx, const float* dout, const float* x, long n, int kind);
void swiglu_fwd(float* out, const float* g, const float* u, long n);
void swiglu_bwd(float* dg, float* du, const float* dout, const float* g, const float* u, long n);

// Per row: loss = logsumexp(logits) - logits[target] (0 where target == ignore). If dlogits is non-null it receives
// scale * (softmax - onehot) (zeros for ignored rows); dlogits may alias logits.
void xent(float* loss, float* dlogits, const float* logits, const int32_t* targets, long M, long V, int32_t ignore,
          float scale);

// Returns the number of non-finite gradient entries; the parameter is only updated when that is 0.
long adamw(float* p, const float* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd,
           long step);

enum Ew { EW_ADD = 0, EW_MUL = 1, EW_AXPY = 2, EW_SCALE = 3, EW_MULACC = 4, EW_SUB = 5 };
void ew(int op, float* out, const float* a, const float* b, long n, float alpha);

// out[j] += sum_i x[i, j]^2 over the n rows of x (n x cols), in double, rows in order (Wanda's column norms).
void col_sumsq(double* out, const float* x, long n, long cols);
// Per row of x (M x V): out[i] = log Σ_j exp(x[i,j]) (max-shifted, exp and sum in float, the log in double) and
// argmax[i] = the first index of the row's maximum. Scores continuations without a JS pass of exp per logit.
void row_logsumexp(double* out, int32_t* argmax, const float* x, long M, long V);
// out = base + s * (x ⊙ mask) (base null: s * (x ⊙ mask)): a multiply, then an add (the bits of scale then add).
void masked_scale_add(float* out, const float* base, const float* x, const uint8_t* mask, float s, long n);
void mask_apply(float* w, const uint8_t* mask, long n);
// mask = 1 keeps, 0 prunes. topk_prune: prune the k smallest scores per row (per_row) or of the whole matrix;
// ties prune the lower index first. nm_keep: keep the n largest of every m consecutive entries of each row.
void topk_prune(uint8_t* mask, const float* scores, long rows, long cols, long k, bool per_row);
void nm_keep(uint8_t* mask, const float* scores, long rows, long cols, long n, long m);

// Lower Cholesky in place (upper triangle zeroed); returns 0, or j+1 where the pivot j was not positive.
long cholesky(float* a, long n);
// out = inverse of the lower-triangular L (out lower-triangular).
void trtri_lower(float* out, const float* L, long n);
// SparseGPT's in-block OBS pass over `bs` columns of W1 (rows x bs, row-major) with the block's rows of the upper
// Cholesky factor of H^-1 (U: row i at U + i * ldu, columns 0..bs) and its diagonal d: column by column, each row's
// weight is kept or zeroed by mask1 (for N:M, first chosen per row at each group's first column: the n largest of
// w^2 / d^2, lower index on ties), err = (w - q) / d goes to Err1 and the row's later columns get w -= err * U[i, j].
// Returns the OBS loss sum (w - q)^2 / d^2 / 2, summed column by column, row by row. nm_m == 0: unstructured.
double sparsegpt_obs(float* W1, float* Err1, uint8_t* mask1, const float* U, long ldu, const float* d, long rows,
                     long bs, long nm_n, long nm_m);

}  // namespace perp
