/* portpubd: publishes host ports for sandboxes over D-Bus and relays their traffic */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>

#include "bus-ev.h"
#include "busy-poll.h"
#include "config.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "manager-dbus.h"
#include "manager.h"
#include "machined.h"
#include "polkit.h"
#include "privileges.h"
#include "publisher1.h"
#include "varlink.h"

typedef enum BusKind { BUS_SYSTEM, BUS_USER, BUS_ADDRESS } BusKind;

static BusKind arg_bus = BUS_SYSTEM;
static const char *arg_bus_address;
static uint32_t arg_max_sessions = MANAGER_MAX_SESSIONS_DEFAULT;
static uint64_t arg_udp_idle_timeout_usec = RELAY_UDP_IDLE_TIMEOUT_DEFAULT_USEC;
static unsigned arg_busy_poll_usec = BUSY_POLL_DEFAULT_USEC;
static const char *arg_state_file; /* NULL: the default of the bus kind; "": none */
static const char *arg_run_as;
static const char *arg_varlink; /* NULL: the default of the bus kind; "no": none */
static bool arg_no_bus;

typedef struct Context {
        struct ev_loop *loop;
        sd_bus *bus;
        BusEv *bus_ev;
        Manager *manager;
        ManagerDBus *manager_dbus;
        LocalAuthorizer local_authorizer;
        VarlinkServer *varlink;
        Publisher1 *publisher1;
        PolkitAuthorizer *polkit;
        MachinedResolver *machined;
        ev_signal sigterm, sigint, sighup;
        BusyPoll busy_poll;
        ev_timer watchdog;
        RunAs run_as;
        int exit_code;
        int name_acquired;
        bool serving; /* varlink only: ready without a name */
} Context;

