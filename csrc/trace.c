/*
 * trace.c — trace segments: the spans each worker recorded.
 *
 * A pool makes one trace segment with a ring per worker slot (a
 * replacement worker writes on in its slot's ring); a Process run makes
 * one with a single ring.  Workers write with the inline writer of
 * shmp_trace.h (a few relaxed stores and one release); the parent reads
 * here, at any time, without stopping them, and trusts nothing it reads
 * before checking it: the head only chooses which entries to look at
 * (always within the ring), and an entry whose fields are impossible is
 * dropped, never returned.
 */
#include "shmp_internal.h"

#include <stddef.h>
#include <string.h>

#define MAX_RINGS     65536u
#define MIN_CAPACITY  16u
#define MAX_CAPACITY  (1u << 20)

_Static_assert(SHMP_SPAN_FAILED == (unsigned)SHMP_SPAN_IS_FAILED, "flag values");
_Static_assert(SHMP_SPAN_CRASHED == (unsigned)SHMP_SPAN_IS_CRASHED, "flag values");
_Static_assert(sizeof(shmp_trace_entry) == 32, "a trace entry is 32 bytes");
_Static_assert(sizeof(shmp_trace_area) <= SHMP_CACHE_LINE, "the area header is one line");
_Static_assert(offsetof(shmp_trace_ring, entries) % SHMP_CACHE_LINE == 0, "entries on a line");
_Static_assert(SHMP_TRACE_TALLIES == (unsigned)SHMP_TRACE_TALLY_LABELS, "tally count");

static int capacity_ok(uint32_t capacity)
{
    return capacity >= MIN_CAPACITY && capacity <= MAX_CAPACITY &&
           (capacity & (capacity - 1)) == 0;
}

static uint64_t ring_size(uint32_t capacity)
{
    return offsetof(shmp_trace_ring, entries) + (uint64_t)capacity * sizeof(shmp_trace_entry);
}

uint64_t shmp_trace_payload_size(uint32_t rings, uint32_t capacity)
{
    if (rings == 0 || rings > MAX_RINGS || !capacity_ok(capacity))
        return 0;
    return SHMP_CACHE_LINE + (uint64_t)rings * ring_size(capacity);
}

int shmp_trace_create(uint32_t rings, uint32_t capacity, int *fd_out, void **payload_out)
{
    uint64_t size = shmp_trace_payload_size(rings, capacity);
    if (size == 0 || fd_out == NULL || payload_out == NULL)
        return SHMP_EINVAL;
    int rc = shmp_seg_create(SHMP_KIND_TRACE, size, fd_out, payload_out);
    if (rc == SHMP_OK) {
        shmp_trace_area *a = *payload_out;     /* pages start zeroed: every head is 0 */
        a->rings = rings;
        a->capacity = capacity;
    }
    return rc;
}

int shmp_trace_attach(int fd, void **payload_out, uint32_t *rings_out, uint32_t *capacity_out)
{
    if (payload_out == NULL || rings_out == NULL || capacity_out == NULL)
        return SHMP_EINVAL;
    void *payload;
    uint64_t size;
    int rc = shmp_seg_attach(fd, SHMP_KIND_TRACE, &payload, &size);
    if (rc != SHMP_OK)
        return rc;
    /* Exactly the size create() makes for these counts: the caller unmaps
     * with shmp_trace_payload_size(rings, capacity).                    */
    const shmp_trace_area *a = payload;
    uint32_t rings = a->rings, capacity = a->capacity;
    uint64_t want = shmp_trace_payload_size(rings, capacity);
    if (want == 0 || want != size) {
        shmp_seg_unmap(payload, size);
        return SHMP_ECORRUPT;
    }
    *payload_out = payload;
    *rings_out = rings;
    *capacity_out = capacity;
    return SHMP_OK;
}

int shmp_trace_get(void *payload, uint32_t rings, uint32_t capacity, uint32_t index,
                   shmp_trace **ring_out)
{
    if (payload == NULL || ring_out == NULL || shmp_trace_payload_size(rings, capacity) == 0 ||
        index >= rings)
        return SHMP_EINVAL;
    int rc = shmp_seg_verify(payload, SHMP_KIND_TRACE);
    if (rc != SHMP_OK)
        return rc;
    const shmp_trace_area *a = payload;
    if (a->rings != rings || a->capacity != capacity)
        return SHMP_ECORRUPT;
    *ring_out = (shmp_trace *)((char *)payload + SHMP_CACHE_LINE + index * ring_size(capacity));
    return SHMP_OK;
}

