/*
 * flexrun.h: the C interface of FlexRun, an on-device LLM inference engine (libflexrun.so).
 *
 * Conventions follow llama.h:
 *   - opaque handles: a flexrun_model (weights, tokenizer, chat template; immutable, shared) and
 *     any number of flexrun_sessions on it (KV cache, run state, memory cap, sequences), as
 *     llama_model and llama_context;
 *   - parameter structs passed by value, each with a flexrun_*_default_params() function; start
 *     from the defaults and change the fields you need, so new fields keep old code working;
 *   - every fallible call returns an int status (FLEXRUN_OK or a negative flexrun_status) and
 *     leaves a one-line message in flexrun_last_error() for the calling thread.
 *
 * Bad input never crashes the process: a NULL handle or pointer, an invalid parameter, a missing
 * or corrupt GGUF file, a memory cap below the minimum each return a status and a message.
 *
 * THREAD SAFETY
 *   - flexrun_model: immutable after load; every function taking a const flexrun_model* may be
 *     called from any number of threads at once. Sessions on one model may run on different
 *     threads concurrently.
 *   - flexrun_session: one thread at a time. Running two of flexrun_generate / flexrun_session_add
 *     / flexrun_session_step / flexrun_session_cancel on one session at once is refused with
 *     FLEXRUN_ERR_BUSY (never undefined behaviour).
 *     The exceptions, callable from any thread at any time, also while another thread generates:
 *     flexrun_session_set_memory_limit, flexrun_session_memory_limit, flexrun_session_request_abort.
 *   - Callbacks run on the generating thread, between tokens. Inside one, do not call the
 *     generating functions of the same session (they return FLEXRUN_ERR_BUSY); the any-thread
 *     functions above are allowed.
 *   - flexrun_last_error() is per thread: it describes the last failed call made on that thread.
 *   - Free a handle only when no other thread is using it. A session keeps its model alive, so a
 *     model may be freed before its sessions.
 *
 * MEMORY
 *   Strings the library returns (flexrun_version, flexrun_last_error, flexrun_model_desc) belong
 *   to it. Text passed to callbacks is valid only during the call. Everything else is in
 *   caller-provided buffers.
 *
 * BUILDING AN APP
 *   cc app.c $(pkg-config --cflags --libs flexrun)
 *   The library is a release build; a debug build of FlexRun runs the engine many times slower.
 */
#ifndef FLEXRUN_H
#define FLEXRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to a struct layout or a function signature below. */
#define FLEXRUN_ABI_VERSION 1

typedef struct flexrun_model flexrun_model;
typedef struct flexrun_session flexrun_session;
typedef int32_t flexrun_token;

/* Status codes. FLEXRUN_OK is 0; every error is negative. */
enum flexrun_status {
    FLEXRUN_OK = 0,
    FLEXRUN_ERR_INVALID_ARGUMENT = -1, /* a NULL handle or pointer, a parameter out of range */
    FLEXRUN_ERR_IO = -2,               /* the file cannot be opened or read (missing, permissions) */
    FLEXRUN_ERR_MODEL = -3,            /* not a GGUF FlexRun can run: corrupt, truncated, unsupported */
    FLEXRUN_ERR_MEMORY_LIMIT = -4,     /* the memory cap is below the minimum (the message names it) */
    FLEXRUN_ERR_PROMPT = -5,           /* empty, longer than the context, a token outside the vocabulary,
                                          or chat asked of a model without a chat template */
    FLEXRUN_ERR_WEIGHT_READ = -6,      /* streamed weights could not be read mid-generation */
    FLEXRUN_ERR_BUSY = -7,             /* the session is in use by another call (see THREAD SAFETY) */
    FLEXRUN_ERR_FULL = -8,             /* the session already holds n_seq_max sequences */
    FLEXRUN_ERR_INTERNAL = -9,         /* a bug: please report the message */
};

