/*
 * guard.c — the worker's native watchdog: timeouts that hold without the GIL.
 *
 * A hook stuck in C code that holds the GIL (sum(range(10**11)), a long
 * regex, many extensions) stops every Python thread of its process, so a
 * Python watchdog thread can neither signal it nor notice a dead parent.
 * This thread needs no interpreter.  It reads the current section's
 * deadline from the control block (the worker's hot path only stores it:
 * shmp_ctl_enter), and:
 *
 *   deadline            SIGALRM to the main thread: Python's handler raises
 *                       the TimeoutError inside the hook at its next
 *                       bytecode (the normal way a timeout ends a hook).
 *   ... every 50 ms·n   again, backing off, while the same section runs
 *                       (the hook swallowed it, or is still in C).
 *   deadline + grace    record the section, its timeout and lap in the
 *                       control block, then _exit(SHMP_EXIT_EXPIRED); the
 *                       parent reports that section's TimeoutError.
 *
 * It sleeps in poll() until the deadline, or at most `horizon` (the
 * smallest timeout any new section can have, so a section entered while
 * it sleeps can never be missed), on a self-pipe that start/rearm/stop
 * write to and, where the system has pidfds, on the parent's pidfd,
 * which turns readable the moment the parent exits.  Without a pidfd it
 * checks the parent at least every PARENT_CHECK_NS.  No lap ever wakes it.
 *
 * fork(): threads do not survive it.  A child of the worker (a user's
 * os.fork() in a hook, or a nested worker) has no guard: the atfork child
 * handler forgets the parent's, so a stale deadline in the shared control
 * block can never end the child, and the child may start its own guard.
 */
#define _POSIX_C_SOURCE 200809L         /* pthread_sigmask, pthread_kill under -std=c11 */
#include "shmp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

/* Without a pidfd, how often the parent's liveness is checked. */
#define PARENT_CHECK_NS   1000000000ull
/* First re-signal this long after the deadline, then 2x, 3x ... */
#define RESIGNAL_STEP_NS    50000000ull

typedef struct guard {
    pthread_mutex_t lock;           /* serialises start/rearm/stop with fork() */
    int running;                    /* a thread exists (in this process) */
    pthread_t thread;
    pthread_t target;               /* the worker's main thread: gets SIGALRM */
    shmp_control *ctl;
    int wake_r, wake_w;             /* self-pipe: start/rearm/stop -> thread */
    int pidfd;                      /* the parent's, or -1 */
    int32_t parent_pid;
    int parent_is_parent;
    uint64_t grace_ns;
    int alarm_signo;
    _Atomic uint64_t horizon_ns;    /* 0: no timeouts */
    _Atomic int stopping;
} guard;

static guard G = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake_r = -1, .wake_w = -1, .pidfd = -1 };
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* ---- fork ----------------------------------------------------------------
 * prepare/parent hold the lock across fork(), so the child never inherits
 * it locked by a thread that does not exist there.  The child drops the
 * guard: no thread runs there, and its descriptors are the parent's.    */
static void atfork_prepare(void) { pthread_mutex_lock(&G.lock); }
static void atfork_parent(void)  { pthread_mutex_unlock(&G.lock); }
static void atfork_child(void)
{
    if (G.running) {
        close_fd(&G.wake_r);
        close_fd(&G.wake_w);
        close_fd(&G.pidfd);
        G.running = 0;
        G.ctl = NULL;
    }
    pthread_mutex_unlock(&G.lock);  /* the forking thread holds it: it is ours */
}
static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

static void poke(void)
{
    char b = 1;
    /* Non-blocking: a full pipe already holds a wake-up. */
    ssize_t r = write(G.wake_w, &b, 1);
    (void)r;
}

