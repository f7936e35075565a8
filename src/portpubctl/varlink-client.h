/* A small blocking varlink client: one connection to a unix stream socket, JSON messages each
 * ended by a NUL byte, one call at a time, every wait bounded by a deadline
 *
 * Calls are {"method": ..., "parameters": {...}} with "more": true when asked; replies are
 * {"parameters": {...}, "continues": bool} or {"error": NAME, "parameters": {...}}. What this
 * reads is bounded: a message longer than VARLINK_CLIENT_MESSAGE_MAX (with its NUL) ends the
 * connection. The functions report nothing themselves: they return -errno, for the caller to
 * say what it was doing. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

/* As long as sd-bus waits for a method reply by default. */
#define VARLINK_CLIENT_TIMEOUT_USEC (25 * USEC_PER_SEC)
/* The daemon's own bound on one message (src/varlink/varlink.h). */
#define VARLINK_CLIENT_MESSAGE_MAX (16U * 1024 * 1024)
/* A deadline for varlink_client_read() that does not wait at all. */
#define VARLINK_CLIENT_NO_WAIT UINT64_C(0)
#define VARLINK_CLIENT_FOREVER UINT64_MAX

typedef struct VarlinkClient VarlinkClient;

/* json_object_object_add() that fails for a NULL value (an allocation that failed) instead of
 * adding null: takes value, also on failure; -ENOMEM. */
static inline int json_add(json_object *o, const char *key, json_object *value) {
        if (!value)
                return -ENOMEM;
        if (json_object_object_add(o, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

typedef struct VarlinkReply {
        json_object *message; /* owns what the fields below point to */
        json_object *parameters; /* an object, never NULL: {} when the message had none */
        const char *error; /* NULL for a reply, else the error's name */
        bool continues;
} VarlinkReply;

void varlink_reply_done(VarlinkReply *r);

/* Connects to the socket at path, waiting at most VARLINK_CLIENT_TIMEOUT_USEC. */
int varlink_client_connect(VarlinkClient **ret, const char *path);
VarlinkClient *varlink_client_free(VarlinkClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(VarlinkClient *, varlink_client_free);

/* For poll(): readable when a message (or the end of the connection) may be there. */
int varlink_client_fd(const VarlinkClient *c);

/* Sends a call; parameters (borrowed) may be NULL for {}. Waits until deadline (CLOCK_MONOTONIC
 * microseconds) at most for the socket to take it. */
int varlink_client_send(VarlinkClient *c, const char *method, json_object *parameters, bool more,
                        uint64_t deadline);

/* Reads the next message: 1 with *ret filled; 0 only with VARLINK_CLIENT_NO_WAIT, when no whole
 * message is there yet; -ECONNRESET when the server closed the connection, -ETIMEDOUT at the
 * deadline, -EMSGSIZE for a message too long, -EBADMSG for one that is no varlink message. */
int varlink_client_read(VarlinkClient *c, uint64_t deadline, VarlinkReply *ret);

/* Sends a call without "more" and reads its reply, within VARLINK_CLIENT_TIMEOUT_USEC. A
 * reply with "continues" is -EBADMSG. */
int varlink_client_call(VarlinkClient *c, const char *method, json_object *parameters,
                        VarlinkReply *ret);
