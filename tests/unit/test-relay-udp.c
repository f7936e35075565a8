/* Unit tests of the UDP relay: real sockets on loopback, the relay's loop in a thread */

/*
 * Each test binds its own listener and guest sockets on loopback, creates the relay on a private
 * ev loop and runs that loop in a thread. The guest services (echo, chatter, bursts) live on the
 * same loop. The loop thread holds Fixture.lock except while it polls (libev's release/acquire
 * hooks) and broadcasts Fixture.cond before every poll, so the test thread reads the counters and
 * calls the relay under the lock, and waits for conditions with WAIT_FOR() instead of sleeping.
 * Client sockets are plain blocking sockets read with poll() timeouts.
 */

/* Before glib.h, which then redefines macro.h's MIN() and MAX() without a warning. */
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay-udp.h"
#include "testlib.h"

#define MAX_GUESTS 2
#define MAX_LISTENERS 2
#define MAX_PEERS 512
#define WAIT_MS test_scaled_ms(3000)

/* A guest service on the relay's loop: echoes, or keeps talking to its last peer. */
typedef struct Guest {
        int fd;
        SockaddrUnion addr;
        ev_io io;
        ev_timer chatter;
        bool echo;
        unsigned n_ticks;
        SockaddrUnion last_peer;
        unsigned n_received;
        uint64_t bytes_received;
        size_t last_len;
        uint8_t last_data[65536];
        uint16_t peer_ports[MAX_PEERS]; /* distinct source ports seen, in order */
        unsigned n_peer_ports;
        int peer_family;
        bool burst_reply; /* answer "BURST" with burst_sizes[] */
        struct {
                size_t len;
                uint8_t tag;
                bool uniform;
        } log[MAX_PEERS]; /* every datagram received, in order */
        unsigned n_log;
} Guest;

/* Runs of equal sizes (sent as one GSO send by the relay), shorter tails, an empty datagram and
 * singles in between; datagram i is filled with the byte i + 1. */
static const size_t burst_sizes[] = {
        1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 600, /* a run */
        7,    7, /* a short run */
        0, /* empty */
        300,  300,  300,  299, /* another run */
        1, /* single */
        1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 5, /* and a last one */
};

typedef struct Fixture {
        struct ev_loop *loop;
        pthread_t thread;
        bool running;
        pthread_mutex_t lock; /* held by the loop thread except while it polls */
        pthread_cond_t cond; /* signalled before every poll */
        ev_async wake;
        bool stop;

        UdpRelay *relay;
        RelayStats stats;
        unsigned n_sessions_changed;
        unsigned n_state_changed;
        RelayState state;
        char reason[64];

        Guest guests[MAX_GUESTS];
        size_t n_guests;
        int listen_fds[MAX_LISTENERS];
        SockaddrUnion listen_addrs[MAX_LISTENERS];
        size_t n_listeners;
} Fixture;

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void addr_parse(const char *s, uint16_t port, SockaddrUnion *ret) {
        g_assert_cmpint(sockaddr_parse_ip(s, ret), ==, 0);
        sockaddr_set_port(ret, port);
}

/* A bound UDP socket as the manager would hand it over; port 0 picks a free one. */
static int udp_bind(const char *ip, uint16_t port, SockaddrUnion *ret_addr) {
        SockaddrUnion a;
        socklen_t len = sizeof a;
        int fd, one = 1;

        addr_parse(ip, port, &a);
        fd = socket(a.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        if (a.sa.sa_family == AF_INET6)
                g_assert_cmpint(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one), ==, 0);
        if (bind(fd, &a.sa, sockaddr_len(&a)) < 0) {
                close(fd);
                return -errno;
        }
        g_assert_cmpint(getsockname(fd, &a.sa, &len), ==, 0);
        if (ret_addr)
                *ret_addr = a;
        return fd;
}

/* ---- the loop thread ---- */

static void loop_release(struct ev_loop *loop) {
        Fixture *f = ev_userdata(loop);

        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
}

static void loop_acquire(struct ev_loop *loop) {
        Fixture *f = ev_userdata(loop);

        pthread_mutex_lock(&f->lock);
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents) {
        Fixture *f = w->data;

        if (f->stop)
                ev_break(loop, EVBREAK_ALL);
}

static void *loop_thread(void *userdata) {
        Fixture *f = userdata;

        pthread_mutex_lock(&f->lock);
        ev_run(f->loop, 0);
        pthread_mutex_unlock(&f->lock);
        return NULL;
}

static void guest_remember_peer(Guest *g, const SockaddrUnion *peer) {
        uint16_t port = sockaddr_port(peer);

        g->last_peer = *peer;
        g->peer_family = peer->sa.sa_family;
        for (unsigned i = 0; i < g->n_peer_ports; i++)
                if (g->peer_ports[i] == port)
                        return;
        if (g->n_peer_ports < MAX_PEERS)
                g->peer_ports[g->n_peer_ports++] = port;
}

/* Sends burst_sizes[] in one sendmmsg(), so that it arrives as one batch if anything does. */
static void burst_send(int fd, const SockaddrUnion *to) {
        static uint8_t bufs[G_N_ELEMENTS(burst_sizes)][1400];
        struct mmsghdr m[G_N_ELEMENTS(burst_sizes)] = {};
        struct iovec iov[G_N_ELEMENTS(burst_sizes)];

        for (size_t i = 0; i < G_N_ELEMENTS(burst_sizes); i++) {
                memset(bufs[i], (int) i + 1, sizeof bufs[i]);
                iov[i] = (struct iovec){ .iov_base = bufs[i], .iov_len = burst_sizes[i] };
                m[i].msg_hdr = (struct msghdr){
                        .msg_name = to ? (void *) &to->sa : NULL,
                        .msg_namelen = to ? sockaddr_len(to) : 0,
                        .msg_iov = &iov[i],
                        .msg_iovlen = 1,
                };
        }
        g_assert_cmpint(sendmmsg(fd, m, G_N_ELEMENTS(burst_sizes), 0), ==,
                        (int) G_N_ELEMENTS(burst_sizes));
}

