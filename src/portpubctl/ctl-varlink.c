/* portpubctl over varlink: io.portpub.publisher1 (interfaces/io.portpub.publisher1.varlink)
 *
 * The same verbs as over D-Bus, filling the same structs: the Port fields map to the D-Bus
 * property names for show, and monitor prints the D-Bus signals' lines (object paths included:
 * a Port carries its objectPath, a sandbox's path is made the way the daemon makes it). Errors
 * print the daemon's message where the error has one; NoSuchSandbox and NoSuchPort have none
 * and are worded here as the daemon words them over D-Bus; InvalidParameter names only the
 * parameter, which is printed with the value it had in the call. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "time-util.h"
#include "varlink-client.h"

#define IFACE VARLINK_INTERFACE
#define METHOD(name) IFACE "." name
#define SANDBOX_PATH_PREFIX MANAGER_PATH "/sandbox"
#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
/* A value quoted in an error line is cut there. */
#define QUOTED_VALUE_MAX 200U

typedef struct VarlinkDaemon {
        Daemon daemon;
        VarlinkClient *client;
        char *path;
        char *name; /* "io.portpub.publisher1 on PATH" */
} VarlinkDaemon;

static VarlinkDaemon *varlink_of(Daemon *d) {
        return container_of(d, VarlinkDaemon, daemon);
}

