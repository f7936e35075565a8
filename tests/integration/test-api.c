/* The D-Bus API against the real daemon: every method, signal, property and error */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        GPtrArray *signals; /* of GVariant "(ss@*)": member, path, parameters */
        guint subscription;
} Fixture;

static void on_signal(GDBusConnection *conn, const char *sender, const char *path,
                      const char *iface, const char *member, GVariant *params, gpointer data) {
        Fixture *f = data;

        g_ptr_array_add(f->signals,
                        g_variant_ref_sink(g_variant_new("(ss@*)", member, path, params)));
}

/* data: the daemon's TestDaemonOptions, or NULL for the defaults. */
static void fixture_setup(Fixture *f, gconstpointer data) {
        static const TestDaemonOptions defaults = {};

        f->bus = test_bus_new();
        f->daemon = test_daemon_start_full(f->bus, data ? data : &defaults);
        f->signals = g_ptr_array_new_with_free_func((GDestroyNotify) g_variant_unref);
        f->subscription =
                g_dbus_connection_signal_subscribe(f->bus->conn, NULL, NULL, NULL, NULL, NULL,
                                                   G_DBUS_SIGNAL_FLAGS_NONE, on_signal, f, NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_dbus_connection_signal_unsubscribe(f->bus->conn, f->subscription);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        g_ptr_array_free(f->signals, TRUE);
        test_bus_free(f->bus);
}

/* Every signal sent before a reply reaches us before that reply: a Ping through the daemon makes
 * sure all its earlier signals are in f->signals. */
static void sync_signals(Fixture *f) {
        test_sync_daemon(f->bus);
}

static guint count_signals(Fixture *f, const char *member) {
        guint n = 0;

        for (guint i = 0; i < f->signals->len; i++) {
                const char *m;

                g_variant_get_child(f->signals->pdata[i], 0, "&s", &m);
                n += strcmp(m, member) == 0;
        }
        return n;
}

/* The parameters of the last signal named member, or NULL. */
static GVariant *last_signal(Fixture *f, const char *member) {
        for (guint i = f->signals->len; i > 0; i--) {
                const char *m;
                GVariant *params;

                g_variant_get_child(f->signals->pdata[i - 1], 0, "&s", &m);
                if (strcmp(m, member) == 0) {
                        g_variant_get_child(f->signals->pdata[i - 1], 2, "@*", &params);
                        return params;
                }
        }
        return NULL;
}

static GVariant *manager_call(Fixture *f, const char *method, GVariant *params,
                              const char *reply_type) {
        g_autoptr(GError) error = NULL;
        GVariant *v;

        v = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, method, params, reply_type,
                      &error);
        g_assert_no_error(error);
        return v;
}

static char *manager_error(Fixture *f, const char *method, GVariant *params, const char *error_name) {
        return test_call_expect_error(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, method, params,
                                      error_name);
}

/* Publishes one port; returns the port's object path and (optionally) the bound host port. */
static char *publish_one(Fixture *f, const char *sandbox, const char *guest, const char *proto,
                         const char *host, guint16 host_port, guint16 guest_port, GVariant *options,
                         guint16 *ret_port) {
        g_autoptr(GVariant) reply = NULL, published = NULL;
        const char *sandbox_path, *path, *rproto, *raddr;
        guint16 hp, gp;
        GVariantBuilder guests;

        g_variant_builder_init(&guests, G_VARIANT_TYPE("as"));
        if (guest)
                g_variant_builder_add(&guests, "s", guest);
        reply = manager_call(f, "PublishPorts",
                             g_variant_new("(sas@a(ssqq)@a{sv})", sandbox, &guests,
                                           g_variant_new_parsed("[(%s, %s, %q, %q)]", proto, host,
                                                                host_port, guest_port),
                                           options ? options : g_variant_new("a{sv}", NULL)),
                             "(oa(ssqqo))");
        g_variant_get(reply, "(&o@a(ssqqo))", &sandbox_path, &published);
        g_assert_cmpuint(g_variant_n_children(published), ==, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", &rproto, &raddr, &hp, &gp, &path);
        g_assert_cmpstr(rproto, ==, proto);
        g_assert_cmpuint(gp, ==, guest_port);
        if (host_port != 0)
                g_assert_cmpuint(hp, ==, host_port);
        else
                g_assert_cmpuint(hp, !=, 0);
        if (ret_port)
                *ret_port = hp;
        return g_strdup(path);
}

static guint32 n_ports(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts");
}

static guint32 n_sandboxes(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes");
}

static guint16 get_q(Fixture *f, const char *path, const char *name) {
        g_autoptr(GVariant) v = test_get_property(f->bus, path, TEST_PORT_IFACE, name);

        return g_variant_get_uint16(v);
}

static char *get_s(Fixture *f, const char *path, const char *iface, const char *name) {
        g_autoptr(GVariant) v = test_get_property(f->bus, path, iface, name);

        return g_variant_dup_string(v, NULL);
}

static gboolean have_ipv6(void) {
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        gboolean ok = fd >= 0 && bind(fd, (struct sockaddr *) &sa, sizeof sa) == 0;

        if (fd >= 0)
                close(fd);
        return ok;
}

/* "" publishes on 127.0.0.1 and ::1 with the same port; both reach the guest. */
static void test_loopback_both_families(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "g:");
        g_autofree char *path = NULL;
        g_autoptr(GVariant) listen = NULL;
        guint16 port;
        int fd;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "", 0, test_echo_port(guest), NULL, &port);
        fd = test_tcp_connect("127.0.0.1", port, 5000);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "hello4", "g:hello4");
        close(fd);
        if (have_ipv6()) {
                g_autofree char *want = g_strdup_printf("[::1]:%u", port);

                fd = test_tcp_connect("::1", port, 5000);
                g_assert_cmpint(fd, >=, 0);
                test_roundtrip(fd, "hello6", "g:hello6");
                close(fd);
                listen = test_get_property(f->bus, path, TEST_PORT_IFACE, "ListenAddresses");
                g_assert_cmpuint(g_variant_n_children(listen), ==, 2);
                g_autoptr(GVariant) second = g_variant_get_child_value(listen, 1);
                g_assert_cmpstr(g_variant_get_string(second, NULL), ==, want);
        }
        g_assert_cmpuint(get_q(f, path, "HostPort"), ==, port);
        test_echo_free(guest);
}

/* A later bind failure leaves nothing behind: no port, no sandbox, no signal, the first port free. */
static void test_all_or_nothing(Fixture *f, gconstpointer data) {
        guint16 free_port, taken_port;
        g_autofree char *msg = NULL, *needle = NULL;
        int holder, probe;

        /* The foreign program holds the second port; the first is free (we learn one by binding). */
        holder = test_tcp_listen("127.0.0.1", &taken_port);
        probe = test_tcp_listen("127.0.0.1", &free_port);
        close(probe);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        msg = manager_error(f, "PublishPorts",
                            g_variant_new_parsed("('web', ['127.0.0.1'], [('tcp', '127.0.0.1', %q, @q 80), "
                                                 "('tcp', '127.0.0.1', %q, @q 81)], @a{sv} {})",
                                                 free_port, taken_port),
                            TEST_ERROR_PREFIX "PortInUse");
        needle = g_strdup_printf("port %u", taken_port);
        g_assert_nonnull(strstr(msg, needle));
        g_assert_nonnull(strstr(msg, "'web'"));
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortPublished"), ==, 0);
        g_assert_cmpuint(count_signals(f, "SandboxNew"), ==, 0);
        g_assert_cmpuint(count_signals(f, "InterfacesAdded"), ==, 0);
        /* The first port was closed again: we can listen on it ourselves. */
        probe = test_tcp_connect("127.0.0.1", free_port, 2000);
        g_assert_cmpint(probe, ==, -ECONNREFUSED);
        close(holder);
}

