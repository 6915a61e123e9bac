// What every kernel of kldiv shares: the accumulator type of each input dtype, loads and
// stores through it, float/double overloads of the math, and the warp and block reductions.
//
// The same source is compiled by NVRTC (through cupy.RawModule) and, in the tests, by g++
// against tests/cuda_sim/cuda_sim.h, so it sticks to what both understand: no <math.h>
// macros (NVRTC has none), no CUDA bit-cast intrinsics (the simulator has none).
#pragma once

#include <cuda_fp16.h>

// The launcher passes its block-size limit in, so that the Python side and the
// __launch_bounds__ of every kernel cannot disagree.
#ifndef KLDIV_MAX_BLOCK_THREADS
#error "compile with -DKLDIV_MAX_BLOCK_THREADS=<the launcher's largest block>"
#endif

namespace kldiv {

const int kWarpSize = 32;
const unsigned kFullWarp = 0xffffffffu;

// The arithmetic type of each input dtype: float16 and float32 entries are computed in
// float32, float64 in double. Every sum over a row is a `Wide` (double) whatever the input,
// as on the NumPy path (its compiled kernels compute float32 terms and sum them in float64).
template <class T>
struct Accumulator {
  typedef float type;
};
template <>
struct Accumulator<double> {
  typedef double type;
};
typedef double Wide;

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// Overloads, so that one templated body picks logf for float and log for double.
__device__ __forceinline__ float log_of(float x) { return logf(x); }
__device__ __forceinline__ double log_of(double x) { return log(x); }
__device__ __forceinline__ float log1p_of(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_of(double x) { return log1p(x); }
__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }
__device__ __forceinline__ float expm1_of(float x) { return expm1f(x); }
__device__ __forceinline__ double expm1_of(double x) { return expm1(x); }
__device__ __forceinline__ float abs_of(float x) { return fabsf(x); }
__device__ __forceinline__ double abs_of(double x) { return fabs(x); }
__device__ __forceinline__ float sqrt_of(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_of(double x) { return sqrt(x); }

// The bits of +inf and of a quiet NaN, by type (no <math.h> macros under NVRTC).
template <class A>
struct Bits;
template <>
struct Bits<float> {
  typedef unsigned int type;
  static constexpr type kInfinity = 0x7f800000u, kQuietNan = 0x7fc00000u;
};
template <>
struct Bits<double> {
  typedef unsigned long long type;
  static constexpr type kInfinity = 0x7ff0000000000000ull, kQuietNan = 0x7ff8000000000000ull;
};
template <class A>
__device__ __forceinline__ A infinity() {
  return __builtin_bit_cast(A, Bits<A>::kInfinity);
}
template <class A>
__device__ __forceinline__ A quiet_nan() {
  return __builtin_bit_cast(A, Bits<A>::kQuietNan);
}

// x - y as the nearest float and, in *err, its exact rounding error (Knuth's TwoSum).
template <class A>
__device__ __forceinline__ A two_diff(A x, A y, A* err) {
  const A s = x - y;
  const A y_part = s - x;
  *err = (x - (s - y_part)) + (-y - y_part);
  return s;
}

// sum + *err += x, *err gaining the exact rounding error of sum + x (TwoSum).
__device__ __forceinline__ void two_sum(Wide* sum, Wide* err, Wide x) {
  const Wide s = *sum + x;
  const Wide x_part = s - *sum;
  *err += (*sum - (s - x_part)) + (x - x_part);
  *sum = s;
}

// The polynomial c[0] + c[1]*x + ... + c[N-1]*x**(N-1), by Horner's rule.
template <class A, int N>
__device__ __forceinline__ A horner(A x, const A (&c)[N]) {
  A r = c[N - 1];
#pragma unroll
  for (int k = N - 2; k >= 0; k--) r = r * x + c[k];
  return r;
}

// A reduction state (TermSum, LogSumExp, LogitKl, the loss's TermsAndMass) is a plain struct:
//   static State identity();  static State merge(const State&, const State&);
//   State shfl_xor(int lane_mask) const;  (the state of lane ^ lane_mask)
// It stays trivially constructible, as a __shared__ variable must be.

// Butterfly: every lane ends with the merge of all 32 lanes.
template <class State>
__device__ __forceinline__ State warp_reduce(State s) {
  for (int mask = kWarpSize / 2; mask > 0; mask /= 2) {
    s = State::merge(s, s.shfl_xor(mask));
  }
  return s;
}

// The threads that share one row: a warp (short rows, several rows per block) or the whole
// block (long rows). `first` is the group's first row and `step` the distance to its next.
struct RowGroup {
  long long first;
  long long step;
  int lane;
  int size;
  int index;  // of the group within its block
  bool is_warp;
};

__device__ __forceinline__ RowGroup row_group(int warp_per_row) {
  RowGroup g;
  g.is_warp = warp_per_row != 0;
  if (g.is_warp) {
    const int warps = blockDim.x / kWarpSize;
    g.index = threadIdx.x / kWarpSize;
    g.first = static_cast<long long>(blockIdx.x) * warps + g.index;
    g.step = static_cast<long long>(gridDim.x) * warps;
    g.lane = threadIdx.x % kWarpSize;
    g.size = kWarpSize;
  } else {
    g.index = 0;
    g.first = blockIdx.x;
    g.step = gridDim.x;
    g.lane = threadIdx.x;
    g.size = blockDim.x;
  }
  return g;
}

// Merges the states of a row group and hands the result to every thread of the group.
// A block group parks one state per warp in shared memory; every thread of the block must
// call this (block sizes are multiples of the warp size, so every warp is full).
template <class State>
__device__ State group_reduce(State s, const RowGroup& g) {
  __shared__ State per_warp[KLDIV_MAX_BLOCK_THREADS / kWarpSize];
  s = warp_reduce(s);
  if (g.is_warp) {
    return s;
  }
  const int lane = threadIdx.x % kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  if (lane == 0) {
    per_warp[threadIdx.x / kWarpSize] = s;
  }
  __syncthreads();
  s = lane < warps ? per_warp[lane] : State::identity();
  s = warp_reduce(s);
  __syncthreads();  // per_warp is written again by the group's next reduction
  return s;
}

}  // namespace kldiv
