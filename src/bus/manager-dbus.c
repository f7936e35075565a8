/* The D-Bus face of the core: Manager interface, object manager, signals
 *
 * Handlers parse every argument before anything else happens and hand the core plain data. A
 * mutating call needs to know who is calling, which dbus-daemon tells only on request: the face
 * asks (GetConnectionCredentials, asynchronously), turns the answer into a Caller, and gives the
 * core a request; the reply is sent when the core completes it. Reads are answered at once. The
 * core's events become signals and PropertiesChanged here, and object paths are made here from
 * the sandbox id and the port serial. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "errors.h"
#include "log.h"
#include "macro.h"
#include "manager-dbus.h"

/* Calls waiting for the bus's answer about their caller or for the core; callers can send them
 * faster than they are answered, so bound what they may hold. */
#define DBUS_CALLS_PENDING_MAX 256U
/* Peers whose credentials the face keeps while they are connected. */
#define DBUS_PEERS_MAX 4096U

typedef struct DBusCall DBusCall;
typedef struct DBusPeer DBusPeer;

struct ManagerDBus {
        Manager *manager;
        sd_bus *bus;
        sd_bus_slot *slots[7];
        ManagerSubscriber *subscriber;
        DBusCall *calls;
        unsigned n_calls;
        DBusPeer *peers; /* by unique name */
        unsigned n_peers;
};

/* A connection on the bus that made a mutating call: who it is (asked once), and the Caller
 * the core knows it by until it leaves the bus. */
struct DBusPeer {
        ManagerDBus *dbus;
        char *name;
        Caller *caller; /* NULL until the bus said who it is */
        bool adopted; /* caller restored from the state file, not confirmed by the bus yet */
        sd_bus_slot *creds_slot;
        UT_hash_handle hh;
};

struct DBusCall {
        ManagerDBus *dbus;
        DBusPeer *peer;
        sd_bus_message *message;
        ManagerRequestType type;
        ManagerRequestArgs args; /* until the request takes them */
        DBusReply reply;
        ManagerRequest *request; /* while the core has it */
        DBusCall *next, *prev;
};

Manager *manager_dbus_manager(ManagerDBus *d) {
        return d->manager;
}

ManagerDBus *manager_dbus_from_message(sd_bus_message *message) {
        /* The slot of the vtable being called carries the face as its userdata; the object
         * (sandbox or port) found by the fallback is passed to the method separately. */
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(message)));
}

int sandbox_dbus_path(const Sandbox *s, char **ret) {
        return sd_bus_path_encode(SANDBOX_PATH_PREFIX, s->id, ret);
}

const char *port_dbus_path(const Port *p, char buf[static PORT_PATH_MAX]) {
        (void) snprintf(buf, PORT_PATH_MAX, PORT_PATH_PREFIX "/%" PRIu64, p->serial);
        return buf;
}

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
        case MANAGER_E_ACCESS_DENIED:
                name = SD_BUS_ERROR_ACCESS_DENIED;
                break;
        case MANAGER_E_NOT_SUPPORTED:
                name = SD_BUS_ERROR_NOT_SUPPORTED;
                break;
        case MANAGER_E_FAILED:
                name = SD_BUS_ERROR_FAILED;
                break;
        default:
                return -EIO;
        }
        return sd_bus_error_set(error, name, e->message);
}

/* Parsing */

int manager_dbus_read_guest_addresses(sd_bus_message *message, const char *sandbox_id,
                                      ManagerRequestArgs *args, sd_bus_error *error) {
        ManagerError e;
        unsigned n = 0;
        const char *a;
        int r;

        args->guest4 = (SockaddrUnion){};
        args->guest6 = (SockaddrUnion){};
        r = sd_bus_message_enter_container(message, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(message, "s", &a)) > 0) {
                if (++n > 2)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "Invalid guest addresses for sandbox '%s': at most one IPv4 and one IPv6 address, got '" QUOTE_FMT
                                "' too",
                                sandbox_id, QUOTE(a));
                r = manager_parse_guest_address(a, &args->guest4, &args->guest6, &e);
                if (r != 0)
                        return manager_dbus_map_result(r, &e, error);
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}

