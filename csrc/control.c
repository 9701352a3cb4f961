/*
 * control.c — per-worker control blocks.
 *
 * The worker updates its block with plain atomic stores (no syscall, no
 * lock): lap counter, current section with its start stamp and deadline,
 * state.  The parent reads any field at any time; this is what makes
 * `current_lap` live and costs the worker a few stores per section.
 * Liveness is not read from here: the parent watches the worker's process
 * itself (its exit status), and a stuck section is the guard's business
 * (guard.c), so no heartbeat is kept.
 * The two words anyone sleeps on (state, stop) are waited on with wait.c's
 * primitive, so the writer makes a wake-up syscall only when someone is
 * registered as asleep.
 */
#include "shmp_internal.h"

#include <string.h>

#define MAX_BLOCKS 65536u

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define RELEASE memory_order_release

uint64_t shmp_ctl_payload_size(uint32_t count)
{
    if (count == 0 || count > MAX_BLOCKS)
        return 0;
    return sizeof(shmp_control_array) + (uint64_t)count * sizeof(shmp_control_shared);
}

int shmp_ctl_create(uint32_t count, int *fd_out, void **payload_out)
{
    if (count == 0 || count > MAX_BLOCKS || fd_out == NULL || payload_out == NULL)
        return SHMP_EINVAL;
    uint64_t size = shmp_ctl_payload_size(count);
    int rc = shmp_seg_create(SHMP_KIND_CONTROL, size, fd_out, payload_out);
    if (rc == SHMP_OK)
        ((shmp_control_array *)*payload_out)->count = count;   /* pages start zeroed */
    return rc;
}

int shmp_ctl_attach(int fd, void **payload_out, uint32_t *count_out)
{
    if (payload_out == NULL || count_out == NULL)
        return SHMP_EINVAL;
    void *payload;
    uint64_t size;
    int rc = shmp_seg_attach(fd, SHMP_KIND_CONTROL, &payload, &size);
    if (rc != SHMP_OK)
        return rc;
    /* Exactly the size create() makes for this count: the caller unmaps
     * with shmp_ctl_payload_size(count), so it must be the mapped size.  */
    uint32_t count = ((shmp_control_array *)payload)->count;
    if (count == 0 || count > MAX_BLOCKS || shmp_ctl_payload_size(count) != size) {
        shmp_seg_unmap(payload, size);
        return SHMP_ECORRUPT;
    }
    *payload_out = payload;
    *count_out = count;
    return SHMP_OK;
}

int shmp_ctl_get(void *payload, uint32_t count, uint32_t index, shmp_control **ctl_out)
{
    if (payload == NULL || ctl_out == NULL || count == 0 || count > MAX_BLOCKS)
        return SHMP_EINVAL;
    int rc = shmp_seg_verify(payload, SHMP_KIND_CONTROL);
    if (rc != SHMP_OK)
        return rc;
    shmp_control_array *a = payload;
    if (index >= count)
        return SHMP_EINVAL;
    /* The bound is the caller's count; the shared one must agree with it. */
    if (a->count != count)
        return SHMP_ECORRUPT;
    *ctl_out = (shmp_control *)&a->blocks[index];
    return SHMP_OK;
}

/* Two lines: the hot one and the rest (shmp_internal.h); the scalar
 * outcome fills the second line's last 16 bytes, no more.           */
_Static_assert(sizeof(shmp_control_shared) == 2 * SHMP_CACHE_LINE, "a control block is two lines");

int shmp_ctl_reset(shmp_control *c)
{
    if (c == NULL)
        return SHMP_EINVAL;
    shmp_control_shared *s = &c->s;
    atomic_store_explicit(&s->lap, 0, RELAXED);
    atomic_store_explicit(&s->section_start_ns, 0, RELAXED);
    atomic_store_explicit(&s->deadline_ns, 0, RELAXED);
    atomic_store_explicit(&s->section, 0, RELAXED);
    atomic_store_explicit(&s->lives, 0, RELAXED);
    atomic_store_explicit(&s->pid, 0, RELAXED);
    atomic_store_explicit(&s->exit_code, 0, RELAXED);
    atomic_store_explicit(&s->exit_signal, 0, RELAXED);
    atomic_store_explicit(&s->stop, 0, RELAXED);
    atomic_store_explicit(&s->alarm_start_ns, 0, RELAXED);
    atomic_store_explicit(&s->expired_timeout_ns, 0, RELAXED);
    atomic_store_explicit(&s->expired_lap, 0, RELAXED);
    atomic_store_explicit(&s->expired_section, 0, RELAXED);
    atomic_store_explicit(&s->scalar_tag, SHMP_SCALAR_NONE, RELAXED);
    atomic_store_explicit(&s->scalar_bits, 0, RELAXED);
    /* release: the resets above are visible to whoever sees state NEW. */
    atomic_store_explicit(&s->state, SHMP_STATE_NEW, RELEASE);
    return SHMP_OK;
}

