/* Integration-test harness: real QEMU processes, images, and blkmig runs. */
#include "tests/integration/harness.h"

#include <fcntl.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <glib-unix.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

#include "common/async.h"

/* ---- processes ---------------------------------------------------------- */

static char *
run_tool (int *status, const char *const *argv)
{
  g_autoptr(GError) error = NULL;
  char *out = NULL;
  g_autofree char *err = NULL;
  int wait_status = 0;

  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                     &wait_status, &error))
    g_error ("cannot run %s: %s", argv[0], error->message);
  *status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : 128 + WTERMSIG (wait_status);
  if (*status != 0 && g_test_verbose ())
    g_printerr ("# %s: %s", argv[0], err);
  return out;
}

void
img_create (const char *path, const char *format, const char *size)
{
  const char *argv[] = { "qemu-img", "create", "-q", "-f", format, path, size, NULL };
  int status;
  g_autofree char *out = run_tool (&status, argv);

  g_assert_cmpint (status, ==, 0);
}

void
img_write (const char *path, const char *format, int pattern, const char *offset,
           const char *len)
{
  g_autofree char *cmd = g_strdup_printf ("write -P 0x%02x %s %s", pattern, offset, len);
  const char *argv[] = { "qemu-io", "-f", format, "-c", cmd, path, NULL };
  int status;
  g_autofree char *out = run_tool (&status, argv);

  g_assert_cmpint (status, ==, 0);
}

gint64
file_allocated (const char *path)
{
  GStatBuf st;

  g_assert_cmpint (g_stat (path, &st), ==, 0);
  return (gint64) st.st_blocks * 512;
}

gboolean
img_identical (const char *a, const char *b)
{
  const char *argv[] = { "qemu-img", "compare", "-U", a, b, NULL };
  int status;
  g_autofree char *out = run_tool (&status, argv);

  return status == 0;
}

gboolean
img_has_pattern (const char *path, const char *format, int pattern, const char *offset,
                 const char *len)
{
  g_autofree char *cmd = g_strdup_printf ("read -P 0x%02x %s %s", pattern, offset, len);
  const char *argv[] = { "qemu-io", "-U", "-r", "-f", format, "-c", cmd, path, NULL };
  int status;
  g_autofree char *out = run_tool (&status, argv);

  return status == 0 && strstr (out, "Pattern verification failed") == NULL;
}

/* ---- the rig ------------------------------------------------------------ */

const char *
rig_accel (void)
{
  static const char *accel;

  if (accel == NULL)
    {
      /* a device, not a file some tool left at that path */
      GStatBuf st;
      int fd = g_stat ("/dev/kvm", &st) == 0 && S_ISCHR (st.st_mode)
               ? open ("/dev/kvm", O_RDWR | O_CLOEXEC) : -1;
      accel = fd >= 0 ? "kvm" : "tcg";
      if (fd >= 0)
        close (fd);
    }
  return accel;
}

const char *
rig_other_qemu (void)
{
  const char *dir = g_getenv ("BLKMIG_TEST_OTHER_QEMU");

  return dir != NULL && *dir != '\0' ? dir : NULL;
}

char *
rig_wait_for_control (Rig *rig)
{
  g_autofree char *state = rig_path (rig, "state");

  for (int i = 0; i < 300; i++)
    {
      g_autoptr(GDir) dir = g_dir_open (state, 0, NULL);
      const char *name;

      while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
        if (g_str_has_suffix (name, ".ctl"))
          return g_strndup (name, strlen (name) - 4);
      g_usleep (100 * 1000);
    }
  g_error ("no control socket appeared in %s", state);
}

gboolean
rig_first_pass_only (const char *why)
{
  g_autofree char *reason = NULL;

  if (g_getenv ("BLKMIG_TEST_SECOND_PASS") == NULL)
    return FALSE;
  reason = g_strdup_printf ("%s: tested in the pass on the system's QEMU", why);
  g_test_skip (reason);
  return TRUE;
}

char *
rig_qemu_version (gboolean other)
{
  g_autofree char *bin = other ? g_build_filename (rig_other_qemu (), "qemu-system-x86_64", NULL)
                               : g_strdup ("qemu-system-x86_64");
  const char *argv[] = { bin, "--version", NULL };
  g_autofree char *out = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) proc = g_subprocess_newv (argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error);

  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (proc, NULL, NULL, &out, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (g_str_has_prefix (out, "QEMU emulator version "));
  return g_strndup (out + strlen ("QEMU emulator version "),
                    strcspn (out + strlen ("QEMU emulator version "), " \n"));
}

