/* Faults against the real daemon: guests that refuse, stall or reset, clients that reset or
 * half-close, a silent UDP guest, no file descriptors left, the bus gone, polkit and machined that
 * never answer, hostile varlink clients */

/*
 * Every case starts a private bus and the real portpubd, publishes ports to guests on loopback
 * that the test plays itself (a listening socket it drives step by step, or testlib's echo
 * server), and checks through real sockets what a client and a guest see.
 *
 * A "prober" is a well-behaved client in a thread of its own, with a bus connection of its own:
 * it calls GetAll and ListPorts, echoes a line through a published port and, where asked, calls
 * varlink's GetStatus, round after round, and keeps the longest any of these took. Cases that
 * make the daemon wait or push on it report that figure ("FIGURES" lines in the TAP log) and
 * assert it stays small: the daemon went on serving others meanwhile.
 *
 * The caller that polkit must decide about is this binary again (--client), run as nobody on a
 * bus that every uid may use: a fresh process with its own GDBus connection.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib-proc.h"
#include "testlib.h"

#define STRANGER_UID 65534
#define TIMEOUT_MS 10000 /* stretched under valgrind, as testlib's waits are */
/* A bound on how long something takes, stretched under valgrind as test_scaled_ms() does. */
#define SCALED_US(us) ((gint64) (us) * (gint64) test_scaled_ms(1))
#define ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define NO_GUEST_ADDRESS TEST_ERROR_PREFIX "NoGuestAddress"
#define PROPERTIES_IFACE "org.freedesktop.DBus.Properties"
#define VARLINK_GET_STATUS "{\"method\":\"io.portpub.publisher1.GetStatus\"}"

/* The longest another client may wait for one answer while a hostile one is served: far above
 * what it sees on an idle machine (a few ms, see the FIGURES lines), below anything a person
 * would call a stall. */
#define STALL_MAX_US (500 * 1000)

/* Environment of every daemon here: a sanitizer build's daemon would keep what it frees in
 * ASan's quarantine (256 MiB), which says nothing of what the daemon holds. Set in main(). */
static const char *daemon_env[3];

/* ---- small socket helpers --------------------------------------------------------------------- */

/* One read within timeout_ms: bytes read, 0 at EOF, -errno on error, -ETIMEDOUT. */
static ssize_t read_timeout(int fd, void *buf, size_t size, guint timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;
        int k;

        do
                k = poll(&p, 1, (int) test_scaled_ms(timeout_ms));
        while (k < 0 && errno == EINTR);
        if (k == 0)
                return -ETIMEDOUT;
        n = recv(fd, buf, size, MSG_DONTWAIT);
        return n < 0 ? -errno : n;
}

/* Reads exactly strlen(expect) bytes and compares them. */
static void read_expect(int fd, const char *expect) {
        size_t want = strlen(expect), got = 0;
        g_autofree char *buf = g_malloc0(want + 1);

        while (got < want) {
                ssize_t n = read_timeout(fd, buf + got, want - got, TIMEOUT_MS);

                if (n <= 0)
                        g_error("expected '%s', got '%.*s' and then %s", expect, (int) got, buf,
                                n == 0 ? "EOF" : g_strerror((int) -n));
                got += (size_t) n;
        }
        g_assert_cmpstr(buf, ==, expect);
}

static void write_all(int fd, const char *s) {
        g_assert_cmpint(send(fd, s, strlen(s), MSG_NOSIGNAL), ==, (ssize_t) strlen(s));
}

static int accept_timeout(int listen_fd, guint timeout_ms) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        int fd;

        g_assert_cmpint(poll(&p, 1, (int) test_scaled_ms(timeout_ms)), ==, 1);
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

/* close() that sends a RST instead of a FIN. */
static void close_with_reset(int fd) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };

        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l), ==, 0);
        close(fd);
}

/* What a socket reads next, after any data, within timeout_ms: 0 (EOF) or -errno. */
static int read_end(int fd, guint timeout_ms) {
        static char buf[64 * 1024];
        ssize_t n;

        for (unsigned i = 0; i < 4096; i++) {
                n = read_timeout(fd, buf, sizeof buf, timeout_ms);
                if (n <= 0)
                        return (int) n;
        }
        return -EMSGSIZE;
}

static const char *end_name(int end) {
        return end == 0 ? "EOF" : g_strerror(-end);
}

/* A port number on 127.0.0.1 that nothing listens on (as of this call). */
static guint16 unused_tcp_port(void) {
        guint16 port;
        int fd = test_tcp_listen("127.0.0.1", &port);

        close(fd);
        return port;
}

