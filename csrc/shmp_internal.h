/*
 * shmp_internal.h — shared layouts, atomics and the platform layer.
 *
 * Nothing here is visible to Python.  Every structure placed in shared
 * memory is declared here, with its cache-line placement stated, so the
 * layout of a segment can be read in one place.
 */
#ifndef SHMP_INTERNAL_H
#define SHMP_INTERNAL_H

#include "shmproc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 2: ring side journals (ring.c); max_items at most capacity / 8.
 * 3: no heartbeat in the control block; wakers skip the syscall unless a
 *    waiter is registered (blob headers carry a waiters word, blobs.py).
 * 4: rings carry an id and can be sealed (a growing Queue, chain.py).  */
#define SHMP_ABI_VERSION   4u
#define SHMP_MAGIC         0x434f5250504d4853ull   /* "SHMPPROC" little-endian */
#define SHMP_CACHE_LINE    64
#define SHMP_PAGE          4096u

/* Largest payload a segment may have (1 TiB): keeps every size computation
 * far from overflow and turns absurd requests into SHMP_EINVAL.           */
#define SHMP_MAX_PAYLOAD   (1ull << 40)

#define SHMP_ALIGNED       _Alignas(SHMP_CACHE_LINE)

/* ---- segment header (first page of every segment) ---------------------- */
typedef struct shmp_seg_header {
    uint64_t magic;
    uint32_t abi_version;
    uint32_t kind;
    uint64_t total_size;        /* bytes mapped, header page included */
    uint64_t payload_size;      /* bytes usable after the header page */
    uint32_t header_size;       /* sizeof(shmp_seg_header): layout check */
    uint32_t layout_size;       /* sizeof of the kind's shared struct */
    uint32_t flags;             /* SHMP_SEG_SPARSE: nothing reserved, never prefault */
    uint32_t reserved0;
    uint64_t creator_pid;
    uint64_t check;             /* magic ^ kind ^ sizes: catches torn or stray writes */
} shmp_seg_header;

/* The payload starts one page after the header so payloads stay page
 * aligned (large numpy arrays and rings get whole pages).               */
#define SHMP_PAYLOAD_OFFSET SHMP_PAGE
#define SHMP_SEG_SPARSE     1u

uint64_t shmp_seg_check_word(const shmp_seg_header *h);
/* Layout size recorded for each kind, compared on attach. */
uint32_t shmp_kind_layout_size(uint32_t kind);

/* ---- ring shared state ----------------------------------------------------
 * Line 0 is written once at creation.  The producer owns line 1 and the
 * consumer line 2, so in SPSC use neither side writes a line the other
 * writes; each side only reads the other's index when its local cached
 * copy says "full" or "empty".                                            */
typedef struct shmp_ring_shared {
    /* line 0: immutable after creation */
    SHMP_ALIGNED uint64_t capacity;     /* data bytes, a power of two */
    uint64_t max_items;                 /* 0 = unbounded */
    uint32_t flags;
    uint32_t reserved0;
    uint64_t id;                        /* the creator's name for it, set before sharing */

    /* line 1: producer */
    SHMP_ALIGNED _Atomic uint64_t tail;         /* bytes ever written (free-running) */
    _Atomic uint64_t tail_count;                /* records ever written */
    _Atomic uint64_t tail_journal;              /* multi-producer: the tail and count the */
    _Atomic uint64_t tail_count_journal;        /* lock holder is storing (ring.c, journal) */
    _Atomic uint64_t next_id;                   /* sealed: the id of the ring after this one */
    _Atomic uint32_t sealed;                    /* 1: no more puts (shmp_ring_seal) */

    /* line 2: consumer */
    SHMP_ALIGNED _Atomic uint64_t head;         /* bytes ever consumed */
    _Atomic uint64_t head_count;                /* records ever consumed */
    _Atomic uint64_t head_journal;              /* multi-consumer: likewise for head */
    _Atomic uint64_t head_count_journal;

    /* line 3: consumers sleeping for data */
    SHMP_ALIGNED _Atomic uint32_t data_seq;     /* futex word, bumped on publish */
    _Atomic uint32_t data_waiters;

    /* line 4: producers sleeping for space */
    SHMP_ALIGNED _Atomic uint32_t space_seq;    /* futex word, bumped on release */
    _Atomic uint32_t space_waiters;

    /* line 5: lifecycle */
    SHMP_ALIGNED _Atomic uint32_t closed;

    /* the side locks (robust, process-shared), each on its own lines */
    SHMP_ALIGNED pthread_mutex_t producer_lock;
    SHMP_ALIGNED pthread_mutex_t consumer_lock;
} shmp_ring_shared;

