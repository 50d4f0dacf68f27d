/* Byte streams for the tunnel: a TCP connection, a command's stdin/stdout, our own stdio. */
#define _GNU_SOURCE  /* F_SETPIPE_SZ */
#include "src/transport.h"

#include <fcntl.h>
#include <gio/gunixinputstream.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <gio/gunixoutputstream.h>

#include "common/async.h"
#include "common/debug.h"
#include "common/error.h"
#include "common/escape.h"
#include "nbd/nbd-server.h"

static gboolean
transport_parse (const char *spec, NbdEndpoint *ep, GError **error)
{
  if (!nbd_endpoint_parse (spec, ep, error))
    return FALSE;
  if (ep->host != NULL)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "tunnel address %s: expected tcp:HOST:PORT",
               spec);
  return FALSE;
}

static GTlsDatabase *
transport_ca (const char *dir, GError **error)
{
  g_autofree char *ca = g_build_filename (dir, "ca-cert.pem", NULL);

  return g_tls_file_database_new (ca, error);
}

static GTlsCertificate *
transport_cert (const char *dir, const char *role, GError **error)
{
  g_autofree char *cert_name = g_strdup_printf ("%s-cert.pem", role);
  g_autofree char *key_name = g_strdup_printf ("%s-key.pem", role);
  g_autofree char *cert = g_build_filename (dir, cert_name, NULL);
  g_autofree char *key = g_build_filename (dir, key_name, NULL);

  return g_tls_certificate_new_from_files (cert, key, error);
}

static GIOStream *
transport_handshake (GTlsConnection *tls, GCancellable *cancellable, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  g_tls_connection_handshake_async (tls, G_PRIORITY_DEFAULT, cancellable,
                                    blkmig_store_result_cb, &result);
  if (!g_tls_connection_handshake_finish (tls, blkmig_await (&result), error))
    return g_prefix_error (error, "tunnel: TLS handshake failed: "), NULL;
  return G_IO_STREAM (g_object_ref (tls));
}

static GIOStream *
transport_tls_client (GIOStream *base, const char *dir, const char *host,
                      GCancellable *cancellable, GError **error)
{
  g_autoptr(GSocketConnectable) identity = g_network_address_new (host, 0);
  g_autoptr(GTlsDatabase) ca = transport_ca (dir, error);
  g_autoptr(GTlsCertificate) cert = ca != NULL ? transport_cert (dir, "client", error) : NULL;
  g_autoptr(GIOStream) tls = NULL;

  if (cert == NULL)
    return g_prefix_error (error, "tunnel: %s: ", dir), NULL;
  tls = g_tls_client_connection_new (base, identity, error);
  if (tls == NULL)
    return NULL;
  g_tls_connection_set_database (G_TLS_CONNECTION (tls), ca);
  g_tls_connection_set_certificate (G_TLS_CONNECTION (tls), cert);
  return transport_handshake (G_TLS_CONNECTION (tls), cancellable, error);
}

/* ---- the server side: who may use the endpoint ---------------------------- */

/* A client has this long to finish its TLS handshake ... */
#define HANDSHAKE_TIMEOUT_S 10
/* ... and this many may be at it at once (the oldest is dropped for a new one). */
#define HANDSHAKES_MAX 16

/* Waits for the first client that passes TLS and --tls-authz; the others are
 * turned away one by one, so connecting first does not use up the endpoint. */
typedef struct {
  GTlsDatabase *ca;
  GTlsCertificate *cert;      /* NULL: plaintext, the first client wins */
  const char *const *authz;   /* client subject DNs allowed, NULL = any the CA signed */
  GSocketListener *listener;  /* NULL: one handshake over a given stream */
  gboolean accepting;         /* an accept is in flight */
  GCancellable *cancellable;  /* ends the accept and every handshake */
  GQueue pending;             /* Handshake in flight, oldest first */
  GIOStream *winner;
  GError *failure;            /* why the latest client was turned away */
  GError *error;              /* accepting failed */
} Gate;

typedef struct {
  Gate *gate;
  GTlsConnection *tls;
  GCancellable *cancellable;
  guint timer;
  gboolean timed_out;
  char *rejected_dn;          /* signed by the CA but not in --tls-authz */
} Handshake;

