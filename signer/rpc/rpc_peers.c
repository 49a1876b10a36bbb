/*
 * rpc_peers.c - the Unix socket of Kubernetes' ExternalJWTSigner and the
 * peer credentials of its connections (rpc_call.h).
 *
 * gRPC 1.51 does not expose a Unix peer's credentials to a call, so the
 * signer accepts the connections itself: it reads each peer's SO_PEERCRED
 * (uid, gid and pid, as the kernel recorded them at connect(2); unix(7)) and
 * hands the connected socket to the gRPC server
 * (grpc_server_add_channel_from_fd), whose calls then name it in their peer
 * string ("fd:N"). A call's identity is the typed text unix:uid=N of the
 * connection it came on, matched by the policy like any other.
 *
 * Defences, from the outside in:
 *   - the socket's directory must not be writable by group or others (who
 *     could write there could replace the socket; OpenSSH's StrictModes);
 *   - the socket's owner, group and mode (at most 0660) from the
 *     configuration: only kube-apiserver's user or group can connect. The
 *     mode is on the socket before bind(2) creates its file (Linux creates
 *     it with the socket's mode less the umask), the owner and group are set
 *     through a descriptor of that very file (never through a symlink), and
 *     all of it before listen(2): no connection is ever accepted with
 *     looser permissions;
 *   - a peer whose uid no policy entry names is refused at accept: the
 *     connection is closed before any byte of it is read, and the refusal
 *     is logged and audited (policy.no_match) within the denial budget;
 *   - at most JS_K8S_MAX_CONNECTIONS connections at a time, and half of
 *     them per uid, so one named peer cannot keep kube-apiserver out: a
 *     connection beyond is closed at once (externaljwt.connections; one
 *     gRPC has closed no longer counts: its descriptor is checked against
 *     the socket's cookie). The fd watcher (signer/listener.c) keeps room
 *     for them;
 *   - every call is matched again by the policy in force (a reload or a
 *     freeze reaches open connections), and rate-limited like SignJwt.
 * A call finds its credentials by the descriptor number gRPC names it
 * with, checked against the socket's cookie recorded at accept. gRPC closes a
 * connection's descriptor only once its transport is gone, and a call
 * being decided holds its transport, so the number cannot have been reused
 * for another peer meanwhile; if that ever failed, both peers would still
 * be ones the policy names (the check at accept).
 */
#define _GNU_SOURCE /* struct ucred (SO_PEERCRED, unix(7)) */

#include "rpc_call.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/string_util.h>

#include "auditlog.h"
#include "clock.h"
#include "denials.h"
#include "identity.h"
#include "logline.h"
#include "metrics.h"
#include "policy_store.h"

#define PEERS_MAX     JS_K8S_MAX_CONNECTIONS
#define PEERS_PER_UID (JS_K8S_MAX_CONNECTIONS / 2)
/* The accept thread looks at its stop flag this often. */
#define PEERS_POLL_MS 200
/* After accept(2) fails for lack of descriptors or memory, wait this long. */
#define PEERS_BACKOFF_MS 100
/* listen(2) backlog. */
#define PEERS_BACKLOG 64

/*
 * The connections' descriptors belong to gRPC, which closes them in
 * libgrpc, code ThreadSanitizer does not see. Had TSan seen us create them,
 * it would take the kernel's reuse of the number by another thread (an
 * audit segment, an HSM file) for a race with our accept. So the accept
 * thread creates, inspects and closes them with raw system calls, outside
 * TSan's descriptor model, like gRPC's own listener (the calls are the same
 * in every build), and look at them only through getsockopt(2).
 */
