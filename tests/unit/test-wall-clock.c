/* Deadlines of the data plane: stepping the wall clock moves none of them */

/*
 * A test cannot set the real clock, so this one sets the wall clock of its own process: it
 * defines clock_gettime() and gettimeofday(), which take precedence over glibc's for the
 * executable and for every library it loads (libev reads the time through gettimeofday(), the
 * relays' time-util.h through clock_gettime()). The wall clocks (CLOCK_REALTIME and friends,
 * gettimeofday()) return the kernel's value plus wall_offset; CLOCK_MONOTONIC is passed through
 * untouched. /wall-clock/libev-sees-the-step shows that libev's idea of the time follows the
 * step, so the other tests would catch a deadline measured on ev_now() or ev_time().
 *
 * The step is an hour backwards: a deadline kept on the wall clock then lies an hour in the
 * future, which these tests would see as a window that never closes or a connection that never
 * times out. Every wait is bounded by an ev_timer, which libev runs on CLOCK_MONOTONIC.
 */

#include <fcntl.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "busy-poll.h"
#include "relay-tcp.h"
#include "relay-udp.h"

#define STEP_SEC (-3600)
#define IDLE_TIMEOUT_USEC 1000000
#define WINDOW 0.05
#define GUARD 5.0

/* ---- the fake wall clock -------------------------------------------------------------------- */

static gint wall_offset; /* seconds added to the wall clock */
/* When set, the first clock read of any kind that finds this window open steps the wall clock. */
static BusyPoll *step_inside_window;
static gint stepped_inside_window;

static bool clock_is_wall(clockid_t id) {
        return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE || id == CLOCK_TAI ||
               id == CLOCK_REALTIME_ALARM;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
        long r;

        if (step_inside_window && step_inside_window->deadline != 0.) {
                step_inside_window = NULL;
                g_atomic_int_set(&wall_offset, STEP_SEC);
                g_atomic_int_set(&stepped_inside_window, 1);
        }

        r = syscall(SYS_clock_gettime, id, ts);
        if (r == 0 && clock_is_wall(id))
                ts->tv_sec += g_atomic_int_get(&wall_offset);
        return (int) r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
        struct timespec ts;

        if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
                return -1;
        *tv = (struct timeval){ .tv_sec = ts.tv_sec, .tv_usec = ts.tv_nsec / 1000 };
        return 0;
}

static void wall_step(int sec) {
        g_atomic_int_set(&wall_offset, sec);
}

static double monotonic_sec(void) {
        return (double) g_get_monotonic_time() / G_USEC_PER_SEC;
}

static double real_wall_sec(void) {
        struct timespec ts;

        g_assert_cmpint(syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts), ==, 0);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- a loop that runs until a condition, bounded ------------------------------------------ */

typedef struct Wait {
        bool (*cond)(void *data);
        void *data;
} Wait;

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        ev_break(loop, EVBREAK_ONE);
}

/* Last before the loop sleeps (after the relays' reapers): the condition may have come true
 * in a callback of this iteration, and then there is nothing left to wake the loop. */
static void check_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
        Wait *wait = w->data;

        if (wait->cond(wait->data))
                ev_break(loop, EVBREAK_ONE);
}

static bool run_until(struct ev_loop *loop, bool (*cond)(void *data), void *data, double timeout) {
        Wait wait = { .cond = cond, .data = data };
        ev_timer guard;
        ev_prepare check;

        ev_timer_init(&guard, guard_cb, timeout, 0.);
        ev_timer_start(loop, &guard);
        ev_prepare_init(&check, check_cb);
        ev_set_priority(&check, EV_MINPRI);
        check.data = &wait;
        ev_prepare_start(loop, &check);
        if (!cond(data))
                ev_run(loop, 0);
        ev_prepare_stop(loop, &check);
        ev_timer_stop(loop, &guard);
        return cond(data);
}

