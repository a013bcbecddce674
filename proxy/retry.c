/* retry.c - the retry decision after a failed attempt (see retry.h). */
#include "retry.h"

#include <uv.h>

bool retry_local_error(int uv_status)
{
    return uv_status == UV_EMFILE || uv_status == UV_ENFILE || uv_status == UV_ENOMEM ||
           uv_status == UV_ENOBUFS || uv_status == UV_EADDRNOTAVAIL;
}

retry_decision_t retry_decide(const retry_facts_t *f)
{
    retry_decision_t d = {.action = RETRY_NONE, .status = 502, .charge = true};
    if (f->err == UP_ERR_LOCAL) {
        /* Another instance would fail the same way, and no instance is to blame. */
        d.status = 503;
        d.charge = false;
        return d;
    }
    bool connect_failed = f->err == UP_ERR_CONNECT || f->err == UP_ERR_CONNECT_TIMEOUT;
    d.mark_down = connect_failed;
    if (f->err == UP_ERR_TIMEOUT || f->err == UP_ERR_CONNECT_TIMEOUT)
        d.status = 504;
    if (f->resp_started) {
        d.status = 0;
        return d;
    }
    if (!f->replayable)
        return d;
    /* Sending it again cannot make it happen twice when it cannot have reached the instance. */
    bool unseen = connect_failed || !f->wrote;
    bool may_repeat = f->idempotent || unseen || f->retry_non_idempotent;
    if (!may_repeat)
        return d;
    if (connect_failed) {
        if (f->other_retries < 1)
            d.action = RETRY_OTHER;
        return d;
    }
    if (f->err != UP_ERR_CLOSED || f->got_bytes)
        return d; /* an answer began, or the instance was too slow: sending again won't help */
    if (f->reused && f->race_retries < 1) {
        /* The keep-alive race: the instance closed the idle connection as the request went
         * out. A fresh connection to it will do. */
        d.action = RETRY_SAME;
        return d;
    }
    if (f->other_retries < 1) {
        /* Closed without a byte on a fresh connection: an instance on its way down (it
         * accepted, then shut). Another one may take it. */
        d.action = RETRY_OTHER;
    }
    return d;
}
