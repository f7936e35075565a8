/* Who asked: a face's connection, as the core sees it */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "caller.h"

int caller_new(Caller **ret, uid_t uid, pid_t pid, const char *label) {
        Caller *c;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->label = strdup(label ? label : "");
        if (!c->label) {
                free(c);
                return -ENOMEM;
        }
        c->n_ref = 1;
        c->uid = uid;
        c->pid = pid;
        *ret = c;
        return 0;
}

int caller_set_bus_name(Caller *c, const char *name) {
        char *copy = strdup(name);

        if (!copy)
                return -ENOMEM;
        free(c->bus_name);
        c->bus_name = copy;
        return 0;
}

Caller *caller_ref(Caller *c) {
        if (c)
                c->n_ref++;
        return c;
}

Caller *caller_unref(Caller *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        free(c->label);
        free(c->bus_name);
        free(c);
        return NULL;
}
