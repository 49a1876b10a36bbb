/*
 * jwt_audit.c - `jwt-audit`, the compliance tool for the signer's audit log
 * (audit/FORMAT.md): verify a log offline, show and filter its records (a
 * table, or JSON Lines for jq and SIEM ingestion), per-window statistics a
 * security team watches (deny spikes, rate-limit hits, new callers), and
 * RFC 9162 §2.1.3 inclusion proofs of one token's record against a signed
 * checkpoint that an auditor can check without the log.
 *
 * The program is a thin main: the work is the audit library's (reader.h,
 * verify.h, query.h, report.h, proof.h); this file parses arguments, finds
 * the segments, reads proof files and prints.
 *
 * Log segments and proof files are untrusted input: every read is bounded,
 * every field is type- and size-checked, and text from the log is never
 * written raw to a terminal (control bytes are replaced in tables; JSON
 * output is escaped by jansson).
 *
 * Exit codes (documented in `jwt-audit --help`):
 *   0  ok (log intact, proof valid, records shown)
 *   1  verification failed, or the thing asked for was not found
 *   2  usage error
 *   3  I/O or format error (a file cannot be read, or is not what it claims)
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "checkpoint.h"
#include "duration.h"
#include "err.h"
#include "hex.h"
#include "proof.h"
#include "query.h"
#include "reader.h"
#include "record.h"
#include "report.h"
#include "verify.h"

#define EX_OK    0
#define EX_FAIL  1
#define EX_USAGE 2
#define EX_IO    3

/* Bounds for untrusted inputs. */
#define PROOF_FILE_MAX (1024u * 1024u) /* a proof is a few KB */

#define PROG "jwt-audit"

/* ---- small helpers ------------------------------------------------------ */

static void errorf(const char *fmt, ...) JS_PRINTF(1, 2);
static void errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Exit code for a library status: verification verdicts are 1, anything
 * that stopped us reading is 3. */
static int exit_for(js_status st)
{
    switch (st) {
    case JS_OK:
        return EX_OK;
    case JS_EDENIED:
        return EX_FAIL;
    case JS_EINVAL:
    case JS_ELIMIT:
    case JS_EUNAVAIL:
    case JS_EINTERNAL:
    case JS_ECONFIG:
    case JS_ENOTFOUND:
    default:
        return EX_IO;
    }
}

/* ---- time ---------------------------------------------------------------- */

static void format_utc(int64_t secs, char out[32])
{
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "@%" PRId64, secs);
}

/* ---- argument parsing ---------------------------------------------------- */

typedef struct opt_spec {
    const char *name;   /* "--caller" */
    const char **value; /* option with a value */
    bool *flag;         /* option without one */
} opt_spec;

typedef enum { ARGS_OK, ARGS_HELP, ARGS_BAD } args_result;

/* Parses `--name value`, `--name=value`, flags, `--` and positionals. */
static args_result parse_args(int argc, char **argv, const opt_spec *specs, size_t nspecs,
                              const char **pos, size_t *npos)
{
    bool only_pos = false;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return ARGS_HELP;
        const char *eq = strchr(a, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const opt_spec *sp = NULL;
        for (size_t k = 0; k < nspecs; k++)
            if (strlen(specs[k].name) == nlen && strncmp(specs[k].name, a, nlen) == 0)
                sp = &specs[k];
        if (sp == NULL) {
            errorf("unknown option '%.*s'", (int)nlen, a);
            return ARGS_BAD;
        }
        if (sp->flag != NULL) {
            if (eq != NULL) {
                errorf("option %s takes no value", sp->name);
                return ARGS_BAD;
            }
            *sp->flag = true;
            continue;
        }
        if (eq != NULL) {
            *sp->value = eq + 1;
        } else if (i + 1 < argc) {
            *sp->value = argv[++i];
        } else {
            errorf("option %s needs a value", sp->name);
            return ARGS_BAD;
        }
    }
    return ARGS_OK;
}

/* ---- segments and records ------------------------------------------------ */

typedef struct seglist {
    char **paths;
    size_t n, cap;
} seglist;

static void seglist_free(seglist *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->paths[i]);
    free(s->paths);
    memset(s, 0, sizeof *s);
}

static bool seglist_push(seglist *s, const char *p)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        char **np = realloc(s->paths, cap * sizeof *np);
        if (np == NULL)
            return false;
        s->paths = np;
        s->cap = cap;
    }
    char *c = strdup(p);
    if (c == NULL)
        return false;
    s->paths[s->n++] = c;
    return true;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b != NULL ? b + 1 : path;
}

static int seg_path_cmp(const void *a, const void *b)
{
    unsigned long x = js_audit_segment_number(base_name(*(char *const *)a));
    unsigned long y = js_audit_segment_number(base_name(*(char *const *)b));
    return x < y ? -1 : x > y;
}

/* SEGMENT arguments: segment files and log directories (a directory stands
 * for its audit-NNNNNN.log segments). The log order is the segment number
 * (FORMAT.md §1), never the order of the arguments, so every file must have
 * a segment name and no number may appear twice. Stray "audit-*.log" names
 * in a directory are reported on stderr and not read (FORMAT.md §7).
 * Returns an exit code. */
