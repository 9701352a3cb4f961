/*
 * shmproc.h — the public interface of the shmproc native core.
 *
 * Everything between CDEF-BEGIN and CDEF-END is read verbatim by the cffi
 * build script (csrc/build_cffi.py) as the `cdef`, so that part must
 * stay cdef-clean: opaque handles, fixed-width integers, no macros, no
 * `_Atomic`, no #ifdef.  Layouts and atomics live in shmp_internal.h.
 *
 * Conventions
 *   - Every function returns an int status: SHMP_OK (0) or a negative
 *     SHMP_E* code.  No function aborts, prints or raises a signal.
 *   - Out-parameters are written only on success unless documented.
 *   - Timeouts are in nanoseconds; a negative timeout means "wait forever";
 *     0 means "do not wait".  Waits may return SHMP_EINTR when a signal
 *     arrives, and a wait for a ring's side lock returns it after each
 *     50 ms slice, so that the caller (Python) can run its signal handlers;
 *     the caller then retries with the time left.
 *   - File descriptors handed to *_attach are borrowed: the caller keeps
 *     ownership and may close them once the call returns (the mapping
 *     stays valid).  Descriptors returned by *_create are owned by the
 *     caller.
 */
#ifndef SHMPROC_H
#define SHMPROC_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */

/* ---- status codes ---------------------------------------------------- */
enum {
    SHMP_OK         = 0,
    SHMP_EINVAL     = -1,   /* bad argument (size, alignment, null, kind) */
    SHMP_ENOMEM     = -2,   /* local allocation failed */
    SHMP_ENOSPC     = -3,   /* shared memory could not be reserved */
    SHMP_EOS        = -4,   /* an OS call failed; see shmp_last_errno() */
    SHMP_ECORRUPT   = -5,   /* a shared header failed its checks */
    SHMP_EFULL      = -6,   /* ring has no room for the record now */
    SHMP_EEMPTY     = -7,   /* ring has no record now */
    SHMP_ETIMEDOUT  = -8,   /* a wait ran out of time */
    SHMP_EINTR      = -9,   /* a wait was interrupted (a signal, or a lock-wait slice): retry */
    SHMP_ETOOBIG    = -10,  /* record can never fit in this ring */
    SHMP_ESMALLBUF  = -11,  /* destination buffer too small; need is reported */
    SHMP_ESTATE     = -12,  /* call not valid in the current state */
    SHMP_EPEER      = -13,  /* the peer process or its descriptor is gone */
    SHMP_EABI       = -14,  /* segment made by another shmproc ABI version; see shmp_seg_identify */
    SHMP_EFOREIGN   = -15,  /* segment owned by another user; see shmp_seg_identify */
    SHMP_ESEALED    = -16   /* ring sealed: no more puts; a get found it sealed and drained */
};

/* ---- segment kinds ----------------------------------------------------- */
enum {
    SHMP_KIND_RING    = 1,
    SHMP_KIND_CONTROL = 2,
    SHMP_KIND_BLOB    = 3,
    SHMP_KIND_TRACE   = 4
};

/* ---- ring creation flags and record flags ------------------------------ */
enum {
    SHMP_RING_MULTI_PRODUCER = 1,   /* producers serialise on a robust lock */
    SHMP_RING_MULTI_CONSUMER = 2    /* consumers serialise on a robust lock */
};

/* ---- worker states (control block) ------------------------------------- */
enum {
    SHMP_STATE_NEW       = 0,
    SHMP_STATE_STARTING  = 1,
    SHMP_STATE_RUNNING   = 2,
    SHMP_STATE_FINISHING = 3,
    SHMP_STATE_DONE      = 4,       /* ended with a result */
    SHMP_STATE_FAILED    = 5,       /* ended with an error result */
    SHMP_STATE_CRASHED   = 6,       /* died without reporting (set by parent) */
    SHMP_STATE_KILLED    = 7        /* killed on request (set by parent) */
};

