/*
 * yamldoc.c - builds the bounded YAML tree of yamldoc.h from libyaml's event
 * stream, and the strict typed readers loaders use on it.
 *
 * The event API (rather than yaml_parser_load) is used so that every limit is
 * enforced while parsing: an alias, a tag, a too-deep nesting or one node too
 * many stops the parse at that event, before any more memory is spent.
 */
#include "yamldoc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "duration.h"
#include "fileio.h"

struct js_yaml_node {
    js_yaml_type type;
    size_t line;
    bool plain;          /* scalar: plain style */
    char *str;           /* scalar: owned, NUL-terminated, no interior NUL */
    size_t len;          /* scalar: bytes in str */
    js_yaml_node **kids; /* sequence: items; mapping: key0, value0, key1, value1, ... */
    size_t nkids;
    size_t cap;
};

struct js_yaml_doc {
    char *name;
    char domain[JS_YAML_DOMAIN_MAX + 1];
    js_status status;
    js_yaml_node *root;
};

/* Limits and state of one parse; the stack holds the open collections. */
typedef struct builder {
    js_yaml_doc *doc;
    size_t max_depth;
    size_t max_nodes;
    size_t nnodes;
    size_t depth;
    js_yaml_node *stack[JS_YAML_MAX_DEPTH];
    bool seen_document;
} builder;

/* ---- nodes ------------------------------------------------------------------------- */

static void node_free(js_yaml_node *n)
{
    if (n == NULL)
        return;
    /* Recursion is bounded by the depth limit enforced while building. */
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n);
}

void js_yaml_doc_free(js_yaml_doc *doc)
{
    if (doc == NULL)
        return;
    node_free(doc->root);
    free(doc->name);
    free(doc);
}

const char *js_yaml_doc_name(const js_yaml_doc *doc)
{
    return doc ? doc->name : NULL;
}

const js_yaml_node *js_yaml_doc_root(const js_yaml_doc *doc)
{
    return doc ? doc->root : NULL;
}

js_yaml_type js_yaml_node_type(const js_yaml_node *n)
{
    return n ? n->type : JS_YAML_NONE;
}

const char *js_yaml_type_name(js_yaml_type t)
{
    switch (t) {
    case JS_YAML_SCALAR:
        return "scalar";
    case JS_YAML_SEQUENCE:
        return "sequence";
    case JS_YAML_MAPPING:
        return "mapping";
    case JS_YAML_NONE:
    default:
        return "nothing";
    }
}

size_t js_yaml_node_line(const js_yaml_node *n)
{
    return n ? n->line : 0;
}

const char *js_yaml_scalar_str(const js_yaml_node *n)
{
    return (n && n->type == JS_YAML_SCALAR) ? n->str : NULL;
}

size_t js_yaml_scalar_len(const js_yaml_node *n)
{
    return (n && n->type == JS_YAML_SCALAR) ? n->len : 0;
}

bool js_yaml_scalar_is_plain(const js_yaml_node *n)
{
    return n && n->type == JS_YAML_SCALAR && n->plain;
}

bool js_yaml_scalar_is_null(const js_yaml_node *n)
{
    if (!js_yaml_scalar_is_plain(n))
        return false;
    /* YAML 1.2 core schema null forms. */
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

size_t js_yaml_seq_len(const js_yaml_node *seq)
{
    return (seq && seq->type == JS_YAML_SEQUENCE) ? seq->nkids : 0;
}

const js_yaml_node *js_yaml_seq_item(const js_yaml_node *seq, size_t i)
{
    return i < js_yaml_seq_len(seq) ? seq->kids[i] : NULL;
}

size_t js_yaml_map_len(const js_yaml_node *map)
{
    return (map && map->type == JS_YAML_MAPPING) ? map->nkids / 2 : 0;
}

const js_yaml_node *js_yaml_map_key(const js_yaml_node *map, size_t i)
{
    return i < js_yaml_map_len(map) ? map->kids[2 * i] : NULL;
}

const char *js_yaml_map_key_str(const js_yaml_node *map, size_t i)
{
    return js_yaml_scalar_str(js_yaml_map_key(map, i));
}

size_t js_yaml_map_key_line(const js_yaml_node *map, size_t i)
{
    return js_yaml_node_line(js_yaml_map_key(map, i));
}

const js_yaml_node *js_yaml_map_value(const js_yaml_node *map, size_t i)
{
    return i < js_yaml_map_len(map) ? map->kids[2 * i + 1] : NULL;
}

bool js_yaml_map_find(const js_yaml_node *map, const char *key, size_t *index)
{
    if (key == NULL)
        return false;
    size_t n = js_yaml_map_len(map);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(map->kids[2 * i]->str, key) == 0) {
            if (index)
                *index = i;
            return true;
        }
    }
    return false;
}

