import type { OpName } from '../../runtime/shape-rules/index.js';
import type { OnnxMapping } from './mapping.js';
import { ELEMENTWISE_ONNX } from './ops-elementwise.js';
import { LINALG_ONNX } from './ops-linalg.js';
import { NN_ONNX } from './ops-nn.js';
import { REDUCE_ONNX } from './ops-reduce.js';
import { VIEW_ONNX } from './ops-view.js';

/**
 * Every op of the op table, mapped to ONNX: an emitter, or the reason it is not exportable. The mapped type over
 * OpName makes an op added to the table without an entry here a compile error.
 */
export const ONNX_OPS: { readonly [P in OpName]: OnnxMapping } = {
  ...ELEMENTWISE_ONNX,
  ...REDUCE_ONNX,
  ...VIEW_ONNX,
  ...LINALG_ONNX,
  ...NN_ONNX,
};
