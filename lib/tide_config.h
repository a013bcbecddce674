/* tide_config.h - tide.yml: one schema table from which parsing, validation, defaults and the
 * commented default file all come.
 *
 * Every process reads the whole file and validates every section, so a typo anywhere stops
 * every program before it does anything. Relative paths are resolved against the directory of
 * the config file. */
#ifndef TIDE_CONFIG_H
#define TIDE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CFG_STR         256
#define CFG_SCALERS_MAX 8 /* entries in scalers: */
#define CFG_PATH        1024

/* tide-executor ends a playbook at a deadline with SIGTERM to its process group, then SIGKILL
 * this much later. The scaler counts it (twice for a scale up, which is followed by a cleanup
 * run) in how long it waits for the executor's report past a job's deadline. */
#define TIDE_EXEC_KILL_GRACE_MS 3000

typedef struct {
    char service[64];

    struct {
        char host[CFG_STR];
        int port;
        int connect_timeout_ms;
        int command_timeout_ms;
        char sentinel[CFG_STR];        /* "host:port,..." ("" = none): find the primary there */
        char sentinel_master[CFG_STR]; /* the name the Sentinels monitor */
        /* ACL users per role; a user needs its password file. Empty user and file: no AUTH;
         * a file without a user: AUTH with the password alone (Redis's requirepass). */
        char scaler_user[CFG_STR];
        char scaler_password_file[CFG_PATH];
        char reader_user[CFG_STR];
        char reader_password_file[CFG_PATH];
        /* Not from the file: the credentials this process AUTHs with, filled for its role by
         * redis_auth_load (lib/tide_redis.h). Empty user and password: no AUTH. */
        char auth_user[CFG_STR];
        char auth_password[CFG_STR];
    } redis;

    struct {
        char curve[8];           /* "on" or "off" (lib/tide_curve.h) */
        char keys_dir[CFG_PATH]; /* public/<role>.key, secret/<role>.key_secret */
    } bus;

    struct {
        char stats[CFG_STR];            /* tide-metrics binds SUB, proxies connect PUB */
        char metrics[CFG_STR];          /* tide-metrics binds PUB */
        char scaler_events[CFG_STR];    /* tide-scaler binds PUB */
        char scaler_control[CFG_STR];   /* tide-scaler binds REP */
        char executor_control[CFG_STR]; /* tide-executor binds REP */
        char executor_events[CFG_STR];  /* tide-executor binds PUB */
    } endpoints;

    struct {
        char host[CFG_STR];   /* where instances listen (the ip of ip:port) */
        int base_port;        /* production<N> listens on base_port + N */
        char name_prefix[32]; /* "production" */
        char health_path[CFG_STR];
        int health_timeout_ms;  /* readiness: how long a new instance may take to answer */
        char command[CFG_PATH]; /* process driver: the program each instance runs */
        char args[CFG_PATH];    /* process driver: extra arguments for it */
        char image[CFG_STR];    /* docker driver: the image each container runs */
    } app;

    struct {
        char listen[CFG_STR];
        int workers;
        int stats_interval_ms;
        int pool_poll_ms;
        int connect_timeout_ms;
        int response_timeout_ms;
        int idle_timeout_ms;
        int max_header_size;
        int max_connections;
        int upstream_idle_per_instance;
        char retry_non_idempotent[8]; /* "on" or "off" (retry.h) */
        int drain_timeout_ms;
        char stats[8]; /* "on" or "off": publish ProxyStats */
        int client_header_timeout_ms;
        int client_body_timeout_ms;
        int max_body_size;   /* bytes; 0 = no limit */
        int down_backoff_ms; /* first backoff after a failed connect */
        int down_backoff_max_ms;
    } proxy;

    struct {
        char listen[CFG_STR];
        int stable_window_s;
        int panic_window_s;
        int snapshot_interval_ms;
        int stale_after_ms;
    } metrics;

    struct {
        char policy[16]; /* "target" or "threshold" */
        int min;
        int max;
        double target_rps;      /* target: requests/s one instance should carry */
        double panic_threshold; /* target: panic when the panic-window count >= this x current */
        int max_step;           /* most instances added or removed by one job */
        double scale_up_rps;    /* threshold: per-instance rps above which one is added */
        double scale_down_rps;  /* threshold: per-instance rps below which one is removed */
        int scale_down_delay_s;
        int settle_ms; /* READY -> UP */
        int tick_ms;
        int job_deadline_ms;
        int backoff_initial_ms;
        int backoff_max_ms;
        int drain_deadline_ms;
        int request_timeout_ms;      /* lazy pirate: executor REQ timeout */
        char reconcile[8];           /* "adopt" or "stop": instances running but not in the pool */
        int health_check_interval_s; /* a list this often while steady; 0 = only on errors */
        int lease_ms;                /* the leader's lease in Redis (scaler/lease.h) */
    } scaler;

    struct {
        char driver[16]; /* "process" or "docker" */
        char playbooks_dir[CFG_PATH];
        char inventory[CFG_PATH];
        char ansible_playbook[CFG_PATH];
        char state_dir[CFG_PATH];
        char supervisor_config[CFG_PATH]; /* process driver: supervisord's config file */
        int job_deadline_ms;
        int output_tail_lines;
        int cleanup_deadline_ms; /* the scale_down after a scale up that hit its deadline */
        int max_jobs;            /* jobs running at once; past it requests are refused busy */
    } executor;

    struct {
        char enabled[8]; /* "on" or "off": automatic profiles (tidectl profile works either way) */
        char perf[CFG_PATH];
        int rate_hz;
        int window_s;       /* seconds an automatic profile covers */
        double error_rate;  /* an instance failing at least this share of its requests ... */
        int error_for_s;    /* ... for this long gets an "errors" profile */
        int min_interval_s; /* at most one automatic profile per instance this often */
        int manual_seconds; /* tidectl profile NAME without --seconds */
        int max_seconds;
        int keep;      /* profiles kept per instance */
        int max_bytes; /* profiles kept in all (bytes) */
    } profiling;

    /* scalers: several tide-scalers (one leads, the others stand by: scaler/lease.h), each with
     * the --id it runs under and the endpoints it binds. Empty: one scaler, on
     * endpoints.scaler_control and endpoints.scaler_events. */
    struct {
        char id[64];
        char control[CFG_STR]; /* binds REP */
        char events[CFG_STR];  /* binds PUB */
    } scalers[CFG_SCALERS_MAX];
    size_t n_scalers;

    char path[CFG_PATH]; /* the file this was loaded from (absolute) */
    char dir[CFG_PATH];  /* its directory: relative paths are resolved against it */
} tide_config_t;

