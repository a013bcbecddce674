/* app_config.h - the sample app's settings: one table of flags and environment variables. */
#ifndef APP_CONFIG_H
#define APP_CONFIG_H

#include <stdio.h>
#include <sys/socket.h>

#define APP_NAME_MAX        64
#define APP_HEALTH_PATH_MAX 255
#define APP_DELAY_MS_MAX    60000
#define APP_CPU_US_MAX      10000000
#define APP_CONCURRENCY_MAX 100000

typedef struct {
    char listen[128];             /* as given, for messages */
    struct sockaddr_storage addr; /* parsed from listen */
    socklen_t addr_len;
    char name[APP_NAME_MAX + 1]; /* sent as X-Instance */
    long delay_ms;               /* sleep per request, no CPU */
    long cpu_us;                 /* CPU burnt per request */
    long concurrency;            /* requests served at once; 0 = unlimited */
    char health_path[APP_HEALTH_PATH_MAX + 1];
} app_config_t;

/* Fills cfg from defaults, then the TIDE_APP_* environment variables, then argv (flags win).
 * Returns 0 when cfg is ready; 1 when --help was asked for and usage went to out; -1 when an
 * argument or variable is wrong, after writing one line naming it (and a hint) to err. cfg is
 * left partly filled on failure. */
int app_config_parse(app_config_t *cfg, int argc, char **argv, FILE *out, FILE *err);

/* Writes the usage text, generated from the same table, to out. */
void app_config_usage(FILE *out);

#endif