static GPtrArray *live_rigs;
static void rig_remove_dir (const char *dir);

/* meson's timeout sends SIGTERM: leave no QEMU and no scratch files behind. */
static gboolean
rig_terminated_cb (gpointer user_data)
{
  for (guint i = 0; live_rigs != NULL && i < live_rigs->len; i++)
    {
      Rig *rig = live_rigs->pdata[i];
      for (guint j = 0; j < rig->vms->len; j++)
        {
          Vm *vm = rig->vms->pdata[j];
          if (vm->proc != NULL)
            g_subprocess_force_exit (vm->proc);
        }
      rig_remove_dir (rig->dir);
    }
  g_printerr ("# terminated: QEMUs killed, scratch directories removed\n");
  _exit (1);
}

Rig *
rig_new (void)
{
  Rig *rig = g_new0 (Rig, 1);
  g_autoptr(GError) error = NULL;

  if (live_rigs == NULL)
    {
      live_rigs = g_ptr_array_new ();
      g_unix_signal_add (SIGTERM, rig_terminated_cb, NULL);
    }
  g_ptr_array_add (live_rigs, rig);

  rig->dir = g_dir_make_tmp ("blkmig-test-XXXXXX", &error);
  g_assert_no_error (error);
  {
    /* blkmig's journals go here, not into the machine's state directory */
    g_autofree char *state = g_build_filename (rig->dir, "state", NULL);
    g_setenv ("BLKMIG_STATE_DIR", state, TRUE);
  }
  rig->vms = g_ptr_array_new ();
  return rig;
}

char *
rig_path (Rig *rig, const char *name)
{
  return g_build_filename (rig->dir, name, NULL);
}

guint
rig_count_journals (Rig *rig)
{
  g_autofree char *state = g_build_filename (rig->dir, "state", NULL);
  g_autoptr(GDir) d = g_dir_open (state, 0, NULL);
  guint n = 0;
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    n += g_str_has_suffix (name, ".json");
  return n;
}

static void
rig_remove_dir (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      if (g_file_test (path, G_FILE_TEST_IS_DIR))
        rig_remove_dir (path);
      else
        g_unlink (path);
    }
  g_rmdir (dir);
}

void
rig_free (Rig *rig)
{
  for (guint i = 0; i < rig->vms->len; i++)
    {
      Vm *vm = rig->vms->pdata[i];
      vm_stop (vm);
      g_free (vm->name);
      g_free (vm->qmp_path);
      g_free (vm);
    }
  g_ptr_array_unref (rig->vms);
  g_ptr_array_remove (live_rigs, rig);
  rig_remove_dir (rig->dir);
  g_free (rig->dir);
  g_free (rig);
}

/* ---- VMs ---------------------------------------------------------------- */

static GSocket *
listen_unix (const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
  GSocket *sock = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                G_SOCKET_PROTOCOL_DEFAULT, &error);

  g_assert_no_error (error);
  g_socket_bind (sock, addr, TRUE, &error);
  g_assert_no_error (error);
  g_socket_listen (sock, &error);
  g_assert_no_error (error);
  return sock;
}

