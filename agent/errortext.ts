// What a caught value says, as text: the one home of this rule for the core and every input
// (a plugin may import this module). A thrown value need not be an Error (a string, a rejected
// promise's reason), so each helper takes `unknown`.

/** The error's message; a value that is no Error, as a string. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The error's message, or its name when the message is empty (a bare `new Error()` says at least "Error"). */
export function errorMessageOrName(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** The first line of errorMessage(err): for one-line reasons, where a runtime's message runs on over several lines. */
export function errorFirstLine(err: unknown): string {
  return errorMessage(err).split("\n")[0]!;
}
