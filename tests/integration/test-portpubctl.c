/* portpubctl against the real daemon: specs and ranges, tables, show, errors, monitor; the same
 * over varlink (--varlink=), which must print what D-Bus prints */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "config.h"
#include "testlib.h"

/* Generous: the sanitizer build runs every portpubctl under ASan too. */
#define CTL_TIMEOUT_MS 20000

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        f->bus = test_bus_new();
        f->daemon = test_daemon_start(f->bus);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_bus_free(f->bus);
}

/* How portpubctl reaches the daemon: --address= of the test's bus, or --varlink= of the
 * daemon's socket. */
typedef enum Via { VIA_DBUS, VIA_VARLINK } Via;

static GPtrArray *ctl_argv(Fixture *f, Via via, const char *const *args) {
        GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
        const char *ctl = g_getenv("PORTPUBCTL");

        g_assert_nonnull(ctl);
        g_ptr_array_add(argv, g_strdup(ctl));
        if (via == VIA_VARLINK) {
                g_assert_nonnull(f->daemon->varlink);
                g_ptr_array_add(argv, g_strdup_printf("--varlink=%s", f->daemon->varlink));
        } else
                g_ptr_array_add(argv, g_strdup_printf("--address=%s", f->bus->address));
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, g_strdup(*a));
        g_ptr_array_add(argv, NULL);
        return argv;
}

/* Running portpubctl to its end */

/* Runs portpubctl --address=BUS (or --varlink=SOCKET) ARGS... with a bounded wait; returns the
 * exit status, or minus the signal that ended it. stdout and stderr go to *ret_out and *ret_err
 * (g_free them). */
static int run_ctl(Fixture *f, Via via, char **ret_out, char **ret_err, const char *const *args) {
        g_autoptr(GPtrArray) argv = ctl_argv(f, via, args);

        return test_run((const char *const *) argv->pdata, NULL, CTL_TIMEOUT_MS, ret_out, ret_err);
}

#define CTL_ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* Runs portpubctl, asserts its exit status, and returns its stdout; stderr must be empty on
 * success. Prints both when the status is not the expected one. */
static char *ctl_expect_via(Fixture *f, Via via, int expect, char **ret_err, const char *const *args) {
        char *out = NULL, *err = NULL;
        int status = run_ctl(f, via, &out, &err, args);

        if (status != expect) {
                /* On stderr: stdout is the TAP stream. */
                g_printerr("portpubctl%s %s: stdout:\n%s\nstderr:\n%s\n",
                           via == VIA_VARLINK ? " --varlink" : "", args[0], out, err);
                g_error("portpubctl %s: exit status %d, expected %d", args[0], status, expect);
        }
        if (expect == 0)
                g_assert_cmpstr(err, ==, "");
        if (ret_err)
                *ret_err = err;
        else
                g_free(err);
        return out;
}

#define ctl_expect(f, expect, ret_err, args) ctl_expect_via(f, VIA_DBUS, expect, ret_err, args)
#define ctl_ok(f, ...) ctl_expect_via(f, VIA_DBUS, 0, NULL, CTL_ARGS(__VA_ARGS__))
#define vl_expect(f, expect, ret_err, args) ctl_expect_via(f, VIA_VARLINK, expect, ret_err, args)
#define vl_ok(f, ...) ctl_expect_via(f, VIA_VARLINK, 0, NULL, CTL_ARGS(__VA_ARGS__))

/* Runs a command that changes nothing over D-Bus, then over varlink: the same exit status, the
 * same stdout and the same stderr, byte for byte. Returns stdout, and stderr in *ret_err. */
static char *ctl_both(Fixture *f, int expect, char **ret_err, const char *const *args) {
        g_autofree char *dbus_out = NULL, *dbus_err = NULL, *vl_err = NULL;
        char *vl_out;

        dbus_out = ctl_expect_via(f, VIA_DBUS, expect, &dbus_err, args);
        vl_out = ctl_expect_via(f, VIA_VARLINK, expect, &vl_err, args);
        if (g_strcmp0(vl_out, dbus_out) != 0 || g_strcmp0(vl_err, dbus_err) != 0) {
                g_printerr("portpubctl %s over D-Bus: stdout:\n%s\nstderr:\n%s\n", args[0],
                           dbus_out, dbus_err);
                g_printerr("portpubctl %s over varlink: stdout:\n%s\nstderr:\n%s\n", args[0],
                           vl_out, vl_err);
                g_error("portpubctl %s prints differently over varlink", args[0]);
        }
        if (ret_err)
                *ret_err = g_steal_pointer(&vl_err);
        return vl_out;
}

#define ctl_both_ok(f, ...) ctl_both(f, 0, NULL, CTL_ARGS(__VA_ARGS__))

/* portpubctl running in the background: monitor, publish --bind-to-caller */

typedef struct Bg {
        GSubprocess *proc;
        GDataInputStream *lines;
        GString *out;
        gboolean eof;
        gboolean exited;
} Bg;

static void on_line(GObject *source, GAsyncResult *res, gpointer data) {
        Bg *bg = data;
        g_autoptr(GError) error = NULL;
        char *line;

        line = g_data_input_stream_read_line_finish_utf8(G_DATA_INPUT_STREAM(source), res, NULL,
                                                         &error);
        if (!line) {
                bg->eof = TRUE;
                return;
        }
        g_string_append(bg->out, line);
        g_string_append_c(bg->out, '\n');
        g_free(line);
        g_data_input_stream_read_line_async(bg->lines, G_PRIORITY_DEFAULT, NULL, on_line, bg);
}

/* merge_stderr: stderr into the output read, else to the test's log, where a sanitizer report
 * says what went wrong. */
static Bg *bg_start_full(Fixture *f, Via via, gboolean merge_stderr, const char *const *args) {
        g_autoptr(GPtrArray) argv = ctl_argv(f, via, args);
        g_autoptr(GError) error = NULL;
        Bg *bg = g_new0(Bg, 1);

        bg->proc = g_subprocess_newv((const char *const *) argv->pdata,
                                     G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                             (merge_stderr ? G_SUBPROCESS_FLAGS_STDERR_MERGE : 0),
                                     &error);
        g_assert_no_error(error);
        bg->out = g_string_new(NULL);
        bg->lines = g_data_input_stream_new(g_subprocess_get_stdout_pipe(bg->proc));
        g_data_input_stream_read_line_async(bg->lines, G_PRIORITY_DEFAULT, NULL, on_line, bg);
        return bg;
}

typedef struct BgWant {
        Bg *bg;
        const char *text;
} BgWant;

static gboolean bg_has_text(gpointer data) {
        BgWant *w = data;

        return strstr(w->bg->out->str, w->text) != NULL;
}

/* Waits until the output holds text; fails the test with the output so far if it does not. */
static void bg_wait_for(Bg *bg, const char *text) {
        BgWant w = { bg, text };

        if (!test_wait_until(bg_has_text, &w, CTL_TIMEOUT_MS)) {
                g_printerr("portpubctl's output so far:\n%s\n", bg->out->str);
                g_error("no '%s' from portpubctl", text);
        }
}

#define bg_start_via(f, via, args) bg_start_full(f, via, FALSE, args)
#define bg_start(f, args) bg_start_via(f, VIA_DBUS, args)

static void on_bg_exited(GObject *source, GAsyncResult *res, gpointer data) {
        Bg *bg = data;

        (void) g_subprocess_wait_finish(G_SUBPROCESS(source), res, NULL);
        bg->exited = TRUE;
}

static gboolean bg_done(gpointer data) {
        Bg *bg = data;

        return bg->exited && bg->eof;
}

/* Waits for the process this test started to end, after SIGTERM if terminate, and returns its
 * exit status (or -signal). */
static int bg_end(Bg *bg, gboolean terminate) {
        int status;

        if (terminate)
                g_subprocess_send_signal(bg->proc, SIGTERM);
        g_subprocess_wait_async(bg->proc, NULL, on_bg_exited, bg);
        if (!test_wait_until(bg_done, bg, CTL_TIMEOUT_MS)) {
                g_subprocess_force_exit(bg->proc);
                (void) test_wait_until(bg_done, bg, 5000);
                g_error(terminate ? "portpubctl did not end on SIGTERM" : "portpubctl did not end");
        }
        status = g_subprocess_get_if_exited(bg->proc) ? g_subprocess_get_exit_status(bg->proc)
                                                      : -g_subprocess_get_term_sig(bg->proc);
        return status;
}

#define bg_stop(bg) bg_end(bg, TRUE)

static void bg_free(Bg *bg) {
        g_object_unref(bg->lines);
        g_object_unref(bg->proc);
        g_string_free(bg->out, TRUE);
        g_free(bg);
}

/* Ports */

static gboolean tcp_port_free(const char *addr, guint16 port) {
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(port) };
        struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
        gboolean v6 = strchr(addr, ':') != NULL;
        int fd, one = 1, r;

        if (v6)
                g_assert_cmpint(inet_pton(AF_INET6, addr, &in6.sin6_addr), ==, 1);
        else
                g_assert_cmpint(inet_pton(AF_INET, addr, &in.sin_addr), ==, 1);
        fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return v6; /* no IPv6 here: the daemon binds 127.0.0.1 alone */
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (v6) {
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
                r = bind(fd, (struct sockaddr *) &in6, sizeof in6);
                if (r < 0 && errno == EADDRNOTAVAIL)
                        r = 0;
        } else
                r = bind(fd, (struct sockaddr *) &in, sizeof in);
        close(fd);
        return r == 0;
}

