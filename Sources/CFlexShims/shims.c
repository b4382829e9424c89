#include "cflex_shims.h"
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <sys/types.h>
#include <liburing.h>
#include <zstd.h>
#include <lz4.h>

int cflex_uring_probe(void) {
    struct io_uring ring;
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) return rc;
    io_uring_queue_exit(&ring);
    return 0;
}

int cflex_uring_version(int *major, int *minor) {
#if defined(IO_URING_VERSION_MAJOR)
    *major = IO_URING_VERSION_MAJOR;
    *minor = IO_URING_VERSION_MINOR;
#else
    *major = 2;
    *minor = 0;
#endif
    return 0;
}

unsigned cflex_zstd_version(void) { return ZSTD_versionNumber(); }
int cflex_lz4_version(void) { return LZ4_versionNumber(); }
int cflex_errno(void) { return errno; }
