/* fuzz_config.c - libFuzzer target: arbitrary bytes as tide.yml, through config_load (libyaml's
 * document API walked against the schema, then the cross-key checks and path resolution), the
 * loader every tide program runs before it does anything.
 *
 * Each input is written to one file in a private temp folder (config_load reads a path).
 * Beyond the sanitizers it checks the loader's contract: 0, or a negative errno-style code
 * with a message that names the file; and a config that loads keeps the cross-key rules. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tide_config.h"

static char s_dir[] = "/tmp/tide-fuzz-config-XXXXXX";
static char s_path[sizeof s_dir + 16];

static void s_cleanup(void)
{
    unlink(s_path);
    rmdir(s_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!mkdtemp(s_dir))
        abort();
    snprintf(s_path, sizeof s_path, "%s/tide.yml", s_dir);
    atexit(s_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(s_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        abort();
    static tide_config_t cfg;
    char err[512];
    err[0] = '\0';
    int rc = config_load(s_path, &cfg, err, sizeof err);
    if (rc > 0 || (rc < 0 && (memchr(err, '\0', sizeof err) == NULL || !strstr(err, "tide.yml")))) {
        fprintf(stderr, "fuzz_config: config_load returned %d with message '%.512s'\n", rc, err);
        abort();
    }
    if (rc == 0 &&
        (cfg.scaler.min > cfg.scaler.max ||
         cfg.metrics.panic_window_s > cfg.metrics.stable_window_s ||
         cfg.scaler.scale_down_rps >= cfg.scaler.scale_up_rps || cfg.app.health_path[0] != '/')) {
        fprintf(stderr, "fuzz_config: loaded a config that breaks a cross-key rule\n");
        abort();
    }
    return 0;
}
