/* Making text from a peer safe to print: control codes escaped, length bounded. */
#pragma once

#include <glib.h>

/* The longest escaped text blkmig_escape() returns before it cuts (with "..."). */
#define BLKMIG_ESCAPE_MAX 256

/* @text with every C0/C1 control code, DEL and invalid UTF-8 byte written as
 * \xNN or \uNNNN (newline, tab and CR as \n \t \r, a backslash as \\),
 * cut after BLKMIG_ESCAPE_MAX bytes.  NULL gives "(none)".  Use it for every
 * string from a cookie, a QMP reply, a journal or the tunnel that goes into a
 * message. */
char *blkmig_escape (const char *text);
/* Only the control codes and invalid bytes, no length limit: the last guard
 * for whole lines about to be printed (which may hold values escaped already). */
char *blkmig_escape_controls (const char *text);
