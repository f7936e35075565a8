/* Tests for portpubctl's spec and duration parsers: what each spec expands to, what each bad
 * one is told */

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "spec.h"

#define P SPEC_PUBLISH
#define U SPEC_PORT

/* A spec the parser takes, and the range it must give. */
typedef struct Valid {
        SpecKind kind;
        const char *spec;
        const char *protocol, *host_address;
        uint16_t host_first, host_last, guest_first, guest_last;
        unsigned n_tuples;
} Valid;

static const Valid valid[] = {
        /* publish: HOST_PORT:GUEST_PORT */
        { P, "8080:80", "tcp", "", 8080, 8080, 80, 80, 1 },
        { P, "1:1", "tcp", "", 1, 1, 1, 1, 1 },
        { P, "65535:65535", "tcp", "", 65535, 65535, 65535, 65535, 1 },
        { P, "8080:80/tcp", "tcp", "", 8080, 8080, 80, 80, 1 },
        { P, "8080:80/udp", "udp", "", 8080, 8080, 80, 80, 1 },
        { P, "8080:80/TCP", "tcp", "", 8080, 8080, 80, 80, 1 },
        { P, "8080:80/Udp", "udp", "", 8080, 8080, 80, 80, 1 },
        { P, "08080:080", "tcp", "", 8080, 8080, 80, 80, 1 },
        /* ranges of equal length */
        { P, "8000-8002:9000-9002", "tcp", "", 8000, 8002, 9000, 9002, 3 },
        { P, "8000-8000:9000-9000", "tcp", "", 8000, 8000, 9000, 9000, 1 },
        { P, "1-1024:2001-3024", "tcp", "", 1, 1024, 2001, 3024, 1024 },
        { P, "65534-65535:1-2/udp", "udp", "", 65534, 65535, 1, 2, 2 },
        /* host addresses */
        { P, "127.0.0.1:8080:80", "tcp", "127.0.0.1", 8080, 8080, 80, 80, 1 },
        { P, "0.0.0.0:8080:80", "tcp", "0.0.0.0", 8080, 8080, 80, 80, 1 },
        { P, "*:53:53/udp", "udp", "*", 53, 53, 53, 53, 1 },
        { P, "localhost:8080:80", "tcp", "", 8080, 8080, 80, 80, 1 },
        { P, "[::1]:8080:80", "tcp", "::1", 8080, 8080, 80, 80, 1 },
        { P, "[::]:8080:80", "tcp", "::", 8080, 8080, 80, 80, 1 },
        { P, "[fd00::2]:10-12:20-22/udp", "udp", "fd00::2", 10, 12, 20, 22, 3 },
        { P, "[::ffff:127.0.0.1]:80:80", "tcp", "::ffff:127.0.0.1", 80, 80, 80, 80, 1 },
        { P, "[0000:0000:0000:0000:0000:ffff:127.0.0.1]:1:1", "tcp",
          "0000:0000:0000:0000:0000:ffff:127.0.0.1", 1, 1, 1, 1, 1 },
        /* kernel-picked host ports: host port 0 for every tuple */
        { P, "0:80", "tcp", "", 0, 0, 80, 80, 1 },
        { P, ":80", "tcp", "", 0, 0, 80, 80, 1 },
        { P, "80", "tcp", "", 0, 0, 80, 80, 1 },
        { P, "80/udp", "udp", "", 0, 0, 80, 80, 1 },
        { P, "80-82", "tcp", "", 0, 0, 80, 82, 3 },
        { P, ":80-82/udp", "udp", "", 0, 0, 80, 82, 3 },
        { P, "0:80-82", "tcp", "", 0, 0, 80, 82, 3 },
        { P, "127.0.0.1::80", "tcp", "127.0.0.1", 0, 0, 80, 80, 1 },
        { P, "127.0.0.1::80-82", "tcp", "127.0.0.1", 0, 0, 80, 82, 3 },
        { P, "127.0.0.1:0:80/udp", "udp", "127.0.0.1", 0, 0, 80, 80, 1 },
        { P, "[::1]::80", "tcp", "::1", 0, 0, 80, 80, 1 },
        { P, "[::1]:0:80", "tcp", "::1", 0, 0, 80, 80, 1 },
        { P, "*::53/udp", "udp", "*", 0, 0, 53, 53, 1 },
        { P, "localhost::80", "tcp", "", 0, 0, 80, 80, 1 },
        { P, "1-1024", "tcp", "", 0, 0, 1, 1024, 1024 },
        /* unpublish/show: [HOST_ADDR:]HOST_PORT */
        { U, "8080", "tcp", "", 8080, 8080, 0, 0, 1 },
        { U, "8080/udp", "udp", "", 8080, 8080, 0, 0, 1 },
        { U, "8080/TCP", "tcp", "", 8080, 8080, 0, 0, 1 },
        { U, "65535", "tcp", "", 65535, 65535, 0, 0, 1 },
        { U, "8000-8009", "tcp", "", 8000, 8009, 0, 0, 10 },
        { U, "127.0.0.1:8080", "tcp", "127.0.0.1", 8080, 8080, 0, 0, 1 },
        { U, "[::1]:8080", "tcp", "::1", 8080, 8080, 0, 0, 1 },
        { U, "*:53/udp", "udp", "*", 53, 53, 0, 0, 1 },
        { U, "localhost:8080/tcp", "tcp", "", 8080, 8080, 0, 0, 1 },
        { U, "[fd00::1]:1-3/udp", "udp", "fd00::1", 1, 3, 0, 0, 3 },
};