/* ---- platform features (shmp_platform_features) ------------------------- */
enum {
    SHMP_FEAT_MEMFD   = 1,          /* segments are memfds (else unlinked shm_open) */
    SHMP_FEAT_FUTEX   = 2,          /* sleeping waits (else poll with backoff) */
    SHMP_FEAT_PEER_FD = 4           /* shmp_seg_open_peer works */
};

/* ---- exit statuses of a worker ended by its native guard (guard.c) -------- */
enum {
    SHMP_EXIT_EXPIRED  = 86,        /* a section ran past its deadline plus the grace */
    SHMP_EXIT_ORPHANED = 87         /* the process that started the worker is gone */
};

/* ---- bits returned by shmp_ctl_enter / shmp_ctl_leave / shmp_ctl_end_lap - */
enum {
    SHMP_CTL_STOP    = 1,
    SHMP_CTL_OVERRAN = 2
};

/* ---- diagnostics ------------------------------------------------------- */
uint32_t shmp_platform_features(void);
int      shmp_last_errno(void);          /* errno of the last SHMP_EOS, per thread */
uint32_t shmp_abi_version(void);
const char *shmp_strerror(int status);
int      shmp_sanitized(void);           /* 1 if built with ASan/UBSan */

/* ---- clock ------------------------------------------------------------- */
uint64_t shmp_now_ns(void);              /* monotonic, nanoseconds */

/* ---- segments: anonymous shared memory ---------------------------------
 * A segment is a header (magic, ABI, kind, sizes) followed by a payload.
 * create: reserves the whole size up front where space can run out (a
 * full /dev/shm fails here, not with SIGBUS later) or the segment is a
 * blob or over 8 MiB (else, on Linux, pages come as first written), maps
 * it, returns an fd that can be inherited or
 * passed to another process, and the payload address.
 * attach: maps an fd received from another process after checking the
 * header.  unmap: releases a mapping obtained from create/attach, given
 * its payload address and payload size as the caller knows them (never
 * trusting the shared header, which another process could damage).  open_peer: opens a descriptor that a live process
 * holds (Linux: /proc/PID/fd/N) so out-of-band data needs no socket.    */
int  shmp_seg_create(uint32_t kind, uint64_t payload_size, int *fd_out, void **payload_out);
/* A sparse segment reserves nothing up front: pages are allocated when
 * written, so a large arena (for results of unknown size) costs only what
 * is used.  Reserve a range with shmp_seg_reserve before writing it, so a
 * full memory is a clean SHMP_ENOSPC instead of SIGBUS.                 */
int  shmp_seg_create_sparse(uint32_t kind, uint64_t payload_size, int *fd_out, void **payload_out);
int  shmp_seg_reserve(int fd, uint64_t payload_offset, uint64_t length);
/* Fault in a mapped range for writing in one call (Linux 5.14+
 * MADV_POPULATE_WRITE): ~30x cheaper than taking the page faults one by one
 * during a large copy.  Where unsupported it does nothing and returns OK. */
int  shmp_prefault(void *addr, uint64_t length);
int  shmp_seg_attach(int fd, uint32_t kind, void **payload_out, uint64_t *payload_size_out);
int  shmp_seg_unmap(void *payload, uint64_t payload_size);
/* A private, copy-on-write mapping of `length` bytes of the payload of the
 * blob segment behind `fd`, from `payload_offset` (any offset: the mapping
 * starts at the page below it).  *addr_out is the address of that byte.
 * Reads see the segment's pages as they are now *and later* (Linux shares
 * unwritten pages with the file), so the caller must keep the segment from
 * being rewritten while the mapping lives; writes stay in this process.
 * unmap_private takes the same address and length back.                */