static void
child_setup (gpointer user_data)
{
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

/* -drive (Proxmox and hand-written command lines): BlockBackend "drive-ID", the
 * format node "node-ID" unless @flags has "drive-nonode" (QEMU names it). */
static void
vm_add_drives (GPtrArray *argv, const VmDisk *disks, const char *flags)
{
  gboolean named = strstr (flags, "drive-nonode") == NULL;
  gboolean relative = strstr (flags, "relative") != NULL;

  for (const VmDisk *d = disks; d != NULL && d->id != NULL; d++)
    {
      g_autofree char *base = g_path_get_basename (d->path);

      g_ptr_array_add (argv, g_strdup ("-drive"));
      g_ptr_array_add (argv, g_strdup_printf ("file=%s,format=%s,if=none,id=drive-%s%s%s",
                                              relative ? base : d->path, d->format, d->id,
                                              named ? ",node-name=node-" : "", named ? d->id : ""));
      g_ptr_array_add (argv, g_strdup ("-device"));
      g_ptr_array_add (argv, g_strdup_printf ("virtio-blk-pci,drive=drive-%s,id=%s", d->id, d->id));
    }
}

static void
vm_add_disks (GPtrArray *argv, const VmDisk *disks, const char *flags, const char *blkdebug_id,
              const char *blkdebug_opts)
{
  gboolean devices = flags == NULL || strstr (flags, "nodevices") == NULL;
  const char *unmap = flags != NULL && strstr (flags, "unmap") != NULL ? ",discard=unmap" : "";

  if (flags != NULL && strstr (flags, "drive") != NULL)
    {
      vm_add_drives (argv, disks, flags);
      return;
    }
  for (const VmDisk *d = disks; d != NULL && d->id != NULL; d++)
    {
      g_ptr_array_add (argv, g_strdup ("-blockdev"));
      if (g_strcmp0 (d->id, blkdebug_id) == 0)
        g_ptr_array_add (argv, g_strdup_printf ("driver=blkdebug,node-name=file-%s,"
                                                "image.driver=file,image.filename=%s%s%s",
                                                d->id, d->path, blkdebug_opts != NULL ? "," : "",
                                                blkdebug_opts != NULL ? blkdebug_opts : ""));
      else
        g_ptr_array_add (argv, g_strdup_printf ("driver=file,filename=%s,node-name=file-%s%s",
                                                d->path, d->id, unmap));
      /* Without a device the format node itself carries the disk's name. */
      g_ptr_array_add (argv, g_strdup ("-blockdev"));
      g_ptr_array_add (argv, g_strdup_printf ("driver=%s,file=file-%s,node-name=%s%s%s",
                                              d->format, d->id, devices ? "drive-" : "", d->id,
                                              unmap));
      if (!devices)
        continue;
      g_ptr_array_add (argv, g_strdup ("-device"));
      g_ptr_array_add (argv, g_strdup_printf ("virtio-blk-pci,drive=drive-%s,id=%s", d->id, d->id));
    }
}

/* After opening its images QEMU changes to "/", as -daemonize does (chroot to "/"
 * is the same move without forking away from the test). */
static void
vm_add_chdir_root (GPtrArray *argv, gboolean other)
{
  g_autofree char *version = rig_qemu_version (other);
  g_auto(GStrv) v = g_strsplit (version, ".", 3);
  gboolean run_with = atoi (v[0]) > 8 || (atoi (v[0]) == 8 && atoi (v[1]) >= 1);

  g_ptr_array_add (argv, g_strdup (run_with ? "-run-with" : "-chroot"));
  g_ptr_array_add (argv, g_strdup (run_with ? "chroot=/" : "/"));
}

static GPtrArray *
vm_argv (const char *accel, const VmDisk *disks, const char *flags, const char *blkdebug_id,
         const char *blkdebug_opts)
{
  GPtrArray *argv = g_ptr_array_new_with_free_func (g_free);
  const char *fixed[] = {
    "-nodefaults", "-display", "none", "-m", "64",
    "-chardev", "socket,id=mon0,fd=3,server=on,wait=off", "-mon", "chardev=mon0,mode=control",
    "-chardev", "socket,id=mon1,fd=4,server=on,wait=off", "-mon", "chardev=mon1,mode=control",
  };

  g_ptr_array_add (argv, flags != NULL && strstr (flags, "other-qemu") != NULL
                          ? g_build_filename (rig_other_qemu (), "qemu-system-x86_64", NULL)
                          : g_strdup ("qemu-system-x86_64"));
  for (gsize i = 0; i < G_N_ELEMENTS (fixed); i++)
    g_ptr_array_add (argv, g_strdup (fixed[i]));
  g_ptr_array_add (argv, g_strdup ("-machine"));
  /* a migration between QEMU versions needs one versioned machine type on both sides */
  g_ptr_array_add (argv, g_strdup_printf ("%s,accel=%s",
                                          flags != NULL && strstr (flags, "machine-7.2") != NULL
                                          ? "pc-i440fx-7.2" : "pc", accel));
  if (flags != NULL && strstr (flags, "incoming") != NULL)
    {
      g_ptr_array_add (argv, g_strdup ("-incoming"));
      g_ptr_array_add (argv, g_strdup ("defer"));
    }
  if (flags != NULL && (strstr (flags, "incoming") != NULL || strstr (flags, "paused") != NULL))
    g_ptr_array_add (argv, g_strdup ("-S"));
  vm_add_disks (argv, disks, flags, blkdebug_id, blkdebug_opts);
  if (flags != NULL && strstr (flags, "chdir-root") != NULL)
    vm_add_chdir_root (argv, strstr (flags, "other-qemu") != NULL);
  g_ptr_array_add (argv, NULL);
  return argv;
}

static Vm *
vm_start_full (Rig *rig, const char *name, const VmDisk *disks, const char *flags,
               const char *blkdebug_id, const char *blkdebug_opts)
{
  Vm *vm = g_new0 (Vm, 1);
  g_autofree char *test_path = g_strdup_printf ("%s/%s-test.qmp", rig->dir, name);
  g_autofree char *log = g_strdup_printf ("%s/%s.log", rig->dir, name);
  g_autoptr(GSocket) mon0 = NULL;
  g_autoptr(GSocket) mon1 = NULL;
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(GPtrArray) argv = vm_argv (rig_accel (), disks, flags, blkdebug_id, blkdebug_opts);
  g_autoptr(GError) error = NULL;

  vm->name = g_strdup (name);
  vm->qmp_path = g_strdup_printf ("%s/%s.qmp", rig->dir, name);
  /* The sockets exist before QEMU does: no waiting for it to create them. */
  mon0 = listen_unix (vm->qmp_path);
  mon1 = listen_unix (test_path);
  g_subprocess_launcher_take_fd (launcher, dup (g_socket_get_fd (mon0)), 3);
  g_subprocess_launcher_take_fd (launcher, dup (g_socket_get_fd (mon1)), 4);
  /* qemu-io under HMP reports on QEMU's stdout: keep it out of the TAP stream. */
  g_subprocess_launcher_set_stdout_file_path (launcher, log);
  g_subprocess_launcher_set_stderr_file_path (launcher, log);
  g_subprocess_launcher_set_child_setup (launcher, child_setup, NULL, NULL);
  g_subprocess_launcher_set_cwd (launcher, rig->dir);  /* for "relative" image paths */
  vm->proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, &error);
  g_assert_no_error (error);
  vm->qmp = qmp_client_connect_sync (test_path, name, NULL, &error);
  g_assert_no_error (error);
  g_ptr_array_add (rig->vms, vm);
  return vm;
}