static int unix_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpuint(strlen(path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static GDBusConnection *bus_connect(const char *address, GError **error) {
        GDBusConnection *conn = g_dbus_connection_new_for_address_sync(
                address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, error);

        if (conn)
                g_dbus_connection_set_exit_on_close(conn, FALSE);
        return conn;
}

/* ---- the daemon and its objects ---------------------------------------------------------------- */

typedef struct Env {
        TestBus *bus;
        TestDaemon *daemon;
} Env;

static void env_start(Env *e, gboolean shared_bus, const char *const *args, const char *const *env) {
        TestDaemonOptions o = { .extra_args = args, .env = env ? env : daemon_env };

        e->bus = shared_bus ? test_bus_new_shared() : test_bus_new();
        e->daemon = test_daemon_start_full(e->bus, &o);
}

static void env_stop(Env *e) {
        g_assert_cmpint(test_daemon_stop(e->daemon), ==, 0);
        test_daemon_free(e->daemon);
        test_bus_free(e->bus);
}

static GVariant *call_ok(TestBus *b, const char *path, const char *iface, const char *method,
                         GVariant *params, const char *reply_type) {
        g_autoptr(GError) error = NULL;
        GVariant *v = test_call(b, path, iface, method, params, reply_type, &error);

        g_assert_no_error(error);
        return v;
}

/* Publishes proto 127.0.0.1:0 of sandbox toward 127.0.0.1:guest_port; the host port it got,
 * and the port's object path in *ret_path. */
static guint16 publish(TestBus *b, const char *sandbox, const char *proto, guint16 guest_port,
                       char **ret_path) {
        g_autoptr(GVariant) reply = NULL, published = NULL;
        const char *path;
        guint16 host_port;

        reply = call_ok(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                        g_variant_new_parsed("(%s, ['127.0.0.1'], [(%s, '127.0.0.1', @q 0, %q)], "
                                             "@a{sv} {})",
                                             sandbox, proto, guest_port),
                        "(oa(ssqqo))");
        published = g_variant_get_child_value(reply, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, &host_port, NULL, &path);
        if (ret_path)
                *ret_path = g_strdup(path);
        return host_port;
}

static guint64 port_u64(TestBus *b, const char *path, const char *name) {
        return test_get_u64(b, path, TEST_PORT_IFACE, name);
}

static char *port_string(TestBus *b, const char *path, const char *name) {
        g_autoptr(GVariant) v = test_get_property(b, path, TEST_PORT_IFACE, name);

        return g_variant_dup_string(v, NULL);
}

typedef struct PortWait {
        TestBus *bus;
        const char *path;
        const char *state;
} PortWait;

static gboolean port_in_state(gpointer data) {
        PortWait *w = data;
        g_autofree char *state = port_string(w->bus, w->path, "State");

        return strcmp(state, w->state) == 0;
}

static void wait_port_state(TestBus *b, const char *path, const char *state, guint timeout_ms) {
        PortWait w = { b, path, state };

        if (!test_wait_until(port_in_state, &w, timeout_ms)) {
                g_autofree char *now = port_string(b, path, "State");
                g_error("port %s stayed '%s', expected '%s'", path, now, state);
        }
}

static gboolean port_idle(gpointer data) {
        PortWait *w = data;

        return test_get_u32(w->bus, w->path, TEST_PORT_IFACE, "ActiveSessions") == 0;
}

static void wait_port_idle(TestBus *b, const char *path) {
        PortWait w = { b, path, NULL };

        g_assert_true(test_wait_until(port_idle, &w, TIMEOUT_MS));
}

/* ---- the prober --------------------------------------------------------------------------------- */

#define PROBER_RUN_MAX_US (180 * G_USEC_PER_SEC)
#define PROBER_PAUSE_US 2000 /* between rounds: a steady client, not a flood */

typedef struct Prober {
        char *bus_address;
        guint16 echo_port;
        char *varlink; /* NULL: no varlink calls */
        GThread *thread;
        gint ready, stop; /* atomic */
        /* read after the join */
        guint64 rounds;
        gint64 worst_us;
        const char *worst_what;
        char *error;
} Prober;

static void prober_time(Prober *p, const char *what, gint64 t0) {
        gint64 dt = g_get_monotonic_time() - t0;

        if (dt > p->worst_us) {
                p->worst_us = dt;
                p->worst_what = what;
        }
}

/* One varlink call and its reply, on a blocking socket with a receive timeout. */
static gboolean prober_varlink(int fd) {
        char buf[4096];
        size_t got = 0;

        if (send(fd, VARLINK_GET_STATUS, sizeof VARLINK_GET_STATUS, MSG_NOSIGNAL) !=
            (ssize_t) sizeof VARLINK_GET_STATUS)
                return FALSE;
        while (got == 0 || buf[got - 1] != 0) {
                ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);

                if (n <= 0 || got + (size_t) n >= sizeof buf)
                        return FALSE;
                got += (size_t) n;
        }
        return strstr(buf, "\"error\"") == NULL;
}

static gboolean prober_echo(int fd) {
        static const char line[] = "probe\n";
        char buf[sizeof line];
        size_t got = 0;

        if (send(fd, line, sizeof line - 1, MSG_NOSIGNAL) != (ssize_t) sizeof line - 1)
                return FALSE;
        while (got < sizeof line - 1) {
                ssize_t n = recv(fd, buf + got, sizeof line - 1 - got, 0);

                if (n <= 0)
                        return FALSE;
                got += (size_t) n;
        }
        return memcmp(buf, line, sizeof line - 1) == 0;
}

static void set_socket_timeouts(int fd) {
        struct timeval tv = { .tv_sec = test_scaled_ms(TIMEOUT_MS) / 1000 };

        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static gpointer prober_thread(gpointer data) {
        Prober *p = data;
        gint64 deadline = g_get_monotonic_time() + PROBER_RUN_MAX_US;
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GError) error = NULL;
        int echo = -1, vl = -1;

        conn = bus_connect(p->bus_address, &error);
        if (!conn)
                p->error = g_strdup_printf("cannot connect to the bus: %s", error->message);
        if (!p->error) {
                echo = test_tcp_connect("127.0.0.1", p->echo_port, TIMEOUT_MS);
                if (echo < 0)
                        p->error = g_strdup_printf("cannot connect to port %u: %s", p->echo_port,
                                                   g_strerror(-echo));
                else
                        set_socket_timeouts(echo);
        }
        if (!p->error && p->varlink) {
                vl = unix_connect(p->varlink);
                if (vl < 0)
                        p->error = g_strdup_printf("cannot connect to %s: %s", p->varlink,
                                                   g_strerror(-vl));
                else
                        set_socket_timeouts(vl);
        }

        while (!p->error && !g_atomic_int_get(&p->stop)) {
                g_autoptr(GVariant) all = NULL, list = NULL;
                gint64 t0;

                if (g_get_monotonic_time() > deadline) {
                        p->error = g_strdup("ran out of time without being stopped");
                        break;
                }
                t0 = g_get_monotonic_time();
                all = g_dbus_connection_call_sync(conn, TEST_BUS_NAME, TEST_MANAGER_PATH,
                                                  PROPERTIES_IFACE, "GetAll",
                                                  g_variant_new("(s)", TEST_MANAGER_IFACE),
                                                  G_VARIANT_TYPE("(a{sv})"), G_DBUS_CALL_FLAGS_NONE,
                                                  (int) test_scaled_ms(TIMEOUT_MS), NULL, &error);
                if (!all) {
                        p->error = g_strdup_printf("GetAll: %s", error->message);
                        break;
                }
                prober_time(p, "GetAll", t0);

                t0 = g_get_monotonic_time();
                list = g_dbus_connection_call_sync(conn, TEST_BUS_NAME, TEST_MANAGER_PATH,
                                                   TEST_MANAGER_IFACE, "ListPorts", NULL,
                                                   G_VARIANT_TYPE("(a(sssqsqso))"),
                                                   G_DBUS_CALL_FLAGS_NONE,
                                                   (int) test_scaled_ms(TIMEOUT_MS), NULL, &error);
                if (!list) {
                        p->error = g_strdup_printf("ListPorts: %s", error->message);
                        break;
                }
                prober_time(p, "ListPorts", t0);

                t0 = g_get_monotonic_time();
                if (!prober_echo(echo)) {
                        p->error = g_strdup("the echo through the port failed");
                        break;
                }
                prober_time(p, "TCP echo", t0);

                if (vl >= 0) {
                        t0 = g_get_monotonic_time();
                        if (!prober_varlink(vl)) {
                                p->error = g_strdup("varlink GetStatus failed");
                                break;
                        }
                        prober_time(p, "varlink GetStatus", t0);
                }
                p->rounds++;
                g_atomic_int_set(&p->ready, 1);
                g_usleep(PROBER_PAUSE_US);
        }
        if (echo >= 0)
                close(echo);
        if (vl >= 0)
                close(vl);
        if (conn)
                (void) g_dbus_connection_close_sync(conn, NULL, NULL);
        g_atomic_int_set(&p->ready, 1); /* also when it failed: the starter must not wait */
        return NULL;
}

static gboolean prober_is_ready(gpointer data) {
        return g_atomic_int_get(&((Prober *) data)->ready);
}

/* Running, and answered once, when this returns. */
static Prober *prober_start(TestBus *b, guint16 echo_port, const char *varlink) {
        Prober *p = g_new0(Prober, 1);

        p->bus_address = g_strdup(b->address);
        p->echo_port = echo_port;
        p->varlink = g_strdup(varlink);
        p->thread = g_thread_new("prober", prober_thread, p);
        /* A prober that failed is ready too: prober_stop() reports why. */
        g_assert_true(test_wait_until(prober_is_ready, p, TIMEOUT_MS));
        return p;
}

/* Stops it, reports, asserts it was answered every time; its longest wait in µs. */
static gint64 prober_stop(Prober *p, const char *during) {
        gint64 worst;

        g_atomic_int_set(&p->stop, 1);
        g_thread_join(p->thread);
        if (p->error)
                g_error("the prober, during %s: %s", during, p->error);
        g_test_message("FIGURES %s: another client made %" G_GUINT64_FORMAT
                       " rounds, its longest wait %.1f ms (%s)",
                       during, p->rounds, p->worst_us / 1000.0, p->worst_what);
        worst = p->worst_us;
        g_free(p->bus_address);
        g_free(p->varlink);
        g_free(p);
        return worst;
}

static void assert_no_stall(gint64 worst_us, const char *during) {
        if (worst_us >= SCALED_US(STALL_MAX_US))
                g_error("during %s another client waited %.1f ms for an answer", during,
                        worst_us / 1000.0);
}

/* ==== the cases ================================================================================= */

/* 1. Nothing listens on the guest port: the client is reset at once (the relay's connect() is
 * refused, and a refused guest resets the client: SO_LINGER {1, 0}, then close()), the session
 * counts as failed, and the port keeps listening: once a guest listens there, it echoes. */
static void test_guest_refuses(void) {
        Env e = {};
        g_autofree char *path = NULL, *state = NULL;
        guint16 guest_port = unused_tcp_port(), host_port;
        TestEcho *echo;
        gint64 t0, dt;
        int fd, end;

        env_start(&e, FALSE, NULL, NULL);
        host_port = publish(e.bus, "refused", "tcp", guest_port, &path);

        for (unsigned i = 0; i < 3; i++) {
                t0 = g_get_monotonic_time();
                fd = test_tcp_connect("127.0.0.1", host_port, TIMEOUT_MS);
                /* The reset may come in before test_tcp_connect() has asked for SO_ERROR. */
                if (fd >= 0) {
                        end = read_end(fd, TIMEOUT_MS);
                        close(fd);
                } else
                        end = fd;
                dt = g_get_monotonic_time() - t0;
                g_test_message("FIGURES guest refuses: connection %u ended with %s after %.1f ms%s",
                               i, end_name(end), dt / 1000.0,
                               fd < 0 ? " (in the handshake's reply)" : "");
                g_assert_cmpint(end, ==, -ECONNRESET);
                g_assert_cmpint(dt, <, SCALED_US(G_USEC_PER_SEC));
        }
        wait_port_idle(e.bus, path);
        g_assert_cmpuint(port_u64(e.bus, path, "TotalSessions"), ==, 3);
        g_assert_cmpuint(port_u64(e.bus, path, "FailedSessions"), ==, 3);
        g_assert_cmpuint(port_u64(e.bus, path, "RejectedSessions"), ==, 0);
        g_assert_cmpuint(port_u64(e.bus, path, "BytesToGuest"), ==, 0);
        state = port_string(e.bus, path, "State");
        g_assert_cmpstr(state, ==, "listening");

        echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", guest_port, NULL);
        fd = test_tcp_connect("127.0.0.1", host_port, TIMEOUT_MS);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "back\n", "back\n");
        close(fd);
        test_echo_free(echo);
        wait_port_idle(e.bus, path);
        g_assert_cmpuint(port_u64(e.bus, path, "TotalSessions"), ==, 4);
        g_assert_cmpuint(port_u64(e.bus, path, "FailedSessions"), ==, 3);
        env_stop(&e);
}

