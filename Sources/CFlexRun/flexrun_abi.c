/*
 * The parts of the C ABI Swift cannot express: the thread-local last-error buffer (Swift has no
 * thread-local storage declaration; a pthread key would need a destructor per thread for the
 * same effect) and the version constants. Everything else is in Sources/FlexC (Swift, @_cdecl).
 */
#include "flexrun.h"
#include "cflexrun_private.h"

#include <string.h>

#define FLEXRUN_VERSION_STRING "0.1.0"

/* One message per thread, as llama.cpp's and errno's: a call that fails on thread A never
   overwrites the message thread B is about to read. Fixed size so setting it cannot fail. */
static _Thread_local char last_error[1024];

const char *flexrun_last_error(void) { return last_error; }

void cflexrun_set_last_error(const char *message, size_t length) {
    if (length >= sizeof last_error) {
        length = sizeof last_error - 1;
        /* Do not end inside a UTF-8 character: back off over continuation bytes. */
        while (length > 0 && ((unsigned char)message[length] & 0xC0) == 0x80) length--;
    }
    memcpy(last_error, message, length);
    last_error[length] = '\0';
}

const char *flexrun_version(void) { return FLEXRUN_VERSION_STRING; }

int32_t flexrun_abi_version(void) { return FLEXRUN_ABI_VERSION; }
