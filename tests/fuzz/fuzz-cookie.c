/* Fuzz harness: cookie_parse for each kind, and a serialise/parse round trip of what it accepts. */
#include "fuzz.h"

#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "cookie/cookie.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init_glib ();
  return 0;
}

/* What blkmig wrote must read back as the same cookie, byte for byte. */
static void
check_round_trip (const Cookie *cookie, CookieKind kind)
{
  g_autofree char *text = cookie_to_string (cookie);
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) again = cookie_parse (text, -1, kind, &error);
  g_autofree char *text2 = NULL;

  if (again == NULL)
    fprintf (stderr, "re-parsing a serialised %s cookie: %s\n%s",
             cookie_kind_to_string (kind), error->message, text);
  FUZZ_CHECK (again != NULL, "a serialised cookie does not parse");
  FUZZ_CHECK (again->kind == cookie->kind, "the kind changed in a round trip");
  text2 = cookie_to_string (again);
  FUZZ_CHECK (strcmp (text, text2) == 0, "a round trip changed the cookie");
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const CookieKind kinds[] = {
    COOKIE_KIND_SOURCE, COOKIE_KIND_DESTINATION, COOKIE_KIND_RESULT,
  };

  /* an empty buffer still needs a valid pointer */
  if (size == 0)
    data = (const uint8_t *) "";
  for (gsize i = 0; i < G_N_ELEMENTS (kinds); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(Cookie) cookie = cookie_parse ((const char *) data, size, kinds[i], &error);

      if (cookie == NULL)
        {
          FUZZ_CHECK (error != NULL, "cookie_parse failed without an error");
          FUZZ_CHECK (g_error_matches (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE),
                      "cookie_parse failed with another error than BLKMIG_ERROR_COOKIE");
          continue;
        }
      FUZZ_CHECK (error == NULL, "cookie_parse succeeded and set an error");
      FUZZ_CHECK (cookie->kind >= kinds[i], "cookie_parse returned a lesser kind");
      check_round_trip (cookie, kinds[i]);
    }
  return 0;
}
