/*
 * test_k8s_proto.c - the two published packages of k8s.io/externaljwt (proto
 * package v1, kube-apiserver 1.34+, and v1alpha1, 1.32-1.33) are one wire
 * format: signer/rpc/rpc_k8s.c serves both with v1's generated code. Every
 * message is packed with one package's code and unpacked with the other's
 * (both ways): every field comes back equal, nothing lands in the unknown
 * fields, and it packs again to the same bytes. The generated descriptors
 * are compared field by field (names, numbers, types, labels, layout, nested
 * messages) and the services method by method, so an edit of one .proto
 * that breaks the symmetry fails here; the comparers themselves are shown to
 * notice a difference.
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

#include "externaljwt/v1/api.pb-c.h"
#include "externaljwt/v1alpha1/api.pb-c.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- comparing descriptors ---------------------------------------------------------- */

/* A message's full name without its package: "v1.Key" -> "Key" (a nested
 * type keeps its "Outer.Inner" path). */
static const char *unqualified(const ProtobufCMessageDescriptor *d)
{
    size_t n = strlen(d->package_name);
    if (n > 0 && strncmp(d->name, d->package_name, n) == 0 && d->name[n] == '.')
        return d->name + n + 1;
    return d->name;
}

static bool desc_equiv(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b,
                       char *why, size_t cap);

/* Field i of a and of b: the same in everything the wire and the C layout
 * depend on. */
static bool field_equiv(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b,
                        unsigned i, char *why, size_t cap)
{
    const ProtobufCFieldDescriptor *fa = &a->fields[i], *fb = &b->fields[i];
#define FIELD_SAME(cond, what)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(why, cap, "%s.%s vs %s.%s: %s differs", a->name, fa->name, b->name, fb->name, \
                     what);                                                                        \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    FIELD_SAME(strcmp(fa->name, fb->name) == 0, "name");
    FIELD_SAME(fa->id == fb->id, "number");
    FIELD_SAME(fa->label == fb->label, "label");
    FIELD_SAME(fa->type == fb->type, "type");
    FIELD_SAME(fa->offset == fb->offset, "offset");
    FIELD_SAME(fa->quantifier_offset == fb->quantifier_offset, "quantifier offset");
    FIELD_SAME(fa->flags == fb->flags, "flags (packed, oneof, ...)");
    FIELD_SAME((fa->default_value == NULL) == (fb->default_value == NULL), "default value");
    if (fa->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessageDescriptor *ma = fa->descriptor, *mb = fb->descriptor;
        FIELD_SAME(ma != NULL && mb != NULL, "message type");
        FIELD_SAME(strcmp(unqualified(ma), unqualified(mb)) == 0, "message type name");
        if (ma != mb && !desc_equiv(ma, mb, why, cap))
            return false;
    } else {
        FIELD_SAME(fa->descriptor == NULL && fb->descriptor == NULL, "enum type");
    }
#undef FIELD_SAME
    return true;
}

/* a and b describe the same message in two packages: same name within the
 * package, same size, and the same fields (field_equiv), field ranges and
 * name order. On false, why says what differs. */
static bool desc_equiv(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b,
                       char *why, size_t cap)
{
#define DESC_SAME(cond, what)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(why, cap, "%s vs %s: %s differs", a->name, b->name, what);                    \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    DESC_SAME(a->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC &&
                  b->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
              "magic");
    DESC_SAME(strcmp(unqualified(a), unqualified(b)) == 0, "name");
    DESC_SAME(strcmp(a->short_name, b->short_name) == 0, "short name");
    DESC_SAME(a->sizeof_message == b->sizeof_message, "size");
    DESC_SAME(a->n_fields == b->n_fields, "number of fields");
    for (unsigned i = 0; i < a->n_fields; i++)
        if (!field_equiv(a, b, i, why, cap))
            return false;
    DESC_SAME(a->n_field_ranges == b->n_field_ranges, "number of field ranges");
    for (unsigned i = 0; i < a->n_field_ranges; i++)
        DESC_SAME(a->field_ranges[i].start_value == b->field_ranges[i].start_value &&
                      a->field_ranges[i].orig_index == b->field_ranges[i].orig_index,
                  "field ranges");
    for (unsigned i = 0; i < a->n_fields; i++)
        DESC_SAME(a->fields_sorted_by_name[i] == b->fields_sorted_by_name[i], "field name order");
