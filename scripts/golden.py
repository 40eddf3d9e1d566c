#!/usr/bin/python3
"""Golden reference values from real PyTorch for kiln's tests (test/golden.test.ts).

Run with Debian's PyTorch 1.13 (apt-get install python3-torch):  /usr/bin/python3 scripts/golden.py
Writes test/fixtures/golden/ops.json and models.json. Never edit the JSON by hand: regenerate it.
It pins oneDNN and ATen to AVX2 and torch to one thread (PINNED_ENV below), so the JSON is byte-identical
whichever x86 machine regenerates it.

ops.json is a list of cases, each described in kiln's terms so the test can replay it generically:
  { "name", "op", "args": [...], "kwargs": {...}, "out": T | [T, ...], "gradOut": T | [T|null, ...] | null,
    "grads": [T | [T, ...] | null, ...], "kwargsGrads": {name: T}, "argsAfter": [T|null, ...] (optional) }
`op` is kiln's name (`sum`, `F.conv2d`, ...); `args` are kiln's positional arguments and `kwargs` kiln's
trailing options object (camelCase). A tensor is {"t": {"shape", "dtype", "data" (flat, row-major),
"requiresGrad"}}; int64 tensors are stored as int32, kiln's index dtype. `gradOut` is G, a fixed random
tensor of each float output's shape; `grads` are d/d(arg) of sum(out * G) for each arg that requires
grad (a list arg, as for cat, gets a list), null otherwise; `kwargsGrads` is the same for tensors in
kwargs. `argsAfter` holds the values of arguments the op updated in place (batch norm running stats).
"""
import os

# Pinned before torch loads its libraries, so that regeneration is byte-identical on any x86 machine: oneDNN
# (conv) and ATen's vectorised kernels pick their instruction set from the CPU at run time, and on an AVX-512
# host their wider vectors sum in another order (conv cases then differ by float ULPs); more than one thread
# splits reductions by thread count. These variables are read when the libraries load or first dispatch, so
# they must be in the environment before `import torch` (os.environ sets the process environment).
PINNED_ENV = {
    'DNNL_MAX_CPU_ISA': 'AVX2',  # oneDNN: no AVX-512 kernels
    'ATEN_CPU_CAPABILITY': 'avx2',  # ATen's own vectorised CPU kernels: the AVX2 build
    'OMP_NUM_THREADS': '1',
    'MKL_NUM_THREADS': '1',
    'OPENBLAS_NUM_THREADS': '1',
    'OPENBLAS_CORETYPE': 'Haswell',  # if libblas.so.3 is OpenBLAS: its AVX2 kernels, not SkylakeX's
}
os.environ.update(PINNED_ENV)

import json  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)
torch.manual_seed(0)
torch.set_default_dtype(torch.float32)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'golden')

DTYPES = {torch.float32: 'float32', torch.int64: 'int32', torch.int32: 'int32', torch.bool: 'bool'}


# ---------------------------------------------------------------------------------------------------
# encoding


def enc(t, requires_grad=None):
    t = t.detach()
    dtype = DTYPES[t.dtype]
    data = t.reshape(-1).tolist()
    if dtype == 'bool':
        data = [int(v) for v in data]
    if dtype == 'int32':
        assert all(-2**31 <= v < 2**31 for v in data)
    rg = bool(requires_grad) if requires_grad is not None else False
    return {'t': {'shape': list(t.shape), 'dtype': dtype, 'data': data, 'requiresGrad': rg}}


class NoGrad:
    """Marks a float tensor argument that must not require grad (running stats, comparison inputs)."""

    def __init__(self, t):
        self.t = t


def r(*shape):
    return torch.randn(*shape)


def positive(*shape):
    """Uniform in [0.5, 1.5): safe for log, sqrt, pow bases and divisors."""
    return torch.rand(*shape) + 0.5


def ints(values, dtype=torch.int64):
    return torch.tensor(values, dtype=dtype)


def ng(t):
    return NoGrad(t)


# ---------------------------------------------------------------------------------------------------
# kiln op name + kiln-style arguments -> the same call in PyTorch

SNAKE = {'countIncludePad': 'count_include_pad', 'ignoreIndex': 'ignore_index'}