/* n consecutive TCP ports free on 127.0.0.1 and ::1. They are looked for outside the ephemeral
 * range, where other programs' connections (and their TIME_WAIT remains) take ports at random. */
static guint16 find_free_ports(guint n) {
        unsigned low = 32768, high = 60999, first, last;
        g_autofree char *range = NULL;

        if (g_file_get_contents("/proc/sys/net/ipv4/ip_local_port_range", &range, NULL, NULL))
                (void) sscanf(range, "%u %u", &low, &high);
        if (low >= 10000 + 1000) {
                first = 10000;
                last = low - n;
        } else {
                first = high + 1;
                last = 65536 - n;
        }
        g_assert_cmpuint(first, <, last);

        for (int attempt = 0; attempt < 500; attempt++) {
                guint16 base = (guint16) g_random_int_range((gint32) first, (gint32) last);
                gboolean ok = TRUE;

                for (guint i = 0; ok && i < n; i++)
                        ok = tcp_port_free("127.0.0.1", (guint16) (base + i)) &&
                             tcp_port_free("::1", (guint16) (base + i));
                if (ok)
                        return base;
        }
        g_error("found no %u consecutive free ports", n);
}

static void roundtrip_via(const char *addr, guint16 port, const char *msg, const char *expect) {
        int fd = test_tcp_connect(addr, port, 5000);

        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, msg, expect);
        close(fd);
}

static guint32 n_ports(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts");
}

static guint32 n_sandboxes(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes");
}

/* Lines of out, without the empty one after the last newline. */
static GStrv split_lines(const char *out) {
        GStrv lines = g_strsplit(out, "\n", -1);
        guint n = g_strv_length(lines);

        g_assert_cmpuint(n, >, 0);
        g_assert_cmpstr(lines[n - 1], ==, "");
        g_free(lines[n - 1]);
        lines[n - 1] = NULL;
        return lines;
}

/* One line of "publish" output: "tcp localhost:PORT -> GUEST (/io/portpub/Publisher1/port/N)",
 * where prefix is "tcp localhost". */
static void parse_published(const char *line, const char *prefix, guint16 *ret_host,
                            guint16 *ret_guest) {
        size_t n = strlen(prefix);
        unsigned serial;
        int end = -1;

        if (strncmp(line, prefix, n) != 0 || line[n] != ':' ||
            sscanf(line + n + 1, "%hu -> %hu (/io/portpub/Publisher1/port/%u)%n", ret_host,
                   ret_guest, &serial, &end) != 3 ||
            end != (int) strlen(line + n + 1))
                g_error("unexpected publish output line '%s'", line);
        g_assert_cmpuint(*ret_host, !=, 0);
}

/* Asserts that text has line as one of its lines. */
static void assert_has_line(const char *text, const char *line) {
        g_autofree char *all = g_strconcat("\n", text, NULL);
        g_autofree char *want = g_strconcat("\n", line, "\n", NULL);

        if (!strstr(all, want)) {
                g_printerr("%s\n", text);
                g_error("no line '%s' in the output above", line);
        }
}

static gboolean no_active_sessions(gpointer data) {
        Fixture *f = data;

        return test_get_u64(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ActiveSessions") == 0;
}

/* Tests */

static void test_help_and_version(Fixture *f, gconstpointer data) {
        g_autofree char *help = ctl_ok(f, "--help");
        g_autofree char *version = ctl_ok(f, "--version");

        g_assert_nonnull(strstr(help, "publish SANDBOX SPEC"));
        g_assert_nonnull(strstr(help, "--bind-to-caller"));
        g_assert_nonnull(strstr(help, "--varlink[=PATH]"));
        g_assert_cmpstr(version, ==, "portpubctl " PACKAGE_VERSION "\n");
}

static void test_bad_command_lines(Fixture *f, gconstpointer data) {
        static const char *const bad_specs[] = {
                "80:abc",
                "8000-8002:9000-9001",
                "::1:80:80",
                "80:80/sctp",
                "host:80:80",
                "70000:80",
                "80:0",
                "[127.0.0.1]:80:80",
                "80-",
                "1:2:3:4",
                "9000-8000:1-1001",
                "[::1:80:80",
                "0-2:9000-9002",
                "",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(bad_specs); i++) {
                g_autofree char *err = NULL, *out = NULL;
                g_autofree char *quoted = g_strdup_printf("'%s'", bad_specs[i]);

                out = ctl_expect(f, 2, &err, CTL_ARGS("publish", "web", "8080:80", bad_specs[i]));
                g_assert_cmpstr(out, ==, "");
                if (!g_str_has_prefix(err, "portpubctl: Invalid port spec ") || !strstr(err, quoted))
                        g_error("spec %s: unexpected message '%s'", quoted, err);
        }

        /* Unpublish specs have no guest port. */
        {
                g_autofree char *err = NULL;
                g_autofree char *out = ctl_expect(f, 2, &err, CTL_ARGS("unpublish", "web", "80:80"));

                g_assert_nonnull(strstr(err, "'80:80'"));
        }
        /* Ranges are expanded here, up to the daemon's 1024 per call. */
        {
                g_autofree char *err = NULL;
                g_autofree char *out =
                        ctl_expect(f, 2, &err,
                                   CTL_ARGS("publish", "web", "1000-2023:3000-4023", "5000:5000"));

                g_assert_nonnull(strstr(err, "1024"));
                g_assert_nonnull(strstr(err, "'5000:5000'"));
        }
        {
                g_autofree char *err = NULL;
                g_autofree char *out = ctl_expect(f, 2, &err, CTL_ARGS("frobnicate"));

                g_assert_nonnull(strstr(err, "'frobnicate'"));
        }
        {
                g_autofree char *err = NULL;
                g_autofree char *out = ctl_expect(f, 2, &err, CTL_ARGS("list", "--guest=127.0.0.1"));

                g_assert_nonnull(strstr(err, "publish"));
        }
        {
                g_autofree char *err = NULL;
                g_autofree char *out =
                        ctl_expect(f, 2, &err,
                                   CTL_ARGS("publish", "web", "0:80", "--max-sessions=lots"));

                g_assert_nonnull(strstr(err, "'lots'"));
        }
        {
                g_autofree char *err = NULL;
                g_autofree char *out = ctl_expect(f, 2, &err, CTL_ARGS("publish", "web"));

                g_assert_nonnull(strstr(err, "Too few arguments"));
        }
        {
                g_autofree char *err = NULL;
                g_autofree char *out = ctl_expect(f, 2, &err, CTL_ARGS("show", "8000-8001"));

                g_assert_nonnull(strstr(err, "'8000-8001'"));
        }
        /* Nothing reached the daemon. */
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
}

static void test_publish_list_show(Fixture *f, gconstpointer data) {
        guint16 guest_base = find_free_ports(3);
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "e:");
        TestEcho *guests[3];
        g_autofree char *spec1 = NULL, *spec2 = NULL, *out = NULL, *list = NULL, *bare = NULL,
                        *show = NULL, *manager = NULL, *sandboxes = NULL, *expect = NULL;
        g_auto(GStrv) lines = NULL, rows = NULL;
        guint16 host_base, hp, gp, kernel_port;

        for (guint i = 0; i < 3; i++) {
                g_autofree char *tag = g_strdup_printf("g%u:", i);

                guests[i] = test_echo_new(IPPROTO_TCP, "127.0.0.1", (guint16) (guest_base + i), tag);
        }
        host_base = find_free_ports(3);
        spec1 = g_strdup_printf("0:%u/tcp", test_echo_port(echo));
        spec2 = g_strdup_printf("%u-%u:%u-%u", host_base, host_base + 2, guest_base, guest_base + 2);

        out = ctl_ok(f, "publish", "web", spec1, spec2, "--guest=127.0.0.1");
        lines = split_lines(out);
        g_assert_cmpuint(g_strv_length(lines), ==, 4);
        parse_published(lines[0], "tcp localhost", &kernel_port, &gp);
        g_assert_cmpuint(gp, ==, test_echo_port(echo));
        for (guint i = 0; i < 3; i++) {
                parse_published(lines[1 + i], "tcp localhost", &hp, &gp);
                g_assert_cmpuint(hp, ==, host_base + i);
                g_assert_cmpuint(gp, ==, guest_base + i);
        }
        g_assert_cmpuint(n_ports(f), ==, 4);

        /* The printed ports reach their guests, on both loopback families. */
        roundtrip_via("127.0.0.1", kernel_port, "hello", "e:hello");
        roundtrip_via("::1", kernel_port, "hi", "e:hi");
        for (guint i = 0; i < 3; i++) {
                g_autofree char *expect_reply = g_strdup_printf("g%u:ping", i);

                roundtrip_via("127.0.0.1", (guint16) (host_base + i), "ping", expect_reply);
        }

        /* The sessions end a moment after the clients closed: counters are final after that. */
        g_assert_true(test_wait_until(no_active_sessions, f, 5000));

        /* The table: a header, one row per port sorted by port, a footer. */
        list = ctl_ok(f, "list");
        rows = split_lines(list);
        g_assert_cmpuint(g_strv_length(rows), ==, 7);
        g_assert_true(g_regex_match_simple("^SANDBOX +PROTO +HOST +GUEST +STATE +ACTIVE +TOTAL$",
                                           rows[0], 0, 0));
        g_assert_cmpstr(rows[5], ==, "");
        g_assert_cmpstr(rows[6], ==, "4 ports listed.");
        g_strfreev(rows);

        /* Without the legend: rows only, and the session counters of the traffic above (the
         * byte counters are in status and the JSON). */
        bare = ctl_ok(f, "--no-legend", "list");
        rows = split_lines(bare);
        g_assert_cmpuint(g_strv_length(rows), ==, 4);
        for (guint i = 0; i < 4; i++) {
                g_auto(GStrv) col = g_regex_split_simple(" +", rows[i], 0, 0);
                g_autofree char *guest = NULL;
                unsigned port;
                int end = -1;

                g_assert_cmpuint(g_strv_length(col), ==, 7);
                g_assert_cmpstr(col[0], ==, "web");
                g_assert_cmpstr(col[1], ==, "tcp");
                g_assert_cmpint(sscanf(col[2], "localhost:%u%n", &port, &end), ==, 1);
                g_assert_cmpint(end, ==, (int) strlen(col[2]));
                g_assert_cmpstr(col[4], ==, "listening");
                g_assert_cmpstr(col[5], ==, "0");
                if (port == kernel_port) {
                        guest = g_strdup_printf("127.0.0.1:%u", test_echo_port(echo));
                        /* Two sessions: "hello" and "hi". */
                        g_assert_cmpstr(col[6], ==, "2");
                } else {
                        g_assert_cmpuint(port, >=, host_base);
                        g_assert_cmpuint(port, <=, host_base + 2);
                        guest = g_strdup_printf("127.0.0.1:%u", guest_base + port - host_base);
                        g_assert_cmpstr(col[6], ==, "1");
                }
                g_assert_cmpstr(col[3], ==, guest);
                /* Sorted by port. */
                if (i > 0) {
                        unsigned prev;

                        g_assert_cmpint(sscanf(strchr(rows[i - 1], ':') + 1, "%u", &prev), ==, 1);
                        g_assert_cmpuint(prev, <, port);
                }
        }
        g_strfreev(rows);
        rows = NULL;

        /* list SANDBOX filters. */
        {
                g_autofree char *none = ctl_ok(f, "list", "other");

                g_assert_cmpstr(none, ==, "No ports published.\n");
        }

        /* show: the port's properties as Name=value lines. */
        {
                g_autofree char *port = g_strdup_printf("%u", host_base + 1);

                show = ctl_ok(f, "show", port);
        }
        assert_has_line(show, "Sandbox=web");
        assert_has_line(show, "Protocol=tcp");
        assert_has_line(show, "HostAddress=");
        expect = g_strdup_printf("HostPort=%u", host_base + 1);
        assert_has_line(show, expect);
        g_free(expect);
        expect = g_strdup_printf("GuestPort=%u", guest_base + 1);
        assert_has_line(show, expect);
        g_free(expect);
        expect = g_strdup_printf("ListenAddresses=127.0.0.1:%u [::1]:%u", host_base + 1,
                                 host_base + 1);
        assert_has_line(show, expect);
        assert_has_line(show, "GuestAddress=127.0.0.1");
        assert_has_line(show, "State=listening");
        assert_has_line(show, "TotalSessions=1");
        assert_has_line(show, "BytesToGuest=4");
        assert_has_line(show, "MaxSessions=4096");
        g_free(show);
        {
                g_autofree char *port = g_strdup_printf("localhost:%u/tcp", kernel_port);

                show = ctl_ok(f, "show", port);
        }
        assert_has_line(show, "TotalSessions=2");

        /* show without a port: the daemon's own properties. */
        manager = ctl_ok(f, "show");
        assert_has_line(manager, "Version=" PACKAGE_VERSION);
        assert_has_line(manager, "NPorts=4");

        sandboxes = ctl_ok(f, "--no-legend", "sandboxes");
        g_assert_true(g_regex_match_simple("^web +4 127\\.0\\.0\\.1\n$", sandboxes, 0, 0));

        for (guint i = 0; i < 3; i++)
                test_echo_free(guests[i]);
        test_echo_free(echo);
}

