/* The files a distribution installs (data/): the bus policy loads into a system bus and
 * grants what it says, the service and socket units verify, the socket unit is where and what
 * the daemon expects (and a socket passed like it is served), sysusers.d and tmpfiles.d make
 * what they say, the polkit actions are what the daemon asks for, and meson install puts each
 * where it belongs */
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib.h>
#include <glib/gstdio.h>

/* BUS_NAME, MANAGER_PATH, VARLINK_INTERFACE, VARLINK_SOCKET_DEFAULT: the daemon's own. */
#include "config.h"

#define MANAGER_IFACE "io.portpub.Publisher1.Manager"
#define RUN_TIMED_OUT G_MININT
#define POLKIT_DTD "/usr/share/polkit-1/policyconfig-1.dtd"

static const char *env(const char *name) {
        const char *v = g_getenv(name);

        if (!v)
                g_error("$%s is not set: run this test with meson test", name);
        return v;
}

static char *source_data(const char *file) {
        return g_build_filename(env("PORTPUB_SOURCE_ROOT"), "data", file, NULL);
}

static char *built_data(const char *file) {
        return g_build_filename(env("PORTPUB_DATA_BUILD_DIR"), file, NULL);
}

static char *read_file(const char *path) {
        g_autoptr(GError) error = NULL;
        char *text = NULL;

        g_file_get_contents(path, &text, NULL, &error);
        g_assert_no_error(error);
        return text;
}

static void write_file(const char *path, const char *text) {
        g_autoptr(GError) error = NULL;

        g_file_set_contents(path, text, -1, &error);
        g_assert_no_error(error);
}

static char *make_tmp_dir(void) {
        g_autoptr(GError) error = NULL;
        char *dir = g_dir_make_tmp("portpub-data-XXXXXX", &error);

        g_assert_no_error(error);
        return dir;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        if (remove(path) < 0)
                g_warning("Could not remove %s: %s", path, g_strerror(errno));
        return 0;
}

/* Removes a directory the test made, and all in it (depth first, not following links). */
static void rm_rf(const char *dir) {
        if (dir)
                (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Returns the program's path, or NULL after g_test_skip() when it is not installed. */
static char *need_program(const char *name, const char *package) {
        char *path = g_find_program_in_path(name);

        if (!path) {
                g_autofree char *why =
                        g_strdup_printf("%s is not installed (Debian: %s)", name, package);
                g_test_skip(why);
        }
        return path;
}

static gboolean need_root(const char *why) {
        if (geteuid() == 0)
                return TRUE;
        g_autofree char *msg = g_strdup_printf("needs root: %s", why);
        g_test_skip(msg);
        return FALSE;
}

/* Waiting: the default main context runs until cond(data) or the timeout. */

static gboolean on_timeout(gpointer data) {
        *(gboolean *) data = TRUE;
        return G_SOURCE_REMOVE;
}

static gboolean wait_until(gboolean (*cond)(gpointer data), gpointer data, guint timeout_ms) {
        gboolean timed_out = FALSE;
        guint id = g_timeout_add(timeout_ms, on_timeout, &timed_out);

        while (!cond(data) && !timed_out)
                g_main_context_iteration(NULL, TRUE);
        if (!timed_out)
                g_source_remove(id);
        return cond(data);
}

static gboolean flag_is_set(gpointer data) {
        return *(gboolean *) data;
}

/* Children: as root, or as another user. They die with the test. */

typedef struct Ident {
        uid_t uid;
        gid_t gid;
} Ident;

static void child_setup(gpointer data) {
        const Ident *id = data;

        if (id && (setgroups(0, NULL) < 0 || setresgid(id->gid, id->gid, id->gid) < 0 ||
                   setresuid(id->uid, id->uid, id->uid) < 0))
                _exit(127);
        /* After the uid change, which clears it. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static Ident nobody(void) {
        struct passwd *pw = getpwnam("nobody");

        g_assert_nonnull(pw);
        g_assert_cmpuint(pw->pw_uid, !=, 0);
        return (Ident){ .uid = pw->pw_uid, .gid = pw->pw_gid };
}

static GSubprocessLauncher *launcher_new(GSubprocessFlags flags, const Ident *ident) {
        GSubprocessLauncher *l = g_subprocess_launcher_new(flags);

        g_subprocess_launcher_set_child_setup(l, child_setup, (gpointer) ident, NULL);
        return l;
}

typedef struct Communicate {
        gboolean done;
        char *out;
        GError *error;
} Communicate;

static void on_communicated(GObject *source, GAsyncResult *res, gpointer data) {
        Communicate *c = data;

        g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), res, &c->out, NULL, &c->error);
        c->done = TRUE;
}

static gboolean communicated(gpointer data) {
        return ((Communicate *) data)->done;
}

/* Runs argv (as ident unless NULL; with "NAME=VALUE" strings of setenv added to the
 * environment) and returns its exit status, -signal, or RUN_TIMED_OUT after killing it;
 * *ret_output gets its stdout and stderr together. */
static int run(const char *const *argv, const Ident *ident, const char *const *setenv,
               guint timeout_ms, char **ret_output) {
        g_autoptr(GSubprocessLauncher) l =
                launcher_new(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                     G_SUBPROCESS_FLAGS_STDERR_MERGE,
                             ident);
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *cmdline = g_strjoinv(" ", (char **) argv);
        Communicate *c = g_new0(Communicate, 1);
        int status;

        for (size_t i = 0; setenv && setenv[i]; i++) {
                g_auto(GStrv) kv = g_strsplit(setenv[i], "=", 2);
                g_subprocess_launcher_setenv(l, kv[0], kv[1], TRUE);
        }
        g_test_message("running: %s", cmdline);
        p = g_subprocess_launcher_spawnv(l, argv, &error);
        g_assert_no_error(error);
        g_subprocess_communicate_utf8_async(p, NULL, NULL, on_communicated, c);
        if (!wait_until(communicated, c, timeout_ms)) {
                g_subprocess_force_exit(p);
                /* Its children may hold the pipe: then c stays with the pending call. */
                if (!wait_until(communicated, c, 5000))
                        g_test_message("%s: still running after the kill", cmdline);
                else {
                        g_clear_error(&c->error);
                        g_free(c->out);
                        g_free(c);
                }
                *ret_output = g_strdup_printf("(%s: timed out after %u ms)", cmdline, timeout_ms);
                return RUN_TIMED_OUT;
        }
        g_assert_no_error(c->error);
        g_assert_true(g_subprocess_get_if_exited(p) || g_subprocess_get_if_signaled(p));
        status = g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p)
                                               : -g_subprocess_get_term_sig(p);
        g_test_message("exit %d:\n%s", status, c->out ? c->out : "");
        *ret_output = c->out ? c->out : g_strdup("");
        g_free(c);
        return status;
}

/* The first line of text that contains needle, or NULL. */
static char *line_with(const char *text, const char *needle) {
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);

        for (size_t i = 0; lines[i]; i++)
                if (strstr(lines[i], needle))
                        return g_strdup(lines[i]);
        return NULL;
}

/* A system bus of our own: dbus-daemon with <type>system</type>, the default policy of a
 * system bus (Debian's system.conf: nobody owns anything, method calls are denied unless a
 * policy allows them) and, unless include is NULL, an <include> of that file. */

typedef struct SysBus {
        char *dir;
        GSubprocess *proc;
        char *address;
} SysBus;

static const char sysbus_config[] =
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
        "<busconfig>\n"
        "  <type>system</type>\n"
        "  <listen>unix:path=%s/bus</listen>\n"
        "  <auth>EXTERNAL</auth>\n"
        "  <policy context=\"default\">\n"
        "    <allow user=\"*\"/>\n"
        "    <deny own=\"*\"/>\n"
        "    <deny send_type=\"method_call\"/>\n"
        "    <allow send_type=\"signal\"/>\n"
        "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
        "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
        "    <allow receive_type=\"method_call\"/>\n"
        "    <allow receive_type=\"method_return\"/>\n"
        "    <allow receive_type=\"error\"/>\n"
        "    <allow receive_type=\"signal\"/>\n"
        "    <allow send_destination=\"org.freedesktop.DBus\"\n"
        "           send_interface=\"org.freedesktop.DBus\"/>\n"
        "    <allow send_destination=\"org.freedesktop.DBus\"\n"
        "           send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
        "  </policy>\n"
        "%s"
        "</busconfig>\n";

typedef struct ReadLine {
        gboolean done;
        char *line;
} ReadLine;

static void on_line(GObject *source, GAsyncResult *res, gpointer data) {
        ReadLine *r = data;

        r->line = g_data_input_stream_read_line_finish_utf8(G_DATA_INPUT_STREAM(source), res, NULL,
                                                            NULL);
        r->done = TRUE;
}

typedef struct Exited {
        gboolean done;
} Exited;

static void on_exited(GObject *source, GAsyncResult *res, gpointer data) {
        (void) g_subprocess_wait_finish(G_SUBPROCESS(source), res, NULL);
        ((Exited *) data)->done = TRUE;
}

/* Waits (timeout_ms) for p to exit; TRUE when it did. */
static gboolean wait_exit(GSubprocess *p, guint timeout_ms) {
        Exited *e = g_new0(Exited, 1);

        g_subprocess_wait_async(p, NULL, on_exited, e);
        if (!wait_until(flag_is_set, &e->done, timeout_ms))
                return FALSE; /* e stays with the pending wait */
        g_free(e);
        return TRUE;
}

/* SIGTERM, then SIGKILL if it is still there after 5 s. */
static void stop(GSubprocess *p) {
        if (!p)
                return;
        g_subprocess_send_signal(p, SIGTERM);
        if (!wait_exit(p, 5000)) {
                g_subprocess_force_exit(p);
                g_assert_true(wait_exit(p, 5000));
        }
}

static void sysbus_free(SysBus *b) {
        if (!b)
                return;
        stop(b->proc);
        g_clear_object(&b->proc);
        rm_rf(b->dir);
        g_free(b->dir);
        g_free(b->address);
        g_free(b);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SysBus, sysbus_free)

/* Returns the running bus, or NULL with what dbus-daemon said in *ret_log when it exited
 * instead of printing its address. */
static SysBus *sysbus_start(const char *dbus_daemon, const char *include, char **ret_log) {
        g_autoptr(SysBus) b = g_new0(SysBus, 1);
        g_autoptr(GSubprocessLauncher) l = NULL;
        g_autoptr(GDataInputStream) out = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *include_xml = NULL, *config = NULL, *config_path = NULL;
        g_autofree char *config_arg = NULL, *log_path = NULL;
        ReadLine r = {};

        b->dir = make_tmp_dir();
        /* Clients run as another user too: they must reach the socket. */
        g_assert_cmpint(g_chmod(b->dir, 0755), ==, 0);
        if (include)
                include_xml = g_markup_printf_escaped("  <include>%s</include>\n", include);
        config = g_strdup_printf(sysbus_config, b->dir, include_xml ? include_xml : "");
        config_path = g_build_filename(b->dir, "bus.conf", NULL);
        write_file(config_path, config);
        log_path = g_build_filename(b->dir, "bus.log", NULL);
        config_arg = g_strdup_printf("--config-file=%s", config_path);

        l = launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, NULL);
        g_subprocess_launcher_set_stderr_file_path(l, log_path);
        b->proc = g_subprocess_launcher_spawn(l, &error, dbus_daemon, config_arg, "--nofork",
                                              "--print-address=1", NULL);
        g_assert_no_error(error);
        out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(b->proc));
        g_data_input_stream_read_line_async(out, G_PRIORITY_DEFAULT, NULL, on_line, &r);
        if (!wait_until(flag_is_set, &r.done, 10000))
                g_error("dbus-daemon printed no address in 10 s");
        if (!r.line) {
                /* End of output: it is exiting. */
                g_assert_true(wait_exit(b->proc, 10000));
                g_assert_true(g_subprocess_get_if_exited(b->proc));
                g_assert_cmpint(g_subprocess_get_exit_status(b->proc), !=, 0);
                g_clear_object(&b->proc);
                *ret_log = read_file(log_path);
                return NULL;
        }
        b->address = r.line;
        return g_steal_pointer(&b);
}

