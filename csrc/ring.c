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
 * the data area is written and read as two copies.
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
 * Sides.  A single producer or a single consumer takes no lock at all:
 * its operations are loads and stores of the indices, a copy, and a
 * wake-up syscall only when the other side sleeps (wait.c).  "Single"
 * means one thread of one process at a time on that side: nothing checks
 * it, and two would corrupt the ring (the caller serialises, as the pool
 * does; see queue.py).  With SHMP_RING_MULTI_PRODUCER (or _CONSUMER) the
 * side's operations are serialised by a robust process-shared mutex
 * (lock.c).  Nothing a holder writes is visible before its index store, so
 * a holder that dies leaves no half record; what it can leave half done is
 * the record count stored just after the index, and the side's journal
 * (below) repairs that.
 * Waiting for space or data happens with the lock released, and waiting
 * for the lock itself happens in slices, so Ctrl-C works while another
 * process sits on the lock (side_lock).
 *
 * Trust.  Every index, length and flag read from shared memory is checked
 * before it is used to address the data area: a damaged ring gives
 * SHMP_ECORRUPT, never an access outside the data area (docs/architecture.md,
 * "Trust boundary").
 */
#include "shmp_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REC_HDR   8u
#define MIN_CAP   64u
#define MAX_CAP   (1ull << 36)          /* 64 GiB of ring is plenty */
/* A side lock is awaited in slices this long; between slices a blocking
 * call returns SHMP_EINTR so the caller (Python) can run its signal
 * handlers, then calls again with the time left.  A try-op (timeout 0)
 * waits one slice: the lock is normally held only for a copy.          */
#define LOCK_SLICE_NS 50000000
/* A sleeper re-checks its condition at least every 200 ms even if no
 * wake-up comes (wait.c, SHMP_WAIT_SLICE_NS): a peer killed after
 * publishing but before its wake-up call must not leave anyone asleep for
 * ever (DESIGN: a dead writer blocks no one for more than 1 s).         */
/* A producer held back by max_items looks this often for a consumer that
 * died holding the consumer lock (recover_dead_consumer).              */
#define PROBE_NS      100000000

struct shmp_ring {
    shmp_ring_shared *sh;
    uint64_t payload_size;              /* for unmap: local, never re-read from shared memory */
    uint8_t *data;
    uint64_t cap;
    uint64_t mask;
    uint64_t max_items;
    uint32_t flags;
    /* Each side's last view of the other's index.  Threads of one process
     * may share a handle, and a thread may act on a view another thread
     * stored: the unlocked spin in wait_ring() stores views outside the side
     * lock.  A relaxed view would carry the number but not the ordering: a
     * consumer thread could read a record's bytes through a cached tail
     * without the happens-before that the storing thread's acquire load of
     * `tail` gave it (stale bytes on ARM), and a producer thread could
     * overwrite bytes a consumer is still reading.  So views are stored
     * with release (VIEW_STORE) after the acquire load of the peer's index,
     * and loaded with acquire (VIEW_LOAD): the chain consumer-release ->
     * thread A acquire -> A release view -> thread B acquire view carries
     * the peer's ordering to B.  Free on x86.  A stale value is always safe:
     * it under-states both free space and available data.              */
    _Atomic uint64_t cached_head;       /* producer's view of head */
    _Atomic uint64_t cached_tail;       /* consumer's view of tail */
    int64_t wait_slice_ns;              /* this handle's re-check slice (wait.c) */
};

/* Views (see struct shmp_ring): release store pairs with acquire load. */
#define VIEW_LOAD(x)     atomic_load_explicit(&(x), memory_order_acquire)
#define VIEW_STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_release)

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
    /* A record takes at least REC_HDR bytes, so more items than that can
     * never be queued; creation clamps to it, a larger value is damage.  */
    if (sh->max_items > cap / REC_HDR)
        return SHMP_ECORRUPT;
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
    if (tail - head > cap || (head & 7u) != 0 || (tail & 7u) != 0)
        return SHMP_ECORRUPT;
    if (atomic_load_explicit(&sh->sealed, memory_order_acquire) > 1)
        return SHMP_ECORRUPT;           /* a flag: 0 or 1 */
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
    r->wait_slice_ns = SHMP_WAIT_SLICE_NS;
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
    /* No more than capacity / REC_HDR records ever fit: a larger bound
     * means the same, and attach can then reject larger values as damage. */
    sh->max_items = max_items > capacity / REC_HDR ? capacity / REC_HDR : max_items;
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
    shmp_seg_unmap(r->sh, r->payload_size);
    free(r);
}

