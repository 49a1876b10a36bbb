/*
 * p11shim.c - a fault-injecting PKCS#11 module for tests (never shipped).
 *
 * It forwards every PKCS#11 v2.40 call to the real module (JS_P11SHIM_MODULE,
 * default SoftHSM 2) and fails on command, so tests drive hsm.c's recovery
 * against a real token instead of a mock. Commands come from the file named
 * by JS_P11SHIM_CONTROL, re-read whenever its inode, size or mtime changes
 * (one stat per call); each new content replaces the previous rules:
 *
 *   fail <C_Function|*> <CKR_NAME|0xHEX> [count]   fail that call (every call but
 *                                                   C_Initialize/C_Finalize/C_GetInfo/
 *                                                   C_GetFunctionList for *), count times
 *   invalidate           once per new content: every session and object handle the
 *                        application holds dies, as when a token is pulled out
 *   invalidate-objects   once per new content: object handles die, sessions live
 *                        (what SoftHSM does when its token directory vanishes)
 *   hang <C_Function> <ms> [count]   hold that call ms milliseconds before
 *                        forwarding it, count times (an HSM that stops answering)
 *   ok                   no rules (an empty file says the same)
 *
 * Handles are the real ones with a generation in the upper 32 bits, so old
 * handles are recognised after an invalidation (CKR_SESSION_HANDLE_INVALID /
 * CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID) even if the real module
 * reuses the numbers. The real module is loaded through p11-kit in managed
 * mode, so a test that also opens SoftHSM directly shares its initialisation
 * and keeps its own sessions. A PKCS#11 module has no context argument: its
 * state is necessarily one static struct, guarded by one mutex never held
 * across a forwarded call.
 *
 * p11shim_calls(name) (for unit tests, through dlsym) counts calls per function.
 */
/* For the writer-preferring rwlock initializer (glibc): an invalidation must
 * not wait behind a stream of calls. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#define SHIM_DEFAULT_MODULE "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
#define SHIM_CONTROL_MAX    4096 /* bytes of control file read */
#define SHIM_RULES_MAX      32
#define SHIM_FN_MAX         40
#define SHIM_SESSIONS_MAX   1024
#define SHIM_COUNTERS_MAX   96
#define SHIM_LOW            0xffffffffUL

typedef struct shim_rule {
    char fn[SHIM_FN_MAX]; /* "*" = every call but the module-level ones */
    CK_RV rv;
    long hang_ms;   /* > 0: a hang rule (rv unused) */
    long remaining; /* < 0: unlimited */
} shim_rule;

static struct {
    pthread_mutex_t mu;
    /* Every forwarded call holds this for reading; closing the real sessions
     * of an invalidation holds it for writing: PKCS#11 forbids closing a
     * session while another thread is inside a call on it (§5.6; SoftHSM
     * crashes in C_Sign when it happens), and a real token removal never
     * does that to the application either. */
    pthread_rwlock_t calls;
    CK_FUNCTION_LIST *real;
    unsigned long sgen, ogen; /* handle generations, never 0 */
    /* control file identity: a change means new rules */
    bool have_ctl;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    shim_rule rules[SHIM_RULES_MAX];
    size_t n_rules;
    CK_SESSION_HANDLE sessions[SHIM_SESSIONS_MAX]; /* real handles opened through us */
    size_t n_sessions;
    struct {
        const char *fn;
        unsigned long n;
    } counters[SHIM_COUNTERS_MAX];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .calls = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP,
       .sgen = 1,
       .ogen = 1};

static const struct {
    const char *name;
    CK_RV rv;
} k_rvs[] = {
    {"CKR_OK", CKR_OK},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
    {"CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"CKR_SLOT_ID_INVALID", CKR_SLOT_ID_INVALID},
};

/* Module-level calls "fail *" leaves alone: the application must be able to restart us. */
static bool module_level(const char *fn)
{
    return strcmp(fn, "C_Initialize") == 0 || strcmp(fn, "C_Finalize") == 0 ||
           strcmp(fn, "C_GetInfo") == 0 || strcmp(fn, "C_GetFunctionList") == 0;
}

static bool parse_rv(const char *s, CK_RV *out)
{
    for (size_t i = 0; i < sizeof(k_rvs) / sizeof(k_rvs[0]); i++) {
        if (strcmp(s, k_rvs[i].name) == 0) {
            *out = k_rvs[i].rv;
            return true;
        }
    }
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(s + 2, &end, 16);
        if (errno == 0 && end != s + 2 && *end == '\0') {
            *out = (CK_RV)v;
            return true;
        }
    }
    return false;
}

