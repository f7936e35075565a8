/* Port specs and durations of portpubctl's command line: parsed and checked, never printed
 *
 * Every parser returns 0, or -EINVAL with *ret_error an allocated message that quotes the input
 * and says what is wrong in it (the caller prints it), or -ENOMEM with *ret_error NULL. */
#pragma once

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The daemon takes at most this many tuples in one call; a bigger range would only fail there,
 * after the whole message was built and sent. */
#define TUPLES_PER_CALL_MAX 1024U

/* One SPEC of the command line: a run of consecutive host ports to a run of guest ports of
 * equal length, or (host port 0) that many ports the kernel picks. */
typedef struct PortRange {
        const char *protocol; /* "tcp" or "udp" */
        char host_address[INET6_ADDRSTRLEN]; /* "" (localhost), "*", IPv4 or IPv6 */
        uint16_t host_first, host_last; /* 0, 0: kernel-picked */
        uint16_t guest_first, guest_last; /* 0 for specs without a guest port */
} PortRange;

/* The number of tuples: the guest range's length, or the host range's without a guest port. */
static inline unsigned port_range_size(const PortRange *p) {
        if (p->guest_first != 0)
                return (unsigned) (p->guest_last - p->guest_first) + 1;
        return (unsigned) (p->host_last - p->host_first) + 1;
}

/* The k-th tuple of a range: host port 0 stays 0, for the kernel to pick. */
static inline uint16_t port_range_host(const PortRange *p, unsigned k) {
        return p->host_first == 0 ? 0 : (uint16_t) (p->host_first + k);
}

static inline uint16_t port_range_guest(const PortRange *p, unsigned k) {
        return (uint16_t) (p->guest_first + k);
}

typedef enum SpecKind {
        /* [HOST_ADDR:]HOST_PORT[-END]:GUEST_PORT[-END][/tcp|/udp], the host port empty, 0 or
         * omitted (a bare GUEST_PORT[-END]) for kernel-picked ones: docker run -p. */
        SPEC_PUBLISH,
        /* [HOST_ADDR:]HOST_PORT[-END][/tcp|/udp]: a published port of unpublish and show. */
        SPEC_PORT,
} SpecKind;

/* A decimal number without sign or spaces, 0 to max, of s[0..len): -EINVAL, -ERANGE. */
int parse_number(const char *s, size_t len, uint64_t max, uint64_t *ret);

int spec_parse(const char *spec, SpecKind kind, PortRange *ret, char **ret_error);

/* Parses specs[0..n) into *ret (an allocated array of n); their tuples together stay within
 * TUPLES_PER_CALL_MAX. */
int spec_parse_list(char *const *specs, size_t n, SpecKind kind, PortRange **ret, char **ret_error);

/* A time span as systemd writes one: "30s", "5min", "1h30min", "1.5s", "250ms", a bare number
 * of seconds; "0" and "infinity" both give 0 (never). name is what the message calls the
 * value, e.g. "--idle-timeout" ("duration" if NULL). */
int parse_duration(const char *name, const char *s, uint64_t *ret_usec, char **ret_error);
