/* The varlink face of the core: io.portpub.publisher1
 *
 * The twin of the D-Bus face over the same core: every argument is checked against the
 * contract's types here (a missing, mistyped or unknown field is InvalidParameter naming its
 * path, "ports[1].hostAddress"), the connection's peer (SO_PEERCRED) is the Caller, mutating
 * methods become core requests, and their results become replies or the contract's errors with
 * their parameters. Monitor streams the core's events. A connection that closes cancels what it
 * was waiting for and takes its bindToCaller ports with it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
/* interfaces/io.portpub.publisher1.varlink, compiled in: served byte for byte. */
#include "io.portpub.publisher1.varlink.h"
#include "log.h"
#include "macro.h"
#include "publisher1.h"

#define IFACE "io.portpub.publisher1"
#define ERROR(name) IFACE "." name
/* Monitor calls at once, over all connections. */
#define MONITORS_MAX 256U

typedef struct VlCall VlCall;
typedef struct VlMonitor VlMonitor;

struct Publisher1 {
        Manager *manager;
        VarlinkServer *server;
        ManagerSubscriber *subscriber;
        VlMonitor *monitors;
        unsigned n_monitors;
};

/* A mutating call the core is working on. */
struct VlCall {
        Publisher1 *face;
        VarlinkCall *call;
        ManagerRequest *request;
        ManagerRequestType type;
};

struct VlMonitor {
        Publisher1 *face;
        VarlinkCall *call;
        VlMonitor *next, *prev;
};

/* JSON out */

static json_object *port_key_to_json(int proto, const char *host_address, uint16_t host_port) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        if (json_object_object_add(o, "protocol",
                                   json_object_new_string(proto == IPPROTO_UDP ? "udp" : "tcp")) < 0 ||
            json_object_object_add(o, "hostAddress", json_object_new_string(host_address)) < 0 ||
            json_object_object_add(o, "hostPort", json_object_new_int(host_port)) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* D-Bus object paths, made the way sd_bus_path_encode() makes them, so that a varlink client
 * can find the D-Bus object of what it published. */
static void sandbox_object_path(const char *id, char *buf, size_t size) {
        static const char hex[] = "0123456789abcdef";
        size_t n = (size_t) snprintf(buf, size, "%s/sandbox/", MANAGER_PATH);

        for (const char *c = id; *c && n + 4 < size; c++) {
                if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))
                        buf[n++] = *c;
                else {
                        buf[n++] = '_';
                        buf[n++] = hex[((unsigned char) *c) >> 4];
                        buf[n++] = hex[((unsigned char) *c) & 15];
                }
        }
        buf[n] = 0;
}

static json_object *jint(uint64_t v) {
        return json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t) v);
}