def torch_kwargs(kw):
    out = {}
    for k, v in kw.items():
        out[SNAKE.get(k, k)] = tuple(v) if isinstance(v, list) else v
    return out


def dims(d):
    return tuple(d) if isinstance(d, list) else d


def reduce_dim(method):
    def run(x, dim=None, keepdim=False):
        if dim is None:
            return getattr(x, method)()
        return getattr(x, method)(dim=dims(dim), keepdim=keepdim)

    return run


def values_indices(method):
    def run(x, dim=None, keepdim=False):
        if dim is None:
            return getattr(torch, method)(x)
        res = getattr(torch, method)(x, dim, keepdim)
        return (res.values, res.indices)

    return run


def unary(fn):
    return lambda x: fn(x)


TORCH = {
    'add': torch.add,
    'sub': torch.sub,
    'mul': torch.mul,
    'div': torch.div,
    'pow': torch.pow,
    'neg': unary(torch.neg),
    'exp': unary(torch.exp),
    'log': unary(torch.log),
    'sqrt': unary(torch.sqrt),
    'abs': unary(torch.abs),
    'tanh': unary(torch.tanh),
    'sigmoid': unary(torch.sigmoid),
    'relu': unary(torch.relu),
    'sin': unary(torch.sin),
    'cos': unary(torch.cos),
    'exp2': unary(torch.exp2),
    'matmul': torch.matmul,
    'mm': torch.mm,
    'addmm': lambda x, m1, m2, beta=1, alpha=1: torch.addmm(x, m1, m2, beta=beta, alpha=alpha),
    'unbind': lambda x, dim=0: torch.unbind(x, dim),
    'thresholdBackward': lambda g, x, threshold: torch.ops.aten.threshold_backward(g, x, threshold),
    'tanhBackward': lambda g, y: torch.ops.aten.tanh_backward(g, y),
    'sigmoidBackward': lambda g, y: torch.ops.aten.sigmoid_backward(g, y),
    'geluBackward': lambda g, x, approximate='none': torch.ops.aten.gelu_backward(g, x, approximate=approximate),
    'scatterAdd': lambda x, dim, index, src: x.scatter_add(dim, index, src),
    'sliceScatter': lambda x, src, dim=0, start=None, end=None, step=1: torch.slice_scatter(x, src, dim, start, end, step),
    'selectScatter': lambda x, src, dim, index: torch.select_scatter(x, src, dim, index),
    't': lambda x: x.t(),
    'sum': reduce_dim('sum'),
    'mean': reduce_dim('mean'),
    'max': values_indices('max'),
    'min': values_indices('min'),
    'argmax': lambda x, dim=None, keepdim=False: torch.argmax(x, dim, keepdim),
    'reshape': lambda x, shape: x.reshape(shape),
    'view': lambda x, shape: x.view(shape),
    'flatten': lambda x, start=0, end=-1: x.flatten(start, end),
    'transpose': lambda x, d0, d1: x.transpose(d0, d1),
    'permute': lambda x, p: x.permute(p),
    'unsqueeze': lambda x, d: x.unsqueeze(d),
    'squeeze': lambda x, d=None: x.squeeze() if d is None else x.squeeze(d),
    'expand': lambda x, shape: x.expand(shape),
    'narrow': lambda x, dim, start, length: x.narrow(dim, start, length),
    'select': lambda x, dim, index: x.select(dim, index),
    'gather': lambda x, dim, index: x.gather(dim, index),
    'clamp': lambda x, lo=None, hi=None: torch.clamp(x, lo, hi),
    'where': torch.where,
    'eq': torch.eq,
    'ne': torch.ne,
    'lt': torch.lt,
    'le': torch.le,
    'gt': torch.gt,
    'ge': torch.ge,
    'softmax': lambda x, dim: torch.softmax(x, dim),
    'logSoftmax': lambda x, dim: torch.log_softmax(x, dim),
    'cat': lambda xs, dim=0: torch.cat(xs, dim),
    'stack': lambda xs, dim=0: torch.stack(xs, dim),
    'F.conv1d': lambda x, w, b=None, **kw: F.conv1d(x, w, b, **kw),
    'F.conv2d': lambda x, w, b=None, **kw: F.conv2d(x, w, b, **kw),
    'F.maxPool2d': lambda x, k, **kw: F.max_pool2d(x, k, **kw),
    'F.avgPool2d': lambda x, k, **kw: F.avg_pool2d(x, k, **kw),
    'F.adaptiveAvgPool2d': lambda x, size: F.adaptive_avg_pool2d(x, size),
    'F.layerNorm': lambda x, shape, **kw: F.layer_norm(x, shape, **kw),
    'F.batchNorm': lambda x, rm, rv, **kw: F.batch_norm(x, rm, rv, **kw),
    'F.embedding': lambda idx, w: F.embedding(idx, w),
    'F.embeddingBag': lambda idx, w, **kw: F.embedding_bag(idx, w, **kw),
    'F.gelu': lambda x, **kw: F.gelu(x, **kw),
    'F.linear': lambda x, w, b=None: F.linear(x, w, b),
    'F.crossEntropy': lambda x, t, **kw: F.cross_entropy(x, t, **kw),
    'F.mseLoss': lambda a, b, **kw: F.mse_loss(a, b, **kw),
}


