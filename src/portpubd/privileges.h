/* Dropping root: run as another user with CAP_NET_BIND_SERVICE and nothing else */
#pragma once

#include <sys/types.h>

typedef struct RunAs {
        uid_t uid;
        gid_t gid;
        char *name;
} RunAs;

/* Looks the user up (before the loop runs: NSS may block). */
int run_as_lookup(const char *user, RunAs *ret);
void run_as_done(RunAs *r);
/* Gives path (a file or directory, when it exists) to the user, so the daemon can go on
 * writing there after the drop. */
int run_as_chown(const RunAs *r, const char *path);
/* Becomes the user, with CAP_NET_BIND_SERVICE as the only capability left, also in the
 * bounding set, and no way to gain others (no_new_privs). */
int run_as_drop(const RunAs *r);
