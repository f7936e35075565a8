/* Tests for the core without any bus: requests, events, all or nothing, authorization */

/*
 * The manager runs on a real libev loop in the test's own thread, with real sockets on loopback.
 * A request made through a LocalAuthorizer completes before manager_request_start() returns;
 * only a pending Authorizer (FakeAuth, below) or a relay moving bytes needs the loop, and then
 * the test runs it until a condition holds or a guard timer fires. Events are recorded by a
 * subscriber as copies, since the objects they name may be freed right after.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <glib.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "manager.h"
#include "testlib.h"

#define TIMEOUT_S 10.0
#define PLAIN_UID 1000 /* a caller that is not root */

/* ---- the core, a caller and what happened ---------------------------------------------------- */

typedef struct Event {
        ManagerEventType type;
        unsigned changed;
        PortReason reason;
        char sandbox[SANDBOX_ID_MAX + 1];
        uint16_t host_port;
} Event;

typedef struct Core {
        struct ev_loop *loop;
        Manager *m;
        LocalAuthorizer local;
        Caller *caller; /* PLAIN_UID */
        Caller *root;
        GArray *events; /* of Event */
} Core;

static void on_event(Manager *m, const ManagerEvent *ev, void *userdata) {
        Core *c = userdata;
        Event e = { .type = ev->type, .changed = ev->changed, .reason = ev->reason };

        if (ev->sandbox)
                g_strlcpy(e.sandbox, ev->sandbox->id, sizeof e.sandbox);
        if (ev->port)
                e.host_port = ev->port->host_port;
        g_array_append_val(c->events, e);
}

/* A manager whose LocalAuthorizer lets everyone (allow_all) or only root change things. */
static Core *core_new(bool allow_all) {
        Core *c = g_new0(Core, 1);

        c->loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(c->loop);
        g_assert_cmpint(manager_new(&c->m, c->loop), ==, 0);
        local_authorizer_init(&c->local, allow_all);
        manager_set_authorizer(c->m, &c->local.authorizer);
        g_assert_cmpint(manager_subscribe(c->m, on_event, c, NULL), ==, 0);
        g_assert_cmpint(caller_new(&c->caller, PLAIN_UID, 4242, "test caller"), ==, 0);
        g_assert_cmpint(caller_new(&c->root, 0, 4243, "test root"), ==, 0);
        c->events = g_array_new(FALSE, TRUE, sizeof(Event));
        return c;
}

static void core_free(Core *c) {
        manager_free(c->m);
        caller_unref(c->caller);
        caller_unref(c->root);
        ev_loop_destroy(c->loop);
        g_array_free(c->events, TRUE);
        g_free(c);
}

static const char *event_name(ManagerEventType t) {
        static const char *const names[] = {
                [MANAGER_EVENT_SANDBOX_NEW] = "SANDBOX_NEW",
                [MANAGER_EVENT_SANDBOX_REMOVED] = "SANDBOX_REMOVED",
                [MANAGER_EVENT_SANDBOX_CHANGED] = "SANDBOX_CHANGED",
                [MANAGER_EVENT_PORT_PUBLISHED] = "PORT_PUBLISHED",
                [MANAGER_EVENT_PORT_UNPUBLISHED] = "PORT_UNPUBLISHED",
                [MANAGER_EVENT_PORT_CHANGED] = "PORT_CHANGED",
                [MANAGER_EVENT_MANAGER_CHANGED] = "MANAGER_CHANGED",
        };

        return (size_t) t < G_N_ELEMENTS(names) && names[t] ? names[t] : "?";
}

static const Event *event_at(Core *c, guint i) {
        return &g_array_index(c->events, Event, i);
}

/* The recorded events are exactly want, in this order. */
static void assert_events(Core *c, const ManagerEventType *want, size_t n) {
        g_autoptr(GString) got = g_string_new(NULL);

        for (guint i = 0; i < c->events->len; i++)
                g_string_append_printf(got, " %s", event_name(event_at(c, i)->type));
        if (c->events->len != n)
                g_error("expected %zu events, got %u:%s", n, c->events->len, got->str);
        for (size_t i = 0; i < n; i++)
                if (event_at(c, (guint) i)->type != want[i])
                        g_error("event %zu: expected %s, got:%s", i, event_name(want[i]), got->str);
}

static void assert_no_events(Core *c) {
        assert_events(c, NULL, 0);
}

/* ---- requests ---------------------------------------------------------------------------------- */

typedef struct Done {
        unsigned n_called;
        int r;
        char message[sizeof(ManagerError)];
        Sandbox *sandbox;
        Port *ports[8];
        size_t n_ports;
} Done;

static void on_done(ManagerRequest *req, const ManagerResult *res, void *userdata) {
        Done *d = userdata;

        d->n_called++;
        d->r = res->r;
        g_strlcpy(d->message, res->error.message, sizeof d->message);
        d->sandbox = res->sandbox;
        d->n_ports = MIN(res->n_ports, G_N_ELEMENTS(d->ports));
        for (size_t i = 0; i < d->n_ports; i++)
                d->ports[i] = res->ports[i];
}

static ManagerRequest *request_new(Core *c, ManagerRequestType type, Caller *caller,
                                   const char *sandbox, Done *d) {
        ManagerRequest *req = NULL;

        *d = (Done){ .r = INT_MIN };
        g_assert_cmpint(manager_request_new(&req, c->m, type, caller, on_done, d), ==, 0);
        manager_request_args(req)->sandbox_id = g_strdup(sandbox);
        return req;
}

