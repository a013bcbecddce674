/* tide_config.c - tide.yml parsed with libyaml's document API against one schema table. */
#include "tide_config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

typedef enum { T_STR, T_PATH, T_INT, T_DOUBLE, T_ENUM, T_ENDPOINT, T_ADDR, T_ADDRS } ctype_t;

typedef struct {
    const char *name; /* "section.key" or "key" */
    ctype_t type;
    const char *def;   /* default, as it would be written in the file */
    size_t offset;     /* where in tide_config_t */
    size_t size;       /* for strings: the buffer size */
    double min, max;   /* for numbers */
    const char *enums; /* for T_ENUM: "a|b" */
    const char *doc;
} centry_t;

#define F(field) offsetof(tide_config_t, field), sizeof(((tide_config_t *)0)->field)

/* The schema: the order here is the order of the default file. */
static const centry_t s_schema[] = {
    {"service", T_STR, "web", F(service), 0, 0, NULL,
     "name of the service; Redis keys are prefixed tide:<service>:"},

    {"redis.host", T_STR, "127.0.0.1", F(redis.host), 0, 0, NULL, "Redis server address"},
    {"redis.port", T_INT, "6379", F(redis.port), 1, 65535, NULL, "Redis server port"},
    {"redis.connect_timeout_ms", T_INT, "500", F(redis.connect_timeout_ms), 10, 60000, NULL,
     "give up connecting to Redis after this long, then retry"},
    {"redis.command_timeout_ms", T_INT, "500", F(redis.command_timeout_ms), 10, 60000, NULL,
     "a Redis command that takes longer fails and the connection is reopened"},
    {"redis.sentinel", T_ADDRS, "", F(redis.sentinel), 0, 0, NULL,
     "Sentinels that name the primary (host:port,host:port...); empty: use host and port"},
    {"redis.sentinel_master", T_STR, "tide", F(redis.sentinel_master), 0, 0, NULL,
     "the master name the Sentinels monitor (asked again after an error or READONLY)"},
    {"redis.scaler_user", T_STR, "", F(redis.scaler_user), 0, 0, NULL,
     "tide-scaler AUTHs as this ACL user (read-write on tide:*) after every connect; "
     "empty: no AUTH"},
    {"redis.scaler_password_file", T_PATH, "", F(redis.scaler_password_file), 0, 0, NULL,
     "file holding scaler_user's password (one line; keep it 0600); required with the user"},
    {"redis.reader_user", T_STR, "", F(redis.reader_user), 0, 0, NULL,
     "the proxies AUTH as this read-only ACL user after every connect; empty: no AUTH"},
    {"redis.reader_password_file", T_PATH, "", F(redis.reader_password_file), 0, 0, NULL,
     "file holding reader_user's password (one line; keep it 0600); required with the user"},

    {"bus.curve", T_ENUM, "on", F(bus.curve), 0, 0, "on|off",
     "CURVE on every bus socket: only holders of the keys in keys_dir may connect (off: any "
     "local process can; refused for an endpoint off loopback)"},
    {"bus.keys_dir", T_PATH, "../run/keys", F(bus.keys_dir), 0, 0, NULL,
     "the components' key pairs, made by `tidectl keys init DIR` (secret/ is 0600)"},

    {"endpoints.stats", T_ENDPOINT, "tcp://127.0.0.1:7101", F(endpoints.stats), 0, 0, NULL,
     "ProxyStats: tide-metrics binds (SUB), every proxy connects (PUB)"},
    {"endpoints.metrics", T_ENDPOINT, "tcp://127.0.0.1:7102", F(endpoints.metrics), 0, 0, NULL,
     "metrics.snapshot and republished stats: tide-metrics binds (PUB)"},
    {"endpoints.scaler_events", T_ENDPOINT, "tcp://127.0.0.1:7103", F(endpoints.scaler_events), 0,
     0, NULL, "scaler.state, scaler.decision, scaler.pool: tide-scaler binds (PUB)"},
    {"endpoints.scaler_control", T_ENDPOINT, "tcp://127.0.0.1:7104", F(endpoints.scaler_control), 0,
     0, NULL, "tidectl commands: tide-scaler binds (REP)"},
    {"endpoints.executor_control", T_ENDPOINT, "tcp://127.0.0.1:7105",
     F(endpoints.executor_control), 0, 0, NULL, "jobs: tide-executor binds (REP)"},
    {"endpoints.executor_events", T_ENDPOINT, "tcp://127.0.0.1:7106", F(endpoints.executor_events),
     0, 0, NULL, "exec.job events: tide-executor binds (PUB)"},

    {"app.host", T_STR, "127.0.0.1", F(app.host), 0, 0, NULL,
     "address instances listen on (the ip of the ip:port written to Redis)"},
    {"app.base_port", T_INT, "9101", F(app.base_port), 1, 65000, NULL,
     "production<N> listens on base_port + N"},
    {"app.name_prefix", T_STR, "production", F(app.name_prefix), 0, 0, NULL,
     "instances are named <name_prefix><N>"},
    {"app.health_path", T_STR, "/health", F(app.health_path), 0, 0, NULL,
     "readiness: a new instance is ready once GET <health_path> answers 200"},
    {"app.health_timeout_ms", T_INT, "30000", F(app.health_timeout_ms), 100, 3600000, NULL,
     "how long a new instance may take to become ready"},
    {"app.command", T_PATH, "../build/bin/tide-sample-app", F(app.command), 0, 0, NULL,
     "process driver: the program every instance runs"},
    {"app.args", T_STR, "--delay-ms 20 --cpu-us 500 --concurrency 4", F(app.args), 0, 0, NULL,
     "process driver: extra arguments (--listen and --name are added per instance)"},
    {"app.image", T_STR, "tide-sample-app:latest", F(app.image), 0, 0, NULL,
     "docker driver: the image every container runs"},

    {"proxy.listen", T_ADDR, "127.0.0.1:8080", F(proxy.listen), 0, 0, NULL,
     "where clients connect"},
    {"proxy.workers", T_INT, "0", F(proxy.workers), 0, 64, NULL,
     "event-loop threads (0 = auto: one per core)"},
    {"proxy.stats", T_ENUM, "on", F(proxy.stats), 0, 0, "on|off",
     "publish ProxyStats (off: no stats socket; the counters are still kept)"},
    {"proxy.stats_interval_ms", T_INT, "250", F(proxy.stats_interval_ms), 50, 10000, NULL,
     "how often ProxyStats is published"},
    {"proxy.pool_poll_ms", T_INT, "1000", F(proxy.pool_poll_ms), 100, 60000, NULL,
     "safety net: how often Redis pool_version is polled besides scaler.pool events"},
    {"proxy.connect_timeout_ms", T_INT, "1000", F(proxy.connect_timeout_ms), 10, 60000, NULL,
     "connecting to an instance"},
    {"proxy.response_timeout_ms", T_INT, "30000", F(proxy.response_timeout_ms), 100, 3600000, NULL,
     "504 when an instance's answer head takes this long, or its body stalls this long"},
    {"proxy.idle_timeout_ms", T_INT, "60000", F(proxy.idle_timeout_ms), 100, 3600000, NULL,
     "idle keep-alive clients, quiet tunnels, stalled readers are closed after this long"},
    {"proxy.max_header_size", T_INT, "16384", F(proxy.max_header_size), 1024, 1048576, NULL,
     "largest request head accepted (bytes)"},
    {"proxy.max_connections", T_INT, "10000", F(proxy.max_connections), 1, 1000000, NULL,
     "client connections held at once"},
    {"proxy.upstream_idle_per_instance", T_INT, "64", F(proxy.upstream_idle_per_instance), 0, 10000,
     NULL, "idle keep-alive connections kept per instance"},
    {"proxy.retry_non_idempotent", T_ENUM, "off", F(proxy.retry_non_idempotent), 0, 0, "on|off",
     "retry a POST (or other non-idempotent request) that may have reached the instance"},
    {"proxy.drain_timeout_ms", T_INT, "10000", F(proxy.drain_timeout_ms), 0, 3600000, NULL,
     "on SIGTERM, how long in-flight requests may take before the proxy exits"},
    {"proxy.client_header_timeout_ms", T_INT, "10000", F(proxy.client_header_timeout_ms), 100,
     3600000, NULL, "a request head not complete this long after its first byte gets 408"},
    {"proxy.client_body_timeout_ms", T_INT, "30000", F(proxy.client_body_timeout_ms), 100, 3600000,
     NULL, "a request body silent this long (between two reads) gets 408"},
    {"proxy.max_body_size", T_INT, "104857600", F(proxy.max_body_size), 0, 2147483647, NULL,
     "largest request body accepted (bytes; 0 = no limit); larger gets 413"},
    {"proxy.down_backoff_ms", T_INT, "500", F(proxy.down_backoff_ms), 10, 600000, NULL,
     "an instance whose connect failed gets no request this long, then is probed"},
    {"proxy.down_backoff_max_ms", T_INT, "30000", F(proxy.down_backoff_max_ms), 10, 3600000, NULL,
     "the backoff doubles on each failed probe up to this"},

    {"metrics.listen", T_ADDR, "127.0.0.1:8081", F(metrics.listen), 0, 0, NULL,
     "HTTP: /metrics (Prometheus), /api/snapshot"},
    {"metrics.stable_window_s", T_INT, "60", F(metrics.stable_window_s), 2, 3600, NULL,
     "the stable window the policy averages over"},
    {"metrics.panic_window_s", T_INT, "6", F(metrics.panic_window_s), 1, 600, NULL,
     "the short window that detects bursts"},
    {"metrics.snapshot_interval_ms", T_INT, "1000", F(metrics.snapshot_interval_ms), 100, 60000,
     NULL, "how often metrics.snapshot is published"},
    {"metrics.stale_after_ms", T_INT, "2000", F(metrics.stale_after_ms), 100, 600000, NULL,
     "a proxy silent this long no longer counts as live"},

    {"scaler.policy", T_ENUM, "target", F(scaler.policy), 0, 0, "target|threshold",
     "target: ceil(rps / target_rps) with panic; threshold: one at a time past fixed rps"},
    {"scaler.min", T_INT, "1", F(scaler.min), 0, 1000, NULL, "fewest instances"},
    {"scaler.max", T_INT, "10", F(scaler.max), 1, 1000, NULL, "most instances"},
    {"scaler.target_rps", T_DOUBLE, "100", F(scaler.target_rps), 0.001, 1e9, NULL,
     "target: requests/s one instance should carry"},
    {"scaler.panic_threshold", T_DOUBLE, "2", F(scaler.panic_threshold), 1.0, 1000, NULL,
     "target: panic when the panic window wants at least this many times the current count"},
    {"scaler.max_step", T_INT, "5", F(scaler.max_step), 1, 1000, NULL,
     "most instances one job adds or removes"},
    {"scaler.scale_up_rps", T_DOUBLE, "100", F(scaler.scale_up_rps), 0.001, 1e9, NULL,
     "threshold: add one instance when rps per instance is above this"},
    {"scaler.scale_down_rps", T_DOUBLE, "30", F(scaler.scale_down_rps), 0, 1e9, NULL,
     "threshold: remove one when rps per instance is below this"},
    {"scaler.scale_down_delay_s", T_INT, "30", F(scaler.scale_down_delay_s), 0, 86400, NULL,
     "desired must stay below current this long before scaling down"},
    {"scaler.settle_ms", T_INT, "2000", F(scaler.settle_ms), 0, 600000, NULL,
     "time in READY after a scale up before the next decision"},
    {"scaler.tick_ms", T_INT, "250", F(scaler.tick_ms), 10, 10000, NULL,
     "how often the state machine checks timers"},
    {"scaler.job_deadline_ms", T_INT, "120000", F(scaler.job_deadline_ms), 100, 3600000, NULL,
     "a job not reported by then is failed, after a grace for the executor to kill it and "
     "report (3 s + 2 x request_timeout_ms + 1 s; a scale up: + executor.cleanup_deadline_ms "
     "+ 3 s)"},
    {"scaler.backoff_initial_ms", T_INT, "2000", F(scaler.backoff_initial_ms), 0, 3600000, NULL,
     "wait after a failed job, doubled on each failure in a row"},
    {"scaler.backoff_max_ms", T_INT, "60000", F(scaler.backoff_max_ms), 0, 3600000, NULL,
     "longest wait after failed jobs"},
    {"scaler.drain_deadline_ms", T_INT, "30000", F(scaler.drain_deadline_ms), 0, 3600000, NULL,
     "scale down stops an instance when the proxies report it drained, or after this long"},
    {"scaler.request_timeout_ms", T_INT, "2000", F(scaler.request_timeout_ms), 50, 600000, NULL,
     "an executor request unanswered this long is retried on a new socket"},
    {"scaler.lease_ms", T_INT, "3000", F(scaler.lease_ms), 300, 60000, NULL,
     "the leader's lease in Redis runs out this long after its last renewal (every third of "
     "it); a standby then takes over"},
    {"scaler.reconcile", T_ENUM, "adopt", F(scaler.reconcile), 0, 0, "adopt|stop",
     "on start, instances running but not in the pool are adopted or stopped"},
    {"scaler.health_check_interval_s", T_INT, "60", F(scaler.health_check_interval_s), 0, 86400,
     NULL,
     "list the instances this often while steady, so one that died unseen is replaced; 0 = off"},

    {"executor.driver", T_ENUM, "process", F(executor.driver), 0, 0, "process|docker",
     "process: instances are supervisord programs; docker: containers"},
    {"executor.playbooks_dir", T_PATH, "../playbooks", F(executor.playbooks_dir), 0, 0, NULL,
     "the playbooks; the driver's are in <playbooks_dir>/<driver>/"},
    {"executor.inventory", T_PATH, "../playbooks/inventory/local.ini", F(executor.inventory), 0, 0,
     NULL, "the Ansible inventory"},
    {"executor.ansible_playbook", T_PATH, "ansible-playbook", F(executor.ansible_playbook), 0, 0,
     NULL, "the ansible-playbook program"},
    {"executor.state_dir", T_PATH, "../run/executor", F(executor.state_dir), 0, 0, NULL,
     "job files and process-driver program files"},
    {"executor.supervisor_config", T_PATH, "./supervisord.conf", F(executor.supervisor_config), 0,
     0, NULL, "process driver: the supervisord config whose [include] holds the instances"},
    {"executor.job_deadline_ms", T_INT, "120000", F(executor.job_deadline_ms), 100, 3600000, NULL,
     "a playbook running longer is killed with its process group"},
    {"executor.output_tail_lines", T_INT, "40", F(executor.output_tail_lines), 1, 10000, NULL,
     "last lines of a playbook's output kept in the job record"},
    {"executor.cleanup_deadline_ms", T_INT, "60000", F(executor.cleanup_deadline_ms), 1000, 3600000,
     NULL,
     "a scale up killed at its deadline is followed by scale_down on its instances, killed after "
     "this"},
    {"executor.max_jobs", T_INT, "4", F(executor.max_jobs), 1, 256, NULL,
     "jobs run at once (each an ansible-playbook), lists and profiles included; past it a "
     "request is refused as busy (a profile never takes the last one)"},

    {"profiling.enabled", T_ENUM, "on", F(profiling.enabled), 0, 0, "on|off",
     "profile failing and crashing instances automatically (tidectl profile works either way)"},
    {"profiling.perf", T_PATH, "perf", F(profiling.perf), 0, 0, NULL,
     "the perf program on the instances' hosts (linux-perf)"},
    {"profiling.rate_hz", T_INT, "49", F(profiling.rate_hz), 1, 999, NULL,
     "samples per second (perf -F, event cpu-clock)"},
    {"profiling.window_s", T_INT, "5", F(profiling.window_s), 1, 120, NULL,
     "seconds an automatic profile samples"},
    {"profiling.error_rate", T_DOUBLE, "0.2", F(profiling.error_rate), 0.001, 1, NULL,
     "an instance failing at least this share of its requests (5xx + upstream errors) ..."},
    {"profiling.error_for_s", T_INT, "2", F(profiling.error_for_s), 1, 3600, NULL,
     "... for this many seconds gets an \"errors\" profile"},
    {"profiling.min_interval_s", T_INT, "300", F(profiling.min_interval_s), 1, 86400, NULL,
     "at most one automatic profile per instance this often"},
    {"profiling.manual_seconds", T_INT, "10", F(profiling.manual_seconds), 1, 600, NULL,
     "tidectl profile NAME without --seconds samples this long"},
    {"profiling.max_seconds", T_INT, "120", F(profiling.max_seconds), 1, 3600, NULL,
     "longest profile tidectl profile may ask for"},
    {"profiling.keep", T_INT, "5", F(profiling.keep), 1, 10000, NULL,
     "profiles kept per instance, oldest removed first"},
    {"profiling.max_bytes", T_INT, "200000000", F(profiling.max_bytes), 100000, 2147483647, NULL,
     "profiles kept in all (bytes on disk), oldest removed first"},
};

