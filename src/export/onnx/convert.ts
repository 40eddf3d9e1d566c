import { ExportError } from '../errors.js';
import type { Graph } from '../../graph/graph.js';
import { mapArg, targetName, type Argument, type Node } from '../../graph/node.js';
import type { DType } from '../../runtime/dtype.js';
import { OPS } from '../../runtime/op.js';
import { bindForRule, inferMeta, isOpName, type OpMeta, type TensorMeta } from '../../runtime/shape-rules/index.js';
import type { Tensor } from '../../runtime/tensor.js';
import { OnnxBuilder } from './builder.js';
import type { Emitted, Emitter } from './mapping.js';
import { ONNX_OPS } from './op-table.js';
import { elemTypeCode, onnx, type OnnxTypes } from './proto.js';
import { STATIC_ARITH, type StaticSize } from './static-sizes.js';
import { Unsupported, isValue, type SizeValue, type TensorValue, type Value } from './values.js';

/**
 * One walk over a kiln graph of op-table calls, writing the ONNX graph: placeholders become graph inputs or
 * initializers (as the source says), every op call goes through its ONNX_OPS entry with its output followed by the
 * op's shape rule (so emitters know which sizes are static), shape arithmetic (`sym_size`, `sym_add`, …) becomes
 * int64 tensor arithmetic, and `getitem` picks an output of a tuple-valued op.
 */

/** A dim of a graph input: a size, or a dim_param (a dynamic dim's name). */
export type InputDim = number | { readonly param: string; readonly hint: number };

export type Placeholder =
  | { readonly kind: 'input'; readonly dtype: DType; readonly dims: readonly InputDim[]; readonly name?: string }
  | { readonly kind: 'initializer'; readonly name: string; readonly tensor: Tensor };

export interface ConvertSource {
  readonly graph: Graph;
  readonly graphName: string;
  placeholder(node: Node): Placeholder;
  getAttr(node: Node): { name: string; tensor: Tensor };
  /** The graph's outputs that the ONNX model returns (the rest are refused with the reason). */
  outputs(outputNode: Node): readonly Node[];
}

export function convert(source: ConvertSource, opset: number): OnnxTypes.IModelProto {
  const b = new OnnxBuilder(opset);
  const values = new Map<Node, Value>();
  const inputs: OnnxTypes.IValueInfoProto[] = [];
  const fail = (node: Node, what: string, why: string): never => {
    throw new ExportError(`toOnnx: node '${node.name}': cannot export op ${what} to ONNX (opset ${opset}): ${why}`);
  };
  const initializer = (name: string, tensor: Tensor): TensorValue => {
    const onnxName = b.initializer(b.fresh(name), tensor.dtype, tensor.shape, tensor.data());
    return { kind: 'tensor', name: onnxName, dtype: tensor.dtype, shape: tensor.shape.map((s) => ({ hint: s, dynamic: false })) };
  };
  let outputNode: Node | undefined;
  for (const node of source.graph.nodes) {
    switch (node.op) {
      case 'placeholder': {
        if (node.users.size === 0) continue; // unused state (num_batches_tracked): no initializer
        const p = source.placeholder(node);
        if (p.kind === 'initializer') values.set(node, initializer(p.name, p.tensor));
        else {
          const name = b.claim(p.name ?? node.name);
          inputs.push(valueInfo(name, p.dtype, p.dims));
          const shape = p.dims.map((d) => (typeof d === 'number' ? { hint: d, dynamic: false } : { hint: d.hint, dynamic: true }));
          values.set(node, { kind: 'tensor', name, dtype: p.dtype, shape });
        }
        break;
      }
      case 'get_attr': {
        const { name, tensor } = source.getAttr(node);
        values.set(node, initializer(name, tensor));
        break;
      }
      case 'call_function':
      case 'call_method': {
        const name = targetName(node.target);
        const args = mapArg(node.args as Argument, (n) => valueOf(values, n)) as unknown[];
        const kwargs = mapArg(node.kwargs, (n) => valueOf(values, n)) as Record<string, unknown>;
        const builtin = BUILTINS[name];
        if (builtin) {
          try {
            const v = builtin(b, args);
            if (v !== undefined) values.set(node, v);
          } catch (e) {
            if (e instanceof Unsupported) fail(node, name, e.message);
            throw e;
          }
          break;
        }
        if (!isOpName(name) || !OPS.has(name)) fail(node, name, "it is not an op of kiln's op table");
        const opName = name as keyof typeof ONNX_OPS;
        const mapping = ONNX_OPS[opName];
        if ('notExportable' in mapping) fail(node, name, mapping.notExportable);
        const { emit } = mapping as { emit: Emitter };
        try {
          const out = inferMeta(STATIC_ARITH, opName, toMeta(args) as unknown[], toMeta(kwargs) as Record<string, unknown>);
          const bound = bindForRule(OPS.get(opName)!.schema, args, kwargs);
          values.set(node, wrap(emit({ b, out }, bound), out));
        } catch (e) {
          if (e instanceof Unsupported) fail(node, name, e.message);
          throw e;
        }
        break;
      }
      case 'call_module':
        fail(
          node,
          `call_module '${String(node.target)}'`,
          'submodule calls must be traced into op calls first (give the graph input shapes: ShapeProp)',
        );
        break;
      case 'output':
        outputNode = node;
        break;
    }
  }
  const outputs = source.outputs(outputNode!).map((n, i, all) => {
    const v = valueOf(values, n);
    if (v.kind !== 'tensor') throw new ExportError(`toOnnx: output ${i} ('${n.name}') is not a tensor`);
    const name = b.fresh(all.length === 1 ? 'output' : `output_${i}`);
    b.nodes.push({ opType: 'Identity', name: b.fresh('Identity_output'), input: [v.name], output: [name] });
    return valueInfo(
      name,
      v.dtype,
      v.shape?.map((s) => (s.dynamic ? { param: '', hint: s.hint } : s.hint)),
    );
  });
  return onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'kiln',
    opsetImport: [{ domain: '', version: opset }],
    graph: { name: source.graphName, node: b.nodes, initializer: b.initializers, input: inputs, output: outputs },
  });
}