/* ---- side locks ------------------------------------------------------------ */

static void recovered(shmp_ring *r, uint32_t flag);

/* Take a side lock, or return SHMP_EINTR after one slice of waiting.
 *
 * pthread_mutex_lock and _clocklock restart their futex wait after a
 * signal handler returns, so a process stopped (SIGSTOP, a debugger) while
 * holding the lock would make a blocked get() deaf to Ctrl-C: Python runs
 * its handlers only when the C call returns.  Waiting in slices and
 * returning SHMP_EINTR between them gives it that chance; the caller
 * retries with the time left (queue.py does), so a timeout still bounds
 * the whole wait and a wait without one still waits for ever.          */
static int side_lock(shmp_ring *r, uint32_t flag, pthread_mutex_t *m, uint64_t deadline)
{
    if (!(r->flags & flag))
        return SHMP_OK;
    int64_t left = shmp_remaining(deadline);
    bool try_op = left == 0;
    int64_t slice = (try_op || left < 0 || left > LOCK_SLICE_NS) ? LOCK_SLICE_NS : left;
    int rc = shmp_lock_acquire(m, slice);
    if (rc == SHMP_LOCK_RECOVERED) {
        recovered(r, flag);
        return SHMP_OK;
    }
    if (rc == SHMP_ETIMEDOUT && !try_op && shmp_remaining(deadline) != 0)
        return SHMP_EINTR;
    return rc;
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

/* After our tail store: a syscall only if a consumer is registered asleep
 * (data_seq is bumped only then, so a busy ring never writes line 3).   */
static void wake_consumers(shmp_ring *r)
{
    shmp_bump_and_wake(&r->sh->data_seq, &r->sh->data_waiters);
}

/* After our head store: likewise for producers waiting for space. */
static void wake_producers(shmp_ring *r)
{
    shmp_bump_and_wake(&r->sh->space_seq, &r->sh->space_waiters);
}

/* ---- the side journal ----------------------------------------------------------
 *
 * Finishing an operation takes two stores: the index (tail or head; the
 * commit point, what the other side acts on) and then the record count
 * beside it (what max_items and qsize read).  A lock holder killed between
 * the two would leave the count wrong for ever: a consumer's death leaves
 * the queue one item fuller than it is (a maxsize=1 queue then stays
 * full), a producer's lets one item too many in.
 *
 * Things that don't work: one store for both (no portable 128-bit
 * atomic); deriving the count from the bytes (the other side moves them
 * concurrently); clearing a "busy" flag after the stores (the dead
 * holder's flag says nothing about which store it reached).
 *
 * Solution: a locked side first writes its journal: the index and count
 * it is about to store.  The next holder of the lock, told by the robust
 * mutex that its owner died (SHMP_LOCK_RECOVERED), replays: if the index
 * equals the journal's, the commit happened, so the count is set to the
 * journal's; otherwise nothing was published and nothing is done.  The
 * journal is never cleared: a stale entry replays to the values already
 * there, because the index only moves forward and the count moves only
 * after a journalled index store.  Journal index first, then journal
 * count: a death between those two leaves a new index in the journal,
 * which the old index cannot equal.
 *
 * Unlocked sides (single producer or consumer) have no journal: nobody
 * takes over their side, so there is nothing to replay.
 */
static void publish(shmp_ring *r, uint32_t flag, _Atomic uint64_t *index,
                    _Atomic uint64_t *count, _Atomic uint64_t *j_index,
                    _Atomic uint64_t *j_count, uint64_t new_index, uint64_t records,
                    uint32_t fault)
{
    (void)fault;
    /* Our side's count: only we (the lock holder, or the single side) store it. */
    uint64_t new_count = atomic_load_explicit(count, memory_order_relaxed) + records;
    if (r->flags & flag) {
        atomic_store_explicit(j_index, new_index, memory_order_relaxed);
        /* release: keeps the journal index store before this one even for
         * a process killed between them (the compiler may not swap them). */
        atomic_store_explicit(j_count, new_count, memory_order_release);
    }
    /* release: publishes the records (producer) or ends our reads of them
     * (consumer), and the journal above; pairs with the other side's
     * acquire load of this index, and with replay()'s.                   */
    atomic_store_explicit(index, new_index, memory_order_release);
    SHMP_FAULT(fault);
    /* release: pairs with the acquire load of the counts in room_state()
     * and shmp_ring_count().                                             */
    atomic_store_explicit(count, new_count, memory_order_release);
}

static void replay(_Atomic uint64_t *index, _Atomic uint64_t *count,
                   _Atomic uint64_t *j_index, _Atomic uint64_t *j_count)
{
    /* acquire: pairs with publish()'s release store of the index, so seeing
     * the dead holder's index means seeing its journal.  (Its stores all
     * happened before its death; the kernel marks the lock owner-dead from
     * the dying thread itself, and our lock acquisition read that mark.) */
    uint64_t at = atomic_load_explicit(index, memory_order_acquire);
    if (at == atomic_load_explicit(j_index, memory_order_relaxed))
        atomic_store_explicit(count, atomic_load_explicit(j_count, memory_order_relaxed),
                              memory_order_release);   /* pairs as publish()'s count store */
}

static void wake_consumers(shmp_ring *r);
static void wake_producers(shmp_ring *r);

/* We hold a side lock whose previous holder died: finish its count. */
static void recovered(shmp_ring *r, uint32_t flag)
{
    shmp_ring_shared *sh = r->sh;
    if (flag == SHMP_RING_MULTI_PRODUCER) {
        replay(&sh->tail, &sh->tail_count, &sh->tail_journal, &sh->tail_count_journal);
        wake_consumers(r);          /* it may have died before its wake-up call */
    } else {
        replay(&sh->head, &sh->head_count, &sh->head_journal, &sh->head_count_journal);
        wake_producers(r);          /* its count held producers back */
    }
}

/* A consumer killed between its head and count stores leaves the count
 * high until the next consumer takes the lock.  A producer held back by
 * max_items must not wait for that: there may be no next consumer, or it
 * may be asleep waiting for data that this producer cannot put.  So the
 * producer looks (try-lock only: a live holder is left alone) and replays
 * the consumer's journal itself.  Lock order: producer, then consumer;
 * nothing takes them the other way round.  True if it repaired a count. */
static bool recover_dead_consumer(shmp_ring *r)
{
    if (!(r->flags & SHMP_RING_MULTI_CONSUMER))
        return false;
    int rc = shmp_lock_acquire(&r->sh->consumer_lock, 0);
    if (rc < 0)
        return false;               /* busy: its holder is alive (or we look later) */
    if (rc == SHMP_LOCK_RECOVERED)
        replay(&r->sh->head, &r->sh->head_count, &r->sh->head_journal,
               &r->sh->head_count_journal);
    shmp_lock_release(&r->sh->consumer_lock);
    return rc == SHMP_LOCK_RECOVERED;
}

#define PUBLISH_TAIL(r, t, n) \
    publish((r), SHMP_RING_MULTI_PRODUCER, &(r)->sh->tail, &(r)->sh->tail_count, \
            &(r)->sh->tail_journal, &(r)->sh->tail_count_journal, (t), (n), \
            SHMP_FAULT_PRODUCER_PUBLISHED)
#define PUBLISH_HEAD(r, h, n) \
    publish((r), SHMP_RING_MULTI_CONSUMER, &(r)->sh->head, &(r)->sh->head_count, \
            &(r)->sh->head_journal, &(r)->sh->head_count_journal, (h), (n), \
            SHMP_FAULT_CONSUMER_PUBLISHED)

/* Wait until `ready(r, arg)` holds (OK), the ring is closed (ESTATE), the
 * deadline passes (ETIMEDOUT) or a signal comes (EINTR), with wait.c's
 * primitive: spin on the condition unregistered, then register and sleep
 * on the side's sequence word in slices.  Called with no lock held.     */
typedef bool (*ready_fn)(shmp_ring *r, uint64_t arg);

struct ring_wait { shmp_ring *r; ready_fn ready; uint64_t arg; };

static int ring_cond(void *p)
{
    struct ring_wait *w = p;
    if (w->ready(w->r, w->arg))
        return 1;
    /* acquire: pairs with shmp_ring_mark_closed's release store. */
    if (atomic_load_explicit(&w->r->sh->closed, memory_order_acquire))
        return SHMP_ESTATE;
    return 0;
}

static int wait_ring(shmp_ring *r, _Atomic uint32_t *seq, _Atomic uint32_t *waiters,
                     ready_fn ready, uint64_t arg, uint64_t deadline)
{
    struct ring_wait w = { r, ready, arg };
    return shmp_wait_sliced(seq, waiters, ring_cond, &w, deadline, r->wait_slice_ns);
}

void shmp_ring_set_wait_slice(shmp_ring *r, int64_t slice_ns)
{
    r->wait_slice_ns = slice_ns < 0 ? SHMP_WAIT_SLICE_NS : slice_ns;
}

/* ---- producer ---------------------------------------------------------------- */

static uint64_t free_bytes(shmp_ring *r, uint64_t tail)
{
    /* Another producer may have moved tail far past a stale cached head. */
    uint64_t used = tail - VIEW_LOAD(r->cached_head);
    return used >= r->cap ? 0 : r->cap - used;
}

enum { ROOM_YES, ROOM_NO_BYTES, ROOM_NO_ITEMS, ROOM_CORRUPT };

/* Room for `need` bytes (and one more record if bounded)?  Refreshes the
 * cached head only when the cached view says no.  Checks what it reads:
 * a tail off the 8-byte grid would put a record header across the end of
 * the data area, and tail - head beyond the capacity means one of them
 * is damaged.                                                           */
static int room_state(shmp_ring *r, uint64_t need)
{
    uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_relaxed);
    if ((tail & 7u) != 0)
        return ROOM_CORRUPT;
    if (free_bytes(r, tail) < need) {
        /* acquire: pairs with the consumer's release store of head, so its
         * reads of the bytes we are about to overwrite are complete.     */
        uint64_t head = atomic_load_explicit(&r->sh->head, memory_order_acquire);
        if (tail - head > r->cap || (head & 7u) != 0)
            return ROOM_CORRUPT;
        VIEW_STORE(r->cached_head, head);   /* release: pairs with VIEW_LOAD in free_bytes */
        if (free_bytes(r, tail) < need)
            return ROOM_NO_BYTES;
    }
    if (r->max_items != 0) {
        /* acquire: pairs with the release store of head_count in publish(). */
        int64_t n = (int64_t)(atomic_load_explicit(&r->sh->tail_count, memory_order_relaxed) -
                              atomic_load_explicit(&r->sh->head_count, memory_order_acquire));
        /* The counts may disagree with the bytes by a batch in flight either
         * way (each side stores its count after its index), never by more
         * than a few ringfuls of minimal records.                         */
        int64_t limit = 4 * (int64_t)(r->cap / REC_HDR);
        if (n > limit || n < -limit)
            return ROOM_CORRUPT;
        if (n >= (int64_t)r->max_items)
            return ROOM_NO_ITEMS;
    }
    return ROOM_YES;
}