/* Record header: 8 bytes, 8-byte aligned, always contiguous in the ring. */
typedef struct shmp_rec_header {
    uint32_t len;           /* payload bytes */
    uint32_t flags;         /* the 15-bit user tag; higher values are damage */
} shmp_rec_header;

#define SHMP_TAG_LIMIT      0x8000u     /* tags are below this */
#define SHMP_REC_FLAG_MASK  0xffffu

/* ---- control block ----------------------------------------------------------
 * Two lines per worker.  Line 0 is the hot line the worker writes every
 * section (lap, section, start stamp, deadline); line 1 holds words the
 * parent writes (stop) or reads rarely (exit info), and the guard's words
 * (written only on an overrun, so they never touch the hot line).       */
typedef struct shmp_control_shared {
    SHMP_ALIGNED _Atomic uint64_t lap;
    _Atomic uint64_t section_start_ns;
    _Atomic uint64_t deadline_ns;       /* 0 = no deadline */
    _Atomic uint32_t section;
    _Atomic uint32_t state;             /* futex word: SHMP_STATE_* */
    _Atomic uint32_t lives;
    _Atomic int32_t  pid;

    SHMP_ALIGNED _Atomic uint32_t stop; /* futex word: 0 run, 1 stop requested */
    _Atomic int32_t  exit_code;
    _Atomic int32_t  exit_signal;
    _Atomic uint32_t state_waiters;
    _Atomic uint32_t stop_waiters;
    _Atomic uint32_t expired_section;   /* guard: the section it ended the worker in */
    _Atomic uint64_t expired_timeout_ns;
    _Atomic uint64_t expired_lap;
    _Atomic uint64_t alarm_start_ns;    /* guard: section start its SIGALRM is meant for */
    _Atomic uint32_t scalar_tag;        /* SHMP_SCALAR_*: an outcome held here, not in the arena */
    _Atomic uint64_t scalar_bits;       /* its value (int64 or IEEE-754 double bits) */
} shmp_control_shared;

struct shmp_control { shmp_control_shared s; };

typedef struct shmp_control_array {
    SHMP_ALIGNED uint32_t count;
    SHMP_ALIGNED shmp_control_shared blocks[];
} shmp_control_array;

/* ---- trace segment: `rings` rings of `capacity` entries (trace.c) --------
 * Line 0 is written once at creation; ring i starts at
 * SHMP_CACHE_LINE + i * shmp_trace_ring_size(capacity), its head on a
 * line of its own, then the entries (shmp_trace.h).                      */
#include "shmp_trace.h"

typedef struct shmp_trace_area {
    SHMP_ALIGNED uint32_t rings;
    uint32_t capacity;
} shmp_trace_area;

struct shmp_trace { shmp_trace_ring r; };

/* ---- platform layer (platform.c): the only Linux-specific code ----------- */
int  shmp_os_anon_fd(uint64_t size, int reserve_space, int *fd_out);   /* memfd or unlinked shm_open */
int  shmp_os_reserve(int fd, uint64_t offset, uint64_t length);
int  shmp_os_space_is_bounded(void);                                      /* see segment.c's create */
int  shmp_os_parent_death_signal(int signo);
int  shmp_os_seal(int fd);                          /* forbid resizing where supported */
int  shmp_os_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns);
int  shmp_os_futex_wake(_Atomic uint32_t *word, int32_t count);
/* Give the core to another runnable task, if any (sched_yield: POSIX). */
void shmp_os_yield(void);
int  shmp_os_open_peer(int32_t pid, int32_t fd, int *fd_out);
/* Map a private mapping's pages for reading without breaking copy-on-write
 * (Linux 5.14+ MADV_POPULATE_READ); a hint: elsewhere it does nothing.   */
