/* flame_svg.c - folded stacks to a self-contained interactive SVG flamegraph, plain or
 * differential (see flame.h). The layout follows Brendan Gregg's flamegraph.pl: the root at the
 * bottom, children in name order, width by inclusive samples; a differential keeps the shape of
 * the profile and colours each frame by the change of its share from the baseline. */
#include "flame.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flame_tree.h"

#define FRAME_H  16
#define HEADER_H 56
#define FOOTER_H 28
#define PAD      10
#define FONT_W   7.0 /* average px per character at 12px Verdana: for cutting names to fit */

typedef struct node_t {
    char *name;
    uint64_t v; /* the profile's samples through this frame */
    uint64_t b; /* the baseline's */
    struct node_t **kids;
    size_t n, cap;
} node_t;

static void s_node_free(node_t *node)
{
    if (!node)
        return;
    for (size_t i = 0; i < node->n; i++)
        s_node_free(node->kids[i]);
    free(node->kids);
    free(node->name);
    free(node);
}

static node_t *s_node_new(const char *name, size_t len)
{
    node_t *node = calloc(1, sizeof *node);
    if (!node || !(node->name = strndup(name, len))) {
        free(node);
        return NULL;
    }
    return node;
}

/* The child of parent named name[0..len), created when missing; NULL when out of memory. The
 * stacks come in sorted order, so the child wanted is most often the last one. */
static node_t *s_child(node_t *parent, const char *name, size_t len)
{
    for (size_t i = parent->n; i-- > 0;) {
        node_t *k = parent->kids[i];
        if (strlen(k->name) == len && memcmp(k->name, name, len) == 0)
            return k;
    }
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        node_t **kids = realloc(parent->kids, cap * sizeof *kids);
        if (!kids)
            return NULL;
        parent->kids = kids;
        parent->cap = cap;
    }
    node_t *k = s_node_new(name, len);
    if (k)
        parent->kids[parent->n++] = k;
    return k;
}

typedef struct {
    node_t *root;
    bool baseline; /* adding to b instead of v */
} build_t;

static int s_insert(void *arg, const char *stack, uint64_t count)
{
    build_t *bt = arg;
    node_t *node = bt->root;
    if (bt->baseline)
        node->b += count;
    else
        node->v += count;
    for (const char *p = stack; p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!(node = s_child(node, p, len)))
            return -ENOMEM;
        if (bt->baseline)
            node->b += count;
        else
            node->v += count;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static int s_cmp_node(const void *a, const void *b)
{
    return strcmp((*(node_t *const *)a)->name, (*(node_t *const *)b)->name);
}

/* Sorts every level by name and returns the depth of the deepest frame of the profile (not the
 * baseline's) at least min_v samples wide. */
static int s_prepare(node_t *node, uint64_t min_v)
{
    if (node->n > 1)
        qsort(node->kids, node->n, sizeof *node->kids, s_cmp_node);
    int depth = 0;
    for (size_t i = 0; i < node->n; i++) {
        node_t *k = node->kids[i];
        if (k->v == 0 || (double)k->v < (double)min_v)
            continue;
        int d = 1 + s_prepare(k, min_v);
        if (d > depth)
            depth = d;
    }
    return depth;
}

void flame_xml_escape(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        if (c < 0x80) {
            switch (c) {
            case '&':
                fputs("&amp;", out);
                break;
            case '<':
                fputs("&lt;", out);
                break;
            case '>':
                fputs("&gt;", out);
                break;
            case '"':
                fputs("&quot;", out);
                break;
            case '\'':
                fputs("&#39;", out);
                break;
            default:
                fputc(c < 0x20 || c == 0x7f ? '?' : c, out);
            }
            p++;
            continue;
        }
        /* A UTF-8 sequence: its length from the lead byte, every continuation byte checked. */
        size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = len > 0 && c != 0xc0 && c != 0xc1 && c < 0xf5;
        for (size_t i = 1; ok && i < len; i++)
            ok = (p[i] & 0xc0) == 0x80;
        if (ok) {
            fwrite(p, 1, len, out);
            p += len;
        } else {
            fputc('?', out);
            p++;
        }
    }
}