static int raw_accept(int listen_fd)
{
    return (int)syscall(SYS_accept4, listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

/* The socket's cookie (SO_COOKIE, socket(7)): a 64-bit id the kernel never
 * gives another socket, so a descriptor number gRPC closed and something
 * else got since never passes for the connection. 0 = not a live socket. */
static uint64_t sock_cookie(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0 || len != sizeof(cookie))
        return 0;
    return cookie;
}

static void raw_close(int fd)
{
    (void)syscall(SYS_close, fd);
}

typedef struct peer {
    int fd;          /* -1: free */
    uint64_t cookie; /* SO_COOKIE */
    struct ucred cred;
} peer;

struct rpc_peers {
    js_server *srv;
    char *path;
    int listen_fd;
    dev_t sock_dev; /* the socket file bind(2) made, removed at stop only if */
    ino_t sock_ino; /* it is still that file */
    bool bound;
    grpc_server_credentials *creds;
    js_policy_cache policy; /* the accept thread's view of the policy */
    pthread_t thread;
    int started;
    atomic_bool stop;
    pthread_mutex_t mu; /* guards e */
    peer e[PEERS_MAX];
};

static js_status sock_fail(js_err *err, const char *what, const char *path)
{
    int e = errno;
    return js_err_set(err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET, "externaljwt socket %s: %s: %s",
                      path, what, strerror(e));
}

/* A socket left at path by an earlier run is removed: only one that
 * refuses connections (ECONNREFUSED: nobody listens). One that accepts, or
 * any other answer, or anything that is not a socket, is left alone. The
 * probe does not block. */
static js_status clear_stale(const char *path, const struct sockaddr_un *sa, js_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? JS_OK : sock_fail(err, "cannot inspect", path);
    JS_ENSURE(S_ISSOCK(st.st_mode), err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET,
              "externaljwt socket %s: the path exists and is not a socket; not removing it", path);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0)
        return sock_fail(err, "socket", path);
    int rc = connect(probe, (const struct sockaddr *)sa, sizeof(*sa));
    int e = rc == 0 ? 0 : errno;
    close(probe);
    if (e != ECONNREFUSED) {
        errno = e;
        return rc == 0 || e == EAGAIN || e == EINPROGRESS
                   ? js_err_set(err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET,
                                "externaljwt socket %s: another process is listening on it", path)
                   : sock_fail(err, "exists and cannot be probed (not removing it)", path);
    }
    if (unlink(path) != 0)
        return sock_fail(err, "cannot remove the stale socket", path);
    return JS_OK;
}

/* The socket's directory may be written only by its owner, who is root or
 * the signer's user: anyone else who could write there could replace the
 * socket with their own and sit between kube-apiserver and the signer. */
static js_status check_dir(const char *path, js_err *err)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
    JS_ENSURE(n < sizeof(dir), err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET, "path too long");
    memcpy(dir, slash == NULL ? "." : path, n);
    dir[n] = '\0';
    struct stat st;
    if (stat(dir, &st) != 0)
        return sock_fail(err, "cannot inspect its directory", path);
    JS_ENSURE((st.st_mode & (S_IWGRP | S_IWOTH)) == 0 && (st.st_uid == 0 || st.st_uid == geteuid()),
              err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET,
              "externaljwt socket %s: its directory %s (mode %04o, owner %lu) is writable by "
              "others than root and the signer's user, who could replace the socket; use a "
              "directory only they can write, e.g. /run/jwt-signer",
              path, dir, (unsigned)(st.st_mode & 07777), (unsigned long)st.st_uid);
    return JS_OK;
}

/* fchmod, bind, chown and chmod through an O_PATH descriptor of the file
 * bind made, then listen: no connection is ever accepted with looser
 * permissions, and nothing is changed through a symlink. */
