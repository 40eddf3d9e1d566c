#!/usr/bin/python3
"""Golden values from real PyTorch for kiln's native and backward ops of the nn, convolution and pooling
ops (issue 15, item 1), checked by test/ops-backward-nn.test.ts.

Run with Debian's PyTorch 1.13:  /usr/bin/python3 scripts/golden_backward.py
Writes test/fixtures/golden/backward-ops.json. Never edit the JSON by hand: regenerate it. Like
scripts/golden.py it pins oneDNN and ATen to AVX2 and torch to one thread, so the JSON is byte-identical
whichever x86 machine regenerates it.

Each case: { "name", "op" (kiln's op name), "args": [...] (kiln's positional arguments), "out": T | [T|null, ...],
"argsAfter": [T|null, ...] (optional: arguments the op updates in place), "gradOut": T and "grads": [T|null, ...]
(optional: the gradients autograd gives each argument for the output's gradient gradOut) }. A tensor is {"t": {"shape",
"dtype", "data"}} (int64 stored as int32, kiln's index dtype). The outputs come from the matching ATen op
(torch.ops.aten.*); for kiln's own backward ops (embeddingBagBackward, nllLossWeightBackward) from
autograd through the PyTorch function they differentiate.
"""
import os

PINNED_ENV = {
    'DNNL_MAX_CPU_ISA': 'AVX2',
    'ATEN_CPU_CAPABILITY': 'avx2',
    'OMP_NUM_THREADS': '1',
    'MKL_NUM_THREADS': '1',
    'OPENBLAS_NUM_THREADS': '1',
    'OPENBLAS_CORETYPE': 'Haswell',
}
os.environ.update(PINNED_ENV)

import json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)
torch.manual_seed(0)
aten = torch.ops.aten
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'golden', 'backward-ops.json')
DTYPES = {torch.float32: 'float32', torch.int64: 'int32', torch.int32: 'int32', torch.bool: 'bool'}
REDUCTION = {'none': 0, 'mean': 1, 'sum': 2}


def enc(v):
    if isinstance(v, torch.Tensor):
        t = v.detach()
        data = t.reshape(-1).tolist()
        if t.dtype == torch.bool:
            data = [int(x) for x in data]
        return {'t': {'shape': list(t.shape), 'dtype': DTYPES[t.dtype], 'data': data}}
    if isinstance(v, (list, tuple)):
        return [enc(x) for x in v]
    return v


def r(*shape):
    return torch.randn(shape)


def ints(values, shape=None):
    t = torch.tensor(values, dtype=torch.int64)
    return t.reshape(shape) if shape else t


CASES = []


def case(name, op, args, out, args_after=None, grad_out=None, grads=None):
    c = {'name': name, 'op': op, 'args': enc(args), 'out': enc(out)}
    if args_after is not None:
        c['argsAfter'] = enc(args_after)
    if grad_out is not None:
        c['gradOut'] = enc(grad_out)
        c['grads'] = enc(grads)
    CASES.append(c)


def conv_cases():
    # 2-d, groups, stride, padding, dilation, all three gradients
    x, w = r(2, 4, 5, 6), r(4, 2, 3, 2)
    g = r(2, 4, 3, 4)
    out = aten.convolution_backward(g, x, w, [4], [2, 1], [1, 0], [1, 2], False, [0, 0], 2, [True, True, True])
    case('convolutionBackward 2-d groups', 'convolutionBackward',
         [g, x, w, [4], [2, 1], [1, 0], [1, 2], False, [0, 0], 2, [True, True, True]], list(out))
    # only the input gradient, no bias
    x, w = r(1, 3, 6, 6), r(5, 3, 3, 3)
    g = r(1, 5, 6, 6)
    gi, _, _ = aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False])
    case('convolutionBackward input only', 'convolutionBackward',
         [g, x, w, None, 1, 1, 1, False, 0, 1, [True, False, False]], [gi, None, None])
    # 1-d (a 3-D weight)
    x, w = r(2, 3, 7), r(2, 3, 3)
    g = r(2, 2, 4)
    out = aten.convolution_backward(g, x, w, [2], [2], [1], [1], False, [0], 1, [True, True, True])
    case('convolutionBackward 1-d', 'convolutionBackward', [g, x, w, [2], [2], [1], [1], False, [0], 1, [True, True, True]], list(out))