int  shmp_seg_map_private(int fd, uint64_t payload_offset, uint64_t length, void **addr_out);
int  shmp_seg_unmap_private(void *addr, uint64_t length);
int  shmp_seg_payload_size(const void *payload, uint64_t *size_out);
int  shmp_seg_open_peer(int32_t pid, int32_t fd, int *fd_out);
int  shmp_seg_verify(const void *payload, uint32_t kind);
/* What a descriptor holds, to explain SHMP_EABI / SHMP_EFOREIGN: the ABI
 * version in its header (0 if it has no shmproc magic) and its owner's
 * uid.  Reads with pread/fstat; maps nothing.                           */
int  shmp_seg_identify(int fd, uint32_t *abi_out, uint32_t *owner_uid_out);

/* ---- ring: bounded ring of variable-length records ---------------------
 * Lives in its own segment.  A side created single (no SHMP_RING_MULTI_*
 * flag for it) takes no lock: its operations are lock-free, and that side
 * must be used by one thread of one process at a time (not checked).
 * With SHMP_RING_MULTI_* a side serialises on a robust process-shared
 * lock that recovers when its holder dies.
 * A record is at most shmp_ring_max_record() bytes.  Each record carries a
 * 15-bit user tag (0..32767) that the caller gives meaning to.          */
typedef struct shmp_ring shmp_ring;

int  shmp_ring_create(uint64_t capacity, uint32_t flags, uint64_t max_items,
                      int *fd_out, shmp_ring **ring_out);
int  shmp_ring_attach(int fd, shmp_ring **ring_out);
void shmp_ring_close(shmp_ring *ring);
uint64_t shmp_ring_capacity(const shmp_ring *ring);
uint64_t shmp_ring_max_record(const shmp_ring *ring);
uint32_t shmp_ring_flags(const shmp_ring *ring);
uint64_t shmp_ring_max_items(const shmp_ring *ring);

/* producer side */
int  shmp_ring_put(shmp_ring *ring, const char *data, uint32_t len, uint32_t tag,
                   int64_t timeout_ns);
/* put_tracked: put, and say which record this was: *seq_out is the number
 * of records ever put before it (compare with shmp_ring_taken).        */
int  shmp_ring_put_tracked(shmp_ring *ring, const char *data, uint32_t len, uint32_t tag,
                           int64_t timeout_ns, uint64_t *seq_out);
/* put_many: `count` records laid end to end in `blob`; tags may be NULL (all 0) */
int  shmp_ring_put_many(shmp_ring *ring, const void *blob, const uint32_t *lens,
                        const uint32_t *tags, uint32_t count, int64_t timeout_ns,
                        uint32_t *done_out);

/* consumer side */
int  shmp_ring_get(shmp_ring *ring, void *dst, uint64_t cap, int64_t timeout_ns,
                   uint32_t *len_out, uint32_t *tag_out);
/* get_record: the hot path of get, without out-parameters (each costs a
 * Python->C conversion): returns (tag << 32) | len on success, or a
 * negative status; SHMP_ESMALLBUF consumes nothing (use shmp_ring_get
 * with cap 0 to learn the size).                                       */
int64_t shmp_ring_get_record(shmp_ring *ring, void *dst, uint64_t cap, int64_t timeout_ns);
int  shmp_ring_get_many(shmp_ring *ring, void *dst, uint64_t cap, uint32_t max_count,
                        int64_t timeout_ns, uint32_t *lens_out, uint32_t *tags_out,
                        uint32_t *count_out);

/* either side */
uint64_t shmp_ring_count(const shmp_ring *ring);      /* records queued (approximate under concurrency) */
uint64_t shmp_ring_taken(const shmp_ring *ring);      /* records ever taken by consumers */
uint64_t shmp_ring_used_bytes(const shmp_ring *ring);
int  shmp_ring_wait_data(shmp_ring *ring, int64_t timeout_ns);
/* poke: wake the consumers asleep on this ring with nothing put (a
 * syscall only if one is registered asleep).  A producer about to put
 * pokes first, so that the consumer's wake-up -- slow after an idle spell,
 * when its core may be asleep too -- overlaps the producer's own work.
 * wait_poked: sleep until there is data (OK), a poke or another wake-up
 * finds none (EEMPTY: the caller decides how long to watch), the timeout
 * passes (ETIMEDOUT), a signal arrives (EINTR) or the ring is closed
 * (ESTATE).  A poke made before the waiter registered is not seen: the
 * waiter then sleeps until the put, as it would have without one.     */
