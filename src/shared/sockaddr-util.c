/* Socket address parsing and formatting */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "sockaddr-util.h"

socklen_t sockaddr_len(const SockaddrUnion *sa) {
        switch (sa->sa.sa_family) {
        case AF_INET:
                return sizeof(struct sockaddr_in);
        case AF_INET6:
                return sizeof(struct sockaddr_in6);
        default:
                return 0;
        }
}

uint16_t sockaddr_port(const SockaddrUnion *sa) {
        if (sa->sa.sa_family == AF_INET)
                return ntohs(sa->in.sin_port);
        if (sa->sa.sa_family == AF_INET6)
                return ntohs(sa->in6.sin6_port);
        return 0;
}

void sockaddr_set_port(SockaddrUnion *sa, uint16_t port) {
        if (sa->sa.sa_family == AF_INET)
                sa->in.sin_port = htons(port);
        else if (sa->sa.sa_family == AF_INET6)
                sa->in6.sin6_port = htons(port);
}

int sockaddr_parse_ip(const char *s, SockaddrUnion *ret) {
        SockaddrUnion u = {};

        if (!s)
                return -EINVAL;
        if (inet_pton(AF_INET, s, &u.in.sin_addr) == 1) {
                u.in.sin_family = AF_INET;
                *ret = u;
                return 0;
        }
        if (inet_pton(AF_INET6, s, &u.in6.sin6_addr) == 1) {
                u.in6.sin6_family = AF_INET6;
                *ret = u;
                return 0;
        }
        return -EINVAL;
}

int sockaddr_parse_hostport(const char *s, SockaddrUnion *ret) {
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon, *hs, *he;
        SockaddrUnion u;
        unsigned long port;
        char *end;

        if (!s)
                return -EINVAL;
        if (s[0] == '[') {
                hs = s + 1;
                he = strchr(hs, ']');
                if (!he || he[1] != ':')
                        return -EINVAL;
                colon = he + 1;
        } else {
                hs = s;
                colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;
                he = colon;
        }
        if ((size_t) (he - hs) >= sizeof host || he == hs)
                return -EINVAL;
        memcpy(host, hs, (size_t) (he - hs));
        host[he - hs] = 0;
        if (s[0] != '[' && strchr(host, ':'))
                return -EINVAL;

        /* strtoul() would also take blanks and a sign before the digits. */
        if (colon[1] < '0' || colon[1] > '9')
                return -EINVAL;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno != 0 || *end || port > 65535)
                return -EINVAL;
        if (sockaddr_parse_ip(host, &u) < 0)
                return -EINVAL;
        if (s[0] == '[' && u.sa.sa_family != AF_INET6)
                return -EINVAL;
        sockaddr_set_port(&u, (uint16_t) port);
        *ret = u;
        return 0;
}

const char *sockaddr_format_ip(const SockaddrUnion *sa, char *buf, size_t size) {
        const void *a = sa->sa.sa_family == AF_INET ? (const void *) &sa->in.sin_addr
                                                    : (const void *) &sa->in6.sin6_addr;
        if ((sa->sa.sa_family != AF_INET && sa->sa.sa_family != AF_INET6) ||
            !inet_ntop(sa->sa.sa_family, a, buf, (socklen_t) size))
                snprintf(buf, size, "?");
        return buf;
}

const char *sockaddr_format(const SockaddrUnion *sa, char *buf, size_t size) {
        char ip[INET6_ADDRSTRLEN];

        sockaddr_format_ip(sa, ip, sizeof ip);
        if (sa->sa.sa_family == AF_INET6)
                snprintf(buf, size, "[%s]:%u", ip, sockaddr_port(sa));
        else
                snprintf(buf, size, "%s:%u", ip, sockaddr_port(sa));
        return buf;
}

bool sockaddr_is_wildcard(const SockaddrUnion *sa) {
        if (sa->sa.sa_family == AF_INET)
                return sa->in.sin_addr.s_addr == htonl(INADDR_ANY);
        if (sa->sa.sa_family == AF_INET6)
                return IN6_IS_ADDR_UNSPECIFIED(&sa->in6.sin6_addr);
        return false;
}

bool sockaddr_equal(const SockaddrUnion *a, const SockaddrUnion *b) {
        if (a->sa.sa_family != b->sa.sa_family)
                return false;
        if (a->sa.sa_family == AF_INET)
                return a->in.sin_addr.s_addr == b->in.sin_addr.s_addr &&
                       a->in.sin_port == b->in.sin_port;
        if (a->sa.sa_family == AF_INET6)
                return memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(struct in6_addr)) == 0 &&
                       a->in6.sin6_port == b->in6.sin6_port;
        return false;
}