int manager_dbus_read_port_specs(sd_bus_message *message, const char *sandbox_id,
                                 bool with_guest_port, ManagerRequestArgs *args, sd_bus_error *error) {
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
                /* Stop reading here rather than hold a million specs in memory. */
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
                if (r != 0)
                        /* Name the sandbox too: the caller may be scripting several. */
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "%s (sandbox '%s')", e.message, sandbox_id);
                n++;
        }
        r = sd_bus_message_exit_container(message);
        if (r < 0)
                return r;
        free(args->specs);
        args->specs = TAKE_PTR(specs);
        args->n_specs = n;
        return 0;
}

static int read_option(sd_bus_message *message, const char *sandbox_id, const char *key,
                       PortOptions *o, sd_bus_error *error) {
        const char *contents, *want, *s;
        char type;
        int b, r;

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
                                         "Unknown option '" QUOTE_FMT "' for sandbox '%s'",
                                         QUOTE(key), sandbox_id);
        r = sd_bus_message_peek_type(message, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || strcmp(contents, want) != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option '%s' for sandbox '%s' has type '%s', expected '%s'",
                                         key, sandbox_id, contents, want);
        r = sd_bus_message_enter_container(message, 'v', want);
        if (r < 0)
                return r;
        switch (want[0]) {
        case 'b':
                r = sd_bus_message_read(message, "b", &b);
                o->bind_to_caller = b;
                break;
        case 't':
                r = sd_bus_message_read(message, "t", &o->idle_timeout_usec);
                o->has_idle_timeout = true;
                break;
        case 'u':
                r = sd_bus_message_read(message, "u", &o->max_sessions);
                o->has_max_sessions = true;
                break;
        default:
                r = sd_bus_message_read(message, "s", &s);
                if (r >= 0 && manager_parse_proxy_protocol(s, &o->proxy_protocol) < 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid ProxyProtocol '" QUOTE_FMT
                                                 "' for sandbox '%s': expected \"\", \"v1\" or \"v2\"",
                                                 QUOTE(s), sandbox_id);
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}