/* Splits line (NUL-terminated, modified) into at most max words; returns the count. */
static size_t split_words(char *line, char **words, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (*p != '\0' && n < max) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            break;
        words[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
    return n;
}

/*
 * Kills every handle the application holds (under g.mu); the real sessions to
 * close are copied to out (closed by the caller after unlocking).
 */
static size_t invalidate_locked(bool sessions, CK_SESSION_HANDLE *out)
{
    size_t n = 0;
    g.ogen++;
    if (sessions) {
        g.sgen++;
        memcpy(out, g.sessions, g.n_sessions * sizeof(out[0]));
        n = g.n_sessions;
        g.n_sessions = 0;
    }
    return n;
}

/* Re-reads the control file if it changed (under g.mu). */
static size_t control_refresh_locked(CK_SESSION_HANDLE *to_close)
{
    const char *path = getenv("JS_P11SHIM_CONTROL");
    struct stat st;
    if (path == NULL || path[0] == '\0' || stat(path, &st) != 0) {
        if (g.have_ctl) { /* the file went away: no rules */
            g.have_ctl = false;
            g.n_rules = 0;
        }
        return 0;
    }
    if (g.have_ctl && st.st_dev == g.dev && st.st_ino == g.ino && st.st_size == g.size &&
        st.st_mtim.tv_sec == g.mtime.tv_sec && st.st_mtim.tv_nsec == g.mtime.tv_nsec)
        return 0;
    char buf[SHIM_CONTROL_MAX + 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t len = read(fd, buf, SHIM_CONTROL_MAX);
    close(fd);
    if (len < 0)
        return 0;
    buf[len] = '\0';
    g.have_ctl = true;
    g.dev = st.st_dev;
    g.ino = st.st_ino;
    g.size = st.st_size;
    g.mtime = st.st_mtim;
    g.n_rules = 0;

    size_t n_close = 0;
    char *line = buf;
    while (line != NULL && *line != '\0') {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        char *w[4];
        size_t nw = split_words(line, w, 4);
        if (nw >= 3 && strcmp(w[0], "hang") == 0 && g.n_rules < SHIM_RULES_MAX &&
            strlen(w[1]) < SHIM_FN_MAX) {
            shim_rule *r = &g.rules[g.n_rules];
            char *end = NULL;
            long ms = strtol(w[2], &end, 10);
            if (end != w[2] && *end == '\0' && ms > 0 && ms <= 600000) {
                memcpy(r->fn, w[1], strlen(w[1]) + 1);
                r->rv = CKR_OK;
                r->hang_ms = ms;
                r->remaining = -1;
                if (nw == 4) {
                    long c = strtol(w[3], &end, 10);
                    r->remaining = (end != w[3] && *end == '\0' && c > 0) ? c : -1;
                }
                g.n_rules++;
            }
        } else if (nw >= 3 && strcmp(w[0], "fail") == 0 && g.n_rules < SHIM_RULES_MAX &&
                   strlen(w[1]) < SHIM_FN_MAX) {
            shim_rule *r = &g.rules[g.n_rules];
            r->hang_ms = 0;
            if (parse_rv(w[2], &r->rv)) {
                memcpy(r->fn, w[1], strlen(w[1]) + 1);
                r->remaining = -1;
                if (nw == 4) {
                    char *end = NULL;
                    long c = strtol(w[3], &end, 10);
                    r->remaining = (end != w[3] && *end == '\0' && c > 0) ? c : -1;
                }
                g.n_rules++;
            }
        } else if (nw == 1 && strcmp(w[0], "invalidate") == 0) {
            n_close += invalidate_locked(true, to_close + n_close);
        } else if (nw == 1 && strcmp(w[0], "invalidate-objects") == 0) {
            (void)invalidate_locked(false, NULL);
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    return n_close;
}

static void count_locked(const char *fn)
{
    for (size_t i = 0; i < SHIM_COUNTERS_MAX; i++) {
        if (g.counters[i].fn == NULL) {
            g.counters[i].fn = fn;
            g.counters[i].n = 1;
            return;
        }
        if (strcmp(g.counters[i].fn, fn) == 0) {
            g.counters[i].n++;
            return;
        }
    }
}

/* Every call starts here: count it, pick up new commands, and fail it if told to.
 * On return *held says whether the call holds g.calls for reading (released by
 * ENTER's cleanup when the wrapper returns). */
static CK_RV enter(const char *fn, int *held)
{
    CK_SESSION_HANDLE to_close[SHIM_SESSIONS_MAX];
    CK_RV rv = CKR_OK;
    long hang_ms = 0;
    pthread_mutex_lock(&g.mu);
    count_locked(fn);
    size_t n_close = control_refresh_locked(to_close);
    for (size_t i = 0; i < g.n_rules && rv == CKR_OK; i++) {
        shim_rule *r = &g.rules[i];
        bool match = strcmp(r->fn, fn) == 0 || (strcmp(r->fn, "*") == 0 && !module_level(fn));
        if (!match || r->remaining == 0)
            continue;
        if (r->remaining > 0)
            r->remaining--;
        if (r->hang_ms > 0)
            hang_ms = r->hang_ms;
        else
            rv = r->rv;
    }
    CK_FUNCTION_LIST *real = g.real;
    pthread_mutex_unlock(&g.mu);
    /* Held before the call takes g.calls: an invalidation is never stuck behind it. */
    if (hang_ms > 0) {
        struct timespec ts = {hang_ms / 1000, (hang_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    /* The real sessions of an invalidation really go (and with the last one,
     * the login), while no other call is inside the module. */
    if (n_close > 0 && real != NULL) {
        pthread_rwlock_wrlock(&g.calls);
        for (size_t i = 0; i < n_close; i++)
            (void)real->C_CloseSession(to_close[i]);
        pthread_rwlock_unlock(&g.calls);
    }
    pthread_rwlock_rdlock(&g.calls);
    *held = 1;
    if (rv == CKR_OK && real == NULL && !module_level(fn))
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
    return rv;
}

unsigned long p11shim_calls(const char *fn);
unsigned long p11shim_calls(const char *fn)
{
    unsigned long n = 0;
    pthread_mutex_lock(&g.mu);
    for (size_t i = 0; i < SHIM_COUNTERS_MAX && g.counters[i].fn != NULL; i++)
        if (strcmp(g.counters[i].fn, fn) == 0)
            n = g.counters[i].n;
    pthread_mutex_unlock(&g.mu);
    return n;
}

/* Application handle -> real handle, refusing those of an older generation. */
static CK_RV sess_in(CK_SESSION_HANDLE *h)
{
    pthread_mutex_lock(&g.mu);
    bool ok = (*h >> 32) == g.sgen;
    pthread_mutex_unlock(&g.mu);
    if (!ok)
        return CKR_SESSION_HANDLE_INVALID;
    *h &= SHIM_LOW;
    return CKR_OK;
}

static CK_RV obj_in(CK_OBJECT_HANDLE *o, CK_RV bad)
{
    pthread_mutex_lock(&g.mu);
    bool ok = (*o >> 32) == g.ogen;
    pthread_mutex_unlock(&g.mu);
    if (!ok)
        return bad;
    *o &= SHIM_LOW;
    return CKR_OK;
}

static void obj_out(CK_OBJECT_HANDLE *o)
{
    pthread_mutex_lock(&g.mu);
    if (*o != CK_INVALID_HANDLE)
        *o = (*o & SHIM_LOW) | (g.ogen << 32);
    pthread_mutex_unlock(&g.mu);
}

static void calls_release(int *held)
{
    if (*held)
        pthread_rwlock_unlock(&g.calls);
}

/* The read hold on g.calls ends when the wrapper returns (GCC/Clang cleanup
 * attribute: this is test code, built only with those compilers). */
#define ENTER(fn)                                                                                  \
    int held_ __attribute__((cleanup(calls_release))) = 0;                                         \
    do {                                                                                           \
        CK_RV rv_ = enter(fn, &held_);                                                             \
        if (rv_ != CKR_OK)                                                                         \
            return rv_;                                                                            \
    } while (0)
#define SESS(h)                                                                                    \
    do {                                                                                           \
        CK_RV rv_ = sess_in(&(h));                                                                 \
        if (rv_ != CKR_OK)                                                                         \
            return rv_;                                                                            \
    } while (0)
#define OBJ(o, bad)                                                                                \
    do {                                                                                           \
        CK_RV rv_ = obj_in(&(o), (bad));                                                           \
        if (rv_ != CKR_OK)                                                                         \
            return rv_;                                                                            \
    } while (0)

/* ---- module and slots ------------------------------------------------------------------- */

static CK_FUNCTION_LIST k_list;

static CK_RV shim_Initialize(void *args)
{
    (void)args; /* p11-kit initialises the real module itself (CKF_OS_LOCKING_OK) */
    ENTER("C_Initialize");
    const char *path = getenv("JS_P11SHIM_MODULE");
    if (path == NULL || path[0] == '\0')
        path = SHIM_DEFAULT_MODULE;
    pthread_mutex_lock(&g.mu);
    bool already = g.real != NULL;
    pthread_mutex_unlock(&g.mu);
    if (already)
        return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    CK_FUNCTION_LIST *real = p11_kit_module_load(path, 0);
    if (real == NULL)
        return CKR_GENERAL_ERROR;
    CK_RV rv = p11_kit_module_initialize(real);
    if (rv != CKR_OK) {
        p11_kit_module_release(real);
        return rv;
    }
    pthread_mutex_lock(&g.mu);
    g.real = real;
    pthread_mutex_unlock(&g.mu);
    return CKR_OK;
}

static CK_RV shim_Finalize(void *reserved)
{
    (void)reserved;
    ENTER("C_Finalize");
    pthread_mutex_lock(&g.mu);
    CK_FUNCTION_LIST *real = g.real;
    g.real = NULL;
    g.sgen++;
    g.ogen++;
    g.n_sessions = 0;
    pthread_mutex_unlock(&g.mu);
    if (real == NULL)
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    CK_RV rv = p11_kit_module_finalize(real);
    p11_kit_module_release(real);
    return rv;
}

static CK_RV shim_GetInfo(CK_INFO *info)
{
    ENTER("C_GetInfo");
    if (g.real == NULL)
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    return g.real->C_GetInfo(info);
}

static CK_RV shim_GetFunctionList(CK_FUNCTION_LIST **list)
{
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    *list = &k_list;
    return CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **list);
CK_RV C_GetFunctionList(CK_FUNCTION_LIST **list)
{
    return shim_GetFunctionList(list);
}

static CK_RV shim_GetSlotList(CK_BBOOL present, CK_SLOT_ID *slots, CK_ULONG *count)
{
    ENTER("C_GetSlotList");
    return g.real->C_GetSlotList(present, slots, count);
}

static CK_RV shim_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
    ENTER("C_GetSlotInfo");
    return g.real->C_GetSlotInfo(slot, info);
}

static CK_RV shim_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
    ENTER("C_GetTokenInfo");
    return g.real->C_GetTokenInfo(slot, info);
}

static CK_RV shim_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID *slot, void *reserved)
{
    ENTER("C_WaitForSlotEvent");
    return g.real->C_WaitForSlotEvent(flags, slot, reserved);
}

static CK_RV shim_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE *list, CK_ULONG *count)
{
    ENTER("C_GetMechanismList");
    return g.real->C_GetMechanismList(slot, list, count);
}

static CK_RV shim_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO *info)
{
    ENTER("C_GetMechanismInfo");
    return g.real->C_GetMechanismInfo(slot, type, info);
}

static CK_RV shim_InitToken(CK_SLOT_ID slot, CK_UTF8CHAR *pin, CK_ULONG len, CK_UTF8CHAR *label)
{
    ENTER("C_InitToken");
    return g.real->C_InitToken(slot, pin, len, label);
}

/* ---- sessions ---------------------------------------------------------------------------- */

static CK_RV shim_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
                              CK_SESSION_HANDLE *h)
{
    ENTER("C_OpenSession");
    CK_RV rv = g.real->C_OpenSession(slot, flags, app, notify, h);
    if (rv != CKR_OK)
        return rv;
    pthread_mutex_lock(&g.mu);
    if (g.n_sessions < SHIM_SESSIONS_MAX)
        g.sessions[g.n_sessions++] = *h;
    *h = (*h & SHIM_LOW) | (g.sgen << 32);
    pthread_mutex_unlock(&g.mu);
    return CKR_OK;
}

static CK_RV shim_CloseSession(CK_SESSION_HANDLE h)
{
    ENTER("C_CloseSession");
    SESS(h);
    CK_RV rv = g.real->C_CloseSession(h);
    pthread_mutex_lock(&g.mu);
    for (size_t i = 0; i < g.n_sessions; i++) {
        if (g.sessions[i] == h) {
            g.sessions[i] = g.sessions[--g.n_sessions];
            break;
        }
    }
    pthread_mutex_unlock(&g.mu);
    return rv;
}

static CK_RV shim_CloseAllSessions(CK_SLOT_ID slot)
{
    ENTER("C_CloseAllSessions");
    pthread_mutex_lock(&g.mu);
    g.n_sessions = 0;
    pthread_mutex_unlock(&g.mu);
    return g.real->C_CloseAllSessions(slot);
}

static CK_RV shim_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO *info)
{
    ENTER("C_GetSessionInfo");
    SESS(h);
    return g.real->C_GetSessionInfo(h, info);
}

