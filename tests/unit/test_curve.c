/* test_curve.c - unit tests of lib/tide_curve: key files and their rights, a CURVE server that
 * lets in only tide's keys and names the peer, refused plain and unknown-key clients, the
 * ipc:// directory check, and the config's refusal of a non-loopback endpoint without CURVE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide_config.h"
#include "tide_curve.h"

static char s_dir[] = "/tmp/tide-curve-XXXXXX";
static char s_keys[CFG_PATH];

static mode_t s_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 0777;
}

static char *s_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[8][4096];
    static int next;
    char *b = buf[next++ % 8];
    size_t n = fread(b, 1, 4095, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

static void s_cfg(tide_config_t *cfg)
{
    config_defaults(cfg);
    snprintf(cfg->bus.curve, sizeof cfg->bus.curve, "on");
    snprintf(cfg->bus.keys_dir, sizeof cfg->bus.keys_dir, "%s", s_keys);
}

static void test_keys_init(void **state)
{
    (void)state;
    char err[512], path[CFG_PATH + 64];
    assert_int_equal(bus_keys_init(s_keys, err, sizeof err), 0);
    assert_int_equal(s_mode(s_keys), 0700);
    snprintf(path, sizeof path, "%s/secret", s_keys);
    assert_int_equal(s_mode(path), 0700);
    snprintf(path, sizeof path, "%s/secret/tidectl.key_secret", s_keys);
    assert_int_equal(s_mode(path), 0600);
    char *before = s_slurp(path);
    snprintf(path, sizeof path, "%s/public/scaler.key", s_keys);
    assert_null(strstr(s_slurp(path), "secret-key")); /* public/ holds no secret */
    /* A second run keeps every key: peers already trust them. */
    assert_int_equal(bus_keys_init(s_keys, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/secret/tidectl.key_secret", s_keys);
    assert_string_equal(s_slurp(path), before);
}

/* One message from client to server within 1 s, or NULL. */
static zmsg_t *s_exchange(zsock_t *server, zsock_t *client)
{
    zstr_sendx(client, "hello", "world", NULL);
    zpoller_t *p = zpoller_new(server, NULL);
    zmsg_t *m = zpoller_wait(p, 1000) ? zmsg_recv(server) : NULL;
    zpoller_destroy(&p);
    return m;
}

static void test_server_accepts_only_tide_keys(void **state)
{
    (void)state;
    tide_config_t cfg;
    s_cfg(&cfg);
    zsock_t *server = zsock_new(ZMQ_PULL);
    assert_int_equal(bus_secure_server(server, &cfg, BUS_ROLE_SCALER, "tcp://127.0.0.1:*"), 0);
    int port = zsock_bind(server, "tcp://127.0.0.1:*");
    assert_true(port > 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);

    /* tidectl's key: let in, and named by its key. */
    zsock_t *good = zsock_new(ZMQ_PUSH);
    assert_int_equal(bus_secure_client(good, &cfg, BUS_ROLE_TIDECTL, BUS_ROLE_SCALER), 0);
    assert_int_equal(zsock_connect(good, "%s", ep), 0);
    zmsg_t *m = s_exchange(server, good);
    assert_non_null(m);
    const char *peer = zframe_meta(zmsg_first(m), "User-Id");
    assert_true(bus_peer_is(peer, &cfg, BUS_ROLE_TIDECTL));
    assert_false(bus_peer_is(peer, &cfg, BUS_ROLE_PROXY));
    assert_false(bus_peer_is(NULL, &cfg, BUS_ROLE_TIDECTL));
    zmsg_destroy(&m);

    /* No CURVE at all. */
    zsock_t *plain = zsock_new(ZMQ_PUSH);
    zsock_set_linger(plain, 0);
    assert_int_equal(zsock_connect(plain, "%s", ep), 0);
    assert_null(s_exchange(server, plain));

    /* CURVE with the right server key but a key pair tide never made. */
    zsock_t *rogue = zsock_new(ZMQ_PUSH);
    zsock_set_linger(rogue, 0);
    zcert_t *mine = zcert_new();
    char path[CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/public/scaler.key", s_keys);
    zcert_t *srv = zcert_load(path);
    zcert_apply(mine, rogue);
    zsock_set_curve_serverkey(rogue, zcert_public_txt(srv));
    assert_int_equal(zsock_connect(rogue, "%s", ep), 0);
    assert_null(s_exchange(server, rogue));

    /* Off: nothing is checked. */
    snprintf(cfg.bus.curve, sizeof cfg.bus.curve, "off");
    assert_true(bus_peer_is(NULL, &cfg, BUS_ROLE_TIDECTL));

    zcert_destroy(&mine);
    zcert_destroy(&srv);
    zsock_destroy(&rogue);
    zsock_destroy(&plain);
    zsock_destroy(&good);
    zsock_destroy(&server);
}

static void test_missing_keys_refused(void **state)
{
    (void)state;
    tide_config_t cfg;
    s_cfg(&cfg);
    snprintf(cfg.bus.keys_dir, sizeof cfg.bus.keys_dir, "%s/none", s_dir);
    zsock_t *s = zsock_new(ZMQ_PUB);
    assert_true(bus_secure_server(s, &cfg, BUS_ROLE_METRICS, "tcp://127.0.0.1:*") < 0);
    assert_true(bus_secure_client(s, &cfg, BUS_ROLE_PROXY, BUS_ROLE_METRICS) < 0);
    zsock_destroy(&s);
}

static void test_ipc_dir_must_be_private(void **state)
{
    (void)state;
    tide_config_t cfg;
    s_cfg(&cfg);
    snprintf(cfg.bus.curve, sizeof cfg.bus.curve, "off"); /* checked either way */
    char open_dir[CFG_PATH], ep[CFG_PATH + 16];
    snprintf(open_dir, sizeof open_dir, "%s/open", s_dir);
    assert_int_equal(mkdir(open_dir, 0700), 0);
    assert_int_equal(chmod(open_dir, 0755), 0);
    zsock_t *s = zsock_new(ZMQ_PUB);
    snprintf(ep, sizeof ep, "ipc://%s/bus.sock", open_dir);
    assert_int_equal(bus_secure_server(s, &cfg, BUS_ROLE_SCALER, ep), -EPERM);
    assert_int_equal(bus_secure_server(s, &cfg, BUS_ROLE_SCALER, "ipc://@tide"), -EPERM);
    snprintf(ep, sizeof ep, "ipc://%s/bus.sock", s_dir); /* mkdtemp: 0700 */
    assert_int_equal(bus_secure_server(s, &cfg, BUS_ROLE_SCALER, ep), 0);
    zsock_destroy(&s);
}

static int s_load(const char *text, char *err, size_t errlen)
{
    char path[CFG_PATH];
    snprintf(path, sizeof path, "%s/tide.yml", s_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    tide_config_t cfg;
    return config_load(path, &cfg, err, errlen);
}

static void test_config_refuses_open_bind_without_curve(void **state)
{
    (void)state;
    char err[1024] = "";
    assert_int_not_equal(
        s_load("bus:\n  curve: off\nendpoints:\n  stats: tcp://0.0.0.0:7101\n", err, sizeof err),
        0);
    assert_non_null(strstr(err, "endpoints.stats"));
    assert_non_null(strstr(err, "bus.curve"));
    assert_int_equal(
        s_load("bus:\n  curve: on\nendpoints:\n  stats: tcp://0.0.0.0:7101\n", err, sizeof err), 0);
    assert_int_equal(s_load("bus:\n  curve: off\n", err, sizeof err), 0);
}

int main(void)
{
    zsys_init();
    zsys_handler_set(NULL);
    if (!mkdtemp(s_dir))
        return 1;
    snprintf(s_keys, sizeof s_keys, "%s/keys", s_dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_init),
        cmocka_unit_test(test_server_accepts_only_tide_keys),
        cmocka_unit_test(test_missing_keys_refused),
        cmocka_unit_test(test_ipc_dir_must_be_private),
        cmocka_unit_test(test_config_refuses_open_bind_without_curve),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[CFG_PATH + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
