/* tide_window.c - sliding window of per-second counter slots (see tide_window.h). */
#include "tide_window.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct _window_t {
    unsigned seconds, width;
    bool started;
    uint64_t first_sec; /* first second ever added: the start of coverage */
    uint64_t head_sec;  /* newest second with a slot */
    uint64_t *slot_sec; /* seconds[i]: which second slot i holds */
    uint64_t *values;   /* seconds x width counters */
};

window_t *window_new(unsigned seconds, unsigned width)
{
    if (seconds < 1 || seconds > 3600 || width < 1 || width > 256)
        return NULL;
    window_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->seconds = seconds;
    self->width = width;
    self->slot_sec = calloc(seconds, sizeof *self->slot_sec);
    self->values = calloc((size_t)seconds * width, sizeof *self->values);
    if (!self->slot_sec || !self->values) {
        window_destroy(&self);
        return NULL;
    }
    return self;
}

void window_destroy(window_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    window_t *self = *self_p;
    free(self->slot_sec);
    free(self->values);
    free(self);
    *self_p = NULL;
}

static uint64_t *s_slot(window_t *self, uint64_t sec)
{
    unsigned i = (unsigned)(sec % self->seconds);
    if (self->slot_sec[i] != sec) {
        self->slot_sec[i] = sec;
        memset(self->values + (size_t)i * self->width, 0, self->width * sizeof(uint64_t));
    }
    return self->values + (size_t)i * self->width;
}

void window_add(window_t *self, uint64_t sec, const uint64_t *values)
{
    if (!self->started) {
        self->started = true;
        self->first_sec = sec;
        self->head_sec = sec;
    }
    if (sec + self->seconds <= self->head_sec)
        return; /* older than the window */
    if (sec > self->head_sec)
        self->head_sec = sec;
    uint64_t *slot = s_slot(self, sec);
    for (unsigned k = 0; k < self->width; k++)
        slot[k] += values[k];
}

unsigned window_sum(const window_t *self, uint64_t now_sec, unsigned last, uint64_t *out)
{
    memset(out, 0, self->width * sizeof(uint64_t));
    if (last > self->seconds)
        last = self->seconds;
    if (!self->started)
        return 0;
    unsigned covered = 0;
    for (unsigned j = 0; j < last && j <= now_sec; j++) {
        uint64_t sec = now_sec - j;
        if (sec < self->first_sec)
            break;
        covered++;
        unsigned i = (unsigned)(sec % self->seconds);
        if (self->slot_sec[i] != sec)
            continue; /* nothing was added in that second */
        const uint64_t *slot = self->values + (size_t)i * self->width;
        for (unsigned k = 0; k < self->width; k++)
            out[k] += slot[k];
    }
    return covered;
}