/* A deterministic warm colour for a plain graph: the hue from the name, so a function keeps its
 * colour from one graph to the next. Kernel frames orange-brown, unnamed frames grey. */
static void s_plain_colour(const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    if (name[0] == '[') {
        snprintf(buf, len, "rgb(180,180,180)");
        return;
    }
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    double v1 = (h & 0xff) / 255.0, v2 = ((h >> 8) & 0xff) / 255.0, v3 = ((h >> 16) & 0xff) / 255.0;
    if (nl > 4 && strcmp(name + nl - 4, "_[k]") == 0)
        snprintf(buf, len, "rgb(%d,%d,%d)", 200 + (int)(40 * v1), 120 + (int)(60 * v2),
                 40 + (int)(30 * v3));
    else
        snprintf(buf, len, "rgb(%d,%d,%d)", 205 + (int)(50 * v3), (int)(230 * v1), (int)(55 * v2));
}

typedef struct {
    FILE *out;
    bool diff;
    double total, btotal; /* samples of the profile and of the baseline */
    double scale;         /* px per sample */
    double min_w;
    double max_delta; /* the largest |change of share| drawn, for the colour scale */
    int height;
} draw_t;

/* The change of a frame's share, profile minus baseline (fractions of each one's samples). */
static double s_delta(const draw_t *d, const node_t *node)
{
    return node->v / d->total - (d->btotal > 0 ? node->b / d->btotal : 0);
}

static void s_max_delta(draw_t *d, const node_t *node)
{
    if (node->v * d->scale < d->min_w)
        return;
    double delta = fabs(s_delta(d, node));
    if (delta > d->max_delta)
        d->max_delta = delta;
    for (size_t i = 0; i < node->n; i++)
        s_max_delta(d, node->kids[i]);
}

static void s_draw(draw_t *d, const node_t *node, const char *name, double x, int depth)
{
    double w = node->v * d->scale;
    if (node->v == 0 || w < d->min_w)
        return;
    double px = PAD + x * d->scale;
    int y = d->height - FOOTER_H - (depth + 1) * FRAME_H;
    char fill[48]; /* "rgb(a,b,c)" with any three ints fits */
    double pct = 100.0 * node->v / d->total;
    FILE *o = d->out;
    fputs("<g class=\"f\" data-n=\"", o);
    flame_xml_escape(o, name);
    fprintf(o, "\" data-v=\"%" PRIu64 "\"", node->v);
    if (d->diff) {
        double delta = s_delta(d, node);
        double t = d->max_delta > 0 ? fabs(delta) / d->max_delta : 0;
        int c = (int)lround(210 * t);
        if (delta > 0)
            snprintf(fill, sizeof fill, "rgb(255,%d,%d)", 255 - c, 255 - c);
        else
            snprintf(fill, sizeof fill, "rgb(%d,%d,255)", 255 - c, 255 - c);
        double bshare = d->btotal > 0 ? node->b / d->btotal : 0;
        fprintf(o, " data-b=\"%.3f\"><title>", 1000.0 * bshare);
        flame_xml_escape(o, name);
        fprintf(o, " (%" PRIu64 " samples, %.2f%%; baseline %.2f%%, %+.2f points)</title>", node->v,
                pct, 100.0 * bshare, 100.0 * delta);
    } else {
        s_plain_colour(name, fill, sizeof fill);
        fputs("><title>", o);
        flame_xml_escape(o, name);
        fprintf(o, " (%" PRIu64 " samples, %.2f%%)</title>", node->v, pct);
    }
    fprintf(o, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"%s\" rx=\"2\"/>", px,
            y, w, FRAME_H - 1, fill);
    /* The name cut to fit; the script recuts it on zoom. */
    int fit = (int)((w - 6) / FONT_W);
    size_t nl = strlen(name);
    fprintf(o, "<text x=\"%.2f\" y=\"%d\">", px + 3, y + FRAME_H - 5);
    if (fit >= 3) {
        if ((size_t)fit >= nl) {
            flame_xml_escape(o, name);
        } else {
            /* Cut on a character boundary: step back over UTF-8 continuation bytes. */
            size_t cut = (size_t)fit - 2;
            while (cut > 0 && ((unsigned char)name[cut] & 0xc0) == 0x80)
                cut--;
            char *part = strndup(name, cut);
            if (part)
                flame_xml_escape(o, part);
            free(part);
            fputs("..", o);
        }
    }
    fputs("</text></g>\n", o);
    double cx = x;
    for (size_t i = 0; i < node->n; i++) {
        const node_t *k = node->kids[i];
        s_draw(d, k, k->name, cx, depth + 1);
        cx += (double)k->v;
    }
}

