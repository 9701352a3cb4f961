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
 * Deferred start (a fork worker, which the kernel ends with its parent):
 * the same look at the section is first taken by a POSIX timer's signal
 * handler on the main thread (the tick: async-signal-safe, needs neither
 * the GIL nor a thread), re-armed for the next look.  The first section
 * entered PROMOTE_AFTER after the start makes the thread, and the ticks
 * stop.  A short run never pays for a thread; a long one gets no ticks
 * once promoted, so its blocking calls see no more signals than before.
 *
 * fork(): threads do not survive it, nor do timers.  A child of the worker (a user's
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
/* The soonest a tick comes back when it could not read a consistent
 * section (the worker was entering one): a retry, not a spin.       */
#define TICK_RETRY_NS           100000ull

/* The tick's signal: a real-time one, so that it queues apart from the
 * standard signals a program may use; glibc keeps the first two.     */
#ifdef SIGRTMIN
#  define TICK_SIGNAL (SIGRTMIN + 7)
#else
#  define TICK_SIGNAL SIGALRM       /* unused: no tick timer where there is no SIGRTMIN */
#endif

enum { GUARD_NONE = 0, GUARD_TICK = 1, GUARD_THREAD = 2 };

typedef struct guard {
    pthread_mutex_t lock;           /* serialises start/rearm/stop/promote with fork() */
    _Atomic int mode;               /* GUARD_*: what watches (in this process) */
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

_Atomic uint64_t shmp_guard_promote_at_ns;

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
 * guard: no thread runs there, no timer ticks there (POSIX timers are not
 * inherited), and its descriptors are the parent's.                     */
static void atfork_prepare(void) { pthread_mutex_lock(&G.lock); }
static void atfork_parent(void)  { pthread_mutex_unlock(&G.lock); }
static void atfork_child(void)
{
    atomic_store_explicit(&shmp_guard_promote_at_ns, 0, memory_order_relaxed);
    if (atomic_load_explicit(&G.mode, memory_order_relaxed) != GUARD_NONE) {
        close_fd(&G.wake_r);
        close_fd(&G.wake_w);
        close_fd(&G.pidfd);
        atomic_store_explicit(&G.mode, GUARD_NONE, memory_order_relaxed);
        G.ctl = NULL;
    }
    pthread_mutex_unlock(&G.lock);  /* the forking thread holds it: it is ours */
}
static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
#if defined(__GNUC__)
/* Registered when the library loads, in the parent: a fork child that
 * starts a guard then finds it done (pthread_atfork allocates, and every
 * page a fresh fork child writes first costs a copy).                  */
__attribute__((constructor)) static void register_atfork_at_load(void)
{
    pthread_once(&atfork_once, register_atfork);
}
#endif

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

/* ---- one look at the running section ------------------------------------
 * Shared by the thread and the tick; only atomics and the clock, so the
 * tick may run it in a signal handler.  `*sleep_ns` comes in as the
 * longest sleep allowed and leaves as the time until the next look.    */
enum { LOOK_NOTHING, LOOK_ALARM, LOOK_EXPIRE };

typedef struct look_memory {
    uint64_t fired;                 /* start stamp of the section signalled */
    uint64_t attempts;
} look_memory;

typedef struct look_found {
    uint64_t start;                 /* the section's start stamp (LOOK_ALARM) */
    uint32_t section;               /* LOOK_EXPIRE: the section, its timeout */
    uint64_t timeout_ns;
} look_found;

static int look(look_memory *m, uint64_t *sleep_ns, look_found *out)
{
    shmp_control_shared *s = &G.ctl->s;
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
        *sleep_ns = 0;
        return LOOK_NOTHING;
    }
    if (deadline == 0)
        return LOOK_NOTHING;
    uint64_t now = shmp_now_ns();
    if (now < deadline) {
        if (deadline - now < *sleep_ns)
            *sleep_ns = deadline - now;
        return LOOK_NOTHING;
    }
    if (start != m->fired) {
        m->fired = start;
        m->attempts = 0;
    }
    uint64_t end = UINT64_MAX - deadline < G.grace_ns ? UINT64_MAX : deadline + G.grace_ns;
    if (now >= end) {
        /* The same section still runs (a new one has a new stamp and a
         * new deadline): its hook ignored every signal, or sits in C. */
        if (atomic_load_explicit(&s->deadline_ns, memory_order_acquire) == deadline &&
            atomic_load_explicit(&s->section_start_ns, memory_order_relaxed) == start) {
            out->section = section;
            out->timeout_ns = deadline > start ? deadline - start : 0;
            return LOOK_EXPIRE;
        }
        *sleep_ns = 0;
        return LOOK_NOTHING;
    }
    out->start = start;
    m->attempts++;
    uint64_t again = RESIGNAL_STEP_NS * m->attempts;
    if (again > end - now)
        again = end - now;
    if (again < *sleep_ns)
        *sleep_ns = again;
    return LOOK_ALARM;
}

/* What a look found, done: the SIGALRM to the worker's main thread, or
 * the end.  Async-signal-safe (pthread_kill is, since POSIX.1-2008 TC1): the
 * tick's handler, on that main thread, calls it too.                  */
static void act(int what, const look_found *found)
{
    if (what == LOOK_EXPIRE) {
        shmp_ctl_record_expired(G.ctl, found->section, found->timeout_ns);
        _exit(SHMP_EXIT_EXPIRED);
    }
    if (what == LOOK_ALARM) {
        shmp_ctl_store_alarm(G.ctl, found->start);
        pthread_kill(G.target, G.alarm_signo);
    }
}

static void *guard_main(void *arg)
{
    (void)arg;
    look_memory memory = { 0, 0 };
    uint64_t sleep_ns = 0;              /* check the parent at once */
    for (;;) {
        nap(sleep_ns);
        if (atomic_load_explicit(&G.stopping, memory_order_acquire))
            return NULL;
        if (!shmp_os_process_alive(G.parent_pid, G.pidfd, G.parent_is_parent)) {
            atomic_store_explicit(&G.ctl->s.exit_code, SHMP_EXIT_ORPHANED, memory_order_relaxed);
            _exit(SHMP_EXIT_ORPHANED);
        }
        uint64_t horizon = atomic_load_explicit(&G.horizon_ns, memory_order_relaxed);
        sleep_ns = horizon ? horizon : UINT64_MAX;
        if (G.pidfd < 0 && sleep_ns > PARENT_CHECK_NS)
            sleep_ns = PARENT_CHECK_NS;
        look_found found = { 0, 0, 0 };
        act(look(&memory, &sleep_ns, &found), &found);
    }
}

/* ---- the tick ---------------------------------------------------------------
 * A guard started deferred (shmp_guard_start_deferred) begins as a timer
 * that signals the worker's main thread: its handler takes the same look
 * the thread would, acts on it (the SIGALRM goes to this same thread) and
 * re-arms the timer for the next look.  Starting it costs two syscalls;
 * a thread costs ~40 page faults in a fresh fork child, which most short
 * runs never need.  At the first section entered after the promotion
 * stamp (shmp_ctl_enter) it becomes the thread, and the ticks stop.    */
static look_memory tick_memory;     /* only the tick handler touches it */

void shmp_guard_tick(void)
{
    /* acquire: pairs with the release that made the mode TICK, after
     * G.ctl and the limits were set.                                  */
    if (atomic_load_explicit(&G.mode, memory_order_acquire) != GUARD_TICK)
        return;                     /* stopped or promoted: a late tick */
    uint64_t horizon = atomic_load_explicit(&G.horizon_ns, memory_order_relaxed);
    uint64_t sleep_ns = horizon ? horizon : UINT64_MAX;
    look_found found = { 0, 0, 0 };
    act(look(&tick_memory, &sleep_ns, &found), &found);
    if (sleep_ns < TICK_RETRY_NS)
        sleep_ns = TICK_RETRY_NS;
    shmp_os_tick_arm(sleep_ns);
}

/* The thread's start: its pipe, the parent's pidfd, the thread itself.
 * G.lock held.  SHMP_EPEER if the parent is already gone.              */
static int start_thread(void)
{
    int fds[2];
    if (shmp_os_wake_pipe(fds) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    G.wake_r = fds[0];
    G.wake_w = fds[1];
    G.pidfd = shmp_os_pidfd_open(G.parent_pid);
    int rc = SHMP_OK;
    if (!shmp_os_process_alive(G.parent_pid, G.pidfd, G.parent_is_parent)) {
        rc = SHMP_EPEER;
        goto fail;
    }
    atomic_store_explicit(&G.stopping, 0, memory_order_relaxed);
    /* Born with every signal blocked: SIGALRM, SIGINT and friends must
     * keep going to the interpreter's threads, never to this one.      */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&G.thread, NULL, guard_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0)
        return SHMP_OK;
    shmp_set_errno(err);
    rc = err == EAGAIN ? SHMP_ENOMEM : SHMP_EOS;
fail:
    close_fd(&G.wake_r);
    close_fd(&G.wake_w);
    close_fd(&G.pidfd);
    return rc;
}

static int start(shmp_control *ctl, int32_t parent_pid, int parent_is_parent,
                 uint64_t horizon_ns, uint64_t grace_ns, int alarm_signo,
                 int deferred, uint64_t promote_after_ns)
{
    if (ctl == NULL || parent_pid < 0 || alarm_signo <= 0 || alarm_signo > 64)
        return SHMP_EINVAL;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&G.lock);
    int rc = SHMP_OK;
    if (atomic_load_explicit(&G.mode, memory_order_relaxed) != GUARD_NONE) {
        rc = SHMP_ESTATE;
        goto out;
    }
    G.parent_pid = parent_pid;
    G.parent_is_parent = parent_is_parent;
    G.ctl = ctl;
    G.target = pthread_self();
    G.grace_ns = grace_ns;
    G.alarm_signo = alarm_signo;
    atomic_store_explicit(&G.horizon_ns, horizon_ns, memory_order_relaxed);
    if (deferred) {
        if (!shmp_os_process_alive(parent_pid, -1, parent_is_parent)) {
            rc = SHMP_EPEER;
            goto out;
        }
        if (shmp_os_tick_create(TICK_SIGNAL) == 0) {
            tick_memory.fired = tick_memory.attempts = 0;
            /* release: a tick that sees TICK sees the fields set above. */
            atomic_store_explicit(&G.mode, GUARD_TICK, memory_order_release);
            if (shmp_os_tick_arm(horizon_ns ? horizon_ns : UINT64_MAX) != 0) {
                shmp_set_errno(errno);
                atomic_store_explicit(&G.mode, GUARD_NONE, memory_order_relaxed);
                shmp_os_tick_delete();
                rc = SHMP_EOS;
                goto out;
            }
            uint64_t now = shmp_now_ns();
            uint64_t due = UINT64_MAX - now < promote_after_ns ? UINT64_MAX
                                                               : now + promote_after_ns;
            atomic_store_explicit(&shmp_guard_promote_at_ns, due ? due : 1,
                                  memory_order_relaxed);
            goto out;
        }
        /* No such timer here: a thread from the start. */
    }
    rc = start_thread();
    if (rc == SHMP_OK)
        atomic_store_explicit(&G.mode, GUARD_THREAD, memory_order_release);
out:
    pthread_mutex_unlock(&G.lock);
    return rc;
}

