/*
 * shmp_trace.h — the layout of a trace ring and its writer, inline.
 *
 * A trace ring holds the spans one worker recorded: (start, end, label,
 * flags, pid, lap), 32 bytes each, the oldest overwritten once the ring
 * is full, so recording never blocks and memory stays bounded however
 * long the worker runs.  One writer per ring (the worker); the parent
 * reads at any time (trace.c, shmp_trace_read) and, once the writer is
 * dead, may close the span it left open (shmp_trace_close_open).
 *
 * The writer is inline because three places write: trace.c (the cffi
 * calls, for tests and Python-level sections), csrc/python/spans.c (a
 * pool worker's per-task writer) and csrc/python/laps.c (a Process's lap
 * loop).  Each costs a few stores; the CPython extensions include this
 * file and share the layout, never a copy of it.
 *
 * Protocol.  begin: write the entry at index head (end = 0: open), then
 * publish head + 1 (release).  end: set flags, then end (release) on the
 * newest entry if it is still open.  A reader copies entries, then
 * re-reads head: any entry the writer may have been overwriting while it
 * copied (index <= head_after - capacity) is dropped.  See trace.c.
 */
#ifndef SHMP_TRACE_H
#define SHMP_TRACE_H

#include <stdatomic.h>
#include <stdint.h>

/* Entry flags. */
#define SHMP_SPAN_FAILED   1u     /* the task (hook) raised or timed out */
#define SHMP_SPAN_CRASHED  2u     /* its writer died with it open (closed by the parent) */
#define SHMP_SPAN_FLAGS    3u     /* every known bit: a reader drops others */

typedef struct shmp_trace_entry {
    _Atomic uint64_t start_ns;
    _Atomic uint64_t end_ns;      /* 0: open (running, or its writer died) */
    _Atomic uint32_t label;
    _Atomic uint32_t flags;
    _Atomic uint32_t pid;
    _Atomic uint32_t lap;
} shmp_trace_entry;

/* Totals per label below SHMP_TRACE_TALLIES, over every span ever ended
 * with a tally (a Process's sections: the ring keeps the newest spans,
 * these keep the whole run).                                           */
#define SHMP_TRACE_TALLIES 8u

typedef struct shmp_trace_tally {
    _Atomic uint64_t count;
    _Atomic uint64_t total_ns;
    _Atomic uint64_t failed;
} shmp_trace_tally;

typedef struct shmp_trace_ring {
    _Alignas(64) _Atomic uint64_t head;   /* entries ever begun (free-running) */
    _Alignas(64) shmp_trace_tally tallies[SHMP_TRACE_TALLIES];
    _Alignas(64) shmp_trace_entry entries[];
} shmp_trace_ring;

/* Begin a span at `start_ns` (the writer's clock, CLOCK_MONOTONIC).
 * `mask` is capacity - 1, the writer's own copy, never re-read from
 * shared memory.                                                        */
static inline void shmp_trace_begin_at(shmp_trace_ring *r, uint64_t mask, uint64_t start_ns,
                                       uint32_t label, uint32_t pid, uint32_t lap)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);   /* our own word */
    shmp_trace_entry *e = &r->entries[h & mask];
    atomic_store_explicit(&e->end_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&e->start_ns, start_ns, memory_order_relaxed);
    atomic_store_explicit(&e->label, label, memory_order_relaxed);
    atomic_store_explicit(&e->flags, 0, memory_order_relaxed);
    atomic_store_explicit(&e->pid, pid, memory_order_relaxed);
    atomic_store_explicit(&e->lap, lap, memory_order_relaxed);
    /* release: a reader that sees the new head sees the entry above. */
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
}

/* The newest entry if it is still open, else NULL. */
static inline shmp_trace_entry *shmp_trace_open_newest(shmp_trace_ring *r, uint64_t mask)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (h == 0)
        return NULL;
    shmp_trace_entry *e = &r->entries[(h - 1) & mask];
    return atomic_load_explicit(&e->end_ns, memory_order_relaxed) == 0 ? e : NULL;
}

/* Close the open entry `e` at `end_ns` with `flags`.  An end before the
 * start (a clock that cannot go back: only a bug) is stored as the
 * start, so a closed span is never negative.                            */
static inline void shmp_trace_close(shmp_trace_entry *e, uint64_t end_ns, uint32_t flags)
{
    uint64_t start = atomic_load_explicit(&e->start_ns, memory_order_relaxed);
    if (end_ns < start)
        end_ns = start;
    if (end_ns == 0)
        end_ns = 1;               /* 0 means open */
    atomic_store_explicit(&e->flags, flags & SHMP_SPAN_FLAGS, memory_order_relaxed);
    atomic_store_explicit(&e->end_ns, end_ns, memory_order_release);
}

/* End the newest span at `end_ns` with `flags`, if it is still open. */
static inline void shmp_trace_end_at(shmp_trace_ring *r, uint64_t mask, uint64_t end_ns,
                                     uint32_t flags)
{
    shmp_trace_entry *e = shmp_trace_open_newest(r, mask);
    if (e != NULL)
        shmp_trace_close(e, end_ns, flags);
}

/* One writer per ring: a counter is a plain load and store, no RMW. */
static inline void shmp_trace_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* End the newest span as shmp_trace_end_at does, and count it in its
 * label's tally (a Process's sections; other labels are not counted).   */
static inline void shmp_trace_end_tally_at(shmp_trace_ring *r, uint64_t mask, uint64_t end_ns,
                                           uint32_t flags)
{
    shmp_trace_entry *e = shmp_trace_open_newest(r, mask);
    if (e == NULL)
        return;
    uint32_t label = atomic_load_explicit(&e->label, memory_order_relaxed);
    uint64_t start = atomic_load_explicit(&e->start_ns, memory_order_relaxed);
    shmp_trace_close(e, end_ns, flags);
    if (label < SHMP_TRACE_TALLIES) {
        shmp_trace_tally *t = &r->tallies[label];
        shmp_trace_add(&t->count, 1);
        shmp_trace_add(&t->total_ns, end_ns > start ? end_ns - start : 0);
        if (flags & SHMP_SPAN_FAILED)
            shmp_trace_add(&t->failed, 1);
    }
}

/* Mark the newest span failed, open or closed (a section found to have
 * overrun only once it was left).                                       */
static inline void shmp_trace_fail_newest(shmp_trace_ring *r, uint64_t mask)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (h == 0)
        return;
    shmp_trace_entry *e = &r->entries[(h - 1) & mask];
    uint32_t was = atomic_fetch_or_explicit(&e->flags, SHMP_SPAN_FAILED, memory_order_relaxed);
    uint32_t label = atomic_load_explicit(&e->label, memory_order_relaxed);
    if (!(was & SHMP_SPAN_FAILED) && label < SHMP_TRACE_TALLIES &&
        atomic_load_explicit(&e->end_ns, memory_order_relaxed) != 0)
        shmp_trace_add(&r->tallies[label].failed, 1);      /* a tallied section, failed late */
}

#endif
