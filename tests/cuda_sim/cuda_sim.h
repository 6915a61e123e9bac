// cuda_sim.h: CUDA's execution model on the CPU, so that unchanged CUDA C kernel
// sources can be compiled with g++ and tested without a GPU.
//
// harness.py force-includes this header (g++ -include) ahead of the kernel source and
// compiles the whole module as one translation unit. README.md lists what is and is
// not emulated. In short: every block runs on its own set of OS threads (one per CUDA
// thread), blocks run one after another, __syncthreads() is a block barrier, warp
// shuffles exchange values between the 32 lanes of a warp, shared memory is poisoned
// with 0xFF bytes (NaN) before each block, and a launch either lets its threads run
// freely or serialises them in a chosen order that switches only at sync points.
#pragma once

// Lets a shared project header tell this build from an NVRTC build.
#define KLDIV_CUDA_SIM 1

// <math.h> rather than <cmath>: device code calls logf, log1p, isnan, ... unqualified,
// and libstdc++'s <math.h> also brings the float overloads (log(float)) to global scope.
#include <math.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------- CUDA keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// A block-scope static is the one copy that all threads of the running block share
// (blocks run one at a time). harness.py links every zero-initialised function-local
// static of the module into one region, cudasim_shared_begin..cudasim_shared_end,
// which run_grid() poisons before each block; `used` keeps g++ from folding reads of
// a static that no code writes to 0. `extern __shared__ T name[];` expands to the
// ill-formed `extern static ...`: harness.py rewrites exactly that token sequence in
// the preprocessed source back to `extern` and binds `name` to cudasim_dyn_smem.
#define __shared__ static __attribute__((used))

// ---------------------------------------------------------------- built-in variables
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
};
inline thread_local uint3 threadIdx;
inline uint3 blockIdx;  // blocks run one at a time, so these need not be per thread
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// Dynamic shared memory (the launch's shared_mem bytes). 48 KiB is the most a launch
// may request without opting in, and harness.py rejects more. A definition in a
// header: the harness builds each module as a single translation unit.
extern "C" {
alignas(16) unsigned char cudasim_dyn_smem[48 * 1024];
extern char cudasim_shared_begin[], cudasim_shared_end[];  // from harness.py's linker script
}
inline void* cudasim_dynamic_shared() { return cudasim_dyn_smem; }