void shmp_os_populate_read(void *addr, uint64_t length);
void shmp_set_errno(int err);
/* Is process `pid` alive?  `pidfd` from shmp_os_pidfd_open (or -1); with
 * `is_parent`, getppid() answers for a direct parent.  pidfd: Linux 5.3+. */
int  shmp_os_pidfd_open(int32_t pid);
int  shmp_os_process_alive(int32_t pid, int pidfd, int is_parent);
/* A pipe whose ends are close-on-exec and non-blocking: 0, or -1 and errno
 * (pipe2: one syscall on Linux; pipe and four fcntl elsewhere).        */
int  shmp_os_wake_pipe(int fds[2]);
/* A timer for the guard's tick (platform.c): its expiry runs
 * shmp_guard_tick, as the handler of `signo`, on the thread that created
 * it.  create/arm: 0, or -1 and errno (ENOSYS where the system has no
 * such timer).  arm(0 or UINT64_MAX) disarms; arm is async-signal-safe.
 * One per process.                                                      */
int  shmp_os_tick_create(int signo);
int  shmp_os_tick_arm(uint64_t ns);
void shmp_os_tick_delete(void);
/* A guard in its tick phase becomes a thread at the first section entered
 * once this stamp has passed (0: never; guard.c, checked by control.c). */
extern _Atomic uint64_t shmp_guard_promote_at_ns;
void shmp_guard_promote(void);
void shmp_guard_tick(void);         /* in a signal handler: async-signal-safe */
/* The guard records why it ends the worker (control.c). */
void shmp_ctl_record_expired(shmp_control *c, uint32_t section, uint64_t timeout_ns);
void shmp_ctl_store_alarm(shmp_control *c, uint64_t start_ns);

/* spin hint for the brief busy-wait before sleeping */
static inline void shmp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Robust process-shared mutex helpers (lock.c).  shmp_lock_acquire
 * returns SHMP_OK, or SHMP_LOCK_RECOVERED when the previous holder died
 * holding it (the lock is then held and consistent again, and the caller
 * repairs what the holder left half done), or a negative status.       */
#define SHMP_LOCK_RECOVERED 1
int  shmp_lock_init(pthread_mutex_t *m);
int  shmp_lock_acquire(pthread_mutex_t *m, int64_t timeout_ns);
void shmp_lock_release(pthread_mutex_t *m);

/* Fault points (shmproc.h, test builds only). */
#ifdef SHMP_FAULT_INJECTION
void shmp_fault_point(uint32_t point);
#  define SHMP_FAULT(point) shmp_fault_point(point)
#else
#  define SHMP_FAULT(point) ((void)0)
#endif

/* The one wait primitive (wait.c, protocol there).  `cond(arg)` returns
 * 0 while the waiter must wait, > 0 when it may go on (SHMP_OK), or a
 * negative status to return.  The waker makes the condition true,
 * changes `word` (a new value, or a bump), then shmp_wake_waiters(). */
typedef int (*shmp_cond_fn)(void *arg);
/* A sleeper's default re-check slice (wait.c: a killed waker delays it by
 * at most this).                                                       */
#define SHMP_WAIT_SLICE_NS 200000000
int  shmp_wait_until(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
                     shmp_cond_fn cond, void *arg, uint64_t deadline);
/* The same with the re-check slice given (0: none, sleep until woken or
 * the deadline; shmp_wait_until uses SHMP_WAIT_SLICE_NS).             */
int  shmp_wait_sliced(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
                      shmp_cond_fn cond, void *arg, uint64_t deadline, int64_t slice_ns);
void shmp_wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiters);
/* For a condition kept elsewhere (ring indices): `seq` is bumped, then
 * woken, only if someone is registered: a busy ring never writes it.  */
void shmp_bump_and_wake(_Atomic uint32_t *seq, _Atomic uint32_t *waiters);
/* Deadline helpers: negative timeout = forever (deadline UINT64_MAX). */
uint64_t shmp_deadline(int64_t timeout_ns);
int64_t  shmp_remaining(uint64_t deadline);

#endif /* SHMP_INTERNAL_H */