const js_yaml_node *js_yaml_map_get(const js_yaml_node *map, const char *key)
{
    size_t i;
    return js_yaml_map_find(map, key, &i) ? js_yaml_map_value(map, i) : NULL;
}

/* ---- paths and messages ------------------------------------------------------------ */

const char *js_yaml_path_key(char *buf, size_t cap, const char *parent, const char *key)
{
    if (buf == NULL || cap == 0)
        return "";
    if (parent == NULL || parent[0] == '\0')
        snprintf(buf, cap, "%s", key ? key : "");
    else
        snprintf(buf, cap, "%s.%s", parent, key ? key : "");
    return buf;
}

const char *js_yaml_path_index(char *buf, size_t cap, const char *parent, size_t i)
{
    if (buf == NULL || cap == 0)
        return "";
    snprintf(buf, cap, "%s[%zu]", parent ? parent : "", i);
    return buf;
}

const char *js_yaml_printable(char *buf, size_t cap, const char *s)
{
    if (buf == NULL || cap == 0)
        return "";
    if (s == NULL)
        s = "";
    size_t len = strlen(s);
    size_t room = cap - 1;
    bool truncated = len > room;
    if (truncated)
        room = room >= 3 ? room - 3 : 0;
    size_t n = len < room ? len : room;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Values from a file must not forge lines or terminal escapes in logs. */
        buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (truncated && cap - 1 >= 3) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static js_status vfail(const char *name, js_status st, size_t line, const char *path,
                       js_reason reason, js_err *err, const char *fmt, va_list ap) JS_PRINTF(7, 0);

static js_status vfail(const char *name, js_status st, size_t line, const char *path,
                       js_reason reason, js_err *err, const char *fmt, va_list ap)
{
    char problem[JS_MSG_MAX];
    char where[32] = "";
    vsnprintf(problem, sizeof(problem), fmt, ap);
    if (line > 0)
        snprintf(where, sizeof(where), ":%zu", line);
    if (path != NULL && path[0] != '\0')
        return js_err_set(err, st, reason, "%s%s: %s: %s", name, where, path, problem);
    return js_err_set(err, st, reason, "%s%s: %s", name, where, problem);
}

js_status(js_yaml_fail)(const js_yaml_doc *doc, size_t line, const char *path, js_reason reason,
                        js_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    js_status st = vfail(doc ? doc->name : "(yaml)", doc ? doc->status : JS_EINVAL, line, path,
                         reason, err, fmt, ap);
    va_end(ap);
    return st;
}

/* The structural errors yamldoc finds on behalf of a document's reader are
 * "<domain>.<code>": one row of reasons.def per domain and code (config.type,
 * policy.type, yaml.type, ...; test_reasons checks every pair is listed). */
static js_status yaml_fail(const js_yaml_doc *doc, size_t line, const char *path, const char *code,
                           js_err *err, const char *fmt, ...) JS_PRINTF(6, 7);

static js_status yaml_fail(const js_yaml_doc *doc, size_t line, const char *path, const char *code,
                           js_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    js_status st = vfail(doc ? doc->name : "(yaml)", doc ? doc->status : JS_EINVAL, line, path,
                         js_reason_lookup(doc ? doc->domain : "yaml", code), err, fmt, ap);
    va_end(ap);
    return st;
}
#ifdef __clang_analyzer__
/* For the static analyzer only, like js_yaml_fail in yamldoc.h: it does not
 * follow a variadic function, and a doc's status is never JS_OK. */
#define yaml_fail(...) (yaml_fail(__VA_ARGS__), JS_EINVAL)
#endif

/* ---- building the tree from events ------------------------------------------------- */

static js_status node_new(builder *b, js_yaml_type t, const yaml_mark_t *mark, js_yaml_node **out,
                          js_err *err)
{
    if (b->nnodes >= b->max_nodes)
        return yaml_fail(b->doc, mark->line + 1, NULL, "too_many_nodes", err, "more than %zu nodes",
                         b->max_nodes);
    js_yaml_node *n = calloc(1, sizeof(*n));
    JS_ENSURE_ALLOC(n, err);
    n->type = t;
    n->line = mark->line + 1; /* libyaml marks are 0-based */
    b->nnodes++;
    *out = n;
    return JS_OK;
}

static js_status kids_push(js_yaml_node *parent, js_yaml_node *kid, js_err *err)
{
    if (parent->nkids == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        js_yaml_node **kids = realloc(parent->kids, cap * sizeof(*kids));
        JS_ENSURE_ALLOC(kids, err);
        parent->kids = kids;
        parent->cap = cap;
    }
    parent->kids[parent->nkids++] = kid;
    return JS_OK;
}

/*
 * Hangs n under the innermost open collection (or makes it the root). On
 * failure n is not attached and the caller frees it.
 */
static js_status attach(builder *b, js_yaml_node *n, js_err *err)
{
    if (b->depth == 0) {
        b->doc->root = n;
        return JS_OK;
    }
    js_yaml_node *parent = b->stack[b->depth - 1];
    if (parent->type == JS_YAML_MAPPING) {
        bool is_key = parent->nkids % 2 == 0;
        if (is_key && n->type != JS_YAML_SCALAR)
            return yaml_fail(b->doc, n->line, NULL, "key_not_scalar", err,
                             "a mapping key must be a scalar, found a %s",
                             js_yaml_type_name(js_yaml_node_type(n)));
        /*
         * libyaml places an omitted value ("key:" then a newline) at the next
         * token, often on a later line; the key's line is where a reader looks.
         */
        if (!is_key && n->type == JS_YAML_SCALAR && n->plain && n->len == 0)
            n->line = parent->kids[parent->nkids - 1]->line;
    }
    return kids_push(parent, n, err);
}

static js_status reject_anchor_tag(builder *b, const yaml_event_t *ev, const yaml_char_t *anchor,
                                   const yaml_char_t *tag, js_err *err)
{
    /* Anchors exist only to be aliased; aliases are how "billion laughs" expands. */
    if (anchor != NULL)
        return yaml_fail(b->doc, ev->start_mark.line + 1, NULL, "anchor", err,
                         "anchors (&name) are not allowed");
    if (tag != NULL)
        return yaml_fail(b->doc, ev->start_mark.line + 1, NULL, "tag", err,
                         "tags (!name) are not allowed");
    return JS_OK;
}

static js_status on_scalar(builder *b, const yaml_event_t *ev, js_err *err)
{
    JS_GUARD(reject_anchor_tag(b, ev, ev->data.scalar.anchor, ev->data.scalar.tag, err));
    const char *value = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    /* "\0" in a quoted scalar would silently cut every C string made from it. */
    if (memchr(value, '\0', len) != NULL)
        return yaml_fail(b->doc, ev->start_mark.line + 1, NULL, "nul_in_scalar", err,
                         "a value contains a NUL character");
    js_yaml_node *n;
    JS_GUARD(node_new(b, JS_YAML_SCALAR, &ev->start_mark, &n, err));
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->len = len;
    n->str = malloc(len + 1);
    if (n->str == NULL) {
        node_free(n);
        return js_err_oom(err);
    }
    memcpy(n->str, value, len);
    n->str[len] = '\0';
    js_status st = attach(b, n, err);
    if (st != JS_OK)
        node_free(n);
    return st;
}

static js_status on_collection_start(builder *b, const yaml_event_t *ev, js_yaml_type t,
                                     const yaml_char_t *anchor, const yaml_char_t *tag, js_err *err)
{
    JS_GUARD(reject_anchor_tag(b, ev, anchor, tag, err));
    if (b->depth >= b->max_depth)
        return yaml_fail(b->doc, ev->start_mark.line + 1, NULL, "too_deep", err,
                         "nesting deeper than %zu levels", b->max_depth);
    js_yaml_node *n;
    JS_GUARD(node_new(b, t, &ev->start_mark, &n, err));
    js_status st = attach(b, n, err);
    if (st != JS_OK) {
        node_free(n);
        return st;
    }
    b->stack[b->depth++] = n;
    return JS_OK;
}

/* Orders key positions by key text, then by position, so duplicates sit side by side. */
static int cmp_key_pos(const void *pa, const void *pb, const js_yaml_node *map)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    int c = strcmp(map->kids[2 * a]->str, map->kids[2 * b]->str);
    if (c != 0)
        return c;
    return a < b ? -1 : a > b;
}