static void guest_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        Guest *g = w->data;

        for (int i = 0; i < 256; i++) {
                SockaddrUnion peer = {};
                socklen_t len = sizeof peer;
                ssize_t n;

                n = recvfrom(g->fd, g->last_data, sizeof g->last_data, 0, &peer.sa, &len);
                if (n < 0)
                        break;
                g->n_received++;
                g->bytes_received += (uint64_t) n;
                g->last_len = (size_t) n;
                guest_remember_peer(g, &peer);
                if (g->n_log < MAX_PEERS) {
                        g->log[g->n_log].len = (size_t) n;
                        g->log[g->n_log].tag = n > 0 ? g->last_data[0] : 0;
                        g->log[g->n_log].uniform = true;
                        for (ssize_t k = 1; k < n; k++)
                                if (g->last_data[k] != g->last_data[0])
                                        g->log[g->n_log].uniform = false;
                        g->n_log++;
                }
                if (g->burst_reply && n == 5 && memcmp(g->last_data, "BURST", 5) == 0)
                        burst_send(g->fd, &peer);
                else if (g->echo)
                        (void) sendto(g->fd, g->last_data, (size_t) n, 0, &peer.sa, len);
        }
}

static void guest_chatter_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        Guest *g = w->data;
        char buf[32];
        int n;

        if (g->last_peer.sa.sa_family == AF_UNSPEC)
                return;
        n = snprintf(buf, sizeof buf, "tick %u", ++g->n_ticks);
        (void) sendto(g->fd, buf, (size_t) n, 0, &g->last_peer.sa, sockaddr_len(&g->last_peer));
}

static void on_sessions_changed(void *userdata) {
        Fixture *f = userdata;

        f->n_sessions_changed++;
}

static void on_state_changed(void *userdata, RelayState state, const char *reason) {
        Fixture *f = userdata;

        f->n_state_changed++;
        f->state = state;
        g_strlcpy(f->reason, reason, sizeof f->reason);
}

static const RelayCallbacks callbacks = {
        .sessions_changed = on_sessions_changed,
        .state_changed = on_state_changed,
};

/* ---- fixture ---- */

static void fixture_init(Fixture *f) {
        pthread_condattr_t attr;

        memset(f, 0, sizeof *f);
        f->loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f->loop);
        pthread_mutex_init(&f->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&f->cond, &attr);
        pthread_condattr_destroy(&attr);
        ev_set_userdata(f->loop, f);
        ev_set_loop_release_cb(f->loop, loop_release, loop_acquire);
        ev_async_init(&f->wake, wake_cb);
        f->wake.data = f;
        ev_async_start(f->loop, &f->wake);
        f->state = RELAY_LISTENING;
}

/* Binds 127.0.0.1 and ::1 to one free port. */
static void udp_bind_pair(int *ret_fd4, SockaddrUnion *ret_addr4, int *ret_fd6,
                          SockaddrUnion *ret_addr6) {
        for (int attempt = 0; attempt < 50; attempt++) {
                int fd4 = udp_bind("127.0.0.1", 0, ret_addr4);
                int fd6 = udp_bind("::1", sockaddr_port(ret_addr4), ret_addr6);

                if (fd6 >= 0) {
                        *ret_fd4 = fd4;
                        *ret_fd6 = fd6;
                        return;
                }
                close(fd4);
        }
        g_assert_not_reached();
}

/* An echo guest on a bound socket. Returns its index. */
static size_t fixture_add_guest_fd(Fixture *f, int fd, const SockaddrUnion *addr) {
        Guest *g = &f->guests[f->n_guests];

        g_assert_cmpuint(f->n_guests, <, MAX_GUESTS);
        g->fd = fd;
        g->addr = *addr;
        g->echo = true;
        ev_io_init(&g->io, guest_io_cb, g->fd, EV_READ);
        g->io.data = g;
        ev_io_start(f->loop, &g->io);
        ev_timer_init(&g->chatter, guest_chatter_cb, 0.3, 0.3);
        g->chatter.data = g;
        return f->n_guests++;
}

/* An echo guest on ip, on a free port. */
static size_t fixture_add_guest(Fixture *f, const char *ip) {
        SockaddrUnion a;
        int fd = udp_bind(ip, 0, &a);

        g_assert_cmpint(fd, >=, 0);
        return fixture_add_guest_fd(f, fd, &a);
}

static void fixture_add_listener(Fixture *f, const char *ip, uint16_t port) {
        g_assert_cmpuint(f->n_listeners, <, MAX_LISTENERS);
        f->listen_fds[f->n_listeners] = udp_bind(ip, port, &f->listen_addrs[f->n_listeners]);
        g_assert_cmpint(f->listen_fds[f->n_listeners], >=, 0);
        f->n_listeners++;
}

static RelayTarget target_of(const Guest *g4, const Guest *g6) {
        RelayTarget t = {};

        if (g4) {
                t.guest4 = g4->addr;
                t.port = sockaddr_port(&g4->addr);
        }
        if (g6) {
                t.guest6 = g6->addr;
                t.port = sockaddr_port(&g6->addr);
        }
        return t;
}

static void fixture_start(Fixture *f, const RelayTarget *target, uint64_t idle_timeout_usec,
                          uint32_t max_sessions) {
        RelayConfig config = {
                .target = *target,
                .idle_timeout_usec = idle_timeout_usec,
                .max_sessions = max_sessions,
        };

        g_assert_cmpint(udp_relay_new(&f->relay, f->loop, f->listen_fds, f->n_listeners, &config,
                                      &f->stats, &callbacks, f),
                        ==, 0);
        g_assert_cmpint(pthread_create(&f->thread, NULL, loop_thread, f), ==, 0);
        f->running = true;
}

/* The common case: a relay on 127.0.0.1 (a free port) to one echo guest on 127.0.0.1. */
static void fixture_start_echo(Fixture *f, uint64_t idle_timeout_usec, uint32_t max_sessions) {
        RelayTarget t;

        fixture_init(f);
        fixture_add_guest(f, "127.0.0.1");
        fixture_add_listener(f, "127.0.0.1", 0);
        t = target_of(&f->guests[0], NULL);
        fixture_start(f, &t, idle_timeout_usec, max_sessions);
}

static void fixture_stop(Fixture *f) {
        if (!f->running)
                return;
        pthread_mutex_lock(&f->lock);
        f->stop = true;
        ev_async_send(f->loop, &f->wake);
        pthread_mutex_unlock(&f->lock);
        g_assert_cmpint(pthread_join(f->thread, NULL), ==, 0);
        f->running = false;
}