#define SCHEMA_N (sizeof s_schema / sizeof s_schema[0])

/* Parses text as e's type into cfg. Returns NULL or a static description of what is wrong. */
static const char *s_set(const centry_t *e, tide_config_t *cfg, const char *text, bool plain)
{
    char *field = (char *)cfg + e->offset;
    switch (e->type) {
    case T_INT: {
        if (!plain)
            return "expected an integer, got a quoted string";
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (*text == '\0' || *end != '\0')
            return "expected an integer";
        if (errno == ERANGE || v < (long long)e->min || v > (long long)e->max)
            return "out of bounds";
        *(int *)field = (int)v;
        return NULL;
    }
    case T_DOUBLE: {
        if (!plain)
            return "expected a number, got a quoted string";
        char *end;
        errno = 0;
        double v = strtod(text, &end);
        if (*text == '\0' || *end != '\0' || !isfinite(v))
            return "expected a number";
        if (v < e->min || v > e->max)
            return "out of bounds";
        *(double *)field = v;
        return NULL;
    }
    case T_ENUM: {
        size_t n = strlen(text);
        const char *p = e->enums;
        while (p && *p) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == n && strncmp(p, text, n) == 0) {
                snprintf(field, e->size, "%s", text);
                return NULL;
            }
            p = bar ? bar + 1 : NULL;
        }
        return "not one of the allowed values";
    }
    case T_ENDPOINT:
        if (strncmp(text, "tcp://", 6) != 0 && strncmp(text, "ipc://", 6) != 0 &&
            strncmp(text, "inproc://", 9) != 0)
            return "expected a ZeroMQ endpoint (tcp://host:port or ipc://path)";
        break;
    case T_ADDR: {
        char host[CFG_STR];
        int port;
        if (config_split_addr(text, host, sizeof host, &port) != 0)
            return "expected host:port with a port from 1 to 65535";
        break;
    }
    case T_ADDRS:
        if (config_split_addrs(text, NULL, CONFIG_ADDRS_MAX) < 0)
            return "expected host:port[,host:port...] (at most 8), each port from 1 to 65535";
        break;
    case T_STR:
    case T_PATH:
        break;
    }
    if (strlen(text) >= e->size)
        return "too long";
    snprintf(field, e->size, "%s", text);
    return NULL;
}

