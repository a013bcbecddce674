/* names.h - instance names: "<name_prefix><N>" <-> N, the one rule every scaler file uses. */
#ifndef SCALER_NAMES_H
#define SCALER_NAMES_H

#include <stdio.h>
#include <string.h>

/* Instance indices the scaler tracks: 0 .. NAMES_MAX-1 (scaler.max is at most 1000). */
#define NAMES_MAX 1024

/* The index N of name "<prefix>N", or -1 when name is not exactly that (no sign, no leading
 * zero, no trailing junk, N < NAMES_MAX). */
static inline int names_index(const char *prefix, const char *name)
{
    size_t pl = strlen(prefix);
    if (!name || strncmp(name, prefix, pl) != 0)
        return -1;
    const char *p = name + pl;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0'))
        return -1;
    int n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        n = n * 10 + (*p - '0');
        if (n >= NAMES_MAX)
            return -1;
    }
    return n;
}

/* Writes "<prefix><index>" into buf. Returns buf. */
static inline const char *names_format(char *buf, size_t size, const char *prefix, int index)
{
    snprintf(buf, size, "%s%d", prefix, index);
    return buf;
}

#endif
