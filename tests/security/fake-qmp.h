/* A scripted QMP peer on a UNIX socket, for tests that feed blkmig hostile replies. */
#pragma once

#include <gio/gio.h>

typedef struct _FakeQmp FakeQmp;

/* Listens on a fresh socket in a private directory; serves connections one after
 * another in a thread until freed.  Every command gets {"return": {}} unless
 * scripted; query-commands lists the scripted commands plus a few basics. */
FakeQmp *fake_qmp_new (void);
void fake_qmp_free (FakeQmp *fake);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (FakeQmp, fake_qmp_free)
const char *fake_qmp_path (FakeQmp *fake);
/* The rest of the reply line after {"id": ..., : e.g. "\"return\": []" or
 * "\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}" (raw text, sent as is). */
void fake_qmp_script (FakeQmp *fake, const char *command, const char *reply_members);
/* Replaces the greeting line (raw text, without the newline). */
void fake_qmp_set_greeting (FakeQmp *fake, const char *line);
/* How many times @command was received so far. */
guint fake_qmp_count (FakeQmp *fake, const char *command);
/* The "arguments" of the last @command received, as compact JSON text (NULL:
 * never received, "{}" without arguments). */
char *fake_qmp_last_arguments (FakeQmp *fake, const char *command);