#undef DESC_SAME
    return true;
}

/* Every message of the contract, v1 and v1alpha1 side by side. */
static const struct {
    const ProtobufCMessageDescriptor *v1;
    const ProtobufCMessageDescriptor *v1alpha1;
    const char *name;
    unsigned n_fields;
} k_pairs[] = {
    {&v1__sign_jwtrequest__descriptor, &v1alpha1__sign_jwtrequest__descriptor, "SignJWTRequest", 1},
    {&v1__sign_jwtresponse__descriptor, &v1alpha1__sign_jwtresponse__descriptor, "SignJWTResponse",
     2},
    {&v1__fetch_keys_request__descriptor, &v1alpha1__fetch_keys_request__descriptor,
     "FetchKeysRequest", 0},
    {&v1__fetch_keys_response__descriptor, &v1alpha1__fetch_keys_response__descriptor,
     "FetchKeysResponse", 3},
    {&v1__key__descriptor, &v1alpha1__key__descriptor, "Key", 3},
    {&v1__metadata_request__descriptor, &v1alpha1__metadata_request__descriptor, "MetadataRequest",
     0},
    {&v1__metadata_response__descriptor, &v1alpha1__metadata_response__descriptor,
     "MetadataResponse", 1},
};

static void test_message_descriptors_match(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(k_pairs); i++) {
        const ProtobufCMessageDescriptor *a = k_pairs[i].v1, *b = k_pairs[i].v1alpha1;
        char why[512] = "";
        if (!desc_equiv(a, b, why, sizeof(why)))
            fail_msg("%s: %s", k_pairs[i].name, why);
        /* The packages are the published ones, and the message is the one
         * named (the table is not comparing a message with itself). */
        assert_string_equal(a->package_name, "v1");
        assert_string_equal(b->package_name, "v1alpha1");
        assert_string_equal(a->short_name, k_pairs[i].name);
        assert_int_equal(a->n_fields, k_pairs[i].n_fields);
        assert_ptr_not_equal(a, b);
    }
}

/* The published field numbers and types (k8s.io/externaljwt), on v1; the
 * symmetry test carries them over to v1alpha1. */
static void test_published_contract(void **state)
{
    (void)state;
    static const struct {
        const ProtobufCMessageDescriptor *d;
        const char *field;
        unsigned id;
        ProtobufCType type;
        ProtobufCLabel label;
    } k_fields[] = {
        {&v1__sign_jwtrequest__descriptor, "claims", 1, PROTOBUF_C_TYPE_STRING,
         PROTOBUF_C_LABEL_NONE},
        {&v1__sign_jwtresponse__descriptor, "header", 1, PROTOBUF_C_TYPE_STRING,
         PROTOBUF_C_LABEL_NONE},
        {&v1__sign_jwtresponse__descriptor, "signature", 2, PROTOBUF_C_TYPE_STRING,
         PROTOBUF_C_LABEL_NONE},
        {&v1__fetch_keys_response__descriptor, "keys", 1, PROTOBUF_C_TYPE_MESSAGE,
         PROTOBUF_C_LABEL_REPEATED},
        {&v1__fetch_keys_response__descriptor, "data_timestamp", 2, PROTOBUF_C_TYPE_MESSAGE,
         PROTOBUF_C_LABEL_NONE},
        {&v1__fetch_keys_response__descriptor, "refresh_hint_seconds", 3, PROTOBUF_C_TYPE_INT64,
         PROTOBUF_C_LABEL_NONE},
        {&v1__key__descriptor, "key_id", 1, PROTOBUF_C_TYPE_STRING, PROTOBUF_C_LABEL_NONE},
        {&v1__key__descriptor, "key", 2, PROTOBUF_C_TYPE_BYTES, PROTOBUF_C_LABEL_NONE},
        {&v1__key__descriptor, "exclude_from_oidc_discovery", 3, PROTOBUF_C_TYPE_BOOL,
         PROTOBUF_C_LABEL_NONE},
        {&v1__metadata_response__descriptor, "max_token_expiration_seconds", 1,
         PROTOBUF_C_TYPE_INT64, PROTOBUF_C_LABEL_NONE},
    };
    for (size_t i = 0; i < COUNT(k_fields); i++) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(k_fields[i].d, k_fields[i].field);
        if (f == NULL)
            fail_msg("%s has no field %s", k_fields[i].d->name, k_fields[i].field);
        assert_int_equal(f->id, k_fields[i].id);
        assert_int_equal(f->type, k_fields[i].type);
        assert_int_equal(f->label, k_fields[i].label);
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
        &v1__fetch_keys_response__descriptor, "keys");
    assert_ptr_equal(f->descriptor, &v1__key__descriptor);
    f = protobuf_c_message_descriptor_get_field_by_name(&v1alpha1__fetch_keys_response__descriptor,
                                                        "keys");
    assert_ptr_equal(f->descriptor, &v1alpha1__key__descriptor);
    f = protobuf_c_message_descriptor_get_field_by_name(&v1__fetch_keys_response__descriptor,
                                                        "data_timestamp");
    assert_string_equal(((const ProtobufCMessageDescriptor *)f->descriptor)->name,
                        "google.protobuf.Timestamp");
}

