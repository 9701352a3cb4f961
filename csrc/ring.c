/*
 * ring.c — a bounded ring of variable-length records in shared memory.
 *
 * Indices.  `tail` (bytes ever written) and `head` (bytes ever consumed)
 * are free-running 64-bit counters; a position in the data area is
 * `index & (capacity - 1)`.  used = tail - head, so "full" needs no extra
 * flag and 2^64 bytes will not wrap in the life of any machine.
 *
 * Records.  An 8-byte header {len, flags} then the payload, padded to 8.
 * Headers are always contiguous (positions are multiples of 8 and the
 * capacity is a power of two >= 64).  A payload that crosses the end of
 * the data area is written and read as two copies.  reserve() needs a
 * contiguous payload, so it may first publish a PAD record that fills the
 * data area up to its end.
 *
 * Ordering.  The producer writes header and payload, then publishes them
 * with a release store of `tail`; the consumer's acquire load of `tail`
 * pairs with it, so it never reads a record before its bytes.  The
 * consumer copies a record out, then frees the space with a release store
 * of `head`; the producer's acquire load of `head` pairs with that, so it
 * never overwrites bytes still being read.  Each side caches the other's
 * index and reloads it only when its cached view says full or empty:
 * fewer cache-line transfers between cores.
 *
 * Sides.  Single-producer/single-consumer use takes no lock at all.  With
 * SHMP_RING_MULTI_PRODUCER (or _CONSUMER) the side's operations are
 * serialised by a robust process-shared mutex (lock.c); a holder that dies
 * leaves no trace because nothing is visible until the final index store.
 * Waiting for space or data happens with the lock released.
 */
#include "shmp_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REC_HDR   8u
#define MIN_CAP   64u
#define MAX_CAP   (1ull << 36)          /* 64 GiB of ring is plenty */
#define LOCK_SLICE_NS 50000000          /* try-ops wait this long for a busy side lock */

struct shmp_ring {
    shmp_ring_shared *sh;
    uint64_t payload_size;              /* for unmap: local, never re-read from shared memory */
    uint8_t *data;
    uint64_t cap;
    uint64_t mask;
    uint64_t max_items;
    uint32_t flags;
    /* Each side's last view of the other's index.  Atomic (relaxed) only
     * because threads of one process may share a handle; a stale value is
     * always safe: it under-states both free space and available data.  */
    _Atomic uint64_t cached_head;       /* producer's view of head */
    _Atomic uint64_t cached_tail;       /* consumer's view of tail */
    /* reserve/commit state (producer) */
    int      reserving;
    uint64_t reserve_pos;               /* index where the record header goes */
    uint32_t reserve_len;
    /* peek/release state (consumer) */
    int      peeking;
    uint64_t peek_next;                 /* head after release */
    uint8_t *bounce;                    /* contiguous copy of a wrapped record */
    uint64_t bounce_cap;
};

static inline uint64_t rec_size(uint32_t len)
{
    return REC_HDR + (((uint64_t)len + 7u) & ~(uint64_t)7u);
}

uint64_t shmp_ring_capacity(const shmp_ring *r)   { return r ? r->cap : 0; }
uint32_t shmp_ring_flags(const shmp_ring *r)      { return r ? r->flags : 0; }
uint64_t shmp_ring_max_items(const shmp_ring *r)  { return r ? r->max_items : 0; }
uint64_t shmp_ring_max_record(const shmp_ring *r)
{
    if (r == NULL)
        return 0;
    uint64_t m = r->cap - REC_HDR;
    return m > UINT32_MAX ? UINT32_MAX : m;
}

/* ---- creation and attach ------------------------------------------------ */

