/* org.varlink.certification on src/varlink: the server that varlink-go's client certifies */

/*
 * Usage: varlink-certification-server --varlink=unix:PATH
 *
 * A client calls Start, Test01 ... Test11, End in this order, passing each reply on as the
 * next call's parameters (the interface's doc comment); the server checks every call against
 * what it must be, as varlink-go's and varlink-python's certification servers do, and answers
 * CertificationError {wants, got} (the call expected and the call made) at the first
 * difference, ClientIdError for a client_id it never gave out. Test10 must be called with
 * "more" and gets ten replies, Test11 must be oneway. End answers all_ok: true only after the
 * whole sequence passed, and then prints "certified: ..." on stdout, which the test looks for:
 * varlink-go's client exits 0 whatever happened.
 *
 * Numbers compare by value (a client may send the float 1.0 as 1), and an absent optional field
 * equals null. SIGTERM or SIGINT ends the server with status 0. A test program: running out of
 * memory aborts it.
 */

#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "org.varlink.certification.h"
#include "varlink.h"

#define CERTIFICATION "org.varlink.certification"
#define CLIENTS_MAX 100U
#define CLIENT_IDLE_SEC 60 /* a client that stopped half way is forgotten after it */

/* The calls in their order, with what each must carry besides client_id and what it gets. */
typedef struct Step {
        const char *method;
        const char *wants;
        const char *reply;
} Step;

#define STRUCT                                                                                     \
        "{\"bool\":false,\"int\":2,\"float\":3.141592653589793,\"string\":\"a lot of string\"}"
#define MAP "{\"foo\":\"Foo\",\"bar\":\"Bar\"}"
#define SET "{\"one\":{},\"two\":{},\"three\":{}}"
#define MYTYPE                                                                                      \
        "{\"object\":{\"method\":\"org.varlink.certification.Test09\",\"parameters\":{\"map\":" MAP \
        "}},\"enum\":\"two\",\"struct\":{\"first\":1,\"second\":\"2\"},"                            \
        "\"array\":[\"one\",\"two\",\"three\"],\"dictionary\":" MAP ",\"stringset\":" SET           \
        ",\"nullable\":null,\"nullable_array_struct\":null,\"interface\":{\"foo\":[null,"           \
        "{\"Foo\":\"foo\",\"Bar\":\"bar\"},null,{\"one\":\"foo\",\"two\":\"bar\"}],"                \
        "\"anon\":{\"foo\":true,\"bar\":false}}}"
#define REPLIES                                                                                    \
        "[\"Reply number 1\",\"Reply number 2\",\"Reply number 3\",\"Reply number 4\","            \
        "\"Reply number 5\",\"Reply number 6\",\"Reply number 7\",\"Reply number 8\","             \
        "\"Reply number 9\",\"Reply number 10\"]"

enum {
        STEP_START,
        STEP_TEST10 = 10,
        STEP_TEST11,
        STEP_END,
        N_STEPS,
};

static const Step steps[N_STEPS] = {
        { "Start", "{}", NULL },
        { "Test01", "{}", "{\"bool\":true}" },
        { "Test02", "{\"bool\":true}", "{\"int\":1}" },
        { "Test03", "{\"int\":1}", "{\"float\":1.0}" },
        { "Test04", "{\"float\":1.0}", "{\"string\":\"ping\"}" },
        { "Test05", "{\"string\":\"ping\"}",
          "{\"bool\":false,\"int\":2,\"float\":3.141592653589793,\"string\":\"a lot of string\"}" },
        { "Test06", STRUCT, "{\"struct\":" STRUCT "}" },
        { "Test07", "{\"struct\":" STRUCT "}", "{\"map\":" MAP "}" },
        { "Test08", "{\"map\":" MAP "}", "{\"set\":" SET "}" },
        { "Test09", "{\"set\":" SET "}", "{\"mytype\":" MYTYPE "}" },
        { "Test10", "{\"mytype\":" MYTYPE "}", NULL },
        { "Test11", "{\"last_more_replies\":" REPLIES "}", NULL },
        { "End", "{}", NULL },
};

typedef struct Client Client;
struct Client {
        char id[37];
        unsigned next; /* the step it has to call now */
        bool failed;
        time_t last;
        Client *next_client;
};

typedef struct Certification {
        Client *clients;
        unsigned n_clients;
        json_object *wants[N_STEPS];
} Certification;