/* Why a generation (or one sequence) ended. */
enum flexrun_stop_reason {
    FLEXRUN_STOP_END_OF_GENERATION = 0, /* the model produced an end-of-generation token */
    FLEXRUN_STOP_MAX_TOKENS = 1,        /* max_tokens reached */
    FLEXRUN_STOP_CONTEXT_FULL = 2,      /* the context has no room left */
    FLEXRUN_STOP_ABORTED = 3,           /* a callback returned false, or flexrun_session_request_abort */
    FLEXRUN_STOP_ERROR = 4,             /* a streamed weight read failed (the call returns its status) */
};

/* ---- library ---------------------------------------------------------------------------- */

/* "0.1.0" style version of the library. */
const char *flexrun_version(void);
/* FLEXRUN_ABI_VERSION of the library actually loaded: compare with the header's at startup. */
int32_t flexrun_abi_version(void);
/* The message of the last failed call on this thread ("" when none). Valid until the next
   failing call on the same thread. */
const char *flexrun_last_error(void);

/* ---- model ------------------------------------------------------------------------------ */

typedef struct flexrun_model_params {
    /* Sessions on this model will run under a memory cap: the file is read with O_DIRECT for the
       most part, so no interleaved in-memory copies are made at load (a capped session would drop
       them, and making them can pass the cap). Default: true when the process is under a cgroup
       memory limit (which sessions follow by default), else false. */
    bool streaming;
    /* Without a cap, copy Q4_1/Q5_0/Q5_1/Q8_0 matrices into the 8-row layout the fastest kernels
       read (same logits, faster decode). Default true. */
    bool interleave_weights;
} flexrun_model_params;

flexrun_model_params flexrun_model_default_params(void);

/* Opens a GGUF file. On success *out is a handle to free with flexrun_model_free.
   Errors: FLEXRUN_ERR_INVALID_ARGUMENT (NULL), FLEXRUN_ERR_IO, FLEXRUN_ERR_MODEL. */
int flexrun_model_load(const char *path, flexrun_model_params params, flexrun_model **out);
/* NULL is allowed. */
void flexrun_model_free(flexrun_model *model);

/* Facts of an open model; 0 / false when model is NULL. */
int32_t flexrun_model_n_vocab(const flexrun_model *model);
int32_t flexrun_model_n_ctx_train(const flexrun_model *model);
int32_t flexrun_model_n_layer(const flexrun_model *model);
bool flexrun_model_has_chat_template(const flexrun_model *model);
/* End-of-generation tokens (EOS, <|im_end|>, <end_of_turn>, ...). */
bool flexrun_model_token_is_eog(const flexrun_model *model, flexrun_token token);
/* Beginning-of-sequence token, or -1 when the model has none. */
flexrun_token flexrun_model_token_bos(const flexrun_model *model);
/* One-line description ("llama, 30 layers, dim 576, vocab 49152, ..."); NULL when model is NULL.
   Owned by the model. */
const char *flexrun_model_desc(const flexrun_model *model);

/* ---- tokenizer -------------------------------------------------------------------------- */

/* Token ids of `text_len` bytes of UTF-8 `text` (text_len < 0: up to its NUL).
   add_special adds the model's BOS when it uses one; parse_special reads "<|im_start|>" and the
   like as their special tokens.
   Returns the number of tokens written, or, when n_tokens_max is too small, minus the number
   needed (nothing is written; call again with a buffer that large). INT32_MIN on an error
   (NULL model or text, NULL tokens with n_tokens_max > 0, invalid UTF-8) with a message. */
int32_t flexrun_tokenize(const flexrun_model *model, const char *text, int32_t text_len,
                         flexrun_token *tokens, int32_t n_tokens_max, bool add_special, bool parse_special);

/* The raw bytes of one token's piece (not NUL-terminated). A piece of a byte-level vocabulary
   may be part of a UTF-8 character: for text, use flexrun_detokenize or the generation
   callbacks, which never split one. Returns the byte count, minus the size needed when
   `length` is too small, INT32_MIN on an error (NULL model, token outside the vocabulary). */
int32_t flexrun_token_to_piece(const flexrun_model *model, flexrun_token token, char *buf, int32_t length);

/* The text of `n_tokens` tokens, NUL-terminated, with invalid UTF-8 replaced by U+FFFD.
   Returns the byte count without the NUL, minus the size needed with the NUL when `text_len`
   is too small, INT32_MIN on an error. */
