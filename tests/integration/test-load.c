/* Load against the real daemon: 5000 idle TCP connections, 20 000 UDP peers at a cap of 1024,
 * and 1000 ports published and unpublished 100 times over each face */

/*
 * Each test starts its own bus and daemon and reports what it measured with g_test_message()
 * ("FIGURES ..."), so the log of a run holds the numbers. The daemon is started with a soft
 * RLIMIT_NOFILE of 1024 (its hard limit is ours): 5000 relayed connections take 10 000 fds, so
 * the TCP test also shows that portpubd raises its soft limit to the hard one.
 *
 * The TCP guest is an echo server of this file on one epoll thread: testlib's echo runs a
 * thread per connection, which 5000 connections cannot afford.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib-proc.h"
#include "testlib.h"

#define TIMEOUT_MS 30000
#define DAEMON_SOFT_NOFILE 1024

#define TCP_CONNECTIONS 5000
#define TCP_BATCH 250 /* connections opened before their echoes are read */
#define TCP_IDLE_BYTES_MAX 1024 /* daemon RSS per idle connection */

#define UDP_PEERS 20000
#define UDP_CAP 1024
#define UDP_KEPT 8 /* of the first peers, kept open and checked throughout */
#define UDP_BATCH 500 /* peers sent from before the counters are checked */
/* Growth of the daemon's RSS from the published port to 1024 sessions and 18 976 refusals
 * (measured: 0.4 MiB, 1.4 MiB under ASan). */
#define UDP_RSS_GROWTH_MAX_KIB (4 * 1024)
#define UDP_FDS_SLACK 8

#define CHURN_PORTS 1000
#define CHURN_ROUNDS 100
/* After the first round (measured: 8 KiB over D-Bus, 256 KiB over varlink; 4.5 and 12 MiB before
 * portpubd fixed glibc's mmap threshold). */
#define CHURN_RSS_GROWTH_MAX_KIB (2 * 1024)

/* The daemon is built as this test is. ASan's quarantine keeps freed memory (256 MiB by default)
 * to catch uses after free: under it the churn's RSS measures the quarantine, not the daemon. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- the daemon and the test's own limits --------------------------------------------------- */

/* Soft limit to the hard one; FALSE when the hard limit is below need. */
static gboolean raise_nofile(rlim_t need) {
        struct rlimit rl;

        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        rl.rlim_cur = rl.rlim_max;
        return setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need;
}

static void set_soft_nofile(rlim_t soft) {
        struct rlimit rl;

        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        rl.rlim_cur = MIN(soft, rl.rlim_max);
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

/* The soft "Max open files" of /proc/PID/limits; 0 when unlimited or unreadable. */
static guint64 proc_soft_nofile(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/limits", (int) pid);
        g_autofree char *text = NULL;
        const char *line;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return 0;
        line = strstr(text, "Max open files");
        return line ? g_ascii_strtoull(line + strlen("Max open files"), NULL, 10) : 0;
}

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        gint64 started;
} Fixture;

/* Not a line per port published and unpublished: 200 000 of them would bury the log. */
static const char *const daemon_args[] = { "--log-level=warning", NULL };
static const TestDaemonOptions daemon_options = { .extra_args = daemon_args };

/* The daemon starts with a soft fd limit of DAEMON_SOFT_NOFILE; the test gets its hard one. */
static void fixture_setup(Fixture *f, gconstpointer data) {
        f->started = g_get_monotonic_time();
        if (test_under_valgrind()) {
                /* Each test would take tens of minutes, meter memcheck's own allocator, and
                 * valgrind keeps fd limits of its own. */
                g_test_skip("load is not measured under valgrind");
                return;
        }
        f->bus = test_bus_new();
        set_soft_nofile(DAEMON_SOFT_NOFILE);
        f->daemon = test_daemon_start_full(f->bus, &daemon_options);
        (void) raise_nofile(0);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        if (!f->daemon)
                return;
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_bus_free(f->bus);
        g_test_message("FIGURES %s: %.1f s", g_test_get_path(),
                       (double) (g_get_monotonic_time() - f->started) / G_USEC_PER_SEC);
}