# ---------------------------------------------------------------------------------------------------
# cases: (name, op, args, kwargs). Float tensors require grad unless wrapped in ng(); ints/bools never.

CASES = [
    # elementwise arithmetic, broadcasting, scalar operands
    ('add', 'add', [r(2, 3), r(2, 3)], {}),
    ('add broadcast [3,1]+[1,4]', 'add', [r(3, 1), r(1, 4)], {}),
    ('add broadcast [2,3]+[3]', 'add', [r(2, 3), r(3)], {}),
    ('add scalar', 'add', [r(2, 3), 1.5], {}),
    ('sub', 'sub', [r(2, 3), r(2, 3)], {}),
    ('sub broadcast [3,1]-[1,4]', 'sub', [r(3, 1), r(1, 4)], {}),
    ('sub broadcast [2,3]-[3]', 'sub', [r(2, 3), r(3)], {}),
    ('sub scalar', 'sub', [r(2, 3), 0.75], {}),
    ('mul', 'mul', [r(2, 3), r(2, 3)], {}),
    ('mul broadcast [3,1]*[1,4]', 'mul', [r(3, 1), r(1, 4)], {}),
    ('mul broadcast [2,3]*[3]', 'mul', [r(2, 3), r(3)], {}),
    ('mul scalar', 'mul', [r(2, 3), -2.5], {}),
    ('div', 'div', [r(2, 3), positive(2, 3)], {}),
    ('div broadcast [3,1]/[1,4]', 'div', [r(3, 1), positive(1, 4)], {}),
    ('div broadcast [2,3]/[3]', 'div', [r(2, 3), positive(3)], {}),
    ('div scalar', 'div', [r(2, 3), 4.0], {}),
    ('div int32 by int32 gives float', 'div', [ints([7, -7, 1, 6, 0], torch.int32), ints([2, 2, 3, -4, 5], torch.int32)], {}),
    ('neg', 'neg', [r(2, 3)], {}),
    ('pow tensor^number', 'pow', [positive(2, 3), 2.5], {}),
    ('pow tensor^integer', 'pow', [r(2, 3), 3], {}),
    ('pow tensor^tensor', 'pow', [positive(2, 3), r(2, 3)], {}),
    ('pow tensor^tensor broadcast', 'pow', [positive(2, 3), r(3)], {}),
    # unary
    ('exp', 'exp', [r(2, 3)], {}),
    ('log', 'log', [positive(2, 3)], {}),
    ('sqrt', 'sqrt', [positive(2, 3)], {}),
    ('abs', 'abs', [torch.tensor([[-1.5, 0.5, 2.0], [-0.25, 0.75, -3.0]])], {}),
    ('tanh', 'tanh', [r(2, 3)], {}),
    ('sigmoid', 'sigmoid', [r(2, 3)], {}),
    ('relu', 'relu', [torch.tensor([[-1.0, 0.5, 2.0], [-0.25, 0.1, -3.0]])], {}),
    # matmul
    ('matmul 1d.1d', 'matmul', [r(4), r(4)], {}),
    ('matmul 2d.2d', 'matmul', [r(3, 4), r(4, 5)], {}),
    ('matmul 1d.2d', 'matmul', [r(4), r(4, 5)], {}),
    ('matmul 2d.1d', 'matmul', [r(3, 4), r(4)], {}),
    ('matmul batched [2,3,4]@[4,5]', 'matmul', [r(2, 3, 4), r(4, 5)], {}),
    ('matmul batched [2,3,4]@[2,4,5]', 'matmul', [r(2, 3, 4), r(2, 4, 5)], {}),
    ('matmul broadcast batch [2,1,3,4]@[3,4,2]', 'matmul', [r(2, 1, 3, 4), r(3, 4, 2)], {}),
    # reductions
    ('sum all', 'sum', [r(2, 3, 4)], {}),
    ('sum dim', 'sum', [r(2, 3, 4), 1], {}),
    ('sum negative dim', 'sum', [r(2, 3, 4), -1], {}),
    ('sum dim keepdim', 'sum', [r(2, 3, 4), 1, True], {}),
    ('sum dim list', 'sum', [r(2, 3, 4), [0, 2]], {}),
    ('sum dim list keepdim', 'sum', [r(2, 3, 4), [0, 2], True], {}),
    ('mean all', 'mean', [r(2, 3, 4)], {}),
    ('mean dim', 'mean', [r(2, 3, 4), 1], {}),
    ('mean dim keepdim', 'mean', [r(2, 3, 4), -1, True], {}),
    ('mean dim list', 'mean', [r(2, 3, 4), [0, 2]], {}),
    ('mean dim list keepdim', 'mean', [r(2, 3, 4), [1, 2], True], {}),
    ('max all', 'max', [r(3, 4)], {}),
    ('max dim', 'max', [r(3, 4), 1], {}),
    ('max dim keepdim', 'max', [r(3, 4), 0, True], {}),
    ('min all', 'min', [r(3, 4)], {}),
    ('min dim', 'min', [r(3, 4), 0], {}),
    ('min dim keepdim', 'min', [r(3, 4), -1, True], {}),
    ('argmax all', 'argmax', [ng(r(3, 4))], {}),
    ('argmax dim', 'argmax', [ng(r(3, 4)), 1], {}),
    ('argmax dim keepdim', 'argmax', [ng(r(3, 4)), 0, True], {}),
    # views (gradients flow back through them)
    ('reshape', 'reshape', [r(2, 3, 4), [4, 6]], {}),
    ('reshape -1', 'reshape', [r(2, 3, 4), [3, -1]], {}),
    ('view', 'view', [r(2, 3, 4), [6, 4]], {}),
    ('flatten', 'flatten', [r(2, 3, 4)], {}),
    ('flatten start', 'flatten', [r(2, 3, 4, 2), 1], {}),
    ('flatten start end', 'flatten', [r(2, 3, 4, 2), 1, 2], {}),
    ('transpose', 'transpose', [r(2, 3, 4), 0, 2], {}),
    ('transpose negative dims', 'transpose', [r(2, 3, 4), -1, -2], {}),
    ('permute', 'permute', [r(2, 3, 4), [2, 0, 1]], {}),
    ('unsqueeze', 'unsqueeze', [r(2, 3), 1], {}),
    ('unsqueeze last', 'unsqueeze', [r(2, 3), -1], {}),
    ('squeeze all', 'squeeze', [r(1, 3, 1, 2)], {}),
    ('squeeze dim', 'squeeze', [r(1, 3, 1, 2), 2], {}),
    ('expand', 'expand', [r(3, 1), [2, 3, 4]], {}),
    ('expand -1', 'expand', [r(1, 3), [4, -1]], {}),
    ('narrow', 'narrow', [r(4, 3), 0, 1, 2], {}),
    ('narrow dim 1', 'narrow', [r(2, 5, 2), 1, 2, 3], {}),
    ('select', 'select', [r(2, 3, 4), 1, 2], {}),
    ('select negative index', 'select', [r(2, 3), 1, -1], {}),
    ('gather dim 1', 'gather', [r(3, 4), 1, ints([[0, 3], [1, 1], [2, 0]])], {}),
    ('gather dim 0', 'gather', [r(3, 4), 0, ints([[0, 2, 1, 0], [2, 2, 0, 1]])], {}),
    # clamp / where / comparisons
    ('clamp min', 'clamp', [r(3, 4), -0.3], {}),
    ('clamp max', 'clamp', [r(3, 4), None, 0.4], {}),
    ('clamp both', 'clamp', [r(3, 4), -0.3, 0.4], {}),
    ('where', 'where', [torch.tensor([[True, False, True], [False, False, True]]), r(2, 3), r(2, 3)], {}),
    ('where broadcast', 'where', [torch.tensor([True, False, True]), r(2, 3), r(2, 1)], {}),
    ('eq', 'eq', [ng(torch.tensor([1.0, 2.0, 3.0, 4.0])), ng(torch.tensor([1.0, 0.0, 3.0, 5.0]))], {}),
    ('ne', 'ne', [ng(torch.tensor([1.0, 2.0, 3.0, 4.0])), ng(torch.tensor([1.0, 0.0, 3.0, 5.0]))], {}),
    ('lt', 'lt', [ng(torch.tensor([1.0, 2.0, 3.0])), ng(torch.tensor([2.0]))], {}),
    ('le', 'le', [ng(torch.tensor([1.0, 2.0, 3.0])), ng(torch.tensor([2.0]))], {}),
    ('gt', 'gt', [ng(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])), ng(torch.tensor([2.0, 2.0, 2.0]))], {}),
    ('ge', 'ge', [ng(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])), ng(torch.tensor([2.0, 1.0, 3.0]))], {}),
    ('eq scalar', 'eq', [ng(torch.tensor([1.0, 2.0, 3.0])), 2], {}),
    ('lt scalar', 'lt', [ng(torch.tensor([1.0, 2.0, 3.0])), 2.5], {}),
    ('ge int32', 'ge', [ints([1, 2, 3], torch.int32), ints([2, 2, 2], torch.int32)], {}),
    # softmax family
    ('softmax', 'softmax', [r(3, 4), 1], {}),
    ('softmax dim 0', 'softmax', [r(3, 4), 0], {}),
    ('softmax large values', 'softmax', [torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]]), -1], {}),
    ('logSoftmax', 'logSoftmax', [r(3, 4), -1], {}),
    ('logSoftmax dim 0', 'logSoftmax', [r(3, 4), 0], {}),
    ('logSoftmax large values', 'logSoftmax', [torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]]), 1], {}),
    # joining
    ('cat dim 0', 'cat', [[r(2, 3), r(1, 3)], 0], {}),
    ('cat dim 1', 'cat', [[r(2, 1), r(2, 3), r(2, 2)], 1], {}),
    ('stack dim 0', 'stack', [[r(2, 3), r(2, 3)], 0], {}),
    ('stack dim 1', 'stack', [[r(2, 3), r(2, 3), r(2, 3)], 1], {}),
    ('stack last dim', 'stack', [[r(2, 3), r(2, 3)], -1], {}),
    # convolutions
    ('F.conv1d', 'F.conv1d', [r(2, 3, 7), r(4, 3, 3), r(4)], {}),
    ('F.conv1d stride padding', 'F.conv1d', [r(2, 3, 7), r(4, 3, 3), r(4)], {'stride': 2, 'padding': 1}),
    ('F.conv1d dilation no bias', 'F.conv1d', [r(1, 2, 9), r(3, 2, 3), None], {'dilation': 2}),
    ('F.conv1d groups 2', 'F.conv1d', [r(2, 4, 6), r(6, 2, 3), r(6)], {'groups': 2, 'padding': 1}),
    ('F.conv2d', 'F.conv2d', [r(2, 3, 5, 5), r(4, 3, 3, 3), r(4)], {}),
    ('F.conv2d padding', 'F.conv2d', [r(2, 3, 6, 5), r(4, 3, 3, 3), r(4)], {'padding': 1}),
    ('F.conv2d stride', 'F.conv2d', [r(1, 2, 7, 7), r(3, 2, 3, 3), r(3)], {'stride': 2}),
    ('F.conv2d stride padding tuple', 'F.conv2d', [r(1, 2, 7, 6), r(3, 2, 3, 2), r(3)], {'stride': [2, 1], 'padding': [1, 0]}),
    ('F.conv2d dilation no bias', 'F.conv2d', [r(1, 2, 7, 7), r(3, 2, 3, 2), None], {'stride': [2, 1], 'dilation': [1, 2]}),
    ('F.conv2d groups 2', 'F.conv2d', [r(2, 4, 5, 5), r(6, 2, 3, 3), r(6)], {'groups': 2}),
    ('F.conv2d groups 2 stride padding dilation', 'F.conv2d', [r(1, 4, 8, 8), r(4, 2, 3, 3), r(4)],
     {'groups': 2, 'stride': 2, 'padding': 2, 'dilation': 2}),
    # pooling
    ('F.maxPool2d', 'F.maxPool2d', [r(2, 2, 6, 6), 2], {}),
    ('F.maxPool2d stride padding', 'F.maxPool2d', [r(1, 2, 5, 5), 3], {'stride': 2, 'padding': 1}),
    ('F.maxPool2d rect kernel', 'F.maxPool2d', [r(1, 1, 6, 6), [2, 3]], {}),
    ('F.avgPool2d', 'F.avgPool2d', [r(2, 2, 6, 6), 2], {}),
    ('F.avgPool2d padding (countIncludePad default)', 'F.avgPool2d', [r(1, 2, 5, 5), 3], {'stride': 2, 'padding': 1}),
    ('F.avgPool2d padding countIncludePad false', 'F.avgPool2d', [r(1, 2, 5, 5), 3], {'stride': 2, 'padding': 1, 'countIncludePad': False}),
    ('F.adaptiveAvgPool2d 5x5 to 2x3', 'F.adaptiveAvgPool2d', [r(2, 2, 5, 5), [2, 3]], {}),
    ('F.adaptiveAvgPool2d 7x5 to 3x3', 'F.adaptiveAvgPool2d', [r(1, 2, 7, 5), [3, 3]], {}),
    ('F.adaptiveAvgPool2d to 1', 'F.adaptiveAvgPool2d', [r(2, 3, 4, 4), 1], {}),
    # normalization
    ('F.layerNorm', 'F.layerNorm', [r(3, 4), [4]], {}),
    ('F.layerNorm weight bias', 'F.layerNorm', [r(3, 4), [4]], {'weight': r(4), 'bias': r(4)}),
    ('F.layerNorm 2 dims weight bias eps', 'F.layerNorm', [r(2, 3, 4), [3, 4]], {'weight': r(3, 4), 'bias': r(3, 4), 'eps': 1e-3}),
    ('F.batchNorm training', 'F.batchNorm', [r(4, 3), None, None], {'weight': r(3), 'bias': r(3), 'training': True}),
    ('F.batchNorm training 4d with running stats', 'F.batchNorm', [r(4, 3, 2, 2), ng(r(3)), ng(positive(3))],
     {'weight': r(3), 'bias': r(3), 'training': True, 'momentum': 0.2}),
    ('F.batchNorm eval running stats', 'F.batchNorm', [r(4, 3, 2), ng(r(3)), ng(positive(3))],
     {'weight': r(3), 'bias': r(3), 'training': False, 'eps': 1e-3}),
    # embeddings
    ('F.embedding', 'F.embedding', [ints([[0, 2], [2, 1]]), r(3, 4)], {}),
    ('F.embedding repeated rows', 'F.embedding', [ints([4, 0, 4, 4, 1]), r(5, 3)], {}),
    ('F.embeddingBag sum', 'F.embeddingBag', [ints([0, 2, 1, 1, 2]), r(3, 4)], {'offsets': ints([0, 2]), 'mode': 'sum'}),
    ('F.embeddingBag mean', 'F.embeddingBag', [ints([0, 2, 1, 1, 2, 3]), r(4, 4)], {'offsets': ints([0, 3, 4]), 'mode': 'mean'}),
    # activations, linear, losses
    ('F.gelu', 'F.gelu', [r(2, 5)], {}),
    ('F.gelu exact', 'F.gelu', [r(2, 5)], {'approximate': 'none'}),
    ('F.gelu tanh', 'F.gelu', [r(2, 5)], {'approximate': 'tanh'}),
    ('F.linear', 'F.linear', [r(3, 4), r(2, 4), r(2)], {}),
    ('F.linear no bias', 'F.linear', [r(3, 4), r(2, 4)], {}),
    ('F.linear batched', 'F.linear', [r(2, 3, 4), r(5, 4), r(5)], {}),
    ('F.crossEntropy mean', 'F.crossEntropy', [r(4, 3), ints([0, 2, 1, 2])], {}),
    ('F.crossEntropy sum', 'F.crossEntropy', [r(4, 3), ints([0, 2, 1, 2])], {'reduction': 'sum'}),
    ('F.crossEntropy none', 'F.crossEntropy', [r(4, 3), ints([0, 2, 1, 2])], {'reduction': 'none'}),
    ('F.crossEntropy ignoreIndex mean', 'F.crossEntropy', [r(5, 3), ints([0, -100, 1, 2, -100])], {'ignoreIndex': -100}),
    ('F.crossEntropy ignoreIndex sum', 'F.crossEntropy', [r(4, 3), ints([0, 1, 1, 2])], {'ignoreIndex': 1, 'reduction': 'sum'}),
    ('F.crossEntropy ignoreIndex none', 'F.crossEntropy', [r(4, 3), ints([0, 1, 1, 2])], {'ignoreIndex': 1, 'reduction': 'none'}),
    ('F.crossEntropy large logits', 'F.crossEntropy', [torch.tensor([[1000.0, 0.0, -1000.0], [5.0, 1005.0, 1000.0]]), ints([0, 2])], {}),
    ('F.mseLoss', 'F.mseLoss', [r(2, 3), r(2, 3)], {}),
    ('F.mseLoss sum', 'F.mseLoss', [r(2, 3), r(2, 3)], {'reduction': 'sum'}),
    ('F.mseLoss none', 'F.mseLoss', [r(2, 3), r(2, 3)], {'reduction': 'none'}),
    # added with issue 14 (kept last so the seeded inputs of the cases above do not move)
    ('sin', 'sin', [r(2, 3)], {}),
    ('cos', 'cos', [r(2, 3)], {}),
    ('exp2', 'exp2', [r(2, 3)], {}),
    # added with issue 15 (kept last, as above)
    ('mm', 'mm', [r(3, 4), r(4, 5)], {}),
    ('addmm bias [5]', 'addmm', [r(5), r(3, 4), r(4, 5)], {}),
    ('addmm beta alpha [3,1]', 'addmm', [r(3, 1), r(3, 4), r(4, 5)], {'beta': 0.5, 'alpha': -2.0}),
    ('unbind dim 1', 'unbind', [r(2, 3, 2), 1], {}),
    ('thresholdBackward', 'thresholdBackward', [r(2, 4), r(2, 4), 0.25], {}),
    ('tanhBackward', 'tanhBackward', [r(2, 3), torch.tanh(torch.randn(2, 3))], {}),
    ('sigmoidBackward', 'sigmoidBackward', [r(2, 3), torch.sigmoid(torch.randn(2, 3))], {}),
    ('geluBackward', 'geluBackward', [r(2, 5), r(2, 5)], {}),
    ('geluBackward tanh', 'geluBackward', [r(2, 5), r(2, 5)], {'approximate': 'tanh'}),
    ('scatterAdd dim 1', 'scatterAdd', [r(2, 4), 1, ints([[0, 3, 3], [1, 1, 0]]), r(2, 3)], {}),
    ('scatterAdd dim 0', 'scatterAdd', [r(3, 2), 0, ints([[2, 0], [2, 2]]), r(2, 2)], {}),
    ('sliceScatter dim 1 step 2', 'sliceScatter', [r(2, 5), r(2, 2), 1, 1, None, 2], {}),
    ('sliceScatter defaults', 'sliceScatter', [r(4, 2), r(4, 2)], {}),
    ('selectScatter last', 'selectScatter', [r(3, 2), r(2), 0, -1], {}),
    ('t', 't', [r(3, 2)], {}),
    ('t 1-D', 't', [r(3)], {}),
]