static int seglist_build(const char *const *args, size_t n, seglist *out)
{
    memset(out, 0, sizeof *out);
    if (n == 0) {
        errorf("no SEGMENT given (a segment file or the log directory)");
        return EX_USAGE;
    }
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(args[i], &st) != 0) {
            errorf("%s: %s", args[i], strerror(errno));
            seglist_free(out);
            return EX_IO;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (js_audit_segment_number(base_name(args[i])) == 0) {
                errorf("%s: not a segment file name (audit- + at least 6 digits + .log, "
                       "FORMAT.md §1): the log order comes from the name",
                       args[i]);
                seglist_free(out);
                return EX_USAGE;
            }
            if (!seglist_push(out, args[i]))
                goto oom;
            continue;
        }
        char **paths = NULL, **strays = NULL;
        size_t np = 0, ns = 0;
        js_err err;
        if (js_audit_list_segments_ex(args[i], &paths, &np, &strays, &ns, &err) != JS_OK) {
            errorf("%s: %s", args[i], err.msg);
            seglist_free(out);
            return EX_IO;
        }
        for (size_t k = 0; k < ns; k++)
            errorf("warning: %s/%s: stray file, not a segment name (audit- + at least 6 digits "
                   "+ .log, FORMAT.md §1): ignored",
                   args[i], strays[k]);
        js_audit_segments_free(strays, ns);
        bool ok = true;
        for (size_t k = 0; k < np && ok; k++)
            ok = seglist_push(out, paths[k]);
        js_audit_segments_free(paths, np);
        if (!ok)
            goto oom;
        if (np == 0) {
            errorf("%s: no audit-NNNNNN.log segments in this directory", args[i]);
            seglist_free(out);
            return EX_IO;
        }
    }
    qsort(out->paths, out->n, sizeof *out->paths, seg_path_cmp);
    for (size_t i = 1; i < out->n; i++) {
        if (js_audit_segment_number(base_name(out->paths[i])) ==
            js_audit_segment_number(base_name(out->paths[i - 1]))) {
            errorf("%s and %s: the same segment number given twice", out->paths[i - 1],
                   out->paths[i]);
            seglist_free(out);
            return EX_USAGE;
        }
    }
    return EX_OK;
oom:
    errorf("out of memory");
    seglist_free(out);
    return EX_IO;
}

/* Called for each record; returns EX_OK to go on, anything else stops. */
typedef int (*record_fn)(void *ctx, const js_audit_record *rec);

/* Reads every record of segs in order. A framing error stops the walk with
 * EX_IO after the records before it were handled (and says where). */
static int for_each_record(const seglist *segs, record_fn fn, void *ctx)
{
    js_audit_reader *r = NULL;
    js_err err;
    if (js_audit_reader_new((const char *const *)segs->paths, segs->n, &r, &err) != JS_OK) {
        errorf("%s", err.msg);
        return EX_IO;
    }
    int rc = EX_OK;
    for (;;) {
        js_audit_record rec;
        bool end = false;
        js_status st = js_audit_reader_read(r, &rec, &end, &err);
        if (st == JS_OK && end)
            break;
        if (st == JS_EINVAL) {
            const js_audit_read_error *re = js_audit_reader_error(r);
            if (re != NULL)
                errorf("%s: stopped at offset %" PRIu64 " (%s): %s", re->segment, re->offset,
                       re->torn_tail ? "looks like a torn write at the tail"
                                     : "damage with valid data after it",
                       err.msg);
            else
                errorf("%s", err.msg);
            rc = EX_IO;
            break;
        }
        if (st != JS_OK) {
            errorf("%s", err.msg);
            rc = EX_IO;
            break;
        }
        rc = fn(ctx, &rec);
        if (rc != EX_OK)
            break;
    }
    js_audit_reader_free(r);
    return rc;
}

/* ---- table output --------------------------------------------------------- */

/* Prints s (untrusted) in a cell of exactly width columns (or unbounded when
 * width == 0, the last column): printable ASCII only, so a hostile log cannot
 * drive the terminal; '~' marks a truncated value. */
static void put_cell(const char *s, size_t width, bool right)
{
    char buf[256];
    if (s == NULL || *s == '\0')
        s = "-";
    size_t cap = width > 0 && width < sizeof buf ? width : sizeof buf - 1;
    size_t n = 0, len = strlen(s);
    for (; n < cap && n < len; n++) {
        unsigned char c = (unsigned char)s[n];
        buf[n] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (n < len && n > 0)
        buf[n - 1] = '~';
    buf[n] = '\0';
    if (width == 0)
        fputs(buf, stdout);
    else if (right)
        printf("%*s ", (int)width, buf);
    else
        printf("%-*s ", (int)width, buf);
}

/* ---- verify ---------------------------------------------------------------- */

/* --max-gap DURATION: digits and a unit ms, s or m ("6s", "1500ms"); at
 * most JS_AUDIT_LATE_MAX_MS. */
static bool parse_gap_arg(const char *s, uint64_t *ms)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        if (i >= 12)
            return false; /* bounded: 12 digits are already far beyond the cap */
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0)
        return false;
    uint64_t unit = 0;
    if (strcmp(s + i, "ms") == 0)
        unit = 1;
    else if (strcmp(s + i, "s") == 0)
        unit = 1000;
    else if (strcmp(s + i, "m") == 0)
        unit = 60000;
    if (unit == 0 || v == 0 || v > JS_AUDIT_LATE_MAX_MS / unit)
        return false;
    *ms = v * unit;
    return true;
}

static void print_gaps(const js_audit_verify_report *rep)
{
    if (rep->largest_gap_ms < 0) {
        printf("  largest gap between checkpoints: none (fewer than two of a running writer)\n");
        return;
    }
    printf("  largest gap between checkpoints: %" PRId64 " ms (before checkpoint seq %" PRIu64
           ")\n",
           rep->largest_gap_ms, rep->largest_gap_seq);
    if (rep->stalls == 0)
        return;
    printf("  stalls: %" PRIu64 " (gaps over the limit the writer accounted for, signed)\n",
           rep->stalls);
    uint64_t n = rep->stalls < JS_AUDIT_STALLS_MAX ? rep->stalls : JS_AUDIT_STALLS_MAX;
    for (uint64_t i = 0; i < n; i++) {
        const js_audit_stall *t = &rep->stall[i];
        printf("    stall: checkpoints %" PRIu64 " -> %" PRIu64 ": gap %" PRId64
               " ms, late_ms %" PRIu64,
               t->from_seq, t->seq, t->gap_ms, t->late_ms);
        if (t->late_why[0] != '\0')
            printf(", late_why %s (%" PRIu64 " ms)", t->late_why, t->late_why_ms);
        printf("\n");
    }
    if (rep->stalls > n)
        printf("    ... and %" PRIu64 " more\n", rep->stalls - n);
}