static gint64 daemon_rss(Fixture *f) {
        gint64 kib = test_proc_rss_kib(f->daemon->pid);

        g_assert_cmpint(kib, >, 0);
        return kib;
}

static int daemon_fds(Fixture *f) {
        int n = test_proc_fd_count(f->daemon->pid);

        g_assert_cmpint(n, >, 0);
        return n;
}

static GVariant *manager_call(Fixture *f, const char *method, GVariant *params,
                              const char *reply_type) {
        g_autoptr(GError) error = NULL;
        GVariant *v = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, method, params,
                                reply_type, &error);

        g_assert_no_error(error);
        return v;
}

/* Publishes one port on 127.0.0.1 with a kernel-picked host port; returns its object path. */
static char *publish_one(Fixture *f, const char *proto, guint16 guest_port, GVariant *options,
                         guint16 *ret_port) {
        g_autoptr(GVariant) reply = NULL, published = NULL;
        const char *path;

        reply = manager_call(f, "PublishPorts",
                             g_variant_new("(s^as@a(ssqq)@a{sv})", "load",
                                           (const char *const[]){ "127.0.0.1", NULL },
                                           g_variant_new_parsed("[(%s, '127.0.0.1', %q, %q)]",
                                                                proto, (guint16) 0, guest_port),
                                           options),
                             "(oa(ssqqo))");
        g_variant_get(reply, "(&o@a(ssqqo))", NULL, &published);
        g_assert_cmpuint(g_variant_n_children(published), ==, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, ret_port, NULL, &path);
        return g_strdup(path);
}

typedef struct PortCounter {
        Fixture *f;
        const char *path;
        const char *name;
        guint64 want;
} PortCounter;

static guint64 port_counter(Fixture *f, const char *path, const char *name) {
        g_autoptr(GVariant) v = test_get_property(f->bus, path, TEST_PORT_IFACE, name);

        return g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32) ? g_variant_get_uint32(v)
                                                              : g_variant_get_uint64(v);
}

static gboolean cond_counter(gpointer data) {
        PortCounter *c = data;

        return port_counter(c->f, c->path, c->name) == c->want;
}

/* Waits until the Port object's counter is want (ActiveSessions is coalesced to once a second). */
static void wait_counter(Fixture *f, const char *path, const char *name, guint64 want) {
        PortCounter c = { f, path, name, want };

        if (!test_wait_until(cond_counter, &c, TIMEOUT_MS))
                g_error("%s stayed at %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT, name,
                        port_counter(f, path, name), want);
}

typedef struct FdCount {
        Fixture *f;
        int want;
} FdCount;

static gboolean cond_fds(gpointer data) {
        FdCount *c = data;

        return daemon_fds(c->f) == c->want;
}

static void wait_daemon_fds(Fixture *f, int want) {
        FdCount c = { f, want };

        if (!test_wait_until(cond_fds, &c, TIMEOUT_MS))
                g_error("the daemon has %d fds, expected %d", daemon_fds(f), want);
}

/* ---- a TCP echo guest on one epoll thread ---------------------------------------------------- */

typedef struct EpollEcho {
        int listen_fd;
        int epoll_fd;
        int stop_fd; /* eventfd */
        guint16 port;
        gint open; /* accepted, not yet closed */
        GThread *thread;
} EpollEcho;

static void epoll_echo_add(EpollEcho *e, int fd) {
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

        g_assert_cmpint(epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, fd, &ev), ==, 0);
}

