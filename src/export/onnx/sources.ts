import { ExportError } from '../errors.js';
import { exportProgram } from '../export-program.js';
import type { ExportedProgram } from '../exported-program.js';
import { inStateDict } from '../signature.js';
import { exprFromJSON } from '../symbolic/expr.js';
import { GraphModule } from '../../graph/graph-module.js';
import { nodesIn, type Argument, type Node } from '../../graph/node.js';
import type { TensorMeta } from '../../graph/shape-prop.js';
import { zeros } from '../../runtime/ops/creation.js';
import { Tensor } from '../../runtime/tensor.js';
import type { ConvertSource, InputDim } from './convert.js';

/** What toOnnx converts: an exported program (lifted state as initializers, dynamic dims as dim_params) or an fx GraphModule. */

/** `inputNames`: the ONNX names of the user inputs, in order (default: their placeholders' names). */
export function programSource(ep: ExportedProgram, inputNames?: readonly string[]): ConvertSource {
  const specs = new Map(ep.graphSignature.inputSpecs.map((s) => [s.name, s]));
  const userChecks = ep.parts.inputChecks.inputs.flatMap((c) => (c.kind === 'tensor' ? [c] : []));
  const dimName = (symbol: string) => ep.parts.dimNames?.get(symbol) ?? symbol;
  const userIndex = new Map(ep.graphSignature.inputSpecs.filter((s) => s.kind === 'USER_INPUT').map((s, i) => [s.name, i]));
  return {
    graph: ep.graphModule.graph,
    graphName: 'kiln_exported_program',
    placeholder(node) {
      const spec = specs.get(node.name);
      if (!spec) throw new ExportError(`toOnnx: placeholder '${node.name}' is not in the program's signature`);
      if (spec.kind !== 'USER_INPUT') {
        const tensor = (inStateDict(spec) ? ep.stateDict : ep.constants)[spec.target!];
        if (!tensor) throw new ExportError(`toOnnx: no tensor for ${spec.kind.toLowerCase()} '${spec.target}' (placeholder ${node.name})`);
        return { kind: 'initializer', name: spec.target!, tensor };
      }
      const check = userChecks[userIndex.get(node.name)!];
      const meta = node.meta.tensorMeta as TensorMeta | undefined;
      if (!check || !meta) throw new ExportError(`toOnnx: user input '${node.name}' has no recorded shape`);
      // a dynamic dim's dim_param is its size expression over the Dims' names (batch, 2*n + 1, …; s0 where unnamed)
      const dims = check.shape.map((d, i): InputDim =>
        typeof d === 'number' ? d : { param: exprFromJSON(d).toString(dimName), hint: meta.shape[i]! },
      );
      return { kind: 'input', dtype: meta.dtype, dims, name: inputNames?.[userIndex.get(node.name)!] };
    },
    getAttr(node) {
      throw new ExportError(`toOnnx: an exported program has no get_attr nodes, found '${node.name}'`);
    },
    outputs(outputNode) {
      const outs = outputNode.args[0] as readonly (Node | null)[];
      return ep.graphSignature.outputSpecs.flatMap((spec, i) => {
        if (spec.kind === 'USER_OUTPUT') {
          const n = outs[i];
          if (!n) throw new ExportError(`toOnnx: user output ${i} is not a tensor (ONNX outputs are tensors)`);
          return [n];
        }
        const what = spec.kind === 'BUFFER_MUTATION' ? `updates buffer '${spec.target}'` : `writes into its input '${spec.target}'`;
        throw new ExportError(
          `toOnnx: the program ${what}; an ONNX inference graph has no state to update (export the model in eval mode, without in-place writes to inputs)`,
        );
      });
    },
  };
}

/**
 * A GraphModule: op calls and get_attr (parameters, buffers and constants become initializers) are converted as they
 * are, with the input shapes from its placeholders' `tensorMeta` (ShapeProp), all static. Submodule calls are traced
 * into op calls first, by exporting the module on inputs of those shapes.
 */
export function graphModuleSource(gm: GraphModule): ConvertSource {
  const placeholders = gm.graph.nodes.filter((n) => n.op === 'placeholder');
  const metaOf = (n: Node): TensorMeta => {
    const meta = n.meta.tensorMeta as TensorMeta | undefined;
    if (!meta || !Array.isArray(meta.shape))
      throw new ExportError(
        `toOnnx: GraphModule input '${n.name}' has no tensorMeta; run new ShapeProp(gm).propagate(...examples) first, or export an ExportedProgram`,
      );
    return meta;
  };
  if (gm.graph.nodes.some((n) => n.op === 'call_module')) {
    const examples = placeholders.map((n) => zeros(metaOf(n).shape as number[], { dtype: metaOf(n).dtype }));
    // the GraphModule's input names, not the ones its generated forward gives the program
    return programSource(
      exportProgram(gm, examples),
      placeholders.map((n) => n.name),
    );
  }
  return {
    graph: gm.graph,
    graphName: gm.className,
    placeholder(node) {
      const meta = metaOf(node);
      return { kind: 'input', dtype: meta.dtype, dims: [...meta.shape] };
    },
    getAttr(node) {
      const tensor = gm.resolveTarget(node.target as string);
      if (!(tensor instanceof Tensor))
        throw new ExportError(`toOnnx: get_attr '${String(node.target)}' (node '${node.name}') is not a tensor`);
      return { name: node.target as string, tensor };
    },
    outputs(outputNode) {
      return nodesIn(outputNode.args[0] as Argument);
    },
  };
}
