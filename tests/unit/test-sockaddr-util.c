/* Tests for sockaddr-util: parsing, formatting and comparing IPv4 and IPv6 socket addresses */

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "sockaddr-util.h"

/* What a failed parse must leave behind: the caller's value, untouched. */
static SockaddrUnion sentinel(void) {
        SockaddrUnion u;

        memset(&u, 0xa5, sizeof u);
        return u;
}

static SockaddrUnion ip(const char *s) {
        SockaddrUnion u = {};

        g_assert_cmpint(sockaddr_parse_ip(s, &u), ==, 0);
        return u;
}

static SockaddrUnion hostport(const char *s) {
        SockaddrUnion u = {};

        g_assert_cmpint(sockaddr_parse_hostport(s, &u), ==, 0);
        return u;
}

static void assert_v4(const SockaddrUnion *u, const char *addr, uint16_t port) {
        struct in_addr want;

        g_assert_cmpint(inet_pton(AF_INET, addr, &want), ==, 1);
        g_assert_cmpint(u->sa.sa_family, ==, AF_INET);
        g_assert_cmpuint(u->in.sin_addr.s_addr, ==, want.s_addr);
        g_assert_cmpuint(u->in.sin_port, ==, htons(port));
}

static void assert_v6(const SockaddrUnion *u, const char *addr, uint16_t port) {
        struct in6_addr want;

        g_assert_cmpint(inet_pton(AF_INET6, addr, &want), ==, 1);
        g_assert_cmpint(u->sa.sa_family, ==, AF_INET6);
        g_assert_cmpmem(&u->in6.sin6_addr, sizeof want, &want, sizeof want);
        g_assert_cmpuint(u->in6.sin6_port, ==, htons(port));
        g_assert_cmpuint(u->in6.sin6_flowinfo, ==, 0);
        g_assert_cmpuint(u->in6.sin6_scope_id, ==, 0);
}

