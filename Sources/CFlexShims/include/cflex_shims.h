#ifndef CFLEX_SHIMS_H
#define CFLEX_SHIMS_H
// Tiny C helpers for what Swift cannot import directly (macros, static inline functions).
// Every name is prefixed cflex_ and documented with the C function or macro it wraps.
#include <stddef.h>
#include <stdint.h>

/// Wraps io_uring_queue_init/io_uring_queue_exit: returns 0 when this kernel accepts io_uring,
/// otherwise the negated errno (ENOSYS on old kernels, EPERM under seccomp or sysctl policy).
int cflex_uring_probe(void);

/// Wraps liburing's io_uring_major_version()/io_uring_minor_version() (static inline in some releases).
int cflex_uring_version(int *major, int *minor);

/// Wraps ZSTD_versionNumber(): MAJOR*10000 + MINOR*100 + PATCH.
unsigned cflex_zstd_version(void);

/// Wraps LZ4_versionNumber(): same encoding as zstd's.
int cflex_lz4_version(void);

/// Wraps the O_DIRECT open flag, which glibc only defines under _GNU_SOURCE (and whose value
/// differs between architectures).
int cflex_o_direct(void);

/// Wraps errno (a macro over a thread-local in glibc).
int cflex_errno(void);

/// Wraps the x86 PAUSE instruction (_mm_pause) or ARM YIELD: tells the core it is in a spin-wait,
/// which saves power and frees pipeline resources for the sibling hyperthread.
static inline void cflex_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// ---------------------------------------------------------------------------------------------
// Files removed when SIGINT or SIGTERM kills the process. A signal handler may only make
// async-signal-safe calls (unlink, sigaction, raise: POSIX.1-2008 §2.4.3); Swift code cannot
// promise that (its runtime may lock or allocate), so the handler and the table it reads are C.

/// Copies `path` into a fixed table of paths the handler unlinks. Returns the slot (release it
/// with cflex_cleanup_unregister), or -1 when the path is too long or the table (16) is full.
int cflex_cleanup_register(const char *path);

/// Takes a path out of the table; -1 is ignored.
void cflex_cleanup_unregister(int slot);

/// sigaction(sig) with a handler that unlinks every registered path, then restores the default
/// action and raises `sig` again, so the process still ends as killed by that signal (a shell
/// sees 128 + sig); then pthread_sigmask(SIG_UNBLOCK, sig) on the calling thread, in case the
/// parent left it blocked. Returns 0 or -1 with errno set.
int cflex_cleanup_install(int sig);

#endif

// ---------------------------------------------------------------------------------------------
// io_uring read queue. liburing's submission helpers (io_uring_get_sqe, io_uring_prep_read_fixed,
// io_uring_cqe_seen, ...) are static inline functions over shared-ring memory; wrapping the four
// operations the streamer needs keeps every liburing detail on this side.

/// One io_uring for reads of a single file into one registered buffer.
typedef struct cflex_read_queue cflex_read_queue;

/// io_uring_queue_init(entries) + io_uring_register_buffers(buffer) + io_uring_register_files(fd).
/// Returns 0 and sets *out, or the negated errno of the step that failed (ENOSYS, EPERM, ENOMEM).
int cflex_read_queue_open(cflex_read_queue **out, unsigned entries, int fd, void *buffer, size_t length);

/// io_uring_queue_exit and free.
void cflex_read_queue_close(cflex_read_queue *q);

/// Queues IORING_OP_READ_FIXED of `length` bytes at `file_offset` into buffer + `buffer_offset`,
/// tagged with `tag`. Returns 0, or -EBUSY when the submission queue is full (submit first).
int cflex_read_queue_push(cflex_read_queue *q, uint64_t file_offset, size_t buffer_offset, unsigned length, uint64_t tag);

/// io_uring_submit: hands every queued read to the kernel in one system call. Returns the number
/// submitted or a negated errno.
int cflex_read_queue_submit(cflex_read_queue *q);

/// Waits for one completion (io_uring_wait_cqe, retrying EINTR), stores its tag and result
/// (bytes read, or a negated errno) and marks it seen. Returns 0 or a negated errno.
int cflex_read_queue_wait(cflex_read_queue *q, uint64_t *tag, int *result);
