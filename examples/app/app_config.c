/* app_config.c - parses the sample app's flags and TIDE_APP_* variables from one table. */
#include "app_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PROG "tide-sample-app"

typedef enum { OPT_ADDR, OPT_NAME, OPT_INT, OPT_PATH } opt_type_t;

typedef struct {
    const char *flag; /* without the leading -- */
    const char *env;  /* environment variable, or NULL */
    opt_type_t type;
    long min, max;   /* bounds for OPT_INT */
    const char *def; /* default text; NULL means required */
    size_t offset;   /* field of app_config_t it fills */
    const char *metavar;
    const char *help;
} opt_t;

static const opt_t s_opts[] = {
    {"listen", "TIDE_APP_LISTEN", OPT_ADDR, 0, 0, NULL, offsetof(app_config_t, listen), "HOST:PORT",
     "e.g. 127.0.0.1:9101, [::1]:9101, :9101 (all interfaces)"},
    {"name", "TIDE_APP_NAME", OPT_NAME, 0, 0, NULL, offsetof(app_config_t, name), "NAME",
     "instance name, sent as X-Instance (letters, digits, . _ - :)"},
    {"delay-ms", "TIDE_APP_DELAY_MS", OPT_INT, 0, APP_DELAY_MS_MAX, "0",
     offsetof(app_config_t, delay_ms), "N", "sleep N ms per request (wall time, no CPU)"},
    {"cpu-us", "TIDE_APP_CPU_US", OPT_INT, 0, APP_CPU_US_MAX, "0", offsetof(app_config_t, cpu_us),
     "N", "burn N us of CPU per request"},
    {"concurrency", "TIDE_APP_CONCURRENCY", OPT_INT, 0, APP_CONCURRENCY_MAX, "0",
     offsetof(app_config_t, concurrency), "N",
     "serve at most N requests at once, the rest queue (FIFO); 0 = no limit"},
    {"health-path", "TIDE_APP_HEALTH_PATH", OPT_PATH, 0, 0, "/health",
     offsetof(app_config_t, health_path), "PATH",
     "answered 200 \"ok\" at once, free of cost and concurrency limit"},
};
#define OPT_COUNT (sizeof s_opts / sizeof s_opts[0])

void app_config_usage(FILE *out)
{
    fprintf(out, "usage: " PROG " --listen HOST:PORT --name NAME [options]\n\n"
                 "A demo HTTP service for tide: GET / says hello, the health path says ok,\n"
                 "/status/NNN answers with status NNN, /bytes/N sends N bytes (N <= 10 MiB).\n\n");
    for (size_t i = 0; i < OPT_COUNT; i++) {
        const opt_t *o = &s_opts[i];
        char left[64];
        snprintf(left, sizeof left, "--%s %s", o->flag, o->metavar);
        fprintf(out, "  %-24s %s\n", left, o->help);
        fprintf(out, "  %-24s env %s, %s%s\n", "", o->env, o->def ? "default " : "required",
                o->def ? (*o->def ? o->def : "\"\"") : "");
    }
    fprintf(out, "  %-24s %s\n\n", "--help", "print this and exit");
    fprintf(out, "Flags win over environment variables. TIDE_LOG_LEVEL sets the log level.\n"
                 "Exit status: 0 after SIGTERM or SIGINT, 1 when it cannot listen, 2 for bad "
                 "arguments.\n");
}

/* Reports a bad value, naming where it came from so the user knows what to fix. */
static int s_bad(FILE *err, const opt_t *o, const char *source, const char *value, const char *want)
{
    fprintf(err, PROG ": %s%s: %s, got \"%s\"\n", source == o->env ? "" : "--",
            source == o->env ? o->env : o->flag, want, value);
    fprintf(err, "Run '" PROG " --help' for usage.\n");
    return -1;
}

/* Parses HOST:PORT into addr; an empty host or * means every interface. Numeric hosts only:
 * getaddrinfo would need NSS modules at run time, which a static binary cannot load. */