static js_status sock_open(rpc_peers *p, const js_config *cfg, js_err *err)
{
    const char *path = cfg->externaljwt_socket;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    JS_ENSURE(strlen(path) < sizeof(sa.sun_path), err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET,
              "externaljwt socket path is too long");
    memcpy(sa.sun_path, path, strlen(path) + 1);
    JS_GUARD(check_dir(path, err));
    JS_GUARD(clear_stale(path, &sa, err));
    p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (p->listen_fd < 0)
        return sock_fail(err, "socket", path);
    mode_t mode = (mode_t)cfg->externaljwt_mode;
    /* unix(7): the file gets the socket's mode less the umask. */
    if (fchmod(p->listen_fd, mode) != 0)
        return sock_fail(err, "cannot set the socket's mode before bind", path);
    if (bind(p->listen_fd, (const struct sockaddr *)&sa, sizeof(sa)) != 0)
        return sock_fail(err, "bind", path);
    p->path = strdup(path);
    JS_ENSURE_ALLOC(p->path, err);
    int pfd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (pfd < 0)
        return sock_fail(err, "cannot open the file bind made", path);
    struct stat st;
    js_status st_ok = JS_OK;
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
    if (fstat(pfd, &st) != 0 || !S_ISSOCK(st.st_mode))
        st_ok = js_err_set(err, JS_ECONFIG, JS_R_EXTERNALJWT_SOCKET,
                           "externaljwt socket %s: replaced by something else after bind", path);
    else if ((cfg->externaljwt_uid >= 0 || cfg->externaljwt_gid >= 0) &&
             fchownat(pfd, "", cfg->externaljwt_uid >= 0 ? (uid_t)cfg->externaljwt_uid : (uid_t)-1,
                      cfg->externaljwt_gid >= 0 ? (gid_t)cfg->externaljwt_gid : (gid_t)-1,
                      AT_EMPTY_PATH) != 0)
        st_ok = sock_fail(err, "cannot set its owner and group (externaljwt.owner, .group)", path);
    /* The exact mode, whatever the umask took away; through /proc, which
     * names the file itself, not a path an attacker could swap. */
    else if (chmod(proc, mode) != 0)
        st_ok = sock_fail(err, "cannot set its mode (externaljwt.mode)", path);
    if (st_ok == JS_OK) {
        p->sock_dev = st.st_dev;
        p->sock_ino = st.st_ino;
        p->bound = true;
    }
    close(pfd);
    JS_GUARD(st_ok);
    if (listen(p->listen_fd, PEERS_BACKLOG) != 0)
        return sock_fail(err, "listen", path);
    return JS_OK;
}

/* The live connection slot count; slots whose descriptor gRPC has closed
 * (or reused for something else) are freed. Caller holds mu. */
static size_t sweep(rpc_peers *p)
{
    size_t live = 0;
    for (size_t i = 0; i < PEERS_MAX; i++) {
        if (p->e[i].fd < 0)
            continue;
        if (sock_cookie(p->e[i].fd) != p->e[i].cookie)
            p->e[i].fd = -1;
        else
            live++;
    }
    return live;
}

/* A refused connection: one log line and one audit record within the
 * denial budget (denials.h), otherwise counted into a folded record. */
static void refuse(rpc_peers *p, const char *identity, const char *peer_text, js_status status,
                   js_reason why, const char *msg)
{
    js_server *srv = p->srv;
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(identity, peer_text, key, sizeof(key));
    const char *reason = js_reason_name(why);
    js_metrics_request(srv->metrics, "ExternalJWTSigner.connect", identity,
                       js_decision_name(JS_DECISION_DENY), reason);
    if (!js_denials_admit(srv->denials, key, js_mono_ms())) {
        js_audit_note_folded(srv->audit, "sign", identity, peer_text, reason);
        return;
    }
    js_reqlog log = {
        .method = "ExternalJWTSigner.connect",
        .caller = identity,
        .peer = peer_text,
        .decision = js_decision_name(JS_DECISION_DENY),
        .status = rpc_status_name(rpc_status_code(status)),
        .reason = reason,
        .message = msg,
    };
    js_reqlog_emit(&log);
    js_audit_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = "sign";
    ev.caller = identity;
    ev.peer = peer_text;
    ev.decision = js_decision_name(JS_DECISION_DENY);
    ev.reason = reason;
    ev.message = msg;
    const js_policy *policy = js_policy_cache_get(&p->policy, srv->policies);
    ev.policy_hash = js_policy_hash_hex(policy);
    if (js_audit_submit(srv->audit, &ev, NULL, NULL, NULL) != JS_OK &&
        js_denials_admit(srv->quiet, "audit_record_lost", js_mono_ms()))
        js_log_event("warn", "audit_record_lost", "a denial could not be queued for the audit log");
}

