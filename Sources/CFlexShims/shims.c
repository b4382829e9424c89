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
