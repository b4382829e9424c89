#define _GNU_SOURCE
#include "cflex_shims.h"
#include <fcntl.h>
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

#include <stdlib.h>
#include <sys/uio.h>

struct cflex_read_queue {
    struct io_uring ring;
    char *buffer;
};

int cflex_read_queue_open(cflex_read_queue **out, unsigned entries, int fd, void *buffer, size_t length) {
    cflex_read_queue *q = calloc(1, sizeof *q);
    if (!q) return -ENOMEM;
    int rc = io_uring_queue_init(entries, &q->ring, 0);
    if (rc < 0) { free(q); return rc; }
    struct iovec iov = { .iov_base = buffer, .iov_len = length };
    rc = io_uring_register_buffers(&q->ring, &iov, 1);
    if (rc == 0) rc = io_uring_register_files(&q->ring, &fd, 1);
    if (rc < 0) { io_uring_queue_exit(&q->ring); free(q); return rc; }
    q->buffer = buffer;
    *out = q;
    return 0;
}

void cflex_read_queue_close(cflex_read_queue *q) {
    if (!q) return;
    io_uring_queue_exit(&q->ring);
    free(q);
}

int cflex_read_queue_push(cflex_read_queue *q, uint64_t file_offset, size_t buffer_offset, unsigned length, uint64_t tag) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_read_fixed(sqe, 0, q->buffer + buffer_offset, length, file_offset, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int cflex_read_queue_submit(cflex_read_queue *q) { return io_uring_submit(&q->ring); }

int cflex_read_queue_wait(cflex_read_queue *q, uint64_t *tag, int *result) {
    struct io_uring_cqe *cqe = NULL;
    int rc;
    do { rc = io_uring_wait_cqe(&q->ring, &cqe); } while (rc == -EINTR);
    if (rc < 0) return rc;
    *tag = io_uring_cqe_get_data64(cqe);
    *result = cqe->res;
    io_uring_cqe_seen(&q->ring, cqe);
    return 0;
}

int cflex_o_direct(void) { return O_DIRECT; }

// ---------------------------------------------------------------------------------------------
// Paths unlinked on SIGINT/SIGTERM. A slot is 0 (free), 1 (being filled) or 2 (live); the
// handler reads only live slots, whose bytes were written before the release store made them so.

#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define CFLEX_CLEANUP_SLOTS 16
static char cleanup_paths[CFLEX_CLEANUP_SLOTS][PATH_MAX];
static int cleanup_state[CFLEX_CLEANUP_SLOTS];

int cflex_cleanup_register(const char *path) {
    size_t n = strlen(path);
    if (n >= PATH_MAX) return -1;
    for (int i = 0; i < CFLEX_CLEANUP_SLOTS; i++) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&cleanup_state[i], &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            memcpy(cleanup_paths[i], path, n + 1);
            __atomic_store_n(&cleanup_state[i], 2, __ATOMIC_RELEASE);
            return i;
        }
    }
    return -1;
}

void cflex_cleanup_unregister(int slot) {
    if (slot < 0 || slot >= CFLEX_CLEANUP_SLOTS) return;
    __atomic_store_n(&cleanup_state[slot], 0, __ATOMIC_RELEASE);
}

static void cleanup_handler(int sig) {
    int saved = errno;
    for (int i = 0; i < CFLEX_CLEANUP_SLOTS; i++) {
        if (__atomic_load_n(&cleanup_state[i], __ATOMIC_ACQUIRE) == 2) unlink(cleanup_paths[i]);
    }
    // SA_RESETHAND put the default action back on entry; the signal is blocked until this
    // handler returns, and is then delivered again with that default action.
    raise(sig);
    errno = saved;
}

int cflex_cleanup_install(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cleanup_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    if (sigaction(sig, &sa, NULL) != 0) return -1;
    // A parent may have started us with the signal blocked (a mask is inherited across exec;
    // Foundation's Process launched from a test runner does this), and then it would stay
    // pending forever. Threads started from now on inherit this thread's unblocked mask.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL) == 0 ? 0 : -1;
}