static void help(void) {
        printf("Usage: portpubd [OPTIONS]\n\n"
               "Publishes host ports for sandboxes and relays their TCP and UDP traffic.\n\n"
               "  -h --help                 Show this help\n"
               "     --version              Show the version\n"
               "     --system               Connect to the system bus (default)\n"
               "     --user                 Connect to the user's bus\n"
               "     --bus-address=ADDRESS  Connect to the bus at ADDRESS\n"
               "     --no-bus               Connect to no bus: serve varlink alone\n"
               "     --varlink=PATH|no      Serve varlink on PATH (default %s,\n"
               "                            with --user $XDG_RUNTIME_DIR/portpub/%s)\n"
               "     --max-sessions=N       Default MaxSessions of a port (default %u)\n"
               "     --udp-idle-timeout=SEC Default UDP session idle timeout (default 60)\n"
               "     --state-file=PATH      Keep the publications in PATH (default %s,\n"
               "                            with --user $XDG_RUNTIME_DIR/portpub/state; \"\": none)\n"
               "     --run-as=USER          Started as root: become USER, keeping only\n"
               "                            CAP_NET_BIND_SERVICE\n"
               "     --busy-poll=USEC       Poll without sleeping this long after work (default %u,\n"
               "                            0: never)\n"
               "     --log-level=LEVEL      err, warning, notice, info or debug (default info)\n",
               VARLINK_SOCKET_DEFAULT, VARLINK_INTERFACE, MANAGER_MAX_SESSIONS_DEFAULT,
               STATE_FILE_DEFAULT, BUSY_POLL_DEFAULT_USEC);
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_SYSTEM,
                ARG_USER,
                ARG_BUS_ADDRESS,
                ARG_MAX_SESSIONS,
                ARG_UDP_IDLE_TIMEOUT,
                ARG_BUSY_POLL,
                ARG_STATE_FILE,
                ARG_RUN_AS,
                ARG_VARLINK,
                ARG_NO_BUS,
                ARG_LOG_LEVEL,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "user", no_argument, NULL, ARG_USER },
                { "bus-address", required_argument, NULL, ARG_BUS_ADDRESS },
                { "max-sessions", required_argument, NULL, ARG_MAX_SESSIONS },
                { "udp-idle-timeout", required_argument, NULL, ARG_UDP_IDLE_TIMEOUT },
                { "busy-poll", required_argument, NULL, ARG_BUSY_POLL },
                { "state-file", required_argument, NULL, ARG_STATE_FILE },
                { "run-as", required_argument, NULL, ARG_RUN_AS },
                { "varlink", required_argument, NULL, ARG_VARLINK },
                { "no-bus", no_argument, NULL, ARG_NO_BUS },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {},
        };
        unsigned long long v;
        char *end;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("portpubd %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        arg_bus = BUS_SYSTEM;
                        break;
                case ARG_USER:
                        arg_bus = BUS_USER;
                        break;
                case ARG_BUS_ADDRESS:
                        arg_bus = BUS_ADDRESS;
                        arg_bus_address = optarg;
                        break;
                case ARG_MAX_SESSIONS:
                        errno = 0;
                        v = strtoull(optarg, &end, 10);
                        if (errno || *end || v == 0 || v > MANAGER_MAX_SESSIONS_MAX ||
                            optarg[0] == '-')
                                return log_error_errno(EINVAL,
                                                       "Invalid --max-sessions='%s': expected 1 to %u.",
                                                       optarg, MANAGER_MAX_SESSIONS_MAX);
                        arg_max_sessions = (uint32_t) v;
                        break;
                case ARG_UDP_IDLE_TIMEOUT:
                        errno = 0;
                        v = strtoull(optarg, &end, 10);
                        if (errno || *end || v == 0 ||
                            v > RELAY_IDLE_TIMEOUT_MAX_USEC / USEC_PER_SEC || optarg[0] == '-')
                                return log_error_errno(
                                        EINVAL,
                                        "Invalid --udp-idle-timeout='%s': expected seconds, 1 or more.",
                                        optarg);
                        arg_udp_idle_timeout_usec = v * USEC_PER_SEC;
                        break;
                case ARG_STATE_FILE:
                        if (optarg[0] != 0 && optarg[0] != '/')
                                return log_error_errno(
                                        EINVAL,
                                        "Invalid --state-file='%s': expected an absolute path, or \"\" for none.",
                                        optarg);
                        arg_state_file = optarg;
                        break;
                case ARG_VARLINK:
                        if (strcmp(optarg, "no") != 0 && optarg[0] != '/')
                                return log_error_errno(
                                        EINVAL,
                                        "Invalid --varlink='%s': expected an absolute path or 'no'.",
                                        optarg);
                        if (strlen(optarg) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                                return log_error_errno(
                                        EINVAL,
                                        "Invalid --varlink='%s': the path is too long for a socket.",
                                        optarg);
                        arg_varlink = optarg;
                        break;
                case ARG_NO_BUS:
                        arg_no_bus = true;
                        break;
                case ARG_RUN_AS:
                        if (optarg[0] == 0)
                                return log_error_errno(EINVAL,
                                                       "Invalid --run-as='': expected a user name.");
                        arg_run_as = optarg;
                        break;
                case ARG_BUSY_POLL:
                        errno = 0;
                        v = strtoull(optarg, &end, 10);
                        if (errno || *end || optarg[0] == 0 || v > BUSY_POLL_MAX_USEC ||
                            optarg[0] == '-')
                                return log_error_errno(
                                        EINVAL,
                                        "Invalid --busy-poll='%s': expected microseconds, 0 to %u.",
                                        optarg, BUSY_POLL_MAX_USEC);
                        arg_busy_poll_usec = (unsigned) v;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0)
                                return log_error_errno(EINVAL, "Invalid --log-level='%s'.", optarg);
                        log_set_max_level(r);
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s'.", argv[optind]);
        if (arg_no_bus && arg_varlink && strcmp(arg_varlink, "no") == 0)
                return log_error_errno(EINVAL, "--no-bus with --varlink=no leaves nothing to serve.");
        if (arg_no_bus && arg_bus == BUS_ADDRESS)
                return log_error_errno(EINVAL, "--no-bus and --bus-address= contradict each other.");
        return 1;
}

static void raise_nofile_limit(void) {
        struct rlimit rl;

        /* Every relayed connection takes two fds; the hard limit is what the admin allows. */
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                log_warning_errno(errno, "Failed to raise RLIMIT_NOFILE, ignoring: %m");
}