/* 2. A guest that accepts and never reads: the client pushes up to 256 MiB without blocking
 * until the socket takes nothing more for PUSH_STALL_MS. The relay stops reading once its pipe
 * toward the guest is full, so what the client could write is what the kernel's socket buffers
 * hold, the daemon's memory stays flat, and another client is served the whole time. */
#define PUSH_TOTAL (256u * 1024 * 1024)
#define PUSH_CHUNK (1024u * 1024)
#define PUSH_STALL_MS 2000
#define PUSH_RSS_GROWTH_MAX_KIB (8 * 1024)

static void test_guest_never_reads(void) {
        Env e = {};
        g_autofree char *path = NULL, *buf = g_malloc0(PUSH_CHUNK);
        guint16 stuck_port, host_port, echo_host_port;
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        gint64 rss_before, rss_max, rss_after, t0;
        size_t written = 0;
        Prober *prober;
        int listen_fd, client, guest;

        env_start(&e, FALSE, NULL, NULL);
        listen_fd = test_tcp_listen("127.0.0.1", &stuck_port);
        host_port = publish(e.bus, "stuck", "tcp", stuck_port, &path);
        echo_host_port = publish(e.bus, "echo", "tcp", test_echo_port(echo), NULL);
        prober = prober_start(e.bus, echo_host_port, NULL);
        rss_before = test_proc_rss_kib(e.daemon->pid);
        g_assert_cmpint(rss_before, >, 0);
        rss_max = rss_before;

        client = test_tcp_connect("127.0.0.1", host_port, TIMEOUT_MS);
        g_assert_cmpint(client, >=, 0);
        g_assert_cmpint(fcntl(client, F_SETFL, O_NONBLOCK), ==, 0);
        guest = accept_timeout(listen_fd, TIMEOUT_MS);

        t0 = g_get_monotonic_time();
        while (written < PUSH_TOTAL) {
                struct pollfd p = { .fd = client, .events = POLLOUT };
                ssize_t n;

                if (poll(&p, 1, PUSH_STALL_MS) == 0)
                        break; /* nothing taken for PUSH_STALL_MS */
                n = send(client, buf, MIN(PUSH_CHUNK, PUSH_TOTAL - written), MSG_NOSIGNAL);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                g_assert_cmpint(n, >, 0);
                written += (size_t) n;
                rss_max = MAX(rss_max, test_proc_rss_kib(e.daemon->pid));
        }
        rss_after = test_proc_rss_kib(e.daemon->pid);
        rss_max = MAX(rss_max, rss_after);
        g_test_message("FIGURES guest never reads: the client wrote %zu of %u bytes in %.1f s "
                       "before the socket took nothing for %d ms; daemon VmRSS %" G_GINT64_FORMAT
                       " KiB before, at most %" G_GINT64_FORMAT " KiB during (growth %" G_GINT64_FORMAT
                       " KiB), %" G_GINT64_FORMAT " KiB after",
                       written, PUSH_TOTAL, (g_get_monotonic_time() - t0) / 1e6, PUSH_STALL_MS,
                       rss_before, rss_max, rss_max - rss_before, rss_after);
        /* Held back, not swallowed: */
        g_assert_cmpuint(written, <, PUSH_TOTAL);
        /* Under valgrind the process's memory is mostly valgrind's. */
        if (!test_under_valgrind())
                g_assert_cmpint(rss_max - rss_before, <, PUSH_RSS_GROWTH_MAX_KIB);
        /* What reached the guest's side sits in its socket, unread; the rest waits in the
         * relay's pipe and the client's socket. */
        g_assert_cmpuint(port_u64(e.bus, path, "BytesToGuest"), <=, written);
        assert_no_stall(prober_stop(prober, "a client pushing into a guest that never reads"),
                        "the push");

        close(client);
        close(guest);
        close(listen_fd);
        wait_port_idle(e.bus, path);
        test_echo_free(echo);
        env_stop(&e);
}

/* A client, its guest, accepted: the pair through a port to a guest socket of the test's own. */
typedef struct Pair {
        int listen_fd, client, guest;
        char *path;
} Pair;

static void pair_open(Pair *p, Env *e, const char *sandbox) {
        guint16 guest_port, host_port;

        p->listen_fd = test_tcp_listen("127.0.0.1", &guest_port);
        host_port = publish(e->bus, sandbox, "tcp", guest_port, &p->path);
        p->client = test_tcp_connect("127.0.0.1", host_port, TIMEOUT_MS);
        g_assert_cmpint(p->client, >=, 0);
        p->guest = accept_timeout(p->listen_fd, TIMEOUT_MS);
        write_all(p->client, "hello");
        read_expect(p->guest, "hello");
        write_all(p->guest, "partial");
        read_expect(p->client, "partial");
}

static void pair_close(Pair *p, Env *e) {
        if (p->client >= 0)
                close(p->client);
        if (p->guest >= 0)
                close(p->guest);
        close(p->listen_fd);
        wait_port_idle(e->bus, p->path);
        g_free(p->path);
}

/* 3. The guest resets mid-stream: the relay's read fails with ECONNRESET, and it resets the
 * client in turn (SO_LINGER {1, 0}, then close()): the client reads ECONNRESET, not a clean EOF
 * that would pass for a complete reply.
 * 4. The client resets: the guest sees a reset the same way. */
static void test_one_side_resets(gconstpointer data) {
        gboolean guest_resets = GPOINTER_TO_INT(data);
        Env e = {};
        Pair p = {};
        int *resetter = guest_resets ? &p.guest : &p.client;
        int end;

        env_start(&e, FALSE, NULL, NULL);
        pair_open(&p, &e, guest_resets ? "guest-resets" : "client-resets");
        close_with_reset(*resetter);
        *resetter = -1;
        end = read_end(guest_resets ? p.client : p.guest, TIMEOUT_MS);
        g_test_message("%s resets: the %s read %s", guest_resets ? "guest" : "client",
                       guest_resets ? "client" : "guest", end_name(end));
        g_assert_cmpint(end, ==, -ECONNRESET);
        pair_close(&p, &e);
        env_stop(&e);
}