static void test_port_zero(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *path = NULL;
        guint16 port;
        int fd;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, test_echo_port(guest),
                           NULL, &port);
        g_assert_cmpuint(get_q(f, path, "HostPort"), ==, port);
        fd = test_tcp_connect("127.0.0.1", port, 5000);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "zero", "zero");
        close(fd);
        test_echo_free(guest);
}

static void test_republish_is_noop(Fixture *f, gconstpointer data) {
        g_autofree char *a = NULL, *b = NULL;
        guint16 port, port2;

        a = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, &port);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);
        b = publish_one(f, "web", NULL, "tcp", "127.0.0.1", port, 80, NULL, &port2);
        g_assert_cmpstr(a, ==, b);
        g_assert_cmpuint(port, ==, port2);
        g_assert_cmpuint(n_ports(f), ==, 1);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortPublished"), ==, 0);
        g_assert_cmpuint(count_signals(f, "InterfacesAdded"), ==, 0);

        /* The same tuple to another guest port is a clash, not a retry. */
        g_free(manager_error(
                f, "PublishPorts",
                g_variant_new_parsed("('web', @as [], [('tcp', '127.0.0.1', %q, @q 81)], @a{sv} {})",
                                     port),
                TEST_ERROR_PREFIX "PortInUse"));
}

static void test_clash_names_other_sandbox(Fixture *f, gconstpointer data) {
        g_autofree char *a = NULL, *msg = NULL;
        guint16 port;

        a = publish_one(f, "alpha", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, &port);
        msg = manager_error(
                f, "PublishPorts",
                g_variant_new_parsed(
                        "('beta', ['127.0.0.1'], [('tcp', '127.0.0.1', %q, @q 80)], @a{sv} {})", port),
                TEST_ERROR_PREFIX "PortInUse");
        g_assert_nonnull(strstr(msg, "'alpha'"));
        g_assert_nonnull(strstr(msg, "'beta'"));
        g_free(msg);
        /* An overlapping endpoint ("*" covers 127.0.0.1) names the owner too. */
        msg = manager_error(
                f, "PublishPorts",
                g_variant_new_parsed("('beta', ['127.0.0.1'], [('tcp', '*', %q, @q 80)], @a{sv} {})",
                                     port),
                TEST_ERROR_PREFIX "PortInUse");
        g_assert_nonnull(strstr(msg, "'alpha'"));
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
}

typedef struct BadCall {
        const char *method;
        const char *params; /* GVariant text */
        const char *error; /* short name; "InvalidArgs" is org.freedesktop.DBus.Error's */
        const char *quote; /* the message must contain this */
} BadCall;

static const BadCall bad_calls[] = {
        { "PublishPorts", "('', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "''" },
        { "PublishPorts", "('.hidden', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'.hidden'" },
        { "PublishPorts", "('-x', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'-x'" },
        { "PublishPorts", "('a b', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'a b'" },
        { "PublishPorts", "('a/b', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'a/b'" },
        { "PublishPorts", "('ünï', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'ünï'" },
        { "PublishPorts",
          "('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'aaaaaaaa" },
        { "PublishPorts", "('web', ['localhost'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'localhost'" },
        { "PublishPorts", "('web', ['[::1]'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'[::1]'" },
        { "PublishPorts", "('web', ['10.0.0.1:80'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'10.0.0.1:80'" },
        { "PublishPorts", "('web', ['127.0.0.1', '127.0.0.2'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'127.0.0.2'" },
        { "PublishPorts", "('web', ['::1', '::2'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'::2'" },
        { "PublishPorts",
          "('web', ['127.0.0.1', '::1', '::2'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'::2'" },
        { "PublishPorts", "('web', ['0.0.0.0'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'0.0.0.0'" },
        { "PublishPorts", "('web', ['224.0.0.1'], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'224.0.0.1'" },
        { "PublishPorts", "('web', [''], [('tcp', '', @q 0, @q 80)], @a{sv} {})", "InvalidArgs",
          "''" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('sctp', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'sctp'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('TCP', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'TCP'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('', '', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "''" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', 'localhost', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'localhost'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '[::1]', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'[::1]'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '127.0.0.1:80', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'127.0.0.1:80'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '127.0.0.256', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'127.0.0.256'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '**', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'**'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', ' 127.0.0.1', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "' 127.0.0.1'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '239.1.1.1', @q 0, @q 80)], @a{sv} {})",
          "InvalidArgs", "'239.1.1.1'" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 0)], @a{sv} {})",
          "InvalidArgs", "guest port 0" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '127.0.0.1', @q 40001, @q 80), ('tcp', '127.0.0.1', @q 40001, @q 81)], @a{sv} {})",
          "InvalidArgs", "port 40001" },
        { "PublishPorts", "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'Bogus': <true>})",
          "InvalidArgs", "'Bogus'" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'MaxSessions': <'10'>})",
          "InvalidArgs", "'MaxSessions'" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'MaxSessions': <@u 0>})",
          "InvalidArgs", "MaxSessions 0" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'MaxSessions': <@u 4000000000>})",
          "InvalidArgs", "4000000000" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'IdleTimeoutUSec': <@u 5>})",
          "InvalidArgs", "'IdleTimeoutUSec'" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'IdleTimeoutUSec': <@t 18446744073709551615>})",
          "InvalidArgs", "18446744073709551615" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('udp', '', @q 0, @q 80)], {'IdleTimeoutUSec': <@t 0>})",
          "InvalidArgs", "IdleTimeoutUSec 0" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'ProxyProtocol': <'v3'>})",
          "InvalidArgs", "'v3'" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('udp', '', @q 0, @q 80)], {'ProxyProtocol': <'v1'>})",
          "InvalidArgs", "udp" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'BindToCaller': <@u 1>})",
          "InvalidArgs", "'BindToCaller'" },
        { "PublishPorts",
          "('web', ['127.0.0.1'], [('tcp', '', @q 0, @q 80)], {'ProxyProtocol': <@b true>})",
          "InvalidArgs", "'ProxyProtocol'" },
        { "PublishPorts", "('fresh', @as [], [('tcp', '', @q 0, @q 80)], @a{sv} {})",
          "NoGuestAddress", "'fresh'" },
        { "UnpublishPorts", "('nosuch', [('tcp', '', @q 1)])", "NoSuchSandbox", "'nosuch'" },
        { "UnpublishPorts", "('bad id', [('tcp', '', @q 1)])", "InvalidArgs", "'bad id'" },
        { "UnpublishPorts", "('web', [('tcp', '', @q 1)])", "NoSuchPort", "port 1" },
        { "UnpublishPorts", "('web', [('icmp', '', @q 1)])", "InvalidArgs", "'icmp'" },
        { "UnpublishPorts", "('web', [('tcp', 'host.example', @q 1)])", "InvalidArgs",
          "'host.example'" },
        { "RemoveSandbox", "('nosuch',)", "NoSuchSandbox", "'nosuch'" },
        { "RemoveSandbox", "('',)", "InvalidArgs", "''" },
        { "SetGuestAddresses", "('web', ['not-an-ip'])", "InvalidArgs", "'not-an-ip'" },
        { "SetGuestAddresses", "('web', @as [])", "InvalidArgs", "'web'" },
        { "SetGuestAddresses", "('web', ['127.0.0.1', '127.0.0.2'])", "InvalidArgs", "'127.0.0.2'" },
        { "SetGuestAddresses", "('nosuch', ['127.0.0.1'])", "NoSuchSandbox", "'nosuch'" },
        { "GetSandbox", "('nosuch',)", "NoSuchSandbox", "'nosuch'" },
        { "GetSandbox", "('x/y',)", "InvalidArgs", "'x/y'" },
        { "GetPort", "('tcp', '', @q 1)", "NoSuchPort", "port 1" },
        { "GetPort", "('gre', '', @q 1)", "InvalidArgs", "'gre'" },
        { "GetPort", "('tcp', 'example.org', @q 1)", "InvalidArgs", "'example.org'" },
};

