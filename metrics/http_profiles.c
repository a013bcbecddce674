/* http_profiles.c - the profile pages of tide-metrics' HTTP server (see http_profiles.h). */
#include "http_profiles.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide_profiles.h"

static const struct {
    const char *name, *type;
} s_files[] = {
    {PROFILE_SVG, "image/svg+xml"},
    {PROFILE_DIFF, "image/svg+xml"},
    {PROFILE_FOLDED, "text/plain; charset=utf-8"},
    {"baseline.folded", "text/plain; charset=utf-8"},
    {PROFILE_CRASH, "text/plain; charset=utf-8"},
    {PROFILE_RECORD, "application/json"},
};

bool http_profiles_match(const char *url)
{
    return strcmp(url, "/api/profiles") == 0 || strncmp(url, "/profiles/", 10) == 0;
}

static enum MHD_Result s_text(struct MHD_Connection *conn, unsigned code, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_list(struct MHD_Connection *conn, const char *root)
{
    profile_rec_t *recs;
    size_t n;
    if (profiles_list(root, &recs, &n) != 0)
        return s_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    bool bad = !out;
    if (out) {
        fputc('[', out);
        for (size_t i = 0; i < n && !bad; i++) {
            if (i)
                fputc(',', out);
            bad = profile_rec_json(&recs[i], out) != 0;
        }
        fputs("]\n", out);
        bad |= fclose(out) != 0;
    }
    free(recs);
    if (bad) {
        free(buf);
        return s_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot list the profiles\n");
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result http_profiles_answer(struct MHD_Connection *conn, const char *root, const char *url)
{
    if (strcmp(url, "/api/profiles") == 0)
        return s_list(conn, root);
    /* /profiles/ID/FILE */
    const char *id = url + 10;
    const char *slash = strchr(id, '/');
    char idbuf[PROFILE_ID_MAX + 1];
    size_t il = slash ? (size_t)(slash - id) : 0;
    if (!slash || il == 0 || il > PROFILE_ID_MAX)
        return s_text(conn, MHD_HTTP_NOT_FOUND, "want /profiles/ID/FILE\n");
    memcpy(idbuf, id, il);
    idbuf[il] = '\0';
    if (!profiles_id_ok(idbuf))
        return s_text(conn, MHD_HTTP_BAD_REQUEST, "not a profile id\n");
    const char *type = NULL;
    for (size_t i = 0; i < sizeof s_files / sizeof s_files[0]; i++)
        if (strcmp(slash + 1, s_files[i].name) == 0)
            type = s_files[i].type;
    if (!type)
        return s_text(conn, MHD_HTTP_NOT_FOUND,
                      "a profile's files: flame.svg, diff.svg, "
                      "stacks.folded, baseline.folded, crash.txt, "
                      "record.json\n");
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/%s", root, idbuf, slash + 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return s_text(conn, MHD_HTTP_NOT_FOUND, "no such profile or file\n");
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}
