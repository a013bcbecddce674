/* test_retry.c - the retry decision, as a table: failure kind x connection x method x what was
 * sent, and what the client gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <uv.h>

#include "retry.h"

enum { IDEM = 1, POST = 0 };

typedef struct {
    const char *what;
    retry_facts_t in;
    retry_action_t action;
    int status;
    bool mark_down, charge;
} row_t;

#define F(...) ((retry_facts_t){.replayable = true, __VA_ARGS__})

static const row_t s_rows[] = {
    /* The keep-alive race: a reused connection closed before any response byte. */
    {"race GET", F(.err = UP_ERR_CLOSED, .reused = true, .wrote = true, .idempotent = IDEM),
     RETRY_SAME, 502, false, true},
    {"race POST, written: never twice",
     F(.err = UP_ERR_CLOSED, .reused = true, .wrote = true, .idempotent = POST), RETRY_NONE, 502,
     false, true},
    {"race POST, written, retry_non_idempotent",
     F(.err = UP_ERR_CLOSED, .reused = true, .wrote = true, .retry_non_idempotent = true),
     RETRY_SAME, 502, false, true},
    {"race POST, nothing written",
     F(.err = UP_ERR_CLOSED, .reused = true, .wrote = false, .idempotent = POST), RETRY_SAME, 502,
     false, true},
    {"race GET, already retried once: another instance",
     F(.err = UP_ERR_CLOSED, .reused = true, .wrote = true, .idempotent = IDEM, .race_retries = 1),
     RETRY_OTHER, 502, false, true},
    {"race GET, both retries used",
     F(.err = UP_ERR_CLOSED, .reused = true, .wrote = true, .idempotent = IDEM, .race_retries = 1,
       .other_retries = 1),
     RETRY_NONE, 502, false, true},
    /* Fresh connection closed before any byte: an instance going down. */
    {"fresh closed GET", F(.err = UP_ERR_CLOSED, .wrote = true, .idempotent = IDEM), RETRY_OTHER,
     502, false, true},
    {"fresh closed POST", F(.err = UP_ERR_CLOSED, .wrote = true), RETRY_NONE, 502, false, true},
    {"fresh closed POST, retry_non_idempotent",
     F(.err = UP_ERR_CLOSED, .wrote = true, .retry_non_idempotent = true), RETRY_OTHER, 502, false,
     true},
    {"fresh closed GET, retried already",
     F(.err = UP_ERR_CLOSED, .wrote = true, .idempotent = IDEM, .other_retries = 1), RETRY_NONE,
     502, false, true},
    /* Closed after response bytes: never retried. */
    {"closed mid-head GET",
     F(.err = UP_ERR_CLOSED, .wrote = true, .got_bytes = true, .idempotent = IDEM), RETRY_NONE, 502,
     false, true},
    {"closed mid-response (client has part)",
     F(.err = UP_ERR_CLOSED, .wrote = true, .got_bytes = true, .resp_started = true,
       .idempotent = IDEM),
     RETRY_NONE, 0, false, true},
    /* Connect failures: nothing was sent, so any method may go elsewhere, once. */
    {"connect refused GET", F(.err = UP_ERR_CONNECT, .idempotent = IDEM), RETRY_OTHER, 502, true,
     true},
    {"connect refused POST", F(.err = UP_ERR_CONNECT), RETRY_OTHER, 502, true, true},
    {"connect refused, retried already", F(.err = UP_ERR_CONNECT, .other_retries = 1), RETRY_NONE,
     502, true, true},
    {"connect timeout", F(.err = UP_ERR_CONNECT_TIMEOUT, .other_retries = 1), RETRY_NONE, 504, true,
     true},
    {"connect refused, body trimmed", ((retry_facts_t){.err = UP_ERR_CONNECT}), RETRY_NONE, 502,
     true, true},
    /* The instance was too slow or spoke nonsense: not retried. */
    {"response timeout GET", F(.err = UP_ERR_TIMEOUT, .wrote = true, .idempotent = IDEM),
     RETRY_NONE, 504, false, true},
    {"protocol error GET",
     F(.err = UP_ERR_PROTOCOL, .wrote = true, .got_bytes = true, .idempotent = IDEM), RETRY_NONE,
     502, false, true},
    /* The proxy's own failure: 503, nobody marked down or charged. */
    {"local (EMFILE) GET", F(.err = UP_ERR_LOCAL, .idempotent = IDEM), RETRY_NONE, 503, false,
     false},
    {"local (EMFILE) POST, reused", F(.err = UP_ERR_LOCAL, .reused = true), RETRY_NONE, 503, false,
     false},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_rows / sizeof s_rows[0]; i++) {
        const row_t *r = &s_rows[i];
        retry_decision_t d = retry_decide(&r->in);
        if (d.action != r->action || (d.action == RETRY_NONE && d.status != r->status) ||
            d.mark_down != r->mark_down || d.charge != r->charge)
            fail_msg("%s: action=%d status=%d mark_down=%d charge=%d", r->what, (int)d.action,
                     d.status, d.mark_down, d.charge);
    }
}

static void test_local_errors(void **state)
{
    (void)state;
    assert_true(retry_local_error(UV_EMFILE));
    assert_true(retry_local_error(UV_ENFILE));
    assert_true(retry_local_error(UV_EADDRNOTAVAIL));
    assert_false(retry_local_error(UV_ECONNREFUSED));
    assert_false(retry_local_error(UV_ETIMEDOUT));
    assert_false(retry_local_error(0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_local_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
