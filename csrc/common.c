/* common.c — version, status strings and build facts. */
#include "shmp_internal.h"

uint32_t shmp_abi_version(void) { return SHMP_ABI_VERSION; }

int shmp_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
    return 1;
#  endif
#endif
    return 0;
}

const char *shmp_strerror(int status)
{
    switch (status) {
    case SHMP_OK:        return "ok";
    case SHMP_EINVAL:    return "invalid argument";
    case SHMP_ENOMEM:    return "out of local memory";
    case SHMP_ENOSPC:    return "shared memory could not be reserved (is /dev/shm full?)";
    case SHMP_EOS:       return "operating system call failed";
    case SHMP_ECORRUPT:  return "shared memory header or record failed its checks";
    case SHMP_EFULL:     return "ring is full";
    case SHMP_EEMPTY:    return "ring is empty";
    case SHMP_ETIMEDOUT: return "timed out";
    case SHMP_EINTR:     return "interrupted by a signal";
    case SHMP_ETOOBIG:   return "record larger than the ring can ever hold";
    case SHMP_ESMALLBUF: return "destination buffer too small";
    case SHMP_ESTATE:    return "operation not valid in the current state";
    case SHMP_EPEER:     return "peer process or descriptor is gone";
    case SHMP_EABI:      return "shared memory was made by a different shmproc version";
    case SHMP_EFOREIGN:  return "shared memory belongs to another user";
    case SHMP_ESEALED:   return "ring is sealed";
    default:             return "unknown status";
    }
}

#ifdef SHMP_FAULT_INJECTION
#include <signal.h>

/* Process-local on purpose: nothing in shared memory can trigger a fault. */
static _Atomic uint32_t fault_armed;

int shmp_fault_arm(uint32_t point)
{
    atomic_store_explicit(&fault_armed, point, memory_order_relaxed);
    return SHMP_OK;
}

void shmp_fault_point(uint32_t point)
{
    uint32_t want = point;
    /* Fires once: the exchange disarms it, so a continued process goes on. */
    if (point != SHMP_FAULT_NONE &&
        atomic_compare_exchange_strong_explicit(&fault_armed, &want, SHMP_FAULT_NONE,
                                                memory_order_relaxed, memory_order_relaxed))
        raise(SIGSTOP);
}
#endif
