/* Caller-chosen operation ids (--op-id): the migration id they stand for, and the record of an operation that succeeded. */
#pragma once

#include <stdio.h>

#include <glib.h>

#include <json-glib/json-glib.h>

#include "cookie/cookie.h"

/* The migration id (32 hex digits, as cookies carry) that operation id @op_id
 * stands for: the same on every host and every run, so a re-run finds the
 * journal, the QEMU names and the cookies of the first. */
char *op_id_migration_id (const char *op_id);

/* Records that @command with operation id @op_id succeeded with @status
 * ("completed", "copied", "moved") and, if not NULL, @result (perform's result
 * cookie, for a re-run to give again): STATE_DIR/OP_ID.done and OP_ID.result.
 * Nothing when @op_id is NULL; a warning on stderr when they cannot be written
 * (the operation did succeed). */
void op_id_record_done (const char *op_id, const char *command, const char *status,
                        const Cookie *result);
/* The result cookie a run of @op_id recorded. */
Cookie *op_id_load_result (const char *op_id, GError **error);
/* The record of a run of @op_id that succeeded (op-id, command, status, time),
 * or NULL: none (no error), or unreadable (an error). */
JsonObject *op_id_load_done (const char *op_id, GError **error);
/* The status a previous run of @command with @op_id succeeded with, or NULL (none,
 * or one of another command: an error then, the id is taken). */
char *op_id_find_done (const char *op_id, const char *command, GError **error);

/* Before @command starts as operation @op_id (migration id @id): a previous run
 * that succeeded, or a killed one that recover finds had completed (recorded now,
 * with a result cookie from its journal),
 * gives its status in *done (report it, do nothing); a killed one that had not is
 * rolled back (*done NULL: start afresh).  FALSE when that recovery could not
 * reach a side (retryable; its journal stays). */
gboolean op_id_before_start (const char *op_id, const char *command, const char *id,
                             char **done, GError **error);
/* "blkmig: operation ID had already succeeded (STATUS)" on @out (where the
 * command's summary goes: stdout, stderr when stdout carries a cookie) and a
 * completed event with "already": true. */
void op_id_report_done (const char *op_id, const char *status, FILE *out);
