/* Tests for the bus glue: sd-bus connections driven by BusEv on a real libev loop */

/*
 * Each test starts its own dbus-daemon (--session --nofork, so the PID we get is the daemon's
 * and the test can kill it) and opens two sd-bus connections to it, "server" and "client", both
 * driven by BusEv on one libev loop and nothing else: a call between them can only complete if
 * neither side ever blocks the loop, since the other side is served by the same loop. A
 * heartbeat timer records the longest gap between two turns of the loop. Every wait runs the
 * loop with an ev_timer guard that ends it.
 */

#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus-ev.h"

#define TEST_PATH "/io/portpub/Test"
#define TEST_IFACE "io.portpub.Test"
#define GUARD 10.0 /* s, for anything that should take milliseconds */
#define HEARTBEAT 0.01 /* s */
#define MAX_GAP_USEC (250 * G_TIME_SPAN_MILLISECOND)
#define CALL_TIMEOUT_USEC (200 * G_TIME_SPAN_MILLISECOND)

G_DEFINE_AUTOPTR_CLEANUP_FUNC(sd_bus_slot, sd_bus_slot_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(sd_bus_message, sd_bus_message_unref)

typedef struct Fixture {
        struct ev_loop *loop;
        GPid daemon;
        char *address;

        sd_bus *server, *client;
        BusEv *server_ev, *client_ev;
        sd_bus_slot *vtable_slot;
        sd_bus_message *unanswered; /* a call the server keeps without replying */
        const char *server_name;

        ev_timer heartbeat;
        gint64 last_beat, max_gap;

        unsigned lost_server, lost_client;
        int lost_server_error, lost_client_error;

        /* the call under test */
        bool replied;
        char *reply;
        char *error_name;
        int error_errno;
        gint64 called_at, replied_at;
} Fixture;

/* ---- the loop ------------------------------------------------------------------------------- */

static void heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        Fixture *f = w->data;
        gint64 now = g_get_monotonic_time();

        f->max_gap = MAX(f->max_gap, now - f->last_beat);
        f->last_beat = now;
}

typedef struct Wait {
        bool (*cond)(Fixture *f);
        Fixture *f;
} Wait;

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        ev_break(loop, EVBREAK_ONE);
}

/* Last before the loop sleeps, after BusEv's own ev_prepare (which has the default priority). */
static void check_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
        Wait *wait = w->data;

        if (wait->cond(wait->f))
                ev_break(loop, EVBREAK_ONE);
}

/* Runs the loop until cond(f) or timeout seconds; returns cond(f). */
static bool run_until(Fixture *f, bool (*cond)(Fixture *f), double timeout) {
        Wait wait = { .cond = cond, .f = f };
        ev_timer guard;
        ev_prepare check;

        ev_timer_init(&guard, guard_cb, timeout, 0.);
        ev_timer_start(f->loop, &guard);
        ev_prepare_init(&check, check_cb);
        ev_set_priority(&check, EV_MINPRI);
        check.data = &wait;
        ev_prepare_start(f->loop, &check);
        if (!cond(f))
                ev_run(f->loop, 0);
        ev_prepare_stop(f->loop, &check);
        ev_timer_stop(f->loop, &guard);
        return cond(f);
}

static bool never(Fixture *f) {
        return false;
}

/* ---- the private bus ------------------------------------------------------------------------ */

/* A test that aborts must not leave its dbus-daemon behind. */
static void die_with_parent(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void daemon_start(Fixture *f) {
        const char *argv[] = { "dbus-daemon", "--session", "--print-address", "--nofork", NULL };
        g_autoptr(GError) error = NULL;
        char buf[512];
        size_t n = 0;
        int out = -1;

        g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                 G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, die_with_parent,
                                 NULL, &f->daemon, NULL, &out, NULL, &error);
        g_assert_no_error(error);

        /* One line: the address. */
        while (n < sizeof buf - 1 && !memchr(buf, '\n', n)) {
                struct pollfd p = { .fd = out, .events = POLLIN };
                ssize_t k;

                g_assert_cmpint(poll(&p, 1, (int) (GUARD * 1000)), ==, 1);
                k = read(out, buf + n, sizeof buf - 1 - n);
                g_assert_cmpint(k, >, 0);
                n += (size_t) k;
        }
        close(out);
        buf[n] = 0;
        g_assert_nonnull(strchr(buf, '\n'));
        *strchr(buf, '\n') = 0;
        g_assert_cmpstr(buf, !=, "");
        f->address = g_strdup(buf);
}