static json_object *port_to_json(Port *p) {
        char guest[INET6_ADDRSTRLEN], path[128];
        json_object *o = json_object_new_object(), *listen = json_object_new_array();
        struct {
                const char *key;
                json_object *value;
        } f[] = {
                { "sandbox", json_object_new_string(p->sandbox->id) },
                { "protocol", json_object_new_string(p->protocol) },
                { "hostAddress", json_object_new_string(p->host_address) },
                { "hostPort", json_object_new_int(p->host_port) },
                { "guestAddress", json_object_new_string(port_guest_address(p, guest, sizeof guest)) },
                { "guestPort", json_object_new_int(p->guest_port) },
                { "listenAddresses", listen },
                { "state", json_object_new_string(port_state(p)) },
                { "lastError", json_object_new_string(p->last_error) },
                { "activeSessions", jint(p->stats.active) },
                { "totalSessions", jint(p->stats.total) },
                { "rejectedSessions", jint(p->stats.rejected) },
                { "failedSessions", jint(p->stats.failed) },
                { "bytesToGuest", jint(p->stats.bytes_to_guest) },
                { "bytesFromGuest", jint(p->stats.bytes_from_guest) },
                { "idleTimeoutUSec", jint(p->idle_timeout_usec) },
                { "maxSessions", jint(p->max_sessions) },
                { "proxyProtocol", json_object_new_string(p->proxy_protocol) },
                { "bindToCaller", json_object_new_boolean(p->bind_to_caller) },
                { "objectPath", NULL },
        };
        bool ok = o != NULL;

        (void) snprintf(path, sizeof path, "%s/port/%" PRIu64, MANAGER_PATH, p->serial);
        f[ELEMENTSOF(f) - 1].value = json_object_new_string(path);
        for (char **a = p->listen_addresses; ok && listen && a && *a; a++)
                ok = json_object_array_add(listen, json_object_new_string(*a)) >= 0;
        for (size_t i = 0; i < ELEMENTSOF(f); i++) {
                if (ok && f[i].value && json_object_object_add(o, f[i].key, f[i].value) >= 0)
                        continue;
                ok = false;
                json_object_put(f[i].value);
        }
        if (!ok) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static json_object *sandbox_to_json(Sandbox *s) {
        json_object *o = json_object_new_object(), *guests = json_object_new_array(),
                    *ports = json_object_new_array();
        char buf[INET6_ADDRSTRLEN], path[256];
        bool ok = o && guests && ports;

        if (ok && s->guest4.sa.sa_family != AF_UNSPEC)
                ok = json_object_array_add(guests, json_object_new_string(
                                                           sockaddr_format_ip(&s->guest4, buf,
                                                                              sizeof buf))) >= 0;
        if (ok && s->guest6.sa.sa_family != AF_UNSPEC)
                ok = json_object_array_add(guests, json_object_new_string(
                                                           sockaddr_format_ip(&s->guest6, buf,
                                                                              sizeof buf))) >= 0;
        SANDBOX_FOREACH_PORT(p, s) {
                if (ok)
                        ok = json_object_array_add(ports, port_key_to_json(p->proto, p->host_address,
                                                                           p->host_port)) >= 0;
        }
        sandbox_object_path(s->id, path, sizeof path);
        ok = ok && json_object_object_add(o, "id", json_object_new_string(s->id)) >= 0 &&
             json_object_object_add(o, "guestAddresses", TAKE_PTR(guests)) >= 0 &&
             json_object_object_add(o, "owner", jint(s->owner)) >= 0 &&
             json_object_object_add(o, "machine", json_object_new_boolean(s->machine)) >= 0 &&
             json_object_object_add(o, "ports", TAKE_PTR(ports)) >= 0 &&
             json_object_object_add(o, "activeSessions", jint(sandbox_active_sessions(s))) >= 0 &&
             json_object_object_add(o, "objectPath", json_object_new_string(path)) >= 0;
        json_object_put(guests);
        json_object_put(ports);
        if (!ok) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* Builds {key: value} and replies; value is taken. */
static int reply_one(VarlinkCall *call, const char *key, json_object *value) {
        json_object *o;

        if (!value)
                return -ENOMEM;
        o = json_object_new_object();
        if (!o || json_object_object_add(o, key, value) < 0) {
                json_object_put(o);
                json_object_put(value);
                return -ENOMEM;
        }
        return varlink_call_reply(call, o);
}

/* Errors */

static int reply_result_error(VarlinkCall *call, const ManagerRequestArgs *a, int r,
                              const ManagerError *e) {
        json_object *o, *port = NULL;
        const char *name;
        bool with_message = true, with_port = false, with_sandbox = false;

        if (r < 0)
                return r;
        switch (r) {
        case MANAGER_E_INVALID:
                return varlink_call_reply_invalid_parameter(call, e->parameter[0] ? e->parameter
                                                                                  : "parameters");
        case MANAGER_E_NO_SUCH_SANDBOX:
                name = ERROR("NoSuchSandbox");
                with_message = false;
                with_sandbox = true;
                break;
        case MANAGER_E_NO_SUCH_PORT:
                name = ERROR("NoSuchPort");
                with_message = false;
                with_port = true;
                break;
        case MANAGER_E_PORT_IN_USE:
                name = ERROR("PortInUse");
                with_port = true;
                break;
        case MANAGER_E_ADDRESS_NOT_AVAILABLE:
                name = ERROR("AddressNotAvailable");
                with_port = true;
                break;
        case MANAGER_E_PERMISSION_DENIED:
                name = ERROR("PermissionDenied");
                with_port = true;
                break;
        case MANAGER_E_NO_GUEST_ADDRESS:
                name = ERROR("NoGuestAddress");
                with_sandbox = true;
                break;
        case MANAGER_E_FAILED:
                name = ERROR("Failed");
                with_port = true;
                break;
        case MANAGER_E_ACCESS_DENIED:
                name = ERROR("AccessDenied");
                break;
        default:
                /* LIMIT_EXCEEDED, and anything else a face cannot say better. */
                name = ERROR("LimitExceeded");
                break;
        }
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (with_port) {
                if (e->has_port)
                        port = port_key_to_json(e->port.proto, e->port.host_address,
                                                e->port.host_port);
                else if (a && a->n_specs > 0)
                        port = port_key_to_json(a->specs[0].proto, a->specs[0].host_address,
                                                a->specs[0].host_port);
                else
                        port = port_key_to_json(IPPROTO_TCP, "", 0);
                if (!port || json_object_object_add(o, "port", port) < 0)
                        goto oom;
                if (r == MANAGER_E_PORT_IN_USE && e->held_by[0] &&
                    json_object_object_add(o, "heldBy", json_object_new_string(e->held_by)) < 0)
                        goto oom;
        }
        if (with_sandbox &&
            json_object_object_add(o, "sandbox",
                                   json_object_new_string(a && a->sandbox_id ? a->sandbox_id : "")) <
                    0)
                goto oom;
        if (with_message &&
            json_object_object_add(o, "message", json_object_new_string(e->message)) < 0)
                goto oom;
        return varlink_call_reply_error(call, name, o);
oom:
        json_object_put(o);
        return -ENOMEM;
}

/* Parameters in: each getter answers InvalidParameter itself and returns 1 then. */

static int invalid(VarlinkCall *call, const char *prefix, const char *field) {
        char path[160];

        /* field may be a caller's unknown key, of any length. */
        (void) snprintf(path, sizeof path, "%s%s" QUOTE_FMT, prefix,
                        prefix[0] && field[0] ? "." : "", QUOTE(field));
        (void) varlink_call_reply_invalid_parameter(call, path);
        return 1;
}

/* Only the contract's fields. */
static int check_fields(VarlinkCall *call, json_object *o, const char *prefix,
                        const char *const *allowed) {
        json_object_object_foreach(o, key, value) {
                bool known = false;

                (void) value;
                for (const char *const *a = allowed; *a && !known; a++)
                        known = strcmp(*a, key) == 0;
                if (!known)
                        return invalid(call, prefix, key);
        }
        return 0;
}

/* ret NULL (absent or null) is fine when optional. */
static int get_field(VarlinkCall *call, json_object *o, const char *prefix, const char *key,
                     json_type type, bool optional, json_object **ret) {
        json_object *v = NULL;

        *ret = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !v) {
                if (optional)
                        return 0;
                return invalid(call, prefix, key);
        }
        if (!json_object_is_type(v, type))
                return invalid(call, prefix, key);
        *ret = v;
        return 0;
}

static int get_int(VarlinkCall *call, json_object *o, const char *prefix, const char *key,
                   bool optional, int64_t min, int64_t max, bool *ret_set, int64_t *ret) {
        json_object *v;
        int r;

        r = get_field(call, o, prefix, key, json_type_int, optional, &v);
        if (r != 0)
                return r;
        if (ret_set)
                *ret_set = v != NULL;
        if (!v)
                return 0;
        errno = 0;
        *ret = json_object_get_int64(v);
        if (errno != 0 || *ret < min || *ret > max)
                return invalid(call, prefix, key);
        return 0;
}

static int get_sandbox_id(VarlinkCall *call, json_object *o, const char *key, ManagerRequestArgs *a) {
        json_object *v;
        int r;

        r = get_field(call, o, "", key, json_type_string, false, &v);
        if (r != 0)
                return r;
        a->sandbox_id = strdup(json_object_get_string(v));
        return a->sandbox_id ? 0 : -ENOMEM;
}

static int get_addresses(VarlinkCall *call, json_object *o, const char *key, bool optional,
                         ManagerRequestArgs *a) {
        json_object *v;
        ManagerError e;
        int r;

        r = get_field(call, o, "", key, json_type_array, optional, &v);
        if (r != 0 || !v)
                return r;
        a->guest4 = a->guest6 = (SockaddrUnion){};
        for (size_t i = 0; i < json_object_array_length(v); i++) {
                json_object *s = json_object_array_get_idx(v, i);
                char path[32];

                (void) snprintf(path, sizeof path, "%s[%zu]", key, i);
                if (!json_object_is_type(s, json_type_string) || i >= 2 ||
                    manager_parse_guest_address(json_object_get_string(s), &a->guest4, &a->guest6,
                                                &e) != 0)
                        return invalid(call, path, "");
        }
        return 0;
}

/* One PortSpec (with_guest_port) or PortKey, named prefix in errors ("ports[1]", "port"). */
static int get_port(VarlinkCall *call, json_object *p, const char *prefix, bool with_guest_port,
                    PortSpec *ret) {
        static const char *const spec_fields[] = { "protocol", "hostAddress", "hostPort",
                                                   "guestPort", NULL };
        static const char *const key_fields[] = { "protocol", "hostAddress", "hostPort", NULL };
        json_object *proto, *addr;
        int64_t host_port = 0, guest_port = 0;
        ManagerError e;
        int r;

        if (!json_object_is_type(p, json_type_object))
                return invalid(call, prefix, "");
        r = check_fields(call, p, prefix, with_guest_port ? spec_fields : key_fields);
        if (r == 0)
                r = get_field(call, p, prefix, "protocol", json_type_string, false, &proto);
        if (r == 0 && strcmp(json_object_get_string(proto), "tcp") != 0 &&
            strcmp(json_object_get_string(proto), "udp") != 0)
                r = invalid(call, prefix, "protocol");
        if (r == 0)
                r = get_field(call, p, prefix, "hostAddress", json_type_string, false, &addr);
        if (r == 0)
                r = get_int(call, p, prefix, "hostPort", false, 0, 65535, NULL, &host_port);
        if (r == 0 && with_guest_port)
                r = get_int(call, p, prefix, "guestPort", false, 1, 65535, NULL, &guest_port);
        if (r != 0)
                return r;
        if (manager_parse_port_spec(json_object_get_string(proto), json_object_get_string(addr),
                                    (uint16_t) host_port, (uint16_t) guest_port, with_guest_port,
                                    ret, &e) != 0)
                return invalid(call, prefix, "hostAddress");
        return 0;
}

/* ports: []PortSpec (with_guest_port) or []PortKey. */
static int get_ports(VarlinkCall *call, json_object *o, bool with_guest_port, ManagerRequestArgs *a) {
        json_object *v;
        size_t n;
        int r;

        r = get_field(call, o, "", "ports", json_type_array, false, &v);
        if (r != 0)
                return r;
        n = json_object_array_length(v);
        /* Bounded before anything is allocated for it. */
        if (n > MANAGER_PORTS_PER_CALL_MAX)
                return 2;
        a->specs = calloc(MAX(n, 1u), sizeof *a->specs);
        if (!a->specs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                char prefix[32];

                (void) snprintf(prefix, sizeof prefix, "ports[%zu]", i);
                r = get_port(call, json_object_array_get_idx(v, i), prefix, with_guest_port,
                             &a->specs[i]);
                if (r != 0)
                        return r;
                a->n_specs++;
        }
        return 0;
}

static int get_options(VarlinkCall *call, json_object *o, ManagerRequestArgs *a) {
        static const char *const fields[] = { "bindToCaller", "idleTimeoutUSec", "maxSessions",
                                              "proxyProtocol", NULL };
        PortOptions *opts = &a->options;
        json_object *v, *b, *proxy;
        int64_t n;
        int r;

        r = get_field(call, o, "", "options", json_type_object, true, &v);
        if (r != 0 || !v)
                return r;
        r = check_fields(call, v, "options", fields);
        if (r == 0)
                r = get_field(call, v, "options", "bindToCaller", json_type_boolean, true, &b);
        if (r == 0 && b)
                opts->bind_to_caller = json_object_get_boolean(b);
        if (r == 0)
                r = get_int(call, v, "options", "idleTimeoutUSec", true, 0, INT64_MAX,
                            &opts->has_idle_timeout, &n);
        if (r == 0 && opts->has_idle_timeout)
                opts->idle_timeout_usec = (uint64_t) n;
        if (r == 0)
                r = get_int(call, v, "options", "maxSessions", true, 0, UINT32_MAX,
                            &opts->has_max_sessions, &n);
        if (r == 0 && opts->has_max_sessions)
                opts->max_sessions = (uint32_t) n;
        if (r == 0)
                r = get_field(call, v, "options", "proxyProtocol", json_type_string, true, &proxy);
        if (r == 0 && proxy &&
            (strcmp(json_object_get_string(proxy), "v1") == 0 ||
             strcmp(json_object_get_string(proxy), "v2") == 0))
                (void) manager_parse_proxy_protocol(json_object_get_string(proxy),
                                                    &opts->proxy_protocol);
        else if (r == 0 && proxy)
                r = invalid(call, "options", "proxyProtocol");
        return r;
}

static void args_clear(ManagerRequestArgs *a) {
        a->sandbox_id = mfree(a->sandbox_id);
        a->specs = mfree(a->specs);
        a->n_specs = 0;
}

/* Mutating methods */

static void vl_call_cancel(VarlinkCall *call, void *userdata) {
        VlCall *c = userdata;

        manager_request_cancel(c->request);
        free(c);
}

static void vl_call_done(ManagerRequest *req, const ManagerResult *res, void *userdata) {
        VlCall *c = userdata;
        int r;

        varlink_call_set_cancel(c->call, NULL, NULL);
        if (res->r != MANAGER_OK)
                r = reply_result_error(c->call, manager_request_args(req), res->r, &res->error);
        else if (c->type == MANAGER_REQUEST_PUBLISH) {
                json_object *ports = json_object_new_array();

                for (size_t i = 0; ports && i < res->n_ports; i++)
                        if (json_object_array_add(ports, port_to_json(res->ports[i])) < 0) {
                                json_object_put(ports);
                                ports = NULL;
                        }
                r = reply_one(c->call, "ports", ports);
        } else
                r = varlink_call_reply(c->call, NULL);
        if (r < 0 && r != -ESTALE) {
                json_object *o = json_object_new_object();

                if (o)
                        (void) json_object_object_add(o, "message",
                                                      json_object_new_string(
                                                              "Out of memory building the reply"));
                (void) varlink_call_reply_error(c->call, ERROR("LimitExceeded"), o);
        }
        free(c);
}

/* Hands args (taken) to the core for the connection's caller. */
static int submit(Publisher1 *f, VarlinkCall *call, ManagerRequestType type,
                  ManagerRequestArgs *args) {
        Caller *caller = varlink_connection_get_userdata(varlink_call_connection(call));
        ManagerRequest *req;
        VlCall *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c) {
                args_clear(args);
                return -ENOMEM;
        }
        r = manager_request_new(&req, f->manager, type, caller, vl_call_done, c);
        if (r < 0) {
                free(c);
                args_clear(args);
                return r;
        }
        *c = (VlCall){ .face = f, .call = call, .request = req, .type = type };
        *manager_request_args(req) = *args;
        *args = (ManagerRequestArgs){};
        varlink_call_set_cancel(call, vl_call_cancel, c);
        manager_request_start(req);
        return 0;
}