Vm *
vm_start (Rig *rig, const char *name, const VmDisk *disks, const char *flags)
{
  return vm_start_full (rig, name, disks, flags, NULL, NULL);
}

Vm *
vm_start_blkdebug (Rig *rig, const char *name, const VmDisk *disks, const char *flags,
                   const char *blkdebug_id, const char *blkdebug_opts)
{
  return vm_start_full (rig, name, disks, flags, blkdebug_id, blkdebug_opts);
}

void
vm_stop (Vm *vm)
{
  g_autoptr(GError) error = NULL;

  if (vm->proc == NULL)
    return;
  if (vm->qmp != NULL && qmp_client_get_state (vm->qmp) == QMP_STATE_READY)
    {
      g_autoptr(JsonNode) ret = qmp_client_execute_sync (vm->qmp, "quit", NULL, NULL, NULL);
    }
  for (int i = 0; i < 100 && g_subprocess_get_identifier (vm->proc) != NULL; i++)
    blkmig_sleep (100, NULL);
  if (g_subprocess_get_identifier (vm->proc) != NULL)
    g_subprocess_force_exit (vm->proc);
  g_subprocess_wait (vm->proc, NULL, &error);
  g_clear_object (&vm->qmp);
  g_clear_object (&vm->proc);
}

JsonNode *
vm_qmp_try (Vm *vm, const char *command, const char *args_json, GError **error)
{
  JsonNode *args = args_json != NULL ? qmp_json (args_json) : NULL;

  g_assert_true (args_json == NULL || args != NULL);
  return qmp_client_execute_sync (vm->qmp, command, args, NULL, error);
}

JsonNode *
vm_qmp (Vm *vm, const char *command, const char *args_json)
{
  g_autoptr(GError) error = NULL;
  JsonNode *ret = vm_qmp_try (vm, command, args_json, &error);

  g_assert_no_error (error);
  return ret;
}

