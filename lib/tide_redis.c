/* tide_redis.c - Redis key names, a reconnecting hiredis connection, and pool reads. */
#include "tide_redis.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide_clock.h"
#include "tide_config.h"
#include "tide_log.h"

const char *redis_key(char *buf, size_t size, const char *service, const char *key)
{
    snprintf(buf, size, "tide:%s:%s", service, key);
    return buf;
}

struct _redis_conn_t {
    char host[256];
    int port;
    int connect_timeout_ms, command_timeout_ms;
    /* With Sentinels, host and port are the primary they named last; asked again on every
     * connect, so a reset (an error, READONLY) follows a failover. */
    config_addr_t sentinels[CONFIG_ADDRS_MAX];
    int n_sentinels;
    int sentinel_first; /* the one that answered last is asked first */
    char master[CFG_STR];
    bool verify_primary;    /* ask the Sentinels before every use, not only on connect */
    bool sentinel_logged;   /* verifying: their outage logged once */
    char user[CFG_STR];     /* "" = the default user */
    char password[CFG_STR]; /* "" = no AUTH */
    redisContext *ctx;
    bool down_logged; /* log an outage once, not on every retry */
    /* After an attempt that failed slowly (Redis accepted nothing or answered nothing within
     * a timeout: stopped, overloaded, a dropped route) the next attempts wait this long,
     * doubling, instead of blocking every caller for a timeout each time. A refused
     * connection fails at once and is retried at once. */
    uint64_t hold_until_ms;
    uint32_t hold_ms;
    uint64_t used_ms; /* when redis_conn_get last handed out the context */
};

#define HOLD_FIRST_MS 250
#define HOLD_MAX_MS   4000

/* A failed attempt that started at t0_ms: hold further attempts if it took a timeout's
 * time (half of it or more). */
static void s_failed_after(redis_conn_t *self, uint64_t t0_ms, int timeout_ms)
{
    uint64_t now = clock_mono_ms();
    if (now - t0_ms < (uint64_t)timeout_ms / 2)
        return;
    self->hold_ms = self->hold_ms ? self->hold_ms * 2 : HOLD_FIRST_MS;
    if (self->hold_ms > HOLD_MAX_MS)
        self->hold_ms = HOLD_MAX_MS;
    self->hold_until_ms = now + self->hold_ms;
}

redis_conn_t *redis_conn_new(const char *host, int port, int connect_timeout_ms,
                             int command_timeout_ms)
{
    redis_conn_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->host, sizeof self->host, "%s", host);
    self->port = port;
    self->connect_timeout_ms = connect_timeout_ms;
    self->command_timeout_ms = command_timeout_ms;
    return self;
}

static struct timeval s_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

redis_conn_t *redis_conn_from_config(const tide_config_t *cfg)
{
    redis_conn_t *self =
        redis_conn_new(cfg->redis.host, cfg->redis.port, cfg->redis.connect_timeout_ms,
                       cfg->redis.command_timeout_ms);
    if (!self)
        return NULL;
    redis_conn_set_auth(self, cfg->redis.auth_user, cfg->redis.auth_password);
    /* config_load checked the list; a bad one here would be a programmer error. */
    int n = config_split_addrs(cfg->redis.sentinel, self->sentinels, CONFIG_ADDRS_MAX);
    self->n_sentinels = n > 0 ? n : 0;
    snprintf(self->master, sizeof self->master, "%s", cfg->redis.sentinel_master);
    return self;
}

/* Asks the Sentinels, the last one that answered first, for the primary's address and puts
 * it in self->host/port. Returns 0, or -EIO when none named one, with the last one's reason in
 * why. */
