/*
 * yamldoc.h - a small, bounded, read-only YAML document tree on top of libyaml.
 *
 * Configuration and policy files are read through this module so that every
 * loader gets the same guarantees: exactly one document; only scalars,
 * sequences and mappings; mapping keys are scalars and unique; no anchors or
 * aliases (so no "billion laughs" expansion); no tags; a cap on the input
 * size, the nesting depth and the node count; and a 1-based line number on
 * every node so that errors read "FILE:LINE: path.to.key: problem".
 *
 * The tree is untyped: every scalar is kept as the string the file holds, and
 * loaders ask for the type they expect through the js_yaml_expect_*()
 * helpers, which apply one strict reading (decimal integers only, booleans
 * exactly true/false - none of YAML 1.1's yes/no/on/off).
 *
 * Every error is reported with the status and reason prefix ("domain") the
 * loader chose in js_yaml_opts, e.g. JS_ECONFIG and "config" give reasons such
 * as "config.duplicate_key".
 *
 * Ownership: js_yaml_load_*() returns a js_yaml_doc the caller frees with
 * js_yaml_doc_free() (NULL accepted). Nodes and strings reached through a doc
 * are borrowed: they live as long as the doc and must not be freed. A doc is
 * immutable after loading and may be read by several threads.
 */
#ifndef JS_YAMLDOC_H
#define JS_YAMLDOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Hard caps; js_yaml_opts may only lower them. */
#define JS_YAML_MAX_BYTES (1024u * 1024u) /* input size */
#define JS_YAML_MAX_DEPTH 32u             /* nested sequences/mappings */
#define JS_YAML_MAX_NODES 65536u          /* scalars + sequences + mappings */

/* Size of a buffer for a key path such as "keys[12].alg" (longer paths are truncated). */
#define JS_YAML_PATH_MAX 160
/* Longest reason prefix accepted in js_yaml_opts.domain. */
#define JS_YAML_DOMAIN_MAX 24

typedef struct js_yaml_doc js_yaml_doc;
typedef struct js_yaml_node js_yaml_node;

typedef enum js_yaml_type {
    JS_YAML_NONE = 0, /* only returned for a NULL node */
    JS_YAML_SCALAR,
    JS_YAML_SEQUENCE,
    JS_YAML_MAPPING,
} js_yaml_type;

typedef struct js_yaml_opts {
    const char *domain; /* reason prefix, [a-z_]; NULL = "yaml" */
    js_status status;   /* status of every error; JS_OK = JS_EINVAL */
    size_t max_bytes;   /* 0 or larger than the cap = JS_YAML_MAX_BYTES */
    size_t max_depth;   /* 0 or larger than the cap = JS_YAML_MAX_DEPTH */
    size_t max_nodes;   /* 0 or larger than the cap = JS_YAML_MAX_NODES */
} js_yaml_opts;

/* ---- loading ----------------------------------------------------------------------- */

/* Reads and parses the file at path (a regular file of at most max_bytes). opts may be NULL. */
js_status js_yaml_load_file(const char *path, const js_yaml_opts *opts, js_yaml_doc **out,
                            js_err *err) JS_WUR;

/*
 * Parses len bytes at data (need not be NUL-terminated). name is used in
 * error messages in place of a file name. opts may be NULL.
 */
js_status js_yaml_load_buffer(const char *name, const void *data, size_t len,
                              const js_yaml_opts *opts, js_yaml_doc **out, js_err *err) JS_WUR;

void js_yaml_doc_free(js_yaml_doc *doc);

/* The file name (or buffer name) given at load. */
const char *js_yaml_doc_name(const js_yaml_doc *doc);

/* The root node; never NULL for a loaded doc (an empty document is an empty plain scalar). */
const js_yaml_node *js_yaml_doc_root(const js_yaml_doc *doc);

/* ---- nodes (every accessor accepts NULL and then returns 0 / NULL / false) --------- */

js_yaml_type js_yaml_node_type(const js_yaml_node *n);
/* "scalar", "sequence", "mapping" (for messages). */
const char *js_yaml_type_name(js_yaml_type t);
/* 1-based line where the node starts. */
size_t js_yaml_node_line(const js_yaml_node *n);

/* The scalar's text, NUL-terminated (a scalar never contains a NUL); NULL if not a scalar. */
const char *js_yaml_scalar_str(const js_yaml_node *n);
size_t js_yaml_scalar_len(const js_yaml_node *n);
/* True for a plain (unquoted, non-block) scalar. */
bool js_yaml_scalar_is_plain(const js_yaml_node *n);
/* True for a plain scalar YAML reads as null: empty, "~", "null", "Null", "NULL". */
bool js_yaml_scalar_is_null(const js_yaml_node *n);

