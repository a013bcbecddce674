/* store.c - the scaler's Redis writes (one fenced script per change) and start-up read. */
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "tide_log.h"
#include "tide_msg.h"
#include "tide_redis.h"

struct _store_t {
    const tide_config_t *cfg;
    redis_conn_t *conn;
    char k_instances[256], k_pool[256], k_version[256], k_state[256], k_leader[256];
    char fence[160];        /* "<id> <epoch>" of the lease held; "" = not leading: no write */
    uint64_t version_floor; /* the highest pool_version known: writes never go below it */
    char (*addr)[64];       /* per index: "ip:port" reported by the executor, "" = the default */
};

store_t *store_new(const tide_config_t *cfg)
{
    store_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->conn = redis_conn_from_config(cfg);
    if (self->conn)
        redis_conn_verify_primary(self->conn, true); /* the writer: never to a demoted primary */
    self->addr = calloc(NAMES_MAX, sizeof *self->addr);
    if (!self->conn || !self->addr) {
        redis_conn_destroy(&self->conn);
        free(self->addr);
        free(self);
        return NULL;
    }
    redis_key(self->k_instances, sizeof self->k_instances, cfg->service, KEY_INSTANCES);
    redis_key(self->k_pool, sizeof self->k_pool, cfg->service, KEY_POOL);
    redis_key(self->k_version, sizeof self->k_version, cfg->service, KEY_POOL_VERSION);
    redis_key(self->k_state, sizeof self->k_state, cfg->service, KEY_STATE);
    redis_key(self->k_leader, sizeof self->k_leader, cfg->service, KEY_LEADER);
    return self;
}

void store_destroy(store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    redis_conn_destroy(&(*self_p)->conn);
    free((*self_p)->addr);
    free(*self_p);
    *self_p = NULL;
}

const char *store_addr(const store_t *self, int index, char *buf, size_t size)
{
    if (index >= 0 && index < NAMES_MAX && self->addr[index][0])
        snprintf(buf, size, "%s", self->addr[index]);
    else
        snprintf(buf, size, "%s:%d", self->cfg->app.host, self->cfg->app.base_port + index);
    return buf;
}

int store_set_addr(store_t *self, int index, const char *host, uint32_t port)
{
    unsigned char ip[sizeof(struct in6_addr)];
    if (index < 0 || index >= NAMES_MAX || !host || port < 1 || port > 65535 ||
        (inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1))
        return -EINVAL;
    /* "host:port" even for IPv6: readers split at the last colon. */
    snprintf(self->addr[index], sizeof self->addr[index], "%s:%u", host, port);
    return 0;
}

/* Keeps the address of a pool entry read back at start, when it is one store_set_addr takes. */
static void s_keep_addr(store_t *self, int index, const redisReply *v)
{
    char host[64];
    int port;
    if (v->type == REDIS_REPLY_STRING && v->len < sizeof host &&
        config_split_addr(v->str, host, sizeof host, &port) == 0)
        store_set_addr(self, index, host, (uint32_t)port);
}

/* ---- a pipelined transaction ---------------------------------------------------------------- */

#define MAX_CMDS 8

typedef struct {
    int argc;
    const char **argv;
} cmd_t;

/* Sends MULTI, cmds..., EXEC in one pipeline and returns EXEC's reply (caller frees), or NULL
 * on any failure (the connection is then reset, so the next call reconnects). Every queued
 * command must answer QUEUED: a command Redis refuses aborts the whole transaction. */
static redisReply *s_transaction(store_t *self, const cmd_t *cmds, int n)
{
    redisContext *c = redis_conn_get(self->conn);
    if (!c)
        return NULL;
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    redisAppendCommandArgv(c, 1, multi, NULL);
    for (int i = 0; i < n; i++)
        redisAppendCommandArgv(c, cmds[i].argc, cmds[i].argv, NULL);
    redisAppendCommandArgv(c, 1, exec, NULL);
    redisReply *result = NULL;
    bool failed = false;
    for (int i = 0; i < n + 2; i++) {
        void *r = NULL;
        if (redisGetReply(c, &r) != REDIS_OK || !r) {
            log_warn("redis transaction failed", "err=\"%s\"",
                     c->errstr[0] ? c->errstr : "no reply");
            redis_conn_reset(self->conn);
            if (result)
                freeReplyObject(result);
            return NULL;
        }
        redisReply *rep = r;
        if (i == n + 1) {
            result = rep;
        } else {
            if (rep->type == REDIS_REPLY_ERROR) {
                log_warn("redis refused a command", "step=%d err=\"%.200s\"", i, rep->str);
                failed = true;
            }
            freeReplyObject(rep);
        }
    }
    if (failed || !result || result->type != REDIS_REPLY_ARRAY || result->elements != (size_t)n) {
        if (result && result->type == REDIS_REPLY_ERROR)
            log_warn("redis transaction aborted", "err=\"%.200s\"", result->str);
        if (result)
            freeReplyObject(result);
        /* EXECABORT or a wrong answer: the pipeline is consumed, but start clean anyway. */
        redis_conn_reset(self->conn);
        return NULL;
    }
    return result;
}

