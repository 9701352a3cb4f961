/*
 * wait.c — the one way anything in shmproc sleeps on shared memory.
 *
 * The essay, short: a waiter must never miss a wake-up, and a waker must
 * not make a syscall when nobody sleeps.  Every waitable condition
 * therefore comes with a futex word that the waker changes after making
 * the condition true, and a "waiters" counter beside it.
 *
 *   waiter (shmp_wait_until)                 waker (shmp_wake_waiters)
 *   check the condition; spin on it          make the condition true (release)
 *   seq = load(word)          (acquire)      [change the word: a store of a new
 *   waiters += 1              (seq_cst)       value, or a bump for a sequence]
 *   fence                     (seq_cst)      fence                    (seq_cst)
 *   re-check the condition                   if waiters > 0:
 *   futex_wait(word, seq)                        futex_wake(word)
 *   waiters -= 1
 *
 * The two seq_cst points form a store-buffering pair: either the waiter's
 * re-check sees the condition true, or the waker's load sees waiters > 0
 * and wakes it; and the word was changed after the waiter loaded `seq`,
 * so futex_wait returns at once if the wake came before the sleep (the
 * kernel compares the word with `seq` atomically with going to sleep).
 *
 * Things that don't work: registering before spinning (every waker
 * during the spin pays a futex_wake for a waiter that is not asleep,
 * which is what control.c did); waking unconditionally (a syscall per
 * store, ~1 µs, when nobody sleeps, which is what shmp_store_u32 did);
 * trusting the wake-up alone (a waker killed between its store and its
 * wake-up would leave the waiter asleep for ever).
 *
 * Solution: spin first on the condition itself, without registering, for
 * SHMP_SPIN_NS: a peer that is mid-write on the other core is caught
 * there and pays nothing.  Only then register, re-check and sleep, in
 * slices of at most SHMP_WAIT_SLICE_NS, after each of which the condition
 * is looked at again: a dead waker delays a waiter by at most one slice
 * (DESIGN: a dead writer blocks no one for more than 1 s).  The waker
 * makes the syscall only when its waiters load is non-zero.  An idle
 * waiter burns no CPU beyond one wake-up per slice.
 */
#include "shmp_internal.h"

#include <limits.h>

/* ~20 µs: long enough to catch a peer that is mid-write on the other core,
 * short against the ~5-15 µs cost of a futex sleep and wake.            */
#define SHMP_SPIN_NS 20000u
/* A sleeper re-checks its condition at least this often even if no wake-up
 * comes (a waker killed between its store and its wake-up).  A waiter whose
 * every waker's death ends it anyway may wait unsliced (shmp_wait_sliced
 * with 0): an idle pool worker, whose only waker is the pool's process,
 * then costs no wake-up at all.                                          */

/* A yield that kept us off the core this long means another task wanted
 * it: the machine is loaded, and the peer we wait for may be the one
 * waiting for a core.  Sleeping then beats spinning: the kernel runs the
 * peer, and wakes us the moment it is done.                              */
#define SHMP_CONTENDED_NS 50000u

static int spin(shmp_cond_fn cond, void *arg, uint64_t deadline)
{
    uint64_t now = shmp_now_ns(), stop = now + SHMP_SPIN_NS;
    uint64_t polite = now + SHMP_SPIN_NS / 2;
    if (deadline < stop)
        stop = deadline;
    for (unsigned i = 1;; i++) {
        int c = cond(arg);
        if (c != 0)
            return c;
        shmp_cpu_relax();
        if ((i & 15u) == 0) {
            /* The first half spins hard (a peer mid-write answers within
             * microseconds); then politely: the core is given away each
             * turn (free when nobody else wants it), and the spin stops at
             * once if somebody did take it.                            */
            if (now >= polite)
                shmp_os_yield();
            uint64_t after = shmp_now_ns();
            if (after >= stop || after - now > SHMP_CONTENDED_NS)
                return 0;
            now = after;
        }
    }
}

int shmp_wait_until(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
                    shmp_cond_fn cond, void *arg, uint64_t deadline)
{
    return shmp_wait_sliced(word, waiters, cond, arg, deadline, SHMP_WAIT_SLICE_NS);
}

