// tma_stream.cu -- standalone microbenchmark (kernels/DESIGN.md, "Eleventh session"): how
// fast can a persistent grid stream a paged MLA KV cache (bf16 [num_pages, 64 tokens, 576])
// from HBM into shared memory with TMA, as a function of
//   (1) the load geometry (variant),
//   (2) the number of pipeline stages (bytes in flight per SM = stages * 72 KiB),
//   (3) the number of CTAs (1 per SM).
//
// Variants (each lands one whole 73728-byte page in one smem slot):
//   A   box64x64  : 3-D map {576, 64, P}, box {64,64,1}, 9 loads/page (chunk c -> slot + c*8192)
//   B   box4d     : 4-D map {64, 8, 9, 8P} strides {1152,128,9216} B, box {64,8,9,8}, 1 load/page.
//                   NOTE: smem order of the box is [group8][chunk][token%8][64 cols], i.e. the
//                   1024-byte blocks are permuted relative to A (see correctness test).
//   B2  box4d_pm  : 4-D map {64, 64, 9, P} strides {1152,128,73728} B, box {64,64,9,1}, 1 load/page.
//                   smem order [chunk][token][64 cols] == exactly A's layout.
//   C   bulk1d    : non-tensor cp.async.bulk of the contiguous 73728-byte page, 1 copy/page.
// References: R1 cudaMemcpyAsync D2D, R2 plain int4 grid-stride read kernel.
//
// Build: nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o tma_stream tma_stream.cu [-lcuda]
// (the driver API is reached only through cudaGetDriverEntryPointByVersion; -lcuda is not needed)

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

// ----------------------------------------------------------------------------------------
// error checking
// ----------------------------------------------------------------------------------------
#define CK(call)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      fprintf(stderr, "CUDA error %d (%s: %s) at %s:%d: %s\n", (int)e_,                   \
              cudaGetErrorName(e_), cudaGetErrorString(e_), __FILE__, __LINE__, #call);   \
      fflush(stdout);                                                                     \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

#define CK_LAUNCH() CK(cudaGetLastError())

// ----------------------------------------------------------------------------------------
// constants
// ----------------------------------------------------------------------------------------
constexpr int TOKENS = 64;                       // tokens per page
constexpr int DIM = 576;                         // bf16 elements per token
constexpr int ROW_BYTES = DIM * 2;               // 1152
constexpr int PAGE_BYTES = TOKENS * ROW_BYTES;   // 73728
constexpr int NCHUNK = DIM / 64;                 // 9 chunks of 64 columns (128 B)
constexpr int CHUNK_BYTES = TOKENS * 128;        // 8192 (one 64x64 box)
constexpr int MAX_STAGES = 3;
constexpr int SMEM_DYN_BYTES = MAX_STAGES * PAGE_BYTES + 1024;  // always the max -> 1 CTA/SM
constexpr int THREADS = 128;
constexpr int NUM_CONSUMER_WARPS = THREADS / 32 - 1;            // warps 1..3
constexpr int PAGE_CACHE = 512;                                 // page ids staged in smem
constexpr long long TIMEOUT_CYCLES = 1LL << 31;                 // ~1 s at ~2 GHz

enum Variant { V_A = 0, V_B = 1, V_B2 = 2, V_C = 3, NUM_VARIANTS = 4 };
static const char* kVariantName[NUM_VARIANTS] = {"A_box64x64", "B_box4d", "B2_box4d_pm",
                                                 "C_bulk1d"};

static_assert(PAGE_BYTES == 73728, "page size");
static_assert(PAGE_BYTES % 1024 == 0, "slots must stay 1024-B aligned for SWIZZLE_128B");
static_assert(NUM_CONSUMER_WARPS * 32 * 768 == PAGE_BYTES, "consumer read spread");

// ----------------------------------------------------------------------------------------
// PTX wrappers
// ----------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

// make the mbarrier inits visible (to other threads and to the async proxy / TMA unit)
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile(
      "{\n\t"
      ".reg .b64 st;\n\t"
      "mbarrier.arrive.shared::cta.b64 st, [%0];\n\t"
      "}" ::"r"(bar)
      : "memory");
}

