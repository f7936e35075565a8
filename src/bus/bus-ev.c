/* sd-bus driven by a libev loop
 *
 * sd-bus wants, before every sleep, to be asked which fd, which events and which absolute
 * CLOCK_MONOTONIC deadline it needs (sd_bus_get_fd(3)). An ev_prepare watcher runs right before
 * libev sleeps, after every other callback of the iteration, so it sees the write queue that
 * replies and signals emitted from relay callbacks left behind and arms EV_WRITE in time. The io
 * and timer watchers only call sd_bus_process() until it has nothing left to do. */
#include <poll.h>
#include <stdlib.h>

#include "bus-ev.h"
#include "log.h"
#include "macro.h"
#include "time-util.h"

/* Bounds the work done per wakeup so that relays get their turn on a busy bus; a non-empty queue
 * makes sd_bus_get_timeout() return 0, and the timer picks the rest up without sleeping. */
#define BUS_EV_PROCESS_MAX 64

struct BusEv {
        struct ev_loop *loop;
        sd_bus *bus;
        ev_io io;
        ev_timer timer;
        ev_prepare prepare;
        bus_ev_lost_t lost;
        void *userdata;
        int events;
        int fd;
};

static void bus_ev_stop(BusEv *b) {
        ev_io_stop(b->loop, &b->io);
        ev_timer_stop(b->loop, &b->timer);
        ev_prepare_stop(b->loop, &b->prepare);
}

static void bus_ev_process(BusEv *b) {
        for (unsigned i = 0; i < BUS_EV_PROCESS_MAX; i++) {
                int r = sd_bus_process(b->bus, NULL);
                if (r == 0)
                        return;
                if (r < 0) {
                        bus_ev_stop(b);
                        if (b->lost)
                                b->lost(b, r, b->userdata);
                        return;
                }
        }
}

static void bus_ev_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        bus_ev_process(w->data);
}

static void bus_ev_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        bus_ev_process(w->data);
}

static void bus_ev_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
        BusEv *b = w->data;
        uint64_t until, now;
        int events, fd, r;

        fd = sd_bus_get_fd(b->bus);
        r = sd_bus_get_events(b->bus);
        if (fd < 0 || r < 0) {
                /* Disconnected: let sd_bus_process() report it through the lost callback. */
                ev_timer_stop(loop, &b->timer);
                ev_timer_set(&b->timer, 0., 0.);
                ev_timer_start(loop, &b->timer);
                return;
        }
        events = ((r & POLLIN) ? EV_READ : 0) | ((r & POLLOUT) ? EV_WRITE : 0);
        if (events != b->events || fd != b->fd) {
                ev_io_stop(loop, &b->io);
                ev_io_set(&b->io, fd, events);
                if (events)
                        ev_io_start(loop, &b->io);
                b->events = events;
                b->fd = fd;
        }

        ev_timer_stop(loop, &b->timer);
        r = sd_bus_get_timeout(b->bus, &until);
        if (r > 0) {
                double after = 0.;

                now = monotonic_usec();
                /* Round up: waking a microsecond early would only spin once more. */
                if (until > now)
                        after = (double) (until - now + 999) / 1e6;
                ev_timer_set(&b->timer, after, 0.);
                ev_timer_start(loop, &b->timer);
        }
}

int bus_ev_new(BusEv **ret, struct ev_loop *loop, sd_bus *bus, bus_ev_lost_t lost, void *userdata) {
        BusEv *b;

        b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->loop = loop;
        b->bus = sd_bus_ref(bus);
        b->lost = lost;
        b->userdata = userdata;
        b->fd = -EBADF;
        ev_io_init(&b->io, bus_ev_io_cb, 0, 0);
        b->io.data = b;
        ev_timer_init(&b->timer, bus_ev_timer_cb, 0., 0.);
        b->timer.data = b;
        ev_prepare_init(&b->prepare, bus_ev_prepare_cb);
        b->prepare.data = b;
        ev_prepare_start(loop, &b->prepare);
        /* Run once right away: a freshly started bus has its Hello queued. */
        ev_timer_start(loop, &b->timer);
        *ret = b;
        return 0;
}

BusEv *bus_ev_free(BusEv *b) {
        if (!b)
                return NULL;
        bus_ev_stop(b);
        sd_bus_unref(b->bus);
        free(b);
        return NULL;
}
