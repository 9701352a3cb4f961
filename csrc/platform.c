/*
 * platform.c — the only file that knows which OS it runs on.
 *
 * Linux: memfd_create (no name in /dev/shm, nothing to leak), file seals,
 * futex on shared words, and /proc/PID/fd/N to open a peer's descriptor.
 * Elsewhere (or with -DSHMP_PORTABLE, which the test suite builds once on
 * Linux to exercise this path): an shm_open name that is unlinked at once,
 * a sleep-with-backoff wait, and no peer opening (out-of-band records are
 * then refused with SHMP_EPEER by the caller's fallback).
 */
#define _GNU_SOURCE
#include "shmp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__) && !defined(SHMP_PORTABLE)
#  define SHMP_LINUX 1
#  include <linux/futex.h>
#  include <sys/syscall.h>
#else
#  define SHMP_LINUX 0
#endif
#if defined(__linux__)
#  include <sys/prctl.h>            /* process hygiene, used by the portable build too */
#endif
#include <poll.h>
#include <signal.h>

static _Thread_local int shmp_errno_value;

uint32_t shmp_platform_features(void)
{
#if SHMP_LINUX
    return SHMP_FEAT_MEMFD | SHMP_FEAT_FUTEX | SHMP_FEAT_PEER_FD;
#else
    return 0;
#endif
}

void shmp_set_errno(int err) { shmp_errno_value = err; }
int  shmp_last_errno(void)   { return shmp_errno_value; }

uint64_t shmp_now_ns(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC is served by the vDSO on Linux: no syscall. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t shmp_deadline(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return UINT64_MAX;
    if (timeout_ns == 0)
        return 0;           /* "already passed": a try-op reads no clock */
    uint64_t now = shmp_now_ns();
    uint64_t t = (uint64_t)timeout_ns;
    return (UINT64_MAX - now < t) ? UINT64_MAX : now + t;
}

int64_t shmp_remaining(uint64_t deadline)
{
    if (deadline == UINT64_MAX)
        return -1;
    if (deadline == 0)
        return 0;
    uint64_t now = shmp_now_ns();
    if (now >= deadline)
        return 0;
    uint64_t left = deadline - now;
    return left > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)left;
}

/* Reserve space now: on tmpfs, posix_fallocate allocates the pages, so a
 * full /dev/shm is ENOSPC here instead of SIGBUS on first touch.        */
int shmp_os_reserve(int fd, uint64_t offset, uint64_t size)
{
    int rc = posix_fallocate(fd, (off_t)offset, (off_t)size);
    if (rc == ENOSPC || rc == EFBIG || rc == ENOMEM) {
        shmp_set_errno(rc);
        return SHMP_ENOSPC;
    }
    /* EINVAL/EOPNOTSUPP: the filesystem cannot preallocate; the mapping
     * still works, it just loses the early ENOSPC guarantee.           */
    if (rc != 0 && rc != EINVAL && rc != EOPNOTSUPP) {
        shmp_set_errno(rc);
        return SHMP_EOS;
    }
    return SHMP_OK;
}

static int set_size(int fd, uint64_t size)
{
    if (ftruncate(fd, (off_t)size) != 0) {
        shmp_set_errno(errno);
        return errno == ENOSPC || errno == EFBIG ? SHMP_ENOSPC : SHMP_EOS;
    }
    return SHMP_OK;
}

/* Whether a segment's filesystem can run out of space, so that a first
 * touch of a page not reserved could SIGBUS: an shm_open file lives in
 * /dev/shm, which fills up; a memfd lives on the kernel's internal tmpfs
 * mount, which has no size limit (its pages are memory like any other,
 * allocated when first touched, and short only when memory is).        */
int shmp_os_space_is_bounded(void)
{
    return !SHMP_LINUX;
}

int shmp_os_anon_fd(uint64_t size, int reserve_space, int *fd_out)
{
    int fd;
#if SHMP_LINUX
    fd = (int)syscall(SYS_memfd_create, "shmproc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
#else
    /* Portable path: a random name that exists only between open and unlink. */
    char name[64];
    static _Atomic uint32_t counter;
    for (int attempt = 0;; attempt++) {
        snprintf(name, sizeof name, "/shmproc.%ld.%u.%llu", (long)getpid(),
                 (unsigned)atomic_fetch_add(&counter, 1),
                 (unsigned long long)shmp_now_ns());
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0)
            break;
        if (errno != EEXIST || attempt > 16) {
            shmp_set_errno(errno);
            return SHMP_EOS;
        }
    }
    shm_unlink(name);
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
#endif
    int rc = set_size(fd, size);
    if (rc == SHMP_OK && reserve_space)
        rc = shmp_os_reserve(fd, 0, size);
    if (rc != SHMP_OK) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return SHMP_OK;
}

