/*
 * A chat loop over libflexrun: each line read from stdin is a user turn, answered in the
 * model's chat template and streamed to stdout as it is generated. Ctrl-C stops the answer
 * being generated (the token callback returns false); end of input (Ctrl-D) quits.
 *
 *   cc examples/chat.c $(pkg-config --cflags --libs flexrun) -o chat
 *   ./chat MODEL.gguf [-n MAX_TOKENS] [--mem-limit BYTES] [--seed S]
 *
 * Each turn is a conversation of its own: the C API renders one user turn in the template, so
 * an app that wants history puts the earlier turns into the prompt itself.
 */
#include <flexrun.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set by SIGINT. A signal handler may only touch a sig_atomic_t; the callback reads it. */
static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static bool print_token(flexrun_token token, const char *text, size_t len, void *user) {
    (void)token;
    (void)user;
    /* `text` never ends inside a UTF-8 character, so writing it as it comes is safe. */
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return !interrupted;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [-n MAX_TOKENS] [--mem-limit BYTES] [--seed S]\n", argv[0]);
        return 2;
    }
    flexrun_session_params sp = flexrun_session_default_params();
    flexrun_generate_params gp = flexrun_generate_default_params();
    gp.chat = true;
    gp.max_tokens = 256;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-n") == 0) gp.max_tokens = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--mem-limit") == 0) sp.memory_limit = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--seed") == 0) gp.seed = strtoull(argv[i + 1], NULL, 10);
        else { fprintf(stderr, "chat: unknown option %s\n", argv[i]); return 2; }
    }

    flexrun_model_params mp = flexrun_model_default_params();
    mp.streaming = sp.memory_limit > 0;
    flexrun_model *model = NULL;
    if (flexrun_model_load(argv[1], mp, &model) != FLEXRUN_OK) {
        fprintf(stderr, "chat: %s\n", flexrun_last_error());
        return 1;
    }
    if (!flexrun_model_has_chat_template(model)) {
        fprintf(stderr, "chat: %s has no chat template FlexRun understands\n", argv[1]);
        flexrun_model_free(model);
        return 1;
    }
    flexrun_session *session = NULL;
    if (flexrun_session_create(model, sp, &session) != FLEXRUN_OK) {
        fprintf(stderr, "chat: %s\n", flexrun_last_error());
        flexrun_model_free(model);
        return 1;
    }
    signal(SIGINT, on_sigint);

    int status = 0;
    bool tty = isatty(STDIN_FILENO);
    char line[4096];
    for (;;) {
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0') continue;
        interrupted = 0;
        flexrun_stats stats;
        int rc = flexrun_generate(session, line, gp, print_token, NULL, &stats);
        if (rc != FLEXRUN_OK) {
            /* A bad turn (too long for the context, say) is reported and the loop goes on. */
            fprintf(stderr, "\nchat: %s\n", flexrun_last_error());
            if (rc == FLEXRUN_ERR_WEIGHT_READ) { status = 1; break; }
            continue;
        }
        printf("\n");
        fprintf(stderr, "[%d tokens, %.1f tok/s%s]\n", stats.generated_tokens, stats.decode_tokens_per_second,
                stats.stop_reason == FLEXRUN_STOP_ABORTED ? ", interrupted" : "");
    }
    flexrun_session_free(session);
    flexrun_model_free(model);
    return status;
}
