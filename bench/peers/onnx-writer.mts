/**
 * A small hand-written protobuf writer for the few ONNX messages the bench needs (ModelProto, GraphProto,
 * NodeProto, AttributeProto, TensorProto, ValueInfoProto), so that onnxruntime-node runs the very weights
 * kiln runs without a Python export step or an `onnx` package. Field numbers are those of onnx/onnx.proto3.
 * Every tensor is float32; initializers go in `raw_data` (little-endian, which is what a Float32Array holds
 * on every platform Node runs on).
 */
import type { CnnWeights, MlpWeights } from './shapes.mjs';
import { CNN, MLP } from './shapes.mjs';

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

/** A growable byte buffer with protobuf's primitive encodings. */
class Writer {
  private buf = new Uint8Array(256);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private byte(b: number): void {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  /** Unsigned varint of a non-negative integer up to 2^53 (every size and enum here). */
  private varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`onnx-writer: varint ${v} is not a non-negative safe integer`);
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.byte(v);
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  int(field: number, v: number): this {
    this.tag(field, WIRE_VARINT);
    this.varint(v);
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32);
    this.reserve(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, v, true);
    this.len += 4;
    return this;
  }

  bytes(field: number, b: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, m: Writer): this {
    return this.bytes(field, m.finish());
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

const FLOAT = 1; // TensorProto.DataType.FLOAT

export type Attr = { name: string } & ({ int: number } | { float: number } | { ints: number[] });

export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Attr[];
}

export interface OnnxInitializer {
  name: string;
  dims: number[];
  data: Float32Array;
}