/* Every malformed input gets its named error quoting the bad value, and changes nothing. */
static void test_malformed_inputs(Fixture *f, gconstpointer data) {
        g_autofree char *path = NULL;
        guint32 ports, sandboxes;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, NULL);
        ports = n_ports(f);
        sandboxes = n_sandboxes(f);
        g_assert_cmpuint(G_N_ELEMENTS(bad_calls), >=, 40);
        for (size_t i = 0; i < G_N_ELEMENTS(bad_calls); i++) {
                const BadCall *c = &bad_calls[i];
                g_autofree char *name = NULL, *msg = NULL;
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) params = g_variant_parse(NULL, c->params, NULL, NULL, &error);

                g_assert_no_error(error);
                if (strcmp(c->error, "InvalidArgs") == 0)
                        name = g_strdup("org.freedesktop.DBus.Error.InvalidArgs");
                else
                        name = g_strconcat(TEST_ERROR_PREFIX, c->error, NULL);
                msg = manager_error(f, c->method, params, name);
                if (!strstr(msg, c->quote))
                        g_error("%s%s: message \"%s\" does not quote \"%s\"", c->method, c->params,
                                msg, c->quote);
                g_assert_cmpuint(n_ports(f), ==, ports);
                g_assert_cmpuint(n_sandboxes(f), ==, sandboxes);
        }
}

static void test_limit_ports_per_call(Fixture *f, gconstpointer data) {
        GVariantBuilder ports;
        g_autofree char *msg = NULL;

        g_variant_builder_init(&ports, G_VARIANT_TYPE("a(ssqq)"));
        for (guint i = 0; i < 1025; i++)
                g_variant_builder_add(&ports, "(ssqq)", "tcp", "127.0.0.1", (guint16) (20000 + i),
                                      (guint16) 80);
        msg = manager_error(f, "PublishPorts",
                            g_variant_new("(s@asa(ssqq)@a{sv})", "web",
                                          g_variant_new_strv((const char *[]){ "127.0.0.1" }, 1),
                                          &ports, g_variant_new("a{sv}", NULL)),
                            TEST_ERROR_PREFIX "LimitExceeded");
        g_assert_nonnull(strstr(msg, "1024"));
        g_assert_cmpuint(n_ports(f), ==, 0);
}

/* TotalSessions and the byte counters match what went through. */
static void test_counters(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "tag:");
        g_autofree char *path = NULL;
        guint16 port;
        int fd;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, test_echo_port(guest),
                           NULL, &port);
        for (int i = 0; i < 3; i++) {
                fd = test_tcp_connect("127.0.0.1", port, 5000);
                g_assert_cmpint(fd, >=, 0);
                test_roundtrip(fd, "0123456789", "tag:0123456789");
                close(fd);
        }
        /* 3 x 10 bytes to the guest, 3 x 14 back. */
        g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "TotalSessions"), ==, 3);
        g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "BytesToGuest"), ==, 30);
        g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "BytesFromGuest"), ==, 42);
        g_assert_cmpuint(test_get_u64(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "TotalSessions"),
                         ==, 3);
        g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "FailedSessions"), ==, 0);
        test_echo_free(guest);
}

/* ListPorts and each port's GetAll tell the same story. */
static void test_list_ports_matches_getall(Fixture *f, gconstpointer data) {
        g_autofree char *a = NULL, *b = NULL, *c = NULL;
        g_autoptr(GVariant) list = NULL, ports = NULL;
        GVariantIter iter;
        const char *sandbox, *proto, *host, *guest, *state, *path;
        guint16 hport, gport;
        guint n = 0;

        a = publish_one(f, "one", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, NULL);
        b = publish_one(f, "one", NULL, "udp", "*", 0, 53, NULL, NULL);
        c = publish_one(f, "two", "::1", "tcp", "", 0, 22, NULL, NULL);
        list = manager_call(f, "ListPorts", NULL, "(a(sssqsqso))");
        ports = g_variant_get_child_value(list, 0);
        g_variant_iter_init(&iter, ports);
        while (g_variant_iter_next(&iter, "(&s&s&sq&sq&s&o)", &sandbox, &proto, &host, &hport,
                                   &guest, &gport, &state, &path)) {
                g_autoptr(GVariant) all = NULL, props = NULL;
                const char *v;
                guint16 q;

                all = test_call(f->bus, path, "org.freedesktop.DBus.Properties", "GetAll",
                                g_variant_new("(s)", TEST_PORT_IFACE), "(a{sv})", NULL);
                g_assert_nonnull(all);
                props = g_variant_get_child_value(all, 0);
                g_assert_true(g_variant_lookup(props, "Sandbox", "&s", &v));
                g_assert_cmpstr(v, ==, sandbox);
                g_assert_true(g_variant_lookup(props, "Protocol", "&s", &v));
                g_assert_cmpstr(v, ==, proto);
                g_assert_true(g_variant_lookup(props, "HostAddress", "&s", &v));
                g_assert_cmpstr(v, ==, host);
                g_assert_true(g_variant_lookup(props, "HostPort", "q", &q));
                g_assert_cmpuint(q, ==, hport);
                g_assert_true(g_variant_lookup(props, "GuestAddress", "&s", &v));
                g_assert_cmpstr(v, ==, guest);
                g_assert_true(g_variant_lookup(props, "GuestPort", "q", &q));
                g_assert_cmpuint(q, ==, gport);
                g_assert_true(g_variant_lookup(props, "State", "&s", &v));
                g_assert_cmpstr(v, ==, state);
                n++;
        }
        g_assert_cmpuint(n, ==, 3);
        g_assert_cmpuint(n, ==, n_ports(f));

        g_autoptr(GVariant) sl = manager_call(f, "ListSandboxes", NULL, "(a(sou))");
        g_autoptr(GVariant) sandboxes = g_variant_get_child_value(sl, 0);
        g_assert_cmpuint(g_variant_n_children(sandboxes), ==, 2);
}