int32_t flexrun_detokenize(const flexrun_model *model, const flexrun_token *tokens, int32_t n_tokens,
                           char *text, int32_t text_len);

/* ---- session ---------------------------------------------------------------------------- */

typedef struct flexrun_session_params {
    /* Context length in tokens; 0 = min(2048, the model's trained context). KV cache is sized
       for it at creation. */
    int32_t n_ctx;
    /* Compute threads, the caller's included; 0 = the online CPUs. At most 256. */
    int32_t n_threads;
    /* Prompt tokens per forward pass. Default 64; 1 to 4096. */
    int32_t n_batch;
    /* Sequences the session holds at once (flexrun_session_add); default 1, at most 1024. */
    int32_t n_seq_max;
    /* Total bytes the session may use (weights, KV cache, buffers, runtime). Weights beyond it
       stream from disk each token. 0 = no cap of its own (see follow_cgroup_limit). A cap below
       the streaming minimum is refused with FLEXRUN_ERR_MEMORY_LIMIT and the minimum. Open the
       model with flexrun_model_params.streaming for capped sessions: otherwise its load first makes
       in-memory copies of weights that the capped session then drops. */
    int64_t memory_limit;
    /* With memory_limit 0, take the enclosing cgroup's memory limit as the cap. Default true. */
    bool follow_cgroup_limit;
    /* mlock resident weights and the staging ring where permitted (a refusal only warns). Default true. */
    bool lock_memory;
} flexrun_session_params;

flexrun_session_params flexrun_session_default_params(void);

/* Creates a session on `model`. Errors: FLEXRUN_ERR_INVALID_ARGUMENT, FLEXRUN_ERR_MEMORY_LIMIT,
   FLEXRUN_ERR_IO. */
int flexrun_session_create(flexrun_model *model, flexrun_session_params params, flexrun_session **out);
/* NULL is allowed. */
void flexrun_session_free(flexrun_session *session);

/* Changes the memory cap of an open session; callable from any thread, also while another
   thread generates. The plan is made and checked now and applied before the running
   generation's next token, which continues with the same output. A session created without a
   cap starts streaming. Below the minimum: FLEXRUN_ERR_MEMORY_LIMIT, and the old cap stays. */
int flexrun_session_set_memory_limit(flexrun_session *session, int64_t bytes);
/* The cap last accepted (0: none), at creation or by flexrun_session_set_memory_limit; a running
   generation applies it before its next token. Any thread. */
int64_t flexrun_session_memory_limit(const flexrun_session *session);
/* Ends the running generation (every sequence) after its current token, from any thread, as a
   callback returning false does. A generation started later is not affected. */
int flexrun_session_request_abort(flexrun_session *session);
/* Positions one sequence may hold (n_ctx as resolved). */
int32_t flexrun_session_n_ctx(const flexrun_session *session);

/* ---- generation ------------------------------------------------------------------------- */

typedef struct flexrun_generate_params {
    int32_t max_tokens;      /* tokens to generate at most; default 256 */
    float temperature;       /* <= 0: greedy (argmax); default 0.8 */
    int32_t top_k;           /* 0 disables; default 40 */
    float top_p;             /* 1 disables; default 0.95 */
    float min_p;             /* 0 disables; default 0.05 */
    float repeat_penalty;    /* 1 disables; default 1.0 */
    int32_t repeat_last_n;   /* tokens the penalty looks back at; default 64 */
    uint64_t seed;           /* sampler seed: same seed, prompt, params give the same text; default 0 */
    bool chat;               /* wrap the prompt in the model's chat template; default false */
    const char *system;      /* chat system message; NULL = the template's default */
    bool stop_at_eog;        /* stop at end-of-generation tokens; default true */
} flexrun_generate_params;

flexrun_generate_params flexrun_generate_default_params(void);