__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
  uint32_t ok;
  asm volatile(
      "{\n\t"
      ".reg .pred p;\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
      "selp.u32 %0, 1, 0, p;\n\t"
      "}"
      : "=r"(ok)
      : "r"(bar), "r"(parity)
      : "memory");
  return ok != 0;
}

// Wait for phase with the given parity to complete. Bounded: on timeout sets *err and
// `dead` (the thread then stops waiting altogether so the kernel terminates instead of
// hanging the one GPU run).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity, int* err, bool& dead) {
  if (dead) return;
  if (mbar_try_wait(bar, parity)) return;
  const long long t0 = clock64();
  while (!mbar_try_wait(bar, parity)) {
    if (clock64() - t0 > TIMEOUT_CYCLES) {
      atomicExch(err, 1);
      dead = true;
      return;
    }
  }
}

__device__ __forceinline__ void prefetch_tmap(const CUtensorMap* m) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(m)) : "memory");
}

__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* m, uint32_t bar,
                                            int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(m)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* m, uint32_t bar,
                                            int c0, int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(m)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes,
                                          uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1], %2, [%3];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(src)), "r"(bytes), "r"(bar)
      : "memory");
}

__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

// Issue all loads of one page into the slot at `dst` (1024-B aligned), completing on `bar`.
// The caller has already done arrive.expect_tx(bar, PAGE_BYTES).
__device__ __forceinline__ void issue_page(int variant, const CUtensorMap* tmap,
                                           const uint8_t* kv, uint32_t dst, uint32_t bar,
                                           int page) {
  switch (variant) {
    case V_A:
#pragma unroll
      for (int c = 0; c < NCHUNK; ++c) tma_load_3d(dst + c * CHUNK_BYTES, tmap, bar, 64 * c, 0, page);
      break;
    case V_B:
      tma_load_4d(dst, tmap, bar, 0, 0, 0, 8 * page);
      break;
    case V_B2:
      tma_load_4d(dst, tmap, bar, 0, 0, 0, page);
      break;
    default:  // V_C
      bulk_load(dst, kv + static_cast<size_t>(page) * PAGE_BYTES, PAGE_BYTES, bar);
      break;
  }
}

// ----------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------
__global__ void __launch_bounds__(THREADS, 1)
    stream_kernel(const __grid_constant__ CUtensorMap tmap, const uint8_t* __restrict__ kv,
                  const int* __restrict__ page_list, int num_pages, int variant, int stages,
                  uint32_t* __restrict__ sink, int* __restrict__ err) {
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[MAX_STAGES];
  __shared__ __align__(8) uint64_t empty_bar[MAX_STAGES];
  __shared__ int s_pages[PAGE_CACHE];  // this CTA's share of the page list (block table)

  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;  // 1024-B aligned slot base (shared addr)

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;

  const int begin = static_cast<int>(static_cast<long long>(blockIdx.x) * num_pages / gridDim.x);
  const int end = static_cast<int>(static_cast<long long>(blockIdx.x + 1) * num_pages / gridDim.x);
  const int n = end - begin;

  if (tid == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(smem_u32(&full_bar[s]), 1);
      mbar_init(smem_u32(&empty_bar[s]), NUM_CONSUMER_WARPS);
    }
    fence_mbar_init();
  }
  // stage the share of the page list in smem up front (one coalesced round trip, overlapped
  // with the barrier init) so the producer never stalls on a dependent global load
  for (int i = tid; i < n && i < PAGE_CACHE; i += THREADS) s_pages[i] = page_list[begin + i];
  __syncthreads();

  bool dead = false;
  uint32_t acc = 0;

  if (warp == 0) {
    if (lane == 0 && n > 0) {
      // ------------------------------ producer ------------------------------
      if (variant != V_C) prefetch_tmap(&tmap);
      int cur = s_pages[0];
      int s = 0;
      uint32_t phase = 0;  // parity of the current round of slot s
      for (int k = 0; k < n; ++k) {
        // next page id: from smem, or (share > PAGE_CACHE only) a global load issued one
        // iteration ahead so its latency overlaps the empty-wait / issue
        const int k1 = k + 1;
        const int nxt = (k1 < n) ? (k1 < PAGE_CACHE ? s_pages[k1] : page_list[begin + k1]) : 0;
        if (k >= stages) {
          // slot s was last filled in round r-1; consumers released it by completing
          // phase (r-1) of empty_bar[s], whose parity is phase ^ 1.
          mbar_wait(smem_u32(&empty_bar[s]), phase ^ 1u, err, dead);
          if (dead) break;
        }
        const uint32_t fb = smem_u32(&full_bar[s]);
        mbar_arrive_expect_tx(fb, PAGE_BYTES);
        issue_page(variant, &tmap, kv, base + s * PAGE_BYTES, fb, cur);
        cur = nxt;
        if (++s == stages) { s = 0; phase ^= 1u; }
      }
      // no trailing waits: the consumers wait for every full barrier, so all TMA writes
      // have landed before any consumer (and hence the CTA) can finish.
    }
  } else {
    // ------------------------------ consumers (warps 1..3) ------------------------------
    const uint32_t my_off = static_cast<uint32_t>(tid - 32) * 768u;  // spread over the slot
    int s = 0;
    uint32_t phase = 0;
    for (int k = 0; k < n; ++k) {
      mbar_wait(smem_u32(&full_bar[s]), phase, err, dead);
      const uint4 v = ld_shared_v4(base + s * PAGE_BYTES + my_off);
      acc = acc * 31u + (v.x ^ v.y ^ v.z ^ v.w);
      __syncwarp();
      if (lane == 0) mbar_arrive(smem_u32(&empty_bar[s]));
      if (++s == stages) { s = 0; phase ^= 1u; }
    }
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.x * THREADS + tid] = acc;  // keep the reads alive
}

