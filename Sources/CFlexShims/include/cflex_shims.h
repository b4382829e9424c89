#ifndef CFLEX_SHIMS_H
#define CFLEX_SHIMS_H
// Tiny C helpers for what Swift cannot import directly (macros, static inline functions).
// Every name is prefixed cflex_ and documented with the C function or macro it wraps.
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

#endif
