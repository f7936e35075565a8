/* Restart without loss: the state file, against the real daemon killed and started again */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        char *dir;
        char *state;
        char *state_arg;
        TestEcho *echo;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        f->bus = test_bus_new();
        f->dir = g_dir_make_tmp("portpub-restart-XXXXXX", &error);
        g_assert_no_error(error);
        f->state = g_build_filename(f->dir, "state", NULL);
        f->state_arg = g_strdup_printf("--state-file=%s", f->state);
        f->echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "guest:");
}

static void remove_dir(const char *dir) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, name, NULL);

                (void) unlink(p);
        }
        (void) rmdir(dir);
}

static void remove_corrupt_dirs(Fixture *f);

static void fixture_teardown(Fixture *f, gconstpointer data) {
        if (f->daemon) {
                (void) test_daemon_stop(f->daemon);
                test_daemon_free(f->daemon);
        }
        test_echo_free(f->echo);
        test_bus_free(f->bus);
        remove_corrupt_dirs(f);
        remove_dir(f->dir);
        g_free(f->dir);
        g_free(f->state);
        g_free(f->state_arg);
}

static void start(Fixture *f) {
        const char *args[] = { f->state_arg, NULL };

        g_assert_null(f->daemon);
        f->daemon = test_daemon_spawn(f->bus, args, FALSE);
        g_assert_true(test_daemon_wait_for_name(f->daemon, 10000));
}

/* A crash: no shutdown, no chance to write anything. */
static void crash(Fixture *f) {
        g_assert_nonnull(f->daemon);
        g_assert_cmpint(kill(f->daemon->pid, SIGKILL), ==, 0);
        g_assert_true(test_daemon_wait(f->daemon, 5000));
        g_assert_cmpint(f->daemon->exit_status, ==, -SIGKILL);
        test_daemon_free(f->daemon);
        f->daemon = NULL;
}

static GVariant *call(Fixture *f, GDBusConnection *conn, const char *method, GVariant *params,
                      const char *reply_type) {
        g_autoptr(GError) error = NULL;
        GVariant *v;

        v = g_dbus_connection_call_sync(conn ? conn : f->bus->conn, TEST_BUS_NAME,
                                        TEST_MANAGER_PATH, TEST_MANAGER_IFACE, method, params,
                                        reply_type ? G_VARIANT_TYPE(reply_type) : NULL,
                                        G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        g_assert_no_error(error);
        return v;
}

/* Publishes one TCP port to the echo guest; returns its object path and host port. */
static char *publish(Fixture *f, GDBusConnection *conn, const char *sandbox, guint16 host_port,
                     GVariant *options, guint16 *ret_port) {
        g_autoptr(GVariant) reply = NULL, published = NULL;
        const char *path, *proto, *addr;
        guint16 hp, gp;

        reply = call(f, conn, "PublishPorts",
                     g_variant_new("(s@as@a(ssqq)@a{sv})", sandbox,
                                   g_variant_new_parsed("['127.0.0.1']"),
                                   g_variant_new_parsed("[('tcp', '', %q, %q)]", host_port,
                                                        test_echo_port(f->echo)),
                                   options ? options : g_variant_new("a{sv}", NULL)),
                     "(oa(ssqqo))");
        g_variant_get(reply, "(&o@a(ssqqo))", NULL, &published);
        g_variant_get_child(published, 0, "(&s&sqq&o)", &proto, &addr, &hp, &gp, &path);
        if (ret_port)
                *ret_port = hp;
        return g_strdup(path);
}

static void roundtrip(guint16 port, const char *msg) {
        g_autofree char *expect = g_strdup_printf("guest:%s", msg);
        int fd = test_tcp_connect("127.0.0.1", port, 5000);

        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, msg, expect);
        close(fd);
}

static guint32 n_ports(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts");
}

static char *get_s(Fixture *f, const char *path, const char *name) {
        g_autoptr(GVariant) v = test_get_property(f->bus, path, TEST_PORT_IFACE, name);

        return g_variant_dup_string(v, NULL);
}