int  shmp_ring_poke(shmp_ring *ring);
int  shmp_ring_wait_poked(shmp_ring *ring, int64_t timeout_ns);
/* Consumers registered asleep for data now (a snapshot, for tests and tools). */
uint32_t shmp_ring_sleepers(const shmp_ring *ring);
/* This handle's sleepers re-check the ring every slice_ns even if no wake-up
 * comes (default 200 ms; a negative value restores it).  0: no re-check, for
 * a consumer whose producers' death ends it anyway (an idle pool worker then
 * costs no wake-up at all).  Handle-local: nothing in shared memory. */
void shmp_ring_set_wait_slice(shmp_ring *ring, int64_t slice_ns);
int  shmp_ring_mark_closed(shmp_ring *ring);          /* wakes every waiter; later puts fail */
int  shmp_ring_is_closed(const shmp_ring *ring);

/* Sealing: how an unbounded Queue grows (shmproc/channels/chain.py).
 * id: 64 bits the creator writes once, before the ring is shared, so that
 * a process opening a ring through another's descriptor can tell it is
 * the one it was told about.  seal: under the producer side, ends the
 * ring's life for producers and records `next_id`, the id of the ring
 * that continues it; later puts return SHMP_ESEALED, and a get returns
 * SHMP_ESEALED once the ring is sealed and drained (never while records
 * remain).  Wakes every sleeper.  SHMP_ESTATE if already sealed; may
 * return SHMP_EINTR while waiting for the producer lock (retry).
 * sealed: 1 and *next_id_out once sealed, else 0.                       */
int  shmp_ring_set_id(shmp_ring *ring, uint64_t id);
uint64_t shmp_ring_id(const shmp_ring *ring);
int  shmp_ring_seal(shmp_ring *ring, uint64_t next_id, int64_t timeout_ns);
int  shmp_ring_sealed(const shmp_ring *ring, uint64_t *next_id_out);

/* ---- control blocks: one cache-line-aligned block per worker -----------
 * A control segment holds `count` blocks.  The worker writes with plain
 * atomic stores; the parent reads at any time.  `count` passed to get and
 * payload_size is the caller's own (from create or attach), never re-read
 * from shared memory, so a damaged count cannot move a block pointer or
 * an unmap outside the segment.                                         */
typedef struct shmp_control shmp_control;

int  shmp_ctl_create(uint32_t count, int *fd_out, void **payload_out);
int  shmp_ctl_attach(int fd, void **payload_out, uint32_t *count_out);
int  shmp_ctl_get(void *payload, uint32_t count, uint32_t index, shmp_control **ctl_out);
uint64_t shmp_ctl_payload_size(uint32_t count);     /* 0 if count is out of range */
int  shmp_ctl_reset(shmp_control *ctl);

uint32_t shmp_ctl_state(const shmp_control *ctl);
int  shmp_ctl_set_state(shmp_control *ctl, uint32_t state);
/* A state below DONE (STARTING, RUNNING, FINISHING).  STARTING and
 * RUNNING are stored without a wake-up (sleepers wait for FINISHING or an
 * end state: waking them at every step only makes them look and sleep
 * again).  FINISHING wakes them: the run's last hooks are next, and a
 * parent that wakes now (slow after an idle spell) is awake when the run
 * reports, rather than woken after it.  EINVAL for DONE and later (those
 * go through set_state).                                                 */
int  shmp_ctl_advance(shmp_control *ctl, uint32_t state);
int  shmp_ctl_wait_state(shmp_control *ctl, uint32_t at_least, int64_t timeout_ns);