/* The same, while the relay watches the resetting side for nothing: its reader on the other
 * side does not read, so what that side sent fills the relay's pipe and its socket, and nothing
 * flows toward it either. The reader still learns of the reset (after the bytes queued for it),
 * and the session ends. */
static void test_one_side_resets_stuck(gconstpointer data) {
        gboolean guest_resets = GPOINTER_TO_INT(data);
        g_autofree char *buf = g_malloc0(PUSH_CHUNK);
        Env e = {};
        Pair p = {};
        int *pusher = guest_resets ? &p.guest : &p.client;
        int reader, end;
        size_t written = 0;

        env_start(&e, FALSE, NULL, NULL);
        pair_open(&p, &e, guest_resets ? "guest-resets" : "client-resets");
        reader = guest_resets ? p.client : p.guest;
        g_assert_cmpint(fcntl(*pusher, F_SETFL, O_NONBLOCK), ==, 0);
        while (written < PUSH_TOTAL) {
                struct pollfd pfd = { .fd = *pusher, .events = POLLOUT };
                ssize_t n;

                if (poll(&pfd, 1, PUSH_STALL_MS / 2) == 0)
                        break;
                n = send(*pusher, buf, PUSH_CHUNK, MSG_NOSIGNAL);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                g_assert_cmpint(n, >, 0);
                written += (size_t) n;
        }
        g_assert_cmpuint(written, <, PUSH_TOTAL);
        close_with_reset(*pusher);
        *pusher = -1;
        wait_port_idle(e.bus, p.path);
        end = read_end(reader, TIMEOUT_MS);
        g_test_message("%s resets after %zu bytes its reader did not read: the %s read %s",
                       guest_resets ? "guest" : "client", written,
                       guest_resets ? "client" : "guest", end_name(end));
        g_assert_cmpint(end, ==, -ECONNRESET);
        pair_close(&p, &e);
        env_stop(&e);
}

/* 5. The client half-closes: the guest reads the whole request and EOF, answers 200 ms later and
 * closes; the client gets the whole reply, then EOF. Request and reply are large enough (past the
 * relay's 32 KiB copy buffer) that both directions splice, so the FIN follows a drained pipe. */
#define LATE_REPLY_DELAY_US (200 * 1000)
#define HALF_CLOSE_SIZE (256 * 1024)

static void send_all(int fd, const char *buf, size_t size) {
        for (size_t off = 0; off < size;) {
                ssize_t n = send(fd, buf + off, size - off, MSG_NOSIGNAL);

                g_assert_cmpint(n, >, 0);
                off += (size_t) n;
        }
}

static void test_client_half_closes(void) {
        g_autofree char *request = g_malloc(HALF_CLOSE_SIZE + 1),
                        *reply = g_malloc(HALF_CLOSE_SIZE + 1);
        Env e = {};
        Pair p = {};

        memset(request, 'q', HALF_CLOSE_SIZE);
        request[HALF_CLOSE_SIZE] = 0;
        memset(reply, 'r', HALF_CLOSE_SIZE);
        reply[HALF_CLOSE_SIZE] = 0;
        env_start(&e, FALSE, NULL, NULL);
        pair_open(&p, &e, "half-close");
        send_all(p.client, request, HALF_CLOSE_SIZE);
        g_assert_cmpint(shutdown(p.client, SHUT_WR), ==, 0);
        read_expect(p.guest, request);
        g_assert_cmpint(read_end(p.guest, TIMEOUT_MS), ==, 0);
        /* The guest takes its time: the relay must keep the other direction open meanwhile. */
        g_usleep(LATE_REPLY_DELAY_US);
        send_all(p.guest, reply, HALF_CLOSE_SIZE);
        close(p.guest);
        p.guest = -1;
        read_expect(p.client, reply);
        g_assert_cmpint(read_end(p.client, TIMEOUT_MS), ==, 0);
        g_assert_cmpuint(port_u64(e.bus, p.path, "BytesToGuest"), ==,
                         strlen("hello") + HALF_CLOSE_SIZE);
        g_assert_cmpuint(port_u64(e.bus, p.path, "BytesFromGuest"), ==,
                         strlen("partial") + HALF_CLOSE_SIZE);
        pair_close(&p, &e);
        env_stop(&e);
}

/* 6. A UDP guest that stops answering: its session expires once the idle timeout has passed
 * since the last datagram (the client's, which the guest no longer answers), not before, and
 * within a short slack after; its socket is closed and ActiveSessions goes back to 0. */
#define UDP_TIMEOUT_S 2
/* The daemon stamps activity with CLOCK_MONOTONIC_COARSE (a tick, 4 ms at HZ=250, behind) */
#define UDP_EARLY_MAX_US (25 * 1000)
#define UDP_LATE_MAX_US (G_USEC_PER_SEC)

typedef struct FdWait {
        pid_t pid;
        int count;
} FdWait;

static gboolean fd_count_is(gpointer data) {
        FdWait *w = data;

        return test_proc_fd_count(w->pid) == w->count;
}