/* r from the getters: 0 go on, 1 answered, 2 too many ports, < 0 failure. */
static int finish_parse(VarlinkCall *call, ManagerRequestArgs *a, int r) {
        if (r == 2) {
                ManagerError e;

                (void) snprintf(e.message, sizeof e.message,
                                "Too many ports for sandbox '" QUOTE_FMT
                                "' in one call: more than %u",
                                QUOTE(a->sandbox_id ? a->sandbox_id : ""),
                                MANAGER_PORTS_PER_CALL_MAX);
                r = reply_result_error(call, a, MANAGER_E_LIMIT_EXCEEDED, &e);
        }
        args_clear(a);
        return r < 0 ? r : 0;
}

/* What a mutating method reads, in this order after its sandbox id. */
typedef struct VlMutation {
        ManagerRequestType type;
        const char *const *fields; /* every field it has */
        const char *addresses; /* the field of its guest addresses, or NULL */
        bool addresses_optional;
        bool ports; /* []PortSpec with ports_guest_port, else []PortKey */
        bool ports_guest_port;
        bool options;
} VlMutation;

static int mutate(VarlinkCall *call, json_object *params, void *userdata, const VlMutation *how) {
        ManagerRequestArgs a = {};
        int r;

        r = check_fields(call, params, "", how->fields);
        if (r == 0)
                r = get_sandbox_id(call, params, "sandbox", &a);
        if (r == 0 && how->addresses)
                r = get_addresses(call, params, how->addresses, how->addresses_optional, &a);
        if (r == 0 && how->ports)
                r = get_ports(call, params, how->ports_guest_port, &a);
        if (r == 0 && how->options)
                r = get_options(call, params, &a);
        if (r != 0)
                return finish_parse(call, &a, r);
        return submit(userdata, call, how->type, &a);
}

