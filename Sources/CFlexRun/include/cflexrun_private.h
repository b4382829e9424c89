/*
 * Internal to libflexrun (hidden visibility, not installed): the C side of the ABI that the Swift
 * exports in FlexC call. Not part of flexrun.h.
 */
#ifndef CFLEXRUN_PRIVATE_H
#define CFLEXRUN_PRIVATE_H

#include <stddef.h>

/* Stores `length` bytes of `message` as this thread's flexrun_last_error(), cut at a character
   boundary to fit the buffer. */
__attribute__((visibility("hidden"))) void cflexrun_set_last_error(const char *message, size_t length);

#endif
