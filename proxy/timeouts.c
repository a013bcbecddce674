/* timeouts.c - many deadlines of a few fixed lengths on one libuv timer (see timeouts.h). */
#include "timeouts.h"

#include <assert.h>
#include <stddef.h>

static void s_on_timer(uv_timer_t *timer);

/* Runs the timer for the earliest head (or stops it when every list is empty). The timer
 * only moves when that head is earlier than what it runs for, or when it has fired. */
static void s_arm(timeouts_t *self)
{
    uint64_t first = UINT64_MAX;
    for (int k = 0; k < self->nclasses; k++) {
        if (list_empty(&self->lists[k]))
            continue;
        timeout_t *t = list_entry(self->lists[k].next, timeout_t, node);
        if (t->due < first)
            first = t->due;
    }
    if (first == UINT64_MAX) {
        if (self->armed_for) {
            uv_timer_stop(&self->timer);
            self->armed_for = 0;
        }
        return;
    }
    if (self->armed_for && self->armed_for <= first)
        return; /* fires early at worst: s_on_timer then re-arms for the rest */
    uint64_t now = uv_now(self->timer.loop);
    uv_timer_start(&self->timer, s_on_timer, first > now ? first - now : 0, 0);
    self->armed_for = first;
}

static void s_on_timer(uv_timer_t *timer)
{
    timeouts_t *self = timer->data;
    self->armed_for = 0;
    uint64_t now = uv_now(timer->loop);
    for (int k = 0; k < self->nclasses; k++) {
        list_node_t *head = &self->lists[k];
        /* Entries set again by the callback are due later than now: the loop ends. */
        while (!list_empty(head)) {
            timeout_t *t = list_entry(head->next, timeout_t, node);
            if (t->due > now)
                break;
            list_remove(&t->node);
            self->cb(self, t);
        }
    }
    s_arm(self);
}

void timeouts_init(timeouts_t *self, uv_loop_t *loop, const uint64_t *len_ms, int n, timeout_cb cb)
{
    uv_timer_init(loop, &self->timer);
    self->timer.data = self;
    self->armed_for = 0;
    self->cb = cb;
    self->nclasses = n < TIMEOUTS_CLASSES ? n : TIMEOUTS_CLASSES;
    for (int k = 0; k < self->nclasses; k++) {
        self->len_ms[k] = len_ms[k] > 0 ? len_ms[k] : 1;
        list_init(&self->lists[k]);
    }
}

void timeout_init(timeout_t *t)
{
    list_init(&t->node);
    t->due = 0;
}

/* The list tail insert: list.h's push puts a node first. */
static void s_append(list_node_t *head, list_node_t *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

void timeouts_set(timeouts_t *self, timeout_t *t, int cls)
{
    assert(cls >= 0 && cls < self->nclasses);
    list_remove(&t->node);
    t->due = uv_now(self->timer.loop) + self->len_ms[cls];
    bool was_empty = list_empty(&self->lists[cls]);
    s_append(&self->lists[cls], &t->node);
    /* A list that had entries already has an earlier head, which the timer covers. */
    if (was_empty || !self->armed_for)
        s_arm(self);
}

void timeout_cancel(timeout_t *t)
{
    list_remove(&t->node); /* the timer may then fire for nothing, and re-arms */
}

bool timeout_is_set(const timeout_t *t)
{
    return t->node.next != &t->node;
}

void timeouts_close(timeouts_t *self, uv_close_cb close_cb)
{
    self->armed_for = 0;
    uv_close((uv_handle_t *)&self->timer, close_cb);
}