int shmp_guard_start(shmp_control *ctl, int32_t parent_pid, int parent_is_parent,
                     uint64_t horizon_ns, uint64_t grace_ns, int alarm_signo)
{
    return start(ctl, parent_pid, parent_is_parent, horizon_ns, grace_ns, alarm_signo, 0, 0);
}

int shmp_guard_start_deferred(shmp_control *ctl, int32_t parent_pid, int parent_is_parent,
                              uint64_t horizon_ns, uint64_t grace_ns, int alarm_signo,
                              uint64_t promote_after_ns)
{
    return start(ctl, parent_pid, parent_is_parent, horizon_ns, grace_ns, alarm_signo, 1,
                 promote_after_ns);
}

void shmp_guard_promote(void)
{
    pthread_mutex_lock(&G.lock);
    atomic_store_explicit(&shmp_guard_promote_at_ns, 0, memory_order_relaxed);
    if (atomic_load_explicit(&G.mode, memory_order_relaxed) == GUARD_TICK &&
        start_thread() == SHMP_OK) {
        /* The thread watches from here on; a tick still queued finds the
         * mode changed and does nothing.  (If the thread could not start,
         * the tick goes on guarding: nothing is lost but the promotion.) */
        atomic_store_explicit(&G.mode, GUARD_THREAD, memory_order_release);
        shmp_os_tick_delete();
    }
    pthread_mutex_unlock(&G.lock);
}