typedef struct Spec {
        const char *proto;
        const char *host;
        uint16_t host_port;
        uint16_t guest_port;
} Spec;

static void set_specs(ManagerRequest *req, const Spec *specs, size_t n, bool with_guest_port) {
        ManagerRequestArgs *a = manager_request_args(req);
        ManagerError e;

        a->specs = g_new0(PortSpec, MAX(n, 1));
        a->n_specs = n;
        for (size_t i = 0; i < n; i++)
                g_assert_cmpint(manager_parse_port_spec(specs[i].proto, specs[i].host,
                                                        specs[i].host_port, specs[i].guest_port,
                                                        with_guest_port, &a->specs[i], &e),
                                ==, 0);
}

static void set_guest(ManagerRequest *req, const char *guest) {
        ManagerRequestArgs *a = manager_request_args(req);
        ManagerError e;

        if (guest)
                g_assert_cmpint(manager_parse_guest_address(guest, &a->guest4, &a->guest6, &e), ==,
                                0);
}

/* A publish request, not started. */
static ManagerRequest *publish_request(Core *c, Caller *caller, const char *sandbox,
                                       const char *guest, const Spec *specs, size_t n, Done *d) {
        ManagerRequest *req = request_new(c, MANAGER_REQUEST_PUBLISH, caller, sandbox, d);

        set_guest(req, guest);
        set_specs(req, specs, n, true);
        return req;
}

/* Publishes and returns once done was called (the LocalAuthorizer decides at once). */
static void publish(Core *c, Caller *caller, const char *sandbox, const char *guest,
                    const Spec *specs, size_t n, Done *d) {
        manager_request_start(publish_request(c, caller, sandbox, guest, specs, n, d));
        g_assert_cmpuint(d->n_called, ==, 1);
}

static void publish_ok(Core *c, const char *sandbox, const char *guest, const Spec *specs, size_t n,
                       Done *d) {
        publish(c, c->caller, sandbox, guest, specs, n, d);
        if (d->r != MANAGER_OK)
                g_error("publishing for '%s' failed (%d): %s", sandbox, d->r, d->message);
        g_assert_cmpuint(d->n_ports, ==, n);
}

static void unpublish(Core *c, const char *sandbox, const Spec *specs, size_t n, Done *d) {
        ManagerRequest *req = request_new(c, MANAGER_REQUEST_UNPUBLISH, c->caller, sandbox, d);

        set_specs(req, specs, n, false);
        manager_request_start(req);
        g_assert_cmpuint(d->n_called, ==, 1);
}

/* ---- sockets ----------------------------------------------------------------------------------- */

/* Binds (and for TCP listens on) addr:port without SO_REUSEADDR: 0 or -errno. A socket anyone
 * left bound there, listening or not, makes it fail. */
