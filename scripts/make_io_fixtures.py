#!/usr/bin/python3
"""Checkpoint fixtures from real PyTorch for kiln's model I/O tests (test/io-pytorch.test.ts, test/io-safetensors.test.ts).

Run with Debian's PyTorch 1.13:  /usr/bin/python3 scripts/make_io_fixtures.py
Writes test/fixtures/io/. Never edit the outputs by hand: regenerate them. The same pins as golden.py (AVX2,
one thread) keep the recorded outputs byte-identical on any x86 machine.

  model.pt            torch.save(net.state_dict()) of Net below (seeded; BatchNorm stats from 3 training steps)
  model.safetensors   the same state dict in the safetensors format, written by hand here (no safetensors package)
  model-i32.safetensors the same with num_batches_tracked stored as I32 (kiln's int32): what kiln's writer must reproduce
  params.pt           torch.save(nn.Linear(2, 2).state_dict(keep_vars=True)): Parameters (torch._utils._rebuild_parameter)
  params.json         {key: T} its values
  model.json          {"keys", "stateDict": {key: T}, "inputs": {"image": T, "tokens": T}, "out": T} with Net in eval mode
  views.pt            tensors that are views of shared storages (offsets, transposed strides, a step slice) and one
                      tensor of each storage type a state dict may hold (f64, f16, bf16, i64, i32, i16, i8, u8, bool)
  views.json          {key: T} the values PyTorch reads from views.pt, converted as kiln converts them
  dtypes.safetensors  F16, BF16, F64, I64, I16, I8, U8, BOOL, I32, F32 tensors and a __metadata__ map
  dtypes.json         {"tensors": {key: T}, "metadata": {...}} what kiln must read from dtypes.safetensors
  overflow.pt         an int64 tensor whose value does not fit int32 (key "big")
  overflow.safetensors the same in safetensors
  hostile.pt          a genuine torch.save zip whose data.pkl calls os.system (pickle GLOBAL 'posix system')
  hostile-eval.pt     the same through builtins.eval
  legacy.pt           torch.save(..., _use_new_zipfile_serialization=False): the pre-1.6 non-zip format (its storage
                      keys are Python object ids, so this one file differs on each run; every other output is identical)
A tensor T is {"shape", "dtype", "data" (flat, row-major; float16/bfloat16/float64 as float32 values, int64 as
numbers)}.
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
import struct  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'io')
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


KILN_DTYPE = {
    torch.float32: 'float32', torch.float16: 'float32', torch.bfloat16: 'float32', torch.float64: 'float32',
    torch.int64: 'int32', torch.int32: 'int32', torch.int16: 'int32', torch.int8: 'int32', torch.uint8: 'int32',
    torch.bool: 'bool',
}


def enc(t):
    """A tensor as JSON, converted the way kiln converts on load (floats → float32, ints → int32)."""
    kd = KILN_DTYPE[t.dtype]
    if kd == 'float32':
        data = t.detach().to(torch.float32).reshape(-1).tolist()
    elif kd == 'bool':
        data = [bool(v) for v in t.reshape(-1).tolist()]
    else:
        data = [int(v) for v in t.reshape(-1).tolist()]
    return {'shape': list(t.shape), 'dtype': kd, 'data': data}


class Net(nn.Module):
    """Every standard layer the issue names: Embedding, Conv2d, BatchNorm2d (running stats), LayerNorm, Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.norm = nn.LayerNorm(52)
        self.fc = nn.Linear(52, 5)

    def forward(self, image, tokens):
        h = F.relu(self.bn(self.conv(image))).flatten(1)  # [N, 48]
        e = self.embed(tokens).mean(1)  # [N, 4]
        return self.fc(self.norm(torch.cat([h, e], 1)))


# ---- safetensors, written by hand from the format's description -----------------------------------------------
ST_DTYPE = {
    torch.float64: ('F64', '<d'), torch.float32: ('F32', '<f'), torch.float16: ('F16', None), torch.bfloat16: ('BF16', None),
    torch.int64: ('I64', '<q'), torch.int32: ('I32', '<i'), torch.int16: ('I16', '<h'), torch.int8: ('I8', '<b'),
    torch.uint8: ('U8', '<B'), torch.bool: ('BOOL', '<?'),
}


def raw_bytes(t):
    t = t.detach().contiguous()
    name, fmt = ST_DTYPE[t.dtype]
    if fmt is None:  # f16 / bf16: reinterpret the 2-byte patterns as int16 and write those little-endian
        return struct.pack('<%dh' % t.numel(), *t.view(torch.int16).reshape(-1).tolist())
    return struct.pack('<%d%s' % (t.numel(), fmt[1]), *t.reshape(-1).tolist())