static CK_RV shim_InitPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR *pin, CK_ULONG len)
{
    ENTER("C_InitPIN");
    SESS(h);
    return g.real->C_InitPIN(h, pin, len);
}

static CK_RV shim_SetPIN(CK_SESSION_HANDLE h, CK_UTF8CHAR *o, CK_ULONG ol, CK_UTF8CHAR *n,
                         CK_ULONG nl)
{
    ENTER("C_SetPIN");
    SESS(h);
    return g.real->C_SetPIN(h, o, ol, n, nl);
}

static CK_RV shim_GetOperationState(CK_SESSION_HANDLE h, CK_BYTE *state, CK_ULONG *len)
{
    ENTER("C_GetOperationState");
    SESS(h);
    return g.real->C_GetOperationState(h, state, len);
}

static CK_RV shim_SetOperationState(CK_SESSION_HANDLE h, CK_BYTE *state, CK_ULONG len,
                                    CK_OBJECT_HANDLE enc, CK_OBJECT_HANDLE auth)
{
    ENTER("C_SetOperationState");
    SESS(h);
    if (enc != CK_INVALID_HANDLE)
        OBJ(enc, CKR_KEY_HANDLE_INVALID);
    if (auth != CK_INVALID_HANDLE)
        OBJ(auth, CKR_KEY_HANDLE_INVALID);
    return g.real->C_SetOperationState(h, state, len, enc, auth);
}

