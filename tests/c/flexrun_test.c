/*
 * A C client of libflexrun, compiled against flexrun.h by CABITests (Tests/CLITests) and run as
 * `flexrun_test COMMAND MODEL ...`. Each command checks what it can on its own and exits 1 with
 * a line on stderr naming the failed check; commands whose result is compared with the CLI print
 * it on stdout ("ids: 1 2 3").
 *
 *   ids MODEL PROMPT N [CAP]     greedy ids of PROMPT (at most N), in memory or under CAP bytes
 *   abort MODEL N                a callback returning false after N tokens ends the generation, and so
 *                                does flexrun_session_request_abort from a second thread
 *   limit MODEL CAP              a second thread sets the cap mid-generation: same ids, replanned
 *   errors MODEL DIR             bad input: codes and messages, never a crash (DIR for scratch files)
 *   text MODEL                   tokenize/detokenize sizes, and streamed text never splits a character
 *   batch MODEL                  two sequences stepped together give the ids each gets alone
 *   threads MODEL                two sessions of one model on two threads at once: the ids of each alone
 *   lifecycle MODEL              sessions created and freed leave no thread behind
 */
#include "flexrun.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "flexrun_test: %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, " (last error: %s)\n", flexrun_last_error());              \
            failures++;                                                                \
        }                                                                              \
    } while (0)

/* A status that must be `want`, with a message containing `needle` (NULL: any non-empty one). */
static void expect_status(int got, int want, const char *needle, const char *call, int line) {
    const char *msg = flexrun_last_error();
    if (got != want) {
        fprintf(stderr, "flexrun_test: line %d: %s returned %d, expected %d (last error: %s)\n", line, call, got, want, msg);
        failures++;
    } else if (want != FLEXRUN_OK && (msg == NULL || msg[0] == '\0' || (needle != NULL && strstr(msg, needle) == NULL))) {
        fprintf(stderr, "flexrun_test: line %d: %s: message \"%s\" lacks \"%s\"\n", line, call, msg ? msg : "(null)", needle ? needle : "");
        failures++;
    }
}
#define EXPECT_STATUS(call, want, needle) expect_status((call), (want), (needle), #call, __LINE__)

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct {
    flexrun_token ids[4096];
    int n;
    char text[65536];
    size_t text_len;
    int stop_after;     /* return false after this many tokens; 0 never */
    int bad_utf8;       /* a callback text that was not whole UTF-8 characters */
    int flushes;        /* callbacks with token -1 (held-back text at the end) */
} collected;

/* Whether `s` is a sequence of whole, valid UTF-8 characters. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n) return 0;
        for (size_t k = 1; k < len; k++) if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static bool collect(flexrun_token token, const char *text, size_t len, void *user) {
    collected *c = user;
    if (text == NULL || strlen(text) != len || !valid_utf8((const unsigned char *)text, len)) c->bad_utf8++;
    if (text && c->text_len + len < sizeof c->text) {
        memcpy(c->text + c->text_len, text, len);
        c->text_len += len;
        c->text[c->text_len] = '\0';
    }
    if (token < 0) { c->flushes++; return true; }
    if (c->n < 4096) c->ids[c->n++] = token;
    return !(c->stop_after > 0 && c->n >= c->stop_after);
}

static flexrun_model *load(const char *path, bool streaming) {
    flexrun_model_params mp = flexrun_model_default_params();
    mp.streaming = streaming;
    flexrun_model *m = NULL;
    int rc = flexrun_model_load(path, mp, &m);
    if (rc != FLEXRUN_OK) {
        fprintf(stderr, "flexrun_test: cannot load %s: %d %s\n", path, rc, flexrun_last_error());
        exit(1);
    }
    return m;
}

static flexrun_session *open_session(flexrun_model *m, int64_t cap, int32_t n_ctx, int32_t n_seq) {
    flexrun_session_params sp = flexrun_session_default_params();
    sp.memory_limit = cap;
    sp.n_ctx = n_ctx;
    sp.n_seq_max = n_seq;
    sp.follow_cgroup_limit = false;
    flexrun_session *s = NULL;
    int rc = flexrun_session_create(m, sp, &s);
    if (rc != FLEXRUN_OK) {
        fprintf(stderr, "flexrun_test: cannot create a session: %d %s\n", rc, flexrun_last_error());
        exit(1);
    }
    return s;
}

static flexrun_generate_params greedy(int n) {
    flexrun_generate_params gp = flexrun_generate_default_params();
    gp.temperature = 0;
    gp.max_tokens = n;
    return gp;
}

static void print_ids(const collected *c) {
    printf("ids:");
    for (int i = 0; i < c->n; i++) printf(" %d", c->ids[i]);
    printf("\n");
}

/* ---- commands ----------------------------------------------------------------------------- */