static int s_ask_sentinels(redis_conn_t *self, char *why, size_t whylen)
{
    snprintf(why, whylen, "no sentinel answered");
    for (int i = 0; i < self->n_sentinels; i++) {
        int idx = (self->sentinel_first + i) % self->n_sentinels;
        const config_addr_t *s = &self->sentinels[idx];
        redisContext *c = redisConnectWithTimeout(s->host, s->port, s_tv(self->connect_timeout_ms));
        if (!c || c->err || redisSetTimeout(c, s_tv(self->command_timeout_ms)) != REDIS_OK) {
            snprintf(why, whylen, "%s:%d: %s", s->host, s->port, c ? c->errstr : "out of memory");
            if (c)
                redisFree(c);
            continue;
        }
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", self->master};
        redisReply *r = redisCommandArgv(c, 3, argv, NULL);
        bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  r->element[1]->type == REDIS_REPLY_STRING &&
                  r->element[0]->len < sizeof self->host;
        char *end = NULL;
        long port = ok ? strtol(r->element[1]->str, &end, 10) : 0;
        if (ok && *end == '\0' && port >= 1 && port <= 65535) {
            if (strcmp(self->host, r->element[0]->str) != 0 || self->port != (int)port)
                log_info("redis primary named by sentinel", "addr=%s:%ld sentinel=%s:%d master=%s",
                         r->element[0]->str, port, s->host, s->port, self->master);
            snprintf(self->host, sizeof self->host, "%s", r->element[0]->str);
            self->port = (int)port;
            self->sentinel_first = idx;
            freeReplyObject(r);
            redisFree(c);
            return 0;
        }
        snprintf(why, whylen, "%s:%d: %s", s->host, s->port,
                 !r                             ? (c->errstr[0] ? c->errstr : "no reply")
                 : r->type == REDIS_REPLY_ERROR ? r->str
                 : r->type == REDIS_REPLY_NIL   ? "it monitors no master of that name"
                                                : "an answer that is not host and port");
        if (r)
            freeReplyObject(r);
        redisFree(c);
    }
    return -EIO;
}

void redis_conn_verify_primary(redis_conn_t *self, bool on)
{
    self->verify_primary = on;
}

void redis_conn_set_auth(redis_conn_t *self, const char *user, const char *password)
{
    snprintf(self->user, sizeof self->user, "%s", user ? user : "");
    snprintf(self->password, sizeof self->password, "%s", password ? password : "");
}

/* Reads the one-line password in path into out. Returns 0 or a negative errno-style code
 * with the reason in why. */
static int s_read_password(const char *path, char *out, size_t size, const char **why)
{
    /* O_NONBLOCK: a FIFO in its place fails the regular-file check instead of hanging. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        *why = strerror(e);
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *why = "not a regular file";
        return -EINVAL;
    }
    /* One more byte than fits, to tell "too long" from "just fits". */
    char buf[CFG_STR + 2];
    size_t n = 0;
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            *why = strerror(e);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    int rc = -EINVAL;
    if (n == 0)
        *why = "empty";
    else if (n >= size)
        *why = "longer than tide takes a password (255 bytes)";
    else if (memchr(buf, '\n', n) || memchr(buf, '\0', n))
        *why = "more than one line, or a NUL byte (the password is the file's only line)";
    else
        rc = 0;
    if (rc == 0) {
        memcpy(out, buf, n);
        out[n] = '\0';
    }
    explicit_bzero(buf, sizeof buf); /* no copy of a password left on the stack */
    if (rc != 0)
        return rc;
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        log_warn("redis password file is open to others", "file=%s mode=%04o fix=\"chmod 600\"",
                 path, (unsigned)(st.st_mode & 07777));
    return 0;
}

int redis_auth_load(tide_config_t *cfg, redis_role_t role, char *err, size_t errlen)
{
    const bool scaler = role == REDIS_ROLE_SCALER;
    const char *user = scaler ? cfg->redis.scaler_user : cfg->redis.reader_user;
    const char *file = scaler ? cfg->redis.scaler_password_file : cfg->redis.reader_password_file;
    const char *key = scaler ? "redis.scaler_password_file" : "redis.reader_password_file";
    cfg->redis.auth_user[0] = '\0';
    cfg->redis.auth_password[0] = '\0';
    if (!file[0])
        return 0; /* config_load refused a user without a file */
    const char *why = NULL;
    int rc = s_read_password(file, cfg->redis.auth_password, sizeof cfg->redis.auth_password, &why);
    if (rc != 0) {
        cfg->redis.auth_password[0] = '\0';
        snprintf(err, errlen, "%s: %s: cannot read the Redis password from '%s': %s", cfg->path,
                 key, file, why);
        return rc;
    }
    snprintf(cfg->redis.auth_user, sizeof cfg->redis.auth_user, "%s", user);
    return 0;
}

void redis_conn_destroy(redis_conn_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    redis_conn_reset(*self_p);
    free(*self_p);
    *self_p = NULL;
}

void redis_conn_reset(redis_conn_t *self)
{
    if (self->ctx) {
        /* Reset after a failed command: was it a slow failure (a timeout)? */
        s_failed_after(self, self->used_ms, self->command_timeout_ms);
        redisFree(self->ctx);
        self->ctx = NULL;
    }
}

