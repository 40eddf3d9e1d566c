/**
 * `node --import kiln/register app.ts`: run TypeScript with kiln/plugin applied (types stripped by Babel,
 * results cached under node_modules/.cache/kiln). See ./hooks.ts.
 */
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