/* Kills the daemon we started, by its PID, and reaps it. */
static void daemon_kill(Fixture *f) {
        int status;

        if (f->daemon <= 0)
                return;
        g_assert_cmpint(kill(f->daemon, SIGKILL), ==, 0);
        g_assert_cmpint(waitpid(f->daemon, &status, 0), ==, f->daemon);
        g_spawn_close_pid(f->daemon);
        f->daemon = 0;
}

static void on_lost(BusEv *b, int error, void *userdata) {
        Fixture *f = userdata;

        if (b == f->server_ev) {
                f->lost_server++;
                f->lost_server_error = error;
        } else {
                g_assert_true(b == f->client_ev);
                f->lost_client++;
                f->lost_client_error = error;
        }
}

static sd_bus *bus_open(Fixture *f) {
        sd_bus *bus = NULL;

        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        g_assert_cmpint(sd_bus_set_address(bus, f->address), >=, 0);
        g_assert_cmpint(sd_bus_set_bus_client(bus, 1), >=, 0);
        g_assert_cmpint(sd_bus_start(bus), >=, 0);
        return bus;
}

/* ---- the server's object -------------------------------------------------------------------- */

static int method_echo(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "s", s);
}

static int method_never(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Fixture *f = userdata;

        g_assert_null(f->unanswered);
        f->unanswered = sd_bus_message_ref(m);
        return 1;
}

static const sd_bus_vtable test_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Echo", "s", "s", method_echo, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Never", "", "", method_never, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static bool both_ready(Fixture *f) {
        return sd_bus_is_ready(f->server) > 0 && sd_bus_is_ready(f->client) > 0;
}

static void fixture_setup(Fixture *f) {
        f->loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f->loop);
        daemon_start(f);

        f->server = bus_open(f);
        f->client = bus_open(f);
        g_assert_cmpint(sd_bus_add_object_vtable(f->server, &f->vtable_slot, TEST_PATH, TEST_IFACE,
                                                 test_vtable, f),
                        >=, 0);
        g_assert_cmpint(bus_ev_new(&f->server_ev, f->loop, f->server, on_lost, f), ==, 0);
        g_assert_cmpint(bus_ev_new(&f->client_ev, f->loop, f->client, on_lost, f), ==, 0);

        ev_timer_init(&f->heartbeat, heartbeat_cb, HEARTBEAT, HEARTBEAT);
        f->heartbeat.data = f;
        f->last_beat = g_get_monotonic_time();
        ev_timer_start(f->loop, &f->heartbeat);

        /* Hello and its reply go through the loop, too: nothing here may wait for them. */
        g_assert_true(run_until(f, both_ready, GUARD));
        g_assert_cmpint(sd_bus_get_unique_name(f->server, &f->server_name), >=, 0);
        g_assert_cmpuint(f->lost_server + f->lost_client, ==, 0);
}

static void fixture_teardown(Fixture *f) {
        ev_timer_stop(f->loop, &f->heartbeat);
        f->unanswered = sd_bus_message_unref(f->unanswered);
        f->vtable_slot = sd_bus_slot_unref(f->vtable_slot);
        f->server_ev = bus_ev_free(f->server_ev);
        f->client_ev = bus_ev_free(f->client_ev);
        f->server = sd_bus_close_unref(f->server);
        f->client = sd_bus_close_unref(f->client);
        daemon_kill(f);
        ev_loop_destroy(f->loop);
        g_free(f->address);
        g_free(f->reply);
        g_free(f->error_name);
}

/* ---- the client's call ---------------------------------------------------------------------- */

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Fixture *f = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        const char *s;

        g_assert_false(f->replied);
        f->replied = true;
        f->replied_at = g_get_monotonic_time();
        if (e) {
                f->error_name = g_strdup(e->name);
                f->error_errno = sd_bus_message_get_errno(m);
        } else {
                g_assert_cmpint(sd_bus_message_read(m, "s", &s), >, 0);
                f->reply = g_strdup(s);
        }
        return 0;
}

static bool replied(Fixture *f) {
        return f->replied;
}