static int cmd_ids(const char *model, const char *prompt, int n, int64_t cap) {
    flexrun_model *m = load(model, cap > 0);
    flexrun_session *s = open_session(m, cap, 256, 1);
    static collected c;
    flexrun_stats st;
    EXPECT_STATUS(flexrun_generate(s, prompt, greedy(n), collect, &c, &st), FLEXRUN_OK, NULL);
    CHECK(st.generated_tokens == c.n, "stats say %d tokens, the callback saw %d", st.generated_tokens, c.n);
    CHECK(c.bad_utf8 == 0, "%d callback texts were not whole UTF-8 characters", c.bad_utf8);
    CHECK(st.memory_limit == cap, "stats memory_limit %lld, expected %lld", (long long)st.memory_limit, (long long)cap);
    CHECK(cap == 0 || st.bytes_read_from_disk > 0, "under a cap of %lld nothing streamed", (long long)cap);
    /* The streamed text is the detokenized ids. */
    char text[65536];
    int32_t len = flexrun_detokenize(m, c.ids, c.n, text, sizeof text);
    CHECK(len >= 0 && (size_t)len == c.text_len && memcmp(text, c.text, c.text_len) == 0,
          "streamed text \"%s\" differs from the detokenized ids \"%s\"", c.text, len >= 0 ? text : "");
    print_ids(&c);
    flexrun_session_free(s);
    flexrun_model_free(m);
    return failures ? 1 : 0;
}

/* abort: the callback lets a second thread in at token 3, and waits until it has asked to abort. */
typedef struct {
    collected c;
    flexrun_session *session;
    pthread_mutex_t lock;
    pthread_cond_t reached;
    int at_token;
    int asked;
    int status;
} abort_run;

