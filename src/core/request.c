/* Requests: validate, authorize, resolve, then carry out
 *
 * A face hands the manager a request and hears back once, through its callback. In between the
 * request may wait for the Authorizer (one check per distinct action the call needs, not one per
 * port) and, for a new sandbox without guest addresses, for the GuestResolver. While it waits
 * the loop goes on and other requests may change the tables, so nothing is decided from the
 * tables before the last wait: the checks against them (clashes, limits, ownership) run again
 * right before the request is carried out, and an action that became necessary meanwhile is
 * asked for then. Root is allowed without asking. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager-internal.h"

struct ManagerRequest {
        Manager *manager;
        ManagerRequestType type;
        Caller *caller;
        manager_request_done_t done;
        void *userdata;
        ManagerRequestArgs args;

        unsigned allowed; /* 1 << AuthAction: granted so far */
        AuthAction asking; /* while auth_pending */
        void *auth_pending;
        void *resolve_pending;
        bool resolved;
        bool waiting; /* in manager->requests */
        ManagerRequest *next, *prev;
};

static const char *request_verb(ManagerRequestType t) {
        switch (t) {
        case MANAGER_REQUEST_PUBLISH:
                return "publish for";
        case MANAGER_REQUEST_UNPUBLISH:
                return "unpublish ports of";
        case MANAGER_REQUEST_REMOVE_SANDBOX:
                return "remove";
        case MANAGER_REQUEST_SET_GUEST_ADDRESSES:
                return "set the guest addresses of";
        }
        return "change";
}

int manager_request_new(ManagerRequest **ret, Manager *m, ManagerRequestType type, Caller *caller,
                        manager_request_done_t done, void *userdata) {
        ManagerRequest *req;

        req = calloc(1, sizeof *req);
        if (!req)
                return -ENOMEM;
        req->manager = m;
        req->type = type;
        req->caller = caller_ref(caller);
        req->done = done;
        req->userdata = userdata;
        *ret = req;
        return 0;
}

ManagerRequestArgs *manager_request_args(ManagerRequest *req) {
        return &req->args;
}

static void request_wait(ManagerRequest *req) {
        Manager *m = req->manager;

        if (req->waiting)
                return;
        req->next = m->requests;
        if (m->requests)
                m->requests->prev = req;
        m->requests = req;
        m->n_requests++;
        req->waiting = true;
}

static void request_unwait(ManagerRequest *req) {
        Manager *m = req->manager;

        if (!req->waiting)
                return;
        if (req->prev)
                req->prev->next = req->next;
        else
                m->requests = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->next = req->prev = NULL;
        m->n_requests--;
        req->waiting = false;
}

static void request_free(ManagerRequest *req) {
        request_unwait(req);
        caller_unref(req->caller);
        free(req->args.sandbox_id);
        free(req->args.specs);
        free(req);
}

static void request_complete(ManagerRequest *req, ManagerResult *res) {
        request_unwait(req);
        req->done(req, res, req->userdata);
        request_free(req);
}

static void request_fail(ManagerRequest *req, int r, const ManagerError *e) {
        ManagerResult res = { .r = r };

        if (e)
                res.error = *e;
        request_complete(req, &res);
}

/* "ports[i]" or "ports[i].field": where in the varlink call the error is. */
static const char *spec_path(char *buf, size_t size, size_t i, const char *field) {
        (void) snprintf(buf, size, "ports[%zu]%s%s", i, field ? "." : "", field ? field : "");
        return buf;
}

/* What needs no tables (but whether the sandbox exists): a bad request fails before anyone is
 * asked anything. */