static void test_unpublish(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *path = NULL;
        g_autoptr(GVariant) sig = NULL;
        const char *sandbox, *proto, *host, *spath, *reason;
        guint16 port, sport;
        int fd;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, test_echo_port(guest),
                           NULL, &port);
        /* An open connection is closed with its port. */
        fd = test_tcp_connect("127.0.0.1", port, 5000);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "x", "x");
        g_autoptr(GVariant) r =
                manager_call(f, "UnpublishPorts",
                             g_variant_new_parsed("('web', [('tcp', '127.0.0.1', %q)])", port), "()");
        g_assert_cmpint(read(fd, (char[1]){}, 1), <=, 0);
        close(fd);
        g_assert_cmpint(test_tcp_connect("127.0.0.1", port, 2000), ==, -ECONNREFUSED);
        g_assert_cmpuint(n_ports(f), ==, 0);
        sync_signals(f);
        sig = last_signal(f, "PortUnpublished");
        g_assert_nonnull(sig);
        g_variant_get(sig, "(&s&s&sq&o&s)", &sandbox, &proto, &host, &sport, &spath, &reason);
        g_assert_cmpstr(sandbox, ==, "web");
        g_assert_cmpstr(proto, ==, "tcp");
        g_assert_cmpstr(host, ==, "127.0.0.1");
        g_assert_cmpuint(sport, ==, port);
        g_assert_cmpstr(spath, ==, path);
        g_assert_cmpstr(reason, ==, "request");
        g_assert_cmpuint(count_signals(f, "InterfacesRemoved"), ==, 1);
        /* The object is gone; the sandbox stays, with no ports. */
        g_free(test_call_expect_error(f->bus, path, TEST_PORT_IFACE, "Unpublish", NULL,
                                      "org.freedesktop.DBus.Error.UnknownObject"));
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        test_echo_free(guest);
}

/* All-or-nothing for unpublishing too: one unknown tuple and nothing is removed. */
static void test_unpublish_validates_all_first(Fixture *f, gconstpointer data) {
        g_autofree char *path = NULL, *msg = NULL;
        guint16 port;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, &port);
        msg = manager_error(
                f, "UnpublishPorts",
                g_variant_new_parsed("('web', [('tcp', '127.0.0.1', %q), ('udp', '127.0.0.1', %q)])",
                                     port, port),
                TEST_ERROR_PREFIX "NoSuchPort");
        g_assert_nonnull(strstr(msg, "udp"));
        g_assert_cmpuint(n_ports(f), ==, 1);
}

static void test_remove_sandbox(Fixture *f, gconstpointer data) {
        g_autofree char *a = NULL, *b = NULL;
        g_autoptr(GVariant) sig = NULL, r = NULL;
        const char *reason, *id, *spath;
        guint16 port;

        a = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, &port);
        b = publish_one(f, "web", NULL, "udp", "127.0.0.1", 0, 53, NULL, NULL);
        g_assert_cmpuint(n_ports(f), ==, 2);
        r = manager_call(f, "RemoveSandbox", g_variant_new("(s)", "web"), "()");
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpint(test_tcp_connect("127.0.0.1", port, 2000), ==, -ECONNREFUSED);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 2);
        sig = last_signal(f, "PortUnpublished");
        g_variant_get_child(sig, 5, "&s", &reason);
        g_assert_cmpstr(reason, ==, "sandbox-removed");
        g_variant_unref(sig);
        sig = last_signal(f, "SandboxRemoved");
        g_assert_nonnull(sig);
        g_variant_get(sig, "(&s&o)", &id, &spath);
        g_assert_cmpstr(id, ==, "web");
        g_assert_cmpstr(spath, ==, "/io/portpub/Publisher1/sandbox/web");
        g_free(manager_error(f, "GetSandbox", g_variant_new("(s)", "web"),
                             TEST_ERROR_PREFIX "NoSuchSandbox"));
}

/* New sessions go to the new address; the open one stays where it was. */
static void test_set_guest_addresses_retargets_new_sessions(Fixture *f, gconstpointer data) {
        TestEcho *one = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "one:");
        TestEcho *two = test_echo_new(IPPROTO_TCP, "127.0.0.3", test_echo_port(one), "two:");
        g_autofree char *path = NULL, *sandbox = NULL, *guest = NULL;
        g_autoptr(GVariant) r = NULL, addrs = NULL;
        guint16 port;
        int old_fd, new_fd;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, test_echo_port(one), NULL,
                           &port);
        old_fd = test_tcp_connect("127.0.0.1", port, 5000);
        test_roundtrip(old_fd, "a", "one:a");
        r = manager_call(f, "SetGuestAddresses",
                         g_variant_new_parsed("('web', ['127.0.0.3', '::1'])"), "()");
        new_fd = test_tcp_connect("127.0.0.1", port, 5000);
        test_roundtrip(new_fd, "b", "two:b");
        test_roundtrip(old_fd, "c", "one:c");
        close(old_fd);
        close(new_fd);
        guest = get_s(f, path, TEST_PORT_IFACE, "GuestAddress");
        g_assert_cmpstr(guest, ==, "127.0.0.3");
        sandbox = g_strdup("/io/portpub/Publisher1/sandbox/web");
        addrs = test_get_property(f->bus, sandbox, TEST_SANDBOX_IFACE, "GuestAddresses");
        g_assert_cmpuint(g_variant_n_children(addrs), ==, 2);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PropertiesChanged"), >=, 2);
        test_echo_free(one);
        test_echo_free(two);
}

/* A listener of one family reaches a guest that has only the other family's address. */
static void test_guest_family_fallback(Fixture *f, gconstpointer data) {
        TestEcho *guest;
        g_autofree char *path = NULL;
        guint16 port;
        int fd;

        if (!have_ipv6()) {
                g_test_skip("no IPv6 on this host");
                return;
        }
        guest = test_echo_new(IPPROTO_TCP, "::1", 0, "v6:");
        path = publish_one(f, "six", "::1", "tcp", "127.0.0.1", 0, test_echo_port(guest), NULL,
                           &port);
        fd = test_tcp_connect("127.0.0.1", port, 5000);
        test_roundtrip(fd, "hi", "v6:hi");
        close(fd);
        test_echo_free(guest);
}

