/* http.c - libmicrohttpd server for /metrics, /api/snapshot and the profiles (see http.h). */
#include "http.h"
#include "http_profiles.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tide_config.h"
#include "tide_log.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct _http_t {
    struct MHD_Daemon *daemon;
    char profiles_root[4096]; /* "" = no profile pages; set before the daemon starts */
    pthread_mutex_t lock;     /* guards the two bodies */
    char *metrics;
    size_t mlen;
    char *json;
    size_t jlen;
    atomic_ulong requests;
};

static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    char q[600];
    log_warn("http server", "detail=%s", log_quote(q, sizeof q, text));
}

static enum MHD_Result s_reply(struct MHD_Connection *conn, unsigned code, const char *type,
                               const char *body, size_t len)
{
    /* MUST_COPY: the body may be replaced by http_publish as soon as the lock is released. */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result s_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    http_t *self = cls;
    atomic_fetch_add(&self->requests, 1);
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, "HEAD") == 0;
    if (get && http_profiles_match(url) && self->profiles_root[0])
        return http_profiles_answer(conn, self->profiles_root, url);
    bool metrics = get && strcmp(url, "/metrics") == 0;
    bool snapshot = get && strcmp(url, "/api/snapshot") == 0;
    if (!metrics && !snapshot) {
        static const char body[] = "not found\n";
        return s_reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", body, sizeof body - 1);
    }
    pthread_mutex_lock(&self->lock);
    const char *body = metrics ? self->metrics : self->json;
    size_t len = metrics ? self->mlen : self->jlen;
    enum MHD_Result rc;
    if (!body) {
        static const char wait[] = "no snapshot yet\n";
        rc = s_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", wait, sizeof wait - 1);
    } else {
        rc =
            s_reply(conn, MHD_HTTP_OK, metrics ? PROM_CONTENT_TYPE : "application/json", body, len);
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

http_t *http_new(const char *listen, const char *profiles_root, char *err, size_t errlen)
{
    char host[CFG_STR], port_s[16];
    int port;
    if (config_split_addr(listen, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "bad listen address '%s' (want host:port)", listen);
        return NULL;
    }
    snprintf(port_s, sizeof port_s, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port_s, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return NULL;
    }
    http_t *self = calloc(1, sizeof *self);
    if (!self) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (profiles_root && snprintf(self->profiles_root, sizeof self->profiles_root, "%s",
                                  profiles_root) >= (int)sizeof self->profiles_root) {
        freeaddrinfo(ai);
        free(self);
        snprintf(err, errlen, "the profiles folder's path is too long");
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The server thread inherits this mask: SIGINT/SIGTERM must reach the main thread, whose
     * poller they interrupt, not MHD's thread. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    /* The logger first: MHD reports options given before it with its own stderr logger. */
    self->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, s_handle, self, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    freeaddrinfo(ai);
    if (!self->daemon) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen,
                 e ? strerror(e) : "libmicrohttpd refused to start");
        http_destroy(&self);
        return NULL;
    }
    return self;
}

void http_destroy(http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    http_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    pthread_mutex_destroy(&self->lock);
    free(self->metrics);
    free(self->json);
    free(self);
    *self_p = NULL;
}

int http_publish(http_t *self, const char *metrics, size_t mlen, const char *snapshot_json,
                 size_t jlen)
{
    char *m = malloc(mlen + 1);
    char *j = malloc(jlen + 1);
    if (!m || !j) {
        free(m);
        free(j);
        return -ENOMEM;
    }
    memcpy(m, metrics, mlen);
    m[mlen] = '\0';
    memcpy(j, snapshot_json, jlen);
    j[jlen] = '\0';
    pthread_mutex_lock(&self->lock);
    char *old_m = self->metrics, *old_j = self->json;
    self->metrics = m;
    self->mlen = mlen;
    self->json = j;
    self->jlen = jlen;
    pthread_mutex_unlock(&self->lock);
    free(old_m);
    free(old_j);
    return 0;
}

unsigned long http_requests(const http_t *self)
{
    return atomic_load(&((http_t *)self)->requests);
}
