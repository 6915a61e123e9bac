/* The kernels' own threads: kl_parallel(threads, pieces, run, ctx, wake) calls
 * run(ctx, i, slot) for each piece i < pieces, on the calling thread (slot 0) and up to
 * threads - 1 workers at once (slots 1 to threads - 1: a thread's own scratch, for the
 * kernels that need some), and returns when every piece is done. Included once by
 * _native.c; no GIL is held or needed.
 *
 * Why not the Python thread pool the other kernels use (kldiv/_backends/numpy/__init__.py's
 * _run): each of its pieces is a Python call, and every hand-over of the GIL between two
 * threads waits on a sleeping thread's wake-up. Measured on a 2-core VM, a float32 (64, 1000)
 * KL took 52 us on one thread and 184 us split over two that way; torch's own threads, which
 * spin a while before they sleep, took 34 us. Here the caller hands the pieces out through
 * one atomic counter and takes them itself as well, so that a worker slow to start leaves its
 * share to the caller rather than making it wait. After a job the workers spin for
 * KL_SPIN_NS (a call in a loop finds them awake, and hands them its pieces for a few
 * atomics), then sleep on a condition variable.
 *
 * Waking a sleeping worker is what costs: on that VM the caller's pthread_cond_broadcast took
 * 10-40 us, and up to 450 us right after its core had idled (the other core's vCPU halted).
 * So `wake` says when a call may pay it: 2, always (a job of a millisecond or more); 1, when
 * the last job ended under KL_RECENT_NS ago (a loop of calls: one wake, then the workers
 * spin between calls); 0, never: only workers still spinning join. A call never waits for a
 * worker that has not started a piece, so a late or sleeping one costs at most a piece.
 *
 * One job at a time: a call that finds the workers taken by another thread's job runs its
 * pieces alone. A forked child starts with no workers (pthread_atfork). Where POSIX threads
 * or C11 atomics are missing (MSVC), kl_parallel runs every piece on the calling thread. */

#if !defined(_WIN32) && !defined(__STDC_NO_ATOMICS__)
#define KL_THREADS 1
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#else
#define KL_THREADS 0
#endif

typedef void (*kl_piece_fn)(void *ctx, Py_ssize_t piece, int slot);

/* The jobs' shared flags and counts (_native.c): C11 atomics, or plain variables where the
 * calling thread is the only one (no KL_THREADS). kl_atomic_add returns nothing. */
#if KL_THREADS
#define KL_ATOMIC(type) _Atomic(type)
#define kl_atomic_load(x) atomic_load(x)
#define kl_atomic_store(x, value) atomic_store(x, value)
#define kl_atomic_add(x, value) ((void)atomic_fetch_add(x, value))
#else
#define KL_ATOMIC(type) type
#define kl_atomic_load(x) (*(x))
#define kl_atomic_store(x, value) ((void)(*(x) = (value)))
#define kl_atomic_add(x, value) ((void)(*(x) += (value)))
#endif

/* The most threads one call may have (a slot of scratch each). */
#define KL_MAX_THREADS 256

/* A spinning thread's hint to the core that it waits (x86's pause). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define KL_PAUSE() __builtin_ia32_pause()
#else
#define KL_PAUSE() ((void)0)
#endif

#if KL_THREADS

/* How long a worker spins for the next job after one, in nanoseconds, before it sleeps. */
#define KL_SPIN_NS 200000
#define KL_MAX_WORKERS (KL_MAX_THREADS - 1)
/* A call this soon after the last job may wake the workers for a smaller job (kl_parallel's
 * wake == 1): the spin's length, so that only a loop's first calls pay a wake, not a loop
 * whose calls come just too far apart for the workers to be spinning still. */
#define KL_RECENT_NS KL_SPIN_NS

typedef struct {
    kl_piece_fn run;
    void *ctx;
    Py_ssize_t pieces;
    int slots; /* the threads that may take pieces: the caller and workers 1 to slots - 1 */
    atomic_long next; /* the next piece to take */
    atomic_long done; /* pieces finished */
} kl_job;

static pthread_mutex_t kl_pool_lock = PTHREAD_MUTEX_INITIALIZER; /* held by the job's caller */
static pthread_mutex_t kl_wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kl_wake = PTHREAD_COND_INITIALIZER;
static atomic_ulong kl_generation;      /* one more for each job handed out */
static kl_job *_Atomic kl_current_job;  /* the job at hand, or NULL */
static atomic_int kl_in_job;            /* workers that may be reading kl_current_job */
static int kl_workers;                  /* started, under kl_pool_lock */
static long long kl_last_job_ns;        /* when the last job ended, under kl_pool_lock */
static int kl_fork_handler_set;

static long long kl_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Take pieces of the job until none is left, as the thread of this slot (none if the job
 * has fewer slots: a worker started for an earlier call of more threads). */
