/* The manager: sandboxes, published ports, limits
 *
 * Publishing is all or nothing: every socket of every requested port is bound (and, for TCP,
 * listening) before anything becomes visible; the first failure closes what the call bound and
 * returns a result naming the port. Only then are relays started, objects created and events
 * sent, so a failed call changes nothing. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include "config.h"
#include "log.h"
#include "macro.h"
#include "manager.h"

#define TCP_BACKLOG 4096
/* How often to retry a port-0 bind of "" or "*" whose number is taken on the other family. */
#define BIND_SAME_PORT_TRIES 32

_printf_(3, 4) static int fail(ManagerError *e, int code, const char *format, ...) {
        va_list ap;

        if (e) {
                va_start(ap, format);
                (void) vsnprintf(e->message, sizeof e->message, format, ap);
                va_end(ap);
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
        default:
                return "failure";
        }
}

const char *port_state_to_string(RelayState s) {
        return s == RELAY_PAUSED ? "paused" : "listening";
}

static const char *proto_to_string(int proto) {
        return proto == IPPROTO_UDP ? "udp" : "tcp";
}

int sandbox_id_is_valid(const char *id) {
        size_t n = 0;

        if (!id || !*id || id[0] == '.' || id[0] == '-')
                return 0;
        for (const char *c = id; *c; c++, n++) {
                if (n >= SANDBOX_ID_MAX)
                        return 0;
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                      (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-'))
                        return 0;
        }
        return 1;
}

int manager_parse_guest_address(const char *s, SockaddrUnion *guest4, SockaddrUnion *guest6,
                                ManagerError *e) {
        SockaddrUnion a;

        if (sockaddr_parse_ip(s, &a) < 0)
                return fail(e, MANAGER_E_INVALID,
                            "Invalid guest address '%s': expected a literal IPv4 or IPv6 address", s);
        if (sockaddr_is_wildcard(&a) ||
            (a.sa.sa_family == AF_INET && (IN_MULTICAST(ntohl(a.in.sin_addr.s_addr)) ||
                                           a.in.sin_addr.s_addr == htonl(INADDR_BROADCAST))) ||
            (a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_MULTICAST(&a.in6.sin6_addr)))
                return fail(e, MANAGER_E_INVALID,
                            "Invalid guest address '%s': not a unicast address", s);
        if (a.sa.sa_family == AF_INET) {
                if (guest4->sa.sa_family != AF_UNSPEC)
                        return fail(e, MANAGER_E_INVALID,
                                    "Invalid guest address '%s': at most one IPv4 address", s);
                *guest4 = a;
        } else {
                if (guest6->sa.sa_family != AF_UNSPEC)
                        return fail(e, MANAGER_E_INVALID,
                                    "Invalid guest address '%s': at most one IPv6 address", s);
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
                return fail(e, MANAGER_E_INVALID, "Invalid protocol '%s': expected 'tcp' or 'udp'",
                            protocol);

        if (strcmp(host_address, "") == 0 || strcmp(host_address, "*") == 0)
                snprintf(spec->host_address, sizeof spec->host_address, "%s", host_address);
        else if (sockaddr_parse_ip(host_address, &a) < 0)
                return fail(e, MANAGER_E_INVALID,
                            "Invalid host address '%s': expected \"\", \"*\" or a literal IPv4 or IPv6 address",
                            host_address);
        else if ((a.sa.sa_family == AF_INET && IN_MULTICAST(ntohl(a.in.sin_addr.s_addr))) ||
                 (a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_MULTICAST(&a.in6.sin6_addr)))
                return fail(e, MANAGER_E_INVALID, "Invalid host address '%s': multicast",
                            host_address);
        else
                sockaddr_format_ip(&a, spec->host_address, sizeof spec->host_address);

        if (need_guest_port && guest_port == 0)
                return fail(e, MANAGER_E_INVALID,
                            "Invalid guest port 0 for %s '%s' port %u: expected 1 to 65535",
                            protocol, host_address, host_port);
        spec->host_port = host_port;
        spec->guest_port = guest_port;
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

        for (Port *p = s->ports; p; p = p->sandbox_next)
                n += p->stats.active;
        return n;
}

uint64_t manager_active_sessions(Manager *m) {
        uint64_t n = 0;

        for (Port *p = m->ports; p; p = p->hh.next)
                n += p->stats.active;
        return n;
}

uint64_t manager_total_sessions(Manager *m) {
        uint64_t n = m->total_sessions_gone;

        for (Port *p = m->ports; p; p = p->hh.next)
                n += p->stats.total;
        return n;
}

/* Binding */

typedef struct BoundPort {
        int fds[PORT_LISTENERS_MAX];
        SockaddrUnion addrs[PORT_LISTENERS_MAX];
        size_t n;
} BoundPort;

static void bound_port_close(BoundPort *b) {
        for (size_t i = 0; i < b->n; i++)
                b->fds[i] = safe_close(b->fds[i]);
        b->n = 0;
}

/* Returns the fd or -errno. */
static int bind_one(int proto, const SockaddrUnion *addr, SockaddrUnion *ret_bound) {
        _cleanup_close_ int fd = -EBADF;
        SockaddrUnion bound = {};
        socklen_t len = sizeof bound;
        int one = 1;

        fd = socket(addr->sa.sa_family,
                    (proto == IPPROTO_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
        if (fd < 0)
                return -errno;
        /* TIME_WAIT of an earlier listener must not block a re-publish; UDP gets no SO_REUSEADDR,
         * it would let two sockets share the port. */
        if (proto == IPPROTO_TCP && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
                return -errno;
        /* "::" is IPv6 only: "*" binds the IPv4 wildcard itself. */
        if (addr->sa.sa_family == AF_INET6 &&
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
                return -errno;
        if (bind(fd, &addr->sa, sockaddr_len(addr)) < 0)
                return -errno;
        if (proto == IPPROTO_TCP && listen(fd, TCP_BACKLOG) < 0)
                return -errno;
        if (getsockname(fd, &bound.sa, &len) < 0)
                return -errno;
        *ret_bound = bound;
        return TAKE_FD(fd);
}

static bool host_has_ipv6(void) {
        static int cached = -1;

        if (cached < 0) {
                int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                cached = fd >= 0;
                safe_close(fd);
        }
        return cached;
}

/* Binds the sockets of one spec; "" and "*" get the same port number on both families. */
static int bind_spec(const PortSpec *spec, BoundPort *b) {
        SockaddrUnion addrs[PORT_LISTENERS_MAX] = {};
        size_t n = 0;
        int r;

        if (spec->host_address[0] == 0 || strcmp(spec->host_address, "*") == 0) {
                bool any = spec->host_address[0] == '*';

                addrs[0].in.sin_family = AF_INET;
                addrs[0].in.sin_addr.s_addr = htonl(any ? INADDR_ANY : INADDR_LOOPBACK);
                n = 1;
                if (host_has_ipv6()) {
                        addrs[1].in6.sin6_family = AF_INET6;
                        addrs[1].in6.sin6_addr = any ? in6addr_any : in6addr_loopback;
                        n = 2;
                }
        } else {
                r = sockaddr_parse_ip(spec->host_address, &addrs[0]);
                if (r < 0)
                        return r;
                n = 1;
        }

        for (unsigned attempt = 0; attempt < BIND_SAME_PORT_TRIES; attempt++) {
                uint16_t port = spec->host_port;

                b->n = 0;
                for (size_t i = 0; i < n; i++) {
                        sockaddr_set_port(&addrs[i], port);
                        r = bind_one(spec->proto, &addrs[i], &b->addrs[b->n]);
                        /* A host without a usable ::1 still gets its 127.0.0.1 listener. */
                        if (r == -EADDRNOTAVAIL && i > 0 && spec->host_address[0] == 0)
                                continue;
                        if (r < 0)
                                break;
                        b->fds[b->n++] = r;
                        if (port == 0)
                                port = sockaddr_port(&b->addrs[b->n - 1]);
                }
                if (r >= 0 || (r == -EADDRNOTAVAIL && spec->host_address[0] == 0 && b->n > 0))
                        return 0;
                /* The kernel's pick for the first family was taken on the second: pick again. */
                if (r == -EADDRINUSE && spec->host_port == 0 && b->n > 0) {
                        bound_port_close(b);
                        continue;
                }
                bound_port_close(b);
                return r;
        }
        return -EADDRINUSE;
}

/* Names the sandbox whose port holds the endpoint spec wants, if any. */
static Port *find_overlapping_port(Manager *m, const PortSpec *spec) {
        SockaddrUnion want;
        bool want_any = spec->host_address[0] == 0 || spec->host_address[0] == '*';

        if (!want_any && sockaddr_parse_ip(spec->host_address, &want) < 0)
                return NULL;
        for (Port *p = m->ports; p; p = p->hh.next) {
                if (p->proto != spec->proto || p->host_port != spec->host_port)
                        continue;
                if (want_any)
                        return p;
                for (size_t i = 0; i < p->n_listen; i++) {
                        SockaddrUnion a = p->listen[i];

                        if (a.sa.sa_family != want.sa.sa_family)
                                continue;
                        sockaddr_set_port(&a, 0);
                        if (sockaddr_is_wildcard(&a) || sockaddr_equal(&a, &want))
                                return p;
                }
        }
        return NULL;
}

static int map_bind_error(Manager *m, const char *sandbox_id, const PortSpec *spec, int r,
                          ManagerError *e) {
        const char *proto = proto_to_string(spec->proto);
        Port *owner;

        switch (r) {
        case -EADDRINUSE:
                owner = find_overlapping_port(m, spec);
                if (owner)
                        return fail(e, MANAGER_E_PORT_IN_USE,
                                    "Cannot publish %s '%s' port %u for sandbox '%s': the endpoint is published by sandbox '%s'",
                                    proto, spec->host_address, spec->host_port, sandbox_id,
                                    owner->sandbox->id);
                return fail(e, MANAGER_E_PORT_IN_USE,
                            "Cannot publish %s '%s' port %u for sandbox '%s': address already in use by another program",
                            proto, spec->host_address, spec->host_port, sandbox_id);
        case -EADDRNOTAVAIL:
                return fail(e, MANAGER_E_ADDRESS_NOT_AVAILABLE,
                            "Cannot publish %s '%s' port %u for sandbox '%s': the address is not on this host",
                            proto, spec->host_address, spec->host_port, sandbox_id);
        case -EACCES:
        case -EPERM:
                return fail(e, MANAGER_E_PERMISSION_DENIED,
                            "Cannot publish %s '%s' port %u for sandbox '%s': the kernel refused the bind (privileged port?)",
                            proto, spec->host_address, spec->host_port, sandbox_id);
        case -EMFILE:
        case -ENFILE:
                return fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Cannot publish %s '%s' port %u for sandbox '%s': too many open files",
                            proto, spec->host_address, spec->host_port, sandbox_id);
        case -EAFNOSUPPORT:
                return fail(e, MANAGER_E_ADDRESS_NOT_AVAILABLE,
                            "Cannot publish %s '%s' port %u for sandbox '%s': address family not supported",
                            proto, spec->host_address, spec->host_port, sandbox_id);
        default:
                return r;
        }
}

/* Objects */

static void port_relay_sessions_changed(void *userdata) {
        Port *p = userdata;
        Manager *m = p->manager;

        if (m->events && m->events->port_sessions_changed)
                m->events->port_sessions_changed(m, p);
}

static void port_relay_state_changed(void *userdata, RelayState state, const char *reason) {
        Port *p = userdata;
        Manager *m = p->manager;
        char *copy;

        copy = strdup(reason ? reason : "");
        if (copy) {
                free(p->last_error);
                p->last_error = copy;
        }
        p->state = state;
        if (m->events && m->events->port_changed)
                m->events->port_changed(m, p, "State");
}

static const RelayCallbacks port_relay_callbacks = {
        .sessions_changed = port_relay_sessions_changed,
        .state_changed = port_relay_state_changed,
};

static void port_fill_target(Port *p, RelayTarget *t) {
        *t = (RelayTarget){ .guest4 = p->sandbox->guest4,
                            .guest6 = p->sandbox->guest6,
                            .port = p->guest_port };
}

static Port *port_free(Port *p) {
        if (!p)
                return NULL;
        p->tcp = tcp_relay_free(p->tcp);
        p->udp = udp_relay_free(p->udp);
        if (p->manager) {
                Manager *m = p->manager;

                HASH_DELETE(hh, m->ports, p);
                HASH_DELETE(hh_serial, m->ports_by_serial, p);
                m->n_ports--;
                m->total_sessions_gone += p->stats.total;
        }
        if (p->sandbox) {
                Sandbox *s = p->sandbox;

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
        free(p->path);
        free(p);
        return NULL;
}

/* Builds a port around bound sockets; links nothing and starts nothing. */
static int port_new(Port **ret, Manager *m, Sandbox *s, const PortSpec *spec, const BoundPort *b,
                    const PortOptions *o) {
        Port *p;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->sandbox_id = s->id;
        p->proto = spec->proto;
        p->protocol = proto_to_string(spec->proto);
        p->host_address = strdup(spec->host_address);
        p->listen_addresses = calloc(b->n + 1, sizeof(char *));
        p->last_error = strdup("");
        if (!p->host_address || !p->listen_addresses || !p->last_error)
                goto oom;
        p->host_port = sockaddr_port(&b->addrs[0]);
        p->guest_port = spec->guest_port;
        p->n_listen = b->n;
        for (size_t i = 0; i < b->n; i++) {
                char buf[SOCKADDR_STR_MAX];

                p->listen[i] = b->addrs[i];
                p->listen_addresses[i] = strdup(sockaddr_format(&b->addrs[i], buf, sizeof buf));
                if (!p->listen_addresses[i])
                        goto oom;
        }
        p->serial = m->next_serial;
        if (asprintf(&p->path, PORT_PATH_PREFIX "/%" PRIu64, p->serial) < 0) {
                p->path = NULL;
                goto oom;
        }
        p->idle_timeout_usec = o->has_idle_timeout          ? o->idle_timeout_usec
                               : spec->proto == IPPROTO_UDP ? m->default_udp_idle_timeout_usec
                                                            : 0;
        p->max_sessions = o->has_max_sessions ? o->max_sessions : m->default_max_sessions;
        p->proxy_protocol = o->proxy_protocol == RELAY_PROXY_V1   ? "v1"
                            : o->proxy_protocol == RELAY_PROXY_V2 ? "v2"
                                                                  : "";
        p->bind_to_caller = o->bind_to_caller;
        port_make_key(p->key, sizeof p->key, p->proto, p->host_address, p->host_port);
        p->state = RELAY_LISTENING;
        *ret = p;
        return 0;
oom:
        port_free(p);
        return -ENOMEM;
}

/* New sessions of every port of s go to s's current guest addresses; open ones stay. */
static void sandbox_retarget(Manager *m, Sandbox *s) {
        RelayTarget t;

        for (Port *p = s->ports; p; p = p->sandbox_next) {
                port_fill_target(p, &t);
                if (p->tcp)
                        tcp_relay_set_target(p->tcp, &t);
                if (p->udp)
                        udp_relay_set_target(p->udp, &t);
                if (m->events && m->events->port_changed)
                        m->events->port_changed(m, p, "GuestAddress");
        }
}

static int port_start(Port *p, BoundPort *b, RelayProxyProtocol proxy) {
        RelayConfig c = {
                .idle_timeout_usec = p->idle_timeout_usec,
                .max_sessions = p->max_sessions,
                .proxy_protocol = proxy,
        };
        int r;

        port_fill_target(p, &c.target);
        if (p->proto == IPPROTO_TCP)
                r = tcp_relay_new(&p->tcp, p->manager->loop, b->fds, b->n, &c, &p->stats,
                                  &port_relay_callbacks, p);
        else
                r = udp_relay_new(&p->udp, p->manager->loop, b->fds, b->n, &c, &p->stats,
                                  &port_relay_callbacks, p);
        if (r < 0)
                return r;
        /* The relay owns the sockets now. */
        for (size_t i = 0; i < b->n; i++)
                b->fds[i] = -EBADF;
        b->n = 0;
        return 0;
}

static Sandbox *sandbox_free(Sandbox *s) {
        if (!s)
                return NULL;
        while (s->ports)
                port_free(s->ports);
        if (s->manager) {
                HASH_DEL(s->manager->sandboxes, s);
                s->manager->n_sandboxes--;
        }
        free(s->id);
        free(s->path);
        free(s);
        return NULL;
}

static int sandbox_new(Sandbox **ret, const char *id, uint32_t owner) {
        Sandbox *s;
        int r;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->id = strdup(id);
        if (!s->id) {
                sandbox_free(s);
                return -ENOMEM;
        }
        r = sd_bus_path_encode(SANDBOX_PATH_PREFIX, id, &s->path);
        if (r < 0) {
                sandbox_free(s);
                return r;
        }
        s->owner = owner;
        *ret = s;
        return 0;
}

/* Publishing */

static void emit(Manager *m, void (*f)(Manager *, Port *), Port *p) {
        if (f)
                f(m, p);
}

/* Relay cycles: a port whose guest address and port are a listener of a published port, whose
 * guest is a listener of ... the first port. Every connection or datagram would open another
 * session on each port of the cycle, until MaxSessions or the fd limit. PublishPorts and
 * SetGuestAddresses refuse what would close such a cycle. A cycle of one port is the guest
 * address being one of the port's own listeners. */

#define LOOP_DEPTH_MAX 16 /* longer cycles are not searched: MaxSessions still bounds them */

/* One port as the check sees it: published already (port) or being published (spec). */
typedef struct LoopNode {
        Port *port;
        size_t spec;
        int proto;
        const char *host_address;
        uint16_t host_port;
        const SockaddrUnion *listen;
        size_t n_listen;
        RelayTarget target;
        const char *sandbox_id;
} LoopNode;

typedef struct LoopCheck {
        Manager *m;
        Sandbox *s; /* the sandbox whose guest addresses are given below, or NULL */
        const SockaddrUnion *guest4, *guest6;
        const char *sandbox_id; /* of the ports this call creates */
        const PortSpec *specs;
        const BoundPort *bound;
        uint64_t *spec_marks;
        size_t n_specs;
        uint64_t mark;
        const LoopNode *start;
        SockaddrUnion start_target; /* where start relays, in the family being searched */
        LoopNode first; /* the first port after start on the path being searched */
        ManagerError *e;
} LoopCheck;

/* Whether a is an address of this host: loopback, or one a socket can bind to. */
static bool address_is_local(const SockaddrUnion *a) {
        _cleanup_close_ int fd = -EBADF;
        SockaddrUnion b = *a;

        if (a->sa.sa_family == AF_INET && (ntohl(a->in.sin_addr.s_addr) >> 24) == IN_LOOPBACKNET)
                return true;
        if (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->in6.sin6_addr))
                return true;
        fd = socket(a->sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return false;
        sockaddr_set_port(&b, 0);
        return bind(fd, &b.sa, sockaddr_len(&b)) >= 0;
}

/* Whether traffic sent to target arrives at one of these listeners. */
static bool listeners_receive(const SockaddrUnion *listen, size_t n, const SockaddrUnion *target) {
        for (size_t k = 0; k < n; k++) {
                if (sockaddr_equal(&listen[k], target))
                        return true;
                if (listen[k].sa.sa_family == target->sa.sa_family &&
                    sockaddr_port(&listen[k]) == sockaddr_port(target) &&
                    sockaddr_is_wildcard(&listen[k]) && address_is_local(target))
                        return true;
        }
        return false;
}

static void loop_node_from_port(const LoopCheck *c, Port *p, LoopNode *ret) {
        *ret = (LoopNode){
                .port = p,
                .proto = p->proto,
                .host_address = p->host_address,
                .host_port = p->host_port,
                .listen = p->listen,
                .n_listen = p->n_listen,
                .sandbox_id = p->sandbox->id,
        };
        port_fill_target(p, &ret->target);
        if (p->sandbox == c->s) {
                ret->target.guest4 = *c->guest4;
                ret->target.guest6 = *c->guest6;
        }
}

static void loop_node_from_spec(const LoopCheck *c, size_t i, LoopNode *ret) {
        *ret = (LoopNode){
                .spec = i,
                .proto = c->specs[i].proto,
                .host_address = c->specs[i].host_address,
                .host_port = sockaddr_port(&c->bound[i].addrs[0]),
                .listen = c->bound[i].addrs,
                .n_listen = c->bound[i].n,
                .target = { .guest4 = *c->guest4, .guest6 = *c->guest6, .port = c->specs[i].guest_port },
                .sandbox_id = c->sandbox_id,
        };
}

static bool loop_node_is(const LoopNode *a, const LoopNode *b) {
        return a->port ? a->port == b->port : !b->port && a->spec == b->spec;
}

static int loop_visit(LoopCheck *c, const LoopNode *x, unsigned depth);

/* y receives what its predecessor sends: a cycle if y is where the search started, else search
 * on from y. */
static int loop_step(LoopCheck *c, const LoopNode *y, unsigned depth) {
        const LoopNode *start = c->start;
        uint64_t *mark = y->port ? &y->port->loop_mark : &c->spec_marks[y->spec];
        char a[INET6_ADDRSTRLEN], via[256] = "this port's own listener";

        if (loop_node_is(y, start)) {
                if (depth > 0)
                        snprintf(via, sizeof via,
                                 "%s '%s' port %u of sandbox '%s', which leads back to this port",
                                 proto_to_string(c->first.proto), c->first.host_address,
                                 c->first.host_port, c->first.sandbox_id);
                return fail(c->e, MANAGER_E_INVALID,
                            "Invalid guest address '%s' for %s '%s' port %u of sandbox '%s': guest port %u there is %s, so traffic would loop",
                            sockaddr_format_ip(&c->start_target, a, sizeof a),
                            proto_to_string(start->proto), start->host_address, start->host_port,
                            start->sandbox_id, start->target.port, via);
        }
        if (*mark == c->mark || depth + 1 >= LOOP_DEPTH_MAX)
                return 0;
        *mark = c->mark;
        if (depth == 0)
                c->first = *y;
        return loop_visit(c, y, depth + 1);
}

/* Follows x's relay to every port that receives it. */
static int loop_visit(LoopCheck *c, const LoopNode *x, unsigned depth) {
        static const char *const wildcards[] = { "", "*", "0.0.0.0", "::" };
        int done = 0; /* families already followed */

        for (size_t i = 0; i < x->n_listen; i++) {
                int family = x->listen[i].sa.sa_family;
                SockaddrUnion target;
                char a[INET6_ADDRSTRLEN];
                LoopNode y;
                int r;

                if ((done & (1 << (family == AF_INET6))) ||
                    !relay_target_pick(&x->target, family, &target))
                        continue;
                done |= 1 << (family == AF_INET6);
                if (depth == 0)
                        c->start_target = target;
                sockaddr_format_ip(&target, a, sizeof a);

                /* The ports of this call. */
                for (size_t k = 0; k < c->n_specs; k++) {
                        if (c->bound[k].n == 0 || c->specs[k].proto != x->proto ||
                            !listeners_receive(c->bound[k].addrs, c->bound[k].n, &target))
                                continue;
                        loop_node_from_spec(c, k, &y);
                        r = loop_step(c, &y, depth);
                        if (r != 0)
                                return r;
                }
                /* Published ports: on that address, or on a wildcard or "" that covers it. */
                for (size_t k = 0; k <= ELEMENTSOF(wildcards); k++) {
                        Port *p = manager_find_port(c->m, x->proto, k == 0 ? a : wildcards[k - 1],
                                                    sockaddr_port(&target));

                        if (!p || !listeners_receive(p->listen, p->n_listen, &target))
                                continue;
                        loop_node_from_port(c, p, &y);
                        r = loop_step(c, &y, depth);
                        if (r != 0)
                                return r;
                }
        }
        return 0;
}

static int loop_check_from(LoopCheck *c, const LoopNode *start) {
        c->start = start;
        c->mark = ++c->m->loop_marks;
        return loop_visit(c, start, 0);
}

/* Fails when this call's ports (specs whose bound[].n > 0, of sandbox_id), or the ports of s
 * relaying to guest4/guest6 instead, would close a relay cycle. */
static int check_loops(Manager *m, const char *sandbox_id, Sandbox *s, const SockaddrUnion *guest4,
                       const SockaddrUnion *guest6, const PortSpec *specs, const BoundPort *bound,
                       size_t n, ManagerError *e) {
        _cleanup_free_ uint64_t *spec_marks = NULL;
        LoopCheck c = { .m = m,
                        .s = s,
                        .guest4 = guest4,
                        .guest6 = guest6,
                        .sandbox_id = sandbox_id,
                        .specs = specs,
                        .bound = bound,
                        .n_specs = n,
                        .e = e };
        LoopNode x;
        int r;

        if (n > 0) {
                spec_marks = calloc(n, sizeof *spec_marks);
                if (!spec_marks)
                        return -ENOMEM;
                c.spec_marks = spec_marks;
        }
        for (size_t i = 0; i < n; i++) {
                if (bound[i].n == 0)
                        continue;
                loop_node_from_spec(&c, i, &x);
                r = loop_check_from(&c, &x);
                if (r != 0)
                        return r;
        }
        for (Port *p = s ? s->ports : NULL; p; p = p->sandbox_next) {
                loop_node_from_port(&c, p, &x);
                r = loop_check_from(&c, &x);
                if (r != 0)
                        return r;
        }
        return 0;
}

int manager_publish(Manager *m, const char *sandbox_id, const SockaddrUnion *guest4,
                    const SockaddrUnion *guest6, uint32_t owner, const PortSpec *specs, size_t n,
                    const PortOptions *options, Sandbox **ret_sandbox, Port **ret_ports,
                    ManagerError *e) {
        bool set_guest = (guest4 && guest4->sa.sa_family != AF_UNSPEC) ||
                         (guest6 && guest6->sa.sa_family != AF_UNSPEC);
        _cleanup_free_ BoundPort *bound = NULL;
        _cleanup_free_ Port **created = NULL;
        size_t n_new = 0, n_created = 0;
        Sandbox *s, *new_sandbox = NULL;
        int r;

        if (n > MANAGER_PORTS_PER_CALL_MAX)
                return fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Too many ports for sandbox '%s' in one call: %zu, at most %u",
                            sandbox_id, n, MANAGER_PORTS_PER_CALL_MAX);

        s = manager_find_sandbox(m, sandbox_id);
        if (!s && !set_guest)
                return fail(e, MANAGER_E_NO_GUEST_ADDRESS,
                            "No guest address for new sandbox '%s': none was given and systemd-machined knows no such machine",
                            sandbox_id);
        if (!s && m->n_sandboxes >= MANAGER_SANDBOXES_MAX)
                return fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Cannot create sandbox '%s': there are already %u sandboxes, the limit",
                            sandbox_id, m->n_sandboxes);

        /* Duplicates within the call, and clashes with what is published already. */
        for (size_t i = 0; i < n; i++) {
                Port *p;

                for (size_t j = 0; j < i; j++)
                        if (specs[j].proto == specs[i].proto && specs[i].host_port != 0 &&
                            specs[j].host_port == specs[i].host_port &&
                            strcmp(specs[j].host_address, specs[i].host_address) == 0)
                                return fail(e, MANAGER_E_INVALID,
                                            "Invalid ports for sandbox '%s': %s '%s' port %u is listed twice",
                                            sandbox_id, proto_to_string(specs[i].proto),
                                            specs[i].host_address, specs[i].host_port);
                if (specs[i].host_port == 0)
                        continue;
                p = manager_find_port(m, specs[i].proto, specs[i].host_address, specs[i].host_port);
                if (!p)
                        continue;
                if (p->sandbox != s || p->guest_port != specs[i].guest_port)
                        return fail(e, MANAGER_E_PORT_IN_USE,
                                    "Cannot publish %s '%s' port %u for sandbox '%s': it is published by sandbox '%s' to guest port %u",
                                    p->protocol, p->host_address, p->host_port, sandbox_id,
                                    p->sandbox->id, p->guest_port);
        }

        bound = calloc(n ? n : 1, sizeof *bound);
        created = calloc(n ? n : 1, sizeof *created);
        if (!bound || !created)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                if (specs[i].host_port != 0 &&
                    manager_find_port(m, specs[i].proto, specs[i].host_address, specs[i].host_port))
                        continue; /* re-publish of the same tuple: nothing to bind */
                n_new++;
        }
        if (m->n_ports + n_new > MANAGER_PORTS_MAX)
                return fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Cannot publish %zu ports for sandbox '%s': %u are published, at most %u",
                            n_new, sandbox_id, m->n_ports, MANAGER_PORTS_MAX);
        if ((s ? s->n_ports : 0) + n_new > MANAGER_PORTS_PER_SANDBOX_MAX)
                return fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Cannot publish %zu ports for sandbox '%s': at most %u per sandbox",
                            n_new, sandbox_id, MANAGER_PORTS_PER_SANDBOX_MAX);

        for (size_t i = 0; i < n; i++) {
                if (specs[i].host_port != 0 &&
                    manager_find_port(m, specs[i].proto, specs[i].host_address, specs[i].host_port))
                        continue;
                r = bind_spec(&specs[i], &bound[i]);
                if (r < 0) {
                        r = map_bind_error(m, sandbox_id, &specs[i], r, e);
                        goto unbind;
                }
        }

        /* The guest addresses this call leaves the sandbox with must not lead back into it. */
        r = check_loops(m, sandbox_id, set_guest ? s : NULL, set_guest ? guest4 : &s->guest4,
                        set_guest ? guest6 : &s->guest6, specs, bound, n, e);
        if (r != 0)
                goto unbind;

        /* Every socket is bound: from here on only allocation can fail. */
        if (!s) {
                r = sandbox_new(&new_sandbox, sandbox_id, owner);
                if (r < 0)
                        goto unbind;
                s = new_sandbox;
        }
        for (size_t i = 0; i < n; i++) {
                if (bound[i].n == 0)
                        continue;
                m->next_serial++;
                r = port_new(&created[i], m, s, &specs[i], &bound[i], options);
                if (r < 0)
                        goto unbind;
                created[i]->manager = NULL; /* not linked yet */
                n_created++;
        }

        /* Commit. */
        if (new_sandbox) {
                new_sandbox->manager = m;
                HASH_ADD_KEYPTR(hh, m->sandboxes, new_sandbox->id, strlen(new_sandbox->id),
                                new_sandbox);
                m->n_sandboxes++;
        }
        if (set_guest) {
                s->guest4 = guest4 ? *guest4 : (SockaddrUnion){};
                s->guest6 = guest6 ? *guest6 : (SockaddrUnion){};
        }
        for (size_t i = 0; i < n; i++) {
                Port *p = created[i];

                if (!p) {
                        ret_ports[i] = manager_find_port(m, specs[i].proto, specs[i].host_address,
                                                         specs[i].host_port);
                        continue;
                }
                p->manager = m;
                p->sandbox = s;
                HASH_ADD_STR(m->ports, key, p);
                HASH_ADD(hh_serial, m->ports_by_serial, serial, sizeof p->serial, p);
                m->n_ports++;
                p->sandbox_next = s->ports;
                if (s->ports)
                        s->ports->sandbox_prev = p;
                s->ports = p;
                s->n_ports++;
                r = port_start(p, &bound[i], options->proxy_protocol);
                if (r < 0) {
                        /* Only ENOMEM gets here; the sockets are still ours to close. */
                        log_error_errno(r, "Failed to start relay for %s '%s' port %u: %m",
                                        p->protocol, p->host_address, p->host_port);
                        bound_port_close(&bound[i]);
                        p->state = RELAY_PAUSED;
                        free(p->last_error);
                        p->last_error = strdup("Out of memory");
                }
                ret_ports[i] = p;
        }

        if (new_sandbox && m->events && m->events->sandbox_new)
                m->events->sandbox_new(m, new_sandbox);
        else if (set_guest && m->events && m->events->sandbox_changed)
                m->events->sandbox_changed(m, s, "GuestAddresses");
        for (size_t i = 0; i < n; i++)
                if (created[i]) {
                        log_port(created[i], "Published", NULL);
                        emit(m, m->events ? m->events->port_published : NULL, created[i]);
                }
        if (n_created > 0 && m->events) {
                if (!new_sandbox && m->events->sandbox_changed)
                        m->events->sandbox_changed(m, s, "Ports");
        }
        if ((n_created > 0 || new_sandbox) && m->events && m->events->counts_changed)
                m->events->counts_changed(m);
        if (set_guest && !new_sandbox)
                sandbox_retarget(m, s);
        *ret_sandbox = s;
        return 0;

unbind:
        for (size_t i = 0; i < n; i++) {
                if (created[i])
                        port_free(created[i]);
                bound_port_close(&bound[i]);
        }
        sandbox_free(new_sandbox);
        return r;
}

/* Logs, announces and frees one port; the caller announces what changed in its sandbox. */
static void port_unpublish(Manager *m, Port *p, const char *reason) {
        log_port(p, "Unpublished", reason);
        if (m->events && m->events->port_unpublished)
                m->events->port_unpublished(m, p, reason);
        port_free(p);
}

void manager_unpublish_port(Manager *m, Port *p, const char *reason) {
        Sandbox *s = p->sandbox;

        port_unpublish(m, p, reason);
        if (m->events && m->events->sandbox_changed)
                m->events->sandbox_changed(m, s, "Ports");
        if (m->events && m->events->counts_changed)
                m->events->counts_changed(m);
}

int manager_unpublish(Manager *m, Sandbox *s, const PortSpec *specs, size_t n, const char *reason,
                      ManagerError *e) {
        _cleanup_free_ Port **found = NULL;

        if (n > MANAGER_PORTS_PER_CALL_MAX)
                return fail(e, MANAGER_E_LIMIT_EXCEEDED,
                            "Too many ports for sandbox '%s' in one call: %zu, at most %u", s->id,
                            n, MANAGER_PORTS_PER_CALL_MAX);
        found = calloc(n ? n : 1, sizeof *found);
        if (!found)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                Port *p = manager_find_port(m, specs[i].proto, specs[i].host_address,
                                            specs[i].host_port);

                if (!p || p->sandbox != s)
                        return fail(e, MANAGER_E_NO_SUCH_PORT,
                                    "Sandbox '%s' does not publish %s '%s' port %u", s->id,
                                    proto_to_string(specs[i].proto), specs[i].host_address,
                                    specs[i].host_port);
                for (size_t j = 0; j < i; j++)
                        if (found[j] == p)
                                return fail(e, MANAGER_E_INVALID,
                                            "Invalid ports for sandbox '%s': %s '%s' port %u is listed twice",
                                            s->id, p->protocol, p->host_address, p->host_port);
                found[i] = p;
        }
        for (size_t i = 0; i < n; i++) {
                port_unpublish(m, found[i], reason);
        }
        if (n > 0 && m->events && m->events->sandbox_changed)
                m->events->sandbox_changed(m, s, "Ports");
        if (n > 0 && m->events && m->events->counts_changed)
                m->events->counts_changed(m);
        return 0;
}