static GDBusConnection *sysbus_connect(SysBus *b) {
        g_autoptr(GError) error = NULL;
        GDBusConnection *c = g_dbus_connection_new_for_address_sync(
                b->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);

        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(c, FALSE);
        return c;
}

/* RequestName(BUS_NAME, DO_NOT_QUEUE) on c: the reply code, or 0 with *ret_error set. */
static guint32 request_name(GDBusConnection *c, GError **ret_error) {
        g_autoptr(GVariant) reply =
                g_dbus_connection_call_sync(c, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "RequestName",
                                            g_variant_new("(su)", BUS_NAME, 4u),
                                            G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 10000,
                                            NULL, ret_error);
        guint32 code = 0;

        if (reply)
                g_variant_get(reply, "(u)", &code);
        return code;
}

static SysBus *sysbus_start_with_policy(const char *dbus_daemon) {
        g_autofree char *policy = source_data("io.portpub.Publisher1.conf");
        g_autofree char *log = NULL;
        SysBus *b = sysbus_start(dbus_daemon, policy, &log);

        if (!b)
                g_error("dbus-daemon with %s failed to start:\n%s", policy, log);
        return b;
}

/* dbus-send on the bus as ident; returns its exit status, *ret_output what it printed. */
static int dbus_send(SysBus *b, const char *dbus_send_path, const Ident *ident,
                     const char *const *call, char **ret_output) {
        g_autofree char *bus_arg = g_strdup_printf("--bus=%s", b->address);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();

        g_ptr_array_add(argv, (gpointer) dbus_send_path);
        g_ptr_array_add(argv, bus_arg);
        g_ptr_array_add(argv, (gpointer) "--print-reply");
        for (size_t i = 0; call[i]; i++)
                g_ptr_array_add(argv, (gpointer) call[i]);
        g_ptr_array_add(argv, NULL);
        return run((const char *const *) argv->pdata, ident, NULL, 20000, ret_output);
}

static const char *const request_name_call[] = {
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        "string:" BUS_NAME,
        "uint32:4",
        NULL,
};

