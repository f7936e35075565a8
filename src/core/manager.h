/* The manager: sandboxes, published ports, limits, and the seams both faces use
 *
 * Nothing here knows D-Bus or varlink. A face parses its wire format into the plain values
 * below, turns its connection into a Caller, and hands the manager a request; the manager
 * validates, authorizes (Authorizer), resolves guest addresses (GuestResolver), binds, builds
 * relays, commits, announces (subscribers) and completes the request through its callback.
 * Identity is a port's serial and a sandbox's id; object paths are a face's business. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uthash.h>

#include "authorizer.h"
#include "caller.h"
#include "guest-resolver.h"
#include "relay-tcp.h"
#include "relay-udp.h"
#include "relay.h"
#include "sockaddr-util.h"

#define SANDBOX_ID_MAX 64
#define MANAGER_PORTS_PER_CALL_MAX 1024U
#define MANAGER_PORTS_MAX 65536U
#define MANAGER_PORTS_PER_SANDBOX_MAX 65536U
#define MANAGER_SANDBOXES_MAX 4096U
#define MANAGER_MAX_SESSIONS_DEFAULT 4096U
#define MANAGER_MAX_SESSIONS_MAX 1048576U
/* Requests waiting for the Authorizer or the GuestResolver, over all callers. */
#define MANAGER_REQUESTS_PENDING_MAX 1024U
#define PORT_LISTENERS_MAX 2

/* Expected outcomes of manager calls: positive, to be mapped by the face. Negative values are
 * real failures (-errno). */
enum {
        MANAGER_OK = 0,
        MANAGER_E_INVALID = 1,
        MANAGER_E_NO_SUCH_SANDBOX,
        MANAGER_E_NO_SUCH_PORT,
        MANAGER_E_PORT_IN_USE,
        MANAGER_E_ADDRESS_NOT_AVAILABLE,
        MANAGER_E_PERMISSION_DENIED,
        MANAGER_E_NO_GUEST_ADDRESS,
        MANAGER_E_LIMIT_EXCEEDED,
        MANAGER_E_ACCESS_DENIED,
        MANAGER_E_NOT_SUPPORTED,
        MANAGER_E_FAILED, /* a port could not be set up after binding; the message says why */
};

typedef struct Manager Manager;
typedef struct Sandbox Sandbox;
typedef struct Port Port;
typedef struct ManagerRequest ManagerRequest;
typedef struct ManagerSubscriber ManagerSubscriber;

/* What a caller asks to publish, validated: host_address is normalized ("", "*", or the
 * canonical text of a literal address). */
typedef struct PortSpec {
        int proto; /* IPPROTO_TCP or IPPROTO_UDP */
        char host_address[INET6_ADDRSTRLEN];
        uint16_t host_port;
        uint16_t guest_port;
} PortSpec;

/* Why a request failed: a message that names the sandbox, the port and the reason, and the same
 * in parts for a face whose errors carry them (varlink's parameters). */
typedef struct ManagerError {
        char message[512];
        bool has_port;
        PortSpec port; /* the port the error is about, when has_port */
        char held_by[SANDBOX_ID_MAX + 1]; /* PORT_IN_USE: the sandbox holding it, or "" */
        /* MANAGER_E_INVALID: the argument at fault, as a path of the varlink contract's
         * field names ("ports[1].guestPort"), or "" when the face must tell. */
        char parameter[96];
} ManagerError;

typedef struct PortOptions {
        bool bind_to_caller;
        bool has_idle_timeout;
        uint64_t idle_timeout_usec;
        bool has_max_sessions;
        uint32_t max_sessions;
        RelayProxyProtocol proxy_protocol;
} PortOptions;

/* Why a port went away. */
typedef enum PortReason {
        PORT_REASON_REQUEST,
        PORT_REASON_SANDBOX_REMOVED,
        PORT_REASON_MACHINE_REMOVED,
        PORT_REASON_CALLER_VANISHED,
        PORT_REASON_SHUTDOWN,
} PortReason;

const char *port_reason_to_string(PortReason reason);

/* Events */

typedef enum ManagerEventType {
        MANAGER_EVENT_SANDBOX_NEW,
        MANAGER_EVENT_SANDBOX_REMOVED, /* after its ports' PORT_UNPUBLISHED, before it is freed */
        MANAGER_EVENT_SANDBOX_CHANGED, /* changed: SANDBOX_CHANGED_* */
        MANAGER_EVENT_PORT_PUBLISHED,
        MANAGER_EVENT_PORT_UNPUBLISHED, /* reason; before it is freed */
        MANAGER_EVENT_PORT_CHANGED, /* changed: PORT_CHANGED_* */
        MANAGER_EVENT_MANAGER_CHANGED, /* changed: MANAGER_CHANGED_* */
} ManagerEventType;

enum {
        SANDBOX_CHANGED_GUEST_ADDRESSES = 1 << 0,
        SANDBOX_CHANGED_PORTS = 1 << 1,
        SANDBOX_CHANGED_MACHINE = 1 << 2,
        SANDBOX_CHANGED_ACTIVE_SESSIONS = 1 << 3, /* coalesced: at most once a second */
};

