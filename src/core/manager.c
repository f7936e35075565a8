/* The manager: sandboxes, published ports, limits, events
 *
 * Publishing is all or nothing: every socket of every requested port is bound (and, for TCP,
 * listening) and every relay is built before anything becomes visible; the first failure closes
 * what the call bound and returns a result naming the port. Only then are the ports linked into
 * the tables and the events sent, so a failed call changes nothing and announces nothing.
 * Requests reach the functions here (manager_execute_*) from request.c, validated and
 * authorized. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "macro.h"
#include "manager-internal.h"
#include "time-util.h"

/* ActiveSessions changes with every connection: announce at most this often. */
#define SESSIONS_ANNOUNCE_INTERVAL 1.0

static void fail_message(ManagerError *e, const char *format, va_list ap) _printf_(2, 0);

static void fail_message(ManagerError *e, const char *format, va_list ap) {
        *e = (ManagerError){};
        (void) vsnprintf(e->message, sizeof e->message, format, ap);
}

int manager_fail(ManagerError *e, int code, const char *format, ...) {
        va_list ap;

        if (e) {
                va_start(ap, format);
                fail_message(e, format, ap);
                va_end(ap);
        }
        return code;
}

int manager_fail_port(ManagerError *e, int code, const PortSpec *port, const char *held_by,
                      const char *format, ...) {
        va_list ap;

        if (e) {
                va_start(ap, format);
                fail_message(e, format, ap);
                va_end(ap);
                e->has_port = true;
                e->port = *port;
                (void) snprintf(e->held_by, sizeof e->held_by, "%s", held_by ? held_by : "");
        }
        return code;
}

int manager_fail_parameter(ManagerError *e, int code, const char *parameter, const char *format, ...) {
        va_list ap;

        if (e) {
                va_start(ap, format);
                fail_message(e, format, ap);
                va_end(ap);
                (void) snprintf(e->parameter, sizeof e->parameter, "%s", parameter);
        }
        return code;
}

const char *manager_result_to_string(int r) {
        switch (r) {
        case MANAGER_OK:
                return "ok";
        case MANAGER_E_INVALID:
                return "invalid argument";
        case MANAGER_E_NO_SUCH_SANDBOX:
                return "no such sandbox";
        case MANAGER_E_NO_SUCH_PORT:
                return "no such port";
        case MANAGER_E_PORT_IN_USE:
                return "port in use";
        case MANAGER_E_ADDRESS_NOT_AVAILABLE:
                return "address not available";
        case MANAGER_E_PERMISSION_DENIED:
                return "permission denied";
        case MANAGER_E_NO_GUEST_ADDRESS:
                return "no guest address";
        case MANAGER_E_LIMIT_EXCEEDED:
                return "limit exceeded";
        case MANAGER_E_ACCESS_DENIED:
                return "access denied";
        case MANAGER_E_NOT_SUPPORTED:
                return "not supported";
        default:
                return "failure";
        }
}

const char *port_reason_to_string(PortReason reason) {
        switch (reason) {
        case PORT_REASON_REQUEST:
                return "request";
        case PORT_REASON_SANDBOX_REMOVED:
                return "sandbox-removed";
        case PORT_REASON_MACHINE_REMOVED:
                return "machine-removed";
        case PORT_REASON_CALLER_VANISHED:
                return "caller-vanished";
        case PORT_REASON_SHUTDOWN:
                return "shutdown";
        }
        return "unknown";
}

const char *port_state(const Port *p) {
        if (p->failed)
                return "failed";
        return p->state == RELAY_PAUSED ? "paused" : "listening";
}

const char *port_proto_to_string(int proto) {
        return proto == IPPROTO_UDP ? "udp" : "tcp";
}