/* qsort has no context argument; a small merge sort keeps this re-entrant without globals. */
static void sort_key_pos(size_t *v, size_t *tmp, size_t n, const js_yaml_node *map)
{
    if (n < 2)
        return;
    size_t mid = n / 2;
    sort_key_pos(v, tmp, mid, map);
    sort_key_pos(v + mid, tmp, n - mid, map);
    size_t i = 0, j = mid, k = 0;
    while (i < mid && j < n)
        tmp[k++] = cmp_key_pos(&v[i], &v[j], map) <= 0 ? v[i++] : v[j++];
    while (i < mid)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof(*v));
}

/*
 * Duplicate keys are checked when a mapping closes, by sorting (O(n log n)),
 * so a mapping with tens of thousands of keys cannot make the check quadratic.
 * The reported duplicate is the earliest second occurrence in the file.
 */
static js_status check_unique_keys(builder *b, const js_yaml_node *map, js_err *err)
{
    size_t n = map->nkids / 2;
    if (n < 2)
        return JS_OK;
    size_t *pos = calloc(2 * n, sizeof(*pos));
    JS_ENSURE_ALLOC(pos, err);
    for (size_t i = 0; i < n; i++)
        pos[i] = i;
    sort_key_pos(pos, pos + n, n, map);
    size_t dup = SIZE_MAX, first = 0, run = 0; /* run: where the current equal-key run starts */
    for (size_t i = 1; i < n; i++) {
        if (strcmp(map->kids[2 * pos[i]]->str, map->kids[2 * pos[i - 1]]->str) != 0) {
            run = i;
            continue;
        }
        if (pos[i] < dup) {
            dup = pos[i];
            first = pos[run];
        }
    }
    free(pos);
    if (dup == SIZE_MAX)
        return JS_OK;
    const js_yaml_node *k = map->kids[2 * dup];
    char shown[64];
    return yaml_fail(b->doc, k->line, NULL, "duplicate_key", err,
                     "duplicate key '%s' (first on line %zu)",
                     js_yaml_printable(shown, sizeof(shown), k->str), map->kids[2 * first]->line);
}

