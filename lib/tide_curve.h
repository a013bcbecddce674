/* tide_curve.h - CURVE on the bus: one key pair per component, servers that accept only tide's
 * keys, and the check that a control request comes from a component allowed to send it.
 *
 * Keys live under bus.keys_dir (made by `tidectl keys init DIR`): public/<role>.key holds each
 * component's public certificate, secret/<role>.key_secret its secret one (0600, dirs 0700).
 * The binding side of every endpoint is the CURVE server: a process-wide zauth accepts only the
 * public keys in public/, so a peer without one of them cannot subscribe, publish or request.
 * With bus.curve off every call here except the ipc:// directory check does nothing. */
#ifndef TIDE_CURVE_H
#define TIDE_CURVE_H

#include <czmq.h>
#include <stdbool.h>

#include "tide_config.h"

/* The roles, one key pair each. */
#define BUS_ROLE_PROXY    "proxy"
#define BUS_ROLE_METRICS  "metrics"
#define BUS_ROLE_SCALER   "scaler"
#define BUS_ROLE_EXECUTOR "executor"
#define BUS_ROLE_TIDECTL  "tidectl"

/* Makes dir (0700) with public/ and secret/ and a key pair for every role that has none; keys
 * already there are kept. Returns 0, or a negative errno-style code with the reason in err. */
int bus_keys_init(const char *dir, char *err, size_t errlen);

/* Makes sock, before it binds endpoint, the CURVE server with role's secret key, starts the
 * process's zauth (once) over the keys dir's public keys and a monitor that logs refused
 * handshakes once per kind. Also refuses an ipc:// endpoint whose directory other users may
 * enter. Returns 0, or a negative errno-style code (logged with its cause); the caller then
 * must not bind. */
int bus_secure_server(zsock_t *sock, const tide_config_t *cfg, const char *role,
                      const char *endpoint);

/* Gives sock, before it connects, role's key pair and server_role's public key. Returns 0, or a
 * negative errno-style code (logged with its cause); the caller then must not connect. */
int bus_secure_client(zsock_t *sock, const tide_config_t *cfg, const char *role,
                      const char *server_role);

/* True when peer (msg_in_t.peer, or a frame's "User-Id" metadata: the public key zauth let in)
 * is role's public key, or when bus.curve is off. A request that fails this check must not be
 * acted on. NULL peer is no key. */
bool bus_peer_is(const char *peer, const tide_config_t *cfg, const char *role);

#endif