static void test_options_and_forms(Fixture *f, gconstpointer data) {
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        TestEcho *uecho = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, "u:");
        g_autofree char *tspec = g_strdup_printf("[::1]:0:%u", test_echo_port(echo));
        g_autofree char *uspec = g_strdup_printf("127.0.0.1:0:%u/udp", test_echo_port(uecho));
        g_autofree char *out = NULL, *show = NULL, *list = NULL, *row = NULL;
        g_auto(GStrv) lines = NULL;
        guint16 tport, uport, gp;
        int fd;

        out = ctl_ok(f, "publish", "forms", tspec, uspec, "--guest=127.0.0.1", "--max-sessions=7",
                     "--idle-timeout=30");
        lines = split_lines(out);
        g_assert_cmpuint(g_strv_length(lines), ==, 2);
        parse_published(lines[0], "tcp [::1]", &tport, &gp);
        parse_published(lines[1], "udp 127.0.0.1", &uport, &gp);

        roundtrip_via("::1", tport, "six", "six");
        fd = test_udp_socket("127.0.0.1");
        test_udp_roundtrip(fd, "127.0.0.1", uport, "dgram", "u:dgram");
        close(fd);

        {
                g_autofree char *port = g_strdup_printf("[::1]:%u", tport);

                show = ctl_ok(f, "show", port);
        }
        assert_has_line(show, "MaxSessions=7");
        assert_has_line(show, "IdleTimeoutUSec=30000000");
        g_assert_nonnull(strstr(show, "\nListenAddresses=[::1]:"));

        list = ctl_ok(f, "--no-legend", "list");
        row = g_strdup_printf("forms udp 127.0.0.1:%u", uport);
        g_assert_nonnull(strstr(list, row));
        g_free(row);
        row = g_strdup_printf("forms tcp [::1]:%u", tport);
        g_assert_nonnull(strstr(list, row));

        /* A proxy header is for TCP: the daemon says so, naming the port; nothing changes. */
        {
                g_autofree char *err = NULL;
                g_autofree char *o =
                        ctl_expect(f, 1, &err,
                                   CTL_ARGS("publish", "forms", "0:53/udp", "--proxy-protocol=v1"));

                g_assert_true(g_str_has_prefix(err, "portpubctl: "));
                g_assert_nonnull(strstr(err, "ProxyProtocol"));
                g_assert_cmpuint(n_ports(f), ==, 2);
        }

        test_echo_free(echo);
        test_echo_free(uecho);
}

/* docker run -p's forms without a host port publish ports the kernel picks, one for each guest
 * port of a range; --idle-timeout= takes systemd's time spans. */
static void test_kernel_picked_forms(Fixture *f, gconstpointer data) {
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *bare = g_strdup_printf("%u", test_echo_port(echo));
        g_autofree char *out = NULL, *show = NULL, *port = NULL;
        g_auto(GStrv) lines = NULL;
        guint16 host[6], guest;

        out = ctl_ok(f, "publish", "kp", bare, ":9001-9002", "127.0.0.1::9003-9004/udp",
                     "[::1]::9005", "--guest=127.0.0.1", "--idle-timeout=1h30min");
        lines = split_lines(out);
        g_assert_cmpuint(g_strv_length(lines), ==, 6);
        parse_published(lines[0], "tcp localhost", &host[0], &guest);
        g_assert_cmpuint(guest, ==, test_echo_port(echo));
        parse_published(lines[1], "tcp localhost", &host[1], &guest);
        g_assert_cmpuint(guest, ==, 9001);
        parse_published(lines[2], "tcp localhost", &host[2], &guest);
        g_assert_cmpuint(guest, ==, 9002);
        parse_published(lines[3], "udp 127.0.0.1", &host[3], &guest);
        g_assert_cmpuint(guest, ==, 9003);
        parse_published(lines[4], "udp 127.0.0.1", &host[4], &guest);
        g_assert_cmpuint(guest, ==, 9004);
        parse_published(lines[5], "tcp [::1]", &host[5], &guest);
        g_assert_cmpuint(guest, ==, 9005);
        /* Each tuple got a port of its own. */
        g_assert_cmpuint(host[1], !=, host[2]);
        g_assert_cmpuint(host[3], !=, host[4]);
        g_assert_cmpuint(n_ports(f), ==, 6);

        /* The bare guest port relays like 0:PORT does. */
        roundtrip_via("127.0.0.1", host[0], "bare", "bare");

        port = g_strdup_printf("127.0.0.1:%u/udp", host[3]);
        show = ctl_ok(f, "show", port);
        assert_has_line(show, "IdleTimeoutUSec=5400000000");

        /* A time span the parser refuses never reaches the daemon. */
        {
                g_autofree char *err = NULL;
                g_autofree char *o =
                        ctl_expect(f, 2, &err,
                                   CTL_ARGS("publish", "kp", "80", "--idle-timeout=5 parsecs"));

                g_assert_cmpstr(err, ==,
                                "portpubctl: Invalid --idle-timeout='5 parsecs': unknown unit 'parsecs', "
                                "expected us, ms, s, min, h, d, w, M or y.\n");
                g_assert_cmpuint(n_ports(f), ==, 6);
        }

        /* 5min is IdleTimeoutUSec 300000000 on the Port object itself. */
        {
                g_autofree char *o = ctl_ok(f, "publish", "kp5", "0:9006", "--guest=127.0.0.1",
                                            "--idle-timeout=5min");
                const char *open = strstr(o, "(/"), *close = open ? strchr(open, ')') : NULL;
                g_autofree char *path = NULL;

                g_assert_nonnull(close);
                path = g_strndup(open + 1, (gsize) (close - open - 1));
                g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "IdleTimeoutUSec"), ==,
                                 300000000);
        }
        test_echo_free(echo);
}