static void peer_text(const struct ucred *cr, char *out, size_t cap)
{
    snprintf(out, cap, "unix:pid=%ld,uid=%lu,gid=%lu", (long)cr->pid, (unsigned long)cr->uid,
             (unsigned long)cr->gid);
}

/* One accepted connection: credentials, the policy gate, the slot, gRPC. */
static void admit(rpc_peers *p, int fd)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    uint64_t cookie = sock_cookie(fd);
    char identity[IDENTITY_MAX + 1] = "";
    char ptext[96] = "unix:";
    js_err err;
    js_err_clear(&err);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof(cr) ||
        cookie == 0) {
        refuse(p, "", ptext, JS_EDENIED, JS_R_IDENTITY_NONE,
               "the peer's credentials cannot be read");
        raw_close(fd);
        return;
    }
    peer_text(&cr, ptext, sizeof(ptext));
    if (identity_from_peer((unsigned long)cr.uid, identity, sizeof(identity), &err) != JS_OK) {
        refuse(p, "", ptext, err.status, err.reason, err.msg);
        raw_close(fd);
        return;
    }
    const js_policy *policy = js_policy_cache_get(&p->policy, p->srv->policies);
    if (js_policy_match(policy, identity) == NULL) {
        char msg[JS_MSG_MAX];
        snprintf(msg, sizeof(msg),
                 "caller '%s' matches no entry of the policy: connection closed before any call",
                 identity);
        refuse(p, identity, ptext, JS_EDENIED, JS_R_POLICY_NO_MATCH, msg);
        raw_close(fd);
        return;
    }
    pthread_mutex_lock(&p->mu);
    peer *slot = NULL;
    /* The number may be one gRPC closed: that slot is stale. */
    for (size_t i = 0; i < PEERS_MAX; i++)
        if (p->e[i].fd == fd)
            p->e[i].fd = -1;
    size_t live = sweep(p), same_uid = 0;
    for (size_t i = 0; i < PEERS_MAX; i++)
        if (p->e[i].fd >= 0 && p->e[i].cred.uid == cr.uid)
            same_uid++;
    if (live < PEERS_MAX && same_uid < PEERS_PER_UID)
        for (size_t i = 0; i < PEERS_MAX && slot == NULL; i++)
            if (p->e[i].fd < 0)
                slot = &p->e[i];
    if (slot != NULL)
        *slot = (peer){fd, cookie, cr};
    pthread_mutex_unlock(&p->mu);
    if (slot == NULL) {
        char msg[JS_MSG_MAX];
        snprintf(msg, sizeof(msg),
                 "%zu connections are open on the externaljwt socket, %zu of them uid %lu's "
                 "(limits %d and %d): connection closed",
                 live, same_uid, (unsigned long)cr.uid, PEERS_MAX, PEERS_PER_UID);
        refuse(p, identity, ptext, JS_ELIMIT, JS_R_EXTERNALJWT_CONNECTIONS, msg);
        raw_close(fd);
        return;
    }
    grpc_server_add_channel_from_fd(p->srv->server, fd, p->creds);
}