enum {
        PORT_CHANGED_STATE = 1 << 0, /* State and LastError */
        PORT_CHANGED_GUEST_ADDRESS = 1 << 1,
        PORT_CHANGED_ACTIVE_SESSIONS = 1 << 2, /* coalesced: at most once a second */
};

enum {
        MANAGER_CHANGED_COUNTS = 1 << 0, /* number of sandboxes or ports */
        MANAGER_CHANGED_ACTIVE_SESSIONS = 1 << 1, /* coalesced: at most once a second */
};

typedef struct ManagerEvent {
        ManagerEventType type;
        Sandbox *sandbox; /* every sandbox and port event */
        Port *port; /* port events */
        unsigned changed;
        PortReason reason; /* PORT_UNPUBLISHED */
} ManagerEvent;

/* Called for every event, in the order things happened. A subscriber must not free the manager,
 * nor subscribe or unsubscribe from inside the callback. */
typedef void (*manager_event_cb)(Manager *m, const ManagerEvent *event, void *userdata);

int manager_subscribe(Manager *m, manager_event_cb cb, void *userdata, ManagerSubscriber **ret);
/* Accepts NULL; returns NULL. */
ManagerSubscriber *manager_unsubscribe(ManagerSubscriber *s);

/* Requests: publish, unpublish, remove a sandbox, set its guest addresses. */

typedef enum ManagerRequestType {
        MANAGER_REQUEST_PUBLISH,
        MANAGER_REQUEST_UNPUBLISH,
        MANAGER_REQUEST_REMOVE_SANDBOX,
        MANAGER_REQUEST_SET_GUEST_ADDRESSES,
} ManagerRequestType;

typedef struct ManagerResult {
        int r; /* MANAGER_OK, MANAGER_E_* (error.message says why) or -errno */
        ManagerError error;
        /* MANAGER_REQUEST_PUBLISH on success: the sandbox, and ports[i] for specs[i]. Valid for
         * the duration of the callback. */
        Sandbox *sandbox;
        Port **ports;
        size_t n_ports;
} ManagerResult;

typedef void (*manager_request_done_t)(ManagerRequest *req, const ManagerResult *result,
                                       void *userdata);

/* The arguments a face fills in before manager_request_start(); the request owns them. */
typedef struct ManagerRequestArgs {
        char *sandbox_id;
        /* PUBLISH: AF_UNSPEC both for "keep the sandbox's addresses". SET_GUEST_ADDRESSES: the
         * new addresses. */
        SockaddrUnion guest4, guest6;
        PortSpec *specs; /* PUBLISH, UNPUBLISH */
        size_t n_specs;
        PortOptions options; /* PUBLISH */
        bool interactive; /* the caller allows interactive authorization */
        bool machine; /* set by the core: the GuestResolver gave guest4/guest6 */
} ManagerRequestArgs;

/* A request for caller (referenced). done is called exactly once, unless the request is
 * cancelled first; it may be called before manager_request_start() returns. */
int manager_request_new(ManagerRequest **ret, Manager *m, ManagerRequestType type, Caller *caller,
                        manager_request_done_t done, void *userdata);
ManagerRequestArgs *manager_request_args(ManagerRequest *req);
/* Validates, authorizes, resolves and carries the request out. The request is the manager's
 * from here on: it is freed after done returns or when cancelled. */
void manager_request_start(ManagerRequest *req);
/* Forgets a pending request without calling done: the face that made it is going away. Nothing
 * the request would have changed is changed. */
void manager_request_cancel(ManagerRequest *req);

/* The caller's connection went away: its pending requests are cancelled, and the ports it
 * published with BindToCaller are unpublished (reason caller-vanished); nothing else of their
 * sandboxes changes. */
void manager_caller_gone(Manager *m, Caller *c);

/* Objects */

struct Port {
        Manager *manager;
        Sandbox *sandbox;
        uint64_t serial;
        const char *sandbox_id; /* sandbox->id */
        const char *protocol; /* "tcp" or "udp" */
        int proto;
        char *host_address;
        uint16_t host_port;
        uint16_t guest_port;
        char **listen_addresses; /* NULL-terminated */
        SockaddrUnion listen[PORT_LISTENERS_MAX];
        size_t n_listen;

        RelayStats stats;
        TcpRelay *tcp;
        UdpRelay *udp;
        RelayState state;
        char *last_error;
        bool failed; /* could not be bound again after a restart; retried */
        ev_timer retry;
        double retry_delay;

        uint64_t idle_timeout_usec;
        uint32_t max_sessions;
        const char *proxy_protocol;
        RelayProxyProtocol proxy;
        bool bind_to_caller;
        Caller *caller; /* bind_to_caller: the port goes when this caller does */
        bool linked; /* in the manager's tables: published */

        uint64_t active_announced; /* ActiveSessions as last announced */
        uint64_t loop_mark; /* the relay cycle check's visit mark */
        char key[48];
        UT_hash_handle hh; /* manager->ports, by key */
        UT_hash_handle hh_serial; /* manager->ports_by_serial */
        Port *sandbox_next, *sandbox_prev;
};