static void test_get_sandbox_and_port(Fixture *f, gconstpointer data) {
        g_autofree char *path = NULL, *id = NULL;
        g_autoptr(GVariant) r = NULL, r2 = NULL;
        const char *o;
        guint16 port;

        path = publish_one(f, "my.box-1_x", "127.0.0.1", "udp", "127.0.0.1", 0, 53, NULL, &port);
        r = manager_call(f, "GetSandbox", g_variant_new("(s)", "my.box-1_x"), "(o)");
        g_variant_get(r, "(&o)", &o);
        g_assert_true(g_str_has_prefix(o, "/io/portpub/Publisher1/sandbox/"));
        id = get_s(f, o, TEST_SANDBOX_IFACE, "Id");
        g_assert_cmpstr(id, ==, "my.box-1_x");
        g_assert_cmpuint(test_get_u32(f->bus, o, TEST_SANDBOX_IFACE, "Owner"), ==, getuid());
        r2 = manager_call(f, "GetPort", g_variant_new("(ssq)", "udp", "127.0.0.1", port), "(o)");
        g_variant_get(r2, "(&o)", &o);
        g_assert_cmpstr(o, ==, path);
        /* Literal addresses are compared in canonical form. */
        g_free(manager_error(f, "GetPort", g_variant_new("(ssq)", "tcp", "127.0.0.1", port),
                             TEST_ERROR_PREFIX "NoSuchPort"));
}

static void test_signals_on_publish(Fixture *f, gconstpointer data) {
        g_autofree char *path = NULL;
        g_autoptr(GVariant) sig = NULL;
        const char *sandbox, *proto, *host, *spath;
        guint16 port, sport;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, &port);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "SandboxNew"), ==, 1);
        g_assert_cmpuint(count_signals(f, "PortPublished"), ==, 1);
        g_assert_cmpuint(count_signals(f, "InterfacesAdded"), ==, 2);
        sig = last_signal(f, "PortPublished");
        g_variant_get(sig, "(&s&s&sq&o)", &sandbox, &proto, &host, &sport, &spath);
        g_assert_cmpstr(sandbox, ==, "web");
        g_assert_cmpstr(host, ==, "127.0.0.1");
        g_assert_cmpuint(sport, ==, port);
        g_assert_cmpstr(spath, ==, path);
        /* NPorts and NSandboxes announce their change. */
        g_assert_cmpuint(count_signals(f, "PropertiesChanged"), >=, 1);

        /* ObjectManager knows both objects. */
        g_autoptr(GVariant) objs =
                test_call(f->bus, TEST_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                          "GetManagedObjects", NULL, "(a{oa{sa{sv}}})", NULL);
        g_autoptr(GVariant) dict = g_variant_get_child_value(objs, 0);
        g_autoptr(GVariant) entry = g_variant_lookup_value(dict, path, NULL);
        g_assert_nonnull(entry);
}

/* The Sandbox and Port objects' own methods. */
static void test_object_methods(Fixture *f, gconstpointer data) {
        const char *spath = "/io/portpub/Publisher1/sandbox/web";
        g_autofree char *path = NULL;
        g_autoptr(GVariant) r = NULL, r2 = NULL, r3 = NULL, r4 = NULL, ports = NULL;
        g_autoptr(GError) error = NULL;
        const char *ppath;
        guint16 port;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, &port);
        r = test_call(f->bus, spath, TEST_SANDBOX_IFACE, "PublishPorts",
                      g_variant_new_parsed("([('udp', '127.0.0.1', @q 0, @q 53)], @a{sv} {})"),
                      "(a(ssqqo))", &error);
        g_assert_no_error(error);
        g_variant_get(r, "(@a(ssqqo))", &ports);
        g_variant_get_child(ports, 0, "(&s&sqq&o)", NULL, NULL, NULL, NULL, &ppath);
        g_assert_cmpuint(n_ports(f), ==, 2);
        r2 = test_call(f->bus, ppath, TEST_PORT_IFACE, "Unpublish", NULL, "()", &error);
        g_assert_no_error(error);
        g_assert_cmpuint(n_ports(f), ==, 1);
        r3 = test_call(f->bus, spath, TEST_SANDBOX_IFACE, "SetGuestAddresses",
                       g_variant_new_parsed("(['127.0.0.9'],)"), "()", &error);
        g_assert_no_error(error);
        g_autofree char *guest = get_s(f, path, TEST_PORT_IFACE, "GuestAddress");
        g_assert_cmpstr(guest, ==, "127.0.0.9");
        g_free(test_call_expect_error(f->bus, spath, TEST_SANDBOX_IFACE, "UnpublishPorts",
                                      g_variant_new_parsed("([('tcp', '127.0.0.1', @q 1)],)"),
                                      TEST_ERROR_PREFIX "NoSuchPort"));
        r4 = test_call(f->bus, spath, TEST_SANDBOX_IFACE, "Remove", NULL, "()", &error);
        g_assert_no_error(error);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
}

static void test_options_reflected(Fixture *f, gconstpointer data) {
        g_autofree char *tcp = NULL, *udp = NULL, *proxy = NULL;
        GVariant *opts =
                g_variant_new_parsed("{'IdleTimeoutUSec': <@t 5000000>, 'MaxSessions': <@u 7>, "
                                     "'ProxyProtocol': <'v2'>, 'BindToCaller': <false>}");

        tcp = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, opts, NULL);
        g_assert_cmpuint(test_get_u64(f->bus, tcp, TEST_PORT_IFACE, "IdleTimeoutUSec"), ==, 5000000);
        g_assert_cmpuint(test_get_u32(f->bus, tcp, TEST_PORT_IFACE, "MaxSessions"), ==, 7);
        proxy = get_s(f, tcp, TEST_PORT_IFACE, "ProxyProtocol");
        g_assert_cmpstr(proxy, ==, "v2");
        /* Defaults: UDP idle timeout 60 s, the daemon's MaxSessions. */
        udp = publish_one(f, "web", NULL, "udp", "127.0.0.1", 0, 53, NULL, NULL);
        g_assert_cmpuint(test_get_u64(f->bus, udp, TEST_PORT_IFACE, "IdleTimeoutUSec"), ==, 60000000);
        g_assert_cmpuint(test_get_u32(f->bus, udp, TEST_PORT_IFACE, "MaxSessions"), ==, 4096);
}

typedef struct StateWait {
        Fixture *f;
        const char *path;
        const char *want;
} StateWait;

static gboolean state_is(gpointer data) {
        StateWait *w = data;
        g_autofree char *s = get_s(w->f, w->path, TEST_PORT_IFACE, "State");

        return strcmp(s, w->want) == 0;
}

/* At MaxSessions the port pauses (State, LastError, PropertiesChanged) and resumes after. */
static void test_max_sessions_pause_and_resume(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *path = NULL, *err = NULL;
        StateWait w = { f, NULL, "paused" };
        guint16 port;
        int a, b;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, test_echo_port(guest),
                           g_variant_new_parsed("{'MaxSessions': <@u 1>}"), &port);
        w.path = path;
        a = test_tcp_connect("127.0.0.1", port, 5000);
        test_roundtrip(a, "a", "a");
        g_assert_true(test_wait_until(state_is, &w, 5000));
        err = get_s(f, path, TEST_PORT_IFACE, "LastError");
        g_assert_cmpstr(err, !=, "");
        /* The second client waits in the backlog and is served once the first leaves. */
        b = test_tcp_connect("127.0.0.1", port, 5000);
        g_assert_cmpint(b, >=, 0);
        close(a);
        test_roundtrip(b, "b", "b");
        close(b);
        w.want = "listening";
        g_assert_true(test_wait_until(state_is, &w, 5000));
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PropertiesChanged"), >=, 2);
        test_echo_free(guest);
}