/* ---- state ------------------------------------------------------------- */

uint32_t shmp_ctl_state(const shmp_control *c)
{
    /* acquire: pairs with set_state's release, so a reader that sees DONE
     * also sees the exit info and the final lap written before it.      */
    return c ? atomic_load_explicit(&c->s.state, ACQUIRE) : 0;
}

int shmp_ctl_set_state(shmp_control *c, uint32_t state)
{
    if (c == NULL || state > SHMP_STATE_KILLED)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.state, state, RELEASE);
    /* The word is its own futex word: the store is the change. */
    shmp_wake_waiters(&c->s.state, &c->s.state_waiters);
    return SHMP_OK;
}

int shmp_ctl_advance(shmp_control *c, uint32_t state)
{
    if (c == NULL || state >= SHMP_STATE_DONE)
        return SHMP_EINVAL;
    /* release: as set_state's, for a reader that polls the word. */
    atomic_store_explicit(&c->s.state, state, RELEASE);
    if (state == SHMP_STATE_FINISHING)  /* see shmproc.h: the parent wakes ahead of the end */
        shmp_wake_waiters(&c->s.state, &c->s.state_waiters);
    return SHMP_OK;
}

struct at_least { _Atomic uint32_t *word; uint32_t value; };

static int reached(void *arg)
{
    struct at_least *a = arg;
    /* acquire: pairs with set_state's (request_stop's) release store. */
    return atomic_load_explicit(a->word, ACQUIRE) >= a->value;
}

/* Sleep until *word >= at_least (state) or != 0 (stop, at_least = 1). */
static int wait_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters, uint32_t at_least,
                     int64_t timeout_ns)
{
    struct at_least a = { word, at_least };
    return shmp_wait_until(word, waiters, reached, &a, shmp_deadline(timeout_ns));
}

int shmp_ctl_wait_state(shmp_control *c, uint32_t at_least, int64_t timeout_ns)
{
    if (c == NULL)
        return SHMP_EINVAL;
    return wait_word(&c->s.state, &c->s.state_waiters, at_least, timeout_ns);
}

/* ---- stop flag ----------------------------------------------------------- */

int shmp_ctl_request_stop(shmp_control *c)
{
    if (c == NULL)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.stop, 1, RELEASE);
    shmp_wake_waiters(&c->s.stop, &c->s.stop_waiters);
    return SHMP_OK;
}

int shmp_ctl_clear_stop(shmp_control *c)
{
    if (c == NULL)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.stop, 0, RELEASE);
    return SHMP_OK;
}

int shmp_ctl_stop_requested(const shmp_control *c)
{
    return c ? (int)atomic_load_explicit(&c->s.stop, ACQUIRE) : 0;
}

int shmp_ctl_wait_stop(shmp_control *c, int64_t timeout_ns)
{
    if (c == NULL)
        return SHMP_EINVAL;
    return wait_word(&c->s.stop, &c->s.stop_waiters, 1, timeout_ns);
}

/* ---- laps and sections (the worker's hot path: stores only) ---------------- */

uint64_t shmp_ctl_lap(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.lap, RELAXED) : 0;
}

int shmp_ctl_set_lap(shmp_control *c, uint64_t lap)
{
    if (c == NULL)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.lap, lap, RELAXED);
    return SHMP_OK;
}

/* Bits for the section being left: did it pass its deadline?  And is a
 * stop requested?  Reads only words this worker wrote, plus `stop`.     */
