/* Fuzzes the D-Bus face: method calls with arbitrary arguments on a real sd-bus connection
 *
 * The face (src/bus: Manager, Sandbox and Port objects, the object manager) is exported on the
 * server end of a socketpair (sd_bus_set_server(), anonymous authentication), driven by the
 * daemon's own libev glue, over a manager that allows everything (FuzzAuthorizer, answering at
 * once or from the loop) and a GuestResolver that answers from the input. The client end plays
 * both the callers and the bus driver: it answers the face's GetConnectionCredentials and
 * AddMatch calls (the caller's uid, an error or a malformed answer, as the input says) and sends
 * NameOwnerChanged when the input says a caller left the bus.
 *
 * The input is a list of operations. A call picks an object (the manager, a sandbox by id, a
 * port by serial), a method of its interfaces (every mutating one, the reads, Properties,
 * Introspect, GetManagedObjects), a sender, and a body: either the method's own signature
 * filled with values from the input (each value now and then of a wrong type), or a raw body of
 * a signature the input spells. After each call the loop runs until the reply comes, which must
 * be a method return or an error of the standard or the daemon's own names; a mutating call
 * that failed must have changed no count, and the manager's tables must be valid throughout.
 * All in a network namespace of the target's own, so the binds the calls ask for are real. */
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "bus-ev.h"
#include "fuzz-util.h"
#include "macro.h"
#include "manager-dbus.h"

#define OPS_MAX 32
#define ROUNDS_MAX 2000
#define IDLE_ROUNDS_MAX 16
#define SENDERS 4

static struct ev_loop *loop;
static FuzzAuthorizer authorizer;
static FuzzResolver resolver;
/* The input being run: the client's handlers and the resolver read their answers from it. */
static FuzzInput *input;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Strings that mean something to the face, so that the input reaches past the parsing. */
static const char *const words[] = {
        "",
        "a",
        "b",
        "vm-1",
        "-bad",
        "x.y_z",
        "tcp",
        "udp",
        "sctp",
        "*",
        "127.0.0.1",
        "::1",
        "127.0.0.2",
        "0.0.0.0",
        "10.1.2.3",
        "fd00::2",
        "224.0.0.1",
        "::",
        "BindToCaller",
        "IdleTimeoutUSec",
        "MaxSessions",
        "ProxyProtocol",
        "v1",
        "v2",
        MANAGER_INTERFACE,
        SANDBOX_INTERFACE,
        PORT_INTERFACE,
        "NPorts",
        "Id",
        "HostPort",
};

/* A word of the list, or up to 255 bytes of the input; a byte past ASCII becomes U+00E9, so
 * that the string is UTF-8 (sd-bus refuses others: the face never sees them) and messages that
 * quote it must cut it at a character boundary. */
static const char *fuzz_word(FuzzInput *in, char buf[512]) {
        char raw[256];
        size_t n = 0;
        uint8_t w = fuzz_u8(in);

        if (w < 3 * ELEMENTSOF(words))
                return words[w % ELEMENTSOF(words)];
        fuzz_string(in, raw, 255);
        for (const char *c = raw; *c; c++)
                if ((unsigned char) *c >= 0x80) {
                        buf[n++] = (char) 0xc3;
                        buf[n++] = (char) 0xa9;
                } else
                        buf[n++] = *c;
        buf[n] = 0;
        return buf;
}

static uint16_t fuzz_port(FuzzInput *in) {
        static const uint16_t ports[] = { 0, 1, 22, 80, 8080, 20000, 20001, 20002, 65535 };
        uint8_t w = fuzz_u8(in);

        return w < 2 * ELEMENTSOF(ports) ? ports[w % ELEMENTSOF(ports)] : fuzz_u16(in);
}

/* The resolver: the next input byte decides. */
static int answer(void *userdata, const char *id, SockaddrUnion *g4, SockaddrUnion *g6) {
        return fuzz_guest_answer(fuzz_u8(input), g4, g6);
}

/* ---- the bus driver's part, on the client end ---------------------------------------------- */