static void epoll_echo_accept(EpollEcho *e) {
        for (unsigned i = 0; i < 1024; i++) {
                int fd = accept4(e->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (fd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                g_error("echo guest: accept4: %s", g_strerror(errno));
                        return;
                }
                epoll_echo_add(e, fd);
                g_atomic_int_inc(&e->open);
        }
}

/* Messages are small: a reply that does not fit the socket's buffer is a failed test. */
static void epoll_echo_serve(EpollEcho *e, int fd) {
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                close(fd); /* also leaves the epoll set */
                g_atomic_int_add(&e->open, -1);
                return;
        }
        if (send(fd, buf, (size_t) n, MSG_NOSIGNAL) != n)
                g_error("echo guest: short send: %s", g_strerror(errno));
}

static gpointer epoll_echo_thread(gpointer data) {
        EpollEcho *e = data;

        for (;;) {
                struct epoll_event evs[256];
                int n = epoll_wait(e->epoll_fd, evs, G_N_ELEMENTS(evs), -1);

                if (n < 0 && errno == EINTR)
                        continue;
                g_assert_cmpint(n, >=, 0);
                for (int i = 0; i < n; i++) {
                        int fd = evs[i].data.fd;

                        if (fd == e->stop_fd)
                                return NULL;
                        if (fd == e->listen_fd)
                                epoll_echo_accept(e);
                        else
                                epoll_echo_serve(e, fd);
                }
        }
}

static EpollEcho *epoll_echo_new(void) {
        EpollEcho *e = g_new0(EpollEcho, 1);

        e->listen_fd = test_tcp_listen("127.0.0.1", &e->port);
        g_assert_cmpint(listen(e->listen_fd, 4096), ==, 0);
        g_assert_cmpint(fcntl(e->listen_fd, F_SETFL, O_NONBLOCK), ==, 0);
        e->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        g_assert_cmpint(e->epoll_fd, >=, 0);
        e->stop_fd = eventfd(0, EFD_CLOEXEC);
        g_assert_cmpint(e->stop_fd, >=, 0);
        epoll_echo_add(e, e->listen_fd);
        epoll_echo_add(e, e->stop_fd);
        e->thread = g_thread_new("epoll-echo", epoll_echo_thread, e);
        return e;
}

/* Connections still open are closed with the epoll fd's owner gone: the test closed its clients. */
static void epoll_echo_free(EpollEcho *e) {
        guint64 one = 1;

        g_assert_cmpint(write(e->stop_fd, &one, sizeof one), ==, sizeof one);
        g_thread_join(e->thread);
        close(e->stop_fd);
        close(e->epoll_fd);
        close(e->listen_fd);
        g_free(e);
}

typedef struct AtomicWant {
        gint *value;
        gint want;
} AtomicWant;

static gboolean cond_atomic(gpointer data) {
        AtomicWant *w = data;

        return g_atomic_int_get(w->value) == w->want;
}

/* ---- 5000 idle TCP connections -------------------------------------------------------------- */

static void read_exactly(int fd, char *buf, size_t want) {
        size_t got = 0;

        while (got < want) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                if (poll(&p, 1, TIMEOUT_MS) != 1)
                        g_error("no echo within %d ms", TIMEOUT_MS);
                n = recv(fd, buf + got, want - got, 0);
                if (n <= 0)
                        g_error("connection closed before its echo: %s",
                                n < 0 ? g_strerror(errno) : "EOF");
                got += (size_t) n;
        }
}