static int leave_bits(shmp_control_shared *s, uint64_t now)
{
    uint64_t old = atomic_load_explicit(&s->deadline_ns, RELAXED);
    int bits = (int)atomic_load_explicit(&s->stop, RELAXED) ? SHMP_CTL_STOP : 0;
    if (old != 0 && now > old)
        bits |= SHMP_CTL_OVERRAN;
    return bits;
}

int shmp_ctl_enter(shmp_control *c, uint32_t section, uint64_t timeout_ns)
{
    if (c == NULL)
        return SHMP_EINVAL;
    uint64_t now = shmp_now_ns();
    /* A deferred guard (guard.c) becomes a thread at the first section
     * entered after its promotion stamp: a load and a compare per section. */
    uint64_t due = atomic_load_explicit(&shmp_guard_promote_at_ns, RELAXED);
    if (due != 0 && now >= due)
        shmp_guard_promote();
    int bits = leave_bits(&c->s, now);
    uint64_t deadline = 0;
    if (timeout_ns != 0)
        deadline = UINT64_MAX - now < timeout_ns ? UINT64_MAX : now + timeout_ns;
    /* A seqlock with the deadline as its sequence word: 0 while the
     * section and its start stamp change, then the new deadline.  The
     * release fence orders the 0 before the new stamp; the guard
     * (guard.c) re-reads the deadline after an acquire fence and trusts
     * the three words only if it saw the same non-zero deadline twice.
     * One more plain store per section; no fence instruction on x86.    */
    atomic_store_explicit(&c->s.deadline_ns, 0, RELAXED);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&c->s.section_start_ns, now, RELAXED);
    atomic_store_explicit(&c->s.section, section, RELAXED);
    /* release: a watchdog that reads this deadline also reads the section
     * and start stamp stored above.                                      */
    atomic_store_explicit(&c->s.deadline_ns, deadline, RELEASE);
    return bits;
}

int shmp_ctl_leave(shmp_control *c)
{
    if (c == NULL)
        return SHMP_EINVAL;
    int bits = leave_bits(&c->s, shmp_now_ns());
    atomic_store_explicit(&c->s.deadline_ns, 0, RELEASE);
    atomic_store_explicit(&c->s.section, 0, RELAXED);
    return bits;
}

uint32_t shmp_ctl_section(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.section, RELAXED) : 0;
}

uint64_t shmp_ctl_section_start_ns(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.section_start_ns, RELAXED) : 0;
}

uint64_t shmp_ctl_deadline_ns(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.deadline_ns, ACQUIRE) : 0;
}

int shmp_ctl_end_lap(shmp_control *c)
{
    if (c == NULL)
        return SHMP_EINVAL;
    uint64_t now = shmp_now_ns();
    int bits = leave_bits(&c->s, now);
    atomic_store_explicit(&c->s.deadline_ns, 0, RELEASE);
    atomic_store_explicit(&c->s.section, 0, RELAXED);
    atomic_fetch_add_explicit(&c->s.lap, 1, RELAXED);
    return bits;
}

/* ---- lives, identity, exit --------------------------------------------------- */

uint32_t shmp_ctl_lives(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.lives, RELAXED) : 0;
}

int shmp_ctl_set_lives(shmp_control *c, uint32_t lives)
{
    if (c == NULL)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.lives, lives, RELAXED);
    return SHMP_OK;
}

int32_t shmp_ctl_pid(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.pid, RELAXED) : 0;
}

int shmp_ctl_set_pid(shmp_control *c, int32_t pid)
{
    if (c == NULL || pid < 0)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.pid, pid, RELAXED);
    return SHMP_OK;
}

int shmp_ctl_set_exit(shmp_control *c, int32_t code, int32_t signo)
{
    if (c == NULL || signo < 0)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.exit_code, code, RELAXED);
    atomic_store_explicit(&c->s.exit_signal, signo, RELAXED);
    return SHMP_OK;     /* made visible by the set_state(DONE/...) release that follows */
}

int shmp_ctl_report_scalar(shmp_control *c, uint32_t tag, uint64_t bits)
{
    if (c == NULL || tag == SHMP_SCALAR_NONE || tag > SHMP_SCALAR_FLOAT)
        return SHMP_EINVAL;
    atomic_store_explicit(&c->s.scalar_bits, bits, RELAXED);
    atomic_store_explicit(&c->s.scalar_tag, tag, RELAXED);
    atomic_store_explicit(&c->s.exit_code, 0, RELAXED);
    atomic_store_explicit(&c->s.exit_signal, 0, RELAXED);
    /* set_state's release publishes the words above with DONE. */
    return shmp_ctl_set_state(c, SHMP_STATE_DONE);
}