static void fixture_done(Fixture *f) {
        unsigned n_state_changed;

        fixture_stop(f);
        /* Freeing calls no callback. */
        n_state_changed = f->n_state_changed;
        f->relay = udp_relay_free(f->relay);
        g_assert_cmpuint(f->n_state_changed, ==, n_state_changed);
        for (size_t i = 0; i < f->n_guests; i++) {
                ev_io_stop(f->loop, &f->guests[i].io);
                ev_timer_stop(f->loop, &f->guests[i].chatter);
                close(f->guests[i].fd);
        }
        ev_async_stop(f->loop, &f->wake);
        ev_loop_destroy(f->loop);
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
}

static void lock(Fixture *f) {
        pthread_mutex_lock(&f->lock);
}

static void unlock(Fixture *f) {
        pthread_mutex_unlock(&f->lock);
}

/* Evaluates cond under the lock until it holds or ms pass; every loop iteration re-checks. */
#define WAIT_FOR(fx, expr, ms)                                                                     \
        ({                                                                                         \
                uint64_t _deadline = now_usec() + 1000 * (uint64_t) (ms);                          \
                struct timespec _ts = { .tv_sec = (time_t) (_deadline / 1000000),                  \
                                        .tv_nsec = (long) (_deadline % 1000000) * 1000 };          \
                bool _ok;                                                                          \
                lock(fx);                                                                          \
                while (!(_ok = (expr)))                                                            \
                        if (pthread_cond_timedwait(&(fx)->cond, &(fx)->lock, &_ts) == ETIMEDOUT) { \
                                _ok = (expr);                                                      \
                                break;                                                             \
                        }                                                                          \
                unlock(fx);                                                                        \
                _ok;                                                                               \
        })

static RelayStats stats_get(Fixture *f) {
        RelayStats s;

        lock(f);
        s = f->stats;
        unlock(f);
        return s;
}

/* ---- clients ---- */

static int client_new(int family) {
        int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        return fd;
}

static void client_send(int fd, const SockaddrUnion *to, const void *buf, size_t len) {
        g_assert_cmpint(sendto(fd, buf, len, 0, &to->sa, sockaddr_len(to)), ==, (ssize_t) len);
}

/* Returns the datagram's length, or -1 when none came within ms. */
static ssize_t client_recv(int fd, void *buf, size_t size, int ms, SockaddrUnion *ret_from) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        SockaddrUnion from = {};
        socklen_t len = sizeof from;
        ssize_t n;

        if (poll(&p, 1, ms) <= 0)
                return -1;
        n = recvfrom(fd, buf, size, MSG_DONTWAIT, &from.sa, &len);
        if (ret_from)
                *ret_from = from;
        return n;
}

/* Sends text and expects it back from the relay's address to. */
static void client_echo(int fd, const SockaddrUnion *to, const char *text) {
        char buf[256];
        SockaddrUnion from;
        ssize_t n;

        client_send(fd, to, text, strlen(text));
        n = client_recv(fd, buf, sizeof buf, WAIT_MS, &from);
        g_assert_cmpint(n, ==, (ssize_t) strlen(text));
        g_assert_cmpmem(buf, (size_t) n, text, strlen(text));
        g_assert_true(sockaddr_equal(&from, to));
}

/* ---- tests ---- */

static void test_echo_family(const char *listen_ip, const char *guest_ip, int want_guest_family) {
        Fixture f;
        RelayTarget t;
        RelayStats s;
        size_t g;
        int c;

        fixture_init(&f);
        g = fixture_add_guest(&f, guest_ip);
        fixture_add_listener(&f, listen_ip, 0);
        t = want_guest_family == AF_INET ? target_of(&f.guests[g], NULL)
                                         : target_of(NULL, &f.guests[g]);
        fixture_start(&f, &t, 0, 0);

        c = client_new(f.listen_addrs[0].sa.sa_family);
        client_echo(c, &f.listen_addrs[0], "hello");
        client_echo(c, &f.listen_addrs[0], "again");

        s = stats_get(&f);
        g_assert_cmpuint(s.total, ==, 1);
        g_assert_cmpuint(s.active, ==, 1);
        lock(&f);
        g_assert_cmpint(f.guests[g].peer_family, ==, want_guest_family);
        g_assert_cmpuint(f.guests[g].n_peer_ports, ==, 1);
        unlock(&f);

        close(c);
        fixture_done(&f);
}

static void test_echo_v4(void) {
        test_echo_family("127.0.0.1", "127.0.0.1", AF_INET);
}

static void test_echo_v6(void) {
        test_echo_family("::1", "::1", AF_INET6);
}

/* A v4 listener whose guest has only a v6 address reaches it over v6. */
static void test_echo_v4_to_v6_guest(void) {
        test_echo_family("127.0.0.1", "::1", AF_INET6);
}

/* One relay, two sockets of one port (127.0.0.1 and ::1), each family to its guest. */
static void test_echo_dual_listeners(void) {
        Fixture f;
        RelayTarget t;
        SockaddrUnion a4, a6;
        int c4, c6, fd4, fd6;

        fixture_init(&f);
        udp_bind_pair(&fd4, &a4, &fd6, &a6);
        fixture_add_guest_fd(&f, fd4, &a4);
        fixture_add_guest_fd(&f, fd6, &a6);
        udp_bind_pair(&f.listen_fds[0], &f.listen_addrs[0], &f.listen_fds[1], &f.listen_addrs[1]);
        f.n_listeners = 2;

        t = target_of(&f.guests[0], &f.guests[1]);
        fixture_start(&f, &t, 0, 0);

        c4 = client_new(AF_INET);
        c6 = client_new(AF_INET6);
        client_echo(c4, &f.listen_addrs[0], "over v4");
        client_echo(c6, &f.listen_addrs[1], "over v6");

        lock(&f);
        g_assert_cmpuint(f.guests[0].n_received, ==, 1);
        g_assert_cmpint(f.guests[0].peer_family, ==, AF_INET);
        g_assert_cmpuint(f.guests[1].n_received, ==, 1);
        g_assert_cmpint(f.guests[1].peer_family, ==, AF_INET6);
        g_assert_cmpuint(f.stats.total, ==, 2);
        unlock(&f);

        close(c4);
        close(c6);
        fixture_done(&f);
}

