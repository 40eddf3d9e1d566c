/**
 * The demo's models: plain kiln modules. Run through kiln/plugin (`node --import kiln/register`, or a
 * Babel config), each forward is cut at its graph breaks and runs as captured graphs.
 */
import { F, nn, type Tensor } from 'kiln';

/** A 2-64-64-2 MLP for the two-spiral problem: one graph, no breaks. */
export class SpiralNet extends nn.Module {
  fc1 = new nn.Linear(2, 64);
  fc2 = new nn.Linear(64, 64);
  out = new nn.Linear(64, 2);

  override forward(x: Tensor): Tensor {
    return this.out.call(this.fc2.call(this.fc1.call(x).tanh()).tanh());
  }
}

/** Branches on a tensor's value: the condition (`item()`) runs eagerly, the arm it picks is captured. */
export class Gated extends nn.Module {
  fc = new nn.Linear(2, 64);
  head = new nn.Linear(64, 2);

  override forward(x: Tensor): Tensor {
    const h = this.fc.call(x);
    let gated: Tensor;
    if (h.mean().item() > 0) gated = h.relu();
    else gated = h.neg().relu();
    return this.head.call(gated).logSoftmax(-1);
  }
}

/** Residual blocks in a ModuleList (unrolled into one graph) and a call counter kept as eager state. */
export class ResidualStack extends nn.Module {
  inp = new nn.Linear(2, 64);
  blocks = new nn.ModuleList([0, 1, 2, 3].map(() => new nn.Sequential(new nn.LayerNorm(64), new nn.Linear(64, 64), new nn.GELU())));
  out = new nn.Linear(64, 2);
  calls = 0;

  override forward(x: Tensor): Tensor {
    let h = this.inp.call(x);
    for (const block of this.blocks) h = h.add(block.call(h));
    this.calls++;
    return F.logSoftmax(this.out.call(h), -1);
  }
}