/* Equal as JSON values: numbers by value, an absent member like a null one. */
static bool json_equal(json_object *a, json_object *b) {
        json_type ta = json_object_get_type(a), tb = json_object_get_type(b);

        if ((ta == json_type_int || ta == json_type_double) &&
            (tb == json_type_int || tb == json_type_double)) {
                if (ta == json_type_int && tb == json_type_int)
                        return json_object_get_int64(a) == json_object_get_int64(b);
                return json_object_get_double(a) == json_object_get_double(b);
        }
        if (ta != tb)
                return false;

        switch (ta) {
        case json_type_null:
                return true;
        case json_type_boolean:
                return json_object_get_boolean(a) == json_object_get_boolean(b);
        case json_type_string:
                return json_object_get_string_len(a) == json_object_get_string_len(b) &&
                       memcmp(json_object_get_string(a), json_object_get_string(b),
                              (size_t) json_object_get_string_len(a)) == 0;
        case json_type_array:
                if (json_object_array_length(a) != json_object_array_length(b))
                        return false;
                for (size_t i = 0; i < json_object_array_length(a); i++)
                        if (!json_equal(json_object_array_get_idx(a, i),
                                        json_object_array_get_idx(b, i)))
                                return false;
                return true;
        case json_type_object: {
                json_object_object_foreach(a, ka, va) {
                        json_object *other = NULL;

                        (void) json_object_object_get_ex(b, ka, &other);
                        if (!json_equal(va, other))
                                return false;
                }
                json_object_object_foreach(b, kb, vb) {
                        json_object *other = NULL;

                        (void) json_object_object_get_ex(a, kb, &other);
                        if (!json_equal(other, vb))
                                return false;
                }
                return true;
        }
        default:
                return false;
        }
}

static json_object *must(json_object *o) {
        if (!o) {
                log_oom();
                abort();
        }
        return o;
}

static json_object *parse(const char *text) {
        json_object *o = json_tokener_parse(text);

        if (!o) {
                log_error("Cannot parse the certification's own JSON: %s", text);
                abort();
        }
        return o;
}

static void add(json_object *o, const char *key, json_object *v) {
        if (json_object_object_add(o, key, must(v)) < 0) {
                log_oom();
                abort();
        }
}

static Client *client_find(Certification *cert, json_object *parameters) {
        json_object *id;

        if (!json_object_object_get_ex(parameters, "client_id", &id) ||
            !json_object_is_type(id, json_type_string))
                return NULL;
        for (Client *c = cert->clients; c; c = c->next_client)
                if (strcmp(c->id, json_object_get_string(id)) == 0)
                        return c;
        return NULL;
}

static void client_remove(Certification *cert, Client *c) {
        for (Client **p = &cert->clients; *p; p = &(*p)->next_client)
                if (*p == c) {
                        *p = c->next_client;
                        cert->n_clients--;
                        free(c);
                        return;
                }
}

static int client_new(Certification *cert, Client **ret) {
        time_t now = time(NULL);
        uint8_t b[16];
        Client *c;

        for (Client *x = cert->clients, *n; x; x = n) {
                n = x->next_client;
                if (now - x->last > CLIENT_IDLE_SEC)
                        client_remove(cert, x);
        }
        if (cert->n_clients >= CLIENTS_MAX)
                return -EBUSY;

        if (getrandom(b, sizeof b, 0) != (ssize_t) sizeof b)
                return -errno;
        b[6] = (b[6] & 0x0f) | 0x40; /* a version 4 UUID, as varlink-go makes them */
        b[8] = (b[8] & 0x3f) | 0x80;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        snprintf(c->id, sizeof c->id,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                 b[15]);
        c->next = STEP_START + 1;
        c->last = now;
        c->next_client = cert->clients;
        cert->clients = c;
        cert->n_clients++;
        *ret = c;
        return 0;
}

/* {"method": "org.varlink.certification.NAME", "parameters": parameters} */
static json_object *call_object(const char *name, json_object *parameters) {
        json_object *o = must(json_object_new_object());
        char method[128];

        snprintf(method, sizeof method, CERTIFICATION ".%s", name);
        add(o, "method", json_object_new_string(method));
        add(o, "parameters", parameters);
        return o;
}

static int reply_certification_error(VarlinkCall *call, Client *c, json_object *wants,
                                     json_object *got) {
        json_object *p = must(json_object_new_object());

        log_info("Client %s failed at %s.", c->id, varlink_call_method(call));
        c->failed = true;
        add(p, "wants", wants);
        add(p, "got", got);
        return varlink_call_reply_error(call, CERTIFICATION ".CertificationError", p);
}