/* A session idle for the 1 s timeout goes away; the client's next datagram opens a new one. */
static void test_expiry(void) {
        Fixture f;
        uint64_t t0, elapsed;
        uint16_t first_port;
        int c;

        fixture_start_echo(&f, 1 * G_USEC_PER_SEC, 0);

        c = client_new(AF_INET);
        client_echo(c, &f.listen_addrs[0], "one");
        t0 = now_usec();
        lock(&f);
        first_port = f.guests[0].peer_ports[0];
        g_assert_cmpuint(f.stats.active, ==, 1);
        unlock(&f);

        g_assert_true(WAIT_FOR(&f, f.stats.active == 0, WAIT_MS));
        elapsed = now_usec() - t0;
        g_assert_cmpuint(elapsed, >=, 900 * 1000);
        g_assert_cmpuint(elapsed, <=, 2000 * 1000);
        g_assert_true(WAIT_FOR(&f, f.n_sessions_changed == 2, WAIT_MS));

        client_echo(c, &f.listen_addrs[0], "two");
        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 2);
        g_assert_cmpuint(f.stats.active, ==, 1);
        /* The new session has a new socket, so the guest sees a new source port. */
        g_assert_cmpuint(f.guests[0].n_peer_ports, ==, 2);
        g_assert_cmpuint(f.guests[0].peer_ports[1], !=, first_port);
        unlock(&f);

        close(c);
        fixture_done(&f);
}

/* Guest traffic alone keeps a session alive: the client speaks once, the guest every 300 ms. */
static void test_reply_keeps_session_alive(void) {
        Fixture f;
        RelayTarget t;
        unsigned ticks = 0, last_tick = 0;
        uint64_t end;
        char buf[64];
        int c;

        fixture_init(&f);
        fixture_add_guest(&f, "127.0.0.1");
        f.guests[0].echo = false;
        ev_timer_start(f.loop, &f.guests[0].chatter);
        fixture_add_listener(&f, "127.0.0.1", 0);
        t = target_of(&f.guests[0], NULL);
        fixture_start(&f, &t, 1 * G_USEC_PER_SEC, 0);

        c = client_new(AF_INET);
        client_send(c, &f.listen_addrs[0], "subscribe", 9);

        end = now_usec() + 2500 * 1000;
        while (now_usec() < end) {
                ssize_t n = client_recv(c, buf, sizeof buf - 1, 1000, NULL);
                unsigned tick;

                g_assert_cmpint(n, >, 0);
                buf[n] = 0;
                g_assert_cmpint(sscanf(buf, "tick %u", &tick), ==, 1);
                g_assert_cmpuint(tick, >, last_tick);
                last_tick = tick;
                ticks++;
        }
        g_assert_cmpuint(ticks, >=, 6);

        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 1);
        g_assert_cmpuint(f.stats.active, ==, 1);
        g_assert_cmpuint(f.n_sessions_changed, ==, 1);
        /* Silence on both sides: now it expires. */
        ev_timer_stop(f.loop, &f.guests[0].chatter);
        unlock(&f);
        g_assert_true(WAIT_FOR(&f, f.stats.active == 0, WAIT_MS));

        close(c);
        fixture_done(&f);
}

/* At MaxSessions=2 a third client's datagrams are dropped and counted, the first two go on, and
 * the relay reports paused until the sessions expire. */
static void test_max_sessions(void) {
        Fixture f;
        const char *reason;
        char buf[64];
        int a, b, c;

        fixture_start_echo(&f, 1 * G_USEC_PER_SEC, 2);

        a = client_new(AF_INET);
        b = client_new(AF_INET);
        c = client_new(AF_INET);
        client_echo(a, &f.listen_addrs[0], "a1");
        lock(&f);
        g_assert_cmpint(udp_relay_get_state(f.relay, &reason), ==, RELAY_LISTENING);
        g_assert_cmpstr(reason, ==, "");
        g_assert_cmpuint(f.n_state_changed, ==, 0);
        unlock(&f);

        client_echo(b, &f.listen_addrs[0], "b1");
        g_assert_true(WAIT_FOR(&f, f.n_state_changed == 1, WAIT_MS));
        lock(&f);
        g_assert_cmpint(f.state, ==, RELAY_PAUSED);
        g_assert_cmpstr(f.reason, ==, "MaxSessions reached");
        g_assert_cmpint(udp_relay_get_state(f.relay, &reason), ==, RELAY_PAUSED);
        g_assert_cmpstr(reason, ==, "MaxSessions reached");
        unlock(&f);

        for (int i = 0; i < 3; i++)
                client_send(c, &f.listen_addrs[0], "c", 1);
        g_assert_true(WAIT_FOR(&f, f.stats.rejected == 3, WAIT_MS));
        g_assert_cmpint(client_recv(c, buf, sizeof buf, 200, NULL), ==, -1);

        client_echo(a, &f.listen_addrs[0], "a2");
        client_echo(b, &f.listen_addrs[0], "b2");
        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 2);
        g_assert_cmpuint(f.stats.active, ==, 2);
        g_assert_cmpuint(f.stats.rejected, ==, 3);
        g_assert_cmpuint(f.guests[0].n_received, ==, 4);
        unlock(&f);

        /* Below the cap again once sessions end; then the third client gets in. */
        g_assert_true(WAIT_FOR(&f, f.state == RELAY_LISTENING, WAIT_MS));
        lock(&f);
        g_assert_cmpstr(f.reason, ==, "");
        g_assert_cmpuint(f.n_state_changed, ==, 2);
        unlock(&f);
        client_echo(c, &f.listen_addrs[0], "c2");
        g_assert_cmpuint(stats_get(&f).rejected, ==, 3);

        close(a);
        close(b);
        close(c);
        fixture_done(&f);
}