static bool never(void *data) {
        return false;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_libev_sees_the_step(void) {
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        double mono = monotonic_sec();

        g_assert_nonnull(loop);
        wall_step(STEP_SEC);
        g_assert_cmpfloat(ev_time() - real_wall_sec(), <, STEP_SEC + 60);
        /* libev reads the wall clock into ev_now() at least every half second. */
        run_until(loop, never, NULL, 0.6);
        g_assert_cmpfloat(ev_now(loop) - real_wall_sec(), <, STEP_SEC + 60);
        g_assert_cmpfloat(monotonic_sec() - mono, >=, 0.59);
        g_assert_cmpfloat(monotonic_sec() - mono, <, 60);
        wall_step(0);
        ev_loop_destroy(loop);
}

typedef struct PollFixture {
        struct ev_loop *loop;
        BusyPoll b;
        int pipe[2];
        ev_io io;
        bool worked;
} PollFixture;

static void poll_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        PollFixture *f = w->data;
        char c;

        g_assert_cmpint(read(f->pipe[0], &c, 1), ==, 1);
        f->worked = true;
}

static bool worked(void *data) {
        return ((PollFixture *) data)->worked;
}

static void test_busy_poll_window(void) {
        PollFixture f = {};
        gint64 start, took;
        unsigned polls = 0;

        f.loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f.loop);
        g_assert_cmpint(pipe2(f.pipe, O_CLOEXEC | O_NONBLOCK), ==, 0);
        ev_io_init(&f.io, poll_io_cb, f.pipe[0], EV_READ);
        f.io.data = &f;
        ev_io_start(f.loop, &f.io);
        busy_poll_start(&f.b, f.loop, WINDOW);

        g_assert_cmpint(write(f.pipe[1], "x", 1), ==, 1);
        g_assert_true(run_until(f.loop, worked, &f, GUARD));
        g_assert_true(ev_is_active(&f.b.idle));

        /* The window opens at the next empty poll; the clock steps back while it is open. */
        step_inside_window = &f.b;
        start = g_get_monotonic_time();
        while (ev_is_active(&f.b.idle)) {
                ev_run(f.loop, EVRUN_NOWAIT);
                polls++;
                took = g_get_monotonic_time() - start;
                if (took > 20 * WINDOW * G_USEC_PER_SEC)
                        break; /* bounded */
        }
        took = g_get_monotonic_time() - start;
        g_test_message("window closed after %u polls, %.1f ms", polls, (double) took / 1000);
        g_assert_true(g_atomic_int_get(&stepped_inside_window));
        g_assert_false(ev_is_active(&f.b.idle));
        g_assert_cmpuint(f.b.misses, ==, 1);
        g_assert_cmpint(took, >=, (gint64) (WINDOW * G_USEC_PER_SEC * 0.9));
        g_assert_cmpint(took, <, (gint64) (20 * WINDOW * G_USEC_PER_SEC));

        step_inside_window = NULL;
        wall_step(0);
        busy_poll_stop(&f.b);
        ev_io_stop(f.loop, &f.io);
        close(f.pipe[0]);
        close(f.pipe[1]);
        ev_loop_destroy(f.loop);
}

typedef struct RelayFixture {
        struct ev_loop *loop;
        RelayStats stats;
        int guest_listener, guest, client;
        SockaddrUnion relay_addr, guest_addr;
        char buf[16];
        bool got_ping;
} RelayFixture;

static int bound_socket(int type, SockaddrUnion *ret) {
        SockaddrUnion a = {};
        socklen_t len = sizeof a;
        int fd;

        g_assert_cmpint(sockaddr_parse_ip("127.0.0.1", &a), ==, 0);
        fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(bind(fd, &a.sa, sockaddr_len(&a)), ==, 0);
        if (type == SOCK_STREAM)
                g_assert_cmpint(listen(fd, 16), ==, 0);
        g_assert_cmpint(getsockname(fd, &a.sa, &len), ==, 0);
        *ret = a;
        return fd;
}

static RelayConfig config_for(const SockaddrUnion *guest) {
        return (RelayConfig){
                .target = { .guest4 = *guest, .port = sockaddr_port(guest) },
                .idle_timeout_usec = IDLE_TIMEOUT_USEC,
        };
}

