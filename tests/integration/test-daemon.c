/* The daemon's life: name, readiness, properties, introspection, second instance, shutdown */
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "testlib.h"

static void test_ready_after_name(void) {
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_spawn(b, NULL, TRUE);
        char buf[512];

        /* READY=1 is sent only after the name is owned: when it arrives, the name has an owner. */
        g_assert_true(test_daemon_read_notify(d, buf, sizeof buf, 10000));
        g_assert_nonnull(strstr(buf, "READY=1"));
        g_assert_true(test_name_has_owner(b));

        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        /* STOPPING=1 comes on the way out. */
        g_assert_true(test_daemon_read_notify(d, buf, sizeof buf, 1000));
        g_assert_nonnull(strstr(buf, "STOPPING=1"));
        test_daemon_free(d);
        test_bus_free(b);
}

static void test_manager_properties(void) {
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_start(b);
        g_autoptr(GVariant) version = NULL;

        version = test_get_property(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "Version");
        g_assert_cmpstr(g_variant_get_string(version, NULL), ==, PACKAGE_VERSION);
        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes"), ==, 0);
        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==, 0);
        g_assert_cmpuint(test_get_u64(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ActiveSessions"),
                         ==, 0);
        g_assert_cmpuint(test_get_u64(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "TotalSessions"),
                         ==, 0);
        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "DefaultMaxSessions"),
                         ==, 4096);
        g_assert_cmpuint(test_get_u64(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                                      "DefaultUDPIdleTimeoutUSec"),
                         ==, 60000000);

        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

static void test_daemon_options_set_defaults(void) {
        const char *args[] = { "--max-sessions=77", "--udp-idle-timeout=5", NULL };
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_spawn(b, args, FALSE);

        g_assert_true(test_daemon_wait_for_name(d, 10000));
        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "DefaultMaxSessions"),
                         ==, 77);
        g_assert_cmpuint(test_get_u64(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                                      "DefaultUDPIdleTimeoutUSec"),
                         ==, 5000000);
        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

/* Compares one interface of the live introspection with the one in interfaces/NAME.xml. */
static void assert_interface_matches(TestBus *b, const char *path, const char *iface) {
        g_autofree char *file =
                g_strdup_printf("%s/%s.xml", g_getenv("PORTPUB_INTERFACES_DIR"), iface);
        g_autoptr(GDBusNodeInfo) want_node = NULL, live_node = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *xml = NULL;
        GDBusInterfaceInfo *want, *live;
        const char *live_xml;
        GString *want_s = g_string_new(NULL), *live_s = g_string_new(NULL);

        g_assert_true(g_file_get_contents(file, &xml, NULL, &error));
        g_assert_no_error(error);
        want_node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        reply = test_call(b, path, "org.freedesktop.DBus.Introspectable", "Introspect", NULL, "(s)",
                          &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(&s)", &live_xml);
        live_node = g_dbus_node_info_new_for_xml(live_xml, &error);
        g_assert_no_error(error);

        want = g_dbus_node_info_lookup_interface(want_node, iface);
        live = g_dbus_node_info_lookup_interface(live_node, iface);
        g_assert_nonnull(want);
        g_assert_nonnull(live);
        /* The file holds this one interface and nothing else. */
        g_assert_nonnull(want_node->interfaces[0]);
        g_assert_null(want_node->interfaces[1]);
        /* Canonical text of both: members, argument names, types, directions, annotations. */
        g_dbus_interface_info_generate_xml(want, 0, want_s);
        g_dbus_interface_info_generate_xml(live, 0, live_s);
        g_assert_cmpstr(want_s->str, ==, live_s->str);
        g_string_free(want_s, TRUE);
        g_string_free(live_s, TRUE);
}

static void test_introspection_matches_interfaces(void) {
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_start(b);
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) published = NULL;
        const char *sandbox_path, *port_path;
        guint16 hp, gp;
        const char *proto, *addr;

        assert_interface_matches(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE);

        reply = test_call(
                b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                g_variant_new_parsed(
                        "('intro', ['127.0.0.1'], [('tcp', '127.0.0.1', @q 0, @q 9)], @a{sv} {})"),
                "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(&o@a(ssqqo))", &sandbox_path, &published);
        g_assert_cmpuint(g_variant_n_children(published), ==, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", &proto, &addr, &hp, &gp, &port_path);
        assert_interface_matches(b, sandbox_path, TEST_SANDBOX_IFACE);
        assert_interface_matches(b, port_path, TEST_PORT_IFACE);

        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

static void on_stderr_done(GObject *source, GAsyncResult *res, gpointer data) {
        char **out = data;
        g_autoptr(GError) error = NULL;

        g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), res, NULL, out, &error);
        if (!*out)
                *out = g_strdup("");
}

static gboolean str_set(gpointer data) {
        return *(char **) data != NULL;
}