static void test_udp_through_daemon(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, "u:");
        g_autofree char *path = NULL;
        guint16 port;
        int fd;

        path = publish_one(f, "dns", "127.0.0.1", "udp", "", 0, test_echo_port(guest), NULL, &port);
        fd = test_udp_socket("127.0.0.1");
        test_udp_roundtrip(fd, "127.0.0.1", port, "ping", "u:ping");
        close(fd);
        if (have_ipv6()) {
                fd = test_udp_socket("::1");
                test_udp_roundtrip(fd, "::1", port, "ping6", "u:ping6");
                close(fd);
        }
        g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "TotalSessions"), ==,
                         have_ipv6() ? 2 : 1);
        g_assert_cmpuint(test_get_u64(f->bus, path, TEST_PORT_IFACE, "BytesToGuest"), ==,
                         have_ipv6() ? 9 : 4);
        test_echo_free(guest);
}

static void test_wildcard_publish(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *path = NULL;
        g_autoptr(GVariant) listen = NULL;
        guint16 port;
        int fd;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "*", 0, test_echo_port(guest), NULL, &port);
        listen = test_get_property(f->bus, path, TEST_PORT_IFACE, "ListenAddresses");
        g_assert_cmpuint(g_variant_n_children(listen), ==, have_ipv6() ? 2 : 1);
        fd = test_tcp_connect("127.0.0.7", port, 5000);
        test_roundtrip(fd, "w", "w");
        close(fd);
        test_echo_free(guest);
}

static void test_address_not_available(Fixture *f, gconstpointer data) {
        g_autofree char *msg = NULL;

        /* 192.0.2.1 (TEST-NET-1) is on no interface here: bind() refuses, nothing is sent. */
        msg = manager_error(
                f, "PublishPorts",
                g_variant_new_parsed(
                        "('web', ['127.0.0.1'], [('tcp', '192.0.2.1', @q 0, @q 80)], @a{sv} {})"),
                TEST_ERROR_PREFIX "AddressNotAvailable");
        g_assert_nonnull(strstr(msg, "'192.0.2.1'"));
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
}

typedef struct CountWait {
        Fixture *f;
        const char *path;
        guint32 want;
} CountWait;

static gboolean active_is(gpointer data) {
        CountWait *w = data;

        return test_get_u32(w->f->bus, w->path, TEST_PORT_IFACE, "ActiveSessions") == w->want;
}

static guint count_active_changes(Fixture *f, const char *path) {
        guint n = 0;

        for (guint i = 0; i < f->signals->len; i++) {
                g_autoptr(GVariant) params = NULL, changed = NULL, v = NULL;
                const char *m, *p;

                g_variant_get_child(f->signals->pdata[i], 0, "&s", &m);
                g_variant_get_child(f->signals->pdata[i], 1, "&s", &p);
                if (strcmp(m, "PropertiesChanged") != 0 || strcmp(p, path) != 0)
                        continue;
                g_variant_get_child(f->signals->pdata[i], 2, "@*", &params);
                changed = g_variant_get_child_value(params, 1);
                v = g_variant_lookup_value(changed, "ActiveSessions", NULL);
                n += v != NULL;
        }
        return n;
}

/* Twenty sessions opening in a burst produce at most two ActiveSessions signals in a second. */
static void test_active_sessions_coalesced(Fixture *f, gconstpointer data) {
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, NULL);
        g_autofree char *path = NULL;
        CountWait w = { f, NULL, 20 };
        gint64 start;
        int fds[20];
        guint16 port;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, test_echo_port(guest),
                           NULL, &port);
        w.path = path;
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);
        start = g_get_monotonic_time();
        for (int i = 0; i < 20; i++) {
                fds[i] = test_tcp_connect("127.0.0.1", port, 5000);
                test_roundtrip(fds[i], "x", "x");
        }
        g_assert_true(test_wait_until(active_is, &w, 5000));
        sync_signals(f);
        if (g_get_monotonic_time() - start < G_USEC_PER_SEC)
                g_assert_cmpuint(count_active_changes(f, path), <=, 2);
        for (int i = 0; i < 20; i++)
                close(fds[i]);
        w.want = 0;
        g_assert_true(test_wait_until(active_is, &w, 5000));
        test_echo_free(guest);
}

/* SIGTERM unpublishes everything with reason "shutdown" before the daemon exits 0. */
static void test_shutdown_unpublishes(Fixture *f, gconstpointer data) {
        g_autofree char *path = NULL;
        g_autoptr(GVariant) sig = NULL;
        const char *reason;

        path = publish_one(f, "web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80, NULL, NULL);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        /* The signals were flushed before exit; give the bus a moment to deliver them. */
        for (int i = 0; i < 200 && count_signals(f, "PortUnpublished") == 0; i++) {
                if (!g_main_context_iteration(NULL, FALSE))
                        g_usleep(5000);
        }
        sig = last_signal(f, "PortUnpublished");
        g_assert_nonnull(sig);
        g_variant_get_child(sig, 5, "&s", &reason);
        g_assert_cmpstr(reason, ==, "shutdown");
}

/* A thousand ports in one call (the timing is a benchmark; here only that it works). */
static void test_thousand_ports(Fixture *f, gconstpointer data) {
        GVariantBuilder ports;
        g_autoptr(GVariant) r = NULL, list = NULL;
        g_autoptr(GError) error = NULL;
        gint64 t0, t1, t2;

        g_variant_builder_init(&ports, G_VARIANT_TYPE("a(ssqq)"));
        for (guint i = 0; i < 1000; i++)
                g_variant_builder_add(&ports, "(ssqq)", i % 2 ? "udp" : "tcp", "127.0.0.1",
                                      (guint16) 0, (guint16) 80);
        t0 = g_get_monotonic_time();
        r = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                      g_variant_new("(s@asa(ssqq)@a{sv})", "many",
                                    g_variant_new_strv((const char *[]){ "127.0.0.1" }, 1), &ports,
                                    g_variant_new("a{sv}", NULL)),
                      "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        t1 = g_get_monotonic_time();
        list = manager_call(f, "ListPorts", NULL, "(a(sssqsqso))");
        t2 = g_get_monotonic_time();
        g_assert_cmpuint(n_ports(f), ==, 1000);
        g_autoptr(GVariant) l = g_variant_get_child_value(list, 0);
        g_assert_cmpuint(g_variant_n_children(l), ==, 1000);
        g_test_message("PublishPorts(1000): %.3f s, ListPorts(1000): %.3f s", (t1 - t0) / 1e6,
                       (t2 - t1) / 1e6);
}

static gboolean udp_port_free(guint16 port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        gboolean ok;

        g_assert_cmpint(fd, >=, 0);
        ok = bind(fd, (struct sockaddr *) &a, sizeof a) == 0;
        close(fd);
        return ok;
}

/* A free port on 127.0.0.1, ::1 (where there is IPv6) and the wildcards, for both protocols as
 * far as a moment's check can tell. */
static guint16 free_port(void) {
        for (int attempt = 0; attempt < 50; attempt++) {
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in a = { .sin_family = AF_INET };
                socklen_t len = sizeof a;
                guint16 port;

                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(bind(fd, (struct sockaddr *) &a, sizeof a), ==, 0);
                g_assert_cmpint(getsockname(fd, (struct sockaddr *) &a, &len), ==, 0);
                port = ntohs(a.sin_port);
                close(fd);
                if (udp_port_free(port))
                        return port;
        }
        g_assert_not_reached();
}

/* A port whose guest address and port lead back to one of its own listeners is refused, with the
 * address quoted, and nothing changes: a specific address, the "" pair (also through the family
 * fallback), a wildcard, and guest addresses changed afterwards. The same port number at another
 * address is fine. */
static void test_self_loop_refused(Fixture *f, gconstpointer data) {
        static const char *const cases[][2] = {
                { "tcp", "127.0.0.1" },
                { "udp", "" },
                { "tcp", "*" },
        };
        guint16 port = free_port();
        g_autofree char *path = NULL, *msg = NULL, *guest = NULL;

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *m = NULL;

                m = manager_error(f, "PublishPorts",
                                  g_variant_new_parsed(
                                          "('loop', ['127.0.0.1'], [(%s, %s, %q, %q)], @a{sv} {})",
                                          cases[i][0], cases[i][1], port, port),
                                  "org.freedesktop.DBus.Error.InvalidArgs");
                g_test_message("%s '%s': %s", cases[i][0], cases[i][1], m);
                g_assert_nonnull(strstr(m, "'127.0.0.1'"));
                g_assert_nonnull(strstr(m, "loop"));
                g_assert_cmpuint(n_ports(f), ==, 0);
                g_assert_cmpuint(n_sandboxes(f), ==, 0);
        }

        /* Same port number, another loopback address: no listener there, no loop. Nothing the
         * refused calls bound is left bound either. */
        path = publish_one(f, "loop", "127.0.0.2", "tcp", "127.0.0.1", port, port, NULL, NULL);

        msg = manager_error(f, "SetGuestAddresses", g_variant_new_parsed("('loop', ['127.0.0.1'])"),
                            "org.freedesktop.DBus.Error.InvalidArgs");
        g_assert_nonnull(strstr(msg, "'127.0.0.1'"));
        g_free(msg);
        msg = manager_error(f, "PublishPorts",
                            g_variant_new_parsed("('loop', ['127.0.0.1'], @a(ssqq) [], @a{sv} {})"),
                            "org.freedesktop.DBus.Error.InvalidArgs");
        g_assert_nonnull(strstr(msg, "'127.0.0.1'"));
        guest = get_s(f, path, TEST_PORT_IFACE, "GuestAddress");
        g_assert_cmpstr(guest, ==, "127.0.0.2");
        g_assert_cmpuint(n_ports(f), ==, 1);
}