/* On 0.0.0.0 replies leave from the address the client sent to, one session per local address. */
static void test_wildcard_reply_source_v4(void) {
        Fixture f;
        RelayTarget t;
        SockaddrUnion to5, to6;
        uint16_t port;
        int c, d;

        fixture_init(&f);
        fixture_add_guest(&f, "127.0.0.1");
        fixture_add_listener(&f, "0.0.0.0", 0);
        t = target_of(&f.guests[0], NULL);
        fixture_start(&f, &t, 0, 0);

        port = sockaddr_port(&f.listen_addrs[0]);
        addr_parse("127.0.0.5", port, &to5);
        addr_parse("127.0.0.6", port, &to6);

        c = client_new(AF_INET);
        d = client_new(AF_INET);
        /* client_echo() checks the reply's source address. */
        client_echo(c, &to5, "to .5");
        client_echo(d, &to6, "to .6");
        client_echo(c, &to6, "c to .6");
        client_echo(c, &to5, "c to .5 again");

        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 3);
        g_assert_cmpuint(f.stats.active, ==, 3);
        unlock(&f);

        close(c);
        close(d);
        fixture_done(&f);
}

static void test_wildcard_reply_source_v6(void) {
        Fixture f;
        RelayTarget t;
        SockaddrUnion to;
        int c;

        fixture_init(&f);
        fixture_add_guest(&f, "::1");
        fixture_add_listener(&f, "::", 0);
        t = target_of(NULL, &f.guests[0]);
        fixture_start(&f, &t, 0, 0);

        addr_parse("::1", sockaddr_port(&f.listen_addrs[0]), &to);
        c = client_new(AF_INET6);
        client_echo(c, &to, "to ::1");
        client_echo(c, &to, "to ::1 again");
        g_assert_cmpuint(stats_get(&f).total, ==, 1);

        close(c);
        fixture_done(&f);
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed) {
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t) ((i * 31 + seed) ^ (i >> 8));
}

/* The largest datagrams of each family cross intact both ways. */
static void test_large_datagrams_family(const char *ip, size_t size) {
        Fixture f;
        RelayTarget t;
        g_autofree uint8_t *out = g_malloc(size);
        g_autofree uint8_t *in = g_malloc(65536);
        int c, rcvbuf = 1 << 20;
        ssize_t n;

        fixture_init(&f);
        fixture_add_guest(&f, ip);
        fixture_add_listener(&f, ip, 0);
        t = f.guests[0].addr.sa.sa_family == AF_INET ? target_of(&f.guests[0], NULL)
                                                     : target_of(NULL, &f.guests[0]);
        fixture_start(&f, &t, 0, 0);

        c = client_new(f.listen_addrs[0].sa.sa_family);
        (void) setsockopt(c, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        for (unsigned round = 0; round < 3; round++) {
                fill_pattern(out, size, round);
                client_send(c, &f.listen_addrs[0], out, size);
                n = client_recv(c, in, 65536, WAIT_MS, NULL);
                g_assert_cmpint(n, ==, (ssize_t) size);
                g_assert_true(memcmp(in, out, size) == 0);

                lock(&f);
                g_assert_cmpuint(f.guests[0].last_len, ==, size);
                g_assert_true(memcmp(f.guests[0].last_data, out, size) == 0);
                unlock(&f);
        }
        g_assert_true(WAIT_FOR(&f, f.stats.bytes_from_guest == 3 * size, WAIT_MS));
        g_assert_cmpuint(stats_get(&f).bytes_to_guest, ==, 3 * size);

        close(c);
        fixture_done(&f);
}

static void test_large_datagrams_v4(void) {
        test_large_datagrams_family("127.0.0.1", 65507);
}

static void test_large_datagrams_v6(void) {
        test_large_datagrams_family("::1", 65527);
}

/* total, active and both byte counters match what crossed; empty datagrams cross too. */
static void test_counters(void) {
        static const size_t sizes[] = { 1, 100, 0, 1400, 9000, 33 };
        Fixture f;
        uint8_t buf[9000] = {}, in[9000];
        uint64_t sum = 0;
        RelayStats s;
        int c[2];

        fixture_start_echo(&f, 0, 0);

        s = stats_get(&f);
        g_assert_cmpuint(s.total, ==, 0);
        g_assert_cmpuint(s.active, ==, 0);

        for (int k = 0; k < 2; k++) {
                c[k] = client_new(AF_INET);
                for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
                        client_send(c[k], &f.listen_addrs[0], buf, sizes[i]);
                        g_assert_cmpint(client_recv(c[k], in, sizeof in, WAIT_MS, NULL), ==,
                                        (ssize_t) sizes[i]);
                        sum += sizes[i];
                }
        }

        g_assert_true(WAIT_FOR(&f, f.stats.bytes_from_guest == sum, WAIT_MS));
        lock(&f);
        g_assert_cmpuint(f.stats.bytes_to_guest, ==, sum);
        g_assert_cmpuint(f.stats.total, ==, 2);
        g_assert_cmpuint(f.stats.active, ==, 2);
        g_assert_cmpuint(f.stats.rejected, ==, 0);
        g_assert_cmpuint(f.stats.failed, ==, 0);
        g_assert_cmpuint(f.n_sessions_changed, ==, 2);
        g_assert_cmpuint(f.guests[0].n_received, ==, 2 * G_N_ELEMENTS(sizes));
        unlock(&f);

        close(c[0]);
        close(c[1]);
        fixture_done(&f);
}

/* 200 clients at once: 200 sessions, each answered, all expire together, all freed. */
static void test_many_sessions(void) {
        enum { N = 200 };
        Fixture f;
        uint64_t bytes;
        int c[N];
        char buf[32];

        /* Sessions must outlive the round trips, which take long under valgrind. */
        fixture_start_echo(&f, test_scaled_ms(1000) * G_TIME_SPAN_MILLISECOND, 0);

        for (int i = 0; i < N; i++) {
                int n = snprintf(buf, sizeof buf, "client %d", i);

                c[i] = client_new(AF_INET);
                client_send(c[i], &f.listen_addrs[0], buf, (size_t) n);
        }
        for (int i = 0; i < N; i++) {
                char in[32];
                int n = snprintf(buf, sizeof buf, "client %d", i);

                g_assert_cmpint(client_recv(c[i], in, sizeof in, WAIT_MS, NULL), ==, n);
                g_assert_cmpmem(in, n, buf, n);
        }

        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, N);
        g_assert_cmpuint(f.stats.active, ==, N);
        g_assert_cmpuint(f.guests[0].n_peer_ports, ==, N);
        unlock(&f);

        g_assert_true(WAIT_FOR(&f, f.stats.active == 0, WAIT_MS));
        bytes = stats_get(&f).bytes_from_guest;

        /* And once more, left open for udp_relay_free(). */
        for (int i = 0; i < N; i++)
                client_send(c[i], &f.listen_addrs[0], "x", 1);
        g_assert_true(WAIT_FOR(&f, f.stats.bytes_from_guest == bytes + N, WAIT_MS));
        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 2 * N);
        g_assert_cmpuint(f.stats.active, ==, N);
        unlock(&f);
        for (int i = 0; i < N; i++)
                close(c[i]);
        fixture_done(&f);
        g_assert_cmpuint(f.stats.active, ==, 0);
}