void manager_remove_sandbox(Manager *m, Sandbox *s, const char *reason) {
        while (s->ports) {
                port_unpublish(m, s->ports, reason);
        }
        if (m->events && m->events->sandbox_removed)
                m->events->sandbox_removed(m, s);
        sandbox_free(s);
        if (m->events && m->events->counts_changed)
                m->events->counts_changed(m);
}

int manager_set_guest_addresses(Manager *m, Sandbox *s, const SockaddrUnion *guest4,
                                const SockaddrUnion *guest6, ManagerError *e) {
        int r;

        if (guest4->sa.sa_family == AF_UNSPEC && guest6->sa.sa_family == AF_UNSPEC)
                return fail(e, MANAGER_E_INVALID,
                            "Invalid guest addresses for sandbox '%s': at least one address is needed",
                            s->id);
        r = check_loops(m, s->id, s, guest4, guest6, NULL, NULL, 0, e);
        if (r != 0)
                return r;
        s->guest4 = *guest4;
        s->guest6 = *guest6;
        s->machine = 0;
        sandbox_retarget(m, s);
        if (m->events && m->events->sandbox_changed)
                m->events->sandbox_changed(m, s, "GuestAddresses");
        return 0;
}

void manager_remove_all(Manager *m, const char *reason) {
        while (m->sandboxes)
                manager_remove_sandbox(m, m->sandboxes, reason);
}

int manager_new(Manager **ret, struct ev_loop *loop) {
        Manager *m;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->version = PACKAGE_VERSION;
        m->default_max_sessions = MANAGER_MAX_SESSIONS_DEFAULT;
        m->default_udp_idle_timeout_usec = RELAY_UDP_IDLE_TIMEOUT_DEFAULT_USEC;
        *ret = m;
        return 0;
}

void manager_set_events(Manager *m, const ManagerEvents *events, void *userdata) {
        m->events = events;
        m->userdata = userdata;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        m->events = NULL;
        while (m->sandboxes)
                sandbox_free(m->sandboxes);
        free(m);
        return NULL;
}
