/* Who may change what: the rules that need no bus */
#include <stdio.h>

#include "authorizer.h"

const char *auth_action_to_string(AuthAction a) {
        switch (a) {
        case AUTH_ACTION_PUBLISH:
                return "io.portpub.Publisher1.publish";
        case AUTH_ACTION_PUBLISH_PRIVILEGED:
                return "io.portpub.Publisher1.publish-privileged";
        case AUTH_ACTION_MANAGE_ALL:
                return "io.portpub.Publisher1.manage-all";
        default:
                return "io.portpub.Publisher1.unknown";
        }
}

static int local_check(Authorizer *a, const AuthQuery *q, auth_done_t done, void *userdata,
                       char *reason, size_t size, void **ret_pending) {
        const LocalAuthorizer *l = (const LocalAuthorizer *) a;

        if (l->allow_all || q->caller->uid == 0)
                return AUTH_ALLOW;
        (void) snprintf(
                reason, size,
                "there is no polkit to ask here (no bus), so only root may change anything, and the caller is uid %u",
                (unsigned) q->caller->uid);
        return AUTH_DENY;
}

static void local_cancel(Authorizer *a, void *pending) {
}

static const AuthorizerOps local_authorizer_ops = {
        .check = local_check,
        .cancel = local_cancel,
};

void local_authorizer_init(LocalAuthorizer *a, bool allow_all) {
        *a = (LocalAuthorizer){ .authorizer.ops = &local_authorizer_ops, .allow_all = allow_all };
}