static void test_bus_policy_loads(void) {
        g_autofree char *dbus_daemon = need_program("dbus-daemon", "dbus-daemon");
        g_autofree char *policy = source_data("io.portpub.Publisher1.conf");
        g_autofree char *text = NULL, *broken_dir = NULL, *broken = NULL, *log = NULL;
        g_autoptr(SysBus) b = NULL, bad = NULL;
        g_autoptr(GDBusConnection) c = NULL;
        size_t len;

        if (!dbus_daemon)
                return;
        b = sysbus_start(dbus_daemon, policy, &log);
        if (!b)
                g_error("dbus-daemon with %s failed to start:\n%s", policy, log);
        c = sysbus_connect(b);
        g_assert_nonnull(g_dbus_connection_get_unique_name(c));

        /* The same file cut in the middle of an element: the bus must refuse the whole
         * configuration, so the start above really read ours. */
        text = read_file(policy);
        len = strlen(text);
        g_assert_nonnull(strstr(text, "<allow own=\"" BUS_NAME "\"/>"));
        broken_dir = make_tmp_dir();
        broken = g_build_filename(broken_dir, "io.portpub.Publisher1.conf", NULL);
        text[strstr(text, "<allow own=") - text + 6] = 0;
        g_assert_cmpuint(strlen(text), <, len);
        write_file(broken, text);
        g_clear_pointer(&log, g_free);
        bad = sysbus_start(dbus_daemon, broken, &log);
        g_assert_null(bad);
        g_assert_nonnull(strstr(log, broken));
        rm_rf(broken_dir);
}

static void test_bus_policy_root_owns(void) {
        g_autofree char *dbus_daemon = need_program("dbus-daemon", "dbus-daemon");
        g_autofree char *log = NULL;
        g_autoptr(SysBus) b = NULL, plain = NULL;
        g_autoptr(GDBusConnection) c = NULL, pc = NULL;
        g_autoptr(GError) error = NULL;

        if (!dbus_daemon || !need_root("the bus must see uid 0"))
                return;
        b = sysbus_start_with_policy(dbus_daemon);
        c = sysbus_connect(b);
        g_assert_cmpuint(request_name(c, &error), ==, 1); /* PRIMARY_OWNER */
        g_assert_no_error(error);

        /* Without our file root may not: the permission is the file's. */
        plain = sysbus_start(dbus_daemon, NULL, &log);
        g_assert_nonnull(plain);
        pc = sysbus_connect(plain);
        g_assert_cmpuint(request_name(pc, &error), ==, 0);
        g_assert_error(error, G_DBUS_ERROR, G_DBUS_ERROR_ACCESS_DENIED);
}

static void test_bus_policy_others_may_not_own(void) {
        g_autofree char *dbus_daemon = need_program("dbus-daemon", "dbus-daemon");
        g_autofree char *dbus_send_path = need_program("dbus-send", "dbus-bin");
        g_autofree char *out = NULL;
        g_autoptr(SysBus) b = NULL;
        Ident who;

        if (!dbus_daemon || !dbus_send_path || !need_root("clients run as user nobody"))
                return;
        who = nobody();
        b = sysbus_start_with_policy(dbus_daemon);
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, request_name_call, &out), ==, 1);
        g_assert_nonnull(strstr(out, "org.freedesktop.DBus.Error.AccessDenied"));
}

static void test_bus_policy_portpub_owns(void) {
        g_autofree char *dbus_daemon = need_program("dbus-daemon", "dbus-daemon");
        g_autofree char *dbus_send_path = need_program("dbus-send", "dbus-bin");
        g_autofree char *out = NULL;
        g_autoptr(SysBus) b = NULL;
        struct passwd *pw;
        Ident who;

        if (!dbus_daemon || !dbus_send_path || !need_root("the client runs as user portpub"))
                return;
        pw = getpwnam("portpub");
        if (!pw) {
                g_test_skip("no user portpub on this host (systemd-sysusers portpub.conf makes it)");
                return;
        }
        who = (Ident){ .uid = pw->pw_uid, .gid = pw->pw_gid };
        b = sysbus_start_with_policy(dbus_daemon);
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, request_name_call, &out), ==, 0);
        g_assert_nonnull(strstr(out, "uint32 1"));
}

/* portpubd started as root with --run-as=nobody on the bus: it connects as root and asks
 * for the name as nobody, so the bus sees root. */
typedef struct OwnerWait {
        gboolean appeared, exited;
} OwnerWait;

typedef struct Daemon {
        GSubprocess *proc;
        char *log_dir;
        OwnerWait *wait; /* with the pending g_subprocess_wait_async() until exited */
} Daemon;

static void on_appeared(GDBusConnection *c, const char *name, const char *owner, gpointer data) {
        ((OwnerWait *) data)->appeared = TRUE;
}

static void on_daemon_exited(GObject *source, GAsyncResult *res, gpointer data) {
        (void) g_subprocess_wait_finish(G_SUBPROCESS(source), res, NULL);
        ((OwnerWait *) data)->exited = TRUE;
}

static gboolean owner_or_exit(gpointer data) {
        OwnerWait *w = data;

        return w->appeared || w->exited;
}

static void daemon_free(Daemon *d) {
        if (!d)
                return;
        stop(d->proc);
        if (d->wait && wait_until(flag_is_set, &d->wait->exited, 5000))
                g_free(d->wait);
        g_clear_object(&d->proc);
        rm_rf(d->log_dir);
        g_free(d->log_dir);
        g_free(d);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Daemon, daemon_free)

static Daemon *daemon_start_run_as_nobody(SysBus *b, GDBusConnection *watch_on) {
        g_autoptr(Daemon) d = g_new0(Daemon, 1);
        g_autoptr(GSubprocessLauncher) l = launcher_new(G_SUBPROCESS_FLAGS_NONE, NULL);
        g_autoptr(GError) error = NULL;
        g_autofree char *bus_arg = g_strdup_printf("--bus-address=%s", b->address);
        g_autofree char *log_path = NULL, *log = NULL;
        OwnerWait *w;
        guint watch;

        w = d->wait = g_new0(OwnerWait, 1);
        d->log_dir = make_tmp_dir();
        log_path = g_build_filename(d->log_dir, "portpubd.log", NULL);
        g_subprocess_launcher_set_stderr_file_path(l, log_path);
        watch = g_bus_watch_name_on_connection(watch_on, BUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                               on_appeared, NULL, w, NULL);
        d->proc = g_subprocess_launcher_spawn(l, &error, env("PORTPUBD"), bus_arg,
                                              "--state-file=", "--varlink=no", "--run-as=nobody",
                                              "--log-level=debug", NULL);
        g_assert_no_error(error);
        g_subprocess_wait_async(d->proc, NULL, on_daemon_exited, w);
        if (!wait_until(owner_or_exit, w, 10000))
                g_error("portpubd neither owned %s nor exited in 10 s", BUS_NAME);
        g_bus_unwatch_name(watch);
        if (!w->appeared) {
                log = read_file(log_path);
                g_error("portpubd --run-as=nobody exited without owning %s:\n%s", BUS_NAME, log);
        }
        return g_steal_pointer(&d);
}

