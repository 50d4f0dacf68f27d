/* Machine-readable events: one JSON object per line, for hooks and orchestrators. */
#include "src/events.h"

#include <errno.h>
#include <stdio.h>

#include "common/error.h"

static FILE *events_out;
static gint64 events_start_us;
static EventsObserver events_observer;

gboolean
events_open (const char *path, GError **error)
{
  events_start_us = g_get_monotonic_time ();
  if (g_str_equal (path, "-"))
    {
      events_out = stdout;
      return TRUE;
    }
  events_out = fopen (path, "w");
  if (events_out != NULL)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "cannot write events to %s: %s",
               path, g_strerror (errno));
  return FALSE;
}

gboolean
events_enabled (void)
{
  return events_out != NULL;
}

static void
events_write (JsonObject *obj)
{
  g_autoptr(JsonNode) root = json_node_new (JSON_NODE_OBJECT);
  g_autofree char *line = NULL;

  json_node_set_object (root, obj);
  line = json_to_string (root, FALSE);
  fprintf (events_out, "%s\n", line);
  fflush (events_out);
}

static void
events_dispatch (const char *type, JsonObject *obj)
{
  if (events_observer != NULL)
    events_observer (type, obj);
  if (events_out != NULL)
    events_write (obj);
}

static JsonObject *
events_head (const char *type)
{
  JsonObject *obj = json_object_new ();

  json_object_set_int_member (obj, "v", EVENTS_VERSION);
  json_object_set_int_member (obj, "ms", (g_get_monotonic_time () - events_start_us) / 1000);
  json_object_set_string_member (obj, "event", type);
  return obj;
}

void
events_emit (const char *type, const char *first_key, ...)
{
  g_autoptr(JsonObject) obj = events_head (type);
  va_list ap;

  va_start (ap, first_key);
  for (const char *key = first_key; key != NULL; key = va_arg (ap, const char *))
    {
      JsonNode *value = va_arg (ap, JsonNode *);
      if (value != NULL)
        json_object_set_member (obj, key, value);
    }
  va_end (ap);
  events_dispatch (type, obj);
}

void
events_emit_object (const char *type, JsonObject *members)
{
  g_autoptr(JsonObject) obj = events_head (type);
  g_autoptr(GList) keys = json_object_get_members (members);

  for (GList *l = keys; l != NULL; l = l->next)
    json_object_set_member (obj, l->data, json_object_dup_member (members, l->data));
  events_dispatch (type, obj);
}

void
events_set_observer (EventsObserver observer)
{
  events_observer = observer;
}

void
events_close (void)
{
  if (events_out != NULL && events_out != stdout)
    fclose (events_out);
  events_out = NULL;
}
