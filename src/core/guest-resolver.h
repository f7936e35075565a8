/* Where a new sandbox's guest is, when the caller did not say: the interface the core asks */
#pragma once

#include "sockaddr-util.h"

enum {
        GUEST_RESOLVE_UNKNOWN = 1, /* the registry knows no such machine, or no usable address */
        GUEST_RESOLVE_UNAVAILABLE = 2, /* the registry could not be asked, or did not answer */
};

/* r: 0 with the addresses found (either may be AF_UNSPEC, not both); GUEST_RESOLVE_UNKNOWN or
 * GUEST_RESOLVE_UNAVAILABLE when there is none, with message saying why (names the sandbox);
 * -errno on failure. */
typedef void (*guest_resolve_done_t)(void *userdata, int r, const SockaddrUnion *guest4,
                                     const SockaddrUnion *guest6, const char *message);

typedef struct GuestResolver GuestResolver;

typedef struct GuestResolverOps {
        /* Returns 1 with *ret_pending set: done will be called later (never from inside
         * resolve); or -errno. */
        int (*resolve)(GuestResolver *g, const char *sandbox_id, guest_resolve_done_t done,
                       void *userdata, void **ret_pending);
        /* Forgets a pending lookup: done is not called. */
        void (*cancel)(GuestResolver *g, void *pending);
} GuestResolverOps;

struct GuestResolver {
        const GuestResolverOps *ops;
};