static CK_RV shim_Login(CK_SESSION_HANDLE h, CK_USER_TYPE type, CK_UTF8CHAR *pin, CK_ULONG len)
{
    ENTER("C_Login");
    SESS(h);
    return g.real->C_Login(h, type, pin, len);
}

static CK_RV shim_Logout(CK_SESSION_HANDLE h)
{
    ENTER("C_Logout");
    SESS(h);
    return g.real->C_Logout(h);
}

/* ---- objects ----------------------------------------------------------------------------- */

static CK_RV shim_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n,
                               CK_OBJECT_HANDLE *o)
{
    ENTER("C_CreateObject");
    SESS(h);
    CK_RV rv = g.real->C_CreateObject(h, t, n, o);
    if (rv == CKR_OK)
        obj_out(o);
    return rv;
}

static CK_RV shim_CopyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, CK_ULONG n,
                             CK_OBJECT_HANDLE *out)
{
    ENTER("C_CopyObject");
    SESS(h);
    OBJ(o, CKR_OBJECT_HANDLE_INVALID);
    CK_RV rv = g.real->C_CopyObject(h, o, t, n, out);
    if (rv == CKR_OK)
        obj_out(out);
    return rv;
}

static CK_RV shim_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
    ENTER("C_DestroyObject");
    SESS(h);
    OBJ(o, CKR_OBJECT_HANDLE_INVALID);
    return g.real->C_DestroyObject(h, o);
}

