/* tidectl.c - tide's command line: watch the bus, ask and steer the scaler, print the default
 * config. Parses its own options (config_from_args is for daemons and refuses subcommands). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tide_curve.h"
#include "tide_log.h"
#include "tide_profiles.h"
#include "tidectl.h"

#define MAX_TOPICS 32

static void s_usage(FILE *out)
{
    fputs("usage: tidectl [-c FILE] [--timeout-ms MS] COMMAND [ARGS]\n"
          "\n"
          "commands:\n"
          "  watch [--json] [--topic PREFIX]... [--count N] [--timeout-ms MS]\n"
          "                     print every message on the bus, one line each (a failed\n"
          "                     job's output lines follow it, \"    | ...\"), until\n"
          "                     SIGINT/SIGTERM, N messages or MS milliseconds\n"
          "  status [--json]    the scaler's state, instances, last decision, pool\n"
          "  pause | resume     stop or restart the scaler's automatic decisions\n"
          "  scale N            hold N instances (0 hands the count back to the policy)\n"
          "  bounds MIN MAX     new minimum and maximum instance counts\n"
          "  jobs status JOB_ID the executor's record of a job\n"
          "  profile NAME [--seconds N]\n"
          "                     profile an instance now (with a healthy sibling as the\n"
          "                     baseline of a differential) and print its files\n"
          "  profiles [--json]  the profiles kept, newest first: id, instance, reason, time\n"
          "  profile get ID [-o FILE] [--diff | --folded | --crash]\n"
          "                     write a profile's flamegraph (or its differential, folded\n"
          "                     stacks, crash stack) to FILE or stdout\n"
          "  config-default     print the default tide.yml, every key commented\n"
          "  keys init DIR      make the bus key pairs under DIR (keeps existing ones)\n"
          "  check-config       load the config and say whether it is valid\n"
          "\n"
          "options:\n"
          "  -c, --config FILE  tide.yml (default: $TIDE_CONFIG, else ./tide.yml)\n"
          "      --timeout-ms MS  requests: wait this long for an answer (default 3000);\n"
          "                     watch: stop after this long (default: never)\n"
          "      --json         JSON output (one object per line)\n"
          "\n"
          "exit status: 0 ok, 1 no answer / refused, 2 bad arguments or config\n",
          out);
}

static int s_bad(const char *what)
{
    fprintf(stderr, "tidectl: %s\n\n", what);
    s_usage(stderr);
    return CTL_USAGE;
}

/* Parses a whole decimal number in [min, max]. Returns 0 or -EINVAL. */
static int s_number(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (!text || !*text || *text == '-' || *text == '+')
        return -EINVAL;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

typedef struct {
    const char *config;
    long timeout_ms; /* -1: unset */
    bool json;
    const char *topics[MAX_TOPICS];
    size_t n_topics;
    unsigned long count;
    unsigned long seconds;
    const char *output;
    const char *file; /* profile get: which file of the profile */
} opts_t;

enum {
    OPT_TIMEOUT = 1000,
    OPT_JSON,
    OPT_TOPIC,
    OPT_COUNT,
    OPT_SECONDS,
    OPT_DIFF,
    OPT_FOLDED,
    OPT_CRASH
};

/* Options are accepted before and after the command. Returns 0, or CTL_USAGE (printed). */
static int s_parse(int argc, char **argv, opts_t *o, bool stop_at_command)
{
    static const struct option long_opts[] = {{"config", required_argument, NULL, 'c'},
                                              {"help", no_argument, NULL, 'h'},
                                              {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
                                              {"json", no_argument, NULL, OPT_JSON},
                                              {"topic", required_argument, NULL, OPT_TOPIC},
                                              {"count", required_argument, NULL, OPT_COUNT},
                                              {"seconds", required_argument, NULL, OPT_SECONDS},
                                              {"output", required_argument, NULL, 'o'},
                                              {"diff", no_argument, NULL, OPT_DIFF},
                                              {"folded", no_argument, NULL, OPT_FOLDED},
                                              {"crash", no_argument, NULL, OPT_CRASH},
                                              {NULL, 0, NULL, 0}};
    optind = 0; /* 0: a full re-initialisation of GNU getopt between the two passes */
    opterr = 0;
    int c;
    unsigned long v;
    while ((c = getopt_long(argc, argv, stop_at_command ? "+c:h" : "c:ho:", long_opts, NULL)) !=
           -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'h':
            s_usage(stdout);
            exit(0);
        case OPT_TIMEOUT:
            if (s_number(optarg, 1, 24UL * 3600 * 1000, &v) != 0)
                return s_bad("--timeout-ms wants milliseconds from 1 to 86400000");
            o->timeout_ms = (long)v;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_TOPIC:
            if (o->n_topics == MAX_TOPICS)
                return s_bad("too many --topic options");
            o->topics[o->n_topics++] = optarg;
            break;
        case OPT_COUNT:
            if (s_number(optarg, 1, ULONG_MAX, &v) != 0)
                return s_bad("--count wants a positive number");
            o->count = v;
            break;
        case OPT_SECONDS:
            if (s_number(optarg, 1, 86400, &v) != 0)
                return s_bad("--seconds wants a whole number of seconds from 1");
            o->seconds = v;
            break;
        case 'o':
            o->output = optarg;
            break;
        case OPT_DIFF:
        case OPT_FOLDED:
        case OPT_CRASH: {
            const char *f = c == OPT_DIFF     ? PROFILE_DIFF
                            : c == OPT_FOLDED ? PROFILE_FOLDED
                                              : PROFILE_CRASH;
            if (o->file && strcmp(o->file, f) != 0)
                return s_bad("choose one of --diff, --folded, --crash");
            o->file = f;
            break;
        }
        default: {
            char what[128];
            snprintf(what, sizeof what, "unknown option or missing value: %s", argv[optind - 1]);
            return s_bad(what);
        }
        }
    }
    return 0;
}

static int s_load(const char *path, tide_config_t *cfg)
{
    if (!path) {
        path = getenv("TIDE_CONFIG");
        if (!path || !*path)
            path = "tide.yml";
    }
    char err[1024];
    if (config_load(path, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "tidectl: %s\n", err);
        return CTL_USAGE;
    }
    return 0;
}

int main(int argc, char **argv)
{
    log_init("tidectl", LOGL_WARN);
    opts_t o = {.timeout_ms = -1};
    int rc = s_parse(argc, argv, &o, true);
    if (rc)
        return rc;
    if (optind >= argc)
        return s_bad("no command given");
    /* Second pass over the command and what follows it, so options may come after it too. */
    int cargc = argc - optind;
    char **cargv = argv + optind;
    const char *command = cargv[0];
    rc = s_parse(cargc, cargv, &o, false);
    if (rc)
        return rc;
    const char **args = (const char **)cargv + optind;
    int nargs = cargc - optind;

    if (strcmp(command, "config-default") == 0) {
        if (nargs)
            return s_bad("config-default takes no arguments");
        config_write_default(stdout);
        return fflush(stdout) == 0 ? CTL_OK : CTL_FAIL;
    }
    if (strcmp(command, "keys") == 0) {
        if (nargs != 2 || strcmp(args[0], "init") != 0)
            return s_bad("usage: tidectl keys init DIR");
        char err[CFG_PATH + 128];
        if (bus_keys_init(args[1], err, sizeof err) != 0) {
            fprintf(stderr, "tidectl: %s\n", err);
            return CTL_FAIL;
        }
        return CTL_OK;
    }

    bool watch = strcmp(command, "watch") == 0;
    if (!watch && (o.n_topics || o.count))
        return s_bad("--topic and --count belong to watch");
    bool profile = strcmp(command, "profile") == 0;
    bool getting = profile && nargs >= 1 && strcmp(args[0], "get") == 0;
    if (o.seconds && (!profile || getting))
        return s_bad("--seconds belongs to profile NAME");
    if ((o.output || o.file) && !getting)
        return s_bad("-o, --diff, --folded and --crash belong to profile get");
    Tide__V1__Command cmd = TIDE__V1__COMMAND__CMD_STATUS;
    unsigned long n1 = 0, n2 = 0;
    int want_args = 0;
    bool control = true;
    if (watch || strcmp(command, "check-config") == 0) {
        control = false;
    } else if (strcmp(command, "status") == 0) {
        cmd = TIDE__V1__COMMAND__CMD_STATUS;
    } else if (strcmp(command, "pause") == 0) {
        cmd = TIDE__V1__COMMAND__CMD_PAUSE;
    } else if (strcmp(command, "resume") == 0) {
        cmd = TIDE__V1__COMMAND__CMD_RESUME;
    } else if (strcmp(command, "scale") == 0) {
        cmd = TIDE__V1__COMMAND__CMD_SCALE;
        want_args = 1;
        if (nargs == 1 && s_number(args[0], 0, UINT32_MAX, &n1) != 0)
            return s_bad("scale wants a count: tidectl scale N");
    } else if (strcmp(command, "bounds") == 0) {
        cmd = TIDE__V1__COMMAND__CMD_BOUNDS;
        want_args = 2;
        if (nargs == 2 && (s_number(args[0], 0, UINT32_MAX, &n1) != 0 ||
                           s_number(args[1], 0, UINT32_MAX, &n2) != 0))
            return s_bad("bounds wants two counts: tidectl bounds MIN MAX");
        if (nargs == 2 && n1 > n2)
            return s_bad("bounds: MIN is greater than MAX");
    } else if (getting) {
        control = false;
        want_args = 2;
    } else if (profile) {
        control = false;
        want_args = 1;
        if (nargs == 1 && !*args[0])
            return s_bad("profile wants an instance name: tidectl profile NAME");
    } else if (strcmp(command, "profiles") == 0) {
        control = false;
    } else if (strcmp(command, "jobs") == 0) {
        control = false;
        want_args = 2;
        if (nargs >= 1 && strcmp(args[0], "status") != 0)
            return s_bad("jobs knows one subcommand: tidectl jobs status JOB_ID");
        if (nargs == 2 && (!*args[1] || strlen(args[1]) > 128))
            return s_bad("jobs status: JOB_ID must be 1 to 128 characters");
    } else {
        char what[160];
        snprintf(what, sizeof what, "unknown command '%.100s'", command);
        return s_bad(what);
    }
    if (nargs != want_args) {
        char what[160];
        snprintf(what, sizeof what, "%s takes %d argument%s", command, want_args,
                 want_args == 1 ? "" : "s");
        return s_bad(what);
    }

    tide_config_t cfg;
    rc = s_load(o.config, &cfg);
    if (rc)
        return rc;
    if (strcmp(command, "check-config") == 0) {
        printf("ok: %s\n", cfg.path);
        return CTL_OK;
    }

    char host[64] = "host", id[96];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(id, sizeof id, "%s-%d", host, (int)getpid());
    msg_sender_t sender;
    msg_sender_init(&sender, "tidectl", id);
    ctl_t ctl = {.cfg = &cfg,
                 .sender = &sender,
                 .timeout_ms = (int)o.timeout_ms,
                 .json = o.json,
                 .out = stdout,
                 .err = stderr};
    if (watch)
        return ctl_watch(&ctl, o.topics, o.n_topics, o.count);
    if (control)
        return ctl_control(&ctl, cmd, cmd == TIDE__V1__COMMAND__CMD_SCALE ? (uint32_t)n1 : 0,
                           cmd == TIDE__V1__COMMAND__CMD_BOUNDS ? (uint32_t)n1 : 0,
                           cmd == TIDE__V1__COMMAND__CMD_BOUNDS ? (uint32_t)n2 : 0);
    if (getting)
        return ctl_profile_get(&ctl, args[1], o.file ? o.file : PROFILE_SVG, o.output);
    if (profile)
        return ctl_profile_take(&ctl, args[0], (uint32_t)o.seconds);
    if (strcmp(command, "profiles") == 0)
        return ctl_profiles_list(&ctl);
    return ctl_job_status(&ctl, args[1]);
}