// one page, one slot: land page `page` with `variant` and dump the slot to `out`
__global__ void __launch_bounds__(THREADS, 1)
    tma_test_kernel(const __grid_constant__ CUtensorMap tmap, const uint8_t* __restrict__ kv,
                    int page, int variant, uint8_t* __restrict__ out, int* __restrict__ err) {
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t bar;
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const int tid = threadIdx.x;
  if (tid == 0) {
    mbar_init(smem_u32(&bar), 1);
    fence_mbar_init();
  }
  __syncthreads();
  if (tid == 0) {
    mbar_arrive_expect_tx(smem_u32(&bar), PAGE_BYTES);
    issue_page(variant, &tmap, kv, base, smem_u32(&bar), page);
  }
  bool dead = false;
  mbar_wait(smem_u32(&bar), 0, err, dead);
  uint4* o = reinterpret_cast<uint4*>(out);
  for (int i = tid; i < PAGE_BYTES / 16; i += THREADS) o[i] = ld_shared_v4(base + i * 16);
}

// plain read-only stream (R2 reference and L2 flush)
__global__ void __launch_bounds__(256)
    read_kernel(const int4* __restrict__ p, size_t n16, uint32_t* __restrict__ sink) {
  uint32_t acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n16; i += stride) {
    const int4 v = __ldg(p + i);
    acc += static_cast<uint32_t>(v.x ^ v.y ^ v.z ^ v.w);
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// measures the actual SM clock: clock64 ticks vs %globaltimer ns over ~spin_ns
__global__ void clock_kernel(long long spin_ns, double* out_mhz) {
  if (threadIdx.x != 0) return;
  unsigned long long g0, g1;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g0));
  const long long c0 = clock64();
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g1));
  } while (static_cast<long long>(g1 - g0) < spin_ns);
  const long long c1 = clock64();
  *out_mhz = 1e3 * static_cast<double>(c1 - c0) / static_cast<double>(g1 - g0);
}

// ----------------------------------------------------------------------------------------
// host: driver entry points, tensor maps
// ----------------------------------------------------------------------------------------
typedef CUresult (*EncodeTiledFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                  const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                  const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                  CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
typedef CUresult (*GetErrorNameFn)(CUresult, const char**);

static EncodeTiledFn g_encode = nullptr;
static GetErrorNameFn g_errname = nullptr;

static void load_driver_entry_points() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult st;
  CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &st));
  if (st != cudaDriverEntryPointSuccess || fn == nullptr) {
    fprintf(stderr, "cuTensorMapEncodeTiled entry point not found (status %d)\n", (int)st);
    exit(1);
  }
  g_encode = reinterpret_cast<EncodeTiledFn>(fn);
  fn = nullptr;
  if (cudaGetDriverEntryPointByVersion("cuGetErrorName", &fn, 12000, cudaEnableDefault, &st) ==
          cudaSuccess &&
      st == cudaDriverEntryPointSuccess)
    g_errname = reinterpret_cast<GetErrorNameFn>(fn);
  (void)cudaGetLastError();
}