static int method_publish_ports(VarlinkCall *call, json_object *params, unsigned flags,
                                void *userdata) {
        static const char *const fields[] = { "sandbox", "guestAddresses", "ports", "options", NULL };
        static const VlMutation how = { .type = MANAGER_REQUEST_PUBLISH,
                                        .fields = fields,
                                        .addresses = "guestAddresses",
                                        .addresses_optional = true,
                                        .ports = true,
                                        .ports_guest_port = true,
                                        .options = true };

        return mutate(call, params, userdata, &how);
}

static int method_unpublish_ports(VarlinkCall *call, json_object *params, unsigned flags,
                                  void *userdata) {
        static const char *const fields[] = { "sandbox", "ports", NULL };
        static const VlMutation how = { .type = MANAGER_REQUEST_UNPUBLISH,
                                        .fields = fields,
                                        .ports = true };

        return mutate(call, params, userdata, &how);
}

static int method_remove_sandbox(VarlinkCall *call, json_object *params, unsigned flags,
                                 void *userdata) {
        static const char *const fields[] = { "sandbox", NULL };
        static const VlMutation how = { .type = MANAGER_REQUEST_REMOVE_SANDBOX, .fields = fields };

        return mutate(call, params, userdata, &how);
}

static int method_set_guest_addresses(VarlinkCall *call, json_object *params, unsigned flags,
                                      void *userdata) {
        static const char *const fields[] = { "sandbox", "addresses", NULL };
        static const VlMutation how = { .type = MANAGER_REQUEST_SET_GUEST_ADDRESSES,
                                        .fields = fields,
                                        .addresses = "addresses" };

        return mutate(call, params, userdata, &how);
}

