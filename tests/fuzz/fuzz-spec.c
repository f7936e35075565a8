/* Fuzzes portpubctl's parsers: publish specs, port specs, spec lists and durations
 *
 * The first byte picks the parser, the rest up to the first NUL is its input (a list takes
 * every NUL-separated string). What a parser takes must hold its invariants and read back the
 * same when written out again; what it refuses must get a message that quotes it. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

#define LIST_MAX 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(x)                                                                                   \
        do {                                                                                       \
                if (!(x)) {                                                                        \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);      \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static void check_address(const char *a) {
        struct in6_addr a6;
        struct in_addr a4;

        check(memchr(a, 0, INET6_ADDRSTRLEN));
        check(a[0] == 0 || strcmp(a, "*") == 0 || inet_pton(AF_INET, a, &a4) == 1 ||
              inet_pton(AF_INET6, a, &a6) == 1);
}

static void check_range(const PortRange *p, SpecKind kind) {
        check(strcmp(p->protocol, "tcp") == 0 || strcmp(p->protocol, "udp") == 0);
        check_address(p->host_address);
        check(p->host_first <= p->host_last);
        check(port_range_size(p) >= 1 && port_range_size(p) <= TUPLES_PER_CALL_MAX);
        if (kind == SPEC_PORT) {
                check(p->host_first >= 1);
                check(p->guest_first == 0 && p->guest_last == 0);
                return;
        }
        check(p->guest_first >= 1 && p->guest_first <= p->guest_last);
        if (p->host_first == 0)
                check(p->host_last == 0); /* kernel-picked, every tuple */
        else
                check(p->host_last - p->host_first == p->guest_last - p->guest_first);
}

/* Writes p out as a spec and parses that again: the same range. */
static void check_round_trip(const PortRange *p, SpecKind kind) {
        char spec[128], address[INET6_ADDRSTRLEN + 3], *error = NULL;
        PortRange q;
        int n;

        if (p->host_address[0] == 0)
                snprintf(address, sizeof address, "localhost");
        else if (strchr(p->host_address, ':'))
                snprintf(address, sizeof address, "[%s]", p->host_address);
        else
                snprintf(address, sizeof address, "%s", p->host_address);
        if (kind == SPEC_PORT)
                n = snprintf(spec, sizeof spec, "%s:%u-%u/%s", address, p->host_first, p->host_last,
                             p->protocol);
        else if (p->host_first == 0)
                n = snprintf(spec, sizeof spec, "%s::%u-%u/%s", address, p->guest_first,
                             p->guest_last, p->protocol);
        else
                n = snprintf(spec, sizeof spec, "%s:%u-%u:%u-%u/%s", address, p->host_first,
                             p->host_last, p->guest_first, p->guest_last, p->protocol);
        check(n > 0 && (size_t) n < sizeof spec);
        if (spec_parse(spec, kind, &q, &error) == -ENOMEM)
                return;
        if (error)
                fprintf(stderr, "'%s': %s\n", spec, error);
        check(!error);
        check(strcmp(p->protocol, q.protocol) == 0);
        check(strcmp(p->host_address, q.host_address) == 0);
        check(p->host_first == q.host_first && p->host_last == q.host_last);
        check(p->guest_first == q.guest_first && p->guest_last == q.guest_last);
}

static void check_refused(int r, const char *input, char *error) {
        char *quoted;

        if (r == -ENOMEM) {
                check(!error);
                return;
        }
        check(r == -EINVAL && error);
        if (asprintf(&quoted, "'%s'", input) >= 0) {
                check(strstr(error, quoted));
                free(quoted);
        }
        free(error);
}

static void fuzz_spec(const char *s, SpecKind kind) {
        PortRange p;
        char *error = NULL;
        int r;

        r = spec_parse(s, kind, &p, &error);
        if (r < 0) {
                check_refused(r, s, error);
                return;
        }
        check(!error);
        check_range(&p, kind);
        check_round_trip(&p, kind);
}

static void fuzz_list(char **specs, size_t n, SpecKind kind) {
        PortRange *ranges = NULL;
        char *error = NULL;
        size_t total = 0;
        int r;

        r = spec_parse_list(specs, n, kind, &ranges, &error);
        if (r < 0) {
                check(!ranges);
                if (r == -EINVAL)
                        check(error && (strncmp(error, "Invalid ", 8) == 0 ||
                                        strncmp(error, "Too many ports: ", 16) == 0));
                free(error);
                return;
        }
        check(!error && ranges);
        for (size_t i = 0; i < n; i++) {
                check_range(&ranges[i], kind);
                total += port_range_size(&ranges[i]);
        }
        check(total <= TUPLES_PER_CALL_MAX);
        free(ranges);
}

static void fuzz_duration(const char *s) {
        char again[32], *error = NULL;
        uint64_t usec, usec2;
        int r;

        r = parse_duration("--idle-timeout", s, &usec, &error);
        if (r < 0) {
                check_refused(r, s, error);
                return;
        }
        check(!error);
        snprintf(again, sizeof again, "%" PRIu64 "us", usec);
        if (parse_duration(NULL, again, &usec2, &error) == -ENOMEM)
                return;
        check(!error && usec2 == usec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *input, *specs[LIST_MAX];
        size_t n = 0;

        if (size < 1)
                return 0;
        input = malloc(size);
        if (!input)
                return 0;
        memcpy(input, data + 1, size - 1);
        input[size - 1] = 0;

        switch (data[0] % 5) {
        case 0:
                fuzz_spec(input, SPEC_PUBLISH);
                break;
        case 1:
                fuzz_spec(input, SPEC_PORT);
                break;
        case 2:
        case 3:
                for (char *s = input; n < LIST_MAX && s < input + size - 1; s += strlen(s) + 1)
                        specs[n++] = s;
                if (n == 0)
                        specs[n++] = input;
                fuzz_list(specs, n, data[0] % 5 == 2 ? SPEC_PUBLISH : SPEC_PORT);
                break;
        default:
                fuzz_duration(input);
                break;
        }
        free(input);
        return 0;
}