static int driver_get_credentials(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        fuzz_require(name && name[0] == ':'); /* the face asks about the sender of a call */
        switch (fuzz_u8(input) % 8) {
        case 0:
                return sd_bus_error_setf(error, "org.freedesktop.DBus.Error.NameHasNoOwner",
                                         "Could not get UID of name '%s': no such name", name);
        case 1:
                /* No uid at all. */
                return sd_bus_reply_method_return(m, "a{sv}", 1, "ProcessID", "u", 42);
        case 2:
                /* The uid with a wrong type. */
                return sd_bus_reply_method_return(m, "a{sv}", 1, "UnixUserID", "s", "0");
        case 3:
        case 4:
                return sd_bus_reply_method_return(m, "a{sv}", 2, "UnixUserID", "u",
                                                  1000 + fuzz_u8(input) % 2, "ProcessID", "u", 42);
        default:
                r = sd_bus_message_new_method_return(m, &reply);
                if (r >= 0)
                        r = sd_bus_message_append(reply, "a{sv}", 3, "UnixUserID", "u", 0,
                                                  "ProcessID", "u", 1, "LinuxSecurityLabel", "ay", 0);
                return r < 0 ? r : sd_bus_send(NULL, reply, NULL);
        }
}

static int driver_add_match(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable driver_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("GetConnectionCredentials", "s", "a{sv}", driver_get_credentials, 0),
        SD_BUS_METHOD("AddMatch", "s", "", driver_add_match, 0),
        SD_BUS_VTABLE_END,
};

/* ---- bodies -------------------------------------------------------------------------------- */

/* The length of the complete type at sig. */
static size_t complete_type_len(const char *sig) {
        size_t i = 0;
        unsigned depth = 0;

        while (sig[i]) {
                char c = sig[i++];

                if (c == 'a')
                        continue; /* its element follows */
                if (c == '(' || c == '{')
                        depth++;
                else if (c == ')' || c == '}')
                        depth--;
                if (depth == 0)
                        break;
        }
        return i;
}

/* One value of the complete type sig[0..len), from the input. */
static int append_value(sd_bus_message *m, FuzzInput *in, const char *sig, size_t len) {
        static const char *const variant_types[] = { "s", "u", "t", "b", "q", "as", "i", "y" };
        char buf[512], contents[64];
        int r;

        if (len >= sizeof contents)
                return -EINVAL;
        memcpy(contents, sig, len);
        contents[len] = 0;
        switch (sig[0]) {
        case 's':
                return sd_bus_message_append_basic(m, 's', fuzz_word(in, buf));
        case 'o':
                return sd_bus_message_append_basic(m, 'o', fuzz_u8(in) & 1 ? "/" : MANAGER_PATH);
        case 'g':
                return sd_bus_message_append_basic(m, 'g', "a(ssq)");
        case 'q': {
                uint16_t q = fuzz_port(in);

                return sd_bus_message_append_basic(m, 'q', &q);
        }
        case 'b': {
                int b = fuzz_u8(in) & 1;

                return sd_bus_message_append_basic(m, 'b', &b);
        }
        case 'd': {
                double d = (double) (int32_t) fuzz_u32(in);

                return sd_bus_message_append_basic(m, 'd', &d);
        }
        case 'y':
        case 'n':
        case 'i':
        case 'u':
        case 'x':
        case 't': {
                uint8_t w = fuzz_u8(in);
                /* Small values, the edges of the types, or anything. */
                uint64_t u = w < 64 ? w : w < 128 ? UINT64_MAX >> (w % 64) : fuzz_u64(in);
                uint32_t u32 = (uint32_t) u;
                uint16_t u16 = (uint16_t) u;
                uint8_t u8 = (uint8_t) u;

                if (sig[0] == 't' || sig[0] == 'x')
                        return sd_bus_message_append_basic(m, sig[0], &u);
                return sd_bus_message_append_basic(m, sig[0],
                                                   sig[0] == 'y'   ? (const void *) &u8
                                                   : sig[0] == 'n' ? (const void *) &u16
                                                                   : (const void *) &u32);
        }
        case 'v': {
                const char *t = variant_types[fuzz_u8(in) % ELEMENTSOF(variant_types)];

                r = sd_bus_message_open_container(m, 'v', t);
                if (r >= 0)
                        r = append_value(m, in, t, strlen(t));
                return r < 0 ? r : sd_bus_message_close_container(m);
        }
        case 'a': {
                unsigned n = fuzz_u8(in) % 5;

                r = sd_bus_message_open_container(m, 'a', contents + 1);
                for (unsigned i = 0; r >= 0 && i < n; i++)
                        r = append_value(m, in, contents + 1, len - 1);
                return r < 0 ? r : sd_bus_message_close_container(m);
        }
        case '(':
        case '{': {
                contents[len - 1] = 0;
                r = sd_bus_message_open_container(m, sig[0] == '(' ? 'r' : 'e', contents + 1);
                for (const char *c = contents + 1; r >= 0 && *c;) {
                        size_t k = complete_type_len(c);

                        r = append_value(m, in, c, k);
                        c += k;
                }
                return r < 0 ? r : sd_bus_message_close_container(m);
        }
        default:
                return -EINVAL;
        }
}

