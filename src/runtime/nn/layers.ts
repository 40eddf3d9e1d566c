import { ShapeError, ValueError } from '../../errors.js';
import { noGrad } from '../autograd.js';
import { activeTrace } from '../dispatch.js';
import type { Eager, LayerForm } from '../lowering.js';
import type { Op } from '../op.js';
import * as O from '../ops/index.js';
import { pair } from '../ops/conv.js';
import { fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { checkBoolean, checkChoice, checkNumber, checkOptions } from '../validate.js';
import { kaimingUniform_, normal_, uniform_ } from './init.js';
import { Module } from './module.js';
import { Parameter } from './parameter.js';

/**
 * A layer's input check. Symbolic tracing hands layers proxies whose shapes are not numbers (a layer traced as
 * the root module, e.g. `compile(new nn.Conv2d(…))`): the check is skipped there, and the ops check at run time.
 */
function expectInput(x: Tensor, ok: (shape: readonly number[]) => boolean, message: (shape: string) => string): void {
  if (activeTrace?.symbolic && activeTrace.isTraced(x)) return;
  if (!ok(x.shape)) throw new ShapeError(message(fmt(x.shape)));
}

/** The op call a layer's forward makes: `run()` computes it, and the kernels lower `op` with `args` instead. */
export interface OpCall<R> {
  readonly op: Op<(...args: never[]) => unknown>;
  readonly args: readonly unknown[];
  run(): R;
}

function opCall<F extends (...args: never[]) => unknown>(op: Op<F>, ...args: Parameters<F>): OpCall<ReturnType<F>> {
  return { op: op as unknown as OpCall<unknown>['op'], args, run: () => (op as unknown as (...a: unknown[]) => ReturnType<F>)(...args) };
}

/**
 * A standard layer: its forward is one op call, which `functional` declares, so that the kernels lower that op
 * (and never re-encode the layer's arguments); or it states why it runs eagerly. The tracer records standard
 * layers as one call_module each (with forward hooks, they stay opaque).
 */
abstract class Layer extends Module {
  /** For these forward arguments (graph values when lowering: this only packs them), the op call forward makes. */
  abstract functional(...args: never[]): LayerForm;
}

/** The standard layers. Constructors take PyTorch's positional arguments, then an options object. */

type Pair = number | readonly number[];

const py = (v: unknown): string =>
  typeof v === 'boolean' ? (v ? 'True' : 'False') : Array.isArray(v) ? `(${v.join(', ')})` : v === null ? 'None' : String(v);

function positiveInt(layer: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new ValueError(`${layer}: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** PyTorch's default for Linear and Conv: kaiming_uniform(a=√5) weights, U(±1/√fan_in) bias. */
function resetLinearLike(weight: Tensor, bias: Tensor | null, fanIn: number): void {
  kaimingUniform_(weight, { a: Math.sqrt(5) });
  if (bias) {
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    uniform_(bias, -bound, bound);
  }
}

export class Linear extends Layer {
  weight: Parameter;
  bias: Parameter | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: { bias?: boolean } = {},
  ) {
    super();
    positiveInt('Linear', 'inFeatures', inFeatures);
    positiveInt('Linear', 'outFeatures', outFeatures);
    const { bias = true } = checkOptions('Linear', options, ['bias']);
    checkBoolean('Linear', 'bias', bias);
    this.weight = new Parameter(O.zeros([outFeatures, inFeatures]));
    this.bias = bias ? new Parameter(O.zeros([outFeatures])) : null;
    resetLinearLike(this.weight, this.bias, inFeatures);
  }

  override forward(x: Tensor): Tensor {
    expectInput(
      x,
      (s) => s.length > 0 && s[s.length - 1] === this.inFeatures,
      (got) => `${this.describe()}: expected input [..., ${this.inFeatures}], got ${got}`,
    );
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.linear, x, this.weight, this.bias);
  }

  describe(): string {
    return `Linear(in_features=${this.inFeatures}, out_features=${this.outFeatures})`;
  }

  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${py(this.bias !== null)}`;
  }
}

export interface ConvOptions {
  stride?: Pair;
  padding?: Pair | 'same' | 'valid';
  dilation?: Pair;
  groups?: number;
  bias?: boolean;
}

abstract class ConvNd extends Layer {
  weight: Parameter;
  bias: Parameter | null;
  readonly stride: Pair;
  readonly padding: Pair | 'same' | 'valid';
  readonly dilation: Pair;
  readonly groups: number;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number[],
    options: ConvOptions,
  ) {
    super();
    const name = this.constructor.name;
    const opts = checkOptions(name, options, ['stride', 'padding', 'dilation', 'groups', 'bias']) as ConvOptions;
    const { stride = 1, padding = 0, dilation = 1, groups = 1, bias = true } = opts;
    // PyTorch checks these when the layer is built, not at its first call
    const dims = kernelSize.length;
    const spatial = (what: string, v: unknown, min: number) => {
      if (Array.isArray(v) && v.length !== dims)
        throw new ValueError(`${name}: ${what} must have ${dims} entries, got ${JSON.stringify(v)}`);
      pair(name, what, v as Pair, min);
    };
    spatial('stride', stride, 1);
    spatial('dilation', dilation, 1);
    if (padding !== 'same' && padding !== 'valid') {
      if (typeof padding === 'string')
        throw new ValueError(`${name}: padding must be a number, a pair, 'valid' or 'same', got '${padding}'`);
      spatial('padding', padding, 0);
    } else if (padding === 'same' && pair(name, 'stride', stride, 1).some((v) => v !== 1)) {
      throw new ValueError(`${name}: padding='same' is not supported for strided convolutions (stride ${JSON.stringify(stride)})`);
    }
    checkBoolean(name, 'bias', bias);
    positiveInt(name, 'inChannels', inChannels);
    positiveInt(name, 'outChannels', outChannels);
    kernelSize.forEach((k) => positiveInt(name, 'kernelSize', k));
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new ValueError(`${name}: groups=${groups} must divide both inChannels (${inChannels}) and outChannels (${outChannels})`);
    }
    this.stride = stride;
    this.padding = padding;
    this.dilation = dilation;
    this.groups = groups;
    this.weight = new Parameter(O.zeros([outChannels, inChannels / groups, ...kernelSize]));
    this.bias = bias ? new Parameter(O.zeros([outChannels])) : null;
    resetLinearLike(this.weight, this.bias, (inChannels / groups) * kernelSize.reduce((a, b) => a * b, 1));
  }

  override extraRepr(): string {
    const k = this.kernelSize;
    let s = `${this.inChannels}, ${this.outChannels}, kernel_size=${py(k)}, stride=${py(this.stride)}`;
    if (this.padding !== 0) s += `, padding=${py(this.padding)}`;
    if (this.dilation !== 1) s += `, dilation=${py(this.dilation)}`;
    if (this.groups !== 1) s += `, groups=${this.groups}`;
    if (!this.bias) s += ', bias=False';
    return s;
  }
}

