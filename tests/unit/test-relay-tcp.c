/* Tests for the TCP relay: real loopback sockets, the relay's loop running in a thread */

/*
 * The relay runs on its own libev loop in a second thread (the daemon has none; only this test
 * does). The test thread plays client and guest with blocking or polled sockets, every wait bounded.
 * The two threads meet only through Harness: an ev_async carries calls into the relay thread, and
 * the relay's callbacks publish a snapshot of the counters and every state change under a mutex.
 */

#include <dirent.h>
#include <fcntl.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay-tcp.h"
#include "testlib.h"

#define TIMEOUT_MS 10000
#define MiB (1024u * 1024u)

/* ---- harness: the relay on a loop in another thread ---------------------------------------- */

typedef struct Harness Harness;
typedef void (*HarnessFunc)(Harness *h, void *userdata);

struct Harness {
        struct ev_loop *loop;
        pthread_t thread;
        TcpRelay *relay;
        RelayStats stats; /* the relay thread's; the test thread reads snapshot */
        ev_async async;

        GMutex lock;
        GCond cond;
        /* under lock: */
        bool stop;
        HarnessFunc call;
        void *call_data;
        bool call_done;
        RelayStats snapshot;
        unsigned n_sessions_changed;
        unsigned n_states;
        RelayState states[32];
        char reasons[32][64];
};

static void harness_async_cb(struct ev_loop *loop, ev_async *w, int revents) {
        Harness *h = w->data;
        HarnessFunc call = NULL;
        void *data = NULL;

        g_mutex_lock(&h->lock);
        if (h->stop)
                ev_break(loop, EVBREAK_ALL);
        if (h->call && !h->call_done) {
                call = h->call;
                data = h->call_data;
        }
        g_mutex_unlock(&h->lock);

        if (call)
                call(h, data);

        g_mutex_lock(&h->lock);
        if (call)
                h->call_done = true;
        h->snapshot = h->stats;
        g_cond_broadcast(&h->cond);
        g_mutex_unlock(&h->lock);
}

static void on_sessions_changed(void *userdata) {
        Harness *h = userdata;

        g_mutex_lock(&h->lock);
        h->snapshot = h->stats;
        h->n_sessions_changed++;
        g_cond_broadcast(&h->cond);
        g_mutex_unlock(&h->lock);
}

static void on_state_changed(void *userdata, RelayState state, const char *reason) {
        Harness *h = userdata;

        g_mutex_lock(&h->lock);
        g_assert_cmpuint(h->n_states, <, G_N_ELEMENTS(h->states));
        h->states[h->n_states] = state;
        g_strlcpy(h->reasons[h->n_states], reason, sizeof h->reasons[0]);
        h->n_states++;
        h->snapshot = h->stats;
        g_cond_broadcast(&h->cond);
        g_mutex_unlock(&h->lock);
}

static const RelayCallbacks harness_callbacks = {
        .sessions_changed = on_sessions_changed,
        .state_changed = on_state_changed,
};

static void *harness_thread(void *userdata) {
        Harness *h = userdata;

        ev_run(h->loop, 0);
        return NULL;
}

static Harness *harness_start(const int *fds, size_t n_fds, const RelayConfig *config) {
        Harness *h = g_new0(Harness, 1);
        int r;

        g_mutex_init(&h->lock);
        g_cond_init(&h->cond);
        h->loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(h->loop);
        ev_async_init(&h->async, harness_async_cb);
        h->async.data = h;
        ev_async_start(h->loop, &h->async);

        r = tcp_relay_new(&h->relay, h->loop, fds, n_fds, config, &h->stats, &harness_callbacks, h);
        g_assert_cmpint(r, ==, 0);
        g_assert_cmpint(pthread_create(&h->thread, NULL, harness_thread, h), ==, 0);
        return h;
}

/* Frees the relay (after the loop has stopped, so no callback can run any more). */
static void harness_stop(Harness *h) {
        g_mutex_lock(&h->lock);
        h->stop = true;
        g_mutex_unlock(&h->lock);
        ev_async_send(h->loop, &h->async);
        g_assert_cmpint(pthread_join(h->thread, NULL), ==, 0);

        h->relay = tcp_relay_free(h->relay);
        g_assert_cmpuint(h->stats.active, ==, 0);
        ev_async_stop(h->loop, &h->async);
        ev_loop_destroy(h->loop);
        g_mutex_clear(&h->lock);
        g_cond_clear(&h->cond);
        g_free(h);
}

/* Runs func on the relay thread and waits for it. */
static void harness_call(Harness *h, HarnessFunc func, void *userdata) {
        gint64 deadline = g_get_monotonic_time() + TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;

        g_mutex_lock(&h->lock);
        h->call = func;
        h->call_data = userdata;
        h->call_done = false;
        g_mutex_unlock(&h->lock);
        ev_async_send(h->loop, &h->async);

        g_mutex_lock(&h->lock);
        while (!h->call_done)
                g_assert_true(g_cond_wait_until(&h->cond, &h->lock, deadline) || h->call_done);
        h->call = NULL;
        g_mutex_unlock(&h->lock);
}

static void nop(Harness *h, void *userdata) {
}

static RelayStats harness_stats(Harness *h) {
        RelayStats s;

        harness_call(h, nop, NULL);
        g_mutex_lock(&h->lock);
        s = h->snapshot;
        g_mutex_unlock(&h->lock);
        return s;
}

typedef struct StateQuery {
        RelayState state;
        const char *reason;
} StateQuery;

static void get_state(Harness *h, void *userdata) {
        StateQuery *q = userdata;

        q->state = tcp_relay_get_state(h->relay, &q->reason);
}

static RelayState harness_state(Harness *h, const char **ret_reason) {
        StateQuery q;

        harness_call(h, get_state, &q);
        *ret_reason = q.reason; /* a static string */
        return q.state;
}

/* Waits until the relay reported stats->active == n; also waits for the counters that
 * closing connections settle. */
static void harness_wait_active(Harness *h, uint64_t n) {
        gint64 deadline = g_get_monotonic_time() + TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;

        g_mutex_lock(&h->lock);
        while (h->snapshot.active != n)
                if (!g_cond_wait_until(&h->cond, &h->lock, deadline))
                        break;
        g_assert_cmpuint(h->snapshot.active, ==, n);
        g_mutex_unlock(&h->lock);
}

