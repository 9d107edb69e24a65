// Errors the CLI turns into exit codes: InputError -> 2 (bad input or usage), CheckError -> 1.

/** Bad input: unreadable, malformed or unsafe model files, bad options. One line, names the file. */
export class InputError extends Error {
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'InputError';
  }
}

/** The work ran but a check failed (verification below threshold, unsupported op on a target). */
export class CheckError extends Error {
  constructor(
    message: string,
    readonly details: string[] = [],
  ) {
    super(message);
    this.name = 'CheckError';
  }
}

/** A defect of edgec (not of the input): an unexpected exception, kept as `cause`, with where it
 * happened. The CLI reports it as "internal error" with exit 70 so a bug never reads as bad input. */
export class InternalError extends Error {
  /** Pass, sub-model, ... outermost last: `pass 'cleanup'`, `sub-model 'decoder'`. */
  readonly where: string[];
  constructor(cause: unknown, where: string) {
    super((cause as Error)?.message ?? String(cause), { cause });
    this.name = 'InternalError';
    this.where = [where];
  }
  /** Add an outer context (the sub-model a pass ran on) as the error travels up. */
  within(where: string): this {
    if (!this.where.includes(where)) this.where.push(where);
    return this;
  }
}

/** The operating system refused an operation (disk full, permission, read-only file system):
 * neither bad input nor a defect. Node reports these as Errors with an errno `code` and `syscall`. */
export function isSystemError(e: unknown): e is NodeJS.ErrnoException & { code: string } {
  const x = e as NodeJS.ErrnoException;
  return !!x && typeof x === 'object' && typeof x.code === 'string' && /^E[A-Z0-9]+$/.test(x.code) && typeof x.syscall === 'string';
}

/** Errors that already say what is wrong (input, check, environment) pass through; anything else
 * is a defect and gets wrapped with `where`. An InternalError gains `where` as outer context. */
export function asInternal(e: unknown, where: string): unknown {
  if (e instanceof InternalError) return e.within(where);
  if (e instanceof InputError || e instanceof CheckError || isSystemError(e)) return e;
  if (e instanceof Error && (e as { expected?: boolean }).expected) return e;
  return new InternalError(e, where);
}