static const char k_verify_usage[] =
    "usage: jwt-audit verify [--pubkey AUDIT.pem] [--keys FILE] [--checkpoint FILE]\n"
    "                        [--max-gap DURATION] SEGMENT...\n"
    "\n"
    "Checks the whole log from seq 1: framing (length, CRC-32C), sequence\n"
    "continuity, the SHA-256 hash chain, every checkpoint's Merkle root (RFC 6962)\n"
    "and links, every checkpoint signature (with --pubkey), the gap between\n"
    "checkpoints, and that the log contains and extends the off-host checkpoint\n"
    "FILE (so truncation and rollback are detected). Reports the unsigned tail\n"
    "(records after the last checkpoint).\n"
    "\n"
    "SEGMENT is a segment file (audit-NNNNNN.log) or the log directory; segments\n"
    "are read in segment-number order whatever the argument order. Stray\n"
    "audit-*.log names in a directory (audit-4.log) are reported and ignored.\n"
    "\n"
    "  --pubkey AUDIT.pem   the audit public key (audit-key.pem next to the log);\n"
    "                       without it signatures are NOT checked (and said so);\n"
    "                       after a key rotation, the FIRST key of the log\n"
    "  --keys FILE          PEM public keys a checkpoint may announce as the next\n"
    "                       audit key (next_key, FORMAT.md §5.4), besides the\n"
    "                       audit-key-*.pem files next to the log; a key is used\n"
    "                       only once a checkpoint signed by the key before it\n"
    "                       names it; needs --pubkey\n"
    "  --checkpoint FILE    a checkpoint.json copied off-host earlier\n"
    "  --max-gap DURATION   the largest gap between checkpoints tolerated without\n"
    "                       the writer's signed late_ms (e.g. 5s, 1500ms, 2m);\n"
    "                       default 2 x max(heartbeat_ms, interval_ms) + 1s. A\n"
    "                       longer gap that the later checkpoint's late_ms covers\n"
    "                       is a stall (reported, exit 0); one it does not cover\n"
    "                       fails (audit.gap)\n"
    "\n"
    "exit: 0 intact, 1 damaged (first bad seq and offset, crash damage or\n"
    "tampering), 2 usage, 3 cannot read the inputs\n";

static int cmd_verify(int argc, char **argv)
{
    const char *pubkey = NULL, *checkpoint = NULL, *max_gap = NULL, *keys = NULL;
    const opt_spec specs[] = {{"--pubkey", &pubkey, NULL},
                              {"--checkpoint", &checkpoint, NULL},
                              {"--max-gap", &max_gap, NULL},
                              {"--keys", &keys, NULL}};
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    size_t npos = 0;
    if (pos == NULL)
        return EX_IO;
    args_result ar = parse_args(argc, argv, specs, 4, pos, &npos);
    uint64_t max_gap_ms = 0;
    if (ar == ARGS_OK && max_gap != NULL && !parse_gap_arg(max_gap, &max_gap_ms)) {
        errorf("--max-gap %s: not a duration (digits and ms, s or m, e.g. 5s)", max_gap);
        ar = ARGS_BAD;
    }
    /* A next key is trusted only through a checkpoint signed by the key
     * before it (FORMAT.md §5.4): without --pubkey no signature is checked,
     * so --keys would be silently ignored. */
    if (ar == ARGS_OK && keys != NULL && pubkey == NULL) {
        errorf("--keys needs --pubkey (next keys are trusted only through checkpoints "
               "signed by the first key)");
        ar = ARGS_BAD;
    }
    if (ar != ARGS_OK) {
        free(pos);
        fputs(k_verify_usage, ar == ARGS_HELP ? stdout : stderr);
        return ar == ARGS_HELP ? EX_OK : EX_USAGE;
    }
    seglist segs;
    int rc = seglist_build(pos, npos, &segs);
    free(pos);
    if (rc != EX_OK) {
        if (rc == EX_USAGE)
            fputs(k_verify_usage, stderr);
        return rc;
    }
    js_audit_verify_opts opts = {
        .segments = (const char *const *)segs.paths,
        .n_segments = segs.n,
        .pubkey_path = pubkey,
        .checkpoint_path = checkpoint,
        .max_gap_ms = max_gap_ms,
    };
    seglist keyfiles;
    memset(&keyfiles, 0, sizeof keyfiles);
    if (pubkey != NULL && keys != NULL) {
        keyfiles.paths = calloc(1, sizeof *keyfiles.paths);
        if (keyfiles.paths != NULL)
            keyfiles.paths[0] = strdup(keys);
        rc = keyfiles.paths == NULL || keyfiles.paths[0] == NULL ? EX_IO : EX_OK;
        keyfiles.n = rc == EX_OK ? 1 : 0;
    }
    if (rc == EX_OK && pubkey != NULL && segs.n > 0) {
        js_err kerr;
        if (js_audit_key_files_near(segs.paths[0], &keyfiles.paths, &keyfiles.n, &kerr) != JS_OK) {
            errorf("%s", kerr.msg);
            rc = EX_IO;
        }
        keyfiles.cap = keyfiles.n;
    }
    opts.key_paths = (const char *const *)keyfiles.paths;
    opts.n_key_paths = keyfiles.n;
    js_audit_verify_report *rep = rc == EX_OK ? calloc(1, sizeof *rep) : NULL;
    js_err err;
    js_err_clear(&err);
    if (rep == NULL) {
        seglist_free(&segs);
        seglist_free(&keyfiles);
        return rc == EX_OK ? EX_IO : rc;
    }
    js_status st = js_audit_verify(&opts, rep, &err);
    seglist_free(&segs);
    seglist_free(&keyfiles);
    if (st != JS_OK) {
        errorf("cannot verify: %s", err.msg);
        free(rep);
        return exit_for(st);
    }
    if (rep->intact) {
        printf("OK: log intact: %" PRIu64 " records, seq 1..%" PRIu64 ", %" PRIu64
               " checkpoints, %" PRIu64 " writer restarts\n",
               rep->records, rep->last_seq, rep->checkpoints, rep->restarts);
    } else {
        printf("FAILED: first bad record seq %" PRIu64 " in %s at offset %" PRIu64 "\n",
               rep->bad_seq, rep->bad_segment, rep->bad_offset);
        printf("  %s: %s\n", js_reason_name(rep->reason), rep->message);
        if (rep->reason == JS_R_AUDIT_GAP && rep->signatures_checked)
            /* FORMAT.md §7 rule 5: with the chain, the tree, the links and
             * the signatures intact up to here, no sealed record is missing;
             * what failed is the writer's promise to seal on time or say
             * why. Not a crash, so it fails; but it is not proof of a cut. */
            printf("  looks like: UNEXPLAINED GAP (not a deletion: chain, Merkle tree, links "
                   "and signatures are intact; the writer did not seal on time and did not "
                   "record why: a wall-clock step, a writer without late_ms, or the audit key "
                   "used outside the writer)\n");
        else
            printf("  looks like: %s\n",
                   rep->damage == JS_AUDIT_DAMAGE_CRASH
                       ? "crash damage (a torn write at the tail; the signer's recovery "
                         "truncates it)"
                       : "TAMPERING (damage that a crash cannot cause)");
        printf("  valid before it: %" PRIu64 " records, %" PRIu64 " checkpoints\n", rep->records,
               rep->checkpoints);
    }
    if (rep->have_checkpoint) {
        char head[JS_AUDIT_HEX_LEN + 1], root[JS_AUDIT_HEX_LEN + 1];
        js_hex_encode(rep->latest.root, 32, root);
        js_hex_encode(rep->head, 32, head);
        printf("  latest checkpoint: seq %" PRIu64 ", tree size %" PRIu64 ", %s, origin %s\n",
               rep->latest.seq, rep->latest.tree_size, rep->latest.time, rep->latest.origin);
        printf("  merkle root: %s\n", root);
        printf("  chain head:  %s (seq %" PRIu64 ")\n", head, rep->last_seq);
    } else {
        printf("  no valid checkpoint: nothing in this log is signed\n");
    }
    printf("  unsigned tail: %" PRIu64 " record%s after the last checkpoint%s\n",
           rep->unsigned_tail, rep->unsigned_tail == 1 ? "" : "s",
           rep->unsigned_tail > 0 ? " (not yet covered by a signature)" : "");
    print_gaps(rep);
    printf("  signatures: %s\n",
           rep->signatures_checked ? "checked" : "NOT checked (no --pubkey given)");
    if (rep->key_changes > 0)
        printf("  audit key rotations followed: %" PRIu64 " (FORMAT.md §5.4 next_key)\n",
               rep->key_changes);
    if (checkpoint != NULL)
        printf("  checkpoint file %s: %s\n", checkpoint,
               rep->checkpoint_file_matched ? "found in the log, and the log extends it"
                                            : "NOT matched");
    int out = rep->intact ? EX_OK : EX_FAIL;
    free(rep);
    return out;
}