function valueOf(values: Map<Node, Value>, n: Node): Value {
  const v = values.get(n);
  if (v === undefined) throw new ExportError(`toOnnx: node '${n.name}' is read before it has a value`);
  return v;
}

/** Arguments with each value replaced by what shape rules take: tensors by `{ shape, dtype }`, sizes by their StaticSize. */
function toMeta(a: unknown): unknown {
  if (isValue(a)) {
    if (a.kind === 'tensor') {
      if (a.shape === undefined) throw new Unsupported('its input shapes are not known');
      return { shape: a.shape, dtype: a.dtype };
    }
    if (a.kind === 'size') return a.size;
    throw new Unsupported('a tuple passed to an op as it is');
  }
  if (Array.isArray(a)) return a.map(toMeta);
  if (a !== null && typeof a === 'object' && Object.getPrototypeOf(a) === Object.prototype)
    return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, toMeta(v)]));
  return a;
}

function wrap(emitted: Emitted, out: OpMeta<StaticSize>): Value {
  if (typeof emitted === 'string') {
    const m = out as TensorMeta<StaticSize>;
    return { kind: 'tensor', name: emitted, dtype: m.dtype, shape: m.shape };
  }
  const metas = out as readonly (TensorMeta<StaticSize> | null)[];
  return {
    kind: 'tuple',
    items: emitted.map((e, i) => {
      if (typeof e !== 'string') return e;
      const m = metas[i];
      if (!m) return { kind: 'missing', why: 'the op gives no tensor there' } as const;
      return { kind: 'tensor', name: e, dtype: m.dtype, shape: m.shape } as const;
    }),
  };
}

function valueInfo(name: string, dtype: DType, dims: readonly InputDim[] | undefined): OnnxTypes.IValueInfoProto {
  const shape =
    dims === undefined
      ? undefined
      : { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : d.param ? { dimParam: d.param } : {})) };
  return { name, type: { tensorType: { elemType: elemTypeCode(dtype), ...(shape ? { shape } : {}) } } };
}

// ---------------------------------------------------------------------------------------------------------------
// Graph builtins: tuple items and shape arithmetic.

type Builtin = (b: OnnxBuilder, args: readonly unknown[]) => Value | undefined;

function sizeOf(v: unknown): SizeValue {
  if (typeof v === 'number') return { kind: 'size', size: { hint: v, dynamic: false } };
  if (isValue(v) && v.kind === 'size') return v;
  throw new Unsupported(`expected a size, got ${isValue(v) ? `a ${v.kind}` : typeof v}`);
}

function sizeArith(type: 'Add' | 'Sub' | 'Mul' | 'Div', rule: (a: StaticSize, b: StaticSize) => StaticSize): Builtin {
  return (b, [x, y]) => {
    const [p, q] = [sizeOf(x), sizeOf(y)];
    const size = rule(p.size, q.size);
    return size.dynamic ? { kind: 'size', size, name: b.one(type, [b.sizeTensor(p), b.sizeTensor(q)]) } : { kind: 'size', size };
  };
}

const BUILTINS: Record<string, Builtin | undefined> = {
  getitem: (_b, [tuple, index]) => {
    if (!isValue(tuple) || tuple.kind !== 'tuple' || typeof index !== 'number')
      throw new Unsupported('getitem reads an item of an op with several outputs only');
    const item = tuple.items[index];
    if (item === undefined) throw new Unsupported(`output ${index} does not exist`);
    if (item.kind === 'missing') throw new Unsupported(`it reads output ${index}, which is not exported: ${item.why}`);
    return item;
  },
  sym_size: (b, [t, dim]) => {
    const x = t as TensorValue;
    if (x.shape === undefined) throw new Unsupported('the input shape is not known');
    const d = (dim as number) < 0 ? (dim as number) + x.shape.length : (dim as number);
    const size = x.shape[d]!;
    return size.dynamic ? { kind: 'size', size, name: b.shapeSlice(x.name, d, d + 1) } : { kind: 'size', size };
  },
  sym_add: sizeArith('Add', STATIC_ARITH.add),
  sym_sub: sizeArith('Sub', STATIC_ARITH.sub),
  sym_mul: sizeArith('Mul', STATIC_ARITH.mul),
  // sizes are non-negative, where ONNX's truncating integer Div is floor division
  sym_floordiv: (b, [x, y]) => {
    if (typeof y !== 'number') throw new Unsupported('floor division by a dynamic size');
    return sizeArith('Div', (p) => STATIC_ARITH.floorDiv(p, y))(b, [x, y]);
  },
  // grad mode has no meaning in an inference graph
  _set_grad_enabled: () => undefined,
};
