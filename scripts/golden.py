#!/usr/bin/python3
"""Golden reference values from real PyTorch for kiln's tests.

Run with Debian's PyTorch (apt-get install python3-torch):  /usr/bin/python3 scripts/golden.py
Writes test/fixtures/golden/ops.json and models.json. Each op case names a call that
test/golden.test.ts implements with kiln; inputs, output, the output-gradient seed and the input
gradients are stored flat with shapes. Never edit the JSON by hand: regenerate it.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'golden')


def enc(t):
    dtype = {torch.float32: 'float32', torch.int64: 'int32', torch.int32: 'int32', torch.bool: 'bool'}[t.dtype]
    data = t.detach().reshape(-1).tolist()
    if dtype == 'bool':
        data = [int(v) for v in data]
    return {'shape': list(t.shape), 'dtype': dtype, 'data': data}


def r(*shape):
    return torch.randn(*shape)


def positive(*shape):
    return torch.rand(*shape) + 0.5


def ints(values):
    return torch.tensor(values, dtype=torch.int64)


# name -> (inputs, function of the inputs). Float inputs are differentiated; ints/bools are not.
CASES = {
    'add broadcast': ([r(3, 1), r(1, 4)], lambda a, b: a + b),
    'add alpha': ([r(2, 3), r(3)], lambda a, b: torch.add(a, b, alpha=2)),
    'add scalar': ([r(2, 3)], lambda a: a + 1.5),
    'sub': ([r(2, 3), r(2, 1)], lambda a, b: a - b),
    'mul': ([r(2, 3), r(3)], lambda a, b: a * b),
    'div': ([r(2, 3), positive(2, 3)], lambda a, b: a / b),
    'div int': ([ints([1, 2, 3]), ints([2, 2, 2])], lambda a, b: a / b),
    'neg': ([r(4)], lambda a: -a),
    'pow scalar': ([positive(4)], lambda a: a ** 2.5),
    'pow tensor': ([positive(4), r(4)], lambda a, b: a ** b),
    'exp': ([r(4)], torch.exp),
    'log': ([positive(4)], torch.log),
    'sqrt': ([positive(4)], torch.sqrt),
    'abs': ([torch.tensor([-1.5, 0.5, 2.0, -0.25])], torch.abs),
    'tanh': ([r(4)], torch.tanh),
    'sigmoid': ([r(4)], torch.sigmoid),
    'relu': ([torch.tensor([-1.0, 0.5, 2.0, -0.25])], torch.relu),
    'matmul 1d 1d': ([r(4), r(4)], torch.matmul),
    'matmul 2d 2d': ([r(3, 4), r(4, 5)], torch.matmul),
    'matmul 1d 2d': ([r(4), r(4, 5)], torch.matmul),
    'matmul 2d 1d': ([r(3, 4), r(4)], torch.matmul),
    'matmul batched': ([r(2, 3, 4), r(4, 5)], torch.matmul),
    'matmul broadcast batch': ([r(2, 1, 3, 4), r(3, 4, 2)], torch.matmul),
    'sum all': ([r(2, 3)], lambda a: a.sum()),
    'sum dim keepdim': ([r(2, 3, 4)], lambda a: a.sum(1, keepdim=True)),
    'sum dims': ([r(2, 3, 4)], lambda a: a.sum((0, 2))),
    'mean all': ([r(2, 3)], lambda a: a.mean()),
    'mean dim': ([r(2, 3)], lambda a: a.mean(-1)),
    'max all': ([torch.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]])], lambda a: a.max()),
    'max dim values': ([torch.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]])], lambda a: a.max(1).values),
    'max dim indices': ([torch.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]])], lambda a: a.max(1).indices),
    'min dim keepdim values': ([torch.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]])], lambda a: a.min(0, keepdim=True).values),
    'argmax': ([torch.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]])], lambda a: a.argmax(1)),
    'reshape': ([r(2, 3)], lambda a: a.t().reshape(3, 2) * torch.arange(1.0, 7.0).reshape(3, 2)),
    'view': ([r(2, 3)], lambda a: a.view(6) * torch.arange(1.0, 7.0)),
    'flatten': ([r(2, 3, 2)], lambda a: a.flatten(1) * torch.arange(1.0, 7.0)),
    'transpose': ([r(2, 3)], lambda a: a.transpose(0, 1) * torch.tensor([1.0, 2.0])),
    'permute': ([r(2, 3, 4)], lambda a: a.permute(2, 0, 1) * torch.arange(1.0, 5.0).reshape(4, 1, 1)),
    'unsqueeze': ([r(3)], lambda a: a.unsqueeze(1) * torch.tensor([1.0, 2.0])),
    'squeeze': ([r(1, 3, 1)], lambda a: a.squeeze() * torch.tensor([1.0, 2.0, 3.0])),
    'expand': ([r(3, 1)], lambda a: a.expand(2, 3, 4) * torch.arange(1.0, 25.0).reshape(2, 3, 4)),
    'narrow': ([r(4, 3)], lambda a: a.narrow(0, 1, 2)),
    'select': ([r(2, 3)], lambda a: a.select(1, -1)),
    'gather': ([r(2, 3), ints([[0, 2], [1, 1]])], lambda a, i: a.gather(1, i)),
    'clamp min': ([r(6)], lambda a: a.clamp(min=-0.3)),
    'clamp max': ([r(6)], lambda a: a.clamp(max=0.4)),
    'clamp both': ([r(6)], lambda a: a.clamp(-0.3, 0.4)),
    'where': ([torch.tensor([True, False, True]), r(3), r(2, 1)], torch.where),
    'eq': ([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 3.0])], torch.eq),
    'ne': ([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 3.0])], torch.ne),
    'lt': ([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0])], torch.lt),
    'le': ([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0])], torch.le),
    'gt': ([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0])], torch.gt),
    'ge': ([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0])], torch.ge),
    'softmax': ([r(2, 4)], lambda a: a.softmax(1)),
    'softmax large': ([torch.tensor([[1000.0, 1001.0, 1002.0], [-5.0, 0.0, 5.0]])], lambda a: a.softmax(-1)),
    'logSoftmax': ([r(3, 2)], lambda a: a.log_softmax(0)),
    'logSoftmax large': ([torch.tensor([[1000.0, 1001.0, 1002.0]])], lambda a: a.log_softmax(1)),
    'cat': ([r(2, 1), r(2, 3)], lambda a, b: torch.cat([a, b], 1)),
    'stack': ([r(2, 3), r(2, 3)], lambda a, b: torch.stack([a, b], 1)),
    'conv1d': ([r(2, 3, 7), r(4, 3, 3), r(4)], lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1)),
    'conv2d': ([r(2, 3, 6, 5), r(4, 3, 3, 3), r(4)], lambda x, w, b: F.conv2d(x, w, b, padding=1)),
    'conv2d stride dilation': ([r(1, 2, 7, 7), r(3, 2, 3, 2)], lambda x, w: F.conv2d(x, w, None, stride=(2, 1), dilation=(1, 2))),
    'conv2d groups': ([r(2, 4, 5, 5), r(6, 2, 3, 3), r(6)], lambda x, w, b: F.conv2d(x, w, b, groups=2)),
    'maxPool2d': ([r(2, 2, 6, 6)], lambda x: F.max_pool2d(x, 2)),
    'maxPool2d stride padding': ([r(1, 2, 5, 5)], lambda x: F.max_pool2d(x, 3, stride=2, padding=1)),
    'avgPool2d padding': ([r(1, 2, 5, 5)], lambda x: F.avg_pool2d(x, 3, stride=2, padding=1)),
    'adaptiveAvgPool2d': ([r(1, 2, 5, 5)], lambda x: F.adaptive_avg_pool2d(x, (2, 3))),
    'layerNorm': ([r(3, 4), r(4), r(4)], lambda x, w, b: F.layer_norm(x, [4], w, b)),
    'batchNorm training': ([r(4, 3, 2), r(3), r(3)], lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
    'batchNorm eval': ([r(4, 3), r(3), positive(3), r(3), r(3)], lambda x, m, v, w, b: F.batch_norm(x, m.detach(), v.detach(), w, b, training=False)),
    'embedding': ([ints([[0, 2], [2, 1]]), r(3, 4)], lambda i, w: F.embedding(i, w)),
    'embeddingBag sum': ([ints([0, 2, 1, 1, 2]), r(3, 4), ints([0, 2])], lambda i, w, o: F.embedding_bag(i, w, o, mode='sum')),
    'embeddingBag mean': ([ints([0, 2, 1, 1, 2]), r(3, 4), ints([0, 3])], lambda i, w, o: F.embedding_bag(i, w, o, mode='mean')),
    'gelu': ([r(6)], F.gelu),
    'gelu tanh': ([r(6)], lambda x: F.gelu(x, approximate='tanh')),
    'linear': ([r(3, 4), r(2, 4), r(2)], F.linear),
    'crossEntropy mean': ([r(4, 3), ints([0, 2, 1, 2])], F.cross_entropy),
    'crossEntropy sum': ([r(4, 3), ints([0, 2, 1, 2])], lambda x, t: F.cross_entropy(x, t, reduction='sum')),
    'crossEntropy none': ([r(4, 3), ints([0, 2, 1, 2])], lambda x, t: F.cross_entropy(x, t, reduction='none')),
    'crossEntropy ignoreIndex': ([r(4, 3), ints([0, -100, 1, 2])], lambda x, t: F.cross_entropy(x, t, ignore_index=-100)),
    'mseLoss': ([r(2, 3), r(2, 3)], F.mse_loss),
}


def op_case(name, inputs, fn):
    leaves = [t.clone().requires_grad_(t.dtype == torch.float32) for t in inputs]
    out = fn(*leaves)
    case = {'name': name, 'inputs': [enc(t) for t in inputs], 'out': enc(out)}
    if out.requires_grad:
        seed = torch.randn(out.shape)
        out.backward(seed)
        case['gradOut'] = enc(seed)
        case['grads'] = [enc(t.grad) if t.grad is not None else None for t in leaves]
    return case


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(self.pool(self.bn(self.conv(x)).relu()).flatten(1))


def model_case(name, model, x, target):
    state = {k: enc(v) for k, v in model.state_dict().items()}
    model.train()
    out = model(x)
    loss = F.cross_entropy(out, target)
    loss.backward()
    return {
        'name': name,
        'stateDict': state,
        'keys': list(model.state_dict().keys()),
        'input': enc(x),
        'target': enc(target),
        'out': enc(out),
        'loss': loss.item(),
        'grads': {n: enc(p.grad) for n, p in model.named_parameters()},
        'buffersAfter': {k: enc(v) for k, v in model.state_dict().items() if 'running' in k or 'num_batches' in k},
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    ops = [op_case(name, inputs, fn) for name, (inputs, fn) in CASES.items()]
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    models = [
        model_case('mlp', mlp, r(5, 4), ints([0, 1, 2, 1, 0])),
        model_case('cnn', CNN(), r(2, 1, 6, 6), ints([1, 4])),
    ]
    meta = {'torch': torch.__version__, 'script': 'scripts/golden.py'}
    for fname, cases in (('ops.json', ops), ('models.json', models)):
        with open(os.path.join(OUT, fname), 'w') as f:
            json.dump({'meta': meta, 'cases': cases}, f, separators=(',', ':'))
    print(f'wrote {len(ops)} op cases and {len(models)} model cases to {OUT}')


if __name__ == '__main__':
    main()