static bool abort_callback(flexrun_token token, const char *text, size_t len, void *user) {
    abort_run *r = user;
    collect(token, text, len, &r->c);
    pthread_mutex_lock(&r->lock);
    if (r->c.n == 3) {
        r->at_token = 1;
        pthread_cond_broadcast(&r->reached);
        while (!r->asked) pthread_cond_wait(&r->reached, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return true;
}

static void *request_abort(void *user) {
    abort_run *r = user;
    pthread_mutex_lock(&r->lock);
    while (!r->at_token) pthread_cond_wait(&r->reached, &r->lock);
    r->status = flexrun_session_request_abort(r->session);
    r->asked = 1;
    pthread_cond_broadcast(&r->reached);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static int cmd_abort(const char *model, int n) {
    flexrun_model *m = load(model, false);
    flexrun_session *s = open_session(m, 0, 256, 1);
    static collected c;
    c.stop_after = n;
    flexrun_generate_params gp = greedy(64);
    gp.stop_at_eog = false;
    flexrun_stats st;
    EXPECT_STATUS(flexrun_generate(s, "Once upon a time", gp, collect, &c, &st), FLEXRUN_OK, NULL);
    CHECK(c.n == n, "the callback saw %d tokens after asking to stop at %d", c.n, n);
    CHECK(st.generated_tokens == n, "stats say %d tokens, expected %d", st.generated_tokens, n);
    CHECK(st.stop_reason == FLEXRUN_STOP_ABORTED, "stop reason %d, expected ABORTED", st.stop_reason);

    /* The session is usable afterwards, and an uninterrupted run starts with the same ids. */
    static collected full;
    EXPECT_STATUS(flexrun_generate(s, "Once upon a time", gp, collect, &full, &st), FLEXRUN_OK, NULL);
    CHECK(full.n == 64 && st.stop_reason == FLEXRUN_STOP_MAX_TOKENS, "full run: %d tokens, stop %d", full.n, st.stop_reason);
    CHECK(memcmp(full.ids, c.ids, sizeof(flexrun_token) * (size_t)n) == 0, "the aborted run is not a prefix of the full one");

    /* flexrun_session_request_abort from a second thread ends the generation early too. */
    static abort_run r;
    r.session = s;
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.reached, NULL);
    pthread_t other;
    CHECK(pthread_create(&other, NULL, request_abort, &r) == 0, "pthread_create");
    EXPECT_STATUS(flexrun_generate(s, "Once upon a time", gp, abort_callback, &r, &st), FLEXRUN_OK, NULL);
    pthread_join(other, NULL);
    CHECK(r.status == FLEXRUN_OK, "request_abort returned %d", r.status);
    /* Asked while token 3 was being delivered: no token after it. */
    CHECK(st.stop_reason == FLEXRUN_STOP_ABORTED && r.c.n == 3 && st.generated_tokens == 3, "after request_abort: stop %d, %d tokens", st.stop_reason, r.c.n);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.reached);
    flexrun_session_free(s);
    flexrun_model_free(m);
    return failures ? 1 : 0;
}

/* ---- limit: a second thread changes the cap mid-generation -------------------------------- */

typedef struct {
    collected c;
    flexrun_session *session;
    int64_t cap;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int start;          /* the generating thread reached token 4 */
    int done;           /* the other thread made its calls */
    int status;         /* what flexrun_session_set_memory_limit returned */
    int status_small;   /* ... for a cap below the minimum */
    char message_small[256];
} limit_run;

static bool limit_callback(flexrun_token token, const char *text, size_t len, void *user) {
    limit_run *r = user;
    collect(token, text, len, &r->c);
    pthread_mutex_lock(&r->lock);
    if (r->c.n == 4) { r->start = 1; pthread_cond_broadcast(&r->changed); }
    /* By token 12 the cap must have changed, so the change lands mid-generation, not after. */
    if (r->c.n == 12) while (!r->done) pthread_cond_wait(&r->changed, &r->lock);
    pthread_mutex_unlock(&r->lock);
    return true;
}

static void *change_limit(void *user) {
    limit_run *r = user;
    pthread_mutex_lock(&r->lock);
    while (!r->start) pthread_cond_wait(&r->changed, &r->lock);
    pthread_mutex_unlock(&r->lock);
    /* Runs while the generating thread computes tokens 5 to 12. */
    int small = flexrun_session_set_memory_limit(r->session, 1 << 20);
    snprintf(r->message_small, sizeof r->message_small, "%s", flexrun_last_error());
    int status = flexrun_session_set_memory_limit(r->session, r->cap);
    pthread_mutex_lock(&r->lock);
    r->status_small = small;
    r->status = status;
    r->done = 1;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static int cmd_limit(const char *model, int64_t cap) {
    const char *prompt = "The capital of France is";
    flexrun_model *m = load(model, false);
    flexrun_generate_params gp = greedy(24);
    gp.stop_at_eog = false;

    flexrun_session *reference = open_session(m, 0, 256, 1);
    static collected want;
    EXPECT_STATUS(flexrun_generate(reference, prompt, gp, collect, &want, NULL), FLEXRUN_OK, NULL);
    flexrun_session_free(reference);

    static limit_run r;
    r.session = open_session(m, 0, 256, 1);
    r.cap = cap;
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.changed, NULL);
    pthread_t other;
    CHECK(pthread_create(&other, NULL, change_limit, &r) == 0, "pthread_create");
    flexrun_stats st;
    EXPECT_STATUS(flexrun_generate(r.session, prompt, gp, limit_callback, &r, &st), FLEXRUN_OK, NULL);
    pthread_join(other, NULL);

    CHECK(r.status == FLEXRUN_OK, "set_memory_limit(%lld) from the second thread returned %d", (long long)cap, r.status);
    CHECK(r.status_small == FLEXRUN_ERR_MEMORY_LIMIT, "a 1 MiB cap returned %d", r.status_small);
    CHECK(strstr(r.message_small, "at least") != NULL, "the 1 MiB refusal does not name the minimum: %s", r.message_small);
    CHECK(st.replans >= 1, "the session did not re-plan (%d)", st.replans);
    CHECK(st.memory_limit == cap, "the cap in force at the end is %lld", (long long)st.memory_limit);
    CHECK(flexrun_session_memory_limit(r.session) == cap, "flexrun_session_memory_limit says %lld",
          (long long)flexrun_session_memory_limit(r.session));
    CHECK(st.bytes_read_from_disk > 0, "nothing streamed after the cap");
    CHECK(r.c.n == want.n && memcmp(r.c.ids, want.ids, sizeof(flexrun_token) * (size_t)want.n) == 0,
          "ids under a cap set mid-generation differ from the uncapped run");
    print_ids(&r.c);
    flexrun_session_free(r.session);
    flexrun_model_free(m);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.changed);
    return failures ? 1 : 0;
}