/* Ready to look again: room, a seal, or damage to report under the lock. */
static bool room_ready(shmp_ring *r, uint64_t need)
{
    /* acquire: pairs with shmp_ring_seal's release store of `sealed`. */
    if (atomic_load_explicit(&r->sh->sealed, memory_order_acquire))
        return true;
    int s = room_state(r, need);
    return s == ROOM_YES || s == ROOM_CORRUPT;
}

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

static bool recover_dead_consumer(shmp_ring *r);

/* Wait for room with the producer lock released, then take it again. */
static int acquire_room(shmp_ring *r, uint64_t need, uint64_t deadline, int64_t timeout_ns)
{
    for (;;) {
        int rc = PLOCK(r, deadline);
        if (rc != SHMP_OK)
            return rc;
        /* A seal is stored under this lock (or by the single producer
         * itself), so once we hold it no put can land after a seal.
         * acquire: pairs with shmp_ring_seal's release store.             */
        if (atomic_load_explicit(&r->sh->sealed, memory_order_acquire)) {
            PUNLOCK(r);
            return SHMP_ESEALED;
        }
        int room = room_state(r, need);
        if (room == ROOM_NO_ITEMS && recover_dead_consumer(r))
            room = room_state(r, need);
        if (room == ROOM_YES)
            return SHMP_OK;
        PUNLOCK(r);
        if (room == ROOM_CORRUPT)
            return SHMP_ECORRUPT;
        if (timeout_ns == 0)
            return SHMP_EFULL;
        /* Held back by the item count: come back to look for a dead
         * consumer now and then, since its count may be what holds us.  */
        uint64_t until = deadline;
        if (room == ROOM_NO_ITEMS && (r->flags & SHMP_RING_MULTI_CONSUMER)) {
            uint64_t probe = shmp_deadline(PROBE_NS);
            if (probe < until)
                until = probe;
        }
        rc = wait_ring(r, &r->sh->space_seq, &r->sh->space_waiters, room_ready, need, until);
        if (rc == SHMP_ETIMEDOUT) {
            if (shmp_remaining(deadline) == 0)
                return SHMP_EFULL;
            continue;
        }
        if (rc != SHMP_OK)
            return rc;
    }
}