/* True for an endpoint only this host can reach: ipc://, inproc://, or tcp:// on 127.x, ::1 or
 * localhost. */
static bool s_loopback(const char *ep)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return true;
    const char *host = ep + 6;
    return strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 ||
           strncmp(host, "[::1]:", 6) == 0;
}

int config_split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= hostlen)
        return -EINVAL;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || p < 1 || p > 65535)
        return -EINVAL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (int)p;
    return 0;
}

int config_split_addrs(const char *list, config_addr_t *out, size_t max)
{
    size_t n = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        char one[CFG_STR];
        if (len == 0 || len >= sizeof one || n >= max)
            return -EINVAL;
        memcpy(one, p, len);
        one[len] = '\0';
        config_addr_t a;
        if (config_split_addr(one, a.host, sizeof a.host, &a.port) != 0 ||
            strspn(a.host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") !=
                strlen(a.host))
            return -EINVAL; /* a host name, an IPv4 or IPv6 address: nothing else */
        if (out)
            out[n] = a;
        n++;
        if (!end)
            break;
        p = end + 1;
        if (!*p)
            return -EINVAL; /* a trailing comma */
    }
    return (int)n;
}

void config_defaults(tide_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < SCHEMA_N; i++) {
        const char *why = s_set(&s_schema[i], cfg, s_schema[i].def, true);
        if (why) {
            fprintf(stderr, "tide: bad default for %s: %s\n", s_schema[i].name, why);
            abort(); /* a programmer error in the table */
        }
    }
}