/* Reads */

static int lookup_sandbox(Publisher1 *f, VarlinkCall *call, json_object *params, bool optional,
                          Sandbox **ret) {
        json_object *v;
        int r;

        *ret = NULL;
        r = get_field(call, params, "", "sandbox", json_type_string, optional, &v);
        if (r != 0 || !v)
                return r;
        if (!sandbox_id_is_valid(json_object_get_string(v)))
                return invalid(call, "", "sandbox");
        *ret = manager_find_sandbox(f->manager, json_object_get_string(v));
        if (!*ret) {
                json_object *o = json_object_new_object();

                if (!o || json_object_object_add(o, "sandbox", json_object_get(v)) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
                (void) varlink_call_reply_error(call, ERROR("NoSuchSandbox"), o);
                return 1;
        }
        return 0;
}

static int method_get_sandbox(VarlinkCall *call, json_object *params, unsigned flags, void *userdata) {
        static const char *const fields[] = { "sandbox", NULL };
        Sandbox *s;
        int r;

        r = check_fields(call, params, "", fields);
        if (r == 0)
                r = lookup_sandbox(userdata, call, params, false, &s);
        if (r != 0)
                return r < 0 ? r : 0;
        return reply_one(call, "sandbox", sandbox_to_json(s));
}

static int method_get_port(VarlinkCall *call, json_object *params, unsigned flags, void *userdata) {
        static const char *const fields[] = { "port", NULL };
        Publisher1 *f = userdata;
        json_object *port;
        PortSpec key = {};
        Port *p;
        int r;

        r = check_fields(call, params, "", fields);
        if (r == 0)
                r = get_field(call, params, "", "port", json_type_object, false, &port);
        if (r == 0)
                r = get_port(call, port, "port", false, &key);
        if (r != 0)
                return r < 0 ? r : 0;
        p = manager_find_port(f->manager, key.proto, key.host_address, key.host_port);
        if (!p) {
                json_object *o = json_object_new_object();
                json_object *k = port_key_to_json(key.proto, key.host_address, key.host_port);

                if (!o || !k || json_object_object_add(o, "port", k) < 0) {
                        json_object_put(o);
                        json_object_put(k);
                        return -ENOMEM;
                }
                return varlink_call_reply_error(call, ERROR("NoSuchPort"), o);
        }
        return reply_one(call, "port", port_to_json(p));
}

static int method_list_sandboxes(VarlinkCall *call, json_object *params, unsigned flags,
                                 void *userdata) {
        static const char *const fields[] = { NULL };
        Publisher1 *f = userdata;
        json_object *list;
        int r;

        r = check_fields(call, params, "", fields);
        if (r != 0)
                return r < 0 ? r : 0;
        list = json_object_new_array();
        MANAGER_FOREACH_SANDBOX(s, f->manager) {
                if (list && json_object_array_add(list, sandbox_to_json(s)) < 0) {
                        json_object_put(list);
                        list = NULL;
                }
        }
        return reply_one(call, "sandboxes", list);
}

static int method_list_ports(VarlinkCall *call, json_object *params, unsigned flags, void *userdata) {
        static const char *const fields[] = { "sandbox", NULL };
        Publisher1 *f = userdata;
        json_object *list;
        Sandbox *only;
        int r;

        r = check_fields(call, params, "", fields);
        if (r == 0)
                r = lookup_sandbox(f, call, params, true, &only);
        if (r != 0)
                return r < 0 ? r : 0;
        list = json_object_new_array();
        MANAGER_FOREACH_PORT(p, f->manager) {
                if (!list || (only && p->sandbox != only))
                        continue;
                if (json_object_array_add(list, port_to_json(p)) < 0) {
                        json_object_put(list);
                        list = NULL;
                }
        }
        return reply_one(call, "ports", list);
}

static int method_get_status(VarlinkCall *call, json_object *params, unsigned flags, void *userdata) {
        static const char *const fields[] = { NULL };
        Manager *m = ((Publisher1 *) userdata)->manager;
        json_object *o;
        int r;

        r = check_fields(call, params, "", fields);
        if (r != 0)
                return r < 0 ? r : 0;
        o = json_object_new_object();
        if (!o ||
            json_object_object_add(o, "version", json_object_new_string(manager_version(m))) < 0 ||
            json_object_object_add(o, "sandboxes", jint(manager_n_sandboxes(m))) < 0 ||
            json_object_object_add(o, "ports", jint(manager_n_ports(m))) < 0 ||
            json_object_object_add(o, "activeSessions", jint(manager_active_sessions(m))) < 0 ||
            json_object_object_add(o, "totalSessions", jint(manager_total_sessions(m))) < 0 ||
            json_object_object_add(o, "defaultMaxSessions", jint(manager_default_max_sessions(m))) <
                    0 ||
            json_object_object_add(o, "defaultUDPIdleTimeoutUSec",
                                   jint(manager_default_udp_idle_timeout_usec(m))) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        return varlink_call_reply(call, o);
}

/* Monitor */

static json_object *event_new(const char *event, bool initial, const char *sandbox, Port *port,
                              const char *reason) {
        json_object *o = json_object_new_object();
        bool ok = o && json_object_object_add(o, "event", json_object_new_string(event)) >= 0;

        if (ok && initial)
                ok = json_object_object_add(o, "initial", json_object_new_boolean(true)) >= 0;
        if (ok && sandbox)
                ok = json_object_object_add(o, "sandbox", json_object_new_string(sandbox)) >= 0;
        if (ok && port)
                ok = json_object_object_add(o, "port", port_to_json(port)) >= 0;
        if (ok && reason)
                ok = json_object_object_add(o, "reason", json_object_new_string(reason)) >= 0;
        if (!ok) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static void monitor_free(VlMonitor *mon) {
        Publisher1 *f = mon->face;

        if (mon->prev)
                mon->prev->next = mon->next;
        else
                f->monitors = mon->next;
        if (mon->next)
                mon->next->prev = mon->prev;
        f->n_monitors--;
        free(mon);
}

static void monitor_cancel(VarlinkCall *call, void *userdata) {
        monitor_free(userdata);
}

static void monitors_send(Publisher1 *f, const char *event, const char *sandbox, Port *port,
                          const char *reason) {
        VlMonitor *mon, *next;

        for (mon = f->monitors; mon; mon = next) {
                json_object *o = event_new(event, false, sandbox, port, reason);

                next = mon->next;
                /* A monitor whose client stopped reading is closed by the server; its cancel
                 * callback takes it off the list (it may be the next one). */
                if (o)
                        (void) varlink_call_reply_continue(mon->call, o);
        }
}

static void on_event(Manager *m, const ManagerEvent *ev, void *userdata) {
        Publisher1 *f = userdata;

        if (!f->monitors)
                return;
        switch (ev->type) {
        case MANAGER_EVENT_SANDBOX_NEW:
                monitors_send(f, "sandboxNew", ev->sandbox->id, NULL, NULL);
                break;
        case MANAGER_EVENT_SANDBOX_REMOVED:
                monitors_send(f, "sandboxRemoved", ev->sandbox->id, NULL, NULL);
                break;
        case MANAGER_EVENT_PORT_PUBLISHED:
                monitors_send(f, "portPublished", ev->sandbox->id, ev->port, NULL);
                break;
        case MANAGER_EVENT_PORT_UNPUBLISHED:
                monitors_send(f, "portUnpublished", ev->sandbox->id, ev->port,
                              port_reason_to_string(ev->reason));
                break;
        case MANAGER_EVENT_PORT_CHANGED:
                monitors_send(f, "portChanged", ev->sandbox->id, ev->port, NULL);
                break;
        default:
                break;
        }
}

static int method_monitor(VarlinkCall *call, json_object *params, unsigned flags, void *userdata) {
        static const char *const fields[] = { NULL };
        Publisher1 *f = userdata;
        VlMonitor *mon;
        int r;

        r = check_fields(call, params, "", fields);
        if (r != 0)
                return r < 0 ? r : 0;
        /* A stream needs "more"; without it there would be one reply and no events. */
        if (!(flags & VARLINK_CALL_MORE))
                return varlink_call_reply_invalid_parameter(call, "more");
        if (f->n_monitors >= MONITORS_MAX) {
                ManagerError e;

                (void) snprintf(e.message, sizeof e.message,
                                "Cannot monitor: %u monitors are running, the limit", f->n_monitors);
                return reply_result_error(call, NULL, MANAGER_E_LIMIT_EXCEEDED, &e);
        }
        MANAGER_FOREACH_SANDBOX(s, f->manager) {
                r = varlink_call_reply_continue(call,
                                                event_new("sandboxNew", true, s->id, NULL, NULL));
                if (r < 0)
                        return r == -ESTALE ? 0 : r;
        }
        MANAGER_FOREACH_PORT(p, f->manager) {
                r = varlink_call_reply_continue(call, event_new("portPublished", true,
                                                                p->sandbox->id, p, NULL));
                if (r < 0)
                        return r == -ESTALE ? 0 : r;
        }
        r = varlink_call_reply_continue(call, event_new("initialized", false, NULL, NULL, NULL));
        if (r < 0)
                return r == -ESTALE ? 0 : r;
        mon = calloc(1, sizeof *mon);
        if (!mon)
                return -ENOMEM;
        *mon = (VlMonitor){ .face = f, .call = call, .next = f->monitors };
        if (f->monitors)
                f->monitors->prev = mon;
        f->monitors = mon;
        f->n_monitors++;
        varlink_call_set_cancel(call, monitor_cancel, mon);
        return 0;
}

/* Connections */

/* Field 22 of /proc/PID/stat: the start time polkit uses to tell a process from a later one
 * with the same pid. */
static uint64_t process_start_time(pid_t pid) {
        char path[64], buf[1024];
        const char *p;
        ssize_t n;
        int fd;

        (void) snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        n = read(fd, buf, sizeof buf - 1);
        (void) close(fd);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        /* The command name may hold spaces and parentheses: count from the last ')'. */
        p = strrchr(buf, ')');
        for (int field = 2; p && field < 22; field++)
                p = strchr(p + 1, ' ');
        return p ? strtoull(p + 1, NULL, 10) : 0;
}

static int on_connected(VarlinkConnection *c, void *userdata) {
        uid_t uid = varlink_connection_uid(c);
        pid_t pid = varlink_connection_pid(c);
        char label[64];
        Caller *caller;
        int r;

        (void) snprintf(label, sizeof label, "varlink pid %d uid %u", (int) pid, (unsigned) uid);
        r = caller_new(&caller, uid, pid, label);
        if (r < 0)
                return r;
        caller->start_time = pid > 0 ? process_start_time(pid) : 0;
        varlink_connection_set_userdata(c, caller);
        return 0;
}

static void on_disconnected(VarlinkConnection *c, void *userdata) {
        Publisher1 *f = userdata;
        Caller *caller = varlink_connection_get_userdata(c);

        if (!caller)
                return;
        varlink_connection_set_userdata(c, NULL);
        manager_caller_gone(f->manager, caller);
        caller_unref(caller);
}

/* "more" is for Monitor alone (API.md): any other method has one reply to give. */
#define ONE_REPLY(name)                                                                            \
        static int name##_one(VarlinkCall *call, json_object *params, unsigned flags,              \
                              void *userdata) {                                                    \
                if (flags & VARLINK_CALL_MORE)                                                     \
                        return varlink_call_reply_invalid_parameter(call, "more");                 \
                return name(call, params, flags, userdata);                                        \
        }
ONE_REPLY(method_publish_ports)
ONE_REPLY(method_unpublish_ports)
ONE_REPLY(method_remove_sandbox)
ONE_REPLY(method_set_guest_addresses)
ONE_REPLY(method_get_sandbox)
ONE_REPLY(method_get_port)
ONE_REPLY(method_list_sandboxes)
ONE_REPLY(method_list_ports)
ONE_REPLY(method_get_status)

static const VarlinkMethod publisher1_methods[] = {
        { "PublishPorts", method_publish_ports_one },
        { "UnpublishPorts", method_unpublish_ports_one },
        { "RemoveSandbox", method_remove_sandbox_one },
        { "SetGuestAddresses", method_set_guest_addresses_one },
        { "GetSandbox", method_get_sandbox_one },
        { "GetPort", method_get_port_one },
        { "ListSandboxes", method_list_sandboxes_one },
        { "ListPorts", method_list_ports_one },
        { "GetStatus", method_get_status_one },
        { "Monitor", method_monitor },
};

static const VarlinkConnectionHooks publisher1_hooks = {
        .connected = on_connected,
        .disconnected = on_disconnected,
};

static const VarlinkInterface publisher1_interface = {
        .name = IFACE,
        .description = publisher1_description,
        .methods = publisher1_methods,
        .n_methods = ELEMENTSOF(publisher1_methods),
};

int publisher1_new(Publisher1 **ret, Manager *m, VarlinkServer *server) {
        Publisher1 *f;
        int r;

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->manager = m;
        f->server = server;
        r = varlink_server_add_interface(server, &publisher1_interface, f);
        if (r >= 0)
                r = manager_subscribe(m, on_event, f, &f->subscriber);
        if (r < 0) {
                free(f);
                return r;
        }
        varlink_server_set_hooks(server, &publisher1_hooks, f);
        *ret = f;
        return 0;
}

Publisher1 *publisher1_free(Publisher1 *f) {
        if (!f)
                return NULL;
        /* The server cancels the monitors and pending calls when it is freed, which must come
         * first; what is left here is only the subscription. */
        f->subscriber = manager_unsubscribe(f->subscriber);
        free(f);
        return NULL;
}
