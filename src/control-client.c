/* The client side of a control socket: one request, one reply. */
#include "src/control.h"

#include <gio/gunixsocketaddress.h>

#include "common/error.h"
#include "common/json.h"

/* A connection to operation @id's control socket; its I/O times out after @timeout s. */
static GSocketConnection *
control_connect (const char *id, int timeout, GError **error)
{
  g_autofree char *path = control_socket_path (id, error);
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = NULL;
  g_autoptr(GError) local_error = NULL;
  GSocketConnection *conn;

  if (path == NULL)
    return NULL;
  addr = g_unix_socket_address_new (path);
  g_socket_client_set_timeout (client, timeout);
  conn = g_socket_client_connect (client, G_SOCKET_CONNECTABLE (addr), NULL, &local_error);
  if (conn == NULL)
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                 "no running operation %s (%s: %s)", id, path, local_error->message);
  return conn;
}

/* Reads up to a newline, at most CONTROL_MAX_REPLY bytes. */
static GString *
control_read_line (GInputStream *in, GError **error)
{
  g_autoptr(GString) line = g_string_new (NULL);
  char buf[4096];

  while (memchr (line->str, '\n', line->len) == NULL)
    {
      gssize n = g_input_stream_read (in, buf, sizeof buf, NULL, error);

      if (n < 0)
        return NULL;
      if (n == 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                            "the operation closed its control socket without an answer"), NULL;
      g_string_append_len (line, buf, n);
      if (line->len > CONTROL_MAX_REPLY)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                            "the answer is longer than %d bytes", CONTROL_MAX_REPLY), NULL;
    }
  return g_steal_pointer (&line);
}

JsonObject *
control_request (const char *id, JsonObject *request, int timeout, GError **error)
{
  g_autoptr(GSocketConnection) conn = control_connect (id, timeout, error);
  g_autoptr(JsonNode) root = json_node_new (JSON_NODE_OBJECT);
  static const BlkmigJsonLimits limits = { CONTROL_MAX_REPLY, 4, 64 * 1024 };
  g_autoptr(JsonNode) reply = NULL;
  g_autofree char *body = NULL;
  g_autofree char *text = NULL;
  g_autoptr(GString) line = NULL;

  if (conn == NULL)
    return NULL;
  json_node_set_object (root, request);
  body = json_to_string (root, FALSE);
  text = g_strconcat (body, "\n", NULL);
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), text,
                                  strlen (text), NULL, NULL, error)
      || (line = control_read_line (g_io_stream_get_input_stream (G_IO_STREAM (conn)), error)) == NULL)
    return g_prefix_error (error, "operation %s: ", id), NULL;
  reply = blkmig_json_parse (line->str, strchr (line->str, '\n') - line->str, &limits, NULL);
  if (reply == NULL || !JSON_NODE_HOLDS_OBJECT (reply))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "operation %s: the answer is not a JSON object", id), NULL;
  return json_object_ref (json_node_get_object (reply));
}

gboolean
control_answers (const char *id)
{
  g_autoptr(GSocketConnection) conn = control_connect (id, 5, NULL);

  return conn != NULL;
}