/* glibc raises its mmap threshold to the size of each mmapped block that is freed, so after the
 * first large transient block (the UDP relays' 4 MiB datagram pool, freed with the last UDP port;
 * a varlink reply for 1000 ports) blocks of that size come from the heap, whose free top is only
 * trimmed past twice the new threshold: the RSS of the daemon ratchets up by megabytes and stays
 * there, and the pool keeps every page a datagram ever touched. A fixed threshold keeps large
 * blocks mmapped, so freeing one gives it back. Nothing on a relay's path allocates that much. */
static void fix_mmap_threshold(void) {
        if (mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 0)
                log_debug("mallopt(M_MMAP_THRESHOLD) failed, ignoring.");
}

static void on_bus_lost(BusEv *b, int error, void *userdata) {
        Context *c = userdata;

        log_error_errno(error, "Lost the bus connection: %m");
        c->exit_code = EXIT_FAILURE;
        ev_break(c->loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
        if (w->signum == SIGHUP) {
                log_info("Received SIGHUP; nothing to reload.");
                return;
        }
        log_info("Received %s, shutting down.", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
        ev_break(loop, EVBREAK_ALL);
}

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents) {
        (void) sd_notify(0, "WATCHDOG=1");
}

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Context *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint32_t result;
        int r;

        if (e) {
                if (sd_bus_error_has_name(e, "org.freedesktop.DBus.Error.AccessDenied"))
                        log_error("Not allowed to own the name %s on this bus: %s", BUS_NAME,
                                  e->message);
                else
                        log_error("Failed to request the name %s: %s", BUS_NAME, e->message);
                c->exit_code = EXIT_FAILURE;
                ev_break(c->loop, EVBREAK_ALL);
                return 0;
        }
        r = sd_bus_message_read(reply, "u", &result);
        if (r < 0 || (result != 1 && result != 4)) {
                log_error("The name %s is owned by another process already; is portpubd running?",
                          BUS_NAME);
                c->exit_code = EXIT_FAILURE;
                ev_break(c->loop, EVBREAK_ALL);
                return 0;
        }
        c->name_acquired = 1;
        log_info("Serving %s.", BUS_NAME);
        (void) sd_notify(0, "READY=1\nSTATUS=Serving " BUS_NAME);
        return 0;
}

static int connect_bus(Context *c) {
        int r;

        switch (arg_bus) {
        case BUS_SYSTEM:
                r = sd_bus_open_system(&c->bus);
                break;
        case BUS_USER:
                r = sd_bus_open_user(&c->bus);
                break;
        default:
                r = sd_bus_new(&c->bus);
                if (r < 0)
                        break;
                r = sd_bus_set_address(c->bus, arg_bus_address);
                if (r < 0)
                        return log_error_errno(r, "Invalid bus address '%s': %m", arg_bus_address);
                (void) sd_bus_set_bus_client(c->bus, 1);
                (void) sd_bus_set_trusted(c->bus, 0);
                r = sd_bus_start(c->bus);
        }
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the bus: %m");
        return 0;
}

static int request_name(Context *c) {
        /* Asynchronous, so the loop never waits for the bus; no queueing and no replacement: a
         * second instance must fail, not wait in line. */
        return sd_bus_call_method_async(c->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "RequestName", on_name_acquired, c,
                                        "su", BUS_NAME, 4 /* DBUS_NAME_FLAG_DO_NOT_QUEUE */);
}

/* PORTPUB_TEST_FAIL_RELAY=N: the N-th relay built fails, as if the kernel had refused a socket
 * option after the bind; the tests use it to show that such a failure changes nothing. */
static void setup_test_hooks(Manager *m) {
        const char *e = getenv("PORTPUB_TEST_FAIL_RELAY");
        unsigned long n;
        char *end;

        if (!e)
                return;
        errno = 0;
        n = strtoul(e, &end, 10);
        if (errno || *end || n == 0 || n > UINT32_MAX) {
                log_warning("Invalid PORTPUB_TEST_FAIL_RELAY='%s', ignoring.", e);
                return;
        }
        log_notice("Test hook: relay %lu will fail to build.", n);
        manager_set_fail_relay(m, (unsigned) n);
}