struct Sandbox {
        Manager *manager;
        char *id;
        SockaddrUnion guest4, guest6; /* AF_UNSPEC when absent */
        uint32_t owner;
        bool machine;
        Port *ports;
        uint32_t n_ports;
        uint64_t active_announced;
        UT_hash_handle hh;
};

int manager_new(Manager **ret, struct ev_loop *loop);
Manager *manager_free(Manager *m);

/* Both are borrowed and must outlive the manager. NULL authorizer: every request is denied. NULL
 * resolver: a new sandbox without guest addresses gets MANAGER_E_NO_GUEST_ADDRESS. */
void manager_set_authorizer(Manager *m, Authorizer *a);
void manager_set_guest_resolver(Manager *m, GuestResolver *r);
void manager_set_defaults(Manager *m, uint32_t max_sessions, uint64_t udp_idle_timeout_usec);
/* Keeps the publications in path (JSON, see state.c), rewritten after every change. NULL:
 * none. */
int manager_set_state_file(Manager *m, const char *path);
/* Publishes again what the state file holds; a file that cannot be read or used is set aside
 * (renamed STATE.corrupt-<UTC time>). Returns -errno only when out of memory. */
int manager_restore_state(Manager *m);
/* The same from text (tests, fuzzing): > 0 when the text is unusable as a whole (why says why),
 * 0 when what was valid was restored. */
int manager_restore_state_text(Manager *m, const char *text, size_t size, char *why, size_t why_size);
/* Calls cb once for every Caller that caller-bound ports hold (after a restore: the callers
 * named in the state file, which the face must find on its bus or let go with
 * manager_caller_gone()). */
void manager_foreach_bound_caller(Manager *m, void (*cb)(Caller *c, void *userdata), void *userdata);
/* After a restore: asks the GuestResolver about every machine-bound sandbox and removes those
 * whose machine it does not know (reason machine-removed). */
void manager_recheck_machines(Manager *m);

/* The machine registry says machine id is gone: a sandbox of that id whose addresses came from
 * it is removed (reason machine-removed). Returns whether one was. */
bool manager_machine_removed(Manager *m, const char *id);

/* Unpublishes everything with the given reason (e.g. shutdown), without asking anyone. */
void manager_remove_all(Manager *m, PortReason reason);

const char *manager_result_to_string(int r);

bool sandbox_id_is_valid(const char *id);
/* Parses one guest address into *guest4 or *guest6; fails on a second one of the same family. */
int manager_parse_guest_address(const char *s, SockaddrUnion *guest4, SockaddrUnion *guest6,
                                ManagerError *e);
/* Parses and normalizes protocol/host address/ports into spec. */
int manager_parse_port_spec(const char *protocol, const char *host_address, uint16_t host_port,
                            uint16_t guest_port, bool need_guest_port, PortSpec *spec,
                            ManagerError *e);
/* "ProxyProtocol" values: "", "v1", "v2". */
int manager_parse_proxy_protocol(const char *s, RelayProxyProtocol *ret);

/* Lookups and iterators: no face walks the tables itself. */
Sandbox *manager_find_sandbox(Manager *m, const char *id);
Port *manager_find_port(Manager *m, int proto, const char *host_address, uint16_t host_port);
Port *manager_find_port_by_serial(Manager *m, uint64_t serial);

uint32_t manager_n_sandboxes(const Manager *m);
uint32_t manager_n_ports(const Manager *m);
Sandbox *manager_first_sandbox(Manager *m);
Sandbox *sandbox_next(Sandbox *s);
Port *manager_first_port(Manager *m);
Port *port_next(Port *p);
Port *sandbox_first_port(Sandbox *s);
Port *port_next_in_sandbox(Port *p);

#define MANAGER_FOREACH_SANDBOX(s, m)                                                              \
        for (Sandbox *s = manager_first_sandbox(m); s; s = sandbox_next(s))
#define MANAGER_FOREACH_PORT(p, m) for (Port *p = manager_first_port(m); p; p = port_next(p))
#define SANDBOX_FOREACH_PORT(p, s)                                                                 \
        for (Port *p = sandbox_first_port(s); p; p = port_next_in_sandbox(p))

const char *manager_version(const Manager *m);
uint32_t manager_default_max_sessions(const Manager *m);
uint64_t manager_default_udp_idle_timeout_usec(const Manager *m);
uint64_t manager_active_sessions(Manager *m);
uint64_t manager_total_sessions(Manager *m);
uint64_t sandbox_active_sessions(Sandbox *s);
/* The address new sessions of this port go to ("" when there is none). */
const char *port_guest_address(Port *p, char *buf, size_t size);
/* "listening", "paused" (at MaxSessions or out of fds) or "failed" (not bound again after a
 * restart; LastError says why). */
const char *port_state(const Port *p);

/* Test hook: the n-th relay the manager builds from now on (1 = the next) fails as if the kernel
 * had refused, so that tests can show a failure after binding changes nothing. 0: off. */
void manager_set_fail_relay(Manager *m, unsigned n);
