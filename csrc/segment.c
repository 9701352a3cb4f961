/*
 * segment.c — anonymous shared-memory segments with a checked header.
 *
 * Layout: [ header page | payload (page aligned) ].  The header records
 * magic, ABI version, kind and sizes, plus a check word over them, and is
 * validated with pread() before anything is mapped on attach, so a stray
 * or hostile descriptor gives SHMP_ECORRUPT rather than a wild mapping.
 */
#define _GNU_SOURCE
#include "shmp_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef MAP_POPULATE
#  define SHMP_POPULATE MAP_POPULATE    /* fault reserved pages in one batch */
#else
#  define SHMP_POPULATE 0
#endif

/* Only a blob's creator prefaults its mapping: it writes all of it at once
 * (a large array), so one batch of faults beats one per page.  Never a
 * sparse segment (that would allocate all of it).  Never a ring or a
 * control block: they are touched a little at a time (their pages are
 * reserved, or come as written where that cannot SIGBUS: see create()),
 * and a prefaulted shared mapping makes every later
 * fork() copy its page-table entries: with a 64-worker pool's 1 MiB task
 * rings populated, each fork took 6 ms instead of 2.6 ms.              */
static int map_flags(uint32_t kind, uint32_t seg_flags)
{
    if (kind != SHMP_KIND_BLOB || (seg_flags & SHMP_SEG_SPARSE))
        return MAP_SHARED;
    return MAP_SHARED | SHMP_POPULATE;
}

uint64_t shmp_seg_check_word(const shmp_seg_header *h)
{
    uint64_t x = h->magic ^ ((uint64_t)h->abi_version << 32) ^ h->kind;
    x ^= h->total_size * 0x9e3779b97f4a7c15ull;
    x ^= h->payload_size * 0xc2b2ae3d27d4eb4full;
    x ^= ((uint64_t)h->header_size << 32) ^ h->layout_size;
    x ^= (uint64_t)h->flags << 17;
    return x;
}

uint32_t shmp_kind_layout_size(uint32_t kind)
{
    switch (kind) {
    case SHMP_KIND_RING:    return (uint32_t)sizeof(shmp_ring_shared);
    case SHMP_KIND_CONTROL: return (uint32_t)sizeof(shmp_control_shared);
    case SHMP_KIND_BLOB:    return 0;
    case SHMP_KIND_TRACE:   return (uint32_t)sizeof(shmp_trace_entry);
    default:                return UINT32_MAX;
    }
}

static uint64_t page_round(uint64_t n)
{
    return (n + SHMP_PAGE - 1) & ~(uint64_t)(SHMP_PAGE - 1);
}

static int header_ok(const shmp_seg_header *h, uint32_t kind);

/* Segments (but blobs) up to this size are not reserved where space cannot
 * run out: see create().                                                */
#define LAZY_MAX (8ull << 20)     /* a 4 MiB ring (a Queue's default) and its header fit */

static shmp_seg_header *header_of(const void *payload)
{
    return (shmp_seg_header *)((uint8_t *)payload - SHMP_PAYLOAD_OFFSET);
}

/* SHMP_OK, SHMP_EABI (ours by magic, another version: its layout, check
 * word included, may differ, so nothing else is read) or SHMP_ECORRUPT. */
static int header_check(const shmp_seg_header *h, uint32_t kind)
{
    if (h->magic != SHMP_MAGIC)
        return SHMP_ECORRUPT;
    if (h->abi_version != SHMP_ABI_VERSION)
        return SHMP_EABI;
    return header_ok(h, kind) ? SHMP_OK : SHMP_ECORRUPT;
}

static int header_ok(const shmp_seg_header *h, uint32_t kind)
{
    if (h->magic != SHMP_MAGIC || h->abi_version != SHMP_ABI_VERSION)
        return 0;
    if (h->header_size != sizeof(shmp_seg_header))
        return 0;
    if (kind != 0 && h->kind != kind)
        return 0;
    if (h->layout_size != shmp_kind_layout_size(h->kind))
        return 0;
    if ((h->flags & ~SHMP_SEG_SPARSE) != 0)
        return 0;
    if (h->payload_size > SHMP_MAX_PAYLOAD ||
        h->total_size != SHMP_PAYLOAD_OFFSET + page_round(h->payload_size))
        return 0;
    return h->check == shmp_seg_check_word(h);
}