static void test_udp_guest_silent(void) {
        static const char *const args[] = { "--udp-idle-timeout=" G_STRINGIFY(UDP_TIMEOUT_S), NULL };
        Env e = {};
        g_autofree char *path = NULL;
        guint16 guest_port, host_port;
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        char buf[64];
        int guest, client, fds_before;
        gint64 t_last, t_closed, dt;
        FdWait w;

        env_start(&e, FALSE, args, NULL);
        g_assert_cmpuint(test_get_u64(e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                                      "DefaultUDPIdleTimeoutUSec"),
                         ==, UDP_TIMEOUT_S * G_USEC_PER_SEC);
        guest = test_udp_socket("127.0.0.1");
        {
                struct sockaddr_in sa = { .sin_family = AF_INET,
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

                g_assert_cmpint(bind(guest, (struct sockaddr *) &sa, sizeof sa), ==, 0);
                len = sizeof sa;
                g_assert_cmpint(getsockname(guest, (struct sockaddr *) &sa, &len), ==, 0);
                guest_port = ntohs(sa.sin_port);
        }
        host_port = publish(e.bus, "udp-silent", "udp", guest_port, &path);
        fds_before = test_proc_fd_count(e.daemon->pid);
        client = test_udp_socket("127.0.0.1");

        /* The guest answers once... */
        {
                struct sockaddr_in to = { .sin_family = AF_INET,
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                          .sin_port = htons(host_port) };

                g_assert_cmpint(connect(client, (struct sockaddr *) &to, sizeof to), ==, 0);
        }
        write_all(client, "ping");
        len = sizeof from;
        g_assert_cmpint(recvfrom(guest, buf, sizeof buf, 0, (struct sockaddr *) &from, &len), ==, 4);
        g_assert_cmpint(sendto(guest, "pong", 4, 0, (struct sockaddr *) &from, len), ==, 4);
        g_assert_cmpint(read_timeout(client, buf, sizeof buf, TIMEOUT_MS), ==, 4);
        g_assert_cmpint(test_proc_fd_count(e.daemon->pid), ==, fds_before + 1);
        g_assert_cmpuint(test_get_u32(e.bus, path, TEST_PORT_IFACE, "ActiveSessions"), ==, 1);

        /* ...and then no more: the client's datagram is the session's last activity. */
        g_usleep(G_USEC_PER_SEC / 2);
        write_all(client, "ping?");
        t_last = g_get_monotonic_time();
        g_assert_cmpint(read_timeout(guest, buf, sizeof buf, TIMEOUT_MS), ==, 5);

        w = (FdWait){ e.daemon->pid, fds_before };
        g_assert_true(test_wait_until(fd_count_is, &w, (UDP_TIMEOUT_S + 5) * 1000));
        t_closed = g_get_monotonic_time();
        dt = t_closed - t_last;
        g_test_message("FIGURES UDP expiry: --udp-idle-timeout=%ds, the session's socket closed "
                       "%.3f s after the last datagram",
                       UDP_TIMEOUT_S, dt / 1e6);
        g_assert_cmpint(dt, >=, UDP_TIMEOUT_S * G_USEC_PER_SEC - UDP_EARLY_MAX_US);
        g_assert_cmpint(dt, <=, UDP_TIMEOUT_S * G_USEC_PER_SEC + SCALED_US(UDP_LATE_MAX_US));
        g_assert_cmpuint(test_get_u32(e.bus, path, TEST_PORT_IFACE, "ActiveSessions"), ==, 0);
        g_assert_cmpuint(test_get_u64(e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ActiveSessions"),
                         ==, 0);
        g_assert_cmpuint(port_u64(e.bus, path, "TotalSessions"), ==, 1);
        close(client);
        close(guest);
        env_stop(&e);
}

/* 7. The daemon limited to 64 fds, 100 clients at once: accepting stops while there are none
 * (State paused, LastError says why), a timer retries without spinning, and once the clients
 * are gone the port listens again and a new client is served. The limit is set on the running
 * daemon with prlimit(2), as prlimit --pid does: it raises its soft limit to the hard one at
 * start, and both are 64 from here on. */
#define NOFILE_LIMIT 64
#define STARVED_CLIENTS 100
#define STARVED_WINDOW_US (2 * G_USEC_PER_SEC)
#define STARVED_CPU_MAX 0.20 /* of one core */

static gboolean skip_under_valgrind_nofile(void) {
        if (!test_under_valgrind())
                return FALSE;
        g_test_skip("fd limits do not apply as set under valgrind");
        return TRUE;
}

static void test_no_fds(void) {
        Env e = {};
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        struct rlimit rl = { .rlim_cur = NOFILE_LIMIT, .rlim_max = NOFILE_LIMIT };
        g_autofree char *path = NULL, *reason = NULL;
        int clients[STARVED_CLIENTS], fd;
        gint64 ticks0, ticks1, t0, t1;
        guint32 served;
        guint16 host_port;
        double cpu;

        if (skip_under_valgrind_nofile()) {
                test_echo_free(echo);
                return;
        }
        env_start(&e, FALSE, NULL, NULL);
        host_port = publish(e.bus, "starved", "tcp", test_echo_port(echo), &path);
        g_assert_cmpint(prlimit(e.daemon->pid, RLIMIT_NOFILE, &rl, NULL), ==, 0);
        g_assert_cmpint(test_proc_fd_count(e.daemon->pid), <, NOFILE_LIMIT);

        for (unsigned i = 0; i < STARVED_CLIENTS; i++) {
                clients[i] = test_tcp_connect("127.0.0.1", host_port, TIMEOUT_MS);
                g_assert_cmpint(clients[i], >=, 0);
        }
        wait_port_state(e.bus, path, "paused", TIMEOUT_MS);
        reason = port_string(e.bus, path, "LastError");
        g_assert_cmpstr(reason, ==, "Too many open files");

        ticks0 = test_proc_cpu_ticks(e.daemon->pid);
        t0 = g_get_monotonic_time();
        g_usleep(STARVED_WINDOW_US); /* the window measured, not a wait for something */
        ticks1 = test_proc_cpu_ticks(e.daemon->pid);
        t1 = g_get_monotonic_time();
        cpu = (double) (ticks1 - ticks0) / (double) test_proc_ticks_per_second() /
              ((double) (t1 - t0) / G_USEC_PER_SEC);
        served = test_get_u32(e.bus, path, TEST_PORT_IFACE, "ActiveSessions");
        g_test_message("FIGURES no fds: %d clients, %u served at a limit of %d fds, the rest "
                       "waiting; daemon CPU while starved %" G_GINT64_FORMAT " ticks in %.2f s = "
                       "%.1f%% of a core; RejectedSessions %" G_GUINT64_FORMAT,
                       STARVED_CLIENTS, served, NOFILE_LIMIT, ticks1 - ticks0, (t1 - t0) / 1e6,
                       cpu * 100, port_u64(e.bus, path, "RejectedSessions"));
        g_assert_cmpfloat(cpu, <, STARVED_CPU_MAX);
        g_assert_cmpuint(served, >, 0);
        g_assert_cmpuint(served, <, STARVED_CLIENTS);
        wait_port_state(e.bus, path, "paused", 0);
        /* Reads are still answered (above); a publish fails with a named error, changing
         * nothing. (Whether a spare fd is left depends on how the count fell: an odd one goes to
         * each retry's accept, whose client is then rejected for want of a guest socket; and a
         * publish that gets it is the next case.) */
        if (test_proc_fd_count(e.daemon->pid) >= NOFILE_LIMIT) {
                g_autofree char *msg = test_call_expect_error(
                        e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                        g_variant_new_parsed("('late', ['127.0.0.1'], [('tcp', '127.0.0.1', @q 0, "
                                             "@q 80)], @a{sv} {})"),
                        TEST_ERROR_PREFIX "LimitExceeded");
                g_test_message("publishing while out of fds: %s", msg);
                g_assert_nonnull(strstr(msg, "too many open files"));
                g_assert_cmpuint(test_get_u32(e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"),
                                 ==, 1);
        }

        for (unsigned i = 0; i < STARVED_CLIENTS; i++)
                close(clients[i]);
        wait_port_state(e.bus, path, "listening", TIMEOUT_MS);
        wait_port_idle(e.bus, path);
        fd = test_tcp_connect("127.0.0.1", host_port, TIMEOUT_MS);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "again\n", "again\n");
        close(fd);
        g_free(reason);
        reason = port_string(e.bus, path, "LastError");
        g_assert_cmpstr(reason, ==, "");
        wait_port_idle(e.bus, path);
        env_stop(&e);
        test_echo_free(echo);
}

/* A state file in a directory of the test's own, outliving the daemons started on it. */
typedef struct StateDir {
        char *dir, *path;
        const char *args[2]; /* { "--state-file=PATH", NULL } */
} StateDir;

static void state_dir_init(StateDir *sd) {
        g_autoptr(GError) error = NULL;

        sd->dir = g_dir_make_tmp("portpub-faults-XXXXXX", &error);
        g_assert_no_error(error);
        sd->path = g_build_filename(sd->dir, "state", NULL);
        sd->args[0] = g_strdup_printf("--state-file=%s", sd->path);
        sd->args[1] = NULL;
}

static void state_dir_done(StateDir *sd) {
        (void) unlink(sd->path);
        (void) rmdir(sd->dir);
        g_free(sd->dir);
        g_free(sd->path);
        g_free((char *) sd->args[0]);
}

/* 7b. One fd to spare: a publish binds its socket with it, and then the state file cannot be
 * written. The reply reports the port (it is published and serves), the daemon tries the file
 * again with back-off, and once fds are back the file has it: a crash after that loses nothing. */
typedef struct FileWait {
        const char *path;
        const char *needle;
} FileWait;

static gboolean file_contains(gpointer data) {
        FileWait *w = data;
        g_autofree char *text = NULL;

        return g_file_get_contents(w->path, &text, NULL, NULL) && strstr(text, w->needle);
}

static void test_state_write_fails(void) {
        g_autofree char *msg = NULL;
        StateDir sd;
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        struct rlimit tight, before;
        FileWait w;
        guint16 port;
        Env e = {};
        int fd;

        if (skip_under_valgrind_nofile()) {
                test_echo_free(echo);
                return;
        }
        state_dir_init(&sd);
        env_start(&e, FALSE, sd.args, NULL);
        (void) publish(e.bus, "first", "tcp", test_echo_port(echo), NULL);
        w = (FileWait){ sd.path, "\"first\"" };
        g_assert_true(file_contains(&w));

        g_assert_cmpint(prlimit(e.daemon->pid, RLIMIT_NOFILE, NULL, &before), ==, 0);
        /* The soft limit only: raising a hard limit again needs CAP_SYS_RESOURCE. */
        tight.rlim_cur = (rlim_t) test_proc_fd_count(e.daemon->pid) + 1;
        tight.rlim_max = before.rlim_max;
        g_assert_cmpint(prlimit(e.daemon->pid, RLIMIT_NOFILE, &tight, NULL), ==, 0);
        port = publish(e.bus, "second", "tcp", test_echo_port(echo), NULL);
        w.needle = "\"second\"";
        g_assert_false(file_contains(&w));
        /* Published all the same: it serves. */
        g_assert_cmpint(prlimit(e.daemon->pid, RLIMIT_NOFILE, &before, NULL), ==, 0);
        fd = test_tcp_connect("127.0.0.1", port, TIMEOUT_MS);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "served\n", "served\n");
        close(fd);
        /* The retry writes the file (the first one after 1 s). */
        g_assert_true(test_wait_until(file_contains, &w, TIMEOUT_MS));

        g_assert_cmpint(kill(e.daemon->pid, SIGKILL), ==, 0);
        g_assert_true(test_daemon_wait(e.daemon, TIMEOUT_MS));
        test_daemon_free(e.daemon);
        {
                TestDaemonOptions o = { .extra_args = sd.args, .env = daemon_env };

                e.daemon = test_daemon_start_full(e.bus, &o);
        }
        msg = test_call_expect_error(e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                                     g_variant_new("(s)", "nothing"),
                                     TEST_ERROR_PREFIX "NoSuchSandbox");
        g_variant_unref(call_ok(e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                                g_variant_new("(s)", "second"), "(o)"));
        fd = test_tcp_connect("127.0.0.1", port, TIMEOUT_MS);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "restored\n", "restored\n");
        close(fd);
        env_stop(&e);
        test_echo_free(echo);
        state_dir_done(&sd);
}

