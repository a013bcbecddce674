/* tide_curve.c - CURVE keys, the process-wide zauth, the handshake monitor and the peer check. */
#include "tide_curve.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide_log.h"
#include "tide_msg.h"

/* CURVE sends each frame as a MESSAGE command (name 8 bytes, nonce 8, flags 1, MAC 16), and
 * libzmq holds that whole command to ZMQ_MAXMSGSIZE: a socket msg_socket_limits set up gets
 * the room back, so the largest frame tide accepts is MSG_MAX_FRAME with CURVE too. */
#define CURVE_FRAME_OVERHEAD 33

static void s_frame_room(zsock_t *sock)
{
    if (zsock_maxmsgsize(sock) == (int)MSG_MAX_FRAME)
        zsock_set_maxmsgsize(sock, (int)MSG_MAX_FRAME + CURVE_FRAME_OVERHEAD);
}

static const char *const s_roles[] = {BUS_ROLE_PROXY, BUS_ROLE_METRICS, BUS_ROLE_SCALER,
                                      BUS_ROLE_EXECUTOR, BUS_ROLE_TIDECTL};

static bool s_on(const tide_config_t *cfg)
{
    return strcmp(cfg->bus.curve, "on") == 0;
}

static void s_path(char *buf, size_t size, const char *dir, const char *role, bool secret)
{
    snprintf(buf, size, "%s/%s/%s.key%s", dir, secret ? "secret" : "public", role,
             secret ? "_secret" : "");
}

static int s_mkdir_private(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(e));
        return -e;
    }
    if (chmod(path, 0700) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot make %s private: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

int bus_keys_init(const char *dir, char *err, size_t errlen)
{
    char sub[CFG_PATH + 16];
    int rc = s_mkdir_private(dir, err, errlen);
    snprintf(sub, sizeof sub, "%s/public", dir);
    if (rc == 0)
        rc = s_mkdir_private(sub, err, errlen);
    snprintf(sub, sizeof sub, "%s/secret", dir);
    if (rc == 0)
        rc = s_mkdir_private(sub, err, errlen);
    for (size_t i = 0; rc == 0 && i < sizeof s_roles / sizeof s_roles[0]; i++) {
        char pub[CFG_PATH + 64], sec[CFG_PATH + 64];
        s_path(pub, sizeof pub, dir, s_roles[i], false);
        s_path(sec, sizeof sec, dir, s_roles[i], true);
        if (access(pub, F_OK) == 0 && access(sec, F_OK) == 0)
            continue; /* kept: peers already trust it */
        zcert_t *cert = zcert_new();
        if (!cert) {
            snprintf(err, errlen, "cannot make a key pair for %s", s_roles[i]);
            return -ENOMEM;
        }
        zcert_set_meta(cert, "role", "%s", s_roles[i]);
        /* The secret first and private from its first byte (umask 077), so no reader ever
         * sees it with wider rights. */
        mode_t old = umask(077);
        int r1 = zcert_save_secret(cert, sec);
        umask(old);
        int r2 = r1 == 0 ? zcert_save_public(cert, pub) : -1;
        zcert_destroy(&cert);
        if (r1 != 0 || r2 != 0 || chmod(sec, 0600) != 0) {
            snprintf(err, errlen, "cannot write the key pair for %s under %s", s_roles[i], dir);
            return -EIO;
        }
    }
    return rc;
}

/* ---- the handshake monitor ----------------------------------------------------------------
 * zmq_socket_monitor is called in the socket owner's thread (a socket is not thread-safe); a
 * detached thread reads the events and ends on MONITOR_STOPPED, which libzmq sends when the
 * owner closes the socket, or on ETERM when the context ends. Not czmq's zmonitor: its actor
 * must be destroyed before the socket it watches, which would put a second destroy call beside
 * every socket's owner; this one follows the socket by itself. */

static void *s_watch(void *arg)
{
    char *endpoint = arg;
    void *pair = zmq_socket(zsys_init(), ZMQ_PAIR);
    if (pair && zmq_connect(pair, endpoint) == 0) {
        for (;;) {
            zmq_msg_t ev, addr;
            zmq_msg_init(&ev);
            zmq_msg_init(&addr);
            int n = zmq_msg_recv(&ev, pair, 0);
            if (n >= 6 && zmq_msg_more(&ev))
                zmq_msg_recv(&addr, pair, 0);
            uint16_t id = 0;
            uint32_t value = 0;
            if (n >= 6) {
                memcpy(&id, zmq_msg_data(&ev), 2);
                memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
            }
            char detail[300];
            snprintf(detail, sizeof detail, "endpoint=%.*s code=%u", (int)zmq_msg_size(&addr),
                     (const char *)zmq_msg_data(&addr), (unsigned)value);
            zmq_msg_close(&ev);
            zmq_msg_close(&addr);
            if (n < 0 || id == ZMQ_EVENT_MONITOR_STOPPED)
                break;
            /* A peer without tide's keys: counted and logged once per kind. */
            if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                log_once_per_kind("handshake-auth", "refused a bus peer: key not allowed", detail);
            else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
                log_once_per_kind("handshake-protocol",
                                  "refused a bus peer: wrong mechanism or bad CURVE handshake",
                                  detail);
            else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
                log_once_per_kind("handshake-failed", "refused a bus peer", detail);
        }
    }
    if (pair) {
        int zero = 0;
        zmq_setsockopt(pair, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(pair);
    }
    free(endpoint);
    return NULL;
}

static int s_monitor(zsock_t *sock)
{
    static atomic_uint next;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://tide-bus-monitor-%d-%u", (int)getpid(),
             atomic_fetch_add(&next, 1));
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    if (zmq_socket_monitor(zsock_resolve(sock), endpoint, events) != 0)
        return -errno;
    char *copy = strdup(endpoint);
    pthread_t t;
    if (!copy || pthread_create(&t, NULL, s_watch, copy) != 0) {
        free(copy);
        zmq_socket_monitor(zsock_resolve(sock), NULL, 0);
        return -ENOMEM;
    }
    pthread_detach(t);
    return 0;
}

/* ---- the process's zauth -------------------------------------------------------------------
 * ZAP is per context: one zauth serves every server socket of the process. It must answer
 * before the first bind, or libzmq would let any CURVE client in. */

static pthread_mutex_t s_auth_lock = PTHREAD_MUTEX_INITIALIZER;
static zactor_t *s_auth;

static void s_auth_stop(void)
{
    zactor_destroy(&s_auth);
}

static int s_auth_start(const tide_config_t *cfg)
{
    pthread_mutex_lock(&s_auth_lock);
    int rc = 0;
    if (!s_auth) {
        char pub[CFG_PATH + 16];
        snprintf(pub, sizeof pub, "%s/public", cfg->bus.keys_dir);
        s_auth = zactor_new(zauth, NULL);
        if (!s_auth || zstr_sendx(s_auth, "CURVE", pub, NULL) != 0 || zsock_wait(s_auth) != 0) {
            zactor_destroy(&s_auth);
            rc = -EIO;
        } else {
            atexit(s_auth_stop); /* after zsys's own handler, so it runs before it */
        }
    }
    pthread_mutex_unlock(&s_auth_lock);
    return rc;
}

static zcert_t *s_load(const tide_config_t *cfg, const char *role, bool secret)
{
    char path[CFG_PATH + 64];
    s_path(path, sizeof path, cfg->bus.keys_dir, role, secret);
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        char q[CFG_PATH + 80];
        log_error("cannot read a bus key (run `tidectl keys init DIR` for bus.keys_dir)",
                  "role=%s file=%s", role, log_quote(q, sizeof q, path));
    }
    return cert;
}