static int try_bind(int proto, const char *addr, uint16_t port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
        int fd, r = 0;

        g_assert_cmpint(inet_pton(AF_INET, addr, &a.sin_addr), ==, 1);
        fd = socket(AF_INET, (proto == IPPROTO_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        if (bind(fd, (struct sockaddr *) &a, sizeof a) < 0 ||
            (proto == IPPROTO_TCP && listen(fd, 1) < 0))
                r = -errno;
        close(fd);
        return r;
}

static void assert_free(int proto, uint16_t port) {
        g_assert_cmpint(try_bind(proto, "127.0.0.1", port), ==, 0);
}

/* Listening: a connection is accepted (into the backlog; the loop need not run) and a bind of
 * our own is refused. */
static void assert_tcp_listening(uint16_t port) {
        int fd = test_tcp_connect("127.0.0.1", port, 5000);

        g_assert_cmpint(fd, >=, 0);
        close(fd);
        g_assert_cmpint(try_bind(IPPROTO_TCP, "127.0.0.1", port), ==, -EADDRINUSE);
}

/* A TCP port on 127.0.0.1 that nothing holds right now. */
static uint16_t free_tcp_port(void) {
        guint16 port;
        int fd = test_tcp_listen("127.0.0.1", &port);

        close(fd);
        return port;
}

/* ---- running the loop -------------------------------------------------------------------------- */

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        *(bool *) w->data = true;
}

/* Runs the loop until cond(data) or timeout seconds have passed; returns cond(data). */
static bool run_until(Core *c, bool (*cond)(void *data), void *data, double timeout) {
        bool expired = false;
        ev_timer guard;

        ev_timer_init(&guard, guard_cb, timeout, 0.);
        guard.data = &expired;
        ev_timer_start(c->loop, &guard);
        while (!cond(data) && !expired)
                ev_run(c->loop, EVRUN_ONCE);
        ev_timer_stop(c->loop, &guard);
        return cond(data);
}

static bool never(void *data) {
        return false;
}

static bool done_called(void *data) {
        return ((Done *) data)->n_called > 0;
}

static void readable_cb(struct ev_loop *loop, ev_io *w, int revents) {
        /* Only to wake ev_run: the test reads. */
}

/* Sends msg on fd, a client of a published port, while running the loop (the relay lives on
 * it), and reads back exactly expect. */
static void roundtrip_fd(Core *c, int fd, const char *msg, const char *expect) {
        size_t want = strlen(expect), got = 0;
        gint64 deadline = g_get_monotonic_time() + (gint64) (TIMEOUT_S * G_USEC_PER_SEC);
        char buf[256];
        bool expired = false;
        ev_timer guard;
        ev_io io;

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpuint(want, <, sizeof buf);
        g_assert_cmpint(write(fd, msg, strlen(msg)), ==, (ssize_t) strlen(msg));
        ev_io_init(&io, readable_cb, fd, EV_READ);
        ev_io_start(c->loop, &io);
        ev_timer_init(&guard, guard_cb, TIMEOUT_S, 0.);
        guard.data = &expired;
        ev_timer_start(c->loop, &guard);
        while (got < want && !expired && g_get_monotonic_time() < deadline) {
                ssize_t n;

                ev_run(c->loop, EVRUN_ONCE);
                n = recv(fd, buf + got, want - got, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                g_assert_cmpint(n, >, 0);
                got += (size_t) n;
        }
        ev_timer_stop(c->loop, &guard);
        ev_io_stop(c->loop, &io);
        buf[got] = 0;
        g_assert_cmpstr(buf, ==, expect);
}

/* The same on a connection of its own. */
static void roundtrip(Core *c, uint16_t port, const char *msg, const char *expect) {
        int fd = test_tcp_connect("127.0.0.1", port, 5000);

        roundtrip_fd(c, fd, msg, expect);
        close(fd);
}

/* ---- tests ------------------------------------------------------------------------------------- */

/* A publish succeeds, its port listens, and the events come in the order the faces rely on. */
static void test_publish(void) {
        Core *c = core_new(true);
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "g:");
        Spec spec = { "tcp", "127.0.0.1", 0, test_echo_port(guest) };
        static const ManagerEventType want[] = {
                MANAGER_EVENT_SANDBOX_NEW,
                MANAGER_EVENT_PORT_PUBLISHED,
                MANAGER_EVENT_MANAGER_CHANGED,
        };
        Done d;
        Port *p;

        publish_ok(c, "web", "127.0.0.1", &spec, 1, &d);
        p = d.ports[0];
        g_assert_nonnull(p);
        g_assert_nonnull(d.sandbox);
        g_assert_cmpstr(d.sandbox->id, ==, "web");
        g_assert_true(p->sandbox == d.sandbox);
        g_assert_cmpuint(p->host_port, !=, 0);
        g_assert_cmpuint(p->guest_port, ==, test_echo_port(guest));
        g_assert_cmpuint(d.sandbox->owner, ==, PLAIN_UID);
        g_assert_true(manager_find_sandbox(c->m, "web") == d.sandbox);
        g_assert_true(manager_find_port(c->m, IPPROTO_TCP, "127.0.0.1", p->host_port) == p);
        g_assert_true(manager_find_port_by_serial(c->m, p->serial) == p);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 1);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 1);

        assert_events(c, want, G_N_ELEMENTS(want));
        g_assert_cmpstr(event_at(c, 0)->sandbox, ==, "web");
        g_assert_cmpuint(event_at(c, 1)->host_port, ==, p->host_port);
        g_assert_cmpuint(event_at(c, 2)->changed, ==, MANAGER_CHANGED_COUNTS);

        assert_tcp_listening(p->host_port);
        roundtrip(c, p->host_port, "hello", "g:hello");
        core_free(c);
        test_echo_free(guest);
}

/* The same tuple to the same guest port again succeeds with the same Port and announces
 * nothing. */
static void test_republish_is_noop(void) {
        Core *c = core_new(true);
        Spec spec = { "tcp", "127.0.0.1", 0, 8080 };
        Port *first;
        Done d;

        publish_ok(c, "web", "127.0.0.1", &spec, 1, &d);
        first = d.ports[0];
        spec.host_port = first->host_port;
        g_array_set_size(c->events, 0);

        publish_ok(c, "web", NULL, &spec, 1, &d);
        g_assert_true(d.ports[0] == first);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 1);
        assert_no_events(c);
        assert_tcp_listening(first->host_port);
        core_free(c);
}

/* Unpublishing closes the listener and says so: the port, the sandbox's ports, the counts. */
static void test_unpublish(void) {
        Core *c = core_new(true);
        Spec spec = { "tcp", "127.0.0.1", 0, 8080 };
        static const ManagerEventType want[] = {
                MANAGER_EVENT_PORT_UNPUBLISHED,
                MANAGER_EVENT_SANDBOX_CHANGED,
                MANAGER_EVENT_MANAGER_CHANGED,
        };
        uint16_t port;
        Done d;

        publish_ok(c, "web", "127.0.0.1", &spec, 1, &d);
        port = d.ports[0]->host_port;
        assert_tcp_listening(port);
        g_array_set_size(c->events, 0);

        spec.host_port = port;
        unpublish(c, "web", &spec, 1, &d);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        assert_events(c, want, G_N_ELEMENTS(want));
        g_assert_cmpuint(event_at(c, 0)->reason, ==, PORT_REASON_REQUEST);
        g_assert_cmpuint(event_at(c, 0)->host_port, ==, port);
        g_assert_cmpuint(event_at(c, 1)->changed, ==, SANDBOX_CHANGED_PORTS);
        g_assert_cmpuint(event_at(c, 2)->changed, ==, MANAGER_CHANGED_COUNTS);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 0);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 1);
        g_assert_null(manager_find_port(c->m, IPPROTO_TCP, "127.0.0.1", port));
        assert_free(IPPROTO_TCP, port);

        /* Again: it is gone, and nothing else is announced. */
        g_array_set_size(c->events, 0);
        unpublish(c, "web", &spec, 1, &d);
        g_assert_cmpint(d.r, ==, MANAGER_E_NO_SUCH_PORT);
        assert_no_events(c);
        core_free(c);
}