int  shmp_ctl_request_stop(shmp_control *ctl);
int  shmp_ctl_clear_stop(shmp_control *ctl);
int  shmp_ctl_stop_requested(const shmp_control *ctl);
int  shmp_ctl_wait_stop(shmp_control *ctl, int64_t timeout_ns);

uint64_t shmp_ctl_lap(const shmp_control *ctl);
int  shmp_ctl_set_lap(shmp_control *ctl, uint64_t lap);
/* enter a section: records section id, start time and deadline (0 = none).
 * Returns a bit set (or a negative status): SHMP_CTL_STOP if a stop was
 * requested, SHMP_CTL_OVERRAN if the section being left had passed its
 * deadline.  One call per section transition is the whole per-section
 * cost of the engine's bookkeeping: stores and a vDSO clock read.       */
int  shmp_ctl_enter(shmp_control *ctl, uint32_t section, uint64_t timeout_ns);
int  shmp_ctl_leave(shmp_control *ctl);
uint32_t shmp_ctl_section(const shmp_control *ctl);
uint64_t shmp_ctl_section_start_ns(const shmp_control *ctl);
uint64_t shmp_ctl_deadline_ns(const shmp_control *ctl);
/* ends a lap: leaves the current section (same bits as enter) and bumps
 * the lap counter.                                                      */
int  shmp_ctl_end_lap(shmp_control *ctl);

uint32_t shmp_ctl_lives(const shmp_control *ctl);
int  shmp_ctl_set_lives(shmp_control *ctl, uint32_t lives);
int32_t shmp_ctl_pid(const shmp_control *ctl);
int  shmp_ctl_set_pid(shmp_control *ctl, int32_t pid);
int  shmp_ctl_set_exit(shmp_control *ctl, int32_t code, int32_t signo);
int  shmp_ctl_exit(const shmp_control *ctl, int32_t *code_out, int32_t *signo_out);
/* A run's outcome when it is a lone scalar (value None, a bool, an int64
 * or a float; no timers, no error): held in the control block instead of
 * an arena record, so neither side pickles or frames anything.
 * report_scalar: the worker's report -- the value, exit 0, state DONE
 * (waking the parent).  scalar: SHMP_SCALAR_NONE unless the state is DONE
 * with such a value, else its tag (bits in *bits_out); SHMP_ECORRUPT for
 * a tag no worker writes.  Cleared by shmp_ctl_reset.                 */
enum {
    SHMP_SCALAR_NONE  = 0,      /* the outcome is in the arena (or none yet) */
    SHMP_SCALAR_NULL  = 1,      /* Python None */
    SHMP_SCALAR_FALSE = 2,
    SHMP_SCALAR_TRUE  = 3,
    SHMP_SCALAR_INT   = 4,      /* bits: the int64, two's complement */
    SHMP_SCALAR_FLOAT = 5       /* bits: the IEEE-754 double */
};
int  shmp_ctl_report_scalar(shmp_control *ctl, uint32_t tag, uint64_t bits);
int  shmp_ctl_scalar(const shmp_control *ctl, uint64_t *bits_out);
/* What the parent reads of an ended run, in one call: scalar()'s result,
 * and the lap and exit info (as shmp_ctl_lap / shmp_ctl_exit).         */
int  shmp_ctl_outcome(const shmp_control *ctl, uint64_t *lap_out, int32_t *code_out,
                      int32_t *signo_out, uint64_t *bits_out);
/* The section start stamp the guard's latest SIGALRM was meant for: the
 * handler raises only while that same section is still running.        */
uint64_t shmp_ctl_alarm_start_ns(const shmp_control *ctl);
/* Which section the guard ended the worker in (0 = it did not), with that
 * section's timeout and the lap it was on; written before the worker
 * exits with SHMP_EXIT_EXPIRED.  shmp_ctl_reset clears it.              */
uint32_t shmp_ctl_expired(const shmp_control *ctl, uint64_t *timeout_ns_out, uint64_t *lap_out);