/* ipc:// files take their directory's rights: only tide's user may enter it. */
static int s_check_ipc(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return 0;
    char dir[CFG_STR];
    snprintf(dir, sizeof dir, "%s", endpoint + 6);
    char *slash = strrchr(dir, '/');
    struct stat st;
    const char *why = NULL;
    if (dir[0] == '@')
        why = "abstract ipc names have no access rights; use a path in a private directory";
    else if (!slash)
        why = "use an absolute path in a directory only tide's user can enter";
    else {
        *slash = '\0';
        if (stat(dir[0] ? dir : "/", &st) != 0)
            why = "its directory does not exist";
        else if (st.st_uid != geteuid() || (st.st_mode & 077) != 0)
            why = "its directory must belong to tide's user with no group or other rights (0700)";
    }
    if (why) {
        char q[300];
        log_error("refusing an ipc endpoint", "endpoint=%s reason=\"%s\"",
                  log_quote(q, sizeof q, endpoint), why);
        return -EPERM;
    }
    return 0;
}

int bus_secure_server(zsock_t *sock, const tide_config_t *cfg, const char *role,
                      const char *endpoint)
{
    int rc = s_check_ipc(endpoint);
    if (rc != 0 || !s_on(cfg))
        return rc;
    zcert_t *cert = s_load(cfg, role, true);
    if (!cert)
        return -ENOENT;
    rc = s_auth_start(cfg);
    if (rc != 0) {
        log_error("cannot start the bus authenticator (zauth)", "role=%s", role);
    } else {
        zcert_apply(cert, sock);
        zsock_set_zap_domain(sock, "tide");
        zsock_set_curve_server(sock, 1);
        s_frame_room(sock);
        if (s_monitor(sock) != 0)
            log_warn("cannot monitor bus handshakes; refused peers go unlogged", "role=%s", role);
    }
    zcert_destroy(&cert);
    return rc;
}

int bus_secure_client(zsock_t *sock, const tide_config_t *cfg, const char *role,
                      const char *server_role)
{
    if (!s_on(cfg))
        return 0;
    zcert_t *own = s_load(cfg, role, true);
    zcert_t *server = own ? s_load(cfg, server_role, false) : NULL;
    if (server) {
        zcert_apply(own, sock);
        zsock_set_curve_serverkey(sock, zcert_public_txt(server));
        s_frame_room(sock);
    }
    int rc = server ? 0 : -ENOENT;
    zcert_destroy(&server);
    zcert_destroy(&own);
    return rc;
}

bool bus_peer_is(const char *peer, const tide_config_t *cfg, const char *role)
{
    if (!s_on(cfg))
        return true;
    zcert_t *cert = s_load(cfg, role, false);
    bool ok = cert && peer && strcmp(peer, zcert_public_txt(cert)) == 0;
    zcert_destroy(&cert);
    return ok;
}