/* PORTPUB_TEST_POLKIT_TIMEOUT_USEC=N: a polkit check unanswered for N µs fails, instead of after
 * POLKIT_TIMEOUT_USEC, so that a test of a polkit that never answers need not wait 25 s. */
static void setup_polkit_test_hook(PolkitAuthorizer *pk) {
        const char *e = getenv("PORTPUB_TEST_POLKIT_TIMEOUT_USEC");
        unsigned long long n;
        char *end;

        if (!e)
                return;
        errno = 0;
        n = strtoull(e, &end, 10);
        if (errno || *end || n == 0 || n > POLKIT_INTERACTIVE_TIMEOUT_USEC || e[0] == '-') {
                log_warning("Invalid PORTPUB_TEST_POLKIT_TIMEOUT_USEC='%s', ignoring.", e);
                return;
        }
        log_notice("Test hook: polkit checks time out after %llu us.", n);
        polkit_authorizer_set_timeout(pk, n);
}

static void forget_caller(Caller *caller, void *userdata) {
        manager_caller_gone(userdata, caller);
}

/* Makes the directory of path when it is missing (one level: its parent must exist). ret_dir
 * (optional) gets that directory, or NULL for a path right under / (nothing to make). */
static int make_parent_directory(const char *path, mode_t mode, char **ret_dir) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash;

        if (ret_dir)
                *ret_dir = NULL;
        if (!dir)
                return log_oom();
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0;
        *slash = 0;
        if (mkdir(dir, mode) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to create %s: %m", dir);
        if (ret_dir)
                *ret_dir = TAKE_PTR(dir);
        return 0;
}

/* The socket: one passed by systemd (FileDescriptorName=varlink) as it is, else the path of
 * --varlink= or the default of the bus kind. */
static int setup_varlink(Context *c) {
        static const VarlinkServerInfo info = {
                .vendor = "portpub",
                .product = "portpubd",
                .version = PACKAGE_VERSION,
                .url = "man:portpubd(8)",
        };
        _cleanup_free_ char *path = NULL;
        char **names = NULL;
        int n, fd = -EBADF, r;

        if (arg_varlink && strcmp(arg_varlink, "no") == 0) {
                /* Sockets passed nonetheless are closed, so their clients are told at once. */
                n = sd_listen_fds(1);
                for (int i = 0; i < n; i++)
                        (void) close(SD_LISTEN_FDS_START + i);
                return 0;
        }
        r = varlink_server_new(&c->varlink, c->loop, &info);
        if (r < 0)
                return log_oom();
        r = publisher1_new(&c->publisher1, c->manager, c->varlink);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the varlink interface: %m");

        n = sd_listen_fds_with_names(1, &names);
        for (int i = 0; i < n; i++) {
                if (fd < 0 && names && names[i] && strcmp(names[i], "varlink") == 0)
                        fd = SD_LISTEN_FDS_START + i;
                else
                        (void) close(SD_LISTEN_FDS_START + i);
        }
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        if (fd >= 0) {
                r = varlink_server_listen_fd(c->varlink, fd);
                if (r < 0)
                        return log_error_errno(
                                r, "Failed to listen on the varlink socket systemd passed: %m");
                log_info("Serving varlink on the socket systemd passed.");
                return 0;
        }

        if (arg_varlink)
                path = strdup(arg_varlink);
        else if (arg_bus != BUS_USER)
                path = strdup(VARLINK_SOCKET_DEFAULT);
        else {
                const char *runtime = getenv("XDG_RUNTIME_DIR");

                if (!runtime || runtime[0] != '/')
                        return log_error_errno(
                                ENXIO,
                                "No $XDG_RUNTIME_DIR for the user's varlink socket: give --varlink=PATH or --varlink=no.");
                if (asprintf(&path, "%s/portpub/%s", runtime, VARLINK_INTERFACE) < 0)
                        path = NULL;
        }
        if (!path)
                return log_oom();
        r = make_parent_directory(path, arg_bus == BUS_USER ? 0700 : 0755, NULL);
        if (r < 0)
                return r;
        /* Everyone may connect and read; the daemon decides who may change what (or, on the
         * user's socket, its directory keeps others out). */
        r = varlink_server_listen_path(c->varlink, path, arg_bus == BUS_USER ? 0600 : 0666);
        if (r == -EADDRINUSE)
                return log_error_errno(r, "Another portpubd serves varlink on %s already.", path);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on %s: %m", path);
        log_info("Serving varlink on %s.", path);
        return 0;
}