/* The guest got "ping" through the relay. */
static bool guest_got_ping(void *data) {
        RelayFixture *f = data;
        ssize_t n;

        if (f->got_ping)
                return true;
        if (f->guest < 0)
                f->guest = accept4(f->guest_listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (f->guest < 0)
                return false;
        n = recv(f->guest, f->buf, sizeof f->buf, MSG_DONTWAIT);
        f->got_ping = n == 4 && memcmp(f->buf, "ping", 4) == 0;
        return f->got_ping;
}

static bool no_sessions(void *data) {
        return ((RelayFixture *) data)->stats.active == 0;
}

/* Steps the wall clock back right after the last byte moved, then waits for the idle timeout,
 * which must still come after IDLE_TIMEOUT_USEC of CLOCK_MONOTONIC. */
static void wait_idle_timeout(RelayFixture *f) {
        double last, waited, timeout = (double) IDLE_TIMEOUT_USEC / G_USEC_PER_SEC;

        g_assert_cmpuint(f->stats.active, ==, 1);
        last = monotonic_sec();
        wall_step(STEP_SEC);
        g_assert_true(run_until(f->loop, no_sessions, f, GUARD));
        waited = monotonic_sec() - last;
        g_test_message("idle session closed after %.3f s", waited);
        g_assert_cmpfloat(waited, >=, timeout * 0.9);
        g_assert_cmpfloat(waited, <, timeout + 2.);
        g_assert_cmpuint(f->stats.failed, ==, 0);
        wall_step(0);
}

static void test_tcp_idle_timeout(void) {
        RelayFixture f = { .guest = -EBADF };
        RelayConfig config;
        TcpRelay *relay = NULL;
        int listener;

        f.loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f.loop);
        f.guest_listener = bound_socket(SOCK_STREAM, &f.guest_addr);
        listener = bound_socket(SOCK_STREAM, &f.relay_addr);
        config = config_for(&f.guest_addr);
        g_assert_cmpint(tcp_relay_new(&relay, f.loop, &listener, 1, &config, &f.stats, NULL, NULL),
                        ==, 0);

        f.client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(f.client, >=, 0);
        /* On loopback the kernel completes the handshake before the relay accepts. */
        g_assert_cmpint(connect(f.client, &f.relay_addr.sa, sockaddr_len(&f.relay_addr)), ==, 0);
        g_assert_cmpint(send(f.client, "ping", 4, MSG_NOSIGNAL), ==, 4);
        g_assert_true(run_until(f.loop, guest_got_ping, &f, GUARD));

        wait_idle_timeout(&f);
        /* An orderly close of an idle connection, not a reset. */
        g_assert_cmpint(recv(f.client, f.buf, sizeof f.buf, MSG_DONTWAIT), ==, 0);

        tcp_relay_free(relay);
        close(f.client);
        close(f.guest);
        close(f.guest_listener);
        ev_loop_destroy(f.loop);
}

static void test_udp_idle_timeout(void) {
        RelayFixture f = {};
        RelayConfig config;
        UdpRelay *relay = NULL;
        int listener;

        f.loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f.loop);
        f.guest_listener = -EBADF;
        f.guest = bound_socket(SOCK_DGRAM, &f.guest_addr);
        listener = bound_socket(SOCK_DGRAM, &f.relay_addr);
        config = config_for(&f.guest_addr);
        g_assert_cmpint(udp_relay_new(&relay, f.loop, &listener, 1, &config, &f.stats, NULL, NULL),
                        ==, 0);

        f.client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(f.client, >=, 0);
        g_assert_cmpint(sendto(f.client, "ping", 4, 0, &f.relay_addr.sa, sockaddr_len(&f.relay_addr)),
                        ==, 4);
        g_assert_true(run_until(f.loop, guest_got_ping, &f, GUARD));

        wait_idle_timeout(&f);

        udp_relay_free(relay);
        close(f.client);
        close(f.guest);
        ev_loop_destroy(f.loop);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/wall-clock/libev-sees-the-step", test_libev_sees_the_step);
        g_test_add_func("/wall-clock/busy-poll-window-ignores-step-back", test_busy_poll_window);
        g_test_add_func("/wall-clock/tcp-idle-timeout-ignores-step-back", test_tcp_idle_timeout);
        g_test_add_func("/wall-clock/udp-idle-timeout-ignores-step-back", test_udp_idle_timeout);
        return g_test_run();
}
