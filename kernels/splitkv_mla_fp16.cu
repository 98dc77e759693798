#include <c10/cuda/CUDAException.h>
#include "splitkv_mla.cuh"

namespace mla {
template void run_splitkv_mla<cutlass::half_t>(const DecodeParams&, const CUtensorMap&, int, int, cudaStream_t);
}
