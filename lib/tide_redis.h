/* tide_redis.h - the Redis schema (key names) and its read side, shared by the proxy, the
 * scaler and tidectl. Only tide-scaler writes (scaler/store.c).
 *
 * Keys: tide:<service>:instances (string int), :pool (hash name -> ip:port),
 *       :pool_version (string int), :state (hash), :leader (string, with an expiry) and
 *       :epoch (string int): the scaler's lease (scaler/lease.h).
 * A redis_conn_t wraps a synchronous hiredis context with connect and command timeouts; after
 * any error it frees the context and reconnects on next use, so callers simply retry. After a
 * slow failure (a timeout: Redis stopped, overloaded, unroutable) it holds off new attempts
 * for 250 ms, doubling up to 4 s, returning NULL at once meanwhile, so a caller's loop is not
 * blocked for a timeout on every retry. A refused connection is retried at once. */
#ifndef TIDE_REDIS_H
#define TIDE_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_INSTANCES    "instances"
#define KEY_POOL         "pool"
#define KEY_POOL_VERSION "pool_version"
#define KEY_STATE        "state"
#define KEY_LEADER       "leader" /* "<scaler id> <epoch>", expires (scaler/lease.h) */
#define KEY_EPOCH        "epoch"  /* the epoch last granted; its loss means Redis lost data */

/* Writes "tide:<service>:<key>" into buf. Returns buf. */
const char *redis_key(char *buf, size_t size, const char *service, const char *key);

typedef struct _redis_conn_t redis_conn_t;

/* Creates a connection description; nothing connects until first use. NULL on OOM. */
redis_conn_t *redis_conn_new(const char *host, int port, int connect_timeout_ms,
                             int command_timeout_ms);

void redis_conn_destroy(redis_conn_t **self_p);

/* The live context, connecting first if needed. NULL when Redis cannot be reached (the cause is
 * logged once per outage). The context stays owned by self. */
redisContext *redis_conn_get(redis_conn_t *self);

/* Call after a command failed (NULL reply or context error): frees the context so the next
 * redis_conn_get reconnects. */
void redis_conn_reset(redis_conn_t *self);

/* Runs one command (argv form, no string formatting). Returns the reply (caller frees with
 * freeReplyObject) or NULL on connection failure, in which case the connection is reset.
 * An error reply (REDIS_REPLY_ERROR) is returned as is. */
redisReply *redis_conn_command(redis_conn_t *self, int argc, const char **argv);

#define POOL_MAX 1024

typedef struct {
    char name[64];
    char addr[128];
} pool_entry_t;

/* Reads pool_version. Returns 0 with *version set (0 when the key does not exist), or -EIO. */
int redis_read_pool_version(redis_conn_t *conn, const char *service, uint64_t *version);

/* Reads pool_version and the pool hash atomically (MULTI/EXEC). Entries are sorted by name.
 * Returns the number of entries (0..max), or -EIO when Redis failed, or -EBADMSG when a value
 * is not an ip:port (the pool is then not used). */
int redis_read_pool(redis_conn_t *conn, const char *service, uint64_t *version,
                    pool_entry_t *entries, size_t max);

#endif
