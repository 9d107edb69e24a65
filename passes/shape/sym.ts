// Arithmetic on dims that may be symbolic. A symbolic dim is a string: a name from the model
// ("batch") or an expression over names ("height/14", "2*seq"). '/' is floor division. Every
// result is exact or null; nothing here guesses.
import type { Dim } from '../../ir/index.js';

const ATOM = /^[A-Za-z_][\w.:]*$|^-?\d+$/;
const wrap = (d: number | string) => (typeof d === 'number' || ATOM.test(d) ? String(d) : `(${d})`);

export function known(d: Dim | undefined): d is number {
  return typeof d === 'number' && d >= 0;
}

/** Split a dim into linear terms (term -> coefficient, '' for the constant) at top level. */
function terms(d: number | string): Map<string, number> {
  const out = new Map<string, number>();
  const put = (t: string, k: number) => out.set(t, (out.get(t) ?? 0) + k);
  if (typeof d === 'number') {
    put('', d);
    return out;
  }
  let depth = 0,
    start = d.startsWith('-') ? 1 : 0,
    sign = d.startsWith('-') ? -1 : 1;
  const flush = (end: number) => {
    const raw = d.slice(start, end).trim();
    if (!raw) return;
    if (/^\d+$/.test(raw)) {
      put('', sign * Number(raw));
      return;
    }
    const m = /^(\d+)\*(.+)$/.exec(raw);
    // 2*x/3 is floor(2x/3), not 2*floor(x/3): only a bare product splits off its coefficient.
    if (m && !/[*/]/.test(m[2]!.replace(/\([^()]*\)/g, ''))) put(m[2]!, sign * Number(m[1]));
    else put(raw, sign);
  };
  for (let i = 0; i < d.length; i++) {
    const ch = d[i]!;
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (depth === 0 && (ch === '+' || ch === '-') && i >= start && i > 0) {
      flush(i);
      sign = ch === '+' ? 1 : -1;
      start = i + 1;
    }
  }
  flush(d.length);
  return out;
}

function render(t: Map<string, number>): Dim {
  let s = '';
  for (const [term, k] of t) {
    if (!term || k === 0) continue;
    const body = Math.abs(k) === 1 ? term : `${Math.abs(k)}*${wrap(term)}`;
    s += s ? `${k < 0 ? '-' : '+'}${body}` : `${k < 0 ? '-' : ''}${body}`;
  }
  const c = t.get('') ?? 0;
  if (!s) return c;
  if (c) s += c < 0 ? `${c}` : `+${c}`;
  return s;
}

function linear(a: number | string, b: number | string, sign: 1 | -1): Dim {
  const t = terms(a);
  for (const [term, k] of terms(b)) t.set(term, (t.get(term) ?? 0) + sign * k);
  return render(t);
}

export function add(a: Dim, b: Dim): Dim {
  if (a === null || b === null) return null;
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  return linear(a, b, 1);
}

export function sub(a: Dim, b: Dim): Dim {
  if (a === null || b === null) return null;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return linear(a, b, -1);
}

export function mul(a: Dim, b: Dim): Dim {
  if (a === null || b === null) return null;
  if (typeof a === 'number' && typeof b === 'number') return a * b;
  if (a === 1) return b;
  if (b === 1) return a;
  if (a === 0 || b === 0) return 0;
  // Numbers first keeps equal products equal as strings.
  if (typeof b === 'number') return `${b}*${wrap(a)}`;
  return `${wrap(a)}*${wrap(b)}`;
}

/** Floor division. */
export function div(a: Dim, b: Dim): Dim {
  if (a === null || b === null || b === 0) return null;
  if (typeof a === 'number' && typeof b === 'number') return Math.floor(a / b);
  // Dims are non-negative; a negative divisor would make floor and truncation disagree.
  if (typeof b === 'number' && b < 0) return null;
  if (b === 1) return a;
  if (a === b) return 1;
  if (typeof a === 'string') {
    const wb = wrap(b);
    if (a.startsWith(`${wb}*`) && ATOM.test(a.slice(wb.length + 1))) return a.slice(wb.length + 1);
    if (a.endsWith(`*${wb}`) && ATOM.test(a.slice(0, -wb.length - 1))) return a.slice(0, -wb.length - 1);
  }
  return `${wrap(a)}/${wrap(b)}`;
}

export function product(dims: Dim[]): Dim {
  return dims.reduce<Dim>((p, d) => mul(p, d), 1);
}

/** Numpy broadcasting of one position; unknowns resolve when a known dim > 1 decides. */
function bcastDim(ds: Dim[]): Dim {
  const rest = ds.filter((d) => d !== 1);
  if (!rest.length) return 1;
  const nums = rest.filter((d): d is number => typeof d === 'number');
  if (nums.length) return nums.every((n) => n === nums[0]) ? nums[0]! : null;
  if (rest.some((d) => d === null)) return null;
  return rest.every((d) => d === rest[0]) ? rest[0]! : null;
}

export function broadcast(shapes: Dim[][]): Dim[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) out.push(bcastDim(shapes.map((s) => (s.length - rank + i >= 0 ? s[s.length - rank + i]! : 1))));
  return out;
}

/** Product of dims split into a number and a multiset of symbolic factors (null if unknown). */
function factors(dims: Dim[]): { n: number; syms: string[] } | null {
  let n = 1;
  const syms: string[] = [];
  for (const d of dims) {
    if (d === null) return null;
    if (typeof d === 'number') n *= d;
    else syms.push(d);
  }
  return { n, syms };
}

/** total(dims) / product(others), exact when the symbols cancel. */
export function quotient(dims: Dim[], others: Dim[]): Dim {
  const a = factors(dims),
    b = factors(others);
  if (!a || !b || b.n === 0 || a.n % b.n !== 0) return null;
  const left = [...a.syms];
  for (const s of b.syms) {
    const i = left.indexOf(s);
    if (i < 0) return null;
    left.splice(i, 1);
  }
  return left.reduce<Dim>((p, s) => mul(p, s), a.n / b.n);
}

/** Value of a dim under symbol bindings (null when a symbol is unbound); '/' floors. */
export function evaluateDim(d: Dim, bind: Record<string, number>): number | null {
  if (d === null || typeof d === 'number') return d;
  const toks = d.match(/[A-Za-z_][\w.:]*|\d+|[-+*/()]/g) ?? [];
  let i = 0;
  const atom = (): number | null => {
    const t = toks[i++];
    if (t === '(') {
      const v = sum();
      i++;
      return v;
    }
    if (t === '-') {
      const v = atom();
      return v === null ? null : -v;
    }
    if (t !== undefined && /^\d+$/.test(t)) return Number(t);
    return t !== undefined && t in bind ? bind[t]! : null;
  };
  const prod = (): number | null => {
    let v = atom();
    while (toks[i] === '*' || toks[i] === '/') {
      const op = toks[i++];
      const r = atom();
      v = v === null || r === null ? null : op === '*' ? v * r : r === 0 ? null : Math.floor(v / r);
    }
    return v;
  };
  const sum = (): number | null => {
    let v = prod();
    while (toks[i] === '+' || toks[i] === '-') {
      const op = toks[i++];
      const r = prod();
      v = v === null || r === null ? null : op === '+' ? v + r : v - r;
    }
    return v;
  };
  // A plain name may contain characters the grammar does not know; bind it whole first.
  if (d in bind) return bind[d]!;
  const v = sum();
  return i === toks.length ? v : null;
}
