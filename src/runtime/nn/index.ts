export { Module, type ForwardHook, type ForwardPreHook, type LoadResult, type RemovableHandle } from './module.js';
export { Parameter } from './parameter.js';
export { Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict } from './containers.js';
export {
  Linear,
  Conv1d,
  Conv2d,
  BatchNorm1d,
  BatchNorm2d,
  LayerNorm,
  Embedding,
  EmbeddingBag,
  Dropout,
  ReLU,
  GELU,
  Sigmoid,
  Tanh,
  Softmax,
  Flatten,
  Identity,
  MaxPool2d,
  AvgPool2d,
  AdaptiveAvgPool2d,
  type ConvOptions,
  type BatchNormOptions,
} from './layers.js';
export * as init from './init.js';
export * as functional from './functional.js';
export * as utils from './utils.js';
