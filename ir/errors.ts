// Errors the CLI turns into exit codes: InputError -> 2 (bad input or usage), CheckError -> 1.

/** Bad input: unreadable, malformed or unsafe model files, bad options. One line, names the file. */
export class InputError extends Error {
  constructor(message: string, readonly file?: string) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'InputError';
  }
}

/** The work ran but a check failed (verification below threshold, unsupported op on a target). */
export class CheckError extends Error {
  constructor(message: string, readonly details: string[] = []) {
    super(message);
    this.name = 'CheckError';
  }
}
