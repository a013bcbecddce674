/* main.c - tide-scaler: the state machine that turns metrics into instances (see scaler.h). */
#include <stdio.h>
#include <stdlib.h>

#include "scaler.h"
#include "tide_config.h"
#include "tide_log.h"
#include "tide_redis.h"

int main(int argc, char **argv)
{
    tide_config_t cfg;
    char id[128];
    config_from_args(argc, argv, "tide-scaler", &cfg, id, sizeof id);
    log_init("scaler", LOGL_INFO);
    /* The only writer: it reads the scaler's password file, and only that one. */
    char err[1024];
    if (redis_auth_load(&cfg, REDIS_ROLE_SCALER, err, sizeof err) != 0) {
        fprintf(stderr, "tide-scaler: %s\n", err);
        return 2;
    }
    log_info("config loaded", "path=%s", cfg.path);
    scaler_t *scaler = scaler_new(&cfg, id);
    if (!scaler)
        return 1;
    int rc = scaler_run(scaler);
    scaler_destroy(&scaler);
    return rc == 0 ? 0 : 1;
}