/* A spec the parser refuses, and a fragment of what it must say. */
typedef struct Invalid {
        SpecKind kind;
        const char *spec;
        const char *fragment;
} Invalid;

static const Invalid invalid[] = {
        /* empty parts */
        { P, "", "it is empty" },
        { P, ":", "the guest port is empty" },
        { P, "80:", "the guest port is empty" },
        { P, "::80", "the host address before ':' is empty" },
        { P, "127.0.0.1::", "the guest port is empty" },
        { P, "80:80/", "no protocol after '/'" },
        { P, "/tcp", "the guest port is empty" },
        { P, "-80:80", "the host range '-80' has no first port" },
        { P, "80-:80", "the host range '80-' has no last port" },
        { P, "80:80-", "the guest range '80-' has no last port" },
        { P, "[]:80:80", "the brackets hold no IPv6 address" },
        { U, "", "it is empty" },
        { U, "127.0.0.1:", "the host port is empty" },
        { U, ":80", "the host address before ':' is empty" },
        /* numbers */
        { P, "65536:80", "the host port '65536' is out of range" },
        { P, "80:65536", "the guest port '65536' is out of range" },
        { P, "70000:80", "the host port '70000' is out of range" },
        { P, "99999999999999999999999:80", "out of range" },
        { P, "80:184467440737095516160", "the guest port '184467440737095516160' is out of range" },
        { P, "80:0", "guest port 0, expected 1 to 65535" },
        { P, "0:0", "guest port 0" },
        { P, "0", "guest port 0" },
        { P, "0-2:9000-9002", "the host range '0-2' includes port 0" },
        { P, "0-0:80", "the host range '0-0' includes port 0" },
        { P, "80:0-2", "the guest range '0-2' includes port 0" },
        { P, "80:abc", "the guest port 'abc' is not a number" },
        { P, "abc:80", "the host port 'abc' is not a number" },
        { P, "+80:80", "the host port '+80' is not a number" },
        { P, "80:0x50", "the guest port '0x50' is not a number" },
        { U, "0", "host port 0, expected 1 to 65535" },
        { U, "65536", "the host port '65536' is out of range" },
        { U, "0-3", "includes port 0" },
        /* ranges */
        { P, "8080:80-90", "the host range has 1 port, the guest range 11" },
        { P, "8000-8002:9000-9001", "the host range has 3 ports, the guest range 2" },
        { P, "90-80:1-11", "the host range '90-80' is reversed" },
        { P, "80:90-80", "the guest range '90-80' is reversed" },
        { P, "80-90-100:80", "the host port '90-100' is not a number" },
        { P, "9000-8000:1-1001", "reversed" },
        { U, "90-80", "the host range '90-80' is reversed" },
        /* too many tuples */
        { P, "1-1025:1-1025", "it has 1025 ports, more than the 1024 of one call" },
        { P, "1-65535:1-65535", "it has 65535 ports" },
        { P, "1-1025", "it has 1025 ports" },
        { U, "1-2000", "it has 2000 ports" },
        /* protocols */
        { P, "80:80/sctp", "protocol 'sctp', expected tcp or udp" },
        { P, "80:80/tcp6", "protocol 'tcp6'" },
        { P, "80:80/tcp/udp", "the guest port '80/tcp' is not a number" },
        { P, "80:80/ tcp", "whitespace" },
        { U, "80/sctp", "protocol 'sctp'" },
        /* addresses */
        { P, "host:80:80",
          "host address 'host', expected an IPv4 address, [IPv6], '*' or 'localhost'" },
        { P, "127.0.0.256:80:80", "host address '127.0.0.256'" },
        { P, "127.1:80:80", "host address '127.1'" },
        { P, "[127.0.0.1]:80:80", "'127.0.0.1' is not an IPv6 address" },
        { P, "[::1:80:80", "'[' without ']'" },
        { P, "[::1]80:80", "expected ':' and the port after ']'" },
        { P, "[::1]", "expected ':' and the port after ']'" },
        { P, "[::1]:80", "expected HOST_PORT:GUEST_PORT after the address" },
        { P, "[::1]:1:2:3", "too many ':' after the address" },
        { P, "[::1]:0:80:", "too many ':' after the address" },
        { P, "[fe80::1%lo]:80:80", "'fe80::1%lo' is not an IPv6 address" },
        { P, "[::1]x:80:80", "expected ':' and the port after ']'" },
        { P, "::1:80:80", "IPv6 addresses in brackets, as in [::1]:8080:80" },
        { P, "1:2:3:4", "too many ':'" },
        { P, "fd00::1::80", "too many ':'" },
        { P, "*:*:80", "the host port '*' is not a number" },
        { U, "::1:8080", "IPv6 addresses in brackets, as in [::1]:8080" },
        { U, "80:80", "host address '80'" },
        { U, "[::1]:80:80", "too many ':' after the address" },
        { U, "[::1]", "expected ':' and the port after ']'" },
        /* junk and whitespace */
        { P, " 80:80", "it contains whitespace" },
        { P, "80:80 ", "it contains whitespace" },
        { P, "80 :80", "it contains whitespace" },
        { P, "80:80\t", "it contains whitespace" },
        { P, "80:80\x01", "it contains a control character" },
        { P, "80:80x", "the guest port '80x' is not a number" },
        { P, "x80:80", "the host port 'x80' is not a number" },
        { P, "80:80,81", "the guest port '80,81' is not a number" },
        { P, "80:\xc3\xa9", "is not a number" },
        { U, "8080 ", "it contains whitespace" },
        { U, "8080x", "the host port '8080x' is not a number" },
};