export class Conv1d extends ConvNd {
  constructor(inChannels: number, outChannels: number, kernelSize: number | readonly [number], opts: ConvOptions = {}) {
    super(inChannels, outChannels, [typeof kernelSize === 'number' ? kernelSize : kernelSize[0]], opts);
  }

  override forward(x: Tensor): Tensor {
    expectInput(
      x,
      (s) => (s.length === 2 || s.length === 3) && s[s.length - 2] === this.inChannels,
      (got) => `Conv1d(${this.extraRepr()}): expected input [N, ${this.inChannels}, L] or [${this.inChannels}, L], got ${got}`,
    );
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.conv1d, x, this.weight, this.bias, this.stride, this.padding, this.dilation, this.groups);
  }
}

export class Conv2d extends ConvNd {
  constructor(inChannels: number, outChannels: number, kernelSize: Pair, opts: ConvOptions = {}) {
    const k = typeof kernelSize === 'number' ? [kernelSize, kernelSize] : [...kernelSize];
    super(inChannels, outChannels, k, opts);
  }

  override forward(x: Tensor): Tensor {
    expectInput(
      x,
      (s) => (s.length === 3 || s.length === 4) && s[s.length - 3] === this.inChannels,
      (got) => `Conv2d(${this.extraRepr()}): expected input [N, ${this.inChannels}, H, W] or [${this.inChannels}, H, W], got ${got}`,
    );
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.conv2d, x, this.weight, this.bias, this.stride, this.padding, this.dilation, this.groups);
  }
}

export interface BatchNormOptions {
  eps?: number;
  /** null: a cumulative moving average (PyTorch's momentum=None). */
  momentum?: number | null;
  affine?: boolean;
  trackRunningStats?: boolean;
}

abstract class BatchNormNd extends Layer {
  weight: Parameter | null;
  bias: Parameter | null;
  declare running_mean: Tensor | null;
  declare running_var: Tensor | null;
  declare num_batches_tracked: Tensor | null;
  readonly eps: number;
  readonly momentum: number | null;

