import { expression } from '@babel/template';
import * as t from '@babel/types';
import type { ClassInfo, FunctionPath } from '../../analysis/classify.js';

/**
 * Code outside the class cannot say `super`: `super.m(a)` becomes `Object.getPrototypeOf(C.prototype).m.call(this, a)`
 * and a `super.x` read `Reflect.get(Object.getPrototypeOf(C.prototype), "x", this)` (so getters see `this`).
 */
const superHome = expression(`Object.getPrototypeOf(%%home%%)`);

const superRead = expression(`Reflect.get(%%proto%%, %%key%%, this)`);

export function makeSuperExplicit(fn: FunctionPath, cls: ClassInfo): void {
  const home = () => {
    const c = t.identifier(cls.name);
    return superHome({ home: fn.isClassMethod() && fn.node.static ? c : t.memberExpression(c, t.identifier('prototype')) });
  };
  fn.traverse({
    Function(p) {
      if (!p.isArrowFunctionExpression()) p.skip();
    },
    Class(p) {
      p.skip();
    },
    Super(p) {
      const member = p.parentPath;
      if (!member.isMemberExpression()) return;
      const computed = member.node.computed;
      const key = computed ? (member.node.property as t.Expression) : t.stringLiteral((member.node.property as t.Identifier).name);
      const call = member.parentPath;
      if (call.isCallExpression() && call.node.callee === member.node) {
        const method = t.memberExpression(home(), computed ? key : t.identifier((member.node.property as t.Identifier).name), computed);
        call.replaceWith(t.callExpression(t.memberExpression(method, t.identifier('call')), [t.thisExpression(), ...call.node.arguments]));
      } else {
        member.replaceWith(superRead({ proto: home(), key }));
      }
    },
  });
}