char *
vm_hmp (Vm *vm, const char *command_line)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (vm->qmp, "human-monitor-command",
                                                     qmp_args_new ("command-line", qmp_str (command_line), NULL),
                                                     NULL, &error);
  char *out;

  g_assert_no_error (error);
  out = g_strdup (json_node_get_string (ret));
  if (strstr (out, "rror") != NULL || strstr (out, "failed") != NULL)
    g_error ("HMP %s: %s", command_line, out);
  return out;
}

void
vm_guest_write (Vm *vm, const char *id, int pattern, const char *offset, const char *len)
{
  /* -d: the name is a qdev id, so the write takes the guest device's own path. */
  g_autofree char *cmd = g_strdup_printf ("qemu-io -d /machine/peripheral/%s/virtio-backend \"write -P 0x%02x %s %s\"", id,
                                          pattern, offset, len);
  g_autofree char *out = vm_hmp (vm, cmd);
}

char *
vm_status (Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-status", NULL);

  return g_strdup (json_object_get_string_member (json_node_get_object (ret), "status"));
}

static guint
vm_count (Vm *vm, const char *command, const char *args_json)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, command, args_json);

  return json_array_get_length (json_node_get_array (ret));
}

guint
vm_count_jobs (Vm *vm)
{
  return vm_count (vm, "query-jobs", NULL);
}

guint
vm_count_exports (Vm *vm)
{
  return vm_count (vm, "query-block-exports", NULL);
}

guint
vm_count_blkmig_nodes (Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-named-block-nodes", "{\"flat\":true}");
  JsonArray *nodes = json_node_get_array (ret);
  guint n = 0;

  for (guint i = 0; i < json_array_get_length (nodes); i++)
    if (g_str_has_prefix (json_object_get_string_member (json_array_get_object_element (nodes, i),
                                                         "node-name"), "blkmig"))
      n++;
  return n;
}

char *
vm_disk_file (Vm *vm, const char *id)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-block", NULL);
  JsonArray *list = json_node_get_array (ret);
  g_autofree char *suffix = g_strdup_printf ("/%s/virtio-backend", id);

  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      JsonObject *entry = json_array_get_object_element (list, i);
      if (g_str_has_suffix (json_object_get_string_member (entry, "qdev"), suffix))
        return g_strdup (json_object_get_string_member (
            json_object_get_object_member (entry, "inserted"), "file"));
    }
  return NULL;
}

void
vm_wait_for_jobs (Vm *vm)
{
  for (int i = 0; i < 600 && vm_count_jobs (vm) == 0; i++)
    blkmig_sleep (50, NULL);
  g_assert_cmpuint (vm_count_jobs (vm), >, 0);
}

/* ---- blkmig ------------------------------------------------------------- */

static GPtrArray *
blkmig_argv (const char *first_arg, va_list ap)
{
  GPtrArray *argv = g_ptr_array_new ();
  const char *bin = g_getenv ("BLKMIG");

  g_ptr_array_add (argv, (char *) (bin != NULL ? bin : "build/blkmig"));
  for (const char *arg = first_arg; arg != NULL; arg = va_arg (ap, const char *))
    g_ptr_array_add (argv, (char *) arg);
  g_ptr_array_add (argv, NULL);
  return argv;
}

static GSubprocess *
blkmig_spawnv (GPtrArray *argv)
{
  g_autoptr(GError) error = NULL;
  GSubprocess *proc = g_subprocess_newv ((const char *const *) argv->pdata,
                                         G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                         | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);

  g_assert_no_error (error);
  return proc;
}

GSubprocess *
blkmig_spawn (const char *first_arg, ...)
{
  va_list ap;
  g_autoptr(GPtrArray) argv = NULL;

  va_start (ap, first_arg);
  argv = blkmig_argv (first_arg, ap);
  va_end (ap);
  return blkmig_spawnv (argv);
}