/* What one generation did, and how fast. */
typedef struct flexrun_stats {
    int32_t prompt_tokens;
    int32_t generated_tokens;
    double load_seconds;         /* the model's load */
    double prompt_seconds;
    double decode_seconds;
    double prompt_tokens_per_second;
    double decode_tokens_per_second;   /* over the tokens after the first */
    int64_t bytes_read_from_disk;      /* streamed weights; 0 when fully resident */
    int64_t peak_resident_bytes;       /* the process's peak RSS; 0 when unknown */
    int64_t memory_limit;              /* the cap in force at the end; 0 = none */
    int32_t replans;                   /* caps applied by flexrun_session_set_memory_limit */
    int32_t stop_reason;               /* enum flexrun_stop_reason */
} flexrun_stats;

/* Called once per generated token on the generating thread. `text` holds the `text_len` bytes
   (NUL-terminated) of UTF-8 this token completes: never part of a character; empty while a
   multi-byte character is still incomplete, whose bytes come with a later token. Return true
   to continue, false to stop generation after this token (stop reason FLEXRUN_STOP_ABORTED). */
typedef bool (*flexrun_token_callback)(flexrun_token token, const char *text, size_t text_len, void *user_data);

/* Generates from a prompt on one sequence of the session: the prompt is tokenized (with the
   chat template when params.chat), processed, then tokens are sampled until end of generation,
   max_tokens, a full context or an abort. Text held back at the end (an incomplete character)
   comes in a last callback with token -1. `callback` and `stats` may be NULL.
   Returns FLEXRUN_OK also when aborted (see stats->stop_reason). Ends any sequences the session
   was running through flexrun_session_add. */
int flexrun_generate(flexrun_session *session, const char *prompt, flexrun_generate_params params,
                     flexrun_token_callback callback, void *user_data, flexrun_stats *stats);
/* As flexrun_generate, from token ids (no template, no BOS added). */
int flexrun_generate_tokens(flexrun_session *session, const flexrun_token *prompt, int32_t n_prompt,
                            flexrun_generate_params params, flexrun_token_callback callback, void *user_data,
                            flexrun_stats *stats);

/* ---- batched sequences -------------------------------------------------------------------- */
/* A session with n_seq_max > 1 runs several sequences in one forward pass per step (under a cap,
   one stream of the weights per step for all of them). Each sequence gets exactly the ids it
   would get alone. */

/* Queues a sequence from a prompt; its id is written to *seq_id. FLEXRUN_ERR_FULL when the
   session already holds n_seq_max sequences. */
int flexrun_session_add(flexrun_session *session, const char *prompt, flexrun_generate_params params, int32_t *seq_id);
/* As flexrun_session_add, from token ids. */
int flexrun_session_add_tokens(flexrun_session *session, const flexrun_token *prompt, int32_t n_prompt,
                               flexrun_generate_params params, int32_t *seq_id);

enum flexrun_event_type {
    FLEXRUN_EVENT_TOKEN = 0,    /* token and text are set */
    FLEXRUN_EVENT_FINISHED = 1, /* stats is set; text holds what was held back (usually "") */
};

typedef struct flexrun_event {
    int32_t type;               /* enum flexrun_event_type */
    int32_t seq_id;
    flexrun_token token;        /* -1 for FINISHED */
    const char *text;           /* NUL-terminated, never part of a character; valid during the callback */
    size_t text_len;
    const flexrun_stats *stats; /* FINISHED only, else NULL */
} flexrun_event;

/* Called for each event of a step. Returning false from a TOKEN event cancels that sequence:
   it ends at the next step with FLEXRUN_STOP_ABORTED. */
typedef bool (*flexrun_event_callback)(const flexrun_event *event, void *user_data);

/* Runs one forward pass over every live sequence. Returns 1 when it ran, 0 when the session
   holds no sequence, or a negative status (a failed weight read ends every sequence). */
int flexrun_session_step(flexrun_session *session, flexrun_event_callback callback, void *user_data);
/* Ends a sequence at the next step (reported as FLEXRUN_STOP_ABORTED). Unknown ids are ignored. */
int flexrun_session_cancel(flexrun_session *session, int32_t seq_id);
/* Sequences added and not finished. */
int32_t flexrun_session_n_active(const flexrun_session *session);

#ifdef __cplusplus
}
#endif

#endif /* FLEXRUN_H */