/* ---- show ------------------------------------------------------------------ */

static const char k_show_usage[] =
    "usage: jwt-audit show [--caller ID] [--sub S] [--jti J] [--kid K]\n"
    "                      [--decision allow|deny|error] [--since T] [--until T] [--json]\n"
    "                      SEGMENT...\n"
    "\n"
    "Prints the records that match every filter given, as an aligned table\n"
    "(time, seq, type, caller, decision, reason, key/kid, jti, sub) or, with\n"
    "--json, as JSON Lines: one record object per line, for jq or a SIEM.\n"
    "Only framing is checked here; use `jwt-audit verify` for integrity.\n"
    "\n"
    "  --caller ID, --sub S, --jti J, --kid K   exact match of that member\n"
    "  --decision allow|deny|error              decision of sign requests\n"
    "  --since T, --until T   records with since <= time < until; T is RFC 3339\n"
    "                         (2026-11-23T10:00:00Z) or Unix seconds\n"
    "  --json                 JSON Lines instead of the table\n"
    "\n"
    "In the table, bytes outside printable ASCII are shown as '?' and long\n"
    "values are cut, marked '~'; --json output is exact.\n"
    "\n"
    "exit: 0 ok (even if nothing matched), 2 usage, 3 unreadable or damaged\n"
    "segment (the records before the damage are printed)\n";

typedef struct show_ctx {
    js_audit_query q;
    bool json;
    uint64_t shown;
} show_ctx;

static void show_header(void)
{
    put_cell("TIME", 24, false);
    put_cell("SEQ", 8, true);
    put_cell("TYPE", 10, false);
    put_cell("CALLER", 28, false);
    put_cell("DECISION", 8, false);
    put_cell("REASON", 24, false);
    put_cell("KEY/KID", 28, false);
    put_cell("JTI", 36, false);
    put_cell("SUB", 0, false);
    putchar('\n');
}

