// Scalar parameters, float16 and device math.
#include <cuda_fp16.h>

extern "C" __global__ void scale(const float* x, float* y, long long n, float factor) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = x[i] * factor;
    }
}

extern "C" __global__ void scale_int_n(const float* x, float* y, int n, float factor) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = x[i] * factor;
    }
}

extern "C" __global__ void scale_double(const double* x, double* y, long long n, double factor) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = x[i] * factor;
    }
}

extern "C" __global__ void half_affine(const __half* x, __half* y, float factor, float shift, long long n) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = __float2half(__half2float(x[i]) * factor + shift);
    }
}

// Row k of out_f / out_d holds function k applied to x / xd, for x in (0, 1).
extern "C" __global__ void device_math(const float* x, const double* xd, float* out_f, double* out_d,
                                       long long n) {
    const long long i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const float v = x[i];
    const double w = xd[i];
    const float f[] = {logf(v), expf(v), log1pf(v), atanhf(v), fmaxf(v, 0.5f), fminf(v, 0.5f),
                       fabs(-v), __expf(v), __logf(v), rsqrtf(v), min(v, 0.5f), max(v, 0.5f),
                       log(v), exp(v)};
    const double d[] = {log(w), exp(w), log1p(w), expm1(w), atanh(w), fabs(-w), fmax(w, 0.5)};
    for (int k = 0; k < int(sizeof f / sizeof f[0]); ++k) out_f[k * n + i] = f[k];
    for (int k = 0; k < int(sizeof d / sizeof d[0]); ++k) out_d[k * n + i] = d[k];
}

// Bit k of flags[0] says whether check k holds.
extern "C" __global__ void special_values(int* flags) {
    const float nan = NAN;
    const float inf = INFINITY;
    flags[0] = isinf(inf) | isnan(nan) << 1 | !isnan(inf) << 2 | isinf(-inf) << 3 | isnan(logf(-1.0f)) << 4 |
               (logf(0.0f) == -inf) << 5 | (fmaxf(nan, 1.0f) == 1.0f) << 6 | (max(nan, 1.0f) == 1.0f) << 7 |
               (min(-3, 2u) == 2u) << 8;
}
