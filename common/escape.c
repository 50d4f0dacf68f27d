/* Making text from a peer safe to print: control codes escaped, length bounded. */
#include "common/escape.h"

static void
escape_byte (GString *out, guchar c)
{
  g_string_append_printf (out, "\\x%02x", c);
}

/* Appends one character starting at @p (of @left bytes); returns its length. */
static gsize
escape_char (GString *out, const char *p, gsize left, gboolean backslash)
{
  gunichar c = g_utf8_get_char_validated (p, left);
  const char *next;

  if (c == (gunichar) -1 || c == (gunichar) -2)
    {
      escape_byte (out, (guchar) *p);
      return 1;
    }
  next = g_utf8_next_char (p);
  if (c == '\n' || c == '\t' || c == '\r')
    g_string_append (out, c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r");
  else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0))
    g_string_append_printf (out, c < 0x80 ? "\\x%02x" : "\\u%04x", c);
  else if (c == '\\' && backslash)
    g_string_append (out, "\\\\");
  else
    g_string_append_len (out, p, next - p);
  return next - p;
}

static char *
escape_limited (const char *text, gsize limit, gboolean backslash)
{
  GString *out;
  gsize len;

  if (text == NULL)
    return g_strdup ("(none)");
  out = g_string_sized_new (strlen (text) + 8);
  len = strlen (text);
  for (gsize i = 0; i < len;)
    {
      if (out->len >= limit)
        {
          g_string_append (out, "...");
          break;
        }
      i += escape_char (out, text + i, len - i, backslash);
    }
  return g_string_free (out, FALSE);
}

char *
blkmig_escape (const char *text)
{
  return escape_limited (text, BLKMIG_ESCAPE_MAX, TRUE);
}

char *
blkmig_escape_controls (const char *text)
{
  return escape_limited (text, G_MAXSIZE, FALSE);
}