/* A foreign socket on the second port: the call fails naming that port and "another program",
 * the first port is closed again, and nothing was created or announced. */
static void test_all_or_nothing_foreign_socket(void) {
        Core *c = core_new(true);
        guint16 taken;
        int holder = test_tcp_listen("127.0.0.1", &taken);
        uint16_t first = free_tcp_port();
        Spec specs[] = {
                { "tcp", "127.0.0.1", first, 8080 },
                { "tcp", "127.0.0.1", taken, 8081 },
        };
        g_autofree char *needle = g_strdup_printf("port %u", taken);
        Done d;

        g_assert_cmpuint(first, !=, taken);
        publish(c, c->caller, "web", "127.0.0.1", specs, G_N_ELEMENTS(specs), &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_PORT_IN_USE);
        g_assert_nonnull(strstr(d.message, needle));
        g_assert_nonnull(strstr(d.message, "another program"));
        g_assert_nonnull(strstr(d.message, "'web'"));
        g_assert_null(d.sandbox);
        g_assert_cmpuint(d.n_ports, ==, 0);
        assert_free(IPPROTO_TCP, first);
        assert_no_events(c);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 0);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        close(holder);
        core_free(c);
}

/* A clash with another sandbox's port names that sandbox: the same tuple (found in the tables)
 * and an overlapping one ("" covers 127.0.0.1, found by the bind). */
static void test_clash_names_other_sandbox(void) {
        Core *c = core_new(true);
        Spec spec = { "tcp", "127.0.0.1", 0, 8080 };
        uint16_t port;
        Done d;

        publish_ok(c, "alpha", "127.0.0.1", &spec, 1, &d);
        port = d.ports[0]->host_port;
        g_array_set_size(c->events, 0);

        spec.host_port = port;
        publish(c, c->caller, "beta", "127.0.0.1", &spec, 1, &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_PORT_IN_USE);
        g_assert_nonnull(strstr(d.message, "sandbox 'alpha'"));
        g_assert_nonnull(strstr(d.message, "'beta'"));

        spec.host = "";
        publish(c, c->caller, "beta", "127.0.0.1", &spec, 1, &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_PORT_IN_USE);
        g_assert_nonnull(strstr(d.message, "sandbox 'alpha'"));
        g_assert_null(strstr(d.message, "another program"));

        assert_no_events(c);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 1);
        g_assert_null(manager_find_sandbox(c->m, "beta"));
        core_free(c);
}

/* Limits and bad options fail before anything is bound or asked. */
static void test_limits(void) {
        Core *c = core_new(true);
        size_t n = MANAGER_PORTS_PER_CALL_MAX + 1;
        g_autofree Spec *many = g_new0(Spec, n);
        g_autofree char *limit = g_strdup_printf("%u", MANAGER_PORTS_PER_CALL_MAX);
        Spec spec = { "tcp", "127.0.0.1", 0, 8080 };
        ManagerRequest *req;
        Done d;

        for (size_t i = 0; i < n; i++)
                many[i] = (Spec){ "tcp", "127.0.0.1", 0, 8080 };
        publish(c, c->caller, "web", "127.0.0.1", many, n, &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_LIMIT_EXCEEDED);
        g_assert_nonnull(strstr(d.message, limit));
        g_assert_nonnull(strstr(d.message, "'web'"));

        req = publish_request(c, c->caller, "web", "127.0.0.1", &spec, 1, &d);
        manager_request_args(req)->options.has_max_sessions = true;
        manager_request_args(req)->options.max_sessions = 0;
        manager_request_start(req);
        g_assert_cmpuint(d.n_called, ==, 1);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_INVALID);
        g_assert_nonnull(strstr(d.message, "MaxSessions 0"));

        assert_no_events(c);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 0);
        core_free(c);
}

/* Without allow_all only root may change anything: a plain uid is denied with nothing done and
 * nothing announced, root is allowed. */
static void test_denied_unless_root(void) {
        Core *c = core_new(false);
        uint16_t port = free_tcp_port();
        Spec spec = { "tcp", "127.0.0.1", port, 8080 };
        g_autofree char *uid = g_strdup_printf("uid %u", PLAIN_UID);
        Done d;

        publish(c, c->caller, "web", "127.0.0.1", &spec, 1, &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_ACCESS_DENIED);
        g_assert_nonnull(strstr(d.message, "root"));
        g_assert_nonnull(strstr(d.message, uid));
        g_assert_nonnull(strstr(d.message, "'web'"));
        assert_no_events(c);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        assert_free(IPPROTO_TCP, port);

        publish(c, c->root, "web", "127.0.0.1", &spec, 1, &d);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        g_assert_cmpuint(d.sandbox->owner, ==, 0);
        assert_tcp_listening(port);

        /* Nor may the plain uid take root's port away. */
        g_array_set_size(c->events, 0);
        unpublish(c, "web", &spec, 1, &d);
        g_assert_cmpint(d.r, ==, MANAGER_E_ACCESS_DENIED);
        assert_no_events(c);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 1);
        core_free(c);
}