static void test_unpublish_set_guest_remove(Fixture *f, gconstpointer data) {
        guint16 base = find_free_ports(4);
        g_autofree char *spec = g_strdup_printf("%u-%u:%u-%u", base, base + 3, 9000, 9003);
        g_autofree char *range = g_strdup_printf("%u-%u/tcp", base, base + 1);
        g_autofree char *one = g_strdup_printf("localhost:%u", base + 2);
        g_autofree char *out = NULL, *list = NULL, *sandboxes = NULL;
        g_autofree char *row = NULL;

        out = ctl_ok(f, "publish", "gone", spec, "--guest=127.0.0.1");
        g_assert_cmpuint(n_ports(f), ==, 4);

        g_free(ctl_ok(f, "unpublish", "gone", range, one));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpint(test_tcp_connect("127.0.0.1", base, 2000), ==, -ECONNREFUSED);
        list = ctl_ok(f, "--no-legend", "list");
        row = g_strdup_printf("gone tcp localhost:%u ", base + 3);
        g_assert_true(g_str_has_prefix(list, row));

        /* Unpublishing what is not published: the daemon's NoSuchPort, nothing changes. */
        {
                g_autofree char *err = NULL;
                g_autofree char *port = g_strdup_printf("%u", base + 3);
                g_autofree char *o = ctl_expect(f, 1, &err, CTL_ARGS("unpublish", "gone", port, "1"));

                g_assert_true(g_str_has_prefix(err, "portpubctl: "));
                g_assert_nonnull(strstr(err, "'gone'"));
                g_assert_nonnull(strstr(err, "port 1\n"));
                g_assert_cmpuint(n_ports(f), ==, 1);
        }

        g_free(ctl_ok(f, "set-guest", "gone", "127.0.0.1", "::1"));
        sandboxes = ctl_ok(f, "sandboxes");
        g_assert_true(g_regex_match_simple("^SANDBOX +PORTS +GUEST-ADDRESSES\n"
                                           "gone +1 127\\.0\\.0\\.1,::1\n\n"
                                           "1 sandbox listed\\.\n$",
                                           sandboxes, 0, 0));

        g_free(ctl_ok(f, "remove", "gone"));
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_free(sandboxes);
        sandboxes = ctl_ok(f, "sandboxes");
        g_assert_cmpstr(sandboxes, ==, "No sandboxes.\n");
        g_free(list);
        list = ctl_ok(f, "list");
        g_assert_cmpstr(list, ==, "No ports published.\n");
}

static void test_daemon_errors(Fixture *f, gconstpointer data) {
        g_autofree char *daemon_msg = NULL, *expect = NULL, *err = NULL, *out = NULL;
        g_autofree char *taken = NULL, *free_spec = NULL;
        guint16 base = find_free_ports(2);

        /* The daemon's own message, word for word, and exit status 1. */
        daemon_msg = test_call_expect_error(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                                            "RemoveSandbox", g_variant_new("(s)", "nosuch"),
                                            TEST_ERROR_PREFIX "NoSuchSandbox");
        out = ctl_expect(f, 1, &err, CTL_ARGS("remove", "nosuch"));
        expect = g_strdup_printf("portpubctl: %s\n", daemon_msg);
        g_assert_cmpstr(err, ==, expect);
        g_assert_cmpstr(out, ==, "");
        g_free(err);
        g_free(out);

        /* A port another sandbox holds: PortInUse names it, and the call publishes nothing. */
        taken = g_strdup_printf("%u:80", base);
        free_spec = g_strdup_printf("%u:80", base + 1);
        g_free(ctl_ok(f, "publish", "first", taken, "--guest=127.0.0.1"));
        out = ctl_expect(f, 1, &err,
                         CTL_ARGS("publish", "second", free_spec, taken, "--guest=127.0.0.1"));
        g_assert_true(g_str_has_prefix(err, "portpubctl: "));
        g_assert_nonnull(strstr(err, "'first'"));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_true(tcp_port_free("127.0.0.1", (guint16) (base + 1)));
        g_free(err);
        g_free(out);

        /* Unknown port for show: the daemon's NoSuchPort. */
        out = ctl_expect(f, 1, &err, CTL_ARGS("show", "1/udp"));
        g_assert_true(g_str_has_prefix(err, "portpubctl: "));
        g_assert_nonnull(strstr(err, "udp"));
        g_free(err);
        g_free(out);

        /* No daemon on the bus at all: exit status 3, in plain words. */
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        out = ctl_expect(f, 3, &err, CTL_ARGS("list"));
        g_assert_cmpstr(err, ==,
                        "portpubctl: Cannot list the ports: portpubd is not running (nobody owns "
                        "io.portpub.Publisher1 on the bus).\n");
        g_free(err);
        g_free(out);
        /* No bus either. */
        {
                const char *const args[] = { g_getenv("PORTPUBCTL"),
                                             "--address=unix:path=/nonexistent/bus", "status", NULL };
                g_autofree char *o = NULL, *e = NULL;
                g_autoptr(GError) error = NULL;
                int status = 0;

                g_assert_true(g_spawn_sync(NULL, (char **) args, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                                           &o, &e, &status, &error));
                g_assert_no_error(error);
                g_assert_true(WIFEXITED(status));
                g_assert_cmpint(WEXITSTATUS(status), ==, 3);
                g_assert_cmpstr(e, ==,
                                "portpubctl: Cannot connect to the bus at "
                                "'unix:path=/nonexistent/bus': No such file or directory\n");
        }
        err = NULL;
        out = NULL;
        /* Restarted so that the teardown finds a daemon to stop. */
        test_daemon_free(f->daemon);
        f->daemon = test_daemon_start(f->bus);
}

static void test_monitor(Fixture *f, gconstpointer data) {
        Bg *mon = bg_start(f, CTL_ARGS("monitor"));
        g_autofree char *out = NULL, *line = NULL, *port = NULL;
        g_auto(GStrv) lines = NULL;
        guint16 hp, gp;

        /* The first line comes once the subscription is in place. */
        bg_wait_for(mon, "Monitoring io.portpub.Publisher1; press Ctrl-C to stop.\n");

        out = ctl_ok(f, "publish", "mon", "127.0.0.1:0:80", "--guest=127.0.0.1");
        lines = split_lines(out);
        parse_published(lines[0], "tcp 127.0.0.1", &hp, &gp);

        bg_wait_for(mon, "SandboxNew mon /io/portpub/Publisher1/sandbox/mon\n");
        line = g_strdup_printf("PortPublished mon tcp 127.0.0.1:%u /io/portpub/Publisher1/port/", hp);
        bg_wait_for(mon, line);
        g_free(line);

        port = g_strdup_printf("127.0.0.1:%u", hp);
        g_free(ctl_ok(f, "unpublish", "mon", port));
        line = g_strdup_printf("PortUnpublished mon tcp 127.0.0.1:%u /io/portpub/Publisher1/port/",
                               hp);
        bg_wait_for(mon, line);
        bg_wait_for(mon, " reason=request\n");

        g_free(ctl_ok(f, "remove", "mon"));
        bg_wait_for(mon, "SandboxRemoved mon /io/portpub/Publisher1/sandbox/mon\n");

        /* SIGTERM ends it cleanly (and, under ASan, with its leak check). */
        g_assert_cmpint(bg_stop(mon), ==, 0);
        bg_free(mon);
}

static gboolean no_ports(gpointer data) {
        return n_ports(data) == 0;
}

static void test_bind_to_caller(Fixture *f, gconstpointer data) {
        Bg *b2c = bg_start(f, CTL_ARGS("publish", "b2c", "0:80", "--guest=127.0.0.1",
                                       "--bind-to-caller"));

        /* It prints the ports and stays, holding them. */
        bg_wait_for(b2c, "tcp localhost:");
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_false(b2c->eof);

        g_assert_cmpint(bg_stop(b2c), ==, 0);
        bg_free(b2c);
        /* Its connection is gone: the daemon drops the ports (reason caller-vanished). */
        g_assert_true(test_wait_until(no_ports, f, 5000));
}

/* Over varlink */

