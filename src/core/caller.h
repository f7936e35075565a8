/* Who asked: a face's connection, as the core sees it */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Made by a face from its transport (a bus connection's credentials, a socket's SO_PEERCRED);
 * reference-counted, since pending requests hold it. When the connection goes away the face
 * calls manager_caller_gone(), which sets gone and cancels the caller's pending requests. */
typedef struct Caller {
        unsigned n_ref;
        uid_t uid;
        pid_t pid; /* 0 when unknown */
        char *label; /* for logs, e.g. the bus connection's unique name */
        bool gone;
} Caller;

int caller_new(Caller **ret, uid_t uid, pid_t pid, const char *label);
Caller *caller_ref(Caller *c);
/* Accepts NULL; returns NULL. */
Caller *caller_unref(Caller *c);