static int create(uint32_t kind, uint64_t payload_size, uint32_t flags, int *fd_out,
                  void **payload_out)
{
    if (fd_out == NULL || payload_out == NULL || shmp_kind_layout_size(kind) == UINT32_MAX)
        return SHMP_EINVAL;
    if (payload_size == 0 || payload_size > SHMP_MAX_PAYLOAD)
        return SHMP_EINVAL;
    uint64_t total = SHMP_PAYLOAD_OFFSET + page_round(payload_size);
    int sparse = (flags & SHMP_SEG_SPARSE) != 0;
    /* Reserved now where space can run out (the portable layer's /dev/shm:
     * ENOSPC here, not SIGBUS at a first touch), and where the size is
     * large or the user's to pick: every blob, and any other segment over
     * LAZY_MAX (a Queue's capacity is its user's): short of memory, a clear
     * error at creation rather than an out-of-memory kill at a first touch.
     * A memfd ring, control block or trace segment of at most LAZY_MAX
     * (a pool's task rings are 256 KiB, its result ring 1-4 MiB) gets its
     * pages as they are first written, as any memory that size: reserving
     * 64 task rings took ~4 ms of a 64-worker pool's start, for pages a
     * pool may never write.                                              */
    int reserve = !sparse && (kind == SHMP_KIND_BLOB || payload_size > LAZY_MAX ||
                              shmp_os_space_is_bounded());
    int fd, rc = shmp_os_anon_fd(total, reserve, &fd);
    if (rc != SHMP_OK)
        return rc;
    /* A sparse segment still needs its header page: reserve just that. */
    if ((sparse && (rc = shmp_os_reserve(fd, 0, SHMP_PAYLOAD_OFFSET)) != SHMP_OK) ||
        (rc = shmp_os_seal(fd)) != SHMP_OK) {
        close(fd);
        return rc;
    }
    uint8_t *base = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, map_flags(kind, flags),
                         fd, 0);
    if (base == MAP_FAILED) {
        shmp_set_errno(errno);
        close(fd);
        return errno == ENOMEM ? SHMP_ENOSPC : SHMP_EOS;
    }
    shmp_seg_header *h = (shmp_seg_header *)base;
    h->magic = SHMP_MAGIC;
    h->abi_version = SHMP_ABI_VERSION;
    h->kind = kind;
    h->total_size = total;
    h->payload_size = payload_size;
    h->header_size = sizeof(shmp_seg_header);
    h->layout_size = shmp_kind_layout_size(kind);
    h->flags = flags;
    h->creator_pid = (uint64_t)getpid();
    h->check = shmp_seg_check_word(h);
    *fd_out = fd;
    *payload_out = base + SHMP_PAYLOAD_OFFSET;
    return SHMP_OK;
}

int shmp_seg_create(uint32_t kind, uint64_t payload_size, int *fd_out, void **payload_out)
{
    return create(kind, payload_size, 0, fd_out, payload_out);
}

int shmp_seg_create_sparse(uint32_t kind, uint64_t payload_size, int *fd_out, void **payload_out)
{
    /* Only blobs may be sparse (reserved a range at a time, by
     * shmp_seg_reserve): nothing reserves a ring's or control block's
     * ranges later, and where space can run out (see create()) a page
     * touched unreserved would SIGBUS.                                 */
    if (kind != SHMP_KIND_BLOB)
        return SHMP_EINVAL;
    return create(kind, payload_size, SHMP_SEG_SPARSE, fd_out, payload_out);
}

int shmp_seg_reserve(int fd, uint64_t payload_offset, uint64_t length)
{
    if (fd < 0 || length == 0 || payload_offset > SHMP_MAX_PAYLOAD ||
        length > SHMP_MAX_PAYLOAD - payload_offset)
        return SHMP_EINVAL;
    shmp_seg_header h;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || !header_ok(&h, 0) ||
        (uint64_t)st.st_size != h.total_size)
        return SHMP_ECORRUPT;
    if (payload_offset + length > h.payload_size)
        return SHMP_EINVAL;
    return shmp_os_reserve(fd, SHMP_PAYLOAD_OFFSET + payload_offset, length);
}

/* What attach and map_private trust before they map anything: `fd` is our
 * user's segment, its header is sound for `kind`, and the file is exactly
 * as long as the header says.  The header is copied into *h.            */
static int read_checked_header(int fd, uint32_t kind, shmp_seg_header *h)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    /* Trust boundary: a segment is shared only among processes of one
     * user (docs/architecture.md).  The kernel's owner cannot be forged
     * by writing the header.                                          */
    if (st.st_uid != geteuid())
        return SHMP_EFOREIGN;
    if ((uint64_t)st.st_size < SHMP_PAYLOAD_OFFSET ||
        pread(fd, h, sizeof *h, 0) != (ssize_t)sizeof *h)
        return SHMP_ECORRUPT;
    int rc = header_check(h, kind);
    if (rc != SHMP_OK)
        return rc;
    /* The file size must be exactly what the header claims: a shorter file
     * would SIGBUS on access, a larger one means the header lies.       */
    if ((uint64_t)st.st_size != h->total_size)
        return SHMP_ECORRUPT;
    return SHMP_OK;
}