static gboolean one_active_session(gpointer data) {
        Fixture *f = data;

        return test_get_u64(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ActiveSessions") == 1;
}

/* The columns of the --no-legend list row of port (HOST ending in ":PORT"). */
static GStrv list_row(const char *list, guint16 port) {
        g_auto(GStrv) rows = split_lines(list);
        g_autofree char *suffix = g_strdup_printf(":%u", port);

        for (guint i = 0; rows[i]; i++) {
                GStrv col = g_regex_split_simple(" +", rows[i], 0, 0);

                if (g_strv_length(col) == 7 && g_str_has_suffix(col[2], suffix))
                        return col;
                g_strfreev(col);
        }
        g_printerr("%s\n", list);
        g_error("no row of port %u in the list above", port);
}

/* Published over varlink: kernel-picked, a range, UDP; list, sandboxes and show print over
 * varlink what they print over D-Bus, byte for byte. */
static void test_varlink_publish_list_show(Fixture *f, gconstpointer data) {
        guint16 guest_base = find_free_ports(3);
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "e:");
        TestEcho *uecho = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, "u:");
        TestEcho *guests[3];
        g_autofree char *spec1 = NULL, *spec2 = NULL, *spec3 = NULL, *out = NULL, *list = NULL,
                        *bare = NULL, *show = NULL, *sandboxes = NULL, *expect = NULL, *port = NULL;
        g_auto(GStrv) lines = NULL, rows = NULL, col = NULL;
        guint16 host_base, hp, gp, kernel_port, udp_port;
        int fd;

        for (guint i = 0; i < 3; i++) {
                g_autofree char *tag = g_strdup_printf("g%u:", i);

                guests[i] = test_echo_new(IPPROTO_TCP, "127.0.0.1", (guint16) (guest_base + i), tag);
        }
        host_base = find_free_ports(3);
        spec1 = g_strdup_printf("0:%u/tcp", test_echo_port(echo));
        spec2 = g_strdup_printf("%u-%u:%u-%u", host_base, host_base + 2, guest_base, guest_base + 2);
        spec3 = g_strdup_printf("127.0.0.1:0:%u/udp", test_echo_port(uecho));

        /* publish prints the ports as over D-Bus: the kernel's pick, the range in order. */
        out = vl_ok(f, "publish", "web", spec1, spec2, spec3, "--guest=127.0.0.1");
        lines = split_lines(out);
        g_assert_cmpuint(g_strv_length(lines), ==, 5);
        parse_published(lines[0], "tcp localhost", &kernel_port, &gp);
        g_assert_cmpuint(gp, ==, test_echo_port(echo));
        for (guint i = 0; i < 3; i++) {
                parse_published(lines[1 + i], "tcp localhost", &hp, &gp);
                g_assert_cmpuint(hp, ==, host_base + i);
                g_assert_cmpuint(gp, ==, guest_base + i);
        }
        parse_published(lines[4], "udp 127.0.0.1", &udp_port, &gp);
        g_assert_cmpuint(gp, ==, test_echo_port(uecho));
        g_assert_cmpuint(n_ports(f), ==, 5);

        roundtrip_via("127.0.0.1", kernel_port, "hello", "e:hello");
        roundtrip_via("::1", kernel_port, "hi", "e:hi");
        roundtrip_via("127.0.0.1", (guint16) (host_base + 1), "ping", "g1:ping");
        fd = test_udp_socket("127.0.0.1");
        test_udp_roundtrip(fd, "127.0.0.1", udp_port, "dgram", "u:dgram");
        close(fd);
        /* The TCP sessions end a moment after their clients; the UDP one stays open. The
         * counters hold still from then on, for both runs of each command. */
        g_assert_true(test_wait_until(one_active_session, f, 5000));

        list = ctl_both_ok(f, "list");
        rows = split_lines(list);
        g_assert_cmpuint(g_strv_length(rows), ==, 8);
        g_assert_true(g_regex_match_simple("^SANDBOX +PROTO +HOST +GUEST +STATE +ACTIVE +TOTAL$",
                                           rows[0], 0, 0));
        g_assert_cmpstr(rows[7], ==, "5 ports listed.");

        /* The counters come from ListPorts' Port objects: those of the traffic above. */
        bare = ctl_both_ok(f, "--no-legend", "list");
        g_strfreev(rows);
        rows = split_lines(bare);
        g_assert_cmpuint(g_strv_length(rows), ==, 5);
        col = list_row(bare, kernel_port);
        expect = g_strdup_printf("127.0.0.1:%u", test_echo_port(echo));
        g_assert_cmpstr(col[0], ==, "web");
        g_assert_cmpstr(col[1], ==, "tcp");
        g_assert_cmpstr(col[3], ==, expect);
        g_assert_cmpstr(col[4], ==, "listening");
        g_assert_cmpstr(col[5], ==, "0");
        g_assert_cmpstr(col[6], ==, "2");
        g_strfreev(g_steal_pointer(&col));
        col = list_row(bare, udp_port);
        g_free(expect);
        expect = g_strdup_printf("127.0.0.1:%u", udp_port);
        g_assert_cmpstr(col[1], ==, "udp");
        g_assert_cmpstr(col[2], ==, expect);
        g_assert_cmpstr(col[5], ==, "1");
        g_assert_cmpstr(col[6], ==, "1");

        /* Filtered here, as over D-Bus: a sandbox without ports is no error. */
        {
                g_autofree char *web = ctl_both_ok(f, "list", "web", "other");
                g_autofree char *none = ctl_both_ok(f, "list", "other");

                g_assert_cmpstr(web, ==, list);
                g_assert_cmpstr(none, ==, "No ports published.\n");
        }

        sandboxes = ctl_both_ok(f, "sandboxes");
        g_assert_true(g_regex_match_simple("^SANDBOX +PORTS +GUEST-ADDRESSES\n"
                                           "web +5 127\\.0\\.0\\.1\n\n"
                                           "1 sandbox listed\\.\n$",
                                           sandboxes, 0, 0));
        g_free(sandboxes);
        sandboxes = ctl_both_ok(f, "--no-legend", "sandboxes");
        g_assert_true(g_regex_match_simple("^web +5 127\\.0\\.0\\.1\n$", sandboxes, 0, 0));

        /* show: the Port's fields under the D-Bus property names, in their order. */
        port = g_strdup_printf("%u", host_base + 1);
        show = ctl_both_ok(f, "show", port);
        g_assert_true(g_str_has_prefix(show, "Sandbox=web\nProtocol=tcp\nHostAddress=\n"));
        g_free(expect);
        expect = g_strdup_printf("ListenAddresses=127.0.0.1:%u [::1]:%u", host_base + 1,
                                 host_base + 1);
        assert_has_line(show, expect);
        assert_has_line(show, "TotalSessions=1");
        assert_has_line(show, "BytesToGuest=4");
        assert_has_line(show, "ProxyProtocol=");
        g_assert_null(strstr(show, "BindToCaller="));
        g_free(show);
        g_free(port);
        port = g_strdup_printf("localhost:%u/tcp", kernel_port);
        show = ctl_both_ok(f, "show", port);
        assert_has_line(show, "TotalSessions=2");
        g_free(show);
        g_free(port);
        port = g_strdup_printf("127.0.0.1:%u/udp", udp_port);
        show = ctl_both_ok(f, "show", port);
        assert_has_line(show, "Protocol=udp");
        assert_has_line(show, "ActiveSessions=1");
        assert_has_line(show, "IdleTimeoutUSec=60000000");
        g_free(show);

        /* show without a port: GetStatus under the Manager's property names. */
        show = ctl_both_ok(f, "show");
        assert_has_line(show, "Version=" PACKAGE_VERSION);
        assert_has_line(show, "NSandboxes=1");
        assert_has_line(show, "NPorts=5");
        assert_has_line(show, "ActiveSessions=1");

        for (guint i = 0; i < 3; i++)
                test_echo_free(guests[i]);
        test_echo_free(echo);
        test_echo_free(uecho);
}

static void test_varlink_unpublish_set_guest_remove(Fixture *f, gconstpointer data) {
        guint16 base = find_free_ports(4);
        g_autofree char *spec = g_strdup_printf("%u-%u:%u-%u", base, base + 3, 9000, 9003);
        g_autofree char *range = g_strdup_printf("%u-%u/tcp", base, base + 1);
        g_autofree char *one = g_strdup_printf("localhost:%u", base + 2);
        g_autofree char *out = NULL, *list = NULL, *sandboxes = NULL, *row = NULL, *err = NULL;
        g_autofree char *port = g_strdup_printf("%u", base + 3);

        out = vl_ok(f, "publish", "gone", spec, "--guest=127.0.0.1");
        g_assert_cmpuint(n_ports(f), ==, 4);

        g_free(vl_ok(f, "unpublish", "gone", range, one));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpint(test_tcp_connect("127.0.0.1", base, 2000), ==, -ECONNREFUSED);
        list = ctl_both_ok(f, "--no-legend", "list");
        row = g_strdup_printf("gone tcp localhost:%u ", base + 3);
        g_assert_true(g_str_has_prefix(list, row));

        /* NoSuchPort, worded as over D-Bus; nothing changes. */
        g_free(ctl_both(f, 1, &err, CTL_ARGS("unpublish", "gone", port, "1")));
        g_assert_cmpstr(err, ==, "portpubctl: Sandbox 'gone' does not publish tcp '' port 1\n");
        g_assert_cmpuint(n_ports(f), ==, 1);

        g_free(vl_ok(f, "set-guest", "gone", "127.0.0.1", "::1"));
        sandboxes = ctl_both_ok(f, "sandboxes");
        g_assert_true(g_regex_match_simple("^SANDBOX +PORTS +GUEST-ADDRESSES\n"
                                           "gone +1 127\\.0\\.0\\.1,::1\n\n"
                                           "1 sandbox listed\\.\n$",
                                           sandboxes, 0, 0));
        g_free(list);
        list = ctl_both_ok(f, "--no-legend", "list");
        g_assert_nonnull(strstr(list, " 127.0.0.1:9003 "));

        g_free(vl_ok(f, "remove", "gone"));
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_free(sandboxes);
        sandboxes = ctl_both_ok(f, "sandboxes");
        g_assert_cmpstr(sandboxes, ==, "No sandboxes.\n");
        g_free(list);
        list = ctl_both_ok(f, "list");
        g_assert_cmpstr(list, ==, "No ports published.\n");
}