static void harness_wait_states(Harness *h, unsigned n) {
        gint64 deadline = g_get_monotonic_time() + TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;

        g_mutex_lock(&h->lock);
        while (h->n_states < n)
                if (!g_cond_wait_until(&h->cond, &h->lock, deadline))
                        break;
        g_assert_cmpuint(h->n_states, >=, n);
        g_mutex_unlock(&h->lock);
}

static void harness_assert_state(Harness *h, unsigned i, RelayState state, const char *reason) {
        g_mutex_lock(&h->lock);
        g_assert_cmpuint(h->n_states, >, i);
        g_assert_cmpint(h->states[i], ==, state);
        g_assert_cmpstr(h->reasons[i], ==, reason);
        g_mutex_unlock(&h->lock);
}

static unsigned harness_n_states(Harness *h) {
        unsigned n;

        g_mutex_lock(&h->lock);
        n = h->n_states;
        g_mutex_unlock(&h->lock);
        return n;
}

/* ---- sockets ------------------------------------------------------------------------------- */

static bool have_ipv6(void) {
        static int cached = -1;

        if (cached < 0) {
                int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in6 a = { .sin6_family = AF_INET6,
                                          .sin6_addr = IN6ADDR_LOOPBACK_INIT };

                cached = fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof a) == 0;
                if (fd >= 0)
                        close(fd);
        }
        return cached;
}

static SockaddrUnion loopback(int family) {
        SockaddrUnion a = {};

        g_assert_cmpint(sockaddr_parse_ip(family == AF_INET6 ? "::1" : "127.0.0.1", &a), ==, 0);
        return a;
}

static void set_timeouts(int fd) {
        struct timeval tv = { .tv_sec = TIMEOUT_MS / 1000 };

        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), ==, 0);
        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), ==, 0);
}

/* A listener on the loopback address of family, port chosen by the kernel. The relay gets
 * nonblocking ones, as the manager hands them over. */
static int make_listener(int family, int backlog, bool nonblocking, SockaddrUnion *ret) {
        SockaddrUnion a = loopback(family);
        socklen_t len = sizeof a;
        int fd;

        fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int)), ==, 0);
        g_assert_cmpint(bind(fd, &a.sa, sockaddr_len(&a)), ==, 0);
        g_assert_cmpint(listen(fd, backlog), ==, 0);
        g_assert_cmpint(getsockname(fd, &a.sa, &len), ==, 0);
        *ret = a;
        return fd;
}

static int connect_to(const SockaddrUnion *a) {
        int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        set_timeouts(fd);
        g_assert_cmpint(connect(fd, &a->sa, sockaddr_len(a)), ==, 0);
        return fd;
}

/* Returns the accepted socket, or -ETIMEDOUT when nothing arrived within timeout_ms. */
static int accept_from(int listener, int timeout_ms, SockaddrUnion *ret_peer) {
        struct pollfd p = { .fd = listener, .events = POLLIN };
        SockaddrUnion peer = {};
        socklen_t len = sizeof peer;
        int r, fd;

        r = poll(&p, 1, timeout_ms);
        g_assert_cmpint(r, >=, 0);
        if (r == 0)
                return -ETIMEDOUT;
        fd = accept4(listener, &peer.sa, &len, SOCK_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        /* accept4() does not pass O_NONBLOCK on; clear it for the nonblocking listeners. */
        g_assert_cmpint(fcntl(fd, F_SETFL, 0), ==, 0);
        set_timeouts(fd);
        if (ret_peer)
                *ret_peer = peer;
        return fd;
}

static void send_all(int fd, const void *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                g_assert_cmpint(k, >, 0);
                p = (const char *) p + k;
                n -= (size_t) k;
        }
}

/* Reads exactly n bytes; fails the test on EOF or error. */
static void recv_all(int fd, void *p, size_t n) {
        while (n > 0) {
                ssize_t k = recv(fd, p, n, 0);
                g_assert_cmpint(k, >, 0);
                p = (char *) p + k;
                n -= (size_t) k;
        }
}

/* Reads and discards until the peer closes: returns 0 for an orderly EOF, -errno for a reset or
 * a timeout; *ret_bytes counts what came before. */
static int recv_until_closed(int fd, size_t *ret_bytes) {
        static char buf[64 * 1024];
        size_t total = 0;

        for (;;) {
                ssize_t k = recv(fd, buf, sizeof buf, 0);
                if (k == 0)
                        break;
                if (k < 0) {
                        if (ret_bytes)
                                *ret_bytes = total;
                        return -errno;
                }
                total += (size_t) k;
        }
        if (ret_bytes)
                *ret_bytes = total;
        return 0;
}

static void reset_close(int fd) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };

        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l), ==, 0);
        close(fd);
}

/* Sends msg from one end, reads it at the other, and the same back. */
static void echo_check(int client, int guest, const char *msg) {
        size_t n = strlen(msg);
        char buf[256];

        g_assert_cmpuint(n, <, sizeof buf);
        send_all(client, msg, n);
        recv_all(guest, buf, n);
        g_assert_cmpmem(buf, n, msg, n);
        send_all(guest, msg, n);
        recv_all(client, buf, n);
        g_assert_cmpmem(buf, n, msg, n);
}

static RelayConfig config_for(const SockaddrUnion *guest) {
        RelayConfig c = {};

        if (guest->sa.sa_family == AF_INET6)
                c.target.guest6 = *guest;
        else
                c.target.guest4 = *guest;
        c.target.port = sockaddr_port(guest);
        return c;
}

/* ---- process state ------------------------------------------------------------------------- */

static unsigned count_fds(const char *prefix) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        unsigned n = 0;

        g_assert_nonnull(d);
        while ((de = readdir(d))) {
                char path[sizeof "/proc/self/fd/" + sizeof de->d_name], target[256];
                ssize_t k;

                if (de->d_name[0] == '.' || atoi(de->d_name) == dirfd(d))
                        continue;
                snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
                k = readlink(path, target, sizeof target - 1);
                if (k < 0)
                        continue;
                target[k] = 0;
                if (!prefix || g_str_has_prefix(target, prefix))
                        n++;
        }
        closedir(d);
        return n;
}

