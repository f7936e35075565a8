/* What the core's files share and no face may see */
#pragma once

#include "macro.h"
#include "manager.h"

struct ManagerSubscriber {
        Manager *manager;
        manager_event_cb cb;
        void *userdata;
        ManagerSubscriber *next, *prev;
};

struct Manager {
        struct ev_loop *loop;
        Sandbox *sandboxes;
        Port *ports;
        Port *ports_by_serial;
        uint32_t n_sandboxes;
        uint32_t n_ports;
        uint64_t next_serial;
        uint64_t total_sessions_gone; /* TotalSessions of ports no longer published */
        uint64_t loop_marks; /* last visit mark the relay cycle check handed out */
        uint32_t default_max_sessions;
        uint64_t default_udp_idle_timeout_usec;
        uint16_t unprivileged_port_start; /* net.ipv4.ip_unprivileged_port_start at start */

        ManagerSubscriber *subscribers;
        Authorizer *authorizer;
        GuestResolver *resolver;
        ManagerRequest *requests; /* started and not done: waiting for someone */
        unsigned n_requests;

        /* ActiveSessions announcements, at most once a second */
        ev_timer sessions_timer;
        double sessions_last; /* CLOCK_MONOTONIC seconds */
        uint64_t active_announced;

        unsigned fail_relay; /* test hook, manager_set_fail_relay() */
        char *state_file; /* NULL: none */
        ev_timer state_retry; /* writing it again after a failure */
        double state_retry_delay; /* seconds, 0 while the last write worked */
        struct MachineCheck *machine_checks; /* manager_recheck_machines() */
};

typedef struct BoundPort {
        int fds[PORT_LISTENERS_MAX];
        SockaddrUnion addrs[PORT_LISTENERS_MAX];
        size_t n;
} BoundPort;

/* Clears e, writes the message into it (when e is not NULL) and returns code. */
int manager_fail(ManagerError *e, int code, const char *format, ...) _printf_(3, 4);
/* The same about a port (held_by: the sandbox holding it, or NULL). */
int manager_fail_port(ManagerError *e, int code, const PortSpec *port, const char *held_by,
                      const char *format, ...) _printf_(5, 6);
/* The same about an argument: parameter is its path in the varlink contract's names. */
int manager_fail_parameter(ManagerError *e, int code, const char *parameter, const char *format, ...)
        _printf_(4, 5);
const char *port_proto_to_string(int proto);
void port_fill_target(Port *p, RelayTarget *t);
void manager_emit(Manager *m, const ManagerEvent *event);

/* manager.c: objects, for state.c */
int sandbox_new(Sandbox **ret, const char *id, uint32_t owner);
Sandbox *sandbox_free(Sandbox *s);
void sandbox_link(Manager *m, Sandbox *s);
/* b: the bound sockets, or NULL for a port not bound yet. */
int port_new(Port **ret, Manager *m, Sandbox *s, Caller *caller, uint64_t serial,
             const PortSpec *spec, const BoundPort *b, const PortOptions *o);
Port *port_free(Port *p);
void port_link(Manager *m, Sandbox *s, Port *p);
int port_build_relay(Port *p, BoundPort *b, const RelayTarget *target, RelayProxyProtocol proxy);
int port_bind_and_start(Port *p, ManagerError *e);
/* State failed with error as LastError, and a retry later. */
void port_fail(Port *p, const char *error);

/* bind.c */
void bound_port_close(BoundPort *b);
/* Binds the sockets of one spec; "" and "*" get the same port number on both families. */
int bind_spec(const PortSpec *spec, BoundPort *b);
/* Turns a bind's -errno into a result naming the port (and the sandbox holding it). */
int map_bind_error(Manager *m, const char *sandbox_id, const PortSpec *spec, int r, ManagerError *e);

/* cycle.c: fails when this call's ports (specs whose bound[].n > 0, of sandbox_id), or the ports
 * of s relaying to guest4/guest6 instead, would close a relay cycle. */
int check_loops(Manager *m, const char *sandbox_id, Sandbox *s, const SockaddrUnion *guest4,
                const SockaddrUnion *guest6, const PortSpec *specs, const BoundPort *bound,
                size_t n, ManagerError *e);

/* manager.c: carrying out a request that was validated and authorized. Synchronous. */
int manager_execute_publish(Manager *m, Caller *caller, const ManagerRequestArgs *a,
                            ManagerResult *res);
int manager_execute_unpublish(Manager *m, const ManagerRequestArgs *a, ManagerError *e);
int manager_execute_remove_sandbox(Manager *m, const ManagerRequestArgs *a, ManagerError *e);
int manager_execute_set_guest_addresses(Manager *m, const ManagerRequestArgs *a, ManagerError *e);

/* Unpublishes the ports c published with BindToCaller (reason caller-vanished). */
void manager_unpublish_caller_ports(Manager *m, Caller *c);

/* state.c: writes the state file (when there is one) as the tables are now; logs failures. */
int manager_save_state(Manager *m);
void manager_state_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* request.c */
void manager_cancel_all_requests(Manager *m);