def pool_cases():
    x = r(1, 2, 5, 5)
    out, idx = aten.max_pool2d_with_indices(x, [3, 3], [2, 2], [1, 1], [1, 1], False)
    case('maxPool2dWithIndices', 'maxPool2dWithIndices', [x, 3, 2, 1, 1, False], [out, idx])
    x2 = r(2, 6, 7)
    out2, idx2 = aten.max_pool2d_with_indices(x2, [2, 3], [2, 2], [0, 1], [2, 1], True)
    case('maxPool2dWithIndices ceil dilation', 'maxPool2dWithIndices', [x2, [2, 3], 2, [0, 1], [2, 1], True], [out2, idx2])
    g = r(*tuple(out.shape))
    gi = aten.max_pool2d_with_indices_backward(g, x, [3, 3], [2, 2], [1, 1], [1, 1], False, idx)
    case('maxPool2dWithIndicesBackward', 'maxPool2dWithIndicesBackward', [g, x, 3, 2, 1, 1, False, idx], gi)
    x = r(2, 2, 5, 5)
    g = r(2, 2, 3, 3)
    gi = aten.avg_pool2d_backward(g, x, [3, 3], [2, 2], [1, 1], False, False, None)
    case('avgPool2dBackward', 'avgPool2dBackward', [g, x, 3, 2, 1, False, False, None], gi)
    g2 = r(2, 2, 3, 3)
    gi2 = aten.avg_pool2d_backward(g2, x, [2, 2], [2, 2], [0, 0], True, True, 3)
    case('avgPool2dBackward ceil divisor', 'avgPool2dBackward', [g2, x, 2, 2, 0, True, True, 3], gi2)
    x = r(1, 2, 5, 7)
    g = r(1, 2, 2, 3)
    case('adaptiveAvgPool2dBackward', 'adaptiveAvgPool2dBackward', [g, x], aten._adaptive_avg_pool2d_backward(g, x))


def norm_cases():
    x, w, b = r(4, 3, 2, 2), r(3), r(3)
    rm, rv = r(3), torch.rand(3) + 0.5
    rm1, rv1 = rm.clone(), rv.clone()
    out = aten.native_batch_norm(x, w, b, rm1, rv1, True, 0.2, 1e-5)
    case('nativeBatchNorm training', 'nativeBatchNorm', [x, w, b, rm, rv, True, 0.2, 1e-5], list(out),
         [None, None, None, rm1, rv1])
    out_eval = aten.native_batch_norm(x, w, b, rm, rv, False, 0.2, 1e-5)
    # PyTorch 1.13's CPU kernel returns empty statistics in evaluation mode
    case('nativeBatchNorm evaluation', 'nativeBatchNorm', [x, w, b, rm, rv, False, 0.2, 1e-5], [out_eval[0], torch.empty(0), torch.empty(0)])
    g = r(*x.shape)
    _, sm, si = out
    gr = aten.native_batch_norm_backward(g, x, w, rm, rv, sm, si, True, 1e-5, [True, True, True])
    case('nativeBatchNormBackward training', 'nativeBatchNormBackward', [g, x, w, None, None, sm, si, True, 1e-5, [True, True, True]], list(gr))
    gr = aten.native_batch_norm_backward(g, x, w, rm, rv, None, None, False, 1e-5, [True, True, False])
    case('nativeBatchNormBackward evaluation', 'nativeBatchNormBackward',
         [g, x, w, rm, rv, None, None, False, 1e-5, [True, True, False]], [gr[0], gr[1], None])
    x, w, b = r(2, 3, 4), r(3, 4), r(3, 4)
    out = aten.native_layer_norm(x, [3, 4], w, b, 1e-5)
    case('nativeLayerNorm', 'nativeLayerNorm', [x, [3, 4], w, b, 1e-5], list(out))
    g = r(2, 3, 4)
    gr = aten.native_layer_norm_backward(g, x, [3, 4], out[1], out[2], w, b, [True, True, True])
    case('nativeLayerNormBackward', 'nativeLayerNormBackward', [g, x, [3, 4], out[1], out[2], w, b, [True, True, True]], list(gr))
    x = r(5, 6)
    out = aten.native_layer_norm(x, [6], None, None, 1e-5)
    g = r(5, 6)
    gr = aten.native_layer_norm_backward(g, x, [6], out[1], out[2], None, None, [True, False, False])
    case('nativeLayerNormBackward no affine', 'nativeLayerNormBackward', [g, x, [6], out[1], out[2], None, None, [True, False, False]],
         [gr[0], None, None])


