import { KilnError } from '../errors.js';
import { type CodegenContext, accessOf, type GeneratedKernel } from './elementwise.js';
import { accessOffset, floatLit, KernelSource } from './index-map.js';
import { numelOf, type IRNode, type Layout } from './ir.js';
import type { Access } from './views.js';

/**
 * The gpu.js convolution and pooling kernels, for inputs the wasm kernels (kernels/conv) do not take: an
 * im2row over an input read through views (rows [N·OH·OW, C·kh·kw], zeros in the padding, multiplied by the
 * GEMM against the weight read as Bᵀ, with the bias, a folded batch norm and relu as its epilogue), and
 * average pooling over an input that is not channels-last. Every conv2d result [N·OH·OW, O] is NHWC; kiln
 * exposes it as the NCHW tensor it is, through strides, so the next step (another conv, a pool, an
 * element-wise kernel) reads it in place instead of anyone transposing it.
 */

/** The NCHW layout of a conv2d result stored as [N, OH, OW, O]. */
export function convOutputLayout(shape: readonly number[]): Layout {
  const [, O, OH, OW] = shape as [number, number, number, number];
  return { shape, strides: [OH * OW * O, 1, OW * O, O], offset: 0 };
}

/** Reads input element (plane, h, w) of an [planes…, H, W] input through its index map; `value` is 0 outside the image. */
function windowRead(src: KernelSource, x: string, access: Access, plane: string, h: string, w: string, H: number, W: number) {
  const valid = src.let(`${h} >= 0 && ${h} < ${H} && ${w} >= 0 && ${w} < ${W}`, 'ok');
  // clamped so the read stays in bounds even in SIMD lanes whose result is discarded
  const hc = src.let(`Math.min(Math.max(${h}, 0), ${H - 1})`, 'hc');
  const wc = src.let(`Math.min(Math.max(${w}, 0), ${W - 1})`, 'wc');
  const lin = src.let(`((${plane}) * ${H} + ${hc}) * ${W} + ${wc}`, 'li');
  const raw = src.let(`${x}[${accessOffset(src, lin, access)}]`, 'xv');
  return { valid, raw, value: src.let(`${valid} ? ${raw} : 0.0`, 'xw') };
}

/** The im2row kernel of a conv2d IR node: rows [N·OH·OW, C·kh·kw]. */
export function im2rowKernel(ctx: CodegenContext, node: IRNode): GeneratedKernel {
  if (node.kind !== 'conv2d') throw new KilnError(`kernels: im2rowKernel got a ${node.kind} node, not a conv2d`);
  const { access, base } = accessOf(ctx, node.x);
  const [N, C, H, W] = ctx.ir[node.x]!.shape as [number, number, number, number];
  const [, , kh, kw] = ctx.ir[node.w]!.shape as [number, number, number, number];
  const [, , OH, OW] = node.shape as [number, number, number, number];
  const { stride, padding, dilation } = node.attrs;
  const Kc = C * kh * kw;
  const src = new KernelSource();
  src.push(
    'const i = this.thread.x;',
    `const p = Math.floor(i / ${Kc});`,
    `const q = i % ${Kc};`,
    `const n = Math.floor(p / ${OH * OW});`,
    `const oh = Math.floor(p / ${OW}) % ${OH};`,
    `const ow = p % ${OW};`,
    `const c = Math.floor(q / ${kh * kw});`,
    `const ki = Math.floor(q / ${kw}) % ${kh};`,
    `const kj = q % ${kw};`,
    `const h = oh * ${stride[0]} - ${padding[0]} + ki * ${dilation[0]};`,
    `const w = ow * ${stride[1]} - ${padding[1]} + kj * ${dilation[1]};`,
  );
  const v = windowRead(src, 'a0', access, `n * ${C} + c`, 'h', 'w', H, W).value;
  return {
    source: `function(a0) {\n  ${src.lines.join('\n  ')}\n  return ${v};\n}`,
    output: [N * OH * OW * Kc],
    args: [base],
  };
}

/** Max or average pooling over the last two dims, one output element per cell. */
export function poolKernel(ctx: CodegenContext, node: IRNode): GeneratedKernel {
  if (node.kind !== 'pool2d') throw new KilnError(`kernels: poolKernel got a ${node.kind} node, not a pool2d`);
  const { access, base } = accessOf(ctx, node.x);
  const inShape = ctx.ir[node.x]!.shape;
  const H = inShape[inShape.length - 2]!;
  const W = inShape[inShape.length - 1]!;
  const OH = node.shape[node.shape.length - 2]!;
  const OW = node.shape[node.shape.length - 1]!;
  const { kind, kernel, stride, padding, dilation } = node.attrs;
  const src = new KernelSource();
  src.push(
    'const i = this.thread.x;',
    `const pl = Math.floor(i / ${OH * OW});`,
    `const oh = Math.floor(i / ${OW}) % ${OH};`,
    `const ow = i % ${OW};`,
    `const h0 = oh * ${stride[0]} - ${padding[0]};`,
    `const w0 = ow * ${stride[1]} - ${padding[1]};`,
  );
  const body = src.child();
  const tap = windowRead(body, 'a0', access, 'pl', `h0 + ki * ${dilation[0]}`, `w0 + kj * ${dilation[1]}`, H, W);
  const loops = (step: string) => [
    `for (let ki = 0; ki < ${kernel[0]}; ki++) {`,
    `  for (let kj = 0; kj < ${kernel[1]}; kj++) {`,
    ...[...body.lines, step].map((l) => `    ${l}`),
    '  }',
    '}',
  ];
  let result = 'acc';
  if (kind === 'max') {
    // only taps inside the image count; a window always overlaps it (padding ≤ half the kernel)
    src.push(`let acc = ${floatLit(-Infinity)};`, ...loops(`acc = ${tap.valid} ? Math.max(acc, ${tap.raw}) : acc;`));
  } else {
    // kiln's eager windows: [h0, h1) clipped to the padded image for the divisor, to the image for the sum
    src.push(
      `const h1 = Math.min(h0 + ${kernel[0]}, ${H + padding[0]});`,
      `const w1 = Math.min(w0 + ${kernel[1]}, ${W + padding[1]});`,
      'let acc = 0.0;',
      ...loops(`acc += ${tap.value};`),
    );
    const clipped = `((Math.min(h1, ${H}) - Math.max(h0, 0)) * (Math.min(w1, ${W}) - Math.max(w0, 0)))`;
    const { divisorOverride, countIncludePad } = node.attrs;
    const div = divisorOverride !== null ? floatLit(divisorOverride) : countIncludePad ? '((h1 - h0) * (w1 - w0))' : clipped;
    result = `acc / ${div}`;
  }
  return {
    source: `function(a0) {\n  ${src.lines.join('\n  ')}\n  return ${result};\n}`,
    output: [numelOf(node.shape)],
    maxLoop: Math.max(kernel[0], kernel[1]),
    args: [base],
  };
}