/* ---- write ---------------------------------------------------------------------------------- */

/* One script, so the fencing check and the writes are one atomic step. KEYS: leader, state,
 * pool, instances, pool_version. ARGV: fence, with_pool "1"/"0", version floor, instances,
 * number of state arguments, the state hash's field/value pairs, then the pool's. The pool
 * version goes on from the highest of Redis's and the floor (the highest the scaler knows), so
 * it never goes backwards when Redis lost data. Returns the new pool_version, or -1 without a
 * pool change; a "TIDE_FENCED" error when the lease is not the caller's (nothing written). */
static const char *s_write_lua =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('TIDE_FENCED the lease is not held by ' .. ARGV[1])\n"
    "end\n"
    "local ns = tonumber(ARGV[5])\n"
    "redis.call('HSET', KEYS[2], unpack(ARGV, 6, 5 + ns))\n"
    "if ARGV[2] ~= '1' then return -1 end\n"
    "redis.call('DEL', KEYS[3])\n"
    "local i = 6 + ns\n"
    "while i <= #ARGV do\n" /* in slices: unpack is held to Lua's C stack */
    "  local j = math.min(i + 999, #ARGV)\n"
    "  redis.call('HSET', KEYS[3], unpack(ARGV, i, j))\n"
    "  i = j + 1\n"
    "end\n"
    "redis.call('SET', KEYS[4], ARGV[4])\n"
    "local cur = tonumber(redis.call('GET', KEYS[5]) or '')\n"
    "if cur == nil or cur < tonumber(ARGV[3]) then redis.call('SET', KEYS[5], ARGV[3]) end\n"
    "return redis.call('INCR', KEYS[5])\n";

void store_set_fence(store_t *self, const char *fence)
{
    snprintf(self->fence, sizeof self->fence, "%s", fence ? fence : "");
}

void store_note_version(store_t *self, uint64_t version)
{
    if (version > self->version_floor)
        self->version_floor = version;
}

uint64_t store_version_floor(const store_t *self)
{
    return self->version_floor;
}

