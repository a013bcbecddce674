/* tide_log.c - levelled logfmt logging to stderr (see tide_log.h). */
#include "tide_log.h"

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

log_level_t log_threshold = LOGL_INFO;
static char s_proc[32] = "tide";
static const char *s_level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *text, log_level_t *level)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, s_level_names[i]) == 0) {
            *level = (log_level_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_init(const char *proc, log_level_t level)
{
    snprintf(s_proc, sizeof s_proc, "%s", proc);
    log_threshold = level;
    const char *env = getenv("TIDE_LOG_LEVEL");
    if (env && *env && log_level_parse(env, &log_threshold) != 0)
        fprintf(stderr, "tide: ignoring TIDE_LOG_LEVEL=%s (want debug, info, warn or error)\n",
                env);
}

const char *log_quote(char *buf, unsigned size, const char *text)
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
        } else if (c < 0x20) {
            buf[o++] = '?';
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void log_emit(log_level_t level, const char *msg, const char *kvfmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char quoted[512];
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s proc=%s msg=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), s_level_names[level], s_proc,
                     log_quote(quoted, sizeof quoted, msg));
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
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
    /* One write per line so lines from several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

#define ONCE_KINDS 64
static struct {
    const char *kind;
    unsigned long count;
} s_once[ONCE_KINDS];
static pthread_mutex_t s_once_lock = PTHREAD_MUTEX_INITIALIZER;

unsigned long log_once_per_kind(const char *kind, const char *msg, const char *detail)
{
    unsigned long count = 0;
    pthread_mutex_lock(&s_once_lock);
    for (int i = 0; i < ONCE_KINDS; i++) {
        if (s_once[i].kind == NULL || strcmp(s_once[i].kind, kind) == 0) {
            s_once[i].kind = kind;
            count = ++s_once[i].count;
            break;
        }
    }
    pthread_mutex_unlock(&s_once_lock);
    if (count == 1 || count % 1000 == 0) {
        char q[512];
        log_warn(msg, "kind=%s count=%lu detail=%s", kind, count,
                 log_quote(q, sizeof q, detail ? detail : ""));
    }
    return count;
}