static void test_valid(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(valid); i++) {
                const Valid *v = &valid[i];
                char *error = (char *) "untouched";
                PortRange p;

                if (spec_parse(v->spec, v->kind, &p, &error) != 0)
                        g_error("'%s' refused: %s", v->spec, error);
                g_assert_null(error);
                g_assert_cmpstr(p.protocol, ==, v->protocol);
                g_assert_cmpstr(p.host_address, ==, v->host_address);
                if (p.host_first != v->host_first || p.host_last != v->host_last ||
                    p.guest_first != v->guest_first || p.guest_last != v->guest_last)
                        g_error("'%s': host %u-%u guest %u-%u, expected host %u-%u guest %u-%u",
                                v->spec, p.host_first, p.host_last, p.guest_first, p.guest_last,
                                v->host_first, v->host_last, v->guest_first, v->guest_last);
                g_assert_cmpuint(port_range_size(&p), ==, v->n_tuples);
                /* The tuples sent: kernel-picked host ports stay 0, the others run along. */
                for (unsigned k = 0; k < v->n_tuples; k++) {
                        g_assert_cmpuint(port_range_host(&p, k), ==,
                                         v->host_first == 0 ? 0 : v->host_first + k);
                        if (v->kind == SPEC_PUBLISH)
                                g_assert_cmpuint(port_range_guest(&p, k), ==, v->guest_first + k);
                }
        }
}

