/* The varlink face of the core: io.portpub.publisher1 */
#pragma once

#include "manager.h"
#include "varlink.h"

typedef struct Publisher1 Publisher1;

/* Adds io.portpub.publisher1 to server and ties the server's connections to callers of m. */
int publisher1_new(Publisher1 **ret, Manager *m, VarlinkServer *server);
/* Free the server first: it cancels the calls this face is working on. Accepts NULL. */
Publisher1 *publisher1_free(Publisher1 *f);