static int request_validate(ManagerRequest *req, ManagerError *e) {
        const ManagerRequestArgs *a = &req->args;
        const PortOptions *o = &a->options;
        const char *id = a->sandbox_id;
        char path[64];

        if (!sandbox_id_is_valid(id))
                return manager_fail_parameter(
                        e, MANAGER_E_INVALID, "sandbox",
                        "Invalid sandbox id '" QUOTE_FMT
                        "': expected 1 to %u characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                        QUOTE(id ? id : ""), SANDBOX_ID_MAX);
        if (a->n_specs > MANAGER_PORTS_PER_CALL_MAX)
                return manager_fail(e, MANAGER_E_LIMIT_EXCEEDED,
                                    "Too many ports for sandbox '%s' in one call: %zu, at most %u",
                                    id, a->n_specs, MANAGER_PORTS_PER_CALL_MAX);
        /* The same tuple twice: kernel-picked ports (0) are different ports each time. */
        for (size_t i = 0; i < a->n_specs; i++)
                for (size_t j = 0; j < i; j++)
                        if (a->specs[j].proto == a->specs[i].proto && a->specs[i].host_port != 0 &&
                            a->specs[j].host_port == a->specs[i].host_port &&
                            strcmp(a->specs[j].host_address, a->specs[i].host_address) == 0)
                                return manager_fail_parameter(
                                        e, MANAGER_E_INVALID, spec_path(path, sizeof path, i, NULL),
                                        "Invalid ports for sandbox '%s': %s '%s' port %u is listed twice",
                                        id, port_proto_to_string(a->specs[i].proto),
                                        a->specs[i].host_address, a->specs[i].host_port);

        switch (req->type) {
        case MANAGER_REQUEST_PUBLISH:
                if (o->has_idle_timeout && o->idle_timeout_usec > RELAY_IDLE_TIMEOUT_MAX_USEC)
                        return manager_fail_parameter(e, MANAGER_E_INVALID, "options.idleTimeoutUSec",
                                                      "Invalid IdleTimeoutUSec %" PRIu64
                                                      " for sandbox '%s': at most %" PRIu64,
                                                      o->idle_timeout_usec, id,
                                                      RELAY_IDLE_TIMEOUT_MAX_USEC);
                if (o->has_max_sessions &&
                    (o->max_sessions == 0 || o->max_sessions > MANAGER_MAX_SESSIONS_MAX))
                        return manager_fail_parameter(e, MANAGER_E_INVALID, "options.maxSessions",
                                                      "Invalid MaxSessions %" PRIu32
                                                      " for sandbox '%s': expected 1 to %u",
                                                      o->max_sessions, id, MANAGER_MAX_SESSIONS_MAX);
                for (size_t i = 0; i < a->n_specs; i++) {
                        const PortSpec *spec = &a->specs[i];

                        if (spec->guest_port == 0)
                                return manager_fail_parameter(
                                        e, MANAGER_E_INVALID,
                                        spec_path(path, sizeof path, i, "guestPort"),
                                        "Invalid guest port 0 for %s '%s' port %u of sandbox '%s': expected 1 to 65535",
                                        port_proto_to_string(spec->proto), spec->host_address,
                                        spec->host_port, id);
                        if (spec->proto != IPPROTO_UDP)
                                continue;
                        if (o->proxy_protocol != RELAY_PROXY_NONE)
                                return manager_fail_parameter(
                                        e, MANAGER_E_INVALID, "options.proxyProtocol",
                                        "Invalid ProxyProtocol for udp '%s' port %u of sandbox '%s': PROXY headers are for tcp only",
                                        spec->host_address, spec->host_port, id);
                        if (o->has_idle_timeout && o->idle_timeout_usec == 0)
                                return manager_fail_parameter(
                                        e, MANAGER_E_INVALID, "options.idleTimeoutUSec",
                                        "Invalid IdleTimeoutUSec 0 for udp '%s' port %u of sandbox '%s': UDP sessions need a timeout",
                                        spec->host_address, spec->host_port, id);
                }
                return 0;
        case MANAGER_REQUEST_SET_GUEST_ADDRESSES:
                if (a->guest4.sa.sa_family == AF_UNSPEC && a->guest6.sa.sa_family == AF_UNSPEC)
                        return manager_fail_parameter(
                                e, MANAGER_E_INVALID, "addresses",
                                "Invalid guest addresses for sandbox '%s': at least one address is needed",
                                id);
                break;
        default:
                break;
        }
        if (!manager_find_sandbox(req->manager, id))
                return manager_fail(e, MANAGER_E_NO_SUCH_SANDBOX, "No sandbox '%s'", id);
        return 0;
}

/* The actions the request needs as the tables are now, each with the details of the first port
 * that needs it. */
static unsigned request_needs(ManagerRequest *req, AuthQuery q[_AUTH_ACTION_MAX]) {
        const ManagerRequestArgs *a = &req->args;
        Sandbox *s = manager_find_sandbox(req->manager, a->sandbox_id);
        uint16_t unprivileged = req->manager->unprivileged_port_start;
        unsigned needs = 1u << AUTH_ACTION_PUBLISH;

        for (int i = 0; i < _AUTH_ACTION_MAX; i++)
                q[i] = (AuthQuery){ .caller = req->caller,
                                    .action = (AuthAction) i,
                                    .sandbox_id = a->sandbox_id,
                                    .protocol = "",
                                    .host_address = "",
                                    .interactive = a->interactive };
        if (a->n_specs > 0) {
                q[AUTH_ACTION_PUBLISH].protocol = q[AUTH_ACTION_MANAGE_ALL].protocol =
                        port_proto_to_string(a->specs[0].proto);
                q[AUTH_ACTION_PUBLISH].host_address = q[AUTH_ACTION_MANAGE_ALL].host_address =
                        a->specs[0].host_address;
                q[AUTH_ACTION_PUBLISH].host_port = q[AUTH_ACTION_MANAGE_ALL].host_port =
                        a->specs[0].host_port;
        }
        if (req->type == MANAGER_REQUEST_PUBLISH)
                for (size_t i = 0; i < a->n_specs; i++) {
                        const PortSpec *spec = &a->specs[i];

                        if (spec->host_port == 0 || spec->host_port >= unprivileged)
                                continue;
                        needs |= 1u << AUTH_ACTION_PUBLISH_PRIVILEGED;
                        q[AUTH_ACTION_PUBLISH_PRIVILEGED].protocol =
                                port_proto_to_string(spec->proto);
                        q[AUTH_ACTION_PUBLISH_PRIVILEGED].host_address = spec->host_address;
                        q[AUTH_ACTION_PUBLISH_PRIVILEGED].host_port = spec->host_port;
                        break;
                }
        if (s && s->owner != req->caller->uid)
                needs |= 1u << AUTH_ACTION_MANAGE_ALL;
        return needs;
}

static void request_step(ManagerRequest *req);

static void request_deny(ManagerRequest *req, const char *reason) {
        ManagerError e;

        manager_fail(&e, MANAGER_E_ACCESS_DENIED, "Access denied to %s sandbox '%s' (%s): %s",
                     request_verb(req->type), req->args.sandbox_id,
                     auth_action_to_string(req->asking), reason);
        log_debug("Denied %s to %s: %s", auth_action_to_string(req->asking), req->caller->label,
                  e.message);
        request_fail(req, MANAGER_E_ACCESS_DENIED, &e);
}

static void request_auth_done(void *userdata, bool allowed, const char *reason) {
        ManagerRequest *req = userdata;

        req->auth_pending = NULL;
        request_unwait(req);
        if (!allowed) {
                request_deny(req, reason && *reason ? reason : "not authorized");
                return;
        }
        req->allowed |= 1u << req->asking;
        request_step(req);
}

static void request_resolve_done(void *userdata, int r, const SockaddrUnion *guest4,
                                 const SockaddrUnion *guest6, const char *message) {
        ManagerRequest *req = userdata;
        ManagerError e;

        req->resolve_pending = NULL;
        request_unwait(req);
        if (r < 0) {
                request_fail(req, r, NULL);
                return;
        }
        if (r > 0 || (guest4->sa.sa_family == AF_UNSPEC && guest6->sa.sa_family == AF_UNSPEC)) {
                manager_fail(&e, MANAGER_E_NO_GUEST_ADDRESS, "%s",
                             message && *message ? message : "No guest address");
                request_fail(req, MANAGER_E_NO_GUEST_ADDRESS, &e);
                return;
        }
        req->args.guest4 = *guest4;
        req->args.guest6 = *guest6;
        req->args.machine = true;
        req->resolved = true;
        request_step(req);
}

static int request_check_wait_limit(ManagerRequest *req, ManagerError *e) {
        if (req->manager->n_requests < MANAGER_REQUESTS_PENDING_MAX)
                return 0;
        return manager_fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Cannot %s sandbox '%s': %u requests are already waiting, try again",
                            request_verb(req->type), req->args.sandbox_id, req->manager->n_requests);
}