static const centry_t *s_find(const char *name)
{
    for (size_t i = 0; i < SCHEMA_N; i++)
        if (strcmp(s_schema[i].name, name) == 0)
            return &s_schema[i];
    return NULL;
}

static bool s_is_section(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < SCHEMA_N; i++)
        if (strncmp(s_schema[i].name, name, n) == 0 && s_schema[i].name[n] == '.')
            return true;
    return false;
}

/* Resolves a relative path containing a '/' against dir; bare names stay (looked up in PATH). */
static int s_resolve(char *field, size_t size, const char *dir)
{
    if (field[0] == '\0' || field[0] == '/' || strchr(field, '/') == NULL)
        return 0;
    char joined[CFG_PATH * 2];
    snprintf(joined, sizeof joined, "%s/%s", dir, field);
    if (strlen(joined) >= size)
        return -ENAMETOOLONG;
    snprintf(field, size, "%s", joined);
    return 0;
}

typedef struct {
    yaml_document_t *doc;
    tide_config_t *cfg;
    const char *file;
    char *err;
    size_t errlen;
    bool seen[SCHEMA_N];
    bool seen_scalers;
} walk_t;

static int s_fail(walk_t *w, yaml_node_t *node, const char *key, const char *why)
{
    snprintf(w->err, w->errlen, "%s:%lu: %s: %s", w->file,
             node ? (unsigned long)node->start_mark.line + 1 : 0UL, key, why);
    return -EINVAL;
}