static void test_invalid(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(invalid); i++) {
                const Invalid *v = &invalid[i];
                g_autofree char *quoted = g_strdup_printf("'%s'", v->spec);
                char *error = NULL;
                PortRange p, before;
                int r;

                memset(&p, 0xa5, sizeof p);
                before = p;
                r = spec_parse(v->spec, v->kind, &p, &error);
                if (r != -EINVAL)
                        g_error("'%s' (%s): %d, expected -EINVAL", v->spec,
                                v->kind == P ? "publish" : "port", r);
                g_assert_nonnull(error);
                if (!g_str_has_prefix(error, v->kind == P ? "Invalid port spec '" : "Invalid port '") ||
                    !strstr(error, quoted) || !strstr(error, v->fragment))
                        g_error("'%s': message '%s', expected it to quote the spec and say '%s'",
                                v->spec, error, v->fragment);
                /* A refused spec leaves the caller's range alone. */
                g_assert_cmpmem(&p, sizeof p, &before, sizeof before);
                free(error);
        }
}

static void test_counts(void) {
        /* The message of the failing assertion says which case broke; this says there are
         * enough of them. */
        g_assert_cmpuint(G_N_ELEMENTS(valid) + G_N_ELEMENTS(invalid), >=, 80);
}

static void test_list(void) {
        char *specs[] = { (char *) "1000-2023:3000-4023", (char *) "5000:5000" };
        char *ok[] = { (char *) "8080:80", (char *) "[::1]::81-82/udp" };
        PortRange *ranges = NULL;
        char *error = NULL;

        /* One call takes 1024 tuples in all: the spec past that is named. */
        g_assert_cmpint(spec_parse_list(specs, 1, SPEC_PUBLISH, &ranges, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpuint(port_range_size(&ranges[0]), ==, 1024);
        g_clear_pointer(&ranges, free);

        g_assert_cmpint(spec_parse_list(specs, 2, SPEC_PUBLISH, &ranges, &error), ==, -EINVAL);
        g_assert_null(ranges);
        g_assert_cmpstr(error, ==, "Too many ports: more than 1024 in one call (at '5000:5000').");
        g_clear_pointer(&error, free);

        g_assert_cmpint(spec_parse_list(ok, 2, SPEC_PUBLISH, &ranges, &error), ==, 0);
        g_assert_cmpstr(ranges[0].host_address, ==, "");
        g_assert_cmpuint(ranges[0].host_first, ==, 8080);
        g_assert_cmpstr(ranges[1].host_address, ==, "::1");
        g_assert_cmpstr(ranges[1].protocol, ==, "udp");
        g_assert_cmpuint(port_range_size(&ranges[1]), ==, 2);
        g_clear_pointer(&ranges, free);

        /* The first bad spec is the one reported. */
        ok[1] = (char *) "80:80/sctp";
        g_assert_cmpint(spec_parse_list(ok, 2, SPEC_PUBLISH, &ranges, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "'80:80/sctp'"));
        g_clear_pointer(&error, free);

        /* No specs: an empty list. */
        g_assert_cmpint(spec_parse_list(NULL, 0, SPEC_PORT, &ranges, &error), ==, 0);
        g_clear_pointer(&ranges, free);
}

#define SEC UINT64_C(1000000)

static const struct {
        const char *s;
        uint64_t usec;
} durations[] = {
        { "30s", 30 * SEC },
        { "30", 30 * SEC },
        { "5min", 300 * SEC },
        { "5m", 300 * SEC },
        { "5 min", 300 * SEC },
        { "1h", 3600 * SEC },
        { "1hr", 3600 * SEC },
        { "250ms", 250000 },
        { "250msec", 250000 },
        { "10us", 10 },
        { "10usec", 10 },
        { "10\xce\xbcs", 10 },
        { "2d", 2 * 86400 * SEC },
        { "1w", 7 * 86400 * SEC },
        { "1M", 2629800 * SEC },
        { "1y", 31557600 * SEC },
        { "1h30min", 5400 * SEC },
        { "1h 30min", 5400 * SEC },
        { "1h30", 3630 * SEC },
        { "1.5s", 1500000 },
        { "1.5min", 90 * SEC },
        { "0.25", 250000 },
        { "1.0000001s", 1 * SEC },
        { "2seconds", 2 * SEC },
        { "1 minute 1 second", 61 * SEC },
        { "  30s  ", 30 * SEC },
        { "0", 0 },
        { "0s", 0 },
        { "0.000", 0 },
        { "infinity", 0 },
        { " infinity ", 0 },
        { "18446744073709551615us", UINT64_MAX },
        { "5124095576h", 5124095576 * 3600 * SEC },
};

static const struct {
        const char *s, *fragment;
} bad_durations[] = {
        { "", "it is empty" },
        { "   ", "it is empty" },
        { "-5s", "it is negative" },
        { "-0", "it is negative" },
        { "30x", "unknown unit 'x'" },
        { "5mins", "unknown unit 'mins'" },
        { "5 S", "unknown unit 'S'" },
        { "1h-30min", "expected a number at '-30min'" },
        { "s", "expected a number at 's'" },
        { "+5s", "expected a number at '+5s'" },
        { ".5s", "expected a number at '.5s'" },
        { "5.s", "expected a digit after '.'" },
        { "1..5s", "expected a digit after '.'" },
        { "1,5s", "expected a number at ',5s'" },
        { "30s;", "expected a number at ';'" },
        { "infinityx", "expected a number at 'infinityx'" },
        { "infinity 5s", "expected a number at 'infinity 5s'" },
        { "18446744073709551616us", "it is too long" },
        { "99999999999999999999", "it is too long" },
        { "5124095577h", "it is too long" },
        { "584543y", "it is too long" },
        { "18446744073709551615us 1us", "it is too long" },
        { "0.1us", "shorter than 1us" },
        { "0.0000001s", "shorter than 1us" },
};

static void test_duration(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(durations); i++) {
                char *error = NULL;
                uint64_t usec = 1;

                if (parse_duration("--idle-timeout", durations[i].s, &usec, &error) != 0)
                        g_error("'%s' refused: %s", durations[i].s, error);
                g_assert_null(error);
                if (usec != durations[i].usec)
                        g_error("'%s': %" G_GUINT64_FORMAT " us, expected %" G_GUINT64_FORMAT,
                                durations[i].s, usec, durations[i].usec);
        }
}

static void test_bad_duration(void) {
        for (size_t i = 0; i < G_N_ELEMENTS(bad_durations); i++) {
                g_autofree char *prefix =
                        g_strdup_printf("Invalid --idle-timeout='%s': ", bad_durations[i].s);
                char *error = NULL;
                uint64_t usec = 42;

                g_assert_cmpint(parse_duration("--idle-timeout", bad_durations[i].s, &usec, &error),
                                ==, -EINVAL);
                g_assert_cmpuint(usec, ==, 42);
                if (!error || !g_str_has_prefix(error, prefix) ||
                    !strstr(error, bad_durations[i].fragment))
                        g_error("'%s': message '%s', expected '%s...%s'", bad_durations[i].s, error,
                                prefix, bad_durations[i].fragment);
                free(error);
        }
        /* Without a name, the message calls it a duration. */
        {
                char *error = NULL;
                uint64_t usec;

                g_assert_cmpint(parse_duration(NULL, "1x", &usec, &error), ==, -EINVAL);
                g_assert_cmpstr(
                        error, ==,
                        "Invalid duration '1x': unknown unit 'x', expected us, ms, s, min, h, d, w, M or y.");
                free(error);
        }
        g_assert_cmpuint(G_N_ELEMENTS(durations) + G_N_ELEMENTS(bad_durations), >=, 20);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/spec/valid", test_valid);
        g_test_add_func("/spec/invalid", test_invalid);
        g_test_add_func("/spec/counts", test_counts);
        g_test_add_func("/spec/list", test_list);
        g_test_add_func("/spec/duration", test_duration);
        g_test_add_func("/spec/bad-duration", test_bad_duration);
        return g_test_run();
}