int manager_dbus_read_options(sd_bus_message *message, const char *sandbox_id,
                              ManagerRequestArgs *args, sd_bus_error *error) {
        int r;

        args->options = (PortOptions){};
        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
                const char *key;

                r = sd_bus_message_read(message, "s", &key);
                if (r < 0)
                        return r;
                r = read_option(message, sandbox_id, key, &args->options, error);
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

/* Calls that change something */

static void args_clear(ManagerRequestArgs *a) {
        a->sandbox_id = mfree(a->sandbox_id);
        a->specs = mfree(a->specs);
        a->n_specs = 0;
}

static DBusCall *dbus_call_free(DBusCall *c) {
        if (!c)
                return NULL;
        if (c->dbus) {
                if (c->prev)
                        c->prev->next = c->next;
                else
                        c->dbus->calls = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                c->dbus->n_calls--;
        }
        manager_request_cancel(c->request);
        sd_bus_message_unref(c->message);
        args_clear(&c->args);
        free(c);
        return NULL;
}

static void dbus_call_reply_error(DBusCall *c, int r, sd_bus_error *error) {
        if (!sd_bus_error_is_set(error))
                (void) sd_bus_error_set_errno(error, r);
        r = sd_bus_reply_method_error(c->message, error);
        if (r < 0)
                log_warning_errno(r, "Failed to send a reply, ignoring: %m");
}

static int reply_published(DBusCall *c, const ManagerResult *res) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *sandbox_path = NULL;
        int r;

        r = sd_bus_message_new_method_return(c->message, &reply);
        if (r < 0)
                return r;
        if (c->reply == DBUS_REPLY_SANDBOX_AND_PUBLISHED) {
                r = sandbox_dbus_path(res->sandbox, &sandbox_path);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "o", sandbox_path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_open_container(reply, 'a', "(ssqqo)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < res->n_ports; i++) {
                const Port *p = res->ports[i];
                char path[PORT_PATH_MAX];

                r = sd_bus_message_append(reply, "(ssqqo)", p->protocol, p->host_address,
                                          p->host_port, p->guest_port, port_dbus_path(p, path));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static void dbus_call_done(ManagerRequest *req, const ManagerResult *res, void *userdata) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        DBusCall *c = userdata;
        int r;

        c->request = NULL;
        r = manager_dbus_map_result(res->r, &res->error, &error);
        if (r == 0 && res->r == MANAGER_OK)
                r = c->reply == DBUS_REPLY_EMPTY ? sd_bus_reply_method_return(c->message, NULL)
                                                 : reply_published(c, res);
        if (r < 0 || sd_bus_error_is_set(&error))
                dbus_call_reply_error(c, r, &error);
        dbus_call_free(c);
}

/* Hands the call to the core; it may complete (and free c) before this returns. */
static void dbus_call_start(DBusCall *c) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        ManagerRequest *req;
        int r;

        r = manager_request_new(&req, c->dbus->manager, c->type, c->peer->caller, dbus_call_done, c);
        if (r < 0) {
                dbus_call_reply_error(c, r, &error);
                dbus_call_free(c);
                return;
        }
        *manager_request_args(req) = c->args;
        c->args = (ManagerRequestArgs){};
        c->request = req;
        manager_request_start(req);
}

/* Calls of peer that still wait for the bus to say who it is, oldest first. */
static void peer_start_calls(DBusPeer *peer, int r, sd_bus_error *error) {
        ManagerDBus *d = peer->dbus;
        DBusCall *c, *prev, *last = NULL;

        for (c = d->calls; c; c = c->next)
                last = c;
        for (c = last; c; c = prev) {
                prev = c->prev;
                if (c->peer != peer || c->request)
                        continue;
                if (r < 0) {
                        dbus_call_reply_error(c, r, error);
                        dbus_call_free(c);
                } else
                        dbus_call_start(c);
        }
}

static DBusPeer *peer_free(DBusPeer *peer) {
        ManagerDBus *d;
        DBusCall *c, *next;

        if (!peer)
                return NULL;
        d = peer->dbus;
        HASH_DEL(d->peers, peer);
        d->n_peers--;
        /* No one is left to hear the replies. */
        for (c = d->calls; c; c = next) {
                next = c->next;
                if (c->peer == peer)
                        dbus_call_free(c);
        }
        sd_bus_slot_unref(peer->creds_slot);
        caller_unref(peer->caller);
        free(peer->name);
        free(peer);
        return NULL;
}

/* The peer left the bus: the core drops its pending requests and its caller-bound ports. */
static void peer_gone(DBusPeer *peer) {
        Caller *caller = caller_ref(peer->caller);
        ManagerDBus *d = peer->dbus;

        peer_free(peer);
        if (caller) {
                manager_caller_gone(d->manager, caller);
                caller_unref(caller);
        }
}

static int peer_creds_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        DBusPeer *peer = userdata;
        uint32_t uid = UINT32_MAX, pid = 0;
        int r;

        peer->creds_slot = sd_bus_slot_unref(peer->creds_slot);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                /* Most likely it left the bus right after calling. */
                r = sd_bus_error_setf(&error, SD_BUS_ERROR_ACCESS_DENIED,
                                      "Cannot tell who is calling, so nothing is changed: %s",
                                      sd_bus_message_get_error(reply)->message);
                goto fail;
        }
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;

                r = sd_bus_message_read(reply, "s", &key);
                if (r >= 0 && strcmp(key, "UnixUserID") == 0)
                        r = sd_bus_message_read(reply, "v", "u", &uid);
                else if (r >= 0 && strcmp(key, "ProcessID") == 0)
                        r = sd_bus_message_read(reply, "v", "u", &pid);
                else if (r >= 0)
                        r = sd_bus_message_skip(reply, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0) {
                /* A bus that answers with the wrong types: still a named error for the caller. */
                if (r != -ENOMEM)
                        r = sd_bus_error_setf(
                                &error, SD_BUS_ERROR_ACCESS_DENIED,
                                "Cannot tell who is calling: the bus's answer about it is malformed (%s), so nothing is changed",
                                strerror(-r));
                goto fail;
        }
        if (uid == UINT32_MAX) {
                r = sd_bus_error_set(
                        &error, SD_BUS_ERROR_ACCESS_DENIED,
                        "Cannot tell who is calling: the bus did not say its uid, so nothing is changed");
                goto fail;
        }
        if (peer->caller) {
                /* Adopted from the state file: now the bus has said who it is. */
                peer->caller->uid = (uid_t) uid;
                peer->caller->pid = (pid_t) pid;
                peer->adopted = false;
        } else {
                r = caller_new(&peer->caller, (uid_t) uid, (pid_t) pid, peer->name);
                if (r >= 0)
                        r = caller_set_bus_name(peer->caller, peer->name);
                if (r < 0)
                        goto fail;
        }
        peer_start_calls(peer, 0, NULL);
        return 0;