/* scalers: a list of {id, control, events}; see tide_config.h. */
static int s_walk_scalers(walk_t *w, yaml_node_t *seq)
{
    static const centry_t ids = {"scalers[].id", T_STR, "", 0, 64, 0, 0, NULL, ""};
    static const centry_t ep = {"scalers[]", T_ENDPOINT, "", 0, CFG_STR, 0, 0, NULL, ""};
    if (seq->type == YAML_SCALAR_NODE && seq->data.scalar.length == 0)
        return 0;
    if (seq->type != YAML_SEQUENCE_NODE)
        return s_fail(w, seq, "scalers", "expected a list of {id, control, events}");
    tide_config_t *cfg = w->cfg;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *m = yaml_document_get_node(w->doc, *it);
        if (!m || m->type != YAML_MAPPING_NODE)
            return s_fail(w, m ? m : seq, "scalers",
                          "each entry is a mapping {id, control, events}");
        if (cfg->n_scalers == CFG_SCALERS_MAX)
            return s_fail(w, m, "scalers", "too many entries (at most 8)");
        size_t i = cfg->n_scalers;
        bool seen[3] = {false, false, false};
        for (yaml_node_pair_t *pair = m->data.mapping.pairs.start; pair < m->data.mapping.pairs.top;
             pair++) {
            yaml_node_t *k = yaml_document_get_node(w->doc, pair->key);
            yaml_node_t *v = yaml_document_get_node(w->doc, pair->value);
            if (!k || !v || k->type != YAML_SCALAR_NODE)
                return s_fail(w, m, "scalers", "malformed entry");
            const char *key = (const char *)k->data.scalar.value;
            int which = strcmp(key, "id") == 0        ? 0
                        : strcmp(key, "control") == 0 ? 1
                        : strcmp(key, "events") == 0  ? 2
                                                      : -1;
            char name[96];
            snprintf(name, sizeof name, "scalers[%zu].%.40s", i, key);
            if (which < 0)
                return s_fail(w, k, name, "unknown key (id, control, events)");
            if (seen[which])
                return s_fail(w, k, name, "duplicate key");
            seen[which] = true;
            if (v->type != YAML_SCALAR_NODE)
                return s_fail(w, v, name, "expected a single value");
            char *field = which == 0   ? cfg->scalers[i].id
                          : which == 1 ? cfg->scalers[i].control
                                       : cfg->scalers[i].events;
            centry_t e = which == 0 ? ids : ep;
            e.offset = (size_t)(field - (char *)cfg);
            e.size = which == 0 ? sizeof cfg->scalers[i].id : CFG_STR;
            const char *why = s_set(&e, cfg, (const char *)v->data.scalar.value, true);
            if (!why && which == 0 && field[0] == '\0')
                why = "must not be empty";
            if (why)
                return s_fail(w, v, name, why);
        }
        if (!seen[0] || !seen[1] || !seen[2])
            return s_fail(w, m, "scalers", "each entry needs id, control and events");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->scalers[j].id, cfg->scalers[i].id) == 0 ||
                strcmp(cfg->scalers[j].control, cfg->scalers[i].control) == 0 ||
                strcmp(cfg->scalers[j].events, cfg->scalers[i].events) == 0)
                return s_fail(w, m, "scalers", "two entries share an id or an endpoint");
        cfg->n_scalers++;
    }
    return 0;
}

