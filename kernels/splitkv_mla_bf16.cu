#include <c10/cuda/CUDAException.h>
#include "splitkv_mla.cuh"

namespace mla {
template void run_splitkv_mla<cutlass::bfloat16_t>(const DecodeParams&, const CUtensorMap&, int, int, cudaStream_t);
}
