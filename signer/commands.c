/*
 * commands.c - jwt-signerd's subcommands that do not serve: keygen (a key
 * pair generated inside the token, its public JWK printed) and check-policy
 * (a policy file validated and its effective rules printed).
 */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "daemon.h"
#include "jwk.h"
#include "logline.h"
#include "policy.h"

int cmd_keygen(const char *config_path, const char *key_name)
{
    js_err err;
    js_err_clear(&err);
    js_config *cfg = NULL;
    js_hsm *hsm = NULL;
    js_hsm_session *s = NULL;
    js_hsm_key *key = NULL;
    json_t *jwk = NULL;
    int rc = 1;

    js_status st = open_hsm(config_path, &cfg, &hsm, &err);
    const char *name = key_name != NULL ? key_name : "audit";
    const char *label = NULL;
    js_alg alg = JS_ALG_ES256; /* the audit key is always ES256 (FORMAT.md) */
    unsigned bits = 0;         /* RSA modulus size from keys[].bits; 0 = default / not RSA */
    if (st == JS_OK && key_name != NULL) {
        const js_key_config *kc = js_config_find_key(cfg, key_name);
        if (kc == NULL)
            st = js_err_set(&err, JS_ECONFIG, JS_R_KEYGEN_UNKNOWN_KEY, "no key named '%s' in %s",
                            key_name, config_path);
        else
            label = kc->label, alg = kc->alg, bits = kc->bits;
    } else if (st == JS_OK) {
        label = cfg->audit_key_label;
    }
    if (st == JS_OK)
        st = js_hsm_session_open(hsm, &s, &err);
    if (st == JS_OK)
        st = js_hsm_keygen(hsm, s, label, alg, bits, &err);
    if (st == JS_OK)
        st = js_hsm_key_find(hsm, s, label, alg, &key, &err);
    char kid[JWK_KID_LEN + 1] = "";
    if (st == JS_OK)
        st = jwk_from_pkey(js_hsm_key_public(key), alg, NULL, &jwk, &err);
    if (st == JS_OK)
        st = jwk_thumbprint(jwk, kid, &err);
    if (st == JS_OK) {
        json_object_set_new(jwk, "kid", json_string(kid));
        char *text = json_dumps(jwk, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", text != NULL ? text : "{}");
        free(text);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "keygen", "key", name, "label",
                              label, "kid", kid);
        js_log_emit("info", o);
        rc = 0;
    } else {
        log_failure("keygen_failed", &err);
    }
    json_decref(jwk);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
    js_config_free(cfg);
    return rc;
}

int cmd_check_policy(const char *path)
{
    js_err err;
    js_err_clear(&err);
    js_policy *p = NULL;
    if (js_policy_load(path, &p, &err) != JS_OK) {
        fprintf(stderr, "jwt-signerd: %s\n", err.msg);
        return 1;
    }
    char *text = js_policy_describe(p);
    printf("%s: valid (sha256 %s)\n%s", path, js_policy_hash_hex(p), text != NULL ? text : "");
    free(text);
    js_policy_free(p);
    return 0;
}
