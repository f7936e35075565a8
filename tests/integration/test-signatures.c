/* Every method of the daemon's three interfaces called with every wrong signature, against the real
 * daemon: each call gets a named error at once and changes nothing
 *
 * The methods come from the daemon's own introspection of the manager, a sandbox and a port
 * (paths from a real publish, as root, so authorization never stands in the way). Each is called
 * with no arguments, with each argument replaced by every other basic type and by a variant, an
 * array and a struct, with one argument extra and with the last one missing. Every call must end
 * in org.freedesktop.DBus.Error.InvalidArgs (not a timeout, not a success), and after it NPorts,
 * NSandboxes, ListPorts and the state file's bytes must be as before, with no signal sent. Then
 * every property is set, with its own type and with a wrong one: the interfaces have no writable
 * property, so each Set is refused, again changing nothing. */
#include <string.h>

#include "testlib.h"

/* The types an argument is replaced by: every basic type but h (a file descriptor needs a file
 * descriptor list), and a container of each kind. */
static const char *const replacements[] = {
        "y", "b", "n", "q", "i", "u", "x", "t", "d", "s", "o", "g", "v", "au", "ay", "(u)",
};

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        char *sandbox_path, *port_path;
        guint subscription;
        guint n_signals;
        /* What must not change */
        guint32 n_ports, n_sandboxes;
        char *ports;
        char *state;
        gsize state_size;
        guint n_calls;
} Fixture;

static void on_signal(GDBusConnection *conn, const char *sender, const char *path,
                      const char *iface, const char *member, GVariant *params, gpointer data) {
        ((Fixture *) data)->n_signals++;
}

static char *list_ports(Fixture *f) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE,
                                          "ListPorts", NULL, "(a(sssqsqso))", &error);

        g_assert_no_error(error);
        return g_variant_print(v, FALSE);
}

static void read_state(Fixture *f, char **ret, gsize *ret_size) {
        g_autoptr(GError) error = NULL;

        g_assert_true(g_file_get_contents(f->daemon->state_file, ret, ret_size, &error));
        g_assert_no_error(error);
}

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GVariant) ports = NULL;
        guint16 host_port, guest_port;
        const char *proto, *addr;

        if (getuid() != 0)
                return;
        f->bus = test_bus_new();
        f->daemon = test_daemon_start(f->bus);
        reply = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                          g_variant_new_parsed("('sig', ['127.0.0.2'], [('tcp', '127.0.0.1', "
                                               "@q 0, @q 9)], @a{sv} {})"),
                          "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(o@a(ssqqo))", &f->sandbox_path, &ports);
        g_variant_get_child(ports, 0, "(&s&sqqo)", &proto, &addr, &host_port, &guest_port,
                            &f->port_path);
        f->subscription = g_dbus_connection_signal_subscribe(f->bus->conn, TEST_BUS_NAME, NULL, NULL,
                                                             NULL, NULL, G_DBUS_SIGNAL_FLAGS_NONE,
                                                             on_signal, f, NULL);
        /* The baseline, once the publish's own signals are in. */
        test_sync_daemon(f->bus);
        f->n_signals = 0;
        f->n_ports = test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts");
        f->n_sandboxes = test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes");
        g_assert_cmpuint(f->n_ports, ==, 1);
        g_assert_cmpuint(f->n_sandboxes, ==, 1);
        f->ports = list_ports(f);
        read_state(f, &f->state, &f->state_size);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        if (!f->bus)
                return;
        g_dbus_connection_signal_unsubscribe(f->bus->conn, f->subscription);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_bus_free(f->bus);
        g_free(f->sandbox_path);
        g_free(f->port_path);
        g_free(f->ports);
        g_free(f->state);
}

/* Nothing changed since the setup, and no signal was sent. */
static void assert_unchanged(Fixture *f, const char *what) {
        g_autofree char *ports = NULL, *state = NULL;
        gsize state_size;

        test_sync_daemon(f->bus);
        if (f->n_signals != 0)
                g_error("%s: %u signals were sent", what, f->n_signals);
        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==,
                         f->n_ports);
        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes"),
                         ==, f->n_sandboxes);
        ports = list_ports(f);
        if (strcmp(ports, f->ports) != 0)
                g_error("%s: ListPorts changed: %s, was %s", what, ports, f->ports);
        read_state(f, &state, &state_size);
        if (state_size != f->state_size || memcmp(state, f->state, state_size) != 0)
                g_error("%s: the state file changed", what);
}