static void test_bus_policy_run_as_daemon_owns(void) {
        g_autofree char *dbus_daemon = need_program("dbus-daemon", "dbus-daemon");
        g_autoptr(SysBus) b = NULL;
        g_autoptr(GDBusConnection) c = NULL;
        g_autoptr(Daemon) d = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        guint32 uid = 0;

        if (!dbus_daemon || !need_root("portpubd --run-as= is started as root"))
                return;
        b = sysbus_start_with_policy(dbus_daemon);
        c = sysbus_connect(b);
        d = daemon_start_run_as_nobody(b, c);
        /* The bus knows the owner by the uid it connected with. */
        reply = g_dbus_connection_call_sync(c, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "GetConnectionUnixUser",
                                            g_variant_new("(s)", BUS_NAME), G_VARIANT_TYPE("(u)"),
                                            G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(u)", &uid);
        g_assert_cmpuint(uid, ==, 0);
}

static void test_bus_policy_everyone_calls(void) {
        g_autofree char *dbus_daemon = need_program("dbus-daemon", "dbus-daemon");
        g_autofree char *dbus_send_path = need_program("dbus-send", "dbus-bin");
        g_autoptr(SysBus) b = NULL;
        g_autoptr(GDBusConnection) c = NULL;
        g_autoptr(Daemon) d = NULL;
#define DEST "--dest=" BUS_NAME
        const char *const ping[] = { DEST, MANAGER_PATH, "org.freedesktop.DBus.Peer.Ping", NULL };
        const char *const introspect[] = { DEST, MANAGER_PATH,
                                           "org.freedesktop.DBus.Introspectable.Introspect", NULL };
        const char *const get_all[] = { DEST, MANAGER_PATH, "org.freedesktop.DBus.Properties.GetAll",
                                        "string:" MANAGER_IFACE, NULL };
        const char *const list[] = { DEST, MANAGER_PATH, MANAGER_IFACE ".ListSandboxes", NULL };
        const char *const managed[] = { DEST, MANAGER_PATH,
                                        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
                                        NULL };
        const char *const remove[] = { DEST, MANAGER_PATH, MANAGER_IFACE ".RemoveSandbox",
                                       "string:nosuch", NULL };
#undef DEST
        Ident who;
        char *out = NULL;

        if (!dbus_daemon || !dbus_send_path || !need_root("clients run as user nobody"))
                return;
        who = nobody();
        b = sysbus_start_with_policy(dbus_daemon);
        c = sysbus_connect(b);
        d = daemon_start_run_as_nobody(b, c);

        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, ping, &out), ==, 0);
        g_free(out);
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, introspect, &out), ==, 0);
        g_assert_nonnull(strstr(out, "<interface name=\"" MANAGER_IFACE "\">"));
        g_free(out);
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, get_all, &out), ==, 0);
        g_assert_nonnull(strstr(out, "\"Version\""));
        g_free(out);
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, list, &out), ==, 0);
        g_free(out);
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, managed, &out), ==, 0);
        g_free(out);
        /* A change reaches the daemon, which answers for itself: not the bus's "Rejected send
         * message" AccessDenied. */
        g_assert_cmpint(dbus_send(b, dbus_send_path, &who, remove, &out), ==, 1);
        g_assert_null(strstr(out, "Rejected send message"));
        g_assert_true(strstr(out, "Error io.portpub.Publisher1.Error.NoSuchSandbox") ||
                      strstr(out, "Error org.freedesktop.DBus.Error.AccessDenied: Access denied to"));
        g_free(out);
}

/* The unit */

/* The built unit with ExecStart= pointing at the built portpubd, in dir/portpubd.service. */
static char *unit_for_verify(const char *dir) {
        g_autofree char *built = built_data("portpubd.service");
        g_autofree char *text = read_file(built);
        g_autofree char *installed = g_build_filename(env("PORTPUB_LIBEXECDIR"), "portpubd", NULL);
        g_autofree char *exec_start = g_strdup_printf("ExecStart=%s ", installed);
        g_autofree char *want = g_strdup_printf("ExecStart=%s ", env("PORTPUBD"));
        g_autoptr(GString) s = g_string_new(text);
        char *path = g_build_filename(dir, "portpubd.service", NULL);

        g_assert_cmpuint(g_string_replace(s, exec_start, want, 0), ==, 1);
        write_file(path, s->str);
        return path;
}

static void test_unit_verifies(void) {
        g_autofree char *analyze = need_program("systemd-analyze", "systemd");
        g_autofree char *dir = NULL, *unit = NULL, *out = NULL, *bad_out = NULL, *hit = NULL;
        g_autofree char *text = NULL, *bad = NULL;
        const char *const setenv[] = { "SYSTEMD_LOG_LEVEL=info", "SYSTEMD_LOG_COLOR=0", NULL };

        if (!analyze)
                return;
        dir = make_tmp_dir();
        unit = unit_for_verify(dir);
        {
                const char *const argv[] = { analyze, "verify", "--man=no", unit, NULL };

                g_assert_cmpint(run(argv, NULL, setenv, 60000, &out), ==, 0);
        }
        hit = line_with(out, "portpubd");
        if (hit)
                g_error("systemd-analyze verify warns about the unit: %s", hit);

        /* The same unit with a key systemd does not know: the check above would see that. */
        text = read_file(unit);
        bad = g_strconcat(text, "NoSuchKey=yes\n", NULL);
        write_file(unit, bad);
        {
                const char *const argv[] = { analyze, "verify", "--man=no", unit, NULL };

                (void) run(argv, NULL, setenv, 60000, &bad_out);
        }
        g_clear_pointer(&hit, g_free);
        hit = line_with(bad_out, "NoSuchKey");
        g_assert_nonnull(hit);
        g_assert_nonnull(strstr(hit, unit));
        rm_rf(dir);
}

/* The value of the first "Key=" line of a unit or key file, or NULL. */
static char *unit_value(const char *text, const char *key) {
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        size_t n = strlen(key);

        for (size_t i = 0; lines[i]; i++)
                if (strncmp(lines[i], key, n) == 0 && lines[i][n] == '=')
                        return g_strdup(lines[i] + n + 1);
        return NULL;
}

static void test_activation_file_names_unit(void) {
        g_autofree char *path = built_data("io.portpub.Publisher1.service");
        g_autofree char *unit_path = built_data("portpubd.service");
        g_autofree char *unit = read_file(unit_path);
        g_autofree char *bus_name = unit_value(unit, "BusName");
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) error = NULL;
        g_autofree char *name = NULL, *user = NULL, *service = NULL;

        g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &error);
        g_assert_no_error(error);
        name = g_key_file_get_string(kf, "D-BUS Service", "Name", &error);
        g_assert_no_error(error);
        g_assert_cmpstr(name, ==, BUS_NAME);
        g_assert_cmpstr(bus_name, ==, BUS_NAME);
        /* The D-Bus specification requires User= of every system bus activation file. */
        user = g_key_file_get_string(kf, "D-BUS Service", "User", &error);
        g_assert_no_error(error);
        g_assert_cmpstr(user, ==, "root");
        service = g_key_file_get_string(kf, "D-BUS Service", "SystemdService", &error);
        g_assert_no_error(error);
        g_assert_cmpstr(service, ==, "portpubd.service");
}

/* The socket unit */