static void
gate_clear (Gate *gate)
{
  g_clear_object (&gate->ca);
  g_clear_object (&gate->cert);
  g_clear_object (&gate->listener);
  g_clear_object (&gate->cancellable);
  g_clear_object (&gate->winner);
  g_clear_error (&gate->failure);
  g_clear_error (&gate->error);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Gate, gate_clear)

static gboolean
gate_load (Gate *gate, const char *dir, const char *const *authz, GError **error)
{
  gate->cancellable = g_cancellable_new ();
  g_queue_init (&gate->pending);
  if (dir == NULL)
    return TRUE;
  gate->authz = authz;
  gate->ca = transport_ca (dir, error);
  gate->cert = gate->ca != NULL ? transport_cert (dir, "server", error) : NULL;
  if (gate->cert == NULL)
    return g_prefix_error (error, "tunnel: %s: ", dir), FALSE;
  return TRUE;
}

/* Whether @authz (NULL: anyone) lists @cert's subject DN as GnuTLS writes it
 * ("O=example,CN=host", the form QEMU's tls-authz compares too); if not,
 * *dn_out gets the DN for the message. */
static gboolean
transport_authorized (GTlsCertificate *cert, const char *const *authz, char **dn_out)
{
  g_autofree char *dn = cert != NULL ? g_tls_certificate_get_subject_name (cert) : NULL;
  gboolean ok = authz == NULL || (dn != NULL && g_strv_contains (authz, dn));

  if (dn_out != NULL)
    *dn_out = ok ? NULL : g_steal_pointer (&dn);
  return ok;
}

/* A GIO TLS server asks about every client certificate; @errors holds what the
 * check against our CA found.  Accept exactly the ones that passed it and,
 * with --tls-authz, whose DN is listed. */
static gboolean
transport_accept_client_cb (GTlsConnection *tls, GTlsCertificate *cert,
                            GTlsCertificateFlags errors, gpointer user_data)
{
  Handshake *hs = user_data;

  if (errors != 0)
    return FALSE;
  g_clear_pointer (&hs->rejected_dn, g_free);
  return transport_authorized (cert, hs->gate->authz, &hs->rejected_dn);
}

static gboolean
handshake_timeout_cb (gpointer user_data)
{
  Handshake *hs = user_data;

  hs->timer = 0;
  hs->timed_out = TRUE;
  g_cancellable_cancel (hs->cancellable);
  return G_SOURCE_REMOVE;
}

/* Why @hs's client was turned away, as one line. */
static GError *
handshake_failure (Handshake *hs, GError *error)
{
  g_autofree char *dn = NULL;

  if (hs->timed_out)
    {
      g_error_free (error);
      return g_error_new (BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "tunnel: TLS handshake failed: "
                          "no answer within %d s", HANDSHAKE_TIMEOUT_S);
    }
  if (hs->rejected_dn == NULL)
    return g_prefix_error (&error, "tunnel: TLS handshake failed: "), error;
  dn = blkmig_escape (hs->rejected_dn);
  g_error_free (error);
  return g_error_new (BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                      "tunnel: client certificate %s is not in --tls-authz", dn);
}

static void
handshake_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Handshake *hs = user_data;
  Gate *gate = hs->gate;
  GError *error = NULL;

  g_queue_remove (&gate->pending, hs);
  if (hs->timer != 0)
    g_source_remove (hs->timer);
  if (g_tls_connection_handshake_finish (hs->tls, result, &error)
      && !transport_authorized (g_tls_connection_get_peer_certificate (hs->tls), gate->authz,
                                &hs->rejected_dn))
    error = g_error_new_literal (G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE, "not authorized");
  g_signal_handlers_disconnect_by_data (hs->tls, hs);
  if (error == NULL && gate->winner == NULL)
    gate->winner = G_IO_STREAM (g_object_ref (hs->tls));
  else
    {
      g_io_stream_close (G_IO_STREAM (hs->tls), NULL, NULL);
      g_clear_error (&gate->failure);
      gate->failure = error != NULL ? handshake_failure (hs, error) : NULL;
      blkmig_debug (BLKMIG_DEBUG_QMP, "%s", gate->failure != NULL ? gate->failure->message
                                                                   : "tunnel: late client dropped");
    }
  g_object_unref (hs->tls);
  g_object_unref (hs->cancellable);
  g_free (hs->rejected_dn);
  g_free (hs);
}

