/* What a QEMU's query-qmp-schema says about its commands' arguments. */
#pragma once

#include <json-glib/json-glib.h>

/* The set of "COMMAND ARGUMENT" strings (one space) for every argument of every
 * command in @schema (query-qmp-schema's return value): the members of the
 * command's arg-type and, for a union, of each variant's type.  Mistyped
 * entries are skipped. */
GHashTable *qmp_schema_arguments (JsonArray *schema);