/* ---- the guard: a native watchdog in the worker (guard.c) ---------------
 * One per process, started by the worker's main thread, which becomes the
 * target of its SIGALRMs.  It sleeps until the current section's deadline
 * in `ctl` (or at most `horizon_ns`, the smallest timeout a new section
 * can have; 0 = no timeouts), signals `alarm_signo` on overrun, backing
 * off, and ends the process with SHMP_EXIT_EXPIRED once the section has
 * run `grace_ns` past its deadline.  It also ends the process with
 * SHMP_EXIT_ORPHANED when `parent_pid` exits (`parent_is_parent`: it is
 * our parent, so getppid() can tell; else a pidfd or kill(pid, 0)).
 * start: SHMP_ESTATE if one runs already, SHMP_EPEER if the parent is
 * already gone.  rearm: a new horizon (a pool worker's next Process).
 * stop: ends and joins the thread; idempotent.  A fork() child has no
 * guard (threads do not survive fork) and may start its own.           */
int  shmp_guard_start(shmp_control *ctl, int32_t parent_pid, int parent_is_parent,
                      uint64_t horizon_ns, uint64_t grace_ns, int alarm_signo);
/* start_deferred: the same guard, begun as a kernel timer that signals
 * this thread (shmp_guard_tick_signal(), a real-time signal the guard
 * handles in C) instead of a thread; it becomes the thread at the first
 * section entered `promote_after_ns` after the start.  A run that ends
 * sooner never makes the thread (~40 page faults in a fresh fork child).
 * The tick does not watch the parent: only for a worker the kernel ends
 * with its parent (PR_SET_PDEATHSIG).  Where the system has no such
 * timer it is start() with a thread at once.                          */
int  shmp_guard_start_deferred(shmp_control *ctl, int32_t parent_pid, int parent_is_parent,
                               uint64_t horizon_ns, uint64_t grace_ns, int alarm_signo,
                               uint64_t promote_after_ns);
int  shmp_guard_rearm(uint64_t horizon_ns);
int  shmp_guard_stop(void);
int  shmp_guard_running(void);
/* 0: no guard, 1: the tick (deferred, not promoted yet), 2: the thread. */
int  shmp_guard_mode(void);
int  shmp_guard_tick_signal(void);

/* ---- wait/wake on a 32-bit shared word ----------------------------------
 * For words the caller lays out (blob headers, blobs.py), with the same
 * primitive the ring and control blocks use (wait.c).  Each waitable word
 * has a `waiters` word beside it (another aligned 32-bit word, zero at
 * creation): wait registers there once its spin is over, and store / cas
 * make a wake-up syscall only if someone is registered.  store and cas
 * take NULL waiters for a word nobody sleeps on (they then never wake).  */
/* Linux: deliver `signo` to this process when its parent dies (prctl),
 * then check the parent is still `expected_parent`; SHMP_EPEER if it is
 * already gone.  Elsewhere: only the check.                              */
int  shmp_parent_death_signal(int signo, int32_t expected_parent);

/* sleep while *word == expected: OK once it differs, ETIMEDOUT, or EINTR */
int  shmp_wait_u32(void *word, void *waiters, uint32_t expected, int64_t timeout_ns);
uint32_t shmp_load_u32(const void *word);               /* acquire load */
/* release store, then wake all sleepers if any are registered in `waiters` */
int  shmp_store_u32(void *word, void *waiters, uint32_t value);
/* fetch-add (acq_rel) of a signed delta; returns the old value (0 on a bad word) */
uint32_t shmp_add_u32(void *word, int32_t delta);
/* compare-and-swap (acq_rel), then wake as store does; SHMP_ESTATE if the
 * word was not `expected`                                               */
int  shmp_cas_u32(void *word, void *waiters, uint32_t expected, uint32_t desired);