static void drain(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

/* Sleep up to `ns` (UINT64_MAX: until woken) on the pipe and the pidfd. */
static void nap(uint64_t ns)
{
    struct pollfd fds[2] = { { .fd = G.wake_r, .events = POLLIN },
                             { .fd = G.pidfd, .events = POLLIN } };
    int n = G.pidfd >= 0 ? 2 : 1;
    int ms = -1;
    if (ns != UINT64_MAX) {
        uint64_t m = (ns + 999999) / 1000000;        /* round up: never early */
        ms = m > INT_MAX ? INT_MAX : (int)m;
    }
    if (poll(fds, (nfds_t)n, ms) > 0 && (fds[0].revents & POLLIN))
        drain(G.wake_r);
}

static void *guard_main(void *arg)
{
    (void)arg;
    shmp_control_shared *s = &G.ctl->s;
    uint64_t fired = 0;                 /* start stamp of the section signalled */
    uint64_t attempts = 0;
    uint64_t sleep_ns = 0;              /* check the parent at once */
    for (;;) {
        nap(sleep_ns);
        if (atomic_load_explicit(&G.stopping, memory_order_acquire))
            return NULL;
        if (!shmp_os_process_alive(G.parent_pid, G.pidfd, G.parent_is_parent)) {
            atomic_store_explicit(&s->exit_code, SHMP_EXIT_ORPHANED, memory_order_relaxed);
            _exit(SHMP_EXIT_ORPHANED);
        }
        uint64_t horizon = atomic_load_explicit(&G.horizon_ns, memory_order_relaxed);
        sleep_ns = horizon ? horizon : UINT64_MAX;
        if (G.pidfd < 0 && sleep_ns > PARENT_CHECK_NS)
            sleep_ns = PARENT_CHECK_NS;
        /* acquire: pairs with shmp_ctl_enter's release of the deadline, so
         * the start stamp and section read next are at least that new.  */
        uint64_t deadline = atomic_load_explicit(&s->deadline_ns, memory_order_acquire);
        uint64_t start = atomic_load_explicit(&s->section_start_ns, memory_order_relaxed);
        uint32_t section = atomic_load_explicit(&s->section, memory_order_relaxed);
        /* The worker may have entered another section between those reads:
         * a deadline paired with the next section's stamp would signal the
         * wrong section.  The deadline is a seqlock word (shmp_ctl_enter
         * zeroes it before it changes the stamp): the same deadline seen
         * again after an acquire fence means the three belong together. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->deadline_ns, memory_order_relaxed) != deadline) {
            sleep_ns = 0;
            continue;
        }
        if (deadline == 0)
            continue;
        uint64_t now = shmp_now_ns();
        if (now < deadline) {
            if (deadline - now < sleep_ns)
                sleep_ns = deadline - now;
            continue;
        }
        if (start != fired) {
            fired = start;
            attempts = 0;
        }
        uint64_t end = UINT64_MAX - deadline < G.grace_ns ? UINT64_MAX : deadline + G.grace_ns;
        if (now >= end) {
            /* The same section still runs (a new one has a new stamp and a
             * new deadline): its hook ignored every signal, or sits in C. */
            if (atomic_load_explicit(&s->deadline_ns, memory_order_acquire) == deadline &&
                atomic_load_explicit(&s->section_start_ns, memory_order_relaxed) == start) {
                shmp_ctl_record_expired(G.ctl, section, deadline > start ? deadline - start : 0);
                _exit(SHMP_EXIT_EXPIRED);
            }
            sleep_ns = 0;
            continue;
        }
        shmp_ctl_store_alarm(G.ctl, start);
        pthread_kill(G.target, G.alarm_signo);
        attempts++;
        uint64_t again = RESIGNAL_STEP_NS * attempts;
        if (again > end - now)
            again = end - now;
        if (again < sleep_ns)
            sleep_ns = again;
    }
}

int shmp_guard_start(shmp_control *ctl, int32_t parent_pid, int parent_is_parent,
                     uint64_t horizon_ns, uint64_t grace_ns, int alarm_signo)
{
    if (ctl == NULL || parent_pid < 0 || alarm_signo <= 0 || alarm_signo > 64)
        return SHMP_EINVAL;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&G.lock);
    int rc = SHMP_OK;
    if (G.running) {
        rc = SHMP_ESTATE;
        goto out;
    }
    int fds[2];
    if (shmp_os_wake_pipe(fds) != 0) {
        shmp_set_errno(errno);
        rc = SHMP_EOS;
        goto out;
    }
    G.wake_r = fds[0];
    G.wake_w = fds[1];
    G.pidfd = shmp_os_pidfd_open(parent_pid);
    G.parent_pid = parent_pid;
    G.parent_is_parent = parent_is_parent;
    if (!shmp_os_process_alive(parent_pid, G.pidfd, parent_is_parent)) {
        rc = SHMP_EPEER;
        goto fail;
    }
    G.ctl = ctl;
    G.target = pthread_self();
    G.grace_ns = grace_ns;
    G.alarm_signo = alarm_signo;
    atomic_store_explicit(&G.horizon_ns, horizon_ns, memory_order_relaxed);
    atomic_store_explicit(&G.stopping, 0, memory_order_relaxed);
    /* Born with every signal blocked: SIGALRM, SIGINT and friends must
     * keep going to the interpreter's threads, never to this one.      */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&G.thread, NULL, guard_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        shmp_set_errno(err);
        rc = err == EAGAIN ? SHMP_ENOMEM : SHMP_EOS;
        goto fail;
    }
    G.running = 1;
    goto out;
fail:
    close_fd(&G.wake_r);
    close_fd(&G.wake_w);
    close_fd(&G.pidfd);
out:
    pthread_mutex_unlock(&G.lock);
    return rc;
}

int shmp_guard_rearm(uint64_t horizon_ns)
{
    pthread_mutex_lock(&G.lock);
    if (!G.running) {
        pthread_mutex_unlock(&G.lock);
        return SHMP_ESTATE;
    }
    uint64_t old = atomic_exchange_explicit(&G.horizon_ns, horizon_ns, memory_order_relaxed);
    /* Only a shorter horizon needs the thread now: it may be asleep for
     * longer than a section of the new limits may last.               */
    if (horizon_ns != 0 && (old == 0 || horizon_ns < old))
        poke();
    pthread_mutex_unlock(&G.lock);
    return SHMP_OK;
}

int shmp_guard_stop(void)
{
    pthread_mutex_lock(&G.lock);
    if (!G.running) {
        pthread_mutex_unlock(&G.lock);
        return SHMP_OK;
    }
    /* release: pairs with the thread's acquire after each nap. */
    atomic_store_explicit(&G.stopping, 1, memory_order_release);
    poke();
    pthread_join(G.thread, NULL);
    G.running = 0;
    G.ctl = NULL;
    close_fd(&G.wake_r);
    close_fd(&G.wake_w);
    close_fd(&G.pidfd);
    pthread_mutex_unlock(&G.lock);
    return SHMP_OK;
}

int shmp_guard_running(void)
{
    pthread_mutex_lock(&G.lock);
    int r = G.running;
    pthread_mutex_unlock(&G.lock);
    return r;
}
