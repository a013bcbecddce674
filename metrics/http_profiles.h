/* http_profiles.h - tide-metrics' profile pages (private to metrics/http.c): GET /api/profiles
 * (every profile's record, newest first, as a JSON array) and GET /profiles/ID/FILE (one file
 * of a profile: flame.svg, diff.svg, stacks.folded, baseline.folded, crash.txt, record.json).
 * Read from the executor's store on this host, on the HTTP server's thread. */
#ifndef TIDE_METRICS_HTTP_PROFILES_H
#define TIDE_METRICS_HTTP_PROFILES_H

#include <microhttpd.h>
#include <stdbool.h>

/* True when url is one of the profile pages. */
bool http_profiles_match(const char *url);

/* Answers url from the store at root: 200, 404 (unknown id or file), 400 (a bad id), 500 (the
 * store cannot be read). */
enum MHD_Result http_profiles_answer(struct MHD_Connection *conn, const char *root,
                                     const char *url);

#endif
