// liburing's header needs the system headers it builds on included first.
#include <stddef.h>
#include <signal.h>
#include <sys/types.h>
#include <liburing.h>