# ---------------------------------------------------------------------------------------------------
# running a case


def is_float(t):
    return isinstance(t, torch.Tensor) and t.dtype == torch.float32


def prepare(v):
    """-> (value for torch, encoded JSON value, leaf to read the grad of or None, original copy for NoGrad)."""
    if isinstance(v, NoGrad):
        leaf = v.t.clone()
        return leaf, None, ('mut', leaf, v.t.clone())
    if isinstance(v, torch.Tensor):
        leaf = v.clone().requires_grad_(is_float(v))
        return leaf, leaf, None
    if isinstance(v, list) and v and all(isinstance(x, (torch.Tensor, NoGrad)) for x in v):
        parts = [prepare(x) for x in v]
        return [p[0] for p in parts], [p[1] for p in parts], None
    return v, None, None


def encode_arg(v, leaf):
    if isinstance(v, NoGrad):
        return enc(v.t, False)
    if isinstance(v, torch.Tensor):
        return enc(v, leaf is not None and leaf.requires_grad)
    if isinstance(v, list) and isinstance(leaf, list):
        return [encode_arg(x, l) for x, l in zip(v, leaf)]
    return v


def grad_of(leaf):
    if isinstance(leaf, list):
        return [grad_of(l) for l in leaf]
    if leaf is None or not leaf.requires_grad:
        return None
    g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
    return enc(g)