/* The comparer is not vacuous: a copy of a descriptor with one thing changed
 * (as an edit of one .proto would) is told apart. */
static void test_descriptor_comparer_notices(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *orig = &v1alpha1__key__descriptor;
    ProtobufCFieldDescriptor fields[3];
    assert_int_equal(orig->n_fields, 3);
    char why[512];
    enum { NUMBER, TYPE, LABEL, NAME, SUB } k_edits[] = {NUMBER, TYPE, LABEL, NAME};
    for (size_t e = 0; e < COUNT(k_edits); e++) {
        memcpy(fields, orig->fields, sizeof(fields));
        ProtobufCMessageDescriptor d = *orig;
        d.fields = fields;
        switch (k_edits[e]) {
        case NUMBER:
            fields[2].id = 4; /* exclude_from_oidc_discovery = 4 */
            break;
        case TYPE:
            fields[1].type = PROTOBUF_C_TYPE_STRING; /* string key = 2 */
            break;
        case LABEL:
            fields[0].label = PROTOBUF_C_LABEL_REPEATED; /* repeated string key_id = 1 */
            break;
        case NAME:
            fields[0].name = "kid";
            break;
        case SUB:
        default:
            fail();
        }
        why[0] = '\0';
        assert_false(desc_equiv(&v1__key__descriptor, &d, why, sizeof(why)));
        assert_non_null(strstr(why, "differs"));
    }
    /* A difference inside a nested message (FetchKeysResponse.keys -> Key). */
    memcpy(fields, orig->fields, sizeof(fields));
    fields[1].id = 5;
    ProtobufCMessageDescriptor key = *orig;
    key.fields = fields;
    ProtobufCFieldDescriptor rfields[3];
    memcpy(rfields, v1alpha1__fetch_keys_response__descriptor.fields, sizeof(rfields));
    rfields[0].descriptor = &key;
    ProtobufCMessageDescriptor resp = v1alpha1__fetch_keys_response__descriptor;
    resp.fields = rfields;
    assert_false(desc_equiv(&v1__fetch_keys_response__descriptor, &resp, why, sizeof(why)));
    assert_non_null(strstr(why, "Key"));
}

/* The services: the same methods in the same order, with equivalent input
 * and output messages; their gRPC paths are the published ones. */
