/* Making text from a peer safe to print: control codes escaped, length bounded. */
#pragma once

#include <glib.h>

/* The longest escaped text blkmig_escape() returns before it cuts (with "..."). */
#define BLKMIG_ESCAPE_MAX 256

/* @text with every C0/C1 control code, DEL and invalid UTF-8 byte written as
 * \xNN (a backslash as \\), cut after BLKMIG_ESCAPE_MAX bytes.  NULL gives
 * "(none)".  Use it for every string from a cookie, a QMP reply, a journal or
 * the tunnel that goes into a message. */
char *blkmig_escape (const char *text);
/* The same without the length limit (whole error messages, already bounded). */
char *blkmig_escape_full (const char *text);