static void test_tcp_idle_connections(Fixture *f, gconstpointer data) {
        g_autofree int *fds = g_new(int, TCP_CONNECTIONS);
        g_autofree char *path = NULL;
        EpollEcho *echo;
        gint64 rss_before, rss_idle, per_conn;
        int fds_before, fds_idle;
        guint16 port;
        AtomicWant guests;

        if (!f->daemon)
                return;
        if (!raise_nofile(2 * TCP_CONNECTIONS + 256)) {
                g_test_skip("RLIMIT_NOFILE's hard limit is too low for 5000 connections and their "
                            "guest ends");
                return;
        }
        echo = epoll_echo_new();
        guests = (AtomicWant){ &echo->open, 0 };
        path = publish_one(f, "tcp", echo->port,
                           g_variant_new_parsed("{'MaxSessions': <%u>}",
                                                (guint32) 2 * TCP_CONNECTIONS),
                           &port);

        /* One connection first, so that process-wide one-time allocations (the copy buffer pool,
         * libev's first fd tables) are not counted per connection. */
        {
                int fd = test_tcp_connect("127.0.0.1", port, TIMEOUT_MS);

                g_assert_cmpint(fd, >=, 0);
                test_roundtrip(fd, "warm-up\n", "warm-up\n");
                close(fd);
                wait_counter(f, path, "ActiveSessions", 0);
        }
        rss_before = daemon_rss(f);
        fds_before = daemon_fds(f);

        for (guint start = 0; start < TCP_CONNECTIONS; start += TCP_BATCH) {
                guint end = MIN(start + TCP_BATCH, TCP_CONNECTIONS);

                for (guint i = start; i < end; i++) {
                        g_autofree char *msg = g_strdup_printf("connection %u\n", i);

                        fds[i] = test_tcp_connect("127.0.0.1", port, TIMEOUT_MS);
                        if (fds[i] < 0)
                                g_error("connection %u: %s", i, g_strerror(-fds[i]));
                        g_assert_cmpint(send(fds[i], msg, strlen(msg), MSG_NOSIGNAL), ==,
                                        (ssize_t) strlen(msg));
                }
                for (guint i = start; i < end; i++) {
                        g_autofree char *msg = g_strdup_printf("connection %u\n", i);
                        char buf[64] = "";

                        read_exactly(fds[i], buf, strlen(msg));
                        g_assert_cmpstr(buf, ==, msg);
                }
        }
        /* All echoed, all open, all idle. */
        wait_counter(f, path, "ActiveSessions", TCP_CONNECTIONS);
        guests.want = TCP_CONNECTIONS;
        g_assert_true(test_wait_until(cond_atomic, &guests, TIMEOUT_MS));
        g_assert_cmpuint(port_counter(f, path, "TotalSessions"), ==, TCP_CONNECTIONS + 1);
        g_assert_cmpuint(port_counter(f, path, "FailedSessions"), ==, 0);
        g_assert_cmpuint(proc_soft_nofile(f->daemon->pid), >=, 2 * TCP_CONNECTIONS);
        rss_idle = daemon_rss(f);
        fds_idle = daemon_fds(f);
        per_conn = (rss_idle - rss_before) * 1024 / TCP_CONNECTIONS;
        g_test_message("FIGURES tcp-idle: daemon VmRSS %" G_GINT64_FORMAT
                       " KiB before, %" G_GINT64_FORMAT
                       " KiB with %d idle connections: %" G_GINT64_FORMAT
                       " bytes per connection; fds %d -> %d",
                       rss_before, rss_idle, TCP_CONNECTIONS, per_conn, fds_before, fds_idle);
        g_assert_cmpint(fds_idle, ==, fds_before + 2 * TCP_CONNECTIONS);
        g_assert_cmpint(per_conn, <=, TCP_IDLE_BYTES_MAX);

        for (guint i = 0; i < TCP_CONNECTIONS; i++)
                close(fds[i]);
        wait_counter(f, path, "ActiveSessions", 0);
        guests.want = 0;
        g_assert_true(test_wait_until(cond_atomic, &guests, TIMEOUT_MS));
        wait_daemon_fds(f, fds_before);
        g_test_message("FIGURES tcp-idle: all closed: fds %d, VmRSS %" G_GINT64_FORMAT " KiB",
                       daemon_fds(f), daemon_rss(f));
        epoll_echo_free(echo);
}

/* ---- 20 000 UDP peers against a cap of 1024 ------------------------------------------------- */

/* Peer i's own source address, 127.64.0.1 onwards (loopback, never .0 or .255), so that every
 * peer is a new client whatever port the kernel gives it. */
