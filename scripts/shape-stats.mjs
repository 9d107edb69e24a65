#!/usr/bin/env node
// The code's shape in numbers (issue 15's "Must show"): functions over 80 lines, producer-link
// writes outside ir/, `as` casts of pass options, the longest function, lines over 150 characters.
// Source and tests are counted apart. `--list` prints every long function and long line's place.
// Usage: node scripts/shape-stats.mjs [--list] [--json]
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const SKIP = new Set(['node_modules', 'dist', '.git', 'fixtures-out']);
const LONG_FUNCTION = 80;
const LONG_LINE = 150;

function tsFiles(dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(e.name) || e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) tsFiles(p, out);
    else if (/\.(ts|mts)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const isFunction = (n) => ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isArrowFunction(n)
  || ts.isFunctionExpression(n) || ts.isConstructorDeclaration(n) || ts.isGetAccessorDeclaration(n) || ts.isSetAccessorDeclaration(n);

/** A readable name: the declaration's, the variable or property it is assigned to, else the call it is passed to. */
function nameOf(n) {
  if (n.name && ts.isIdentifier(n.name)) return n.name.text;
  if (ts.isConstructorDeclaration(n)) return 'constructor';
  const p = n.parent;
  if (p && (ts.isVariableDeclaration(p) || ts.isPropertyAssignment(p) || ts.isPropertyDeclaration(p)) && p.name && ts.isIdentifier(p.name)) return p.name.text;
  if (p && ts.isCallExpression(p)) {
    const callee = p.expression;
    const c = ts.isPropertyAccessExpression(callee) ? callee.name.text : ts.isIdentifier(callee) ? callee.text : 'call';
    return `(callback of ${c})`;
  }
  return '(anonymous)';
}

const strip = (e) => (ts.isParenthesizedExpression(e) || ts.isNonNullExpression(e) ? strip(e.expression) : e);

/** The identifier an access chain starts from (`o.a.b`, `o['a']`), if any. */
function rootOf(e) {
  e = strip(e);
  while (ts.isPropertyAccessExpression(e) || ts.isElementAccessExpression(e)) e = strip(e.expression);
  return ts.isIdentifier(e) ? e.text : undefined;
}

/** Parameter names that hold pass options: run()'s second parameter, and parameters typed Options. */
function optionParams(fn) {
  const names = new Set();
  const params = fn.parameters ?? [];
  if (nameOf(fn) === 'run' && params[1] && ts.isIdentifier(params[1].name)) names.add(params[1].name.text);
  for (const p of params) {
    const t = p.type?.getText() ?? '';
    if (ts.isIdentifier(p.name) && /^(Options|OptionsOf<.*>)$/.test(t)) names.add(p.name.text);
  }
  return names;
}

function analyse(file) {
  const text = fs.readFileSync(file, 'utf8');
  const rel = path.relative(ROOT, file);
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const line = (pos) => sf.getLineAndCharacterOfPosition(pos).line + 1;
  const r = { file: rel, functions: [], producerWrites: [], optionCasts: [], longLines: [] };
  text.split('\n').forEach((l, i) => { if (l.length > LONG_LINE) r.longLines.push({ line: i + 1, length: l.length }); });
  const visit = (n, scopes) => {
    let inner = scopes;
    if (isFunction(n)) {
      const start = line(n.getStart(sf)), end = line(n.end);
      r.functions.push({ name: nameOf(n), line: start, lines: end - start + 1 });
      const own = optionParams(n);
      if (own.size) inner = [...scopes, own];
    }
    if (ts.isBinaryExpression(n) && n.operatorToken.kind === ts.SyntaxKind.EqualsToken) {
      const left = strip(n.left);
      if (ts.isPropertyAccessExpression(left) && left.name.text === 'producer') r.producerWrites.push({ line: line(n.getStart(sf)) });
    }
    if (ts.isAsExpression(n) && n.type.getText(sf) !== 'const') {
      const root = rootOf(n.expression);
      if (root && inner.some((s) => s.has(root))) r.optionCasts.push({ line: line(n.getStart(sf)), text: n.getText(sf).slice(0, 80) });
    }
    ts.forEachChild(n, (c) => visit(c, inner));
  };
  visit(sf, []);
  return r;
}

function summarise(results) {
  const fns = results.flatMap((r) => r.functions.map((f) => ({ ...f, file: r.file })));
  const long = fns.filter((f) => f.lines > LONG_FUNCTION).sort((a, b) => b.lines - a.lines);
  const longest = long[0] ?? [...fns].sort((a, b) => b.lines - a.lines)[0];
  const outsideIr = results.filter((r) => !r.file.startsWith(`ir${path.sep}`));
  return {
    files: results.length,
    functionsOver80: long.length,
    longestFunction: longest ? { name: longest.name, file: longest.file, line: longest.line, lines: longest.lines } : null,
    producerWritesOutsideIr: outsideIr.reduce((s, r) => s + r.producerWrites.length, 0),
    optionCasts: results.reduce((s, r) => s + r.optionCasts.length, 0),
    linesOver150: results.reduce((s, r) => s + r.longLines.length, 0),
    long,
    places: {
      producerWrites: outsideIr.flatMap((r) => r.producerWrites.map((w) => `${r.file}:${w.line}`)),
      optionCasts: results.flatMap((r) => r.optionCasts.map((c) => `${r.file}:${c.line} ${c.text}`)),
    },
  };
}

const args = process.argv.slice(2);
const all = tsFiles(ROOT).sort().map(analyse);
const isTest = (r) => r.file.startsWith(`test${path.sep}`);
const groups = { source: summarise(all.filter((r) => !isTest(r))), tests: summarise(all.filter(isTest)) };

if (args.includes('--json')) {
  process.stdout.write(`${JSON.stringify(groups, null, 2)}\n`);
} else {
  for (const [name, g] of Object.entries(groups)) {
    const lf = g.longestFunction;
    process.stdout.write(`${name} (${g.files} files)\n`
      + `  functions over ${LONG_FUNCTION} lines:      ${g.functionsOver80}\n`
      + `  longest function:             ${lf ? `${lf.lines} lines, ${lf.name} (${lf.file}:${lf.line})` : '-'}\n`
      + `  producer writes outside ir/:  ${g.producerWritesOutsideIr}\n`
      + `  \`as\` casts of pass options:   ${g.optionCasts}\n`
      + `  lines over ${LONG_LINE} characters:     ${g.linesOver150}\n`);
    if (args.includes('--list')) {
      for (const f of g.long) process.stdout.write(`    ${String(f.lines).padStart(4)}  ${f.file}:${f.line} ${f.name}\n`);
      for (const p of g.places.producerWrites) process.stdout.write(`    producer write ${p}\n`);
      for (const p of g.places.optionCasts) process.stdout.write(`    option cast ${p}\n`);
    }
  }
}