static void test_service_descriptors_match(void **state)
{
    (void)state;
    const ProtobufCServiceDescriptor *a = &v1__external_jwtsigner__descriptor;
    const ProtobufCServiceDescriptor *b = &v1alpha1__external_jwtsigner__descriptor;
    assert_string_equal(a->name, "v1.ExternalJWTSigner");
    assert_string_equal(b->name, "v1alpha1.ExternalJWTSigner");
    assert_string_equal(a->short_name, b->short_name);
    assert_int_equal(a->n_methods, 3);
    assert_int_equal(a->n_methods, b->n_methods);
    static const char *const k_methods[] = {"Sign", "FetchKeys", "Metadata"};
    for (unsigned i = 0; i < a->n_methods; i++) {
        assert_string_equal(a->methods[i].name, k_methods[i]);
        assert_string_equal(b->methods[i].name, k_methods[i]);
        assert_int_equal(a->method_indices_by_name[i], b->method_indices_by_name[i]);
        char why[512] = "";
        if (!desc_equiv(a->methods[i].input, b->methods[i].input, why, sizeof(why)) ||
            !desc_equiv(a->methods[i].output, b->methods[i].output, why, sizeof(why)))
            fail_msg("method %s: %s", k_methods[i], why);
        char pa[128], pb[128], want_a[128], want_b[128];
        snprintf(pa, sizeof(pa), "/%s/%s", a->name, a->methods[i].name);
        snprintf(pb, sizeof(pb), "/%s/%s", b->name, b->methods[i].name);
        snprintf(want_a, sizeof(want_a), "/v1.ExternalJWTSigner/%s", k_methods[i]);
        snprintf(want_b, sizeof(want_b), "/v1alpha1.ExternalJWTSigner/%s", k_methods[i]);
        assert_string_equal(pa, want_a);
        assert_string_equal(pb, want_b);
    }
    assert_ptr_equal(a->methods[0].input, &v1__sign_jwtrequest__descriptor);
    assert_ptr_equal(a->methods[0].output, &v1__sign_jwtresponse__descriptor);
    assert_ptr_equal(a->methods[1].output, &v1__fetch_keys_response__descriptor);
    assert_ptr_equal(a->methods[2].output, &v1__metadata_response__descriptor);
}

/* ---- comparing messages ------------------------------------------------------------- */

static bool msg_same(const ProtobufCMessage *a, const ProtobufCMessage *b, char *why, size_t cap);

/* One value of field f at pa (in a) and pb (in b). */
static bool value_same(const ProtobufCFieldDescriptor *f, const void *pa, const void *pb, char *why,
                       size_t cap)
{
    bool same;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        same = sa != NULL && sb != NULL && strcmp(sa, sb) == 0;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *ba = pa, *bb = pb;
        same = ba->len == bb->len && (ba->len == 0 || memcmp(ba->data, bb->data, ba->len) == 0);
        break;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        same = memcmp(pa, pb, 8) == 0;
        break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        same = memcmp(pa, pb, 4) == 0;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        same = (*(const protobuf_c_boolean *)pa != 0) == (*(const protobuf_c_boolean *)pb != 0);
        break;
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *ma = *(ProtobufCMessage *const *)pa;
        const ProtobufCMessage *mb = *(ProtobufCMessage *const *)pb;
        if (ma == NULL || mb == NULL)
            same = ma == mb;
        else
            return msg_same(ma, mb, why, cap);
        break;
    }
    default:
        snprintf(why, cap, "field %s: type %d not handled", f->name, (int)f->type);
        return false;
    }
    if (!same)
        snprintf(why, cap, "field %s differs", f->name);
    return same;
}

/* The size of one element of a repeated field in its C array. */
static size_t element_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
    default:
        return 4;
    }
}

/* Every field of a equals the same field of b (descriptors equivalent, so
 * the same offsets), recursively; neither has unknown fields. */
