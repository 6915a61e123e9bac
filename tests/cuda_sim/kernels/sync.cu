// Scheduling and synchronisation semantics.

// Threads take tickets before and after a __syncthreads(); `gaps` shows whether
// another thread ran between a thread's two consecutive atomicAdds (gap > 1).
extern "C" __global__ void record_order(int* first, int* second, int* gaps, int* counters) {
    const int t = threadIdx.x;
    const int tick = atomicAdd(&counters[2], 1);
    first[atomicAdd(&counters[0], 1)] = t;
    gaps[t] = atomicAdd(&counters[2], 1) - tick;
    __syncthreads();
    second[atomicAdd(&counters[1], 1)] = t;
}

// Lanes 0-15 of each warp shuffle with the full warp while lanes 16-31 wait at
// __syncthreads(): no barrier can ever complete.
extern "C" __global__ void deadlock(float* out) {
    float v = threadIdx.x;
    if (threadIdx.x % 32 < 16) {
        v = __shfl_down_sync(0xffffffffu, v, 1);
    }
    __syncthreads();
    out[threadIdx.x] = v;
}

// Threads at and above `active` return before the barrier the others meet at.
extern "C" __global__ void early_return(float* out, int active) {
    __shared__ float s[64];
    if (threadIdx.x >= active) {
        return;
    }
    s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[active - 1 - threadIdx.x];
}

// Each thread stores what the warp primitives give it; every lane offers its thread id.
// Rows of `out`: shfl(src 3), shfl_up(2), shfl_down(2), shfl_xor(5), all with `width`,
// then shfl_xor(1) among lanes 0-15 only (mask 0xffff), -1 for the lanes left out.
extern "C" __global__ void shuffles(float* out, int width) {
    const unsigned t = threadIdx.x;
    const unsigned n = blockDim.x;
    const float v = t;
    out[0 * n + t] = __shfl_sync(0xffffffffu, v, 3, width);
    out[1 * n + t] = __shfl_up_sync(0xffffffffu, v, 2, width);
    out[2 * n + t] = __shfl_down_sync(0xffffffffu, v, 2, width);
    out[3 * n + t] = __shfl_xor_sync(0xffffffffu, v, 5, width);
    __syncwarp();
    out[4 * n + t] = t % 32 < 16 ? __shfl_xor_sync(0x0000ffffu, v, 1) : -1.0f;
}
