/* placement.c - the addresses a job record may give an instance (app.host, or the docker
 * inventory's hosts) and the port rule, checked before an address goes into the pool. */
#include "placement.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOST_MAX 64

struct placement_t {
    char (*hosts)[HOST_MAX];
    size_t n, cap;
    bool docker;
    long base_port;
};

static bool s_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static int s_add(placement_t *self, const char *host)
{
    if (!host[0] || strlen(host) >= HOST_MAX)
        return 0;
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->hosts[i], host) == 0)
            return 0;
    if (self->n == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 8;
        char(*h)[HOST_MAX] = realloc(self->hosts, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        self->hosts = h;
        self->cap = cap;
    }
    snprintf(self->hosts[self->n++], HOST_MAX, "%s", host);
    return 1;
}

/* The value of key=VALUE among the words of a host line (quotes around VALUE dropped), or "". */
static void s_var(char *words[], int n, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    out[0] = '\0';
    for (int i = 1; i < n; i++) {
        if (strncmp(words[i], key, kl) != 0 || words[i][kl] != '=')
            continue;
        const char *v = words[i] + kl + 1;
        size_t vl = strlen(v);
        if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
            v++;
            vl -= 2;
        }
        snprintf(out, len, "%.*s", (int)(vl < len ? vl : len - 1), v);
    }
}

int placement_add_inventory(placement_t *self, const char *text)
{
    int added = 0;
    bool hosts = true; /* before any section: ungrouped hosts */
    const char *p = text;
    while (*p) {
        size_t ll = strcspn(p, "\n");
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(ll < sizeof line ? ll : sizeof line - 1), p);
        p += ll + (p[ll] == '\n');
        char *s = line + strspn(line, " \t\r");
        s[strcspn(s, "\r")] = '\0';
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            /* [group] lists hosts; [group:vars] and [group:children] do not. */
            hosts = strchr(s, ':') == NULL;
            continue;
        }
        if (!hosts)
            continue;
        char *words[32];
        int n = 0;
        char *save = NULL;
        for (char *w = strtok_r(s, " \t", &save); w && n < 32; w = strtok_r(NULL, " \t", &save)) {
            if (*w == '#')
                break;
            words[n++] = w;
        }
        if (n == 0)
            continue;
        char addr[HOST_MAX], ah[HOST_MAX];
        s_var(words, n, "tide_address", addr, sizeof addr);
        s_var(words, n, "ansible_host", ah, sizeof ah);
        const char *use = addr[0] ? addr : s_numeric(ah) ? ah : "";
        int rc = s_add(self, use);
        if (rc < 0)
            return rc;
        added += rc;
    }
    return added;
}

placement_t *placement_new(const tide_config_t *cfg, char *err, size_t errlen)
{
    placement_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    err[0] = '\0';
    self->base_port = cfg->app.base_port;
    self->docker = strcmp(cfg->executor.driver, "docker") == 0;
    if (s_add(self, cfg->app.host) < 0) {
        placement_destroy(&self);
        return NULL;
    }
    if (!self->docker)
        return self;
    FILE *f = fopen(cfg->executor.inventory, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the inventory %.300s: %s", cfg->executor.inventory,
                 strerror(errno));
        return self;
    }
    char *text = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&text, &size);
    char buf[4096];
    size_t got;
    while (mem && (got = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, got, mem);
    fclose(f);
    if (!mem || fclose(mem) != 0 || !text || placement_add_inventory(self, text) < 0) {
        free(text);
        placement_destroy(&self);
        return NULL;
    }
    free(text);
    return self;
}

void placement_destroy(placement_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->hosts);
    free(*self_p);
    *self_p = NULL;
}

int placement_check(const placement_t *self, int index, const char *host, uint32_t port, char *why,
                    size_t len)
{
    long want = self->base_port + index;
    if (index < 0 || port != (uint32_t)want) {
        snprintf(why, len, "port %u is not app.base_port + %d (%ld)", port, index, want);
        return -EINVAL;
    }
    for (size_t i = 0; host && i < self->n; i++)
        if (strcmp(self->hosts[i], host) == 0)
            return 0;
    if (self->docker)
        snprintf(why, len, "host '%.64s' is not app.host nor the address of an inventory host",
                 host ? host : "");
    else
        snprintf(why, len, "host '%.64s' is not app.host (%.64s)", host ? host : "",
                 self->hosts[0]);
    return -EINVAL;
}