static bool msg_same(const ProtobufCMessage *a, const ProtobufCMessage *b, char *why, size_t cap)
{
    if (!desc_equiv(a->descriptor, b->descriptor, why, cap))
        return false;
    if (a->n_unknown_fields != 0 || b->n_unknown_fields != 0) {
        snprintf(why, cap, "%s: unknown fields (%u, %u)", a->descriptor->name, a->n_unknown_fields,
                 b->n_unknown_fields);
        return false;
    }
    const uint8_t *ba = (const uint8_t *)a, *bb = (const uint8_t *)b;
    for (unsigned i = 0; i < a->descriptor->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &a->descriptor->fields[i];
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            if (!value_same(f, ba + f->offset, bb + f->offset, why, cap))
                return false;
            continue;
        }
        size_t na = *(const size_t *)(const void *)(ba + f->quantifier_offset);
        size_t nb = *(const size_t *)(const void *)(bb + f->quantifier_offset);
        if (na != nb) {
            snprintf(why, cap, "field %s: %zu vs %zu elements", f->name, na, nb);
            return false;
        }
        const uint8_t *ea = *(const uint8_t *const *)(const void *)(ba + f->offset);
        const uint8_t *eb = *(const uint8_t *const *)(const void *)(bb + f->offset);
        size_t es = element_size(f->type);
        for (size_t j = 0; j < na; j++)
            if (!value_same(f, ea + j * es, eb + j * es, why, cap))
                return false;
    }
    return true;
}

/* Packs m, unpacks it with the other package's descriptor, checks every
 * field (msg_same) and that it packs again to the same bytes. Returns the
 * packed size. */
static size_t cross(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *other)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(m, buf), n);
    ProtobufCMessage *u = protobuf_c_message_unpack(other, NULL, n, buf);
    if (u == NULL)
        fail_msg("%s does not unpack as %s", m->descriptor->name, other->name);
    assert_ptr_equal(u->descriptor, other);
    char why[512] = "";
    if (!msg_same(m, u, why, sizeof(why)))
        fail_msg("%s as %s: %s", m->descriptor->name, other->name, why);
    size_t n2 = protobuf_c_message_get_packed_size(u);
    assert_int_equal(n2, n);
    uint8_t *buf2 = malloc(n2 + 1);
    assert_non_null(buf2);
    assert_int_equal(protobuf_c_message_pack(u, buf2), n2);
    assert_memory_equal(buf, buf2, n);
    /* And back: the other package's bytes unpack with the first's code. */
    ProtobufCMessage *back = protobuf_c_message_unpack(m->descriptor, NULL, n2, buf2);
    assert_non_null(back);
    if (!msg_same(m, back, why, sizeof(why)))
        fail_msg("%s round trip: %s", m->descriptor->name, why);
    protobuf_c_message_free_unpacked(back, NULL);
    protobuf_c_message_free_unpacked(u, NULL);
    free(buf2);
    free(buf);
    return n;
}

/* A PKIX DER-like blob with zero bytes and every byte value. */
static void fill_der(uint8_t *der, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        der[i] = (uint8_t)(i * 7u + seed);
    der[0] = 0x30;
    der[n / 2] = 0x00;
}

#define CLAIMS_B64                                                                                 \
    "eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjIl0sImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAw" \
    "MDAwMDAwLCJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwianRpIjoiMCJ9"

