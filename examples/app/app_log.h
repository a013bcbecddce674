/* app_log.h - levelled logfmt logging to stderr for the sample app, one line per event.
 *
 * Lines look like: ts=2026-11-28T19:20:00.123Z level=info proc=app msg="listening" addr=...
 * This is the same format as lib/tide_log, written again here on purpose: the sample app stands
 * for a customer's service and must build from libc and pthreads alone (static, FROM scratch),
 * so it links nothing from tide. Thread-safe: each line goes out in one write(2). */
#ifndef APP_LOG_H
#define APP_LOG_H

typedef enum { APP_DEBUG = 0, APP_INFO = 1, APP_WARN = 2, APP_ERROR = 3 } app_level_t;

extern app_level_t app_log_threshold;

/* Reads TIDE_LOG_LEVEL (debug, info, warn, error) if set. Call once, before threads start.
 * Returns 0, or -EINVAL if the variable holds something else (the threshold stays info). */
int app_log_init(void);

/* Writes one line; msg is quoted, kvfmt is a printf format for the trailing key=value pairs
 * (may be ""). Values that may hold spaces or quotes must be passed through app_log_quote(). */
void app_log_emit(app_level_t level, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Quotes text as a logfmt value into buf (always NUL-terminated, truncated to fit); returns
 * buf. */
const char *app_log_quote(char *buf, unsigned size, const char *text);

/* Counts an event that may repeat at wire speed (accept failures, say) and logs it at warn
 * level the first time and then every 1000th time. kind must outlive the process (a string
 * literal). Returns the count so far. */
unsigned long app_log_rare(const char *kind, const char *msg, int err);

#define app_log(lvl, msg, ...)                                                                     \
    do {                                                                                           \
        if ((lvl) >= app_log_threshold)                                                            \
            app_log_emit((lvl), (msg), __VA_ARGS__);                                               \
    } while (0)
#define app_debug(msg, ...) app_log(APP_DEBUG, msg, __VA_ARGS__)
#define app_info(msg, ...)  app_log(APP_INFO, msg, __VA_ARGS__)
#define app_warn(msg, ...)  app_log(APP_WARN, msg, __VA_ARGS__)
#define app_error(msg, ...) app_log(APP_ERROR, msg, __VA_ARGS__)

#endif