static int s_parse_addr(const char *text, struct sockaddr_storage *addr, socklen_t *len)
{
    const char *colon = strrchr(text, ':');
    if (!colon)
        return -EINVAL;
    const char *port_text = colon + 1;
    if (!*port_text || strlen(port_text) > 5 ||
        strspn(port_text, "0123456789") != strlen(port_text))
        return -EINVAL;
    long port = strtol(port_text, NULL, 10);
    if (port > 65535)
        return -EINVAL;
    char host[64];
    size_t host_len = (size_t)(colon - text);
    if (host_len >= sizeof host)
        return -EINVAL;
    memcpy(host, text, host_len);
    host[host_len] = '\0';

    memset(addr, 0, sizeof *addr);
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
        host[host_len - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    if (host_len == 0 || strcmp(host, "*") == 0) {
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    return inet_pton(AF_INET, host, &a4->sin_addr) == 1 ? 0 : -EINVAL;
}

/* Checks one value against its entry and stores it; returns 0 or -1 after reporting. */
static int s_apply(app_config_t *cfg, const opt_t *o, const char *value, const char *source,
                   FILE *err)
{
    char *field = (char *)cfg + o->offset;
    size_t len = strlen(value);
    switch (o->type) {
    case OPT_ADDR:
        if (len >= sizeof cfg->listen || s_parse_addr(value, &cfg->addr, &cfg->addr_len) != 0)
            return s_bad(err, o, source, value, "want HOST:PORT with a numeric IP and port");
        memcpy(field, value, len + 1);
        return 0;
    case OPT_NAME:
        /* The name goes into a response header, so only characters that need no escaping. */
        if (len == 0 || len > APP_NAME_MAX ||
            strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:") !=
                len)
            return s_bad(err, o, source, value,
                         "want 1 to 64 letters, digits, '.', '_', '-' or ':'");
        memcpy(field, value, len + 1);
        return 0;
    case OPT_PATH:
        /* Matched byte for byte against request paths, which never hold spaces or queries. */
        if (len == 0 || len > APP_HEALTH_PATH_MAX || value[0] != '/' ||
            strpbrk(value, " ?#\t\r\n") != NULL)
            return s_bad(err, o, source, value, "want a path starting with '/', no spaces or '?'");
        memcpy(field, value, len + 1);
        return 0;
    case OPT_INT: {
        char want[80];
        snprintf(want, sizeof want, "want an integer in %ld..%ld", o->min, o->max);
        /* Digits only: strtol alone would take " 12", "+12" and "12abc". */
        if (len == 0 || len > 12 || strspn(value, "0123456789") != len)
            return s_bad(err, o, source, value, want);
        long v = strtol(value, NULL, 10);
        if (v < o->min || v > o->max)
            return s_bad(err, o, source, value, want);
        *(long *)(void *)field = v;
        return 0;
    }
    }
    return -1;
}

int app_config_parse(app_config_t *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    const char *value[OPT_COUNT];
    const char *source[OPT_COUNT];
    memset(cfg, 0, sizeof *cfg);

    for (size_t i = 0; i < OPT_COUNT; i++) {
        value[i] = s_opts[i].def;
        source[i] = "default";
        const char *env = s_opts[i].env ? getenv(s_opts[i].env) : NULL;
        /* An empty variable counts as unset, as docker run -e NAME= would otherwise break. */
        if (env && *env) {
            value[i] = env;
            source[i] = s_opts[i].env;
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            app_config_usage(out);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(err, PROG ": unexpected argument \"%s\"\n", arg);
            fprintf(err, "Run '" PROG " --help' for usage.\n");
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        size_t i = 0;
        while (i < OPT_COUNT &&
               (strlen(s_opts[i].flag) != name_len || strncmp(s_opts[i].flag, name, name_len)))
            i++;
        if (i == OPT_COUNT) {
            fprintf(err, PROG ": unknown option \"%.*s\"\n", (int)(name_len + 2), arg);
            fprintf(err, "Run '" PROG " --help' for usage.\n");
            return -1;
        }
        if (eq) {
            value[i] = eq + 1;
        } else if (a + 1 < argc) {
            value[i] = argv[++a];
        } else {
            fprintf(err, PROG ": --%s needs a value (%s)\n", s_opts[i].flag, s_opts[i].metavar);
            fprintf(err, "Run '" PROG " --help' for usage.\n");
            return -1;
        }
        source[i] = "flag";
    }
    for (size_t i = 0; i < OPT_COUNT; i++) {
        if (!value[i]) {
            fprintf(err, PROG ": --%s (or %s) is required\n", s_opts[i].flag, s_opts[i].env);
            fprintf(err, "Run '" PROG " --help' for usage.\n");
            return -1;
        }
        if (s_apply(cfg, &s_opts[i], value[i], source[i], err) != 0)
            return -1;
    }
    return 0;
}