bool sandbox_id_is_valid(const char *id) {
        size_t n = 0;

        if (!id || !*id || id[0] == '.' || id[0] == '-')
                return false;
        for (const char *c = id; *c; c++, n++) {
                if (n >= SANDBOX_ID_MAX)
                        return false;
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                      (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-'))
                        return false;
        }
        return true;
}

int manager_parse_guest_address(const char *s, SockaddrUnion *guest4, SockaddrUnion *guest6,
                                ManagerError *e) {
        SockaddrUnion a;

        if (sockaddr_parse_ip(s, &a) < 0)
                return manager_fail(e, MANAGER_E_INVALID,
                                    "Invalid guest address '" QUOTE_FMT
                                    "': expected a literal IPv4 or IPv6 address",
                                    QUOTE(s));
        if (sockaddr_is_wildcard(&a) ||
            (a.sa.sa_family == AF_INET && (IN_MULTICAST(ntohl(a.in.sin_addr.s_addr)) ||
                                           a.in.sin_addr.s_addr == htonl(INADDR_BROADCAST))) ||
            (a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_MULTICAST(&a.in6.sin6_addr)))
                return manager_fail(e, MANAGER_E_INVALID,
                                    "Invalid guest address '%s': not a unicast address", s);
        if (a.sa.sa_family == AF_INET) {
                if (guest4->sa.sa_family != AF_UNSPEC)
                        return manager_fail(e, MANAGER_E_INVALID,
                                            "Invalid guest address '%s': at most one IPv4 address",
                                            s);
                *guest4 = a;
        } else {
                if (guest6->sa.sa_family != AF_UNSPEC)
                        return manager_fail(e, MANAGER_E_INVALID,
                                            "Invalid guest address '%s': at most one IPv6 address",
                                            s);
                *guest6 = a;
        }
        return 0;
}

int manager_parse_port_spec(const char *protocol, const char *host_address, uint16_t host_port,
                            uint16_t guest_port, bool need_guest_port, PortSpec *spec,
                            ManagerError *e) {
        SockaddrUnion a;

        *spec = (PortSpec){};
        if (strcmp(protocol, "tcp") == 0)
                spec->proto = IPPROTO_TCP;
        else if (strcmp(protocol, "udp") == 0)
                spec->proto = IPPROTO_UDP;
        else
                return manager_fail(e, MANAGER_E_INVALID,
                                    "Invalid protocol '" QUOTE_FMT "': expected 'tcp' or 'udp'",
                                    QUOTE(protocol));

        if (strcmp(host_address, "") == 0 || strcmp(host_address, "*") == 0)
                snprintf(spec->host_address, sizeof spec->host_address, "%s", host_address);
        else if (sockaddr_parse_ip(host_address, &a) < 0)
                return manager_fail(e, MANAGER_E_INVALID,
                                    "Invalid host address '" QUOTE_FMT
                                    "': expected \"\", \"*\" or a literal IPv4 or IPv6 address",
                                    QUOTE(host_address));
        else if ((a.sa.sa_family == AF_INET && IN_MULTICAST(ntohl(a.in.sin_addr.s_addr))) ||
                 (a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_MULTICAST(&a.in6.sin6_addr)))
                return manager_fail(e, MANAGER_E_INVALID, "Invalid host address '%s': multicast",
                                    host_address);
        else
                sockaddr_format_ip(&a, spec->host_address, sizeof spec->host_address);

        if (need_guest_port && guest_port == 0)
                return manager_fail(e, MANAGER_E_INVALID,
                                    "Invalid guest port 0 for %s '%s' port %u: expected 1 to 65535",
                                    protocol, host_address, host_port);
        spec->host_port = host_port;
        spec->guest_port = guest_port;
        return 0;
}

int manager_parse_proxy_protocol(const char *s, RelayProxyProtocol *ret) {
        if (strcmp(s, "") == 0)
                *ret = RELAY_PROXY_NONE;
        else if (strcmp(s, "v1") == 0)
                *ret = RELAY_PROXY_V1;
        else if (strcmp(s, "v2") == 0)
                *ret = RELAY_PROXY_V2;
        else
                return -EINVAL;
        return 0;
}

static void port_make_key(char *buf, size_t size, int proto, const char *addr, uint16_t port) {
        snprintf(buf, size, "%c|%s|%u", proto == IPPROTO_UDP ? 'u' : 't', addr, port);
}

Sandbox *manager_find_sandbox(Manager *m, const char *id) {
        Sandbox *s = NULL;

        HASH_FIND_STR(m->sandboxes, id, s);
        return s;
}

Port *manager_find_port(Manager *m, int proto, const char *host_address, uint16_t host_port) {
        char key[48];
        Port *p = NULL;

        port_make_key(key, sizeof key, proto, host_address, host_port);
        HASH_FIND_STR(m->ports, key, p);
        return p;
}

Port *manager_find_port_by_serial(Manager *m, uint64_t serial) {
        Port *p = NULL;

        HASH_FIND(hh_serial, m->ports_by_serial, &serial, sizeof serial, p);
        return p;
}

uint32_t manager_n_sandboxes(const Manager *m) {
        return m->n_sandboxes;
}

uint32_t manager_n_ports(const Manager *m) {
        return m->n_ports;
}

Sandbox *manager_first_sandbox(Manager *m) {
        return m->sandboxes;
}

Sandbox *sandbox_next(Sandbox *s) {
        return s->hh.next;
}

Port *manager_first_port(Manager *m) {
        return m->ports;
}

Port *port_next(Port *p) {
        return p->hh.next;
}

Port *sandbox_first_port(Sandbox *s) {
        return s->ports;
}

Port *port_next_in_sandbox(Port *p) {
        return p->sandbox_next;
}

const char *manager_version(const Manager *m) {
        return PACKAGE_VERSION;
}

uint32_t manager_default_max_sessions(const Manager *m) {
        return m->default_max_sessions;
}

uint64_t manager_default_udp_idle_timeout_usec(const Manager *m) {
        return m->default_udp_idle_timeout_usec;
}

const char *port_guest_address(Port *p, char *buf, size_t size) {
        RelayTarget t = { .guest4 = p->sandbox->guest4, .guest6 = p->sandbox->guest6 };
        int family = p->n_listen > 0 ? p->listen[0].sa.sa_family : AF_INET;
        SockaddrUnion a;

        if (!relay_target_pick(&t, family, &a)) {
                if (size > 0)
                        buf[0] = 0;
                return buf;
        }
        return sockaddr_format_ip(&a, buf, size);
}

static void log_port(Port *p, const char *what, const char *reason) {
        char guest[INET6_ADDRSTRLEN];

        log_info("%s %s '%s' port %u of sandbox '%s' (guest %s port %u)%s%s.", what, p->protocol,
                 p->host_address, p->host_port, p->sandbox->id,
                 port_guest_address(p, guest, sizeof guest), p->guest_port, reason ? ": " : "",
                 reason ? reason : "");
}

uint64_t sandbox_active_sessions(Sandbox *s) {
        uint64_t n = 0;

        SANDBOX_FOREACH_PORT(p, s) {
                n += p->stats.active;
        }
        return n;
}

uint64_t manager_active_sessions(Manager *m) {
        uint64_t n = 0;

        MANAGER_FOREACH_PORT(p, m) {
                n += p->stats.active;
        }
        return n;
}

uint64_t manager_total_sessions(Manager *m) {
        uint64_t n = m->total_sessions_gone;

        MANAGER_FOREACH_PORT(p, m) {
                n += p->stats.total;
        }
        return n;
}

/* Events */

int manager_subscribe(Manager *m, manager_event_cb cb, void *userdata, ManagerSubscriber **ret) {
        ManagerSubscriber *s, **tail = &m->subscribers;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->manager = m;
        s->cb = cb;
        s->userdata = userdata;
        /* Announce to subscribers in the order they subscribed. */
        while (*tail) {
                s->prev = *tail;
                tail = &(*tail)->next;
        }
        *tail = s;
        if (ret)
                *ret = s;
        return 0;
}

ManagerSubscriber *manager_unsubscribe(ManagerSubscriber *s) {
        if (!s)
                return NULL;
        if (s->prev)
                s->prev->next = s->next;
        else
                s->manager->subscribers = s->next;
        if (s->next)
                s->next->prev = s->prev;
        free(s);
        return NULL;
}

void manager_emit(Manager *m, const ManagerEvent *event) {
        for (ManagerSubscriber *s = m->subscribers; s; s = s->next)
                s->cb(m, event, s->userdata);
}

static void emit_sandbox(Manager *m, ManagerEventType type, Sandbox *s, unsigned changed) {
        manager_emit(m, &(ManagerEvent){ .type = type, .sandbox = s, .changed = changed });
}

static void emit_port(Manager *m, ManagerEventType type, Port *p, unsigned changed,
                      PortReason reason) {
        manager_emit(m, &(ManagerEvent){ .type = type,
                                         .sandbox = p->sandbox,
                                         .port = p,
                                         .changed = changed,
                                         .reason = reason });
}

static void emit_manager(Manager *m, unsigned changed) {
        manager_emit(m, &(ManagerEvent){ .type = MANAGER_EVENT_MANAGER_CHANGED, .changed = changed });
}

/* Announces each object's ActiveSessions whose value differs from what was announced last. */
static void sessions_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        Manager *m = w->data;
        uint64_t total;

        m->sessions_last = monotonic_sec();
        MANAGER_FOREACH_PORT(p, m) {
                if (p->active_announced != p->stats.active) {
                        p->active_announced = p->stats.active;
                        emit_port(m, MANAGER_EVENT_PORT_CHANGED, p, PORT_CHANGED_ACTIVE_SESSIONS, 0);
                }
        }
        MANAGER_FOREACH_SANDBOX(s, m) {
                uint64_t n = sandbox_active_sessions(s);

                if (s->active_announced != n) {
                        s->active_announced = n;
                        emit_sandbox(m, MANAGER_EVENT_SANDBOX_CHANGED, s,
                                     SANDBOX_CHANGED_ACTIVE_SESSIONS);
                }
        }
        total = manager_active_sessions(m);
        if (m->active_announced != total) {
                m->active_announced = total;
                emit_manager(m, MANAGER_CHANGED_ACTIVE_SESSIONS);
        }
}