static CK_RV shim_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ULONG *size)
{
    ENTER("C_GetObjectSize");
    SESS(h);
    OBJ(o, CKR_OBJECT_HANDLE_INVALID);
    return g.real->C_GetObjectSize(h, o, size);
}

static CK_RV shim_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t,
                                    CK_ULONG n)
{
    ENTER("C_GetAttributeValue");
    SESS(h);
    OBJ(o, CKR_OBJECT_HANDLE_INVALID);
    return g.real->C_GetAttributeValue(h, o, t, n);
}

static CK_RV shim_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t,
                                    CK_ULONG n)
{
    ENTER("C_SetAttributeValue");
    SESS(h);
    OBJ(o, CKR_OBJECT_HANDLE_INVALID);
    return g.real->C_SetAttributeValue(h, o, t, n);
}

static CK_RV shim_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n)
{
    ENTER("C_FindObjectsInit");
    SESS(h);
    return g.real->C_FindObjectsInit(h, t, n);
}

static CK_RV shim_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE *o, CK_ULONG max, CK_ULONG *n)
{
    ENTER("C_FindObjects");
    SESS(h);
    CK_RV rv = g.real->C_FindObjects(h, o, max, n);
    if (rv == CKR_OK)
        for (CK_ULONG i = 0; i < *n; i++)
            obj_out(&o[i]);
    return rv;
}

