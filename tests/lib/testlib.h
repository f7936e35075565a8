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
        GTestDBus *dbus; /* NULL for a shared bus */
        GDBusConnection *conn;
        const char *address;
        GPid pid; /* the dbus-daemon of a shared bus */
        char *shared_address;
} TestBus;

typedef struct TestDaemon {
        TestBus *bus;
        GPid pid;
        int notify_fd; /* our end of NOTIFY_SOCKET, or -1 */
        char *notify_path;
        char *state_file; /* the daemon's own, unless the test passed --state-file= */
        int exit_status; /* valid after test_daemon_wait() returned TRUE */
} TestDaemon;

TestBus *test_bus_new(void);
/* A private dbus-daemon that admits every uid (GTestDBus admits only our own), for tests whose
 * clients run as another user; b->conn is our (root's) connection. Stopped by test_bus_free(). */
TestBus *test_bus_new_shared(void);
void test_bus_free(TestBus *b);

/* Starts $PORTPUBD --bus-address=... with extra arguments, without waiting for anything. Unless
 * the arguments name one, the daemon gets a state file of its own in a temporary directory
 * (d->state_file), removed by test_daemon_free(). */
TestDaemon *test_daemon_spawn(TestBus *b, const char *const *extra_args, gboolean with_notify);
gboolean test_name_has_owner(TestBus *b);
/* Waits until the daemon owns its name; FALSE on timeout or if it exited. */
gboolean test_daemon_wait_for_name(TestDaemon *d, guint timeout_ms);
/* Bus + daemon, name owned; asserts on failure. */
TestDaemon *test_daemon_start(TestBus *b);
/* Waits for exit with a timeout; TRUE when it exited, with exit_status set (-signal if killed). */
gboolean test_daemon_wait(TestDaemon *d, guint timeout_ms);
/* SIGTERM, wait (5 s), SIGKILL if needed; returns the exit status. */
int test_daemon_stop(TestDaemon *d);
void test_daemon_free(TestDaemon *d);

/* Reads one notify datagram into buf; FALSE on timeout. */
gboolean test_daemon_read_notify(TestDaemon *d, char *buf, size_t size, guint timeout_ms);

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