int config_scaler_endpoints(const tide_config_t *cfg, const char *id, const char **control,
                            const char **events)
{
    if (cfg->n_scalers == 0) {
        *control = cfg->endpoints.scaler_control;
        *events = cfg->endpoints.scaler_events;
        return 0;
    }
    for (size_t i = 0; i < cfg->n_scalers; i++) {
        if (strcmp(cfg->scalers[i].id, id) == 0) {
            *control = cfg->scalers[i].control;
            *events = cfg->scalers[i].events;
            return 0;
        }
    }
    return -ENOENT;
}

size_t config_scaler_list(const tide_config_t *cfg, bool want_events,
                          const char *out[CFG_SCALERS_MAX])
{
    if (cfg->n_scalers == 0) {
        out[0] = want_events ? cfg->endpoints.scaler_events : cfg->endpoints.scaler_control;
        return 1;
    }
    for (size_t i = 0; i < cfg->n_scalers; i++)
        out[i] = want_events ? cfg->scalers[i].events : cfg->scalers[i].control;
    return cfg->n_scalers;
}

static int s_walk_map(walk_t *w, yaml_node_t *map, const char *prefix)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(w->doc, pair->value);
        if (!k || !v)
            return s_fail(w, map, prefix[0] ? prefix : "(top)", "malformed mapping");
        if (k->type != YAML_SCALAR_NODE)
            return s_fail(w, k, prefix[0] ? prefix : "(top)", "keys must be plain names");
        char name[128];
        int n = snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "",
                         (const char *)k->data.scalar.value);
        if (n < 0 || (size_t)n >= sizeof name)
            return s_fail(w, k, (const char *)k->data.scalar.value, "key too long");
        const centry_t *e = s_find(name);
        if (!e && !prefix[0] && strcmp(name, "scalers") == 0) {
            if (w->seen_scalers)
                return s_fail(w, k, name, "duplicate key");
            w->seen_scalers = true;
            int rc = s_walk_scalers(w, v);
            if (rc)
                return rc;
            continue;
        }
        if (!e && !prefix[0] && s_is_section(name)) {
            if (v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0)
                continue; /* "proxy:" with nothing under it: all defaults */
            if (v->type != YAML_MAPPING_NODE)
                return s_fail(w, v, name, "expected a section (a mapping of keys)");
            int rc = s_walk_map(w, v, name);
            if (rc)
                return rc;
            continue;
        }
        if (!e)
            return s_fail(w, k, name, "unknown key");
        size_t idx = (size_t)(e - s_schema);
        if (w->seen[idx])
            return s_fail(w, k, name, "duplicate key");
        w->seen[idx] = true;
        if (v->type != YAML_SCALAR_NODE)
            return s_fail(w, v, name, "expected a single value");
        bool plain = v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        const char *why = s_set(e, w->cfg, (const char *)v->data.scalar.value, plain);
        if (why) {
            char detail[512];
            snprintf(detail, sizeof detail, "%s (got '%.200s'%s%s)", why,
                     (const char *)v->data.scalar.value, e->enums ? ", allowed: " : "",
                     e->enums ? e->enums : "");
            return s_fail(w, v, name, detail);
        }
    }
    return 0;
}

