// Truncation and the draw over few candidates: top-k selection, the radix search for the last
// token of a top-p nucleus, and drawing a token from weighted candidates or a masked buffer.
// Internal to engine/sampling.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/sampling/simd_kernels.h"

namespace modrwkv::sampling_internal {

// The k best logits (finite or +inf; -inf and NaN skipped), sorted Better-first. `max` is the
// largest logit.
void TopK(const float* l, size_t n, size_t k, float max, std::vector<Cand>* out);

// The last token of the nucleus: of the candidates in *band (relative probabilities > 0 that
// agree on the radix digits before `first_round`, in increasing id order; overwritten), the last
// element of the smallest Better-first prefix whose mass reaches `need` (the worst one if the
// total falls short).
Cand FindNucleusCut(std::vector<Cand>* band, double need, int first_round);

// FindNucleusCut over a whole buffer of relative probabilities: the first (exponent) round runs
// on the buffer itself, then only the tokens of the cut exponent are copied out.
Cand FindNucleusCutInBuffer(const float* e, size_t n, double need, std::vector<Cand>* band);

// Draws token i with probability e[i] / total, where block_sum[b] = sum of e over block b.
int32_t DrawFromBlocks(const float* e, size_t n, const double* block_sum, double total, double u);

// Draws from candidates weighted by v (the max token, v = 1, is always among them).
int32_t DrawFromCands(const std::vector<Cand>& c, size_t count, double u);

}  // namespace modrwkv::sampling_internal
