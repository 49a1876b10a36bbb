/*
 * fdreserve.h - a budget of file descriptors kept for the HSM, the audit log
 * and the HTTP server.
 *
 * gRPC C core 1.51 accepts connections greedily and cannot cap their number;
 * when accept4 fails with EMFILE its listener stops for good (the daemon then
 * re-creates it, signer/listener.c). The HSM module (SoftHSM opens its
 * object files on every operation), the audit writer (segments, checkpoints,
 * the directory) and libmicrohttpd must not fail just because a flood took
 * every descriptor.
 * So the daemon holds `count` descriptors (of /dev/null) from start-up: the
 * moment gRPC reports EMFILE, they are closed, which returns that many free
 * descriptors to everyone else while the listener is down; they are taken
 * again before the listener is re-created.
 *
 * Thread-safe: release may run on any thread (gRPC's log callback), refill on
 * the main thread. Ownership: js_fdreserve_new / js_fdreserve_free.
 */
#ifndef JS_FDRESERVE_H
#define JS_FDRESERVE_H

#include <stddef.h>

#include "err.h"

#define JS_FDRESERVE_MAX 1024

typedef struct js_fdreserve js_fdreserve;

/* Takes up to `count` descriptors (count <= JS_FDRESERVE_MAX). */
js_status js_fdreserve_new(size_t count, js_fdreserve **out, js_err *err) JS_WUR;
/* Closes every held descriptor; returns how many it closed. */
size_t js_fdreserve_release(js_fdreserve *r);
/* Takes descriptors again up to the budget; returns how many are held now. */
size_t js_fdreserve_refill(js_fdreserve *r);
/* Descriptors held now, and the budget. */
size_t js_fdreserve_held(const js_fdreserve *r);
size_t js_fdreserve_budget(const js_fdreserve *r);
void js_fdreserve_free(js_fdreserve *r);

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit; *soft and *hard get the
 * values in force afterwards. JS_EINTERNAL if getrlimit/setrlimit fail.
 */
js_status js_fd_raise_limit(unsigned long *soft, unsigned long *hard, js_err *err) JS_WUR;

/*
 * The lowest free descriptor number: every descriptor below it is open, so it
 * is a lower bound of the open count, read with one dup and one close (cheap
 * enough to poll every millisecond). The fd limit when none is free.
 */
long js_fd_lowest_free(void);

/* Open descriptors of this process (entries of /proc/self/fd), or -1. */
long js_fd_open_count(void);

/*
 * shutdown(2)s every listening TCP socket of this process bound to `port`
 * (any address) except except_fd (the HTTP server's, which may share the
 * port number on another address; -1 = none) and returns how many. Used on a gRPC listener that
 * stopped accepting: shut down, a listening socket leaves the kernel's lookup (and SO_REUSEPORT
 * group), so the connections queued on it are reset and new ones reach the listener that replaces
 * it. The descriptor itself stays open: it belongs to gRPC, which closes it with its server.
 */
int js_fd_shutdown_listeners(int port, int except_fd);

#endif
