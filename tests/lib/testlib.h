/* Test harness: a private dbus-daemon and the real portpubd on it */
#pragma once

#include <gio/gio.h>
#include <glib.h>
#include <sys/types.h>

#define TEST_BUS_NAME "io.portpub.Publisher1"
#define TEST_MANAGER_PATH "/io/portpub/Publisher1"
#define TEST_MANAGER_IFACE "io.portpub.Publisher1.Manager"
#define TEST_SANDBOX_IFACE "io.portpub.Publisher1.Sandbox"
#define TEST_PORT_IFACE "io.portpub.Publisher1.Port"
#define TEST_ERROR_PREFIX "io.portpub.Publisher1.Error."

typedef struct TestBus {
        GTestDBus *dbus; /* test_bus_new() */
        GDBusConnection *conn;
        const char *address;
        /* test_bus_new_shared(): our own dbus-daemon */
        GPid pid;
        int stdout_fd;
        char *own_address;
} TestBus;

typedef struct TestDaemon {
        TestBus *bus;
        GPid pid;
        int notify_fd; /* our end of NOTIFY_SOCKET, or -1 */
        char *notify_path;
        char *state_file; /* the daemon's own, unless the test passed --state-file= */
        char *varlink; /* its varlink socket, unless the test passed --varlink= */
        int exit_status; /* valid after test_daemon_wait() returned TRUE */
} TestDaemon;

/* A private bus that only the test's uid may connect to (GTestDBus). */
TestBus *test_bus_new(void);
/* A private bus that every uid may connect to, send, receive and own names on: a dbus-daemon of
 * our own, for tests whose clients run as other users. Stopped by its PID in test_bus_free(). */
TestBus *test_bus_new_shared(void);
void test_bus_free(TestBus *b);

typedef struct TestDaemonOptions {
        const char *const *extra_args;
        /* "NAME=VALUE": set in the daemon's environment, on top of the test's own */
        const char *const *env;
        /* --user, with DBUS_SESSION_BUS_ADDRESS naming the bus, instead of --bus-address= */
        gboolean user_bus;
        gboolean with_notify;
} TestDaemonOptions;

/* Starts $PORTPUBD on the bus as o says, without waiting for anything. Unless the arguments
 * name one, the daemon gets a state file of its own in a temporary directory (d->state_file),
 * removed by test_daemon_free(). */
TestDaemon *test_daemon_spawn_full(TestBus *b, const TestDaemonOptions *o);
/* Starts $PORTPUBD --bus-address=... with extra arguments, without waiting for anything. */
TestDaemon *test_daemon_spawn(TestBus *b, const char *const *extra_args, gboolean with_notify);
gboolean test_name_has_owner(TestBus *b);
/* Waits until the daemon owns its name; FALSE on timeout or if it exited. */
gboolean test_daemon_wait_for_name(TestDaemon *d, guint timeout_ms);
/* Bus + daemon, name owned; asserts on failure. */
TestDaemon *test_daemon_start(TestBus *b);
TestDaemon *test_daemon_start_full(TestBus *b, const TestDaemonOptions *o);
/* Waits for exit with a timeout; TRUE when it exited, with exit_status set (-signal if killed). */
gboolean test_daemon_wait(TestDaemon *d, guint timeout_ms);
/* SIGTERM, wait (5 s), SIGKILL if needed; returns the exit status. */
int test_daemon_stop(TestDaemon *d);
void test_daemon_free(TestDaemon *d);

/* Whether the suite runs under memcheck (meson test --setup valgrind sets PORTPUB_TEST_VALGRIND):
 * the harness starts portpubd under it too, and waits stretch. */
gboolean test_under_valgrind(void);
/* A wait of ms, stretched 20 times under valgrind. */
guint test_scaled_ms(guint ms);

/* Reads one notify datagram into buf; FALSE on timeout. */
gboolean test_daemon_read_notify(TestDaemon *d, char *buf, size_t size, guint timeout_ms);

/* Reaps the child pid within timeout_ms: TRUE with *ret_status (waitpid's) when it exited. */
gboolean test_wait_pid(GPid pid, guint timeout_ms, int *ret_status);

/* Runs argv (in environment envp, or ours if NULL) to its end within timeout_ms, its stdout and
 * stderr read into *ret_out and *ret_err (g_free them; NULL: dropped). Returns the exit status,
 * or minus the signal that ended it; a process that outlives the timeout is killed and the test
 * fails. */
int test_run(const char *const *argv, const char *const *envp, guint timeout_ms, char **ret_out,
             char **ret_err);

/* A round trip through the daemon (Peer.Ping), iterating the default main context until its
 * reply: every signal the daemon sent before has been dispatched to the test's subscriptions. */
void test_sync_daemon(TestBus *b);

/* Iterates the default main context until cond(data) or the timeout. */
gboolean test_wait_until(gboolean (*cond)(gpointer data), gpointer data, guint timeout_ms);

GVariant *test_call(TestBus *b, const char *path, const char *iface, const char *method,
                    GVariant *params, const char *reply_type, GError **error);
/* Asserts that a call fails with error_name (a full D-Bus error name). Returns the message. */
char *test_call_expect_error(TestBus *b, const char *path, const char *iface, const char *method,
                             GVariant *params, const char *error_name);
GVariant *test_get_property(TestBus *b, const char *path, const char *iface, const char *name);
guint32 test_get_u32(TestBus *b, const char *path, const char *iface, const char *name);
guint64 test_get_u64(TestBus *b, const char *path, const char *iface, const char *name);

/* Loopback helpers for tests that move bytes. */
int test_tcp_listen(const char *addr, guint16 *ret_port);
int test_tcp_connect(const char *addr, guint16 port, guint timeout_ms);

/* A guest: an echo server on a loopback address, in a thread of the test (TCP: a thread per
 * connection). Optionally prefixes every reply with a tag, so a test can tell guests apart. */
typedef struct TestEcho TestEcho;
TestEcho *test_echo_new(int proto, const char *addr, guint16 port, const char *tag);
guint16 test_echo_port(TestEcho *e);
void test_echo_free(TestEcho *e);

/* Writes msg and reads back exactly strlen(expect) bytes, compared with expect. */
void test_roundtrip(int fd, const char *msg, const char *expect);
int test_udp_socket(const char *addr);
void test_udp_roundtrip(int fd, const char *addr, guint16 port, const char *msg, const char *expect);
