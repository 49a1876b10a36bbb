/*
 * test_pbcheck.c - unit tests for the protobuf wire-format string check
 * (signer/rpc/pbcheck.h): every string field of every message of
 * proto/jwtsigner/v1/signer.proto refuses an embedded NUL and malformed
 * UTF-8 and names itself; bytes and unknown fields pass; hostile varints,
 * lengths past the end, bad field numbers and wire types are malformed; deep
 * nesting is bounded (with a hand-made self-referential descriptor, since the
 * contract has no nested message yet); random mutations never crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwtsigner/v1/signer.pb-c.h"
#include "pbcheck.h"

#define BUF_MAX 4096

typedef struct wbuf {
    uint8_t b[BUF_MAX];
    size_t n;
} wbuf;

static void put_byte(wbuf *w, uint8_t x)
{
    assert_true(w->n < BUF_MAX);
    w->b[w->n++] = x;
}

static void put_varint(wbuf *w, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_byte(w, (uint8_t)v);
}

static void put_tag(wbuf *w, uint32_t number, unsigned wt)
{
    put_varint(w, ((uint64_t)number << 3) | wt);
}

static void put_len(wbuf *w, uint32_t number, const void *data, size_t n)
{
    put_tag(w, number, 2);
    put_varint(w, n);
    for (size_t i = 0; i < n; i++)
        put_byte(w, ((const uint8_t *)data)[i]);
}

/* Every message of the contract. */
static const ProtobufCMessageDescriptor *const k_messages[] = {
    &jwtsigner__v1__sign_jwt_request__descriptor,
    &jwtsigner__v1__sign_jwt_response__descriptor,
    &jwtsigner__v1__get_jwks_request__descriptor,
    &jwtsigner__v1__get_jwks_response__descriptor,
    &jwtsigner__v1__rotate_key_request__descriptor,
    &jwtsigner__v1__rotate_key_response__descriptor,
    &jwtsigner__v1__revoke_key_request__descriptor,
    &jwtsigner__v1__revoke_key_response__descriptor,
    &jwtsigner__v1__set_incident_mode_request__descriptor,
    &jwtsigner__v1__set_incident_mode_response__descriptor,
    &jwtsigner__v1__freeze_caller_request__descriptor,
    &jwtsigner__v1__freeze_caller_response__descriptor,
    &jwtsigner__v1__reload_policy_request__descriptor,
    &jwtsigner__v1__reload_policy_response__descriptor,
    &jwtsigner__v1__get_status_request__descriptor,
    &jwtsigner__v1__get_status_response__descriptor,
    &jwtsigner__v1__rotate_audit_key_request__descriptor,
    &jwtsigner__v1__rotate_audit_key_response__descriptor,
    &jwtsigner__v1__revoke_token_request__descriptor,
    &jwtsigner__v1__revoke_token_response__descriptor,
    &jwtsigner__v1__introspect_request__descriptor,
    &jwtsigner__v1__introspect_response__descriptor,
};
#define N_MESSAGES (sizeof(k_messages) / sizeof(k_messages[0]))

static bool in_table(const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < N_MESSAGES; i++)
        if (k_messages[i] == d)
            return true;
    return false;
}

/* The table above really is every message: each method's input and output
 * of both services is in it, so a new message added to the contract without
 * a test fails here. */
static void test_table_covers_every_method(void **state)
{
    (void)state;
    const ProtobufCServiceDescriptor *const svcs[] = {&jwtsigner__v1__signer__descriptor,
                                                      &jwtsigner__v1__admin__descriptor,
                                                      &jwtsigner__v1__status__descriptor};
    size_t methods = 0;
    for (size_t s = 0; s < sizeof(svcs) / sizeof(svcs[0]); s++) {
        for (unsigned m = 0; m < svcs[s]->n_methods; m++) {
            const ProtobufCMethodDescriptor *md = &svcs[s]->methods[m];
            if (!in_table(md->input) || !in_table(md->output))
                fail_msg("method %s.%s: message missing from k_messages", svcs[s]->name, md->name);
            methods++;
        }
    }
    assert_int_equal(methods, 12);
}