static int udp_peer_socket(guint i) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_addr.s_addr =
                        htonl((127u << 24) | (64u << 16) | ((i / 250) << 8) | (i % 250 + 1)),
        };
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                g_error("binding peer %u to its loopback address: %s", i, g_strerror(errno));
        return fd;
}

static void udp_send(int fd, guint16 port, const char *msg) {
        struct sockaddr_in to = { .sin_family = AF_INET,
                                  .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        g_assert_cmpint(sendto(fd, msg, strlen(msg), 0, (struct sockaddr *) &to, sizeof to), ==,
                        (ssize_t) strlen(msg));
}

static void udp_kept_roundtrips(int kept[UDP_KEPT], guint16 port, guint round) {
        for (guint k = 0; k < UDP_KEPT; k++) {
                g_autofree char *msg = g_strdup_printf("kept %u round %u", k, round);

                test_udp_roundtrip(kept[k], "127.0.0.1", port, msg, msg);
        }
}

/* Datagrams the kernel dropped at the UDP socket bound to 127.0.0.1:port (/proc/net/udp's last
 * column): a daemon descheduled long enough on a busy machine loses some, and those it never saw
 * it cannot count. */
static guint64 udp_kernel_drops(guint16 port) {
        g_autofree char *text = NULL, *local = g_strdup_printf("0100007F:%04X", port);
        g_auto(GStrv) lines = NULL;
        guint64 drops = 0;

        g_assert_true(g_file_get_contents("/proc/net/udp", &text, NULL, NULL));
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *local_col = NULL, *last_col = NULL;
                char *save = NULL;
                guint n = 0;

                for (char *t = strtok_r(*l, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                        if (n == 1)
                                local_col = t;
                        last_col = t;
                        n++;
                }
                if (n >= 13 && g_strcmp0(local_col, local) == 0)
                        drops += g_ascii_strtoull(last_col, NULL, 10);
        }
        return drops;
}

typedef struct Attempts {
        Fixture *f;
        const char *path;
        guint16 port;
        guint64 want; /* datagrams of new peers sent */
} Attempts;

static gboolean cond_attempts(gpointer data) {
        Attempts *a = data;

        return port_counter(a->f, a->path, "TotalSessions") +
                       port_counter(a->f, a->path, "RejectedSessions") + udp_kernel_drops(a->port) ==
               a->want;
}

static void test_udp_session_cap(Fixture *f, gconstpointer data) {
        int kept[UDP_KEPT];
        g_autofree char *path = NULL;
        TestEcho *echo;
        gint64 rss_before, rss_after, rss_max;
        int fds_before, fds_max;
        guint16 port;
        Attempts attempts = { f, NULL, 0, 0 };
        guint64 drops;

        if (!f->daemon)
                return;
        if (!raise_nofile(UDP_CAP + 256)) {
                g_test_skip("RLIMIT_NOFILE's hard limit is too low");
                return;
        }
        echo = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, NULL);
        /* An idle timeout longer than the test: the first sessions hold the cap throughout. */
        path = publish_one(f, "udp", test_echo_port(echo),
                           g_variant_new_parsed("{'MaxSessions': <%u>, 'IdleTimeoutUSec': <%t>}",
                                                (guint32) UDP_CAP, (guint64) 3600 * G_USEC_PER_SEC),
                           &port);
        attempts.path = path;
        attempts.port = port;
        rss_before = rss_max = daemon_rss(f);
        fds_before = fds_max = daemon_fds(f);

        /* The first peers: a session each, and some of them stay. */
        for (guint k = 0; k < UDP_KEPT; k++)
                kept[k] = udp_peer_socket(k);
        udp_kept_roundtrips(kept, port, 0);
        for (guint sent = UDP_KEPT; sent < UDP_PEERS;) {
                guint end = MIN(sent + UDP_BATCH, UDP_PEERS);

                for (; sent < end; sent++) {
                        g_autofree char *msg = g_strdup_printf("peer %u", sent);
                        int fd = udp_peer_socket(sent);

                        udp_send(fd, port, msg);
                        close(fd);
                }
                /* Each datagram is a session, a refusal, or one the kernel dropped. */
                attempts.want = sent;
                if (!test_wait_until(cond_attempts, &attempts, TIMEOUT_MS))
                        g_error("%u peers sent a datagram, the port counts %" G_GUINT64_FORMAT
                                " sessions and %" G_GUINT64_FORMAT
                                " refusals, the kernel %" G_GUINT64_FORMAT " drops",
                                sent, port_counter(f, path, "TotalSessions"),
                                port_counter(f, path, "RejectedSessions"), udp_kernel_drops(port));
                udp_kept_roundtrips(kept, port, sent);
                rss_max = MAX(rss_max, daemon_rss(f));
                fds_max = MAX(fds_max, daemon_fds(f));
        }
        drops = udp_kernel_drops(port);
        g_assert_cmpuint(port_counter(f, path, "TotalSessions"), ==, UDP_CAP);
        g_assert_cmpuint(port_counter(f, path, "RejectedSessions"), ==, UDP_PEERS - UDP_CAP - drops);
        g_assert_cmpuint(port_counter(f, path, "FailedSessions"), ==, 0);
        wait_counter(f, path, "ActiveSessions", UDP_CAP);
        {
                g_autoptr(GVariant) state = test_get_property(f->bus, path, TEST_PORT_IFACE, "State");

                g_assert_cmpstr(g_variant_get_string(state, NULL), ==, "paused");
        }
        rss_after = daemon_rss(f);
        g_test_message("FIGURES udp-cap: %d peers, %d sessions, RejectedSessions %" G_GUINT64_FORMAT
                       " (kernel drops %" G_GUINT64_FORMAT "); daemon VmRSS %" G_GINT64_FORMAT
                       " KiB before, at most %" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                       " at the end; fds %d before, at most %d",
                       UDP_PEERS, UDP_CAP, port_counter(f, path, "RejectedSessions"), drops,
                       rss_before, rss_max, rss_after, fds_before, fds_max);
        g_assert_cmpint(rss_max - rss_before, <=, UDP_RSS_GROWTH_MAX_KIB);
        g_assert_cmpint(fds_max, <=, fds_before + UDP_CAP + UDP_FDS_SLACK);

        for (guint k = 0; k < UDP_KEPT; k++)
                close(kept[k]);
        test_echo_free(echo);
}