/* Starts the TLS handshake of a new client @base. */
static void
gate_handshake (Gate *gate, GIOStream *base)
{
  g_autoptr(GError) error = NULL;
  GIOStream *tls = g_tls_server_connection_new (base, gate->cert, &error);
  Handshake *hs;

  if (tls == NULL)
    {
      g_clear_error (&gate->failure);
      gate->failure = g_steal_pointer (&error);
      return;
    }
  if (gate->pending.length >= HANDSHAKES_MAX)
    g_cancellable_cancel (((Handshake *) g_queue_peek_head (&gate->pending))->cancellable);
  hs = g_new0 (Handshake, 1);
  hs->gate = gate;
  hs->tls = G_TLS_CONNECTION (tls);
  hs->cancellable = g_cancellable_new ();
  hs->timer = g_timeout_add_seconds (HANDSHAKE_TIMEOUT_S, handshake_timeout_cb, hs);
  g_queue_push_tail (&gate->pending, hs);
  g_tls_connection_set_database (hs->tls, gate->ca);
  g_object_set (tls, "authentication-mode", G_TLS_AUTHENTICATION_REQUIRED, NULL);
  g_signal_connect (tls, "accept-certificate", G_CALLBACK (transport_accept_client_cb), hs);
  g_tls_connection_handshake_async (hs->tls, G_PRIORITY_DEFAULT, hs->cancellable,
                                    handshake_done_cb, hs);
}

/* The tunnel's frames are small as often as large (an NBD reply, a credit):
 * Nagle would hold each behind the previous segment's ACK, which the far end
 * delays up to 40 ms — per request, on a WAN.  Not a TCP socket: nothing. */
static void
transport_nodelay (int fd)
{
  int on = 1;

  (void) setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

static void gate_accept (Gate *gate);

static void
gate_accepted_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Gate *gate = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketConnection) conn = g_socket_listener_accept_finish (gate->listener, result,
                                                                        NULL, &error);

  gate->accepting = FALSE;
  if (conn == NULL)
    {
      gate->error = g_steal_pointer (&error);
      return;
    }
  if (gate->winner != NULL)
    {
      g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
      return;
    }
  transport_nodelay (g_socket_get_fd (g_socket_connection_get_socket (conn)));
  if (gate->cert == NULL)
    gate->winner = G_IO_STREAM (g_steal_pointer (&conn));  /* plaintext: first come */
  else
    {
      gate_handshake (gate, G_IO_STREAM (conn));
      gate_accept (gate);
    }
}

static void
gate_accept (Gate *gate)
{
  gate->accepting = TRUE;
  g_socket_listener_accept_async (gate->listener, gate->cancellable, gate_accepted_cb, gate);
}

/* Iterates until a client passed (or the one handshake ended, without a
 * listener), then ends everything else and waits for it. */
static GIOStream *
gate_wait (Gate *gate, GCancellable *cancellable, GError **error)
{
  while (gate->winner == NULL && gate->error == NULL
         && !g_cancellable_is_cancelled (cancellable)
         && (gate->accepting || gate->pending.length > 0))
    g_main_context_iteration (NULL, TRUE);
  g_cancellable_cancel (gate->cancellable);
  for (GList *l = gate->pending.head; l != NULL; l = l->next)
    g_cancellable_cancel (((Handshake *) l->data)->cancellable);
  while (gate->accepting || gate->pending.length > 0)
    g_main_context_iteration (NULL, TRUE);
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return NULL;
  if (gate->winner != NULL)
    return g_steal_pointer (&gate->winner);
  if (gate->error != NULL)
    return g_propagate_error (error, g_steal_pointer (&gate->error)), NULL;
  g_propagate_error (error, g_steal_pointer (&gate->failure));
  return NULL;
}

GIOStream *
transport_tls_server (GIOStream *base, const char *dir, const char *const *authz,
                      GCancellable *cancellable, GError **error)
{
  g_auto(Gate) gate = { 0 };

  if (!gate_load (&gate, dir, authz, error))
    return NULL;
  gate_handshake (&gate, base);
  return gate_wait (&gate, cancellable, error);
}

