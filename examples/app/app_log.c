/* app_log.c - levelled logfmt logging to stderr for the sample app (see app_log.h). */
#include "app_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

app_level_t app_log_threshold = APP_INFO;
static const char *s_level_names[] = {"debug", "info", "warn", "error"};

int app_log_init(void)
{
    const char *env = getenv("TIDE_LOG_LEVEL");
    if (!env || !*env)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(env, s_level_names[i]) == 0) {
            app_log_threshold = (app_level_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *app_log_quote(char *buf, unsigned size, const char *text)
{
    unsigned o = 0;
    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const char *p = text ? text : ""; *p && o + 3 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            buf[o++] = '\\';
            buf[o++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = '?';
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void app_log_emit(app_level_t level, const char *msg, const char *kvfmt, ...)
{
    char line[2048];
    char quoted[512];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(
        line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s proc=app msg=%s",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (long)(tv.tv_usec / 1000), s_level_names[level], app_log_quote(quoted, sizeof quoted, msg));
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 1)
        n = sizeof line - 2;
    if (kvfmt && *kvfmt && (size_t)n + 2 < sizeof line) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, kvfmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, kvfmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
        if ((size_t)n >= sizeof line - 1)
            n = sizeof line - 2;
    }
    line[n++] = '\n';
    /* One write per line so that lines from several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

#define RARE_KINDS 32
static struct {
    const char *kind;
    unsigned long count;
} s_rare[RARE_KINDS];
static pthread_mutex_t s_rare_lock = PTHREAD_MUTEX_INITIALIZER;

unsigned long app_log_rare(const char *kind, const char *msg, int err)
{
    unsigned long count = 0;
    pthread_mutex_lock(&s_rare_lock);
    for (int i = 0; i < RARE_KINDS; i++) {
        if (s_rare[i].kind == NULL || strcmp(s_rare[i].kind, kind) == 0) {
            s_rare[i].kind = kind;
            count = ++s_rare[i].count;
            break;
        }
    }
    pthread_mutex_unlock(&s_rare_lock);
    if (count == 1 || count % 1000 == 0) {
        char q[128];
        app_warn(msg, "kind=%s count=%lu err=%s", kind, count,
                 app_log_quote(q, sizeof q, strerror(err)));
    }
    return count;
}