static void expect(js_status st, const js_err *err, js_status want, const char *reason,
                   const char *msg_part)
{
    if (st != want)
        fail_msg("status %d, want %d (%s: %s)", st, want, js_reason_name(err->reason), err->msg);
    if (reason != NULL)
        assert_string_equal(js_reason_name(err->reason), reason);
    if (msg_part != NULL && strstr(err->msg, msg_part) == NULL)
        fail_msg("message '%s' lacks '%s'", err->msg, msg_part);
}

/* One string value written into field f of message d, unpacked when clean:
 * the unpacked C string must then be the whole value (nothing truncated). */
static void check_value(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
                        const char *value, size_t n, const char *reason, const char *msg_part)
{
    wbuf w = {.n = 0};
    put_len(&w, f->id, value, n);
    js_err err = {0};
    ProtobufCMessage *m = NULL;
    js_status st = js_pb_unpack(d, w.b, w.n, &m, &err);
    expect(st, &err, reason == NULL ? JS_OK : JS_EINVAL, reason, msg_part);
    if (st == JS_OK) {
        const char *got = *(char *const *)((const char *)m + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            /* repeated string (IntrospectResponse.aud): one element. */
            assert_int_equal(*(const size_t *)((const char *)m + f->quantifier_offset), 1);
            got = (*(char *const *const *)((const char *)m + f->offset))[0];
        }
        assert_int_equal(strlen(got), n);
        assert_memory_equal(got, value, n);
        protobuf_c_message_free_unpacked(m, NULL);
    } else {
        assert_null(m);
    }
}

typedef struct str_case {
    const char *value;
    size_t len;
    const char *reason;  /* NULL: accepted */
    const char *msg_fmt; /* "%s" is replaced by Message.field */
} str_case;

#define S(lit) lit, sizeof(lit) - 1

static const str_case k_string_cases[] = {
    {S("dev-es256"), NULL, NULL},
    {S(""), NULL, NULL},
    {S("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91"), NULL, NULL}, /* é ✓ 🔑 */
    /* Valid UTF-8 control and format characters are the field's own rule. */
    {S("ok\n\x1b[0m \xc2\x85 \xe2\x80\xae"), NULL, NULL},
    {S("dev-es256\0../x"), "request.nul", "%s contains a NUL byte at offset 9"},
    {S("\0dev-es256"), "request.nul", "%s contains a NUL byte at offset 0"},
    {S("ok\0\nINJECT"), "request.nul", "%s contains a NUL byte at offset 2"},
    {S("spiffe://example.org/intruder\0garbage"), "request.nul",
     "%s contains a NUL byte at offset 29"},
    {S("a\n\xe2\x80\xae\0"), "request.nul", "%s contains a NUL byte at offset 5"},
    {S("\xff"), "request.utf8", "%s is not valid UTF-8 at offset 0"},
    {S("ab\xc0\xaf"), "request.utf8", "%s is not valid UTF-8 at offset 2"},       /* overlong '/' */
    {S("\xed\xa0\x80"), "request.utf8", "%s is not valid UTF-8 at offset 0"},     /* surrogate */
    {S("x\xe2\x82"), "request.utf8", "%s is not valid UTF-8 at offset 1"},        /* truncated */
    {S("\xf4\x90\x80\x80"), "request.utf8", "%s is not valid UTF-8 at offset 0"}, /* > U+10FFFF */
    {S("\x01\x02\xc2\x80\xff"), "request.utf8", "%s is not valid UTF-8 at offset 4"},
};

static void test_every_string_field(void **state)
{
    (void)state;
    size_t fields = 0;
    for (size_t i = 0; i < N_MESSAGES; i++) {
        const ProtobufCMessageDescriptor *d = k_messages[i];
        for (unsigned j = 0; j < d->n_fields; j++) {
            const ProtobufCFieldDescriptor *f = &d->fields[j];
            if (f->type != PROTOBUF_C_TYPE_STRING)
                continue;
            fields++;
            char name[128];
            snprintf(name, sizeof(name), "%s.%s", d->short_name, f->name);
            for (size_t c = 0; c < sizeof(k_string_cases) / sizeof(k_string_cases[0]); c++) {
                const str_case *sc = &k_string_cases[c];
                char want[256] = "";
                if (sc->msg_fmt != NULL) {
                    const char *p = strstr(sc->msg_fmt, "%s");
                    snprintf(want, sizeof(want), "%.*s%s%s", (int)(p - sc->msg_fmt), sc->msg_fmt,
                             name, p + 2);
                }
                check_value(d, f, sc->value, sc->len, sc->reason,
                            sc->msg_fmt != NULL ? want : NULL);
            }
        }
    }
    /* The contract has 36 string fields; more may come, none may vanish. */
    assert_true(fields >= 36);
}

