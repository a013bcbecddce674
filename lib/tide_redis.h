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
 * blocked for a timeout on every retry. A refused connection is retried at once.
 * With credentials (redis.*_user, redis.*_password_file) it sends AUTH after every connect, so
 * a reconnect is authenticated as the first connect was. With redis.sentinel it asks the
 * Sentinels for the primary (SENTINEL get-master-addr-by-name) before every connect, so after
 * an error or READONLY, which reset the connection, it follows a failover. */
#ifndef TIDE_REDIS_H
#define TIDE_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tide_config.h"

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

/* Creates a connection from cfg's redis section, with the credentials redis_auth_load put in
 * cfg->redis.auth_*. Nothing connects until first use. NULL on OOM. */
redis_conn_t *redis_conn_from_config(const tide_config_t *cfg);

/* Which of tide.yml's Redis users a program is: the scaler writes, every other program reads. */
typedef enum { REDIS_ROLE_READER, REDIS_ROLE_SCALER } redis_role_t;

/* Fills cfg->redis.auth_user and auth_password for role from redis.<role>_user and the first
 * line of redis.<role>_password_file (read now, once: a program reads only its own role's
 * file). Both keys empty: no AUTH, and 0. Returns 0, or a negative errno-style code with a
 * message naming the key and the file in err (missing, unreadable, not a regular file, empty,
 * more than one line, too long); cfg->redis.auth_* is then left empty. */
int redis_auth_load(tide_config_t *cfg, redis_role_t role, char *err, size_t errlen);

/* Sets the user (NULL or "" for the default user) and password sent with AUTH after every
 * connect; a NULL or empty password sends no AUTH. Copies both; takes effect on the next
 * connect. */
void redis_conn_set_auth(redis_conn_t *self, const char *user, const char *password);

/* With Sentinels: on, every redis_conn_get asks them which server is primary and moves there
 * when it changed, instead of only on connect. For the writer: an old primary accepts writes
 * until Sentinel demotes it, then drops them. Costs a Sentinel round trip per use. */
void redis_conn_verify_primary(redis_conn_t *self, bool on);

void redis_conn_destroy(redis_conn_t **self_p);

/* The live context, connecting (and authenticating) first if needed. NULL when Redis cannot be
 * reached or refused the credentials (the cause is logged once per outage; a refusal is held
 * off like a timeout, since a wrong password does not mend itself at once). The context stays
 * owned by self. */
redisContext *redis_conn_get(redis_conn_t *self);

/* Call after a command failed (NULL reply or context error): frees the context so the next
 * redis_conn_get reconnects. */
void redis_conn_reset(redis_conn_t *self);

/* Runs one command (argv form, no string formatting). Returns the reply (caller frees with
 * freeReplyObject) or NULL on connection failure, in which case the connection is reset.
 * An error reply (REDIS_REPLY_ERROR) is returned as is; after READONLY (a replica: the primary
 * moved) the connection is reset too, so the next use finds the primary again. */
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
