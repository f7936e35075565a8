/* Socket address parsing and formatting */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef union SockaddrUnion {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_storage storage;
} SockaddrUnion;

/* Longest "[v6addr%scope]:65535" plus NUL. */
#define SOCKADDR_STR_MAX (INET6_ADDRSTRLEN + 16)

socklen_t sockaddr_len(const SockaddrUnion *sa);
uint16_t sockaddr_port(const SockaddrUnion *sa);
void sockaddr_set_port(SockaddrUnion *sa, uint16_t port);

/* Parses a literal IPv4 or IPv6 address (no brackets, no port, no names) into ret (port 0).
 * Returns 0 or -EINVAL. */
int sockaddr_parse_ip(const char *s, SockaddrUnion *ret);

/* Parses "a.b.c.d:port" or "[v6]:port" (port: decimal digits only). Returns 0 or -EINVAL, and
 * then leaves ret alone. */
int sockaddr_parse_hostport(const char *s, SockaddrUnion *ret);

/* "1.2.3.4" / "::1" into buf of at least INET6_ADDRSTRLEN. */
const char *sockaddr_format_ip(const SockaddrUnion *sa, char *buf, size_t size);
/* "1.2.3.4:80" / "[::1]:80" into buf of at least SOCKADDR_STR_MAX. */
const char *sockaddr_format(const SockaddrUnion *sa, char *buf, size_t size);

bool sockaddr_is_wildcard(const SockaddrUnion *sa);
bool sockaddr_equal(const SockaddrUnion *a, const SockaddrUnion *b);