static const char* cu_err_name(CUresult r) {
  const char* s = nullptr;
  if (g_errname && g_errname(r, &s) == CUDA_SUCCESS && s) return s;
  return "?";
}

// Encodes the tensor map for a variant over `num_pages` pages starting at kv.
// Returns false (and prints the CUresult) if the driver rejects it. V_C needs no map.
static bool make_map(int variant, void* kv, int num_pages, CUtensorMap* m) {
  memset(m, 0, sizeof(*m));
  if (variant == V_C) return true;
  cuuint64_t dims[4], strides[3];
  cuuint32_t box[4], estr[4] = {1, 1, 1, 1};
  cuuint32_t rank;
  if (variant == V_A) {
    rank = 3;
    dims[0] = DIM; dims[1] = TOKENS; dims[2] = (cuuint64_t)num_pages;
    strides[0] = ROW_BYTES; strides[1] = PAGE_BYTES;
    box[0] = 64; box[1] = 64; box[2] = 1;
  } else if (variant == V_B) {
    rank = 4;  // (col-in-chunk, token-in-group8, chunk, group8)
    dims[0] = 64; dims[1] = 8; dims[2] = NCHUNK; dims[3] = 8ull * num_pages;
    strides[0] = ROW_BYTES; strides[1] = 128; strides[2] = 8 * ROW_BYTES;
    box[0] = 64; box[1] = 8; box[2] = NCHUNK; box[3] = 8;
  } else {  // V_B2
    rank = 4;  // (col-in-chunk, token, chunk, page)
    dims[0] = 64; dims[1] = TOKENS; dims[2] = NCHUNK; dims[3] = (cuuint64_t)num_pages;
    strides[0] = ROW_BYTES; strides[1] = 128; strides[2] = PAGE_BYTES;
    box[0] = 64; box[1] = TOKENS; box[2] = NCHUNK; box[3] = 1;
  }
  CUresult r = g_encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, kv, dims, strides, box, estr,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    printf("# cuTensorMapEncodeTiled(%s, pages=%d) FAILED: CUresult %d (%s) -> variant skipped\n",
           kVariantName[variant], num_pages, (int)r, cu_err_name(r));
    fflush(stdout);
    return false;
  }
  return true;
}

// ----------------------------------------------------------------------------------------
// host: timing helpers
// ----------------------------------------------------------------------------------------
struct Ctx {
  int num_sms;
  int4* flush_buf;
  size_t flush_n16;
  uint32_t* sink;
  int* err;
  cudaEvent_t ev0, ev1;
};

static void flush_l2(const Ctx& c) {
  read_kernel<<<c.num_sms * 8, 256>>>(c.flush_buf, c.flush_n16, c.sink);
  CK_LAUNCH();
}

constexpr int WARMUP = 3;
constexpr int REPS = 20;

// runs launch() WARMUP + REPS times, each preceded by an (untimed) L2 flush; returns median us
template <typename F>
static double time_median_us(const Ctx& c, F launch) {
  std::vector<float> t;
  for (int i = 0; i < WARMUP + REPS; ++i) {
    flush_l2(c);
    CK(cudaEventRecord(c.ev0));
    launch();
    CK(cudaEventRecord(c.ev1));
    CK(cudaEventSynchronize(c.ev1));
    float ms = 0.f;
    CK(cudaEventElapsedTime(&ms, c.ev0, c.ev1));
    if (i >= WARMUP) t.push_back(ms * 1000.f);
    int h = 0;  // device-side mbarrier timeout flag: stop at once instead of 23 x ~1 s
    CK(cudaMemcpy(&h, c.err, sizeof(int), cudaMemcpyDeviceToHost));
    if (h) return -1.0;
  }
  std::sort(t.begin(), t.end());
  return 0.5 * (t[REPS / 2 - 1] + t[REPS / 2]);
}