/* ---- errors ------------------------------------------------------------------------------- */

/* Writes the first `bytes` bytes of `from` to `to` (a truncated copy). */
static void truncated_copy(const char *from, const char *to, long bytes) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) { fprintf(stderr, "flexrun_test: cannot copy %s to %s\n", from, to); exit(1); }
    static char buf[1 << 16];
    long left = bytes;
    while (left > 0) {
        size_t n = fread(buf, 1, left < (long)sizeof buf ? (size_t)left : sizeof buf, in);
        if (n == 0) break;
        fwrite(buf, 1, n, out);
        left -= (long)n;
    }
    fclose(in);
    fclose(out);
}

static void *read_last_error(void *user) {
    snprintf(user, 256, "%s", flexrun_last_error());
    return NULL;
}

static bool generate_again(flexrun_token token, const char *text, size_t len, void *user) {
    (void)token; (void)text; (void)len;
    flexrun_session *s = user;
    /* Re-entering the generating session from its own callback is refused, not undefined. */
    int rc = flexrun_generate(s, "hi", greedy(1), NULL, NULL, NULL);
    CHECK(rc == FLEXRUN_ERR_BUSY, "flexrun_generate from a callback returned %d", rc);
    CHECK(flexrun_session_set_memory_limit(s, -1) == FLEXRUN_ERR_INVALID_ARGUMENT, "any-thread call refused wrongly");
    return false;
}

