/* buf.h - growable byte buffers and refcounted chunks: the proxy's unit of queued bytes.
 *
 * A chunk is written to a socket while the request that produced it may still hold it for a
 * replay on another connection, so chunks are refcounted rather than copied twice. */
#ifndef PROXY_BUF_H
#define PROXY_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <uv.h>

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

/* Appends n bytes. Returns 0, or -ENOMEM (the buffer is then unchanged). */
int buf_append(buf_t *self, const void *data, size_t n);

/* Appends a NUL-terminated string. Returns 0 or -ENOMEM. */
int buf_puts(buf_t *self, const char *text);

/* Appends printf output. Returns 0 or -ENOMEM. */
int buf_printf(buf_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forgets the content but keeps the memory. */
void buf_reset(buf_t *self);

/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_free(buf_t *self);

typedef struct chunk {
    struct chunk *next; /* the owner's queue link; free for the owner's use */
    int refs;           /* single-threaded: every user lives on one event loop */
    size_t len;
    char data[];
} chunk_t;

/* A chunk of len bytes (uninitialised) with one reference. NULL on OOM. */
chunk_t *chunk_new(size_t len);

/* A chunk holding a copy of data. NULL on OOM. */
chunk_t *chunk_copy(const void *data, size_t len);

/* Takes one more reference; returns self. */
chunk_t *chunk_ref(chunk_t *self);

/* Drops one reference (freeing the chunk on the last) and sets *self_p to NULL. */
void chunk_unref(chunk_t **self_p);

/* libuv alloc callback for every socket read of the proxy (clients and instances): one 64 KiB
 * buffer per worker thread. Every read is handled before the next one starts and nobody keeps
 * a pointer into it past the read callback (what must outlive it is copied into a chunk). */
void buf_read_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);

#endif
