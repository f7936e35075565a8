/* Relay cycles: refuse a guest address that leads back into a published port */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "macro.h"
#include "manager-internal.h"

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
                                 port_proto_to_string(c->first.proto), c->first.host_address,
                                 c->first.host_port, c->first.sandbox_id);
                return manager_fail_parameter(
                        c->e, MANAGER_E_INVALID, c->n_specs > 0 ? "guestAddresses" : "addresses",
                        "Invalid guest address '%s' for %s '%s' port %u of sandbox '%s': guest port %u there is %s, so traffic would loop",
                        sockaddr_format_ip(&c->start_target, a, sizeof a),
                        port_proto_to_string(start->proto), start->host_address, start->host_port,
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
int check_loops(Manager *m, const char *sandbox_id, Sandbox *s, const SockaddrUnion *guest4,
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
        for (Port *p = s ? sandbox_first_port(s) : NULL; p; p = port_next_in_sandbox(p)) {
                loop_node_from_port(&c, p, &x);
                r = loop_check_from(&c, &x);
                if (r != 0)
                        return r;
        }
        return 0;
}
