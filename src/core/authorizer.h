/* Who may change what: the interface the core asks, and the rules that need no bus */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caller.h"

typedef enum AuthAction {
        AUTH_ACTION_PUBLISH,
        AUTH_ACTION_PUBLISH_PRIVILEGED, /* a host port below ip_unprivileged_port_start */
        AUTH_ACTION_MANAGE_ALL, /* a sandbox another uid owns */
        _AUTH_ACTION_MAX,
} AuthAction;

/* The polkit action ids, "io.portpub.Publisher1.publish" and so on. */
const char *auth_action_to_string(AuthAction a);

/* One question: may caller do action? The details name what the call is about: its sandbox and
 * the first port that needs this action (protocol "" when the call is about no port). */
typedef struct AuthQuery {
        Caller *caller;
        AuthAction action;
        const char *sandbox_id;
        const char *protocol;
        const char *host_address;
        uint16_t host_port;
        bool interactive; /* the caller allows interactive authorization */
} AuthQuery;

enum {
        AUTH_DENY = 0,
        AUTH_ALLOW = 1,
        AUTH_PENDING = 2,
};

/* reason: why not, when !allowed ("" else). */
typedef void (*auth_done_t)(void *userdata, bool allowed, const char *reason);

typedef struct Authorizer Authorizer;

typedef struct AuthorizerOps {
        /* Returns AUTH_ALLOW, or AUTH_DENY with the reason in reason[size], when it can decide
         * at once; AUTH_PENDING with *ret_pending set when done will be called later (never
         * from inside check); or -errno. */
        int (*check)(Authorizer *a, const AuthQuery *q, auth_done_t done, void *userdata,
                     char *reason, size_t size, void **ret_pending);
        /* Forgets a pending check: done is not called. */
        void (*cancel)(Authorizer *a, void *pending);
} AuthorizerOps;

struct Authorizer {
        const AuthorizerOps *ops;
};

/* The rules that need nobody to ask: with allow_all every caller may change everything (a
 * user's own daemon); without it only root may, everyone else is denied (fail closed). */
typedef struct LocalAuthorizer {
        Authorizer authorizer;
        bool allow_all;
} LocalAuthorizer;

void local_authorizer_init(LocalAuthorizer *a, bool allow_all);