namespace cudasim {

enum Schedule : int { kFree = 0, kForward = 1, kReverse = 2, kRandom = 3 };

// Field for field the same as harness.py's _LaunchConfig.
struct LaunchConfig {
  unsigned int grid[3];
  unsigned int block[3];
  int schedule;
  unsigned long long seed;
};

// Thrown to unwind a kernel thread once its block has failed.
struct Abort {};

// splitmix64: tiny and fully specified, so a seed gives the same order everywhere.
inline std::uint64_t next_random(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Block;
inline thread_local Block* tl_block = nullptr;  // the calling kernel thread's block
inline thread_local int tl_tid = 0;             // ... and its linear thread id

// One thread block: its OS threads and the barriers they meet at. All state is
// guarded by m_. A thread is runnable, parked at a barrier, or exited.
//
// Serial schedules pass a token: only its holder runs. The scheduler walks the
// schedule's order and gives each runnable thread one turn, which lasts until the
// thread reaches a sync point (__syncthreads, a warp shuffle, __syncwarp) or exits.
// Once the order is exhausted a new round starts from its beginning, reshuffled for
// "random". For a kernel synchronised by __syncthreads alone a round is exactly the
// code between two barriers, run thread by thread in schedule order.
class Block {
 public:
  Block(int nthreads, Schedule schedule, std::uint64_t& rng)
      : n_(nthreads), schedule_(schedule), rng_(rng), threads_(new Thread[nthreads]),
        warps_((nthreads + 31) / 32), live_(nthreads), order_(nthreads) {
    for (int t = 0; t < n_; ++t) warps_[t / 32].live |= 1u << (t % 32);
    std::iota(order_.begin(), order_.end(), 0);
    if (schedule_ == kReverse) std::reverse(order_.begin(), order_.end());
    if (schedule_ == kRandom) shuffle_order();
    token_ = order_[0];
  }

  // Runs the block to completion; returns "" or what went wrong.
  std::string run(const std::function<void()>& kernel) {
    std::vector<std::thread> threads;
    threads.reserve(n_);
    try {
      for (int t = 0; t < n_; ++t) threads.emplace_back(&Block::thread_main, this, t, std::cref(kernel));
    } catch (const std::system_error& e) {  // the OS refused a thread: unwind the started ones
      std::lock_guard<std::mutex> lock(m_);
      fail(std::string("cannot start a block thread: ") + e.what());
    }
    for (auto& t : threads) t.join();
    return error_;
  }

  void sync_threads() {
    std::unique_lock<std::mutex> lock(m_);
    if (failed_) throw Abort{};
    park_as(kAtBlockBarrier);
    if (++at_block_barrier_ == live_) release_block_barrier();
    wait_turn(lock);
  }

  // A warp-level rendezvous: the calling lane offers `value` and receives the value
  // that lane src_lane offered. It completes once every live lane named in any
  // participant's mask has arrived, so it is also the barrier behind __syncwarp.
  std::uint64_t warp_exchange(unsigned mask, std::uint64_t value, int src_lane) {
    std::unique_lock<std::mutex> lock(m_);
    if (failed_) throw Abort{};
    const int lane = tl_tid % 32;
    Warp& w = warps_[tl_tid / 32];
    if (!(mask >> lane & 1u)) {
      fail("thread " + std::to_string(tl_tid) + " passed a warp mask that excludes its own lane");
      throw Abort{};
    }
    w.arrived |= 1u << lane;
    w.wanted |= mask;
    w.value[lane] = value;
    w.src[lane] = src_lane;
    park_as(kAtWarpBarrier);
    maybe_release_warp(w);
    wait_turn(lock);
    return w.result[lane];
  }

 private:
  enum State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kExited };
  struct Thread {
    std::condition_variable cv;
    State state = kRunnable;
  };
  struct Warp {
    unsigned live = 0, arrived = 0, wanted = 0;  // lane bit masks
    std::uint64_t value[32] = {}, result[32] = {};
    int src[32] = {};
  };

  void thread_main(int tid, const std::function<void()>& kernel) {
    tl_block = this;
    tl_tid = tid;
    const unsigned t = tid;
    threadIdx = {t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y)};
    std::string error;
    try {
      {
        std::unique_lock<std::mutex> lock(m_);
        threads_[tid].cv.wait(lock, [&] { return failed_ || schedule_ == kFree || token_ == tid; });
        if (failed_) throw Abort{};
      }
      kernel();
    } catch (const Abort&) {
    } catch (const std::exception& e) {
      error = "thread " + std::to_string(tid) + " threw: " + e.what();
    }
    std::lock_guard<std::mutex> lock(m_);
    if (!error.empty()) fail(error);
    exit_thread(tid);
  }

  void exit_thread(int tid) {
    threads_[tid].state = kExited;
    --live_;
    Warp& w = warps_[tid / 32];
    w.live &= ~(1u << (tid % 32));
    if (failed_) return;
    // A returned thread no longer holds up a barrier: what GPUs do with early-return
    // code, though CUDA leaves a __syncthreads() that not all threads reach undefined.
    if (at_block_barrier_ > 0 && at_block_barrier_ == live_) release_block_barrier();
    maybe_release_warp(w);
    if (live_ > 0 && waiting_ == live_) return fail(deadlock_message());
    if (schedule_ != kFree) pass_token();
  }

  void park_as(State state) {
    threads_[tl_tid].state = state;
    ++waiting_;
  }

  void wake(int tid) {
    threads_[tid].state = kRunnable;
    --waiting_;
    if (schedule_ == kFree) threads_[tid].cv.notify_one();
  }

