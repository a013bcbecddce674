/* test_lib.c - unit tests of lib/: config schema, windows, histograms, message framing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tide_config.h"
#include "tide_hist.h"
#include "tide_msg.h"
#include "tide_redis.h"
#include "tide_window.h"

static char s_dir[] = "/tmp/tide-test-lib-XXXXXX";

static int s_load_text(const char *text, tide_config_t *cfg, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "%s/tide.yml", s_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return config_load(path, cfg, err, errlen);
}

static void test_config_defaults(void **state)
{
    (void)state;
    tide_config_t cfg;
    char err[512];
    assert_int_equal(s_load_text("", &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.service, "web");
    assert_string_equal(cfg.proxy.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.metrics.listen, "127.0.0.1:8081");
    assert_int_equal(cfg.redis.port, 6379);
    assert_string_equal(cfg.scaler.policy, "target");
    assert_int_equal(cfg.metrics.stable_window_s, 60);
    assert_int_equal(cfg.metrics.panic_window_s, 6);
}

static void test_config_values_and_paths(void **state)
{
    (void)state;
    tide_config_t cfg;
    char err[512];
    int rc = s_load_text("service: shop\nproxy:\n  listen: 127.0.0.1:9999\n  workers: 2\n"
                         "scaler:\n  target_rps: 12.5\n  policy: threshold\n"
                         "executor:\n  state_dir: run/x\n  ansible_playbook: ansible-playbook\n",
                         &cfg, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.service, "shop");
    assert_int_equal(cfg.proxy.workers, 2);
    assert_true(cfg.scaler.target_rps == 12.5);
    assert_string_equal(cfg.scaler.policy, "threshold");
    char want[1200];
    snprintf(want, sizeof want, "%s/run/x", cfg.dir);
    assert_string_equal(cfg.executor.state_dir, want);
    assert_string_equal(cfg.executor.ansible_playbook, "ansible-playbook");
}

/* Each bad file must fail and the message must name the key and the line. */
static void test_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want1, *want2;
    } cases[] = {
        {"proxy:\n  workerz: 2\n", "proxy.workerz", ":2:"},
        {"proxy:\n  workers: two\n", "proxy.workers", "integer"},
        {"proxy:\n  workers: 5abc\n", "proxy.workers", "integer"},
        {"proxy:\n  workers: \"5\"\n", "proxy.workers", "quoted"},
        {"proxy:\n  workers: 100000\n", "proxy.workers", "out of bounds"},
        {"scaler:\n  policy: magic\n", "scaler.policy", "allowed"},
        {"scaler:\n  target_rps: 1e999\n", "scaler.target_rps", ""},
        {"nosuch:\n  a: 1\n", "nosuch", "unknown key"},
        {"proxy: 3\n", "proxy", "section"},
        {"proxy:\n  listen: localhost\n", "proxy.listen", "host:port"},
        {"proxy:\n  listen: 127.0.0.1:99999\n", "proxy.listen", "host:port"},
        {"endpoints:\n  stats: http://x\n", "endpoints.stats", "endpoint"},
        {"scaler:\n  min: 5\n  max: 2\n", "scaler.min", "scaler.max"},
        {"proxy:\n  workers: 1\n  workers: 2\n", "proxy.workers", "duplicate"},
        {"proxy: [1, 2\n", "YAML", ":"},
        {"- a\n- b\n", "(top)", "mapping"},
        {"scaler:\n  scale_up_rps: 10\n  scale_down_rps: 10\n", "scale_down_rps", "flap"},
        {"redis:\n  scaler_user: tide-scaler\n", "redis.scaler_user", "scaler_password_file"},
        {"redis:\n  reader_user: r\n", "redis.reader_user", "reader_password_file"},
        {"redis:\n  sentinel: 127.0.0.1\n", "redis.sentinel", "host:port"},
        {"redis:\n  sentinel: \"a:1,\"\n", "redis.sentinel", "host:port"},
        {"redis:\n  sentinel: \"a:1;b:2\"\n", "redis.sentinel", "host:port"},
        {"scalers: 3\n", "scalers", "list"},
        {"scalers:\n  - {id: a, control: \"tcp://h:1\"}\n", "scalers", "needs id, control"},
        {"scalers:\n  - {id: a, control: \"tcp://h:1\", events: \"x\"}\n", "scalers[0].events",
         "endpoint"},
        {"scalers:\n  - {id: a, control: \"tcp://h:1\", events: \"tcp://h:2\", port: 3}\n",
         "scalers[0].port", "unknown key"},
        {"scalers:\n  - {id: a, control: \"tcp://h:1\", events: \"tcp://h:2\"}\n"
         "  - {id: a, control: \"tcp://h:3\", events: \"tcp://h:4\"}\n",
         "scalers", ":3:"},
        {"scalers:\n  - {id: \"\", control: \"tcp://h:1\", events: \"tcp://h:2\"}\n",
         "scalers[0].id", "empty"},
        {"scalers:\n  - 5\n", "scalers", "mapping"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tide_config_t cfg;
        char err[512] = "";
        int rc = s_load_text(cases[i].text, &cfg, err, sizeof err);
        if (rc == 0 || !strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
            fail_msg("case %zu (%s): rc=%d err=%s", i, cases[i].text, rc, err);
    }
}

/* scalers: the entry of --id gives its endpoints; everyone else gets the whole list. */
static void test_config_scalers(void **state)
{
    (void)state;
    tide_config_t cfg;
    char err[512] = "";
    const char *c, *e, *list[CFG_SCALERS_MAX];
    assert_int_equal(s_load_text("", &cfg, err, sizeof err), 0);
    assert_int_equal(config_scaler_endpoints(&cfg, "anyone", &c, &e), 0);
    assert_string_equal(c, cfg.endpoints.scaler_control);
    assert_string_equal(e, cfg.endpoints.scaler_events);
    assert_int_equal(config_scaler_list(&cfg, false, list), 1);
    assert_string_equal(list[0], cfg.endpoints.scaler_control);
    int rc =
        s_load_text("scalers:\n"
                    "  - {id: a, control: \"tcp://127.0.0.1:1\", events: \"tcp://127.0.0.1:2\"}\n"
                    "  - id: b\n    control: tcp://127.0.0.1:3\n    events: tcp://127.0.0.1:4\n",
                    &cfg, err, sizeof err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.n_scalers, 2);
    assert_int_equal(config_scaler_endpoints(&cfg, "b", &c, &e), 0);
    assert_string_equal(c, "tcp://127.0.0.1:3");
    assert_string_equal(e, "tcp://127.0.0.1:4");
    assert_int_equal(config_scaler_endpoints(&cfg, "c", &c, &e), -ENOENT);
    assert_int_equal(config_scaler_list(&cfg, true, list), 2);
    assert_string_equal(list[0], "tcp://127.0.0.1:2");
    assert_string_equal(list[1], "tcp://127.0.0.1:4");
}

static void test_config_missing_file(void **state)
{
    (void)state;
    tide_config_t cfg;
    char err[512];
    assert_true(config_load("/nonexistent/tide.yml", &cfg, err, sizeof err) < 0);
    assert_non_null(strstr(err, "/nonexistent/tide.yml"));
}

static void test_config_split_addrs(void **state)
{
    (void)state;
    config_addr_t a[CONFIG_ADDRS_MAX];
    assert_int_equal(config_split_addrs("", a, CONFIG_ADDRS_MAX), 0);
    assert_int_equal(config_split_addrs("127.0.0.1:26379", a, CONFIG_ADDRS_MAX), 1);
    assert_string_equal(a[0].host, "127.0.0.1");
    assert_int_equal(a[0].port, 26379);
    assert_int_equal(config_split_addrs("s1:1, s2:2 ,::1:3", a, CONFIG_ADDRS_MAX), 3);
    assert_string_equal(a[1].host, "s2");
    assert_string_equal(a[2].host, "::1");
    assert_int_equal(a[2].port, 3);
    static const char *bad[] = {
        "s1",         "s1:0",  "s1:1,", ",s1:1",
        "s1:1,,s2:2", "s 1:1", "s1:x",  "a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:1,i:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (config_split_addrs(bad[i], a, CONFIG_ADDRS_MAX) != -EINVAL)
            fail_msg("'%s' was taken", bad[i]);
}

/* A password file: its one line, with or without a newline; anything else is an error naming
 * the key and the file. */
static void test_redis_auth_load(void **state)
{
    (void)state;
    static const struct {
        const char *content; /* NULL: no such file */
        const char *want;    /* the password, or NULL for an error ... */
        const char *why;     /* ... whose message holds this */
    } cases[] = {
        {"s3cret\n", "s3cret", NULL},   {"s3cret", "s3cret", NULL},
        {"s3cret\r\n", "s3cret", NULL}, {"", NULL, "empty"},
        {"\n", NULL, "empty"},          {"one\ntwo\n", NULL, "more than one line"},
        {NULL, NULL, "No such file"},
    };
    char path[512];
    snprintf(path, sizeof path, "%s/pw", s_dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(path);
        if (cases[i].content) {
            FILE *f = fopen(path, "w");
            assert_non_null(f);
            fputs(cases[i].content, f);
            fclose(f);
        }
        char text[1200], err[1500] = "";
        snprintf(text, sizeof text,
                 "redis:\n  scaler_user: tide-scaler\n"
                 "  scaler_password_file: %s\n",
                 path);
        tide_config_t cfg;
        assert_int_equal(s_load_text(text, &cfg, err, sizeof err), 0);
        int rc = redis_auth_load(&cfg, REDIS_ROLE_SCALER, err, sizeof err);
        if (cases[i].want) {
            if (rc != 0 || strcmp(cfg.redis.auth_password, cases[i].want) != 0 ||
                strcmp(cfg.redis.auth_user, "tide-scaler") != 0)
                fail_msg("case %zu: rc=%d password='%s' err=%s", i, rc, cfg.redis.auth_password,
                         err);
        } else if (rc == 0 || !strstr(err, cases[i].why) || !strstr(err, path) ||
                   !strstr(err, "redis.scaler_password_file") || cfg.redis.auth_password[0]) {
            fail_msg("case %zu: rc=%d err=%s", i, rc, err);
        }
        /* The reader's role has no file here: no AUTH, whatever the scaler's is. */
        assert_int_equal(redis_auth_load(&cfg, REDIS_ROLE_READER, err, sizeof err), 0);
        assert_string_equal(cfg.redis.auth_password, "");
    }
    unlink(path);
}

/* The generated default file loads and yields exactly the defaults. */
/* A path longer than the config's path field is refused, not truncated into a wrong dir. */
static void test_config_long_path(void **state)
{
    (void)state;
    char dir[1400];
    int n = snprintf(dir, sizeof dir, "%s", s_dir);
    while (n < 1100)
        n += snprintf(dir + n, sizeof dir - (size_t)n, "/%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && touch '%s/tide.yml'", dir, dir);
    assert_int_equal(system(cmd), 0);
    char path[1500];
    snprintf(path, sizeof path, "%s/tide.yml", dir);
    tide_config_t cfg;
    char err[512];
    assert_true(config_load(path, &cfg, err, sizeof err) < 0);
    assert_non_null(strstr(err, "too long"));
}

static void test_config_default_roundtrip(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/default.yml", s_dir);
    FILE *f = fopen(path, "w");
    config_write_default(f);
    fclose(f);
    tide_config_t a, b;
    char err[512];
    assert_int_equal(config_load(path, &a, err, sizeof err), 0);
    assert_int_equal(s_load_text("", &b, err, sizeof err), 0);
    memset(a.path, 0, sizeof a.path);
    memset(b.path, 0, sizeof b.path);
    memset(a.dir, 0, sizeof a.dir);
    memset(b.dir, 0, sizeof b.dir);
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_window(void **state)
{
    (void)state;
    window_t *w = window_new(10, 2);
    assert_non_null(w);
    uint64_t one[2] = {1, 10}, out[2];
    assert_int_equal(window_sum(w, 100, 5, out), 0);
    window_add(w, 100, one);
    window_add(w, 100, one);
    window_add(w, 102, one);
    assert_int_equal(window_sum(w, 102, 5, out), 3); /* covered 100..102 */
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 30);
    assert_int_equal(window_sum(w, 102, 1, out), 1);
    assert_int_equal(out[0], 1);
    /* Far later: the old slots must read as zero. */
    assert_int_equal(window_sum(w, 150, 10, out), 10);
    assert_int_equal(out[0], 0);
    window_add(w, 150, one);
    window_add(w, 120, one); /* too old: ignored */
    assert_int_equal(window_sum(w, 150, 10, out), 10);
    assert_int_equal(out[0], 1);
    window_destroy(&w);
    assert_null(w);
    window_destroy(&w);
    assert_null(window_new(0, 1));
}

static void test_hist(void **state)
{
    (void)state;
    assert_int_equal(hist_bucket(0), 0);
    assert_int_equal(hist_bucket(100), 0);
    assert_int_equal(hist_bucket(101), 1);
    assert_int_equal(hist_bucket(UINT64_MAX), HIST_BUCKETS - 1);
    uint64_t b[HIST_BUCKETS] = {0};
    assert_true(hist_quantile_ms(b, HIST_BUCKETS, 0.5) == 0.0);
    b[hist_bucket(900)] = 100; /* all in (750, 1000] us */
    double p50 = hist_quantile_ms(b, HIST_BUCKETS, 0.5);
    assert_true(p50 > 0.75 && p50 <= 1.0);
    b[hist_bucket(20000)] = 100;
    double p99 = hist_quantile_ms(b, HIST_BUCKETS, 0.99);
    assert_true(p99 > 15.0 && p99 <= 25.0);
}

static void test_msg_decode(void **state)
{
    (void)state;
    msg_sender_t s;
    msg_sender_init(&s, "test", "1");
    Tide__V1__ScalerPool pool = TIDE__V1__SCALER_POOL__INIT;
    pool.header = msg_sender_next(&s);
    pool.version = 7;
    Tide__V1__PoolEntry e = TIDE__V1__POOL_ENTRY__INIT;
    e.name = "production0";
    e.addr = "127.0.0.1:9101";
    Tide__V1__PoolEntry *ep = &e;
    pool.entries = &ep;
    pool.n_entries = 1;
    uint8_t buf[512];
    size_t len = protobuf_c_message_pack(&pool.base, buf);
    const char *why = NULL;
    ProtobufCMessage *m = msg_decode(TOPIC_SCALER_POOL, buf, len, &why);
    assert_non_null(m);
    Tide__V1__ScalerPool *got = (Tide__V1__ScalerPool *)m;
    assert_int_equal(got->version, 7);
    assert_string_equal(got->entries[0]->addr, "127.0.0.1:9101");
    protobuf_c_message_free_unpacked(m, NULL);
    /* Garbage, a wrong topic and a missing header are all refused. */
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    assert_null(msg_decode(TOPIC_SCALER_POOL, garbage, sizeof garbage, &why));
    assert_null(msg_decode("nope", buf, len, &why));
    assert_string_equal(why, "unknown topic");
    pool.header = NULL;
    len = protobuf_c_message_pack(&pool.base, buf);
    assert_null(msg_decode(TOPIC_SCALER_POOL, buf, len, &why));

    /* A snapshot whose instance error rate is NaN or above 1 is refused. */
    Tide__V1__MetricsSnapshot snap = TIDE__V1__METRICS_SNAPSHOT__INIT;
    snap.header = msg_sender_next(&s);
    Tide__V1__InstanceMetrics im = TIDE__V1__INSTANCE_METRICS__INIT;
    im.name = "production0";
    Tide__V1__InstanceMetrics *imp = &im;
    snap.instances = &imp;
    snap.n_instances = 1;
    const double bad[] = {0.0 / 0.0, 1.5, -0.1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        im.error_rate = bad[i];
        len = protobuf_c_message_pack(&snap.base, buf);
        assert_null(msg_decode(TOPIC_SNAPSHOT, buf, len, &why));
    }
    im.error_rate = 0.25;
    len = protobuf_c_message_pack(&snap.base, buf);
    m = msg_decode(TOPIC_SNAPSHOT, buf, len, &why);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* A real PUB/SUB pair: good messages arrive, garbage is dropped and counted. */
static void test_msg_socket(void **state)
{
    (void)state;
    zsock_t *pull = zsock_new_pull("inproc://test-msg");
    zsock_t *push = zsock_new_push("inproc://test-msg");
    assert_non_null(pull);
    assert_non_null(push);
    zstr_sendm(push, TOPIC_STATS);
    zstr_send(push, "garbage");
    zstr_send(push, "one frame only");
    msg_sender_t s;
    msg_sender_init(&s, "test", "1");
    Tide__V1__ProxyStats st = TIDE__V1__PROXY_STATS__INIT;
    st.header = msg_sender_next(&s);
    st.pool_version = 3;
    assert_int_equal(msg_send(push, TOPIC_STATS, &st.base), 0);
    uint64_t before = msg_dropped_total();
    msg_in_t in;
    zpoller_t *p = zpoller_new(pull, NULL);
    int ok = 0, bad = 0;
    while (ok + bad < 3 && zpoller_wait(p, 1000)) {
        int rc = msg_recv(pull, &in);
        if (rc == 0) {
            ok++;
            assert_string_equal(in.topic, TOPIC_STATS);
            assert_int_equal(((Tide__V1__ProxyStats *)in.msg)->pool_version, 3);
            msg_in_free(&in);
        } else {
            bad++;
        }
    }
    assert_int_equal(ok, 1);
    assert_int_equal(bad, 2);
    assert_int_equal(msg_dropped_total() - before, 2);
    zpoller_destroy(&p);
    zsock_destroy(&push);
    zsock_destroy(&pull);
}

/* msg_recv_raw hands back the frames exactly as sent (a forwarder passes the sender's bytes
 * on, with fields this build does not know), and nothing for a dropped message. */
static void test_msg_recv_raw(void **state)
{
    (void)state;
    zsock_t *pull = zsock_new_pull("inproc://test-msg-raw");
    zsock_t *push = zsock_new_push("inproc://test-msg-raw");
    assert_non_null(pull);
    assert_non_null(push);
    msg_sender_t s;
    msg_sender_init(&s, "test", "1");
    Tide__V1__ProxyStats st = TIDE__V1__PROXY_STATS__INIT;
    st.header = msg_sender_next(&s);
    st.pool_version = 7;
    uint8_t bytes[512];
    size_t len = protobuf_c_message_pack(&st.base, bytes);
    bytes[len++] = (15 << 3) | 0; /* field 15, varint: unknown to ProxyStats */
    bytes[len++] = 42;
    zstr_sendm(push, TOPIC_STATS);
    zframe_t *f = zframe_new(bytes, len);
    zframe_send(&f, push, 0);
    zstr_sendm(push, TOPIC_STATS);
    zstr_send(push, "garbage");

    msg_in_t in;
    zmsg_t *raw = NULL;
    zpoller_t *p = zpoller_new(pull, NULL);
    assert_non_null(zpoller_wait(p, 1000));
    assert_int_equal(msg_recv_raw(pull, &in, &raw), 0);
    assert_int_equal(((Tide__V1__ProxyStats *)in.msg)->pool_version, 7);
    assert_non_null(raw);
    assert_int_equal(zmsg_size(raw), 2);
    zframe_t *payload = zmsg_last(raw);
    assert_int_equal(zframe_size(payload), len);
    assert_memory_equal(zframe_data(payload), bytes, len);
    zmsg_destroy(&raw);
    msg_in_free(&in);

    assert_non_null(zpoller_wait(p, 1000));
    raw = (zmsg_t *)1; /* set to NULL by the call */
    assert_int_equal(msg_recv_raw(pull, &in, &raw), -EBADMSG);
    assert_null(raw);
    assert_null(in.msg);
    zpoller_destroy(&p);
    zsock_destroy(&push);
    zsock_destroy(&pull);
}

int main(void)
{
    assert_non_null(mkdtemp(s_dir));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_values_and_paths),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_scalers),
        cmocka_unit_test(test_config_missing_file),
        cmocka_unit_test(test_config_long_path),
        cmocka_unit_test(test_config_default_roundtrip),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_hist),
        cmocka_unit_test(test_msg_decode),
        cmocka_unit_test(test_msg_socket),
        cmocka_unit_test(test_msg_recv_raw),
        cmocka_unit_test(test_config_split_addrs),
        cmocka_unit_test(test_redis_auth_load),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s_dir);
    return rc;
}
