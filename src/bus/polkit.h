/* The Authorizer that asks polkit, on the bus the daemon serves */
#pragma once

#include <systemd/sd-bus.h>

#include "authorizer.h"

/* A check that polkit does not answer fails after this long (denied, saying so); one that may
 * wait for a person to authenticate gets longer. */
#define POLKIT_TIMEOUT_USEC (25 * UINT64_C(1000000))
#define POLKIT_INTERACTIVE_TIMEOUT_USEC (300 * UINT64_C(1000000))

typedef struct PolkitAuthorizer PolkitAuthorizer;

int polkit_authorizer_new(PolkitAuthorizer **ret, sd_bus *bus);
Authorizer *polkit_authorizer_get(PolkitAuthorizer *pk);
/* For tests: every check, interactive or not, fails after usec without an answer. */
void polkit_authorizer_set_timeout(PolkitAuthorizer *pk, uint64_t usec);
/* Accepts NULL. The manager must have cancelled its checks first (manager_free() does). */
PolkitAuthorizer *polkit_authorizer_free(PolkitAuthorizer *pk);