static int handle_for(void *payload, uint64_t payload_size, shmp_ring **out)
{
    shmp_ring_shared *sh = payload;
    uint64_t cap = sh->capacity;
    /* Validate everything the handle will trust from shared memory. */
    if (cap < MIN_CAP || cap > MAX_CAP || (cap & (cap - 1)) != 0)
        return SHMP_ECORRUPT;
    if (sizeof(shmp_ring_shared) + cap > payload_size)
        return SHMP_ECORRUPT;
    if ((sh->flags & ~(uint32_t)(SHMP_RING_MULTI_PRODUCER | SHMP_RING_MULTI_CONSUMER)) != 0)
        return SHMP_ECORRUPT;
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
    if (tail - head > cap || (head & 7u) != 0 || (tail & 7u) != 0)
        return SHMP_ECORRUPT;
    shmp_ring *r = calloc(1, sizeof *r);
    if (r == NULL)
        return SHMP_ENOMEM;
    r->sh = sh;
    r->payload_size = payload_size;
    r->data = (uint8_t *)payload + sizeof(shmp_ring_shared);
    r->cap = cap;
    r->mask = cap - 1;
    r->max_items = sh->max_items;
    r->flags = sh->flags;
    r->cached_head = head;
    r->cached_tail = tail;
    *out = r;
    return SHMP_OK;
}

int shmp_ring_create(uint64_t capacity, uint32_t flags, uint64_t max_items,
                     int *fd_out, shmp_ring **ring_out)
{
    if (fd_out == NULL || ring_out == NULL)
        return SHMP_EINVAL;
    if (capacity < MIN_CAP || capacity > MAX_CAP || (capacity & (capacity - 1)) != 0)
        return SHMP_EINVAL;
    if ((flags & ~(uint32_t)(SHMP_RING_MULTI_PRODUCER | SHMP_RING_MULTI_CONSUMER)) != 0)
        return SHMP_EINVAL;
    uint64_t payload_size = sizeof(shmp_ring_shared) + capacity;
    int fd;
    void *payload;
    int rc = shmp_seg_create(SHMP_KIND_RING, payload_size, &fd, &payload);
    if (rc != SHMP_OK)
        return rc;
    shmp_ring_shared *sh = payload;     /* fresh pages are zero */
    sh->capacity = capacity;
    sh->max_items = max_items;
    sh->flags = flags;
    if ((rc = shmp_lock_init(&sh->producer_lock)) != SHMP_OK ||
        (rc = shmp_lock_init(&sh->consumer_lock)) != SHMP_OK ||
        (rc = handle_for(payload, payload_size, ring_out)) != SHMP_OK) {
        shmp_seg_unmap(payload, payload_size);
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return SHMP_OK;
}

int shmp_ring_attach(int fd, shmp_ring **ring_out)
{
    if (ring_out == NULL)
        return SHMP_EINVAL;
    void *payload;
    uint64_t payload_size;
    int rc = shmp_seg_attach(fd, SHMP_KIND_RING, &payload, &payload_size);
    if (rc != SHMP_OK)
        return rc;
    if ((rc = handle_for(payload, payload_size, ring_out)) != SHMP_OK)
        shmp_seg_unmap(payload, payload_size);
    return rc;
}

void shmp_ring_close(shmp_ring *r)
{
    if (r == NULL)
        return;
    if (r->reserving && (r->flags & SHMP_RING_MULTI_PRODUCER))
        shmp_lock_release(&r->sh->producer_lock);
    if (r->peeking && (r->flags & SHMP_RING_MULTI_CONSUMER))
        shmp_lock_release(&r->sh->consumer_lock);
    shmp_seg_unmap(r->sh, r->payload_size);
    free(r->bounce);
    free(r);
}

/* ---- side locks ------------------------------------------------------------ */

static int side_lock(shmp_ring *r, uint32_t flag, pthread_mutex_t *m, uint64_t deadline)
{
    if (!(r->flags & flag))
        return SHMP_OK;
    int64_t left = shmp_remaining(deadline);
    /* A try-op still waits briefly: the lock is held only for a copy. */
    if (left == 0)
        left = LOCK_SLICE_NS;
    return shmp_lock_acquire(m, left);
}

static void side_unlock(shmp_ring *r, uint32_t flag, pthread_mutex_t *m)
{
    if (r->flags & flag)
        shmp_lock_release(m);
}

#define PLOCK(r, d)  side_lock((r), SHMP_RING_MULTI_PRODUCER, &(r)->sh->producer_lock, (d))
#define PUNLOCK(r)   side_unlock((r), SHMP_RING_MULTI_PRODUCER, &(r)->sh->producer_lock)
#define CLOCK_(r, d) side_lock((r), SHMP_RING_MULTI_CONSUMER, &(r)->sh->consumer_lock, (d))
#define CUNLOCK(r)   side_unlock((r), SHMP_RING_MULTI_CONSUMER, &(r)->sh->consumer_lock)

/* ---- wake-ups (see wait.c for the protocol) --------------------------------- */

static void wake_consumers(shmp_ring *r)
{
    /* seq_cst fence: orders our tail store before the waiters load; pairs
     * with the seq_cst increment + re-check in wait_for().              */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->sh->data_waiters, memory_order_relaxed) != 0) {
        atomic_fetch_add_explicit(&r->sh->data_seq, 1, memory_order_release);
        shmp_os_futex_wake(&r->sh->data_seq, INT_MAX);
    }
}

