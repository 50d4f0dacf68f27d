/* Fuzz harness: the QMP client's framing and reply handling, fed by a fake QEMU on a socketpair. */
#include "fuzz.h"
#include "fuzz-peer.h"

#include <string.h>

#include "common/escape.h"
#include "qmp/qmp-client.h"
#include "qmp/qmp-json.h"

/* The input is what the fake QEMU sends, written one line at a time with the
 * main context run in between, so replies meet the commands they answer.  The
 * client sends qmp_capabilities (id blkmig-1) and query-commands (blkmig-2);
 * once connected the harness sends the commands below, ids blkmig-3 on, all at
 * once.  Lines longer than PIECE go in pieces (partial-line buffering). */
#define PIECE 4096

static const char *const commands[] = {
  "query-block", "query-named-block-nodes", "query-block-jobs", "blockdev-mirror",
  "query-block-jobs", "block-job-cancel", "no-such-command", "quit",
};

typedef struct {
  QmpClient *client;
  gboolean connect_done;
  gboolean closed;
  guint outstanding;        /* commands without their callback yet */
} Run;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init_glib ();
  return 0;
}

/* Reads the members blkmig reads from replies and events, the way it reads them. */
static void
read_object (JsonObject *obj, guint depth)
{
  static const char *const strings[] = {
    "device", "qdev", "node-name", "filename", "format", "status", "id", "type",
    "backing_file", "class", "desc", "name", "io-status",
  };
  static const char *const ints[] = {
    "virtual-size", "actual-size", "len", "offset", "speed", "backing_file_depth",
  };
  static const char *const children[] = { "inserted", "image", "backing-image", "data" };

  if (obj == NULL || depth > 4)
    return;
  for (gsize i = 0; i < G_N_ELEMENTS (strings); i++)
    g_free (blkmig_escape (qmp_member_string (obj, strings[i])));
  for (gsize i = 0; i < G_N_ELEMENTS (ints); i++)
    (void) qmp_member_int (obj, ints[i], -1);
  (void) qmp_member_bool (obj, "ready", FALSE);
  for (gsize i = 0; i < G_N_ELEMENTS (children); i++)
    read_object (qmp_member_object (obj, children[i]), depth + 1);
}

static void
read_reply (JsonNode *node)
{
  JsonArray *list = qmp_node_array (node);

  read_object (qmp_node_object (node), 0);
  for (guint i = 0; i < qmp_array_length (list); i++)
    {
      read_object (qmp_array_object (list, i), 0);
      g_free (blkmig_escape (qmp_array_string (list, i)));
    }
}

static void
event_cb (QmpClient *client, const char *name, JsonObject *data, gpointer user_data)
{
  FUZZ_CHECK (name != NULL && data != NULL, "an event without a name or data");
  g_free (blkmig_escape (name));
  read_object (data, 0);
}

static void
closed_cb (QmpClient *client, const GError *why, gpointer user_data)
{
  Run *run = user_data;

  FUZZ_CHECK (!run->closed, "\"closed\" emitted twice");
  FUZZ_CHECK (why != NULL, "\"closed\" without a reason");
  run->closed = TRUE;
}

static void
reply_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Run *run = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (QMP_CLIENT (source), result, &error);

  FUZZ_CHECK ((ret == NULL) != (error == NULL), "a command returned both or neither");
  if (ret != NULL)
    read_reply (ret);
  else
    g_free (blkmig_escape_controls (error->message));
  run->outstanding--;
}

static void
connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Run *run = user_data;
  g_autoptr(GError) error = NULL;

  run->client = qmp_client_adopt_fd_finish (result, &error);
  run->connect_done = TRUE;
  FUZZ_CHECK ((run->client == NULL) != (error == NULL), "connect returned both or neither");
  if (run->client == NULL)
    return;
  /* the connect's callback may run after a later line already closed the client */
  run->closed = qmp_client_get_state (run->client) == QMP_STATE_CLOSED;
  FUZZ_CHECK (run->closed || qmp_client_get_state (run->client) == QMP_STATE_READY,
              "connected, neither READY nor CLOSED");
  g_free (blkmig_escape (qmp_client_get_version (run->client)));
  (void) qmp_client_has_command (run->client, "query-block");
  g_signal_connect (run->client, "event", G_CALLBACK (event_cb), run);
  g_signal_connect (run->client, "closed", G_CALLBACK (closed_cb), run);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      JsonNode *args = i == 1 ? qmp_args_new ("flat", qmp_bool (TRUE), NULL) : NULL;

      run->outstanding++;
      qmp_client_execute_async (run->client, commands[i], args, -1, 0, NULL, reply_cb, run);
    }
}

/* Feeds @data line by line (a line ends after '\n'). */
static void
feed (FuzzPeer *peer, const uint8_t *data, size_t size)
{
  size_t off = 0;

  while (off < size && !peer->broken)
    {
      const uint8_t *nl = memchr (data + off, '\n', size - off);
      size_t len = (nl != NULL ? (size_t) (nl - data) + 1 : size) - off;

      len = MIN (len, PIECE);
      fuzz_peer_send (peer, data + off, len);
      off += len;
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Run run = { 0 };
  FuzzPeer peer;
  int fd = fuzz_peer_open (&peer);

  FUZZ_CHECK (fd >= 0, "socketpair failed");
  qmp_client_adopt_fd_async (fd, "fuzz", NULL, connected_cb, &run);
  fuzz_peer_settle ();
  feed (&peer, data, size);
  /* end of input: the client must notice, fail what is pending and close */
  fuzz_peer_shutdown (&peer);
  while (!run.connect_done || run.outstanding > 0
         || (run.client != NULL && !run.closed))
    g_main_context_iteration (NULL, TRUE);
  if (run.client != NULL)
    {
      FUZZ_CHECK (qmp_client_get_state (run.client) == QMP_STATE_CLOSED, "not CLOSED at EOF");
      g_object_unref (run.client);
    }
  fuzz_peer_close (&peer);
  fuzz_peer_settle ();
  return 0;
}