/* data/portpubd.socket, as it is installed, in dir/portpubd.socket. */
static char *socket_for_verify(const char *dir) {
        g_autofree char *source = source_data("portpubd.socket");
        g_autofree char *text = read_file(source);
        char *path = g_build_filename(dir, "portpubd.socket", NULL);

        write_file(path, text);
        return path;
}

static void test_socket_unit_verifies(void) {
        g_autofree char *analyze = need_program("systemd-analyze", "systemd");
        g_autofree char *dir = NULL, *unit = NULL, *socket_unit = NULL, *out = NULL;
        g_autofree char *alone_out = NULL, *hit = NULL;
        const char *const setenv[] = { "SYSTEMD_LOG_LEVEL=info", "SYSTEMD_LOG_COLOR=0", NULL };

        if (!analyze)
                return;
        dir = make_tmp_dir();
        unit = unit_for_verify(dir);
        socket_unit = socket_for_verify(dir);
        {
                const char *const argv[] = { analyze, "verify", "--man=no", socket_unit, unit, NULL };

                g_assert_cmpint(run(argv, NULL, setenv, 60000, &out), ==, 0);
        }
        hit = line_with(out, "portpubd");
        if (hit)
                g_error("systemd-analyze verify warns about the units: %s", hit);

        /* Without the service beside it the socket has nothing to start, and verify says so:
         * it did read the socket unit, and the service it found above is the one it activates. */
        g_assert_cmpint(g_unlink(unit), ==, 0);
        {
                const char *const argv[] = { analyze, "verify", "--man=no", socket_unit, NULL };

                g_assert_cmpint(run(argv, NULL, setenv, 60000, &alone_out), !=, 0);
        }
        g_clear_pointer(&hit, g_free);
        hit = line_with(alone_out, "portpubd.service not loaded");
        g_assert_nonnull(hit);
        rm_rf(dir);
}

static gboolean path_exists(gpointer data) {
        return g_file_test(data, G_FILE_TEST_EXISTS);
}

/* Starts argv with stderr to log_path and waits (10 s) until wait_for exists. */
static GSubprocess *spawn_until(const char *const *argv, const char *log_path, const char *wait_for) {
        g_autoptr(GSubprocessLauncher) l = launcher_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE, NULL);
        g_autoptr(GError) error = NULL;
        g_autofree char *log = NULL;
        GSubprocess *p;

        g_subprocess_launcher_set_stderr_file_path(l, log_path);
        p = g_subprocess_launcher_spawnv(l, argv, &error);
        g_assert_no_error(error);
        if (!wait_until(path_exists, (gpointer) wait_for, 10000)) {
                stop(p);
                log = read_file(log_path);
                g_error("%s did not appear in 10 s:\n%s", wait_for, log);
        }
        return p;
}

/* One varlink call on the socket at path: writes call and its NUL, returns the reply up to its
 * NUL (waiting at most 10 s). */
