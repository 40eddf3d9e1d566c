/** Every op in the table, plus the tensor factories. */
export * from './creation.js';
export * from './elementwise.js';
export * from './reduce.js';
export * from './view.js';
export * from './linalg.js';
export * from './conv.js';
export * from './pool.js';
export * from './nn.js';
// Every user of the op table gets the tensor methods installed from it (x.add(y) is add(x, y)).
import '../tensor-methods.js';