static void wake_producers(shmp_ring *r)
{
    /* seq_cst fence: orders our head store before the waiters load. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->sh->space_waiters, memory_order_relaxed) != 0) {
        atomic_fetch_add_explicit(&r->sh->space_seq, 1, memory_order_release);
        shmp_os_futex_wake(&r->sh->space_seq, INT_MAX);
    }
}

/* Wait until `ready(r, arg)` holds, the deadline passes or a signal comes.
 * First spin on the condition itself, without registering as a waiter, so
 * a peer that is about to publish pays no wake-up syscall; only then
 * register and sleep on the futex word (protocol in wait.c).            */
typedef bool (*ready_fn)(shmp_ring *r, uint64_t arg);

#define RING_SPIN_NS 20000u

static bool spin_ready(shmp_ring *r, ready_fn ready, uint64_t arg, uint64_t deadline)
{
    uint64_t stop = shmp_now_ns() + RING_SPIN_NS;
    if (deadline < stop)
        stop = deadline;
    for (unsigned i = 1;; i++) {
        if (ready(r, arg))
            return true;
        shmp_cpu_relax();
        if ((i & 15u) == 0 && shmp_now_ns() >= stop)
            return false;
    }
}

static int wait_for(shmp_ring *r, _Atomic uint32_t *seq, _Atomic uint32_t *waiters,
                    ready_fn ready, uint64_t arg, uint64_t deadline)
{
    for (;;) {
        if (ready(r, arg))
            return SHMP_OK;
        if (atomic_load_explicit(&r->sh->closed, memory_order_acquire))
            return SHMP_ESTATE;
        int64_t left = shmp_remaining(deadline);
        if (left == 0)
            return SHMP_ETIMEDOUT;
        if (spin_ready(r, ready, arg, deadline))
            return SHMP_OK;
        left = shmp_remaining(deadline);
        if (left == 0)
            return SHMP_ETIMEDOUT;
        uint32_t s = atomic_load_explicit(seq, memory_order_acquire);
        atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
        atomic_thread_fence(memory_order_seq_cst);  /* pairs with wake_*() fence */
        int rc = SHMP_OK;
        if (!ready(r, arg) && !atomic_load_explicit(&r->sh->closed, memory_order_acquire))
            rc = shmp_os_futex_wait(seq, s, left);
        atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
        if (rc == SHMP_ETIMEDOUT)
            return ready(r, arg) ? SHMP_OK : SHMP_ETIMEDOUT;
        if (rc != SHMP_OK)
            return rc;
    }
}

/* ---- producer ---------------------------------------------------------------- */

#define LOAD_RELAXED(x)     atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE_RELAXED(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

static uint64_t free_bytes(shmp_ring *r, uint64_t tail)
{
    /* Another producer may have moved tail far past a stale cached head. */
    uint64_t used = tail - LOAD_RELAXED(r->cached_head);
    return used >= r->cap ? 0 : r->cap - used;
}

/* Room for `need` bytes (and one more record if bounded)?  Refreshes the
 * cached head only when the cached view says no.                          */
static bool has_room(shmp_ring *r, uint64_t need)
{
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
    if (free_bytes(r, tail) < need) {
        /* acquire: pairs with the consumer's release store of head, so its
         * reads of the bytes we are about to overwrite are complete.     */
        STORE_RELAXED(r->cached_head, atomic_load_explicit(&r->sh->head, memory_order_acquire));
        if (free_bytes(r, tail) < need)
            return false;
    }
    if (r->max_items != 0) {
        uint64_t n = atomic_load_explicit(&r->sh->tail_count, memory_order_relaxed) -
                     atomic_load_explicit(&r->sh->head_count, memory_order_acquire);
        if ((int64_t)n >= (int64_t)r->max_items)
            return false;
    }
    return true;
}

static bool room_ready(shmp_ring *r, uint64_t need) { return has_room(r, need); }

static void write_bytes(shmp_ring *r, uint64_t index, const void *src, uint64_t len)
{
    uint64_t pos = index & r->mask;
    uint64_t first = r->cap - pos;
    if (first >= len) {
        memcpy(r->data + pos, src, (size_t)len);
    } else {                            /* wraps: two copies */
        memcpy(r->data + pos, src, (size_t)first);
        memcpy(r->data, (const uint8_t *)src + first, (size_t)(len - first));
    }
}

static void write_record(shmp_ring *r, uint64_t index, const void *data, uint32_t len,
                         uint32_t flags)
{
    shmp_rec_header h = { len, flags };
    memcpy(r->data + (index & r->mask), &h, sizeof h);
    if (len)
        write_bytes(r, index + REC_HDR, data, len);
}

/* Wait for room with the producer lock released, then take it again. */
static int acquire_room(shmp_ring *r, uint64_t need, uint64_t deadline, int64_t timeout_ns)
{
    for (;;) {
        int rc = PLOCK(r, deadline);
        if (rc != SHMP_OK)
            return rc;
        if (has_room(r, need))
            return SHMP_OK;
        PUNLOCK(r);
        if (timeout_ns == 0)
            return SHMP_EFULL;
        rc = wait_for(r, &r->sh->space_seq, &r->sh->space_waiters, room_ready, need, deadline);
        if (rc == SHMP_ETIMEDOUT)
            return SHMP_EFULL;
        if (rc != SHMP_OK)
            return rc;
    }
}

static int check_tag(uint32_t tag)
{
    return tag < SHMP_REC_PAD ? SHMP_OK : SHMP_EINVAL;
}

int shmp_ring_put(shmp_ring *r, const char *data, uint32_t len, uint32_t tag, int64_t timeout_ns)
{
    if (r == NULL || (data == NULL && len != 0) || check_tag(tag) != SHMP_OK)
        return SHMP_EINVAL;
    if (r->reserving)
        return SHMP_ESTATE;
    if (len > shmp_ring_max_record(r))
        return SHMP_ETOOBIG;
    if (atomic_load_explicit(&r->sh->closed, memory_order_acquire))
        return SHMP_ESTATE;
    uint64_t need = rec_size(len);
    int rc = acquire_room(r, need, shmp_deadline(timeout_ns), timeout_ns);
    if (rc != SHMP_OK)
        return rc;
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
    write_record(r, tail, data, len, tag);
    /* release: publishes header and payload; pairs with the consumer's
     * acquire load of tail.                                              */
    atomic_store_explicit(&r->sh->tail, tail + need, memory_order_release);
    SHMP_FAULT(SHMP_FAULT_PRODUCER_PUBLISHED);
    atomic_fetch_add_explicit(&r->sh->tail_count, 1, memory_order_release);
    PUNLOCK(r);
    wake_consumers(r);
    return SHMP_OK;
}

int shmp_ring_put_many(shmp_ring *r, const void *blob, const uint32_t *lens,
                       const uint32_t *tags, uint32_t count, int64_t timeout_ns,
                       uint32_t *done_out)
{
    if (done_out != NULL)
        *done_out = 0;
    if (r == NULL || done_out == NULL || (count != 0 && (lens == NULL || blob == NULL)))
        return SHMP_EINVAL;
    for (uint32_t i = 0; tags != NULL && i < count; i++)
        if (check_tag(tags[i]) != SHMP_OK)
            return SHMP_EINVAL;
    if (r->reserving)
        return SHMP_ESTATE;
    uint64_t maxrec = shmp_ring_max_record(r);
    const uint8_t *src = blob;
    uint64_t deadline = shmp_deadline(timeout_ns);
    uint32_t done = 0;
    int rc = SHMP_OK;
    while (done < count) {
        if (lens[done] > maxrec) {
            rc = SHMP_ETOOBIG;
            break;
        }
        if (atomic_load_explicit(&r->sh->closed, memory_order_acquire)) {
            rc = SHMP_ESTATE;
            break;
        }
        rc = acquire_room(r, rec_size(lens[done]), deadline, timeout_ns);
        if (rc != SHMP_OK)
            break;
        /* Write every record that fits now, then publish them together:
         * one release store and one wake-up for the whole batch.        */
        uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
        uint32_t first = done;
        do {
            write_record(r, tail, src, lens[done], tags ? tags[done] : 0);
            tail += rec_size(lens[done]);
            src += lens[done];
            done++;
            if (r->max_items != 0)
                break;                  /* bounded: re-check the item limit per record */
        } while (done < count && lens[done] <= maxrec &&
                 free_bytes(r, tail) >= rec_size(lens[done]));
        atomic_store_explicit(&r->sh->tail, tail, memory_order_release);   /* publish batch */
        SHMP_FAULT(SHMP_FAULT_PRODUCER_PUBLISHED);
        atomic_fetch_add_explicit(&r->sh->tail_count, done - first, memory_order_release);
        PUNLOCK(r);
        wake_consumers(r);
    }
    *done_out = done;
    return rc;
}

int shmp_ring_reserve(shmp_ring *r, uint32_t len, int64_t timeout_ns, void **ptr_out)
{
    if (r == NULL || ptr_out == NULL)
        return SHMP_EINVAL;
    if (r->reserving)
        return SHMP_ESTATE;
    if (len > shmp_ring_max_record(r))
        return SHMP_ETOOBIG;
    if (atomic_load_explicit(&r->sh->closed, memory_order_acquire))
        return SHMP_ESTATE;
    uint64_t need = rec_size(len);
    uint64_t deadline = shmp_deadline(timeout_ns);
    for (;;) {
        int rc = acquire_room(r, need, deadline, timeout_ns);
        if (rc != SHMP_OK)
            return rc;
        uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
        uint64_t to_end = r->cap - (tail & r->mask);
        if (to_end >= need || to_end == r->cap) {
            r->reserving = 1;
            r->reserve_pos = tail;
            r->reserve_len = len;
            *ptr_out = r->data + ((tail + REC_HDR) & r->mask);
            return SHMP_OK;                 /* producer lock stays held until commit */
        }
        /* Not contiguous: fill to the end with a PAD record, publish it,
         * and try again from position 0.  The PAD fits: there is room for
         * `need` bytes and to_end < need.                                 */
        shmp_rec_header pad = { (uint32_t)(to_end - REC_HDR), SHMP_REC_PAD };
        memcpy(r->data + (tail & r->mask), &pad, sizeof pad);
        atomic_store_explicit(&r->sh->tail, tail + to_end, memory_order_release);
        PUNLOCK(r);
        wake_consumers(r);
    }
}

int shmp_ring_commit(shmp_ring *r, uint32_t len, uint32_t tag)
{
    if (r == NULL || check_tag(tag) != SHMP_OK)
        return SHMP_EINVAL;
    if (!r->reserving)
        return SHMP_ESTATE;
    if (len > r->reserve_len)
        return SHMP_EINVAL;                 /* may shrink, never grow */
    shmp_rec_header h = { len, tag };
    memcpy(r->data + (r->reserve_pos & r->mask), &h, sizeof h);
    /* release: publishes the bytes written in place; pairs with the
     * consumer's acquire load of tail.                                   */
    atomic_store_explicit(&r->sh->tail, r->reserve_pos + rec_size(len), memory_order_release);
    atomic_fetch_add_explicit(&r->sh->tail_count, 1, memory_order_release);
    r->reserving = 0;
    PUNLOCK(r);
    wake_consumers(r);
    return SHMP_OK;
}

int shmp_ring_abort(shmp_ring *r)
{
    if (r == NULL)
        return SHMP_EINVAL;
    if (!r->reserving)
        return SHMP_ESTATE;
    r->reserving = 0;                       /* nothing was published */
    PUNLOCK(r);
    return SHMP_OK;
}

/* ---- consumer ---------------------------------------------------------------- */

static bool has_data(shmp_ring *r, uint64_t unused)
{
    (void)unused;
    uint64_t head = atomic_load_explicit(&r->sh->head, memory_order_relaxed);
    /* `<=`, not `==`: another consumer may have moved head past our view. */
    if (LOAD_RELAXED(r->cached_tail) <= head) {
        /* acquire: pairs with the producer's release store of tail. */
        uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
        STORE_RELAXED(r->cached_tail, tail);
        if (tail <= head)
            return false;
    }
    return true;
}

static void read_bytes(shmp_ring *r, uint64_t index, void *dst, uint64_t len)
{
    uint64_t pos = index & r->mask;
    uint64_t first = r->cap - pos;
    if (first >= len) {
        memcpy(dst, r->data + pos, (size_t)len);
    } else {                                /* wraps: two copies */
        memcpy(dst, r->data + pos, (size_t)first);
        memcpy((uint8_t *)dst + first, r->data, (size_t)(len - first));
    }
}

/* Skip PAD records and validate the next record header.  Caller holds the
 * consumer side and has seen data.  Sets *head to the record's index.    */
static int next_record(shmp_ring *r, uint64_t *head, shmp_rec_header *out)
{
    for (;;) {
        uint64_t tail = LOAD_RELAXED(r->cached_tail);
        if (tail <= *head)
            return SHMP_EEMPTY;
        uint64_t avail = tail - *head;
        if (avail < REC_HDR || avail > r->cap)
            return SHMP_ECORRUPT;
        shmp_rec_header h;
        memcpy(&h, r->data + (*head & r->mask), sizeof h);
        uint64_t size = rec_size(h.len);
        if (h.flags & SHMP_REC_PAD) {
            uint64_t to_end = r->cap - (*head & r->mask);
            if (size != to_end || size > avail)
                return SHMP_ECORRUPT;
            *head += to_end;
            /* Publish the skip now so the producer regains that space even
             * if the caller then finds nothing else.                    */
            atomic_store_explicit(&r->sh->head, *head, memory_order_release);
            continue;
        }
        if (size > avail || h.len > shmp_ring_max_record(r))
            return SHMP_ECORRUPT;
        *out = h;
        return SHMP_OK;
    }
}

static int wait_data_unlocked(shmp_ring *r, uint64_t deadline, int64_t timeout_ns)
{
    if (timeout_ns == 0)
        return SHMP_EEMPTY;
    int rc = wait_for(r, &r->sh->data_seq, &r->sh->data_waiters, has_data, 0, deadline);
    return rc == SHMP_ETIMEDOUT ? SHMP_EEMPTY : rc;
}

/* Take the consumer side with at least one real record available. */
static int acquire_record(shmp_ring *r, uint64_t deadline, int64_t timeout_ns,
                          uint64_t *head, shmp_rec_header *h)
{
    for (;;) {
        int rc = CLOCK_(r, deadline);
        if (rc != SHMP_OK)
            return rc;
        *head = atomic_load_explicit(&r->sh->head, memory_order_relaxed);
        if (has_data(r, 0)) {
            rc = next_record(r, head, h);
            if (rc == SHMP_OK)
                return SHMP_OK;
            if (rc != SHMP_EEMPTY) {
                CUNLOCK(r);
                return rc;
            }
            wake_producers(r);          /* a PAD was consumed */
        }
        CUNLOCK(r);
        rc = wait_data_unlocked(r, deadline, timeout_ns);
        if (rc != SHMP_OK)
            return rc;
    }
}

static void finish_consume(shmp_ring *r, uint64_t new_head, uint64_t records)
{
    /* release: our reads of the records are done before the producer may
     * reuse their bytes; pairs with the producer's acquire load of head. */
    atomic_store_explicit(&r->sh->head, new_head, memory_order_release);
    SHMP_FAULT(SHMP_FAULT_CONSUMER_PUBLISHED);
    atomic_fetch_add_explicit(&r->sh->head_count, records, memory_order_release);
}

int shmp_ring_get(shmp_ring *r, void *dst, uint64_t cap, int64_t timeout_ns,
                  uint32_t *len_out, uint32_t *tag_out)
{
    if (r == NULL || len_out == NULL || (dst == NULL && cap != 0))
        return SHMP_EINVAL;
    if (r->peeking)
        return SHMP_ESTATE;
    uint64_t head;
    shmp_rec_header h;
    int rc = acquire_record(r, shmp_deadline(timeout_ns), timeout_ns, &head, &h);
    if (rc != SHMP_OK)
        return rc;
    *len_out = h.len;
    if (h.len > cap) {
        CUNLOCK(r);
        return SHMP_ESMALLBUF;          /* nothing consumed; *len_out says how much */
    }
    if (h.len)
        read_bytes(r, head + REC_HDR, dst, h.len);
    if (tag_out != NULL)
        *tag_out = h.flags & SHMP_REC_FLAG_MASK;
    finish_consume(r, head + rec_size(h.len), 1);
    CUNLOCK(r);
    wake_producers(r);
    return SHMP_OK;
}

int64_t shmp_ring_get_record(shmp_ring *r, void *dst, uint64_t cap, int64_t timeout_ns)
{
    uint32_t len, tag;
    int rc = shmp_ring_get(r, dst, cap, timeout_ns, &len, &tag);
    return rc == SHMP_OK ? (int64_t)(((uint64_t)tag << 32) | len) : rc;
}

int shmp_ring_get_many(shmp_ring *r, void *dst, uint64_t cap, uint32_t max_count,
                       int64_t timeout_ns, uint32_t *lens_out, uint32_t *tags_out,
                       uint32_t *count_out)
{
    if (count_out != NULL)
        *count_out = 0;
    if (r == NULL || lens_out == NULL || count_out == NULL || max_count == 0 ||
        (dst == NULL && cap != 0))
        return SHMP_EINVAL;
    if (r->peeking)
        return SHMP_ESTATE;
    uint64_t head;
    shmp_rec_header h;
    int rc = acquire_record(r, shmp_deadline(timeout_ns), timeout_ns, &head, &h);
    if (rc != SHMP_OK)
        return rc;
    if (h.len > cap) {
        lens_out[0] = h.len;
        CUNLOCK(r);
        return SHMP_ESMALLBUF;
    }
    uint8_t *out = dst;
    uint64_t used = 0;
    uint32_t n = 0;
    for (;;) {
        if (h.len)
            read_bytes(r, head + REC_HDR, out + used, h.len);
        used += h.len;
        lens_out[n] = h.len;
        if (tags_out != NULL)
            tags_out[n] = h.flags & SHMP_REC_FLAG_MASK;
        n++;
        head += rec_size(h.len);
        if (n == max_count)
            break;
        if (LOAD_RELAXED(r->cached_tail) <= head && !has_data(r, 0))
            break;
        rc = next_record(r, &head, &h);
        if (rc == SHMP_EEMPTY)
            break;
        if (rc != SHMP_OK) {
            /* Return what was read so far; the bad record stays queued
             * and the next call reports it.                              */
            break;
        }
        if (h.len > cap - used)
            break;
    }
    finish_consume(r, head, n);
    CUNLOCK(r);
    wake_producers(r);
    *count_out = n;
    return SHMP_OK;
}

int shmp_ring_peek(shmp_ring *r, int64_t timeout_ns, const void **ptr_out,
                   uint32_t *len_out, uint32_t *tag_out)
{
    if (r == NULL || ptr_out == NULL || len_out == NULL)
        return SHMP_EINVAL;
    if (r->peeking)
        return SHMP_ESTATE;
    uint64_t head;
    shmp_rec_header h;
    int rc = acquire_record(r, shmp_deadline(timeout_ns), timeout_ns, &head, &h);
    if (rc != SHMP_OK)
        return rc;
    uint64_t pos = (head + REC_HDR) & r->mask;
    if (r->cap - pos >= h.len) {
        *ptr_out = r->data + pos;           /* in place: no copy */
    } else {
        if (r->bounce_cap < h.len) {
            uint8_t *nb = realloc(r->bounce, h.len);
            if (nb == NULL) {
                CUNLOCK(r);
                return SHMP_ENOMEM;
            }
            r->bounce = nb;
            r->bounce_cap = h.len;
        }
        read_bytes(r, head + REC_HDR, r->bounce, h.len);
        *ptr_out = r->bounce;
    }
    *len_out = h.len;
    if (tag_out != NULL)
        *tag_out = h.flags & SHMP_REC_FLAG_MASK;
    r->peeking = 1;
    r->peek_next = head + rec_size(h.len);
    return SHMP_OK;                         /* consumer lock stays held until release */
}

int shmp_ring_release(shmp_ring *r)
{
    if (r == NULL)
        return SHMP_EINVAL;
    if (!r->peeking)
        return SHMP_ESTATE;
    finish_consume(r, r->peek_next, 1);
    r->peeking = 0;
    CUNLOCK(r);
    wake_producers(r);
    return SHMP_OK;
}

/* ---- either side ------------------------------------------------------------- */

uint64_t shmp_ring_count(const shmp_ring *r)
{
    if (r == NULL)
        return 0;
    uint64_t done = atomic_load_explicit(&r->sh->head_count, memory_order_acquire);
    uint64_t made = atomic_load_explicit(&r->sh->tail_count, memory_order_acquire);
    return made > done ? made - done : 0;
}

uint64_t shmp_ring_used_bytes(const shmp_ring *r)
{
    if (r == NULL)
        return 0;
    uint64_t head = atomic_load_explicit(&r->sh->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
    return tail - head <= r->cap ? tail - head : r->cap;
}

int shmp_ring_wait_data(shmp_ring *r, int64_t timeout_ns)
{
    if (r == NULL)
        return SHMP_EINVAL;
    int rc = wait_for(r, &r->sh->data_seq, &r->sh->data_waiters, has_data, 0,
                      shmp_deadline(timeout_ns));
    return rc == SHMP_ETIMEDOUT ? SHMP_EEMPTY : rc;
}

int shmp_ring_mark_closed(shmp_ring *r)
{
    if (r == NULL)
        return SHMP_EINVAL;
    atomic_store_explicit(&r->sh->closed, 1, memory_order_release);
    /* Bump both words so every sleeper wakes and sees `closed`. */
    atomic_fetch_add_explicit(&r->sh->data_seq, 1, memory_order_release);
    atomic_fetch_add_explicit(&r->sh->space_seq, 1, memory_order_release);
    shmp_os_futex_wake(&r->sh->data_seq, INT_MAX);
    shmp_os_futex_wake(&r->sh->space_seq, INT_MAX);
    return SHMP_OK;
}

int shmp_ring_is_closed(const shmp_ring *r)
{
    return r != NULL && atomic_load_explicit(&r->sh->closed, memory_order_acquire) != 0;
}