static void sessions_changed(Manager *m) {
        double after;

        if (ev_is_active(&m->sessions_timer))
                return;
        after = m->sessions_last + SESSIONS_ANNOUNCE_INTERVAL - monotonic_sec();
        ev_timer_set(&m->sessions_timer, after > 0 ? after : 0., 0.);
        ev_timer_start(m->loop, &m->sessions_timer);
}

/* Objects */

static void port_relay_sessions_changed(void *userdata) {
        Port *p = userdata;

        sessions_changed(p->manager);
}

static void port_relay_state_changed(void *userdata, RelayState state, const char *reason) {
        Port *p = userdata;
        char *copy;

        copy = strdup(reason ? reason : "");
        if (copy) {
                free(p->last_error);
                p->last_error = copy;
        }
        p->state = state;
        emit_port(p->manager, MANAGER_EVENT_PORT_CHANGED, p, PORT_CHANGED_STATE, 0);
}

static const RelayCallbacks port_relay_callbacks = {
        .sessions_changed = port_relay_sessions_changed,
        .state_changed = port_relay_state_changed,
};

void port_fill_target(Port *p, RelayTarget *t) {
        *t = (RelayTarget){ .guest4 = p->sandbox->guest4,
                            .guest6 = p->sandbox->guest6,
                            .port = p->guest_port };
}

static void port_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Unlinks (when linked), closes the relay and frees. */
Port *port_free(Port *p) {
        if (!p)
                return NULL;
        p->tcp = tcp_relay_free(p->tcp);
        p->udp = udp_relay_free(p->udp);
        ev_timer_stop(p->manager->loop, &p->retry);
        if (p->linked) {
                Manager *m = p->manager;
                Sandbox *s = p->sandbox;

                HASH_DELETE(hh, m->ports, p);
                HASH_DELETE(hh_serial, m->ports_by_serial, p);
                m->n_ports--;
                m->total_sessions_gone += p->stats.total;
                if (p->sandbox_prev)
                        p->sandbox_prev->sandbox_next = p->sandbox_next;
                else
                        s->ports = p->sandbox_next;
                if (p->sandbox_next)
                        p->sandbox_next->sandbox_prev = p->sandbox_prev;
                s->n_ports--;
        }
        if (p->listen_addresses)
                for (char **a = p->listen_addresses; *a; a++)
                        free(*a);
        free(p->listen_addresses);
        free(p->host_address);
        free(p->last_error);
        caller_unref(p->caller);
        free(p);
        return NULL;
}