/* 8. The dbus-daemon dies: portpubd exits non-zero at once; started again on the same state
 * file with a new bus, it has every port back, on the same host ports, and traffic flows. */
#define BUS_LOST_EXIT_MAX_US (2 * G_USEC_PER_SEC)

static void test_bus_killed(void) {
        StateDir sd;
        TestEcho *tcp = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        TestEcho *udp = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, NULL);
        g_autoptr(GVariant) list = NULL;
        guint16 tcp_port, udp_port;
        Env e = {};
        gint64 t0, dt;
        int fd;

        state_dir_init(&sd);
        env_start(&e, TRUE, sd.args, NULL);
        tcp_port = publish(e.bus, "survivor", "tcp", test_echo_port(tcp), NULL);
        udp_port = publish(e.bus, "survivor", "udp", test_echo_port(udp), NULL);

        g_assert_cmpint(kill(e.bus->pid, SIGKILL), ==, 0);
        t0 = g_get_monotonic_time();
        g_assert_true(test_daemon_wait(e.daemon, 10000));
        dt = g_get_monotonic_time() - t0;
        g_test_message("FIGURES bus killed: portpubd exited with %d %.1f ms after the dbus-daemon "
                       "was killed",
                       e.daemon->exit_status, dt / 1e3);
        g_assert_cmpint(e.daemon->exit_status, >, 0);
        g_assert_cmpint(dt, <, SCALED_US(BUS_LOST_EXIT_MAX_US));
        test_daemon_free(e.daemon);
        test_bus_free(e.bus); /* reaps the dbus-daemon */

        env_start(&e, FALSE, sd.args, NULL);
        list = call_ok(e.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ListPorts", NULL,
                       "(a(sssqsqso))");
        {
                g_autoptr(GVariant) ports = g_variant_get_child_value(list, 0);
                guint seen = 0;

                g_assert_cmpuint(g_variant_n_children(ports), ==, 2);
                for (gsize i = 0; i < 2; i++) {
                        const char *sandbox, *proto, *state_name;
                        guint16 host_port;

                        g_variant_get_child(ports, i, "(&s&s&sq&sq&s&o)", &sandbox, &proto, NULL,
                                            &host_port, NULL, NULL, &state_name, NULL);
                        g_assert_cmpstr(sandbox, ==, "survivor");
                        g_assert_cmpstr(state_name, ==, "listening");
                        g_assert_cmpuint(host_port, ==,
                                         strcmp(proto, "tcp") == 0 ? tcp_port : udp_port);
                        seen |= strcmp(proto, "tcp") == 0 ? 1 : 2;
                }
                g_assert_cmpuint(seen, ==, 3);
        }
        fd = test_tcp_connect("127.0.0.1", tcp_port, TIMEOUT_MS);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "still here\n", "still here\n");
        close(fd);
        fd = test_udp_socket("127.0.0.1");
        test_udp_roundtrip(fd, "127.0.0.1", udp_port, "udp too", "udp too");
        close(fd);
        env_stop(&e);
        test_echo_free(tcp);
        test_echo_free(udp);
        state_dir_done(&sd);
}

/* 9. A polkit and a machined that never answer. Each is a connection of the test's own that
 * owns the name and drops every method call it gets (a GDBus filter), so the daemon's call
 * waits for its own timeout. */
#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define MACHINED_NAME "org.freedesktop.machine1"
#define POLKIT_TIMEOUT_US (2 * G_USEC_PER_SEC) /* PORTPUB_TEST_POLKIT_TIMEOUT_USEC */
#define MACHINED_TIMEOUT_US (10 * G_USEC_PER_SEC) /* MACHINED_TIMEOUT_USEC in src/bus/machined.h */
#define ANSWER_LATE_MAX_US (5 * G_USEC_PER_SEC) /* after the timeout, under load */

typedef struct Silent {
        GDBusConnection *conn;
        guint filter;
        gint calls; /* atomic: method calls dropped */
} Silent;

static GDBusMessage *silent_filter(GDBusConnection *conn, GDBusMessage *m, gboolean incoming,
                                   gpointer data) {
        Silent *s = data;

        if (!incoming || g_dbus_message_get_message_type(m) != G_DBUS_MESSAGE_TYPE_METHOD_CALL)
                return m;
        g_atomic_int_inc(&s->calls);
        g_object_unref(m);
        return NULL;
}

static void silent_start(Silent *s, TestBus *b, const char *name) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        guint32 result;

        s->conn = bus_connect(b->address, &error);
        g_assert_no_error(error);
        reply = g_dbus_connection_call_sync(s->conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "RequestName",
                                            g_variant_new("(su)", name, 4 /* DO_NOT_QUEUE */),
                                            G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE,
                                            (int) test_scaled_ms(TIMEOUT_MS), NULL, &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(u)", &result);
        g_assert_cmpuint(result, ==, 1); /* primary owner */
        /* After the reply: from here on nothing that comes in is answered. */
        s->filter = g_dbus_connection_add_filter(s->conn, silent_filter, s, NULL);
}

static void silent_stop(Silent *s) {
        g_dbus_connection_remove_filter(s->conn, s->filter);
        (void) g_dbus_connection_close_sync(s->conn, NULL, NULL);
        g_clear_object(&s->conn);
}

static gboolean silent_got_a_call(gpointer data) {
        return g_atomic_int_get(&((Silent *) data)->calls) > 0;
}

