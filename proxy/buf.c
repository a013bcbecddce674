/* buf.c - growable byte buffers and refcounted chunks (see buf.h). */
#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_reserve(buf_t *self, size_t extra)
{
    if (self->len + extra <= self->cap)
        return 0;
    size_t cap = self->cap ? self->cap : 256;
    while (cap < self->len + extra)
        cap *= 2;
    char *data = realloc(self->data, cap);
    if (!data)
        return -ENOMEM;
    self->data = data;
    self->cap = cap;
    return 0;
}

int buf_append(buf_t *self, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    if (s_reserve(self, n) != 0)
        return -ENOMEM;
    memcpy(self->data + self->len, data, n);
    self->len += n;
    return 0;
}

int buf_puts(buf_t *self, const char *text)
{
    return buf_append(self, text, strlen(text));
}

int buf_printf(buf_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof small)
        return buf_append(self, small, (size_t)n);
    if (s_reserve(self, (size_t)n + 1) != 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(self->data + self->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    self->len += (size_t)n;
    return 0;
}

void buf_reset(buf_t *self)
{
    self->len = 0;
}

void buf_free(buf_t *self)
{
    free(self->data);
    self->data = NULL;
    self->len = self->cap = 0;
}

static __thread char s_rbuf[64 * 1024];

void buf_read_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    b->base = s_rbuf;
    b->len = sizeof s_rbuf;
}

chunk_t *chunk_new(size_t len)
{
    chunk_t *self = malloc(sizeof *self + len);
    if (!self)
        return NULL;
    self->next = NULL;
    self->refs = 1;
    self->len = len;
    return self;
}

chunk_t *chunk_copy(const void *data, size_t len)
{
    chunk_t *self = chunk_new(len);
    if (self && len)
        memcpy(self->data, data, len);
    return self;
}

chunk_t *chunk_ref(chunk_t *self)
{
    self->refs++;
    return self;
}

void chunk_unref(chunk_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    if (--(*self_p)->refs == 0)
        free(*self_p);
    *self_p = NULL;
}
