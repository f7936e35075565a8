/* A varlink server on a libev loop: framing, dispatch, org.varlink.service, limits
 *
 * varlink (varlink.org) is JSON over a unix stream socket, each message ended by a NUL byte.
 * This server reads calls ({"method": "iface.Method", "parameters": {...}, "oneway": bool,
 * "more": bool, "upgrade": bool}), dispatches them by interface to the handlers of the
 * interfaces added, and writes replies ({"parameters": {...}, "continues": bool} or
 * {"error": "iface.Name", "parameters": {...}}). Calls of one connection are answered in the
 * order they came, also when a handler answers later (pipelining); a call with "more" holds
 * the connection's later calls until its last reply. It implements org.varlink.service itself
 * (GetInfo, GetInterfaceDescription) and its errors. Nothing blocks the loop: every socket is
 * non-blocking, and a client that does not read its replies is dropped once its queue is full.
 * No threads. */
#pragma once

#include <ev.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* API.md, "Varlink": the limits a client cannot raise. */
#define VARLINK_MESSAGE_MAX (16U * 1024 * 1024) /* bytes of one message, its NUL included */
#define VARLINK_CONNECTIONS_MAX 4096U
#define VARLINK_CONNECTIONS_PER_UID_MAX 1024U
/* Replies queued for a client that does not read them, in bytes: past it the connection is
 * closed. */
#define VARLINK_OUTPUT_MAX (16U * 1024 * 1024)
/* Calls read from one connection and not yet answered (pipelining). Past it the server stops
 * reading that connection until replies go out. */
#define VARLINK_PENDING_CALLS_MAX 64U

/* The answer to a handler's negative return (or to a reply the server cannot send as asked):
 * org.varlink.service has no generic error, and a name of our own tells a client it met a
 * server-side failure rather than a problem with its call. */
#define VARLINK_ERROR_INTERNAL "io.portpub.varlink.InternalError"

typedef struct VarlinkServer VarlinkServer;
typedef struct VarlinkConnection VarlinkConnection;
typedef struct VarlinkCall VarlinkCall;

enum {
        VARLINK_CALL_ONEWAY = 1 << 0, /* no reply is sent, whatever the handler does */
        VARLINK_CALL_MORE = 1 << 1, /* the client wants replies with "continues": true */
};

/* A method handler. parameters is the call's "parameters" object (an empty object when the call
 * had none or null), borrowed for the duration of the handler's run: json_object_get() it to keep
 * it longer. The handler answers now or later with exactly one of varlink_call_reply(),
 * varlink_call_reply_error() (or the helpers below); with VARLINK_CALL_MORE it may send
 * varlink_call_reply_continue() before. A negative return (before the final reply) makes the
 * server answer with VARLINK_ERROR_INTERNAL and log it.
 *
 * Who owns a call (see also varlink_call_ref()):
 * - The server keeps a call alive for its handler side until that side is done with it: until
 *   its final reply was given (varlink_call_reply(), _reply_error(), _reply_invalid_parameter(),
 *   whatever they returned), or until its cancel callback returned. A handler that answers later
 *   keeps the bare pointer, needs no reference of its own, and must forget it at that point.
 * - If the connection goes away first, a call with a cancel callback gets it and is released
 *   after it returns; a call without one stays alive, detached from the connection, until the
 *   handler answers it: that answer returns -ESTALE and releases it. A handler that sets no
 *   cancel callback and never answers leaks its call.
 * - Cancel callbacks and the disconnected hook run from the loop (or varlink_server_free()),
 *   never inside a handler or a reply function; no reply function calls a handler either. */
typedef int (*varlink_method_t)(VarlinkCall *call, json_object *parameters, unsigned flags,
                                void *userdata);

typedef struct VarlinkMethod {
        const char *name; /* the method's name within its interface, e.g. "PublishPorts" */
        varlink_method_t handler;
} VarlinkMethod;

typedef struct VarlinkInterface {
        const char *name; /* e.g. "io.portpub.publisher1" */
        const char *description; /* the interface file's text, served as it is */
        const VarlinkMethod *methods; /* the methods this server implements */
        size_t n_methods;
} VarlinkInterface;

typedef struct VarlinkServerInfo {
        const char *vendor, *product, *version, *url;
} VarlinkServerInfo;

/* Connections come and go: a face ties per-connection state to them (e.g. a caller). */
typedef struct VarlinkConnectionHooks {
        /* After accept; a negative return refuses the connection. */
        int (*connected)(VarlinkConnection *c, void *userdata);
        /* Before the connection is freed; its pending calls were cancelled already. */
        void (*disconnected)(VarlinkConnection *c, void *userdata);
} VarlinkConnectionHooks;

