/*
 * lock.c — robust process-shared mutexes for the multi-producer and
 * multi-consumer sides of a ring.
 *
 * Why robust: a process can be SIGKILLed while it holds the lock.  A
 * robust mutex hands the next locker EOWNERDEAD instead of blocking it for
 * ever.  A record becomes visible only through one index store, so a dead
 * holder's half-written record simply never existed; the one thing it can
 * leave half done is the record count stored after the index, which the
 * caller repairs from the side's journal when told SHMP_LOCK_RECOVERED
 * (ring.c).  The lock is marked consistent here, before the repair: it is
 * held by us either way, and no one else can see the difference.
 *
 * What cannot be checked: the mutex itself lives in shared memory and
 * glibc follows the pointers of its robust list there.  A process that
 * scribbles over a held lock can crash the holder; that is why every
 * process holding a segment's descriptor is trusted (docs/architecture.md,
 * "Trust boundary").
 */
#define _GNU_SOURCE
#include "shmp_internal.h"

#include <errno.h>
#include <time.h>

int shmp_lock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        return SHMP_EOS;
    int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0) {
        shmp_set_errno(rc);
        return SHMP_EOS;
    }
    return SHMP_OK;
}

static int lock_until(pthread_mutex_t *m, uint64_t deadline)
{
    if (deadline == UINT64_MAX)
        return pthread_mutex_lock(m);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
    struct timespec ts = { (time_t)(deadline / 1000000000ull), (long)(deadline % 1000000000ull) };
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#else
    /* No monotonic timed lock here: poll with short naps. */
    for (;;) {
        int rc = pthread_mutex_trylock(m);
        if (rc != EBUSY)
            return rc;
        if (shmp_now_ns() >= deadline)
            return ETIMEDOUT;
        struct timespec nap = { 0, 50000 };
        nanosleep(&nap, NULL);
    }
#endif
}

int shmp_lock_acquire(pthread_mutex_t *m, int64_t timeout_ns)
{
    int rc = timeout_ns == 0 ? pthread_mutex_trylock(m) : lock_until(m, shmp_deadline(timeout_ns));
    if (rc == 0)
        return SHMP_OK;
    if (rc == EOWNERDEAD) {
        /* The previous holder died inside its critical section; the ring
         * state it guards is consistent by construction (see above).      */
        pthread_mutex_consistent(m);
        return SHMP_LOCK_RECOVERED;
    }
    if (rc == EBUSY || rc == ETIMEDOUT)
        return SHMP_ETIMEDOUT;
    if (rc == ENOTRECOVERABLE)
        return SHMP_ECORRUPT;
    shmp_set_errno(rc);
    return SHMP_EOS;
}

void shmp_lock_release(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}