static int check_tag(uint32_t tag)
{
    return tag < SHMP_TAG_LIMIT ? SHMP_OK : SHMP_EINVAL;
}

int shmp_ring_put(shmp_ring *r, const char *data, uint32_t len, uint32_t tag, int64_t timeout_ns)
{
    uint64_t seq;
    return shmp_ring_put_tracked(r, data, len, tag, timeout_ns, &seq);
}

int shmp_ring_put_tracked(shmp_ring *r, const char *data, uint32_t len, uint32_t tag,
                          int64_t timeout_ns, uint64_t *seq_out)
{
    if (seq_out == NULL)
        return SHMP_EINVAL;
    if (r == NULL || (data == NULL && len != 0) || check_tag(tag) != SHMP_OK)
        return SHMP_EINVAL;
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
    /* Our record's number: the count of records before it (stable: we
     * are the only producer, or hold the producer lock).                 */
    *seq_out = atomic_load_explicit(&r->sh->tail_count, memory_order_relaxed);
    PUBLISH_TAIL(r, tail + need, 1);        /* header and payload become visible */
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
        PUBLISH_TAIL(r, tail, done - first);    /* the whole batch at once */
        PUNLOCK(r);
        wake_consumers(r);
    }
    *done_out = done;
    return rc;
}

/* ---- consumer ---------------------------------------------------------------- */