int shmp_wait_sliced(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
                     shmp_cond_fn cond, void *arg, uint64_t deadline, int64_t slice_ns)
{
    for (;;) {
        int c = cond(arg);
        if (c != 0)
            return c > 0 ? SHMP_OK : c;
        int64_t left = shmp_remaining(deadline);
        if (left == 0)
            return SHMP_ETIMEDOUT;
        /* Spin unregistered: a waker now makes no syscall for us. */
        c = spin(cond, arg, deadline);
        if (c != 0)
            return c > 0 ? SHMP_OK : c;
        left = shmp_remaining(deadline);
        if (left == 0)
            return SHMP_ETIMEDOUT;
        /* acquire: a waker's change of the word after this load makes the
         * futex_wait below return at once; seeing its change here means
         * seeing the condition it published before it.                  */
        uint32_t seq = atomic_load_explicit(word, memory_order_acquire);
        atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
        /* seq_cst fence: orders our registration before the re-check;
         * pairs with the fence in shmp_wake_waiters().                   */
        atomic_thread_fence(memory_order_seq_cst);
        int rc = SHMP_OK;
        c = cond(arg);
        if (c == 0)
            rc = shmp_os_futex_wait(word, seq, (slice_ns > 0 && (left < 0 || left > slice_ns))
                                               ? slice_ns : left);
        /* relaxed: a stale count only costs a waker one needless syscall. */
        atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
        if (c != 0)
            return c > 0 ? SHMP_OK : c;
        if (rc != SHMP_OK && rc != SHMP_ETIMEDOUT)
            return rc;                  /* EINTR or an OS error */
        /* woken, the word changed, or a slice ended: look again */
    }
}

void shmp_wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiters)
{
    /* seq_cst fence: orders the caller's store (the condition, the word)
     * before the waiters load; pairs with the fence after the waiter's
     * registration in shmp_wait_until().                                */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(waiters, memory_order_relaxed) != 0)
        shmp_os_futex_wake(word, INT_MAX);
}

void shmp_bump_and_wake(_Atomic uint32_t *seq, _Atomic uint32_t *waiters)
{
    /* seq_cst fence: as in shmp_wake_waiters. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(waiters, memory_order_relaxed) != 0) {
        /* release: a waiter whose acquire load of seq sees the bump also
         * sees the condition we published before it.  The bump comes
         * after the registration we saw, so after that waiter's load of
         * seq: its futex_wait returns at once if it has not slept yet.  */
        atomic_fetch_add_explicit(seq, 1, memory_order_release);
        shmp_os_futex_wake(seq, INT_MAX);
    }
}

/* ---- words exposed to Python (blob headers, tests) --------------------------
 * The futex word is the word itself: a store or CAS that changes it is
 * the change the waiter's futex_wait compares against.  `waiters` is the
 * caller's counter for that word; store and CAS take NULL for a word
 * nobody ever sleeps on (then they never wake anyone).                  */

static bool word_ok(const void *p)
{
    return p != NULL && ((uintptr_t)p & 3u) == 0;
}

struct word_differs { _Atomic uint32_t *word; uint32_t expected; };

static int word_differs(void *arg)
{
    struct word_differs *w = arg;
    /* acquire: pairs with the release of shmp_store_u32 / shmp_cas_u32. */
    return atomic_load_explicit(w->word, memory_order_acquire) != w->expected;
}

int shmp_wait_u32(void *word, void *waiters, uint32_t expected, int64_t timeout_ns)
{
    if (!word_ok(word) || !word_ok(waiters) || word == waiters)
        return SHMP_EINVAL;
    struct word_differs w = { (_Atomic uint32_t *)word, expected };
    return shmp_wait_until(w.word, (_Atomic uint32_t *)waiters, word_differs, &w,
                           shmp_deadline(timeout_ns));
}

uint32_t shmp_load_u32(const void *word)
{
    if (!word_ok(word))
        return 0;
    /* acquire: pairs with shmp_store_u32's release. */
    return atomic_load_explicit((_Atomic uint32_t *)word, memory_order_acquire);
}

int shmp_store_u32(void *word, void *waiters, uint32_t value)
{
    if (!word_ok(word) || (waiters != NULL && (!word_ok(waiters) || word == waiters)))
        return SHMP_EINVAL;
    atomic_store_explicit((_Atomic uint32_t *)word, value, memory_order_release);
    if (waiters != NULL)
        shmp_wake_waiters((_Atomic uint32_t *)word, (_Atomic uint32_t *)waiters);
    return SHMP_OK;
}

uint32_t shmp_add_u32(void *word, int32_t delta)
{
    if (!word_ok(word))
        return 0;
    /* acq_rel: a holder's reads of the segment happen before its release
     * is counted (release), and the one that takes the count to zero sees
     * every other holder's release (acquire).                            */
    return atomic_fetch_add_explicit((_Atomic uint32_t *)word, (uint32_t)delta,
                                     memory_order_acq_rel);
}

int shmp_cas_u32(void *word, void *waiters, uint32_t expected, uint32_t desired)
{
    if (!word_ok(word) || (waiters != NULL && (!word_ok(waiters) || word == waiters)))
        return SHMP_EINVAL;
    /* acq_rel: on success we own the transition (acquire: the writer's
     * bytes; release: our claim), and a waiter is woken as by a store.  */
    if (!atomic_compare_exchange_strong_explicit((_Atomic uint32_t *)word, &expected, desired,
                                                 memory_order_acq_rel, memory_order_acquire))
        return SHMP_ESTATE;
    if (waiters != NULL)
        shmp_wake_waiters((_Atomic uint32_t *)word, (_Atomic uint32_t *)waiters);
    return SHMP_OK;
}