/* AUTH on a fresh context. Returns 0, or -EIO (no answer) or -EACCES (refused), logged once
 * per outage. A refusal holds further attempts off as a slow failure does. */
static int s_auth(redis_conn_t *self, redisContext *c, uint64_t t0)
{
    const char *argv[3] = {"AUTH", self->user, self->password};
    int argc = 3;
    if (!self->user[0]) {
        argv[1] = self->password;
        argc = 2;
    }
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    int rc = 0;
    if (!r || c->err) {
        s_failed_after(self, t0, self->command_timeout_ms);
        if (!self->down_logged)
            log_warn("redis unreachable", "addr=%s:%d err=\"AUTH: %s\"", self->host, self->port,
                     c->errstr[0] ? c->errstr : "no reply");
        rc = -EIO;
    } else if (r->type == REDIS_REPLY_ERROR) {
        /* Not a timeout, but retrying at once would only repeat it: hold off all the same. */
        s_failed_after(self, 0, 0);
        if (!self->down_logged)
            log_error("redis refused tide's credentials", "addr=%s:%d user=%s err=\"%s\"",
                      self->host, self->port, self->user[0] ? self->user : "default", r->str);
        rc = -EACCES;
    }
    if (rc != 0)
        self->down_logged = true;
    if (r)
        freeReplyObject(r);
    return rc;
}

redisContext *redis_conn_get(redis_conn_t *self)
{
    uint64_t t0 = clock_mono_ms();
    self->used_ms = t0;
    if (self->ctx && self->verify_primary && self->n_sentinels > 0) {
        /* The old primary takes writes until Sentinel demotes it, and drops them then: ask
         * which one is primary now. Sentinels that do not answer leave the connection be. */
        char host[sizeof self->host];
        int port = self->port;
        snprintf(host, sizeof host, "%s", self->host);
        char why[256];
        if (s_ask_sentinels(self, why, sizeof why) != 0) {
            if (!self->sentinel_logged)
                log_warn("redis sentinels unreachable; staying on the current primary",
                         "addr=%s:%d master=%s err=\"%s\"", self->host, self->port, self->master,
                         why);
            self->sentinel_logged = true;
        } else {
            self->sentinel_logged = false;
            if (strcmp(host, self->host) != 0 || port != self->port) {
                log_warn("redis primary moved", "from=%s:%d to=%s:%d", host, port, self->host,
                         self->port);
                redisFree(self->ctx);
                self->ctx = NULL;
            }
        }
    }
    t0 = clock_mono_ms(); /* a slow Sentinel is not the command's slowness */
    self->used_ms = t0;
    if (self->ctx) {
        self->hold_ms = 0; /* it survived its last use: Redis answers */
        return self->ctx;
    }
    if (t0 < self->hold_until_ms)
        return NULL;
    char why[256];
    if (self->n_sentinels > 0 && s_ask_sentinels(self, why, sizeof why) != 0) {
        s_failed_after(self, t0, self->connect_timeout_ms);
        if (!self->down_logged)
            log_warn("redis unreachable", "master=%s err=\"no sentinel named the primary: %s\"",
                     self->master, why);
        self->down_logged = true;
        return NULL;
    }
    redisContext *c =
        redisConnectWithTimeout(self->host, self->port, s_tv(self->connect_timeout_ms));
    if (!c || c->err) {
        s_failed_after(self, t0, self->connect_timeout_ms);
        if (!self->down_logged) {
            log_warn("redis unreachable", "addr=%s:%d err=\"%s\"", self->host, self->port,
                     c ? c->errstr : "out of memory");
            self->down_logged = true;
        }
        if (c)
            redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, s_tv(self->command_timeout_ms)) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    if (self->password[0] && s_auth(self, c, t0) != 0) {
        redisFree(c);
        return NULL;
    }
    if (self->down_logged) {
        log_info("redis reachable again", "addr=%s:%d", self->host, self->port);
        self->down_logged = false;
    }
    self->ctx = c;
    return c;
}