static void test_round_trip(void) {
        g_autoptr(sd_bus_slot) slot = NULL;
        Fixture f = {};

        fixture_setup(&f);
        f.called_at = g_get_monotonic_time();
        g_assert_cmpint(sd_bus_call_method_async(f.client, &slot, f.server_name, TEST_PATH,
                                                 TEST_IFACE, "Echo", on_reply, &f, "s", "hello"),
                        >=, 0);
        g_assert_true(run_until(&f, replied, GUARD));
        g_assert_null(f.error_name);
        g_assert_cmpstr(f.reply, ==, "hello");

        /* And a few more, back to back, while the heartbeat keeps beating. */
        for (unsigned i = 0; i < 20; i++) {
                g_autoptr(sd_bus_slot) s = NULL;
                g_autofree char *msg = g_strdup_printf("hello %u", i);

                f.replied = false;
                g_clear_pointer(&f.reply, g_free);
                g_assert_cmpint(sd_bus_call_method_async(f.client, &s, f.server_name, TEST_PATH,
                                                         TEST_IFACE, "Echo", on_reply, &f, "s", msg),
                                >=, 0);
                g_assert_true(run_until(&f, replied, GUARD));
                g_assert_cmpstr(f.reply, ==, msg);
        }
        run_until(&f, never, 5 * HEARTBEAT);

        g_test_message("longest gap between heartbeats: %.1f ms", (double) f.max_gap / 1000);
        g_assert_cmpint(f.max_gap, <, MAX_GAP_USEC);
        g_assert_cmpuint(f.lost_server + f.lost_client, ==, 0);
        fixture_teardown(&f);
}

static void test_call_timeout(void) {
        g_autoptr(sd_bus_message) m = NULL;
        g_autoptr(sd_bus_slot) slot = NULL;
        Fixture f = {};
        gint64 took;

        fixture_setup(&f);
        g_assert_cmpint(sd_bus_message_new_method_call(f.client, &m, f.server_name, TEST_PATH,
                                                       TEST_IFACE, "Never"),
                        >=, 0);
        /* Nothing arrives on either socket after the call is delivered, and without the
         * heartbeat nothing else wakes the loop: only BusEv's timer, armed from
         * sd_bus_get_timeout(), can make sd-bus notice the deadline. */
        ev_timer_stop(f.loop, &f.heartbeat);
        f.called_at = g_get_monotonic_time();
        g_assert_cmpint(sd_bus_call_async(f.client, &slot, m, on_reply, &f, CALL_TIMEOUT_USEC), >=,
                        0);
        g_assert_true(run_until(&f, replied, GUARD));
        took = f.replied_at - f.called_at;
        g_test_message("timed out after %.1f ms", (double) took / 1000);

        g_assert_nonnull(f.unanswered); /* the server got the call and kept quiet */
        g_assert_cmpstr(f.error_name, ==, SD_BUS_ERROR_NO_REPLY);
        g_assert_cmpint(f.error_errno, ==, ETIMEDOUT);
        g_assert_cmpint(took, >=, CALL_TIMEOUT_USEC);
        g_assert_cmpint(took, <, CALL_TIMEOUT_USEC + 500 * G_TIME_SPAN_MILLISECOND);
        g_assert_cmpuint(f.lost_server + f.lost_client, ==, 0);
        fixture_teardown(&f);
}

static bool both_lost(Fixture *f) {
        return f->lost_server > 0 && f->lost_client > 0;
}

static void test_bus_lost(void) {
        Fixture f = {};
        unsigned iterations;

        fixture_setup(&f);
        daemon_kill(&f);
        g_assert_true(run_until(&f, both_lost, GUARD));
        g_test_message("lost: server %d (%s), client %d (%s)", f.lost_server_error,
                       g_strerror(-f.lost_server_error), f.lost_client_error,
                       g_strerror(-f.lost_client_error));
        g_assert_cmpint(f.lost_server_error, <, 0);
        g_assert_cmpint(f.lost_client_error, <, 0);

        /* Once: BusEv stopped its watchers, and the loop sleeps again (only the heartbeat). */
        iterations = ev_iteration(f.loop);
        run_until(&f, never, 20 * HEARTBEAT);
        g_assert_cmpuint(f.lost_server, ==, 1);
        g_assert_cmpuint(f.lost_client, ==, 1);
        g_assert_cmpuint(ev_iteration(f.loop) - iterations, <, 200);
        fixture_teardown(&f);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/bus-ev/round-trip", test_round_trip);
        g_test_add_func("/bus-ev/call-timeout", test_call_timeout);
        g_test_add_func("/bus-ev/bus-lost", test_bus_lost);
        return g_test_run();
}