/* A value of type t (one complete type) that is well-formed for its type: a new reference, not
 * floating (g_variant_parse()'s). */
static GVariant *value_of_type(const char *t) {
        const char *text;
        GVariant *v;

        switch (t[0]) {
        case 's':
                text = "'sig'";
                break;
        case 'o':
                text = "'/'";
                break;
        case 'g':
                text = "'s'";
                break;
        case 'b':
                text = "true";
                break;
        case 'd':
                text = "1.5";
                break;
        case 'v':
                text = "<'sig'>";
                break;
        case 'a':
                /* Empty: the face must refuse the signature, not the contents. */
                text = "[]";
                break;
        case '(':
                text = strcmp(t, "(u)") == 0 ? "(@u 1,)" : NULL;
                break;
        default:
                text = "1";
        }
        g_assert_nonnull(text);
        v = g_variant_parse(G_VARIANT_TYPE(t), text, NULL, NULL, NULL);
        g_assert_nonnull(v);
        return v;
}

/* Calls with the arguments given (the caller keeps its references) and wants InvalidArgs. */
static void call_wrong(Fixture *f, const char *path, const char *iface, const char *method,
                       GPtrArray *args, const char *how) {
        g_autofree char *what = NULL, *message = NULL;
        GVariant *params;

        params = g_variant_new_tuple((GVariant **) args->pdata, args->len);
        what = g_strdup_printf("%s.%s(%s) on %s [%s]", iface, method,
                               g_variant_get_type_string(params), path, how);
        g_test_message("%s", what);
        message = test_call_expect_error(f->bus, path, iface, method, params,
                                         "org.freedesktop.DBus.Error.InvalidArgs");
        g_assert_nonnull(message);
        f->n_calls++;
        assert_unchanged(f, what);
}

/* args[i] for the method's arguments, each of its own type. */
static GPtrArray *right_args(GDBusMethodInfo *m, guint n) {
        GPtrArray *a = g_ptr_array_new();

        for (guint i = 0; i < n; i++)
                g_ptr_array_add(a, value_of_type(m->in_args[i]->signature));
        return a;
}

/* Takes args and the references in it (value_of_type()'s, not floating). */
static void call_with(Fixture *f, const char *path, const char *iface, GDBusMethodInfo *m,
                      GPtrArray *args, const char *how) {
        call_wrong(f, path, iface, m->name, args, how);
        for (guint i = 0; i < args->len; i++)
                g_variant_unref(args->pdata[i]);
        g_ptr_array_free(args, TRUE);
}

static void method_wrong_signatures(Fixture *f, const char *path, const char *iface,
                                    GDBusMethodInfo *m) {
        guint n = 0;

        while (m->in_args && m->in_args[n])
                n++;
        if (n > 0) {
                call_with(f, path, iface, m, g_ptr_array_new(), "no arguments");
                call_with(f, path, iface, m, right_args(m, n - 1), "the last missing");
        }
        for (guint i = 0; i < n; i++)
                for (size_t k = 0; k < G_N_ELEMENTS(replacements); k++) {
                        GPtrArray *a;
                        g_autofree char *how = NULL;

                        if (strcmp(replacements[k], m->in_args[i]->signature) == 0)
                                continue;
                        a = right_args(m, n);
                        g_variant_unref(a->pdata[i]);
                        a->pdata[i] = value_of_type(replacements[k]);
                        how = g_strdup_printf("argument %u '%s' as '%s'", i,
                                              m->in_args[i]->signature, replacements[k]);
                        call_with(f, path, iface, m, a, how);
                }
        for (size_t k = 0; k < G_N_ELEMENTS(replacements); k++) {
                GPtrArray *a = right_args(m, n);
                g_autofree char *how = g_strdup_printf("one extra '%s'", replacements[k]);

                g_ptr_array_add(a, value_of_type(replacements[k]));
                call_with(f, path, iface, m, a, how);
        }
}