/* A new sandbox with no guest address and no GuestResolver to ask. */
static void test_no_guest_address(void) {
        Core *c = core_new(true);
        Spec spec = { "tcp", "127.0.0.1", 0, 8080 };
        Done d;

        publish(c, c->caller, "fresh", NULL, &spec, 1, &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_NO_GUEST_ADDRESS);
        g_assert_nonnull(strstr(d.message, "'fresh'"));
        assert_no_events(c);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        core_free(c);
}

/* The second relay fails after both ports were bound: the error names the second port, both
 * ports are closed again, nothing is published or announced. The hook fires once, so the same
 * call succeeds afterwards. */
static void test_relay_failure_after_bind(void) {
        Core *c = core_new(true);
        uint16_t a = free_tcp_port(), b;
        Spec specs[2];
        g_autofree char *needle = NULL;
        Done d;

        do
                b = free_tcp_port();
        while (b == a);
        specs[0] = (Spec){ "tcp", "127.0.0.1", a, 8080 };
        specs[1] = (Spec){ "tcp", "127.0.0.1", b, 8081 };
        needle = g_strdup_printf("port %u", b);

        manager_set_fail_relay(c->m, 2);
        publish(c, c->caller, "web", "127.0.0.1", specs, 2, &d);
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_FAILED);
        g_assert_nonnull(strstr(d.message, needle));
        g_assert_nonnull(strstr(d.message, "'web'"));
        assert_no_events(c);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 0);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        assert_free(IPPROTO_TCP, a);
        assert_free(IPPROTO_TCP, b);

        publish_ok(c, "web", "127.0.0.1", specs, 2, &d);
        assert_tcp_listening(a);
        assert_tcp_listening(b);
        core_free(c);
}

/* ---- an Authorizer that answers later ---------------------------------------------------------- */

#define FAKE_DELAY_S 0.05
#define FAKE_PENDING_MAX 4

typedef struct FakeCheck {
        struct FakeAuth *auth;
        ev_timer timer;
        auth_done_t done;
        void *userdata;
        bool active;
} FakeCheck;

#define FAKE_QUERIES_MAX 8

/* What one check asked about (AuthQuery points into the request: copied). */
typedef struct FakeQuery {
        AuthAction action;
        uid_t uid;
        char sandbox[SANDBOX_ID_MAX + 1];
        char protocol[8];
        char host_address[INET6_ADDRSTRLEN];
        uint16_t host_port;
} FakeQuery;

typedef struct FakeAuth {
        Authorizer authorizer;
        struct ev_loop *loop;
        bool answer;
        FakeCheck checks[FAKE_PENDING_MAX];
        unsigned n_checks, n_cancels, n_answers;
        FakeQuery queries[FAKE_QUERIES_MAX]; /* the first n_checks */
} FakeAuth;

static void fake_answer(struct ev_loop *loop, ev_timer *w, int revents) {
        FakeCheck *k = w->data;

        k->active = false;
        k->auth->n_answers++;
        k->done(k->userdata, k->auth->answer, k->auth->answer ? "" : "the fake authorizer says no");
}

static int fake_check(Authorizer *a, const AuthQuery *q, auth_done_t done, void *userdata,
                      char *reason, size_t size, void **ret_pending) {
        FakeAuth *f = (FakeAuth *) a;

        if (f->n_checks < FAKE_QUERIES_MAX) {
                FakeQuery *r = &f->queries[f->n_checks];

                r->action = q->action;
                r->uid = q->caller->uid;
                g_strlcpy(r->sandbox, q->sandbox_id, sizeof r->sandbox);
                g_strlcpy(r->protocol, q->protocol, sizeof r->protocol);
                g_strlcpy(r->host_address, q->host_address, sizeof r->host_address);
                r->host_port = q->host_port;
        }
        f->n_checks++;
        for (size_t i = 0; i < FAKE_PENDING_MAX; i++) {
                FakeCheck *k = &f->checks[i];

                if (k->active)
                        continue;
                *k = (FakeCheck){ .auth = f, .done = done, .userdata = userdata, .active = true };
                ev_timer_init(&k->timer, fake_answer, FAKE_DELAY_S, 0.);
                k->timer.data = k;
                ev_timer_start(f->loop, &k->timer);
                *ret_pending = k;
                return AUTH_PENDING;
        }
        g_assert_not_reached();
}

static void fake_cancel(Authorizer *a, void *pending) {
        FakeAuth *f = (FakeAuth *) a;
        FakeCheck *k = pending;

        g_assert_true(k >= f->checks && k < f->checks + FAKE_PENDING_MAX);
        g_assert_true(k->active);
        ev_timer_stop(f->loop, &k->timer);
        k->active = false;
        f->n_cancels++;
}

static const AuthorizerOps fake_ops = { .check = fake_check, .cancel = fake_cancel };

static void fake_init(FakeAuth *f, Core *c, bool answer) {
        *f = (FakeAuth){ .authorizer.ops = &fake_ops, .loop = c->loop, .answer = answer };
        manager_set_authorizer(c->m, &f->authorizer);
}