/* ---- 1000 ports published and unpublished, over each face ----------------------------------- */

typedef struct Churn {
        Fixture *f;
        int varlink; /* one connection for all rounds */
} Churn;

typedef void (*ChurnRound)(Churn *c);

/* Ports alternate between TCP and UDP: guest port i + 1, host port picked by the kernel. */
static const char *churn_proto(guint i) {
        return i % 2 ? "udp" : "tcp";
}

static void churn_dbus_round(Churn *c) {
        g_autoptr(GVariant) reply = NULL, published = NULL;
        GVariantBuilder ports, keys;
        GVariantIter iter;
        const char *proto;
        guint16 host_port;

        g_variant_builder_init(&ports, G_VARIANT_TYPE("a(ssqq)"));
        for (guint i = 0; i < CHURN_PORTS; i++)
                g_variant_builder_add(&ports, "(ssqq)", churn_proto(i), "127.0.0.1", 0, i + 1);
        reply = manager_call(c->f, "PublishPorts",
                             g_variant_new("(s^asa(ssqq)a{sv})", "churn",
                                           (const char *const[]){ "127.0.0.1", NULL }, &ports, NULL),
                             "(oa(ssqqo))");
        g_variant_get(reply, "(&o@a(ssqqo))", NULL, &published);
        g_assert_cmpuint(g_variant_n_children(published), ==, CHURN_PORTS);
        g_variant_builder_init(&keys, G_VARIANT_TYPE("a(ssq)"));
        g_variant_iter_init(&iter, published);
        while (g_variant_iter_next(&iter, "(&s&sqq&o)", &proto, NULL, &host_port, NULL, NULL))
                g_variant_builder_add(&keys, "(ssq)", proto, "127.0.0.1", host_port);
        g_variant_unref(manager_call(c->f, "UnpublishPorts",
                                     g_variant_new("(sa(ssq))", "churn", &keys), NULL));
}