static char *varlink_call(const char *path, const char *call) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 10 };
        GString *reply = g_string_new(NULL);
        char buf[4096];
        ssize_t n;
        int fd;

        g_assert_cmpuint(strlen(path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), ==, 0);
        g_assert_cmpint(connect(fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        g_assert_cmpint(send(fd, call, strlen(call) + 1, MSG_NOSIGNAL), ==,
                        (ssize_t) strlen(call) + 1);
        while (!memchr(reply->str, 0, reply->len)) {
                n = recv(fd, buf, sizeof buf, 0);
                if (n <= 0)
                        g_error("no reply to %s on %s: %s", call, path,
                                n == 0 ? "end of file" : g_strerror(errno));
                g_string_append_len(reply, buf, n);
        }
        (void) close(fd);
        return g_string_free(reply, FALSE);
}

/* The socket unit listens where the daemon binds by default, with the name it looks for among
 * the sockets systemd passes, with the modes it gives a socket and directory it makes itself,
 * and in the directory the service keeps. */
static void test_socket_unit_matches_daemon(void) {
        g_autofree char *socket_path = source_data("portpubd.socket");
        g_autofree char *socket_text = read_file(socket_path);
        g_autofree char *unit_path = built_data("portpubd.service");
        g_autofree char *unit = read_file(unit_path);
        g_autofree char *listen = unit_value(socket_text, "ListenStream");
        g_autofree char *fdname = unit_value(socket_text, "FileDescriptorName");
        g_autofree char *socket_mode = unit_value(socket_text, "SocketMode");
        g_autofree char *directory_mode = unit_value(socket_text, "DirectoryMode");
        g_autofree char *runtime = unit_value(unit, "RuntimeDirectory");
        g_autofree char *runtime_mode = unit_value(unit, "RuntimeDirectoryMode");
        g_autofree char *preserve = unit_value(unit, "RuntimeDirectoryPreserve");
        g_autofree char *in_runtime = NULL, *tmp = NULL, *dir = NULL, *sock = NULL, *log = NULL;
        g_autofree char *varlink_arg = NULL;
        g_autoptr(GSubprocess) p = NULL;
        struct stat st;
        mode_t old_umask;

        g_assert_cmpstr(listen, ==, VARLINK_SOCKET_DEFAULT);
        g_assert_cmpstr(fdname, ==, "varlink");
        /* In the service's RuntimeDirectory=, which outlives a stop of the service that the
         * socket outlives too. */
        in_runtime = g_strdup_printf("/run/%s/%s", runtime, VARLINK_INTERFACE);
        g_assert_cmpstr(listen, ==, in_runtime);
        g_assert_cmpstr(preserve, ==, "yes");
        g_assert_cmpstr(directory_mode, ==, runtime_mode);

        /* The daemon's own socket and directory, made under the usual umask. */
        tmp = make_tmp_dir();
        dir = g_build_filename(tmp, "portpub", NULL);
        sock = g_build_filename(dir, VARLINK_INTERFACE, NULL);
        log = g_build_filename(tmp, "portpubd.log", NULL);
        varlink_arg = g_strdup_printf("--varlink=%s", sock);
        old_umask = umask(022);
        {
                const char *const argv[] = { env("PORTPUBD"), "--no-bus",
                                             "--state-file=", varlink_arg, NULL };

                p = spawn_until(argv, log, sock);
        }
        umask(old_umask);
        g_assert_cmpint(g_lstat(sock, &st), ==, 0);
        g_assert_true(S_ISSOCK(st.st_mode));
        g_assert_cmpuint(st.st_mode & 07777, ==, g_ascii_strtoull(socket_mode, NULL, 8));
        g_assert_cmpint(g_lstat(dir, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, g_ascii_strtoull(directory_mode, NULL, 8));
        stop(p);
        rm_rf(tmp);
}

/* A socket passed as systemd passes portpubd.socket's: the daemon serves it instead of binding
 * its own path, and leaves it in place when it exits. */
static void test_socket_activation(void) {
        g_autofree char *activate = need_program("systemd-socket-activate", "systemd");
        g_autofree char *socket_path = source_data("portpubd.socket");
        g_autofree char *socket_text = read_file(socket_path);
        g_autofree char *fdname = unit_value(socket_text, "FileDescriptorName");
        g_autofree char *tmp = NULL, *sock = NULL, *own = NULL, *log_path = NULL, *log = NULL;
        g_autofree char *fdname_arg = NULL, *varlink_arg = NULL, *reply = NULL;
        g_autoptr(GSubprocess) p = NULL;

        if (!activate)
                return;
        tmp = make_tmp_dir();
        sock = g_build_filename(tmp, "passed", NULL);
        own = g_build_filename(tmp, "own", NULL);
        log_path = g_build_filename(tmp, "log", NULL);
        fdname_arg = g_strdup_printf("--fdname=%s", fdname);
        varlink_arg = g_strdup_printf("--varlink=%s", own);
        {
                const char *const argv[] = { activate,        "--listen",      sock,
                                             fdname_arg,      env("PORTPUBD"), "--no-bus",
                                             "--state-file=", varlink_arg,     NULL };

                p = spawn_until(argv, log_path, sock);
        }
        reply = varlink_call(sock, "{\"method\":\"org.varlink.service.GetInfo\"}");
        g_test_message("GetInfo: %s", reply);
        g_assert_nonnull(
                strstr(reply, "\"interfaces\":[\"org.varlink.service\",\"" VARLINK_INTERFACE "\"]"));
        log = read_file(log_path);
        g_assert_nonnull(strstr(log, "Serving varlink on the socket systemd passed."));
        g_assert_false(g_file_test(own, G_FILE_TEST_EXISTS));
        stop(p);
        g_assert_true(g_file_test(sock, G_FILE_TEST_EXISTS));
        rm_rf(tmp);
}

/* sysusers.d and tmpfiles.d, applied to an empty tree */

typedef struct Account {
        guint uid, gid;
} Account;

/* Reads "name:x:uid:gid:..." of name from root/etc/passwd and the group's gid. */
static Account account_in(const char *root, const char *name) {
        g_autofree char *passwd_path = g_build_filename(root, "etc", "passwd", NULL);
        g_autofree char *group_path = g_build_filename(root, "etc", "group", NULL);
        g_autofree char *passwd = read_file(passwd_path), *group = read_file(group_path);
        g_autofree char *prefix = g_strdup_printf("%s:", name);
        g_auto(GStrv) pl = g_strsplit(passwd, "\n", -1), gl = g_strsplit(group, "\n", -1);
        Account a = {};
        gboolean user_found = FALSE, group_found = FALSE;

        for (size_t i = 0; pl[i]; i++)
                if (g_str_has_prefix(pl[i], prefix)) {
                        g_auto(GStrv) f = g_strsplit(pl[i], ":", -1);

                        g_assert_cmpuint(g_strv_length(f), ==, 7);
                        a.uid = (guint) g_ascii_strtoull(f[2], NULL, 10);
                        a.gid = (guint) g_ascii_strtoull(f[3], NULL, 10);
                        user_found = TRUE;
                }
        for (size_t i = 0; gl[i]; i++)
                if (g_str_has_prefix(gl[i], prefix)) {
                        g_auto(GStrv) f = g_strsplit(gl[i], ":", -1);

                        g_assert_cmpuint(g_strv_length(f), ==, 4);
                        g_assert_cmpuint(g_ascii_strtoull(f[2], NULL, 10), ==, a.gid);
                        group_found = TRUE;
                }
        g_assert_true(user_found);
        g_assert_true(group_found);
        return a;
}

/* Runs systemd-sysusers --root=root on our file; returns FALSE after a skip. */
static gboolean sysusers_into(const char *root) {
        g_autofree char *sysusers = need_program("systemd-sysusers", "systemd");
        g_autofree char *file = source_data("portpub.sysusers");
        g_autofree char *root_arg = g_strdup_printf("--root=%s", root);
        g_autofree char *etc = g_build_filename(root, "etc", NULL);
        g_autofree char *out = NULL, *hit = NULL;
        const char *const argv[] = { sysusers, root_arg, file, NULL };

        if (!sysusers)
                return FALSE;
        g_assert_cmpint(g_mkdir(etc, 0755), ==, 0);
        g_assert_cmpint(run(argv, NULL, NULL, 30000, &out), ==, 0);
        hit = line_with(out, "portpub.sysusers");
        if (hit)
                g_error("systemd-sysusers complains about the file: %s", hit);
        return TRUE;
}

static void test_sysusers_parses(void) {
        g_autofree char *root = NULL, *passwd_path = NULL, *passwd = NULL;
        Account a;

        if (!need_root("systemd-sysusers writes /etc/shadow of the tree"))
                return;
        root = make_tmp_dir();
        if (sysusers_into(root)) {
                a = account_in(root, "portpub");
                /* A system account: below the first uid of a regular user (login.defs). */
                g_assert_cmpuint(a.uid, >, 0);
                g_assert_cmpuint(a.uid, <, 1000);
                g_assert_cmpuint(a.gid, ==, a.uid);
                passwd_path = g_build_filename(root, "etc", "passwd", NULL);
                passwd = read_file(passwd_path);
                g_assert_nonnull(strstr(passwd, ":/usr/sbin/nologin\n"));
        }
        rm_rf(root);
}

static void test_tmpfiles_creates(void) {
        g_autofree char *tmpfiles = need_program("systemd-tmpfiles", "systemd");
        g_autofree char *file = source_data("portpub.tmpfiles");
        g_autofree char *unit_path = built_data("portpubd.service");
        g_autofree char *unit = read_file(unit_path);
        g_autofree char *mode = unit_value(unit, "RuntimeDirectoryMode");
        g_autofree char *user = unit_value(unit, "User"), *group = unit_value(unit, "Group");
        g_autofree char *runtime = unit_value(unit, "RuntimeDirectory");
        g_autofree char *root = NULL, *root_arg = NULL, *dir = NULL, *state = NULL, *out = NULL;
        g_autofree char *hit = NULL, *text = NULL;
        g_auto(GStrv) lines = NULL;
        guint n_lines = 0;
        struct stat st;
        Account a;

        if (!tmpfiles || !need_root("systemd-tmpfiles gives the directory to portpub"))
                return;
        /* What the unit makes for itself, the file makes for the rest. */
        g_assert_cmpstr(runtime, ==, "portpub");
        g_assert_cmpstr(user, ==, "portpub");
        g_assert_cmpstr(group, ==, "portpub");
        g_assert_cmpstr(mode, ==, "0755");

        root = make_tmp_dir();
        if (!sysusers_into(root))
                goto finish;
        a = account_in(root, "portpub");
        root_arg = g_strdup_printf("--root=%s", root);
        {
                const char *const argv[] = { tmpfiles, "--create", root_arg, file, NULL };

                g_assert_cmpint(run(argv, NULL, NULL, 30000, &out), ==, 0);
                hit = line_with(out, "portpub.tmpfiles");
                g_assert_null(hit);
        }
        dir = g_build_filename(root, "run", "portpub", NULL);
        g_assert_cmpint(g_lstat(dir, &st), ==, 0);
        g_assert_true(S_ISDIR(st.st_mode));
        g_assert_cmpuint(st.st_mode & 07777, ==, 0755);
        g_assert_cmpuint(st.st_uid, ==, a.uid);
        g_assert_cmpuint(st.st_gid, ==, a.gid);

        /* A state file in it survives --remove ("d", not "D"). */
        state = g_build_filename(dir, "state", NULL);
        write_file(state, "{}");
        {
                const char *const argv[] = { tmpfiles, "--create", "--remove", root_arg, file, NULL };

                g_clear_pointer(&out, g_free);
                g_assert_cmpint(run(argv, NULL, NULL, 30000, &out), ==, 0);
        }
        g_assert_true(g_file_test(state, G_FILE_TEST_IS_REGULAR));

        /* And --clean never ages it out: the age is "-". (A test cannot make a file old
         * enough for --clean, which counts its ctime too.) */
        text = read_file(file);
        lines = g_strsplit(text, "\n", -1);
        for (size_t i = 0; lines[i]; i++) {
                g_auto(GStrv) f = NULL;

                if (lines[i][0] == '#' || lines[i][0] == 0)
                        continue;
                f = g_strsplit_set(lines[i], " \t", -1);
                g_assert_cmpuint(g_strv_length(f), ==, 6);
                g_assert_cmpstr(f[0], ==, "d");
                g_assert_cmpstr(f[1], ==, "/run/portpub");
                g_assert_cmpstr(f[5], ==, "-");
                n_lines++;
        }
        g_assert_cmpuint(n_lines, ==, 1);
finish:
        rm_rf(root);
}

/* The polkit actions */

typedef struct PolicyAction {
        char *id, *description, *message, *allow_any, *allow_inactive, *allow_active, *owner;
} PolicyAction;

typedef struct PolicyParse {
        GPtrArray *actions;
        PolicyAction *cur;
        char **text_target; /* where the text of the element being read goes */
} PolicyParse;

static void policy_action_free(gpointer p) {
        PolicyAction *a = p;

        g_free(a->id);
        g_free(a->description);
        g_free(a->message);
        g_free(a->allow_any);
        g_free(a->allow_inactive);
        g_free(a->allow_active);
        g_free(a->owner);
        g_free(a);
}

static void policy_start(GMarkupParseContext *ctx, const char *element, const char **names,
                         const char **values, gpointer data, GError **error) {
        PolicyParse *p = data;
        const char *id = NULL, *key = NULL;

        p->text_target = NULL;
        if (strcmp(element, "action") == 0) {
                if (!g_markup_collect_attributes(element, names, values, error,
                                                 G_MARKUP_COLLECT_STRING, "id", &id,
                                                 G_MARKUP_COLLECT_INVALID))
                        return;
                p->cur = g_new0(PolicyAction, 1);
                p->cur->id = g_strdup(id);
                g_ptr_array_add(p->actions, p->cur);
                return;
        }
        if (!p->cur)
                return;
        if (strcmp(element, "annotate") == 0) {
                if (!g_markup_collect_attributes(element, names, values, error,
                                                 G_MARKUP_COLLECT_STRING, "key", &key,
                                                 G_MARKUP_COLLECT_INVALID))
                        return;
                if (strcmp(key, "org.freedesktop.policykit.owner") == 0)
                        p->text_target = &p->cur->owner;
        } else if (strcmp(element, "description") == 0)
                p->text_target = &p->cur->description;
        else if (strcmp(element, "message") == 0)
                p->text_target = &p->cur->message;
        else if (strcmp(element, "allow_any") == 0)
                p->text_target = &p->cur->allow_any;
        else if (strcmp(element, "allow_inactive") == 0)
                p->text_target = &p->cur->allow_inactive;
        else if (strcmp(element, "allow_active") == 0)
                p->text_target = &p->cur->allow_active;
}

static void policy_end(GMarkupParseContext *ctx, const char *element, gpointer data, GError **error) {
        PolicyParse *p = data;

        p->text_target = NULL;
        if (strcmp(element, "action") == 0)
                p->cur = NULL;
}

static void policy_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer data,
                        GError **error) {
        PolicyParse *p = data;

        if (p->text_target && !*p->text_target)
                *p->text_target = g_strstrip(g_strndup(text, len));
}

static const GMarkupParser policy_parser = {
        .start_element = policy_start,
        .end_element = policy_end,
        .text = policy_text,
};

static void test_polkit_policy_valid(void) {
        static const struct {
                const char *id, *allow_active;
        } want[] = {
                { "io.portpub.Publisher1.publish", "auth_admin_keep" },
                { "io.portpub.Publisher1.publish-privileged", "auth_admin" },
                { "io.portpub.Publisher1.manage-all", "auth_admin_keep" },
        };
        g_autofree char *path = source_data("io.portpub.Publisher1.policy");
        g_autofree char *text = read_file(path);
        g_autoptr(GPtrArray) actions = g_ptr_array_new_with_free_func(policy_action_free);
        PolicyParse p = { .actions = actions };
        g_autoptr(GMarkupParseContext) ctx =
                g_markup_parse_context_new(&policy_parser, G_MARKUP_TREAT_CDATA_AS_TEXT, &p, NULL);
        g_autoptr(GError) error = NULL;

        g_markup_parse_context_parse(ctx, text, -1, &error);
        g_assert_no_error(error);
        g_markup_parse_context_end_parse(ctx, &error);
        g_assert_no_error(error);

        g_assert_cmpuint(actions->len, ==, G_N_ELEMENTS(want));
        for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
                PolicyAction *a = NULL;

                for (guint j = 0; j < actions->len; j++)
                        if (strcmp(((PolicyAction *) actions->pdata[j])->id, want[i].id) == 0)
                                a = actions->pdata[j];
                if (!a)
                        g_error("no action %s", want[i].id);
                g_test_message("%s: %s", a->id, a->description);
                g_assert_nonnull(a->description);
                g_assert_cmpstr(a->description, !=, "");
                g_assert_nonnull(a->message);
                g_assert_cmpstr(a->message, !=, "");
                /* Only an owner of the action may ask polkit about another process with
                 * details, and portpubd runs as portpub. */
                g_assert_cmpstr(a->owner, ==, "unix-user:portpub");
                g_assert_cmpstr(a->allow_any, ==, "no");
                g_assert_cmpstr(a->allow_inactive, ==, "no");
                g_assert_cmpstr(a->allow_active, ==, want[i].allow_active);
        }
}