int store_write(store_t *self, const fsm_record_t *rec, bool with_pool, uint64_t since_wall_ms,
                uint64_t *version)
{
    if (!self->fence[0])
        return -EPERM;
    const char *prefix = self->cfg->app.name_prefix;
    char num[8][24];
    /* "stopping": names out of the pool still to be stopped, so a restart stops them too. */
    size_t stop_len = (size_t)rec->n_stopping * 48 + 1;
    char *stopping = calloc(1, stop_len);
    size_t npool = with_pool ? rec->n_pool : 0;
    enum { FIXED = 3 + 5 + 5, NSTATE = 26 };
    const char **argv = calloc(FIXED + NSTATE + 2 * npool, sizeof *argv);
    char(*text)[2][280] = calloc(npool ? npool : 1, sizeof *text);
    if (!stopping || !argv || !text) {
        free(stopping);
        free(argv);
        free(text);
        return -ENOMEM;
    }
    size_t o = 0;
    for (uint32_t i = 0; i < rec->n_stopping; i++) {
        char name[48];
        o += (size_t)snprintf(stopping + o, stop_len - o, "%s%s", i ? "," : "",
                              names_format(name, sizeof name, prefix, rec->stopping[i]));
    }

    snprintf(num[0], sizeof num[0], "%llu", (unsigned long long)since_wall_ms);
    snprintf(num[1], sizeof num[1], "%u", rec->desired);
    snprintf(num[2], sizeof num[2], "%u", rec->current);
    snprintf(num[3], sizeof num[3], "%u", rec->forced);
    snprintf(num[4], sizeof num[4], "%u", rec->min);
    snprintf(num[5], sizeof num[5], "%u", rec->max);
    snprintf(num[6], sizeof num[6], "%u", rec->n_pool);
    snprintf(num[7], sizeof num[7], "%" PRIu64, self->version_floor);
    const char *state_args[NSTATE] = {
        "state",    msg_state_name(rec->state),
        "job_id",   rec->job_id,
        "since_ms", num[0],
        "desired",  num[1],
        "current",  num[2],
        "paused",   rec->paused ? "1" : "0",
        "forced",   num[3],
        "pinned",   rec->pinned ? "1" : "0",
        "min",      num[4],
        "max",      num[5],
        "bounds",   rec->bounds_set ? "control" : "config",
        "stopping", stopping,
        "leader",   self->fence,
    };
    char nstate[8];
    snprintf(nstate, sizeof nstate, "%d", NSTATE);
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = s_write_lua;
    argv[argc++] = "5";
    argv[argc++] = self->k_leader;
    argv[argc++] = self->k_state;
    argv[argc++] = self->k_pool;
    argv[argc++] = self->k_instances;
    argv[argc++] = self->k_version;
    argv[argc++] = self->fence;
    argv[argc++] = with_pool ? "1" : "0";
    argv[argc++] = num[7];
    argv[argc++] = num[6];
    argv[argc++] = nstate;
    for (int i = 0; i < NSTATE; i++)
        argv[argc++] = state_args[i];
    for (size_t i = 0; i < npool; i++) {
        argv[argc++] = names_format(text[i][0], sizeof text[i][0], prefix, rec->pool[i]);
        argv[argc++] = store_addr(self, rec->pool[i], text[i][1], sizeof text[i][1]);
    }

    redisReply *r = redis_conn_command(self->conn, argc, argv);
    int rc = 0;
    if (!r) {
        rc = -EIO; /* connection failed; it was reset */
    } else if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "TIDE_FENCED")) {
        log_warn("redis refused the write: this scaler no longer holds the lease", "fence=\"%s\"",
                 self->fence);
        rc = -EPERM;
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_warn("redis write failed", "err=\"%.200s\"", r->str);
        rc = -EIO;
    } else if (r->type != REDIS_REPLY_INTEGER || (with_pool && r->integer < 0)) {
        log_warn("redis write: unexpected reply", "type=%d", r->type);
        rc = -EIO;
    } else if (with_pool) {
        *version = (uint64_t)r->integer;
        store_note_version(self, *version);
    }
    if (r)
        freeReplyObject(r);
    free(stopping);
    free(argv);
    free(text);
    return rc;
}

/* ---- load ----------------------------------------------------------------------------------- */

static bool s_u64(const redisReply *r, uint64_t *out)
{
    if (!r || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(r->str, &end, 10);
    if (*end != '\0' || errno || r->str[0] == '-')
        return false;
    *out = v;
    return true;
}

static bool s_u32_text(const char *text, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (text[0] == '\0' || text[0] == '-' || *end != '\0' || errno || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

static void s_add_sorted(uint16_t *arr, uint32_t *n, int index)
{
    for (uint32_t i = 0; i < *n; i++)
        if (arr[i] == index)
            return;
    uint32_t i = *n;
    while (i > 0 && arr[i - 1] > index) {
        arr[i] = arr[i - 1];
        i--;
    }
    arr[i] = (uint16_t)index;
    (*n)++;
}

static void s_parse_state(store_t *self, const redisReply *h, fsm_record_t *rec, store_info_t *info)
{
    bool have_min = false, have_max = false, control_bounds = false, have_pinned = false;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i], *v = h->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const char *key = k->str, *val = v->str;
        bool ok = true;
        if (strcmp(key, "state") == 0) {
            if (strcmp(val, "IDLE") == 0)
                rec->state = TIDE__V1__STATE__STATE_IDLE;
            else if (strcmp(val, "BUSY") == 0)
                rec->state = TIDE__V1__STATE__STATE_BUSY;
            else if (strcmp(val, "READY") == 0)
                rec->state = TIDE__V1__STATE__STATE_READY;
            else if (strcmp(val, "UP") == 0)
                rec->state = TIDE__V1__STATE__STATE_UP;
            else
                ok = false;
        } else if (strcmp(key, "job_id") == 0) {
            ok = v->len < sizeof rec->job_id;
            if (ok)
                snprintf(rec->job_id, sizeof rec->job_id, "%s", val);
        } else if (strcmp(key, "desired") == 0) {
            ok = s_u32_text(val, 1000000, &rec->desired);
        } else if (strcmp(key, "paused") == 0) {
            rec->paused = strcmp(val, "1") == 0;
        } else if (strcmp(key, "pinned") == 0) {
            rec->pinned = strcmp(val, "1") == 0;
            have_pinned = true;
        } else if (strcmp(key, "forced") == 0) {
            ok = s_u32_text(val, 1000, &rec->forced);
        } else if (strcmp(key, "min") == 0) {
            ok = have_min = s_u32_text(val, 1000, &rec->min);
        } else if (strcmp(key, "max") == 0) {
            ok = have_max = s_u32_text(val, 1000, &rec->max);
        } else if (strcmp(key, "bounds") == 0) {
            control_bounds = strcmp(val, "control") == 0;
        } else if (strcmp(key, "stopping") == 0) {
            char buf[8192];
            snprintf(buf, sizeof buf, "%s", val);
            char *save = NULL;
            for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                int idx = names_index(self->cfg->app.name_prefix, tok);
                if (idx >= 0)
                    s_add_sorted(rec->stopping, &rec->n_stopping, idx);
                else
                    ok = false;
            }
        }
        if (!ok)
            info->bad_fields++;
    }
    rec->bounds_set = control_bounds && have_min && have_max && rec->min <= rec->max;
    if (!have_pinned)
        rec->pinned = rec->forced > 0; /* docs/architecture.md: forced 0 = the policy decides */
}

int store_load(store_t *self, fsm_record_t *rec, store_info_t *info)
{
    memset(rec, 0, sizeof *rec);
    memset(info, 0, sizeof *info);
    const char *get_inst[] = {"GET", self->k_instances};
    const char *get_pool[] = {"HGETALL", self->k_pool};
    const char *get_ver[] = {"GET", self->k_version};
    const char *get_state[] = {"HGETALL", self->k_state};
    cmd_t cmds[] = {{2, get_inst}, {2, get_pool}, {2, get_ver}, {2, get_state}};
    redisReply *ex = s_transaction(self, cmds, 4);
    if (!ex)
        return -EIO;
    const redisReply *inst = ex->element[0], *pool = ex->element[1], *ver = ex->element[2],
                     *state = ex->element[3];
    if (pool->type != REDIS_REPLY_ARRAY || state->type != REDIS_REPLY_ARRAY) {
        log_warn("redis: unexpected reply types at load", "pool=%d state=%d", pool->type,
                 state->type);
        freeReplyObject(ex);
        return -EIO;
    }
    info->empty = inst->type == REDIS_REPLY_NIL && pool->elements == 0 &&
                  ver->type == REDIS_REPLY_NIL && state->elements == 0;
    if (inst->type != REDIS_REPLY_NIL && !s_u64(inst, &info->instances))
        info->bad_fields++;
    if (ver->type != REDIS_REPLY_NIL && !s_u64(ver, &rec->pool_version))
        info->bad_fields++;
    store_note_version(self, rec->pool_version);
    for (size_t i = 0; i + 1 < pool->elements; i += 2) {
        const redisReply *k = pool->element[i];
        int idx =
            k->type == REDIS_REPLY_STRING ? names_index(self->cfg->app.name_prefix, k->str) : -1;
        if (idx < 0) {
            info->foreign++;
            continue;
        }
        s_add_sorted(rec->pool, &rec->n_pool, idx);
        s_keep_addr(self, idx, pool->element[i + 1]);
    }
    s_parse_state(self, state, rec, info);
    /* A name cannot be both in the pool and on the stop list: the pool wins (it is what the
     * proxies route to; the list reconciles the rest). */
    uint32_t w = 0;
    for (uint32_t i = 0; i < rec->n_stopping; i++) {
        bool in_pool = false;
        for (uint32_t k = 0; k < rec->n_pool && !in_pool; k++)
            in_pool = rec->pool[k] == rec->stopping[i];
        if (!in_pool)
            rec->stopping[w++] = rec->stopping[i];
    }
    rec->n_stopping = w;
    rec->current = rec->n_pool;
    freeReplyObject(ex);
    return 0;
}