/* Loops through several ports: each one's guest is the next one's listener, and the last one's
 * guest is the first one's. The call that would close the cycle fails and changes nothing. */
static void test_relay_cycle_refused(Fixture *f, gconstpointer data) {
        guint16 pa = free_port(), pb, pc;
        g_autofree char *a = NULL, *b = NULL, *c = NULL, *u = NULL, *msg = NULL, *guest = NULL;
        g_autofree char *want = NULL;
        g_autoptr(GVariant) reply = NULL;

        do
                pb = free_port();
        while (pb == pa);
        do
                pc = free_port();
        while (pc == pa || pc == pb);

        /* a -> 127.0.0.1:pb, where nothing listens yet. */
        a = publish_one(f, "a", "127.0.0.1", "tcp", "127.0.0.1", pa, pb, NULL, NULL);

        /* b on 127.0.0.1:pb -> a: two ports, one cycle. */
        msg = manager_error(
                f, "PublishPorts",
                g_variant_new_parsed("('b', ['127.0.0.1'], [('tcp', '127.0.0.1', %q, %q)], @a{sv} {})",
                                     pb, pa),
                "org.freedesktop.DBus.Error.InvalidArgs");
        g_test_message("%s", msg);
        want = g_strdup_printf("tcp '127.0.0.1' port %u of sandbox 'a'", pa);
        g_assert_nonnull(strstr(msg, "'127.0.0.1'"));
        g_assert_nonnull(strstr(msg, want));
        g_assert_nonnull(strstr(msg, "loop"));
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);

        /* UDP on that address and port -> a's port: a relays TCP only, so no cycle. */
        u = publish_one(f, "u", "127.0.0.1", "udp", "127.0.0.1", pb, pa, NULL, NULL);

        /* b -> 127.0.0.2:pc, and c on the wildcard at pc -> a: three ports, one cycle. */
        b = publish_one(f, "b", "127.0.0.2", "tcp", "127.0.0.1", pb, pc, NULL, NULL);
        g_free(msg);
        msg = manager_error(f, "PublishPorts",
                            g_variant_new_parsed("('c', ['127.0.0.1'], [('tcp', '*', %q, %q)], @a{sv} {})",
                                                 pc, pa),
                            "org.freedesktop.DBus.Error.InvalidArgs");
        g_test_message("%s", msg);
        g_assert_nonnull(strstr(msg, "'127.0.0.1'"));
        g_assert_nonnull(strstr(msg, want));
        g_assert_nonnull(strstr(msg, "loop"));
        g_assert_cmpuint(n_ports(f), ==, 3);

        /* c on 127.0.0.3:pc is out of b's way; making its guest a's address would close the
         * cycle again, and is refused with the guest address unchanged. */
        c = publish_one(f, "c", "127.0.0.4", "tcp", "127.0.0.3", pc, pa, NULL, NULL);
        reply = manager_call(f, "SetGuestAddresses", g_variant_new_parsed("('b', ['127.0.0.3'])"),
                             "()");
        g_free(msg);
        msg = manager_error(f, "SetGuestAddresses", g_variant_new_parsed("('c', ['127.0.0.1'])"),
                            "org.freedesktop.DBus.Error.InvalidArgs");
        g_test_message("%s", msg);
        g_assert_nonnull(strstr(msg, "'127.0.0.1'"));
        g_assert_nonnull(strstr(msg, "loop"));
        guest = get_s(f, c, TEST_PORT_IFACE, "GuestAddress");
        g_assert_cmpstr(guest, ==, "127.0.0.4");
        g_assert_cmpuint(n_ports(f), ==, 4);
}

