/* Binding the sockets of a port, and what a failed bind means for the caller */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "macro.h"
#include "manager-internal.h"

#define TCP_BACKLOG 4096
/* How often to retry a port-0 bind of "" or "*" whose number is taken on the other family. */
#define BIND_SAME_PORT_TRIES 32

void bound_port_close(BoundPort *b) {
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
int bind_spec(const PortSpec *spec, BoundPort *b) {
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

/* The published port whose listeners hold part of the endpoint spec wants, if any: "" wants
 * 127.0.0.1 and ::1, "*" everything, a literal its own address; a wildcard listener of the same
 * family holds every address of that family. */
static Port *find_overlapping_port(Manager *m, const PortSpec *spec) {
        SockaddrUnion want[2] = {};
        bool want_all = strcmp(spec->host_address, "*") == 0;
        size_t n_want = 0;

        if (spec->host_address[0] == 0) {
                want[0].in.sin_family = AF_INET;
                want[0].in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                want[1].in6.sin6_family = AF_INET6;
                want[1].in6.sin6_addr = in6addr_loopback;
                n_want = 2;
        } else if (!want_all) {
                if (sockaddr_parse_ip(spec->host_address, &want[0]) < 0)
                        return NULL;
                n_want = 1;
        }
        MANAGER_FOREACH_PORT(p, m) {
                if (p->proto != spec->proto || p->host_port != spec->host_port)
                        continue;
                if (want_all)
                        return p;
                for (size_t i = 0; i < p->n_listen; i++) {
                        SockaddrUnion a = p->listen[i];

                        sockaddr_set_port(&a, 0);
                        for (size_t k = 0; k < n_want; k++)
                                if (a.sa.sa_family == want[k].sa.sa_family &&
                                    (sockaddr_is_wildcard(&a) || sockaddr_is_wildcard(&want[k]) ||
                                     sockaddr_equal(&a, &want[k])))
                                        return p;
                }
        }
        return NULL;
}

int map_bind_error(Manager *m, const char *sandbox_id, const PortSpec *spec, int r, ManagerError *e) {
        const char *proto = port_proto_to_string(spec->proto);
        Port *owner;

        switch (r) {
        case -EADDRINUSE:
                owner = find_overlapping_port(m, spec);
                if (owner)
                        return manager_fail_port(
                                e, MANAGER_E_PORT_IN_USE, spec, owner->sandbox->id,
                                "Cannot publish %s '%s' port %u for sandbox '%s': the port is in use by sandbox '%s' (%s '%s' port %u)",
                                proto, spec->host_address, spec->host_port, sandbox_id,
                                owner->sandbox->id, owner->protocol, owner->host_address,
                                owner->host_port);
                return manager_fail_port(
                        e, MANAGER_E_PORT_IN_USE, spec, NULL,
                        "Cannot publish %s '%s' port %u for sandbox '%s': the port is in use by another program",
                        proto, spec->host_address, spec->host_port, sandbox_id);
        case -EADDRNOTAVAIL:
                return manager_fail_port(
                        e, MANAGER_E_ADDRESS_NOT_AVAILABLE, spec, NULL,
                        "Cannot publish %s '%s' port %u for sandbox '%s': the address is not on this host",
                        proto, spec->host_address, spec->host_port, sandbox_id);
        case -EACCES:
        case -EPERM:
                return manager_fail_port(
                        e, MANAGER_E_PERMISSION_DENIED, spec, NULL,
                        "Cannot publish %s '%s' port %u for sandbox '%s': the kernel refused the bind (privileged port?)",
                        proto, spec->host_address, spec->host_port, sandbox_id);
        case -EMFILE:
        case -ENFILE:
                return manager_fail_port(
                        e, MANAGER_E_LIMIT_EXCEEDED, spec, NULL,
                        "Cannot publish %s '%s' port %u for sandbox '%s': too many open files",
                        proto, spec->host_address, spec->host_port, sandbox_id);
        case -EAFNOSUPPORT:
                return manager_fail_port(
                        e, MANAGER_E_ADDRESS_NOT_AVAILABLE, spec, NULL,
                        "Cannot publish %s '%s' port %u for sandbox '%s': address family not supported",
                        proto, spec->host_address, spec->host_port, sandbox_id);
        default:
                return r;
        }
}
