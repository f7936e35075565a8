/* sd-bus driven by a libev loop */
#pragma once

#include <ev.h>
#include <systemd/sd-bus.h>

typedef struct BusEv BusEv;

/* Called once when sd_bus_process() fails: the connection is gone. */
typedef void (*bus_ev_lost_t)(BusEv *b, int error, void *userdata);

int bus_ev_new(BusEv **ret, struct ev_loop *loop, sd_bus *bus, bus_ev_lost_t lost, void *userdata);
BusEv *bus_ev_free(BusEv *b);