/* After fork, before exec: nothing but system calls. */
static void become_stranger(gpointer data) {
        if (setgroups(0, NULL) < 0 || setresgid(STRANGER_UID, STRANGER_UID, STRANGER_UID) < 0 ||
            setresuid(STRANGER_UID, STRANGER_UID, STRANGER_UID) < 0)
                _exit(126);
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* --client ADDRESS GUEST_PORT: PublishPorts as whoever runs it; prints "ok" or
 * "error NAME MICROSECONDS MESSAGE". */
static int client_main(int argc, char *argv[]) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *remote = NULL;
        gint64 t0;

        if (argc != 2) {
                fprintf(stderr, "usage: --client ADDRESS GUEST_PORT\n");
                return 2;
        }
        conn = bus_connect(argv[0], &error);
        if (!conn) {
                fprintf(stderr, "client: %s: %s\n", argv[0], error->message);
                return 1;
        }
        t0 = g_get_monotonic_time();
        reply = g_dbus_connection_call_sync(
                conn, TEST_BUS_NAME, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                g_variant_new_parsed("('stranger', ['127.0.0.1'], [('tcp', '127.0.0.1', @q 0, "
                                     "%q)], @a{sv} {})",
                                     (guint16) g_ascii_strtoull(argv[1], NULL, 10)),
                NULL, G_DBUS_CALL_FLAGS_NONE, 60000, NULL, &error);
        if (reply) {
                printf("ok\n");
                return 0;
        }
        remote = g_dbus_error_get_remote_error(error);
        g_dbus_error_strip_remote_error(error);
        printf("error %s %" G_GINT64_FORMAT " %s\n", remote ? remote : "(local)",
               g_get_monotonic_time() - t0, error->message);
        return 0;
}

static void assert_nothing_published(TestBus *b, const char *sandbox) {
        g_autofree char *msg = NULL;

        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==, 1);
        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes"), ==, 1);
        msg = test_call_expect_error(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                                     g_variant_new("(s)", sandbox),
                                     TEST_ERROR_PREFIX "NoSuchSandbox");
}

static void test_polkit_never_answers(void) {
        static const char *env[3];
        g_autofree char *timeout =
                g_strdup_printf("PORTPUB_TEST_POLKIT_TIMEOUT_USEC=%" G_GINT64_FORMAT,
                                (gint64) POLKIT_TIMEOUT_US);
        g_autofree char *exe = NULL, *out = NULL, *port_arg = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) words = NULL;
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        Silent polkit = {};
        Prober *prober;
        Env e = {};
        GPid pid;
        int out_fd, status;
        gint64 waited;
        gsize len;

        env[0] = daemon_env[0];
        env[1] = timeout;
        env_start(&e, TRUE, NULL, env);
        silent_start(&polkit, e.bus, POLKIT_NAME);
        prober = prober_start(e.bus, publish(e.bus, "echo", "tcp", test_echo_port(echo), NULL), NULL);

        exe = g_file_read_link("/proc/self/exe", &error);
        g_assert_no_error(error);
        port_arg = g_strdup_printf("%u", test_echo_port(echo));
        {
                const char *argv[] = { exe, "--client", e.bus->address, port_arg, NULL };

                g_spawn_async_with_pipes(NULL, (char **) argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                         become_stranger, NULL, &pid, NULL, &out_fd, NULL, &error);
                g_assert_no_error(error);
        }
        /* The daemon asked polkit: from here on the stranger's call waits for an answer. */
        g_assert_true(test_wait_until(silent_got_a_call, &polkit, TIMEOUT_MS));
        g_assert_true(
                test_wait_pid(pid,
                              (guint) ((POLKIT_TIMEOUT_US + ANSWER_LATE_MAX_US) / 1000 + TIMEOUT_MS),
                              &status));
        g_spawn_close_pid(pid);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        {
                g_autoptr(GIOChannel) ch = g_io_channel_unix_new(out_fd);

                g_io_channel_set_close_on_unref(ch, TRUE);
                g_assert_cmpint(g_io_channel_read_to_end(ch, &out, &len, &error), ==,
                                G_IO_STATUS_NORMAL);
                g_assert_no_error(error);
        }
        words = g_strsplit(g_strstrip(out), " ", 4);
        g_assert_cmpuint(g_strv_length(words), ==, 4);
        g_assert_cmpstr(words[0], ==, "error");
        waited = g_ascii_strtoll(words[2], NULL, 10);
        g_test_message("FIGURES polkit never answers: the stranger got %s after %.3f s: %s",
                       words[1], waited / 1e6, words[3]);
        g_assert_cmpstr(words[1], ==, ACCESS_DENIED);
        g_assert_nonnull(strstr(words[3], "polkit could not be asked"));
        g_assert_cmpint(waited, >=, POLKIT_TIMEOUT_US);
        g_assert_cmpint(waited, <, POLKIT_TIMEOUT_US + SCALED_US(ANSWER_LATE_MAX_US));
        assert_no_stall(prober_stop(prober, "a polkit check that is never answered"),
                        "the polkit check");
        assert_nothing_published(e.bus, "stranger");

        silent_stop(&polkit);
        env_stop(&e);
        test_echo_free(echo);
}

typedef struct AsyncCall {
        gboolean done;
        GVariant *reply;
        GError *error;
        gint64 finished;
} AsyncCall;

static void async_call_done(GObject *src, GAsyncResult *res, gpointer data) {
        AsyncCall *c = data;

        c->reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(src), res, &c->error);
        c->finished = g_get_monotonic_time();
        c->done = TRUE;
}

static gboolean async_call_is_done(gpointer data) {
        return ((AsyncCall *) data)->done;
}

static void test_machined_never_answers(void) {
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *remote = NULL;
        AsyncCall call = {};
        Silent machined = {};
        Prober *prober;
        Env e = {};
        gint64 t0, waited;

        env_start(&e, FALSE, NULL, NULL);
        silent_start(&machined, e.bus, MACHINED_NAME);
        prober = prober_start(e.bus, publish(e.bus, "echo", "tcp", test_echo_port(echo), NULL), NULL);

        /* Root's publish of a new sandbox without guest addresses: they come from machined. */
        t0 = g_get_monotonic_time();
        g_dbus_connection_call(e.bus->conn, TEST_BUS_NAME, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                               "PublishPorts",
                               g_variant_new_parsed("('machine', @as [], [('tcp', '127.0.0.1', "
                                                    "@q 0, @q 80)], @a{sv} {})"),
                               NULL, G_DBUS_CALL_FLAGS_NONE, 60000, NULL, async_call_done, &call);
        g_assert_true(test_wait_until(silent_got_a_call, &machined, TIMEOUT_MS));
        g_assert_true(test_wait_until(async_call_is_done, &call,
                                      (MACHINED_TIMEOUT_US + ANSWER_LATE_MAX_US) / 1000));
        waited = call.finished - t0;
        g_assert_null(call.reply);
        g_assert_nonnull(call.error);
        remote = g_dbus_error_get_remote_error(call.error);
        g_test_message("FIGURES machined never answers: root's publish got %s after %.3f s: %s",
                       remote, waited / 1e6, call.error->message);
        g_assert_cmpstr(remote, ==, NO_GUEST_ADDRESS);
        g_assert_nonnull(strstr(call.error->message, "'machine'"));
        g_assert_cmpint(waited, >=, MACHINED_TIMEOUT_US);
        g_assert_cmpint(waited, <, MACHINED_TIMEOUT_US + SCALED_US(ANSWER_LATE_MAX_US));
        g_clear_error(&call.error);
        assert_no_stall(prober_stop(prober, "a machined lookup that is never answered"),
                        "the machined lookup");
        assert_nothing_published(e.bus, "machine");

        silent_stop(&machined);
        env_stop(&e);
        test_echo_free(echo);
}

/* 10. Hostile varlink clients, one kind after another, while the prober (D-Bus, a TCP echo and
 * varlink calls on a connection of its own) measures how long it waits:
 *   endless     one message that never ends (no NUL): the daemon closes it at 16 MiB;
 *   trickle     HOSTILE_TRICKLERS clients sending their calls a byte every TRICKLE_GAP_US;
 *   deaf        a client that pipelines calls and never reads a reply: the daemon stops reading
 *               it, and its writes stall. */
