/* tide_log.h - levelled logfmt logging to stderr, one line per event.
 *
 * Lines look like: ts=2026-11-28T19:20:00.123Z level=info proc=scaler msg="scaled up" from=1 to=3
 * The level is checked before anything is formatted, so a disabled debug line costs one compare.
 * Thread-safe: each line is formatted into a local buffer and written with one write(2). */
#ifndef TIDE_LOG_H
#define TIDE_LOG_H

#include <stdbool.h>

typedef enum { LOGL_DEBUG = 0, LOGL_INFO = 1, LOGL_WARN = 2, LOGL_ERROR = 3 } log_level_t;

extern log_level_t log_threshold;

/* Sets the process name written as proc=... and the threshold. Call once at start, before
 * threads. The level may be overridden by the TIDE_LOG_LEVEL environment variable. */
void log_init(const char *proc, log_level_t level);

/* Parses "debug", "info", "warn", "error". Returns 0, or -EINVAL for anything else. */
int log_level_parse(const char *text, log_level_t *level);

/* Writes one line: msg is quoted; kvfmt is a printf format for the trailing key=value pairs
 * (may be ""). Strings that may contain spaces should be passed through %s with log_quote(). */
void log_emit(log_level_t level, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Quotes text for a logfmt value into buf (always NUL-terminated) and returns buf. */
const char *log_quote(char *buf, unsigned size, const char *text);

#define log_at(lvl, msg, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) >= log_threshold)                                                                \
            log_emit((lvl), (msg), __VA_ARGS__);                                                   \
    } while (0)
#define log_debug(msg, ...) log_at(LOGL_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...)  log_at(LOGL_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...)  log_at(LOGL_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_at(LOGL_ERROR, msg, __VA_ARGS__)

/* Logs at warn level only the first time a given kind is seen (and then every 1000th time), for
 * events that may repeat at wire speed such as malformed frames. kind must be a string literal
 * or otherwise live for the whole process. Returns how many times kind has been reported. */
unsigned long log_once_per_kind(const char *kind, const char *msg, const char *detail);

#endif
