/** Every op in the table, plus the tensor factories. */
export * from './creation.js';
export * from './elementwise.js';
export * from './reduce.js';
export * from './view.js';
export * from './linalg.js';
export * from './conv.js';
export * from './pool.js';
export * from './nn.js';