/* ---- trace rings: the spans each worker recorded (trace.c) -------------
 * A trace segment holds `rings` rings of `capacity` entries (a power of
 * two, 16 .. 2^20), one per worker slot; a span is (start, end, label,
 * flags, pid, lap), the oldest overwritten once a ring is full.  As with
 * control blocks, `rings` and `capacity` passed to get/begin/end/read are
 * the caller's own, never re-read from shared memory.  The writer's
 * inline form is in shmp_trace.h (the CPython extensions use it).
 * read: copies the ring's spans, oldest first, into `out` (up to
 * `out_len`), dropping any the writer may have been overwriting while it
 * copied and any whose fields fail their checks; returns how many it
 * copied (or a status) and sets *written_out to the number ever begun, so
 * written - copied were lost to overwriting (or damage).  An open span
 * (end_ns 0) is copied as it is.  close_open: ends the newest span if it
 * is open, for a writer that died (flags usually SHMP_SPAN_IS_CRASHED).  */
typedef struct shmp_trace shmp_trace;
typedef struct shmp_span {
    uint64_t start_ns;
    uint64_t end_ns;
    uint32_t label;
    uint32_t flags;
    uint32_t pid;
    uint32_t lap;
} shmp_span;
enum {
    SHMP_SPAN_IS_FAILED  = 1,
    SHMP_SPAN_IS_CRASHED = 2,
    SHMP_TRACE_TALLY_LABELS = 8     /* labels 0..7 have a tally (end_tally) */
};

uint64_t shmp_trace_payload_size(uint32_t rings, uint32_t capacity);   /* 0 if out of range */
int  shmp_trace_create(uint32_t rings, uint32_t capacity, int *fd_out, void **payload_out);
int  shmp_trace_attach(int fd, void **payload_out, uint32_t *rings_out, uint32_t *capacity_out);
int  shmp_trace_get(void *payload, uint32_t rings, uint32_t capacity, uint32_t index,
                    shmp_trace **ring_out);
int  shmp_trace_begin(shmp_trace *ring, uint32_t capacity, uint64_t start_ns, uint32_t label,
                      uint32_t pid, uint32_t lap);
int  shmp_trace_end(shmp_trace *ring, uint32_t capacity, uint64_t end_ns, uint32_t flags);
int64_t shmp_trace_read(const shmp_trace *ring, uint32_t capacity, shmp_span *out,
                        uint32_t out_len, uint64_t *written_out);
int  shmp_trace_close_open(shmp_trace *ring, uint32_t capacity, uint64_t end_ns, uint32_t flags);
/* end_tally: end as shmp_trace_end, and count the span in its label's
 * tally: (count, total ns, failed) per label 0..7 over the whole run,
 * however many spans the ring overwrote (a Process's sections).
 * tallies: copies them, 3 x SHMP_TRACE_TALLY_LABELS words into `out`.   */
int  shmp_trace_end_tally(shmp_trace *ring, uint32_t capacity, uint64_t end_ns, uint32_t flags);
int  shmp_trace_tallies(const shmp_trace *ring, uint64_t *out, uint32_t out_len);

/* CDEF-END */

/* ---- fault injection: test builds only ----------------------------------
 * Compiled only with -DSHMP_FAULT_INJECTION (SHMPROC_FAULTS=1 at build
 * time; tests/faults.py and tests/asan.py build such a copy), so release
 * builds carry no hook.  An armed point stops the calling process with
 * SIGSTOP when it is reached, once; the test then kills it there, which
 * is how a death between two shared stores is made deterministic.      */
/* CDEF-FAULTS-BEGIN */
enum {
    SHMP_FAULT_NONE               = 0,
    SHMP_FAULT_PRODUCER_PUBLISHED = 1,  /* after the tail store, before tail_count */
    SHMP_FAULT_CONSUMER_PUBLISHED = 2   /* after the head store, before head_count */
};
int shmp_fault_arm(uint32_t point);     /* defined only with SHMP_FAULT_INJECTION */
/* CDEF-FAULTS-END */

#endif /* SHMPROC_H */