/* Types a wrong argument is made of: every basic type, containers, and the daemon's own. */
static const char *const any_types[] = {
        "s", "q", "u",  "t",  "b",      "y",       "n",     "i",     "x",     "d",      "o",
        "g", "v", "as", "ay", "a(ssq)", "a(ssqq)", "a{sv}", "(ssq)", "a{ss}", "(ssqq)", "aas",
};

static int append_any(sd_bus_message *m, FuzzInput *in) {
        const char *t = any_types[fuzz_u8(in) % ELEMENTSOF(any_types)];

        return append_value(m, in, t, strlen(t));
}

/* The method's own arguments (now and then one of another type, one missing or one extra), or a
 * raw body of types the input picks. */
static int append_body(sd_bus_message *m, FuzzInput *in, const char *signature) {
        uint8_t mode = fuzz_u8(in);
        size_t n = 0;
        int r = 0;

        if (mode % 8 == 0) {
                unsigned k = fuzz_u8(in) % 6;

                for (unsigned i = 0; r >= 0 && i < k; i++)
                        r = append_any(m, in);
                return r;
        }
        for (const char *c = signature; *c; c += complete_type_len(c))
                n++;
        if (mode % 8 == 1 && n > 0)
                n--; /* the last one missing */
        for (const char *c = signature; r >= 0 && n > 0; n--) {
                size_t k = complete_type_len(c);

                r = fuzz_u8(in) < 12 ? append_any(m, in) : append_value(m, in, c, k);
                c += k;
        }
        if (r >= 0 && mode % 8 == 2)
                r = append_any(m, in); /* one extra */
        return r;
}

/* ---- the calls ----------------------------------------------------------------------------- */

typedef enum Target { TARGET_MANAGER, TARGET_SANDBOX, TARGET_PORT, TARGET_ANY } Target;

typedef struct Method {
        Target target;
        const char *interface, *member, *signature;
        bool mutating;
} Method;