  constructor(
    readonly numFeatures: number,
    options: BatchNormOptions,
  ) {
    super();
    const name = this.constructor.name;
    positiveInt(name, 'numFeatures', numFeatures);
    const opts = checkOptions(name, options, ['eps', 'momentum', 'affine', 'trackRunningStats']) as BatchNormOptions;
    const { eps = 1e-5, momentum = 0.1, affine = true, trackRunningStats = true } = opts;
    checkNumber(name, 'eps', eps, { min: 0 });
    if (momentum !== null) checkNumber(name, 'momentum', momentum, { min: 0, max: 1 });
    checkBoolean(name, 'affine', affine);
    checkBoolean(name, 'trackRunningStats', trackRunningStats);
    this.weight = affine ? new Parameter(O.ones([numFeatures])) : null;
    this.bias = affine ? new Parameter(O.zeros([numFeatures])) : null;
    this.registerBuffer('running_mean', trackRunningStats ? O.zeros([numFeatures]) : null);
    this.registerBuffer('running_var', trackRunningStats ? O.ones([numFeatures]) : null);
    this.registerBuffer('num_batches_tracked', trackRunningStats ? O.zeros([], { dtype: 'int32' }) : null);
    this.eps = eps;
    this.momentum = momentum;
  }

  protected abstract checkInput(x: Tensor): void;

  override forward(x: Tensor): Tensor {
    this.checkInput(x);
    expectInput(
      x,
      (s) => s[1] === this.numFeatures,
      (got) => `${this.constructor.name}(${this.numFeatures}): expected ${this.numFeatures} channels in dim 1, got input ${got}`,
    );
    let momentum = this.momentum ?? 0;
    if (this.training && this.num_batches_tracked) {
      const tracked = this.num_batches_tracked;
      noGrad(() => tracked.add_(1));
      if (this.momentum === null) momentum = 1 / tracked.item();
    }
    return this.batchNorm(x, momentum).run();
  }

  /** Training mode updates the running statistics (forward's side effect) and normalises with the batch's. */
  override functional(x: Tensor): OpCall<Tensor> | Eager {
    if (this.training) return { eager: `${this.constructor.name}: training mode uses batch statistics and updates the running ones` };
    return this.batchNorm(x, this.momentum ?? 0);
  }

  private batchNorm(x: Tensor, momentum: number): OpCall<Tensor> {
    const useBatchStats = this.training || !this.running_mean;
    return opCall(
      O.batchNorm,
      x,
      !this.training || this.running_mean ? this.running_mean : null,
      !this.training || this.running_var ? this.running_var : null,
      this.weight,
      this.bias,
      useBatchStats,
      momentum,
      this.eps,
    );
  }

  override extraRepr(): string {
    return `${this.numFeatures}, eps=${this.eps}, momentum=${py(this.momentum)}, affine=${py(this.weight !== null)}, track_running_stats=${py(this.running_mean !== null)}`;
  }
}

export class BatchNorm1d extends BatchNormNd {
  constructor(numFeatures: number, opts: BatchNormOptions = {}) {
    super(numFeatures, opts);
  }
  protected checkInput(x: Tensor): void {
    expectInput(
      x,
      (s) => s.length === 2 || s.length === 3,
      (got) => `BatchNorm1d(${this.numFeatures}): expected 2D or 3D input (got ${x.ndim}D input ${got})`,
    );
  }
}

export class BatchNorm2d extends BatchNormNd {
  constructor(numFeatures: number, opts: BatchNormOptions = {}) {
    super(numFeatures, opts);
  }
  protected checkInput(x: Tensor): void {
    expectInput(
      x,
      (s) => s.length === 4,
      (got) => `BatchNorm2d(${this.numFeatures}): expected 4D input (got ${x.ndim}D input ${got})`,
    );
  }
}

export class LayerNorm extends Layer {
  weight: Parameter | null;
  bias: Parameter | null;
  readonly normalizedShape: number[];
  readonly eps: number;