static int port_set_listeners(Port *p, const BoundPort *b) {
        char **l;

        l = calloc(b->n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < b->n; i++) {
                char buf[SOCKADDR_STR_MAX];

                l[i] = strdup(sockaddr_format(&b->addrs[i], buf, sizeof buf));
                if (!l[i]) {
                        while (i > 0)
                                free(l[--i]);
                        free(l);
                        return -ENOMEM;
                }
        }
        if (p->listen_addresses)
                for (char **a = p->listen_addresses; *a; a++)
                        free(*a);
        free(p->listen_addresses);
        p->listen_addresses = l;
        p->n_listen = b->n;
        for (size_t i = 0; i < b->n; i++)
                p->listen[i] = b->addrs[i];
        if (b->n > 0)
                p->host_port = sockaddr_port(&b->addrs[0]);
        return 0;
}

int port_new(Port **ret, Manager *m, Sandbox *s, Caller *caller, uint64_t serial,
             const PortSpec *spec, const BoundPort *b, const PortOptions *o) {
        static const BoundPort none = {};
        Port *p;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->sandbox = s;
        p->sandbox_id = s->id;
        p->proto = spec->proto;
        p->protocol = port_proto_to_string(spec->proto);
        p->host_address = strdup(spec->host_address);
        p->last_error = strdup("");
        p->host_port = spec->host_port;
        if (!p->host_address || !p->last_error || port_set_listeners(p, b ? b : &none) < 0) {
                port_free(p);
                return -ENOMEM;
        }
        p->guest_port = spec->guest_port;
        p->serial = serial;
        p->idle_timeout_usec = o->has_idle_timeout          ? o->idle_timeout_usec
                               : spec->proto == IPPROTO_UDP ? m->default_udp_idle_timeout_usec
                                                            : 0;
        p->max_sessions = o->has_max_sessions ? o->max_sessions : m->default_max_sessions;
        p->proxy = o->proxy_protocol;
        p->proxy_protocol = o->proxy_protocol == RELAY_PROXY_V1   ? "v1"
                            : o->proxy_protocol == RELAY_PROXY_V2 ? "v2"
                                                                  : "";
        p->bind_to_caller = o->bind_to_caller;
        if (o->bind_to_caller)
                p->caller = caller_ref(caller);
        port_make_key(p->key, sizeof p->key, p->proto, p->host_address, p->host_port);
        p->state = RELAY_LISTENING;
        ev_timer_init(&p->retry, port_retry_cb, 0., 0.);
        p->retry.data = p;
        *ret = p;
        return 0;
}

/* Builds the port's relay around the sockets in b; on success the relay owns them. target: where
 * its sessions go (the sandbox's addresses as this call leaves them). */
int port_build_relay(Port *p, BoundPort *b, const RelayTarget *target, RelayProxyProtocol proxy) {
        Manager *m = p->manager;
        RelayConfig c = {
                .target = *target,
                .idle_timeout_usec = p->idle_timeout_usec,
                .max_sessions = p->max_sessions,
                .proxy_protocol = proxy,
        };
        int r;

        if (m->fail_relay > 0 && --m->fail_relay == 0)
                return -EIO;
        if (p->proto == IPPROTO_TCP)
                r = tcp_relay_new(&p->tcp, m->loop, b->fds, b->n, &c, &p->stats,
                                  &port_relay_callbacks, p);
        else
                r = udp_relay_new(&p->udp, m->loop, b->fds, b->n, &c, &p->stats,
                                  &port_relay_callbacks, p);
        if (r < 0)
                return r;
        for (size_t i = 0; i < b->n; i++)
                b->fds[i] = -EBADF;
        b->n = 0;
        return 0;
}

/* New sessions of every port of s go to s's current guest addresses; open ones stay. */
static void sandbox_retarget(Manager *m, Sandbox *s) {
        RelayTarget t;

        SANDBOX_FOREACH_PORT(p, s) {
                port_fill_target(p, &t);
                if (p->tcp)
                        tcp_relay_set_target(p->tcp, &t);
                if (p->udp)
                        udp_relay_set_target(p->udp, &t);
                emit_port(m, MANAGER_EVENT_PORT_CHANGED, p, PORT_CHANGED_GUEST_ADDRESS, 0);
        }
}

Sandbox *sandbox_free(Sandbox *s) {
        if (!s)
                return NULL;
        while (s->ports)
                port_free(s->ports);
        if (s->manager) {
                HASH_DEL(s->manager->sandboxes, s);
                s->manager->n_sandboxes--;
        }
        free(s->id);
        free(s);
        return NULL;
}

int sandbox_new(Sandbox **ret, const char *id, uint32_t owner) {
        Sandbox *s;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->id = strdup(id);
        if (!s->id) {
                free(s);
                return -ENOMEM;
        }
        s->owner = owner;
        *ret = s;
        return 0;
}

void sandbox_link(Manager *m, Sandbox *s) {
        s->manager = m;
        HASH_ADD_KEYPTR(hh, m->sandboxes, s->id, strlen(s->id), s);
        m->n_sandboxes++;
}

void port_link(Manager *m, Sandbox *s, Port *p) {
        HASH_ADD_STR(m->ports, key, p);
        HASH_ADD(hh_serial, m->ports_by_serial, serial, sizeof p->serial, p);
        m->n_ports++;
        p->sandbox_next = s->ports;
        if (s->ports)
                s->ports->sandbox_prev = p;
        s->ports = p;
        s->n_ports++;
        p->linked = true;
        m->next_serial = MAX(m->next_serial, p->serial);
}

/* A port that could not be bound again after a restart: State failed, and another try after
 * 1, 2, 4 ... 60 s. */
#define PORT_RETRY_MIN 1.0
#define PORT_RETRY_MAX 60.0