/* Bursts of datagrams of equal and of differing sizes keep their order, sizes and contents both
 * ways (runs of equal size go through UDP GSO), and replies leave from the address the client
 * sent to. */
static void test_bursts_family(const char *listen_ip, const char *send_ip, const char *guest_ip) {
        Fixture f;
        RelayTarget t;
        SockaddrUnion to, from;
        uint8_t buf[2048];
        size_t sum = 0;
        int c;

        fixture_init(&f);
        fixture_add_guest(&f, guest_ip);
        f.guests[0].burst_reply = true;
        f.guests[0].echo = false;
        fixture_add_listener(&f, listen_ip, 0);
        t = f.guests[0].addr.sa.sa_family == AF_INET ? target_of(&f.guests[0], NULL)
                                                     : target_of(NULL, &f.guests[0]);
        fixture_start(&f, &t, 0, 0);
        addr_parse(send_ip, sockaddr_port(&f.listen_addrs[0]), &to);

        for (size_t i = 0; i < G_N_ELEMENTS(burst_sizes); i++)
                sum += burst_sizes[i];

        c = client_new(to.sa.sa_family);
        g_assert_cmpint(connect(c, &to.sa, sockaddr_len(&to)), ==, 0);
        burst_send(c, NULL);
        g_assert_true(WAIT_FOR(&f, f.guests[0].n_log == G_N_ELEMENTS(burst_sizes), WAIT_MS));
        lock(&f);
        for (size_t i = 0; i < G_N_ELEMENTS(burst_sizes); i++) {
                g_assert_cmpuint(f.guests[0].log[i].len, ==, burst_sizes[i]);
                if (burst_sizes[i] > 0)
                        g_assert_cmpuint(f.guests[0].log[i].tag, ==, i + 1);
                g_assert_true(f.guests[0].log[i].uniform);
        }
        unlock(&f);

        client_send(c, &to, "BURST", 5);
        for (size_t i = 0; i < G_N_ELEMENTS(burst_sizes); i++) {
                ssize_t n = client_recv(c, buf, sizeof buf, WAIT_MS, &from);

                g_assert_cmpint(n, ==, (ssize_t) burst_sizes[i]);
                for (ssize_t k = 0; k < n; k++)
                        g_assert_cmpuint(buf[k], ==, i + 1);
                g_assert_true(sockaddr_equal(&from, &to));
        }
        g_assert_cmpint(client_recv(c, buf, sizeof buf, 0, NULL), ==, -1);

        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 1);
        g_assert_cmpuint(f.stats.bytes_to_guest, ==, sum + 5);
        g_assert_cmpuint(f.stats.bytes_from_guest, ==, sum);
        unlock(&f);

        close(c);
        fixture_done(&f);
}

static void test_bursts_v4(void) {
        test_bursts_family("127.0.0.1", "127.0.0.1", "127.0.0.1");
}

static void test_bursts_v6(void) {
        test_bursts_family("::1", "::1", "::1");
}

static void test_bursts_wildcard(void) {
        test_bursts_family("0.0.0.0", "127.0.0.7", "127.0.0.1");
}

/* Nothing listens at the guest port: the ICMP error fails and closes the session. */
static void test_guest_unreachable(void) {
        Fixture f;
        RelayTarget t = {};
        SockaddrUnion dead;
        int fd, c;

        fixture_init(&f);
        fd = udp_bind("127.0.0.1", 0, &dead);
        close(fd);
        fixture_add_listener(&f, "127.0.0.1", 0);
        t.guest4 = dead;
        t.port = sockaddr_port(&dead);
        fixture_start(&f, &t, 0, 0);

        c = client_new(AF_INET);
        client_send(c, &f.listen_addrs[0], "anyone?", 7);
        g_assert_true(WAIT_FOR(&f, f.stats.failed == 1 && f.stats.active == 0, WAIT_MS));
        g_assert_cmpuint(stats_get(&f).total, ==, 1);

        close(c);
        fixture_done(&f);
}

/* A new target applies to new sessions only. */
static void test_set_target(void) {
        Fixture f;
        RelayTarget t, t2;
        int a, b;

        fixture_init(&f);
        fixture_add_guest(&f, "127.0.0.1");
        fixture_add_guest(&f, "127.0.0.1");
        fixture_add_listener(&f, "127.0.0.1", 0);
        t = target_of(&f.guests[0], NULL);
        fixture_start(&f, &t, 0, 0);

        a = client_new(AF_INET);
        b = client_new(AF_INET);
        client_echo(a, &f.listen_addrs[0], "a to first");

        t2 = target_of(&f.guests[1], NULL);
        lock(&f);
        udp_relay_set_target(f.relay, &t2);
        unlock(&f);

        client_echo(a, &f.listen_addrs[0], "a still to first");
        client_echo(b, &f.listen_addrs[0], "b to second");
        lock(&f);
        g_assert_cmpuint(f.guests[0].n_received, ==, 2);
        g_assert_cmpuint(f.guests[1].n_received, ==, 1);
        unlock(&f);

        close(a);
        close(b);
        fixture_done(&f);
}

/* Out of fds: the new client's datagram is refused and counted, the relay says why, does not
 * spin, and recovers as soon as an fd is free. */