static void test_varlink_errors(Fixture *f, gconstpointer data) {
        g_autofree char *daemon_msg = NULL, *expect = NULL, *err = NULL, *out = NULL;
        g_autofree char *taken = NULL, *free_spec = NULL, *path = NULL;
        guint16 base = find_free_ports(2);

        /* The lines of D-Bus, word for word (the daemon's message), and exit status 1. */
        daemon_msg = test_call_expect_error(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                                            "RemoveSandbox", g_variant_new("(s)", "nosuch"),
                                            TEST_ERROR_PREFIX "NoSuchSandbox");
        out = ctl_both(f, 1, &err, CTL_ARGS("remove", "nosuch"));
        expect = g_strdup_printf("portpubctl: %s\n", daemon_msg);
        g_assert_cmpstr(err, ==, expect);
        g_assert_cmpstr(out, ==, "");
        g_free(err);
        g_free(out);

        /* A clash: PortInUse's message names the sandbox that holds the port, and the call
         * publishes nothing (so both runs fail alike). */
        taken = g_strdup_printf("%u:80", base);
        free_spec = g_strdup_printf("%u:80", base + 1);
        g_free(vl_ok(f, "publish", "first", taken, "--guest=127.0.0.1"));
        out = ctl_both(f, 1, &err,
                       CTL_ARGS("publish", "second", free_spec, taken, "--guest=127.0.0.1"));
        g_assert_true(g_str_has_prefix(err, "portpubctl: Cannot publish tcp '' port "));
        g_assert_nonnull(strstr(err, "'first'"));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_true(tcp_port_free("127.0.0.1", (guint16) (base + 1)));
        g_free(err);
        g_free(out);

        /* NoSuchPort of show. */
        out = ctl_both(f, 1, &err, CTL_ARGS("show", "1/udp"));
        g_assert_cmpstr(err, ==, "portpubctl: No published port udp '' port 1\n");
        g_free(err);
        g_free(out);

        /* InvalidParameter names the parameter only: the line quotes it and its value. */
        out = vl_expect(f, 1, &err, CTL_ARGS("publish", "first", "0:53/udp", "--proxy-protocol=v1"));
        g_assert_cmpstr(err, ==,
                        "portpubctl: Invalid parameter options.proxyProtocol (\"v1\") in "
                        "PublishPorts for sandbox 'first'\n");
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_free(err);
        g_free(out);
        out = vl_expect(f, 1, &err, CTL_ARGS("set-guest", "first", "127.0.0.1", "10.0.0.1"));
        g_assert_cmpstr(err, ==,
                        "portpubctl: Invalid parameter addresses[1] (\"10.0.0.1\") in "
                        "SetGuestAddresses for sandbox 'first'\n");
        g_free(err);
        g_free(out);
        out = vl_expect(f, 1, &err, CTL_ARGS("remove", "no/such"));
        g_assert_cmpstr(err, ==,
                        "portpubctl: Invalid parameter sandbox (\"no/such\") in RemoveSandbox\n");
        g_free(err);
        g_free(out);

        /* The command line: --varlink= needs a path, and a D-Bus address is no socket. */
        out = ctl_expect(f, 2, &err, CTL_ARGS("--varlink=", "list"));
        g_assert_nonnull(strstr(err, "--varlink=''"));
        g_free(err);
        g_free(out);
        out = ctl_expect(f, 2, &err, CTL_ARGS("--varlink=/nonexistent", "list"));
        g_assert_nonnull(strstr(err, "--address="));
        g_free(err);
        g_free(out);

        /* No daemon on the socket: exit status 3, the line names it. */
        path = g_strdup(f->daemon->varlink);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        out = vl_expect(f, 3, &err, CTL_ARGS("list"));
        g_assert_true(g_str_has_prefix(err, "portpubctl: Cannot connect to the varlink socket "));
        g_assert_nonnull(strstr(err, path));
        g_assert_true(g_str_has_suffix(err, " (is portpubd running?)\n"));
        test_daemon_free(f->daemon);
        f->daemon = test_daemon_start(f->bus);
}

/* Both monitors print the same lines; what was there before is announced by neither. */
static void test_varlink_monitor(Fixture *f, gconstpointer data) {
        g_autofree char *out = NULL, *line = NULL, *port = NULL, *legend = NULL;
        g_auto(GStrv) lines = NULL;
        Bg *dmon, *vmon;
        guint16 hp, gp;

        g_free(vl_ok(f, "publish", "before", "127.0.0.1:0:80", "--guest=127.0.0.1"));
        dmon = bg_start(f, CTL_ARGS("monitor"));
        vmon = bg_start_via(f, VIA_VARLINK, CTL_ARGS("monitor"));
        /* The first line comes once the subscription is in place: over varlink once the
         * daemon said "initialized". It names the socket. */
        legend = g_strdup_printf("Monitoring io.portpub.publisher1 on %s; press Ctrl-C to stop.\n",
                                 f->daemon->varlink);
        bg_wait_for(dmon, "Monitoring io.portpub.Publisher1; press Ctrl-C to stop.\n");
        bg_wait_for(vmon, legend);

        out = vl_ok(f, "publish", "mon", "127.0.0.1:0:80", "--guest=127.0.0.1");
        lines = split_lines(out);
        parse_published(lines[0], "tcp 127.0.0.1", &hp, &gp);
        line = g_strdup_printf("PortPublished mon tcp 127.0.0.1:%u /io/portpub/Publisher1/port/", hp);
        bg_wait_for(vmon, "SandboxNew mon /io/portpub/Publisher1/sandbox/mon\n");
        bg_wait_for(vmon, line);

        port = g_strdup_printf("127.0.0.1:%u", hp);
        g_free(vl_ok(f, "unpublish", "mon", port));
        g_free(line);
        line = g_strdup_printf("PortUnpublished mon tcp 127.0.0.1:%u /io/portpub/Publisher1/port/",
                               hp);
        bg_wait_for(vmon, line);
        bg_wait_for(vmon, " reason=request\n");
        g_free(vl_ok(f, "remove", "mon", "before"));
        bg_wait_for(vmon, "SandboxRemoved before /io/portpub/Publisher1/sandbox/before\n");
        bg_wait_for(dmon, "SandboxRemoved before /io/portpub/Publisher1/sandbox/before\n");
        bg_wait_for(vmon, " reason=sandbox-removed\n");

        g_assert_cmpint(bg_stop(dmon), ==, 0);
        g_assert_cmpint(bg_stop(vmon), ==, 0);
        /* But for the first line, the same lines in the same order. */
        g_assert_true(g_str_has_prefix(vmon->out->str, legend));
        g_assert_cmpstr(vmon->out->str + strlen(legend), ==, strchr(dmon->out->str, '\n') + 1);
        g_assert_null(strstr(vmon->out->str, "PortPublished before "));
        bg_free(dmon);
        bg_free(vmon);
}

/* When the daemon stops, the varlink monitor connects again to the one that comes back. */
static void test_varlink_monitor_follows_restart(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_strdup(f->daemon->varlink);
        g_autofree char *arg = g_strdup_printf("--varlink=%s", path);
        const char *const args[] = { arg, NULL };
        TestDaemonOptions o = { .extra_args = args };
        Bg *vmon = bg_start_via(f, VIA_VARLINK, CTL_ARGS("monitor"));
        BgWant w = { vmon, "SandboxNew after /io/portpub/Publisher1/sandbox/after\n" };

        bg_wait_for(vmon, "; press Ctrl-C to stop.\n");
        g_free(vl_ok(f, "publish", "early", "127.0.0.1:0:80", "--guest=127.0.0.1"));
        bg_wait_for(vmon, "SandboxNew early ");

        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        f->daemon = test_daemon_start_full(f->bus, &o);
        f->daemon->varlink = g_strdup(path);

        /* It connects again within moments; until it has, what happens is not announced. */
        for (int i = 0; i < 50 && !bg_has_text(&w); i++) {
                g_free(vl_ok(f, "publish", "after", "127.0.0.1:0:80", "--guest=127.0.0.1"));
                if (!test_wait_until(bg_has_text, &w, 200))
                        g_free(vl_ok(f, "remove", "after"));
        }
        bg_wait_for(vmon, w.text);
        g_assert_false(vmon->eof);
        g_assert_cmpint(bg_stop(vmon), ==, 0);
        bg_free(vmon);
}

static void test_varlink_bind_to_caller(Fixture *f, gconstpointer data) {
        Bg *b2c = bg_start_via(f, VIA_VARLINK,
                               CTL_ARGS("publish", "b2c", "0:80", "--guest=127.0.0.1",
                                        "--bind-to-caller"));

        /* It prints the ports and stays, holding its varlink connection and the ports. */
        bg_wait_for(b2c, "tcp localhost:");
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_false(b2c->eof);
        {
                g_autofree char *list = ctl_both_ok(f, "--no-legend", "list");

                g_assert_true(g_str_has_prefix(list, "b2c tcp localhost:"));
        }

        g_assert_cmpint(bg_stop(b2c), ==, 0);
        bg_free(b2c);
        /* Its connection is gone: the daemon drops the ports (reason caller-vanished); the
         * sandbox stays. */
        g_assert_true(test_wait_until(no_ports, f, 5000));
        g_assert_cmpuint(n_sandboxes(f), ==, 1);

        /* The daemon closing the connection ends the ports too: portpubctl says so, exit 1. */
        b2c = bg_start_via(f, VIA_VARLINK,
                           CTL_ARGS("publish", "b2c", "0:80", "--guest=127.0.0.1",
                                    "--bind-to-caller"));
        bg_wait_for(b2c, "tcp localhost:");
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        g_assert_cmpint(bg_end(b2c, FALSE), ==, 1);
        bg_free(b2c);
        test_daemon_free(f->daemon);
        f->daemon = test_daemon_start(f->bus);
}