void port_fail(Port *p, const char *error) {
        char *copy = strdup(error);

        if (copy) {
                free(p->last_error);
                p->last_error = copy;
        }
        p->failed = true;
        p->retry_delay =
                p->retry_delay <= 0 ? PORT_RETRY_MIN : MIN(p->retry_delay * 2, PORT_RETRY_MAX);
        ev_timer_set(&p->retry, p->retry_delay, 0.);
        ev_timer_start(p->manager->loop, &p->retry);
}

/* Binds a restored port and builds its relay; on failure says why in e. */
int port_bind_and_start(Port *p, ManagerError *e) {
        PortSpec spec = { .proto = p->proto, .host_port = p->host_port, .guest_port = p->guest_port };
        BoundPort b = {};
        RelayTarget t;
        int r;

        (void) snprintf(spec.host_address, sizeof spec.host_address, "%s", p->host_address);
        r = bind_spec(&spec, &b);
        if (r < 0)
                return map_bind_error(p->manager, p->sandbox->id, &spec, r, e);
        r = port_set_listeners(p, &b);
        if (r >= 0) {
                port_fill_target(p, &t);
                r = port_build_relay(p, &b, &t, p->proxy);
        }
        if (r < 0) {
                bound_port_close(&b);
                return manager_fail(e, MANAGER_E_FAILED,
                                    "Cannot publish %s '%s' port %u of sandbox '%s': %s", p->protocol,
                                    p->host_address, p->host_port, p->sandbox->id, strerror(-r));
        }
        return 0;
}

static void port_retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        Port *p = w->data;
        ManagerError e;
        int r;

        r = port_bind_and_start(p, &e);
        if (r != 0) {
                bool same = strcmp(p->last_error, e.message) == 0;

                log_debug("Port %s '%s' port %u still cannot be bound: %s", p->protocol,
                          p->host_address, p->host_port, e.message);
                port_fail(p, e.message);
                if (!same)
                        emit_port(p->manager, MANAGER_EVENT_PORT_CHANGED, p, PORT_CHANGED_STATE, 0);
                return;
        }
        p->failed = false;
        p->retry_delay = 0;
        free(p->last_error);
        p->last_error = strdup("");
        log_port(p, "Published again", NULL);
        emit_port(p->manager, MANAGER_EVENT_PORT_CHANGED, p, PORT_CHANGED_STATE, 0);
}

/* Publishing, in phases: check against the tables, bind, build relays, commit, announce. Only
 * the last two change anything anyone can see. */

typedef struct Publish {
        Manager *m;
        Caller *caller;
        const ManagerRequestArgs *a;
        Sandbox *s; /* the sandbox if it exists, else NULL until commit creates it */
        Sandbox *new_sandbox;
        bool set_guest;
        SockaddrUnion guest4, guest6; /* what the sandbox has after the call */
        bool machine_changed; /* the call's addresses ended the sandbox's machine binding */
        BoundPort *bound; /* [i].n == 0: spec i is published already, or not bound yet */
        Port **created; /* [i]: the port made for spec i, NULL for a re-publish */
        size_t n_new;
        ManagerError *e;
} Publish;

static bool spec_is_published(Manager *m, const PortSpec *spec) {
        return spec->host_port != 0 &&
               manager_find_port(m, spec->proto, spec->host_address, spec->host_port);
}

static int publish_check(Publish *p) {
        Manager *m = p->m;
        const ManagerRequestArgs *a = p->a;

        for (size_t i = 0; i < a->n_specs; i++) {
                const PortSpec *spec = &a->specs[i];
                Port *q;

                q = spec->host_port != 0
                            ? manager_find_port(m, spec->proto, spec->host_address, spec->host_port)
                            : NULL;
                if (!q) {
                        p->n_new++;
                        continue;
                }
                /* The same tuple to the same guest port again is a retry: it succeeds. */
                if (q->sandbox != p->s || q->guest_port != spec->guest_port)
                        return manager_fail_port(
                                p->e, MANAGER_E_PORT_IN_USE, spec, q->sandbox->id,
                                "Cannot publish %s '%s' port %u for sandbox '%s': the port is in use by sandbox '%s', which publishes it to guest port %u",
                                q->protocol, q->host_address, q->host_port, a->sandbox_id,
                                q->sandbox->id, q->guest_port);
        }
        if (!p->s && m->n_sandboxes >= MANAGER_SANDBOXES_MAX)
                return manager_fail(p->e, MANAGER_E_LIMIT_EXCEEDED,
                                    "Cannot create sandbox '%s': there are already %u sandboxes, the limit",
                                    a->sandbox_id, m->n_sandboxes);
        if (m->n_ports + p->n_new > MANAGER_PORTS_MAX)
                return manager_fail(
                        p->e, MANAGER_E_LIMIT_EXCEEDED,
                        "Cannot publish %zu ports for sandbox '%s': %u are published, at most %u",
                        p->n_new, a->sandbox_id, m->n_ports, MANAGER_PORTS_MAX);
        if ((p->s ? p->s->n_ports : 0) + p->n_new > MANAGER_PORTS_PER_SANDBOX_MAX)
                return manager_fail(p->e, MANAGER_E_LIMIT_EXCEEDED,
                                    "Cannot publish %zu ports for sandbox '%s': at most %u per sandbox",
                                    p->n_new, a->sandbox_id, MANAGER_PORTS_PER_SANDBOX_MAX);
        return 0;
}

