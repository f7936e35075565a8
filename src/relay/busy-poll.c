/* Polling without sleeping for a moment after the loop had work.
 *
 * A relay under request/response load spends much of its time between a burst of work and the
 * next datagram asleep in epoll_wait(), and every wakeup costs latency: the scheduler, and on a
 * VM the hypervisor. With 16 UDP clients in a closed loop (relaybench's udp_rr) the relay's core
 * sat 20% idle while the load waited on it. So after an iteration that found events the loop
 * keeps polling with a zero timeout (an active ev_idle watcher makes libev do that) until an
 * event arrives or the window runs out. Measured through relay-standalone, alternating runs:
 * 136-138k round trips/s without, 156-166k with a 30 us window (10 us: 139k, 50 us: 151k;
 * nginx: 140k); through portpubd in relaybench run 173935, 0.50x direct against nginx's 0.45x.
 *
 * A window that runs out was CPU spent for nothing, so traffic too sparse to benefit must not
 * pay it each time: after each miss the next 1, 2, 4 ... 64 busy iterations do not open a
 * window; a hit opens them all again. An idle daemon never polls: a window only follows work. */
#include "busy-poll.h"

#include "macro.h"
#include "time-util.h"

#define BUSY_POLL_MAX_SKIP 64u

static void busy_poll_idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
        BusyPoll *b = container_of(w, BusyPoll, idle);
        /* Not ev_time(): a wall clock set back inside a window would keep the loop spinning. */
        ev_tstamp now = monotonic_sec();

        /* Only iterations without events get here. */
        if (b->deadline == 0.) {
                b->deadline = now + b->window;
                return;
        }
        if (now < b->deadline)
                return;
        ev_ref(loop);
        ev_idle_stop(loop, w);
        b->misses++;
        backoff_miss(&b->backoff, BUSY_POLL_MAX_SKIP);
}

/* Runs after every poll, before the callbacks of what it found (the idle watcher is among them
 * when nothing else was found). Another ev_check watcher on the loop would be pending here too
 * and count as work: this must be the only one (portpubd's other hooks are ev_prepare). */
static void busy_poll_check_cb(struct ev_loop *loop, ev_check *w, int revents) {
        BusyPoll *b = container_of(w, BusyPoll, check);

        if (ev_pending_count(loop) <= (unsigned) !!ev_is_pending(&b->idle))
                return;
        b->deadline = 0.;
        if (ev_is_active(&b->idle)) {
                b->hits++;
                backoff_hit(&b->backoff);
                return;
        }
        if (backoff_skip(&b->backoff))
                return;
        ev_idle_start(loop, &b->idle);
        /* A window does not keep ev_run() from returning. */
        ev_unref(loop);
}

void busy_poll_start(BusyPoll *b, struct ev_loop *loop, ev_tstamp window) {
        *b = (BusyPoll){ .loop = loop, .window = window };
        if (window <= 0.)
                return;
        ev_check_init(&b->check, busy_poll_check_cb);
        ev_idle_init(&b->idle, busy_poll_idle_cb);
        ev_check_start(loop, &b->check);
        ev_unref(loop);
}

void busy_poll_stop(BusyPoll *b) {
        if (!b->loop || b->window <= 0.)
                return;
        ev_ref(b->loop);
        ev_check_stop(b->loop, &b->check);
        if (ev_is_active(&b->idle)) {
                ev_ref(b->loop);
                ev_idle_stop(b->loop, &b->idle);
        }
        b->loop = NULL;
}
