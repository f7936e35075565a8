/* busy-poll: after work the loop polls without sleeping for the window, then sleeps again;
 * windows that run out make later work open fewer of them; an idle loop never spins. */
#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include "busy-poll.h"

#define WINDOW 0.05 /* long enough that a loaded test machine cannot run past it unnoticed */
#define GUARD 0.3 /* the timer that ends an iteration that would otherwise sleep for ever */

typedef struct Fixture {
        struct ev_loop *loop;
        BusyPoll b;
        int pipe[2];
        ev_io io;
        ev_timer guard;
        unsigned reads;
} Fixture;

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        Fixture *f = w->data;
        char c;

        g_assert_cmpint(read(f->pipe[0], &c, 1), ==, 1);
        f->reads++;
}

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents) {
}

static void fixture_setup(Fixture *f) {
        f->loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f->loop);
        g_assert_cmpint(pipe2(f->pipe, O_CLOEXEC | O_NONBLOCK), ==, 0);
        ev_io_init(&f->io, io_cb, f->pipe[0], EV_READ);
        f->io.data = f;
        ev_io_start(f->loop, &f->io);
        ev_init(&f->guard, guard_cb);
        busy_poll_start(&f->b, f->loop, WINDOW);
}

static void fixture_teardown(Fixture *f) {
        busy_poll_stop(&f->b);
        ev_timer_stop(f->loop, &f->guard);
        ev_io_stop(f->loop, &f->io);
        close(f->pipe[0]);
        close(f->pipe[1]);
        ev_loop_destroy(f->loop);
}

/* One loop iteration, with the guard timer armed; returns how long it took. */
static double iterate(Fixture *f) {
        double t0 = ev_time();

        ev_timer_set(&f->guard, GUARD, 0.);
        ev_timer_start(f->loop, &f->guard);
        ev_run(f->loop, EVRUN_ONCE);
        ev_timer_stop(f->loop, &f->guard);
        return ev_time() - t0;
}

static void work(Fixture *f) {
        unsigned before = f->reads;

        g_assert_cmpint(write(f->pipe[1], "x", 1), ==, 1);
        iterate(f);
        g_assert_cmpuint(f->reads, ==, before + 1);
}

/* Iterations until the loop sleeps again; asserts that none of them slept and that the window
 * was kept. */
static unsigned spin_until_sleep(Fixture *f) {
        double start = ev_time(), took;
        unsigned n = 0;

        for (;;) {
                took = iterate(f);
                if (took >= GUARD / 2)
                        break;
                n++;
                g_assert_cmpfloat(ev_time() - start, <, 20 * WINDOW); /* bounded */
        }
        g_assert_cmpfloat(ev_time() - start, >=, WINDOW);
        return n;
}

static void test_idle_loop_sleeps(void) {
        Fixture f = {};

        fixture_setup(&f);
        /* Nothing happened before, so the loop slept until the guard timer; that timer was work,
         * and a window follows it. */
        g_assert_cmpfloat(iterate(&f), >=, GUARD / 2);
        g_assert_true(ev_is_active(&f.b.idle));
        fixture_teardown(&f);
}

static void test_window_after_work(void) {
        Fixture f = {};
        unsigned polls;

        fixture_setup(&f);
        work(&f);
        g_assert_true(ev_is_active(&f.b.idle));
        polls = spin_until_sleep(&f);
        g_test_message("%u polls without sleeping after one event", polls);
        g_assert_cmpuint(polls, >, 1);
        g_assert_cmpuint(f.b.misses, ==, 1);
        g_assert_false(ev_is_active(&f.b.idle));
        fixture_teardown(&f);
}

static void test_hit_keeps_polling(void) {
        Fixture f = {};

        fixture_setup(&f);
        work(&f);
        iterate(&f); /* an empty poll: the window starts */
        g_assert_cmpfloat(f.b.deadline, >, 0.);
        work(&f); /* work within it */
        g_assert_cmpuint(f.b.hits, ==, 1);
        g_assert_cmpuint(f.b.misses, ==, 0);
        g_assert_true(ev_is_active(&f.b.idle));
        spin_until_sleep(&f);
        fixture_teardown(&f);
}

static void test_misses_back_off(void) {
        Fixture f = {};

        fixture_setup(&f);
        /* Each window that runs out doubles the busy iterations that open none. The guard timer
         * that ends the sleep after a miss is work too, and uses up one of them. */
        work(&f);
        spin_until_sleep(&f);
        g_assert_cmpuint(f.b.misses, ==, 1);
        g_assert_cmpuint(f.b.backoff.length, ==, 1);
        g_assert_cmpuint(f.b.backoff.skip, ==, 0);

        work(&f);
        g_assert_true(ev_is_active(&f.b.idle));
        spin_until_sleep(&f);
        g_assert_cmpuint(f.b.misses, ==, 2);
        g_assert_cmpuint(f.b.backoff.length, ==, 2);
        g_assert_cmpuint(f.b.backoff.skip, ==, 1);

        work(&f); /* skipped: no window */
        g_assert_false(ev_is_active(&f.b.idle));
        g_assert_cmpuint(f.b.backoff.skip, ==, 0);

        /* The next work opens one, and work within it ends the back-off. */
        work(&f);
        g_assert_true(ev_is_active(&f.b.idle));
        iterate(&f);
        work(&f);
        g_assert_cmpuint(f.b.hits, ==, 1);
        g_assert_cmpuint(f.b.backoff.length, ==, 0);
        fixture_teardown(&f);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/busy-poll/idle-loop-sleeps", test_idle_loop_sleeps);
        g_test_add_func("/busy-poll/window-after-work", test_window_after_work);
        g_test_add_func("/busy-poll/hit-keeps-polling", test_hit_keeps_polling);
        g_test_add_func("/busy-poll/misses-back-off", test_misses_back_off);
        return g_test_run();
}
