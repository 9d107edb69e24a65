// Structural validity of a model: every input defined before use, one producer per value,
// outputs produced, no cycles. Used by --verify-each and by tests after every pass.
import type { Model, Graph, Node } from '../ir/index.js';

export function validateModel(model: Model): string[] {
  const errs: string[] = [];
  validateGraph(model.graph, new Set(), errs);
  return errs;
}

function validateGraph(g: Graph, outer: Set<string>, errs: string[]): void {
  const defined = new Set<string>(outer);
  for (const v of g.inputs) defined.add(v.name);
  const inits = new Set(g.initializerNames);
  for (const n of inits) defined.add(n);
  const produced = new Set<string>();
  for (const n of g.nodes) {
    if (n.graph !== g) errs.push(`node '${n.name}' belongs to another graph`);
    n.inputs.forEach((v, i) => {
      if (!v) return;
      if (!defined.has(v.name)) errs.push(`node '${n.name}' (${n.opType}) input ${i} '${v.name}' is used before it is defined`);
      if (!v.uses.some((u) => u.node === n && u.index === i)) errs.push(`node '${n.name}' input '${v.name}' missing from its use list`);
    });
    for (const sg of n.subgraphs()) validateGraph(sg, defined, errs);
    for (const o of n.outputs) {
      if (!o) continue;
      if (produced.has(o.name) || inits.has(o.name) || g.inputs.includes(o)) errs.push(`value '${o.name}' is defined twice`);
      if (o.producer !== n) errs.push(`value '${o.name}' does not point back at its producer '${n.name}'`);
      produced.add(o.name);
      defined.add(o.name);
    }
  }
  for (const o of g.outputs) if (!defined.has(o.name)) errs.push(`graph output '${o.name}' is not produced`);
}

/** Stable identities of nodes for added/removed counts: object identity per node. */
export function countGraph(model: Model): { ids: Set<Node> } {
  const ids = new Set<Node>();
  for (const g of model.graph.allGraphs()) for (const n of g.nodes) ids.add(n);
  return { ids };
}