/* Data to take (or damage to report under the lock)? */
static bool has_data(shmp_ring *r, uint64_t unused)
{
    (void)unused;
    uint64_t head = atomic_load_explicit(&r->sh->head, memory_order_relaxed);
    /* `<=`, not `==`: another consumer may have moved head past our view. */
    if (VIEW_LOAD(r->cached_tail) <= head) {
        /* acquire: pairs with the producer's release store of tail. */
        uint64_t tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
        VIEW_STORE(r->cached_tail, tail);   /* release: pairs with VIEW_LOAD here and in next_record */
        /* A fresh tail behind a head loaded before it is damage, not an
         * empty ring: say "ready" so that next_record() reports it.      */
        if (tail == head)
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

/* Validate the header of the record at `head`.  Caller holds the consumer
 * side and has seen data.                                              */
static int next_record(shmp_ring *r, uint64_t head, shmp_rec_header *out)
{
    uint64_t tail = VIEW_LOAD(r->cached_tail);
    if (tail <= head) {
        /* The view may be older than our head (another thread of this
         * process stored it); only a fresh tail can say "damaged".       */
        tail = atomic_load_explicit(&r->sh->tail, memory_order_acquire);  /* pairs with publish() */
        VIEW_STORE(r->cached_tail, tail);
        if (tail == head)
            return SHMP_EEMPTY;
        if (tail < head)
            return SHMP_ECORRUPT;       /* head past tail: one of them is damaged */
    }
    uint64_t avail = tail - head;
    /* A head off the 8-byte grid would read a header across the end of
     * the data area.                                                     */
    if (avail < REC_HDR || avail > r->cap || (head & 7u) != 0)
        return SHMP_ECORRUPT;
    shmp_rec_header h;
    memcpy(&h, r->data + (head & r->mask), sizeof h);
    /* Beyond the published bytes, or flags that are not a tag: damage. */
    if (rec_size(h.len) > avail || h.len > shmp_ring_max_record(r) || h.flags >= SHMP_TAG_LIMIT)
        return SHMP_ECORRUPT;
    *out = h;
    return SHMP_OK;
}

/* Data, or a seal (after which no data will ever come). */
static bool data_or_sealed(shmp_ring *r, uint64_t unused)
{
    /* acquire: pairs with shmp_ring_seal's release store. */
    return atomic_load_explicit(&r->sh->sealed, memory_order_acquire) || has_data(r, unused);
}

static int wait_data_unlocked(shmp_ring *r, uint64_t deadline, int64_t timeout_ns)
{
    if (timeout_ns == 0)
        return SHMP_EEMPTY;
    int rc = wait_ring(r, &r->sh->data_seq, &r->sh->data_waiters, data_or_sealed, 0, deadline);
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
        bool sealed = false;
        if (!has_data(r, 0)) {
            /* Empty: only now read `sealed` (it sits on the producer's
             * line; a ring with data never touches it here), then look
             * for data again.  The seal was stored after the last tail any
             * producer will publish, so sealed-then-empty is drained for
             * good.  acquire: pairs with shmp_ring_seal's release store.  */
            sealed = atomic_load_explicit(&r->sh->sealed, memory_order_acquire);
        }
        if (has_data(r, 0)) {
            rc = next_record(r, *head, h);
            if (rc == SHMP_OK)
                return SHMP_OK;
            if (rc != SHMP_EEMPTY) {
                CUNLOCK(r);
                return rc;
            }
        }
        CUNLOCK(r);
        if (sealed)
            return SHMP_ESEALED;
        rc = wait_data_unlocked(r, deadline, timeout_ns);
        if (rc != SHMP_OK)
            return rc;
    }
}

static void finish_consume(shmp_ring *r, uint64_t new_head, uint64_t records)
{
    /* Our reads of the records are done before the producer may reuse
     * their bytes: publish()'s release store of head pairs with the
     * producer's acquire load in room_state().                          */
    PUBLISH_HEAD(r, new_head, records);
}

int shmp_ring_get(shmp_ring *r, void *dst, uint64_t cap, int64_t timeout_ns,
                  uint32_t *len_out, uint32_t *tag_out)
{
    if (r == NULL || len_out == NULL || (dst == NULL && cap != 0))
        return SHMP_EINVAL;
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
        if (VIEW_LOAD(r->cached_tail) <= head && !has_data(r, 0))
            break;
        rc = next_record(r, head, &h);
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

/* ---- either side ------------------------------------------------------------- */

uint64_t shmp_ring_count(const shmp_ring *r)
{
    if (r == NULL)
        return 0;
    uint64_t done = atomic_load_explicit(&r->sh->head_count, memory_order_acquire);
    uint64_t made = atomic_load_explicit(&r->sh->tail_count, memory_order_acquire);
    return made > done ? made - done : 0;
}

uint64_t shmp_ring_taken(const shmp_ring *r)
{
    if (r == NULL)
        return 0;
    /* acquire: pairs with finish_consume's release of head_count. */
    return atomic_load_explicit(&r->sh->head_count, memory_order_acquire);
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
    int rc = wait_ring(r, &r->sh->data_seq, &r->sh->data_waiters, data_or_sealed, 0,
                       shmp_deadline(timeout_ns));
    return rc == SHMP_ETIMEDOUT ? SHMP_EEMPTY : rc;
}

int shmp_ring_poke(shmp_ring *r)
{
    if (r == NULL)
        return SHMP_EINVAL;
    wake_consumers(r);
    return SHMP_OK;
}

/* Data, a seal, or data_seq moved past `seen` (a poke or a put woke us). */
static bool data_or_poked(shmp_ring *r, uint64_t seen)
{
    /* acquire: a bump's release (shmp_bump_and_wake) orders what the
     * waker published before it.                                         */
    return data_or_sealed(r, 0) ||
           atomic_load_explicit(&r->sh->data_seq, memory_order_acquire) != (uint32_t)seen;
}

int shmp_ring_wait_poked(shmp_ring *r, int64_t timeout_ns)
{
    if (r == NULL)
        return SHMP_EINVAL;
    uint32_t seen = atomic_load_explicit(&r->sh->data_seq, memory_order_acquire);
    int rc = wait_ring(r, &r->sh->data_seq, &r->sh->data_waiters, data_or_poked, seen,
                       shmp_deadline(timeout_ns));
    if (rc != SHMP_OK)
        return rc;
    return data_or_sealed(r, 0) ? SHMP_OK : SHMP_EEMPTY;
}

uint32_t shmp_ring_sleepers(const shmp_ring *r)
{
    return r == NULL ? 0 : atomic_load_explicit(&r->sh->data_waiters, memory_order_relaxed);
}

int shmp_ring_mark_closed(shmp_ring *r)
{
    if (r == NULL)
        return SHMP_EINVAL;
    atomic_store_explicit(&r->sh->closed, 1, memory_order_release);
    /* `closed` is part of every sleeper's condition (ring_cond). */
    wake_consumers(r);
    wake_producers(r);
    return SHMP_OK;
}

int shmp_ring_is_closed(const shmp_ring *r)
{
    return r != NULL && atomic_load_explicit(&r->sh->closed, memory_order_acquire) != 0;
}

/* ---- sealing (a growing Queue: shmproc/channels/chain.py) ---------------------- */

int shmp_ring_set_id(shmp_ring *r, uint64_t id)
{
    if (r == NULL)
        return SHMP_EINVAL;
    r->sh->id = id;     /* by the creator, before the descriptor leaves it */
    return SHMP_OK;
}

uint64_t shmp_ring_id(const shmp_ring *r)
{
    return r != NULL ? r->sh->id : 0;
}

int shmp_ring_seal(shmp_ring *r, uint64_t next_id, int64_t timeout_ns)
{
    if (r == NULL)
        return SHMP_EINVAL;
    int rc = PLOCK(r, shmp_deadline(timeout_ns));
    if (rc != SHMP_OK)
        return rc;
    if (atomic_load_explicit(&r->sh->sealed, memory_order_acquire)) {
        PUNLOCK(r);
        return SHMP_ESTATE;
    }
    atomic_store_explicit(&r->sh->next_id, next_id, memory_order_relaxed);
    /* release: the last tail (published under this lock) and next_id
     * before it; pairs with the acquire loads of `sealed` in
     * acquire_room, acquire_record, the wait conditions and
     * shmp_ring_sealed.                                                 */
    atomic_store_explicit(&r->sh->sealed, 1, memory_order_release);
    PUNLOCK(r);
    wake_consumers(r);          /* sleepers for data: none will come here */
    wake_producers(r);          /* sleepers for room: go to the next ring */
    return SHMP_OK;
}

int shmp_ring_sealed(const shmp_ring *r, uint64_t *next_id_out)
{
    if (r == NULL)
        return 0;
    /* acquire: pairs with shmp_ring_seal's release store. */
    if (!atomic_load_explicit(&r->sh->sealed, memory_order_acquire))
        return 0;
    if (next_id_out != NULL)
        *next_id_out = atomic_load_explicit(&r->sh->next_id, memory_order_relaxed);
    return 1;
}