/* The page's behaviour: hover details, click to zoom, search (also ?s=REGEX on load). */
static const char s_script[] =
    "var W,P=10,frames,details,matched,unzoomBtn;\n"
    "function init(){details=document.getElementById('details');"
    "matched=document.getElementById('matched');unzoomBtn=document.getElementById('unzoom');"
    "W=+document.documentElement.getAttribute('width');"
    "frames=Array.prototype.slice.call(document.querySelectorAll('g.f'));"
    "frames.forEach(function(g){var r=g.querySelector('rect');g._x=+r.getAttribute('x');"
    "g._w=+r.getAttribute('width');g._y=+r.getAttribute('y');g._fill=r.getAttribute('fill');});"
    "var m=/[?&]s=([^&]*)/.exec(window.location.search);"
    "if(m)search(decodeURIComponent(m[1].replace(/\\+/g,' ')));}\n"
    "function frameOf(e){var t=e.target;return t&&t.closest?t.closest('g.f'):null;}\n"
    "document.addEventListener('mouseover',function(e){var g=frameOf(e);"
    "if(g)details.textContent=g.querySelector('title').textContent;});\n"
    "document.addEventListener('mouseout',function(e){if(frameOf(e))details.textContent=' ';});\n"
    "document.addEventListener('click',function(e){var g=frameOf(e);if(g)zoom(g);});\n"
    "function place(g,x,w){var r=g.querySelector('rect'),t=g.querySelector('text');"
    "r.setAttribute('x',x.toFixed(2));r.setAttribute('width',w.toFixed(2));"
    "t.setAttribute('x',(x+3).toFixed(2));var n=g.getAttribute('data-n'),c=Math.floor((w-6)/7);"
    "t.textContent=c<3?'':(n.length<=c?n:n.substring(0,c-2)+'..');}\n"
    "function zoom(z){var x=z._x,w=z._w,s=(W-2*P)/w,e=0.0001;"
    "frames.forEach(function(g){g.classList.remove('parent');g.classList.remove('hide');"
    "if(g._y>=z._y){if(g._x<=x+e&&g._x+g._w>=x+w-e){place(g,P,W-2*P);"
    "if(g!==z)g.classList.add('parent');}else g.classList.add('hide');}"
    "else if(g._x>=x-e&&g._x+g._w<=x+w+e)place(g,P+(g._x-x)*s,g._w*s);"
    "else g.classList.add('hide');});unzoomBtn.classList.remove('hide');}\n"
    "function unzoom(){frames.forEach(function(g){g.classList.remove('parent');"
    "g.classList.remove('hide');place(g,g._x,g._w);});unzoomBtn.classList.add('hide');}\n"
    "function search(term){if(term===null||term===undefined)return;var re=null;"
    "frames.forEach(function(g){g.querySelector('rect').setAttribute('fill',g._fill);});"
    "if(term===''){matched.textContent=' ';"
    "document.documentElement.removeAttribute('data-matched');return;}"
    "try{re=new RegExp(term);}catch(err){matched.textContent='Bad regular expression';return;}"
    "var hits=[],all=0;frames.forEach(function(g){if(g._w>all)all=g._w;"
    "if(re.test(g.getAttribute('data-n'))){"
    "g.querySelector('rect').setAttribute('fill','rgb(230,0,230)');hits.push([g._x,g._x+g._w]);}});"
    "hits.sort(function(a,b){return a[0]-b[0];});var sum=0,end=-1;"
    "hits.forEach(function(h){if(h[0]>=end){sum+=h[1]-h[0];end=h[1];}"
    "else if(h[1]>end){sum+=h[1]-end;end=h[1];}});"
    "var pct=all>0?100*sum/all:0;matched.textContent='Matched: '+pct.toFixed(1)+'%';"
    "document.documentElement.setAttribute('data-matched',pct.toFixed(2));}\n"
    "window.addEventListener('load',init);\n";