static void kl_take_pieces(kl_job *job, int slot)
{
    while (slot < job->slots) {
        const long i = atomic_fetch_add(&job->next, 1);
        if (i >= job->pieces) {
            return;
        }
        job->run(job->ctx, (Py_ssize_t)i, slot);
        atomic_fetch_add(&job->done, 1);
    }
}

static void *kl_worker(void *arg)
{
    const int slot = (int)(intptr_t)arg;
    unsigned long seen = atomic_load(&kl_generation);
    for (;;) {
        unsigned long now = atomic_load(&kl_generation);
        if (now == seen) {
            const long long until = kl_now_ns() + KL_SPIN_NS;
            int spins = 0;
            while ((now = atomic_load(&kl_generation)) == seen) {
                KL_PAUSE();
                if (++spins % 64 == 0) {
                    if (kl_now_ns() > until) {
                        break;
                    }
                    sched_yield(); /* to the caller, should both share a core */
                }
            }
        }
        if (now == seen) {
            pthread_mutex_lock(&kl_wake_lock);
            while ((now = atomic_load(&kl_generation)) == seen) {
                pthread_cond_wait(&kl_wake, &kl_wake_lock);
            }
            pthread_mutex_unlock(&kl_wake_lock);
        }
        seen = now;
        /* announced before the job is read: the caller waits for kl_in_job to fall to 0
         * after it has cleared kl_current_job, so the job, on its stack, outlives this use */
        atomic_fetch_add(&kl_in_job, 1);
        kl_job *job = atomic_load(&kl_current_job);
        if (job != NULL) {
            kl_take_pieces(job, slot);
        }
        atomic_fetch_sub(&kl_in_job, 1);
    }
    return NULL;
}

/* In a forked child only the forking thread lives on: no workers, and the locks anew. */
static void kl_after_fork_child(void)
{
    pthread_mutex_init(&kl_pool_lock, NULL);
    pthread_mutex_init(&kl_wake_lock, NULL);
    pthread_cond_init(&kl_wake, NULL);
    atomic_store(&kl_current_job, NULL);
    atomic_store(&kl_in_job, 0);
    kl_workers = 0;
}

/* Start workers until there are `want` (under kl_pool_lock); fewer if a start fails. */
static void kl_start_workers(int want)
{
    if (!kl_fork_handler_set) {
        kl_fork_handler_set = pthread_atfork(NULL, NULL, kl_after_fork_child) == 0;
    }
    want = want < KL_MAX_WORKERS ? want : KL_MAX_WORKERS;
    while (kl_workers < want) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int failed =
            pthread_create(&thread, &attr, kl_worker, (void *)(intptr_t)(kl_workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) {
            return;
        }
        kl_workers++;
    }
}

static void kl_parallel(int threads, Py_ssize_t pieces, kl_piece_fn run, void *ctx, int wake)
{
    if (threads < 2 || pieces < 2 || pthread_mutex_trylock(&kl_pool_lock) != 0) {
        for (Py_ssize_t i = 0; i < pieces; i++) {
            run(ctx, i, 0);
        }
        return;
    }
    kl_start_workers(threads - 1);
    kl_job job = {run, ctx, pieces, threads, 0, 0};
    atomic_store(&kl_current_job, &job);
    const long long now = kl_now_ns();
    if (wake > 1 || (wake == 1 && now - kl_last_job_ns < KL_RECENT_NS)) {
        pthread_mutex_lock(&kl_wake_lock);
        atomic_fetch_add(&kl_generation, 1);
        pthread_cond_broadcast(&kl_wake);
        pthread_mutex_unlock(&kl_wake_lock);
    }
    else {
        /* for the workers still spinning; a sleeping one sleeps on (it holds no piece) */
        atomic_fetch_add(&kl_generation, 1);
    }
    kl_take_pieces(&job, 0);
    /* a worker's last piece (at most one piece's time), then a worker between reading the
     * job and seeing it has no piece left; yielding now and then, should that worker have
     * been preempted (a CPU quota below the cores, more threads than cores) */
    for (int spins = 1; atomic_load(&job.done) < pieces; spins++) {
        KL_PAUSE();
        if (spins % 64 == 0) {
            sched_yield();
        }
    }
    atomic_store(&kl_current_job, NULL);
    for (int spins = 1; atomic_load(&kl_in_job) != 0; spins++) {
        KL_PAUSE();
        if (spins % 64 == 0) {
            sched_yield();
        }
    }
    kl_last_job_ns = kl_now_ns();
    pthread_mutex_unlock(&kl_pool_lock);
}

#else

static void kl_parallel(int threads, Py_ssize_t pieces, kl_piece_fn run, void *ctx, int wake)
{
    (void)threads;
    (void)wake;
    for (Py_ssize_t i = 0; i < pieces; i++) {
        run(ctx, i, 0);
    }
}

#endif