static int method_step(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Certification *cert = userdata;
        const char *name = strrchr(varlink_call_method(call), '.') + 1;
        json_object *wants, *got;
        unsigned step = 0;
        Client *c = NULL;
        int r;

        while (step < N_STEPS && strcmp(steps[step].method, name) != 0)
                step++;
        if (step == N_STEPS)
                return -EINVAL; /* only steps are registered */

        if (step == STEP_START) {
                json_object *p;

                r = client_new(cert, &c);
                if (r < 0)
                        return varlink_call_reply_error(call, CERTIFICATION ".ClientIdError", NULL);
                p = must(json_object_new_object());
                add(p, "client_id", json_object_new_string(c->id));
                return varlink_call_reply(call, p);
        }

        c = client_find(cert, parameters);
        if (!c)
                return varlink_call_reply_error(call, CERTIFICATION ".ClientIdError", NULL);
        c->last = time(NULL);

        /* The call it had to make, with the client_id it was given. */
        wants = NULL;
        if (json_object_deep_copy(cert->wants[c->next], &wants, NULL) < 0)
                must(NULL);
        add(wants, "client_id", json_object_new_string(c->id));
        if (c->next != step || !json_equal(wants, parameters) ||
            (step == STEP_TEST10 && !(flags & VARLINK_CALL_MORE)) ||
            (step == STEP_TEST11 && !(flags & VARLINK_CALL_ONEWAY))) {
                json_object *w = call_object(steps[c->next].method, json_object_get(wants));

                json_object_put(wants);
                if (c->next == STEP_TEST10)
                        add(w, "more", json_object_new_boolean(true));
                else if (c->next == STEP_TEST11)
                        add(w, "oneway", json_object_new_boolean(true));
                got = call_object(name, json_object_get(parameters));
                return reply_certification_error(call, c, w, got);
        }
        json_object_put(wants);
        c->next++;

        switch (step) {
        case STEP_TEST10:
                for (unsigned i = 1; i <= 10; i++) {
                        json_object *p = must(json_object_new_object());
                        char s[32];

                        snprintf(s, sizeof s, "Reply number %u", i);
                        add(p, "string", json_object_new_string(s));
                        r = i < 10 ? varlink_call_reply_continue(call, p)
                                   : varlink_call_reply(call, p);
                        if (r < 0)
                                return r;
                }
                return 0;
        case STEP_TEST11:
                return varlink_call_reply(call, NULL); /* oneway: nothing is sent */
        case STEP_END: {
                json_object *p = must(json_object_new_object());
                bool ok = !c->failed;

                if (ok) {
                        printf("certified: client %s passed Start, Test01 to Test11 and End\n",
                               c->id);
                        fflush(stdout);
                }
                client_remove(cert, c);
                add(p, "all_ok", json_object_new_boolean(ok));
                return varlink_call_reply(call, p);
        }
        default:
                return varlink_call_reply(call, parse(steps[step].reply));
        }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
        ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char *argv[]) {
        static const VarlinkMethod methods[] = {
                { "Start", method_step },  { "Test01", method_step }, { "Test02", method_step },
                { "Test03", method_step }, { "Test04", method_step }, { "Test05", method_step },
                { "Test06", method_step }, { "Test07", method_step }, { "Test08", method_step },
                { "Test09", method_step }, { "Test10", method_step }, { "Test11", method_step },
                { "End", method_step },
        };
        static const VarlinkInterface iface = {
                .name = CERTIFICATION,
                .description = certification_description,
                .methods = methods,
                .n_methods = ELEMENTSOF(methods),
        };
        Certification cert = { 0 };
        struct ev_loop *loop = EV_DEFAULT;
        VarlinkServer *s = NULL;
        ev_signal term, intr;
        const char *path;
        int r;

        log_setup();
        if (argc != 2 || strncmp(argv[1], "--varlink=unix:", 15) != 0) {
                fprintf(stderr, "Usage: %s --varlink=unix:PATH\n", argv[0]);
                return 2;
        }
        path = argv[1] + 15;

        for (unsigned i = 0; i < N_STEPS; i++)
                cert.wants[i] = parse(steps[i].wants);

        r = varlink_server_new(&s, loop,
                               &(VarlinkServerInfo){ .vendor = "portpub",
                                                     .product = "varlink-certification-server",
                                                     .version = "1",
                                                     .url = "https://github.com/varlink/go" });
        if (r >= 0)
                r = varlink_server_add_interface(s, &iface, &cert);
        if (r >= 0)
                r = varlink_server_listen_path(s, path, 0600);
        if (r < 0) {
                log_error_errno(r, "Cannot serve %s on %s: %m", CERTIFICATION, path);
                varlink_server_free(s);
                return 1;
        }

        ev_signal_init(&term, on_signal, SIGTERM);
        ev_signal_start(loop, &term);
        ev_signal_init(&intr, on_signal, SIGINT);
        ev_signal_start(loop, &intr);
        printf("listening on %s\n", path);
        fflush(stdout);
        ev_run(loop, 0);

        varlink_server_free(s);
        while (cert.clients)
                client_remove(&cert, cert.clients);
        for (unsigned i = 0; i < N_STEPS; i++)
                json_object_put(cert.wants[i]);
        return 0;
}