int config_load(const char *path, tide_config_t *cfg, char *err, size_t errlen)
{
    config_defaults(cfg);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "cannot open config file '%s': %s", path, strerror(e));
        return -e;
    }
    /* realpath into a PATH_MAX buffer of its own: cfg->path is smaller, and a config path
     * that does not fit is an error rather than a truncated (wrong) directory. */
    char *real = realpath(path, NULL);
    int n = snprintf(cfg->path, sizeof cfg->path, "%s", real ? real : path);
    free(real);
    if (n < 0 || (size_t)n >= sizeof cfg->path) {
        fclose(f);
        snprintf(err, errlen, "config file path too long (%d bytes, at most %zu)", n,
                 sizeof cfg->path - 1);
        return -ENAMETOOLONG;
    }
    snprintf(cfg->dir, sizeof cfg->dir, "%s", cfg->path);
    char *slash = strrchr(cfg->dir, '/');
    if (slash && slash != cfg->dir)
        *slash = '\0';
    else if (slash)
        slash[1] = '\0';
    else
        snprintf(cfg->dir, sizeof cfg->dir, ".");

    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%lu: YAML syntax error: %s", path,
                 (unsigned long)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        fclose(f);
        return -EINVAL;
    }
    walk_t w = {.doc = &doc, .cfg = cfg, .file = path, .err = err, .errlen = errlen};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        /* An empty file: every default. */
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = s_fail(&w, root, "(top)", "expected a mapping of sections");
    } else {
        rc = s_walk_map(&w, root, "");
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (rc)
        return rc;

    /* Cross-key checks: each names the keys involved. */
    if (cfg->redis.scaler_user[0] && !cfg->redis.scaler_password_file[0]) {
        snprintf(err, errlen, "%s: redis.scaler_user is set but redis.scaler_password_file is not",
                 path);
        return -EINVAL;
    }
    if (cfg->redis.reader_user[0] && !cfg->redis.reader_password_file[0]) {
        snprintf(err, errlen, "%s: redis.reader_user is set but redis.reader_password_file is not",
                 path);
        return -EINVAL;
    }
    if (cfg->scaler.min > cfg->scaler.max) {
        snprintf(err, errlen, "%s: scaler.min (%d) is greater than scaler.max (%d)", path,
                 cfg->scaler.min, cfg->scaler.max);
        return -EINVAL;
    }
    if (cfg->scaler.scale_down_rps >= cfg->scaler.scale_up_rps) {
        snprintf(err, errlen,
                 "%s: scaler.scale_down_rps (%g) must be below scaler.scale_up_rps (%g), or "
                 "the threshold policy would flap",
                 path, cfg->scaler.scale_down_rps, cfg->scaler.scale_up_rps);
        return -EINVAL;
    }
    if (cfg->metrics.panic_window_s > cfg->metrics.stable_window_s) {
        snprintf(err, errlen, "%s: metrics.panic_window_s must not exceed stable_window_s", path);
        return -EINVAL;
    }
    if (cfg->app.base_port + cfg->scaler.max - 1 > 65535) {
        snprintf(err, errlen, "%s: app.base_port + scaler.max runs past port 65535", path);
        return -EINVAL;
    }
    if (cfg->app.health_path[0] != '/') {
        snprintf(err, errlen, "%s: app.health_path must start with '/'", path);
        return -EINVAL;
    }
    if (strcmp(cfg->bus.curve, "off") == 0) {
        for (size_t i = 0; i < SCHEMA_N; i++) {
            const char *ep = (const char *)cfg + s_schema[i].offset;
            if (s_schema[i].type == T_ENDPOINT && !s_loopback(ep)) {
                snprintf(err, errlen,
                         "%s: %s: %s is not on loopback, and bus.curve is off: anyone who "
                         "reaches it could drive tide",
                         path, s_schema[i].name, ep);
                return -EINVAL;
            }
        }
    }
    for (size_t i = 0; i < SCHEMA_N; i++) {
        if (s_schema[i].type != T_PATH)
            continue;
        char *field = (char *)cfg + s_schema[i].offset;
        if (s_resolve(field, s_schema[i].size, cfg->dir) != 0) {
            snprintf(err, errlen, "%s: %s: path too long", path, s_schema[i].name);
            return -ENAMETOOLONG;
        }
    }
    return 0;
}