static const Method methods[] = {
        { TARGET_MANAGER, MANAGER_INTERFACE, "PublishPorts", "sasa(ssqq)a{sv}", true },
        { TARGET_MANAGER, MANAGER_INTERFACE, "UnpublishPorts", "sa(ssq)", true },
        { TARGET_MANAGER, MANAGER_INTERFACE, "RemoveSandbox", "s", true },
        { TARGET_MANAGER, MANAGER_INTERFACE, "SetGuestAddresses", "sas", true },
        { TARGET_MANAGER, MANAGER_INTERFACE, "GetSandbox", "s", false },
        { TARGET_MANAGER, MANAGER_INTERFACE, "GetPort", "ssq", false },
        { TARGET_MANAGER, MANAGER_INTERFACE, "ListSandboxes", "", false },
        { TARGET_MANAGER, MANAGER_INTERFACE, "ListPorts", "", false },
        { TARGET_SANDBOX, SANDBOX_INTERFACE, "PublishPorts", "a(ssqq)a{sv}", true },
        { TARGET_SANDBOX, SANDBOX_INTERFACE, "UnpublishPorts", "a(ssq)", true },
        { TARGET_SANDBOX, SANDBOX_INTERFACE, "SetGuestAddresses", "as", true },
        { TARGET_SANDBOX, SANDBOX_INTERFACE, "Remove", "", true },
        { TARGET_PORT, PORT_INTERFACE, "Unpublish", "", true },
        { TARGET_ANY, "org.freedesktop.DBus.Properties", "Get", "ss", false },
        { TARGET_ANY, "org.freedesktop.DBus.Properties", "GetAll", "s", false },
        { TARGET_ANY, "org.freedesktop.DBus.Properties", "Set", "ssv", true },
        { TARGET_ANY, "org.freedesktop.DBus.Introspectable", "Introspect", "", false },
        { TARGET_MANAGER, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", false },
};

typedef struct Harness {
        sd_bus *server, *client;
        BusEv *glue;
        Manager *manager;
        ManagerDBus *face;
        sd_bus_slot *driver;
        bool replied;
        bool failed; /* the reply was an error */
        bool lost;
} Harness;

static void on_lost(BusEv *b, int error, void *userdata) {
        ((Harness *) userdata)->lost = true;
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Harness *h = userdata;
        const sd_bus_error *e;

        h->replied = true;
        h->failed = sd_bus_message_is_method_error(reply, NULL);
        if (!h->failed) {
                uint8_t type = 0;

                fuzz_require(sd_bus_message_get_type(reply, &type) >= 0);
                fuzz_require(type == SD_BUS_MESSAGE_METHOD_RETURN);
                return 0;
        }
        e = sd_bus_message_get_error(reply);
        fuzz_require(e && e->name);
        if (getenv("FUZZ_DBUS_VERBOSE"))
                fprintf(stderr, "reply: %s: %s\n", e->name, e->message);
        /* A named error, the standard ones or the daemon's; never a timeout. */
        fuzz_require(strncmp(e->name, "org.freedesktop.DBus.Error.", 27) == 0 ||
                     strncmp(e->name, "io.portpub.Publisher1.Error.", 28) == 0);
        fuzz_require(strcmp(e->name, SD_BUS_ERROR_TIMEOUT) != 0 &&
                     strcmp(e->name, SD_BUS_ERROR_NO_REPLY) != 0);
        /* Quoting a caller's strings bounded (QUOTE_MAX), whatever they were. */
        fuzz_require(e->message && strlen(e->message) < 4096);
        return 0;
}

/* Runs both ends until cond holds, or nothing moves any more. */
static void pump(Harness *h, bool (*cond)(Harness *h)) {
        unsigned idle = 0;

        for (unsigned round = 0; round < ROUNDS_MAX && !(cond && cond(h)) && !h->lost; round++) {
                bool progress = false;
                int r;

                while ((r = sd_bus_process(h->client, NULL)) > 0)
                        progress = true;
                fuzz_require(r >= 0);
                ev_run(loop, EVRUN_NOWAIT);
                if (progress || fuzz_pending(&authorizer, &resolver) > 0)
                        idle = 0;
                else if (++idle >= IDLE_ROUNDS_MAX)
                        break;
        }
        fuzz_require(!h->lost);
}

static bool has_replied(Harness *h) {
        return h->replied;
}

static void object_path(FuzzInput *in, Target t, char *buf, size_t size) {
        char word[512];

        if (t == TARGET_ANY)
                t = (Target) (fuzz_u8(in) % 3);
        if (t == TARGET_MANAGER)
                (void) snprintf(buf, size, "%s", MANAGER_PATH);
        else if (t == TARGET_PORT) {
                uint8_t w = fuzz_u8(in);

                if (w < 250)
                        (void) snprintf(buf, size, "%s/%u", PORT_PATH_PREFIX, w % 8);
                else
                        (void) snprintf(buf, size, "%s/0%u", PORT_PATH_PREFIX, w % 8);
        } else {
                _cleanup_free_ char *p = NULL;

                if (sd_bus_path_encode(SANDBOX_PATH_PREFIX, fuzz_word(in, word), &p) < 0)
                        p = NULL;
                (void) snprintf(buf, size, "%s", p ? p : SANDBOX_PATH_PREFIX);
        }
}

static void call(Harness *h, FuzzInput *in) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const Method *how = &methods[fuzz_u8(in) % ELEMENTSOF(methods)];
        uint32_t n_sandboxes = manager_n_sandboxes(h->manager);
        uint32_t n_ports = manager_n_ports(h->manager);
        char path[512], sender[16];
        sd_bus_slot *slot = NULL;
        int r;

        object_path(in, how->target, path, sizeof path);
        (void) snprintf(sender, sizeof sender, ":1.%u", fuzz_u8(in) % SENDERS);
        r = sd_bus_message_new_method_call(h->client, &m, NULL, path, how->interface, how->member);
        fuzz_require(r >= 0);
        r = sd_bus_message_set_sender(m, sender);
        fuzz_require(r >= 0);
        (void) sd_bus_message_set_allow_interactive_authorization(m, fuzz_u8(in) & 1);
        r = append_body(m, in, how->signature);
        if (r < 0) {
                if (getenv("FUZZ_DBUS_VERBOSE"))
                        fprintf(stderr, "not sent: %s.%s: %s\n", how->interface, how->member,
                                strerror(-r));
                return;
        } /* a body sd-bus itself refuses to build never reaches the daemon */
        if (getenv("FUZZ_DBUS_VERBOSE"))
                fprintf(stderr, "call %s %s.%s(%s) from %s\n", path, how->interface, how->member,
                        sd_bus_message_get_signature(m, true), sender);
        h->replied = false;
        r = sd_bus_call_async(h->client, &slot, m, on_reply, h, 0);
        fuzz_require(r >= 0);
        pump(h, has_replied);
        /* Every call is answered. */
        fuzz_require(h->replied);
        sd_bus_slot_unref(slot);
        fuzz_check_manager(h->manager);
        /* A call that failed changed nothing. */
        if (how->mutating && h->failed) {
                fuzz_require(manager_n_sandboxes(h->manager) == n_sandboxes);
                fuzz_require(manager_n_ports(h->manager) == n_ports);
        }
}