static gboolean path_exists(Fixture *f, const char *path) {
        g_autoptr(GVariant) v = NULL;

        v = g_dbus_connection_call_sync(f->bus->conn, TEST_BUS_NAME, path,
                                        "org.freedesktop.DBus.Properties", "GetAll",
                                        g_variant_new("(s)", TEST_PORT_IFACE), NULL,
                                        G_DBUS_CALL_FLAGS_NONE, 5000, NULL, NULL);
        if (!v)
                return FALSE;
        g_autoptr(GVariant) properties = g_variant_get_child_value(v, 0);

        return g_variant_n_children(properties) > 0;
}

typedef struct PathWait {
        Fixture *f;
        const char *path;
        const char *state; /* NULL: wait for the path to go */
} PathWait;

static gboolean path_gone(gpointer data) {
        PathWait *w = data;

        return !path_exists(w->f, w->path);
}

static gboolean port_in_state(gpointer data) {
        PathWait *w = data;
        g_autofree char *state = get_s(w->f, w->path, "State");

        return strcmp(state, w->state) == 0;
}

static GDBusConnection *new_connection(Fixture *f) {
        g_autoptr(GError) error = NULL;
        GDBusConnection *c;

        c = g_dbus_connection_new_for_address_sync(f->bus->address,
                                                   G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                           G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                   NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(c, FALSE);
        return c;
}

/* kill -9 and start again: the same ports answer, at the same object paths, with the same
 * options; a caller-bound port whose caller is still on the bus is kept, and goes when the
 * caller does. */
static void test_crash_restores(Fixture *f, gconstpointer data) {
        g_autoptr(GDBusConnection) caller = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL, *p3 = NULL, *pp = NULL;
        g_autoptr(GVariant) v = NULL;
        guint16 port1, port2, port3;

        start(f);
        caller = new_connection(f);
        p1 = publish(f, NULL, "web", 0, NULL, &port1);
        p2 = publish(f, NULL, "db", 0,
                     g_variant_new_parsed("{'MaxSessions': <uint32 7>, 'IdleTimeoutUSec': <uint64 "
                                          "30000000>, 'ProxyProtocol': <'v2'>}"),
                     &port2);
        p3 = publish(f, caller, "web", 0, g_variant_new_parsed("{'BindToCaller': <true>}"), &port3);
        roundtrip(port1, "one");
        g_assert_cmpuint(n_ports(f), ==, 3);
        g_assert_true(g_file_test(f->state, G_FILE_TEST_EXISTS));

        crash(f);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 3);
        roundtrip(port1, "again");
        roundtrip(port3, "bound");
        g_assert_cmpuint(test_get_u32(f->bus, p2, TEST_PORT_IFACE, "MaxSessions"), ==, 7);
        g_assert_cmpuint(test_get_u64(f->bus, p2, TEST_PORT_IFACE, "IdleTimeoutUSec"), ==, 30000000);
        pp = get_s(f, p2, "ProxyProtocol");
        g_assert_cmpstr(pp, ==, "v2");
        {
                g_autofree char *state = get_s(f, p1, "State");

                g_assert_cmpstr(state, ==, "listening");
        }
        /* The same ports at the same paths. */
        v = call(f, NULL, "GetPort", g_variant_new("(ssq)", "tcp", "", port3), "(o)");
        {
                const char *path;

                g_variant_get(v, "(&o)", &path);
                g_assert_cmpstr(path, ==, p3);
        }
        /* A new port continues after the highest serial. */
        {
                g_autofree char *p4 = publish(f, NULL, "web", 0, NULL, NULL);

                g_assert_cmpstr(p4, !=, p1);
                g_assert_cmpstr(p4, !=, p2);
                g_assert_cmpstr(p4, !=, p3);
                g_assert_cmpuint(n_ports(f), ==, 4);
        }

        /* The caller of the bound port leaves: that port goes, nothing else. */
        g_dbus_connection_close_sync(caller, NULL, NULL);
        g_clear_object(&caller);
        g_assert_true(test_wait_until(path_gone, &(PathWait){ .f = f, .path = p3 }, 5000));
        g_assert_cmpuint(n_ports(f), ==, 3);
        roundtrip(port1, "still");
}