fail:
        peer_start_calls(peer, r, &error);
        if (peer->adopted) {
                /* The caller of restored caller-bound ports is not on the bus any more. */
                log_info("%s, which published caller-bound ports, is gone.", peer->name);
                peer_gone(peer);
        } else
                peer_free(peer);
        return 0;
}

static int peer_get(ManagerDBus *d, const char *name, DBusPeer **ret, sd_bus_error *error) {
        DBusPeer *peer;
        int r;

        HASH_FIND_STR(d->peers, name, peer);
        if (peer) {
                *ret = peer;
                return 0;
        }
        if (d->n_peers >= DBUS_PEERS_MAX)
                return sd_bus_error_setf(
                        error, PORTPUB_ERROR_LIMIT_EXCEEDED,
                        "Cannot take calls from %s now: %u connections are known, the limit", name,
                        d->n_peers);
        peer = calloc(1, sizeof *peer);
        if (!peer)
                return -ENOMEM;
        peer->dbus = d;
        peer->name = strdup(name);
        if (!peer->name) {
                free(peer);
                return -ENOMEM;
        }
        HASH_ADD_KEYPTR(hh, d->peers, peer->name, strlen(peer->name), peer);
        d->n_peers++;
        /* Sent after the NameOwnerChanged match (installed at start): a peer that leaves before
         * this is answered fails it, one that leaves after is announced. */
        r = sd_bus_call_method_async(d->bus, &peer->creds_slot, "org.freedesktop.DBus",
                                     "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                     "GetConnectionCredentials", peer_creds_reply, peer, "s", name);
        if (r < 0) {
                peer_free(peer);
                return r;
        }
        *ret = peer;
        return 0;
}

static void adopt_caller(Caller *c, void *userdata) {
        ManagerDBus *d = userdata;
        DBusPeer *peer = NULL;
        int r;

        if (!c->bus_name)
                return;
        r = peer_get(d, c->bus_name, &peer, NULL);
        if (r < 0 || !peer) {
                log_warning_errno(r, "Failed to look for %s, ignoring: %m", c->bus_name);
                return;
        }
        if (!peer->caller) {
                peer->caller = caller_ref(c);
                peer->adopted = true;
        }
}

void manager_dbus_adopt_callers(ManagerDBus *d) {
        manager_foreach_bound_caller(d->manager, adopt_caller, d);
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        ManagerDBus *d = userdata;
        const char *name, *old_owner, *new_owner;
        DBusPeer *peer;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || name[0] != ':' ||
            new_owner[0] != 0)
                return 0;
        HASH_FIND_STR(d->peers, name, peer);
        if (peer)
                peer_gone(peer);
        return 0;
}

int manager_dbus_submit(ManagerDBus *d, sd_bus_message *message, ManagerRequestType type,
                        ManagerRequestArgs *args, DBusReply reply, sd_bus_error *error) {
        DBusPeer *peer = NULL;
        DBusCall *c;
        int r;

        if (d->n_calls >= DBUS_CALLS_PENDING_MAX) {
                r = sd_bus_error_setf(
                        error, PORTPUB_ERROR_LIMIT_EXCEEDED,
                        "Cannot change sandbox '%s' now: %u calls are already waiting, try again",
                        args->sandbox_id ? args->sandbox_id : "", d->n_calls);
                args_clear(args);
                return r;
        }
        r = peer_get(d, sd_bus_message_get_sender(message), &peer, error);
        if (r < 0) {
                args_clear(args);
                return r;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
                args_clear(args);
                return -ENOMEM;
        }
        c->type = type;
        c->reply = reply;
        c->args = *args;
        *args = (ManagerRequestArgs){};
        c->args.interactive = sd_bus_message_get_allow_interactive_authorization(message) > 0;
        c->message = sd_bus_message_ref(message);
        c->dbus = d;
        c->peer = peer;
        c->next = d->calls;
        if (d->calls)
                d->calls->prev = c;
        d->calls = c;
        d->n_calls++;
        if (peer->caller)
                dbus_call_start(c);
        return 1;
}