/* The request waits for the answer, the loop goes on meanwhile, then it completes. */
static void test_async_authorizer_waits_then_completes(void) {
        Core *c = core_new(true);
        uint16_t port = free_tcp_port();
        Spec spec = { "tcp", "127.0.0.1", port, 8080 };
        static const ManagerEventType want[] = {
                MANAGER_EVENT_SANDBOX_NEW,
                MANAGER_EVENT_PORT_PUBLISHED,
                MANAGER_EVENT_MANAGER_CHANGED,
        };
        FakeAuth fake;
        Done d;

        fake_init(&fake, c, true);
        manager_request_start(publish_request(c, c->caller, "web", "127.0.0.1", &spec, 1, &d));
        g_assert_cmpuint(d.n_called, ==, 0);
        g_assert_cmpuint(fake.n_checks, ==, 1);
        g_assert_cmpuint(fake.queries[0].action, ==, AUTH_ACTION_PUBLISH);
        g_assert_cmpuint(fake.queries[0].uid, ==, PLAIN_UID);
        g_assert_cmpstr(fake.queries[0].sandbox, ==, "web");
        g_assert_cmpstr(fake.queries[0].protocol, ==, "tcp");
        g_assert_cmpuint(fake.queries[0].host_port, ==, port);
        /* Waiting: nothing bound, nothing announced. */
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        assert_no_events(c);
        assert_free(IPPROTO_TCP, port);

        g_assert_true(run_until(c, done_called, &d, TIMEOUT_S));
        g_assert_cmpuint(d.n_called, ==, 1);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        g_assert_cmpuint(fake.n_answers, ==, 1);
        assert_events(c, want, G_N_ELEMENTS(want));
        assert_tcp_listening(port);

        /* A "no" later is AccessDenied with the authorizer's reason, and changes nothing. */
        fake.answer = false;
        g_array_set_size(c->events, 0);
        spec.host_port = 0;
        manager_request_start(publish_request(c, c->caller, "other", "127.0.0.1", &spec, 1, &d));
        g_assert_cmpuint(d.n_called, ==, 0);
        g_assert_true(run_until(c, done_called, &d, TIMEOUT_S));
        g_test_message("%s", d.message);
        g_assert_cmpint(d.r, ==, MANAGER_E_ACCESS_DENIED);
        g_assert_nonnull(strstr(d.message, "the fake authorizer says no"));
        assert_no_events(c);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 1);
        core_free(c);
}

/* manager_request_cancel() and manager_caller_gone() forget a pending request: done is never
 * called, the authorizer is told, and nothing changes, even after the answer would have come.
 * Another caller's request is not touched. */
static void test_cancel_pending(void) {
        Core *c = core_new(true);
        uint16_t port = free_tcp_port(), other_port;
        Spec spec = { "tcp", "127.0.0.1", port, 8080 };
        ManagerRequest *req;
        Caller *other;
        FakeAuth fake;
        Done d, d_other;

        do
                other_port = free_tcp_port();
        while (other_port == port);
        fake_init(&fake, c, true);

        req = publish_request(c, c->caller, "web", "127.0.0.1", &spec, 1, &d);
        manager_request_start(req);
        g_assert_cmpuint(fake.n_checks, ==, 1);
        manager_request_cancel(req);
        g_assert_cmpuint(fake.n_cancels, ==, 1);
        /* Past the time the answer was due: still nothing. */
        g_assert_false(run_until(c, never, NULL, 4 * FAKE_DELAY_S));
        g_assert_cmpuint(d.n_called, ==, 0);
        g_assert_cmpuint(fake.n_answers, ==, 0);
        assert_no_events(c);
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        assert_free(IPPROTO_TCP, port);

        g_assert_cmpint(caller_new(&other, PLAIN_UID + 1, 4244, "other caller"), ==, 0);
        manager_request_start(publish_request(c, c->caller, "web", "127.0.0.1", &spec, 1, &d));
        spec.host_port = other_port;
        manager_request_start(publish_request(c, other, "other", "127.0.0.1", &spec, 1, &d_other));
        g_assert_cmpuint(fake.n_checks, ==, 3);
        manager_caller_gone(c->m, c->caller);
        g_assert_true(c->caller->gone);
        g_assert_false(other->gone);
        g_assert_cmpuint(fake.n_cancels, ==, 2);
        g_assert_true(run_until(c, done_called, &d_other, TIMEOUT_S));
        g_assert_cmpint(d_other.r, ==, MANAGER_OK);
        g_assert_false(run_until(c, never, NULL, 4 * FAKE_DELAY_S));
        g_assert_cmpuint(d.n_called, ==, 0);
        g_assert_cmpuint(fake.n_answers, ==, 1);
        g_assert_null(manager_find_sandbox(c->m, "web"));
        g_assert_nonnull(manager_find_sandbox(c->m, "other"));
        assert_free(IPPROTO_TCP, port);
        assert_tcp_listening(other_port);
        caller_unref(other);
        core_free(c);
}

/* Removing a sandbox unpublishes each of its ports (reason sandbox-removed), then the sandbox
 * goes, then the counts change. */