static int show_record(void *ctx, const js_audit_record *rec)
{
    show_ctx *c = ctx;
    if (!js_audit_query_match(&c->q, rec->json))
        return EX_OK;
    c->shown++;
    if (c->json) {
        /* The record exactly as logged: the payload is canonical compact JSON
         * (FORMAT.md §3) on one line; re-encode only if it is not. */
        if (memchr(rec->payload, '\n', rec->payload_len) == NULL &&
            memchr(rec->payload, '\r', rec->payload_len) == NULL) {
            fwrite(rec->payload, 1, rec->payload_len, stdout);
        } else {
            char *s = json_dumps(rec->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (s == NULL)
                return EX_IO;
            fputs(s, stdout);
            free(s);
        }
        putchar('\n');
        return EX_OK;
    }
    char seq[24], keykid[160];
    snprintf(seq, sizeof seq, "%" PRIu64, rec->seq);
    const char *key = js_audit_member_str(rec->json, JS_AUDIT_F_KEY),
               *kid = js_audit_member_str(rec->json, JS_AUDIT_F_KID);
    if (key != NULL && kid != NULL)
        snprintf(keykid, sizeof keykid, "%s/%s", key, kid);
    else
        snprintf(keykid, sizeof keykid, "%s", key != NULL ? key : kid != NULL ? kid : "-");
    put_cell(js_audit_member_str(rec->json, JS_AUDIT_F_TIME), 24, false);
    put_cell(seq, 8, true);
    put_cell(rec->type, 10, false);
    put_cell(js_audit_member_str(rec->json, JS_AUDIT_F_CALLER), 28, false);
    put_cell(js_audit_member_str(rec->json, JS_AUDIT_F_DECISION), 8, false);
    put_cell(js_audit_member_str(rec->json, JS_AUDIT_F_REASON), 24, false);
    put_cell(keykid, 28, false);
    put_cell(js_audit_member_str(rec->json, JS_AUDIT_F_JTI), 36, false);
    put_cell(js_audit_member_str(rec->json, JS_AUDIT_F_SUB), 0, false);
    putchar('\n');
    return EX_OK;
}

static int cmd_show(int argc, char **argv)
{
    show_ctx c = {0};
    const char *since = NULL, *until = NULL;
    const opt_spec specs[] = {
        {"--caller", &c.q.caller, NULL},     {"--sub", &c.q.sub, NULL},
        {"--jti", &c.q.jti, NULL},           {"--kid", &c.q.kid, NULL},
        {"--decision", &c.q.decision, NULL}, {"--since", &since, NULL},
        {"--until", &until, NULL},           {"--json", NULL, &c.json},
    };
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    size_t npos = 0;
    if (pos == NULL)
        return EX_IO;
    args_result ar = parse_args(argc, argv, specs, sizeof specs / sizeof specs[0], pos, &npos);
    int rc = EX_OK;
    if (ar == ARGS_OK && c.q.decision != NULL && strcmp(c.q.decision, "allow") != 0 &&
        strcmp(c.q.decision, "deny") != 0 && strcmp(c.q.decision, "error") != 0) {
        errorf("--decision must be allow, deny or error, not '%s'", c.q.decision);
        ar = ARGS_BAD;
    }
    if (ar == ARGS_OK && since != NULL &&
        !(c.q.has_since = js_audit_time_arg_parse(since, &c.q.since_ms))) {
        errorf("--since '%s' is neither RFC 3339 (2026-11-23T10:00:00Z) nor Unix seconds", since);
        ar = ARGS_BAD;
    }
    if (ar == ARGS_OK && until != NULL &&
        !(c.q.has_until = js_audit_time_arg_parse(until, &c.q.until_ms))) {
        errorf("--until '%s' is neither RFC 3339 (2026-11-23T10:00:00Z) nor Unix seconds", until);
        ar = ARGS_BAD;
    }
    if (ar != ARGS_OK) {
        free(pos);
        fputs(k_show_usage, ar == ARGS_HELP ? stdout : stderr);
        return ar == ARGS_HELP ? EX_OK : EX_USAGE;
    }
    seglist segs;
    rc = seglist_build(pos, npos, &segs);
    free(pos);
    if (rc != EX_OK) {
        if (rc == EX_USAGE)
            fputs(k_show_usage, stderr);
        return rc;
    }
    if (!c.json)
        show_header();
    rc = for_each_record(&segs, show_record, &c);
    seglist_free(&segs);
    if (fflush(stdout) != 0) {
        errorf("writing output: %s", strerror(errno));
        return EX_IO;
    }
    return rc;
}

/* ---- stats ------------------------------------------------------------------ */

static const char k_stats_usage[] =
    "usage: jwt-audit stats [--window D] [--json] SEGMENT...\n"
    "\n"
    "Per time window (D like 30s, 1m, 1h, 1d; default 1m), per caller and reason:\n"
    "how many requests were allowed, denied or failed. Folded records (denials\n"
    "beyond the denial budget, rate-limited ones) count as their \"count\". Each\n"
    "window also gets its totals, its rate-limited denials (reason rate.*) and\n"
    "the callers first seen in it (NEW; every caller is new in the log's first\n"
    "window) -- deny spikes, rate-limit hits, new callers. Requests are records\n"
    "of type sign, admin and denials; every other record (start, stop, policy,\n"
    "key, incident, hsm, recovery, checkpoint) is a lifecycle event, counted by\n"
    "type and event in its own section, never as a caller.\n"
    "\n"
    "  --window D   window length (default 1m)\n"
    "  --json       one JSON document: {\"window_seconds\":N,\"windows\":[...],\n"
    "               \"lifecycle\":[{\"type\",\"event\",\"count\",\"first\",\"last\"}]}\n"
    "\n"
    "exit: 0 ok, 2 usage, 3 unreadable or damaged segment\n";

/* The lifecycle section, sorted by type then event. */
static int lifecycle_print(const js_audit_stats *s, json_t *doc)
{
    json_t *arr = NULL;
    js_err err;
    if (js_audit_stats_lifecycle(s, &arr, &err) != JS_OK) {
        errorf("%s", err.msg);
        return EX_IO;
    }
    size_t n = json_array_size(arr);
    if (doc == NULL && n > 0) {
        printf("lifecycle events (not requests), whole log\n  ");
        put_cell("TYPE", 12, false);
        put_cell("EVENT", 16, false);
        put_cell("COUNT", 8, true);
        put_cell("FIRST", 24, false);
        put_cell("LAST", 0, false);
        putchar('\n');
    }
    for (size_t i = 0; doc == NULL && i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        char cnt[24];
        snprintf(cnt, sizeof cnt, "%" PRId64,
                 (int64_t)json_integer_value(json_object_get(o, "count")));
        printf("  ");
        put_cell(js_audit_member_str(o, "type"), 12, false);
        put_cell(js_audit_member_str(o, "event"), 16, false);
        put_cell(cnt, 8, true);
        put_cell(js_audit_member_str(o, "first"), 24, false);
        put_cell(js_audit_member_str(o, "last"), 0, false);
        putchar('\n');
    }
    if (doc == NULL) {
        json_decref(arr);
        return EX_OK;
    }
    return json_object_set_new(doc, "lifecycle", arr) == 0 ? EX_OK : EX_IO;
}

/* Counts one record (for_each_record). */
static int stats_record(void *ctx, const js_audit_record *rec)
{
    js_err err;
    if (js_audit_stats_add(ctx, rec, &err) != JS_OK) {
        errorf("%s", err.msg);
        return EX_IO;
    }
    return EX_OK;
}

static int stats_print(const js_audit_stats *s, int64_t window, bool as_json)
{
    const js_audit_stats_row *srows = NULL;
    size_t n = js_audit_stats_rows(s, &srows);
    json_t *doc = NULL, *windows = NULL;
    if (as_json) {
        doc = json_object();
        windows = json_array();
        if (doc == NULL || windows == NULL ||
            json_object_set_new(doc, "window_seconds", json_integer(window)) != 0 ||
            json_object_set(doc, "windows", windows) != 0) {
            json_decref(doc);
            json_decref(windows);
            return EX_IO;
        }
        json_decref(windows); /* doc holds it */
    }
    int rc = EX_OK;
    for (size_t i = 0; i < n && rc == EX_OK;) {
        size_t j = i;
        uint64_t allowed = 0, denied = 0, errors = 0, rl = 0, newc = 0;
        for (; j < n && srows[j].bucket == srows[i].bucket; j++) {
            allowed += srows[j].allowed;
            denied += srows[j].denied;
            errors += srows[j].errors;
            rl += srows[j].rate_limited;
            /* count each new caller once, not once per reason */
            if (srows[j].new_caller &&
                (j == i || strcmp(srows[j].caller, srows[j - 1].caller) != 0))
                newc++;
        }
        char start[32];
        format_utc(srows[i].bucket, start);
        if (!as_json) {
            printf("window %s  allowed %" PRIu64 "  denied %" PRIu64 "  errors %" PRIu64
                   "  rate-limited %" PRIu64 "  new callers %" PRIu64 "\n",
                   start, allowed, denied, errors, rl, newc);
            printf("  ");
            put_cell("CALLER", 36, false);
            put_cell("REASON", 28, false);
            put_cell("ALLOWED", 8, true);
            put_cell("DENIED", 8, true);
            put_cell("ERRORS", 8, true);
            put_cell("RATELIM", 8, true);
            put_cell("NEW", 0, false);
            putchar('\n');
            for (size_t k = i; k < j; k++) {
                const js_audit_stats_row *r = &srows[k];
                char a[24], d[24], e[24], l[24];
                snprintf(a, sizeof a, "%" PRIu64, r->allowed);
                snprintf(d, sizeof d, "%" PRIu64, r->denied);
                snprintf(e, sizeof e, "%" PRIu64, r->errors);
                snprintf(l, sizeof l, "%" PRIu64, r->rate_limited);
                printf("  ");
                put_cell(r->caller, 36, false);
                put_cell(r->reason, 28, false);
                put_cell(a, 8, true);
                put_cell(d, 8, true);
                put_cell(e, 8, true);
                put_cell(l, 8, true);
                fputs(r->new_caller ? "new" : "", stdout);
                putchar('\n');
            }
            putchar('\n');
        } else {
            json_t *w = json_object(), *rows = json_array(), *nc = json_array();
            if (w == NULL || rows == NULL || nc == NULL) {
                json_decref(w);
                json_decref(rows);
                json_decref(nc);
                rc = EX_IO;
                break;
            }
            bool ok = json_object_set_new(w, "start", json_string(start)) == 0 &&
                      json_object_set_new(w, "start_unix", json_integer(srows[i].bucket)) == 0 &&
                      json_object_set_new(w, "allowed", json_integer((json_int_t)allowed)) == 0 &&
                      json_object_set_new(w, "denied", json_integer((json_int_t)denied)) == 0 &&
                      json_object_set_new(w, "errors", json_integer((json_int_t)errors)) == 0 &&
                      json_object_set_new(w, "rate_limited", json_integer((json_int_t)rl)) == 0;
            for (size_t k = i; k < j && ok; k++) {
                const js_audit_stats_row *r = &srows[k];
                json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "caller", r->caller,
                                      "reason", r->reason, "allowed", (json_int_t)r->allowed,
                                      "denied", (json_int_t)r->denied, "errors",
                                      (json_int_t)r->errors, "rate_limited",
                                      (json_int_t)r->rate_limited, "new_caller", r->new_caller);
                ok = o != NULL && json_array_append_new(rows, o) == 0;
                if (ok && r->new_caller && (k == i || strcmp(r->caller, srows[k - 1].caller)))
                    ok = json_array_append_new(nc, json_string(r->caller)) == 0;
            }
            ok = ok && json_object_set_new(w, "new_callers", nc) == 0;
            nc = NULL;
            ok = ok && json_object_set_new(w, "rows", rows) == 0;
            rows = NULL;
            ok = ok && json_array_append_new(windows, w) == 0;
            if (!ok) {
                rc = EX_IO;
                break;
            }
        }
        i = j;
    }
    if (rc == EX_OK)
        rc = lifecycle_print(s, doc);
    if (as_json && rc == EX_OK) {
        if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
            rc = EX_IO;
        putchar('\n');
    }
    json_decref(doc);
    return rc;
}