int shmp_os_seal(int fd)
{
#if SHMP_LINUX
    /* A sealed size means no process can shrink the file under a peer's
     * mapping, which would turn its next access into SIGBUS.            */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
#else
    (void)fd;
#endif
    return SHMP_OK;
}

int shmp_os_open_peer(int32_t pid, int32_t fd, int *fd_out)
{
#if SHMP_LINUX
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd/%ld", (long)pid, (long)fd);
    /* Whatever the descriptor turns out to be (a damaged record, a reused
     * pid), opening it must have no side effect: never a controlling
     * terminal, never a blocking open of a fifo or device.              */
    int nfd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (nfd < 0) {
        shmp_set_errno(errno);
        return (errno == ENOENT || errno == ESRCH) ? SHMP_EPEER : SHMP_EOS;
    }
    *fd_out = nfd;
    return SHMP_OK;
#else
    (void)pid; (void)fd; (void)fd_out;
    shmp_set_errno(ENOSYS);
    return SHMP_EPEER;
#endif
}

int shmp_os_parent_death_signal(int signo)
{
#if defined(__linux__)
    /* Not behind SHMP_PORTABLE: this is process hygiene, not shared memory. */
    if (prctl(PR_SET_PDEATHSIG, signo) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
#else
    (void)signo;
#endif
    return SHMP_OK;
}

int shmp_parent_death_signal(int signo, int32_t expected_parent)
{
    if (signo < 0 || signo > 64)
        return SHMP_EINVAL;
    int rc = signo ? shmp_os_parent_death_signal(signo) : SHMP_OK;
    if (rc != SHMP_OK)
        return rc;
    /* The parent may have died before the prctl: then no signal will come. */
    if (expected_parent > 0 && getppid() != (pid_t)expected_parent)
        return SHMP_EPEER;
    return SHMP_OK;
}

/* ---- is a process alive? (the guard's orphan check) -------------------- */

int shmp_os_pidfd_open(int32_t pid)
{
#if SHMP_LINUX && defined(SYS_pidfd_open)
    /* A pidfd names the process itself, never a later one that reuses its
     * pid, and turns readable when it exits.  Linux 5.3+; -1 elsewhere.  */
    if (pid <= 0)
        return -1;
    long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0);   /* close-on-exec, always */
    return fd < 0 ? -1 : (int)fd;
#else
    (void)pid;
    return -1;
#endif
}

int shmp_os_wake_pipe(int fds[2])
{
#if SHMP_LINUX
    return pipe2(fds, O_CLOEXEC | O_NONBLOCK);
#else
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0 || fl < 0 ||
            fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) != 0) {
            int err = errno;
            close(fds[0]);
            close(fds[1]);
            errno = err;
            return -1;
        }
    }
    return 0;
#endif
}

/* ---- a timer that signals one thread (the guard's tick) ----------------
 * Linux: a POSIX timer whose expiry is delivered to the thread that made
 * it (SIGEV_THREAD_ID), with `fn` installed as the handler of `signo`.
 * The handler stays installed after the timer is deleted: a tick already
 * queued then finds nothing to do, where the default action of a
 * real-time signal would end the process.  One timer per process; fork
 * children have none (POSIX timers are not inherited).  Elsewhere
 * (macOS has no timer_create; SHMP_PORTABLE builds): -1 with ENOSYS, and
 * the guard runs as a thread from the start.                            */
#if SHMP_LINUX
#  ifndef sigev_notify_thread_id
#    define sigev_notify_thread_id _sigev_un._tid
#  endif
static timer_t tick_timer;

static void on_tick(int signo)
{
    int saved = errno;              /* the interrupted code's errno survives us */
    (void)signo;
    shmp_guard_tick();
    errno = saved;
}
#endif

