/* The D-Bus face of the manager: Manager interface, object manager, signals
 *
 * Handlers parse and validate every argument before anything changes, hand the manager plain
 * data, and map its positive result codes to named errors. Publishing a new sandbox needs the
 * caller's uid, which dbus-daemon gives only on request: that request is asynchronous, and the
 * method call is answered from its reply. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "manager-dbus.h"

struct ManagerDBus {
        Manager *manager;
        sd_bus *bus;
        sd_bus_slot *slots[8];
        ev_timer sessions_timer;
        ev_tstamp sessions_last;
        uint64_t active_announced;
        unsigned n_pending; /* publish requests waiting for the caller's uid */
};

/* Callers can queue publish requests faster than the bus answers; bound what they may hold. */
#define PUBLISH_PENDING_MAX 256U

/* Errors */

int manager_dbus_map_result(int r, const ManagerError *e, sd_bus_error *error) {
        const char *name;

        if (r < 0)
                return r;
        switch (r) {
        case MANAGER_OK:
                return 0;
        case MANAGER_E_INVALID:
                name = SD_BUS_ERROR_INVALID_ARGS;
                break;
        case MANAGER_E_NO_SUCH_SANDBOX:
                name = PORTPUB_ERROR_NO_SUCH_SANDBOX;
                break;
        case MANAGER_E_NO_SUCH_PORT:
                name = PORTPUB_ERROR_NO_SUCH_PORT;
                break;
        case MANAGER_E_PORT_IN_USE:
                name = PORTPUB_ERROR_PORT_IN_USE;
                break;
        case MANAGER_E_ADDRESS_NOT_AVAILABLE:
                name = PORTPUB_ERROR_ADDRESS_NOT_AVAILABLE;
                break;
        case MANAGER_E_PERMISSION_DENIED:
                name = PORTPUB_ERROR_PERMISSION_DENIED;
                break;
        case MANAGER_E_NO_GUEST_ADDRESS:
                name = PORTPUB_ERROR_NO_GUEST_ADDRESS;
                break;
        case MANAGER_E_LIMIT_EXCEEDED:
                name = PORTPUB_ERROR_LIMIT_EXCEEDED;
                break;
        default:
                return -EIO;
        }
        return sd_bus_error_set(error, name, e->message);
}

/* Parsing */

static int read_guest_addresses(sd_bus_message *message, const char *sandbox_id, SockaddrUnion *g4,
                                SockaddrUnion *g6, unsigned *ret_n, sd_bus_error *error) {
        ManagerError e;
        unsigned n = 0;
        const char *a;
        int r;

        *g4 = (SockaddrUnion){};
        *g6 = (SockaddrUnion){};
        r = sd_bus_message_enter_container(message, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(message, "s", &a)) > 0) {
                if (++n > 2)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "Invalid guest addresses for sandbox '%s': at most one IPv4 and one IPv6 address, got '%s' too",
                                sandbox_id, a);
                r = manager_parse_guest_address(a, g4, g6, &e);
                if (r != 0)
                        return manager_dbus_map_result(r, &e, error);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(message);
        if (r < 0)
                return r;
        *ret_n = n;
        return 0;
}