static void test_remove_sandbox(void) {
        Core *c = core_new(true);
        Spec specs[] = {
                { "tcp", "127.0.0.1", 0, 8080 },
                { "udp", "127.0.0.1", 0, 53 },
        };
        static const ManagerEventType want[] = {
                MANAGER_EVENT_PORT_UNPUBLISHED,
                MANAGER_EVENT_PORT_UNPUBLISHED,
                MANAGER_EVENT_SANDBOX_REMOVED,
                MANAGER_EVENT_MANAGER_CHANGED,
        };
        uint16_t tcp, udp;
        Done d;

        publish_ok(c, "web", "127.0.0.1", specs, G_N_ELEMENTS(specs), &d);
        tcp = d.ports[0]->host_port;
        udp = d.ports[1]->host_port;
        g_assert_cmpint(try_bind(IPPROTO_UDP, "127.0.0.1", udp), ==, -EADDRINUSE);
        g_array_set_size(c->events, 0);

        manager_request_start(request_new(c, MANAGER_REQUEST_REMOVE_SANDBOX, c->caller, "web", &d));
        g_assert_cmpuint(d.n_called, ==, 1);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        assert_events(c, want, G_N_ELEMENTS(want));
        g_assert_cmpuint(event_at(c, 0)->reason, ==, PORT_REASON_SANDBOX_REMOVED);
        g_assert_cmpuint(event_at(c, 1)->reason, ==, PORT_REASON_SANDBOX_REMOVED);
        g_assert_cmpstr(event_at(c, 2)->sandbox, ==, "web");
        g_assert_cmpuint(manager_n_sandboxes(c->m), ==, 0);
        g_assert_cmpuint(manager_n_ports(c->m), ==, 0);
        assert_free(IPPROTO_TCP, tcp);
        assert_free(IPPROTO_UDP, udp);

        manager_request_start(request_new(c, MANAGER_REQUEST_REMOVE_SANDBOX, c->caller, "web", &d));
        g_assert_cmpint(d.r, ==, MANAGER_E_NO_SUCH_SANDBOX);
        g_assert_nonnull(strstr(d.message, "'web'"));
        core_free(c);
}

/* New guest addresses: announced for the sandbox and each port, and new sessions go there. */
static void test_set_guest_addresses(void) {
        Core *c = core_new(true);
        TestEcho *one = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "one:");
        TestEcho *two = test_echo_new(IPPROTO_TCP, "127.0.0.2", test_echo_port(one), "two:");
        Spec spec = { "tcp", "127.0.0.1", 0, test_echo_port(one) };
        ManagerRequest *req;
        char buf[INET6_ADDRSTRLEN];
        uint16_t port;
        Done d;

        publish_ok(c, "web", "127.0.0.1", &spec, 1, &d);
        port = d.ports[0]->host_port;
        roundtrip(c, port, "a", "one:a");
        g_array_set_size(c->events, 0);

        req = request_new(c, MANAGER_REQUEST_SET_GUEST_ADDRESSES, c->caller, "web", &d);
        set_guest(req, "127.0.0.2");
        manager_request_start(req);
        g_assert_cmpuint(d.n_called, ==, 1);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        /* The first two: what comes after is ActiveSessions, coalesced on a timer. */
        g_assert_cmpuint(c->events->len, >=, 2);
        g_assert_cmpuint(event_at(c, 0)->type, ==, MANAGER_EVENT_SANDBOX_CHANGED);
        g_assert_cmpuint(event_at(c, 0)->changed, ==, SANDBOX_CHANGED_GUEST_ADDRESSES);
        g_assert_cmpuint(event_at(c, 1)->type, ==, MANAGER_EVENT_PORT_CHANGED);
        g_assert_cmpuint(event_at(c, 1)->changed, ==, PORT_CHANGED_GUEST_ADDRESS);
        g_assert_cmpuint(event_at(c, 1)->host_port, ==, port);
        g_assert_cmpstr(port_guest_address(manager_find_port(c->m, IPPROTO_TCP, "127.0.0.1", port),
                                           buf, sizeof buf),
                        ==, "127.0.0.2");
        roundtrip(c, port, "b", "two:b");

        /* An unknown sandbox, and no addresses at all, change nothing. */
        req = request_new(c, MANAGER_REQUEST_SET_GUEST_ADDRESSES, c->caller, "nosuch", &d);
        set_guest(req, "127.0.0.3");
        manager_request_start(req);
        g_assert_cmpint(d.r, ==, MANAGER_E_NO_SUCH_SANDBOX);
        req = request_new(c, MANAGER_REQUEST_SET_GUEST_ADDRESSES, c->caller, "web", &d);
        manager_request_start(req);
        g_assert_cmpint(d.r, ==, MANAGER_E_INVALID);
        g_assert_cmpstr(port_guest_address(manager_find_port(c->m, IPPROTO_TCP, "127.0.0.1", port),
                                           buf, sizeof buf),
                        ==, "127.0.0.2");
        core_free(c);
        test_echo_free(one);
        test_echo_free(two);
}

/* One check for each action the call needs, not one per port, each with the details of the
 * first port that needs it: publish, a port below ip_unprivileged_port_start, and a sandbox
 * another uid owns. */