/* A blocking varlink call: the reply (NUL-framed JSON), asserted to be no error. */
static json_object *varlink_call(int fd, const char *text) {
        g_autoptr(GString) in = g_string_new(NULL);
        json_object *reply;

        for (size_t off = 0, len = strlen(text) + 1; off < len;) {
                ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);

                if (n < 0)
                        g_error("varlink: send: %s", g_strerror(errno));
                off += (size_t) n;
        }
        while (in->len == 0 || in->str[in->len - 1] != '\0') {
                char buf[65536];
                ssize_t n = recv(fd, buf, sizeof buf, 0);

                if (n <= 0)
                        g_error("varlink: no reply: %s", n < 0 ? g_strerror(errno) : "EOF");
                g_string_append_len(in, buf, n);
        }
        reply = json_tokener_parse(in->str);
        g_assert_nonnull(reply);
        if (json_object_object_get_ex(reply, "error", NULL))
                g_error("varlink: %s answered %s", text, json_object_to_json_string(reply));
        return reply;
}

static int varlink_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = TIMEOUT_MS / 1000 };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpuint(strlen(path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, path);
        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), ==, 0);
        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), ==, 0);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                g_error("varlink: connecting to %s: %s", path, g_strerror(errno));
        return fd;
}

static void churn_varlink_round(Churn *c) {
        static char *publish;
        json_object *reply, *published;

        if (!publish) {
                GString *s = g_string_new("{\"method\":\"io.portpub.publisher1.PublishPorts\","
                                          "\"parameters\":{\"sandbox\":\"churn\","
                                          "\"guestAddresses\":[\"127.0.0.1\"],\"ports\":[");

                for (guint i = 0; i < CHURN_PORTS; i++)
                        g_string_append_printf(s,
                                               "%s{\"protocol\":\"%s\",\"hostAddress\":\"127.0.0.1\","
                                               "\"hostPort\":0,\"guestPort\":%u}",
                                               i ? "," : "", churn_proto(i), i + 1);
                g_string_append(s, "]}}");
                publish = g_string_free(s, FALSE);
        }
        reply = varlink_call(c->varlink, publish);
        g_assert_true(json_object_object_get_ex(reply, "parameters", &published));
        g_assert_true(json_object_object_get_ex(published, "ports", &published));
        g_assert_cmpuint(json_object_array_length(published), ==, CHURN_PORTS);
        json_object_put(reply);
        json_object_put(varlink_call(c->varlink, "{\"method\":\"io.portpub.publisher1.RemoveSandbox\","
                                                 "\"parameters\":{\"sandbox\":\"churn\"}}"));
}

/* The state file without next_serial, which gains digits as serials go up. */
static char *state_without_serial(const char *path, gint64 *ret_size) {
        g_autofree char *text = NULL;
        gsize len;
        json_object *o;
        char *s;

        if (!g_file_get_contents(path, &text, &len, NULL)) {
                *ret_size = -1;
                return g_strdup("");
        }
        *ret_size = (gint64) len;
        o = json_tokener_parse(text);
        g_assert_nonnull(o);
        g_assert_true(json_object_object_get_ex(o, "next_serial", NULL));
        json_object_object_del(o, "next_serial");
        s = g_strdup(json_object_to_json_string(o));
        json_object_put(o);
        return s;
}