static js_status on_event(builder *b, const yaml_event_t *ev, bool *done, js_err *err)
{
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_END_EVENT:
    case YAML_NO_EVENT:
        return JS_OK;
    case YAML_STREAM_END_EVENT:
        *done = true;
        return JS_OK;
    case YAML_DOCUMENT_START_EVENT:
        if (b->seen_document)
            return yaml_fail(b->doc, ev->start_mark.line + 1, NULL, "multiple_documents", err,
                             "only one YAML document is allowed");
        b->seen_document = true;
        return JS_OK;
    case YAML_ALIAS_EVENT:
        return yaml_fail(b->doc, ev->start_mark.line + 1, NULL, "alias", err,
                         "aliases (*name) are not allowed");
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev, err);
    case YAML_SEQUENCE_START_EVENT:
        return on_collection_start(b, ev, JS_YAML_SEQUENCE, ev->data.sequence_start.anchor,
                                   ev->data.sequence_start.tag, err);
    case YAML_MAPPING_START_EVENT:
        return on_collection_start(b, ev, JS_YAML_MAPPING, ev->data.mapping_start.anchor,
                                   ev->data.mapping_start.tag, err);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        /* libyaml only emits balanced events; a mismatch would be a libyaml bug. */
        JS_ENSURE(b->depth > 0, err, JS_EINTERNAL, JS_R_INTERNAL_YAML, "unbalanced YAML events");
        b->depth--;
        if (ev->type == YAML_MAPPING_END_EVENT)
            return check_unique_keys(b, b->stack[b->depth], err);
        return JS_OK;
    default:
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_YAML, "unexpected YAML event %d",
                          (int)ev->type);
    }
}