/* Manager methods */

/* InvalidArgs for a malformed sandbox id. */
static int check_sandbox_id(const char *id, sd_bus_error *error) {
        if (sandbox_id_is_valid(id))
                return 0;
        return sd_bus_error_setf(
                error, SD_BUS_ERROR_INVALID_ARGS,
                "Invalid sandbox id '" QUOTE_FMT
                "': expected 1 to %u characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                QUOTE(id), SANDBOX_ID_MAX);
}

static int read_sandbox_id(sd_bus_message *message, ManagerRequestArgs *args, sd_bus_error *error) {
        const char *id;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        /* Checked before anything else is read: the messages about the other arguments quote
         * it. */
        r = check_sandbox_id(id, error);
        if (r < 0)
                return r;
        args->sandbox_id = strdup(id);
        return args->sandbox_id ? 0 : -ENOMEM;
}

int manager_dbus_mutate(sd_bus_message *message, ManagerDBus *d, const char *sandbox_id,
                        const DBusMutation *how, sd_bus_error *error) {
        ManagerRequestArgs args = {};
        int r;

        if (sandbox_id) {
                args.sandbox_id = strdup(sandbox_id);
                r = args.sandbox_id ? 0 : -ENOMEM;
        } else
                r = read_sandbox_id(message, &args, error);
        if (r >= 0 && how->guest_addresses)
                r = manager_dbus_read_guest_addresses(message, args.sandbox_id, &args, error);
        if (r >= 0 && how->specs)
                r = manager_dbus_read_port_specs(message, args.sandbox_id, how->specs_guest_port,
                                                 &args, error);
        if (r >= 0 && how->options)
                r = manager_dbus_read_options(message, args.sandbox_id, &args, error);
        if (r < 0) {
                args_clear(&args);
                return r;
        }
        return manager_dbus_submit(d, message, how->type, &args, how->reply, error);
}

static int method_publish_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_PUBLISH,
                                          .guest_addresses = true,
                                          .specs = true,
                                          .specs_guest_port = true,
                                          .options = true,
                                          .reply = DBUS_REPLY_SANDBOX_AND_PUBLISHED };

        return manager_dbus_mutate(message, userdata, NULL, &how, error);
}

static int method_unpublish_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_UNPUBLISH, .specs = true };

        return manager_dbus_mutate(message, userdata, NULL, &how, error);
}

static int method_remove_sandbox(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_REMOVE_SANDBOX };

        return manager_dbus_mutate(message, userdata, NULL, &how, error);
}

static int method_set_guest_addresses(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_SET_GUEST_ADDRESSES,
                                          .guest_addresses = true };

        return manager_dbus_mutate(message, userdata, NULL, &how, error);
}

/* Looks a sandbox up by a caller-given id: InvalidArgs for a malformed id, NoSuchSandbox else. */
static int lookup_sandbox(Manager *m, const char *id, Sandbox **ret, sd_bus_error *error) {
        int r;

        *ret = NULL;
        r = check_sandbox_id(id, error);
        if (r < 0)
                return r;
        *ret = manager_find_sandbox(m, id);
        if (!*ret)
                return sd_bus_error_setf(error, PORTPUB_ERROR_NO_SUCH_SANDBOX, "No sandbox '%s'", id);
        return 0;
}

static int method_get_sandbox(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        ManagerDBus *d = userdata;
        _cleanup_free_ char *path = NULL;
        const char *id;
        Sandbox *s;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        r = lookup_sandbox(d->manager, id, &s, error);
        if (r < 0)
                return r;
        r = sandbox_dbus_path(s, &path);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, "o", path);
}

static int method_get_port(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        ManagerDBus *d = userdata;
        const char *proto, *addr;
        char path[PORT_PATH_MAX];
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
        p = manager_find_port(d->manager, spec.proto, spec.host_address, spec.host_port);
        if (!p)
                return sd_bus_error_setf(error, PORTPUB_ERROR_NO_SUCH_PORT,
                                         "No published port %s '%s' port %u", proto, addr, port);
        return sd_bus_reply_method_return(message, "o", port_dbus_path(p, path));
}