int shmp_seg_attach(int fd, uint32_t kind, void **payload_out, uint64_t *payload_size_out)
{
    if (fd < 0 || payload_out == NULL)
        return SHMP_EINVAL;
    shmp_seg_header h;
    int rc = read_checked_header(fd, kind, &h);
    if (rc != SHMP_OK)
        return rc;
    /* Never prefaulted on attach: a blob's reader reads its large buffers
     * through private views (shmp_seg_map_private, populated there) and
     * the rest once; rings and control blocks as in map_flags().          */
    uint8_t *base = mmap(NULL, (size_t)h.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    /* Re-check through the mapping: the header could change between the
     * pread and the mmap only through a bug or a hostile writer.         */
    if (!header_ok((shmp_seg_header *)base, kind) ||
        ((shmp_seg_header *)base)->total_size != h.total_size) {
        munmap(base, (size_t)h.total_size);
        return SHMP_ECORRUPT;
    }
    *payload_out = base + SHMP_PAYLOAD_OFFSET;
    if (payload_size_out != NULL)
        *payload_size_out = h.payload_size;
    return SHMP_OK;
}

int shmp_seg_identify(int fd, uint32_t *abi_out, uint32_t *owner_uid_out)
{
    if (fd < 0 || abi_out == NULL || owner_uid_out == NULL)
        return SHMP_EINVAL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    shmp_seg_header h;
    *abi_out = 0;
    if ((uint64_t)st.st_size >= sizeof h && pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h &&
        h.magic == SHMP_MAGIC)
        *abi_out = h.abi_version;
    *owner_uid_out = (uint32_t)st.st_uid;
    return SHMP_OK;
}

int shmp_seg_verify(const void *payload, uint32_t kind)
{
    if (payload == NULL || ((uintptr_t)payload & (SHMP_PAGE - 1)) != 0)
        return SHMP_EINVAL;
    return header_ok(header_of(payload), kind) ? SHMP_OK : SHMP_ECORRUPT;
}

int shmp_seg_payload_size(const void *payload, uint64_t *size_out)
{
    int rc = shmp_seg_verify(payload, 0);
    if (rc != SHMP_OK)
        return rc;
    if (size_out == NULL)
        return SHMP_EINVAL;
    *size_out = header_of(payload)->payload_size;
    return SHMP_OK;
}

int shmp_seg_unmap(void *payload, uint64_t payload_size)
{
    if (payload == NULL || ((uintptr_t)payload & (SHMP_PAGE - 1)) != 0 ||
        payload_size == 0 || payload_size > SHMP_MAX_PAYLOAD)
        return SHMP_EINVAL;
    /* The length comes from the caller, not the shared header: a damaged
     * header must not make us unmap someone else's memory.              */
    uint64_t total = SHMP_PAYLOAD_OFFSET + page_round(payload_size);
    if (munmap(header_of(payload), (size_t)total) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    return SHMP_OK;
}

/* The system's page size: a private mapping's file offset must be a
 * multiple of it (SHMP_PAGE is the segment format's unit, which may be
 * smaller than the page on some machines). */
static uint64_t os_page(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (uint64_t)page : SHMP_PAGE;
}

int shmp_seg_map_private(int fd, uint64_t payload_offset, uint64_t length, void **addr_out)
{
    if (fd < 0 || addr_out == NULL || length == 0 || payload_offset > SHMP_MAX_PAYLOAD ||
        length > SHMP_MAX_PAYLOAD - payload_offset)
        return SHMP_EINVAL;
    /* The same checks as attach, then the range inside the payload. */
    shmp_seg_header h;
    int rc = read_checked_header(fd, SHMP_KIND_BLOB, &h);
    if (rc != SHMP_OK)
        return rc;
    if (payload_offset + length > h.payload_size)
        return SHMP_EINVAL;
    uint64_t file_off = SHMP_PAYLOAD_OFFSET + payload_offset;
    uint64_t start = file_off & ~(os_page() - 1);
    uint64_t lead = file_off - start;
    uint8_t *base = mmap(NULL, (size_t)(lead + length), PROT_READ | PROT_WRITE, MAP_PRIVATE,
                         fd, (off_t)start);
    if (base == MAP_FAILED) {
        shmp_set_errno(errno);
        return errno == ENOMEM ? SHMP_ENOSPC : SHMP_EOS;
    }
    shmp_os_populate_read(base, lead + length);
    *addr_out = base + lead;
    return SHMP_OK;
}

int shmp_seg_unmap_private(void *addr, uint64_t length)
{
    if (addr == NULL || length == 0 || length > SHMP_MAX_PAYLOAD)
        return SHMP_EINVAL;
    uintptr_t base = (uintptr_t)addr & ~(uintptr_t)(os_page() - 1);
    if (munmap((void *)base, (size_t)((uintptr_t)addr - base + length)) != 0) {
        shmp_set_errno(errno);
        return SHMP_EOS;
    }
    return SHMP_OK;
}

int shmp_seg_open_peer(int32_t pid, int32_t fd, int *fd_out)
{
    if (pid <= 0 || fd < 0 || fd_out == NULL)
        return SHMP_EINVAL;
    return shmp_os_open_peer(pid, fd, fd_out);
}