/* Listens on addr:port without SO_REUSEADDR, as another program would: the fd, or -errno. */
static int tcp_listen_at(const char *addr, guint16 port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
        int fd, r;

        g_assert_cmpint(inet_pton(AF_INET, addr, &a.sin_addr), ==, 1);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        if (bind(fd, (struct sockaddr *) &a, sizeof a) < 0 || listen(fd, 16) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* The child nodes introspection shows under path. */
static guint n_child_nodes(Fixture *f, const char *path) {
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusNodeInfo) node = NULL;
        const char *xml;
        guint n = 0;

        reply = test_call(f->bus, path, "org.freedesktop.DBus.Introspectable", "Introspect", NULL,
                          "(s)", &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(&s)", &xml);
        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        for (GDBusNodeInfo **c = node->nodes; c && *c; c++)
                n++;
        return n;
}

static const char *const fail_second_relay_env[] = { "PORTPUB_TEST_FAIL_RELAY=2", NULL };
static const TestDaemonOptions fail_second_relay = { .env = fail_second_relay_env };

/* The daemon's second relay fails after both ports of one call were bound: the error names the
 * second port, neither port stays bound, and nothing was published, counted or announced. */
static void test_relay_failure_changes_nothing(Fixture *f, gconstpointer data) {
        guint16 a = free_port(), b;
        g_autofree char *msg = NULL, *second = NULL, *first = NULL;
        g_autoptr(GVariant) reply = NULL;
        int fa, fb;

        do
                b = free_port();
        while (b == a);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        msg = manager_error(f, "PublishPorts",
                            g_variant_new_parsed("('web', ['127.0.0.1'], [('tcp', '127.0.0.1', %q, @q 80), "
                                                 "('tcp', '127.0.0.1', %q, @q 81)], @a{sv} {})",
                                                 a, b),
                            "org.freedesktop.DBus.Error.Failed");
        g_test_message("%s", msg);
        second = g_strdup_printf("port %u", b);
        first = g_strdup_printf("port %u", a);
        g_assert_nonnull(strstr(msg, second));
        g_assert_null(strstr(msg, first));
        g_assert_nonnull(strstr(msg, "'web'"));

        /* Both are ours to take, so neither was left bound. */
        fa = tcp_listen_at("127.0.0.1", a);
        fb = tcp_listen_at("127.0.0.1", b);
        g_assert_cmpint(fa, >=, 0);
        g_assert_cmpint(fb, >=, 0);
        close(fa);
        close(fb);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortPublished"), ==, 0);
        g_assert_cmpuint(count_signals(f, "SandboxNew"), ==, 0);
        g_assert_cmpuint(count_signals(f, "InterfacesAdded"), ==, 0);
        g_assert_cmpuint(n_child_nodes(f, TEST_MANAGER_PATH "/port"), ==, 0);

        /* The hook fires once: the same call now succeeds, and its two objects show up where the
         * failed call left none. */
        reply = manager_call(f, "PublishPorts",
                             g_variant_new_parsed("('web', ['127.0.0.1'], [('tcp', '127.0.0.1', %q, @q 80), "
                                                  "('tcp', '127.0.0.1', %q, @q 81)], @a{sv} {})",
                                                  a, b),
                             "(oa(ssqqo))");
        g_assert_cmpuint(n_child_nodes(f, TEST_MANAGER_PATH "/port"), ==, 2);
}

/* PortInUse names the sandbox that really holds the endpoint: "" wants 127.0.0.1 and ::1, so a
 * sandbox on 127.0.0.1 (or ::1) is named, while one on 127.0.0.2 is not, and the holder of
 * 127.0.0.1 there is "another program". */
static void test_port_in_use_names_holder(Fixture *f, gconstpointer data) {
        guint16 p = free_port(), r;
        g_autofree char *a = NULL, *a2 = NULL, *msg = NULL;
        int holder;

        do
                r = free_port();
        while (r == p);
        a = publish_one(f, "A", "127.0.0.1", "tcp", "127.0.0.1", p, 80, NULL, NULL);
        msg = manager_error(
                f, "PublishPorts",
                g_variant_new_parsed("('B', ['127.0.0.1'], [('tcp', '', %q, @q 80)], @a{sv} {})", p),
                TEST_ERROR_PREFIX "PortInUse");
        g_test_message("%s", msg);
        g_assert_nonnull(strstr(msg, "sandbox 'A'"));
        g_assert_nonnull(strstr(msg, "in use"));
        g_assert_nonnull(strstr(msg, "'B'"));
        g_assert_null(strstr(msg, "another program"));

        a2 = publish_one(f, "A", NULL, "tcp", "127.0.0.2", r, 80, NULL, NULL);
        holder = tcp_listen_at("127.0.0.1", r);
        g_assert_cmpint(holder, >=, 0);
        g_free(msg);
        msg = manager_error(
                f, "PublishPorts",
                g_variant_new_parsed("('B', ['127.0.0.1'], [('tcp', '', %q, @q 80)], @a{sv} {})", r),
                TEST_ERROR_PREFIX "PortInUse");
        g_test_message("%s", msg);
        g_assert_nonnull(strstr(msg, "another program"));
        g_assert_null(strstr(msg, "'A'"));
        close(holder);

        if (have_ipv6()) {
                g_autofree char *a6 = NULL;
                guint16 s;

                do
                        s = free_port();
                while (s == p || s == r);
                /* 127.0.0.1 binds, ::1 is A's. */
                a6 = publish_one(f, "A", NULL, "tcp", "::1", s, 80, NULL, NULL);
                g_free(msg);
                msg = manager_error(
                        f, "PublishPorts",
                        g_variant_new_parsed("('B', ['127.0.0.1'], [('tcp', '', %q, @q 80)], @a{sv} {})",
                                             s),
                        TEST_ERROR_PREFIX "PortInUse");
                g_test_message("%s", msg);
                g_assert_nonnull(strstr(msg, "sandbox 'A'"));
        }
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
}

#define ADD(name, fn) g_test_add("/api/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
#define ADD_WITH(name, options, fn)                                                                \
        g_test_add("/api/" name, Fixture, &(options), fixture_setup, fn, fixture_teardown)

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        ADD("loopback-both-families", test_loopback_both_families);
        ADD("all-or-nothing", test_all_or_nothing);
        ADD("port-zero", test_port_zero);
        ADD("republish-is-noop", test_republish_is_noop);
        ADD("clash-names-other-sandbox", test_clash_names_other_sandbox);
        ADD("malformed-inputs", test_malformed_inputs);
        ADD("limit-ports-per-call", test_limit_ports_per_call);
        ADD("counters", test_counters);
        ADD("list-ports-matches-getall", test_list_ports_matches_getall);
        ADD("unpublish", test_unpublish);
        ADD("unpublish-validates-all-first", test_unpublish_validates_all_first);
        ADD("remove-sandbox", test_remove_sandbox);
        ADD("set-guest-addresses-retargets-new-sessions",
            test_set_guest_addresses_retargets_new_sessions);
        ADD("guest-family-fallback", test_guest_family_fallback);
        ADD("get-sandbox-and-port", test_get_sandbox_and_port);
        ADD("signals-on-publish", test_signals_on_publish);
        ADD("object-methods", test_object_methods);
        ADD("options-reflected", test_options_reflected);
        ADD("max-sessions-pause-and-resume", test_max_sessions_pause_and_resume);
        ADD("udp-through-daemon", test_udp_through_daemon);
        ADD("wildcard-publish", test_wildcard_publish);
        ADD("address-not-available", test_address_not_available);
        ADD("self-loop-refused", test_self_loop_refused);
        ADD("relay-cycle-refused", test_relay_cycle_refused);
        ADD("active-sessions-coalesced", test_active_sessions_coalesced);
        ADD("shutdown-unpublishes", test_shutdown_unpublishes);
        ADD("thousand-ports", test_thousand_ports);
        ADD_WITH("relay-failure-changes-nothing", fail_second_relay,
                 test_relay_failure_changes_nothing);
        ADD("port-in-use-names-holder", test_port_in_use_names_holder);
        return g_test_run();
}