static js_status parser_failure(const js_yaml_doc *doc, const yaml_parser_t *p, js_err *err)
{
    const char *problem = p->problem ? p->problem : "unknown error";
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return js_err_oom(err);
    case YAML_READER_ERROR:
        /* The reader has no line yet: it rejects bytes (bad UTF-8, control characters). */
        return yaml_fail(doc, 0, NULL, "yaml_syntax", err, "invalid input at byte %zu: %s",
                         p->problem_offset, problem);
    case YAML_SCANNER_ERROR:
    case YAML_PARSER_ERROR:
    case YAML_COMPOSER_ERROR:
    case YAML_NO_ERROR:
    case YAML_WRITER_ERROR:
    case YAML_EMITTER_ERROR:
    default:
        if (p->context != NULL)
            return yaml_fail(doc, p->problem_mark.line + 1, NULL, "yaml_syntax", err,
                             "YAML syntax error: %s (%s at line %zu)", problem, p->context,
                             p->context_mark.line + 1);
        return yaml_fail(doc, p->problem_mark.line + 1, NULL, "yaml_syntax", err,
                         "YAML syntax error: %s", problem);
    }
}

static size_t limit(size_t asked, size_t cap)
{
    return (asked == 0 || asked > cap) ? cap : asked;
}

/* A doc with no tree yet: carries the name, domain and status used by every error. */
static js_status doc_new(const char *name, const js_yaml_opts *opts, js_yaml_doc **out, js_err *err)
{
    const char *domain = (opts && opts->domain) ? opts->domain : "yaml";
    JS_ENSURE(strlen(domain) <= JS_YAML_DOMAIN_MAX, err, JS_EINTERNAL, JS_R_INTERNAL_YAML,
              "YAML error domain '%.24s...' is too long", domain);
    js_yaml_doc *doc = calloc(1, sizeof(*doc));
    JS_ENSURE_ALLOC(doc, err);
    doc->name = strdup(name ? name : "(buffer)");
    if (doc->name == NULL) {
        free(doc);
        return js_err_oom(err);
    }
    memcpy(doc->domain, domain, strlen(domain) + 1);
    doc->status = (opts && opts->status != JS_OK) ? opts->status : JS_EINVAL;
    *out = doc;
    return JS_OK;
}

static js_status parse_into(js_yaml_doc *doc, const void *data, size_t len,
                            const js_yaml_opts *opts, js_err *err)
{
    size_t max_bytes = limit(opts ? opts->max_bytes : 0, JS_YAML_MAX_BYTES);
    if (len > max_bytes)
        return yaml_fail(doc, 0, NULL, "too_large", err,
                         "%zu bytes is more than the limit of %zu bytes", len, max_bytes);

    builder b = {
        .doc = doc,
        .max_depth = limit(opts ? opts->max_depth : 0, JS_YAML_MAX_DEPTH),
        .max_nodes = limit(opts ? opts->max_nodes : 0, JS_YAML_MAX_NODES),
    };
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return js_err_oom(err);
    yaml_parser_set_input_string(&parser, (const unsigned char *)(len ? data : ""), len);

    js_status st = JS_OK;
    bool done = false;
    while (!done && st == JS_OK) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            st = parser_failure(doc, &parser, err);
            break;
        }
        st = on_event(&b, &ev, &done, err);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (st == JS_OK && doc->root == NULL)
        st = yaml_fail(doc, 0, NULL, "no_document", err, "no YAML document (empty input)");
    return st;
}