static void test_polkit_policy_dtd_valid(void) {
        g_autofree char *xmllint = need_program("xmllint", "libxml2-utils");
        g_autofree char *path = source_data("io.portpub.Publisher1.policy");
        g_autofree char *out = NULL;
        const char *const setenv[] = { "XML_CATALOG_FILES=", NULL };

        if (!xmllint)
                return;
        if (!g_file_test(POLKIT_DTD, G_FILE_TEST_EXISTS)) {
                g_test_skip("no " POLKIT_DTD " (Debian: polkitd)");
                return;
        }
        {
                const char *const argv[] = { xmllint,    "--noout", "--nonet", "--dtdvalid",
                                             POLKIT_DTD, path,      NULL };

                g_assert_cmpint(run(argv, NULL, setenv, 30000, &out), ==, 0);
        }
        g_assert_null(strstr(out, "validity error"));
}

/* meson install */

static void collect_files(const char *root, const char *rel, GPtrArray *files) {
        g_autofree char *path = g_build_filename(root, rel, NULL);
        g_autoptr(GDir) d = NULL;
        g_autoptr(GError) error = NULL;
        const char *name;

        d = g_dir_open(path, 0, &error);
        g_assert_no_error(error);
        while ((name = g_dir_read_name(d))) {
                g_autofree char *child_rel =
                        rel[0] ? g_build_filename(rel, name, NULL) : g_strdup(name);
                g_autofree char *child = g_build_filename(root, child_rel, NULL);
                struct stat st;

                g_assert_cmpint(g_lstat(child, &st), ==, 0);
                if (S_ISDIR(st.st_mode))
                        collect_files(root, child_rel, files);
                else
                        g_ptr_array_add(files, g_steal_pointer(&child_rel));
        }
}

