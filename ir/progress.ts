// Progress events from the library layers: `task` names a bar (stable while it runs), `done` of
// `total` its counts, `detail` the item at hand. The library only calls it; cli draws it.
export type Progress = (task: string, done?: number, total?: number, detail?: string) => void;