/* JSON output, status, errors in plain words */

static void json_putp(json_object **o) {
        json_object_put(*o);
}
#define _cleanup_json_ __attribute__((cleanup(json_putp)))

/* Parses text, which must be one JSON value and nothing but white space after it. */
static json_object *parse_json(const char *text) {
        json_tokener *tok = json_tokener_new();
        json_object *o;
        size_t used;

        g_assert_nonnull(tok);
        o = json_tokener_parse_ex(tok, text, (int) strlen(text));
        if (!o || json_tokener_get_error(tok) != json_tokener_success)
                g_error("not JSON: '%s'", text);
        used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        g_assert_cmpuint(strspn(text + used, " \n"), ==, strlen(text + used));
        return o;
}

static json_object *jget(json_object *o, const char *key, json_type type) {
        json_object *v = NULL;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
                g_error("no field '%s' of type %s in %s", key, json_type_to_name(type),
                        json_object_to_json_string(o));
        return v;
}

static const char *jstr(json_object *o, const char *key) {
        return json_object_get_string(jget(o, key, json_type_string));
}

static gint64 jint(json_object *o, const char *key) {
        return json_object_get_int64(jget(o, key, json_type_int));
}

static json_object *jidx(json_object *a, size_t i) {
        g_assert_true(json_object_is_type(a, json_type_array));
        g_assert_cmpuint(i, <, json_object_array_length(a));
        return json_object_array_get_idx(a, i);
}

/* The element of array a whose host_port is port. */
static json_object *jport(json_object *a, guint16 port) {
        for (size_t i = 0; i < json_object_array_length(a); i++)
                if (jint(jidx(a, i), "host_port") == port)
                        return jidx(a, i);
        g_error("no port %u in %s", port, json_object_to_json_string(a));
}

/* publish --json with a kernel-picked port, a range and UDP; list, sandboxes, status and show
 * as JSON and status as text, over D-Bus and varlink alike (ctl_both). */
static void test_json_and_status(Fixture *f, gconstpointer data) {
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "e:");
        TestEcho *uecho = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, "u:");
        guint16 base = find_free_ports(2), kport, uport;
        g_autofree char *kspec = g_strdup_printf("0:%u", test_echo_port(echo));
        g_autofree char *range = g_strdup_printf("%u-%u:9000-9001", base, base + 1);
        g_autofree char *uspec = g_strdup_printf("127.0.0.1:0:%u/udp", test_echo_port(uecho));
        g_autofree char *out = NULL, *text = NULL, *line = NULL, *err = NULL;
        _cleanup_json_ json_object *pub = NULL, *list = NULL, *st = NULL, *show = NULL, *sbs = NULL,
                                   *dst = NULL;
        json_object *p, *s, *la;
        int fd;

        out = ctl_ok(f, "--json", "publish", "web", kspec, range, uspec, "--guest=127.0.0.1");
        pub = parse_json(out);
        g_assert_cmpuint(json_object_array_length(pub), ==, 4);
        p = jidx(pub, 0);
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "web");
        g_assert_cmpstr(jstr(p, "protocol"), ==, "tcp");
        g_assert_cmpstr(jstr(p, "host_address"), ==, "");
        kport = (guint16) jint(p, "host_port");
        g_assert_cmpuint(kport, !=, 0);
        g_assert_cmpint(jint(p, "guest_port"), ==, test_echo_port(echo));
        line = g_strdup_printf("localhost:%u", kport);
        g_assert_cmpstr(jstr(p, "host"), ==, line);
        g_assert_true(g_str_has_prefix(jstr(p, "object_path"), "/io/portpub/Publisher1/port/"));
        for (int i = 0; i < 2; i++) {
                g_assert_cmpint(jint(jidx(pub, 1 + i), "host_port"), ==, base + i);
                g_assert_cmpint(jint(jidx(pub, 1 + i), "guest_port"), ==, 9000 + i);
        }
        p = jidx(pub, 3);
        g_assert_cmpstr(jstr(p, "protocol"), ==, "udp");
        g_assert_cmpstr(jstr(p, "host_address"), ==, "127.0.0.1");
        uport = (guint16) jint(p, "host_port");
        g_assert_cmpuint(uport, !=, 0);

        /* The ports printed are the ones bound. */
        roundtrip_via("127.0.0.1", kport, "hello", "e:hello");
        fd = test_udp_socket("127.0.0.1");
        test_udp_roundtrip(fd, "127.0.0.1", uport, "dgram", "u:dgram");
        close(fd);
        g_assert_true(test_wait_until(one_active_session, f, 5000));

        g_free(out);
        out = ctl_both(f, 0, NULL, CTL_ARGS("list", "--json"));
        list = parse_json(out);
        g_assert_cmpuint(json_object_array_length(list), ==, 4);
        p = jport(list, kport);
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "web");
        g_assert_cmpstr(jstr(p, "host"), ==, line);
        g_assert_cmpstr(jstr(p, "guest_address"), ==, "127.0.0.1");
        g_assert_cmpstr(jstr(p, "state"), ==, "listening");
        g_assert_cmpstr(jstr(p, "last_error"), ==, "");
        g_assert_cmpint(jint(p, "active_sessions"), ==, 0);
        g_assert_cmpint(jint(p, "total_sessions"), ==, 1);
        g_assert_cmpint(jint(p, "rejected_sessions"), ==, 0);
        g_assert_cmpint(jint(p, "failed_sessions"), ==, 0);
        g_assert_cmpint(jint(p, "bytes_to_guest"), ==, 5);
        g_assert_cmpint(jint(p, "bytes_from_guest"), ==, 7);
        g_assert_cmpint(jint(p, "max_sessions"), ==, 4096);
        g_assert_cmpint(jint(p, "idle_timeout_usec"), ==, 0);
        la = jget(p, "listen_addresses", json_type_array);
        g_free(line);
        line = g_strdup_printf("127.0.0.1:%u", kport);
        g_assert_cmpstr(json_object_get_string(jidx(la, 0)), ==, line);
        p = jport(list, uport);
        g_assert_cmpint(jint(p, "active_sessions"), ==, 1);
        g_assert_cmpint(jint(p, "bytes_to_guest"), ==, 5);
        g_assert_cmpint(jint(p, "idle_timeout_usec"), ==, 60000000);
        g_free(out);

        /* One line: --json=short. */
        out = ctl_both(f, 0, NULL, CTL_ARGS("--json=short", "list", "web"));
        g_assert_cmpuint(strlen(out), ==, strcspn(out, "\n") + 1);
        g_free(out);

        /* status as text: the sandbox, its owner, its ports with their byte counts. */
        text = ctl_both(f, 0, NULL, CTL_ARGS("status", "web"));
        g_assert_true(g_str_has_prefix(text, "web\n  Guest addresses: 127.0.0.1\n"));
        g_free(line);
        line = g_strdup_printf("            Owner: uid %u", getuid());
        g_assert_true(g_str_has_prefix(strstr(text, "\n            Owner: ") + 1, line));
        assert_has_line(text, "          Machine: none");
        assert_has_line(text, "         Sessions: 1 active");
        assert_has_line(text, "            Ports: 4");
        g_free(line);
        line = g_strdup_printf("             Port: tcp localhost:%u -> 127.0.0.1:%u", kport,
                               test_echo_port(echo));
        assert_has_line(text, line);
        assert_has_line(text, "                   listening; sessions: 0 active, 1 total, 0 "
                              "rejected, 0 failed");
        assert_has_line(text, "                   5B to guest, 7B from guest");

        out = ctl_both(f, 0, NULL, CTL_ARGS("status", "--json", "web"));
        st = parse_json(out);
        g_assert_cmpuint(json_object_array_length(st), ==, 1);
        s = jidx(st, 0);
        g_assert_cmpstr(jstr(s, "sandbox"), ==, "web");
        g_assert_cmpint(jint(s, "owner"), ==, getuid());
        g_assert_false(json_object_get_boolean(jget(s, "machine", json_type_boolean)));
        g_assert_cmpint(jint(s, "n_ports"), ==, 4);
        g_assert_cmpint(jint(s, "active_sessions"), ==, 1);
        g_assert_cmpstr(jstr(s, "object_path"), ==, "/io/portpub/Publisher1/sandbox/web");
        g_assert_cmpstr(json_object_get_string(jidx(jget(s, "guest_addresses", json_type_array), 0)),
                        ==, "127.0.0.1");
        g_assert_cmpint(jint(jport(jget(s, "ports", json_type_array), kport), "bytes_from_guest"),
                        ==, 7);
        g_free(out);

        /* status without a sandbox: the daemon's figures. */
        g_free(text);
        text = ctl_both(f, 0, NULL, CTL_ARGS("status"));
        assert_has_line(text, "         Version: " PACKAGE_VERSION);
        assert_has_line(text, "       Sandboxes: 1");
        assert_has_line(text, "           Ports: 4");
        assert_has_line(text, "UDP idle timeout: 1min, unless published with another");
        out = ctl_both(f, 0, NULL, CTL_ARGS("--json", "status"));
        dst = parse_json(out);
        g_assert_cmpstr(jstr(dst, "version"), ==, PACKAGE_VERSION);
        g_assert_cmpint(jint(dst, "n_sandboxes"), ==, 1);
        g_assert_cmpint(jint(dst, "n_ports"), ==, 4);
        g_assert_cmpint(jint(dst, "active_sessions"), ==, 1);
        g_assert_cmpint(jint(dst, "total_sessions"), ==, 2);
        g_assert_cmpint(jint(dst, "default_max_sessions"), ==, 4096);
        g_assert_cmpint(jint(dst, "default_udp_idle_timeout_usec"), ==, 60000000);
        g_free(out);

        /* show --json: one port, the fields of list --json. */
        g_free(line);
        line = g_strdup_printf("%u", kport);
        out = ctl_both(f, 0, NULL, CTL_ARGS("show", "--json", line));
        show = parse_json(out);
        g_assert_cmpint(jint(show, "host_port"), ==, kport);
        g_assert_cmpint(jint(show, "total_sessions"), ==, 1);
        g_assert_cmpint(jint(show, "bytes_to_guest"), ==, 5);
        g_assert_cmpstr(jstr(show, "proxy_protocol"), ==, "");
        g_free(out);

        out = ctl_both(f, 0, NULL, CTL_ARGS("sandboxes", "--json"));
        sbs = parse_json(out);
        g_assert_cmpuint(json_object_array_length(sbs), ==, 1);
        g_assert_cmpstr(jstr(jidx(sbs, 0), "sandbox"), ==, "web");
        g_assert_cmpint(jint(jidx(sbs, 0), "n_ports"), ==, 4);
        g_free(out);

        /* A sandbox that is not there, in the daemon's words. */
        out = ctl_both(f, 1, &err, CTL_ARGS("status", "web", "nosuch"));
        g_assert_cmpstr(err, ==, "portpubctl: No sandbox 'nosuch'\n");
        g_assert_cmpstr(out, ==, "");

        test_echo_free(echo);
        test_echo_free(uecho);
}