static void test_out_of_fds(void) {
        Fixture f;
        struct rlimit saved, low;
        int fillers[256], n_fillers = 0, a, b;
        unsigned iterations;
        const char *reason;

        fixture_start_echo(&f, 0, 0);
        a = client_new(AF_INET);
        b = client_new(AF_INET);

        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        low = saved;
        low.rlim_cur = 128;
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &low), ==, 0);
        while (n_fillers < (int) G_N_ELEMENTS(fillers)) {
                int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
                if (fd < 0) {
                        g_assert_cmpint(errno, ==, EMFILE);
                        break;
                }
                fillers[n_fillers++] = fd;
        }
        g_assert_cmpint(n_fillers, >, 0);
        g_assert_cmpint(n_fillers, <, (int) G_N_ELEMENTS(fillers));

        client_send(a, &f.listen_addrs[0], "a", 1);
        g_assert_true(WAIT_FOR(&f, f.stats.rejected == 1 && f.state == RELAY_PAUSED, WAIT_MS));
        lock(&f);
        g_assert_cmpstr(f.reason, ==, "Too many open files");
        g_assert_cmpint(udp_relay_get_state(f.relay, &reason), ==, RELAY_PAUSED);
        g_assert_cmpstr(reason, ==, "Too many open files");
        g_assert_cmpuint(f.stats.active, ==, 0);
        iterations = ev_iteration(f.loop);
        unlock(&f);

        /* Idle means idle: no loop iterations while nothing arrives. */
        g_assert_false(WAIT_FOR(&f, ev_iteration(f.loop) > iterations + 5, 200));

        close(fillers[--n_fillers]);
        client_echo(b, &f.listen_addrs[0], "b");
        lock(&f);
        g_assert_cmpint(f.state, ==, RELAY_LISTENING);
        g_assert_cmpuint(f.stats.active, ==, 1);
        g_assert_cmpuint(f.stats.rejected, ==, 1);
        unlock(&f);

        while (n_fillers > 0)
                close(fillers[--n_fillers]);
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        close(a);
        close(b);
        fixture_done(&f);
}

/* ---- polled mode ---- */

#define FLOOD 200

/* The timerfds of this process, at most max of them; returns how many. */
static size_t timerfds_list(int *fds, size_t max) {
        GDir *dir = g_dir_open("/proc/self/fd", 0, NULL);
        const char *name;
        size_t n = 0;

        g_assert_nonnull(dir);
        while ((name = g_dir_read_name(dir))) {
                g_autofree char *path = g_strdup_printf("/proc/self/fd/%s", name);
                g_autofree char *target = g_file_read_link(path, NULL);

                if (target && strcmp(target, "anon_inode:[timerfd]") == 0 && n < max)
                        fds[n++] = atoi(name);
        }
        g_dir_close(dir);
        return n;
}

/* The relay's timerfd: the one that is not among before[]. */
static int timerfd_new_since(const int *before, size_t n_before) {
        int now[16];
        size_t n = timerfds_list(now, G_N_ELEMENTS(now));

        for (size_t i = 0; i < n; i++) {
                bool old = false;

                for (size_t k = 0; k < n_before; k++)
                        old = old || now[i] == before[k];
                if (!old)
                        return now[i];
        }
        return -1;
}

static bool timerfd_disarmed(int fd) {
        g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
        g_autofree char *info = NULL;

        g_assert_true(g_file_get_contents(path, &info, NULL, NULL));
        return strstr(info, "it_value: (0, 0)") != NULL;
}

/* Bytes waiting on a socket. */
static int socket_queued(int fd) {
        int n = -1;

        g_assert_cmpint(ioctl(fd, SIOCINQ, &n), ==, 0);
        return n;
}

/* FLOOD datagrams in one sendmmsg(), datagram i carrying the byte i + 1, while the loop is held:
 * the relay finds all of them queued on its next wakeup. */
static void flood_send(Fixture *f, int fd) {
        static uint8_t bufs[FLOOD][64];
        struct mmsghdr m[FLOOD] = {};
        struct iovec iov[FLOOD];

        for (size_t i = 0; i < FLOOD; i++) {
                memset(bufs[i], (int) (i % 255) + 1, sizeof bufs[i]);
                iov[i] = (struct iovec){ .iov_base = bufs[i], .iov_len = sizeof bufs[i] };
                m[i].msg_hdr = (struct msghdr){ .msg_iov = &iov[i], .msg_iovlen = 1 };
        }
        lock(f);
        g_assert_cmpint(sendmmsg(fd, m, FLOOD, 0), ==, FLOOD);
        unlock(f);
}

/* Expects the FLOOD echoes, in order. */
static void flood_expect_echoes(int fd) {
        uint8_t buf[128];

        for (size_t i = 0; i < FLOOD; i++) {
                ssize_t n = client_recv(fd, buf, sizeof buf, WAIT_MS, NULL);

                g_assert_cmpint(n, ==, 64);
                g_assert_cmpuint(buf[0], ==, (i % 255) + 1);
                g_assert_cmpuint(buf[63], ==, (i % 255) + 1);
        }
}

/* A relay from 127.0.0.1 to an echo guest, and a client connected to it. */
static int flood_fixture_start(Fixture *f) {
        int c;

        fixture_start_echo(f, 0, 0);
        c = client_new(AF_INET);
        g_assert_cmpint(connect(c, &f->listen_addrs[0].sa, sockaddr_len(&f->listen_addrs[0])), ==, 0);
        return c;
}

/* A flood switches the relay to polling (its timerfd appears, nonblocking and close-on-exec),
 * every datagram still goes through both ways in order, and once the flood is over the relay
 * disarms the timer and goes back to wakeups: a single datagram is echoed as before. */
