import { KilnError } from '../../errors.js';
import { noGrad } from '../../runtime/autograd.js';
import * as nn from '../../runtime/nn/index.js';
import { Module } from '../../runtime/nn/module.js';
import { Parameter } from '../../runtime/nn/parameter.js';
import { onesLike, zerosLike } from '../../runtime/ops/index.js';
import type { Tensor } from '../../runtime/tensor.js';
import { Graph } from '../graph.js';
import { GraphModule } from '../graph-module.js';
import type { Node } from '../node.js';
import { symbolicTrace } from '../tracer.js';

/**
 * torch.fx.experimental.optimization.fuse: fold each BatchNorm that directly follows a convolution into
 * the convolution's weights (eval mode only). A BN is kept when the conv's output has other users, or when
 * it does not track running statistics. The input module is not changed: the result holds a new conv
 * where one was fused and shares every other submodule.
 */
type Conv = nn.Conv1d | nn.Conv2d;
type BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d;

const PATTERNS: readonly [new (...a: never[]) => Conv, new (...a: never[]) => BatchNorm][] = [
  [nn.Conv1d, nn.BatchNorm1d],
  [nn.Conv2d, nn.BatchNorm2d],
];

/** The conv/bn weights folded together: w·γ/√(σ²+ε) and (b − μ)·γ/√(σ²+ε) + β. */
export function fuseConvBnWeights(
  convW: Tensor,
  convB: Tensor | null,
  mean: Tensor,
  variance: Tensor,
  eps: number,
  bnW: Tensor | null,
  bnB: Tensor | null,
): [Tensor, Tensor] {
  return noGrad(() => {
    const gamma = bnW ?? onesLike(mean);
    const beta = bnB ?? zerosLike(mean);
    const bias = convB ?? zerosLike(mean);
    const invStd = onesLike(variance).div(variance.add(eps).sqrt());
    const scale = gamma.mul(invStd);
    const w = convW.mul(scale.reshape([-1, ...Array(convW.ndim - 1).fill(1)]));
    const b = bias.sub(mean).mul(invStd).mul(gamma).add(beta);
    return [w, b];
  });
}

/** A new convolution of the same shape whose weights include the BatchNorm (both must be in eval mode). */
export function fuseConvBnEval(conv: Conv, bn: BatchNorm): Conv {
  if (conv.training || bn.training) throw new KilnError('Fusion only for eval!');
  if (!bn.running_mean || !bn.running_var) throw new KilnError(`fuse: ${bn.constructor.name} has no running statistics to fold`);
  const Ctor = conv.constructor as new (i: number, o: number, k: never, opts: object) => Conv;
  const fused = new Ctor(conv.inChannels, conv.outChannels, conv.kernelSize as never, {
    stride: conv.stride,
    padding: conv.padding,
    dilation: conv.dilation,
    groups: conv.groups,
    bias: true,
  });
  const [w, b] = fuseConvBnWeights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias);
  fused.weight = new Parameter(w, conv.weight.requiresGrad);
  fused.bias = new Parameter(b, conv.weight.requiresGrad);
  return fused.eval();
}

function moduleAt(gm: GraphModule, node: Node | undefined): Module | undefined {
  return node?.op === 'call_module' ? (gm.resolveTarget(node.target as string) as Module) : undefined;
}

export function fuse(model: Module): GraphModule {
  const gm = model instanceof GraphModule ? model : symbolicTrace(model);
  const graph = new Graph();
  graph.output(graph.graphCopy(gm.graph, new Map()) as never);
  const replaced = new Map<string, Module>();
  for (const [ConvClass, BnClass] of PATTERNS) {
    for (const node of graph.nodes) {
      const bn = moduleAt(gm, node);
      const first = node.args[0] as Node | undefined;
      const conv = moduleAt(gm, first?.op === 'call_module' ? first : undefined);
      if (!(bn instanceof BnClass) || !(conv instanceof ConvClass) || replaced.has(first!.target as string)) continue;
      if (first!.users.size > 1) continue; // the conv's output is read elsewhere
      if (!bn.running_mean) continue; // no running statistics to fold
      replaced.set(first!.target as string, fuseConvBnEval(conv, bn));
      node.replaceAllUsesWith(first!);
      graph.eraseNode(node);
    }
  }
  const targets: Record<string, unknown> = {};
  for (const n of graph.nodes) {
    if (n.op !== 'call_module' && n.op !== 'get_attr') continue;
    const path = n.target as string;
    targets[path] = replaced.get(path) ?? gm.resolveTarget(path);
  }
  const out = new GraphModule(targets, graph, gm.className);
  out.training = gm.training;
  return out;
}