static int cmp_str(gconstpointer a, gconstpointer b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static void assert_same_file(const char *dest, const char *rel, const char *source) {
        g_autofree char *installed = g_build_filename(dest, rel, NULL);
        g_autofree char *a = read_file(installed), *b = read_file(source);

        g_assert_cmpstr(a, ==, b);
}

static void test_install_destdir(void) {
        static const char *const want[] = {
                "usr/bin/portpubctl",
                "usr/lib/systemd/system/portpubd.service",
                "usr/lib/systemd/system/portpubd.socket",
                "usr/lib/sysusers.d/portpub.conf",
                "usr/lib/tmpfiles.d/portpub.conf",
                "usr/libexec/portpubd",
                "usr/share/bash-completion/completions/portpubctl",
                "usr/share/dbus-1/interfaces/io.portpub.Publisher1.Manager.xml",
                "usr/share/dbus-1/interfaces/io.portpub.Publisher1.Port.xml",
                "usr/share/dbus-1/interfaces/io.portpub.Publisher1.Sandbox.xml",
                "usr/share/dbus-1/system-services/io.portpub.Publisher1.service",
                "usr/share/dbus-1/system.d/io.portpub.Publisher1.conf",
                "usr/share/man/man1/portpubctl.1",
                "usr/share/man/man5/io.portpub.Publisher1.5",
                "usr/share/man/man5/io.portpub.publisher1.5",
                "usr/share/man/man8/portpubd.8",
                "usr/share/polkit-1/actions/io.portpub.Publisher1.policy",
                "usr/share/portpub/io.portpub.publisher1.varlink",
                "usr/share/zsh/site-functions/_portpubctl",
        };
        const char *meson = env("MESON");
        const char *src = env("PORTPUB_SOURCE_ROOT");
        g_autofree char *tmp = make_tmp_dir();
        g_autofree char *build = g_build_filename(tmp, "build", NULL);
        g_autofree char *dest = g_build_filename(tmp, "dest", NULL);
        g_autofree char *out = NULL, *unit_path = NULL, *unit = NULL, *exec_start = NULL;
        g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GString) missing = g_string_new(NULL), extra = g_string_new(NULL);
        const char *const setup[] = {
                meson, "setup", "--prefix=/usr", "-Dtests=false", "--buildtype=plain", build,
                src,   NULL
        };
        const char *const install[] = { meson, "install", "-C", build, "--destdir", dest, NULL };
        size_t i = 0, j = 0;

        g_assert_cmpint(run(setup, NULL, NULL, 60000, &out), ==, 0);
        g_clear_pointer(&out, g_free);
        g_assert_cmpint(run(install, NULL, NULL, 120000, &out), ==, 0);

        collect_files(dest, "", files);
        g_ptr_array_sort(files, cmp_str);
        /* Both sorted: walk them together. */
        while (i < G_N_ELEMENTS(want) || j < files->len) {
                int c = i == G_N_ELEMENTS(want) ? 1
                        : j == files->len       ? -1
                                                : strcmp(want[i], files->pdata[j]);

                if (c < 0)
                        g_string_append_printf(missing, " %s", want[i++]);
                else if (c > 0)
                        g_string_append_printf(extra, " %s", (char *) files->pdata[j++]);
                else
                        i++, j++;
        }
        if (missing->len || extra->len)
                g_error("meson install --destdir: missing:%s; not expected:%s", missing->str,
                        extra->str);

        g_assert_true(g_file_test(build, G_FILE_TEST_IS_DIR));
        for (i = 0; i < 2; i++) {
                g_autofree char *exe =
                        g_build_filename(dest, i == 0 ? "usr/libexec/portpubd" : "usr/bin/portpubctl",
                                         NULL);

                g_assert_true(g_file_test(exe, G_FILE_TEST_IS_EXECUTABLE));
        }
        /* The unit starts the installed daemon; the other files are ours unchanged. */
        unit_path = g_build_filename(dest, "usr/lib/systemd/system/portpubd.service", NULL);
        unit = read_file(unit_path);
        exec_start = unit_value(unit, "ExecStart");
        g_assert_cmpstr(exec_start, ==, "/usr/libexec/portpubd --system");
        g_assert_null(strstr(unit, "@libexecdir@"));
        {
                g_autofree char *a = source_data("portpub.sysusers");
                g_autofree char *b = source_data("portpub.tmpfiles");
                g_autofree char *c = source_data("io.portpub.Publisher1.conf");
                g_autofree char *d = source_data("io.portpub.Publisher1.policy");
                g_autofree char *e = source_data("portpubd.socket");
                g_autofree char *f =
                        g_build_filename(src, "interfaces", "io.portpub.publisher1.varlink", NULL);

                assert_same_file(dest, "usr/lib/sysusers.d/portpub.conf", a);
                assert_same_file(dest, "usr/lib/tmpfiles.d/portpub.conf", b);
                assert_same_file(dest, "usr/share/dbus-1/system.d/io.portpub.Publisher1.conf", c);
                assert_same_file(dest, "usr/share/polkit-1/actions/io.portpub.Publisher1.policy", d);
                assert_same_file(dest, "usr/lib/systemd/system/portpubd.socket", e);
                assert_same_file(dest, "usr/share/portpub/io.portpub.publisher1.varlink", f);
        }
        rm_rf(tmp);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/data/bus-policy-loads", test_bus_policy_loads);
        g_test_add_func("/data/bus-policy-root-owns", test_bus_policy_root_owns);
        g_test_add_func("/data/bus-policy-others-may-not-own", test_bus_policy_others_may_not_own);
        g_test_add_func("/data/bus-policy-portpub-owns", test_bus_policy_portpub_owns);
        g_test_add_func("/data/bus-policy-run-as-daemon-owns", test_bus_policy_run_as_daemon_owns);
        g_test_add_func("/data/bus-policy-everyone-calls", test_bus_policy_everyone_calls);
        g_test_add_func("/data/unit-verifies", test_unit_verifies);
        g_test_add_func("/data/activation-file-names-unit", test_activation_file_names_unit);
        g_test_add_func("/data/socket-unit-verifies", test_socket_unit_verifies);
        g_test_add_func("/data/socket-unit-matches-daemon", test_socket_unit_matches_daemon);
        g_test_add_func("/data/socket-activation", test_socket_activation);
        g_test_add_func("/data/sysusers-parses", test_sysusers_parses);
        g_test_add_func("/data/tmpfiles-creates", test_tmpfiles_creates);
        g_test_add_func("/data/polkit-policy-valid", test_polkit_policy_valid);
        g_test_add_func("/data/polkit-policy-dtd-valid", test_polkit_policy_dtd_valid);
        g_test_add_func("/data/install-destdir", test_install_destdir);
        return g_test_run();
}