export interface OnnxValue {
  name: string;
  dims: number[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxInitializer[];
  inputs: OnnxValue[];
  outputs: OnnxValue[];
}

function attribute(a: Attr): Writer {
  const w = new Writer().string(1, a.name);
  // AttributeProto.type (field 20): FLOAT = 1, INT = 2, INTS = 7
  if ('int' in a) w.int(3, a.int).int(20, 2);
  else if ('float' in a) w.float(2, a.float).int(20, 1);
  else {
    for (const v of a.ints) w.int(8, v);
    w.int(20, 7);
  }
  return w;
}

function tensorProto(t: OnnxInitializer): Writer {
  const expected = t.dims.reduce((p, d) => p * d, 1);
  if (t.data.length !== expected)
    throw new Error(`onnx-writer: initializer ${t.name} has ${t.data.length} values, dims [${t.dims}] need ${expected}`);
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, FLOAT).string(8, t.name);
  return w.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

function valueInfo(v: OnnxValue): Writer {
  const shape = new Writer();
  for (const d of v.dims) shape.message(1, new Writer().int(1, d)); // Dimension.dim_value
  const tensorType = new Writer().int(1, FLOAT).message(2, shape);
  return new Writer().string(1, v.name).message(2, new Writer().message(1, tensorType));
}

/** Serialise a float32 graph as an ONNX ModelProto (IR version 8, default-domain opset 13). */
export function encodeModel(g: OnnxGraph): Uint8Array {
  const graph = new Writer();
  g.nodes.forEach((n, i) => {
    const node = new Writer();
    for (const x of n.inputs) node.string(1, x);
    for (const y of n.outputs) node.string(2, y);
    node.string(3, `${n.op.toLowerCase()}_${i}`).string(4, n.op);
    for (const a of n.attrs ?? []) node.message(5, attribute(a));
    graph.message(1, node);
  });
  graph.string(2, g.name);
  for (const t of g.initializers) graph.message(5, tensorProto(t));
  for (const v of g.inputs) graph.message(11, valueInfo(v));
  for (const v of g.outputs) graph.message(12, valueInfo(v));
  return new Writer()
    .int(1, 8) // ir_version
    .string(2, 'kiln-bench') // producer_name
    .message(7, graph)
    .message(8, new Writer().string(1, '').int(2, 13)) // opset_import: ai.onnx 13
    .finish();
}

/** C = A·B with both operands fed at run time (as kiln's `ops.matmul(a, b)` gets them). */
export function matmulModel(n: number): Uint8Array {
  return encodeModel({
    name: `matmul_${n}`,
    nodes: [{ op: 'MatMul', inputs: ['a', 'b'], outputs: ['c'] }],
    initializers: [],
    inputs: [
      { name: 'a', dims: [n, n] },
      { name: 'b', dims: [n, n] },
    ],
    outputs: [{ name: 'c', dims: [n, n] }],
  });
}

/** Linear layers as Gemm(x, W, b, transB=1): W stays in PyTorch's [out, in] layout. */
export function mlpModel(w: MlpWeights): Uint8Array {
  const nodes: OnnxNode[] = [];
  const initializers: OnnxInitializer[] = [];
  let h = 'x';
  w.layers.forEach((l, i) => {
    initializers.push({ name: `fc${i}.weight`, dims: [l.outFeatures, l.inFeatures], data: l.weight });
    initializers.push({ name: `fc${i}.bias`, dims: [l.outFeatures], data: l.bias });
    const out = i === w.layers.length - 1 ? 'y' : `h${i}`;
    nodes.push({ op: 'Gemm', inputs: [h, `fc${i}.weight`, `fc${i}.bias`], outputs: [out], attrs: [{ name: 'transB', int: 1 }] });
    h = out;
    if (i < w.layers.length - 1) {
      nodes.push({ op: 'Relu', inputs: [h], outputs: [`${h}_relu`] });
      h = `${h}_relu`;
    }
  });
  const last = w.layers[w.layers.length - 1]!;
  return encodeModel({
    name: 'mlp',
    nodes,
    initializers,
    inputs: [{ name: 'x', dims: [MLP.batch, w.layers[0]!.inFeatures] }],
    outputs: [{ name: 'y', dims: [MLP.batch, last.outFeatures] }],
  });
}

/** 3× (Conv 3×3 pad 1 → BatchNormalization → Relu), MaxPool 2, Flatten (NCHW order), Gemm. */
export function cnnModel(w: CnnWeights): Uint8Array {
  const nodes: OnnxNode[] = [];
  const initializers: OnnxInitializer[] = [];
  let h = 'x';
  w.convs.forEach((c, i) => {
    const p = `conv${i}`;
    initializers.push(
      { name: `${p}.weight`, dims: [c.outChannels, c.inChannels, 3, 3], data: c.weight },
      { name: `${p}.bias`, dims: [c.outChannels], data: c.bias },
      { name: `${p}.bn.gamma`, dims: [c.outChannels], data: c.gamma },
      { name: `${p}.bn.beta`, dims: [c.outChannels], data: c.beta },
      { name: `${p}.bn.mean`, dims: [c.outChannels], data: c.runningMean },
      { name: `${p}.bn.var`, dims: [c.outChannels], data: c.runningVar },
    );
    nodes.push(
      {
        op: 'Conv',
        inputs: [h, `${p}.weight`, `${p}.bias`],
        outputs: [`${p}.out`],
        attrs: [
          { name: 'kernel_shape', ints: [3, 3] },
          { name: 'pads', ints: [1, 1, 1, 1] },
          { name: 'strides', ints: [1, 1] },
        ],
      },
      {
        op: 'BatchNormalization',
        inputs: [`${p}.out`, `${p}.bn.gamma`, `${p}.bn.beta`, `${p}.bn.mean`, `${p}.bn.var`],
        outputs: [`${p}.bn.out`],
        attrs: [{ name: 'epsilon', float: w.eps }],
      },
      { op: 'Relu', inputs: [`${p}.bn.out`], outputs: [`${p}.relu`] },
    );
    h = `${p}.relu`;
  });
  initializers.push(
    { name: 'fc.weight', dims: [CNN.classes, CNN.flat], data: w.fcWeight },
    { name: 'fc.bias', dims: [CNN.classes], data: w.fcBias },
  );
  nodes.push(
    {
      op: 'MaxPool',
      inputs: [h],
      outputs: ['pool'],
      attrs: [
        { name: 'kernel_shape', ints: [2, 2] },
        { name: 'strides', ints: [2, 2] },
      ],
    },
    { op: 'Flatten', inputs: ['pool'], outputs: ['flat'], attrs: [{ name: 'axis', int: 1 }] },
    { op: 'Gemm', inputs: ['flat', 'fc.weight', 'fc.bias'], outputs: ['y'], attrs: [{ name: 'transB', int: 1 }] },
  );
  return encodeModel({
    name: 'cnn',
    nodes,
    initializers,
    inputs: [{ name: 'x', dims: [CNN.batch, CNN.channels[0]!, CNN.hw, CNN.hw] }],
    outputs: [{ name: 'y', dims: [CNN.batch, CNN.classes] }],
  });
}
