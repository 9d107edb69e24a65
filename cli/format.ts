// Terminal formatting shared by commands: aligned columns, byte sizes, shapes.
import type { Dim } from '../ir/index.js';

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024,
    u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function fmtShape(shape: readonly Dim[] | null): string {
  return shape ? `[${shape.map((d) => d ?? '?').join(', ')}]` : '[rank unknown]';
}

/** Rows padded into columns; `right[i]` right-aligns column i. */
export function table(rows: string[][], indent = '', right: boolean[] = []): string[] {
  const widths: number[] = [];
  for (const r of rows)
    r.forEach((c, i) => {
      widths[i] = Math.max(widths[i] ?? 0, c.length);
    });
  return rows.map((r) => `${indent}${r.map((c, i) => (right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ')}`.trimEnd());
}