#define HOSTILE_ENDLESS_MAX (32u * 1024 * 1024)
#define ENDLESS_RUN_US G_USEC_PER_SEC
#define ENDLESS_ROUNDS_MAX 200
#define HOSTILE_TRICKLERS 32
#define TRICKLE_GAP_US (20 * 1000)
#define DEAF_STALL_MS 1000
#define DEAF_CALLS_MAX 1000000

/* One connection's message that never ends; the bytes the daemon took before it closed. */
static size_t endless_once(const char *varlink, const char *chunk, size_t chunk_size) {
        static const char head[] = "{\"method\":\"io.portpub.publisher1.GetStatus\","
                                   "\"parameters\":{\"x\":\"";
        int fd = unix_connect(varlink);
        size_t written = 0;
        int end = 0;

        g_assert_cmpint(fd, >=, 0);
        set_socket_timeouts(fd);
        write_all(fd, head);
        while (written < HOSTILE_ENDLESS_MAX) {
                ssize_t n = send(fd, chunk, chunk_size, MSG_NOSIGNAL);

                if (n < 0) {
                        end = -errno;
                        break;
                }
                written += (size_t) n;
        }
        /* Closed by the daemon: not a write that timed out, nor one it took whole. */
        if (end != -EPIPE && end != -ECONNRESET)
                g_error("endless message: %zu bytes taken, then %s", written,
                        end ? g_strerror(-end) : "no close");
        g_assert_cmpuint(written, >=, 16u * 1024 * 1024 - chunk_size - sizeof head);
        end = read_end(fd, TIMEOUT_MS);
        g_assert_true(end == 0 || end == -ECONNRESET);
        close(fd);
        return written;
}

/* One after another for at least ENDLESS_RUN_US, so that the prober has the time to meet them. */
static void hostile_endless(const char *varlink) {
        g_autofree char *chunk = g_malloc(64 * 1024);
        gint64 t0 = g_get_monotonic_time();
        size_t taken = 0;
        unsigned n = 0;

        memset(chunk, 'a', 64 * 1024);
        while (n < ENDLESS_ROUNDS_MAX && (n < 2 || g_get_monotonic_time() - t0 < ENDLESS_RUN_US)) {
                taken = MAX(taken, endless_once(varlink, chunk, 64 * 1024));
                n++;
        }
        g_test_message("FIGURES varlink endless message: %u connections in %.1f s, each closed "
                       "after at most %zu bytes",
                       n, (g_get_monotonic_time() - t0) / 1e6, taken);
}

static void hostile_trickle(const char *varlink) {
        static const char call[] = VARLINK_GET_STATUS;
        int fds[HOSTILE_TRICKLERS];

        for (unsigned i = 0; i < HOSTILE_TRICKLERS; i++) {
                fds[i] = unix_connect(varlink);
                g_assert_cmpint(fds[i], >=, 0);
        }
        /* The NUL too: sizeof. */
        for (size_t b = 0; b < sizeof call; b++) {
                for (unsigned i = 0; i < HOSTILE_TRICKLERS; i++)
                        g_assert_cmpint(send(fds[i], call + b, 1, MSG_NOSIGNAL), ==, 1);
                g_usleep(TRICKLE_GAP_US); /* the hostile client's own pace */
        }
        /* Slow is not wrong: each is answered once its call is whole. */
        for (unsigned i = 0; i < HOSTILE_TRICKLERS; i++) {
                char buf[4096];
                ssize_t n = read_timeout(fds[i], buf, sizeof buf - 1, TIMEOUT_MS);

                g_assert_cmpint(n, >, 0);
                buf[n] = 0;
                g_assert_nonnull(strstr(buf, "\"version\""));
                close(fds[i]);
        }
        g_test_message("varlink trickle: %d clients sent a call a byte every %d ms, each answered",
                       HOSTILE_TRICKLERS, TRICKLE_GAP_US / 1000);
}

static void hostile_deaf(const char *varlink) {
        static const char call[] = "{\"method\":\"io.portpub.publisher1.ListPorts\"}";
        int fd = unix_connect(varlink), rcvbuf = 4096;
        guint64 calls = 0;
        int end = 0;

        g_assert_cmpint(fd, >=, 0);
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        g_assert_cmpint(fcntl(fd, F_SETFL, O_NONBLOCK), ==, 0);
        while (calls < DEAF_CALLS_MAX) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                ssize_t n;

                if (poll(&p, 1, DEAF_STALL_MS) == 0)
                        break;
                n = send(fd, call, sizeof call, MSG_NOSIGNAL);
                if (n < 0 && errno == EAGAIN)
                        continue;
                if (n < 0) {
                        end = -errno;
                        break;
                }
                /* A partial write may leave half a call: it is garbage to be closed for. */
                g_assert_cmpint(n, ==, (ssize_t) sizeof call);
                calls++;
        }
        g_test_message("FIGURES varlink deaf client: %" G_GUINT64_FORMAT " calls written before %s",
                       calls, end ? g_strerror(-end) : "the socket took nothing for a second");
        g_assert_cmpuint(calls, <, DEAF_CALLS_MAX);
        close(fd);
}

static void test_hostile_varlink(void) {
        static const struct {
                const char *name;
                void (*run)(const char *varlink);
        } kinds[] = {
                { "a varlink message that never ends", hostile_endless },
                { "varlink clients sending a byte at a time", hostile_trickle },
                { "a varlink client that never reads its replies", hostile_deaf },
        };
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        guint16 echo_port;
        Env e = {};

        env_start(&e, FALSE, NULL, NULL);
        echo_port = publish(e.bus, "echo", "tcp", test_echo_port(echo), NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++) {
                Prober *prober = prober_start(e.bus, echo_port, e.daemon->varlink);

                kinds[i].run(e.daemon->varlink);
                assert_no_stall(prober_stop(prober, kinds[i].name), kinds[i].name);
        }
        env_stop(&e);
        test_echo_free(echo);
}

static void skip_not_root(void) {
        g_test_skip("needs root: the caller polkit is asked about runs as another uid");
}

int main(int argc, char *argv[]) {
        if (argc >= 2 && strcmp(argv[1], "--client") == 0)
                return client_main(argc - 2, argv + 2);

        g_test_init(&argc, &argv, NULL);
        {
                const char *asan = g_getenv("ASAN_OPTIONS");

                daemon_env[0] = g_strdup_printf("ASAN_OPTIONS=%s%squarantine_size_mb=0",
                                                asan ? asan : "", asan ? ":" : "");
        }
        g_test_add_func("/faults/guest-refuses", test_guest_refuses);
        g_test_add_func("/faults/guest-never-reads", test_guest_never_reads);
        g_test_add_data_func("/faults/guest-resets", GINT_TO_POINTER(TRUE), test_one_side_resets);
        g_test_add_data_func("/faults/client-resets", GINT_TO_POINTER(FALSE), test_one_side_resets);
        g_test_add_data_func("/faults/guest-resets-stuck", GINT_TO_POINTER(TRUE),
                             test_one_side_resets_stuck);
        g_test_add_data_func("/faults/client-resets-stuck", GINT_TO_POINTER(FALSE),
                             test_one_side_resets_stuck);
        g_test_add_func("/faults/client-half-closes", test_client_half_closes);
        g_test_add_func("/faults/udp-guest-silent", test_udp_guest_silent);
        g_test_add_func("/faults/no-fds", test_no_fds);
        g_test_add_func("/faults/state-write-fails", test_state_write_fails);
        g_test_add_func("/faults/bus-killed", test_bus_killed);
        g_test_add_func("/faults/polkit-never-answers",
                        geteuid() == 0 ? test_polkit_never_answers : skip_not_root);
        g_test_add_func("/faults/machined-never-answers", test_machined_never_answers);
        g_test_add_func("/faults/hostile-varlink", test_hostile_varlink);
        return g_test_run();
}