static void request_execute(ManagerRequest *req) {
        Manager *m = req->manager;
        _cleanup_free_ Port **ports = NULL;
        ManagerResult res = {};

        switch (req->type) {
        case MANAGER_REQUEST_PUBLISH:
                ports = calloc(MAX(req->args.n_specs, 1u), sizeof *ports);
                if (!ports) {
                        res.r = -ENOMEM;
                        break;
                }
                res.ports = ports;
                res.r = manager_execute_publish(m, req->caller, &req->args, &res);
                break;
        case MANAGER_REQUEST_UNPUBLISH:
                res.r = manager_execute_unpublish(m, &req->args, &res.error);
                break;
        case MANAGER_REQUEST_REMOVE_SANDBOX:
                res.r = manager_execute_remove_sandbox(m, &req->args, &res.error);
                break;
        case MANAGER_REQUEST_SET_GUEST_ADDRESSES:
                res.r = manager_execute_set_guest_addresses(m, &req->args, &res.error);
                break;
        }
        if (res.r != 0) {
                res.sandbox = NULL;
                res.n_ports = 0;
        } else
                /* Before the reply that reports the change. */
                (void) manager_save_state(m);
        request_complete(req, &res);
}

/* Asks for what is still missing, one thing at a time, then carries the request out. */
static void request_step(ManagerRequest *req) {
        Manager *m = req->manager;
        const ManagerRequestArgs *a = &req->args;
        ManagerError e;
        int r;

        for (unsigned round = 0; round <= _AUTH_ACTION_MAX; round++) {
                AuthQuery q[_AUTH_ACTION_MAX];
                unsigned missing = request_needs(req, q) & ~req->allowed;
                AuthAction action;
                char reason[256] = "";

                if (missing == 0)
                        break;
                action = (AuthAction) __builtin_ctz(missing);
                req->asking = action;
                if (req->caller->uid == 0) {
                        req->allowed |= 1u << action;
                        continue;
                }
                if (!m->authorizer) {
                        request_deny(req, "no authorization service is configured");
                        return;
                }
                r = request_check_wait_limit(req, &e);
                if (r != 0) {
                        request_fail(req, r, &e);
                        return;
                }
                r = m->authorizer->ops->check(m->authorizer, &q[action], request_auth_done, req,
                                              reason, sizeof reason, &req->auth_pending);
                if (r < 0) {
                        request_fail(req, r, NULL);
                        return;
                }
                if (r == AUTH_DENY) {
                        request_deny(req, reason[0] ? reason : "not authorized");
                        return;
                }
                if (r == AUTH_PENDING) {
                        request_wait(req);
                        return;
                }
                req->allowed |= 1u << action;
        }

        if (req->type == MANAGER_REQUEST_PUBLISH && !req->resolved &&
            a->guest4.sa.sa_family == AF_UNSPEC && a->guest6.sa.sa_family == AF_UNSPEC &&
            !manager_find_sandbox(m, a->sandbox_id)) {
                if (!m->resolver) {
                        manager_fail(&e, MANAGER_E_NO_GUEST_ADDRESS,
                                     "No guest address for new sandbox '%s': none was given, and this portpubd has no machine registry to ask",
                                     a->sandbox_id);
                        request_fail(req, MANAGER_E_NO_GUEST_ADDRESS, &e);
                        return;
                }
                r = request_check_wait_limit(req, &e);
                if (r != 0) {
                        request_fail(req, r, &e);
                        return;
                }
                r = m->resolver->ops->resolve(m->resolver, a->sandbox_id, request_resolve_done, req,
                                              &req->resolve_pending);
                if (r < 0) {
                        request_fail(req, r, NULL);
                        return;
                }
                request_wait(req);
                return;
        }
        request_execute(req);
}

void manager_request_start(ManagerRequest *req) {
        ManagerError e;
        int r;

        r = request_validate(req, &e);
        if (r != 0) {
                request_fail(req, r, &e);
                return;
        }
        request_step(req);
}

void manager_request_cancel(ManagerRequest *req) {
        Manager *m;

        if (!req)
                return;
        m = req->manager;
        if (req->auth_pending && m->authorizer)
                m->authorizer->ops->cancel(m->authorizer, req->auth_pending);
        if (req->resolve_pending && m->resolver)
                m->resolver->ops->cancel(m->resolver, req->resolve_pending);
        request_free(req);
}

void manager_caller_gone(Manager *m, Caller *c) {
        ManagerRequest *req, *next;

        if (c->gone)
                return;
        c->gone = true;
        for (req = m->requests; req; req = next) {
                next = req->next;
                if (req->caller == c)
                        manager_request_cancel(req);
        }
        manager_unpublish_caller_ports(m, c);
}

void manager_cancel_all_requests(Manager *m) {
        while (m->requests)
                manager_request_cancel(m->requests);
}