static void test_parse_ip(void) {
        static const char *const v4[] = { "1.2.3.4", "0.0.0.0", "127.0.0.1", "255.255.255.255" };
        static const char *const v6[] = {
                "::",
                "::1",
                "fe80::1",
                "2001:db8::42",
                "1:2:3:4:5:6:7:8",
                "::ffff:1.2.3.4",
                "::1:80", /* an address, not ::1 port 80 */
                "FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        };
        static const char *const invalid[] = {
                "",
                /* names */
                "localhost",
                "example.com",
                "ip6-localhost",
                /* brackets */
                "[::1]",
                "[1.2.3.4]",
                "[::1",
                "::1]",
                /* ports */
                "1.2.3.4:80",
                "[::1]:80",
                /* not quite an address */
                "1.2.3",
                "1.2.3.4.5",
                "1.2.3.256",
                "01.2.3.4",
                "0x7f.0.0.1",
                "1.2.3.-4",
                "1:2:3:4:5:6:7:8:9",
                "::1::2",
                ":::",
                "fe80::1%lo", /* scopes are not supported */
                "fe80::1%1",
                /* blanks and junk */
                " 1.2.3.4",
                "1.2.3.4 ",
                "1.2.3.4\n",
                "::1 ",
                "1.2.3.4x",
                "*",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(v4); i++) {
                SockaddrUnion u = ip(v4[i]);
                assert_v4(&u, v4[i], 0);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(v6); i++) {
                SockaddrUnion u = ip(v6[i]);
                assert_v6(&u, v6[i], 0);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(invalid); i++) {
                SockaddrUnion u = sentinel(), before = u;

                g_autofree char *e = g_strescape(invalid[i], NULL);

                g_test_message("invalid address \"%s\"", e);
                g_assert_cmpint(sockaddr_parse_ip(invalid[i], &u), ==, -EINVAL);
                g_assert_cmpmem(&u, sizeof u, &before, sizeof before);
        }
        {
                SockaddrUnion u = sentinel(), before = u;

                g_assert_cmpint(sockaddr_parse_ip(NULL, &u), ==, -EINVAL);
                g_assert_cmpmem(&u, sizeof u, &before, sizeof before);
        }
}

static void test_parse_hostport(void) {
        static const struct {
                const char *s, *addr;
                uint16_t port;
        } v4[] = {
                { "1.2.3.4:80", "1.2.3.4", 80 },
                { "0.0.0.0:0", "0.0.0.0", 0 },
                { "127.0.0.1:65535", "127.0.0.1", 65535 },
                { "1.2.3.4:080", "1.2.3.4", 80 }, /* decimal, not octal */
        },
          v6[] = {
                  { "[::1]:80", "::1", 80 },
                  { "[::]:0", "::", 0 },
                  { "[fe80::1]:65535", "fe80::1", 65535 },
                  { "[::ffff:1.2.3.4]:443", "::ffff:1.2.3.4", 443 },
                  { "[1:2:3:4:5:6:7:8]:1", "1:2:3:4:5:6:7:8", 1 },
          };
        static const char *const invalid[] = {
                "",
                /* names */
                "localhost:80",
                "example.com:443",
                "[localhost]:80",
                /* no port */
                "1.2.3.4",
                "1.2.3.4:",
                "[::1]",
                "[::1]:",
                "::1",
                /* no host */
                ":80",
                "[]:80",
                /* brackets */
                "[::1]80",
                "[::1:80",
                "::1]:80",
                "[1.2.3.4]:80",
                "::1:80",
                "[::1]:80]",
                "[[::1]]:80",
                "[::1]]:80",
                "1.2.3.4]:80",
                /* ports */
                "1.2.3.4:65536",
                "1.2.3.4:99999999999999999999",
                "1.2.3.4:-1",
                "1.2.3.4:-0",
                "1.2.3.4:+1",
                "1.2.3.4:0x50",
                "1.2.3.4:80abc",
                "1.2.3.4:80:80",
                "[::1]:80:80",
                "1.2.3.4:http",
                /* blanks */
                "1.2.3.4: 80",
                "1.2.3.4:\t80",
                "1.2.3.4:80 ",
                " 1.2.3.4:80",
                "1.2.3.4 :80",
                "[::1]: 80",
                "[ ::1]:80",
                /* bad addresses */
                "1.2.3:80",
                "1.2.3.256:80",
                "[fe80::1%lo]:80",
                "[::1::2]:80",
                "[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]:80",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:80",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(v4); i++) {
                SockaddrUnion u = hostport(v4[i].s);
                assert_v4(&u, v4[i].addr, v4[i].port);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(v6); i++) {
                SockaddrUnion u = hostport(v6[i].s);
                assert_v6(&u, v6[i].addr, v6[i].port);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(invalid); i++) {
                SockaddrUnion u = sentinel(), before = u;

                g_autofree char *e = g_strescape(invalid[i], NULL);

                g_test_message("invalid host and port \"%s\"", e);
                g_assert_cmpint(sockaddr_parse_hostport(invalid[i], &u), ==, -EINVAL);
                g_assert_cmpmem(&u, sizeof u, &before, sizeof before);
        }
        {
                SockaddrUnion u = sentinel(), before = u;

                g_assert_cmpint(sockaddr_parse_hostport(NULL, &u), ==, -EINVAL);
                g_assert_cmpmem(&u, sizeof u, &before, sizeof before);
        }
}

static void test_format(void) {
        static const char *const round_trip[] = {
                "1.2.3.4:80",
                "0.0.0.0:0",
                "255.255.255.255:65535",
                "[::1]:80",
                "[::]:0",
                "[fe80::1]:65535",
                "[::ffff:1.2.3.4]:443",
                "[2001:db8::42]:8080",
                "[1:2:3:4:5:6:7:8]:1",
        };
        char buf[SOCKADDR_STR_MAX], ipbuf[INET6_ADDRSTRLEN];
        SockaddrUnion u, none = {};

        for (size_t i = 0; i < G_N_ELEMENTS(round_trip); i++) {
                SockaddrUnion a = hostport(round_trip[i]), b;

                g_assert_cmpstr(sockaddr_format(&a, buf, sizeof buf), ==, round_trip[i]);
                b = hostport(buf);
                g_assert_true(sockaddr_equal(&a, &b));
        }

        /* The canonical form, whatever the input looked like. */
        u = hostport("[2001:DB8:0:0:0:0:0:42]:0080");
        g_assert_cmpstr(sockaddr_format(&u, buf, sizeof buf), ==, "[2001:db8::42]:80");
        g_assert_cmpstr(sockaddr_format_ip(&u, ipbuf, sizeof ipbuf), ==, "2001:db8::42");
        u = ip("1.2.3.4");
        g_assert_cmpstr(sockaddr_format_ip(&u, ipbuf, sizeof ipbuf), ==, "1.2.3.4");
        g_assert_cmpstr(sockaddr_format(&u, buf, sizeof buf), ==, "1.2.3.4:0");

        /* The longest there is fits the documented sizes. */
        u = hostport("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        g_assert_cmpstr(sockaddr_format(&u, buf, sizeof buf), ==,
                        "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        g_assert_cmpstr(sockaddr_format_ip(&u, ipbuf, sizeof ipbuf), ==,
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");

        /* No address, or no room for it: "?", never garbage. */
        g_assert_cmpstr(sockaddr_format_ip(&none, ipbuf, sizeof ipbuf), ==, "?");
        g_assert_cmpstr(sockaddr_format(&none, buf, sizeof buf), ==, "?:0");
        {
                char small[4];

                u = ip("10.20.30.40");
                g_assert_cmpstr(sockaddr_format_ip(&u, small, sizeof small), ==, "?");
                u = ip("::1");
                g_assert_cmpstr(sockaddr_format_ip(&u, small, sizeof small), ==, "::1");
        }
}

static void test_equal(void) {
        SockaddrUnion a = hostport("1.2.3.4:80"), b = hostport("1.2.3.4:80");
        SockaddrUnion c = hostport("[::1]:80"), d = hostport("[0:0:0:0:0:0:0:1]:80");
        SockaddrUnion none = {}, none2 = {};

        g_assert_true(sockaddr_equal(&a, &b));
        g_assert_true(sockaddr_equal(&c, &d));
        g_assert_true(sockaddr_equal(&d, &c));

        b = hostport("1.2.3.4:81");
        g_assert_false(sockaddr_equal(&a, &b));
        b = hostport("1.2.3.5:80");
        g_assert_false(sockaddr_equal(&a, &b));
        d = hostport("[::1]:81");
        g_assert_false(sockaddr_equal(&c, &d));
        d = hostport("[::2]:80");
        g_assert_false(sockaddr_equal(&c, &d));

        /* Families differ: an IPv4 address and its v4-mapped IPv6 form are not the same socket
         * address. */
        b = hostport("[::ffff:1.2.3.4]:80");
        g_assert_false(sockaddr_equal(&a, &b));
        g_assert_false(sockaddr_equal(&b, &a));
        g_assert_false(sockaddr_equal(&a, &c));

        /* Absent addresses equal nothing, not even each other. */
        g_assert_false(sockaddr_equal(&none, &none2));
        g_assert_false(sockaddr_equal(&a, &none));
        g_assert_false(sockaddr_equal(&none, &c));
}

static void test_wildcard(void) {
        SockaddrUnion none = {}, u;

        u = ip("0.0.0.0");
        g_assert_true(sockaddr_is_wildcard(&u));
        u = hostport("0.0.0.0:80");
        g_assert_true(sockaddr_is_wildcard(&u));
        u = ip("::");
        g_assert_true(sockaddr_is_wildcard(&u));
        u = hostport("[::]:443");
        g_assert_true(sockaddr_is_wildcard(&u));

        u = ip("127.0.0.1");
        g_assert_false(sockaddr_is_wildcard(&u));
        u = ip("0.0.0.1");
        g_assert_false(sockaddr_is_wildcard(&u));
        u = ip("::1");
        g_assert_false(sockaddr_is_wildcard(&u));
        u = ip("::ffff:0.0.0.0"); /* an IPv6 socket bound to it takes IPv4 only */
        g_assert_false(sockaddr_is_wildcard(&u));
        g_assert_false(sockaddr_is_wildcard(&none));
}

static void test_port(void) {
        SockaddrUnion v4 = ip("1.2.3.4"), v6 = ip("::1"), none = {}, before;

        g_assert_cmpuint(sockaddr_len(&v4), ==, sizeof(struct sockaddr_in));
        g_assert_cmpuint(sockaddr_len(&v6), ==, sizeof(struct sockaddr_in6));
        g_assert_cmpuint(sockaddr_len(&none), ==, 0);

        g_assert_cmpuint(sockaddr_port(&v4), ==, 0);
        sockaddr_set_port(&v4, 8080);
        g_assert_cmpuint(sockaddr_port(&v4), ==, 8080);
        g_assert_cmpuint(v4.in.sin_port, ==, htons(8080)); /* network byte order inside */
        sockaddr_set_port(&v4, 65535);
        g_assert_cmpuint(sockaddr_port(&v4), ==, 65535);
        assert_v4(&v4, "1.2.3.4", 65535); /* the address is untouched */

        sockaddr_set_port(&v6, 443);
        g_assert_cmpuint(sockaddr_port(&v6), ==, 443);
        g_assert_cmpuint(v6.in6.sin6_port, ==, htons(443));
        sockaddr_set_port(&v6, 0);
        assert_v6(&v6, "::1", 0);

        /* No family: no port to read or set. */
        before = none;
        sockaddr_set_port(&none, 80);
        g_assert_cmpmem(&none, sizeof none, &before, sizeof before);
        g_assert_cmpuint(sockaddr_port(&none), ==, 0);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sockaddr-util/parse-ip", test_parse_ip);
        g_test_add_func("/sockaddr-util/parse-hostport", test_parse_hostport);
        g_test_add_func("/sockaddr-util/format", test_format);
        g_test_add_func("/sockaddr-util/equal", test_equal);
        g_test_add_func("/sockaddr-util/wildcard", test_wildcard);
        g_test_add_func("/sockaddr-util/port", test_port);
        return g_test_run();
}