def op_case(name, op, args, kwargs):
    prepared = [prepare(a) for a in args]
    kprepared = {k: prepare(v) for k, v in kwargs.items()}
    targs = [p[0] for p in prepared]
    tkw = torch_kwargs({k: p[0] for k, p in kprepared.items()})
    out = TORCH[op](*targs, **tkw)
    outs = list(out) if isinstance(out, tuple) else [out]
    seeds = [torch.randn(o.shape) if o.requires_grad else None for o in outs]
    total = sum((o * g).sum() for o, g in zip(outs, seeds) if g is not None)
    if any(g is not None for g in seeds):
        total.backward()
    case = {
        'name': name,
        'op': op,
        'args': [encode_arg(a, p[1]) for a, p in zip(args, prepared)],
        'kwargs': {k: encode_arg(v, kprepared[k][1]) for k, v in kwargs.items()},
        'out': [enc(o) for o in outs] if isinstance(out, tuple) else enc(out),
        'gradOut': None,
        'grads': [grad_of(p[1]) for p in prepared],
        'kwargsGrads': {k: grad_of(p[1]) for k, p in kprepared.items() if grad_of(p[1]) is not None},
    }
    if any(s is not None for s in seeds):
        case['gradOut'] = [enc(s) if s is not None else None for s in seeds] if isinstance(out, tuple) else enc(seeds[0])
    after = [enc(p[2][1]) if p[2] and not torch.equal(p[2][1], p[2][2]) else None for p in prepared]
    if any(a is not None for a in after):
        case['argsAfter'] = after
    return case