void config_write_default(FILE *out)
{
    fprintf(out, "# tide.yml - every key with its default. Generated from the schema in\n"
                 "# lib/tide_config.c by `tidectl config-default`; a test keeps the two equal.\n"
                 "# Relative paths are resolved against this file's directory.\n");
    char section[64] = "";
    for (size_t i = 0; i < SCHEMA_N; i++) {
        const centry_t *e = &s_schema[i];
        const char *dot = strchr(e->name, '.');
        const char *key = e->name;
        if (dot) {
            size_t n = (size_t)(dot - e->name);
            if (strncmp(section, e->name, n) != 0 || section[n] != '\0') {
                snprintf(section, sizeof section, "%.*s", (int)n, e->name);
                fprintf(out, "\n%s:\n", section);
            }
            key = dot + 1;
        } else {
            fprintf(out, "\n");
        }
        const char *indent = dot ? "  " : "";
        char bounds[96] = "";
        if (e->type == T_INT)
            snprintf(bounds, sizeof bounds, " [%.0f..%.0f]", e->min, e->max);
        else if (e->type == T_DOUBLE)
            snprintf(bounds, sizeof bounds, " [%g..%g]", e->min, e->max);
        else if (e->type == T_ENUM)
            snprintf(bounds, sizeof bounds, " [%s]", e->enums);
        fprintf(out, "%s# %s%s\n", indent, e->doc, bounds);
        bool quote =
            (e->type == T_STR &&
             (strchr(e->def, ' ') || strchr(e->def, ':') || e->def[0] == '-')) ||
            ((e->type == T_STR || e->type == T_PATH || e->type == T_ADDRS) && e->def[0] == '\0');
        if (quote)
            fprintf(out, "%s%s: \"%s\"\n", indent, key, e->def);
        else
            fprintf(out, "%s%s: %s\n", indent, key, e->def);
    }
    fprintf(out,
            "\n# Several tide-scalers: one leads (a lease in Redis), the others stand by and take\n"
            "# over. Each entry: the --id it runs under and the control (REP) and events (PUB)\n"
            "# endpoints it binds; tidectl tries every control endpoint, proxies and tide-metrics\n"
            "# subscribe to every events one. Empty: one scaler on endpoints.scaler_control and\n"
            "# endpoints.scaler_events. At most 8 entries. For example:\n"
            "#   scalers:\n"
            "#     - {id: scaler-a, control: \"tcp://127.0.0.1:7104\", events: "
            "\"tcp://127.0.0.1:7103\"}\n"
            "#     - {id: scaler-b, control: \"tcp://127.0.0.1:7114\", events: "
            "\"tcp://127.0.0.1:7113\"}\n"
            "scalers: []\n");
}

static void s_usage(FILE *out, const char *program)
{
    fprintf(out,
            "usage: %s [-c FILE] [--id ID]\n"
            "  -c, --config FILE  tide.yml to read (default: $TIDE_CONFIG, else ./tide.yml)\n"
            "      --id ID        this process's id on the bus (default: <hostname>-<pid>)\n"
            "  -h, --help         this text\n",
            program);
}

void config_from_args(int argc, char **argv, const char *program, tide_config_t *cfg, char *id_out,
                      size_t id_len)
{
    const char *path = getenv("TIDE_CONFIG");
    if (!path || !*path)
        path = "tide.yml";
    const char *id = NULL;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"id", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 'h':
            s_usage(stdout, program);
            exit(0);
        default:
            s_usage(stderr, program);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", program, argv[optind]);
        s_usage(stderr, program);
        exit(2);
    }
    char err[1024];
    if (config_load(path, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        exit(2);
    }
    if (id) {
        snprintf(id_out, id_len, "%s", id);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        snprintf(id_out, id_len, "%s-%ld", host, (long)getpid());
    }
}