/* The control (REP) and events (PUB) endpoints the scaler running as id binds: its scalers
 * entry, or endpoints.scaler_* when the list is empty. Returns 0, or -ENOENT when the list is
 * not empty and has no entry for id (nothing set). */
int config_scaler_endpoints(const tide_config_t *cfg, const char *id, const char **control,
                            const char **events);

/* Every scaler's control (want_events false) or events endpoint, in the list's order (or the
 * one endpoints.scaler_* key): sets out[0..n) to strings owned by cfg, returns n (>= 1). */
size_t config_scaler_list(const tide_config_t *cfg, bool want_events,
                          const char *out[CFG_SCALERS_MAX]);

/* Fills cfg with every documented default (paths unresolved, relative to the cwd). */
void config_defaults(tide_config_t *cfg);

/* Loads path over the defaults and validates it against the schema. Returns 0, or a negative
 * errno-style code with a message naming the file, line and key in err (e.g.
 * "tide.yml:12: proxy.workerz: unknown key"); cfg is then unspecified. */
int config_load(const char *path, tide_config_t *cfg, char *err, size_t errlen);

/* Writes the commented default tide.yml (every key, its default and its doc line). */
void config_write_default(FILE *out);

/* Parses the command line shared by every daemon: -c/--config FILE (default $TIDE_CONFIG or
 * ./tide.yml), --id ID, -h/--help. Loads the config; on any failure prints the reason to
 * stderr and exits 2, so a bad config stops the program before it does anything. Arguments it
 * does not know are an error too. id_out receives --id or "<hostname>-<pid>". */
void config_from_args(int argc, char **argv, const char *program, tide_config_t *cfg, char *id_out,
                      size_t id_len);

/* Splits "host:port" into host and port (1..65535). Returns 0 or -EINVAL. */
int config_split_addr(const char *addr, char *host, size_t hostlen, int *port);

#define CONFIG_ADDRS_MAX 8

typedef struct {
    char host[CFG_STR];
    int port;
} config_addr_t;

/* Splits "host:port,host:port" (spaces around entries allowed) into out (NULL: only check).
 * Returns the number of entries (0 for ""), or -EINVAL for a bad entry, an empty one or more
 * than max. */
int config_split_addrs(const char *list, config_addr_t *out, size_t max);

#endif