static int method_list_sandboxes(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        ManagerDBus *d = userdata;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sou)");
        if (r < 0)
                return r;
        MANAGER_FOREACH_SANDBOX(s, d->manager) {
                _cleanup_free_ char *path = NULL;

                r = sandbox_dbus_path(s, &path);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "(sou)", s->id, path, s->n_ports);
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
        ManagerDBus *d = userdata;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssqsqso)");
        if (r < 0)
                return r;
        MANAGER_FOREACH_PORT(p, d->manager) {
                char guest[INET6_ADDRSTRLEN], path[PORT_PATH_MAX];

                r = sd_bus_message_append(reply, "(sssqsqso)", p->sandbox->id, p->protocol,
                                          p->host_address, p->host_port,
                                          port_guest_address(p, guest, sizeof guest), p->guest_port,
                                          port_state(p), port_dbus_path(p, path));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int property_get_manager(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error) {
        Manager *m = ((ManagerDBus *) userdata)->manager;

        if (strcmp(property, "Version") == 0)
                return sd_bus_message_append(reply, "s", manager_version(m));
        if (strcmp(property, "NSandboxes") == 0)
                return sd_bus_message_append(reply, "u", manager_n_sandboxes(m));
        if (strcmp(property, "NPorts") == 0)
                return sd_bus_message_append(reply, "u", manager_n_ports(m));
        if (strcmp(property, "ActiveSessions") == 0)
                return sd_bus_message_append(reply, "t", manager_active_sessions(m));
        if (strcmp(property, "TotalSessions") == 0)
                return sd_bus_message_append(reply, "t", manager_total_sessions(m));
        if (strcmp(property, "DefaultMaxSessions") == 0)
                return sd_bus_message_append(reply, "u", manager_default_max_sessions(m));
        return sd_bus_message_append(reply, "t", manager_default_udp_idle_timeout_usec(m));
}

/* Signals and change notifications: one subscriber of the core's events. */

static void emit_changed(ManagerDBus *d, const char *path, const char *interface, char **properties) {
        if (properties[0])
                (void) sd_bus_emit_properties_changed_strv(d->bus, path, interface, properties);
}

static void on_sandbox_event(ManagerDBus *d, const ManagerEvent *ev) {
        _cleanup_free_ char *path = NULL;
        char *props[5];
        size_t n = 0;

        if (sandbox_dbus_path(ev->sandbox, &path) < 0) {
                log_oom();
                return;
        }
        switch (ev->type) {
        case MANAGER_EVENT_SANDBOX_NEW:
                (void) sd_bus_emit_object_added(d->bus, path);
                (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "SandboxNew",
                                          "so", ev->sandbox->id, path);
                break;
        case MANAGER_EVENT_SANDBOX_REMOVED:
                (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "SandboxRemoved",
                                          "so", ev->sandbox->id, path);
                (void) sd_bus_emit_object_removed(d->bus, path);
                break;
        default:
                if (ev->changed & SANDBOX_CHANGED_GUEST_ADDRESSES)
                        props[n++] = (char *) "GuestAddresses";
                if (ev->changed & SANDBOX_CHANGED_PORTS)
                        props[n++] = (char *) "Ports";
                if (ev->changed & SANDBOX_CHANGED_MACHINE)
                        props[n++] = (char *) "Machine";
                if (ev->changed & SANDBOX_CHANGED_ACTIVE_SESSIONS)
                        props[n++] = (char *) "ActiveSessions";
                props[n] = NULL;
                emit_changed(d, path, SANDBOX_INTERFACE, props);
        }
}

static void on_port_event(ManagerDBus *d, const ManagerEvent *ev) {
        const Port *p = ev->port;
        char path[PORT_PATH_MAX];
        char *props[5];
        size_t n = 0;

        port_dbus_path(p, path);
        switch (ev->type) {
        case MANAGER_EVENT_PORT_PUBLISHED:
                (void) sd_bus_emit_object_added(d->bus, path);
                (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "PortPublished",
                                          "sssqo", p->sandbox->id, p->protocol, p->host_address,
                                          p->host_port, path);
                break;
        case MANAGER_EVENT_PORT_UNPUBLISHED:
                (void) sd_bus_emit_signal(d->bus, MANAGER_PATH, MANAGER_INTERFACE, "PortUnpublished",
                                          "sssqos", p->sandbox->id, p->protocol, p->host_address,
                                          p->host_port, path, port_reason_to_string(ev->reason));
                (void) sd_bus_emit_object_removed(d->bus, path);
                break;
        default:
                if (ev->changed & PORT_CHANGED_STATE) {
                        props[n++] = (char *) "State";
                        props[n++] = (char *) "LastError";
                }
                if (ev->changed & PORT_CHANGED_GUEST_ADDRESS)
                        props[n++] = (char *) "GuestAddress";
                if (ev->changed & PORT_CHANGED_ACTIVE_SESSIONS)
                        props[n++] = (char *) "ActiveSessions";
                props[n] = NULL;
                emit_changed(d, path, PORT_INTERFACE, props);
        }
}

static void on_event(Manager *m, const ManagerEvent *ev, void *userdata) {
        ManagerDBus *d = userdata;
        char *props[4];
        size_t n = 0;

        switch (ev->type) {
        case MANAGER_EVENT_SANDBOX_NEW:
        case MANAGER_EVENT_SANDBOX_REMOVED:
        case MANAGER_EVENT_SANDBOX_CHANGED:
                on_sandbox_event(d, ev);
                break;
        case MANAGER_EVENT_PORT_PUBLISHED:
        case MANAGER_EVENT_PORT_UNPUBLISHED:
        case MANAGER_EVENT_PORT_CHANGED:
                on_port_event(d, ev);
                break;
        case MANAGER_EVENT_MANAGER_CHANGED:
                if (ev->changed & MANAGER_CHANGED_COUNTS) {
                        props[n++] = (char *) "NSandboxes";
                        props[n++] = (char *) "NPorts";
                }
                if (ev->changed & MANAGER_CHANGED_ACTIVE_SESSIONS)
                        props[n++] = (char *) "ActiveSessions";
                props[n] = NULL;
                emit_changed(d, MANAGER_PATH, MANAGER_INTERFACE, props);
                break;
        }
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NSandboxes", "u", property_get_manager, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("NPorts", "u", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActiveSessions", "t", property_get_manager, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TotalSessions", "t", property_get_manager, 0, 0),
        SD_BUS_PROPERTY("DefaultMaxSessions", "u", property_get_manager, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DefaultUDPIdleTimeoutUSec", "t", property_get_manager, 0,
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

        r = sd_bus_add_object_vtable(bus, &d->slots[0], MANAGER_PATH, MANAGER_INTERFACE,
                                     manager_vtable, d);
        if (r >= 0)
                r = sd_bus_add_object_manager(bus, &d->slots[1], MANAGER_PATH);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(bus, &d->slots[2], SANDBOX_PATH_PREFIX,
                                               SANDBOX_INTERFACE, sandbox_vtable,
                                               sandbox_object_find, d);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(bus, &d->slots[3], SANDBOX_PATH_PREFIX,
                                               sandbox_node_enumerator, d);
        if (r >= 0)
                r = sd_bus_add_fallback_vtable(bus, &d->slots[4], PORT_PATH_PREFIX, PORT_INTERFACE,
                                               port_vtable, port_object_find, d);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(bus, &d->slots[5], PORT_PATH_PREFIX,
                                               port_node_enumerator, d);
        /* Every connection that leaves the bus (its unique name loses its owner): one match for
         * all, as a bus limits the matches of a connection. */
        if (r >= 0)
                r = sd_bus_add_match_async(bus, &d->slots[6],
                                           "type='signal',sender='org.freedesktop.DBus',"
                                           "path='/org/freedesktop/DBus',"
                                           "interface='org.freedesktop.DBus',"
                                           "member='NameOwnerChanged',arg2=''",
                                           on_name_owner_changed, NULL, d);
        if (r >= 0)
                r = manager_subscribe(m, on_event, d, &d->subscriber);
        if (r < 0) {
                manager_dbus_free(d);
                return r;
        }
        *ret = d;
        return 0;
}

ManagerDBus *manager_dbus_free(ManagerDBus *d) {
        if (!d)
                return NULL;
        while (d->peers)
                peer_free(d->peers);
        while (d->calls)
                dbus_call_free(d->calls);
        d->subscriber = manager_unsubscribe(d->subscriber);
        for (size_t i = 0; i < ELEMENTSOF(d->slots); i++)
                sd_bus_slot_unref(d->slots[i]);
        sd_bus_unref(d->bus);
        free(d);
        return NULL;
}