static int publish_bind(Publish *p) {
        const ManagerRequestArgs *a = p->a;
        int r;

        for (size_t i = 0; i < a->n_specs; i++) {
                if (spec_is_published(p->m, &a->specs[i]))
                        continue;
                r = bind_spec(&a->specs[i], &p->bound[i]);
                if (r < 0)
                        return map_bind_error(p->m, a->sandbox_id, &a->specs[i], r, p->e);
        }
        return 0;
}

/* Every port object and relay, none linked: a failure here still leaves no trace. */
static int publish_build(Publish *p) {
        const ManagerRequestArgs *a = p->a;
        Manager *m = p->m;
        uint64_t serial = m->next_serial;
        int r;

        /* The guest addresses this call leaves the sandbox with must not lead back into it. */
        r = check_loops(m, a->sandbox_id, p->set_guest ? p->s : NULL, &p->guest4, &p->guest6,
                        a->specs, p->bound, a->n_specs, p->e);
        if (r != 0)
                return r;
        if (!p->s) {
                r = sandbox_new(&p->new_sandbox, a->sandbox_id, 0);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < a->n_specs; i++) {
                const PortSpec *spec = &a->specs[i];
                RelayTarget t = { .guest4 = p->guest4, .guest6 = p->guest6, .port = spec->guest_port };

                if (p->bound[i].n == 0)
                        continue;
                r = port_new(&p->created[i], m, p->s ? p->s : p->new_sandbox, p->caller, ++serial,
                             spec, &p->bound[i], &a->options);
                if (r < 0)
                        return r;
                r = port_build_relay(p->created[i], &p->bound[i], &t, a->options.proxy_protocol);
                if (r < 0) {
                        char err[128];

                        log_warning_errno(r, "Failed to set up the relay of %s '%s' port %u: %m",
                                          spec->proto == IPPROTO_UDP ? "udp" : "tcp",
                                          spec->host_address, p->created[i]->host_port);
                        return manager_fail_port(
                                p->e, MANAGER_E_FAILED, spec, NULL,
                                "Cannot publish %s '%s' port %u for sandbox '%s': setting up its relay failed: %s",
                                p->created[i]->protocol, spec->host_address, p->created[i]->host_port,
                                a->sandbox_id, strerror_r(-r, err, sizeof err));
                }
        }
        return 0;
}

static void publish_undo(Publish *p) {
        for (size_t i = 0; i < p->a->n_specs; i++) {
                p->created[i] = port_free(p->created[i]);
                bound_port_close(&p->bound[i]);
        }
        p->new_sandbox = sandbox_free(p->new_sandbox);
}

static void publish_commit(Publish *p, uint32_t owner, ManagerResult *res) {
        const ManagerRequestArgs *a = p->a;
        bool sandbox_is_new = p->new_sandbox != NULL;
        Manager *m = p->m;

        if (p->new_sandbox) {
                p->s = TAKE_PTR(p->new_sandbox);
                p->s->owner = owner;
                p->s->machine = p->a->machine;
                sandbox_link(m, p->s);
        }
        if (p->set_guest) {
                p->s->guest4 = p->guest4;
                p->s->guest6 = p->guest6;
                /* Addresses given by the caller, as SetGuestAddresses: the machine's no more. */
                if (!sandbox_is_new && !a->machine && p->s->machine) {
                        p->s->machine = false;
                        p->machine_changed = true;
                }
        }
        for (size_t i = 0; i < a->n_specs; i++) {
                Port *q = p->created[i];

                if (!q) {
                        res->ports[i] =
                                manager_find_port(m, a->specs[i].proto, a->specs[i].host_address,
                                                  a->specs[i].host_port);
                        continue;
                }
                port_link(m, p->s, q);
                res->ports[i] = q;
        }
        res->sandbox = p->s;
        res->n_ports = a->n_specs;
}

static void publish_announce(Publish *p, bool sandbox_is_new) {
        const ManagerRequestArgs *a = p->a;
        Manager *m = p->m;
        unsigned changed = 0;

        if (sandbox_is_new)
                emit_sandbox(m, MANAGER_EVENT_SANDBOX_NEW, p->s, 0);
        for (size_t i = 0; i < a->n_specs; i++)
                if (p->created[i]) {
                        log_port(p->created[i], "Published", NULL);
                        emit_port(m, MANAGER_EVENT_PORT_PUBLISHED, p->created[i], 0, 0);
                }
        if (!sandbox_is_new) {
                if (p->set_guest)
                        changed |= SANDBOX_CHANGED_GUEST_ADDRESSES;
                if (p->n_new > 0)
                        changed |= SANDBOX_CHANGED_PORTS;
                if (p->machine_changed)
                        changed |= SANDBOX_CHANGED_MACHINE;
                if (changed)
                        emit_sandbox(m, MANAGER_EVENT_SANDBOX_CHANGED, p->s, changed);
        }
        if (p->n_new > 0 || sandbox_is_new)
                emit_manager(m, MANAGER_CHANGED_COUNTS);
        /* Ports published before this call follow the new addresses from now on. */
        if (p->set_guest && !sandbox_is_new)
                sandbox_retarget(m, p->s);
}

