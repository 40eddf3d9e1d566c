import { F, nn, ops, randn, rand, tensor, zeros, ones, defineFunction, type Tensor } from './src/index.js';
import { trace, traceModule } from './src/jit.js';
const show = (label: string, f: () => unknown) => { try { const r = f(); console.log('==', label, typeof r === 'string' ? '\n' + r : r); } catch (e) { console.log('==', label, 'THROWS', (e as Error).message.slice(0, 300)); } };
const x = tensor([0.0]).requiresGrad_();
show('inplace transplant', () => trace((x: Tensor) => { const y = x.clone(); y.add_(2); y.add_(3); return y; }, [x]).code);
show('repeated', () => { const a = randn([2]); const tr = trace((p: Tensor, q: Tensor) => p.sub(q), [a, a]); const b = randn([2]); return [tr.code, (tr(a, b) as Tensor).toArray(), a.sub(b).toArray()]; });
class M extends nn.Module { x = new nn.Parameter(rand([3, 4])); override forward(y: Tensor) { return this.x.add(y); } }
show('aliased param', () => { const m = new M(); const tr = trace(m, [m.x]); const t2 = rand([3,4]); return [tr.code, (tr.call(t2) as Tensor).sub(m.x.add(t2)).abs().max().item()]; });
show('tanh_ input', () => { const a = rand([3]); const tr = trace((d: Tensor) => { d.tanh_(); return d; }, [a.clone()]); const b = rand([3]); const bb = b.clone(); tr(b); return [tr.code, b.toArray(), bb.tanh().toArray()]; });
show('float same', () => trace((x: Tensor) => x.float(), [randn([2])]).code);
show('contig', () => trace((x: Tensor) => x.contiguous(), [randn([2])]).code);
show('detach_', () => trace((x: Tensor, w: Tensor) => { const y = x.matmul(w); y.detach_(); return y; }, [rand([3,4]), rand([4,5])]).code);
show('empty out', () => trace((x: Tensor) => x.narrow(0, 0, 0), [rand([3])]).code);
show('names', () => trace(function foo(bar: Tensor, baz: Tensor) { baz = bar.add(3); const quick_brown_fox = ops.neg(baz); let yeet = quick_brown_fox; for (let i = 0; i < 3; i++) yeet = quick_brown_fox.sub(3.14); return yeet; }, [rand([3,3]), rand([3,3])]).code);
class Net extends nn.Module { conv = new nn.Conv2d(1, 1, 3); override forward(x: Tensor) { return this.conv.call(x); } weightedKernelSum(w: Tensor) { return w.mul(this.conv.weight); } }
show('bound forward', () => { const n = new Net(); return trace(n.forward.bind(n), [rand([1,1,3,3])]).code; });
show('bound other', () => { const n = new Net(); return trace(n.weightedKernelSum.bind(n), [rand([1,1,3,3])]).code; });
show('per-method check', () => { const n = new Net(); const tm = traceModule(n, { forward: [rand([1,1,3,3])], weightedKernelSum: [rand([1,1,3,3])] }, { checkInputs: [0,1].map(() => ({ forward: [rand([1,1,3,3])], weightedKernelSum: [rand([1,1,3,3])] })) }); return tm.code; });