static size_t rss_kib(void) {
        g_autofree char *status = NULL;
        const char *p;

        g_assert_true(g_file_get_contents("/proc/self/status", &status, NULL, NULL));
        p = strstr(status, "VmRSS:");
        g_assert_nonnull(p);
        return (size_t) g_ascii_strtoull(p + strlen("VmRSS:"), NULL, 10);
}

static double thread_cpu_seconds(pthread_t t) {
        clockid_t id;
        struct timespec ts;

        g_assert_cmpint(pthread_getcpuclockid(t, &id), ==, 0);
        g_assert_cmpint(clock_gettime(id, &ts), ==, 0);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- bulk transfer ------------------------------------------------------------------------- */

#define PATTERN_LEN (MiB + 13) /* not a power of two: block boundaries keep moving */

typedef struct Stream {
        int fd;
        const uint8_t *pattern;
        size_t total, sent, received;
        bool shut, eof;
        GChecksum *tx, *rx;
} Stream;

static uint8_t *pattern_new(uint64_t seed) {
        uint8_t *p = g_malloc(PATTERN_LEN);

        for (size_t i = 0; i < PATTERN_LEN; i++) {
                /* xorshift64 */
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p[i] = (uint8_t) (seed >> 24);
        }
        return p;
}

/* Sends total bytes each way at once between the two ends of a relayed connection, each end
 * half-closing when done, and checks both streams with SHA-256. */
static void transfer_both_ways(int a, int b, size_t total) {
        static uint8_t rbuf[256 * 1024];
        g_autofree uint8_t *pa = pattern_new(0x9e3779b97f4a7c15u),
                           *pb = pattern_new(0xda942042e4dd58b5u);
        Stream st[2] = {
                { .fd = a, .pattern = pa, .total = total },
                { .fd = b, .pattern = pb, .total = total },
        };
        gint64 deadline = g_get_monotonic_time() + 40 * G_TIME_SPAN_SECOND;

        for (unsigned i = 0; i < 2; i++) {
                g_assert_cmpint(fcntl(st[i].fd, F_SETFL, O_NONBLOCK), ==, 0);
                st[i].tx = g_checksum_new(G_CHECKSUM_SHA256);
                st[i].rx = g_checksum_new(G_CHECKSUM_SHA256);
        }

        while (!(st[0].eof && st[1].eof && st[0].shut && st[1].shut)) {
                struct pollfd p[2];

                g_assert_cmpint(g_get_monotonic_time(), <, deadline);
                for (unsigned i = 0; i < 2; i++)
                        p[i] = (struct pollfd){
                                .fd = st[i].fd,
                                .events = (short) ((st[i].eof ? 0 : POLLIN) |
                                                   (st[i].shut ? 0 : POLLOUT)),
                        };
                g_assert_cmpint(poll(p, 2, TIMEOUT_MS), >, 0);

                for (unsigned i = 0; i < 2; i++) {
                        Stream *s = &st[i];

                        if (p[i].revents & (POLLIN | POLLHUP | POLLERR) && !s->eof) {
                                ssize_t k = recv(s->fd, rbuf, sizeof rbuf, 0);
                                if (k < 0)
                                        g_assert_cmpint(errno, ==, EAGAIN);
                                else if (k == 0)
                                        s->eof = true;
                                else {
                                        g_checksum_update(s->rx, rbuf, (gssize) k);
                                        s->received += (size_t) k;
                                        g_assert_cmpuint(s->received, <=, total);
                                }
                        }
                        if (p[i].revents & POLLOUT && !s->shut) {
                                size_t off = s->sent % PATTERN_LEN;
                                size_t n = MIN(s->total - s->sent, PATTERN_LEN - off);
                                ssize_t k = send(s->fd, s->pattern + off, MIN(n, 256 * 1024u),
                                                 MSG_NOSIGNAL);
                                if (k < 0)
                                        g_assert_cmpint(errno, ==, EAGAIN);
                                else {
                                        g_checksum_update(s->tx, s->pattern + off, (gssize) k);
                                        s->sent += (size_t) k;
                                }
                                if (s->sent == s->total) {
                                        g_assert_cmpint(shutdown(s->fd, SHUT_WR), ==, 0);
                                        s->shut = true;
                                }
                        }
                }
        }

        for (unsigned i = 0; i < 2; i++) {
                g_assert_cmpuint(st[i].received, ==, total);
                g_assert_cmpstr(g_checksum_get_string(st[i].rx), ==,
                                g_checksum_get_string(st[!i].tx));
        }
        for (unsigned i = 0; i < 2; i++) {
                g_checksum_free(st[i].tx);
                g_checksum_free(st[i].rx);
        }
}

static void test_bulk(size_t total, bool copy) {
        SockaddrUnion guest_addr, relay_addr;
        int guest_listener, relay_fd, client, guest;
        RelayConfig config;
        unsigned fds_before = count_fds(NULL), pipes_before = count_fds("pipe:");
        RelayStats s;
        Harness *h;

        guest_listener = make_listener(AF_INET, 16, false, &guest_addr);
        relay_fd = make_listener(AF_INET, 4096, true, &relay_addr);
        config = config_for(&guest_addr);
        if (copy)
                g_assert_cmpint(setenv("PORTPUB_TCP_SPLICE", "0", 1), ==, 0);
        h = harness_start(&relay_fd, 1, &config);
        if (copy)
                g_assert_cmpint(unsetenv("PORTPUB_TCP_SPLICE"), ==, 0);

        client = connect_to(&relay_addr);
        guest = accept_from(guest_listener, TIMEOUT_MS, NULL);
        g_assert_cmpint(guest, >=, 0);

        transfer_both_ways(client, guest, total);
        if (copy)
                /* The copy path moved everything: not a single pipe was made. */
                g_assert_cmpuint(count_fds("pipe:"), ==, pipes_before);
        close(client);
        close(guest);

        harness_wait_active(h, 0);
        s = harness_stats(h);
        g_assert_cmpuint(s.total, ==, 1);
        g_assert_cmpuint(s.failed, ==, 0);
        g_assert_cmpuint(s.rejected, ==, 0);
        g_assert_cmpuint(s.bytes_to_guest, ==, total);
        g_assert_cmpuint(s.bytes_from_guest, ==, total);

        harness_stop(h);
        close(guest_listener);
        g_assert_cmpuint(count_fds(NULL), ==, fds_before);
}

static void test_bulk_64mib_each_way(void) {
        test_bulk(64 * MiB, false);
}

static void test_copy_fallback(void) {
        test_bulk(16 * MiB, true);
}

/* ---- a relayed connection, ready to use ------------------------------------------------------ */

typedef struct Setup {
        Harness *h;
        int guest_listener, relay_fd;
        SockaddrUnion guest_addr, relay_addr;
} Setup;

static void setup_start(Setup *s, int listen_family, int guest_family, RelayConfig *config) {
        RelayConfig c;

        s->guest_listener = make_listener(guest_family, 64, false, &s->guest_addr);
        s->relay_fd = make_listener(listen_family, 4096, true, &s->relay_addr);
        c = config_for(&s->guest_addr);
        if (config) {
                config->target = c.target;
                c = *config;
        }
        s->h = harness_start(&s->relay_fd, 1, &c);
}

static void setup_connect(Setup *s, int *ret_client, int *ret_guest) {
        *ret_client = connect_to(&s->relay_addr);
        *ret_guest = accept_from(s->guest_listener, TIMEOUT_MS, NULL);
        g_assert_cmpint(*ret_guest, >=, 0);
}

static void setup_stop(Setup *s) {
        harness_stop(s->h);
        close(s->guest_listener);
}

static void test_half_close_late_reply(void) {
        g_autofree char *request = g_malloc(100000), *reply = g_malloc(MiB), *got = g_malloc(MiB);
        Setup s = {};
        size_t n;
        int client, guest;
        RelayStats st;

        memset(request, 'q', 100000);
        for (size_t i = 0; i < MiB; i++)
                reply[i] = (char) (i * 7);

        setup_start(&s, AF_INET, AF_INET, NULL);
        setup_connect(&s, &client, &guest);

        /* The client sends its request and half-closes... */
        send_all(client, request, 100000);
        g_assert_cmpint(shutdown(client, SHUT_WR), ==, 0);

        /* ...the guest sees all of it and then the EOF, and only then replies. */
        g_assert_cmpint(recv_until_closed(guest, &n), ==, 0);
        g_assert_cmpuint(n, ==, 100000);
        send_all(guest, reply, MiB);
        close(guest);

        /* The half-closed client still gets the whole reply, then EOF. */
        recv_all(client, got, MiB);
        g_assert_cmpmem(got, MiB, reply, MiB);
        g_assert_cmpint(recv_until_closed(client, &n), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        close(client);

        harness_wait_active(s.h, 0);
        st = harness_stats(s.h);
        g_assert_cmpuint(st.bytes_to_guest, ==, 100000);
        g_assert_cmpuint(st.bytes_from_guest, ==, MiB);
        setup_stop(&s);
}

/* A reset on one side resets the other. */
static void test_reset(bool from_client) {
        Setup s = {};
        int client, guest;

        setup_start(&s, AF_INET, AF_INET, NULL);
        setup_connect(&s, &client, &guest);
        echo_check(client, guest, "ping");

        reset_close(from_client ? client : guest);
        g_assert_cmpint(recv_until_closed(from_client ? guest : client, NULL), ==, -ECONNRESET);
        close(from_client ? guest : client);

        harness_wait_active(s.h, 0);
        setup_stop(&s);
}

static void test_reset_from_client(void) {
        test_reset(true);
}

static void test_reset_from_guest(void) {
        test_reset(false);
}

static void test_guest_refused(void) {
        SockaddrUnion guest_addr = loopback(AF_INET), relay_addr;
        socklen_t len = sizeof guest_addr;
        int reserved, relay_fd, client;
        RelayConfig config;
        RelayStats st;
        Harness *h;

        /* Bound but not listening: connections to it are refused, and nobody else gets the port. */
        reserved = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(bind(reserved, &guest_addr.sa, sockaddr_len(&guest_addr)), ==, 0);
        g_assert_cmpint(getsockname(reserved, &guest_addr.sa, &len), ==, 0);

        relay_fd = make_listener(AF_INET, 4096, true, &relay_addr);
        config = config_for(&guest_addr);
        h = harness_start(&relay_fd, 1, &config);

        client = connect_to(&relay_addr);
        g_assert_cmpint(recv_until_closed(client, NULL), ==, -ECONNRESET);
        close(client);

        harness_wait_active(h, 0);
        st = harness_stats(h);
        g_assert_cmpuint(st.total, ==, 1);
        g_assert_cmpuint(st.failed, ==, 1);
        g_assert_cmpuint(st.rejected, ==, 0);
        harness_stop(h);
        close(reserved);
}

static void test_connect_timeout(void) {
        SockaddrUnion guest_addr, relay_addr;
        int guest_listener, filler, probe, relay_fd, client;
        struct pollfd p;
        RelayConfig config;
        RelayStats st;
        gint64 start, elapsed_ms;
        Harness *h;

        /* Backlog 0 admits one connection into the accept queue; with that one never accepted,
         * the kernel drops further SYNs and connects hang. */
        guest_listener = make_listener(AF_INET, 0, false, &guest_addr);
        filler = connect_to(&guest_addr);

        probe = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        g_assert_true(connect(probe, &guest_addr.sa, sockaddr_len(&guest_addr)) < 0 &&
                      errno == EINPROGRESS);
        p = (struct pollfd){ .fd = probe, .events = POLLOUT };
        if (poll(&p, 1, 200) != 0) {
                g_test_skip("a full backlog does not make connect() hang here");
                close(probe);
                close(filler);
                close(guest_listener);
                return;
        }
        close(probe);

        relay_fd = make_listener(AF_INET, 4096, true, &relay_addr);
        config = config_for(&guest_addr);
        config.connect_timeout_usec = 300 * 1000;
        h = harness_start(&relay_fd, 1, &config);

        start = g_get_monotonic_time();
        client = connect_to(&relay_addr);
        g_assert_cmpint(recv_until_closed(client, NULL), ==, -ECONNRESET);
        elapsed_ms = (g_get_monotonic_time() - start) / 1000;
        g_assert_cmpint(elapsed_ms, >=, 250);
        g_assert_cmpint(elapsed_ms, <, 5000);
        close(client);

        harness_wait_active(h, 0);
        st = harness_stats(h);
        g_assert_cmpuint(st.total, ==, 1);
        g_assert_cmpuint(st.failed, ==, 1);
        harness_stop(h);
        close(filler);
        close(guest_listener);
}

static void test_backpressure(void) {
        static char chunk[64 * 1024];
        const size_t limit = 256 * MiB;
        Setup s = {};
        int client, guest;
        size_t sent = 0, received, rss_before, rss_after;
        double cpu_before, cpu_after;
        gint64 deadline;

        memset(chunk, 'b', sizeof chunk);
        setup_start(&s, AF_INET, AF_INET, NULL);
        setup_connect(&s, &client, &guest);
        echo_check(client, guest, "warm up"); /* pipes made, buffers touched */

        g_assert_cmpint(fcntl(client, F_SETFL, O_NONBLOCK), ==, 0);
        rss_before = rss_kib();

        /* The guest reads nothing. Push until the client stays blocked for a while. */
        deadline = g_get_monotonic_time() + 20 * G_TIME_SPAN_SECOND;
        while (sent < limit && g_get_monotonic_time() < deadline) {
                ssize_t k = send(client, chunk, sizeof chunk, MSG_NOSIGNAL);
                if (k > 0) {
                        sent += (size_t) k;
                        continue;
                }
                g_assert_cmpint(errno, ==, EAGAIN);
                struct pollfd p = { .fd = client, .events = POLLOUT };
                if (poll(&p, 1, 500) == 0)
                        break;
        }
        g_assert_cmpuint(sent, <, limit);

        /* Blocked means blocked: the relay sleeps instead of spinning on a full pipe. */
        cpu_before = thread_cpu_seconds(s.h->thread);
        g_assert_cmpint(poll(&(struct pollfd){ .fd = client, .events = POLLOUT }, 1, 300), ==, 0);
        cpu_after = thread_cpu_seconds(s.h->thread);
        g_assert_cmpfloat(cpu_after - cpu_before, <, 0.05);

        rss_after = rss_kib();
        g_test_message("pushed %zu MiB before blocking; RSS %zu -> %zu KiB", sent / MiB, rss_before,
                       rss_after);
        g_assert_cmpuint(rss_after, <, rss_before + 2048);

        /* Nothing was lost on the way: the guest gets every byte once it reads. */
        g_assert_cmpint(fcntl(client, F_SETFL, 0), ==, 0);
        g_assert_cmpint(shutdown(client, SHUT_WR), ==, 0);
        g_assert_cmpint(recv_until_closed(guest, &received), ==, 0);
        g_assert_cmpuint(received, ==, sent);
        close(guest);
        g_assert_cmpint(recv_until_closed(client, NULL), ==, 0);
        close(client);

        harness_wait_active(s.h, 0);
        g_assert_cmpuint(harness_stats(s.h).bytes_to_guest, ==, sent + strlen("warm up"));
        setup_stop(&s);
}

static void test_max_sessions(void) {
        RelayConfig config = { .max_sessions = 2 };
        Setup s = {};
        int client[3], guest[3];
        const char *reason;
        char c;

        setup_start(&s, AF_INET, AF_INET, &config);
        g_assert_cmpint(harness_state(s.h, &reason), ==, RELAY_LISTENING);
        g_assert_cmpstr(reason, ==, "");

        setup_connect(&s, &client[0], &guest[0]);
        echo_check(client[0], guest[0], "a");
        setup_connect(&s, &client[1], &guest[1]);
        echo_check(client[1], guest[1], "b");

        harness_wait_states(s.h, 1);
        harness_assert_state(s.h, 0, RELAY_PAUSED, "MaxSessions reached");
        g_assert_cmpint(harness_state(s.h, &reason), ==, RELAY_PAUSED);
        g_assert_cmpstr(reason, ==, "MaxSessions reached");

        /* Past the cap: the kernel completes the handshake (backlog), the relay does not serve. */
        client[2] = connect_to(&s.relay_addr);
        send_all(client[2], "c", 1);
        g_assert_cmpint(accept_from(s.guest_listener, 300, NULL), ==, -ETIMEDOUT);
        g_assert_cmpuint(harness_stats(s.h).total, ==, 2);
        g_assert_cmpuint(harness_stats(s.h).rejected, ==, 0);

        /* One session ends: the waiting client is served. */
        close(client[0]);
        g_assert_cmpint(recv_until_closed(guest[0], NULL), ==, 0);
        close(guest[0]);
        guest[2] = accept_from(s.guest_listener, TIMEOUT_MS, NULL);
        g_assert_cmpint(guest[2], >=, 0);
        recv_all(guest[2], &c, 1);
        g_assert_cmpint((unsigned char) c, ==, 'c');
        echo_check(client[2], guest[2], "still c");

        harness_wait_states(s.h, 3);
        harness_assert_state(s.h, 1, RELAY_LISTENING, "");
        harness_assert_state(s.h, 2, RELAY_PAUSED, "MaxSessions reached");

        for (unsigned i = 1; i < 3; i++) {
                close(client[i]);
                g_assert_cmpint(recv_until_closed(guest[i], NULL), ==, 0);
                close(guest[i]);
        }
        harness_wait_active(s.h, 0);
        harness_wait_states(s.h, 4);
        harness_assert_state(s.h, 3, RELAY_LISTENING, "");
        g_assert_cmpuint(harness_n_states(s.h), ==, 4);
        g_assert_cmpint(harness_state(s.h, &reason), ==, RELAY_LISTENING);
        g_assert_cmpuint(harness_stats(s.h).total, ==, 3);
        setup_stop(&s);
}

static void test_relay_between(int listen_family, int guest_family) {
        Setup s = {};
        SockaddrUnion peer;
        int client, guest;

        if ((listen_family == AF_INET6 || guest_family == AF_INET6) && !have_ipv6()) {
                g_test_skip("no IPv6 loopback");
                return;
        }
        /* The target carries only the guest address of guest_family. */
        setup_start(&s, listen_family, guest_family, NULL);

        client = connect_to(&s.relay_addr);
        guest = accept_from(s.guest_listener, TIMEOUT_MS, &peer);
        g_assert_cmpint(guest, >=, 0);
        g_assert_cmpint(peer.sa.sa_family, ==, guest_family);
        echo_check(client, guest, "across");
        close(client);
        close(guest);
        harness_wait_active(s.h, 0);
        setup_stop(&s);
}

static void test_ipv6(void) {
        test_relay_between(AF_INET6, AF_INET6);
}

static void test_ipv4_to_ipv6_fallback(void) {
        test_relay_between(AF_INET, AF_INET6);
}

/* Reads the guest's first bytes up to and including "\r\n". */
static void recv_line(int fd, char *buf, size_t size) {
        size_t n = 0;

        for (;;) {
                g_assert_cmpuint(n, <, size - 1);
                recv_all(fd, buf + n, 1);
                n++;
                if (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n')
                        break;
        }
        buf[n] = 0;
}

static void test_proxy(RelayProxyProtocol version, int family) {
        RelayConfig config = { .proxy_protocol = version };
        SockaddrUnion client_addr = {};
        socklen_t len = sizeof client_addr;
        Setup s = {};
        int client, guest;
        char buf[128];

        if (family == AF_INET6 && !have_ipv6()) {
                g_test_skip("no IPv6 loopback");
                return;
        }
        setup_start(&s, family, AF_INET, &config);
        setup_connect(&s, &client, &guest);
        g_assert_cmpint(getsockname(client, &client_addr.sa, &len), ==, 0);
        send_all(client, "hello", 5);

        if (version == RELAY_PROXY_V1) {
                g_autofree char *expected =
                        g_strdup_printf("PROXY %s %s %s %u %u\r\n",
                                        family == AF_INET ? "TCP4" : "TCP6",
                                        family == AF_INET ? "127.0.0.1" : "::1",
                                        family == AF_INET ? "127.0.0.1" : "::1",
                                        sockaddr_port(&client_addr), sockaddr_port(&s.relay_addr));
                recv_line(guest, buf, sizeof buf);
                g_assert_cmpstr(buf, ==, expected);
        } else {
                static const uint8_t signature[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                                       0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
                size_t alen = family == AF_INET ? 12 : 36, asize = family == AF_INET ? 4 : 16;
                const void *src = family == AF_INET ? (const void *) &client_addr.in.sin_addr
                                                    : (const void *) &client_addr.in6.sin6_addr;
                const void *dst = family == AF_INET ? (const void *) &s.relay_addr.in.sin_addr
                                                    : (const void *) &s.relay_addr.in6.sin6_addr;
                uint8_t *h = (uint8_t *) buf, *a = h + 16;

                recv_all(guest, buf, 16);
                g_assert_cmpmem(h, 12, signature, 12);
                g_assert_cmpuint(h[12], ==, 0x21); /* v2, PROXY */
                g_assert_cmpuint(h[13], ==, family == AF_INET ? 0x11 : 0x21); /* TCP over v4/v6 */
                g_assert_cmpuint((unsigned) h[14] << 8 | h[15], ==, alen);
                recv_all(guest, a, alen);
                g_assert_cmpmem(a, asize, src, asize);
                g_assert_cmpmem(a + asize, asize, dst, asize);
                g_assert_cmpuint((unsigned) a[2 * asize] << 8 | a[2 * asize + 1], ==,
                                 sockaddr_port(&client_addr));
                g_assert_cmpuint((unsigned) a[2 * asize + 2] << 8 | a[2 * asize + 3], ==,
                                 sockaddr_port(&s.relay_addr));
        }

        /* The client's bytes follow the header directly. */
        recv_all(guest, buf, 5);
        g_assert_cmpmem(buf, 5, "hello", 5);
        echo_check(client, guest, "and on");
        close(client);
        close(guest);
        harness_wait_active(s.h, 0);
        /* The header is protocol overhead, not relayed payload. */
        g_assert_cmpuint(harness_stats(s.h).bytes_to_guest, ==, 5 + strlen("and on"));
        setup_stop(&s);
}

static void test_proxy_v1(void) {
        test_proxy(RELAY_PROXY_V1, AF_INET);
        test_proxy(RELAY_PROXY_V1, AF_INET6);
}

static void test_proxy_v2(void) {
        test_proxy(RELAY_PROXY_V2, AF_INET);
        test_proxy(RELAY_PROXY_V2, AF_INET6);
}

static void test_idle_timeout(void) {
        RelayConfig config = { .idle_timeout_usec = 400 * 1000 };
        Setup s = {};
        int client, guest;
        gint64 last, waited_ms;

        setup_start(&s, AF_INET, AF_INET, &config);
        setup_connect(&s, &client, &guest);

        /* Traffic every 100 ms keeps it open well past the timeout... */
        for (unsigned i = 0; i < 8; i++) {
                echo_check(client, guest, "keepalive");
                g_usleep(100 * 1000);
        }
        g_assert_cmpuint(harness_stats(s.h).active, ==, 1);
        echo_check(client, guest, "still there");
        last = g_get_monotonic_time();

        /* ...silence closes it, on both sides. */
        g_assert_cmpint(recv_until_closed(client, NULL), ==, 0);
        waited_ms = (g_get_monotonic_time() - last) / 1000;
        g_assert_cmpint(waited_ms, >=, 350);
        g_assert_cmpint(waited_ms, <, 5000);
        g_assert_cmpint(recv_until_closed(guest, NULL), ==, 0);
        close(client);
        close(guest);

        harness_wait_active(s.h, 0);
        g_assert_cmpuint(harness_stats(s.h).failed, ==, 0);
        setup_stop(&s);
}

static void test_counters(void) {
        static char up[100000], down[250000];
        Setup s = {};
        RelayStats st;
        unsigned changed;

        memset(up, 'u', sizeof up);
        memset(down, 'd', sizeof down);
        setup_start(&s, AF_INET, AF_INET, NULL);

        for (unsigned i = 0; i < 3; i++) {
                int client, guest;
                static char buf[250000];

                setup_connect(&s, &client, &guest);
                g_assert_cmpuint(harness_stats(s.h).active, ==, 1);
                g_assert_cmpuint(harness_stats(s.h).total, ==, i + 1);
                send_all(client, up, sizeof up);
                recv_all(guest, buf, sizeof up);
                send_all(guest, down, sizeof down);
                recv_all(client, buf, sizeof down);
                close(client);
                g_assert_cmpint(recv_until_closed(guest, NULL), ==, 0);
                close(guest);
                harness_wait_active(s.h, 0);
        }

        st = harness_stats(s.h);
        g_assert_cmpuint(st.total, ==, 3);
        g_assert_cmpuint(st.active, ==, 0);
        g_assert_cmpuint(st.failed, ==, 0);
        g_assert_cmpuint(st.rejected, ==, 0);
        g_assert_cmpuint(st.bytes_to_guest, ==, 3 * sizeof up);
        g_assert_cmpuint(st.bytes_from_guest, ==, 3 * sizeof down);
        g_mutex_lock(&s.h->lock);
        changed = s.h->n_sessions_changed;
        g_mutex_unlock(&s.h->lock);
        g_assert_cmpuint(changed, >=, 6); /* each open and each close */
        setup_stop(&s);
}

static void set_target(Harness *h, void *userdata) {
        tcp_relay_set_target(h->relay, userdata);
}

static void test_set_target(void) {
        SockaddrUnion other_addr;
        RelayConfig other;
        Setup s = {};
        int other_listener, client[2], guest[2];

        setup_start(&s, AF_INET, AF_INET, NULL);
        setup_connect(&s, &client[0], &guest[0]);

        other_listener = make_listener(AF_INET, 16, false, &other_addr);
        other = config_for(&other_addr);
        harness_call(s.h, set_target, &other.target);

        /* New connections go to the new target... */
        client[1] = connect_to(&s.relay_addr);
        guest[1] = accept_from(other_listener, TIMEOUT_MS, NULL);
        g_assert_cmpint(guest[1], >=, 0);
        echo_check(client[1], guest[1], "new");
        g_assert_cmpint(accept_from(s.guest_listener, 0, NULL), ==, -ETIMEDOUT);

        /* ...the open one stays where it was. */
        echo_check(client[0], guest[0], "old");

        for (unsigned i = 0; i < 2; i++) {
                close(client[i]);
                close(guest[i]);
        }
        harness_wait_active(s.h, 0);
        setup_stop(&s);
        close(other_listener);
}

#define N_IDLE 1000

static void test_idle_connections_are_cheap(void) {
        g_autofree int *client = g_new(int, N_IDLE), *guest = g_new(int, N_IDLE);
        struct rlimit rl;
        size_t rss_before, rss_after;
        unsigned n = N_IDLE, pipes, pipes_before = count_fds("pipe:");
        Setup s = {};

        /* Four fds per connection in this process: client, guest and the relay's two. */
        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        if (rl.rlim_cur < 4 * N_IDLE + 100)
                n = (unsigned) ((rl.rlim_cur - 100) / 4);
        if (n < 100) {
                g_test_skip("RLIMIT_NOFILE too low");
                return;
        }

        setup_start(&s, AF_INET, AF_INET, NULL);
        /* One connection's worth of warm-up: the libev fd tables and the pool's first buffer. */
        setup_connect(&s, &client[0], &guest[0]);
        echo_check(client[0], guest[0], "first");
        rss_before = rss_kib();

        /* Each new connection moves a few bytes, one at a time, then idles. */
        for (unsigned i = 1; i < n; i++) {
                setup_connect(&s, &client[i], &guest[i]);
                echo_check(client[i], guest[i], "x");
        }
        harness_wait_active(s.h, n);
        rss_after = rss_kib();
        pipes = count_fds("pipe:") - pipes_before;
        g_test_message("%u idle connections: RSS +%zu KiB, %u pipe fds", n, rss_after - rss_before,
                       pipes);

        /* Small exchanges are copied through the pool's buffer: no pipe at all. */
        g_assert_cmpuint(pipes, ==, 0);
        /* About 1 KiB each: the bench measures it exactly; 2 KiB leaves room for noise. */
        g_assert_cmpuint(rss_after - rss_before, <, 2 * n);

        /* And they all still work. */
        for (unsigned i = 0; i < n; i += 97)
                echo_check(client[i], guest[i], "alive");
        for (unsigned i = 0; i < n; i++) {
                close(client[i]);
                close(guest[i]);
        }
        harness_wait_active(s.h, 0);
        setup_stop(&s);
}

/* Bulk moves through pipes, small messages through a copy buffer; either way the storage goes
 * back to the pools once the bytes have moved, so idle connections hold none of it. */
static void test_bulk_spliced_then_idle(void) {
        enum { N = 50, BULK = 48 * 1024 };
        static char out[BULK], in[BULK];
        unsigned pipes_before = count_fds("pipe:"), pipes;
        int client[N], guest[N];
        Setup s = {};

        memset(out, 'b', sizeof out);
        setup_start(&s, AF_INET, AF_INET, NULL);
        for (unsigned i = 0; i < N; i++) {
                setup_connect(&s, &client[i], &guest[i]);
                echo_check(client[i], guest[i], "small first");
                if (i == 0)
                        g_assert_cmpuint(count_fds("pipe:"), ==, pipes_before);
                /* More than a copy buffer at once: the flow switches to splice. */
                send_all(client[i], out, BULK);
                recv_all(guest[i], in, BULK);
                g_assert_cmpmem(in, BULK, out, BULK);
                send_all(guest[i], out, BULK);
                recv_all(client[i], in, BULK);
                g_assert_cmpmem(in, BULK, out, BULK);
        }
        harness_wait_active(s.h, N);
        pipes = count_fds("pipe:") - pipes_before;
        g_test_message("%u connections after bulk: %u pipe fds", N, pipes);
        g_assert_cmpuint(pipes, >=, 2);
        /* A pipe per direction at most, passed from connection to connection. */
        g_assert_cmpuint(pipes, <=, 8);

        for (unsigned i = 0; i < N; i++) {
                echo_check(client[i], guest[i], "still there");
                close(client[i]);
                close(guest[i]);
        }
        harness_wait_active(s.h, 0);
        setup_stop(&s);
}

static void test_free_with_open_connections(void) {
        static char chunk[256 * 1024];
        unsigned fds_before = count_fds(NULL);
        Setup s = {};
        int client[2], guest[2];
        size_t n;

        memset(chunk, 'f', sizeof chunk);
        setup_start(&s, AF_INET, AF_INET, NULL);
        setup_connect(&s, &client[0], &guest[0]);
        echo_check(client[0], guest[0], "idle");

        /* A second one with bytes stuck in its pipe: the guest does not read. */
        setup_connect(&s, &client[1], &guest[1]);
        g_assert_cmpint(fcntl(client[1], F_SETFL, O_NONBLOCK), ==, 0);
        for (unsigned i = 0; i < 64; i++)
                if (send(client[1], chunk, sizeof chunk, MSG_NOSIGNAL) < 0)
                        break;
        g_assert_cmpuint(harness_stats(s.h).active, ==, 2);

        /* Freeing the relay closes everything at once; the peers see their sockets close. */
        setup_stop(&s);
        g_assert_cmpint(fcntl(client[1], F_SETFL, 0), ==, 0);
        for (unsigned i = 0; i < 2; i++) {
                int r = recv_until_closed(client[i], &n);
                g_assert_true(r == 0 || r == -ECONNRESET);
                r = recv_until_closed(guest[i], &n);
                g_assert_true(r == 0 || r == -ECONNRESET);
                close(client[i]);
                close(guest[i]);
        }
        /* Every socket, listener and pooled pipe of the relay is gone. */
        g_assert_cmpuint(count_fds(NULL), ==, fds_before);
}

/* The lowest fd number a new fd would get: with RLIMIT_NOFILE at it, the next fd fails. */
static int lowest_free_fd(void) {
        int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        close(fd);
        return fd;
}

static void set_fd_limit(rlim_t n) {
        struct rlimit rl;

        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        rl.rlim_cur = n;
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

static void test_out_of_fds(bool for_guest_socket) {
        Setup s = {};
        struct rlimit saved;
        RelayStats st;
        int client, guest;

        if (test_under_valgrind()) {
                /* memcheck keeps descriptors of its own under the limit the test lowers. */
                g_test_skip("fd limits do not apply as set under valgrind");
                return;
        }
        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        setup_start(&s, AF_INET, AF_INET, NULL);

        /* The client's socket exists before the limit drops; connect() needs no new fd. */
        client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        set_timeouts(client);
        /* Either accept4() fails, or it gets the last fd and the guest socket() fails. */
        set_fd_limit((rlim_t) lowest_free_fd() + (for_guest_socket ? 1 : 0));
        g_assert_cmpint(connect(client, &s.relay_addr.sa, sockaddr_len(&s.relay_addr)), ==, 0);

        harness_wait_states(s.h, 1);
        harness_assert_state(s.h, 0, RELAY_PAUSED, "Too many open files");
        if (for_guest_socket) {
                /* Accepted and turned away with a reset: rejected, not a session. */
                g_assert_cmpint(recv_until_closed(client, NULL), ==, -ECONNRESET);
                close(client);
                client = -1;
        }

        if (!for_guest_socket) {
                /* The waiting client keeps the retry timer (every 100 ms) failing: the state
                 * stays put instead of flapping, and nothing reaches the guest. */
                g_assert_cmpint(accept_from(s.guest_listener, 350, NULL), ==, -ETIMEDOUT);
                g_assert_cmpuint(harness_n_states(s.h), ==, 1);
        }
        st = harness_stats(s.h);
        g_assert_cmpuint(st.total, ==, 0);
        g_assert_cmpuint(st.rejected, ==, for_guest_socket ? 1 : 0);

        /* Fds again: listening resumes, and the waiting client (or a new one) is served. With
         * the backlog empty, the retry may have resumed before that already. */
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        harness_wait_states(s.h, 2);
        harness_assert_state(s.h, 1, RELAY_LISTENING, "");
        if (client < 0)
                client = connect_to(&s.relay_addr);
        guest = accept_from(s.guest_listener, TIMEOUT_MS, NULL);
        g_assert_cmpint(guest, >=, 0);
        echo_check(client, guest, "fds again");
        close(client);
        close(guest);
        harness_wait_active(s.h, 0);
        g_assert_cmpuint(harness_stats(s.h).total, ==, 1);
        g_assert_cmpuint(harness_n_states(s.h), ==, 2);
        setup_stop(&s);
}

static void test_out_of_fds_on_accept(void) {
        test_out_of_fds(false);
}

static void test_out_of_fds_for_guest_socket(void) {
        test_out_of_fds(true);
}

int main(int argc, char *argv[]) {
        struct rlimit rl;

        g_test_init(&argc, &argv, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }

        g_test_add_func("/relay-tcp/bulk-64MiB-each-way", test_bulk_64mib_each_way);
        g_test_add_func("/relay-tcp/copy-fallback", test_copy_fallback);
        g_test_add_func("/relay-tcp/half-close-late-reply", test_half_close_late_reply);
        g_test_add_func("/relay-tcp/reset-from-client", test_reset_from_client);
        g_test_add_func("/relay-tcp/reset-from-guest", test_reset_from_guest);
        g_test_add_func("/relay-tcp/guest-refused", test_guest_refused);
        g_test_add_func("/relay-tcp/connect-timeout", test_connect_timeout);
        g_test_add_func("/relay-tcp/backpressure", test_backpressure);
        g_test_add_func("/relay-tcp/max-sessions", test_max_sessions);
        g_test_add_func("/relay-tcp/ipv6", test_ipv6);
        g_test_add_func("/relay-tcp/ipv4-to-ipv6-fallback", test_ipv4_to_ipv6_fallback);
        g_test_add_func("/relay-tcp/proxy-v1", test_proxy_v1);
        g_test_add_func("/relay-tcp/proxy-v2", test_proxy_v2);
        g_test_add_func("/relay-tcp/idle-timeout", test_idle_timeout);
        g_test_add_func("/relay-tcp/counters", test_counters);
        g_test_add_func("/relay-tcp/set-target", test_set_target);
        g_test_add_func("/relay-tcp/idle-connections-are-cheap", test_idle_connections_are_cheap);
        g_test_add_func("/relay-tcp/bulk-spliced-then-idle", test_bulk_spliced_then_idle);
        g_test_add_func("/relay-tcp/free-with-open-connections", test_free_with_open_connections);
        g_test_add_func("/relay-tcp/out-of-fds-on-accept", test_out_of_fds_on_accept);
        g_test_add_func("/relay-tcp/out-of-fds-for-guest-socket", test_out_of_fds_for_guest_socket);
        return g_test_run();
}