size_t js_yaml_seq_len(const js_yaml_node *seq);
const js_yaml_node *js_yaml_seq_item(const js_yaml_node *seq, size_t i);

size_t js_yaml_map_len(const js_yaml_node *map);
const js_yaml_node *js_yaml_map_key(const js_yaml_node *map, size_t i); /* a scalar */
const char *js_yaml_map_key_str(const js_yaml_node *map, size_t i);
size_t js_yaml_map_key_line(const js_yaml_node *map, size_t i);
const js_yaml_node *js_yaml_map_value(const js_yaml_node *map, size_t i);
/* The value under key, or NULL if absent (or map is not a mapping). */
const js_yaml_node *js_yaml_map_get(const js_yaml_node *map, const char *key);
/* Index of key in map; false if absent. */
bool js_yaml_map_find(const js_yaml_node *map, const char *key, size_t *index);

/* ---- key paths for messages -------------------------------------------------------- */

/* Writes "parent.key" (or "key" when parent is empty) to buf and returns buf. */
const char *js_yaml_path_key(char *buf, size_t cap, const char *parent, const char *key);
/* Writes "parent[i]" to buf and returns buf. */
const char *js_yaml_path_index(char *buf, size_t cap, const char *parent, size_t i);

/* ---- errors and typed reading ------------------------------------------------------ */

/*
 * Fills err with the doc's status, the reason and the message
 * "FILE:LINE: PATH: <fmt...>" (LINE omitted when 0, PATH when NULL or empty)
 * and returns the status. (The typed readers below report their own errors
 * as "<domain>.<code>", e.g. config.type.)
 */
js_status js_yaml_fail(const js_yaml_doc *doc, size_t line, const char *path, js_reason reason,
                       js_err *err, const char *fmt, ...) JS_PRINTF(6, 7);
#ifdef __clang_analyzer__
/* For the static analyzer only, like js_err_set in err.h: the doc's status is
 * never JS_OK, which is all the analyzer needs to know (JS_EINVAL stands for
 * it). */
#define js_yaml_fail(...) (js_yaml_fail(__VA_ARGS__), JS_EINVAL)
#endif

/*
 * Copies at most cap-1 bytes of s into buf for quoting in a message, replacing
 * control and non-ASCII bytes with '?' and marking truncation with "...".
 */
const char *js_yaml_printable(char *buf, size_t cap, const char *s);

/* Error ("<domain>.type") unless n has type t. */
js_status js_yaml_expect_type(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                              js_yaml_type t, js_err *err) JS_WUR;

/*
 * Looks key up in map (map must be a mapping). When absent, *out = NULL and
 * it is an error ("<domain>.missing_key", at the mapping's line) if required.
 */
js_status js_yaml_lookup(const js_yaml_doc *doc, const js_yaml_node *map, const char *map_path,
                         const char *key, bool required, const js_yaml_node **out,
                         js_err *err) JS_WUR;

/*
 * A string: any non-null scalar, quoted or plain ("<domain>.type" otherwise).
 * *out is borrowed from the doc.
 */
js_status js_yaml_expect_string(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                                const char **out, js_err *err) JS_WUR;

/*
 * An integer: a plain scalar of decimal digits with an optional leading '-',
 * no leading zeros, no '+', no hex/octal/underscores ("<domain>.integer"), in
 * [min, max] ("<domain>.range").
 */
js_status js_yaml_expect_int(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                             int64_t min, int64_t max, int64_t *out, js_err *err) JS_WUR;

/* A boolean: exactly the plain scalar true or false ("<domain>.boolean"). */
js_status js_yaml_expect_bool(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                              bool *out, js_err *err) JS_WUR;

/* A duration as js_parse_duration() reads it ("<domain>.duration"), in seconds. */
js_status js_yaml_expect_duration(const js_yaml_doc *doc, const js_yaml_node *n, const char *path,
                                  int64_t *out, js_err *err) JS_WUR;

/*
 * map must be a mapping whose keys are all in allowed[0..nallowed); otherwise
 * "<domain>.unknown_key" at the first unknown key's line:
 * "unknown key 'x' (allowed: a, b, c)".
 */
js_status js_yaml_check_keys(const js_yaml_doc *doc, const js_yaml_node *map, const char *path,
                             const char *const *allowed, size_t nallowed, js_err *err) JS_WUR;

#endif