js_status js_yaml_load_buffer(const char *name, const void *data, size_t len,
                              const js_yaml_opts *opts, js_yaml_doc **out, js_err *err)
{
    JS_ENSURE(out != NULL && (data != NULL || len == 0), err, JS_EINTERNAL, JS_R_INTERNAL_ARGS,
              "js_yaml_load_buffer: bad arguments");
    *out = NULL;
    js_yaml_doc *doc;
    JS_GUARD(doc_new(name, opts, &doc, err));
    js_status st = parse_into(doc, data, len, opts, err);
    if (st != JS_OK) {
        js_yaml_doc_free(doc);
        return st;
    }
    *out = doc;
    return JS_OK;
}

/* Reads at most max bytes of a regular file (fileio.h); one byte more means
 * "too large". A symlink is followed: the operator names these files. */
static js_status read_file(const js_yaml_doc *doc, const char *path, size_t max, char **data,
                           size_t *len, js_err *err)
{
    js_file_info fi;
    switch (js_file_read(path, max, JS_FILE_FOLLOW, data, len, &fi)) {
    case JS_FILE_OK:
        return JS_OK;
    case JS_FILE_OPEN:
        return yaml_fail(doc, 0, NULL, "io", err, "cannot open: %s", strerror(fi.sys_errno));
    case JS_FILE_NOT_REGULAR:
        return yaml_fail(doc, 0, NULL, "io", err, "not a regular file");
    case JS_FILE_TOO_LARGE:
        return yaml_fail(doc, 0, NULL, "too_large", err,
                         "file is larger than the limit of %zu bytes", max);
    case JS_FILE_READ:
        return yaml_fail(doc, 0, NULL, "io", err, "read failed: %s", strerror(fi.sys_errno));
    case JS_FILE_NOMEM:
    default:
        return js_err_oom(err);
    }
}

js_status js_yaml_load_file(const char *path, const js_yaml_opts *opts, js_yaml_doc **out,
                            js_err *err)
{
    JS_ENSURE(out != NULL && path != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARGS,
              "js_yaml_load_file: bad arguments");
    *out = NULL;
    js_yaml_doc *doc;
    JS_GUARD(doc_new(path, opts, &doc, err));
    char *data = NULL;
    size_t len = 0;
    js_status st = read_file(doc, path, limit(opts ? opts->max_bytes : 0, JS_YAML_MAX_BYTES), &data,
                             &len, err);
    if (st == JS_OK)
        st = parse_into(doc, data, len, opts, err);
    free(data);
    if (st != JS_OK) {
        js_yaml_doc_free(doc);
        return st;
    }
    *out = doc;
    return JS_OK;
}

/* ---- typed reading ----------------------------------------------------------------- */

js_status js_yaml_expect_type(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                              js_yaml_type t, js_err *err)
{
    if (js_yaml_node_type(n) == t)
        return JS_OK;
    if (js_yaml_scalar_is_null(n))
        return yaml_fail(doc, js_yaml_node_line(n), path, "type", err,
                         "expected a %s, found nothing (null)", js_yaml_type_name(t));
    return yaml_fail(doc, js_yaml_node_line(n), path, "type", err, "expected a %s, found a %s",
                     js_yaml_type_name(t), js_yaml_type_name(js_yaml_node_type(n)));
}

js_status js_yaml_lookup(const js_yaml_doc *doc, const js_yaml_node *map, const char *map_path,
                         const char *key, bool required, const js_yaml_node **out, js_err *err)
{
    *out = NULL;
    JS_GUARD(js_yaml_expect_type(doc, map, map_path, JS_YAML_MAPPING, err));
    *out = js_yaml_map_get(map, key);
    if (*out == NULL && required) {
        char path[JS_YAML_PATH_MAX];
        return yaml_fail(doc, js_yaml_node_line(map),
                         js_yaml_path_key(path, sizeof(path), map_path, key), "missing_key", err,
                         "required key is missing");
    }
    return JS_OK;
}

js_status js_yaml_expect_string(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                                const char **out, js_err *err)
{
    if (js_yaml_node_type(n) != JS_YAML_SCALAR)
        return yaml_fail(doc, js_yaml_node_line(n), path, "type", err,
                         "expected a string, found a %s", js_yaml_type_name(js_yaml_node_type(n)));
    /* A bare "key:" is null, not ""; reading it as a string hides a forgotten value. */
    if (js_yaml_scalar_is_null(n))
        return yaml_fail(doc, n->line, path, "type", err,
                         "expected a string, found nothing (null)");
    *out = n->str;
    return JS_OK;
}