static int cmd_stats(int argc, char **argv)
{
    const char *window = "1m";
    bool as_json = false;
    const opt_spec specs[] = {{"--window", &window, NULL}, {"--json", NULL, &as_json}};
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    size_t npos = 0;
    if (pos == NULL)
        return EX_IO;
    int64_t window_s = 0;
    args_result ar = parse_args(argc, argv, specs, 2, pos, &npos);
    js_err err;
    if (ar == ARGS_OK && js_parse_duration(window, &window_s, &err) != JS_OK) {
        errorf("--window: %s", err.msg);
        ar = ARGS_BAD;
    }
    if (ar != ARGS_OK) {
        free(pos);
        fputs(k_stats_usage, ar == ARGS_HELP ? stdout : stderr);
        return ar == ARGS_HELP ? EX_OK : EX_USAGE;
    }
    seglist segs;
    int rc = seglist_build(pos, npos, &segs);
    free(pos);
    if (rc != EX_OK) {
        if (rc == EX_USAGE)
            fputs(k_stats_usage, stderr);
        return rc;
    }
    js_audit_stats *st = NULL;
    if (js_audit_stats_new(window_s, &st, &err) != JS_OK) {
        errorf("%s", err.msg);
        rc = EX_IO;
    } else {
        rc = for_each_record(&segs, stats_record, st);
    }
    int walk_rc = rc;
    /* Print what was read even if a damaged segment stopped the walk. */
    if (st != NULL && (rc == EX_OK || rc == EX_IO)) {
        js_audit_stats_finish(st);
        rc = stats_print(st, window_s, as_json);
        if (rc == EX_OK)
            rc = walk_rc;
    }
    uint64_t no_time = st != NULL ? js_audit_stats_no_time(st) : 0;
    if (no_time > 0)
        errorf("warning: %" PRIu64 " request records had no valid time and were not counted",
               no_time);
    js_audit_stats_free(st);
    seglist_free(&segs);
    if (fflush(stdout) != 0)
        return EX_IO;
    return rc;
}