/* The state file's directory is made here when it is missing (systemd's RuntimeDirectory=
 * makes it for the unit); then the file is read and its publications restored. */
static int setup_state_file(Context *c) {
        _cleanup_free_ char *path = NULL, *dir = NULL;
        const char *runtime;
        int r;

        if (arg_state_file && arg_state_file[0] == 0)
                return 0;
        if (arg_state_file)
                path = strdup(arg_state_file);
        else if (arg_bus != BUS_USER)
                path = strdup(STATE_FILE_DEFAULT);
        else {
                runtime = getenv("XDG_RUNTIME_DIR");
                if (!runtime || runtime[0] != '/') {
                        log_warning("No $XDG_RUNTIME_DIR: publications will not survive a restart.");
                        return 0;
                }
                if (asprintf(&path, "%s/portpub/state", runtime) < 0)
                        path = NULL;
        }
        if (!path)
                return log_oom();
        /* The user's runtime directory is the user's alone. */
        r = make_parent_directory(path, arg_bus == BUS_USER ? 0700 : 0755, &dir);
        if (r < 0)
                return r;
        if (arg_run_as) {
                r = dir ? run_as_chown(&c->run_as, dir) : 0;
                if (r >= 0)
                        r = run_as_chown(&c->run_as, path);
                if (r < 0)
                        return r;
        }
        r = manager_set_state_file(c->manager, path);
        if (r < 0)
                return log_oom();
        r = manager_restore_state(c->manager);
        if (r < 0)
                return r;
        return 0;
}