js_status js_yaml_expect_int(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                             int64_t min, int64_t max, int64_t *out, js_err *err)
{
    char shown[48];
    if (js_yaml_node_type(n) != JS_YAML_SCALAR || !n->plain)
        return yaml_fail(
            doc, js_yaml_node_line(n), path, "integer", err, "expected an integer, found a %s",
            js_yaml_node_type(n) == JS_YAML_SCALAR ? "quoted string"
                                                   : js_yaml_type_name(js_yaml_node_type(n)));
    /*
     * Only [-]digits without leading zeros: YAML 1.1 reads 010 as octal and
     * 0x10 as hex, and strtoll would accept "+", spaces and such prefixes too.
     */
    const char *s = n->str;
    const char *digits = s[0] == '-' ? s + 1 : s;
    bool ok = digits[0] != '\0' && !(digits[0] == '0' && digits[1] != '\0');
    for (const char *p = digits; ok && *p; p++)
        ok = *p >= '0' && *p <= '9';
    if (!ok)
        return yaml_fail(doc, n->line, path, "integer", err,
                         "expected a decimal integer, found '%s'",
                         js_yaml_printable(shown, sizeof(shown), s));
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || end == NULL || *end != '\0' || v < min || v > max)
        return yaml_fail(doc, n->line, path, "range", err,
                         "%s is out of range (%" PRId64 "..%" PRId64 ")",
                         js_yaml_printable(shown, sizeof(shown), s), min, max);
    *out = (int64_t)v;
    return JS_OK;
}

js_status js_yaml_expect_bool(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                              bool *out, js_err *err)
{
    /* Exactly the YAML 1.2 core forms: yes/no/on/off were YAML 1.1 and surprise people. */
    if (js_yaml_scalar_is_plain(n) && strcmp(n->str, "true") == 0) {
        *out = true;
        return JS_OK;
    }
    if (js_yaml_scalar_is_plain(n) && strcmp(n->str, "false") == 0) {
        *out = false;
        return JS_OK;
    }
    char shown[48];
    if (js_yaml_node_type(n) == JS_YAML_SCALAR)
        return yaml_fail(doc, n->line, path, "boolean", err,
                         "expected true or false (unquoted), found '%s'",
                         js_yaml_printable(shown, sizeof(shown), n->str));
    return yaml_fail(doc, js_yaml_node_line(n), path, "boolean", err,
                     "expected true or false, found a %s", js_yaml_type_name(js_yaml_node_type(n)));
}

js_status js_yaml_expect_duration(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                                  int64_t *out, js_err *err)
{
    const char *s;
    JS_GUARD(js_yaml_expect_string(doc, n, path, &s, err));
    js_err inner = {0};
    if (js_parse_duration(s, out, &inner) != JS_OK)
        return yaml_fail(doc, n->line, path, "duration", err, "%s", inner.msg);
    return JS_OK;
}

js_status js_yaml_check_keys(const js_yaml_doc *doc, const js_yaml_node *map, const char *path,
                             const char *const *allowed, size_t nallowed, js_err *err)
{
    JS_GUARD(js_yaml_expect_type(doc, map, path, JS_YAML_MAPPING, err));
    for (size_t i = 0; i < js_yaml_map_len(map); i++) {
        const char *key = js_yaml_map_key_str(map, i);
        bool known = false;
        for (size_t j = 0; j < nallowed && !known; j++)
            known = strcmp(key, allowed[j]) == 0;
        if (known)
            continue;
        char list[JS_MSG_MAX / 2];
        size_t used = 0;
        list[0] = '\0';
        for (size_t j = 0; j < nallowed && used < sizeof(list); j++) {
            int w = snprintf(list + used, sizeof(list) - used, "%s%s", j ? ", " : "", allowed[j]);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        char shown[48];
        return yaml_fail(doc, js_yaml_map_key_line(map, i), path, "unknown_key", err,
                         "unknown key '%s' (allowed: %s)",
                         js_yaml_printable(shown, sizeof(shown), key), list);
    }
    return JS_OK;
}