/* v1 messages, fully populated, read with v1alpha1's code. */
static void test_v1_to_v1alpha1(void **state)
{
    (void)state;
    V1__SignJWTRequest req = V1__SIGN_JWTREQUEST__INIT;
    req.claims = (char *)CLAIMS_B64;
    assert_true(cross(&req.base, &v1alpha1__sign_jwtrequest__descriptor) > strlen(CLAIMS_B64));

    V1__SignJWTResponse resp = V1__SIGN_JWTRESPONSE__INIT;
    resp.header = (char *)"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsifQ";
    resp.signature = (char *)"c2lnbmF0dXJlLWJ5dGVz_-";
    cross(&resp.base, &v1alpha1__sign_jwtresponse__descriptor);

    V1__FetchKeysRequest fk = V1__FETCH_KEYS_REQUEST__INIT;
    assert_int_equal(cross(&fk.base, &v1alpha1__fetch_keys_request__descriptor), 0);

    uint8_t der1[91], der2[294];
    fill_der(der1, sizeof(der1), 1);
    fill_der(der2, sizeof(der2), 2);
    V1__Key k1 = V1__KEY__INIT, k2 = V1__KEY__INIT, k3 = V1__KEY__INIT;
    k1.key_id = (char *)"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    k1.key = (ProtobufCBinaryData){sizeof(der1), der1};
    k2.key_id = (char *)"kid-2";
    k2.key = (ProtobufCBinaryData){sizeof(der2), der2};
    k2.exclude_from_oidc_discovery = 1;
    /* k3: every field at its default (proto3: nothing on the wire). */
    V1__Key *keys[] = {&k1, &k2, &k3};
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1700000000;
    ts.nanos = 123456789;
    V1__FetchKeysResponse fr = V1__FETCH_KEYS_RESPONSE__INIT;
    fr.n_keys = COUNT(keys);
    fr.keys = keys;
    fr.data_timestamp = &ts;
    fr.refresh_hint_seconds = 300;
    cross(&fr.base, &v1alpha1__fetch_keys_response__descriptor);
    /* Each Key on its own, too. */
    for (size_t i = 0; i < COUNT(keys); i++)
        cross(&keys[i]->base, &v1alpha1__key__descriptor);
    /* No timestamp, no keys; a negative hint (a full ten-byte varint). */
    V1__FetchKeysResponse empty = V1__FETCH_KEYS_RESPONSE__INIT;
    empty.refresh_hint_seconds = -1;
    cross(&empty.base, &v1alpha1__fetch_keys_response__descriptor);

    V1__MetadataRequest mq = V1__METADATA_REQUEST__INIT;
    assert_int_equal(cross(&mq.base, &v1alpha1__metadata_request__descriptor), 0);
    static const int64_t k_max[] = {600, 86400, INT64_MAX, INT64_MIN, 0};
    for (size_t i = 0; i < COUNT(k_max); i++) {
        V1__MetadataResponse mr = V1__METADATA_RESPONSE__INIT;
        mr.max_token_expiration_seconds = k_max[i];
        cross(&mr.base, &v1alpha1__metadata_response__descriptor);
    }
}

/* v1alpha1 messages (what a 1.32/1.33 kube-apiserver sends and expects),
 * read with v1's code, as the handlers do. */
static void test_v1alpha1_to_v1(void **state)
{
    (void)state;
    V1alpha1__SignJWTRequest req = V1ALPHA1__SIGN_JWTREQUEST__INIT;
    req.claims = (char *)CLAIMS_B64 "x";
    cross(&req.base, &v1__sign_jwtrequest__descriptor);
    /* What v1's code reads, field by field. */
    size_t n = protobuf_c_message_get_packed_size(&req.base);
    uint8_t buf[512];
    assert_true(n <= sizeof(buf));
    protobuf_c_message_pack(&req.base, buf);
    V1__SignJWTRequest *r = v1__sign_jwtrequest__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_string_equal(r->claims, CLAIMS_B64 "x");
    v1__sign_jwtrequest__free_unpacked(r, NULL);

    V1alpha1__SignJWTResponse resp = V1ALPHA1__SIGN_JWTRESPONSE__INIT;
    resp.header = (char *)"h";
    resp.signature = (char *)"";
    cross(&resp.base, &v1__sign_jwtresponse__descriptor);

    V1alpha1__FetchKeysRequest fk = V1ALPHA1__FETCH_KEYS_REQUEST__INIT;
    cross(&fk.base, &v1__fetch_keys_request__descriptor);

    uint8_t der[120];
    fill_der(der, sizeof(der), 9);
    V1alpha1__Key k1 = V1ALPHA1__KEY__INIT, k2 = V1ALPHA1__KEY__INIT;
    k1.key_id = (char *)"a";
    k1.key = (ProtobufCBinaryData){sizeof(der), der};
    k1.exclude_from_oidc_discovery = 1;
    k2.key_id = (char *)"b";
    k2.key = (ProtobufCBinaryData){1, der};
    V1alpha1__Key *keys[] = {&k1, &k2};
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = -62135596800; /* 0001-01-01T00:00:00Z, the Timestamp minimum */
    ts.nanos = 999999999;
    V1alpha1__FetchKeysResponse fr = V1ALPHA1__FETCH_KEYS_RESPONSE__INIT;
    fr.n_keys = COUNT(keys);
    fr.keys = keys;
    fr.data_timestamp = &ts;
    fr.refresh_hint_seconds = INT64_MAX;
    cross(&fr.base, &v1__fetch_keys_response__descriptor);

    V1alpha1__MetadataRequest mq = V1ALPHA1__METADATA_REQUEST__INIT;
    cross(&mq.base, &v1__metadata_request__descriptor);
    V1alpha1__MetadataResponse mr = V1ALPHA1__METADATA_RESPONSE__INIT;
    mr.max_token_expiration_seconds = 3600;
    cross(&mr.base, &v1__metadata_response__descriptor);
}