int shmp_os_tick_create(int signo)
{
#if SHMP_LINUX
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick;
    /* SA_RESTART: a tick interrupts few of the worker's blocking calls. */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        return -1;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = signo;
    ev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    return timer_create(CLOCK_MONOTONIC, &ev, &tick_timer);
#else
    (void)signo;
    errno = ENOSYS;
    return -1;
#endif
}

int shmp_os_tick_arm(uint64_t ns)
{
#if SHMP_LINUX
    /* Async-signal-safe (timer_settime is): the tick handler re-arms.
     * ns = 0 disarms; UINT64_MAX (never) disarms too.                   */
    struct itimerspec when;
    memset(&when, 0, sizeof when);
    if (ns != 0 && ns != UINT64_MAX) {
        uint64_t sec = ns / 1000000000ull;
        when.it_value.tv_sec = sec > (uint64_t)INT32_MAX ? INT32_MAX : (time_t)sec;
        when.it_value.tv_nsec = (long)(ns % 1000000000ull);
    }
    return timer_settime(tick_timer, 0, &when, NULL);
#else
    (void)ns;
    errno = ENOSYS;
    return -1;
#endif
}

void shmp_os_tick_delete(void)
{
#if SHMP_LINUX
    timer_delete(tick_timer);
#endif
}

int shmp_os_process_alive(int32_t pid, int pidfd, int is_parent)
{
    if (pid <= 0)
        return 1;
    if (pidfd >= 0) {
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        int r = poll(&p, 1, 0);
        return !(r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)));
    }
    if (is_parent)
        return getppid() == (pid_t)pid;      /* reparented: the parent is gone */
    /* Fallback: the pid may be reused by then, which only delays noticing. */
    return !(kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

int shmp_prefault(void *addr, uint64_t length)
{
    if (addr == NULL || length == 0)
        return SHMP_EINVAL;
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
    uintptr_t start = (uintptr_t)addr & ~(uintptr_t)(SHMP_PAGE - 1);
    uintptr_t end = (uintptr_t)addr + length;
    if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) != 0 &&
        errno != EINVAL && errno != ENOSYS) {
        shmp_set_errno(errno);
        return errno == ENOMEM ? SHMP_ENOSPC : SHMP_EOS;
    }
#endif
    return SHMP_OK;
}

void shmp_os_populate_read(void *addr, uint64_t length)
{
#if defined(__linux__) && defined(MADV_POPULATE_READ)
    /* MAP_POPULATE would be wrong here: on a private writable mapping it
     * faults for writing, i.e. copies every page.  This only maps the
     * file's pages read-only, one call instead of a fault per 64 KiB.
     * Failure (an older kernel: EINVAL) just leaves the faults to later. */
    (void)madvise(addr, (size_t)length, MADV_POPULATE_READ);
#else
    (void)addr;
    (void)length;
#endif
}

/* ---- futex ------------------------------------------------------------- */

void shmp_os_yield(void)
{
    sched_yield();
}

int shmp_os_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
#if SHMP_LINUX
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    /* Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
     * The kernel compares *word with expected atomically with queueing,
     * so a wake that bumps the word before we sleep is never lost.      */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tsp, NULL, 0);
    if (r == 0)
        return SHMP_OK;
    if (errno == EAGAIN)
        return SHMP_OK;                   /* value already changed */
    if (errno == ETIMEDOUT)
        return SHMP_ETIMEDOUT;
    if (errno == EINTR)
        return SHMP_EINTR;
    shmp_set_errno(errno);
    return SHMP_EOS;
#else
    /* Portable fallback: poll with exponential backoff up to 1 ms, so an
     * idle waiter costs ~1000 short wake-ups a second (well under 1% CPU). */
    uint64_t deadline = shmp_deadline(timeout_ns);
    long step = 1000;
    while (atomic_load_explicit(word, memory_order_acquire) == expected) {
        int64_t left = shmp_remaining(deadline);
        if (left == 0)
            return SHMP_ETIMEDOUT;
        long nap = step;
        if (left > 0 && left < nap)
            nap = (long)left;
        struct timespec ts = { 0, nap };
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
            return SHMP_EINTR;
        if (step < 1000000)
            step *= 2;
    }
    return SHMP_OK;
#endif
}

int shmp_os_futex_wake(_Atomic uint32_t *word, int32_t count)
{
#if SHMP_LINUX
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, count, NULL, NULL, 0) < 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
#else
    (void)word; (void)count;              /* pollers notice the change */
#endif
    return SHMP_OK;
}
