/*
 * names.c - the validators of names.h.
 */
#include "names.h"

#include <string.h>

static bool alnum(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool js_key_name_ok(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, JS_KEY_NAME_MAX + 1);
    if (n == 0 || n > JS_KEY_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

bool js_label_ok(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, JS_LABEL_MAX + 1);
    if (n == 0 || n > JS_LABEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

bool js_env_name_ok(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, JS_ENV_NAME_MAX + 1);
    if (n == 0 || n > JS_ENV_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!alnum(s[i]) && s[i] != '_')
            return false;
    return true;
}