static void test_flood_polled(void) {
        Fixture f;
        int before[16], c, tfd;
        size_t n_before;

        n_before = timerfds_list(before, G_N_ELEMENTS(before));
        c = flood_fixture_start(&f);

        client_echo(c, &f.listen_addrs[0], "calm");
        g_assert_cmpint(timerfd_new_since(before, n_before), <, 0);

        for (int round = 0; round < 3; round++) {
                flood_send(&f, c);
                flood_expect_echoes(c);
        }
        g_assert_true(WAIT_FOR(&f, f.guests[0].n_received == 1 + 3 * FLOOD, WAIT_MS));

        tfd = timerfd_new_since(before, n_before);
        g_assert_cmpint(tfd, >=, 0);
        g_assert_cmpint(fcntl(tfd, F_GETFD) & FD_CLOEXEC, !=, 0);
        g_assert_cmpint(fcntl(tfd, F_GETFL) & O_NONBLOCK, !=, 0);
        /* Disarmed: nothing is polled any more. A single datagram is relayed on its wakeup, and
         * arms nothing. */
        g_assert_true(WAIT_FOR(&f, timerfd_disarmed(tfd), WAIT_MS));
        client_echo(c, &f.listen_addrs[0], "calm again");
        g_assert_true(timerfd_disarmed(tfd));

        lock(&f);
        g_assert_cmpuint(f.stats.total, ==, 1);
        g_assert_cmpuint(f.stats.bytes_to_guest, ==, 4 + 3 * FLOOD * 64 + 10);
        g_assert_cmpuint(f.stats.bytes_from_guest, ==, 4 + 3 * FLOOD * 64 + 10);
        unlock(&f);

        /* Freed in the middle of a flood (most likely with sockets polled and the timer armed:
         * ASan and the fd check below see that nothing is left behind). */
        flood_send(&f, c);
        g_assert_true(WAIT_FOR(&f, f.guests[0].n_received > 2 + 3 * FLOOD, WAIT_MS));
        close(c);
        fixture_done(&f);
        g_assert_cmpint(timerfd_new_since(before, n_before), <, 0);
}

/* The guest goes away in the middle of a flood: the ICMP errors close the session while its
 * listener is being polled, and the relay carries on with a new guest. */
static void test_flood_guest_gone(void) {
        Fixture f;
        RelayTarget t;
        uint64_t total;
        int c;

        c = flood_fixture_start(&f);

        flood_send(&f, c);
        flood_expect_echoes(c);

        lock(&f);
        ev_io_stop(f.loop, &f.guests[0].io);
        close(f.guests[0].fd);
        f.guests[0].fd = udp_bind("127.0.0.1", 0, NULL); /* for fixture_done() to close */
        unlock(&f);
        for (int round = 0; round < 3; round++)
                flood_send(&f, c);
        /* Each datagram that finds no session opens one, which fails in turn. */
        g_assert_true(WAIT_FOR(&f,
                               f.stats.failed >= 1 && f.stats.active == 0 &&
                                       socket_queued(f.listen_fds[0]) == 0,
                               WAIT_MS));
        total = stats_get(&f).total;

        /* A guest at a new address: the next datagram opens a new session to it. */
        lock(&f);
        fixture_add_guest(&f, "127.0.0.1");
        t = target_of(&f.guests[1], NULL);
        udp_relay_set_target(f.relay, &t);
        unlock(&f);
        client_echo(c, &f.listen_addrs[0], "anyone new?");
        g_assert_cmpuint(stats_get(&f).total, ==, total + 1);
        g_assert_cmpuint(stats_get(&f).active, ==, 1);

        close(c);
        fixture_done(&f);
}

/* Bad arguments fail, and a failed udp_relay_new() leaves the sockets with the caller. */
static void test_new_errors(void) {
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        RelayConfig config = {};
        RelayStats stats = {};
        UdpRelay *relay = NULL;
        int fds[2], tcp;

        g_assert_nonnull(loop);
        fds[0] = udp_bind("127.0.0.1", 0, &config.target.guest4);
        config.target.port = 9;
        g_assert_cmpint(udp_relay_new(&relay, loop, fds, 0, &config, &stats, NULL, NULL), ==,
                        -EINVAL);

        tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(tcp, >=, 0);
        fds[1] = tcp;
        g_assert_cmpint(udp_relay_new(&relay, loop, fds, 2, &config, &stats, NULL, NULL), <, 0);
        g_assert_null(relay);
        g_assert_cmpint(fcntl(fds[0], F_GETFD), >=, 0);
        g_assert_cmpint(fcntl(tcp, F_GETFD), >=, 0);
        close(tcp);

        /* Without callbacks it works too; free takes the socket. */
        g_assert_cmpint(udp_relay_new(&relay, loop, fds, 1, &config, &stats, NULL, NULL), ==, 0);
        g_assert_nonnull(relay);
        relay = udp_relay_free(relay);
        g_assert_cmpint(fcntl(fds[0], F_GETFD), <, 0);
        g_assert_null(udp_relay_free(NULL));
        ev_loop_destroy(loop);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        /* Runs the relay's debug logging too (rate-limited, on stderr). */
        log_set_max_level(LOG_DEBUG);

        g_test_add_func("/relay-udp/echo-v4", test_echo_v4);
        g_test_add_func("/relay-udp/echo-v6", test_echo_v6);
        g_test_add_func("/relay-udp/echo-v4-listener-v6-guest", test_echo_v4_to_v6_guest);
        g_test_add_func("/relay-udp/echo-dual-listeners", test_echo_dual_listeners);
        g_test_add_func("/relay-udp/expiry", test_expiry);
        g_test_add_func("/relay-udp/reply-keeps-session-alive", test_reply_keeps_session_alive);
        g_test_add_func("/relay-udp/max-sessions", test_max_sessions);
        g_test_add_func("/relay-udp/wildcard-reply-source-v4", test_wildcard_reply_source_v4);
        g_test_add_func("/relay-udp/wildcard-reply-source-v6", test_wildcard_reply_source_v6);
        g_test_add_func("/relay-udp/large-datagrams-v4", test_large_datagrams_v4);
        g_test_add_func("/relay-udp/large-datagrams-v6", test_large_datagrams_v6);
        g_test_add_func("/relay-udp/counters", test_counters);
        g_test_add_func("/relay-udp/many-sessions", test_many_sessions);
        g_test_add_func("/relay-udp/bursts-v4", test_bursts_v4);
        g_test_add_func("/relay-udp/bursts-v6", test_bursts_v6);
        g_test_add_func("/relay-udp/bursts-wildcard", test_bursts_wildcard);
        g_test_add_func("/relay-udp/guest-unreachable", test_guest_unreachable);
        g_test_add_func("/relay-udp/set-target", test_set_target);
        g_test_add_func("/relay-udp/out-of-fds", test_out_of_fds);
        g_test_add_func("/relay-udp/flood-polled", test_flood_polled);
        g_test_add_func("/relay-udp/flood-guest-gone", test_flood_guest_gone);
        g_test_add_func("/relay-udp/new-errors", test_new_errors);

        return g_test_run();
}