int
blkmig_wait (GSubprocess *proc, char **out, char **err)
{
  g_autoptr(GAsyncResult) result = NULL;
  g_autoptr(GError) error = NULL;
  char *o = NULL, *e = NULL;

  /* Async so the main loop (and the test's QMP connections) keep running. */
  g_subprocess_communicate_utf8_async (proc, NULL, NULL, blkmig_store_result_cb, &result);
  g_subprocess_communicate_utf8_finish (proc, blkmig_await (&result), &o, &e, &error);
  g_assert_no_error (error);
  g_subprocess_wait (proc, NULL, NULL);
  if (g_test_verbose ())
    g_printerr ("# blkmig stdout:\n%s# blkmig stderr:\n%s", o, e);
  if (out != NULL)
    *out = o;
  else
    g_free (o);
  if (err != NULL)
    *err = e;
  else
    g_free (e);
  return g_subprocess_get_if_exited (proc) ? g_subprocess_get_exit_status (proc)
                                          : 128 + g_subprocess_get_term_sig (proc);
}

int
blkmig_run (char **out, char **err, const char *first_arg, ...)
{
  va_list ap;
  g_autoptr(GPtrArray) argv = NULL;
  g_autoptr(GSubprocess) proc = NULL;

  va_start (ap, first_arg);
  argv = blkmig_argv (first_arg, ap);
  va_end (ap);
  proc = blkmig_spawnv (argv);
  return blkmig_wait (proc, out, err);
}

/* ---- fault injection ---------------------------------------------------- */

void
file_copy_sparse (const char *from, const char *to)
{
  const char *argv[] = { "cp", "--sparse=always", from, to, NULL };
  int status;
  g_autofree char *out = run_tool (&status, argv);

  g_assert_cmpint (status, ==, 0);
}

/* The state letter of /proc/PID/stat ('R', 'S', 'T', ...), or 0 when it is gone. */
static char
proc_state (const char *pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%s/stat", pid);
  g_autofree char *text = NULL;
  const char *paren;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return 0;
  paren = strrchr (text, ')');  /* the command name may hold spaces and parentheses */
  return paren != NULL && paren[1] == ' ' ? paren[2] : 0;
}

char
proc_get_state (GSubprocess *proc)
{
  const char *pid = g_subprocess_get_identifier (proc);

  return pid != NULL ? proc_state (pid) : 0;
}

void
proc_wait_stopped (GSubprocess *proc)
{
  for (int i = 0; i < 1500; i++)  /* 30 s */
    {
      const char *pid = g_subprocess_get_identifier (proc);
      char state;

      if (pid == NULL)
        g_error ("the process ended instead of stopping");
      state = proc_state (pid);
      if (state == 'T')
        return;
      if (state == 0 || state == 'Z')
        g_error ("the process ended instead of stopping (state %c)", state ? state : '-');
      blkmig_sleep (20, NULL);
    }
  g_error ("the process did not stop within 30 s");
}

struct _QmpProxy {
  char *upstream_path;
  char *listen_path;
  GSocketService *service;
  GPtrArray *links;           /* QmpProxyLink */
};

/* One direction of one spliced connection.  Not g_io_stream_splice: blkmig passes
 * file descriptors over QMP (getfd), and they must get through too. */
typedef struct {
  GSocket *from, *to;
  GSource *source;
  GObject *conn;              /* the accepted connection owns a socket: kept open */
} QmpProxyLink;

static void
qmp_proxy_link_free (QmpProxyLink *link)
{
  g_source_destroy (link->source);
  g_source_unref (link->source);
  g_object_unref (link->from);
  g_object_unref (link->to);
  g_object_unref (link->conn);
  g_free (link);
}

/* Sends all of @out (its file descriptors with the first bytes), waiting while the
 * reader is behind: a large reply (QEMU 10.0's 400 KB schema) fills the socket. */
static gboolean
qmp_proxy_send_all (GSocket *to, GOutputVector *out, GSocketControlMessage **messages,
                    int n_messages)
{
  const char *data = out->buffer;
  gsize left = out->size;

  while (left > 0)
    {
      g_autoptr(GError) error = NULL;
      GOutputVector chunk = { data, left };
      gssize sent = g_socket_send_message (to, NULL, &chunk, 1, messages, n_messages, 0, NULL,
                                           &error);

      if (sent < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)
          && g_socket_condition_timed_wait (to, G_IO_OUT, 10 * G_USEC_PER_SEC, NULL, NULL))
        continue;
      if (sent <= 0)
        return FALSE;
      data += sent;
      left -= sent;
      n_messages = 0;  /* the descriptors went with the first bytes */
    }
  return TRUE;
}

