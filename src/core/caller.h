/* Who asked: a face's connection, as the core sees it */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Made by a face from its transport (a bus connection's credentials, a socket's SO_PEERCRED);
 * reference-counted, since pending requests hold it. When the connection goes away the face
 * calls manager_caller_gone(), which sets gone and cancels the caller's pending requests. */
typedef struct Caller {
        unsigned n_ref;
        uid_t uid;
        pid_t pid; /* 0 when unknown */
        char *label; /* for logs, e.g. the bus connection's unique name */
        /* How an authorization service can name the caller: its unique name on the bus the
         * daemon serves, or else the process (pid, and its start time so that a recycled pid
         * is not mistaken for it). */
        char *bus_name;
        uint64_t start_time; /* clock ticks since boot, /proc/PID/stat field 22; 0: unknown */
        bool gone;
} Caller;

int caller_new(Caller **ret, uid_t uid, pid_t pid, const char *label);
int caller_set_bus_name(Caller *c, const char *name);
Caller *caller_ref(Caller *c);
/* Accepts NULL; returns NULL. */
Caller *caller_unref(Caller *c);