static void test_authorizer_asked_once_per_action(void) {
        Core *c = core_new(true);
        uint16_t privileged = 0, unprivileged_start = 1024;
        g_autofree char *text = NULL;
        Spec specs[3];
        FakeAuth fake;
        Done d;

        if (g_file_get_contents("/proc/sys/net/ipv4/ip_unprivileged_port_start", &text, NULL, NULL))
                unprivileged_start = (uint16_t) MIN(g_ascii_strtoull(text, NULL, 10), 65535);
        for (uint16_t p = MIN(unprivileged_start, 1024) - 1; p >= 1000 && !privileged; p--)
                if (try_bind(IPPROTO_TCP, "127.0.0.1", p) == 0)
                        privileged = p;
        if (privileged == 0 || geteuid() != 0) {
                g_test_skip("needs root and a free port in 1000..1023 below "
                            "ip_unprivileged_port_start");
                core_free(c);
                return;
        }
        specs[0] = (Spec){ "tcp", "127.0.0.1", 0, 8080 };
        publish(c, c->root, "web", "127.0.0.1", specs, 1, &d);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        g_assert_cmpuint(d.sandbox->owner, ==, 0);

        fake_init(&fake, c, true);
        specs[0] = (Spec){ "udp", "127.0.0.1", 0, 53 };
        specs[1] = (Spec){ "tcp", "127.0.0.1", privileged, 8081 };
        specs[2] = (Spec){ "tcp", "127.0.0.1", 0, 8082 };
        manager_request_start(publish_request(c, c->caller, "web", NULL, specs, 3, &d));
        g_assert_true(run_until(c, done_called, &d, TIMEOUT_S));
        if (d.r != MANAGER_OK)
                g_error("publishing failed (%d): %s", d.r, d.message);
        g_assert_cmpuint(fake.n_checks, ==, 3);
        g_assert_cmpuint(fake.n_answers, ==, 3);
        g_assert_cmpuint(fake.queries[0].action, ==, AUTH_ACTION_PUBLISH);
        g_assert_cmpstr(fake.queries[0].protocol, ==, "udp");
        g_assert_cmpuint(fake.queries[1].action, ==, AUTH_ACTION_PUBLISH_PRIVILEGED);
        g_assert_cmpstr(fake.queries[1].protocol, ==, "tcp");
        g_assert_cmpstr(fake.queries[1].host_address, ==, "127.0.0.1");
        g_assert_cmpuint(fake.queries[1].host_port, ==, privileged);
        g_assert_cmpuint(fake.queries[2].action, ==, AUTH_ACTION_MANAGE_ALL);
        for (unsigned i = 0; i < 3; i++) {
                g_assert_cmpstr(fake.queries[i].sandbox, ==, "web");
                g_assert_cmpuint(fake.queries[i].uid, ==, PLAIN_UID);
        }
        g_assert_cmpuint(manager_n_ports(c->m), ==, 4);
        core_free(c);
}

typedef struct Announced {
        Core *c;
        ManagerEventType type;
        unsigned changed;
} Announced;

static bool was_announced(void *data) {
        const Announced *a = data;

        for (guint i = 0; i < a->c->events->len; i++)
                if (event_at(a->c, i)->type == a->type && (event_at(a->c, i)->changed & a->changed))
                        return true;
        return false;
}

/* ActiveSessions of the manager and the sandbox are announced again when a port that had
 * sessions goes: its sessions went with it. */
static void test_active_sessions_follow_unpublish(void) {
        Core *c = core_new(true);
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        Spec specs[] = {
                { "tcp", "127.0.0.1", 0, test_echo_port(guest) },
                { "tcp", "127.0.0.1", 0, test_echo_port(guest) },
        };
        Announced manager = { c, MANAGER_EVENT_MANAGER_CHANGED, MANAGER_CHANGED_ACTIVE_SESSIONS };
        Announced sandbox = { c, MANAGER_EVENT_SANDBOX_CHANGED, SANDBOX_CHANGED_ACTIVE_SESSIONS };
        Sandbox *s;
        Done d;
        int fd;

        publish_ok(c, "web", "127.0.0.1", specs, 2, &d);
        s = d.sandbox;
        specs[0].host_port = d.ports[0]->host_port;
        fd = test_tcp_connect("127.0.0.1", specs[0].host_port, 5000);
        g_assert_cmpint(fd, >=, 0);
        roundtrip_fd(c, fd, "x", "x");
        g_assert_cmpuint(manager_active_sessions(c->m), ==, 1);
        g_assert_true(run_until(c, was_announced, &manager, TIMEOUT_S));
        g_assert_true(was_announced(&sandbox));
        g_array_set_size(c->events, 0);

        unpublish(c, "web", specs, 1, &d);
        g_assert_cmpint(d.r, ==, MANAGER_OK);
        g_assert_cmpuint(manager_active_sessions(c->m), ==, 0);
        g_assert_cmpuint(sandbox_active_sessions(s), ==, 0);
        /* At most a second later (the coalescing interval). */
        g_assert_true(run_until(c, was_announced, &manager, TIMEOUT_S));
        g_assert_true(run_until(c, was_announced, &sandbox, TIMEOUT_S));
        close(fd);
        core_free(c);
        test_echo_free(guest);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/core/publish", test_publish);
        g_test_add_func("/core/republish-is-noop", test_republish_is_noop);
        g_test_add_func("/core/unpublish", test_unpublish);
        g_test_add_func("/core/all-or-nothing-foreign-socket", test_all_or_nothing_foreign_socket);
        g_test_add_func("/core/clash-names-other-sandbox", test_clash_names_other_sandbox);
        g_test_add_func("/core/limits", test_limits);
        g_test_add_func("/core/denied-unless-root", test_denied_unless_root);
        g_test_add_func("/core/no-guest-address", test_no_guest_address);
        g_test_add_func("/core/relay-failure-after-bind", test_relay_failure_after_bind);
        g_test_add_func("/core/async-authorizer-waits-then-completes",
                        test_async_authorizer_waits_then_completes);
        g_test_add_func("/core/cancel-pending", test_cancel_pending);
        g_test_add_func("/core/authorizer-asked-once-per-action",
                        test_authorizer_asked_once_per_action);
        g_test_add_func("/core/active-sessions-follow-unpublish",
                        test_active_sessions_follow_unpublish);
        g_test_add_func("/core/remove-sandbox", test_remove_sandbox);
        g_test_add_func("/core/set-guest-addresses", test_set_guest_addresses);
        return g_test_run();
}