  // Blocks the calling thread until it is released from its barrier and, in a
  // serial schedule, until it holds the token again.
  void wait_turn(std::unique_lock<std::mutex>& lock) {
    if (waiting_ == live_) {
      fail(deadlock_message());
    } else if (schedule_ != kFree) {
      pass_token();
    }
    Thread& me = threads_[tl_tid];
    me.cv.wait(lock, [&] {
      return failed_ || (me.state == kRunnable && (schedule_ == kFree || token_ == tl_tid));
    });
    if (failed_) throw Abort{};
  }

  void release_block_barrier() {
    for (int t = 0; t < n_; ++t) {
      if (threads_[t].state == kAtBlockBarrier) wake(t);
    }
    at_block_barrier_ = 0;
  }

  void maybe_release_warp(Warp& w) {
    if (w.arrived == 0 || (w.wanted & w.live & ~w.arrived) != 0) return;
    const int first = static_cast<int>(&w - warps_.data()) * 32;
    for (int lane = 0; lane < 32; ++lane) {
      if (!(w.arrived >> lane & 1u)) continue;
      const int src = w.src[lane];
      // Reading a lane that takes no part is undefined in CUDA: hand out the poison
      // pattern (NaN for floating point) rather than a plausible value.
      const bool ok = src >= 0 && src < 32 && (w.arrived >> src & 1u);
      w.result[lane] = ok ? w.value[src] : ~std::uint64_t{0};
      wake(first + lane);
    }
    w.arrived = w.wanted = 0;
  }

  // Gives the token to the next runnable thread of this round, starting a new round
  // at the end of the order. Callers have checked that a runnable thread exists
  // unless every thread has exited, so this terminates.
  void pass_token() {
    for (;;) {
      while (++pos_ < n_) {
        const int t = order_[pos_];
        if (threads_[t].state == kRunnable) {
          token_ = t;
          threads_[t].cv.notify_one();
          return;
        }
      }
      if (live_ == 0) return;
      pos_ = -1;
      if (schedule_ == kRandom) shuffle_order();
    }
  }

  void shuffle_order() {  // Fisher-Yates
    for (int i = n_ - 1; i > 0; --i) std::swap(order_[i], order_[next_random(rng_) % (i + 1)]);
  }

  std::string deadlock_message() const {
    int at_warp = waiting_ - at_block_barrier_;
    return "deadlock: all " + std::to_string(live_) + " live threads wait at barriers that cannot complete (" +
           std::to_string(at_block_barrier_) + " at __syncthreads, " + std::to_string(at_warp) +
           " at warp sync points)";
  }

  void fail(std::string message) {
    if (failed_) return;
    failed_ = true;
    error_ = std::move(message);
    for (int t = 0; t < n_; ++t) threads_[t].cv.notify_one();
  }

  const int n_;
  const Schedule schedule_;
  std::uint64_t& rng_;
  std::mutex m_;
  std::unique_ptr<Thread[]> threads_;
  std::vector<Warp> warps_;
  int live_;                   // threads not yet exited
  int waiting_ = 0;            // threads parked at a barrier
  int at_block_barrier_ = 0;   // ... of which at __syncthreads
  std::vector<int> order_;     // serial schedules: the order of this round
  int pos_ = 0;                // ... and the position of the token holder in it
  int token_ = 0;
  bool failed_ = false;
  std::string error_;
};

// One launch at a time per module: blockIdx, gridDim and shared memory are per module.
inline std::mutex launch_mutex;

inline std::string run_grid(const LaunchConfig& c, const std::function<void()>& kernel) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  gridDim = {c.grid[0], c.grid[1], c.grid[2]};
  blockDim = {c.block[0], c.block[1], c.block[2]};
  const int nthreads = static_cast<int>(c.block[0] * c.block[1] * c.block[2]);
  std::uint64_t rng = c.seed;
  for (unsigned z = 0; z < c.grid[2]; ++z) {
    for (unsigned y = 0; y < c.grid[1]; ++y) {
      for (unsigned x = 0; x < c.grid[0]; ++x) {
        blockIdx = {x, y, z};
        std::memset(cudasim_shared_begin, 0xFF, cudasim_shared_end - cudasim_shared_begin);
        std::string error = Block(nthreads, static_cast<Schedule>(c.schedule), rng).run(kernel);
        if (!error.empty()) {
          return "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "): " + error;
        }
      }
    }
  }
  return {};
}

