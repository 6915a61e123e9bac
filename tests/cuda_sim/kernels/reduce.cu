// Row sums: the block tree reduction the project's kernels are built from
// (per-thread partial sums, warp shuffles, shared memory, __syncthreads),
// plus a copy with one __syncthreads missing that the schedules must expose.

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = warpSize / 2; offset > 0; offset /= 2) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    return v;
}

// Sums row `row` of x into the block: lane 0 of each warp parks its warp's sum in
// `partial`, warp 0 adds those up. Returns the total in thread 0.
template <bool kSyncBeforeReading>
__device__ float block_row_sum(const float* x, long long row, long long cols, float* partial) {
    float acc = 0.0f;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
        acc += x[row * cols + c];
    }
    acc = warp_sum(acc);
    const int lane = threadIdx.x % warpSize;
    const int warp = threadIdx.x / warpSize;
    if (lane == 0) {
        partial[warp] = acc;
    }
    if (kSyncBeforeReading) {
        __syncthreads();
    }
    float total = 0.0f;
    if (warp == 0) {
        const int nwarps = (blockDim.x + warpSize - 1) / warpSize;
        total = warp_sum(lane < nwarps ? partial[lane] : 0.0f);
    }
    __syncthreads();  // `partial` is reused for the next row
    return total;
}

// Grid-stride over rows, so any grid size covers any number of rows.
extern "C" __global__ void row_sum(const float* x, float* out, long long rows, long long cols) {
    __shared__ float partial[32];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float total = block_row_sum<true>(x, row, cols, partial);
        if (threadIdx.x == 0) {
            out[row] = total;
        }
    }
}

// The bug: warp 0 reads `partial` without waiting for the other warps to write it.
extern "C" __global__ void row_sum_racy(const float* x, float* out, long long rows, long long cols) {
    __shared__ float partial[32];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float total = block_row_sum<false>(x, row, cols, partial);
        if (threadIdx.x == 0) {
            out[row] = total;
        }
    }
}

// The same with the warp sums in dynamic shared memory (launch with shared_mem >= 32 floats),
// declared the plain CUDA way ...
extern "C" __global__ void row_sum_extern_shared(const float* x, float* out, long long rows, long long cols) {
    extern __shared__ float dynamic_partial[];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float total = block_row_sum<true>(x, row, cols, dynamic_partial);
        if (threadIdx.x == 0) {
            out[row] = total;
        }
    }
}

// ... and the way a project header can provide it, by a macro that knows the build.
#ifdef KLDIV_CUDA_SIM
#define DYNAMIC_SHARED(T) (static_cast<T*>(cudasim_dynamic_shared()))
#else
extern __shared__ unsigned char dynamic_shared_[];
#define DYNAMIC_SHARED(T) (reinterpret_cast<T*>(dynamic_shared_))
#endif

extern "C" __global__ void row_sum_macro_shared(const float* x, float* out, long long rows, long long cols) {
    float* partial = DYNAMIC_SHARED(float);
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float total = block_row_sum<true>(x, row, cols, partial);
        if (threadIdx.x == 0) {
            out[row] = total;
        }
    }
}
