import { compile, randn, nn, optim, F, tensor, noGrad } from './src/index.js';
class MLP extends nn.Module { fc1 = new nn.Linear(784, 512); fc2 = new nn.Linear(512, 512); fc3 = new nn.Linear(512, 10);
  forward(x: any) { return this.fc3.call(this.fc2.call(this.fc1.call(x).relu()).relu()); } }
const m = new MLP(); const c = compile(m);
const x = randn([64, 784]); const y = tensor(Array.from({length: 64}, (_, i) => i % 10), { dtype: 'int32' });
const optE = new optim.Adam(m.parameters(), { lr: 1e-3 });
function step(model: any) { const loss = F.crossEntropy(model.call(x), y); loss.backward(); optE.step(); optE.zeroGrad(); return loss; }
function time(label: string, f: () => void, n = 20) { for (let i = 0; i < 3; i++) f(); const t0 = performance.now(); for (let i = 0; i < n; i++) f(); console.log(label, ((performance.now() - t0) / n).toFixed(2), 'ms'); }
time('eager step', () => step(m));
time('compiled step', () => step(c));
time('eager fwd grad', () => m.call(x));
time('compiled fwd grad', () => c.call(x));
time('eager fwd nograd', () => noGrad(() => m.call(x)));
time('compiled fwd nograd', () => noGrad(() => c.call(x)));
function bw(model: any) { const out = model.call(x); const loss = F.crossEntropy(out, y); const t0 = performance.now(); loss.backward(); const dt = performance.now() - t0; optE.zeroGrad(); return dt; }
for (const [name, model] of [['eager', m], ['compiled', c]] as const) { let s = 0; for (let i = 0; i < 3; i++) bw(model); for (let i = 0; i < 20; i++) s += bw(model); console.log(name, 'backward', (s / 20).toFixed(2)); }