static CK_RV shim_FindObjectsFinal(CK_SESSION_HANDLE h)
{
    ENTER("C_FindObjectsFinal");
    SESS(h);
    return g.real->C_FindObjectsFinal(h);
}

/* ---- cryptographic operations --------------------------------------------------------------- */

/* Init calls taking a key: C_EncryptInit, C_DecryptInit, C_SignInit, ... */
#define SHIM_KEY_INIT(name)                                                                        \
    static CK_RV shim_##name(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k)             \
    {                                                                                              \
        ENTER("C_" #name);                                                                         \
        SESS(h);                                                                                   \
        OBJ(k, CKR_KEY_HANDLE_INVALID);                                                            \
        return g.real->C_##name(h, m, k);                                                          \
    }
SHIM_KEY_INIT(EncryptInit)
SHIM_KEY_INIT(DecryptInit)
SHIM_KEY_INIT(SignInit)
SHIM_KEY_INIT(SignRecoverInit)
SHIM_KEY_INIT(VerifyInit)
SHIM_KEY_INIT(VerifyRecoverInit)

/* (session, in, in_len, out, *out_len) */
#define SHIM_IO(name)                                                                              \
    static CK_RV shim_##name(CK_SESSION_HANDLE h, CK_BYTE *in, CK_ULONG in_len, CK_BYTE *out,      \
                             CK_ULONG *out_len)                                                    \
    {                                                                                              \
        ENTER("C_" #name);                                                                         \
        SESS(h);                                                                                   \
        return g.real->C_##name(h, in, in_len, out, out_len);                                      \
    }
SHIM_IO(Encrypt)
SHIM_IO(EncryptUpdate)
SHIM_IO(Decrypt)
SHIM_IO(DecryptUpdate)
SHIM_IO(Digest)
SHIM_IO(Sign)
SHIM_IO(SignRecover)
SHIM_IO(VerifyRecover)
SHIM_IO(DigestEncryptUpdate)
SHIM_IO(DecryptDigestUpdate)
SHIM_IO(SignEncryptUpdate)
SHIM_IO(DecryptVerifyUpdate)

/* (session, out, *out_len) */
#define SHIM_OUT(name)                                                                             \
    static CK_RV shim_##name(CK_SESSION_HANDLE h, CK_BYTE *out, CK_ULONG *out_len)                 \
    {                                                                                              \
        ENTER("C_" #name);                                                                         \
        SESS(h);                                                                                   \
        return g.real->C_##name(h, out, out_len);                                                  \
    }
SHIM_OUT(EncryptFinal)
SHIM_OUT(DecryptFinal)
SHIM_OUT(DigestFinal)
SHIM_OUT(SignFinal)

/* (session, in, in_len) */
#define SHIM_IN(name)                                                                              \
    static CK_RV shim_##name(CK_SESSION_HANDLE h, CK_BYTE *in, CK_ULONG in_len)                    \
    {                                                                                              \
        ENTER("C_" #name);                                                                         \
        SESS(h);                                                                                   \
        return g.real->C_##name(h, in, in_len);                                                    \
    }
SHIM_IN(DigestUpdate)
SHIM_IN(SignUpdate)
SHIM_IN(VerifyUpdate)
SHIM_IN(VerifyFinal)
SHIM_IN(SeedRandom)
SHIM_IN(GenerateRandom)

static CK_RV shim_Verify(CK_SESSION_HANDLE h, CK_BYTE *d, CK_ULONG dl, CK_BYTE *s, CK_ULONG sl)
{
    ENTER("C_Verify");
    SESS(h);
    return g.real->C_Verify(h, d, dl, s, sl);
}

static CK_RV shim_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM *m)
{
    ENTER("C_DigestInit");
    SESS(h);
    return g.real->C_DigestInit(h, m);
}

static CK_RV shim_DigestKey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k)
{
    ENTER("C_DigestKey");
    SESS(h);
    OBJ(k, CKR_KEY_HANDLE_INVALID);
    return g.real->C_DigestKey(h, k);
}

static CK_RV shim_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *t, CK_ULONG n,
                              CK_OBJECT_HANDLE *k)
{
    ENTER("C_GenerateKey");
    SESS(h);
    CK_RV rv = g.real->C_GenerateKey(h, m, t, n, k);
    if (rv == CKR_OK)
        obj_out(k);
    return rv;
}