static void *accept_main(void *arg)
{
    rpc_peers *p = arg;
    int64_t last_report = 0;
    while (!atomic_load(&p->stop)) {
        struct pollfd pfd = {p->listen_fd, POLLIN, 0};
        if (poll(&pfd, 1, PEERS_POLL_MS) <= 0)
            continue;
        int fd = raw_accept(p->listen_fd);
        if (fd >= 0) {
            admit(p, fd);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            continue;
        /* Out of descriptors or memory: wait, and say so once a second. */
        int64_t now = js_mono_ms();
        if (now - last_report >= 1000) {
            last_report = now;
            char msg[160];
            snprintf(msg, sizeof(msg), "accept on the externaljwt socket failed: %s",
                     strerror(errno));
            js_log_event("warn", "externaljwt_accept_failed", msg);
        }
        struct timespec ts = {0, PEERS_BACKOFF_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

js_status rpc_peers_new(js_server *srv, js_err *err)
{
    rpc_peers *p = calloc(1, sizeof(*p));
    JS_ENSURE_ALLOC(p, err);
    p->srv = srv;
    p->listen_fd = -1;
    atomic_init(&p->stop, false);
    for (size_t i = 0; i < PEERS_MAX; i++)
        p->e[i].fd = -1;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return js_err_set(err, JS_EINTERNAL, JS_R_SERVER_THREAD, "cannot create a mutex");
    }
    srv->peers = p;
    p->creds = grpc_insecure_server_credentials_create();
    return sock_open(p, srv->cfg, err);
}

js_status rpc_peers_start(rpc_peers *p, js_err *err)
{
    JS_ENSURE(pthread_create(&p->thread, NULL, accept_main, p) == 0, err, JS_EINTERNAL,
              JS_R_SERVER_THREAD, "cannot start the externaljwt accept thread");
    p->started = 1;
    return JS_OK;
}

void rpc_peers_stop(rpc_peers *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, true);
    if (p->started)
        pthread_join(p->thread, NULL);
    p->started = 0;
    /* Removed only if the path still names the file this signer bound: a
     * signer started meanwhile may have replaced it with its own. */
    struct stat st;
    if (p->bound && lstat(p->path, &st) == 0 && st.st_dev == p->sock_dev &&
        st.st_ino == p->sock_ino)
        unlink(p->path);
    p->bound = false;
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
        p->listen_fd = -1;
    }
}

void rpc_peers_free(rpc_peers *p)
{
    if (p == NULL)
        return;
    rpc_peers_stop(p);
    if (p->creds != NULL)
        grpc_server_credentials_release(p->creds);
    js_policy_cache_clear(&p->policy);
    pthread_mutex_destroy(&p->mu);
    free(p->path);
    free(p);
}

js_status rpc_peers_identity(rpc_peers *p, grpc_call *call, char *identity, size_t cap,
                             char **peer_out, js_err *err)
{
    *peer_out = NULL;
    identity[0] = '\0';
    char *where = grpc_call_get_peer(call);
    /* grpc_server_add_channel_from_fd names the connection "fd:N". */
    char *end = NULL;
    long fd = -1;
    if (where != NULL && strncmp(where, "fd:", 3) == 0) {
        errno = 0;
        fd = strtol(where + 3, &end, 10);
        if (errno != 0 || end == where + 3 || *end != '\0')
            fd = -1;
    }
    gpr_free(where);
    struct ucred cr;
    bool found = false;
    uint64_t cookie = fd >= 0 && fd <= INT_MAX ? sock_cookie((int)fd) : 0;
    if (cookie != 0) {
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < PEERS_MAX && !found; i++)
            if (p->e[i].fd == (int)fd && p->e[i].cookie == cookie) {
                cr = p->e[i].cred;
                found = true;
            }
        pthread_mutex_unlock(&p->mu);
    }
    if (!found) {
        *peer_out = gpr_strdup("unix:");
        return js_err_set(err, JS_EDENIED, JS_R_IDENTITY_NONE,
                          "the call's connection is not one the signer accepted");
    }
    char text[96];
    peer_text(&cr, text, sizeof(text));
    *peer_out = gpr_strdup(text);
    return identity_from_peer((unsigned long)cr.uid, identity, cap, err);
}