/* ---- prove ------------------------------------------------------------------- */

static const char k_prove_usage[] =
    "usage: jwt-audit prove --jti J SEGMENT...\n"
    "\n"
    "Finds the record of the token with jti J and prints a self-contained JSON\n"
    "inclusion proof (RFC 9162 §2.1.3) of it against the LATEST signed checkpoint\n"
    "in the log: the record's exact payload bytes (the JSON string \"payload\"),\n"
    "its leaf index (seq - 1), the tree size and root, the audit path (hex), and\n"
    "the full checkpoint record with its signature. Give the proof to\n"
    "`jwt-audit check-proof`; it needs only the proof and the audit public key.\n"
    "\n"
    "exit: 0 proof printed, 1 no such jti, the record is not yet covered by a\n"
    "checkpoint, or the log does not match its checkpoint, 2 usage, 3 unreadable\n"
    "or damaged segment\n";

/* Feeds one record to the prover: a record that does not fit the log's
 * order or a damaged checkpoint is a verdict (1), a bound or memory is 3. */
static int prove_record(void *ctx, const js_audit_record *rec)
{
    js_err err;
    js_status st = js_audit_prover_add(ctx, rec, &err);
    if (st == JS_OK)
        return EX_OK;
    errorf("%s", err.msg);
    return st == JS_EINVAL ? EX_FAIL : EX_IO;
}

/* Prints the proof of what the prover was fed. */
static int prove_emit(const js_audit_prover *p, const char *jti)
{
    uint64_t matches = js_audit_prover_matches(p);
    if (js_audit_prover_seq(p) != 0 && matches > 1)
        errorf("warning: jti '%s' appears in %" PRIu64 " records; proving the first (seq %" PRIu64
               ")",
               jti, matches, js_audit_prover_seq(p));
    json_t *doc = NULL;
    js_err err;
    if (js_audit_prover_build(p, &doc, &err) != JS_OK) {
        errorf("%s", err.msg);
        return EX_FAIL;
    }
    int rc = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? EX_OK : EX_IO;
    putchar('\n');
    json_decref(doc);
    return rc;
}

static int cmd_prove(int argc, char **argv)
{
    const char *jti = NULL;
    const opt_spec specs[] = {{"--jti", &jti, NULL}};
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    size_t npos = 0;
    if (pos == NULL)
        return EX_IO;
    args_result ar = parse_args(argc, argv, specs, 1, pos, &npos);
    if (ar == ARGS_OK && (jti == NULL || *jti == '\0')) {
        errorf("--jti is required");
        ar = ARGS_BAD;
    }
    if (ar != ARGS_OK) {
        free(pos);
        fputs(k_prove_usage, ar == ARGS_HELP ? stdout : stderr);
        return ar == ARGS_HELP ? EX_OK : EX_USAGE;
    }
    seglist segs;
    int rc = seglist_build(pos, npos, &segs);
    free(pos);
    if (rc != EX_OK) {
        if (rc == EX_USAGE)
            fputs(k_prove_usage, stderr);
        return rc;
    }
    js_audit_prover *p = NULL;
    js_err err;
    if (js_audit_prover_new(jti, &p, &err) != JS_OK) {
        errorf("%s", err.msg);
        seglist_free(&segs);
        return EX_IO;
    }
    rc = for_each_record(&segs, prove_record, p);
    /* A torn tail after the latest checkpoint does not affect what it
     * covers: prove from what was read (for_each_record said where). */
    if (rc == EX_OK || rc == EX_IO)
        rc = prove_emit(p, jti) == EX_OK
                 ? EX_OK
                 : (rc == EX_IO && js_audit_prover_seq(p) == 0 ? EX_IO : EX_FAIL);
    js_audit_prover_free(p);
    seglist_free(&segs);
    if (fflush(stdout) != 0)
        return EX_IO;
    return rc;
}

/* ---- check-proof --------------------------------------------------------------- */