/* A port taken by another sandbox or by another program: exit status 1 and a line that says
 * the port is in use and by whom; a retry of what is published succeeds; a bad spec is exit
 * status 2 and publishes nothing. */
static void test_clash_retry_bad_spec(Fixture *f, gconstpointer data) {
        guint16 base = find_free_ports(1), held;
        g_autofree char *spec = g_strdup_printf("%u:80", base);
        g_autofree char *db = g_strdup_printf("%u:5432", base);
        g_autofree char *held_spec = NULL, *out = NULL, *again = NULL, *err = NULL;
        int fd;

        out = ctl_ok(f, "publish", "web", spec, "--guest=127.0.0.1");
        again = ctl_both(f, 0, NULL, CTL_ARGS("publish", "web", spec));
        g_assert_cmpstr(again, ==, out);
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_free(again);

        again = ctl_both(f, 1, &err, CTL_ARGS("publish", "db", db, "--guest=127.0.0.1"));
        g_assert_cmpstr(again, ==, "");
        g_assert_true(g_str_has_prefix(err, "portpubctl: Cannot publish tcp "));
        g_assert_nonnull(strstr(err, "for sandbox 'db': the port is in use by sandbox 'web'"));
        g_assert_cmpuint(strlen(err), ==, strcspn(err, "\n") + 1);
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_free(err);
        g_free(again);

        fd = test_tcp_listen("127.0.0.1", &held);
        held_spec = g_strdup_printf("127.0.0.1:%u:80", held);
        again = ctl_both(f, 1, &err, CTL_ARGS("publish", "db", held_spec, "--guest=127.0.0.1"));
        g_assert_nonnull(strstr(err, ": the port is in use by another program"));
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        close(fd);
        g_free(err);
        g_free(again);

        /* Checked before anything is sent. */
        again = ctl_both(f, 2, &err, CTL_ARGS("publish", "web", "1:1", "80:abc", "--json"));
        g_assert_cmpstr(again, ==, "");
        g_assert_true(g_str_has_prefix(err, "portpubctl: Invalid port spec '80:abc'"));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_free(err);
        g_free(again);
        again = ctl_both(f, 2, &err, CTL_ARGS("--json=yaml", "list"));
        g_assert_nonnull(strstr(err, "'yaml'"));
}

/* monitor --json: one object a line, flushed as it happens, over D-Bus and varlink. */
static void test_monitor_json(Fixture *f, gconstpointer data) {
        for (Via via = VIA_DBUS; via <= VIA_VARLINK; via++) {
                Bg *mon = bg_start_via(f, via, CTL_ARGS("monitor", "--json"));
                static const char *const events[] = { "ready", "sandbox_new", "port_published",
                                                      "port_unpublished", "sandbox_removed" };
                g_autofree char *out = NULL, *port = NULL;
                _cleanup_json_ json_object *pub = NULL;
                g_auto(GStrv) lines = NULL;
                guint16 hp;

                bg_wait_for(mon, "{\"event\":\"ready\"}\n");
                out = ctl_ok(f, "--json", "publish", "mon", "127.0.0.1:0:80", "--guest=127.0.0.1");
                pub = parse_json(out);
                hp = (guint16) jint(jidx(pub, 0), "host_port");
                bg_wait_for(mon, "\"event\":\"port_published\"");
                port = g_strdup_printf("127.0.0.1:%u", hp);
                g_free(ctl_ok(f, "unpublish", "mon", port));
                g_free(ctl_ok(f, "remove", "mon"));
                bg_wait_for(mon, "\"event\":\"sandbox_removed\"");
                g_assert_cmpint(bg_stop(mon), ==, 0);

                lines = split_lines(mon->out->str);
                g_assert_cmpuint(g_strv_length(lines), ==, G_N_ELEMENTS(events));
                for (size_t i = 0; i < G_N_ELEMENTS(events); i++) {
                        _cleanup_json_ json_object *e = parse_json(lines[i]);

                        g_assert_cmpstr(jstr(e, "event"), ==, events[i]);
                        if (i == 0)
                                continue;
                        g_assert_cmpstr(jstr(e, "sandbox"), ==, "mon");
                        if (i == 1 || i == 4) {
                                g_assert_cmpstr(jstr(e, "object_path"), ==,
                                                "/io/portpub/Publisher1/sandbox/mon");
                                continue;
                        }
                        g_assert_cmpstr(jstr(e, "object_path"), ==,
                                        jstr(jidx(pub, 0), "object_path"));
                        g_assert_cmpstr(jstr(e, "protocol"), ==, "tcp");
                        g_assert_cmpstr(jstr(e, "host"), ==, port);
                        g_assert_cmpstr(jstr(e, "host_address"), ==, "127.0.0.1");
                        g_assert_cmpint(jint(e, "host_port"), ==, hp);
                        if (i == 3)
                                g_assert_cmpstr(jstr(e, "reason"), ==, "request");
                }
                bg_free(mon);
        }
}

/* --bind-to-caller says on stderr (not a terminal here) that it stays, and Ctrl-C (SIGINT)
 * ends it with status 0 and the ports with it, over D-Bus and varlink. */
static void test_bind_to_caller_sigint(Fixture *f, gconstpointer data) {
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "b:");
        g_autofree char *spec = g_strdup_printf("0:%u", test_echo_port(echo));

        for (Via via = VIA_DBUS; via <= VIA_VARLINK; via++) {
                Bg *b2c = bg_start_full(f, via, TRUE,
                                        CTL_ARGS("publish", "b2c", spec, "--guest=127.0.0.1",
                                                 "--bind-to-caller"));
                guint16 hp, gp;
                g_auto(GStrv) lines = NULL;

                bg_wait_for(b2c, "Published while portpubctl runs; press Ctrl-C or send SIGTERM "
                                 "to unpublish.\n");
                lines = split_lines(b2c->out->str);
                parse_published(lines[0], "tcp localhost", &hp, &gp);
                g_assert_cmpuint(n_ports(f), ==, 1);
                roundtrip_via("127.0.0.1", hp, "held", "b:held");

                g_subprocess_send_signal(b2c->proc, SIGINT);
                g_assert_cmpint(bg_end(b2c, FALSE), ==, 0);
                bg_free(b2c);
                g_assert_true(test_wait_until(no_ports, f, 5000));
                g_assert_cmpint(test_tcp_connect("127.0.0.1", hp, 2000), ==, -ECONNREFUSED);
        }
        test_echo_free(echo);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        signal(SIGPIPE, SIG_IGN);

#define ADD(name, fn)                                                                              \
        g_test_add("/portpubctl/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("help-and-version", test_help_and_version);
        ADD("bad-command-lines", test_bad_command_lines);
        ADD("publish-list-show", test_publish_list_show);
        ADD("options-and-forms", test_options_and_forms);
        ADD("kernel-picked-forms", test_kernel_picked_forms);
        ADD("unpublish-set-guest-remove", test_unpublish_set_guest_remove);
        ADD("daemon-errors", test_daemon_errors);
        ADD("monitor", test_monitor);
        ADD("bind-to-caller", test_bind_to_caller);
        ADD("varlink/publish-list-show", test_varlink_publish_list_show);
        ADD("varlink/unpublish-set-guest-remove", test_varlink_unpublish_set_guest_remove);
        ADD("varlink/errors", test_varlink_errors);
        ADD("varlink/monitor", test_varlink_monitor);
        ADD("varlink/monitor-follows-restart", test_varlink_monitor_follows_restart);
        ADD("varlink/bind-to-caller", test_varlink_bind_to_caller);
        ADD("both/json-and-status", test_json_and_status);
        ADD("both/clash-retry-bad-spec", test_clash_retry_bad_spec);
        ADD("both/monitor-json", test_monitor_json);
        ADD("both/bind-to-caller-sigint", test_bind_to_caller_sigint);
#undef ADD
        return g_test_run();
}
