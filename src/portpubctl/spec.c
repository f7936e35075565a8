/* Port specs and durations of portpubctl's command line */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "spec.h"

#define WHITESPACE " \t\n\r\v\f"

/* Sets *ret_error to the message: -EINVAL, or -ENOMEM when it cannot be allocated. */
_printf_(2, 3) static int fail(char **ret_error, const char *format, ...) {
        va_list ap;
        char *m;
        int r;

        va_start(ap, format);
        r = vasprintf(&m, format, ap);
        va_end(ap);
        if (r < 0) {
                *ret_error = NULL;
                return -ENOMEM;
        }
        *ret_error = m;
        return -EINVAL;
}

int parse_number(const char *s, size_t len, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (len == 0)
                return -EINVAL;
        for (size_t i = 0; i < len; i++)
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (v > (max - (uint64_t) (s[i] - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

/* Port specs */

typedef struct SpecContext {
        const char *spec;
        const char *what; /* "port spec", "port" */
        char **ret_error;
} SpecContext;

#define spec_fail(c, format, ...)                                                                  \
        fail((c)->ret_error, "Invalid %s '%s': " format ".", (c)->what, (c)->spec, ##__VA_ARGS__)

static int parse_port(const SpecContext *c, const char *s, size_t len, const char *side,
                      uint16_t *ret) {
        uint64_t v;
        int r;

        r = parse_number(s, len, UINT16_MAX, &v);
        if (r == -ERANGE)
                return spec_fail(c, "the %s port '%.*s' is out of range, expected 1 to 65535", side,
                                 (int) len, s);
        if (r < 0)
                return spec_fail(c, "the %s port '%.*s' is not a number", side, (int) len, s);
        *ret = (uint16_t) v;
        return 0;
}

/* "N" or "N-M" with N <= M; a range may not include 0, and a single 0 only if allow_zero. */
static int parse_range(const SpecContext *c, const char *s, const char *side, bool allow_zero,
                       uint16_t *ret_first, uint16_t *ret_last) {
        const char *dash = strchr(s, '-');
        uint16_t first, last;
        int r;

        if (!s[0])
                return spec_fail(c, "the %s port is empty", side);
        if (!dash) {
                r = parse_port(c, s, strlen(s), side, &first);
                if (r < 0)
                        return r;
                if (first == 0 && !allow_zero)
                        return spec_fail(c, "%s port 0, expected 1 to 65535", side);
                *ret_first = *ret_last = first;
                return 0;
        }
        if (dash == s)
                return spec_fail(c, "the %s range '%s' has no first port", side, s);
        if (!dash[1])
                return spec_fail(c, "the %s range '%s' has no last port", side, s);
        r = parse_port(c, s, (size_t) (dash - s), side, &first);
        if (r < 0)
                return r;
        r = parse_port(c, dash + 1, strlen(dash + 1), side, &last);
        if (r < 0)
                return r;
        if (first > last)
                return spec_fail(c, "the %s range '%s' is reversed", side, s);
        if (first == 0)
                return spec_fail(c, "the %s range '%s' includes port 0", side, s);
        *ret_first = first;
        *ret_last = last;
        return 0;
}

/* A HOST_ADDR without brackets: IPv4, "*" or "localhost" (the daemon's ""). */
static int parse_host_address(const SpecContext *c, const char *s, PortRange *p) {
        struct in_addr a4;

        if (!s[0])
                return spec_fail(
                        c, "the host address before ':' is empty (IPv6 addresses go in brackets)");
        if (strcmp(s, "localhost") == 0)
                p->host_address[0] = 0;
        else if (strcmp(s, "*") == 0 ||
                 (strlen(s) < sizeof p->host_address && inet_pton(AF_INET, s, &a4) == 1))
                strcpy(p->host_address, s);
        else
                return spec_fail(
                        c, "host address '%s', expected an IPv4 address, [IPv6], '*' or 'localhost'",
                        s);
        return 0;
}

static size_t count_colons(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                n += *s == ':';
        return n;
}

static const char *plural(unsigned n) {
        return n == 1 ? "" : "s";
}

int spec_parse(const char *spec, SpecKind kind, PortRange *ret, char **ret_error) {
        const bool publish = kind == SPEC_PUBLISH;
        const SpecContext c = {
                .spec = spec,
                .what = publish ? "port spec" : "port",
                .ret_error = ret_error,
        };
        const char *want = publish ? "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]"
                                   : "[HOST_ADDR:]HOST_PORT[/tcp|/udp]";
        const char *example = publish ? "[::1]:8080:80" : "[::1]:8080";
        /* The colons between address, host port and guest port. */
        const size_t n_separators = publish ? 2 : 1;
        _cleanup_free_ char *s = NULL;
        PortRange p = { .protocol = "tcp" };
        char *slash, *rest, *guest;
        size_t n;
        int r;

        *ret_error = NULL;
        if (!spec[0])
                return spec_fail(&c, "it is empty, expected %s", want);
        for (const char *q = spec; *q; q++) {
                if (isspace((unsigned char) *q))
                        return spec_fail(&c, "it contains whitespace");
                if (iscntrl((unsigned char) *q))
                        return spec_fail(&c, "it contains a control character");
        }
        s = strdup(spec);
        if (!s)
                return -ENOMEM;

        slash = strrchr(s, '/');
        if (slash) {
                *slash = 0;
                if (strcasecmp(slash + 1, "tcp") == 0)
                        p.protocol = "tcp";
                else if (strcasecmp(slash + 1, "udp") == 0)
                        p.protocol = "udp";
                else if (!slash[1])
                        return spec_fail(&c, "no protocol after '/', expected tcp or udp");
                else
                        return spec_fail(&c, "protocol '%s', expected tcp or udp", slash + 1);
        }

        rest = s;
        if (s[0] == '[') {
                char *close = strchr(s, ']');
                struct in6_addr a6;

                if (!close)
                        return spec_fail(&c, "'[' without ']'");
                *close = 0;
                if (!s[1])
                        return spec_fail(&c, "the brackets hold no IPv6 address");
                if (strlen(s + 1) >= sizeof p.host_address || inet_pton(AF_INET6, s + 1, &a6) != 1)
                        return spec_fail(&c, "'%s' is not an IPv6 address", s + 1);
                strcpy(p.host_address, s + 1);
                if (close[1] != ':')
                        return spec_fail(&c, "expected ':' and the port after ']', as in %s",
                                         example);
                rest = close + 2;
                n = count_colons(rest);
                if (n == 0 && publish)
                        return spec_fail(
                                &c,
                                "expected HOST_PORT:GUEST_PORT after the address (an empty HOST_PORT for one the kernel picks)");
                if (n > n_separators - 1)
                        return spec_fail(&c, "too many ':' after the address, expected %s", want);
        } else {
                n = count_colons(s);
                if (n > n_separators)
                        return spec_fail(&c,
                                         "too many ':', expected %s (IPv6 addresses in brackets, as in %s)",
                                         want, example);
                if (n == n_separators) {
                        char *colon = strchr(s, ':');

                        *colon = 0;
                        r = parse_host_address(&c, s, &p);
                        if (r < 0)
                                return r;
                        rest = colon + 1;
                }
        }

        if (!publish) {
                r = parse_range(&c, rest, "host", false, &p.host_first, &p.host_last);
                if (r < 0)
                        return r;
        } else {
                /* rest is HOST_PORT:GUEST_PORT or, without a host port, GUEST_PORT. */
                guest = strchr(rest, ':');
                if (guest)
                        *guest++ = 0;
                else
                        guest = rest;
                r = parse_range(&c, guest, "guest", false, &p.guest_first, &p.guest_last);
                if (r < 0)
                        return r;
                if (guest != rest && rest[0]) {
                        r = parse_range(&c, rest, "host", true, &p.host_first, &p.host_last);
                        if (r < 0)
                                return r;
                }
                if (p.host_first != 0 && p.host_last - p.host_first != p.guest_last - p.guest_first) {
                        unsigned h = (unsigned) (p.host_last - p.host_first) + 1,
                                 g = (unsigned) (p.guest_last - p.guest_first) + 1;

                        return spec_fail(&c, "the host range has %u port%s, the guest range %u", h,
                                         plural(h), g);
                }
        }
        if (port_range_size(&p) > TUPLES_PER_CALL_MAX)
                return spec_fail(&c, "it has %u ports, more than the %u of one call",
                                 port_range_size(&p), TUPLES_PER_CALL_MAX);

        *ret = p;
        return 0;
}

int spec_parse_list(char *const *specs, size_t n, SpecKind kind, PortRange **ret, char **ret_error) {
        _cleanup_free_ PortRange *ranges = NULL;
        size_t total = 0;
        int r;

        *ret_error = NULL;
        ranges = calloc(n ? n : 1, sizeof *ranges);
        if (!ranges)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = spec_parse(specs[i], kind, &ranges[i], ret_error);
                if (r < 0)
                        return r;
                total += port_range_size(&ranges[i]);
                if (total > TUPLES_PER_CALL_MAX)
                        return fail(ret_error, "Too many ports: more than %u in one call (at '%s').",
                                    TUPLES_PER_CALL_MAX, specs[i]);
        }
        *ret = TAKE_PTR(ranges);
        return 0;
}

/* Durations */

#define USEC_PER_MINUTE (60 * USEC_PER_SEC)
#define USEC_PER_HOUR (60 * USEC_PER_MINUTE)
#define USEC_PER_DAY (24 * USEC_PER_HOUR)
#define USEC_PER_WEEK (7 * USEC_PER_DAY)
/* systemd's: a month is 30.44 days, a year 365.25. */
#define USEC_PER_MONTH (2629800 * USEC_PER_SEC)
#define USEC_PER_YEAR (31557600 * USEC_PER_SEC)

static const struct {
        const char *name;
        uint64_t usec;
} duration_units[] = {
        { "us", 1 },
        { "usec", 1 },
        { "\xce\xbcs", 1 }, /* μs, GREEK SMALL LETTER MU */
        { "\xc2\xb5s", 1 }, /* µs, MICRO SIGN */
        { "ms", USEC_PER_MSEC },
        { "msec", USEC_PER_MSEC },
        { "s", USEC_PER_SEC },
        { "sec", USEC_PER_SEC },
        { "second", USEC_PER_SEC },
        { "seconds", USEC_PER_SEC },
        { "m", USEC_PER_MINUTE },
        { "min", USEC_PER_MINUTE },
        { "minute", USEC_PER_MINUTE },
        { "minutes", USEC_PER_MINUTE },
        { "h", USEC_PER_HOUR },
        { "hr", USEC_PER_HOUR },
        { "hour", USEC_PER_HOUR },
        { "hours", USEC_PER_HOUR },
        { "d", USEC_PER_DAY },
        { "day", USEC_PER_DAY },
        { "days", USEC_PER_DAY },
        { "w", USEC_PER_WEEK },
        { "week", USEC_PER_WEEK },
        { "weeks", USEC_PER_WEEK },
        { "M", USEC_PER_MONTH },
        { "month", USEC_PER_MONTH },
        { "months", USEC_PER_MONTH },
        { "y", USEC_PER_YEAR },
        { "year", USEC_PER_YEAR },
        { "years", USEC_PER_YEAR },
};

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

/* Letters, and the bytes of μ. */
static bool is_unit_char(char c) {
        return isalpha((unsigned char) c) || (unsigned char) c >= 0x80;
}

static int lookup_unit(const char *s, size_t len, uint64_t *ret) {
        for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
                if (strlen(duration_units[i].name) == len &&
                    memcmp(duration_units[i].name, s, len) == 0) {
                        *ret = duration_units[i].usec;
                        return 0;
                }
        return -EINVAL;
}

#define duration_fail(format, ...)                                                                 \
        fail(ret_error, "Invalid %s%s'%s': " format ".", name ? name : "duration",                 \
             name ? "=" : " ", s, ##__VA_ARGS__)

int parse_duration(const char *name, const char *s, uint64_t *ret_usec, char **ret_error) {
        const char *p = s + strspn(s, WHITESPACE);
        uint64_t total = 0;
        bool any = false, nonzero = false;

        *ret_error = NULL;
        if (strncmp(p, "infinity", 8) == 0 && p[8 + strspn(p + 8, WHITESPACE)] == 0) {
                *ret_usec = 0;
                return 0;
        }
        for (;;) {
                const char *fraction = NULL, *unit_start;
                uint64_t v = 0, unit = USEC_PER_SEC, usec;

                p += strspn(p, WHITESPACE);
                if (!*p)
                        break;
                if (*p == '-' && !any)
                        return duration_fail("it is negative");
                if (!is_digit(*p))
                        return duration_fail("expected a number at '%s'", p);
                for (; is_digit(*p); p++) {
                        if (v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
                                return duration_fail("it is too long");
                        v = v * 10 + (uint64_t) (*p - '0');
                        nonzero = nonzero || *p != '0';
                }
                if (*p == '.') {
                        p++;
                        if (!is_digit(*p))
                                return duration_fail("expected a digit after '.'");
                        fraction = p;
                        while (is_digit(*p)) {
                                nonzero = nonzero || *p != '0';
                                p++;
                        }
                }
                p += strspn(p, WHITESPACE);
                unit_start = p;
                while (is_unit_char(*p))
                        p++;
                if (p > unit_start && lookup_unit(unit_start, (size_t) (p - unit_start), &unit) < 0)
                        return duration_fail(
                                "unknown unit '%.*s', expected us, ms, s, min, h, d, w, M or y",
                                (int) (p - unit_start), unit_start);

                if (v > UINT64_MAX / unit)
                        return duration_fail("it is too long");
                usec = v * unit;
                if (fraction)
                        for (uint64_t m = unit / 10; is_digit(*fraction) && m > 0;
                             fraction++, m /= 10) {
                                uint64_t add = (uint64_t) (*fraction - '0') * m;

                                if (usec > UINT64_MAX - add)
                                        return duration_fail("it is too long");
                                usec += add;
                        }
                if (total > UINT64_MAX - usec)
                        return duration_fail("it is too long");
                total += usec;
                any = true;
        }
        if (!any)
                return duration_fail("it is empty, expected a time such as 30s, 5min or infinity");
        if (total == 0 && nonzero)
                return duration_fail("it is shorter than 1us (0 and infinity mean never)");
        *ret_usec = total;
        return 0;
}
