// Shared-memory poisoning and atomics.

template <typename T>
__device__ T read_unwritten(unsigned i) {
    __shared__ T in_template[64];  // statics in templates need the harness's linker script
    return in_template[i];
}

// Each thread reads shared memory nobody wrote (expect the 0xFF poison), then the
// block writes it all, which the next block must not see: poisoning is per block.
// Launch with blockDim.x <= 64 and shared_mem >= blockDim.x * sizeof(float).
extern "C" __global__ void read_unwritten_shared(float* out_float, double* out_double,
                                                 float* out_dynamic, float* out_template) {
    __shared__ float f[64];
    __shared__ double d[64];
    extern __shared__ float dynamic[];
    const unsigned t = threadIdx.x;
    const unsigned i = blockIdx.x * blockDim.x + t;
    out_float[i] = f[t];
    out_double[i] = d[t];
    out_dynamic[i] = dynamic[t];
    out_template[i] = read_unwritten<float>(t);
    __syncthreads();
    f[t] = 1.0f;
    d[t] = 1.0;
    dynamic[t] = 1.0f;
}

// Every thread adds to each counter and keeps the ticket atomicAdd returned.
extern "C" __global__ void count(int* i32, unsigned int* u32, unsigned long long* u64,
                                 float* f32, double* f64, int* tickets) {
    const int ticket = atomicAdd(i32, 1);
    tickets[ticket] = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(u32, 2u);
    atomicAdd(u64, 3ull);
    atomicAdd(f32, 1.0f);
    atomicAdd(f64, 0.5);
}