/* A caller leaves the bus: the driver says so. */
static void name_lost(Harness *h, FuzzInput *in) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        char name[16];
        int r;

        (void) snprintf(name, sizeof name, ":1.%u", fuzz_u8(in) % SENDERS);
        r = sd_bus_message_new_signal(h->client, &m, "/org/freedesktop/DBus",
                                      "org.freedesktop.DBus", "NameOwnerChanged");
        fuzz_require(r >= 0);
        r = sd_bus_message_set_sender(m, "org.freedesktop.DBus");
        fuzz_require(r >= 0);
        r = sd_bus_message_append(m, "sss", name, name, "");
        fuzz_require(r >= 0);
        r = sd_bus_send(h->client, m, NULL);
        fuzz_require(r >= 0);
        pump(h, NULL);
        fuzz_check_manager(h->manager);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        loop = fuzz_setup(&authorizer, &resolver, answer);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const sd_id128_t id =
                SD_ID128_MAKE(70, 6f, 72, 74, 70, 75, 62, 66, 75, 7a, 7a, 64, 62, 75, 73, 00);
        FuzzInput in = { .data = data, .size = size };
        Harness h = {};
        int fds[2], r;

        input = &in;
        authorizer.pending = fuzz_u8(&in) & 1;
        r = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds);
        fuzz_require(r == 0);

        r = sd_bus_new(&h.server);
        fuzz_require(r >= 0);
        fuzz_require(sd_bus_set_fd(h.server, fds[0], fds[0]) >= 0);
        fuzz_require(sd_bus_set_server(h.server, 1, id) >= 0);
        fuzz_require(sd_bus_set_anonymous(h.server, 1) >= 0);
        fuzz_require(sd_bus_start(h.server) >= 0);
        r = sd_bus_new(&h.client);
        fuzz_require(r >= 0);
        fuzz_require(sd_bus_set_fd(h.client, fds[1], fds[1]) >= 0);
        fuzz_require(sd_bus_set_anonymous(h.client, 1) >= 0);
        fuzz_require(sd_bus_start(h.client) >= 0);
        r = sd_bus_add_object_vtable(h.client, &h.driver, "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", driver_vtable, &h);
        fuzz_require(r >= 0);

        r = manager_new(&h.manager, loop);
        fuzz_require(r == 0);
        manager_set_authorizer(h.manager, &authorizer.authorizer);
        manager_set_guest_resolver(h.manager, &resolver.resolver);
        r = bus_ev_new(&h.glue, loop, h.server, on_lost, &h);
        fuzz_require(r >= 0);
        r = manager_dbus_new(&h.face, h.manager, h.server);
        fuzz_require(r >= 0);

        for (unsigned op = 0; op < OPS_MAX && in.pos < in.size; op++) {
                if (fuzz_u8(&in) < 16)
                        name_lost(&h, &in);
                else
                        call(&h, &in);
        }

        manager_dbus_free(h.face);
        bus_ev_free(h.glue);
        sd_bus_close_unref(h.server);
        sd_bus_slot_unref(h.driver);
        sd_bus_close_unref(h.client);
        fuzz_require(fuzz_pending(&authorizer, &resolver) == 0);
        manager_free(h.manager);
        input = NULL;
        return 0;
}
