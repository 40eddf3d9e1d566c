import { compile, randn, nn, optim, F, tensor, allclose } from './src/index.js';
class MLP extends nn.Module { fc1 = new nn.Linear(784, 512); fc2 = new nn.Linear(512, 512); fc3 = new nn.Linear(512, 10);
  forward(x: any) { return this.fc3.call(this.fc2.call(this.fc1.call(x).relu()).relu()); } }
const m = new MLP(); const m2 = new MLP(); m2.loadStateDict(m.stateDict()); const c = compile(m2);
const x = randn([64, 784]); const y = tensor(Array.from({length: 64}, (_, i) => i % 10), { dtype: 'int32' });
const o1 = new optim.Adam(m.parameters(), { lr: 1e-3 }); const o2 = new optim.Adam(m2.parameters(), { lr: 1e-3 });
function step(model: any, o: any) { const loss = F.crossEntropy(model.call(x), y); loss.backward(); o.step(); o.zeroGrad(); return loss.item(); }
for (let i = 0; i < 3; i++) console.log(step(m, o1), step(c, o2));
console.log(m.parameters().every((p, i) => allclose(p, m2.parameters()[i]!, { rtol: 1e-4, atol: 1e-5 })));
function time(label: string, f: () => void, n = 20) { const t0 = performance.now(); for (let i = 0; i < n; i++) f(); console.log(label, ((performance.now() - t0) / n).toFixed(2), 'ms'); }
for (let r = 0; r < 2; r++) { time('eager', () => step(m, o1)); time('compiled', () => step(c, o2)); }