/* A caller-bound port whose caller left while the daemon was down is not restored. */
static void test_gone_caller_not_restored(Fixture *f, gconstpointer data) {
        g_autoptr(GDBusConnection) caller = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL;
        guint16 port2;

        start(f);
        caller = new_connection(f);
        p1 = publish(f, NULL, "web", 0, NULL, NULL);
        p2 = publish(f, caller, "web", 0, g_variant_new_parsed("{'BindToCaller': <true>}"), &port2);
        crash(f);
        g_dbus_connection_close_sync(caller, NULL, NULL);
        start(f);
        g_assert_true(test_wait_until(path_gone, &(PathWait){ .f = f, .path = p2 }, 5000));
        g_assert_true(path_exists(f, p1));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_true(test_tcp_connect("127.0.0.1", port2, 200) < 0);
}

/* SIGTERM unpublishes everything but keeps the file: the next start publishes them again. */
static void test_sigterm_keeps_file(Fixture *f, gconstpointer data) {
        g_autofree char *p1 = NULL;
        guint16 port1;

        start(f);
        p1 = publish(f, NULL, "web", 0, NULL, &port1);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        f->daemon = NULL;
        g_assert_true(test_tcp_connect("127.0.0.1", port1, 200) < 0);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 1);
        roundtrip(port1, "back");
}

/* Unpublish and RemoveSandbox remove their entries from the file. */
static void test_removal_removes_entries(Fixture *f, gconstpointer data) {
        g_autofree char *text = NULL;
        guint16 port1, port2;

        start(f);
        g_free(publish(f, NULL, "web", 0, NULL, &port1));
        g_free(publish(f, NULL, "gone", 0, NULL, &port2));
        g_variant_unref(call(f, NULL, "UnpublishPorts",
                             g_variant_new_parsed("('web', [('tcp', '', %q)])", port1), NULL));
        g_variant_unref(call(f, NULL, "RemoveSandbox", g_variant_new("(s)", "gone"), NULL));
        g_assert_true(g_file_get_contents(f->state, &text, NULL, NULL));
        g_assert_null(strstr(text, "\"gone\""));
        g_assert_nonnull(strstr(text, "\"web\""));
        crash(f);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes"),
                         ==, 1);
}

/* Another program on 127.0.0.1:port. */
static int listen_on(guint16 port) {
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        g_assert_cmpint(listen(fd, 16), ==, 0);
        return fd;
}

/* A port whose host port another program took while the daemon was down stays, in State
 * failed with LastError, and is bound again once the port is free. */
static void test_unbindable_port_fails_then_recovers(Fixture *f, gconstpointer data) {
        g_autofree char *p1 = NULL, *state = NULL, *last = NULL;
        guint16 port1;
        int thief;

        start(f);
        p1 = publish(f, NULL, "web", 0, NULL, &port1);
        crash(f);
        thief = listen_on(port1);
        g_assert_cmpint(thief, >=, 0);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 1);
        state = get_s(f, p1, "State");
        g_assert_cmpstr(state, ==, "failed");
        last = get_s(f, p1, "LastError");
        g_assert_nonnull(strstr(last, "in use"));
        close(thief);
        /* Retried after 1 s, then 2 s...: within a few seconds it listens again. */
        g_assert_true(test_wait_until(port_in_state,
                                      &(PathWait){ .f = f, .path = p1, .state = "listening" }, 10000));
        roundtrip(port1, "recovered");
}

static void write_file(const char *path, const char *text, gssize len) {
        g_autoptr(GError) error = NULL;

        g_file_set_contents(path, text, len, &error);
        g_assert_no_error(error);
}

static guint count_corrupt(Fixture *f) {
        g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
        const char *name;
        guint n = 0;

        while (d && (name = g_dir_read_name(d)))
                n += g_str_has_prefix(name, "state.corrupt-");
        return n;
}

