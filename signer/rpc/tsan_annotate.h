/*
 * tsan_annotate.h - the happens-before edges of gRPC completion queues, stated
 * for ThreadSanitizer (private to signer/rpc).
 *
 * libgrpc is a Debian system library, not built with -fsanitize=thread, so
 * TSan cannot see that an event taken from a completion queue happens after
 * the grpc_call_start_batch / grpc_server_request_*call that queued its tag,
 * possibly on another thread (an allowed SignJwt's reply is started by the
 * audit notifier and completes on the worker that frees the call). gRPC
 * guarantees that order (grpc/grpc.h); these macros tell TSan:
 * JS_TAG_HANDOFF(tag) just before a tag is given to gRPC, JS_TAG_TAKEN(tag)
 * as soon as it comes back. They compile to nothing outside TSan builds.
 */
#ifndef JS_TSAN_ANNOTATE_H
#define JS_TSAN_ANNOTATE_H

#if defined(__SANITIZE_THREAD__)
#define JS_TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define JS_TSAN_BUILD 1
#endif
#endif

#ifdef JS_TSAN_BUILD
#include <sanitizer/tsan_interface.h>
#define JS_TAG_HANDOFF(tag) __tsan_release((void *)(tag))
#define JS_TAG_TAKEN(tag)   __tsan_acquire((void *)(tag))
#else
#define JS_TAG_HANDOFF(tag) ((void)(tag))
#define JS_TAG_TAKEN(tag)   ((void)(tag))
#endif

#endif