int shmp_trace_begin(shmp_trace *t, uint32_t capacity, uint64_t start_ns, uint32_t label,
                     uint32_t pid, uint32_t lap)
{
    if (t == NULL || !capacity_ok(capacity))
        return SHMP_EINVAL;
    shmp_trace_begin_at(&t->r, capacity - 1, start_ns, label, pid, lap);
    return SHMP_OK;
}

int shmp_trace_end(shmp_trace *t, uint32_t capacity, uint64_t end_ns, uint32_t flags)
{
    if (t == NULL || !capacity_ok(capacity) || (flags & ~SHMP_SPAN_FLAGS) != 0)
        return SHMP_EINVAL;
    shmp_trace_end_at(&t->r, capacity - 1, end_ns, flags);
    return SHMP_OK;
}

int shmp_trace_end_tally(shmp_trace *t, uint32_t capacity, uint64_t end_ns, uint32_t flags)
{
    if (t == NULL || !capacity_ok(capacity) || (flags & ~SHMP_SPAN_FLAGS) != 0)
        return SHMP_EINVAL;
    shmp_trace_end_tally_at(&t->r, capacity - 1, end_ns, flags);
    return SHMP_OK;
}

int shmp_trace_tallies(const shmp_trace *t, uint64_t *out, uint32_t out_len)
{
    if (t == NULL || out == NULL || out_len < 3 * SHMP_TRACE_TALLIES)
        return SHMP_EINVAL;
    shmp_trace_ring *r = (shmp_trace_ring *)&t->r;
    for (uint32_t i = 0; i < SHMP_TRACE_TALLIES; i++) {
        /* Plain counters: whatever a damaged ring holds, they are only numbers. */
        out[3 * i] = atomic_load_explicit(&r->tallies[i].count, memory_order_relaxed);
        out[3 * i + 1] = atomic_load_explicit(&r->tallies[i].total_ns, memory_order_relaxed);
        out[3 * i + 2] = atomic_load_explicit(&r->tallies[i].failed, memory_order_relaxed);
    }
    return SHMP_OK;
}

int shmp_trace_close_open(shmp_trace *t, uint32_t capacity, uint64_t end_ns, uint32_t flags)
{
    /* The same store as the writer's end: the writer is dead, so this
     * process is now the ring's only writer.                           */
    return shmp_trace_end(t, capacity, end_ns, flags);
}

int64_t shmp_trace_read(const shmp_trace *t, uint32_t capacity, shmp_span *out,
                        uint32_t out_len, uint64_t *written_out)
{
    if (t == NULL || !capacity_ok(capacity) || (out == NULL && out_len != 0) ||
        written_out == NULL)
        return SHMP_EINVAL;
    shmp_trace_ring *r = (shmp_trace_ring *)&t->r;
    uint64_t mask = capacity - 1;
    /* acquire: pairs with begin's release; entries below head are written. */
    uint64_t h1 = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t lo = h1 > capacity ? h1 - capacity : 0;
    if (h1 - lo > out_len)
        lo = h1 - out_len;                    /* the newest that fit */
    uint32_t n = 0;
    for (uint64_t i = lo; i < h1; i++) {
        shmp_trace_entry *e = &r->entries[i & mask];
        shmp_span *s = &out[n];
        s->end_ns = atomic_load_explicit(&e->end_ns, memory_order_acquire);
        s->start_ns = atomic_load_explicit(&e->start_ns, memory_order_relaxed);
        s->label = atomic_load_explicit(&e->label, memory_order_relaxed);
        s->flags = atomic_load_explicit(&e->flags, memory_order_relaxed);
        s->pid = atomic_load_explicit(&e->pid, memory_order_relaxed);
        s->lap = atomic_load_explicit(&e->lap, memory_order_relaxed);
        n++;
    }
    /* What the writer began since: those entries' slots may have been
     * rewritten under our copy (the one being written now included).   */
    atomic_thread_fence(memory_order_acquire);
    uint64_t h2 = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t valid_lo = lo;
    if (h2 < h1) {
        /* A head that went back is damage (or a reset we do not do): keep nothing. */
        *written_out = h1;
        return 0;
    }
    if (h2 >= capacity && h2 - capacity + 1 > valid_lo)
        valid_lo = h2 - capacity + 1;
    uint32_t kept = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (lo + k < valid_lo)
            continue;
        shmp_span s = out[k];
        if (s.start_ns == 0 || (s.end_ns != 0 && s.end_ns < s.start_ns) ||
            (s.flags & ~SHMP_SPAN_FLAGS) != 0)
            continue;                         /* impossible: damage, dropped */
        out[kept++] = s;
    }
    *written_out = h1;                        /* h1 - kept: overwritten or damaged */
    return (int64_t)kept;
}