  constructor(normalizedShape: number | readonly number[], options: { eps?: number; elementwiseAffine?: boolean; bias?: boolean } = {}) {
    super();
    const { eps = 1e-5, elementwiseAffine = true, bias = true } = checkOptions('LayerNorm', options, ['eps', 'elementwiseAffine', 'bias']);
    checkBoolean('LayerNorm', 'elementwiseAffine', elementwiseAffine);
    checkBoolean('LayerNorm', 'bias', bias);
    if (typeof normalizedShape !== 'number' && !Array.isArray(normalizedShape)) {
      throw new ValueError(`LayerNorm: normalizedShape must be a size or an array of sizes, got ${typeof normalizedShape}`);
    }
    const ns = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    ns.forEach((d) => positiveInt('LayerNorm', 'normalizedShape', d));
    this.weight = elementwiseAffine ? new Parameter(O.ones(ns)) : null;
    this.bias = elementwiseAffine && bias ? new Parameter(O.zeros(ns)) : null;
    this.normalizedShape = ns;
    this.eps = checkNumber('LayerNorm', 'eps', eps, { min: 0 });
  }

  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.layerNorm, x, this.normalizedShape, this.weight, this.bias, this.eps);
  }

  override extraRepr(): string {
    return `${py(this.normalizedShape)}, eps=${this.eps}, elementwise_affine=${py(this.weight !== null)}`;
  }
}

export class Embedding extends Layer {
  weight: Parameter;
  readonly paddingIdx: number | null;

  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
    options: { paddingIdx?: number | null } = {},
  ) {
    super();
    positiveInt('Embedding', 'numEmbeddings', numEmbeddings);
    positiveInt('Embedding', 'embeddingDim', embeddingDim);
    const { paddingIdx = null } = checkOptions('Embedding', options, ['paddingIdx']);
    let pad = paddingIdx as number | null;
    if (pad !== null) {
      checkNumber('Embedding', 'paddingIdx', pad, { integer: true });
      if (pad < -numEmbeddings || pad >= numEmbeddings)
        throw new ValueError(`Embedding: paddingIdx ${pad} must be within numEmbeddings (${numEmbeddings})`);
      if (pad < 0) pad += numEmbeddings;
    }
    this.weight = new Parameter(normal_(O.zeros([numEmbeddings, embeddingDim])));
    if (pad !== null) noGrad(() => this.weight.select(0, pad).fill_(0));
    this.paddingIdx = pad;
  }

  override forward(input: Tensor): Tensor {
    return this.functional(input).run();
  }

  override functional(input: Tensor): OpCall<Tensor> {
    return opCall(O.embedding, input, this.weight, this.paddingIdx);
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx !== null ? `, padding_idx=${this.paddingIdx}` : ''}`;
  }
}

export class EmbeddingBag extends Layer {
  weight: Parameter;
  readonly mode: 'sum' | 'mean';

  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
    options: { mode?: 'sum' | 'mean' } = {},
  ) {
    super();
    positiveInt('EmbeddingBag', 'numEmbeddings', numEmbeddings);
    positiveInt('EmbeddingBag', 'embeddingDim', embeddingDim);
    const { mode = 'mean' } = checkOptions('EmbeddingBag', options, ['mode']);
    checkChoice('EmbeddingBag', 'mode', mode, ['sum', 'mean']);
    this.weight = new Parameter(normal_(O.zeros([numEmbeddings, embeddingDim])));
    this.mode = mode as 'sum' | 'mean';
  }

  override forward(input: Tensor, offsets: Tensor | null = null, perSampleWeights: Tensor | null = null): Tensor {
    return this.functional(input, offsets, perSampleWeights).run();
  }

  override functional(input: Tensor, offsets: Tensor | null = null, perSampleWeights: Tensor | null = null): OpCall<Tensor> {
    return opCall(O.embeddingBag, input, this.weight, offsets, this.mode, perSampleWeights);
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}, mode='${this.mode}'`;
  }
}

export class Dropout extends Layer {
  constructor(readonly p = 0.5) {
    super();
    checkNumber('Dropout', 'p (the probability of an element to be zeroed)', p, { min: 0, max: 1 });
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.dropout, x, this.p, this.training);
  }
  override extraRepr(): string {
    return `p=${this.p}`;
  }
}

export class ReLU extends Layer {
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.relu, x);
  }
}

export class GELU extends Layer {
  readonly approximate: 'none' | 'tanh';
  constructor(options: { approximate?: 'none' | 'tanh' } = {}) {
    super();
    const { approximate = 'none' } = checkOptions('GELU', options, ['approximate']);
    this.approximate = checkChoice('GELU', 'approximate', approximate, ['none', 'tanh']);
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.gelu, x, this.approximate);
  }
  override extraRepr(): string {
    return `approximate='${this.approximate}'`;
  }
}

export class Sigmoid extends Layer {
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.sigmoid, x);
  }
}