int shmp_guard_rearm(uint64_t horizon_ns)
{
    pthread_mutex_lock(&G.lock);
    int mode = atomic_load_explicit(&G.mode, memory_order_relaxed);
    if (mode == GUARD_NONE) {
        pthread_mutex_unlock(&G.lock);
        return SHMP_ESTATE;
    }
    uint64_t old = atomic_exchange_explicit(&G.horizon_ns, horizon_ns, memory_order_relaxed);
    /* Only a shorter horizon needs a look now: the guard may be asleep for
     * longer than a section of the new limits may last.               */
    if (horizon_ns != 0 && (old == 0 || horizon_ns < old)) {
        if (mode == GUARD_THREAD)
            poke();
        else
            shmp_os_tick_arm(TICK_RETRY_NS);
    }
    pthread_mutex_unlock(&G.lock);
    return SHMP_OK;
}

int shmp_guard_stop(void)
{
    pthread_mutex_lock(&G.lock);
    atomic_store_explicit(&shmp_guard_promote_at_ns, 0, memory_order_relaxed);
    int mode = atomic_load_explicit(&G.mode, memory_order_relaxed);
    if (mode == GUARD_TICK) {
        atomic_store_explicit(&G.mode, GUARD_NONE, memory_order_release);
        shmp_os_tick_delete();
    } else if (mode == GUARD_THREAD) {
        /* release: pairs with the thread's acquire after each nap. */
        atomic_store_explicit(&G.stopping, 1, memory_order_release);
        poke();
        pthread_join(G.thread, NULL);
        atomic_store_explicit(&G.mode, GUARD_NONE, memory_order_relaxed);
        close_fd(&G.wake_r);
        close_fd(&G.wake_w);
        close_fd(&G.pidfd);
    }
    G.ctl = NULL;
    pthread_mutex_unlock(&G.lock);
    return SHMP_OK;
}

int shmp_guard_running(void)
{
    return atomic_load_explicit(&G.mode, memory_order_acquire) != GUARD_NONE;
}

int shmp_guard_tick_signal(void)
{
    return TICK_SIGNAL;
}

int shmp_guard_mode(void)
{
    return atomic_load_explicit(&G.mode, memory_order_acquire);
}