static void json_object_putp(json_object **o) {
        json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

/* Reading replies: every getter reports what is wrong with the reply. */

static int log_reply_parse_error(const char *key, const char *what) {
        return log_error_errno(EBADMSG, "Failed to parse a varlink reply: '%s' is missing or not %s.",
                               key, what);
}

static int get_string(json_object *o, const char *key, const char **ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return log_reply_parse_error(key, "a string");
        *ret = json_object_get_string(v);
        return 0;
}

static int get_uint(json_object *o, const char *key, uint64_t max, uint64_t *ret) {
        json_object *v;
        int64_t i;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return log_reply_parse_error(key, "an integer");
        i = json_object_get_int64(v);
        if (i < 0 || (uint64_t) i > max)
                return log_error_errno(ERANGE,
                                       "Failed to parse a varlink reply: '%s' is out of range.", key);
        *ret = (uint64_t) i;
        return 0;
}

static int get_u16(json_object *o, const char *key, uint16_t *ret) {
        uint64_t v;
        int r;

        r = get_uint(o, key, UINT16_MAX, &v);
        if (r < 0)
                return r;
        *ret = (uint16_t) v;
        return 0;
}

static int get_u32(json_object *o, const char *key, uint32_t *ret) {
        uint64_t v;
        int r;

        r = get_uint(o, key, UINT32_MAX, &v);
        if (r < 0)
                return r;
        *ret = (uint32_t) v;
        return 0;
}

static int get_typed(json_object *o, const char *key, json_type type, const char *what,
                     json_object **ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
                return log_reply_parse_error(key, what);
        *ret = v;
        return 0;
}

static int get_array(json_object *o, const char *key, json_object **ret) {
        return get_typed(o, key, json_type_array, "an array", ret);
}

static int get_object(json_object *o, const char *key, json_object **ret) {
        return get_typed(o, key, json_type_object, "an object", ret);
}

/* Errors */

/* The value at path ("options.proxyProtocol", "ports[1].hostAddress") in o; NULL if none. */
static json_object *json_lookup(json_object *o, const char *path) {
        const char *p = path;

        while (o && *p) {
                if (*p == '[') {
                        char *end;
                        unsigned long i;

                        errno = 0;
                        i = strtoul(p + 1, &end, 10);
                        if (errno != 0 || end == p + 1 || *end != ']' ||
                            !json_object_is_type(o, json_type_array) ||
                            i >= json_object_array_length(o))
                                return NULL;
                        o = json_object_array_get_idx(o, i);
                        p = end + 1;
                } else {
                        char key[128];
                        size_t n;

                        if (*p == '.')
                                p++;
                        n = strcspn(p, ".[");
                        if (n == 0 || n >= sizeof key || !json_object_is_type(o, json_type_object))
                                return NULL;
                        memcpy(key, p, n);
                        key[n] = 0;
                        if (!json_object_object_get_ex(o, key, &o))
                                return NULL;
                        p += n;
                }
        }
        return o;
}

/* A string parameter of an error; "" when it has none. */
static const char *error_string(json_object *parameters, const char *key) {
        json_object *v;

        if (json_object_object_get_ex(parameters, key, &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return "";
}

/* InvalidParameter names the parameter only: it is printed with the value it had in the call,
 * and the sandbox the call was for. Returns -EIO. */
static int log_invalid_parameter(const char *method, json_object *sent, const char *parameter) {
        const char *sandbox = error_string(sent, "sandbox");
        json_object *value = parameter[0] ? json_lookup(sent, parameter) : NULL;
        const char *text = value ? json_object_to_json_string_ext(value, JSON_PLAIN) : NULL;
        size_t len = text ? strlen(text) : 0;

        /* A bad sandbox id is quoted as the value already. */
        if (strcmp(parameter, "sandbox") == 0)
                sandbox = "";
        log_error_errno(0, "Invalid parameter %s%s%.*s%s%s in %s%s%s%s",
                        parameter[0] ? parameter : "(unnamed)", text ? " (" : "",
                        (int) MIN(len, (size_t) QUOTED_VALUE_MAX), text ? text : "",
                        len > QUOTED_VALUE_MAX ? "..." : "", text ? ")" : "",
                        strrchr(method, '.') + 1, sandbox[0] ? " for sandbox '" : "", sandbox,
                        sandbox[0] ? "'" : "");
        return -EIO;
}

/* Reports an error reply to method (its parameters were sent) in one line, as the D-Bus errors
 * are: what failed, with the sandbox and the port it is about. Returns -EIO. */
static int log_reply_error(const char *method, json_object *sent, const VarlinkReply *reply) {
        const char *name = reply->error;
        json_object *p = reply->parameters, *v;

        /* The daemon's own message, the same text as over D-Bus. */
        if (json_object_object_get_ex(p, "message", &v) && json_object_is_type(v, json_type_string)) {
                log_error_errno(0, "%s", json_object_get_string(v));
                return -EIO;
        }
        if (strcmp(name, METHOD("NoSuchSandbox")) == 0) {
                log_error_errno(0, "No sandbox '%s'", error_string(p, "sandbox"));
                return -EIO;
        }
        if (strcmp(name, METHOD("NoSuchPort")) == 0 && json_object_object_get_ex(p, "port", &v) &&
            json_object_is_type(v, json_type_object)) {
                const char *proto = error_string(v, "protocol"),
                           *address = error_string(v, "hostAddress");
                json_object *port;
                int64_t n = -1;

                if (json_object_object_get_ex(v, "hostPort", &port))
                        n = json_object_get_int64(port);
                if (strcmp(method, METHOD("UnpublishPorts")) == 0)
                        log_error_errno(0, "Sandbox '%s' does not publish %s '%s' port %" PRIi64,
                                        error_string(sent, "sandbox"), proto, address, n);
                else
                        log_error_errno(0, "No published port %s '%s' port %" PRIi64, proto,
                                        address, n);
                return -EIO;
        }
        if (strcmp(name, "org.varlink.service.InvalidParameter") == 0)
                return log_invalid_parameter(method, sent, error_string(p, "parameter"));
        /* org.varlink.service's MethodNotFound and the like: the error as it came. */
        log_error_errno(0, "Failed to call %s: %s %s", method, name,
                        json_object_to_json_string_ext(p, JSON_PLAIN));
        return -EIO;
}

/* Calls method; a reply fills *ret, anything else is reported. parameters is borrowed. */
static int call(VarlinkDaemon *v, const char *method, json_object *parameters, VarlinkReply *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        int r;

        r = varlink_client_call(v->client, method, parameters, &reply);
        if (r == -ECONNRESET)
                return log_error_errno(r, "Failed to call %s: the daemon closed the connection.",
                                       method);
        if (r < 0)
                return log_error_errno(r, "Failed to call %s: %m", method);
        if (reply.error)
                return log_reply_error(method, parameters, &reply);
        *ret = reply;
        reply = (VarlinkReply){};
        return 0;
}

/* Calls method with {key: value} (value taken). */
static int call_with(VarlinkDaemon *v, const char *method, const char *key, json_object *value,
                     VarlinkReply *ret) {
        _cleanup_json_ json_object *p = json_object_new_object();

        if (!p) {
                json_object_put(value);
                return log_oom();
        }
        if (json_add(p, key, value) < 0)
                return log_oom();
        return call(v, method, p, ret);
}

/* list */

/* The strings of the array o joined by sep into a new string; NULL when out of memory. */
static int join_strings(json_object *o, const char *key, char sep, char **ret) {
        _cleanup_free_ char *s = NULL;
        json_object *l;
        size_t size = 1, at = 0;
        int r;

        r = get_array(o, key, &l);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                json_object *v = json_object_array_get_idx(l, i);

                if (!json_object_is_type(v, json_type_string))
                        return log_reply_parse_error(key, "a list of strings");
                size += strlen(json_object_get_string(v)) + 1;
        }
        s = malloc(size);
        if (!s)
                return log_oom();
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                const char *v = json_object_get_string(json_object_array_get_idx(l, i));

                if (i > 0)
                        s[at++] = sep;
                memcpy(s + at, v, strlen(v));
                at += strlen(v);
        }
        s[at] = 0;
        *ret = TAKE_PTR(s);
        return 0;
}

/* A Port into e; its listenAddresses go to *ret_listen, which e points to. */
static int read_port_entry(json_object *o, PortEntry *e, char **ret_listen) {
        int r;

        if (!json_object_is_type(o, json_type_object))
                return log_reply_parse_error("ports[]", "an object");
        r = get_string(o, "sandbox", &e->sandbox);
        if (r >= 0)
                r = get_string(o, "protocol", &e->protocol);
        if (r >= 0)
                r = get_string(o, "hostAddress", &e->host_address);
        if (r >= 0)
                r = get_u16(o, "hostPort", &e->host_port);
        if (r >= 0)
                r = get_string(o, "guestAddress", &e->guest_address);
        if (r >= 0)
                r = get_u16(o, "guestPort", &e->guest_port);
        if (r >= 0)
                r = get_string(o, "state", &e->state);
        if (r >= 0)
                r = get_string(o, "lastError", &e->last_error);
        if (r >= 0)
                r = get_string(o, "proxyProtocol", &e->proxy_protocol);
        if (r >= 0)
                r = get_string(o, "objectPath", &e->path);
        if (r >= 0)
                r = get_u32(o, "activeSessions", &e->active_sessions);
        if (r >= 0)
                r = get_u32(o, "maxSessions", &e->max_sessions);
        if (r >= 0)
                r = get_uint(o, "totalSessions", UINT64_MAX, &e->total_sessions);
        if (r >= 0)
                r = get_uint(o, "rejectedSessions", UINT64_MAX, &e->rejected_sessions);
        if (r >= 0)
                r = get_uint(o, "failedSessions", UINT64_MAX, &e->failed_sessions);
        if (r >= 0)
                r = get_uint(o, "bytesToGuest", UINT64_MAX, &e->bytes_to_guest);
        if (r >= 0)
                r = get_uint(o, "bytesFromGuest", UINT64_MAX, &e->bytes_from_guest);
        if (r >= 0)
                r = get_uint(o, "idleTimeoutUSec", UINT64_MAX, &e->idle_timeout_usec);
        if (r >= 0)
                r = join_strings(o, "listenAddresses", ' ', ret_listen);
        if (r >= 0)
                e->listen_addresses = *ret_listen;
        return r;
}

/* A Port added to ret. */
static int add_port(json_object *o, char *const *filter, size_t n_filter, PortList *ret) {
        _cleanup_free_ char *listen = NULL;
        PortEntry e = {};
        int r;

        r = read_port_entry(o, &e, &listen);
        if (r < 0)
                return r;
        if (!sandbox_selected(e.sandbox, filter, n_filter))
                return 0;
        return port_list_add(ret, &e);
}

/* ListPorts has everything, counters included. It is asked for all sandboxes and filtered
 * here, as over D-Bus: a sandbox named that has no ports is no error. */
static int varlink_list_ports(Daemon *d, char *const *filter, size_t n_filter, PortList *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        json_object *ports;
        int r;

        r = call(varlink_of(d), METHOD("ListPorts"), NULL, &reply);
        if (r < 0)
                return r;
        r = get_array(reply.parameters, "ports", &ports);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(ports); i++) {
                r = add_port(json_object_array_get_idx(ports, i), filter, n_filter, ret);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* sandboxes */

static int varlink_list_sandboxes(Daemon *d, SandboxList *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        json_object *sandboxes;
        int r;

        r = call(varlink_of(d), METHOD("ListSandboxes"), NULL, &reply);
        if (r < 0)
                return r;
        r = get_array(reply.parameters, "sandboxes", &sandboxes);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(sandboxes); i++) {
                json_object *s = json_object_array_get_idx(sandboxes, i), *guests, *ports, *m;
                const char *addresses[2];
                SandboxEntry e = {};
                uint64_t active;
                size_t n = 0;

                if (!json_object_is_type(s, json_type_object))
                        return log_reply_parse_error("sandboxes[]", "an object");
                r = get_string(s, "id", &e.id);
                if (r >= 0)
                        r = get_string(s, "objectPath", &e.path);
                if (r >= 0)
                        r = get_array(s, "guestAddresses", &guests);
                if (r >= 0)
                        r = get_array(s, "ports", &ports);
                if (r >= 0)
                        r = get_u32(s, "owner", &e.owner);
                if (r >= 0)
                        r = get_typed(s, "machine", json_type_boolean, "a boolean", &m);
                if (r >= 0)
                        r = get_uint(s, "activeSessions", UINT64_MAX, &active);
                if (r < 0)
                        return r;
                e.machine = json_object_get_boolean(m);
                e.active_sessions = active;
                /* At most one address of each family. */
                for (size_t k = 0; k < json_object_array_length(guests); k++) {
                        json_object *a = json_object_array_get_idx(guests, k);

                        if (!json_object_is_type(a, json_type_string))
                                return log_reply_parse_error("guestAddresses[]", "a string");
                        if (n < ELEMENTSOF(addresses))
                                addresses[n++] = json_object_get_string(a);
                }
                e.n_ports = (uint32_t) MIN(json_object_array_length(ports), (size_t) UINT32_MAX);
                r = sandbox_list_add(ret, &e, addresses, n);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* publish, unpublish */

/* {"protocol", "hostAddress", "hostPort"[, "guestPort"]} */
static json_object *port_to_json(const char *protocol, const char *host_address, uint16_t host_port,
                                 bool with_guest, uint16_t guest_port) {
        json_object *o = json_object_new_object();

        if (!o || json_add(o, "protocol", json_object_new_string(protocol)) < 0 ||
            json_add(o, "hostAddress", json_object_new_string(host_address)) < 0 ||
            json_add(o, "hostPort", json_object_new_int(host_port)) < 0 ||
            (with_guest && json_add(o, "guestPort", json_object_new_int(guest_port)) < 0)) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* The tuples of every range, as PortSpec (with_guest) or PortKey. */
static json_object *ports_to_json(const PortRange *ranges, size_t n, bool with_guest) {
        json_object *l = json_object_new_array();

        for (size_t i = 0; l && i < n; i++)
                for (unsigned k = 0; k < port_range_size(&ranges[i]); k++) {
                        json_object *p = port_to_json(ranges[i].protocol, ranges[i].host_address,
                                                      port_range_host(&ranges[i], k), with_guest,
                                                      port_range_guest(&ranges[i], k));

                        if (!p || json_object_array_add(l, p) < 0) {
                                json_object_put(p);
                                json_object_put(l);
                                return NULL;
                        }
                }
        return l;
}

static json_object *strings_to_json(const char *const *strings, size_t n) {
        json_object *l = json_object_new_array();

        for (size_t i = 0; l && i < n; i++) {
                json_object *s = json_object_new_string(strings[i]);

                if (!s || json_object_array_add(l, s) < 0) {
                        json_object_put(s);
                        json_object_put(l);
                        return NULL;
                }
        }
        return l;
}

/* PublishOptions with the options given; NULL (none) is fine. */
static int options_to_json(const PublishArgs *a, json_object **ret) {
        _cleanup_json_ json_object *o = NULL;

        *ret = NULL;
        if (!a->has_max_sessions && !a->has_idle_timeout && !a->proxy_protocol && !a->bind_to_caller)
                return 0;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (a->has_max_sessions &&
            json_add(o, "maxSessions", json_object_new_int64(a->max_sessions)) < 0)
                return -ENOMEM;
        /* A value past INT64_MAX is sent as it is, for the daemon to refuse. */
        if (a->has_idle_timeout &&
            json_add(o, "idleTimeoutUSec", json_object_new_uint64(a->idle_timeout_usec)) < 0)
                return -ENOMEM;
        if (a->proxy_protocol &&
            json_add(o, "proxyProtocol", json_object_new_string(a->proxy_protocol)) < 0)
                return -ENOMEM;
        if (a->bind_to_caller && json_add(o, "bindToCaller", json_object_new_boolean(true)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int varlink_publish(Daemon *d, const PublishArgs *a, PublishedList *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        _cleanup_json_ json_object *p = json_object_new_object();
        json_object *options = NULL, *ports;
        int r;

        /* No guest addresses: absent, which keeps the sandbox's (or asks machined for a new
         * one's), as the empty list does over D-Bus. */
        if (!p || json_add(p, "sandbox", json_object_new_string(a->sandbox)) < 0 ||
            (a->n_guests > 0 &&
             json_add(p, "guestAddresses", strings_to_json(a->guests, a->n_guests)) < 0) ||
            json_add(p, "ports", ports_to_json(a->ranges, a->n_ranges, true)) < 0 ||
            options_to_json(a, &options) < 0 || (options && json_add(p, "options", options) < 0))
                return log_oom();

        r = call(varlink_of(d), METHOD("PublishPorts"), p, &reply);
        if (r < 0)
                return r;
        r = get_array(reply.parameters, "ports", &ports);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_object_array_length(ports); i++) {
                json_object *o = json_object_array_get_idx(ports, i);
                const char *protocol, *address, *path;
                uint16_t host_port, guest_port;

                if (!json_object_is_type(o, json_type_object))
                        return log_reply_parse_error("ports[]", "an object");
                r = get_string(o, "protocol", &protocol);
                if (r >= 0)
                        r = get_string(o, "hostAddress", &address);
                if (r >= 0)
                        r = get_u16(o, "hostPort", &host_port);
                if (r >= 0)
                        r = get_u16(o, "guestPort", &guest_port);
                if (r >= 0)
                        r = get_string(o, "objectPath", &path);
                if (r >= 0)
                        r = published_list_add(ret, protocol, address, host_port, guest_port, path);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int varlink_unpublish(Daemon *d, const char *sandbox, const PortRange *ranges, size_t n) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        _cleanup_json_ json_object *p = json_object_new_object();

        if (!p || json_add(p, "sandbox", json_object_new_string(sandbox)) < 0 ||
            json_add(p, "ports", ports_to_json(ranges, n, false)) < 0)
                return log_oom();
        return call(varlink_of(d), METHOD("UnpublishPorts"), p, &reply);
}

static int varlink_remove_sandbox(Daemon *d, const char *sandbox) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};

        return call_with(varlink_of(d), METHOD("RemoveSandbox"), "sandbox",
                         json_object_new_string(sandbox), &reply);
}

static int varlink_set_guest_addresses(Daemon *d, const char *sandbox, char **addresses) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        _cleanup_json_ json_object *p = json_object_new_object();
        size_t n = 0;

        while (addresses[n])
                n++;
        if (!p || json_add(p, "sandbox", json_object_new_string(sandbox)) < 0 ||
            json_add(p, "addresses", strings_to_json((const char *const *) addresses, n)) < 0)
                return log_oom();
        return call(varlink_of(d), METHOD("SetGuestAddresses"), p, &reply);
}

/* show */

/* A varlink field shown under the name of its D-Bus property. */
typedef struct FieldProperty {
        const char *field, *property;
} FieldProperty;

/* The Port's fields, in the order of the D-Bus Port object's properties; bindToCaller and
 * objectPath have no property there and are not shown. */
static const FieldProperty port_properties[] = {
        { "sandbox", "Sandbox" },
        { "protocol", "Protocol" },
        { "hostAddress", "HostAddress" },
        { "hostPort", "HostPort" },
        { "guestPort", "GuestPort" },
        { "listenAddresses", "ListenAddresses" },
        { "guestAddress", "GuestAddress" },
        { "state", "State" },
        { "lastError", "LastError" },
        { "activeSessions", "ActiveSessions" },
        { "totalSessions", "TotalSessions" },
        { "rejectedSessions", "RejectedSessions" },
        { "failedSessions", "FailedSessions" },
        { "bytesToGuest", "BytesToGuest" },
        { "bytesFromGuest", "BytesFromGuest" },
        { "idleTimeoutUSec", "IdleTimeoutUSec" },
        { "maxSessions", "MaxSessions" },
        { "proxyProtocol", "ProxyProtocol" },
};

/* GetStatus, in the order of the D-Bus Manager object's properties. */
static const FieldProperty status_properties[] = {
        { "version", "Version" },
        { "sandboxes", "NSandboxes" },
        { "ports", "NPorts" },
        { "activeSessions", "ActiveSessions" },
        { "totalSessions", "TotalSessions" },
        { "defaultMaxSessions", "DefaultMaxSessions" },
        { "defaultUDPIdleTimeoutUSec", "DefaultUDPIdleTimeoutUSec" },
};

/* Writes a value as the D-Bus side does (systemctl show): booleans yes/no, lists
 * space-separated; false for one it cannot print whole (an object, a list of lists). */
static bool format_value(json_object *v, bool in_array, FILE *f) {
        switch (json_object_get_type(v)) {
        case json_type_string:
                fputs(json_object_get_string(v), f);
                return true;
        case json_type_int:
                fprintf(f, "%" PRIi64, json_object_get_int64(v));
                return true;
        case json_type_boolean:
                fputs(json_object_get_boolean(v) ? "yes" : "no", f);
                return true;
        case json_type_double:
                fprintf(f, "%g", json_object_get_double(v));
                return true;
        case json_type_array:
                if (in_array)
                        return false;
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        if (i > 0)
                                fputc(' ', f);
                        if (!format_value(json_object_array_get_idx(v, i), true, f))
                                return false;
                }
                return true;
        default:
                return false;
        }
}

/* The fields of o under their property names; a field o lacks, or cannot be printed whole, gets
 * no line, as over D-Bus. */
static int fields_to_properties(json_object *o, const FieldProperty *map, size_t n,
                                PropertyList *ret) {
        int r;

        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *text = NULL;
                json_object *v;
                size_t size;
                bool ok;
                FILE *f;

                if (!json_object_object_get_ex(o, map[i].field, &v) || !v)
                        continue;
                f = open_memstream(&text, &size);
                if (!f)
                        return log_oom();
                ok = format_value(v, false, f);
                if (fclose(f) != 0)
                        return log_oom();
                if (!ok)
                        continue;
                r = property_list_add(ret, map[i].property, TAKE_PTR(text));
                if (r < 0)
                        return r;
        }
        return 0;
}

/* GetPort of port (one host port): its object, borrowed from *reply. */
static int lookup_port(Daemon *d, const PortRange *port, VarlinkReply *reply, json_object **ret) {
        int r;

        r = call_with(varlink_of(d), METHOD("GetPort"), "port",
                      port_to_json(port->protocol, port->host_address, port->host_first, false, 0),
                      reply);
        if (r < 0)
                return r;
        return get_object(reply->parameters, "port", ret);
}

static int varlink_show_port(Daemon *d, const PortRange *port, PropertyList *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        json_object *o;
        int r;

        r = lookup_port(d, port, &reply, &o);
        if (r < 0)
                return r;
        return fields_to_properties(o, port_properties, ELEMENTSOF(port_properties), ret);
}

static int varlink_get_port(Daemon *d, const PortRange *port, PortList *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        json_object *o;
        int r;

        r = lookup_port(d, port, &reply, &o);
        if (r < 0)
                return r;
        return add_port(o, NULL, 0, ret);
}

static int varlink_get_status(Daemon *d, DaemonStatus *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        json_object *p;
        const char *version;
        int r;

        r = call(varlink_of(d), METHOD("GetStatus"), NULL, &reply);
        if (r < 0)
                return r;
        p = reply.parameters;
        r = get_string(p, "version", &version);
        if (r >= 0)
                r = get_u32(p, "sandboxes", &ret->n_sandboxes);
        if (r >= 0)
                r = get_u32(p, "ports", &ret->n_ports);
        if (r >= 0)
                r = get_uint(p, "activeSessions", UINT64_MAX, &ret->active_sessions);
        if (r >= 0)
                r = get_uint(p, "totalSessions", UINT64_MAX, &ret->total_sessions);
        if (r >= 0)
                r = get_u32(p, "defaultMaxSessions", &ret->default_max_sessions);
        if (r >= 0)
                r = get_uint(p, "defaultUDPIdleTimeoutUSec", UINT64_MAX,
                             &ret->default_udp_idle_timeout_usec);
        if (r < 0)
                return r;
        ret->version = strdup(version);
        if (!ret->version)
                return log_oom();
        return 0;
}

static int varlink_show_daemon(Daemon *d, PropertyList *ret) {
        _cleanup_(varlink_reply_done) VarlinkReply reply = {};
        int r;

        r = call(varlink_of(d), METHOD("GetStatus"), NULL, &reply);
        if (r < 0)
                return r;
        return fields_to_properties(reply.parameters, status_properties,
                                    ELEMENTSOF(status_properties), ret);
}

/* monitor, hold */

/* Waits for a signal on signal_fd, for fd to have events (fd < 0: none) or for the deadline
 * (VARLINK_CLIENT_FOREVER: none): 1 signal, 0 fd or deadline, < 0 failure. */
static int wait_signal_or(int signal_fd, int fd, uint64_t deadline) {
        struct pollfd p[2] = {
                { .fd = signal_fd, .events = POLLIN },
                { .fd = fd, .events = POLLIN },
        };

        if (poll(p, ELEMENTSOF(p), poll_timeout_ms(deadline)) < 0) {
                if (errno == EINTR)
                        return 0;
                return log_error_errno(errno, "Failed to wait for the varlink socket: %m");
        }
        if (p[0].revents & POLLIN) {
                struct signalfd_siginfo si;

                if (read(signal_fd, &si, sizeof si) == (ssize_t) sizeof si)
                        return 1;
        }
        return 0;
}

typedef struct Monitor {
        VarlinkDaemon *v;
        monitor_event_t on_event;
        void *userdata;
        bool ready; /* MONITOR_READY was sent: after a reconnection it is not sent again */
        bool initialized; /* on this connection */
} Monitor;

/* One reply of Monitor. */
static int monitor_dispatch(Monitor *m, const VarlinkReply *reply) {
        json_object *p = reply->parameters, *v;
        _cleanup_free_ char *sandbox_path = NULL;
        MonitorEvent e = {};
        const char *event;
        int r;

        if (reply->error)
                return log_reply_error(METHOD("Monitor"), NULL, reply);
        r = get_string(p, "event", &event);
        if (r < 0)
                return r;
        if (strcmp(event, "initialized") == 0) {
                m->initialized = true;
                if (!m->ready)
                        m->on_event(&(const MonitorEvent){ .type = MONITOR_READY }, m->userdata);
                m->ready = true;
                return 0;
        }
        /* What was there before the subscription, as over D-Bus, is not announced. */
        if (json_object_object_get_ex(p, "initial", &v) && json_object_get_boolean(v))
                return 0;

        if (strcmp(event, "sandboxNew") == 0 || strcmp(event, "sandboxRemoved") == 0) {
                e.type = strcmp(event, "sandboxNew") == 0 ? MONITOR_SANDBOX_NEW
                                                          : MONITOR_SANDBOX_REMOVED;
                r = get_string(p, "sandbox", &e.sandbox);
                if (r < 0)
                        return r;
                /* The path of the sandbox's D-Bus object, made as the daemon makes it. */
                r = sd_bus_path_encode(SANDBOX_PATH_PREFIX, e.sandbox, &sandbox_path);
                if (r < 0)
                        return log_oom();
                e.path = sandbox_path;
        } else if (strcmp(event, "portPublished") == 0 || strcmp(event, "portUnpublished") == 0) {
                json_object *port;

                e.type = strcmp(event, "portPublished") == 0 ? MONITOR_PORT_PUBLISHED
                                                             : MONITOR_PORT_UNPUBLISHED;
                r = get_object(p, "port", &port);
                if (r >= 0)
                        r = get_string(port, "sandbox", &e.sandbox);
                if (r >= 0)
                        r = get_string(port, "protocol", &e.protocol);
                if (r >= 0)
                        r = get_string(port, "hostAddress", &e.host_address);
                if (r >= 0)
                        r = get_u16(port, "hostPort", &e.host_port);
                if (r >= 0)
                        r = get_string(port, "objectPath", &e.path);
                if (r >= 0 && e.type == MONITOR_PORT_UNPUBLISHED)
                        r = get_string(p, "reason", &e.reason);
                if (r < 0)
                        return r;
        } else
                return 0; /* portChanged: over D-Bus a PropertiesChanged, which is not printed */
        m->on_event(&e, m->userdata);
        return 0;
}

/* Connects (again) and calls Monitor. */
static int monitor_subscribe(Monitor *m, bool quiet) {
        VarlinkDaemon *v = m->v;
        int r;

        if (!v->client) {
                r = varlink_client_connect(&v->client, v->path);
                if (r < 0)
                        return quiet ? r
                                     : log_error_errno(r,
                                                       "Failed to connect to the varlink socket %s: %m",
                                                       v->path);
        }
        m->initialized = false;
        r = varlink_client_send(v->client, METHOD("Monitor"), NULL, true,
                                monotonic_usec() + VARLINK_CLIENT_TIMEOUT_USEC);
        if (r < 0) {
                v->client = varlink_client_free(v->client);
                return quiet ? r : log_error_errno(r, "Failed to call %s: %m", METHOD("Monitor"));
        }
        return 0;
}

/* Follows the daemon as the D-Bus monitor does: when the connection ends (the daemon stopped),
 * it connects again, after 0.1 s, then after twice as long each time, at most every 5 s, and
 * subscribes again; what the new daemon restored is not announced. */
static int varlink_monitor(Daemon *d, int signal_fd, monitor_event_t on_event, void *userdata) {
        Monitor m = { .v = varlink_of(d), .on_event = on_event, .userdata = userdata };
        VarlinkDaemon *v = m.v;
        uint64_t retry_usec = 100 * USEC_PER_MSEC, deadline;
        int r;

        r = monitor_subscribe(&m, false);
        if (r < 0)
                return r;
        /* The subscription is bounded like a call until it is in place. */
        deadline = monotonic_usec() + VARLINK_CLIENT_TIMEOUT_USEC;
        for (;;) {
                VarlinkReply reply = {};

                if (!v->client) {
                        r = wait_signal_or(signal_fd, -1, monotonic_usec() + retry_usec);
                        if (r != 0)
                                return r < 0 ? r : 0;
                        if (monitor_subscribe(&m, true) < 0) {
                                retry_usec = MIN(retry_usec * 2, 5 * USEC_PER_SEC);
                                continue;
                        }
                        retry_usec = 100 * USEC_PER_MSEC;
                        deadline = VARLINK_CLIENT_FOREVER;
                }

                r = varlink_client_read(v->client, VARLINK_CLIENT_NO_WAIT, &reply);
                if (r > 0) {
                        bool final = !reply.continues;

                        r = monitor_dispatch(&m, &reply);
                        varlink_reply_done(&reply);
                        if (r < 0)
                                return r;
                        if (final) /* a Monitor call does not end; this one did: subscribe again */
                                v->client = varlink_client_free(v->client);
                        else if (m.initialized)
                                deadline = VARLINK_CLIENT_FOREVER;
                        continue;
                }
                if (r == -ECONNRESET || r == -EPIPE) {
                        /* Before the first subscription was in place, a daemon that hangs up
                         * is an error, as a failed call is. */
                        if (!m.ready)
                                return log_error_errno(
                                        r, "Failed to call %s: the daemon closed the connection.",
                                        METHOD("Monitor"));
                        v->client = varlink_client_free(v->client);
                        continue;
                }
                if (r < 0)
                        return log_error_errno(r, "Failed to read from the varlink socket %s: %m",
                                               v->path);

                r = wait_signal_or(signal_fd, varlink_client_fd(v->client), deadline);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (deadline != VARLINK_CLIENT_FOREVER && monotonic_usec() >= deadline)
                        return log_error_errno(ETIMEDOUT, "Failed to call %s: %m", METHOD("Monitor"));
        }
}

/* The ports published with --bind-to-caller live as long as this connection. */
static int varlink_hold(Daemon *d, int signal_fd) {
        VarlinkDaemon *v = varlink_of(d);
        int r;

        for (;;) {
                VarlinkReply reply = {};

                r = wait_signal_or(signal_fd, varlink_client_fd(v->client), VARLINK_CLIENT_FOREVER);
                if (r != 0)
                        return r < 0 ? r : 0;
                /* Nothing is sent on it unasked; whatever comes is read and dropped. */
                while ((r = varlink_client_read(v->client, VARLINK_CLIENT_NO_WAIT, &reply)) > 0)
                        varlink_reply_done(&reply);
                if (r == -ECONNRESET)
                        return log_error_errno(r, "Lost the varlink connection (the daemon closed "
                                                  "it), and the ports bound to it.");
                if (r < 0)
                        return log_error_errno(r, "Lost the varlink connection: %m");
        }
}

static void varlink_free(Daemon *d) {
        VarlinkDaemon *v = varlink_of(d);

        varlink_client_free(v->client);
        free(v->path);
        free(v->name);
        free(v);
}

static const DaemonOps varlink_ops = {
        .list_ports = varlink_list_ports,
        .list_sandboxes = varlink_list_sandboxes,
        .get_port = varlink_get_port,
        .get_status = varlink_get_status,
        .publish = varlink_publish,
        .unpublish = varlink_unpublish,
        .remove_sandbox = varlink_remove_sandbox,
        .set_guest_addresses = varlink_set_guest_addresses,
        .show_port = varlink_show_port,
        .show_daemon = varlink_show_daemon,
        .monitor = varlink_monitor,
        .hold = varlink_hold,
        .free = varlink_free,
};

int varlink_daemon_open(Daemon **ret, const char *path) {
        _cleanup_(varlink_client_freep) VarlinkClient *client = NULL;
        _cleanup_free_ char *p = NULL, *name = NULL;
        VarlinkDaemon *v;
        int r;

        r = varlink_client_connect(&client, path);
        if (r < 0)
                return log_unreachable(r, "Cannot connect to the varlink socket %s: %m%s", path,
                                       r == -ENOENT || r == -ECONNREFUSED ? " (is portpubd running?)"
                                                                          : "");
        p = strdup(path);
        if (!p)
                return log_oom();
        if (asprintf(&name, "%s on %s", IFACE, path) < 0) {
                name = NULL; /* undefined after a failure */
                return log_oom();
        }
        v = calloc(1, sizeof *v);
        if (!v)
                return log_oom();
        *v = (VarlinkDaemon){
                .daemon = { .ops = &varlink_ops, .name = name },
                .client = TAKE_PTR(client),
                .path = TAKE_PTR(p),
                .name = TAKE_PTR(name),
        };
        *ret = &v->daemon;
        return 0;
}