int manager_execute_publish(Manager *m, Caller *caller, const ManagerRequestArgs *a,
                            ManagerResult *res) {
        _cleanup_free_ BoundPort *bound = NULL;
        _cleanup_free_ Port **created = NULL;
        Publish p = {
                .m = m,
                .caller = caller,
                .a = a,
                .s = manager_find_sandbox(m, a->sandbox_id),
                .set_guest =
                        a->guest4.sa.sa_family != AF_UNSPEC || a->guest6.sa.sa_family != AF_UNSPEC,
                .e = &res->error,
        };
        bool sandbox_is_new;
        int r;

        /* Addresses from the machine registry are for a new sandbox: one that was made while
         * they were looked up keeps its own. */
        if (a->machine && p.s)
                p.set_guest = false;
        if (!p.s && !p.set_guest)
                return manager_fail(&res->error, MANAGER_E_NO_GUEST_ADDRESS,
                                    "No guest address for new sandbox '%s': none was given",
                                    a->sandbox_id);
        p.guest4 = p.set_guest ? a->guest4 : p.s->guest4;
        p.guest6 = p.set_guest ? a->guest6 : p.s->guest6;
        sandbox_is_new = !p.s;

        bound = calloc(MAX(a->n_specs, 1u), sizeof *bound);
        created = calloc(MAX(a->n_specs, 1u), sizeof *created);
        if (!bound || !created)
                return -ENOMEM;
        p.bound = bound;
        p.created = created;

        r = publish_check(&p);
        if (r == 0)
                r = publish_bind(&p);
        if (r == 0)
                r = publish_build(&p);
        if (r != 0) {
                publish_undo(&p);
                return r;
        }
        publish_commit(&p, caller->uid, res);
        publish_announce(&p, sandbox_is_new);
        return 0;
}

/* Logs, announces and frees one port; the caller announces what changed in its sandbox. */
static void port_unpublish(Manager *m, Port *p, PortReason reason) {
        bool had_sessions = p->stats.active > 0;

        log_port(p, "Unpublished", port_reason_to_string(reason));
        emit_port(m, MANAGER_EVENT_PORT_UNPUBLISHED, p, 0, reason);
        port_free(p);
        /* Its sessions went with it, and the relay says nothing when it is freed: the ActiveSessions
         * of the manager and the sandbox are announced again. */
        if (had_sessions)
                sessions_changed(m);
}

static int no_such_sandbox(const char *id, ManagerError *e) {
        return manager_fail(e, MANAGER_E_NO_SUCH_SANDBOX, "No sandbox '%s'", id);
}

int manager_execute_unpublish(Manager *m, const ManagerRequestArgs *a, ManagerError *e) {
        _cleanup_free_ Port **found = NULL;
        Sandbox *s;

        s = manager_find_sandbox(m, a->sandbox_id);
        if (!s)
                return no_such_sandbox(a->sandbox_id, e);
        found = calloc(MAX(a->n_specs, 1u), sizeof *found);
        if (!found)
                return -ENOMEM;
        /* All first: a call that names one unknown port unpublishes nothing. */
        for (size_t i = 0; i < a->n_specs; i++) {
                const PortSpec *spec = &a->specs[i];
                Port *p = manager_find_port(m, spec->proto, spec->host_address, spec->host_port);

                if (!p || p->sandbox != s)
                        return manager_fail_port(e, MANAGER_E_NO_SUCH_PORT, spec, NULL,
                                                 "Sandbox '%s' does not publish %s '%s' port %u",
                                                 s->id, port_proto_to_string(spec->proto),
                                                 spec->host_address, spec->host_port);
                found[i] = p;
        }
        for (size_t i = 0; i < a->n_specs; i++)
                port_unpublish(m, found[i], PORT_REASON_REQUEST);
        if (a->n_specs > 0) {
                emit_sandbox(m, MANAGER_EVENT_SANDBOX_CHANGED, s, SANDBOX_CHANGED_PORTS);
                emit_manager(m, MANAGER_CHANGED_COUNTS);
        }
        return 0;
}

static void sandbox_remove(Manager *m, Sandbox *s, PortReason reason) {
        while (s->ports)
                port_unpublish(m, s->ports, reason);
        log_info("Removed sandbox '%s': %s.", s->id, port_reason_to_string(reason));
        emit_sandbox(m, MANAGER_EVENT_SANDBOX_REMOVED, s, 0);
        sandbox_free(s);
        emit_manager(m, MANAGER_CHANGED_COUNTS);
}

int manager_execute_remove_sandbox(Manager *m, const ManagerRequestArgs *a, ManagerError *e) {
        Sandbox *s;

        s = manager_find_sandbox(m, a->sandbox_id);
        if (!s)
                return no_such_sandbox(a->sandbox_id, e);
        sandbox_remove(m, s, PORT_REASON_SANDBOX_REMOVED);
        return 0;
}

int manager_execute_set_guest_addresses(Manager *m, const ManagerRequestArgs *a, ManagerError *e) {
        unsigned changed = SANDBOX_CHANGED_GUEST_ADDRESSES;
        Sandbox *s;
        int r;

        s = manager_find_sandbox(m, a->sandbox_id);
        if (!s)
                return no_such_sandbox(a->sandbox_id, e);
        r = check_loops(m, s->id, s, &a->guest4, &a->guest6, NULL, NULL, 0, e);
        if (r != 0)
                return r;
        s->guest4 = a->guest4;
        s->guest6 = a->guest6;
        if (s->machine)
                changed |= SANDBOX_CHANGED_MACHINE;
        s->machine = false;
        emit_sandbox(m, MANAGER_EVENT_SANDBOX_CHANGED, s, changed);
        sandbox_retarget(m, s);
        return 0;
}

void manager_unpublish_caller_ports(Manager *m, Caller *c) {
        bool any = false;

        MANAGER_FOREACH_SANDBOX(s, m) {
                Port *p = sandbox_first_port(s), *next;
                bool changed = false;

                for (; p; p = next) {
                        next = port_next_in_sandbox(p);
                        if (p->caller != c)
                                continue;
                        port_unpublish(m, p, PORT_REASON_CALLER_VANISHED);
                        changed = true;
                }
                if (changed) {
                        emit_sandbox(m, MANAGER_EVENT_SANDBOX_CHANGED, s, SANDBOX_CHANGED_PORTS);
                        emit_manager(m, MANAGER_CHANGED_COUNTS);
                        any = true;
                }
        }
        if (any)
                (void) manager_save_state(m);
}