/* The message comparer is not vacuous either: one changed field, element or
 * nested value is told apart. */
static void test_message_comparer_notices(void **state)
{
    (void)state;
    uint8_t der[8] = {0x30, 1, 2, 3, 4, 5, 6, 7}, der2[8] = {0x30, 1, 2, 3, 4, 5, 6, 8};
    V1__Key a = V1__KEY__INIT;
    a.key_id = (char *)"k";
    a.key = (ProtobufCBinaryData){sizeof(der), der};
    V1alpha1__Key b = V1ALPHA1__KEY__INIT;
    b.key_id = (char *)"k";
    b.key = (ProtobufCBinaryData){sizeof(der), der};
    char why[512];
    assert_true(msg_same(&a.base, &b.base, why, sizeof(why)));
    b.key = (ProtobufCBinaryData){sizeof(der2), der2};
    assert_false(msg_same(&a.base, &b.base, why, sizeof(why)));
    b.key = (ProtobufCBinaryData){sizeof(der), der};
    b.exclude_from_oidc_discovery = 1;
    assert_false(msg_same(&a.base, &b.base, why, sizeof(why)));
    b.exclude_from_oidc_discovery = 0;
    b.key_id = (char *)"K";
    assert_false(msg_same(&a.base, &b.base, why, sizeof(why)));
    b.key_id = (char *)"k";

    V1__Key *ka[] = {&a};
    V1alpha1__Key *kb[] = {&b};
    Google__Protobuf__Timestamp ta = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Google__Protobuf__Timestamp tb = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ta.seconds = tb.seconds = 5;
    V1__FetchKeysResponse ra = V1__FETCH_KEYS_RESPONSE__INIT;
    V1alpha1__FetchKeysResponse rb = V1ALPHA1__FETCH_KEYS_RESPONSE__INIT;
    ra.n_keys = rb.n_keys = 1;
    ra.keys = ka;
    rb.keys = kb;
    ra.data_timestamp = &ta;
    rb.data_timestamp = &tb;
    assert_true(msg_same(&ra.base, &rb.base, why, sizeof(why)));
    tb.nanos = 1;
    assert_false(msg_same(&ra.base, &rb.base, why, sizeof(why)));
    tb.nanos = 0;
    rb.data_timestamp = NULL;
    assert_false(msg_same(&ra.base, &rb.base, why, sizeof(why)));
    rb.data_timestamp = &tb;
    rb.n_keys = 0;
    assert_false(msg_same(&ra.base, &rb.base, why, sizeof(why)));
    rb.n_keys = 1;
    b.key_id = (char *)"other";
    assert_false(msg_same(&ra.base, &rb.base, why, sizeof(why)));
    /* Different messages are never "the same". */
    V1alpha1__SignJWTRequest sr = V1ALPHA1__SIGN_JWTREQUEST__INIT;
    assert_false(msg_same(&ra.base, &sr.base, why, sizeof(why)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_descriptors_match),
        cmocka_unit_test(test_published_contract),
        cmocka_unit_test(test_descriptor_comparer_notices),
        cmocka_unit_test(test_service_descriptors_match),
        cmocka_unit_test(test_v1_to_v1alpha1),
        cmocka_unit_test(test_v1alpha1_to_v1),
        cmocka_unit_test(test_message_comparer_notices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