redisReply *redis_conn_command(redis_conn_t *self, int argc, const char **argv)
{
    redisContext *c = redis_conn_get(self);
    if (!c)
        return NULL;
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r || c->err) {
        if (!self->down_logged) {
            log_warn("redis command failed", "addr=%s:%d err=\"%s\"", self->host, self->port,
                     c->errstr[0] ? c->errstr : "no reply");
            self->down_logged = true;
        }
        if (r)
            freeReplyObject(r);
        redis_conn_reset(self);
        return NULL;
    }
    self->hold_ms = 0;
    /* A replica answers writes with READONLY: the primary moved (a failover). Reconnecting
     * asks the Sentinels again; without them it is the same address, still worth a retry. */
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "READONLY", 8) == 0) {
        log_warn("redis answered READONLY", "addr=%s:%d", self->host, self->port);
        redis_conn_reset(self);
    }
    return r;
}

static int s_parse_u64(const redisReply *r, uint64_t *out)
{
    if (r->type == REDIS_REPLY_NIL) {
        *out = 0;
        return 0;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer < 0 ? 0 : (uint64_t)r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING)
        return -EBADMSG;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(r->str, &end, 10);
    if (r->str[0] == '\0' || *end != '\0' || errno)
        return -EBADMSG;
    *out = v;
    return 0;
}

int redis_read_pool_version(redis_conn_t *conn, const char *service, uint64_t *version)
{
    char key[256];
    const char *argv[] = {"GET", redis_key(key, sizeof key, service, KEY_POOL_VERSION)};
    redisReply *r = redis_conn_command(conn, 2, argv);
    if (!r)
        return -EIO;
    int rc = s_parse_u64(r, version);
    freeReplyObject(r);
    return rc ? -EIO : 0;
}

static int s_entry_cmp(const void *a, const void *b)
{
    const pool_entry_t *x = a, *y = b;
    /* production2 before production10: compare by length first, then text. */
    size_t lx = strlen(x->name), ly = strlen(y->name);
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

int redis_read_pool(redis_conn_t *conn, const char *service, uint64_t *version,
                    pool_entry_t *entries, size_t max)
{
    redisContext *c = redis_conn_get(conn);
    if (!c)
        return -EIO;
    char kv[256], kp[256];
    redis_key(kv, sizeof kv, service, KEY_POOL_VERSION);
    redis_key(kp, sizeof kp, service, KEY_POOL);
    /* Pipelined MULTI/GET/HGETALL/EXEC: the version and the hash are read together. */
    const char *a_multi[] = {"MULTI"};
    const char *a_get[] = {"GET", kv};
    const char *a_hgetall[] = {"HGETALL", kp};
    const char *a_exec[] = {"EXEC"};
    redisAppendCommandArgv(c, 1, a_multi, NULL);
    redisAppendCommandArgv(c, 2, a_get, NULL);
    redisAppendCommandArgv(c, 2, a_hgetall, NULL);
    redisAppendCommandArgv(c, 1, a_exec, NULL);
    redisReply *replies[4] = {NULL};
    int rc = 0;
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        if (redisGetReply(c, &r) != REDIS_OK || !r) {
            rc = -EIO;
            break;
        }
        replies[i] = r;
    }
    if (rc == 0) {
        redisReply *ex = replies[3];
        if (ex->type != REDIS_REPLY_ARRAY || ex->elements != 2 ||
            ex->element[1]->type != REDIS_REPLY_ARRAY) {
            rc = -EIO;
        } else if (s_parse_u64(ex->element[0], version) != 0) {
            rc = -EBADMSG;
        } else {
            redisReply *h = ex->element[1];
            size_t n = 0;
            for (size_t i = 0; i + 1 < h->elements && n < max; i += 2) {
                redisReply *k = h->element[i], *v = h->element[i + 1];
                char host[CFG_STR];
                int port;
                if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
                    k->len >= sizeof entries[n].name || v->len >= sizeof entries[n].addr ||
                    config_split_addr(v->str, host, sizeof host, &port) != 0) {
                    log_once_per_kind("redis-pool-entry", "ignoring a malformed pool entry",
                                      k->type == REDIS_REPLY_STRING ? k->str : "?");
                    rc = -EBADMSG;
                    break;
                }
                snprintf(entries[n].name, sizeof entries[n].name, "%s", k->str);
                snprintf(entries[n].addr, sizeof entries[n].addr, "%s", v->str);
                n++;
            }
            if (rc == 0) {
                qsort(entries, n, sizeof *entries, s_entry_cmp);
                rc = (int)n;
            }
        }
    }
    for (int i = 0; i < 4; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    if (rc == -EIO)
        redis_conn_reset(conn);
    return rc;
}