static int run(int argc, char *argv[]) {
        Context c = { .exit_code = EXIT_SUCCESS };
        uint64_t watchdog_usec = 0;
        int r;

        log_setup();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        raise_nofile_limit();
        fix_mmap_threshold();
        (void) signal(SIGPIPE, SIG_IGN);
        r = portpub_errors_register();
        if (r < 0)
                return log_error_errno(r, "Failed to register D-Bus errors: %m"), EXIT_FAILURE;

        c.loop = ev_default_loop(EVFLAG_AUTO);
        if (!c.loop)
                return log_error("Failed to set up the event loop."), EXIT_FAILURE;

        if (arg_run_as) {
                if (geteuid() != 0) {
                        log_error("--run-as= needs portpubd to be started as root.");
                        return EXIT_FAILURE;
                }
                r = run_as_lookup(arg_run_as, &c.run_as);
                if (r < 0)
                        return EXIT_FAILURE;
        }
        if (!arg_no_bus) {
                r = connect_bus(&c);
                if (r < 0)
                        goto finish_fail;
        }
        r = manager_new(&c.manager, c.loop);
        if (r < 0) {
                log_oom();
                goto finish_fail;
        }
        manager_set_defaults(c.manager, arg_max_sessions, arg_udp_idle_timeout_usec);
        /* A user's own bus is the user's: everyone on it may change everything. Elsewhere (the
         * system bus, --bus-address=) root may, and polkit on that bus decides for the rest. */
        if (arg_bus == BUS_USER || arg_no_bus) {
                /* Without a bus there is no polkit to ask: only root may, but on the user's own
                 * socket everyone may. */
                local_authorizer_init(&c.local_authorizer, arg_bus == BUS_USER);
                manager_set_authorizer(c.manager, &c.local_authorizer.authorizer);
        } else {
                r = polkit_authorizer_new(&c.polkit, c.bus);
                if (r < 0) {
                        log_oom();
                        goto finish_fail;
                }
                setup_polkit_test_hook(c.polkit);
                manager_set_authorizer(c.manager, polkit_authorizer_get(c.polkit));
        }
        if (c.bus) {
                r = machined_resolver_new(&c.machined, c.bus, c.manager);
                if (r < 0) {
                        log_error_errno(r, "Failed to watch systemd-machined: %m");
                        goto finish_fail;
                }
                manager_set_guest_resolver(c.manager, machined_resolver_get(c.machined));
        }
        setup_test_hooks(c.manager);
        r = setup_state_file(&c);
        if (r < 0)
                goto finish_fail;
        r = setup_varlink(&c);
        if (r < 0)
                goto finish_fail;
        /* The bus is connected, the state directory is ours and restored ports are bound: from
         * here on nothing needs root. */
        if (arg_run_as) {
                r = run_as_drop(&c.run_as);
                if (r < 0)
                        goto finish_fail;
        }
        if (c.bus) {
                r = manager_dbus_new(&c.manager_dbus, c.manager, c.bus);
                if (r < 0) {
                        log_error_errno(r, "Failed to export objects: %m");
                        goto finish_fail;
                }
                /* What the state file restored is checked against the world now. */
                manager_dbus_adopt_callers(c.manager_dbus);
                manager_recheck_machines(c.manager);
                r = request_name(&c);
                if (r < 0) {
                        log_error_errno(r, "Failed to request the name %s: %m", BUS_NAME);
                        goto finish_fail;
                }
                r = bus_ev_new(&c.bus_ev, c.loop, c.bus, on_bus_lost, &c);
                if (r < 0) {
                        log_oom();
                        goto finish_fail;
                }
        } else {
                /* No bus: nobody can be on it to hold caller-bound ports restored. */
                manager_foreach_bound_caller(c.manager, forget_caller, c.manager);
                c.serving = true;
                log_info("Serving varlink only (no bus).");
                (void) sd_notify(0, "READY=1\nSTATUS=Serving varlink (no bus)");
        }

        ev_signal_init(&c.sigterm, on_signal, SIGTERM);
        ev_signal_init(&c.sigint, on_signal, SIGINT);
        ev_signal_init(&c.sighup, on_signal, SIGHUP);
        c.sigterm.data = c.sigint.data = c.sighup.data = &c;
        ev_signal_start(c.loop, &c.sigterm);
        ev_signal_start(c.loop, &c.sigint);
        ev_signal_start(c.loop, &c.sighup);

        if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
                ev_timer_init(&c.watchdog, on_watchdog, 0., (double) watchdog_usec / 2e6);
                ev_timer_again(c.loop, &c.watchdog);
        }

        busy_poll_start(&c.busy_poll, c.loop, arg_busy_poll_usec / 1e6);
        ev_run(c.loop, 0);

        (void) sd_notify(0, "STOPPING=1\nSTATUS=Shutting down");
        if (c.name_acquired || c.serving)
                manager_remove_all(c.manager, PORT_REASON_SHUTDOWN);
        if (c.bus)
                (void) sd_bus_flush(c.bus);
        goto finish;

finish_fail:
        c.exit_code = EXIT_FAILURE;
finish:
        if (c.loop) {
                busy_poll_stop(&c.busy_poll);
                ev_timer_stop(c.loop, &c.watchdog);
                ev_signal_stop(c.loop, &c.sigterm);
                ev_signal_stop(c.loop, &c.sigint);
                ev_signal_stop(c.loop, &c.sighup);
        }
        c.bus_ev = bus_ev_free(c.bus_ev);
        /* The server first: it cancels the calls the varlink face waits for. */
        c.varlink = varlink_server_free(c.varlink);
        c.publisher1 = publisher1_free(c.publisher1);
        c.manager_dbus = manager_dbus_free(c.manager_dbus);
        c.manager = manager_free(c.manager);
        c.polkit = polkit_authorizer_free(c.polkit);
        c.machined = machined_resolver_free(c.machined);
        run_as_done(&c.run_as);
        if (c.bus)
                c.bus = sd_bus_flush_close_unref(c.bus);
        ev_loop_destroy(c.loop);
        return c.exit_code;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
