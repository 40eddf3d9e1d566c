import { compile, randn, nn, optim, F, tensor, allclose } from './src/index.js';
const make = () => new nn.Sequential(new nn.Conv2d(3, 16, 3, { padding: 1 }), new nn.BatchNorm2d(16), new nn.ReLU(), new nn.Conv2d(16, 32, 3, { padding: 1 }), new nn.BatchNorm2d(32), new nn.ReLU(), new nn.Conv2d(32, 32, 3, { padding: 1 }), new nn.BatchNorm2d(32), new nn.ReLU(), new nn.AdaptiveAvgPool2d([1, 1]), new nn.Flatten(), new nn.Linear(32, 10));
const m = make(); const m2 = make(); m2.loadStateDict(m.stateDict());
const c = compile(m2);
const x = randn([16, 3, 32, 32]); const y = tensor(Array.from({length: 16}, (_, i) => i % 10), { dtype: 'int32' });
const opt = new optim.Adam(m.parameters(), { lr: 1e-3 }); const opt2 = new optim.Adam(m2.parameters(), { lr: 1e-3 });
function step(model: any, o: any) { const loss = F.crossEntropy(model.call(x), y); loss.backward(); o.step(); o.zeroGrad(); return loss.item(); }
const a = [0,1,2].map(() => step(m, opt)), b = [0,1,2].map(() => step(c, opt2));
console.log(a, b, allclose(m.stateDict()['1.running_var'], m2.stateDict()['1.running_var'], {rtol: 1e-4}));
function time(label: string, f: () => void, n = 5) { const t0 = performance.now(); for (let i = 0; i < n; i++) f(); console.log(label, ((performance.now() - t0) / n).toFixed(1), 'ms'); }
time('eager', () => step(m, opt)); time('compiled', () => step(c, opt2)); time('eager', () => step(m, opt)); time('compiled', () => step(c, opt2));