# ---------------------------------------------------------------------------------------------------
# models


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


def enc_state(model):
    return {k: enc(v) for k, v in model.state_dict().items()}


def model_case(name, model, x, target):
    state = enc_state(model)
    model.train()
    out = model(x)
    loss = F.cross_entropy(out, target)
    loss.backward()
    return {
        'name': name,
        'stateDict': state,
        'keys': list(state.keys()),
        'input': enc(x),
        'target': enc(target),
        'out': enc(out),
        'loss': loss.item(),
        'grads': {n: enc(p.grad) for n, p in model.named_parameters()},
        'buffersAfter': {k: enc(v) for k, v in model.state_dict().items() if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))},
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), 'duplicate case names'
    ops = [op_case(*c) for c in CASES]
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    mlp_case = model_case('mlp', mlp, r(5, 4), ints([0, 1, 2, 1, 0]))
    cnn = CNN()
    with torch.no_grad():  # non-trivial affine params so their gradients are checked meaningfully
        cnn.bn.weight.copy_(positive(4))
        cnn.bn.bias.copy_(r(4) * 0.1)
    cnn_case = model_case('cnn', cnn, r(2, 1, 6, 6), ints([1, 4]))
    for fname, data in (('ops.json', ops), ('models.json', [mlp_case, cnn_case])):
        with open(os.path.join(OUT, fname), 'w') as f:
            json.dump(data, f, separators=(',', ':'))
            f.write('\n')
    print(f'torch {torch.__version__}: wrote {len(ops)} op cases and 2 model cases to {os.path.normpath(OUT)}')


if __name__ == '__main__':
    main()