def write_safetensors(tensors, file, metadata=None):
    """8-byte little-endian header length, a JSON header {key: {dtype, shape, data_offsets}} padded with spaces to a
    multiple of 8, then the tensors' bytes back to back, in the header's order."""
    header, blobs, at = {}, [], 0
    if metadata is not None:
        header['__metadata__'] = metadata
    for key, t in tensors.items():
        b = raw_bytes(t)
        header[key] = {'dtype': ST_DTYPE[t.dtype][0], 'shape': list(t.shape), 'data_offsets': [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(file, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def write_json(name, value):
    with open(path(name), 'w') as f:
        json.dump(value, f, separators=(',', ':'))
        f.write('\n')


# ---- the model ------------------------------------------------------------------------------------------------
net = Net()
net.train()
for _ in range(3):  # BatchNorm's running stats and num_batches_tracked move away from their defaults
    net(torch.randn(4, 1, 4, 4), torch.randint(0, 10, (4, 3)))
net.eval()
image = torch.randn(2, 1, 4, 4)
tokens = torch.tensor([[1, 2, 3], [9, 0, 4]])
with torch.no_grad():
    out = net(image, tokens)
sd = net.state_dict()
torch.save(sd, path('model.pt'))
write_safetensors(sd, path('model.safetensors'))
# the same, with num_batches_tracked as int32: exactly what kiln's saveSafetensors writes for a kiln Net
write_safetensors({k: v.int() if v.dtype == torch.int64 else v for k, v in sd.items()}, path('model-i32.safetensors'))
write_json('model.json', {
    'keys': list(sd.keys()),
    'stateDict': {k: enc(v) for k, v in sd.items()},
    'inputs': {'image': enc(image), 'tokens': enc(tokens)},
    'out': enc(out),
})

lin = nn.Linear(2, 2)
torch.save(lin.state_dict(keep_vars=True), path('params.pt'))
write_json('params.json', {k: enc(v) for k, v in lin.state_dict().items()})

# ---- views of shared storages and every storage type ---------------------------------------------------------
base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
longs = torch.tensor([[-(2 ** 31), 7, 2 ** 31 - 1], [0, -1, 42]], dtype=torch.int64)
views = {
    'base': base,
    'transposed': base.t(),  # strides (1, 6)
    'window': base[1:3, 2:5],  # storage offset 8, strides (6, 1)
    'stepped': base[:, ::2],  # strides (6, 2)
    'row': base[3],  # offset 18, 1-d
    'scalar': base[2, 5],  # a 0-d view at offset 17
    'f64': torch.tensor([1.5, -2.25, 1e-3], dtype=torch.float64),
    'f16': torch.tensor([0.5, -1.25, 65504.0, 6.1e-5, 0.0], dtype=torch.float16),
    'bf16': torch.tensor([1.0, -3.5, 3.0e38, 1e-3], dtype=torch.bfloat16),
    'i64': longs,
    'i64_t': longs.t(),
    'i32': torch.tensor([-5, 0, 2 ** 31 - 1], dtype=torch.int32),
    'i16': torch.tensor([-32768, 5, 32767], dtype=torch.int16),
    'i8': torch.tensor([-128, 3, 127], dtype=torch.int8),
    'u8': torch.tensor([0, 200, 255], dtype=torch.uint8),
    'mask': torch.tensor([[True, False], [False, True]]),
    'empty': torch.zeros(0, 3),
}
torch.save(views, path('views.pt'))
write_json('views.json', {k: enc(v) for k, v in views.items()})

dtypes = {k: views[k] for k in ['f16', 'bf16', 'f64', 'i64', 'i16', 'i8', 'u8', 'mask', 'i32']}
dtypes['f32'] = base
dtypes['empty'] = views['empty']
metadata = {'format': 'pt', 'note': 'written by scripts/make_io_fixtures.py'}
write_safetensors(dtypes, path('dtypes.safetensors'), metadata)
write_json('dtypes.json', {'tensors': {k: enc(v) for k, v in dtypes.items()}, 'metadata': metadata})

# ---- files kiln must refuse ------------------------------------------------------------------------------------
overflow = {'ok': torch.tensor([1, 2], dtype=torch.int64), 'big': torch.tensor([3, 2 ** 31], dtype=torch.int64)}
torch.save(overflow, path('overflow.pt'))
write_safetensors(overflow, path('overflow.safetensors'))


class System:
    """Unpickling this calls os.system (pickle writes GLOBAL 'posix system'): the classic hostile checkpoint."""

    def __reduce__(self):
        return (os.system, ('touch /tmp/kiln-io-hostile-pickle-ran',))


class Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch /tmp/kiln-io-hostile-pickle-ran')",))


torch.save({'weight': torch.ones(2), 'payload': System()}, path('hostile.pt'))
torch.save({'weight': torch.ones(2), 'payload': Eval()}, path('hostile-eval.pt'))
torch.save({'weight': torch.ones(2)}, path('legacy.pt'), _use_new_zipfile_serialization=False)
print('wrote', sorted(os.listdir(OUT)))