static GDBusInterfaceInfo *introspect(Fixture *f, const char *path, const char *iface,
                                      GDBusNodeInfo **ret_node) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = NULL;
        const char *xml;
        GDBusInterfaceInfo *info;

        v = test_call(f->bus, path, "org.freedesktop.DBus.Introspectable", "Introspect", NULL,
                      "(s)", &error);
        g_assert_no_error(error);
        g_variant_get(v, "(&s)", &xml);
        *ret_node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        info = g_dbus_node_info_lookup_interface(*ret_node, iface);
        g_assert_nonnull(info);
        return info;
}

static const char *object_path(Fixture *f, const char *iface) {
        if (strcmp(iface, TEST_MANAGER_IFACE) == 0)
                return TEST_MANAGER_PATH;
        return strcmp(iface, TEST_SANDBOX_IFACE) == 0 ? f->sandbox_path : f->port_path;
}

/* The daemon's introspection of iface on the object that has it; NULL (the test skipped) when
 * not root. */
static GDBusInterfaceInfo *interface_info(Fixture *f, const char *iface, const char **ret_path,
                                          GDBusNodeInfo **ret_node) {
        if (!f->bus) {
                g_test_skip("needs root: the calls must not be refused for want of authorization");
                return NULL;
        }
        *ret_path = object_path(f, iface);
        return introspect(f, *ret_path, iface, ret_node);
}

static void test_methods(Fixture *f, gconstpointer data) {
        const char *iface = data, *path;
        g_autoptr(GDBusNodeInfo) node = NULL;
        GDBusInterfaceInfo *info = interface_info(f, iface, &path, &node);
        guint n_methods = 0;

        if (!info)
                return;
        for (GDBusMethodInfo **m = info->methods; m && *m; m++, n_methods++)
                method_wrong_signatures(f, path, iface, *m);
        g_assert_cmpuint(n_methods, >, 0);
        g_test_message("%u methods, %u wrong calls, every one InvalidArgs, nothing changed",
                       n_methods, f->n_calls);
}

/* Set on every property, with its own type and with another: all are read-only. */
static void test_properties(Fixture *f, gconstpointer data) {
        const char *iface = data, *path;
        g_autoptr(GDBusNodeInfo) node = NULL;
        GDBusInterfaceInfo *info = interface_info(f, iface, &path, &node);
        guint n = 0;

        if (!info)
                return;
        for (GDBusPropertyInfo **p = info->properties; p && *p; p++, n++) {
                const char *wrong = strcmp((*p)->signature, "s") == 0 ? "u" : "s";
                const char *types[] = { (*p)->signature, wrong };

                g_assert_false((*p)->flags & G_DBUS_PROPERTY_INFO_FLAGS_WRITABLE);
                for (size_t k = 0; k < G_N_ELEMENTS(types); k++) {
                        g_autoptr(GError) error = NULL;
                        g_autoptr(GVariant) v = NULL, value = value_of_type(types[k]);
                        g_autofree char *remote = NULL, *what = NULL;

                        what = g_strdup_printf("Set %s.%s to a '%s' on %s", iface, (*p)->name,
                                               types[k], path);
                        v = test_call(f->bus, path, "org.freedesktop.DBus.Properties", "Set",
                                      g_variant_new("(ssv)", iface, (*p)->name, value), NULL, &error);
                        g_assert_null(v);
                        g_assert_nonnull(error);
                        remote = g_dbus_error_get_remote_error(error);
                        if (g_strcmp0(remote, "org.freedesktop.DBus.Error.PropertyReadOnly") != 0 &&
                            g_strcmp0(remote, "org.freedesktop.DBus.Error.InvalidArgs") != 0)
                                g_error("%s: got %s: %s", what, remote, error->message);
                        assert_unchanged(f, what);
                }
        }
        g_assert_cmpuint(n, >, 0);
}

int main(int argc, char *argv[]) {
        static const char *const ifaces[] = { TEST_MANAGER_IFACE, TEST_SANDBOX_IFACE,
                                              TEST_PORT_IFACE };

        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(ifaces); i++) {
                const char *name = strrchr(ifaces[i], '.') + 1;
                g_autofree char *methods = g_strdup_printf("/signatures/%s/methods", name);
                g_autofree char *props = g_strdup_printf("/signatures/%s/properties", name);

                g_test_add(methods, Fixture, ifaces[i], fixture_setup, test_methods,
                           fixture_teardown);
                g_test_add(props, Fixture, ifaces[i], fixture_setup, test_properties,
                           fixture_teardown);
        }
        return g_test_run();
}