bool manager_machine_removed(Manager *m, const char *id) {
        Sandbox *s = manager_find_sandbox(m, id);

        if (!s || !s->machine)
                return false;
        sandbox_remove(m, s, PORT_REASON_MACHINE_REMOVED);
        (void) manager_save_state(m);
        return true;
}

void manager_remove_all(Manager *m, PortReason reason) {
        while (m->sandboxes)
                sandbox_remove(m, m->sandboxes, reason);
}

static uint16_t read_unprivileged_port_start(void) {
        char buf[32] = {};
        unsigned long v;
        char *end;
        ssize_t n;
        int fd;

        /* A procfs read at start-up, before the loop runs. */
        fd = open("/proc/sys/net/ipv4/ip_unprivileged_port_start", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 1024;
        n = read(fd, buf, sizeof buf - 1);
        safe_close(fd);
        if (n <= 0)
                return 1024;
        v = strtoul(buf, &end, 10);
        if (end == buf || v > 65536)
                return 1024;
        return (uint16_t) MIN(v, 65535UL);
}

int manager_new(Manager **ret, struct ev_loop *loop) {
        Manager *m;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->default_max_sessions = MANAGER_MAX_SESSIONS_DEFAULT;
        m->default_udp_idle_timeout_usec = RELAY_UDP_IDLE_TIMEOUT_DEFAULT_USEC;
        m->unprivileged_port_start = read_unprivileged_port_start();
        ev_timer_init(&m->sessions_timer, sessions_timer_cb, 0., 0.);
        m->sessions_timer.data = m;
        ev_timer_init(&m->state_retry, manager_state_retry_cb, 0., 0.);
        m->state_retry.data = m;
        m->sessions_last = monotonic_sec() - SESSIONS_ANNOUNCE_INTERVAL;
        *ret = m;
        return 0;
}

void manager_set_authorizer(Manager *m, Authorizer *a) {
        m->authorizer = a;
}

void manager_set_guest_resolver(Manager *m, GuestResolver *r) {
        m->resolver = r;
}

void manager_set_defaults(Manager *m, uint32_t max_sessions, uint64_t udp_idle_timeout_usec) {
        m->default_max_sessions = max_sessions;
        m->default_udp_idle_timeout_usec = udp_idle_timeout_usec;
}

int manager_set_state_file(Manager *m, const char *path) {
        char *copy = NULL;

        if (path) {
                copy = strdup(path);
                if (!copy)
                        return -ENOMEM;
        }
        free(m->state_file);
        m->state_file = copy;
        return 0;
}

void manager_foreach_bound_caller(Manager *m, void (*cb)(Caller *c, void *userdata), void *userdata) {
        /* Few callers bind ports; a quadratic search for the ones already seen is fine. */
        MANAGER_FOREACH_PORT(p, m) {
                bool seen = false;

                if (!p->caller)
                        continue;
                for (Port *q = manager_first_port(m); q != p && !seen; q = port_next(q))
                        seen = q->caller == p->caller;
                if (!seen)
                        cb(p->caller, userdata);
        }
}

typedef struct MachineCheck {
        Manager *manager;
        char *id;
        void *pending;
        struct MachineCheck *next;
} MachineCheck;

static void machine_check_free(MachineCheck *c) {
        MachineCheck **i;

        for (i = &c->manager->machine_checks; *i; i = &(*i)->next)
                if (*i == c) {
                        *i = c->next;
                        break;
                }
        free(c->id);
        free(c);
}

static void machine_check_done(void *userdata, int r, const SockaddrUnion *guest4,
                               const SockaddrUnion *guest6, const char *message) {
        MachineCheck *c = userdata;
        Manager *m = c->manager;

        /* Only a clear "no such machine" removes it; a failure to ask keeps what was there. */
        if (r == GUEST_RESOLVE_UNKNOWN && manager_machine_removed(m, c->id))
                log_info("Sandbox '%s' was not restored: %s", c->id, message);
        machine_check_free(c);
}

void manager_recheck_machines(Manager *m) {
        if (!m->resolver)
                return;
        MANAGER_FOREACH_SANDBOX(s, m) {
                MachineCheck *c;

                if (!s->machine)
                        continue;
                c = calloc(1, sizeof *c);
                if (!c || !(c->id = strdup(s->id))) {
                        free(c);
                        log_oom();
                        return;
                }
                c->manager = m;
                c->next = m->machine_checks;
                m->machine_checks = c;
                if (m->resolver->ops->resolve(m->resolver, s->id, machine_check_done, c,
                                              &c->pending) < 0)
                        machine_check_free(c);
        }
}

void manager_set_fail_relay(Manager *m, unsigned n) {
        m->fail_relay = n;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        manager_cancel_all_requests(m);
        while (m->machine_checks) {
                if (m->resolver)
                        m->resolver->ops->cancel(m->resolver, m->machine_checks->pending);
                machine_check_free(m->machine_checks);
        }
        ev_timer_stop(m->loop, &m->sessions_timer);
        ev_timer_stop(m->loop, &m->state_retry);
        while (m->subscribers)
                manager_unsubscribe(m->subscribers);
        while (m->sandboxes)
                sandbox_free(m->sandboxes);
        free(m->state_file);
        free(m);
        return NULL;
}