/* A file that is not JSON, or cut short, is set aside and the daemon starts empty. */
static void test_corrupt_file_set_aside(Fixture *f, gconstpointer data) {
        g_autofree char *good = NULL;
        gsize len;

        write_file(f->state, "this is not json\n", -1);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(count_corrupt(f), ==, 1);
        g_assert_false(g_file_test(f->state, G_FILE_TEST_EXISTS));

        /* A truncated file: a good one cut in half. */
        g_free(publish(f, NULL, "web", 0, NULL, NULL));
        crash(f);
        g_assert_true(g_file_get_contents(f->state, &good, &len, NULL));
        write_file(f->state, good, (gssize) len / 2);
        /* Set aside beside the first one, within the same second: neither is lost. */
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(count_corrupt(f), ==, 2);
}

/* A path that cannot be read as a file (a directory here) is set aside too. */
static void test_unreadable_file_set_aside(Fixture *f, gconstpointer data) {
        g_assert_cmpint(mkdir(f->state, 0700), ==, 0);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(count_corrupt(f), ==, 1);
        /* And the next change writes a new file where it was. */
        g_free(publish(f, NULL, "web", 0, NULL, NULL));
        g_assert_true(g_file_test(f->state, G_FILE_TEST_IS_REGULAR));
}

static void remove_corrupt_dirs(Fixture *f) {
        g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(f->dir, name, NULL);

                if (g_file_test(p, G_FILE_TEST_IS_DIR))
                        (void) rmdir(p);
        }
}

/* An invalid entry is skipped; the rest is restored. */
static void test_invalid_entry_skipped(Fixture *f, gconstpointer data) {
        g_autofree char *text = NULL;
        guint16 port;
        int fd;

        /* A free port for the valid entry. */
        fd = test_tcp_listen("127.0.0.1", &port);
        close(fd);
        text = g_strdup_printf(
                "{\"version\":1,\"next_serial\":9,\"sandboxes\":["
                "{\"id\":\"-bad id\",\"owner\":0,\"machine\":false,\"guest_addresses\":[\"127.0.0.1\"],\"ports\":[]},"
                "{\"id\":\"ok\",\"owner\":0,\"machine\":false,\"guest_addresses\":[\"127.0.0.1\"],\"ports\":["
                "{\"serial\":5,\"protocol\":\"sctp\",\"host_address\":\"\",\"host_port\":1,\"guest_port\":1,\"idle_timeout_usec\":0,\"max_sessions\":1,\"proxy_protocol\":\"\"},"
                "{\"serial\":7,\"protocol\":\"tcp\",\"host_address\":\"127.0.0.1\",\"host_port\":%u,\"guest_port\":%u,\"idle_timeout_usec\":0,\"max_sessions\":3,\"proxy_protocol\":\"\"}]}]}",
                port, test_echo_port(f->echo));
        write_file(f->state, text, -1);
        start(f);
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpuint(test_get_u32(f->bus, "/io/portpub/Publisher1/port/7", TEST_PORT_IFACE,
                                      "MaxSessions"),
                         ==, 3);
        g_assert_cmpuint(count_corrupt(f), ==, 0);
        {
                g_autofree char *expect = g_strdup("guest:x");
                int c = test_tcp_connect("127.0.0.1", port, 5000);

                g_assert_cmpint(c, >=, 0);
                test_roundtrip(c, "x", expect);
                close(c);
        }
        /* Serials continue after the file's next_serial. */
        {
                g_autofree char *p = publish(f, NULL, "ok", 0, NULL, NULL);

                g_assert_cmpstr(p, ==, "/io/portpub/Publisher1/port/10");
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        signal(SIGPIPE, SIG_IGN);

#define ADD(name, fn)                                                                              \
        g_test_add("/restart/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("crash-restores", test_crash_restores);
        ADD("gone-caller-not-restored", test_gone_caller_not_restored);
        ADD("sigterm-keeps-file", test_sigterm_keeps_file);
        ADD("removal-removes-entries", test_removal_removes_entries);
        ADD("unbindable-port-fails-then-recovers", test_unbindable_port_fails_then_recovers);
        ADD("corrupt-file-set-aside", test_corrupt_file_set_aside);
        ADD("invalid-entry-skipped", test_invalid_entry_skipped);
        ADD("unreadable-file-set-aside", test_unreadable_file_set_aside);
#undef ADD
        return g_test_run();
}