static bool check_and_clear_err(const Ctx& c) {
  int h = 0;
  CK(cudaMemcpy(&h, c.err, sizeof(int), cudaMemcpyDeviceToHost));
  if (h) CK(cudaMemset(c.err, 0, sizeof(int)));
  return h != 0;
}

// ----------------------------------------------------------------------------------------
// host: correctness test (one page, compare slots)
// ----------------------------------------------------------------------------------------
static inline uint32_t swz128(uint32_t off) {  // SWIZZLE_128B on a 1024-B aligned base
  return off ^ (((off >> 7) & 7u) << 4);
}

// expected smem byte image of `page` for a layout: 0 = A/B2 ([chunk][token][64]),
// 1 = B ([group8][chunk][token%8][64]), 2 = raw (C, no swizzle)
static std::vector<uint8_t> expected_image(const std::vector<uint16_t>& host, int page, int layout) {
  std::vector<uint8_t> img(PAGE_BYTES, 0);
  for (int t = 0; t < TOKENS; ++t)
    for (int col = 0; col < DIM; ++col) {
      const uint16_t v = host[(static_cast<size_t>(page) * TOKENS + t) * DIM + col];
      const int c = col / 64, b = (col % 64) * 2;
      uint32_t off;
      if (layout == 0)
        off = swz128(c * CHUNK_BYTES + t * 128 + b);
      else if (layout == 1)
        off = swz128(((t / 8) * NCHUNK + c) * 1024 + (t % 8) * 128 + b);
      else
        off = t * ROW_BYTES + col * 2;
      memcpy(&img[off], &v, 2);
    }
  return img;
}

static long first_mismatch(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return static_cast<long>(i);
  return -1;
}

static void print_match(const char* what, long mm) {
  if (mm < 0)
    printf("%s: yes\n", what);
  else
    printf("%s: no (first mismatch at byte %ld)\n", what, mm);
}

struct TestBufs {
  uint8_t* dkv;
  uint8_t* dout;
  int pages;
  int page;
  std::vector<uint16_t> host;
};

// returns the landed slot image (empty vector if map rejected or timeout)
static std::vector<uint8_t> run_test_variant(const Ctx& c, TestBufs& tb, int variant) {
  CUtensorMap m;
  if (!make_map(variant, tb.dkv, tb.pages, &m)) return {};
  CK(cudaMemset(tb.dout, 0xA5, PAGE_BYTES));
  tma_test_kernel<<<1, THREADS, PAGE_BYTES + 1024>>>(m, tb.dkv, tb.page, variant, tb.dout, c.err);
  CK_LAUNCH();
  CK(cudaDeviceSynchronize());
  if (check_and_clear_err(c)) {
    printf("# test %s: TIMEOUT waiting for the mbarrier (tx bytes never completed)\n",
           kVariantName[variant]);
    return {};
  }
  std::vector<uint8_t> img(PAGE_BYTES);
  CK(cudaMemcpy(img.data(), tb.dout, PAGE_BYTES, cudaMemcpyDeviceToHost));
  return img;
}