static int read_port_specs(sd_bus_message *message, const char *sandbox_id, bool with_guest_port,
                           PortSpec **ret, size_t *ret_n, sd_bus_error *error) {
        _cleanup_free_ PortSpec *specs = NULL;
        size_t n = 0, allocated = 0;
        const char *proto, *addr;
        uint16_t hport, gport = 0;
        ManagerError e;
        int r;

        r = sd_bus_message_enter_container(message, 'a', with_guest_port ? "(ssqq)" : "(ssq)");
        if (r < 0)
                return r;
        for (;;) {
                if (with_guest_port)
                        r = sd_bus_message_read(message, "(ssqq)", &proto, &addr, &hport, &gport);
                else
                        r = sd_bus_message_read(message, "(ssq)", &proto, &addr, &hport);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (n >= MANAGER_PORTS_PER_CALL_MAX)
                        return sd_bus_error_setf(
                                error, PORTPUB_ERROR_LIMIT_EXCEEDED,
                                "Too many ports for sandbox '%s' in one call: more than %u",
                                sandbox_id, MANAGER_PORTS_PER_CALL_MAX);
                if (n >= allocated) {
                        size_t na = allocated ? allocated * 2 : 16;
                        PortSpec *t = reallocarray(specs, na, sizeof *specs);

                        if (!t)
                                return -ENOMEM;
                        specs = t;
                        allocated = na;
                }
                r = manager_parse_port_spec(proto, addr, hport, gport, with_guest_port, &specs[n],
                                            &e);
                if (r != 0) {
                        /* Name the sandbox too: the caller may be scripting several. */
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "%s (sandbox '%s')", e.message, sandbox_id);
                }
                n++;
        }
        r = sd_bus_message_exit_container(message);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(specs);
        *ret_n = n;
        return 0;
}

static int read_options(sd_bus_message *message, const char *sandbox_id, PortOptions *o,
                        sd_bus_error *error) {
        int r;

        *o = (PortOptions){};
        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
                const char *key, *contents, *want;
                char type;

                r = sd_bus_message_read(message, "s", &key);
                if (r < 0)
                        return r;
                if (strcmp(key, "BindToCaller") == 0)
                        want = "b";
                else if (strcmp(key, "IdleTimeoutUSec") == 0)
                        want = "t";
                else if (strcmp(key, "MaxSessions") == 0)
                        want = "u";
                else if (strcmp(key, "ProxyProtocol") == 0)
                        want = "s";
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown option '%s' for sandbox '%s'", key,
                                                 sandbox_id);
                r = sd_bus_message_peek_type(message, &type, &contents);
                if (r < 0)
                        return r;
                if (type != 'v' || strcmp(contents, want) != 0)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "Option '%s' for sandbox '%s' has type '%s', expected '%s'", key,
                                sandbox_id, contents, want);
                r = sd_bus_message_enter_container(message, 'v', want);
                if (r < 0)
                        return r;
                if (want[0] == 'b') {
                        int b;

                        r = sd_bus_message_read(message, "b", &b);
                        o->bind_to_caller = b;
                } else if (want[0] == 't') {
                        r = sd_bus_message_read(message, "t", &o->idle_timeout_usec);
                        if (r >= 0 && o->idle_timeout_usec > RELAY_IDLE_TIMEOUT_MAX_USEC)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Invalid IdleTimeoutUSec %" PRIu64
                                                         " for sandbox '%s': at most %" PRIu64 "",
                                                         o->idle_timeout_usec, sandbox_id,
                                                         RELAY_IDLE_TIMEOUT_MAX_USEC);
                        o->has_idle_timeout = true;
                } else if (want[0] == 'u') {
                        r = sd_bus_message_read(message, "u", &o->max_sessions);
                        if (r >= 0 &&
                            (o->max_sessions == 0 || o->max_sessions > MANAGER_MAX_SESSIONS_MAX))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Invalid MaxSessions %" PRIu32
                                                         " for sandbox '%s': expected 1 to %u",
                                                         o->max_sessions, sandbox_id,
                                                         MANAGER_MAX_SESSIONS_MAX);
                        o->has_max_sessions = true;
                } else {
                        const char *s;

                        r = sd_bus_message_read(message, "s", &s);
                        if (r < 0)
                                return r;
                        if (strcmp(s, "") == 0)
                                o->proxy_protocol = RELAY_PROXY_NONE;
                        else if (strcmp(s, "v1") == 0)
                                o->proxy_protocol = RELAY_PROXY_V1;
                        else if (strcmp(s, "v2") == 0)
                                o->proxy_protocol = RELAY_PROXY_V2;
                        else
                                return sd_bus_error_setf(
                                        error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Invalid ProxyProtocol '%s' for sandbox '%s': expected \"\", \"v1\" or \"v2\"",
                                        s, sandbox_id);
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(message);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(message);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}