int varlink_server_new(VarlinkServer **ret, struct ev_loop *loop, const VarlinkServerInfo *info);
/* Accepts NULL. Closes every connection (cancelling their calls) and listening socket; removes
 * the socket files it made (those still there: one another program put in its place stays).
 * Not from within one of the server's own callbacks. Detached calls (above) outlive it. */
VarlinkServer *varlink_server_free(VarlinkServer *s);

/* The interface's description must be a varlink interface file whose "interface" line names
 * it; methods in it but not in methods[] get MethodNotImplemented, names in neither
 * MethodNotFound. Everything iface points to is copied. -EINVAL for a malformed name or
 * description or a method in methods[] the description does not declare, -EEXIST for a name
 * already served (org.varlink.service included). */
int varlink_server_add_interface(VarlinkServer *s, const VarlinkInterface *iface, void *userdata);
void varlink_server_set_hooks(VarlinkServer *s, const VarlinkConnectionHooks *hooks, void *userdata);

/* Listens on a socket given (e.g. by systemd), as it is: the server owns it from now on, and
 * closes it when this fails. It must be a listening AF_UNIX stream socket; it is made
 * non-blocking and close-on-exec. */
int varlink_server_listen_fd(VarlinkServer *s, int fd);
/* Binds path (mode applied to the socket file) and listens. A stale socket file (nobody
 * accepts on it) is replaced; a live one is -EADDRINUSE: another daemon serves it. Anything
 * else at path is -EEXIST and left alone. The parent directory must exist. */
int varlink_server_listen_path(VarlinkServer *s, const char *path, mode_t mode);

/* Connections accepted and not yet freed. */
unsigned varlink_server_n_connections(const VarlinkServer *s);
/* Lowers the connection limits (0 keeps one); values above VARLINK_CONNECTIONS_MAX and
 * VARLINK_CONNECTIONS_PER_UID_MAX are clamped to them. For tests, which cannot always open
 * thousands of sockets. */
void varlink_server_set_connection_limits(VarlinkServer *s, unsigned max, unsigned per_uid_max);

/* The peer, from SO_PEERCRED at accept. A connection lives from its connected hook until its
 * disconnected hook returns. */
uid_t varlink_connection_uid(const VarlinkConnection *c);
pid_t varlink_connection_pid(const VarlinkConnection *c);
void varlink_connection_set_userdata(VarlinkConnection *c, void *userdata);
void *varlink_connection_get_userdata(const VarlinkConnection *c);
/* NULL once the call is detached from its connection or done. */
VarlinkConnection *varlink_call_connection(VarlinkCall *call);
/* "iface.Method" */
const char *varlink_call_method(const VarlinkCall *call);

/* For a holder that keeps a call past the point where the server lets go of it for the handler
 * side (above), e.g. to answer it twice safely (-ESTALE) or to look at it after its cancel
 * callback. unref accepts NULL and returns NULL. */
VarlinkCall *varlink_call_ref(VarlinkCall *call);
VarlinkCall *varlink_call_unref(VarlinkCall *call);

/* Replies take parameters (NULL: an empty object; else a json object): they consume the caller's
 * reference, also when they fail, as json_object_object_add() does. They return -ESTALE when the
 * connection is gone or the call was answered already, -EINVAL for a reply the call cannot have
 * (a continue without VARLINK_CALL_MORE: nothing is sent; a malformed error name or parameters
 * that are no object in a final reply: the client gets VARLINK_ERROR_INTERNAL instead), and
 * -ENOBUFS when this reply overflowed VARLINK_OUTPUT_MAX and the connection was closed. A call
 * the client made oneway is answered by nothing, but the handler may still call these. */
int varlink_call_reply(VarlinkCall *call, json_object *parameters);
int varlink_call_reply_continue(VarlinkCall *call, json_object *parameters);
int varlink_call_reply_error(VarlinkCall *call, const char *error, json_object *parameters);
/* org.varlink.service.InvalidParameter {"parameter": path}, e.g. "ports[1].hostAddress". */
int varlink_call_reply_invalid_parameter(VarlinkCall *call, const char *path);

/* A call answered later: cancel is called (instead of any reply) when the connection goes
 * away first; the call is freed after it returns (unless referenced). Set it before the
 * handler returns: on a call already detached it is never called. During the callback
 * varlink_call_connection() still returns the connection, and replies return -ESTALE. */
void varlink_call_set_cancel(VarlinkCall *call, void (*cancel)(VarlinkCall *call, void *userdata),
                             void *userdata);
