// Host entry points of the CUDA kernels.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>

#include "params.h"

namespace mla {

void run_mla_metadata(const int* seqlens_k, int batch, int num_parts, int* metadata, int* num_splits,
                      cudaStream_t stream);

// Element: cutlass::bfloat16_t or cutlass::half_t.
template <typename Element>
void run_splitkv_mla(const DecodeParams& p, const CUtensorMap& tmap_kv, int num_m_blocks, int num_parts,
                     cudaStream_t stream);

// Element: __nv_bfloat16 or __half.
template <typename Element>
void run_combine(const DecodeParams& p, int num_parts, int num_sms, cudaStream_t stream);

}  // namespace mla