/* The examples as whole requests: key, then request_id, then a
 * NUL-carrying second occurrence of key (proto3 keeps the last one). */
static void test_sign_request_examples(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &jwtsigner__v1__sign_jwt_request__descriptor;
    js_err err = {0};
    wbuf w = {.n = 0};
    put_len(&w, 1, "{\"sub\":\"a\"}", 11);
    put_len(&w, 2, "dev-es256", 9);
    put_len(&w, 3, "ok\0\nINJECT", 10);
    expect(js_pb_check_strings(d, w.b, w.n, &err), &err, JS_EINVAL, "request.nul",
           "SignJwtRequest.request_id contains a NUL byte at offset 2");

    w.n = 0;
    put_len(&w, 2, "dev-es256", 9);
    put_len(&w, 2, "dev-es256\0../x", 14);
    expect(js_pb_check_strings(d, w.b, w.n, &err), &err, JS_EINVAL, "request.nul",
           "SignJwtRequest.key contains a NUL byte at offset 9");
}

/* bytes fields carry anything: claims_json is checked by the claims parser. */
static void test_bytes_may_hold_anything(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &jwtsigner__v1__sign_jwt_request__descriptor;
    js_err err = {0};
    wbuf w = {.n = 0};
    put_len(&w, 1, "\0\xff\xc0\xaf", 4);
    ProtobufCMessage *m = NULL;
    expect(js_pb_unpack(d, w.b, w.n, &m, &err), &err, JS_OK, NULL, NULL);
    const Jwtsigner__V1__SignJwtRequest *r = (const Jwtsigner__V1__SignJwtRequest *)m;
    assert_int_equal(r->claims_json.len, 4);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Unknown fields of every wire type are skipped (proto3 forward
 * compatibility), also when an unknown length-delimited one holds a NUL. */
static void test_unknown_fields_skipped(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &jwtsigner__v1__freeze_caller_request__descriptor;
    js_err err = {0};
    wbuf w = {.n = 0};
    put_tag(&w, 99, 0);
    put_varint(&w, UINT64_MAX);
    put_tag(&w, 100, 1);
    for (int i = 0; i < 8; i++)
        put_byte(&w, 0xff);
    put_tag(&w, 101, 5);
    for (int i = 0; i < 4; i++)
        put_byte(&w, 0);
    put_len(&w, 102, "a\0b\xff", 4);
    put_len(&w, 1, "spiffe://example.org/x", 22);
    put_tag(&w, 0x1FFFFFFF, 0); /* the highest field number */
    put_varint(&w, 1);
    ProtobufCMessage *m = NULL;
    expect(js_pb_unpack(d, w.b, w.n, &m, &err), &err, JS_OK, NULL, NULL);
    assert_string_equal(((Jwtsigner__V1__FreezeCallerRequest *)m)->identity,
                        "spiffe://example.org/x");
    protobuf_c_message_free_unpacked(m, NULL);

    /* Empty message, NULL buffer. */
    expect(js_pb_check_strings(d, NULL, 0, &err), &err, JS_OK, NULL, NULL);
    expect(js_pb_unpack(&jwtsigner__v1__get_status_request__descriptor, NULL, 0, &m, &err), &err,
           JS_OK, NULL, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

typedef struct raw_case {
    const char *name;
    const uint8_t *bytes;
    size_t len;
    const char *reason;
} raw_case;

#define R(name, reason, ...)                                                                       \
    {                                                                                              \
        name, (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}), reason       \
    }

/* Hostile encodings of a SignJwtRequest. */
static const raw_case k_raw_cases[] = {
    R("11-byte tag varint", "request.malformed", 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
      0x80, 0x80, 0x01),
    R("10-byte varint over 64 bits", "request.malformed", 0x08 | 0x98, 0x80, 0x80, 0x80, 0x80, 0x80,
      0x80, 0x80, 0x80, 0x80, 0x02),
    R("truncated tag", "request.malformed", 0x92),
    R("truncated length", "request.malformed", 0x12, 0x85),
    R("length past the end", "request.malformed", 0x12, 0x05, 'a', 'b', 'c'),
    R("length 2^64-1", "request.malformed", 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0x01, 'a'),
    R("length 2^32+1 (wraps in 32 bits)", "request.malformed", 0x12, 0x81, 0x80, 0x80, 0x80, 0x10,
      'a'),
    R("field number 0", "request.malformed", 0x02, 0x01, 'a'),
    R("field number 2^29", "request.malformed", 0x80, 0x80, 0x80, 0x80, 0x10, 0x00),
    R("start group (unknown field 100)", "request.malformed", 0xa3, 0x06, 0xa4, 0x06),
    R("end group (unknown field 100)", "request.malformed", 0xa4, 0x06),
    R("wire type 6", "request.malformed", 0xa6, 0x06, 0x00),
    R("wire type 7", "request.malformed", 0xa7, 0x06, 0x00),
    R("string field as varint", "request.malformed", 0x10, 0x01),
    R("bytes field as fixed32", "request.malformed", 0x0d, 0, 0, 0, 0),
    R("truncated unknown varint", "request.malformed", 0xa0, 0x06, 0xff),
    R("truncated unknown fixed64", "request.malformed", 0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7),
    R("truncated unknown fixed32", "request.malformed", 0xa5, 0x06, 1, 2, 3),
    R("NUL then a bad length after it", "request.nul", 0x12, 0x01, 0x00, 0x1a, 0x09),
    R("valid after all", NULL, 0x12, 0x01, 'k', 0x1a, 0x00, 0xa0, 0x06, 0x00),
};

static void test_hostile_encodings(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &jwtsigner__v1__sign_jwt_request__descriptor;
    for (size_t i = 0; i < sizeof(k_raw_cases) / sizeof(k_raw_cases[0]); i++) {
        const raw_case *c = &k_raw_cases[i];
        js_err err = {0};
        ProtobufCMessage *m = NULL;
        js_status st = js_pb_unpack(d, c->bytes, c->len, &m, &err);
        if (c->reason == NULL) {
            if (st != JS_OK)
                fail_msg("%s: refused: %s", c->name, err.msg);
            protobuf_c_message_free_unpacked(m, NULL);
            continue;
        }
        if (st != JS_EINVAL || strcmp(js_reason_name(err.reason), c->reason) != 0)
            fail_msg("%s: status %d reason '%s' (%s), want %s", c->name, st,
                     js_reason_name(err.reason), err.msg, c->reason);
        assert_null(m);
        assert_non_null(strstr(err.msg, "SignJwtRequest"));
    }
}

/* ---- nesting: a hand-made descriptor of `message Node { Node child = 1;
 * string name = 2; }` (what protoc-c would generate). */

typedef struct node {
    ProtobufCMessage base;
    struct node *child;
    char *name;
} node;

static const ProtobufCMessageDescriptor k_node_desc;

static const ProtobufCFieldDescriptor k_node_fields[2] = {
    {"child", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_MESSAGE, 0, offsetof(node, child),
     &k_node_desc, NULL, 0, 0, NULL, NULL},
    {"name", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_STRING, 0, offsetof(node, name), NULL,
     &protobuf_c_empty_string, 0, 0, NULL, NULL},
};
static const unsigned k_node_by_name[2] = {0, 1};
static const ProtobufCIntRange k_node_ranges[2] = {{1, 0}, {0, 2}};

static const ProtobufCMessageDescriptor k_node_desc = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "test.Node",
    "Node",
    "Node",
    "test",
    sizeof(node),
    2,
    k_node_fields,
    k_node_by_name,
    1,
    k_node_ranges,
    NULL,
    NULL,
    NULL,
    NULL,
};

/* Node nested `depth` levels below the top one, the innermost with `name`. */
static void nest(wbuf *out, unsigned depth, const char *name, size_t name_len)
{
    wbuf cur = {.n = 0};
    put_len(&cur, 2, name, name_len);
    for (unsigned i = 0; i < depth; i++) {
        wbuf outer = {.n = 0};
        put_len(&outer, 1, cur.b, cur.n);
        cur = outer;
    }
    *out = cur;
}

static void test_nesting_bounded(void **state)
{
    (void)state;
    js_err err = {0};
    wbuf w;
    nest(&w, JS_PB_MAX_DEPTH, "ok", 2);
    expect(js_pb_check_strings(&k_node_desc, w.b, w.n, &err), &err, JS_OK, NULL, NULL);

    nest(&w, JS_PB_MAX_DEPTH + 1, "ok", 2);
    expect(js_pb_check_strings(&k_node_desc, w.b, w.n, &err), &err, JS_EINVAL, "request.too_deep",
           "Node.child: messages nested deeper than 16 levels");

    /* A NUL deep inside names the innermost field. */
    nest(&w, 5, "a\0b", 3);
    expect(js_pb_check_strings(&k_node_desc, w.b, w.n, &err), &err, JS_EINVAL, "request.nul",
           "Node.name contains a NUL byte at offset 1");

    /* A sub-message whose own field runs past the sub-message's end, though
     * not past the whole buffer: the walker bounds it by its own length. */
    wbuf x = {.n = 0};
    put_tag(&x, 1, 2);
    put_varint(&x, 2);
    put_byte(&x, 0x12); /* name, length 3: past the 2-byte sub-message */
    put_byte(&x, 0x03);
    put_byte(&x, 'a');
    put_byte(&x, 'b');
    put_byte(&x, 'c');
    expect(js_pb_check_strings(&k_node_desc, x.b, x.n, &err), &err, JS_EINVAL, "request.malformed",
           "Node is not a valid protobuf message: length past the end of the message");
}

/* Bounded random mutations of a valid request: never a crash (ASan/UBSan in
 * CI), and every refusal carries one of the four reasons. Whatever passes
 * and unpacks has string fields of the length on the wire, which pbcheck
 * guarantees by having found no NUL. */
static void test_random_mutations(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &jwtsigner__v1__revoke_key_request__descriptor;
    wbuf base = {.n = 0};
    put_len(&base, 1, "dev-es256", 9);
    put_len(&base, 2, "kid-\xc3\xa9", 6);
    put_len(&base, 3, "leaked", 6);
    uint32_t seed = 12345;
    size_t refused = 0;
    for (int iter = 0; iter < 20000; iter++) {
        wbuf w = base;
        int edits = 1 + (int)(seed % 4);
        for (int e = 0; e < edits; e++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % w.n;
            w.b[at] = (uint8_t)(seed >> 16);
        }
        seed = seed * 1103515245u + 12345u;
        if (seed % 5 == 0)
            w.n = (seed >> 8) % (w.n + 1);
        js_err err = {0};
        ProtobufCMessage *m = NULL;
        js_status st = js_pb_unpack(d, w.b, w.n, &m, &err);
        if (st != JS_OK) {
            refused++;
            assert_int_equal(st, JS_EINVAL);
            assert_true(strcmp(js_reason_name(err.reason), "request.malformed") == 0 ||
                        strcmp(js_reason_name(err.reason), "request.nul") == 0 ||
                        strcmp(js_reason_name(err.reason), "request.utf8") == 0);
            continue;
        }
        const Jwtsigner__V1__RevokeKeyRequest *r = (const Jwtsigner__V1__RevokeKeyRequest *)m;
        /* A re-pack is the same size as the strings' full lengths allow:
         * nothing was dropped at a NUL. */
        assert_true(strlen(r->key) + strlen(r->kid) + strlen(r->reason) <= w.n);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_true(refused > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_covers_every_method),
        cmocka_unit_test(test_every_string_field),
        cmocka_unit_test(test_sign_request_examples),
        cmocka_unit_test(test_bytes_may_hold_anything),
        cmocka_unit_test(test_unknown_fields_skipped),
        cmocka_unit_test(test_hostile_encodings),
        cmocka_unit_test(test_nesting_bounded),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