/* CHURN_ROUNDS rounds; after the first and the last the daemon holds the same fds and state, and
 * its RSS has grown less than CHURN_RSS_GROWTH_MAX_KIB. */
static void churn(Fixture *f, const char *face, ChurnRound round) {
        Churn c = { f, varlink_connect(f->daemon->varlink) };
        g_autofree char *state_first = NULL, *state_last = NULL;
        gint64 size_first, size_last, rss_first, rss_last, start, first_us, all_us;
        int fds_first, fds_last;

        start = g_get_monotonic_time();
        round(&c);
        first_us = g_get_monotonic_time() - start;
        rss_first = daemon_rss(f);
        fds_first = daemon_fds(f);
        state_first = state_without_serial(f->daemon->state_file, &size_first);
        for (guint i = 1; i < CHURN_ROUNDS; i++)
                round(&c);
        all_us = g_get_monotonic_time() - start;
        rss_last = daemon_rss(f);
        fds_last = daemon_fds(f);
        state_last = state_without_serial(f->daemon->state_file, &size_last);
        g_test_message("FIGURES churn-%s: %d rounds of %d ports in %.1f s (the first %.2f s); "
                       "fds %d after the first, %d after the last; VmRSS %" G_GINT64_FORMAT
                       " KiB after the first, %" G_GINT64_FORMAT " KiB after the last; state file "
                       "%" G_GINT64_FORMAT " bytes after the first, %" G_GINT64_FORMAT
                       " after the last",
                       face, CHURN_ROUNDS, CHURN_PORTS, (double) all_us / G_USEC_PER_SEC,
                       (double) first_us / G_USEC_PER_SEC, fds_first, fds_last, rss_first, rss_last,
                       size_first, size_last);
        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==,
                         0);
        g_assert_cmpint(fds_last, ==, fds_first);
        g_assert_cmpstr(state_last, ==, state_first);
        if (UNDER_ASAN)
                g_test_message("FIGURES churn-%s: RSS growth not asserted under ASan", face);
        else
                g_assert_cmpint(rss_last - rss_first, <, CHURN_RSS_GROWTH_MAX_KIB);
        close(c.varlink);
}

/* The state file with nothing published: no sandboxes. */
static void assert_state_empty(Fixture *f) {
        gint64 size;
        g_autofree char *state = state_without_serial(f->daemon->state_file, &size);
        json_object *o = json_tokener_parse(state), *sandboxes;

        g_assert_nonnull(o);
        g_assert_true(json_object_object_get_ex(o, "sandboxes", &sandboxes));
        g_assert_cmpuint(json_object_array_length(sandboxes), ==, 0);
        json_object_put(o);
        g_test_message("FIGURES %s: state file %" G_GINT64_FORMAT " bytes with nothing published",
                       g_test_get_path(), size);
}

static void test_churn_dbus(Fixture *f, gconstpointer data) {
        if (!f->daemon)
                return;
        churn(f, "dbus", churn_dbus_round);
        /* UnpublishPorts keeps the sandbox, empty. */
        g_variant_unref(manager_call(f, "RemoveSandbox", g_variant_new("(s)", "churn"), NULL));
        assert_state_empty(f);
}

static void test_churn_varlink(Fixture *f, gconstpointer data) {
        if (!f->daemon)
                return;
        churn(f, "varlink", churn_varlink_round);
        assert_state_empty(f);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/load/tcp-idle-connections", Fixture, NULL, fixture_setup,
                   test_tcp_idle_connections, fixture_teardown);
        g_test_add("/load/udp-session-cap", Fixture, NULL, fixture_setup, test_udp_session_cap,
                   fixture_teardown);
        g_test_add("/load/churn-dbus", Fixture, NULL, fixture_setup, test_churn_dbus,
                   fixture_teardown);
        g_test_add("/load/churn-varlink", Fixture, NULL, fixture_setup, test_churn_varlink,
                   fixture_teardown);
        return g_test_run();
}
