/*
 * wait.c — sleeping on a shared 32-bit word.
 *
 * The essay, short: a waiter must never miss a wake-up, and a waker must
 * not make a syscall when nobody sleeps.  Every waitable word therefore
 * comes with a "waiters" counter beside it.
 *
 *   waiter                                   waker
 *   seq = load(word)                         publish data   (release store)
 *   waiters += 1            (seq_cst)        fence           (seq_cst)
 *   re-check the condition  (seq_cst)        if waiters > 0:
 *   futex_wait(word, seq)                        word += 1; futex_wake(word)
 *
 * The two seq_cst points form a store-buffering pair: either the waiter's
 * re-check sees the published data, or the waker's load sees waiters > 0
 * and bumps the word, which makes futex_wait return at once (the kernel
 * compares the word with `seq` atomically with going to sleep).  Callers
 * own their counters; this file gives the spin-then-sleep primitive.
 *
 * Spinning pays only while another core is free to make progress, so the
 * spin is short (SHMP_SPIN_NS) and then the waiter sleeps in the kernel:
 * an idle waiter burns no CPU.
 */
#include "shmp_internal.h"

#include <limits.h>

/* ~20 µs: long enough to catch a peer that is mid-write on the other core,
 * short against the ~5-15 µs cost of a futex sleep and wake.            */
#define SHMP_SPIN_NS 20000u

static bool spin_until_change(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline)
{
    uint64_t start = shmp_now_ns();
    uint64_t stop = start + SHMP_SPIN_NS;
    if (deadline < stop)
        stop = deadline;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != expected)
            return true;
        shmp_cpu_relax();
        if ((i & 63u) == 0 && shmp_now_ns() >= stop)
            return false;
    }
}

int shmp_wait_change(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    uint64_t deadline = shmp_deadline(timeout_ns);
    if (timeout_ns != 0 && spin_until_change(word, expected, deadline))
        return SHMP_OK;
    for (;;) {
        if (atomic_load_explicit(word, memory_order_acquire) != expected)
            return SHMP_OK;
        int64_t left = shmp_remaining(deadline);
        if (left == 0)
            return SHMP_ETIMEDOUT;
        int rc = shmp_os_futex_wait(word, expected, left);
        if (rc == SHMP_ETIMEDOUT || rc == SHMP_OK)
            continue;                       /* loop re-checks word and time */
        return rc;                          /* EINTR or an OS error */
    }
}

int shmp_wait_u32(void *word, uint32_t expected, int64_t timeout_ns)
{
    if (word == NULL || ((uintptr_t)word & 3u) != 0)
        return SHMP_EINVAL;
    return shmp_wait_change((_Atomic uint32_t *)word, expected, timeout_ns);
}

int shmp_wake_u32(void *word, int32_t count)
{
    if (word == NULL || ((uintptr_t)word & 3u) != 0 || count < 1)
        return SHMP_EINVAL;
    return shmp_os_futex_wake((_Atomic uint32_t *)word, count);
}

uint32_t shmp_load_u32(const void *word)
{
    if (word == NULL || ((uintptr_t)word & 3u) != 0)
        return 0;
    /* acquire: pairs with shmp_store_u32's release. */
    return atomic_load_explicit((_Atomic uint32_t *)word, memory_order_acquire);
}

int shmp_store_u32(void *word, uint32_t value)
{
    if (word == NULL || ((uintptr_t)word & 3u) != 0)
        return SHMP_EINVAL;
    atomic_store_explicit((_Atomic uint32_t *)word, value, memory_order_release);
    return shmp_os_futex_wake((_Atomic uint32_t *)word, INT_MAX);
}

uint32_t shmp_add_u32(void *word, int32_t delta)
{
    if (word == NULL || ((uintptr_t)word & 3u) != 0)
        return 0;
    /* acq_rel: a holder's reads of the segment happen before its release
     * is counted (release), and the one that takes the count to zero sees
     * every other holder's release (acquire).                            */
    return atomic_fetch_add_explicit((_Atomic uint32_t *)word, (uint32_t)delta,
                                     memory_order_acq_rel);
}

int shmp_cas_u32(void *word, uint32_t expected, uint32_t desired)
{
    if (word == NULL || ((uintptr_t)word & 3u) != 0)
        return SHMP_EINVAL;
    /* acq_rel: on success we own the transition (acquire: the writer's
     * bytes; release: our claim), and a waiter is woken as by a store.  */
    if (!atomic_compare_exchange_strong_explicit((_Atomic uint32_t *)word, &expected, desired,
                                                 memory_order_acq_rel, memory_order_acquire))
        return SHMP_ESTATE;
    return shmp_os_futex_wake((_Atomic uint32_t *)word, INT_MAX);
}