static CK_RV shim_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *pt,
                                  CK_ULONG pn, CK_ATTRIBUTE *vt, CK_ULONG vn, CK_OBJECT_HANDLE *pub,
                                  CK_OBJECT_HANDLE *priv)
{
    ENTER("C_GenerateKeyPair");
    SESS(h);
    CK_RV rv = g.real->C_GenerateKeyPair(h, m, pt, pn, vt, vn, pub, priv);
    if (rv == CKR_OK) {
        obj_out(pub);
        obj_out(priv);
    }
    return rv;
}

static CK_RV shim_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE wk,
                          CK_OBJECT_HANDLE k, CK_BYTE *out, CK_ULONG *out_len)
{
    ENTER("C_WrapKey");
    SESS(h);
    OBJ(wk, CKR_WRAPPING_KEY_HANDLE_INVALID);
    OBJ(k, CKR_KEY_HANDLE_INVALID);
    return g.real->C_WrapKey(h, m, wk, k, out, out_len);
}

static CK_RV shim_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE uk, CK_BYTE *w,
                            CK_ULONG wl, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *k)
{
    ENTER("C_UnwrapKey");
    SESS(h);
    OBJ(uk, CKR_UNWRAPPING_KEY_HANDLE_INVALID);
    CK_RV rv = g.real->C_UnwrapKey(h, m, uk, w, wl, t, n, k);
    if (rv == CKR_OK)
        obj_out(k);
    return rv;
}

static CK_RV shim_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE base,
                            CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *k)
{
    ENTER("C_DeriveKey");
    SESS(h);
    OBJ(base, CKR_KEY_HANDLE_INVALID);
    CK_RV rv = g.real->C_DeriveKey(h, m, base, t, n, k);
    if (rv == CKR_OK)
        obj_out(k);
    return rv;
}

static CK_RV shim_GetFunctionStatus(CK_SESSION_HANDLE h)
{
    ENTER("C_GetFunctionStatus");
    SESS(h);
    return g.real->C_GetFunctionStatus(h);
}

