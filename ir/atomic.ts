// Crash-safe replacement of artifacts. Everything is written to `<final>.tmp-<pid>` beside its
// destination; the commit then moves the previous files aside (`<final>.old-<pid>`), renames the
// new ones in with the anchor (the model file, or the artifact folder) last, and removes the old
// ones. A journal (`.edgec-commit-<pid>.json` in the destination's folder) lists the group, so a
// process killed at any point is undone or finished by the next edgec run that writes there:
// anchor present = committed (old copies go), anchor missing = not committed (old copies return).
import fs from 'node:fs';
import path from 'node:path';

/** Fault injection for the crash-safety tests: `EDGEC_CRASH_AT=<point>` SIGKILLs the process there. */
export function crashPoint(name: string): void {
  if (process.env.EDGEC_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
}

interface Journal {
  anchor: string;
  files: { final: string; hadOld: boolean }[];
}

const JOURNAL = /^\.edgec-commit-(\d+)\.json$/;
const LEFTOVER = /\.(tmp|old)-(\d+)$/;

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const rm = (p: string) => fs.rmSync(p, { recursive: true, force: true });
const exists = (p: string) => {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
};

/** Commit `files` (tmp -> final); the last entry is the anchor. Throws after undoing on failure.
 * `label` names the crash points (`<label>:old-moved`, ...). */
export function commitReplace(files: { tmp: string; final: string }[], label = 'commit'): void {
  if (!files.length) return;
  const pid = process.pid;
  const anchor = files[files.length - 1]!.final;
  const dir = path.dirname(anchor);
  const journalFile = path.join(dir, `.edgec-commit-${pid}.json`);
  const journal: Journal = { anchor, files: files.map((f) => ({ final: f.final, hadOld: exists(f.final) })) };
  fs.writeFileSync(journalFile, JSON.stringify(journal));
  const moved: string[] = [];
  try {
    // The anchor goes aside first and comes in last: while it is missing, nothing is committed.
    for (const f of [...journal.files].reverse()) {
      if (f.hadOld) {
        fs.renameSync(f.final, `${f.final}.old-${pid}`);
        moved.push(f.final);
      }
    }
    crashPoint(`${label}:old-moved`);
    for (const f of files) {
      fs.renameSync(f.tmp, f.final);
      if (f.final !== anchor) crashPoint(`${label}:partly-renamed`);
    }
  } catch (e) {
    undo(journal, pid);
    rm(journalFile);
    throw e;
  }
  crashPoint(`${label}:done`);
  for (const f of moved) rm(`${f}.old-${pid}`);
  rm(journalFile);
}

function undo(j: Journal, pid: number): void {
  for (const f of j.files) {
    const old = `${f.final}.old-${pid}`;
    if (exists(old)) {
      rm(f.final);
      fs.renameSync(old, f.final);
    } else if (!f.hadOld && f.final !== j.anchor) rm(f.final);
    rm(`${f.final}.tmp-${pid}`);
  }
}

/** Finish or undo the commits of dead edgec processes in `dir`, and remove their temp files
 * beside `dest` (the destination about to be written). */
export function recoverStale(dir: string, dest?: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const e of entries) {
    const m = JOURNAL.exec(e);
    if (!m || alive(Number(m[1]))) continue;
    const pid = Number(m[1]);
    try {
      const j = JSON.parse(fs.readFileSync(path.join(dir, e), 'utf8')) as Journal;
      // The anchor is present before anything moved aside, and again once all is renamed in.
      if (exists(j.anchor)) {
        for (const f of j.files) rm(`${f.final}.old-${pid}`);
      } else undo(j, pid);
    } catch {
      /* a journal cut short by the kill: nothing was moved yet */
    }
    rm(path.join(dir, e));
  }
  if (!dest) return;
  const base = path.basename(dest);
  for (const e of fs.readdirSync(dir)) {
    const m = LEFTOVER.exec(e);
    if (m && e.startsWith(base) && !alive(Number(m[2]))) rm(path.join(dir, e));
  }
}
