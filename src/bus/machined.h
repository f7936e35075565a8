/* The GuestResolver that asks systemd-machined, and its MachineRemoved signals */
#pragma once

#include <systemd/sd-bus.h>

#include "manager.h"

/* A lookup that machined does not answer fails after this long. */
#define MACHINED_TIMEOUT_USEC (10 * UINT64_C(1000000))

typedef struct MachinedResolver MachinedResolver;

/* Asks machined on bus; from now on a MachineRemoved for a machine-bound sandbox of m removes
 * it. */
int machined_resolver_new(MachinedResolver **ret, sd_bus *bus, Manager *m);
GuestResolver *machined_resolver_get(MachinedResolver *mr);
/* Accepts NULL. The manager must have cancelled its lookups first (manager_free() does). */
MachinedResolver *machined_resolver_free(MachinedResolver *mr);