int flame_write_svg(const flame_t *self, const flame_t *baseline, const flame_svg_opts_t *opts,
                    FILE *out)
{
    flame_svg_opts_t def = {0};
    if (!opts)
        opts = &def;
    int width = opts->width > 0 ? opts->width : 1200;
    double min_w = opts->min_width_px > 0 ? opts->min_width_px : 0.1;
    node_t *root = s_node_new("all", 3);
    if (!root)
        return -ENOMEM;
    build_t bt = {root, false};
    int rc = flame_each_sorted(self, s_insert, &bt);
    if (rc == 0 && baseline) {
        bt.baseline = true;
        rc = flame_each_sorted(baseline, s_insert, &bt);
    }
    if (rc != 0) {
        s_node_free(root);
        return rc;
    }
    draw_t d = {.out = out,
                .total = root->v > 0 ? (double)root->v : 1,
                .diff = baseline != NULL,
                .btotal = (double)root->b,
                .min_w = min_w};
    d.scale = (width - 2.0 * PAD) / d.total;
    uint64_t min_v = (uint64_t)ceil(min_w / d.scale);
    int depth = s_prepare(root, min_v);
    d.height = HEADER_H + FOOTER_H + (depth + 1) * FRAME_H + 8;
    if (baseline)
        s_max_delta(&d, root);

    fprintf(out,
            "<?xml version=\"1.0\" standalone=\"no\"?>\n"
            "<svg version=\"1.1\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "xmlns=\"http://www.w3.org/2000/svg\">\n"
            "<style>text{font-family:Verdana,sans-serif;font-size:12px;fill:#000}"
            "g.f text{pointer-events:none}g.f:hover rect{stroke:#000;stroke-width:0.5}"
            ".parent{opacity:0.5}.hide{display:none}#title{font-size:17px}"
            "#subtitle{fill:#555;font-size:11px}.btn{cursor:pointer;fill:#00c}</style>\n"
            "<script type=\"text/ecmascript\"><![CDATA[\n%s]]></script>\n",
            width, d.height, width, d.height, s_script);
    fprintf(out, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n", width,
            d.height, baseline ? "rgb(250,250,250)" : "rgb(248,246,236)");
    fprintf(out, "<text id=\"title\" x=\"%d\" y=\"24\" text-anchor=\"middle\">", width / 2);
    flame_xml_escape(out, opts->title ? opts->title : "Flame Graph");
    fprintf(out, "</text>\n<text id=\"subtitle\" x=\"%d\" y=\"42\" text-anchor=\"middle\">",
            width / 2);
    flame_xml_escape(out, opts->subtitle ? opts->subtitle : "");
    fprintf(out,
            "</text>\n"
            "<text id=\"unzoom\" class=\"btn hide\" x=\"%d\" y=\"24\" "
            "onclick=\"unzoom()\">Reset Zoom</text>\n"
            "<text id=\"search\" class=\"btn\" x=\"%d\" y=\"24\" text-anchor=\"end\" "
            "onclick=\"search(prompt('Search (regular expression)',''))\">Search</text>\n"
            "<text id=\"details\" x=\"%d\" y=\"%d\"> </text>\n"
            "<text id=\"matched\" x=\"%d\" y=\"%d\" text-anchor=\"end\"> </text>\n"
            "<g id=\"frames\">\n",
            PAD, width - PAD, PAD, d.height - 10, width - PAD, d.height - 10);
    if (root->v > 0)
        s_draw(&d, root, "all", 0, 0);
    fputs("</g>\n</svg>\n", out);
    s_node_free(root);
    return ferror(out) ? -EIO : 0;
}