static gboolean
qmp_proxy_forward_cb (GSocket *from, GIOCondition cond, gpointer user_data)
{
  QmpProxyLink *link = user_data;
  char buf[65536];
  GInputVector in = { buf, sizeof buf };
  GOutputVector out = { buf, 0 };
  GSocketControlMessage **messages = NULL;
  int n_messages = 0, flags = 0;
  gssize n = g_socket_receive_message (from, NULL, &in, 1, &messages, &n_messages, &flags, NULL,
                                       NULL);
  gboolean ok = n > 0;

  if (ok)
    {
      out.size = n;
      ok = qmp_proxy_send_all (link->to, &out, messages, n_messages);
    }
  for (int i = 0; i < n_messages; i++)
    g_object_unref (messages[i]);
  g_free (messages);
  if (ok)
    return G_SOURCE_CONTINUE;
  /* EOF or an error: the other side sees the end too. */
  g_socket_shutdown (link->to, TRUE, TRUE, NULL);
  g_socket_shutdown (link->from, TRUE, TRUE, NULL);
  return G_SOURCE_REMOVE;
}

static void
qmp_proxy_link (QmpProxy *proxy, GSocket *from, GSocket *to, GSocketConnection *conn)
{
  QmpProxyLink *link = g_new0 (QmpProxyLink, 1);

  link->conn = g_object_ref (G_OBJECT (conn));
  link->from = g_object_ref (from);
  link->to = g_object_ref (to);
  link->source = g_socket_create_source (from, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
  g_source_set_callback (link->source, G_SOURCE_FUNC (qmp_proxy_forward_cb), link, NULL);
  g_source_attach (link->source, g_main_context_get_thread_default ());
  g_ptr_array_add (proxy->links, link);
}

static gboolean
qmp_proxy_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                       gpointer user_data)
{
  QmpProxy *proxy = user_data;
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (proxy->upstream_path);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) up = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                        G_SOCKET_PROTOCOL_DEFAULT, &error);
  GSocket *down = g_socket_connection_get_socket (conn);

  g_assert_no_error (error);
  if (!g_socket_connect (up, addr, NULL, &error))
    {
      /* Like the real socket would: the client sees the connection end. */
      g_socket_shutdown (down, TRUE, TRUE, NULL);
      return TRUE;
    }
  qmp_proxy_link (proxy, down, up, conn);
  qmp_proxy_link (proxy, up, down, conn);
  return TRUE;
}

QmpProxy *
qmp_proxy_new (const char *upstream_path, const char *listen_path)
{
  QmpProxy *proxy = g_new0 (QmpProxy, 1);
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (listen_path);
  g_autoptr(GError) error = NULL;

  proxy->upstream_path = g_strdup (upstream_path);
  proxy->listen_path = g_strdup (listen_path);
  proxy->links = g_ptr_array_new_with_free_func ((GDestroyNotify) qmp_proxy_link_free);
  proxy->service = g_socket_service_new ();
  g_socket_listener_add_address (G_SOCKET_LISTENER (proxy->service), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, &error);
  g_assert_no_error (error);
  g_signal_connect (proxy->service, "incoming", G_CALLBACK (qmp_proxy_incoming_cb), proxy);
  g_socket_service_start (proxy->service);
  return proxy;
}

guint
qmp_proxy_cut (QmpProxy *proxy)
{
  guint n = 0;

  /* shutdown(2) both sockets of every connection: both peers see the end now. */
  for (guint i = 0; i < proxy->links->len; i++)
    {
      QmpProxyLink *link = proxy->links->pdata[i];
      n += !g_source_is_destroyed (link->source);
      g_socket_shutdown (link->from, TRUE, TRUE, NULL);
    }
  g_ptr_array_set_size (proxy->links, 0);
  return n / 2;
}

void
qmp_proxy_free (QmpProxy *proxy)
{
  if (proxy == NULL)
    return;
  qmp_proxy_cut (proxy);
  g_socket_service_stop (proxy->service);
  g_socket_listener_close (G_SOCKET_LISTENER (proxy->service));
  g_signal_handlers_disconnect_by_data (proxy->service, proxy);
  g_object_unref (proxy->service);
  g_unlink (proxy->listen_path);
  g_ptr_array_unref (proxy->links);
  g_free (proxy->upstream_path);
  g_free (proxy->listen_path);
  g_free (proxy);
}
