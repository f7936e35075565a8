/* Dropping root: run as another user with CAP_NET_BIND_SERVICE and nothing else
 *
 * Binding ports below net.ipv4.ip_unprivileged_port_start is the only privileged thing the
 * daemon does once it runs. So: keep capabilities across the uid change (PR_SET_KEEPCAPS),
 * drop every other capability from the bounding set while CAP_SETPCAP is still there, change
 * groups and ids, then set the permitted and effective sets to CAP_NET_BIND_SERVICE alone. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "privileges.h"

int run_as_lookup(const char *user, RunAs *ret) {
        struct passwd pw, *result = NULL;
        _cleanup_free_ char *buf = NULL;
        long size = sysconf(_SC_GETPW_R_SIZE_MAX);
        int r;

        if (size <= 0)
                size = 16384;
        buf = malloc((size_t) size);
        if (!buf)
                return log_oom();
        r = getpwnam_r(user, &pw, buf, (size_t) size, &result);
        if (r != 0)
                return log_error_errno(r, "Failed to look up user '%s': %m", user);
        if (!result)
                return log_error_errno(ESRCH, "Invalid --run-as='%s': no such user.", user);
        *ret = (RunAs){ .uid = pw.pw_uid, .gid = pw.pw_gid, .name = strdup(user) };
        if (!ret->name)
                return log_oom();
        return 0;
}

void run_as_done(RunAs *r) {
        r->name = mfree(r->name);
}

int run_as_chown(const RunAs *r, const char *path) {
        if (chown(path, r->uid, r->gid) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to give %s to user '%s': %m", path, r->name);
        return 0;
}

int run_as_drop(const RunAs *ra) {
        static const cap_value_t keep[] = { CAP_NET_BIND_SERVICE };
        cap_t caps;
        int r;

        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
                return log_error_errno(errno, "Failed to keep capabilities over the uid change: %m");
        for (cap_value_t c = 0; c <= CAP_LAST_CAP; c++)
                if (c != CAP_NET_BIND_SERVICE && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 &&
                    errno != EINVAL)
                        return log_error_errno(errno,
                                               "Failed to drop capability %d from the bounding set: %m",
                                               (int) c);
        if (setgroups(0, NULL) < 0)
                return log_error_errno(errno, "Failed to drop supplementary groups: %m");
        if (setresgid(ra->gid, ra->gid, ra->gid) < 0)
                return log_error_errno(errno, "Failed to become group %u: %m", (unsigned) ra->gid);
        if (setresuid(ra->uid, ra->uid, ra->uid) < 0)
                return log_error_errno(errno, "Failed to become user '%s': %m", ra->name);

        caps = cap_init();
        if (!caps)
                return log_oom();
        r = cap_set_flag(caps, CAP_PERMITTED, ELEMENTSOF(keep), keep, CAP_SET);
        if (r >= 0)
                r = cap_set_flag(caps, CAP_EFFECTIVE, ELEMENTSOF(keep), keep, CAP_SET);
        if (r >= 0)
                r = cap_set_proc(caps);
        if (r < 0)
                r = -errno;
        cap_free(caps);
        if (r < 0)
                return log_error_errno(r, "Failed to keep only CAP_NET_BIND_SERVICE: %m");
        (void) prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return log_error_errno(errno, "Failed to set no_new_privs: %m");
        log_info("Running as user '%s' (uid %u) with CAP_NET_BIND_SERVICE only.", ra->name,
                 (unsigned) ra->uid);
        return 0;
}