export class Tanh extends Layer {
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.tanh, x);
  }
}

export class Softmax extends Layer {
  constructor(readonly dim: number) {
    super();
    checkNumber('Softmax', 'dim', dim, { integer: true });
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.softmax, x, this.dim);
  }
  override extraRepr(): string {
    return `dim=${this.dim}`;
  }
}

export class Flatten extends Layer {
  constructor(
    readonly startDim = 1,
    readonly endDim = -1,
  ) {
    super();
    checkNumber('Flatten', 'startDim', startDim, { integer: true });
    checkNumber('Flatten', 'endDim', endDim, { integer: true });
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.flatten, x, this.startDim, this.endDim);
  }
  override extraRepr(): string {
    return `start_dim=${this.startDim}, end_dim=${this.endDim}`;
  }
}

export class Identity extends Layer {
  override forward<T>(x: T): T {
    return x;
  }

  override functional(x: unknown): LayerForm {
    return { identity: x };
  }
}

export class MaxPool2d extends Layer {
  readonly stride: Pair;
  readonly padding: Pair;
  readonly dilation: Pair;
  readonly ceilMode: boolean;
  constructor(
    readonly kernelSize: Pair,
    {
      stride,
      padding = 0,
      dilation = 1,
      ceilMode = false,
    }: { stride?: Pair | null; padding?: Pair; dilation?: Pair; ceilMode?: boolean } = {},
  ) {
    super();
    pair('MaxPool2d', 'kernelSize', kernelSize, 1);
    if (stride !== undefined && stride !== null) pair('MaxPool2d', 'stride', stride, 1);
    pair('MaxPool2d', 'padding', padding, 0);
    pair('MaxPool2d', 'dilation', dilation, 1);
    checkBoolean('MaxPool2d', 'ceilMode', ceilMode);
    this.stride = stride ?? kernelSize;
    this.padding = padding;
    this.dilation = dilation;
    this.ceilMode = ceilMode;
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.maxPool2d, x, this.kernelSize, this.stride, this.padding, this.dilation, this.ceilMode);
  }
  override extraRepr(): string {
    return `kernel_size=${py(this.kernelSize)}, stride=${py(this.stride)}, padding=${py(this.padding)}, dilation=${py(this.dilation)}, ceil_mode=${py(this.ceilMode)}`;
  }
}

export class AvgPool2d extends Layer {
  readonly stride: Pair;
  readonly padding: Pair;
  readonly ceilMode: boolean;
  readonly countIncludePad: boolean;
  readonly divisorOverride: number | null;
  constructor(
    readonly kernelSize: Pair,
    {
      stride,
      padding = 0,
      ceilMode = false,
      countIncludePad = true,
      divisorOverride = null,
    }: { stride?: Pair | null; padding?: Pair; ceilMode?: boolean; countIncludePad?: boolean; divisorOverride?: number | null } = {},
  ) {
    super();
    pair('AvgPool2d', 'kernelSize', kernelSize, 1);
    if (stride !== undefined && stride !== null) pair('AvgPool2d', 'stride', stride, 1);
    pair('AvgPool2d', 'padding', padding, 0);
    checkBoolean('AvgPool2d', 'ceilMode', ceilMode);
    checkBoolean('AvgPool2d', 'countIncludePad', countIncludePad);
    if (divisorOverride !== null) checkNumber('AvgPool2d', 'divisorOverride', divisorOverride, { integer: true, min: 1 });
    this.stride = stride ?? kernelSize;
    this.padding = padding;
    this.ceilMode = ceilMode;
    this.countIncludePad = countIncludePad;
    this.divisorOverride = divisorOverride;
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.avgPool2d, x, this.kernelSize, this.stride, this.padding, this.ceilMode, this.countIncludePad, this.divisorOverride);
  }
  override extraRepr(): string {
    return `kernel_size=${py(this.kernelSize)}, stride=${py(this.stride)}, padding=${py(this.padding)}`;
  }
}

export class AdaptiveAvgPool2d extends Layer {
  constructor(readonly outputSize: Pair) {
    super();
    pair('AdaptiveAvgPool2d', 'outputSize', outputSize, 1);
  }
  override forward(x: Tensor): Tensor {
    return this.functional(x).run();
  }

  override functional(x: Tensor): OpCall<Tensor> {
    return opCall(O.adaptiveAvgPool2d, x, this.outputSize);
  }
  override extraRepr(): string {
    return `output_size=${py(this.outputSize)}`;
  }
}