static const char k_check_usage[] =
    "usage: jwt-audit check-proof --pubkey AUDIT.pem PROOF\n"
    "\n"
    "Verifies a proof from `jwt-audit prove` WITHOUT the log: the checkpoint's\n"
    "ES256 signature under the audit public key (FORMAT.md), the leaf hash of\n"
    "the payload (RFC 6962 §2.1) and its audit path up to the checkpoint's\n"
    "Merkle root (RFC 9162 §2.1.3.2). PROOF is a file, or - for stdin.\n"
    "Prints the record's jti, caller and time and \"proof OK\".\n"
    "\n"
    "exit: 0 proof OK, 1 proof does not verify, 2 usage, 3 unreadable or\n"
    "malformed PROOF or key\n";

/* Reads at most max bytes of path ("-" = stdin); more is an error. */
static int read_bounded(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        errorf("%s: %s", path, strerror(errno));
        return EX_IO;
    }
    char *buf = malloc(max + 1);
    size_t n = 0;
    int rc = EX_OK;
    if (buf == NULL) {
        rc = EX_IO;
    } else {
        n = fread(buf, 1, max + 1, f);
        if (ferror(f)) {
            errorf("%s: read error", path);
            rc = EX_IO;
        } else if (n > max) {
            errorf("%s: larger than %zu bytes; not a proof", path, max);
            rc = EX_IO;
        }
    }
    if (f != stdin)
        fclose(f);
    if (rc != EX_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return EX_OK;
}

/* Checks the proof document and prints the verdict: malformed is 3 (on
 * stderr), does not verify is 1 ("proof FAILED" on stdout). */
static int check_proof(const json_t *doc, EVP_PKEY *pub)
{
    js_audit_proof_result res;
    js_err err;
    if (js_audit_proof_check(doc, pub, &res, &err) != JS_OK) {
        errorf("proof: %s", err.msg);
        js_audit_proof_result_cleanup(&res);
        return EX_IO;
    }
    if (!res.valid) {
        printf("proof FAILED: %s\n", res.message);
        js_audit_proof_result_cleanup(&res);
        return EX_FAIL;
    }
    const js_audit_checkpoint *cp = &res.checkpoint;
    printf("record: seq %" PRIu64 ", jti ", res.seq);
    put_cell(js_audit_member_str(res.record, JS_AUDIT_F_JTI), 0, false);
    printf(", caller ");
    put_cell(js_audit_member_str(res.record, JS_AUDIT_F_CALLER), 0, false);
    printf(", time ");
    put_cell(js_audit_member_str(res.record, JS_AUDIT_F_TIME), 0, false);
    printf("\ncheckpoint: seq %" PRIu64 ", tree size %" PRIu64 ", %s, origin ", cp->seq,
           cp->tree_size, cp->time);
    put_cell(cp->origin, 0, false);
    printf("\nproof OK\n");
    js_audit_proof_result_cleanup(&res);
    return EX_OK;
}

static int cmd_check_proof(int argc, char **argv)
{
    const char *pubkey = NULL;
    const opt_spec specs[] = {{"--pubkey", &pubkey, NULL}};
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    size_t npos = 0;
    if (pos == NULL)
        return EX_IO;
    args_result ar = parse_args(argc, argv, specs, 1, pos, &npos);
    if (ar == ARGS_OK && pubkey == NULL) {
        errorf("--pubkey is required");
        ar = ARGS_BAD;
    }
    if (ar == ARGS_OK && npos != 1) {
        errorf("exactly one PROOF file (or -) is needed");
        ar = ARGS_BAD;
    }
    const char *proof_path = npos > 0 ? pos[0] : NULL;
    free(pos);
    if (ar != ARGS_OK) {
        fputs(k_check_usage, ar == ARGS_HELP ? stdout : stderr);
        return ar == ARGS_HELP ? EX_OK : EX_USAGE;
    }
    EVP_PKEY *pub = NULL;
    js_err err;
    if (js_audit_pubkey_load(pubkey, &pub, &err) != JS_OK) {
        errorf("%s: %s", pubkey, err.msg);
        return EX_IO;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = read_bounded(proof_path, PROOF_FILE_MAX, &text, &len);
    if (rc == EX_OK) {
        json_error_t jerr;
        json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(doc)) {
            errorf("%s: not a JSON proof object: %s", proof_path, doc == NULL ? jerr.text : "");
            rc = EX_IO;
        } else {
            rc = check_proof(doc, pub);
        }
        json_decref(doc);
    }
    free(text);
    EVP_PKEY_free(pub);
    if (fflush(stdout) != 0)
        return EX_IO;
    return rc;
}

/* ---- main ------------------------------------------------------------------------ */

static const char k_usage[] =
    "usage: jwt-audit COMMAND [OPTIONS] ...\n"
    "       jwt-audit --help | --version\n"
    "\n"
    "The compliance tool of jwt-signer's audit log (audit/FORMAT.md).\n"
    "\n"
    "commands:\n"
    "  verify       check framing, chain, Merkle roots, signatures, checkpoint file\n"
    "  show         print (filtered) records as a table or JSON Lines\n"
    "  stats        allowed/denied counts per window, caller and reason\n"
    "  prove        an inclusion proof of one token's record (by jti)\n"
    "  check-proof  verify such a proof without the log\n"
    "\n"
    "`jwt-audit COMMAND --help` describes each.\n"
    "\n"
    "exit codes: 0 ok; 1 verification failed or not found; 2 usage;\n"
    "3 I/O or format error (unreadable file, damaged segment, malformed proof)\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(k_usage, stderr);
        return EX_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(k_usage, stdout);
        return EX_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("jwt-audit %s\n", JS_VERSION);
        return EX_OK;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"verify", cmd_verify},
        {"show", cmd_show},
        {"stats", cmd_stats},
        {"prove", cmd_prove},
        {"check-proof", cmd_check_proof},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 2, argv + 2);
    errorf("unknown command '%s'", cmd);
    fputs(k_usage, stderr);
    return EX_USAGE;
}