static void test_second_instance_fails(void) {
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_start(b);
        g_autofree char *arg = g_strdup_printf("--bus-address=%s", b->address);
        g_autoptr(GSubprocess) second = NULL;
        g_autoptr(GError) error = NULL;
        char *err = NULL;

        second = g_subprocess_new(G_SUBPROCESS_FLAGS_STDERR_PIPE | G_SUBPROCESS_FLAGS_STDOUT_SILENCE,
                                  &error, g_getenv("PORTPUBD"), arg, "--varlink=no",
                                  "--state-file=", NULL);
        g_assert_no_error(error);
        g_subprocess_communicate_utf8_async(second, NULL, NULL, on_stderr_done, &err);
        g_assert_true(test_wait_until(str_set, &err, 10000));
        g_assert_true(g_subprocess_wait(second, NULL, &error));
        g_assert_true(g_subprocess_get_if_exited(second));
        g_assert_cmpint(g_subprocess_get_exit_status(second), !=, 0);
        g_assert_nonnull(strstr(err, "io.portpub.Publisher1"));
        g_assert_nonnull(strstr(err, "owned by another process"));
        g_free(err);

        /* The first one is untouched. */
        g_assert_cmpuint(test_get_u32(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==, 0);
        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

static void test_sigterm_exits_zero(void) {
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_start(b);

        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

static void test_bus_loss_exits_nonzero(void) {
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_start(b);

        g_test_dbus_stop(b->dbus);
        g_assert_true(test_daemon_wait(d, 1000));
        g_assert_cmpint(d->exit_status, >, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

static void test_bad_option_fails(void) {
        const char *args[] = { "--max-sessions=0", NULL };
        TestBus *b = test_bus_new();
        TestDaemon *d = test_daemon_spawn(b, args, FALSE);

        g_assert_true(test_daemon_wait(d, 5000));
        g_assert_cmpint(d->exit_status, >, 0);
        test_daemon_free(d);
        test_bus_free(b);
}

static char *status_field(GPid pid, const char *name) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", (int) pid);
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;

        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, name) && (*l)[strlen(name)] == ':')
                        return g_strstrip(g_strdup(*l + strlen(name) + 1));
        g_assert_not_reached();
}

/* A privileged port nobody holds, or 0 when there is none to try. */
static guint16 free_privileged_port(void) {
        for (guint16 port = 1000; port > 900; port--) {
                struct sockaddr_in sa = { .sin_family = AF_INET,
                                          .sin_port = htons(port),
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                int r = bind(fd, (struct sockaddr *) &sa, sizeof sa);

                close(fd);
                if (r == 0)
                        return port;
        }
        return 0;
}

/* Started as root with --run-as, the daemon keeps CAP_NET_BIND_SERVICE and nothing else, in
 * the effective, permitted and bounding sets, runs as that user, can still bind a privileged
 * port, and writes its state file as that user. */
static void test_run_as_keeps_only_net_bind_service(void) {
        g_autofree char *dir = NULL, *state = NULL, *arg = NULL, *uid = NULL, *eff = NULL;
        g_autofree char *prm = NULL, *bnd = NULL, *amb = NULL, *nnp = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        const char *args[] = { "--run-as=nobody", NULL, NULL };
        struct stat st;
        guint16 port;
        TestDaemon *d;
        TestBus *b;

        if (geteuid() != 0) {
                g_test_skip("--run-as needs the test to run as root");
                return;
        }
        dir = g_dir_make_tmp("portpub-runas-XXXXXX", &error);
        g_assert_no_error(error);
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        state = g_build_filename(dir, "run", "state", NULL);
        arg = g_strdup_printf("--state-file=%s", state);
        args[1] = arg;
        b = test_bus_new();
        d = test_daemon_spawn(b, args, FALSE);
        g_assert_true(test_daemon_wait_for_name(d, 10000));

        uid = status_field(d->pid, "Uid");
        g_assert_cmpstr(uid, ==, "65534\t65534\t65534\t65534");
        eff = status_field(d->pid, "CapEff");
        prm = status_field(d->pid, "CapPrm");
        bnd = status_field(d->pid, "CapBnd");
        amb = status_field(d->pid, "CapAmb");
        nnp = status_field(d->pid, "NoNewPrivs");
        /* Bit 10: CAP_NET_BIND_SERVICE. */
        g_assert_cmpstr(eff, ==, "0000000000000400");
        g_assert_cmpstr(prm, ==, "0000000000000400");
        g_assert_cmpstr(bnd, ==, "0000000000000400");
        g_assert_cmpstr(amb, ==, "0000000000000000");
        g_assert_cmpstr(nnp, ==, "1");

        port = free_privileged_port();
        if (port != 0) {
                reply = test_call(b, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                                  g_variant_new_parsed("('low', ['127.0.0.1'], [('tcp', "
                                                       "'127.0.0.1', %q, %q)], @a{sv} {})",
                                                       port, (guint16) 80),
                                  "(oa(ssqqo))", &error);
                g_assert_no_error(error);
                g_assert_cmpint(stat(state, &st), ==, 0);
                g_assert_cmpuint(st.st_uid, ==, 65534);
        }
        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_bus_free(b);
        (void) unlink(state);
        {
                g_autofree char *run = g_build_filename(dir, "run", NULL);

                (void) rmdir(run);
        }
        (void) rmdir(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/daemon/ready-after-name", test_ready_after_name);
        g_test_add_func("/daemon/manager-properties", test_manager_properties);
        g_test_add_func("/daemon/options-set-defaults", test_daemon_options_set_defaults);
        g_test_add_func("/daemon/introspection-matches-interfaces",
                        test_introspection_matches_interfaces);
        g_test_add_func("/daemon/second-instance-fails", test_second_instance_fails);
        g_test_add_func("/daemon/sigterm-exits-zero", test_sigterm_exits_zero);
        g_test_add_func("/daemon/bus-loss-exits-nonzero", test_bus_loss_exits_nonzero);
        g_test_add_func("/daemon/bad-option-fails", test_bad_option_fails);
        g_test_add_func("/daemon/run-as-keeps-only-net-bind-service",
                        test_run_as_keeps_only_net_bind_service);
        return g_test_run();
}
