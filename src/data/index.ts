/** `data`: datasets and batching for training loops (PyTorch's `torch.utils.data`). */
export { Dataset, TensorDataset, type DatasetLike } from './dataset.js';
export { DataLoader, type DataLoaderOptions, type Collated } from './data-loader.js';
export { defaultCollate } from './collate.js';