GIOStream *
transport_connect (const char *spec, const char *tls_dir, const char *tls_hostname,
                   GCancellable *cancellable, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GIOStream) base = NULL;
  GSocketConnection *conn;

  if (!transport_parse (spec, &ep, error))
    return NULL;
  conn = g_socket_client_connect_to_host (client, ep.host, ep.port, cancellable, error);
  if (conn == NULL)
    return g_prefix_error (error, "tunnel: cannot connect to %s: ", spec), NULL;
  transport_nodelay (g_socket_get_fd (g_socket_connection_get_socket (conn)));
  base = G_IO_STREAM (conn);
  if (tls_dir == NULL)
    return g_steal_pointer (&base);
  return transport_tls_client (base, tls_dir, tls_hostname != NULL ? tls_hostname : ep.host,
                               cancellable, error);
}

GIOStream *
transport_accept (const char *spec, const char *tls_dir, const char *const *authz,
                  void (*on_listening) (guint16 port), GCancellable *cancellable, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_auto(Gate) gate = { 0 };
  g_autoptr(GInetAddress) inet = NULL;
  g_autoptr(GSocketAddress) addr = NULL;
  g_autoptr(GSocketAddress) bound = NULL;

  if (!transport_parse (spec, &ep, error) || !gate_load (&gate, tls_dir, authz, error))
    return NULL;
  inet = g_inet_address_new_from_string (ep.host);
  if (inet == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "tunnel address %s: HOST must be a numeric IP address", spec), NULL;
  addr = g_inet_socket_address_new (inet, ep.port);
  gate.listener = g_socket_listener_new ();
  if (!g_socket_listener_add_address (gate.listener, addr, G_SOCKET_TYPE_STREAM,
                                      G_SOCKET_PROTOCOL_TCP, NULL, &bound, error))
    return g_prefix_error (error, "tunnel: cannot listen on %s: ", spec), NULL;
  if (on_listening != NULL)
    on_listening (g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));
  gate_accept (&gate);
  return gate_wait (&gate, cancellable, error);
}

/* No shell: @argv is run as it is, so no word of it is ever interpreted. */
/* A pipe carrying the tunnel holds TRANSPORT_PIPE_SIZE instead of 64 KiB: each
 * time it fills, both processes must be scheduled before it moves on, and on a
 * busy host those hand-offs, 16 per MiB, were the tunnel's cost.  Not a pipe,
 * or the system refuses (pipe-max-size): left as it is. */
#define TRANSPORT_PIPE_SIZE (1024 * 1024)

static void
transport_grow_pipe (int fd)
{
  if (fcntl (fd, F_GETPIPE_SZ) > 0)
    (void) fcntl (fd, F_SETPIPE_SZ, TRANSPORT_PIPE_SIZE);
}

GIOStream *
transport_spawn (const char *const *argv, GSubprocess **proc, GError **error)
{
  GInputStream *in;
  GOutputStream *out;

  *proc = g_subprocess_newv (argv, G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                             error);
  if (*proc == NULL)
    return g_prefix_error (error, "tunnel: cannot run %s: ", argv[0]), NULL;
  in = g_subprocess_get_stdout_pipe (*proc);
  out = g_subprocess_get_stdin_pipe (*proc);
  transport_grow_pipe (g_unix_input_stream_get_fd (G_UNIX_INPUT_STREAM (in)));
  transport_grow_pipe (g_unix_output_stream_get_fd (G_UNIX_OUTPUT_STREAM (out)));
  return g_simple_io_stream_new (in, out);
}

GIOStream *
transport_stdio (void)
{
  g_autoptr(GInputStream) in = g_unix_input_stream_new (0, FALSE);
  g_autoptr(GOutputStream) out = g_unix_output_stream_new (1, FALSE);

  transport_grow_pipe (0);  /* e.g. under ssh, or a source's --tunnel-command */
  transport_grow_pipe (1);
  transport_nodelay (0);    /* or inetd's TCP connection */
  return g_simple_io_stream_new (in, out);
}