static int cmd_errors(const char *model, const char *dir) {
    char path[4096];
    flexrun_model *m = NULL;
    flexrun_model_params mp = flexrun_model_default_params();

    /* Files. */
    EXPECT_STATUS(flexrun_model_load("/nonexistent/model.gguf", mp, &m), FLEXRUN_ERR_IO, "No such file");
    CHECK(m == NULL, "a failed load left a handle");
    snprintf(path, sizeof path, "%s/header-only.gguf", dir);
    truncated_copy(model, path, 100);
    EXPECT_STATUS(flexrun_model_load(path, mp, &m), FLEXRUN_ERR_MODEL, "truncated");
    snprintf(path, sizeof path, "%s/half.gguf", dir);
    FILE *f = fopen(model, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    truncated_copy(model, path, size / 2);
    EXPECT_STATUS(flexrun_model_load(path, mp, &m), FLEXRUN_ERR_MODEL, NULL);
    snprintf(path, sizeof path, "%s/not.gguf", dir);
    f = fopen(path, "wb");
    fputs("this is not a model file at all, just some text", f);
    fclose(f);
    EXPECT_STATUS(flexrun_model_load(path, mp, &m), FLEXRUN_ERR_MODEL, NULL);
    EXPECT_STATUS(flexrun_model_load(dir, mp, &m), FLEXRUN_ERR_IO, NULL);

    /* NULL and empty arguments. */
    EXPECT_STATUS(flexrun_model_load(NULL, mp, &m), FLEXRUN_ERR_INVALID_ARGUMENT, "path is NULL");
    EXPECT_STATUS(flexrun_model_load("", mp, &m), FLEXRUN_ERR_INVALID_ARGUMENT, "empty");
    EXPECT_STATUS(flexrun_model_load(model, mp, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "out is NULL");
    flexrun_session *s = NULL;
    flexrun_session_params sp = flexrun_session_default_params();
    sp.follow_cgroup_limit = false;
    sp.n_ctx = 64;
    EXPECT_STATUS(flexrun_session_create(NULL, sp, &s), FLEXRUN_ERR_INVALID_ARGUMENT, "model is NULL");
    EXPECT_STATUS(flexrun_generate(NULL, "hi", greedy(1), NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "session is NULL");
    EXPECT_STATUS(flexrun_session_set_memory_limit(NULL, 100 << 20), FLEXRUN_ERR_INVALID_ARGUMENT, "session is NULL");
    EXPECT_STATUS(flexrun_session_step(NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "session is NULL");
    CHECK(flexrun_tokenize(NULL, "hi", -1, NULL, 0, true, true) == INT32_MIN, "tokenize(NULL model)");
    CHECK(flexrun_model_n_vocab(NULL) == 0 && flexrun_model_desc(NULL) == NULL, "facts of a NULL model");
    flexrun_model_free(NULL);
    flexrun_session_free(NULL);

    /* The message is the calling thread's own. */
    char other[256] = "unset";
    pthread_t t;
    pthread_create(&t, NULL, read_last_error, other);
    pthread_join(t, NULL);
    CHECK(other[0] == '\0', "a fresh thread sees another thread's error: %s", other);

    m = load(model, false);
    /* A cap below the minimum, at creation and later. */
    sp.memory_limit = 1 << 20;
    EXPECT_STATUS(flexrun_session_create(m, sp, &s), FLEXRUN_ERR_MEMORY_LIMIT, "at least");
    CHECK(s == NULL, "a refused session left a handle");
    sp.memory_limit = 0;

    /* Invalid session parameters. */
    flexrun_session_params bad = sp;
    bad.n_threads = -1;
    EXPECT_STATUS(flexrun_session_create(m, bad, &s), FLEXRUN_ERR_INVALID_ARGUMENT, "n_threads");
    bad = sp; bad.n_batch = 0;
    EXPECT_STATUS(flexrun_session_create(m, bad, &s), FLEXRUN_ERR_INVALID_ARGUMENT, "n_batch");
    bad = sp; bad.n_seq_max = 0;
    EXPECT_STATUS(flexrun_session_create(m, bad, &s), FLEXRUN_ERR_INVALID_ARGUMENT, "n_seq_max");
    bad = sp; bad.n_ctx = -5;
    EXPECT_STATUS(flexrun_session_create(m, bad, &s), FLEXRUN_ERR_INVALID_ARGUMENT, "n_ctx");
    bad = sp; bad.memory_limit = -1;
    EXPECT_STATUS(flexrun_session_create(m, bad, &s), FLEXRUN_ERR_INVALID_ARGUMENT, "memory_limit");

    EXPECT_STATUS(flexrun_session_create(m, sp, &s), FLEXRUN_OK, NULL);
    EXPECT_STATUS(flexrun_session_set_memory_limit(s, 1 << 20), FLEXRUN_ERR_MEMORY_LIMIT, "at least");
    CHECK(flexrun_session_memory_limit(s) == 0, "a refused cap was kept");
    EXPECT_STATUS(flexrun_session_set_memory_limit(s, 0), FLEXRUN_ERR_INVALID_ARGUMENT, "positive");

    /* Invalid generation parameters and prompts. */
    flexrun_generate_params gp = greedy(4);
    gp.temperature = NAN;
    EXPECT_STATUS(flexrun_generate(s, "hi", gp, NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "temperature");
    gp = greedy(4); gp.top_p = 0;
    EXPECT_STATUS(flexrun_generate(s, "hi", gp, NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "top_p");
    gp = greedy(-1);
    EXPECT_STATUS(flexrun_generate(s, "hi", gp, NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "max_tokens");
    EXPECT_STATUS(flexrun_generate(s, NULL, greedy(4), NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "prompt is NULL");
    EXPECT_STATUS(flexrun_generate(s, "", greedy(4), NULL, NULL, NULL), FLEXRUN_ERR_PROMPT, "empty");
    static char long_prompt[4096];
    for (size_t i = 0; i + 6 < sizeof long_prompt; i += 6) memcpy(long_prompt + i, "hello ", 6);
    EXPECT_STATUS(flexrun_generate(s, long_prompt, greedy(4), NULL, NULL, NULL), FLEXRUN_ERR_PROMPT, "context");
    flexrun_token out_of_range = flexrun_model_n_vocab(m) + 5;
    EXPECT_STATUS(flexrun_generate_tokens(s, &out_of_range, 1, greedy(4), NULL, NULL, NULL), FLEXRUN_ERR_PROMPT, "vocabulary");
    EXPECT_STATUS(flexrun_generate_tokens(s, NULL, 1, greedy(4), NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "prompt is NULL");
    const char bad_utf8[] = { 'h', (char)0xFF, 'i', 0 };
    EXPECT_STATUS(flexrun_generate(s, bad_utf8, greedy(4), NULL, NULL, NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "UTF-8");
    int32_t id;
    EXPECT_STATUS(flexrun_session_add(s, "hi", greedy(4), NULL), FLEXRUN_ERR_INVALID_ARGUMENT, "seq_id is NULL");
    EXPECT_STATUS(flexrun_session_add(s, "hi", greedy(4), &id), FLEXRUN_OK, NULL);
    EXPECT_STATUS(flexrun_session_add(s, "hi", greedy(4), &id), FLEXRUN_ERR_FULL, "n_seq_max");
    CHECK(flexrun_token_to_piece(m, -1, NULL, 0) == INT32_MIN, "token_to_piece(-1)");
    CHECK(flexrun_token_to_piece(m, out_of_range, NULL, 0) == INT32_MIN, "token_to_piece(out of range)");

    /* Re-entry from a callback is refused; a generation still ends cleanly after it. */
    flexrun_stats st;
    EXPECT_STATUS(flexrun_generate(s, "hi", greedy(4), generate_again, s, &st), FLEXRUN_OK, NULL);
    CHECK(st.stop_reason == FLEXRUN_STOP_ABORTED && st.generated_tokens == 1, "stop %d after %d tokens", st.stop_reason, st.generated_tokens);
    /* A valid run after all the refusals. */
    EXPECT_STATUS(flexrun_generate(s, "hi", greedy(2), NULL, NULL, &st), FLEXRUN_OK, NULL);
    CHECK(st.generated_tokens >= 1, "no tokens after the refusals");

    flexrun_session_free(s);
    flexrun_model_free(m);
    return failures ? 1 : 0;
}

/* ---- text --------------------------------------------------------------------------------- */

static int cmd_text(const char *model) {
    flexrun_model *m = load(model, false);
    const char *text = "Hello world, héllo wörld! 🙂";
    flexrun_token ids[64];
    int32_t need = flexrun_tokenize(m, text, -1, ids, 1, true, false);
    CHECK(need < -1, "tokenize into a 1-token buffer returned %d", need);
    int32_t n = flexrun_tokenize(m, text, -1, ids, -need, true, false);
    CHECK(n == -need, "tokenize returned %d with room for %d", n, -need);
    CHECK(flexrun_tokenize(m, text, 5, ids, 64, false, false) > 0, "tokenize of a byte range");
    char out[256];
    int32_t short_need = flexrun_detokenize(m, ids, n, out, 3);
    CHECK(short_need == -(int32_t)(strlen(text) + 1), "detokenize into 3 bytes returned %d", short_need);
    int32_t len = flexrun_detokenize(m, ids, n, out, sizeof out);
    CHECK(len == (int32_t)strlen(text) && strcmp(out, text) == 0, "detokenize gave \"%s\"", len >= 0 ? out : "");
    /* Pieces are bytes; together they are the text. */
    char joined[256];
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        int32_t p = flexrun_token_to_piece(m, ids[i], joined + at, (int32_t)(sizeof joined - at));
        CHECK(p >= 0, "token_to_piece(%d) returned %d", ids[i], p);
        if (p > 0) {
            CHECK(flexrun_token_to_piece(m, ids[i], NULL, 0) == -p, "a short piece buffer did not get minus the size");
            at += (size_t)p;
        }
    }
    CHECK(at == strlen(text) && memcmp(joined, text, at) == 0, "pieces do not join into the text");

    /* Streamed text: emoji and accents are multi-byte, and byte-level tokens split them; the
       callback must only ever see whole characters, and together they are the detokenized ids. */
    flexrun_session *s = open_session(m, 0, 256, 1);
    static collected c;
    flexrun_generate_params gp = greedy(48);
    gp.stop_at_eog = false;
    EXPECT_STATUS(flexrun_generate(s, "🙂🙂🙂 😀😀😀 日本語の文章 🙂🙂", gp, collect, &c, NULL), FLEXRUN_OK, NULL);
    CHECK(c.bad_utf8 == 0, "%d callback texts split a character", c.bad_utf8);
    int multi = 0;
    for (size_t i = 0; i < c.text_len; i++) multi += ((unsigned char)c.text[i] & 0xC0) == 0xC0;
    CHECK(multi > 0, "the run produced no multi-byte character, so nothing was tested: \"%s\"", c.text);
    int split = 0;   /* tokens whose own piece is not whole characters */
    for (int i = 0; i < c.n; i++) {
        char piece[64];
        int32_t p = flexrun_token_to_piece(m, c.ids[i], piece, sizeof piece);
        if (p > 0 && !valid_utf8((unsigned char *)piece, (size_t)p)) split++;
    }
    char all[65536];
    len = flexrun_detokenize(m, c.ids, c.n, all, sizeof all);
    CHECK(len >= 0 && (size_t)len == c.text_len && memcmp(all, c.text, c.text_len) == 0, "streamed text differs from detokenize");
    printf("multibyte: %d split-pieces: %d\n", multi, split);
    flexrun_session_free(s);
    flexrun_model_free(m);
    return failures ? 1 : 0;
}

/* ---- threads: sessions of one model on two threads at once -------------------------------- */

typedef struct {
    flexrun_model *model;
    const char *prompt;
    collected c;
    int status;
} thread_run;

static void *generate_on_thread(void *user) {
    thread_run *t = user;
    flexrun_session_params sp = flexrun_session_default_params();
    sp.n_ctx = 256;
    sp.n_threads = 1;
    sp.follow_cgroup_limit = false;
    flexrun_session *s = NULL;
    t->status = flexrun_session_create(t->model, sp, &s);
    if (t->status == FLEXRUN_OK) {
        flexrun_generate_params gp = greedy(16);
        gp.stop_at_eog = false;
        t->status = flexrun_generate(s, t->prompt, gp, collect, &t->c, NULL);
    }
    flexrun_session_free(s);
    return NULL;
}

static int cmd_threads(const char *model) {
    flexrun_model *m = load(model, false);
    static thread_run alone[2], together[2];
    const char *prompts[2] = { "The capital of France is", "def fibonacci(n):" };
    for (int k = 0; k < 2; k++) {
        alone[k].model = together[k].model = m;
        alone[k].prompt = together[k].prompt = prompts[k];
        generate_on_thread(&alone[k]);
    }
    pthread_t t[2];
    for (int k = 0; k < 2; k++) CHECK(pthread_create(&t[k], NULL, generate_on_thread, &together[k]) == 0, "pthread_create");
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    /* The model handle was only shared; freeing it while no session runs is fine. */
    flexrun_model_free(m);
    for (int k = 0; k < 2; k++) {
        CHECK(alone[k].status == FLEXRUN_OK && together[k].status == FLEXRUN_OK, "status %d / %d", alone[k].status, together[k].status);
        CHECK(together[k].c.n == 16 && memcmp(together[k].c.ids, alone[k].c.ids, sizeof(flexrun_token) * 16) == 0,
              "prompt %d: ids on two threads at once differ from its ids alone", k);
    }
    return failures ? 1 : 0;
}

/* ---- lifecycle: a freed session leaves no thread behind ------------------------------------ */

static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f)) if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

static int cmd_lifecycle(const char *model) {
    flexrun_model *m = load(model, false);
    int before = thread_count();
    for (int i = 0; i < 3; i++) {
        flexrun_session_params sp = flexrun_session_default_params();
        sp.n_ctx = 64;
        sp.n_threads = 2;   /* one compute thread besides the caller */
        sp.follow_cgroup_limit = false;
        flexrun_session *s = NULL;
        EXPECT_STATUS(flexrun_session_create(m, sp, &s), FLEXRUN_OK, NULL);
        EXPECT_STATUS(flexrun_generate(s, "hi", greedy(2), NULL, NULL, NULL), FLEXRUN_OK, NULL);
        flexrun_session_free(s);
    }
    int after = thread_count();
    CHECK(after == before, "%d threads before three sessions, %d after they were freed", before, after);
    flexrun_model_free(m);
    return failures ? 1 : 0;
}

/* ---- batch -------------------------------------------------------------------------------- */

typedef struct {
    collected seq[2];
    int32_t id[2];
    int finished[2];
} batch_run;

static bool batch_event(const flexrun_event *e, void *user) {
    batch_run *b = user;
    int k = e->seq_id == b->id[0] ? 0 : e->seq_id == b->id[1] ? 1 : -1;
    CHECK(k >= 0, "an event for unknown sequence %d", e->seq_id);
    if (k < 0) return true;
    if (e->type == FLEXRUN_EVENT_TOKEN) return collect(e->token, e->text, e->text_len, &b->seq[k]);
    CHECK(e->type == FLEXRUN_EVENT_FINISHED && e->stats != NULL, "event type %d", e->type);
    b->finished[k]++;
    return true;
}

static int cmd_batch(const char *model) {
    const char *prompts[2] = { "The capital of France is", "def fibonacci(n):" };
    flexrun_model *m = load(model, false);
    static collected alone[2];
    flexrun_session *one = open_session(m, 0, 256, 1);
    for (int k = 0; k < 2; k++) EXPECT_STATUS(flexrun_generate(one, prompts[k], greedy(12), collect, &alone[k], NULL), FLEXRUN_OK, NULL);
    flexrun_session_free(one);

    flexrun_session *s = open_session(m, 0, 256, 2);
    static batch_run b;
    for (int k = 0; k < 2; k++) EXPECT_STATUS(flexrun_session_add(s, prompts[k], greedy(12), &b.id[k]), FLEXRUN_OK, NULL);
    CHECK(flexrun_session_n_active(s) == 2, "%d active", flexrun_session_n_active(s));
    int rc, steps = 0;
    while ((rc = flexrun_session_step(s, batch_event, &b)) == 1) steps++;
    CHECK(rc == 0, "step returned %d", rc);
    for (int k = 0; k < 2; k++) {
        CHECK(b.finished[k] == 1, "sequence %d finished %d times", k, b.finished[k]);
        CHECK(b.seq[k].n == alone[k].n && memcmp(b.seq[k].ids, alone[k].ids, sizeof(flexrun_token) * (size_t)alone[k].n) == 0,
              "sequence %d: batched ids differ from its ids alone", k);
    }
    CHECK(steps <= 14, "%d steps for two sequences of 12 tokens: not batched", steps);
    flexrun_session_free(s);
    flexrun_model_free(m);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    CHECK(flexrun_abi_version() == FLEXRUN_ABI_VERSION, "the library's ABI is %d, the header's %d", flexrun_abi_version(), FLEXRUN_ABI_VERSION);
    CHECK(strlen(flexrun_version()) > 0, "no version");
    if (argc >= 3 && strcmp(argv[1], "ids") == 0 && argc >= 5)
        return cmd_ids(argv[2], argv[3], atoi(argv[4]), argc > 5 ? atoll(argv[5]) : 0);
    if (argc == 4 && strcmp(argv[1], "abort") == 0) return cmd_abort(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "limit") == 0) return cmd_limit(argv[2], atoll(argv[3]));
    if (argc == 4 && strcmp(argv[1], "errors") == 0) return cmd_errors(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "text") == 0) return cmd_text(argv[2]);
    if (argc == 3 && strcmp(argv[1], "batch") == 0) return cmd_batch(argv[2]);
    if (argc == 3 && strcmp(argv[1], "threads") == 0) return cmd_threads(argv[2]);
    if (argc == 3 && strcmp(argv[1], "lifecycle") == 0) return cmd_lifecycle(argv[2]);
    fprintf(stderr, "usage: flexrun_test ids|abort|limit|errors|text|batch|threads|lifecycle MODEL ...\n");
    return 2;
}
