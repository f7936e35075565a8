/* The Authorizer that asks polkit, on the bus the daemon serves
 *
 * One CheckAuthorization per question, asynchronously: the caller's reply waits, the loop does
 * not. The subject is the caller's unique name on this bus ("system-bus-name"), or, for a caller
 * that is no bus peer, its process ("unix-process": pid, start time, uid). Anything but a clear
 * yes is a no: no polkit on the bus, an error from it, a challenge the call did not allow to be
 * answered interactively. A check that is cancelled is cancelled at polkit too. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "polkit.h"

#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_ALLOW_USER_INTERACTION 1u

typedef struct PolkitCheck PolkitCheck;

struct PolkitAuthorizer {
        Authorizer authorizer;
        sd_bus *bus;
        uint64_t timeout_usec, interactive_timeout_usec;
        PolkitCheck *checks;
        uint64_t next_id;
};

struct PolkitCheck {
        PolkitAuthorizer *pk;
        sd_bus_slot *slot;
        auth_done_t done;
        void *userdata;
        AuthAction action;
        bool interactive;
        char cancellation_id[32];
        PolkitCheck *next, *prev;
};

static PolkitCheck *check_free(PolkitCheck *c) {
        if (!c)
                return NULL;
        if (c->prev)
                c->prev->next = c->next;
        else
                c->pk->checks = c->next;
        if (c->next)
                c->next->prev = c->prev;
        sd_bus_slot_unref(c->slot);
        free(c);
        return NULL;
}

static int append_subject(sd_bus_message *m, const Caller *caller) {
        if (caller->bus_name)
                return sd_bus_message_append(m, "(sa{sv})", "system-bus-name", 1, "name", "s",
                                             caller->bus_name);
        return sd_bus_message_append(m, "(sa{sv})", "unix-process", 3, "pid", "u",
                                     (uint32_t) caller->pid, "start-time", "t", caller->start_time,
                                     "uid", "i", (int32_t) caller->uid);
}

static int append_details(sd_bus_message *m, const AuthQuery *q) {
        char port[8];
        int r;

        r = sd_bus_message_open_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "{ss}", "sandbox", q->sandbox_id);
        if (r >= 0 && q->protocol && q->protocol[0]) {
                (void) snprintf(port, sizeof port, "%u", q->host_port);
                r = sd_bus_message_append(m, "{ss}{ss}{ss}", "protocol", q->protocol,
                                          "host_address", q->host_address, "host_port", port);
        }
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

static int check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitCheck *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        auth_done_t done = c->done;
        void *done_userdata = c->userdata;
        char reason[512];
        int authorized = 0, challenge = 0, r;

        c->slot = sd_bus_slot_unref(c->slot);
        /* We gave up waiting: polkit must not go on asking someone for a password. */
        if (e && sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY))
                (void) sd_bus_call_method_async(c->pk->bus, NULL, POLKIT_NAME, POLKIT_PATH,
                                                POLKIT_INTERFACE, "CancelCheckAuthorization", NULL,
                                                NULL, "s", c->cancellation_id);
        if (e) {
                (void) snprintf(
                        reason, sizeof reason,
                        "polkit could not be asked (%s: %s), and without it only root may change anything",
                        e->name, e->message ? e->message : "");
                log_debug("CheckAuthorization of %s failed: %s: %s",
                          auth_action_to_string(c->action), e->name, e->message);
        } else {
                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
                if (r < 0) {
                        authorized = 0;
                        (void) snprintf(
                                reason, sizeof reason,
                                "polkit's answer could not be read (%s), and without it only root may change anything",
                                strerror(-r));
                } else if (authorized)
                        reason[0] = 0;
                else if (challenge && !c->interactive)
                        (void) snprintf(
                                reason, sizeof reason,
                                "polkit asks for authentication, and the call does not allow interactive authorization");
                else
                        (void) snprintf(reason, sizeof reason, "polkit does not grant %s",
                                        auth_action_to_string(c->action));
        }
        check_free(c);
        done(done_userdata, authorized, reason);
        return 0;
}

static int polkit_check(Authorizer *a, const AuthQuery *q, auth_done_t done, void *userdata,
                        char *reason, size_t size, void **ret_pending) {
        PolkitAuthorizer *pk = container_of(a, PolkitAuthorizer, authorizer);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        PolkitCheck *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->pk = pk;
        c->done = done;
        c->userdata = userdata;
        c->action = q->action;
        c->interactive = q->interactive;
        (void) snprintf(c->cancellation_id, sizeof c->cancellation_id, "portpubd-%" PRIu64,
                        ++pk->next_id);
        c->next = pk->checks;
        if (pk->checks)
                pk->checks->prev = c;
        pk->checks = c;

        r = sd_bus_message_new_method_call(pk->bus, &m, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r >= 0)
                r = append_subject(m, q->caller);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", auth_action_to_string(q->action));
        if (r >= 0)
                r = append_details(m, q);
        if (r >= 0)
                r = sd_bus_message_append(m, "us",
                                          q->interactive ? POLKIT_ALLOW_USER_INTERACTION : 0u,
                                          c->cancellation_id);
        /* The check must not bring an authentication agent up for us. */
        if (r >= 0)
                r = sd_bus_message_set_allow_interactive_authorization(m, 0);
        if (r >= 0)
                r = sd_bus_call_async(pk->bus, &c->slot, m, check_reply, c,
                                      q->interactive ? pk->interactive_timeout_usec
                                                     : pk->timeout_usec);
        if (r < 0) {
                check_free(c);
                return r;
        }
        *ret_pending = c;
        return AUTH_PENDING;
}

static void polkit_cancel(Authorizer *a, void *pending) {
        PolkitCheck *c = pending;

        /* polkit may be waiting for an authentication agent: tell it to stop. */
        (void) sd_bus_call_method_async(c->pk->bus, NULL, POLKIT_NAME, POLKIT_PATH,
                                        POLKIT_INTERFACE, "CancelCheckAuthorization", NULL, NULL,
                                        "s", c->cancellation_id);
        check_free(c);
}

static const AuthorizerOps polkit_authorizer_ops = {
        .check = polkit_check,
        .cancel = polkit_cancel,
};

int polkit_authorizer_new(PolkitAuthorizer **ret, sd_bus *bus) {
        PolkitAuthorizer *pk;

        pk = calloc(1, sizeof *pk);
        if (!pk)
                return -ENOMEM;
        pk->authorizer.ops = &polkit_authorizer_ops;
        pk->bus = sd_bus_ref(bus);
        pk->timeout_usec = POLKIT_TIMEOUT_USEC;
        pk->interactive_timeout_usec = POLKIT_INTERACTIVE_TIMEOUT_USEC;
        *ret = pk;
        return 0;
}

Authorizer *polkit_authorizer_get(PolkitAuthorizer *pk) {
        return &pk->authorizer;
}

void polkit_authorizer_set_timeout(PolkitAuthorizer *pk, uint64_t usec) {
        pk->timeout_usec = pk->interactive_timeout_usec = usec;
}

PolkitAuthorizer *polkit_authorizer_free(PolkitAuthorizer *pk) {
        if (!pk)
                return NULL;
        /* The core cancels what it still waits for before it lets go of its authorizer. */
        while (pk->checks)
                check_free(pk->checks);
        sd_bus_unref(pk->bus);
        free(pk);
        return NULL;
}