int shmp_ctl_scalar(const shmp_control *c, uint64_t *bits_out)
{
    if (c == NULL || bits_out == NULL)
        return SHMP_EINVAL;
    /* acquire: pairs with report_scalar's set_state; before DONE there
     * is no outcome to read.                                           */
    if (atomic_load_explicit(&c->s.state, ACQUIRE) != SHMP_STATE_DONE)
        return SHMP_SCALAR_NONE;
    uint32_t tag = atomic_load_explicit(&c->s.scalar_tag, RELAXED);
    *bits_out = atomic_load_explicit(&c->s.scalar_bits, RELAXED);
    /* The block is shared: a tag out of range is reported, never trusted. */
    return tag > SHMP_SCALAR_FLOAT ? SHMP_ECORRUPT : (int)tag;
}

int shmp_ctl_outcome(const shmp_control *c, uint64_t *lap_out, int32_t *code_out,
                     int32_t *signo_out, uint64_t *bits_out)
{
    if (c == NULL || lap_out == NULL || code_out == NULL || signo_out == NULL ||
        bits_out == NULL)
        return SHMP_EINVAL;
    int tag = shmp_ctl_scalar(c, bits_out);     /* its acquire orders the reads below */
    *lap_out = atomic_load_explicit(&c->s.lap, RELAXED);
    *code_out = atomic_load_explicit(&c->s.exit_code, RELAXED);
    *signo_out = atomic_load_explicit(&c->s.exit_signal, RELAXED);
    return tag;
}

int shmp_ctl_exit(const shmp_control *c, int32_t *code_out, int32_t *signo_out)
{
    if (c == NULL || code_out == NULL || signo_out == NULL)
        return SHMP_EINVAL;
    (void)atomic_load_explicit(&c->s.state, ACQUIRE);   /* pairs with set_state */
    *code_out = atomic_load_explicit(&c->s.exit_code, RELAXED);
    *signo_out = atomic_load_explicit(&c->s.exit_signal, RELAXED);
    return SHMP_OK;
}

/* ---- the guard's words (guard.c) ------------------------------------------------ */

void shmp_ctl_store_alarm(shmp_control *c, uint64_t start_ns)
{
    /* release: pairs with the acquire in shmp_ctl_alarm_start_ns, read by
     * the SIGALRM handler that this store precedes (pthread_kill).      */
    atomic_store_explicit(&c->s.alarm_start_ns, start_ns, RELEASE);
}

uint64_t shmp_ctl_alarm_start_ns(const shmp_control *c)
{
    return c ? atomic_load_explicit(&c->s.alarm_start_ns, ACQUIRE) : 0;
}

void shmp_ctl_record_expired(shmp_control *c, uint32_t section, uint64_t timeout_ns)
{
    atomic_store_explicit(&c->s.expired_timeout_ns, timeout_ns, RELAXED);
    atomic_store_explicit(&c->s.expired_lap, atomic_load_explicit(&c->s.lap, RELAXED), RELAXED);
    atomic_store_explicit(&c->s.exit_code, SHMP_EXIT_EXPIRED, RELAXED);
    /* release: a reader that sees the section also sees the timeout, lap
     * and exit code stored above (pairs with shmp_ctl_expired's acquire). */
    atomic_store_explicit(&c->s.expired_section, section, RELEASE);
}

uint32_t shmp_ctl_expired(const shmp_control *c, uint64_t *timeout_ns_out, uint64_t *lap_out)
{
    if (c == NULL)
        return 0;
    uint32_t section = atomic_load_explicit(&c->s.expired_section, ACQUIRE);
    if (section != 0) {
        if (timeout_ns_out != NULL)
            *timeout_ns_out = atomic_load_explicit(&c->s.expired_timeout_ns, RELAXED);
        if (lap_out != NULL)
            *lap_out = atomic_load_explicit(&c->s.expired_lap, RELAXED);
    }
    return section;
}