def dropout_embedding_cases():
    g = r(3, 4)
    mask = torch.rand(3, 4) < 0.6
    case('nativeDropoutBackward', 'nativeDropoutBackward', [g, mask, 2.5], aten.native_dropout_backward(g, mask, 2.5))
    idx = ints([0, 2, 3, 2, 2, 1], [2, 3])
    g = r(2, 3, 5)
    case('embeddingDenseBackward', 'embeddingDenseBackward', [g, idx, 4, None, False], aten.embedding_dense_backward(g, idx, 4, -1, False))
    case('embeddingDenseBackward padding', 'embeddingDenseBackward', [g, idx, 4, 2, False], aten.embedding_dense_backward(g, idx, 4, 2, False))
    case('embeddingDenseBackward scaleGradByFreq', 'embeddingDenseBackward', [g, idx, 5, None, True],
         aten.embedding_dense_backward(g, idx, 5, -1, True))
    # embeddingBag: d/dweight and d/dperSampleWeights of sum(out * g) by autograd
    for mode, psw_on in (('sum', True), ('mean', False)):
        w = r(5, 3).requires_grad_()
        inp, offsets = ints([0, 2, 4, 4, 1, 3, 0]), ints([0, 2, 2, 5])
        psw = (torch.rand(7) + 0.5).requires_grad_() if psw_on else None
        out = F.embedding_bag(inp, w, offsets, mode=mode, per_sample_weights=psw)
        g = r(*tuple(out.shape))
        grads = torch.autograd.grad(out, [w] + ([psw] if psw_on else []), g)
        case(f'embeddingBagBackward {mode}', 'embeddingBagBackward',
             [g, inp, w, offsets, mode, psw, [True, psw_on]], [grads[0], grads[1] if psw_on else None])


def nll_cases():
    for red in ('mean', 'sum', 'none'):
        x = torch.log_softmax(r(4, 3), 1)
        t = ints([0, 2, 1, 2])
        w = torch.rand(3) + 0.5
        out, tw = aten.nll_loss_forward(x, t, w, REDUCTION[red], 1)
        case(f'nllLossForward {red}', 'nllLossForward', [x, t, w, red, 1], [out, tw])
        g = r(*tuple(out.shape))
        gi = aten.nll_loss_backward(g, x, t, w, REDUCTION[red], 1, tw)
        case(f'nllLossBackward {red}', 'nllLossBackward', [g, x, t, w, red, 1, tw], gi)
        # class weights' gradient: PyTorch leaves it unimplemented, so differentiate the loss written out
        wl = w.clone().requires_grad_()
        keep = (t != 1).float()
        picked = x.gather(1, t.unsqueeze(1)).squeeze(1)
        wt = wl[t] * keep
        losses = -picked * wt
        loss = losses if red == 'none' else losses.sum() if red == 'sum' else losses.sum() / wt.sum()
        (gw,) = torch.autograd.grad(loss, [wl], g)
        case(f'nllLossWeightBackward {red}', 'nllLossWeightBackward', [g, x, t, w, red, 1, tw, out], gw)
    x = torch.log_softmax(r(2, 3, 2, 2), 1)
    t = ints([0, 2, 1, 1, 2, 0, -100, 1], [2, 2, 2])
    out, tw = aten.nll_loss2d_forward(x, t, None, REDUCTION['mean'], -100)
    case('nllLossForward spatial', 'nllLossForward', [x, t, None, 'mean', -100], [out, tw])
    g = r()
    gi = aten.nll_loss2d_backward(g, x, t, None, REDUCTION['mean'], -100, tw)
    case('nllLossBackward spatial', 'nllLossBackward', [g, x, t, None, 'mean', -100, tw], gi)


def as_strided_cases():
    # as_strided's gradient (PyTorch's as_strided_backward) for non-overlapping, overlapping and expanded outputs
    for name, n, size, stride, offset in (
        ('asStrided', 6, [2, 2], [1, 2], 1),
        ('asStrided overlapping output', 4, [3, 2], [1, 1], 0),
        ('asStrided expanded output', 3, [2, 3], [0, 1], 0),
    ):
        x = r(n).requires_grad_()
        out = aten.as_strided(x, size, stride, offset)
        g = r(*size)
        (gx,) = torch.autograd.grad(out, [x], g)
        case(name, 'asStrided', [x, size, stride, offset], out, grad_out=g, grads=[gx])


def main():
    conv_cases()
    pool_cases()
    norm_cases()
    dropout_embedding_cases()
    nll_cases()
    as_strided_cases()
    with open(OUT, 'w') as f:
        json.dump(CASES, f, separators=(',', ':'))
        f.write('\n')
    print(f'wrote {len(CASES)} cases to {OUT}')


if __name__ == '__main__':
    main()