// Called by the per-kernel wrappers that harness.py generates. cuLaunchKernel copies
// sizeof(parameter) bytes from args[i], whatever the caller stored there; so does
// this. A Python float, which CuPy stores as an 8-byte double, read by a float
// parameter yields the double's low 4 bytes: reproduced, not converted.
template <class... P>
int launch(void (*kernel)(P...), const LaunchConfig* config, void** args, int nargs, char* error,
           unsigned long error_size) {
  static_assert((std::is_trivially_copyable_v<P> && ...), "kernel parameters are copied bytewise");
  std::string message;
  if (nargs != static_cast<int>(sizeof...(P))) {
    // CUDA would read past the argument array; fail loudly instead.
    message = "the kernel takes " + std::to_string(sizeof...(P)) + " arguments, got " + std::to_string(nargs);
  } else {
    std::tuple<P...> params;
    int i = 0;
    std::apply([&](auto&... p) { (std::memcpy(&p, args[i++], sizeof p), ...); }, params);
    message = run_grid(*config, [&] { std::apply(kernel, params); });
  }
  std::snprintf(error, error_size, "%s", message.c_str());
  return message.empty() ? 0 : 1;
}

template <class T>
T warp_shuffle(unsigned mask, T var, int src_lane) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move up to 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = tl_block->warp_exchange(mask, bits, src_lane);
  std::memcpy(&var, &bits, sizeof(T));
  return var;
}

inline int lane_id() { return tl_tid % warpSize; }

template <class T>
T atomic_add(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_add(val);
}

}  // namespace cudasim

// ---------------------------------------------------------------- synchronisation
inline void __syncthreads() { cudasim::tl_block->sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cudasim::warp_shuffle(mask, 0, cudasim::lane_id()); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Source lanes as the CUDA C Programming Guide defines them; width splits the warp
// into segments of `width` lanes (a power of two up to 32).
template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  const int lane = cudasim::lane_id();
  return cudasim::warp_shuffle(mask, var, lane - lane % width + (src_lane & (width - 1)));
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const int lane = cudasim::lane_id();
  return cudasim::warp_shuffle(mask, var, lane % width >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const int lane = cudasim::lane_id();
  return cudasim::warp_shuffle(mask, var, lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  const int lane = cudasim::lane_id();
  const int src = lane ^ lane_mask;  // a lane of a later segment reads its own value
  return cudasim::warp_shuffle(mask, var, src >= lane - lane % width + width ? lane : src);
}

// ---------------------------------------------------------------- atomics
inline int atomicAdd(int* address, int val) { return cudasim::atomic_add(address, val); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int val) { return cudasim::atomic_add(address, val); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long val) {
  return cudasim::atomic_add(address, val);
}
inline float atomicAdd(float* address, float val) { return cudasim::atomic_add(address, val); }
inline double atomicAdd(double* address, double val) { return cudasim::atomic_add(address, val); }

// ---------------------------------------------------------------- device math
// <math.h> supplies the standard functions. glibc declares __expf and __logf (with C
// linkage) without exporting them, so define CUDA's fast intrinsics under that linkage.
extern "C" inline float __expf(float x) noexcept { return expf(x); }
extern "C" inline float __logf(float x) noexcept { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

// CUDA's min/max accept mixed argument types; floating point ones ignore a NaN like fmin/fmax.
template <class A, class B>
auto min(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) {
    return fmin(T(a), T(b));
  } else {
    return T(b) < T(a) ? T(b) : T(a);
  }
}
template <class A, class B>
auto max(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) {
    return fmax(T(a), T(b));
  } else {
    return T(a) < T(b) ? T(b) : T(a);
  }
}

// ---------------------------------------------------------------- cuda_fp16.h
// GCC's _Float16 is IEEE binary16 with the same layout as CUDA's __half. CUDA's __half
// is a class with the same conversions and arithmetic; a few overload resolutions differ.
using __half = _Float16;
using half = __half;
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half(float f) { return static_cast<__half>(f); }  // round to nearest even, as CUDA
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }
