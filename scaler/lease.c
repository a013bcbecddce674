/* lease.c - the scaler's lease in Redis (fencing epoch, standby take-over, wipe detection). */
#include "lease.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tide_log.h"
#include "tide_redis.h"

/* Renew (leader). KEYS: leader, epoch. ARGV: id, epoch, ttl ms.
 * {1, epoch}: renewed (also when it had just run out and nobody took it: the epoch is still
 * ours, so no other scaler wrote since). {2, new epoch}: the epoch key is gone or below ours,
 * so Redis lost data; taken again under a new epoch. {0, epoch, holder}: another one leads. */
static const char *s_renew_lua =
    "local me = ARGV[1] .. ' ' .. ARGV[2]\n"
    "local mine = tonumber(ARGV[2])\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ep = tonumber(redis.call('GET', KEYS[2]) or '')\n"
    "if ep == nil or ep < mine then\n"
    "  local n = mine + 1\n"
    "  redis.call('SET', KEYS[2], n)\n"
    "  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. n, 'PX', ARGV[3])\n"
    "  return {2, n}\n"
    "end\n"
    "if cur == me or (not cur and ep == mine) then\n"
    "  redis.call('SET', KEYS[1], me, 'PX', ARGV[3])\n"
    "  return {1, mine}\n"
    "end\n"
    "return {0, ep or 0, cur or ''}\n";

/* Acquire (standby). KEYS: leader, epoch, pool_version. ARGV: id, ttl ms, highest epoch seen,
 * "1" to take an empty Redis (no epoch key). {epoch, '', pool_version}: taken; {0, holder,
 * pool_version, epoch}: another leads; {-1, '', pool_version}: empty and not allowed yet. */
static const char *s_acquire_lua =
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ep = tonumber(redis.call('GET', KEYS[2]) or '')\n"
    "local pv = redis.call('GET', KEYS[3]) or '0'\n"
    "if cur then return {0, cur, pv, ep or 0} end\n"
    "if ep == nil and ARGV[4] ~= '1' then return {-1, '', pv, 0} end\n"
    "local n = math.max(ep or 0, tonumber(ARGV[3])) + 1\n"
    "redis.call('SET', KEYS[2], n)\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. n, 'PX', ARGV[2])\n"
    "return {n, '', pv, n}\n";

struct _lease_t {
    const tide_config_t *cfg;
    redis_conn_t *conn;
    char id[128];
    char k_leader[256], k_epoch[256], k_version[256];
    bool leading;
    uint64_t epoch;
    char fence[160];
    char holder[160];
    uint64_t valid_until_ms; /* leader: the lease surely holds until then (renew sent + ttl) */
    uint64_t next_ms;        /* next talk to Redis */
    uint64_t seen_epoch;     /* the highest epoch seen: a new one must be above it */
    uint64_t seen_version;   /* the highest pool_version seen as standby */
    bool seen_any;           /* an epoch key was seen since this scaler started */
    uint64_t empty_since_ms; /* standby: when Redis was first seen without an epoch key */
    bool down_logged;
};

lease_t *lease_new(const tide_config_t *cfg, const char *id)
{
    lease_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    /* The scaler's own credentials and Sentinels, like the store's: the lease is a write. */
    self->conn = redis_conn_from_config(cfg);
    if (!self->conn) {
        free(self);
        return NULL;
    }
    redis_conn_verify_primary(self->conn, true);
    snprintf(self->id, sizeof self->id, "%s", id);
    redis_key(self->k_leader, sizeof self->k_leader, cfg->service, KEY_LEADER);
    redis_key(self->k_epoch, sizeof self->k_epoch, cfg->service, KEY_EPOCH);
    redis_key(self->k_version, sizeof self->k_version, cfg->service, KEY_POOL_VERSION);
    return self;
}

void lease_destroy(lease_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    redis_conn_destroy(&(*self_p)->conn);
    free(*self_p);
    *self_p = NULL;
}

bool lease_leading(const lease_t *self)
{
    return self->leading;
}

const char *lease_fence(const lease_t *self)
{
    return self->leading ? self->fence : "";
}

uint64_t lease_epoch(const lease_t *self)
{
    return self->epoch;
}

const char *lease_holder(const lease_t *self)
{
    return self->holder;
}

uint64_t lease_seen_version(const lease_t *self)
{
    return self->seen_version;
}

int lease_release(lease_t *self)
{
    if (!self->leading)
        return 0;
    static const char *lua = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                             "  return redis.call('DEL', KEYS[1])\n"
                             "end\n"
                             "return 0\n";
    const char *argv[] = {"EVAL", lua, "1", self->k_leader, self->fence};
    redisReply *r = redis_conn_command(self->conn, 5, argv);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -EIO;
    if (r)
        freeReplyObject(r);
    log_info("lease given up", "id=%s epoch=%" PRIu64 " released=%d", self->id, self->epoch,
             rc == 0);
    self->leading = false;
    self->fence[0] = '\0';
    return rc;
}

void lease_recheck(lease_t *self)
{
    self->next_ms = 0;
}

void lease_lost(lease_t *self)
{
    if (!self->leading)
        return;
    log_warn("lease lost: stepping down to standby", "id=%s epoch=%" PRIu64, self->id, self->epoch);
    self->leading = false;
    if (strcmp(self->holder, self->fence) == 0)
        self->holder[0] = '\0'; /* not known until the next look at Redis */
    self->fence[0] = '\0';
    self->next_ms = 0;
}

static void s_lead(lease_t *self, uint64_t epoch, uint64_t sent_ms)
{
    self->leading = true;
    self->seen_any = true; /* an empty Redis from now on is a loss, not a first start */
    self->epoch = epoch;
    if (epoch > self->seen_epoch)
        self->seen_epoch = epoch;
    snprintf(self->fence, sizeof self->fence, "%s %" PRIu64, self->id, epoch);
    snprintf(self->holder, sizeof self->holder, "%s", self->fence);
    self->valid_until_ms = sent_ms + (uint64_t)self->cfg->scaler.lease_ms;
}

static bool s_int(const redisReply *r, long long *out)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (r->type == REDIS_REPLY_STRING) {
        char *end;
        errno = 0;
        long long v = strtoll(r->str, &end, 10);
        if (r->len == 0 || *end || errno)
            return false;
        *out = v;
        return true;
    }
    return false;
}

/* Runs a script; the reply must be an array of at least n elements. NULL on any failure. */
static redisReply *s_eval(lease_t *self, const char **argv, int argc, size_t n)
{
    redisReply *r = redis_conn_command(self->conn, argc, argv);
    if (!r)
        return NULL;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < n) {
        if (!self->down_logged)
            log_warn("lease script failed", "err=\"%.200s\"",
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        self->down_logged = true;
        freeReplyObject(r);
        return NULL;
    }
    self->down_logged = false;
    return r;
}

static lease_event_t s_renew(lease_t *self, uint64_t now_ms)
{
    char epoch[24], ttl[24];
    snprintf(epoch, sizeof epoch, "%" PRIu64, self->epoch);
    snprintf(ttl, sizeof ttl, "%d", self->cfg->scaler.lease_ms);
    const char *argv[] = {"EVAL",        s_renew_lua, "2",   self->k_leader,
                          self->k_epoch, self->id,    epoch, ttl};
    redisReply *r = s_eval(self, argv, 8, 2);
    long long code = -1, ep = 0;
    if (!r || !s_int(r->element[0], &code) || !s_int(r->element[1], &ep)) {
        if (r)
            freeReplyObject(r);
        if (now_ms >= self->valid_until_ms) {
            log_warn("lease not renewed for a whole lease period",
                     "id=%s epoch=%" PRIu64 " lease_ms=%d", self->id, self->epoch,
                     self->cfg->scaler.lease_ms);
            lease_lost(self);
            return LEASE_LOST;
        }
        return LEASE_NONE;
    }
    char holder[sizeof self->holder] = "";
    if (r->elements > 2 && r->element[2]->type == REDIS_REPLY_STRING)
        snprintf(holder, sizeof holder, "%s", r->element[2]->str);
    freeReplyObject(r);
    if (code == 1) {
        self->valid_until_ms = now_ms + (uint64_t)self->cfg->scaler.lease_ms;
        return LEASE_NONE;
    }
    if (code == 2 && ep > 0) {
        log_warn("redis lost tide's data (no epoch key, or an older one): leading again under a "
                 "new epoch and rewriting count, pool and state",
                 "id=%s old_epoch=%" PRIu64 " epoch=%lld", self->id, self->epoch, ep);
        s_lead(self, (uint64_t)ep, now_ms);
        return LEASE_WIPED;
    }
    if (ep > 0 && (uint64_t)ep > self->seen_epoch)
        self->seen_epoch = (uint64_t)ep;
    log_warn("another scaler holds the lease", "id=%s epoch=%" PRIu64 " leader=\"%s\"", self->id,
             self->epoch, holder);
    lease_lost(self);
    snprintf(self->holder, sizeof self->holder, "%s", holder);
    return LEASE_LOST;
}

static lease_event_t s_acquire(lease_t *self, uint64_t now_ms)
{
    char ttl[24], seen[24];
    snprintf(ttl, sizeof ttl, "%d", self->cfg->scaler.lease_ms);
    snprintf(seen, sizeof seen, "%" PRIu64, self->seen_epoch);
    /* An empty Redis at our start is a first start; seen empty later, a live leader may be
     * about to notice the wipe and rewrite what it knows, so leave it a lease period. */
    bool allow_empty =
        !self->seen_any || (self->empty_since_ms &&
                            now_ms - self->empty_since_ms >= (uint64_t)self->cfg->scaler.lease_ms);
    const char *argv[] = {"EVAL",        s_acquire_lua,          "3",      self->k_leader,
                          self->k_epoch, self->k_version,        self->id, ttl,
                          seen,          allow_empty ? "1" : "0"};
    redisReply *r = s_eval(self, argv, 10, 4);
    long long code = 0, pv = 0, ep = 0;
    if (!r || !s_int(r->element[0], &code) || !s_int(r->element[3], &ep)) {
        if (r)
            freeReplyObject(r);
        return LEASE_NONE;
    }
    if (s_int(r->element[2], &pv) && pv > 0 && (uint64_t)pv > self->seen_version)
        self->seen_version = (uint64_t)pv;
    if (ep > 0) {
        self->seen_any = true;
        if ((uint64_t)ep > self->seen_epoch)
            self->seen_epoch = (uint64_t)ep;
    }
    if (code > 0) {
        freeReplyObject(r);
        s_lead(self, (uint64_t)code, now_ms);
        self->empty_since_ms = 0;
        log_info("lease taken: leading", "id=%s epoch=%" PRIu64 " seen_pool_version=%" PRIu64,
                 self->id, self->epoch, self->seen_version);
        return LEASE_ACQUIRED;
    }
    if (code == 0) {
        self->empty_since_ms = 0;
        const redisReply *h = r->element[1];
        if (h->type == REDIS_REPLY_STRING && strcmp(self->holder, h->str) != 0) {
            snprintf(self->holder, sizeof self->holder, "%s", h->str);
            log_info("standby: another scaler leads", "id=%s leader=\"%s\"", self->id,
                     self->holder);
        }
    } else if (!self->empty_since_ms) {
        self->empty_since_ms = now_ms ? now_ms : 1;
        log_info("standby: Redis holds no lease nor epoch; waiting a lease period before "
                 "taking it",
                 "id=%s lease_ms=%d", self->id, self->cfg->scaler.lease_ms);
    }
    freeReplyObject(r);
    return LEASE_NONE;
}

lease_event_t lease_step(lease_t *self, uint64_t now_ms)
{
    if (now_ms < self->next_ms)
        return LEASE_NONE;
    int lease_ms = self->cfg->scaler.lease_ms;
    lease_event_t ev;
    if (self->leading)
        ev = s_renew(self, now_ms);
    else
        ev = s_acquire(self, now_ms);
    self->next_ms = now_ms + (uint64_t)(self->leading ? lease_ms / 3 : lease_ms / 6);
    return ev;
}