// ----------------------------------------------------------------------------------------
// main
// ----------------------------------------------------------------------------------------
int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  int clk_khz = 0, memclk_khz = 0, busw = 0;
  CK(cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, dev));
  CK(cudaDeviceGetAttribute(&memclk_khz, cudaDevAttrMemoryClockRate, dev));
  CK(cudaDeviceGetAttribute(&busw, cudaDevAttrGlobalMemoryBusWidth, dev));
  printf("# device: %s (sm_%d%d), %d SMs, SM clock (peak attr) %.0f MHz, mem clock %.0f MHz x %d bit"
         " -> 2*clk*width = %.0f GB/s, L2 %.1f MB, smem optin/block %zu B\n",
         prop.name, prop.major, prop.minor, prop.multiProcessorCount, clk_khz / 1000.0,
         memclk_khz / 1000.0, busw, 2.0 * memclk_khz * 1e3 * (busw / 8) / 1e9,
         prop.l2CacheSize / 1048576.0, (size_t)prop.sharedMemPerBlockOptin);
  if (prop.major != 9) {
    fprintf(stderr, "needs an sm_90 (Hopper) GPU\n");
    return 1;
  }
  if (prop.sharedMemPerBlockOptin < (size_t)SMEM_DYN_BYTES + 4096) {
    fprintf(stderr, "not enough opt-in smem: %zu < %d\n", (size_t)prop.sharedMemPerBlockOptin,
            SMEM_DYN_BYTES + 4096);
    return 1;
  }
  load_driver_entry_points();

  double* d_mhz = nullptr;
  CK(cudaMalloc(&d_mhz, sizeof(double)));
  auto measure_clock = [&](const char* when) {
    double mhz = 0;
    clock_kernel<<<1, 32>>>(20 * 1000 * 1000, d_mhz);  // 20 ms
    CK_LAUNCH();
    CK(cudaMemcpy(&mhz, d_mhz, sizeof(double), cudaMemcpyDeviceToHost));
    printf("# measured SM clock (%s): %.0f MHz\n", when, mhz);
  };
  measure_clock("start, idle");

  CK(cudaFuncSetAttribute(stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_DYN_BYTES));
  CK(cudaFuncSetAttribute(tma_test_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          PAGE_BYTES + 1024));

  Ctx c;
  c.num_sms = prop.multiProcessorCount;
  const size_t flush_bytes = 256ull << 20;
  CK(cudaMalloc(&c.flush_buf, flush_bytes));
  CK(cudaMemset(c.flush_buf, 0x11, flush_bytes));
  c.flush_n16 = flush_bytes / 16;
  CK(cudaMalloc(&c.sink, sizeof(uint32_t) * 1024 * 1024));
  CK(cudaMalloc(&c.err, sizeof(int)));
  CK(cudaMemset(c.err, 0, sizeof(int)));
  CK(cudaEventCreate(&c.ev0));
  CK(cudaEventCreate(&c.ev1));

  const int P_LARGE = 32768, P_SKEW = 832;
  const size_t kv_bytes = static_cast<size_t>(P_LARGE) * PAGE_BYTES;  // 2.4 GB
  uint8_t* kv = nullptr;
  uint8_t* kv_dst = nullptr;  // memcpy destination for R1
  CK(cudaMalloc(&kv, kv_bytes));
  CK(cudaMalloc(&kv_dst, kv_bytes));
  CK(cudaMemset(kv, 0x3C, kv_bytes));
  CK(cudaMemset(kv_dst, 0, kv_bytes));

  // page lists: random permutations (fixed seed)
  struct Size { const char* name; int pages; int* dlist; };
  Size sizes[2] = {{"large", P_LARGE, nullptr}, {"skewed", P_SKEW, nullptr}};
  for (auto& sz : sizes) {
    std::vector<int> perm(sz.pages);
    for (int i = 0; i < sz.pages; ++i) perm[i] = i;
    std::mt19937 rng(12345u + sz.pages);
    std::shuffle(perm.begin(), perm.end(), rng);
    CK(cudaMalloc(&sz.dlist, sizeof(int) * sz.pages));
    CK(cudaMemcpy(sz.dlist, perm.data(), sizeof(int) * sz.pages, cudaMemcpyHostToDevice));
  }
  CK(cudaDeviceSynchronize());

  // ---------------- references ----------------
  printf("# references (L2 flushed before each rep; median of %d)\n", REPS);
  printf("# name pages median_us GB/s(rd+wr) GB/s(rd-only-equiv)   [R1]\n");
  printf("# name pages median_us GB/s                               [R2]\n");
  for (auto& sz : sizes) {
    const size_t bytes = static_cast<size_t>(sz.pages) * PAGE_BYTES;
    double us = time_median_us(c, [&] {
      CK(cudaMemcpyAsync(kv_dst, kv, bytes, cudaMemcpyDeviceToDevice));
    });
    printf("R1_memcpy_d2d %d %.2f %.1f %.1f\n", sz.pages, us, 2.0 * bytes / us / 1e3,
           bytes / us / 1e3);
    us = time_median_us(c, [&] {
      read_kernel<<<c.num_sms * 8, 256>>>(reinterpret_cast<const int4*>(kv), bytes / 16, c.sink);
      CK_LAUNCH();
    });
    printf("R2_read_kernel %d %.2f %.1f\n", sz.pages, us, bytes / us / 1e3);
  }

  // ---------------- correctness test buffer ----------------
  TestBufs tb;
  tb.pages = 4;
  tb.page = 2;
  tb.host.resize(static_cast<size_t>(tb.pages) * TOKENS * DIM);
  for (int p = 0; p < tb.pages; ++p)
    for (int t = 0; t < TOKENS; ++t)
      for (int col = 0; col < DIM; ++col)
        tb.host[(static_cast<size_t>(p) * TOKENS + t) * DIM + col] =
            static_cast<uint16_t>(((t * DIM + col) + p * 40503) & 0xffff);
  CK(cudaMalloc(&tb.dkv, tb.host.size() * 2));
  CK(cudaMalloc(&tb.dout, PAGE_BYTES));
  CK(cudaMemcpy(tb.dkv, tb.host.data(), tb.host.size() * 2, cudaMemcpyHostToDevice));
  const std::vector<uint8_t> expA = expected_image(tb.host, tb.page, 0);
  const std::vector<uint8_t> expB = expected_image(tb.host, tb.page, 1);
  const std::vector<uint8_t> expC = expected_image(tb.host, tb.page, 2);

  // ---------------- benchmark ----------------
  // Order: the well-trodden variants (A, C) first, the 4-D boxes (B, B2) last, so that a
  // fault in an untested geometry cannot cost the reference / A / C numbers.
  bool broken[NUM_VARIANTS] = {false, false, false, false};
  std::vector<uint8_t> imgA;

  auto bench_variant = [&](int v) {
    for (auto& sz : sizes) {
      CUtensorMap m;
      if (broken[v]) return;
      if (!make_map(v, kv, sz.pages, &m)) { broken[v] = true; return; }
      std::vector<int> ctas_list = {c.num_sms};
      if (sz.pages == P_SKEW) ctas_list.push_back(107);
      for (int ctas : ctas_list)
        for (int stages = 1; stages <= MAX_STAGES; ++stages) {
          double us = time_median_us(c, [&] {
            stream_kernel<<<ctas, THREADS, SMEM_DYN_BYTES>>>(m, kv, sz.dlist, sz.pages, v, stages,
                                                             c.sink, c.err);
            CK_LAUNCH();
          });
          if (check_and_clear_err(c)) {
            printf("%s %d %d %d TIMEOUT (mbarrier wait exceeded ~1s; variant abandoned)\n",
                   kVariantName[v], stages, ctas, sz.pages);
            broken[v] = true;
            return;
          }
          printf("%s %d %d %d %.2f %.1f\n", kVariantName[v], stages, ctas, sz.pages, us,
                 static_cast<double>(sz.pages) * PAGE_BYTES / us / 1e3);
        }
    }
  };

  printf("# correctness: page %d of a 4-page patterned buffer, one slot per variant\n", tb.page);
  imgA = run_test_variant(c, tb, V_A);
  if (!imgA.empty()) {
    print_match("A matches expected SWIZZLE_128B [chunk][token][64] image", first_mismatch(imgA, expA));
  }
  {
    std::vector<uint8_t> imgC = run_test_variant(c, tb, V_C);
    if (!imgC.empty()) print_match("C matches raw page bytes", first_mismatch(imgC, expC));
  }

  printf("# variant stages ctas pages median_us GB/s\n");
  bench_variant(V_A);
  bench_variant(V_C);

  {
    std::vector<uint8_t> imgB = run_test_variant(c, tb, V_B);
    if (imgB.empty()) {
      printf("B matches A: no (B did not run: map rejected or timeout)\n");
    } else {
      print_match("B matches A", imgA.empty() ? 0 : first_mismatch(imgB, imgA));
      print_match("B matches its own expected [group8][chunk][token%8][64] image (1024-B blocks permuted vs A)",
                  first_mismatch(imgB, expB));
    }
    std::vector<uint8_t> imgB2 = run_test_variant(c, tb, V_B2);
    if (imgB2.empty()) {
      printf("B2 matches A: no (B2 did not run: map rejected or timeout)\n");
    } else {
      print_match("B2 matches A", imgA.empty() ? 0 : first_mismatch(imgB2, imgA));
    }
  }
  printf("# variant stages ctas pages median_us GB/s\n");
  bench_variant(V_B);
  bench_variant(V_B2);

  CK(cudaDeviceSynchronize());
  measure_clock("end");
  printf("# done\n");
  return 0;
}
