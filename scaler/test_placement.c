/* test_placement.c - unit tests of placement.c: the port rule, app.host on the process driver,
 * and the addresses an INI inventory gives on the docker driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "placement.h"
#include "tide_log.h"

static tide_config_t s_tide(const char *driver)
{
    tide_config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.executor.driver, sizeof cfg.executor.driver, "%s", driver);
    snprintf(cfg.executor.inventory, sizeof cfg.executor.inventory, "/nonexistent/inventory.ini");
    snprintf(cfg.app.host, sizeof cfg.app.host, "127.0.0.1");
    cfg.app.base_port = 9100;
    return cfg;
}

static void test_process_driver(void **state)
{
    (void)state;
    tide_config_t cfg = s_tide("process");
    char err[400], why[200];
    placement_t *p = placement_new(&cfg, err, sizeof err);
    assert_non_null(p);
    assert_string_equal(err, ""); /* the inventory is not read for the process driver */
    assert_int_equal(placement_check(p, 3, "127.0.0.1", 9103, why, sizeof why), 0);
    assert_int_equal(placement_check(p, 3, "127.0.0.1", 9104, why, sizeof why), -EINVAL);
    assert_string_equal(why, "port 9104 is not app.base_port + 3 (9103)");
    assert_int_equal(placement_check(p, 3, "127.0.0.2", 9103, why, sizeof why), -EINVAL);
    assert_string_equal(why, "host '127.0.0.2' is not app.host (127.0.0.1)");
    assert_int_equal(placement_check(p, 3, NULL, 9103, why, sizeof why), -EINVAL);
    placement_destroy(&p);
    assert_null(p);
    placement_destroy(&p);
}

static void test_docker_inventory(void **state)
{
    (void)state;
    tide_config_t cfg = s_tide("docker");
    char err[400], why[200];
    placement_t *p = placement_new(&cfg, err, sizeof err);
    assert_non_null(p);
    assert_non_null(strstr(err, "cannot read the inventory /nonexistent/inventory.ini"));
    const char *ini = "# comment\n"
                      "local ansible_connection=local ansible_host=127.0.0.1\n"
                      "[web]\n"
                      "node1 ansible_host=192.0.2.11 ansible_user=deploy\n"
                      "node2 ansible_host=node2.example tide_address='192.0.2.12'  # note\n"
                      "node3 ansible_host=node3.example\n"
                      "  ; another comment\n"
                      "[web:vars]\n"
                      "ansible_host=192.0.2.99\n"
                      "[all:children]\n"
                      "web\n"
                      "[db]\r\n"
                      "node4 tide_address=2001:db8::4\r\n";
    assert_int_equal(placement_add_inventory(p, ini), 3); /* 127.0.0.1 is app.host already */
    const char *ok[] = {"127.0.0.1", "192.0.2.11", "192.0.2.12", "2001:db8::4"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (placement_check(p, 0, ok[i], 9100, why, sizeof why) != 0)
            fail_msg("%s refused: %s", ok[i], why);
    const char *bad[] = {"192.0.2.99", "node3.example", "node2.example", "192.0.2.1", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (placement_check(p, 0, bad[i], 9100, why, sizeof why) == 0)
            fail_msg("%s accepted", bad[i]);
    assert_non_null(strstr(why, "nor the address of an inventory host"));
    placement_destroy(&p);
}

int main(void)
{
    log_init("test", LOGL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process_driver),
        cmocka_unit_test(test_docker_inventory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