static CK_RV shim_CancelFunction(CK_SESSION_HANDLE h)
{
    ENTER("C_CancelFunction");
    SESS(h);
    return g.real->C_CancelFunction(h);
}

static CK_FUNCTION_LIST k_list = {
    .version = {2, 40},
    .C_Initialize = shim_Initialize,
    .C_Finalize = shim_Finalize,
    .C_GetInfo = shim_GetInfo,
    .C_GetFunctionList = shim_GetFunctionList,
    .C_GetSlotList = shim_GetSlotList,
    .C_GetSlotInfo = shim_GetSlotInfo,
    .C_GetTokenInfo = shim_GetTokenInfo,
    .C_GetMechanismList = shim_GetMechanismList,
    .C_GetMechanismInfo = shim_GetMechanismInfo,
    .C_InitToken = shim_InitToken,
    .C_InitPIN = shim_InitPIN,
    .C_SetPIN = shim_SetPIN,
    .C_OpenSession = shim_OpenSession,
    .C_CloseSession = shim_CloseSession,
    .C_CloseAllSessions = shim_CloseAllSessions,
    .C_GetSessionInfo = shim_GetSessionInfo,
    .C_GetOperationState = shim_GetOperationState,
    .C_SetOperationState = shim_SetOperationState,
    .C_Login = shim_Login,
    .C_Logout = shim_Logout,
    .C_CreateObject = shim_CreateObject,
    .C_CopyObject = shim_CopyObject,
    .C_DestroyObject = shim_DestroyObject,
    .C_GetObjectSize = shim_GetObjectSize,
    .C_GetAttributeValue = shim_GetAttributeValue,
    .C_SetAttributeValue = shim_SetAttributeValue,
    .C_FindObjectsInit = shim_FindObjectsInit,
    .C_FindObjects = shim_FindObjects,
    .C_FindObjectsFinal = shim_FindObjectsFinal,
    .C_EncryptInit = shim_EncryptInit,
    .C_Encrypt = shim_Encrypt,
    .C_EncryptUpdate = shim_EncryptUpdate,
    .C_EncryptFinal = shim_EncryptFinal,
    .C_DecryptInit = shim_DecryptInit,
    .C_Decrypt = shim_Decrypt,
    .C_DecryptUpdate = shim_DecryptUpdate,
    .C_DecryptFinal = shim_DecryptFinal,
    .C_DigestInit = shim_DigestInit,
    .C_Digest = shim_Digest,
    .C_DigestUpdate = shim_DigestUpdate,
    .C_DigestKey = shim_DigestKey,
    .C_DigestFinal = shim_DigestFinal,
    .C_SignInit = shim_SignInit,
    .C_Sign = shim_Sign,
    .C_SignUpdate = shim_SignUpdate,
    .C_SignFinal = shim_SignFinal,
    .C_SignRecoverInit = shim_SignRecoverInit,
    .C_SignRecover = shim_SignRecover,
    .C_VerifyInit = shim_VerifyInit,
    .C_Verify = shim_Verify,
    .C_VerifyUpdate = shim_VerifyUpdate,
    .C_VerifyFinal = shim_VerifyFinal,
    .C_VerifyRecoverInit = shim_VerifyRecoverInit,
    .C_VerifyRecover = shim_VerifyRecover,
    .C_DigestEncryptUpdate = shim_DigestEncryptUpdate,
    .C_DecryptDigestUpdate = shim_DecryptDigestUpdate,
    .C_SignEncryptUpdate = shim_SignEncryptUpdate,
    .C_DecryptVerifyUpdate = shim_DecryptVerifyUpdate,
    .C_GenerateKey = shim_GenerateKey,
    .C_GenerateKeyPair = shim_GenerateKeyPair,
    .C_WrapKey = shim_WrapKey,
    .C_UnwrapKey = shim_UnwrapKey,
    .C_DeriveKey = shim_DeriveKey,
    .C_SeedRandom = shim_SeedRandom,
    .C_GenerateRandom = shim_GenerateRandom,
    .C_GetFunctionStatus = shim_GetFunctionStatus,
    .C_CancelFunction = shim_CancelFunction,
    .C_WaitForSlotEvent = shim_WaitForSlotEvent,
};