/* Publishing */

typedef struct PublishRequest {
        Manager *manager;
        ManagerDBus *dbus; /* set while counted in dbus->n_pending */
        sd_bus_message *message;
        char *sandbox_id;
        SockaddrUnion guest4, guest6;
        PortSpec *specs;
        size_t n_specs;
        PortOptions options;
        int reply_path;
} PublishRequest;

static PublishRequest *publish_request_free(PublishRequest *p) {
        if (!p)
                return NULL;
        if (p->dbus)
                p->dbus->n_pending--;
        sd_bus_message_unref(p->message);
        free(p->sandbox_id);
        free(p->specs);
        free(p);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(PublishRequest *, publish_request_free);

static int publish_request_run(PublishRequest *p, uint32_t owner, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ Port **ports = NULL;
        ManagerError e;
        Sandbox *s;
        int r;

        ports = calloc(p->n_specs ? p->n_specs : 1, sizeof *ports);
        if (!ports)
                return -ENOMEM;
        r = manager_publish(p->manager, p->sandbox_id, &p->guest4, &p->guest6, owner, p->specs,
                            p->n_specs, &p->options, &s, ports, &e);
        if (r != 0)
                return manager_dbus_map_result(r, &e, error);

        r = sd_bus_message_new_method_return(p->message, &reply);
        if (r < 0)
                return r;
        if (p->reply_path) {
                r = sd_bus_message_append(reply, "o", s->path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_open_container(reply, 'a', "(ssqqo)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_specs; i++) {
                r = sd_bus_message_append(reply, "(ssqqo)", ports[i]->protocol,
                                          ports[i]->host_address, ports[i]->host_port,
                                          ports[i]->guest_port, ports[i]->path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static void publish_request_destroy(void *userdata) {
        publish_request_free(userdata);
}

static int publish_owner_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PublishRequest *p = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        uint32_t uid;
        int r;

        if (sd_bus_message_is_method_error(reply, NULL)) {
                r = sd_bus_error_setf(&error, SD_BUS_ERROR_ACCESS_DENIED,
                                      "Cannot publish for sandbox '%s': the caller's uid is unknown: %s",
                                      p->sandbox_id, sd_bus_message_get_error(reply)->message);
        } else {
                r = sd_bus_message_read(reply, "u", &uid);
                if (r >= 0)
                        r = publish_request_run(p, uid, &error);
        }
        if (r < 0) {
                if (!sd_bus_error_is_set(&error))
                        sd_bus_error_set_errno(&error, r);
                r = sd_bus_reply_method_error(p->message, &error);
                if (r < 0)
                        log_warning_errno(r, "Failed to send reply, ignoring: %m");
        }
        return 0;
}

int manager_dbus_publish(sd_bus_message *message, Manager *m, const char *sandbox_id,
                         sd_bus_error *error, int reply_path) {
        _cleanup_(publish_request_freep) PublishRequest *p = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        unsigned n_guest = 0;
        ManagerDBus *d;
        int r;

        if (!sandbox_id_is_valid(sandbox_id))
                return sd_bus_error_setf(
                        error, SD_BUS_ERROR_INVALID_ARGS,
                        "Invalid sandbox id '%s': expected 1 to %u characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                        sandbox_id, SANDBOX_ID_MAX);
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->reply_path = reply_path;
        p->sandbox_id = strdup(sandbox_id);
        if (!p->sandbox_id)
                return -ENOMEM;
        if (reply_path) {
                r = read_guest_addresses(message, sandbox_id, &p->guest4, &p->guest6, &n_guest,
                                         error);
                if (r < 0)
                        return r;
        }
        r = read_port_specs(message, sandbox_id, true, &p->specs, &p->n_specs, error);
        if (r < 0)
                return r;
        r = read_options(message, sandbox_id, &p->options, error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_specs; i++) {
                if (p->options.proxy_protocol != RELAY_PROXY_NONE && p->specs[i].proto == IPPROTO_UDP)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "Invalid ProxyProtocol for udp '%s' port %u of sandbox '%s': PROXY headers are for tcp only",
                                p->specs[i].host_address, p->specs[i].host_port, sandbox_id);
                if (p->options.has_idle_timeout && p->options.idle_timeout_usec == 0 &&
                    p->specs[i].proto == IPPROTO_UDP)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "Invalid IdleTimeoutUSec 0 for udp '%s' port %u of sandbox '%s': UDP sessions need a timeout",
                                p->specs[i].host_address, p->specs[i].host_port, sandbox_id);
        }
        p->message = sd_bus_message_ref(message);

        if (manager_find_sandbox(m, sandbox_id)) {
                r = publish_request_run(p, 0, error);
                return r < 0 ? r : 1;
        }

        /* A new sandbox records who made it: ask the bus, without blocking the loop. */
        d = m->userdata;
        if (d->n_pending >= PUBLISH_PENDING_MAX)
                return sd_bus_error_setf(
                        error, PORTPUB_ERROR_LIMIT_EXCEEDED,
                        "Cannot publish for sandbox '%s': %u publish requests are already waiting, try again",
                        sandbox_id, d->n_pending);
        r = sd_bus_call_method_async(sd_bus_message_get_bus(message), &slot, "org.freedesktop.DBus",
                                     "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                     "GetConnectionUnixUser", publish_owner_reply, p, "s",
                                     sd_bus_message_get_sender(message));
        if (r < 0)
                return r;
        /* The slot owns the request from here on, also when the bus goes away before the reply. */
        (void) sd_bus_slot_set_destroy_callback(slot, publish_request_destroy);
        p->dbus = d;
        d->n_pending++;
        TAKE_PTR(p);
        r = sd_bus_slot_set_floating(slot, 1);
        return r < 0 ? r : 1;
}

int manager_dbus_unpublish(sd_bus_message *message, Manager *m, Sandbox *s, sd_bus_error *error) {
        _cleanup_free_ PortSpec *specs = NULL;
        ManagerError e;
        size_t n;
        int r;

        r = read_port_specs(message, s->id, false, &specs, &n, error);
        if (r < 0)
                return r;
        r = manager_unpublish(m, s, specs, n, "request", &e);
        if (r != 0)
                return manager_dbus_map_result(r, &e, error);
        return sd_bus_reply_method_return(message, NULL);
}

int manager_dbus_set_guest_addresses(sd_bus_message *message, Manager *m, Sandbox *s,
                                     sd_bus_error *error) {
        SockaddrUnion g4, g6;
        ManagerError e;
        unsigned n;
        int r;

        r = read_guest_addresses(message, s->id, &g4, &g6, &n, error);
        if (r < 0)
                return r;
        r = manager_set_guest_addresses(m, s, &g4, &g6, &e);
        if (r != 0)
                return manager_dbus_map_result(r, &e, error);
        return sd_bus_reply_method_return(message, NULL);
}

/* Looks a sandbox up by a caller-given id: InvalidArgs for a malformed id, NoSuchSandbox else. */
static int lookup_sandbox(Manager *m, const char *id, Sandbox **ret, sd_bus_error *error) {
        /* The errors set here are what the caller gets; the return value only says "failed". */
        *ret = NULL;
        if (!sandbox_id_is_valid(id)) {
                (void) sd_bus_error_setf(
                        error, SD_BUS_ERROR_INVALID_ARGS,
                        "Invalid sandbox id '%s': expected 1 to %u characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                        id, SANDBOX_ID_MAX);
                return -EINVAL;
        }
        *ret = manager_find_sandbox(m, id);
        if (!*ret) {
                (void) sd_bus_error_setf(error, PORTPUB_ERROR_NO_SUCH_SANDBOX, "No sandbox '%s'", id);
                return -ENOENT;
        }
        return 0;
}

/* Reads the sandbox id that leads a Manager method's arguments and looks it up. */
static int read_sandbox(sd_bus_message *message, Manager *m, Sandbox **ret, sd_bus_error *error) {
        const char *id;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        return lookup_sandbox(m, id, ret, error);
}

static int method_publish_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *id;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        return manager_dbus_publish(message, userdata, id, error, 1);
}

static int method_unpublish_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Sandbox *s;
        int r;

        r = read_sandbox(message, userdata, &s, error);
        if (r < 0)
                return r;
        return manager_dbus_unpublish(message, userdata, s, error);
}

static int method_remove_sandbox(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Sandbox *s;
        int r;

        r = read_sandbox(message, userdata, &s, error);
        if (r < 0)
                return r;
        manager_remove_sandbox(userdata, s, "sandbox-removed");
        return sd_bus_reply_method_return(message, NULL);
}

static int method_set_guest_addresses(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Sandbox *s;
        int r;

        r = read_sandbox(message, userdata, &s, error);
        if (r < 0)
                return r;
        return manager_dbus_set_guest_addresses(message, userdata, s, error);
}

static int method_get_sandbox(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Sandbox *s;
        int r;

        r = read_sandbox(message, userdata, &s, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, "o", s->path);
}

static int method_get_port(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *proto, *addr;
        ManagerError e;
        PortSpec spec;
        uint16_t port;
        Port *p;
        int r;

        r = sd_bus_message_read(message, "ssq", &proto, &addr, &port);
        if (r < 0)
                return r;
        r = manager_parse_port_spec(proto, addr, port, 0, false, &spec, &e);
        if (r != 0)
                return manager_dbus_map_result(r, &e, error);
        p = manager_find_port(userdata, spec.proto, spec.host_address, spec.host_port);
        if (!p)
                return sd_bus_error_setf(error, PORTPUB_ERROR_NO_SUCH_PORT,
                                         "No published port %s '%s' port %u", proto, addr, port);
        return sd_bus_reply_method_return(message, "o", p->path);
}

static int method_list_sandboxes(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sou)");
        if (r < 0)
                return r;
        for (Sandbox *s = m->sandboxes; s; s = s->hh.next) {
                r = sd_bus_message_append(reply, "(sou)", s->id, s->path, s->n_ports);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssqsqso)");
        if (r < 0)
                return r;
        for (Port *p = m->ports; p; p = p->hh.next) {
                char guest[INET6_ADDRSTRLEN];

                r = sd_bus_message_append(reply, "(sssqsqso)", p->sandbox->id, p->protocol,
                                          p->host_address, p->host_port,
                                          port_guest_address(p, guest, sizeof guest), p->guest_port,
                                          port_state_to_string(p->state), p->path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int property_get_active_sessions(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", manager_active_sessions(userdata));
}

static int property_get_total_sessions(sd_bus *bus, const char *path, const char *interface,
                                       const char *property, sd_bus_message *reply, void *userdata,
                                       sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", manager_total_sessions(userdata));
}

/* Signals and change notifications */

static void on_sandbox_new(Manager *m, Sandbox *s) {
        ManagerDBus *d = m->userdata;

        (void) sd_bus_emit_object_added(d->bus, s->path);
        (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "SandboxNew", "so",
                                  s->id, s->path);
}

static void on_sandbox_removed(Manager *m, Sandbox *s) {
        ManagerDBus *d = m->userdata;

        (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "SandboxRemoved", "so",
                                  s->id, s->path);
        (void) sd_bus_emit_object_removed(d->bus, s->path);
}

static void on_sandbox_changed(Manager *m, Sandbox *s, const char *property) {
        ManagerDBus *d = m->userdata;

        (void) sd_bus_emit_properties_changed(d->bus, s->path, SANDBOX_INTERFACE, property, NULL);
}

static void on_port_published(Manager *m, Port *p) {
        ManagerDBus *d = m->userdata;

        (void) sd_bus_emit_object_added(d->bus, p->path);
        (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "PortPublished", "sssqo",
                                  p->sandbox->id, p->protocol, p->host_address, p->host_port,
                                  p->path);
}

static void on_port_unpublished(Manager *m, Port *p, const char *reason) {
        ManagerDBus *d = m->userdata;

        (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "PortUnpublished",
                                  "sssqos", p->sandbox->id, p->protocol, p->host_address,
                                  p->host_port, p->path, reason);
        (void) sd_bus_emit_object_removed(d->bus, p->path);
}

static void on_port_changed(Manager *m, Port *p, const char *property) {
        ManagerDBus *d = m->userdata;

        if (strcmp(property, "State") == 0)
                (void) sd_bus_emit_properties_changed(d->bus, p->path, PORT_INTERFACE, "State",
                                                      "LastError", NULL);
        else
                (void) sd_bus_emit_properties_changed(d->bus, p->path, PORT_INTERFACE, property,
                                                      NULL);
}

static void on_counts_changed(Manager *m) {
        ManagerDBus *d = m->userdata;

        (void) sd_bus_emit_properties_changed(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "NSandboxes",
                                              "NPorts", NULL);
}

#define SESSIONS_SIGNAL_INTERVAL 1.0

/* ActiveSessions changes with every connection: announce each object's value at most once a
 * second, and only when it differs from what was announced last. */
static void sessions_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        ManagerDBus *d = w->data;
        Manager *m = d->manager;
        uint64_t total;

        d->sessions_last = ev_now(loop);
        for (Port *p = m->ports; p; p = p->hh.next)
                if (p->active_announced != p->stats.active) {
                        p->active_announced = p->stats.active;
                        (void) sd_bus_emit_properties_changed(d->bus, p->path, PORT_INTERFACE,
                                                              "ActiveSessions", NULL);
                }
        for (Sandbox *s = m->sandboxes; s; s = s->hh.next) {
                uint64_t n = sandbox_active_sessions(s);

                if (s->active_announced != n) {
                        s->active_announced = n;
                        (void) sd_bus_emit_properties_changed(d->bus, s->path, SANDBOX_INTERFACE,
                                                              "ActiveSessions", NULL);
                }
        }
        total = manager_active_sessions(m);
        if (d->active_announced != total) {
                d->active_announced = total;
                (void) sd_bus_emit_properties_changed(d->bus, MANAGER_PATH, MANAGER_INTERFACE,
                                                      "ActiveSessions", NULL);
        }
}

static void on_port_sessions_changed(Manager *m, Port *p) {
        ManagerDBus *d = m->userdata;
        struct ev_loop *loop = m->loop;
        ev_tstamp after;

        if (ev_is_active(&d->sessions_timer))
                return;
        after = d->sessions_last + SESSIONS_SIGNAL_INTERVAL - ev_now(loop);
        ev_timer_set(&d->sessions_timer, after > 0 ? after : 0., 0.);
        ev_timer_start(loop, &d->sessions_timer);
}

static const ManagerEvents manager_dbus_events = {
        .sandbox_new = on_sandbox_new,
        .sandbox_removed = on_sandbox_removed,
        .sandbox_changed = on_sandbox_changed,
        .port_published = on_port_published,
        .port_unpublished = on_port_unpublished,
        .port_changed = on_port_changed,
        .port_sessions_changed = on_port_sessions_changed,
        .counts_changed = on_counts_changed,
};

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", NULL, offsetof(Manager, version),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NSandboxes", "u", NULL, offsetof(Manager, n_sandboxes),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("NPorts", "u", NULL, offsetof(Manager, n_ports),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActiveSessions", "t", property_get_active_sessions, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TotalSessions", "t", property_get_total_sessions, 0, 0),
        SD_BUS_PROPERTY("DefaultMaxSessions", "u", NULL, offsetof(Manager, default_max_sessions),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DefaultUDPIdleTimeoutUSec", "t", NULL,
                        offsetof(Manager, default_udp_idle_timeout_usec),
                        SD_BUS_VTABLE_PROPERTY_CONST),

        SD_BUS_METHOD_WITH_ARGS("PublishPorts",
                                SD_BUS_ARGS("s", sandbox, "as", guest_addresses, "a(ssqq)", ports,
                                            "a{sv}", options),
                                SD_BUS_RESULT("o", sandbox_path, "a(ssqqo)", published),
                                method_publish_ports, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UnpublishPorts", SD_BUS_ARGS("s", sandbox, "a(ssq)", ports),
                                SD_BUS_NO_RESULT, method_unpublish_ports, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveSandbox", SD_BUS_ARGS("s", sandbox), SD_BUS_NO_RESULT,
                                method_remove_sandbox, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetGuestAddresses", SD_BUS_ARGS("s", sandbox, "as", addresses),
                                SD_BUS_NO_RESULT, method_set_guest_addresses,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetSandbox", SD_BUS_ARGS("s", sandbox), SD_BUS_RESULT("o", path),
                                method_get_sandbox, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetPort",
                                SD_BUS_ARGS("s", protocol, "s", host_address, "q", host_port),
                                SD_BUS_RESULT("o", path), method_get_port, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListSandboxes", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sou)", sandboxes),
                                method_list_sandboxes, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListPorts", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssqsqso)", ports),
                                method_list_ports, SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_SIGNAL_WITH_ARGS("SandboxNew", SD_BUS_ARGS("s", sandbox, "o", path), 0),
        SD_BUS_SIGNAL_WITH_ARGS("SandboxRemoved", SD_BUS_ARGS("s", sandbox, "o", path), 0),
        SD_BUS_SIGNAL_WITH_ARGS("PortPublished",
                                SD_BUS_ARGS("s", sandbox, "s", protocol, "s", host_address, "q",
                                            host_port, "o", path),
                                0),
        SD_BUS_SIGNAL_WITH_ARGS("PortUnpublished",
                                SD_BUS_ARGS("s", sandbox, "s", protocol, "s", host_address, "q",
                                            host_port, "o", path, "s", reason),
                                0),
        SD_BUS_VTABLE_END,
};

int manager_dbus_new(ManagerDBus **ret, Manager *m, sd_bus *bus) {
        ManagerDBus *d;
        int r;

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->manager = m;
        d->bus = sd_bus_ref(bus);
        ev_timer_init(&d->sessions_timer, sessions_timer_cb, 0., 0.);
        d->sessions_timer.data = d;
        d->sessions_last = ev_now(m->loop) - SESSIONS_SIGNAL_INTERVAL;

        r = sd_bus_add_object_vtable(bus, &d->slots[0], MANAGER_PATH, MANAGER_INTERFACE,
                                     manager_vtable, m);
        if (r >= 0)
                r = sd_bus_add_object_manager(bus, &d->slots[1], MANAGER_PATH);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(bus, &d->slots[2], SANDBOX_PATH_PREFIX,
                                               SANDBOX_INTERFACE, sandbox_vtable,
                                               sandbox_object_find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(bus, &d->slots[3], SANDBOX_PATH_PREFIX,
                                               sandbox_node_enumerator, m);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(bus, &d->slots[4], PORT_PATH_PREFIX, PORT_INTERFACE,
                                               port_vtable, port_object_find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(bus, &d->slots[5], PORT_PATH_PREFIX,
                                               port_node_enumerator, m);
        if (r < 0) {
                manager_dbus_free(d);
                return r;
        }
        manager_set_events(m, &manager_dbus_events, d);
        *ret = d;
        return 0;
}

ManagerDBus *manager_dbus_free(ManagerDBus *d) {
        if (!d)
                return NULL;
        ev_timer_stop(d->manager->loop, &d->sessions_timer);
        if (d->manager->userdata == d)
                manager_set_events(d->manager, NULL, NULL);
        for (size_t i = 0; i < ELEMENTSOF(d->slots); i++)
                sd_bus_slot_unref(d->slots[i]);
        sd_bus_unref(d->bus);
        free(d);
        return NULL;
}
